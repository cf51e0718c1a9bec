//! A loaded `Model` as ONNX nodes: every block-graph node lowered to the ops that compute
//! what `model/node.rs` computes, its module's weights as initializers.
//!
//! Values keep the model's layout (batch first, then channels-first sample axes); ops that
//! burn applies over the last axis (layer norm, attention, embeddings) are wrapped in
//! transposes exactly where `node.rs` swaps axes.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::activation::Activation;
use burn::prelude::*;

use super::builder::{GraphBuilder, float, i64s, int, ints, string};
use msh_graph::{GraphError, Op, Shape};
use msh_train::model::{LAYER_NORM_EPSILON, Model, NodeModule};

/// A parameter's values, row-major.
fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().expect("parameters are float tensors")
}

fn param<const D: usize>(param: &Param<Tensor<D>>) -> (Vec<usize>, Vec<f32>) {
    let tensor = param.val();
    (tensor.dims().to_vec(), values(tensor))
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Appends `model`'s nodes reading `input` (standardised samples of the model's input shape,
/// batch first) and returns the name of the head's output: logits, or standardised values.
/// `prefix` keeps the names of ensemble members apart.
pub fn lower_model(g: &mut GraphBuilder, model: &Model, input: &str, prefix: &str) -> Result<String, GraphError> {
    let mut x = input.to_string();
    let mut shape = model.spec().input_shape.clone();
    for (b, block) in model.blocks.iter().enumerate() {
        let graph = block.graph();
        let shapes = block.shapes();
        let mut names = vec![x];
        for (i, (node, module)) in graph.nodes.iter().zip(&block.nodes).enumerate() {
            let id = i + 1;
            let ids = node.input_ids(id);
            let inputs: Vec<&str> = ids.iter().map(|&src| names[src].as_str()).collect();
            let mut lowering = Lowering { g: &mut *g, hint: format!("{prefix}b{b}.n{id}.{}", node.op.name()) };
            let output = lowering.node(&node.op, module, &inputs, &shapes[ids[0]], &shapes[id]).map_err(|reason| {
                GraphError {
                    block: graph.name.clone(),
                    block_index: b,
                    node: id,
                    op: node.op.name().to_string(),
                    reason,
                }
            })?;
            names.push(output);
        }
        x = names.pop().expect("a block has nodes");
        shape = shapes.last().expect("a block has nodes").clone();
    }
    let mut head = Lowering { g, hint: format!("{prefix}head") };
    if shape.len() > 1 {
        x = head.g.op("Flatten", &[&x], vec![int("axis", 1)], &head.hint);
    }
    Ok(head.linear(&x, &model.head, ""))
}

struct Lowering<'a> {
    g: &'a mut GraphBuilder,
    /// The node's name stem: `b<block>.n<node>.<op>`.
    hint: String,
}

