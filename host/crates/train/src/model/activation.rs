//! Sigmoid and tanh as a burn backend extension: on Flex one pass each way with an `exp`
//! the compiler vectorises; burn's ops on the other backends.
//!
//! burn-flex computes them element by element through libm (`expf`, `expm1f`, `tanhf`), and
//! burn composes sigmoid from several such passes: half of an LSTM's training step went
//! there. The backward passes read the output only (`s(1 - s)`, `1 - t²`).

use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// `1 / (1 + e^-x)`.
pub fn sigmoid<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ActivationExt>::sigmoid_fused(x.into_dispatch()))
}

/// The hyperbolic tangent.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ActivationExt>::tanh_fused(x.into_dispatch()))
}

/// `x · sigmoid(x)`.
pub fn swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x)
}

#[backend_extension(Flex, Cube, Autodiff)]
pub trait ActivationExt: Backend {
    fn sigmoid_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::sigmoid(x)
    }

    /// The input's gradient from the output `s` and its gradient: `grad · s · (1 - s)`.
    fn sigmoid_fused_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        sigmoid_backward_ops::<Self>(output, grad)
    }

    fn tanh_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_tanh(x)
    }

    /// The input's gradient from the output `t` and its gradient: `grad · (1 - t²)`.
    fn tanh_fused_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        tanh_backward_ops::<Self>(output, grad)
    }
}

impl ActivationExt for burn_cubecl::CubeBackend {}

/// `grad · s · (1 - s)` in `B`'s tensor ops.
fn sigmoid_backward_ops<B: Backend>(output: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let one_minus = B::float_add_scalar(B::float_neg(output.clone()), 1.0.into());
    B::float_mul(grad, B::float_mul(output, one_minus))
}

/// `grad · (1 - t²)` in `B`'s tensor ops.
fn tanh_backward_ops<B: Backend>(output: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let square = B::float_mul(output.clone(), output);
    B::float_mul(grad, B::float_add_scalar(B::float_neg(square), 1.0.into()))
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two, so that `x - n ln 2` loses nothing for the n of f32's range.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 to an integer without a libm call.
const ROUND: f32 = 12_582_912.0;

/// `e^x` to about 2 ulp, in plain arithmetic (vectorisable): `x = n ln 2 + r` with
/// `|r| ≤ ln 2 / 2`, `e^r` by its Taylor polynomial to degree 7, `2^n` written into the
/// exponent bits. Inputs are clamped to where the result is a normal number or overflows to
/// the largest finite one.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    f32::from_bits(((n as i32 + 127) as u32) << 23) * p
}

#[inline(always)]
pub(super) fn sigmoid_of(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(super) fn tanh_of(x: f32) -> f32 {
    // Near 0, `1 - 2 / (1 + e^2x)` cancels: the odd Taylor series is exact there to f32.
    let x2 = x * x;
    let series = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    let formula = 1.0 - 2.0 / (1.0 + exp(2.0 * x));
    if x2 < 0.09 { series } else { formula }
}

/// Values per parallel task: enough that waking a thread pays off.
const PER_TASK: usize = 1 << 14;

/// `f` of every value, in place when `x` holds its buffer alone.
fn map(x: FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
    let mut out = x.to_contiguous();
    drop(x);
    let values: &mut [f32] = out.storage_mut();
    values.par_chunks_mut(PER_TASK).for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f(*v)));
    out
}

fn zip(output: FlexTensor, grad: FlexTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let output = output.to_contiguous();
    let mut grad = {
        let contiguous = grad.to_contiguous();
        drop(grad);
        contiguous
    };
    let (out, values): (&[f32], &mut [f32]) = (output.storage(), grad.storage_mut());
    values
        .par_chunks_mut(PER_TASK)
        .zip(out.par_chunks(PER_TASK))
        .for_each(|(g, o)| g.iter_mut().zip(o).for_each(|(g, &o)| *g = f(*g, o)));
    grad
}

