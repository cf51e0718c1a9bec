//! One graph node as a burn module, and the rank-tagged tensors that flow between nodes.

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::gru::{BiGru, BiGruConfig, Gru, GruConfig};
use burn::nn::lstm::{BiLstm, BiLstmConfig, Lstm, LstmConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Embedding, EmbeddingConfig, Identity, LayerNorm,
    LayerNormConfig, Linear, LinearConfig, PaddingConfig1d, PaddingConfig2d, PositionalEncoding,
    PositionalEncodingConfig,
};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::{avg_pool1d, avg_pool2d};
use burn::tensor::ops::AvgPoolOptions;

use super::activation as fused;
use super::rnn::{BiRnn, Rnn, RnnConfig};
use super::{conv, gru, lstm, max_pool};
use msh_graph::{Op, Shape};

/// A batch of values of one of the ranks the IR allows (batch axis included).
#[derive(Clone, Debug)]
pub enum Value {
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
}

macro_rules! each_rank {
    ($value:expr, $t:ident => $body:expr) => {
        match $value {
            Value::R2($t) => Value::R2($body),
            Value::R3($t) => Value::R3($body),
            Value::R4($t) => Value::R4($body),
        }
    };
}

impl Value {
    /// Reshapes `[batch, n]` flat samples to `[batch, shape...]`.
    pub fn from_flat(flat: Tensor<2>, shape: &[usize]) -> Self {
        let b = flat.dims()[0];
        match *shape {
            [_] => Value::R2(flat),
            [c, l] => Value::R3(flat.reshape([b, c, l])),
            [c, h, w] => Value::R4(flat.reshape([b, c, h, w])),
            _ => unreachable!("shapes are validated to rank 1..=3"),
        }
    }

    pub fn flatten(self, batch: usize) -> Tensor<2> {
        match self {
            Value::R2(t) => t,
            Value::R3(t) => t.reshape([batch as i64, -1]),
            Value::R4(t) => t.reshape([batch as i64, -1]),
        }
    }

    /// The sample shape (batch axis dropped).
    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Value::R2(t) => t.dims()[1..].to_vec(),
            Value::R3(t) => t.dims()[1..].to_vec(),
            Value::R4(t) => t.dims()[1..].to_vec(),
        }
    }

    fn batch(&self) -> usize {
        match self {
            Value::R2(t) => t.dims()[0],
            Value::R3(t) => t.dims()[0],
            Value::R4(t) => t.dims()[0],
        }
    }

    fn r3(self) -> Tensor<3> {
        match self {
            Value::R3(t) => t,
            other => unreachable!("shape inference guarantees rank 2 samples, got {other:?}"),
        }
    }

    fn r4(self) -> Tensor<4> {
        match self {
            Value::R4(t) => t,
            other => unreachable!("shape inference guarantees rank 3 samples, got {other:?}"),
        }
    }
}

/// Depthwise then pointwise convolution over `[B, C, L]`.
#[derive(Module, Debug)]
pub struct Separable1d {
    pub depthwise: Conv1d,
    pub pointwise: Conv1d,
}

/// Depthwise then pointwise convolution over `[B, C, H, W]`.
#[derive(Module, Debug)]
pub struct Separable2d {
    pub depthwise: Conv2d,
    pub pointwise: Conv2d,
}

/// The trainable (or stateful) part of one node; ops without state are `Stateless`.
#[derive(Module, Debug)]
pub enum NodeModule {
    Dense(Linear),
    Conv1d(Conv1d),
    Conv2d(Conv2d),
    Separable1d(Separable1d),
    Separable2d(Separable2d),
    BatchNorm(BatchNorm),
    LayerNorm(LayerNorm),
    Dropout(Dropout),
    Lstm(Lstm),
    BiLstm(BiLstm),
    Gru(Gru),
    BiGru(BiGru),
    Rnn(Rnn),
    BiRnn(BiRnn),
    Attention(MultiHeadAttention),
    Embedding(Embedding),
    PositionalEncoding(PositionalEncoding),
    Stateless(Identity),
}

