//! The primitive ops a block graph is made of, and how a node names its inputs.

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

/// One node of a block graph: an op and the ids of the nodes it reads.
///
/// `inputs` defaults to the previous node, so a plain chain needs no ids at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<usize>,
}

impl Node {
    pub fn new(op: Op) -> Self {
        Self { op, inputs: Vec::new() }
    }

    pub fn with_inputs(op: Op, inputs: Vec<usize>) -> Self {
        Self { op, inputs }
    }

    /// The node ids this node reads, given its own id (the previous node when unset).
    pub fn input_ids(&self, own_id: usize) -> Vec<usize> {
        if self.inputs.is_empty() { vec![own_id - 1] } else { self.inputs.clone() }
    }
}

// `serde(flatten)` would silently accept misspelt keys; a node is read as a map instead,
// `inputs` taken out, and the rest parsed strictly as an `Op`.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let inputs = match map.remove("inputs") {
            None => Vec::new(),
            Some(value) => Vec::<usize>::deserialize(value)
                .map_err(|e| D::Error::custom(format!("`inputs` must be a list of node ids: {e}")))?,
        };
        let op = Op::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(Self { op, inputs })
    }
}

/// A kernel, pool or stride size: one number for every spatial axis, or one per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Kernel {
    Square(usize),
    Rect([usize; 2]),
}

impl Kernel {
    /// The size along spatial axis `axis` (0 = length/height, 1 = width).
    pub fn along(self, axis: usize) -> usize {
        match self {
            Kernel::Square(k) => k,
            Kernel::Rect(k) => k[axis.min(1)],
        }
    }
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding.
    Valid,
    /// `dilation * (kernel - 1) / 2` on both sides: the output keeps the input's size for
    /// odd kernels at stride 1.
    #[default]
    Same,
    /// This many zeros on both sides of every spatial axis.
    Explicit(usize),
    /// `dilation * (kernel - 1)` zeros before the first step and none after: each output
    /// step sees only the steps up to its own (conv1d only).
    Causal,
}

