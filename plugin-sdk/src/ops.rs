//! One typed builder per primitive op the host accepts, so that a misspelt op or parameter
//! is a compile error rather than a block the host refuses at run time. Each function
//! takes the op's required parameters; each method sets one optional parameter, and those
//! left unset take the host's default (named in the method's documentation). Add the
//! result to a [`GraphBuilder`](crate::graph::GraphBuilder):
//!
//! ```
//! use msh_plugin_sdk::prelude::*;
//!
//! let mut g = GraphBuilder::new("downsample");
//! g.add(ops::conv2d(64, 3).stride(2));
//! g.add(ops::batch_norm());
//! let branch = g.add(ops::relu());
//! g.add_from(ops::concat(), &[0, branch]);
//! let graph = g.build();
//! assert_eq!(graph.nodes[0].op, "conv2d");
//! let params: Vec<&str> = graph.nodes[0].params.iter().map(|p| p.name.as_str()).collect();
//! assert_eq!(params, ["filters", "kernel", "stride"]);
//! ```
//!
//! The list mirrors the host's `Op` (its names, parameters and defaults); a unit test
//! parses every builder's node with the host's own parser.

use crate::types::{Param, Value};

/// An op and its parameters, as a graph node holds them (without inputs).
#[derive(Debug, Clone)]
#[must_use]
pub struct OpNode {
    pub op: &'static str,
    pub params: Vec<Param>,
}

impl OpNode {
    fn new(op: &'static str) -> Self {
        Self { op, params: Vec::new() }
    }

    /// Sets parameter `name`; setting one twice keeps its first place and the last value.
    fn with(mut self, name: &str, value: Value) -> Self {
        match self.params.iter_mut().find(|p| p.name == name) {
            Some(param) => param.value = value,
            None => self.params.push(Param { name: name.into(), value }),
        }
        self
    }
}

/// A kernel size: one number for every spatial axis, or one per axis (`[height, width]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Square(i64),
    Rect([i64; 2]),
}

impl From<i64> for Kernel {
    fn from(size: i64) -> Self {
        Kernel::Square(size)
    }
}

impl From<[i64; 2]> for Kernel {
    fn from(sizes: [i64; 2]) -> Self {
        Kernel::Rect(sizes)
    }
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding.
    Valid,
    /// `dilation * (kernel - 1) / 2` on both sides: odd kernels at stride 1 keep the size.
    #[default]
    Same,
    /// This many zeros on both sides of every spatial axis.
    Explicit(i64),
    /// `dilation * (kernel - 1)` zeros before the first step, none after (conv1d only).
    Causal,
}

/// A parameter's value in the contract's terms.
trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for i64 {
    fn into_value(self) -> Value {
        Value::Int(self)
    }
}

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::Float(self)
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Flag(self)
    }
}

impl IntoValue for Vec<i64> {
    fn into_value(self) -> Value {
        Value::Ints(self)
    }
}

impl IntoValue for Kernel {
    fn into_value(self) -> Value {
        match self {
            Kernel::Square(size) => Value::Int(size),
            Kernel::Rect(sizes) => Value::Ints(sizes.to_vec()),
        }
    }
}

impl IntoValue for Padding {
    fn into_value(self) -> Value {
        match self {
            Padding::Valid => Value::Text("valid".into()),
            Padding::Same => Value::Text("same".into()),
            // The host reads an integer padding as explicit.
            Padding::Explicit(zeros) => Value::Int(zeros),
            Padding::Causal => Value::Text("causal".into()),
        }
    }
}