impl NodeModule {
    /// Builds the module for `op` reading a (validated) input of shape `input`.
    pub fn new(op: &Op, input: &Shape, device: &Device) -> Self {
        let channels = input[0];
        match *op {
            Op::Dense { units, bias } => Self::Dense(LinearConfig::new(channels, units).with_bias(bias).init(device)),
            Op::Conv1d { filters, kernel, stride, padding, dilation, groups } => Self::Conv1d(
                Conv1dConfig::new(channels, filters, kernel)
                    .with_stride(stride)
                    .with_dilation(dilation)
                    .with_groups(groups)
                    .with_padding({
                        let (before, after) = padding.sides(kernel, dilation);
                        PaddingConfig1d::Explicit(before, after)
                    })
                    .init(device),
            ),
            Op::Conv2d { filters, kernel, stride, padding, dilation, groups } => {
                let (kh, kw) = (kernel.along(0), kernel.along(1));
                let (ph, pw) = (padding.sides(kh, dilation).0, padding.sides(kw, dilation).0);
                Self::Conv2d(
                    Conv2dConfig::new([channels, filters], [kh, kw])
                        .with_stride([stride, stride])
                        .with_dilation([dilation, dilation])
                        .with_groups(groups)
                        .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                        .init(device),
                )
            }
            Op::SeparableConv { filters, kernel, stride, padding, dilation } => {
                let pad = padding.sides(kernel, dilation).0;
                if input.len() == 2 {
                    Self::Separable1d(Separable1d {
                        depthwise: Conv1dConfig::new(channels, channels, kernel)
                            .with_stride(stride)
                            .with_dilation(dilation)
                            .with_groups(channels)
                            .with_padding(PaddingConfig1d::Explicit(pad, pad))
                            .init(device),
                        pointwise: Conv1dConfig::new(channels, filters, 1).init(device),
                    })
                } else {
                    Self::Separable2d(Separable2d {
                        depthwise: Conv2dConfig::new([channels, channels], [kernel, kernel])
                            .with_stride([stride, stride])
                            .with_dilation([dilation, dilation])
                            .with_groups(channels)
                            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                            .init(device),
                        pointwise: Conv2dConfig::new([channels, filters], [1, 1]).init(device),
                    })
                }
            }
            Op::BatchNorm => Self::BatchNorm(BatchNormConfig::new(channels).init(device)),
            Op::LayerNorm => {
                Self::LayerNorm(LayerNormConfig::new(channels).with_epsilon(super::LAYER_NORM_EPSILON).init(device))
            }
            Op::Dropout { rate } => Self::Dropout(DropoutConfig::new(rate).init()),
            Op::Lstm { hidden, bidirectional: false, .. } => {
                Self::Lstm(LstmConfig::new(channels, hidden, true).init(device))
            }
            Op::Lstm { hidden, bidirectional: true, .. } => {
                Self::BiLstm(BiLstmConfig::new(channels, hidden, true).init(device))
            }
            Op::Gru { hidden, bidirectional: false, .. } => {
                Self::Gru(GruConfig::new(channels, hidden, true).init(device))
            }
            Op::Gru { hidden, bidirectional: true, .. } => {
                Self::BiGru(BiGruConfig::new(channels, hidden, true).init(device))
            }
            Op::Rnn { hidden, bidirectional: false, .. } => Self::Rnn(RnnConfig::new(channels, hidden).init(device)),
            Op::Rnn { hidden, bidirectional: true, .. } => Self::BiRnn(BiRnn {
                forward: RnnConfig::new(channels, hidden).init(device),
                reverse: RnnConfig::new(channels, hidden).init(device),
            }),
            Op::SelfAttention { heads, dropout } => {
                Self::Attention(MultiHeadAttentionConfig::new(channels, heads).with_dropout(dropout).init(device))
            }
            Op::Embedding { vocab, dim } => Self::Embedding(EmbeddingConfig::new(vocab, dim).init(device)),
            Op::PositionalEncoding { max_len } => Self::PositionalEncoding(
                PositionalEncodingConfig::new(channels).with_max_sequence_size(max_len).init(device),
            ),
            _ => Self::Stateless(Identity::new()),
        }
    }

