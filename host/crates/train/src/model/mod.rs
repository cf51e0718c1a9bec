//! Block graphs to burn modules: the model builder, the input adapter and the task head.
//!
//! Parameter paths are stable: `blocks.<block>.nodes.<node>.<Kind>.<param>` (node ids as in
//! the graph, 1-based) and `head.weight`, so weights can be matched between architectures.

mod activation;
mod batch_norm;
mod conv;
mod flex;
mod gru;
mod lstm;
mod max_pool;
mod node;
mod rnn;
#[cfg(test)]
mod testing;
mod transfer;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use msh_graph::{Architecture, BlockGraph, GraphError, Shape, infer_model};
pub use msh_vocab::Task;
pub use node::NodeModule;
use node::Value;
pub use transfer::{Donor, TransferError, inherit};

/// Layer norm's epsilon (burn's default, named so that exporters use the same one).
pub const LAYER_NORM_EPSILON: f64 = 1e-5;

/// Everything needed to rebuild a model's structure (its weights live in a checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub architecture: Architecture,
    /// Shape of one sample as the first block sees it (the data set's shape).
    pub input_shape: Shape,
    pub task: Task,
}

/// One block: its graph (plain data) and the modules of its nodes, in node order.
#[derive(Module, Debug)]
pub struct BlockModule {
    pub nodes: Vec<NodeModule>,
    #[module(skip)]
    graph: BlockGraph,
    #[module(skip)]
    shapes: Vec<Shape>,
}

/// A network built from an architecture: blocks in order, then flatten and a dense head.
#[derive(Module, Debug)]
pub struct Model {
    pub blocks: Vec<BlockModule>,
    pub head: Linear,
    #[module(skip)]
    spec: ModelSpec,
}

impl Model {
    /// `new` with weights drawn on the CPU from `seed`, then moved to `device`: one seed
    /// gives one starting model on every backend.
    pub fn seeded(spec: &ModelSpec, seed: u64, device: &Device) -> Result<Self, GraphError> {
        let cpu = Device::flex().autodiff();
        cpu.seed(seed);
        let model = Self::new(spec, &cpu)?;
        if *device == cpu {
            return Ok(model);
        }
        // Parameters are initialised lazily, on the device they live on when first read:
        // read them all here, or the move would hand their initialisation to `device`.
        struct Materialize;
        impl ModuleVisitor for Materialize {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let _ = param.val();
            }
        }
        model.visit(&mut Materialize);
        Ok(model.fork(device))
    }

    /// Validates the architecture against the input shape and builds the module on `device`.
    pub fn new(spec: &ModelSpec, device: &Device) -> Result<Self, GraphError> {
        // Every shape and the parameter count are bounded before anything is allocated
        // (plugins choose the sizes).
        let (shapes, _) = infer_model(&spec.architecture, &spec.input_shape, spec.task.outputs())?;
        let features =
            shapes.last().map_or(&spec.input_shape, |s| s.last().expect("a block has nodes")).iter().product();
        let blocks = spec
            .architecture
            .blocks
            .iter()
            .zip(shapes)
            .map(|(graph, shapes)| {
                let nodes = graph
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| NodeModule::new(&n.op, &shapes[n.input_ids(i + 1)[0]], device))
                    .collect();
                BlockModule { nodes, graph: graph.clone(), shapes }
            })
            .collect();
        let head = LinearConfig::new(features, spec.task.outputs()).init(device);
        Ok(Self { blocks, head, spec: spec.clone() })
    }

    /// The device the model's parameters live on.
    pub fn device(&self) -> Device {
        self.head.weight.val().device()
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// `[batch, features...]` flat samples to `[batch, outputs]` logits or predictions.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        let batch = input.dims()[0];
        let mut x = Value::from_flat(input, &self.spec.input_shape);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = x.flatten(batch);
        self.head.forward(x)
    }

    /// Trainable values: every parameter but batch-norm running statistics.
    pub fn parameter_count(&self) -> usize {
        self.parameter_paths()
            .iter()
            .filter(|(path, _)| !path.contains(".running_"))
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Every parameter's stable path and shape, in module order (batch-norm running
    /// statistics included: weight sharing copies them too).
    pub fn parameter_paths(&self) -> Vec<(String, Vec<usize>)> {
        // burn announces every field (parameters included) with enter/exit_module.
        #[derive(Default)]
        struct Paths {
            stack: Vec<String>,
            found: Vec<(String, Vec<usize>)>,
        }
        impl ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.stack.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.stack.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.found.push((self.stack.join("."), param.val().dims().to_vec()));
            }
        }
        let mut paths = Paths::default();
        self.visit(&mut paths);
        paths.found
    }
}

impl BlockModule {
    /// The block's graph, as the model was built from it.
    pub fn graph(&self) -> &BlockGraph {
        &self.graph
    }

    /// Every node's sample shape, index 0 the block's input.
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    fn forward(&self, input: Value) -> Value {
        let mut values: Vec<Option<Value>> = Vec::with_capacity(self.nodes.len() + 1);
        values.push(Some(input));
        let last_use = last_uses(&self.graph);
        for (i, (node, module)) in self.graph.nodes.iter().zip(&self.nodes).enumerate() {
            let id = i + 1;
            let ids = node.input_ids(id);
            // Move a value out at its last use, clone it before: fewer live tensors.
            let args: Vec<Value> = ids
                .iter()
                .map(|&src| {
                    if last_use[src] == id { values[src].take() } else { values[src].clone() }
                        .expect("graph validated: inputs are computed before use")
                })
                .collect();
            let value = module.forward(&node.op, args, &self.shapes[id]);
            debug_assert_eq!(
                value.sample_shape(),
                self.shapes[id],
                "block `{}` node {id}: runtime shape differs from inferred",
                self.graph.name
            );
            values.push(Some(value));
        }
        values.pop().flatten().expect("graph validated: a block has at least one node")
    }
}

/// For every node id, the id of the last node that reads it.
fn last_uses(graph: &BlockGraph) -> Vec<usize> {
    let mut last = vec![0; graph.nodes.len() + 1];
    for (i, node) in graph.nodes.iter().enumerate() {
        for src in node.input_ids(i + 1) {
            last[src] = i + 1;
        }
    }
    last[graph.nodes.len()] = usize::MAX;
    last
}