impl ActivationExt for Flex {
    fn sigmoid_fused(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return Self::sigmoid(x);
        }
        map(x, sigmoid_of)
    }

    fn sigmoid_fused_backward(output: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if output.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return sigmoid_backward_ops::<Self>(output, grad);
        }
        zip(output, grad, |g, s| g * s * (1.0 - s))
    }

    fn tanh_fused(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return Self::float_tanh(x);
        }
        map(x, tanh_of)
    }

    fn tanh_fused_backward(output: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if output.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return tanh_backward_ops::<Self>(output, grad);
        }
        zip(output, grad, |g, t| g * (1.0 - t * t))
    }
}

/// Which activation an autodiff node records.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sigmoid,
    Tanh,
}

#[derive(Debug)]
struct Activation(Kind);

impl<B: Backend + ActivationExt> Backward<B, 1> for Activation {
    /// The output: both derivatives are functions of it.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        let Some(node) = parent else { return };
        let input_grad = match self.0 {
            Kind::Sigmoid => B::sigmoid_fused_backward(ops.state, grad),
            Kind::Tanh => B::tanh_fused_backward(ops.state, grad),
        };
        grads.register::<B>(node.id, input_grad);
    }
}

fn tracked<B: Backend + ActivationExt, C: CheckpointStrategy>(
    kind: Kind,
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let node = x.node();
    let out = match kind {
        Kind::Sigmoid => B::sigmoid_fused(x.into_primitive()),
        Kind::Tanh => B::tanh_fused(x.into_primitive()),
    };
    match Activation(kind).prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(out.clone(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<B: Backend + ActivationExt, C: CheckpointStrategy> ActivationExt for Autodiff<B, C> {
    fn sigmoid_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(Kind::Sigmoid, x)
    }

    fn tanh_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        tracked::<B, C>(Kind::Tanh, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::activation;

    use super::*;
    use crate::model::testing::{assert_close, values};

    #[test]
    fn exp_sigmoid_and_tanh_are_accurate_over_the_range() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.005;
            let (e, s, t) = (exp(x), sigmoid_of(x), tanh_of(x));
            // Outside [-87, 88] the input is clamped (sigmoid and tanh need no more).
            if (-87.0..=88.0).contains(&x) {
                assert!((e - x.exp()).abs() <= 3e-7 * x.exp(), "exp({x}) = {e}, libm {}", x.exp());
            }
            let reference = 1.0 / (1.0 + (-x as f64).exp());
            assert!((s as f64 - reference).abs() <= 3e-7 * reference + 1e-37, "sigmoid({x}) = {s}, {reference}");
            let reference = (x as f64).tanh();
            assert!((t as f64 - reference).abs() <= 6e-7 * reference.abs() + 1e-9, "tanh({x}) = {t}");
        }
        assert!(sigmoid_of(-200.0) < 1e-37 && sigmoid_of(200.0) == 1.0);
        assert_eq!((tanh_of(-50.0), tanh_of(50.0)), (-1.0, 1.0));
    }

    #[test]
    fn sigmoid_and_tanh_match_burn_with_gradients() {
        let device = Device::flex().autodiff();
        let data: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 0.037).collect();
        for (name, ours, theirs) in [
            (
                "sigmoid",
                sigmoid::<2> as fn(Tensor<2>) -> Tensor<2>,
                activation::sigmoid::<2> as fn(Tensor<2>) -> Tensor<2>,
            ),
            ("tanh", tanh::<2>, activation::tanh::<2>),
            ("swish", swish::<2>, activation::silu::<2>),
        ] {
            let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [20, 30]), &device).require_grad();
            let (a, b) = (ours(x.clone()), theirs(x.clone()));
            assert_close(values(a.clone()), values(b.clone()), name);
            let (ga, gb) = ((a.clone() * a).sum().backward(), (b.clone() * b).sum().backward());
            assert_close(values(x.grad(&ga).unwrap()), values(x.grad(&gb).unwrap()), &format!("{name}: gradient"));
        }
    }
}