    /// Applies the node to its (validated) inputs; `out` is the node's inferred sample shape.
    pub fn forward(&self, op: &Op, mut inputs: Vec<Value>, out: &Shape) -> Value {
        if op.is_merge() {
            return merge(op, inputs);
        }
        let x = inputs.pop().expect("validated: one input");
        let batch = x.batch();
        match (self, op) {
            (Self::Dense(m), _) => each_rank!(x, t => m.forward(t)),
            (Self::Conv1d(m), _) => Value::R3(conv::conv1d_module(m, x.r3())),
            (Self::Conv2d(m), _) => Value::R4(conv::conv2d_module(m, x.r4())),
            (Self::Separable1d(m), _) => Value::R3(conv::conv1d_module(&m.pointwise, m.depthwise.forward(x.r3()))),
            (Self::Separable2d(m), _) => Value::R4(conv::conv2d_module(&m.pointwise, m.depthwise.forward(x.r4()))),
            (Self::BatchNorm(m), _) => each_rank!(x, t => super::batch_norm::batch_norm_module(m, t)),
            (Self::LayerNorm(m), _) => match x {
                Value::R2(t) => Value::R2(m.forward(t)),
                Value::R3(t) => Value::R3(m.forward(t.swap_dims(1, 2)).swap_dims(1, 2)),
                Value::R4(t) => Value::R4(m.forward(t.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])),
            },
            (Self::Dropout(m), _) => each_rank!(x, t => m.forward(t)),
            (Self::Lstm(m), Op::Lstm { return_sequences, .. }) => {
                recurrent(x, *return_sequences, &|x, r| lstm::lstm(m, x, r), None)
            }
            (Self::BiLstm(m), Op::Lstm { return_sequences, .. }) => recurrent(
                x,
                *return_sequences,
                &|x, r| lstm::lstm(&m.forward, x, r),
                Some(&|x, r| lstm::lstm(&m.reverse, x, r)),
            ),
            (Self::Gru(m), Op::Gru { return_sequences, .. }) => {
                recurrent(x, *return_sequences, &|x, r| gru::gru(m, x, r), None)
            }
            (Self::BiGru(m), Op::Gru { return_sequences, .. }) => recurrent(
                x,
                *return_sequences,
                &|x, r| gru::gru(&m.forward, x, r),
                Some(&|x, r| gru::gru(&m.reverse, x, r)),
            ),
            (Self::Rnn(m), Op::Rnn { return_sequences, .. }) => {
                recurrent(x, *return_sequences, &|x, r| m.forward(x, r), None)
            }
            (Self::BiRnn(m), Op::Rnn { return_sequences, .. }) => {
                recurrent(x, *return_sequences, &|x, r| m.forward.forward(x, r), Some(&|x, r| m.reverse.forward(x, r)))
            }
            (Self::Attention(m), _) => {
                let context = m.forward(MhaInput::self_attn(x.r3().swap_dims(1, 2))).context;
                Value::R3(context.swap_dims(1, 2))
            }
            (Self::Embedding(m), _) => match x {
                Value::R2(ids) => Value::R3(m.forward(ids.int()).swap_dims(1, 2)),
                other => unreachable!("validated: embedding reads rank 1 samples, got {other:?}"),
            },
            (Self::PositionalEncoding(m), _) => Value::R3(m.forward(x.r3().swap_dims(1, 2)).swap_dims(1, 2)),
            (Self::Stateless(_), op) => stateless(op, x, out, batch),
            (module, op) => unreachable!("module {module:?} built for another op than {}", op.name()),
        }
    }
}

/// One direction of a recurrent layer: `[B, T, C]` (from the last step when the flag is
/// set) to every step's state `[B, T, H]` in input order and the last state computed.
type Direction<'a> = &'a dyn Fn(Tensor<3>, bool) -> (Tensor<3>, Tensor<2>);

