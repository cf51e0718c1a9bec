//! The block-graph IR: plain data describing networks as small DAGs of primitive ops.
//!
//! A block graph knows neither burn nor wasmtime: plugins produce it, the model builder
//! consumes it. Shapes here never include the batch dimension and are channels-first:
//! `[features]`, `[channels, length]` or `[channels, height, width]`.

pub mod arch_file;
mod infer;
mod ops;

pub use infer::{
    MAX_ELEMENTS, MAX_MODEL_PARAMETERS, MAX_NODE_PARAMETERS, MAX_OP_VALUE, infer_architecture, infer_block,
    infer_model, parameter_count,
};
pub use ops::{Kernel, Node, Op, Padding};

use serde::{Deserialize, Serialize};

/// A tensor shape without the batch dimension.
pub type Shape = Vec<usize>;

/// One block: a named DAG of primitive ops. Node id 0 is the block input; the entry at
/// `nodes[i]` has id `i + 1` and reads only ids smaller than its own. The last node is the
/// block output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockGraph {
    pub name: String,
    pub nodes: Vec<Node>,
}

/// An architecture: blocks applied in order, each to the previous one's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub blocks: Vec<BlockGraph>,
}

/// What is wrong with a graph, and where: the block, and the node id inside it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("block `{block}` (#{block_index}), node {node} ({op}): {reason}")]
pub struct GraphError {
    pub block: String,
    pub block_index: usize,
    /// Node id (0 is the block input).
    pub node: usize,
    /// The op's name, e.g. `conv1d`.
    pub op: String,
    pub reason: String,
}

/// Formats a shape the way error messages show it: `[32, 40]`.
pub fn shape_text(shape: &[usize]) -> String {
    format!("{shape:?}")
}