impl Lowering<'_> {
    fn op(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<crate::proto::AttributeProto>) -> String {
        self.g.op(op_type, inputs, attributes, &self.hint)
    }

    fn floats(&mut self, what: &str, dims: &[usize], values: &[f32]) -> String {
        self.g.floats(&format!("{}.{what}", self.hint), dims, values)
    }

    fn ints(&mut self, what: &str, values: &[i64]) -> String {
        self.g.ints(&format!("{}.{what}", self.hint), values)
    }

    fn scalar(&mut self, what: &str, value: f32) -> String {
        self.g.scalar(&format!("{}.{what}", self.hint), value)
    }

    fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![ints("perm", perm)])
    }

    /// `x` (any rank) times the layer's `[in, out]` weight, plus its bias: burn's `Linear`.
    fn linear(&mut self, x: &str, linear: &Linear, what: &str) -> String {
        let (dims, weight) = param(&linear.weight);
        let w = self.floats(&format!("{what}weight"), &dims, &weight);
        let mut y = self.op("MatMul", &[x, &w], vec![]);
        if let Some(bias) = &linear.bias {
            let (dims, bias) = param(bias);
            let b = self.floats(&format!("{what}bias"), &dims, &bias);
            y = self.op("Add", &[&y, &b], vec![]);
        }
        y
    }

    /// An ONNX `Conv` with burn's weight layout (`[out, in / groups, kernel...]`).
    fn conv(
        &mut self,
        x: &str,
        weight: (Vec<usize>, Vec<f32>),
        bias: Option<(Vec<usize>, Vec<f32>)>,
        spec: ConvSpec,
        what: &str,
    ) -> String {
        let w = self.floats(&format!("{what}weight"), &weight.0, &weight.1);
        let mut inputs = vec![x.to_string(), w];
        if let Some((dims, bias)) = bias {
            inputs.push(self.floats(&format!("{what}bias"), &dims, &bias));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let kernel = i64s(&weight.0[2..]);
        let axes = kernel.len();
        self.op(
            "Conv",
            &inputs,
            vec![
                ints("kernel_shape", &kernel),
                ints("strides", &vec![spec.stride as i64; axes]),
                ints("dilations", &vec![spec.dilation as i64; axes]),
                ints("pads", &spec.pads),
                int("group", spec.groups as i64),
            ],
        )
    }

    /// Lowers one node reading `inputs` (the first of shape `input`) to its output `out`.
    fn node(
        &mut self,
        op: &Op,
        module: &NodeModule,
        inputs: &[&str],
        input: &Shape,
        out: &Shape,
    ) -> Result<String, String> {
        let x = inputs[0];
        let rank = input.len();
        let spatial = |size: usize| vec![size as i64; rank - 1];
        Ok(match (op, module) {
            (Op::Dense { .. }, NodeModule::Dense(m)) => self.linear(x, m, ""),
            (&Op::Conv1d { stride, padding, dilation, groups, kernel, .. }, NodeModule::Conv1d(m)) => {
                let (before, after) = padding.sides(kernel, dilation);
                let spec = ConvSpec { stride, dilation, groups, pads: vec![before as i64, after as i64] };
                self.conv(x, param(&m.weight), m.bias.as_ref().map(param), spec, "")
            }
            (&Op::Conv2d { stride, padding, dilation, groups, kernel, .. }, NodeModule::Conv2d(m)) => {
                // `node.rs` pads both sides of each axis by the first side's amount.
                let (h, w) = (padding.sides(kernel.along(0), dilation).0, padding.sides(kernel.along(1), dilation).0);
                let spec = ConvSpec { stride, dilation, groups, pads: i64s(&[h, w, h, w]) };
                self.conv(x, param(&m.weight), m.bias.as_ref().map(param), spec, "")
            }
            (&Op::SeparableConv { stride, padding, dilation, kernel, .. }, module) => {
                let pad = padding.sides(kernel, dilation).0 as i64;
                let depthwise = ConvSpec { stride, dilation, groups: input[0], pads: vec![pad; 2 * (rank - 1)] };
                let pointwise = ConvSpec { stride: 1, dilation: 1, groups: 1, pads: vec![0; 2 * (rank - 1)] };
                let (dw, pw) = match module {
                    NodeModule::Separable1d(m) => (
                        (param(&m.depthwise.weight), m.depthwise.bias.as_ref().map(param)),
                        (param(&m.pointwise.weight), m.pointwise.bias.as_ref().map(param)),
                    ),
                    NodeModule::Separable2d(m) => (
                        (param(&m.depthwise.weight), m.depthwise.bias.as_ref().map(param)),
                        (param(&m.pointwise.weight), m.pointwise.bias.as_ref().map(param)),
                    ),
                    other => return Err(mismatch(op, other)),
                };
                let y = self.conv(x, dw.0, dw.1, depthwise, "depthwise.");
                self.conv(&y, pw.0, pw.1, pointwise, "pointwise.")
            }
            (Op::BatchNorm, NodeModule::BatchNorm(m)) => {
                let (dims, gamma) = param(&m.gamma);
                let scale = self.floats("gamma", &dims, &gamma);
                let bias = self.floats("beta", &dims, &param(&m.beta).1);
                let mean = self.floats("running_mean", &dims, &values(m.running_mean.value()));
                let var = self.floats("running_var", &dims, &values(m.running_var.value()));
                self.op(
                    "BatchNormalization",
                    &[x, &scale, &bias, &mean, &var],
                    vec![float("epsilon", m.epsilon as f32)],
                )
            }
            (Op::LayerNorm, NodeModule::LayerNorm(m)) => {
                // Over the channels: move them last, as `node.rs` does.
                let (to_last, back): (&[i64], &[i64]) = match rank {
                    1 => (&[], &[]),
                    2 => (&[0, 2, 1], &[0, 2, 1]),
                    _ => (&[0, 2, 3, 1], &[0, 3, 1, 2]),
                };
                let moved = if rank > 1 { self.transpose(x, to_last) } else { x.to_string() };
                let (dims, gamma) = param(&m.gamma);
                let mut norm_inputs = vec![moved, self.floats("gamma", &dims, &gamma)];
                if let Some(beta) = &m.beta {
                    norm_inputs.push(self.floats("beta", &dims, &param(beta).1));
                }
                let norm_inputs: Vec<&str> = norm_inputs.iter().map(String::as_str).collect();
                let y = self.op(
                    "LayerNormalization",
                    &norm_inputs,
                    vec![int("axis", -1), float("epsilon", LAYER_NORM_EPSILON as f32)],
                );
                if rank > 1 { self.transpose(&y, back) } else { y }
            }
            // Inference: dropout passes its input through.
            (Op::Dropout { .. } | Op::Identity, _) => x.to_string(),
            (Op::Relu, _) => self.op("Relu", &[x], vec![]),
            (&Op::LeakyRelu { slope }, _) => self.op("LeakyRelu", &[x], vec![float("alpha", slope as f32)]),
            (Op::Tanh, _) => self.op("Tanh", &[x], vec![]),
            (Op::Sigmoid, _) => self.op("Sigmoid", &[x], vec![]),
            (Op::Swish, _) => {
                let s = self.op("Sigmoid", &[x], vec![]);
                self.op("Mul", &[x, &s], vec![])
            }
            (Op::Gelu, _) => {
                // Opset 17 has no Gelu: x * (1 + erf(x / sqrt 2)) / 2, burn's exact form.
                let root = self.scalar("sqrt2", std::f32::consts::SQRT_2);
                let one = self.scalar("one", 1.0);
                let half = self.scalar("half", 0.5);
                let scaled = self.op("Div", &[x, &root], vec![]);
                let erf = self.op("Erf", &[&scaled], vec![]);
                let shifted = self.op("Add", &[&erf, &one], vec![]);
                let product = self.op("Mul", &[x, &shifted], vec![]);
                self.op("Mul", &[&product, &half], vec![])
            }
            (&Op::MaxPool { size, stride } | &Op::AvgPool { size, stride }, _) => {
                let kind = if matches!(op, Op::MaxPool { .. }) { "MaxPool" } else { "AveragePool" };
                let attributes =
                    vec![ints("kernel_shape", &spatial(size)), ints("strides", &spatial(stride.unwrap_or(size)))];
                self.op(kind, &[x], attributes)
            }
            (Op::GlobalAvgPool | Op::GlobalMaxPool, _) => {
                let kind = if matches!(op, Op::GlobalAvgPool) { "GlobalAveragePool" } else { "GlobalMaxPool" };
                let pooled = self.op(kind, &[x], vec![]);
                self.op("Flatten", &[&pooled], vec![int("axis", 1)])
            }
            (Op::Flatten, _) if rank == 1 => x.to_string(),
            (Op::Flatten, _) => self.op("Flatten", &[x], vec![int("axis", 1)]),
            (&Op::MatchFeatures { units }, _) => {
                let flat = if rank > 1 { self.op("Flatten", &[x], vec![int("axis", 1)]) } else { x.to_string() };
                let features: usize = input.iter().product();
                if units == features {
                    flat
                } else if units < features {
                    let (starts, ends, axes) =
                        (self.ints("starts", &[0]), self.ints("ends", &[units as i64]), self.ints("axes", &[1]));
                    self.op("Slice", &[&flat, &starts, &ends, &axes], vec![])
                } else {
                    let pads = self.ints("pads", &[0, 0, 0, (units - features) as i64]);
                    self.op("Pad", &[&flat, &pads], vec![])
                }
            }
            (Op::Reshape { .. }, _) => {
                // 0 copies the batch axis from the input.
                let shape: Vec<i64> = std::iter::once(0).chain(out.iter().map(|&d| d as i64)).collect();
                let shape = self.ints("shape", &shape);
                self.op("Reshape", &[x, &shape], vec![])
            }
            (Op::Add | Op::Multiply, _) => {
                // Pairwise from the first, as `node.rs` folds them.
                let kind = if matches!(op, Op::Add) { "Add" } else { "Mul" };
                let mut acc = inputs[0].to_string();
                for next in &inputs[1..] {
                    acc = self.op(kind, &[&acc, next], vec![]);
                }
                acc
            }
            (Op::Concat, _) => self.op("Concat", inputs, vec![int("axis", 1)]),
            (&Op::Lstm { hidden, return_sequences, .. }, NodeModule::Lstm(m)) => {
                let gates = lstm_gates(m)?;
                self.recurrent("LSTM", x, hidden, &[gates], return_sequences, vec![])
            }
            (&Op::Lstm { hidden, return_sequences, .. }, NodeModule::BiLstm(m)) => {
                let gates = [lstm_gates(&m.forward)?, lstm_gates(&m.reverse)?];
                self.recurrent("LSTM", x, hidden, &gates, return_sequences, vec![])
            }
            (&Op::Gru { hidden, return_sequences, .. }, NodeModule::Gru(m)) => {
                let gates = gru_gates(m)?;
                self.recurrent("GRU", x, hidden, &[gates], return_sequences, vec![int("linear_before_reset", 1)])
            }
            (&Op::Gru { hidden, return_sequences, .. }, NodeModule::BiGru(m)) => {
                let gates = [gru_gates(&m.forward)?, gru_gates(&m.reverse)?];
                self.recurrent("GRU", x, hidden, &gates, return_sequences, vec![int("linear_before_reset", 1)])
            }
            (&Op::Rnn { hidden, return_sequences, .. }, NodeModule::Rnn(m)) => {
                let gates = vec![Gate { input: &m.input, hidden: &m.hidden }];
                self.recurrent("RNN", x, hidden, &[gates], return_sequences, vec![])
            }
            (&Op::Rnn { hidden, return_sequences, .. }, NodeModule::BiRnn(m)) => {
                let gates = [
                    vec![Gate { input: &m.forward.input, hidden: &m.forward.hidden }],
                    vec![Gate { input: &m.reverse.input, hidden: &m.reverse.hidden }],
                ];
                self.recurrent("RNN", x, hidden, &gates, return_sequences, vec![])
            }
            (&Op::SelfAttention { heads, .. }, NodeModule::Attention(m)) => {
                if m.quiet_softmax {
                    return Err("attention with a quiet softmax".into());
                }
                let (d, steps) = (input[0] as i64, input[1] as i64);
                let dk = d / heads as i64;
                let split = self.ints("heads", &[0, steps, heads as i64, dk]);
                let merge = self.ints("merge", &[0, steps, d]);
                let xt = self.transpose(x, &[0, 2, 1]);
                let project = |l: &mut Self, linear: &Linear, what: &str, perm: &[i64]| {
                    let y = l.linear(&xt, linear, what);
                    let y = l.op("Reshape", &[&y, &split], vec![]);
                    l.transpose(&y, perm)
                };
                let q = project(self, &m.query, "query.", &[0, 2, 1, 3]);
                let k = project(self, &m.key, "key.", &[0, 2, 3, 1]);
                let v = project(self, &m.value, "value.", &[0, 2, 1, 3]);
                let scores = self.op("MatMul", &[&q, &k], vec![]);
                let root = self.scalar("sqrt_dk", (dk as f32).sqrt());
                let scores = self.op("Div", &[&scores, &root], vec![]);
                let weights = self.op("Softmax", &[&scores], vec![int("axis", -1)]);
                let context = self.op("MatMul", &[&weights, &v], vec![]);
                let context = self.transpose(&context, &[0, 2, 1, 3]);
                let context = self.op("Reshape", &[&context, &merge], vec![]);
                let y = self.linear(&context, &m.output, "output.");
                self.transpose(&y, &[0, 2, 1])
            }
            (Op::Embedding { .. }, NodeModule::Embedding(m)) => {
                let ids = self.op("Cast", &[x], vec![int("to", crate::proto::DataType::Int64 as i64)]);
                let (dims, table) = param(&m.weight);
                let table = self.floats("weight", &dims, &table);
                let embedded = self.op("Gather", &[&table, &ids], vec![int("axis", 0)]);
                self.transpose(&embedded, &[0, 2, 1])
            }
            (Op::PositionalEncoding { .. }, NodeModule::PositionalEncoding(m)) => {
                // The codes of the first `steps` positions, as a `[1, D, steps]` constant.
                let [_, max_len, d] = m.sinusoids.dims();
                let (channels, steps) = (input[0], input[1]);
                if d != channels || steps > max_len {
                    return Err(format!("codes of {max_len} x {d} for a [{channels}, {steps}] input"));
                }
                let codes = values(m.sinusoids.clone());
                let table = transposed(&codes[..steps * d], steps, d);
                let codes = self.floats("codes", &[1, d, steps], &table);
                self.op("Add", &[x, &codes], vec![])
            }
            (op, module) => return Err(mismatch(op, module)),
        })
    }

    /// An ONNX recurrent op over `[B, C, T]`: the sequence `[B, dirs * H, T]`, or the last
    /// states `[B, dirs * H]`, directions' features concatenated forward then reverse.
    fn recurrent(
        &mut self,
        kind: &str,
        x: &str,
        hidden: usize,
        directions: &[Vec<Gate>],
        return_sequences: bool,
        mut attributes: Vec<crate::proto::AttributeProto>,
    ) -> String {
        let dirs = directions.len();
        let gates = directions[0].len();
        let (mut w, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new());
        let mut channels = 0;
        for direction in directions {
            let mut recurrent_biases = Vec::new();
            for gate in direction {
                let (dims, input) = param(&gate.input.weight);
                channels = dims[0];
                w.extend(transposed(&input, dims[0], dims[1]));
                r.extend(transposed(&param(&gate.hidden.weight).1, hidden, hidden));
                let bias = |linear: &Linear| linear.bias.as_ref().map_or(vec![0.0; hidden], |b| param(b).1);
                b.extend(bias(gate.input));
                recurrent_biases.extend(bias(gate.hidden));
            }
            b.extend(recurrent_biases);
        }
        let w = self.floats("W", &[dirs, gates * hidden, channels], &w);
        let r = self.floats("R", &[dirs, gates * hidden, hidden], &r);
        let b = self.floats("B", &[dirs, 2 * gates * hidden], &b);
        let steps_first = self.transpose(x, &[2, 0, 1]);
        attributes.push(int("hidden_size", hidden as i64));
        attributes.push(string("direction", if dirs == 2 { "bidirectional" } else { "forward" }));
        let outputs = self.g.op_with_outputs(kind, &[&steps_first, &w, &r, &b], attributes, &self.hint, 2);
        let width = (dirs * hidden) as i64;
        if return_sequences {
            // Y: [T, dirs, B, H] -> [B, dirs, H, T] -> [B, dirs * H, T].
            let y = self.transpose(&outputs[0], &[2, 1, 3, 0]);
            let shape = self.ints("shape", &[0, width, -1]);
            self.op("Reshape", &[&y, &shape], vec![])
        } else {
            // Y_h: [dirs, B, H] -> [B, dirs, H] -> [B, dirs * H].
            let y = self.transpose(&outputs[1], &[1, 0, 2]);
            let shape = self.ints("shape", &[0, width]);
            self.op("Reshape", &[&y, &shape], vec![])
        }
    }
}