/// A recurrent layer over `[C, T]` samples: `forward`, and `reverse` from the last step
/// when bidirectional (their features concatenated); every step or the last states.
fn recurrent(x: Value, return_sequences: bool, forward: Direction, reverse: Option<Direction>) -> Value {
    let x = x.r3().swap_dims(1, 2);
    let mut runs = vec![forward(x.clone(), false)];
    runs.extend(reverse.map(|reverse| reverse(x, true)));
    let (sequences, lasts): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    if return_sequences {
        Value::R3(Tensor::cat(sequences, 2).swap_dims(1, 2))
    } else {
        Value::R2(Tensor::cat(lasts, 1))
    }
}

fn merge(op: &Op, inputs: Vec<Value>) -> Value {
    if matches!(op, Op::Concat) {
        return match &inputs[0] {
            Value::R2(_) => Value::R2(Tensor::cat(
                inputs
                    .into_iter()
                    .map(|v| match v {
                        Value::R2(t) => t,
                        _ => unreachable!(),
                    })
                    .collect(),
                1,
            )),
            Value::R3(_) => Value::R3(Tensor::cat(inputs.into_iter().map(Value::r3).collect(), 1)),
            Value::R4(_) => Value::R4(Tensor::cat(inputs.into_iter().map(Value::r4).collect(), 1)),
        };
    }
    let product = matches!(op, Op::Multiply);
    let mut iter = inputs.into_iter();
    let first = iter.next().expect("validated: at least two inputs");
    iter.fold(first, |acc, v| match (acc, v) {
        (Value::R2(a), Value::R2(b)) => Value::R2(if product { a * b } else { a + b }),
        (Value::R3(a), Value::R3(b)) => Value::R3(if product { a * b } else { a + b }),
        (Value::R4(a), Value::R4(b)) => Value::R4(if product { a * b } else { a + b }),
        _ => unreachable!("validated: merged inputs share one shape"),
    })
}

fn stateless(op: &Op, x: Value, out: &Shape, batch: usize) -> Value {
    match op {
        Op::Relu => each_rank!(x, t => activation::relu(t)),
        Op::LeakyRelu { slope } => each_rank!(x, t => activation::leaky_relu(t, *slope)),
        Op::Gelu => each_rank!(x, t => activation::gelu(t)),
        Op::Swish => each_rank!(x, t => fused::swish(t)),
        Op::Tanh => each_rank!(x, t => fused::tanh(t)),
        Op::Sigmoid => each_rank!(x, t => fused::sigmoid(t)),
        Op::Identity => x,
        Op::MaxPool { size, stride } => {
            let s = stride.unwrap_or(*size);
            match x {
                Value::R3(t) => Value::R3(max_pool::max_pool1d(t, *size, s)),
                Value::R4(t) => Value::R4(max_pool::max_pool2d(t, *size, s)),
                other => unreachable!("validated: pooling reads rank 2 or 3, got {other:?}"),
            }
        }
        Op::AvgPool { size, stride } => {
            let s = stride.unwrap_or(*size);
            match x {
                Value::R3(t) => Value::R3(avg_pool1d(t, AvgPoolOptions::new([*size]).with_stride([s]))),
                Value::R4(t) => Value::R4(avg_pool2d(t, AvgPoolOptions::new([*size, *size]).with_stride([s, s]))),
                other => unreachable!("validated: pooling reads rank 2 or 3, got {other:?}"),
            }
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            let flat = match x {
                Value::R3(t) => t,
                Value::R4(t) => {
                    let [b, c, h, w] = t.dims();
                    t.reshape([b, c, h * w])
                }
                other => unreachable!("validated: global pooling reads rank 2 or 3, got {other:?}"),
            };
            let pooled = if matches!(op, Op::GlobalAvgPool) { flat.mean_dim(2) } else { flat.max_dim(2) };
            Value::R2(pooled.reshape([batch, out[0]]))
        }
        Op::Flatten => Value::R2(x.flatten(batch)),
        Op::MatchFeatures { units } => {
            let t = x.flatten(batch);
            let features = t.dims()[1];
            Value::R2(if *units <= features {
                t.narrow(1, 0, *units)
            } else {
                let zeros = Tensor::zeros([batch, units - features], &t.device());
                Tensor::cat(vec![t, zeros], 1)
            })
        }
        Op::Reshape { .. } => Value::from_flat(x.flatten(batch), out),
        _ => unreachable!("{} has a module of its own", op.name()),
    }
}