impl Padding {
    /// Padding before and after the values of one spatial axis.
    pub fn sides(self, kernel: usize, dilation: usize) -> (usize, usize) {
        let span = dilation * kernel.saturating_sub(1);
        match self {
            Padding::Valid => (0, 0),
            Padding::Same => (span / 2, span / 2),
            Padding::Explicit(p) => (p, p),
            Padding::Causal => (span, 0),
        }
    }
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_max_len() -> usize {
    512
}
fn default_slope() -> f64 {
    0.2
}

/// A primitive op the host implements natively. Shapes are channels-first, batch excluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `[features] -> [units]`.
    Dense {
        units: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// `[C, L] -> [filters, L']`.
    Conv1d {
        filters: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        dilation: usize,
        #[serde(default = "one")]
        groups: usize,
    },
    /// `[C, H, W] -> [filters, H', W']`.
    Conv2d {
        filters: usize,
        kernel: Kernel,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        dilation: usize,
        #[serde(default = "one")]
        groups: usize,
    },
    /// Depthwise conv (one filter per channel) then a pointwise 1x1 conv to `filters`;
    /// rank 2 or 3.
    SeparableConv {
        filters: usize,
        kernel: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: Padding,
        #[serde(default = "one")]
        dilation: usize,
    },
    /// Normalises each channel over the batch (and spatial axes).
    BatchNorm,
    /// Normalises each position over its channels.
    LayerNorm,
    Dropout {
        rate: f64,
    },
    Relu,
    /// `x` where positive, else `slope * x`.
    LeakyRelu {
        #[serde(default = "default_slope")]
        slope: f64,
    },
    Gelu,
    Swish,
    Tanh,
    Sigmoid,
    /// Rank 2 or 3; `stride` defaults to `size`.
    MaxPool {
        size: usize,
        stride: Option<usize>,
    },
    AvgPool {
        size: usize,
        stride: Option<usize>,
    },
    /// `[C, ...] -> [C]`.
    GlobalAvgPool,
    GlobalMaxPool,
    /// `[...] -> [product]`.
    Flatten,
    /// `[F] -> [units]`: the first `units` features, or all of them followed by zeros.
    MatchFeatures {
        units: usize,
    },
    Reshape {
        shape: Vec<usize>,
    },
    /// Element-wise sum of two or more inputs of one shape.
    Add,
    /// Element-wise product of two or more inputs of one shape.
    Multiply,
    /// Stacks inputs along the channel axis; other axes must agree.
    Concat,
    /// Over `[C, L]` as a sequence of L steps of C features: `[H, L]`, or `[H]` (last
    /// step) without `return_sequences`; H doubles when bidirectional.
    Lstm {
        hidden: usize,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        return_sequences: bool,
    },
    Gru {
        hidden: usize,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        return_sequences: bool,
    },
    /// A plain recurrent layer, `h = tanh(W x + U h' + b)`; shapes as `Lstm`.
    Rnn {
        hidden: usize,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        return_sequences: bool,
    },
    /// Multi-head self-attention over `[D, L]` (L steps of D features); D % heads == 0.
    SelfAttention {
        heads: usize,
        #[serde(default)]
        dropout: f64,
    },
    /// `[L]` token ids -> `[dim, L]`.
    Embedding {
        vocab: usize,
        dim: usize,
    },
    /// Adds sinusoidal position codes to `[D, L]`, L at most `max_len`.
    PositionalEncoding {
        #[serde(default = "default_max_len")]
        max_len: usize,
    },
    Identity,
}

/// Declares `Op::NAMES` and `Op::name` from one list of variants and their names: the
/// `match` in `name` is exhaustive, so a new variant cannot compile without joining the
/// list, and every test that walks `NAMES` (the every-op fixture's) sees it.
macro_rules! op_names {
    ($($variant:ident => $name:literal),* $(,)?) => {
        impl Op {
            /// Every op's name as written in architecture files, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The op's name as written in architecture files.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$variant { .. } => $name,)*
                }
            }
        }
    };
}

op_names! {
    Dense => "dense",
    Conv1d => "conv1d",
    Conv2d => "conv2d",
    SeparableConv => "separable_conv",
    BatchNorm => "batch_norm",
    LayerNorm => "layer_norm",
    Dropout => "dropout",
    Relu => "relu",
    LeakyRelu => "leaky_relu",
    Gelu => "gelu",
    Swish => "swish",
    Tanh => "tanh",
    Sigmoid => "sigmoid",
    MaxPool => "max_pool",
    AvgPool => "avg_pool",
    GlobalAvgPool => "global_avg_pool",
    GlobalMaxPool => "global_max_pool",
    Flatten => "flatten",
    MatchFeatures => "match_features",
    Reshape => "reshape",
    Add => "add",
    Multiply => "multiply",
    Concat => "concat",
    Lstm => "lstm",
    Gru => "gru",
    Rnn => "rnn",
    SelfAttention => "self_attention",
    Embedding => "embedding",
    PositionalEncoding => "positional_encoding",
    Identity => "identity",
}

impl Op {
    /// Whether the op combines several inputs.
    pub fn is_merge(&self) -> bool {
        matches!(self, Op::Add | Op::Multiply | Op::Concat)
    }
}

#[cfg(test)]
mod tests {
    use super::Op;

    /// Each listed name is the tag serde reads for its variant: an op that needs no fields
    /// parses back to that name, and one that needs some is refused for a missing field,
    /// never as an unknown variant.
    #[test]
    fn every_name_is_the_tag_architecture_files_use() {
        for name in Op::NAMES {
            match serde_json::from_value::<Op>(serde_json::json!({ "op": name })) {
                Ok(op) => assert_eq!(op.name(), *name),
                Err(err) => assert!(err.to_string().contains("missing field"), "`{name}`: {err}"),
            }
        }
        let mut unique = Op::NAMES.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), Op::NAMES.len(), "a name is listed twice");
    }
}