/// Declares the ops: a builder function and type per op, and (for the tests) every op with
/// every parameter set, and with every defaulted parameter set to its default.
macro_rules! ops {
    ($(
        $(#[doc = $doc:literal])*
        $fn:ident -> $ty:ident ($($required:ident: $required_ty:ty),*)
            { $($optional:ident: $optional_ty:ty $(= $default:expr)?),* }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = ""]
            #[doc = concat!("The host's `", stringify!($fn), "` op.")]
            pub fn $fn($($required: impl Into<$required_ty>),*) -> $ty {
                $ty(OpNode::new(stringify!($fn))$(.with(stringify!($required), $required.into().into_value()))*)
            }

            #[doc = concat!("The `", stringify!($fn), "` op being built (see [`", stringify!($fn), "()`]).")]
            #[derive(Debug, Clone)]
            #[must_use]
            pub struct $ty(OpNode);

            impl $ty {
                $(
                    #[doc = concat!("Sets `", stringify!($optional), "`", $(" (the host's default: `", stringify!($default), "`)",)? ".")]
                    pub fn $optional(self, value: impl Into<$optional_ty>) -> Self {
                        $ty(self.0.with(stringify!($optional), value.into().into_value()))
                    }
                )*
            }

            impl From<$ty> for OpNode {
                fn from(op: $ty) -> OpNode {
                    op.0
                }
            }
        )*

        /// Every op, with every parameter set to a sample of its type.
        #[cfg(test)]
        fn every_op_fully_set() -> Vec<OpNode> {
            vec![$(
                OpNode::from($fn($(sample::<$required_ty>(stringify!($required))),*)
                    $(.$optional(sample::<$optional_ty>(stringify!($optional))))*),
            )*]
        }

        /// Every op as its builder leaves it, and with every defaulted parameter set to its
        /// default: the host must read both as the same op.
        #[cfg(test)]
        fn every_op_with_defaults() -> Vec<(OpNode, OpNode)> {
            vec![$({
                let bare = $fn($(sample::<$required_ty>(stringify!($required))),*);
                let defaults = bare.clone()$($(.$optional({ let value: $optional_ty = $default; value }))?)*;
                (OpNode::from(bare), OpNode::from(defaults))
            },)*]
        }
    };
}

ops! {
    /// `[features] -> [units]`.
    dense -> Dense (units: i64) { bias: bool = true }
    /// `[C, L] -> [filters, L']`.
    conv1d -> Conv1d (filters: i64, kernel: i64) {
        stride: i64 = 1, padding: Padding = Padding::Same, dilation: i64 = 1, groups: i64 = 1
    }
    /// `[C, H, W] -> [filters, H', W']`.
    conv2d -> Conv2d (filters: i64, kernel: Kernel) {
        stride: i64 = 1, padding: Padding = Padding::Same, dilation: i64 = 1, groups: i64 = 1
    }
    /// A depthwise convolution (one filter per channel), then a pointwise 1x1 one to
    /// `filters`; rank 2 or 3.
    separable_conv -> SeparableConv (filters: i64, kernel: i64) {
        stride: i64 = 1, padding: Padding = Padding::Same, dilation: i64 = 1
    }
    /// Normalises each channel over the batch (and spatial axes).
    batch_norm -> BatchNorm () {}
    /// Normalises each position over its channels.
    layer_norm -> LayerNorm () {}
    /// Zeroes each value with probability `rate` in training.
    dropout -> Dropout (rate: f64) {}
    relu -> Relu () {}
    /// `x` where positive, else `slope * x`.
    leaky_relu -> LeakyRelu () { slope: f64 = 0.2 }
    gelu -> Gelu () {}
    swish -> Swish () {}
    tanh -> Tanh () {}
    sigmoid -> Sigmoid () {}
    /// Rank 2 or 3; `stride` defaults to `size`.
    max_pool -> MaxPool (size: i64) { stride: i64 }
    /// Rank 2 or 3; `stride` defaults to `size`.
    avg_pool -> AvgPool (size: i64) { stride: i64 }
    /// `[C, ...] -> [C]`.
    global_avg_pool -> GlobalAvgPool () {}
    /// `[C, ...] -> [C]`.
    global_max_pool -> GlobalMaxPool () {}
    /// `[...] -> [product]`.
    flatten -> Flatten () {}
    /// `[F] -> [units]`: the first `units` features, or all of them followed by zeros.
    match_features -> MatchFeatures (units: i64) {}
    /// The same values in another shape.
    reshape -> Reshape (shape: Vec<i64>) {}
    /// Element-wise sum of two or more inputs of one shape.
    add -> Add () {}
    /// Element-wise product of two or more inputs of one shape.
    multiply -> Multiply () {}
    /// Stacks inputs along the channel axis; other axes must agree.
    concat -> Concat () {}
    /// Over `[C, L]` as L steps of C features: `[H, L]`, or `[H]` (the last step) without
    /// `return_sequences`; H doubles when bidirectional.
    lstm -> Lstm (hidden: i64) { bidirectional: bool = false, return_sequences: bool = false }
    /// Shapes as [`lstm()`].
    gru -> Gru (hidden: i64) { bidirectional: bool = false, return_sequences: bool = false }
    /// A plain recurrent layer, `h = tanh(W x + U h' + b)`; shapes as [`lstm()`].
    rnn -> Rnn (hidden: i64) { bidirectional: bool = false, return_sequences: bool = false }
    /// Multi-head self-attention over `[D, L]` (L steps of D features); D % heads == 0.
    self_attention -> SelfAttention (heads: i64) { dropout: f64 = 0.0 }
    /// `[L]` token ids -> `[dim, L]`.
    embedding -> Embedding (vocab: i64, dim: i64) {}
    /// Adds sinusoidal position codes to `[D, L]`, L at most `max_len`.
    positional_encoding -> PositionalEncoding () { max_len: i64 = 512 }
    identity -> Identity () {}
}