/// A convolution's geometry: stride and dilation the same on every spatial axis, padding
/// in ONNX's order (every axis's start, then every axis's end).
struct ConvSpec {
    stride: usize,
    dilation: usize,
    groups: usize,
    pads: Vec<i64>,
}

/// One gate of a recurrent layer: its input and hidden transforms (`[in, H]`, `[H, H]`).
struct Gate<'a> {
    input: &'a Linear,
    hidden: &'a Linear,
}

/// Whether a recurrent layer's activations are ONNX's defaults: sigmoid gates, tanh
/// candidates and outputs.
fn default_activations(gate: &Activation, candidate: &Activation, hidden: &Activation) -> bool {
    matches!((gate, candidate, hidden), (Activation::Sigmoid(_), Activation::Tanh(_), Activation::Tanh(_)))
}

/// The LSTM's gates in ONNX's order (input, output, forget, cell).
fn lstm_gates(m: &burn::nn::lstm::Lstm) -> Result<Vec<Gate<'_>>, String> {
    let forget = m.forget_gate.as_ref().ok_or("an LSTM whose forget gate is tied to its input gate")?;
    if m.clip.is_some() {
        return Err("an LSTM that clips its cell".into());
    }
    if !default_activations(&m.gate_activation, &m.cell_activation, &m.hidden_activation) {
        return Err("an LSTM with activations other than sigmoid and tanh".into());
    }
    Ok([&m.input_gate, &m.output_gate, forget, &m.cell_gate]
        .into_iter()
        .map(|g| Gate { input: &g.input_transform, hidden: &g.hidden_transform })
        .collect())
}

/// The GRU's gates in ONNX's order (update, reset, new); burn's default applies the reset
/// after the hidden product, ONNX's `linear_before_reset`.
fn gru_gates(m: &burn::nn::gru::Gru) -> Result<Vec<Gate<'_>>, String> {
    if !m.reset_after {
        return Err("a GRU that resets before the hidden product".into());
    }
    if m.clip.is_some() {
        return Err("a GRU that clips its state".into());
    }
    if !default_activations(&m.gate_activation, &m.hidden_activation, &m.hidden_activation) {
        return Err("a GRU with activations other than sigmoid and tanh".into());
    }
    Ok([&m.update_gate, &m.reset_gate, &m.new_gate]
        .into_iter()
        .map(|g| Gate { input: &g.input_transform, hidden: &g.hidden_transform })
        .collect())
}

fn mismatch(op: &Op, module: &NodeModule) -> String {
    let module = format!("{module:?}");
    let kind = module.split(['(', ' ', '{']).next().unwrap_or("?");
    format!("holds a {kind} module, which no {} node is built with", op.name())
}