/// A value of each parameter type, for the tests.
#[cfg(test)]
fn sample<T: Sample>(name: &str) -> T {
    T::sample(name)
}

#[cfg(test)]
trait Sample {
    fn sample(name: &str) -> Self;
}

#[cfg(test)]
mod samples {
    use super::*;

    impl Sample for i64 {
        fn sample(name: &str) -> Self {
            name.len() as i64
        }
    }
    impl Sample for f64 {
        fn sample(_name: &str) -> Self {
            0.25
        }
    }
    impl Sample for bool {
        fn sample(_name: &str) -> Self {
            true
        }
    }
    impl Sample for Vec<i64> {
        fn sample(_name: &str) -> Self {
            vec![4, 2]
        }
    }
    impl Sample for Kernel {
        fn sample(_name: &str) -> Self {
            Kernel::Rect([3, 1])
        }
    }
    impl Sample for Padding {
        fn sample(_name: &str) -> Self {
            Padding::Explicit(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value as Json};

    /// The node as the host reads a plugin's (its `convert::node`): parameters as fields,
    /// an integer padding as explicit.
    fn host_op(node: &OpNode) -> Result<msh_graph::Op, String> {
        let mut map = Map::new();
        map.insert("op".into(), Json::String(node.op.into()));
        for p in &node.params {
            let value = match (p.name.as_str(), &p.value) {
                ("padding", Value::Int(n)) => serde_json::json!({ "explicit": n }),
                (_, Value::Int(v)) => Json::from(*v),
                (_, Value::Float(v)) => Json::from(*v),
                (_, Value::Flag(v)) => Json::Bool(*v),
                (_, Value::Text(v)) => Json::String(v.clone()),
                (_, Value::Ints(v)) => Json::from(v.clone()),
            };
            assert!(map.insert(p.name.clone(), value).is_none(), "{}: `{}` twice", node.op, p.name);
        }
        serde_json::from_value(Json::Object(map)).map_err(|e| format!("{}: {e}", node.op))
    }

    /// The op names the host knows (`Op::NAMES`, made from the list behind `Op::name`).
    fn host_op_names() -> Vec<String> {
        msh_graph::Op::NAMES.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn every_builder_names_an_op_and_parameters_the_host_accepts() {
        let built = every_op_fully_set();
        for node in &built {
            let op = host_op(node).unwrap_or_else(|e| panic!("the host refuses {node:?}: {e}"));
            assert_eq!(op.name(), node.op);
        }
        let mut names: Vec<String> = built.iter().map(|n| n.op.to_string()).collect();
        let mut host = host_op_names();
        names.sort();
        host.sort();
        assert_eq!(names, host, "one builder per op of the host");
    }

    #[test]
    fn the_defaults_are_the_hosts() {
        for (bare, defaults) in every_op_with_defaults() {
            assert_eq!(host_op(&bare), host_op(&defaults), "{}", bare.op);
        }
    }

    #[test]
    fn kernels_paddings_and_shapes_are_the_hosts_values() {
        let square = conv2d(8, 3).padding(Padding::Valid).into();
        let rect = conv2d(8, [3, 1]).padding(Padding::Causal).into();
        let explicit = conv1d(8, 3).padding(Padding::Explicit(1)).into();
        let same = separable_conv(8, 3).padding(Padding::Same).into();
        let reshape = reshape(vec![2, 4]).into();
        for node in [square, rect, explicit, same, reshape] {
            host_op(&node).unwrap_or_else(|e| panic!("the host refuses {node:?}: {e}"));
        }
        let node: OpNode = dense(8).bias(true).bias(false).into();
        let expected = vec![crate::graph::int("units", 8), crate::graph::flag("bias", false)];
        assert_eq!(format!("{:?}", node.params), format!("{expected:?}"));
    }
}
