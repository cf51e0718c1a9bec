//! Max pooling without padding as a burn backend extension: a Flex kernel for `f32` (the
//! forward pass keeps each window's argmax, the backward pass scatter-adds the gradient to
//! it), burn's own pooling on the other backends, and an autodiff rule joining the two.
//!
//! burn-flex pools one output at a time through a generic kernel that recomputes the
//! window's bounds for every output and runs one rayon task per channel: a fifth of a
//! CIFAR-shaped CNN's training step. Searches pool 2x2 or 3x3 windows without padding, and
//! that case is a plain loop over each plane.

use burn::backend::ops::{MaxPool2dBackward, MaxPool2dWithIndices};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, DType, Dispatch, Flex, TensorMetadata, backend_extension, get_or_init_device_settings};
use burn::prelude::*;
use burn::tensor::{Bytes, Shape as TensorShape};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::flex::per_task;

/// Max pooling of `[B, C, H, W]` over `size`x`size` windows every `stride`, no padding.
pub fn max_pool2d(x: Tensor<4>, size: usize, stride: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as MaxPoolOps>::max_pool(x.into_dispatch(), [size, size], [stride, stride]))
}

/// Max pooling of `[B, C, L]` over windows of `size` every `stride`, no padding.
pub fn max_pool1d(x: Tensor<3>, size: usize, stride: usize) -> Tensor<3> {
    let [batch, channels, length] = x.dims();
    let pooled = Tensor::from_dispatch(<Dispatch as MaxPoolOps>::max_pool(
        x.reshape([batch, channels, 1, length]).into_dispatch(),
        [1, size],
        [1, stride],
    ));
    let [_, _, _, out] = pooled.dims();
    pooled.reshape([batch, channels, out])
}

#[backend_extension(Flex, Cube, Autodiff)]
pub trait MaxPoolOps: Backend {
    /// `size` (height, width) windows every `stride`: the pooled tensor.
    fn max_pool(x: FloatTensor<Self>, size: [usize; 2], stride: [usize; 2]) -> FloatTensor<Self> {
        Self::max_pool_with_argmax(x, size, stride).0
    }

    /// The pooled tensor and, per output, where its maximum is.
    fn max_pool_with_argmax(
        x: FloatTensor<Self>,
        size: [usize; 2],
        stride: [usize; 2],
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        burn_max_pool::<Self>(x, size, stride)
    }

    /// The input's gradient from the output's and the argmax of `max_pool_with_argmax`.
    fn max_pool_backward(
        x: FloatTensor<Self>,
        size: [usize; 2],
        stride: [usize; 2],
        grad: FloatTensor<Self>,
        argmax: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        burn_max_pool_backward::<Self>(x, size, stride, grad, argmax)
    }
}

/// burn's own pooling, for the backends and element types without a kernel here.
fn burn_max_pool<B: Backend>(
    x: FloatTensor<B>,
    size: [usize; 2],
    stride: [usize; 2],
) -> (FloatTensor<B>, IntTensor<B>) {
    // The device's own integer type: wgpu has no 64-bit integers.
    let indices = get_or_init_device_settings::<B>(&x.device()).int_dtype;
    let pooled: MaxPool2dWithIndices<B> = B::max_pool2d_with_indices(x, size, stride, [0, 0], [1, 1], false, indices);
    (pooled.output, pooled.indices)
}

fn burn_max_pool_backward<B: Backend>(
    x: FloatTensor<B>,
    size: [usize; 2],
    stride: [usize; 2],
    grad: FloatTensor<B>,
    argmax: IntTensor<B>,
) -> FloatTensor<B> {
    let backward: MaxPool2dBackward<B> =
        B::max_pool2d_with_indices_backward(x, size, stride, [0, 0], [1, 1], false, grad, argmax);
    backward.x_grad
}

impl MaxPoolOps for burn_cubecl::CubeBackend {}

impl MaxPoolOps for Flex {
    fn max_pool_with_argmax(x: FlexTensor, size: [usize; 2], stride: [usize; 2]) -> (FlexTensor, FlexTensor) {
        if x.dtype() != DType::F32 {
            return burn_max_pool::<Self>(x, size, stride);
        }
        let x = x.to_contiguous();
        let [batch, channels, height, width] = dims4(&x);
        let (out_h, out_w) = ((height - size[0]) / stride[0] + 1, (width - size[1]) / stride[1] + 1);
        let plane_out = out_h * out_w;
        let input: &[f32] = x.storage();
        let mut output = vec![0f32; batch * channels * plane_out];
        let mut argmax = vec![0i64; batch * channels * plane_out];
        let planes = Planes { height, width, out_h, out_w, stride };
        // The common windows as constants, so that their loops unroll (4-10x faster).
        match size {
            [2, 2] => planes.pool::<2, 2>(input, &mut output, &mut argmax, size),
            [3, 3] => planes.pool::<3, 3>(input, &mut output, &mut argmax, size),
            [1, 2] => planes.pool::<1, 2>(input, &mut output, &mut argmax, size),
            [1, 3] => planes.pool::<1, 3>(input, &mut output, &mut argmax, size),
            _ => planes.pool::<0, 0>(input, &mut output, &mut argmax, size),
        }
        let shape = |h, w| TensorShape::from(vec![batch, channels, h, w]);
        (
            FlexTensor::new(Bytes::from_elems(output), Layout::contiguous(shape(out_h, out_w)), DType::F32),
            FlexTensor::new(Bytes::from_elems(argmax), Layout::contiguous(shape(out_h, out_w)), DType::I64),
        )
    }

    fn max_pool_backward(
        x: FlexTensor,
        size: [usize; 2],
        stride: [usize; 2],
        grad: FlexTensor,
        argmax: FlexTensor,
    ) -> FlexTensor {
        if x.dtype() != DType::F32 || argmax.dtype() != DType::I64 {
            return burn_max_pool_backward::<Self>(x, size, stride, grad, argmax);
        }
        let [batch, channels, height, width] = dims4(&x);
        let (grad, argmax) = (grad.to_contiguous(), argmax.to_contiguous());
        let plane_out = grad.layout().shape().num_elements() / (batch * channels).max(1);
        let (grad, argmax): (&[f32], &[i64]) = (grad.storage(), argmax.storage());
        let mut x_grad = vec![0f32; batch * channels * height * width];
        x_grad.par_chunks_mut(height * width).with_min_len(per_task(height * width)).enumerate().for_each(
            |(plane, dst)| {
                let range = plane * plane_out..(plane + 1) * plane_out;
                for (&g, &at) in grad[range.clone()].iter().zip(&argmax[range]) {
                    dst[at as usize] += g;
                }
            },
        );
        let shape = TensorShape::from(vec![batch, channels, height, width]);
        FlexTensor::new(Bytes::from_elems(x_grad), Layout::contiguous(shape), DType::F32)
    }
}

/// The geometry shared by every plane of one pooling.
#[derive(Clone, Copy)]
struct Planes {
    height: usize,
    width: usize,
    out_h: usize,
    out_w: usize,
    stride: [usize; 2],
}

impl Planes {
    /// Every plane's maxima and where they are, over `KH`x`KW` windows (`size` when 0).
    fn pool<const KH: usize, const KW: usize>(
        self,
        input: &[f32],
        output: &mut [f32],
        argmax: &mut [i64],
        size: [usize; 2],
    ) {
        let [kh, kw] = [if KH == 0 { size[0] } else { KH }, if KW == 0 { size[1] } else { KW }];
        let Planes { height, width, out_h, out_w, stride } = self;
        let (plane_in, plane_out) = (height * width, out_h * out_w);
        // Windows that tile the input (stride = size) have a faster scan.
        let tiled = KH > 0 && KW > 0 && stride == [KH, KW];
        let tasks = output.par_chunks_mut(plane_out).zip(argmax.par_chunks_mut(plane_out));
        tasks.with_min_len(per_task(plane_in)).enumerate().for_each(|(plane, (out, arg))| {
            let src = &input[plane * plane_in..(plane + 1) * plane_in];
            for (oh, (out, arg)) in out.chunks_exact_mut(out_w).zip(arg.chunks_exact_mut(out_w)).enumerate() {
                let top = oh * stride[0] * width;
                if tiled && tiled_row::<KH, KW>(src, top, width, out, arg) {
                    continue;
                }
                for (ow, (out, arg)) in out.iter_mut().zip(arg).enumerate() {
                    let (value, at) = window_max(src, top + ow * stride[1], width, kh, kw);
                    (*out, *arg) = (value, at as i64);
                }
            }
        });
    }
}

/// One output row of windows that tile the input (stride = size), read as `KH` row slices:
/// 1.5x faster than `window_max`'s indexing. Returns false, leaving the row to
/// `window_max`, when the row holds a NaN.
#[inline(always)]
fn tiled_row<const KH: usize, const KW: usize>(
    src: &[f32],
    top: usize,
    width: usize,
    out: &mut [f32],
    arg: &mut [i64],
) -> bool {
    let rows: [&[f32]; KH] = std::array::from_fn(|h| &src[top + h * width..][..out.len() * KW]);
    let mut nan = false;
    for (ow, (out, arg)) in out.iter_mut().zip(arg).enumerate() {
        let (mut value, mut best) = (rows[0][ow * KW], 0);
        for (h, row) in rows.iter().enumerate() {
            for w in 0..KW {
                let v = row[ow * KW + w];
                let wins = v > value;
                value = if wins { v } else { value };
                best = if wins { h * width + w } else { best };
                nan |= v.is_nan();
            }
        }
        (*out, *arg) = (value, (top + ow * KW + best) as i64);
    }
    !nan
}

/// The maximum of the `kh`x`kw` window whose top left is `src[at]` (rows `width` apart) and
/// where it is: the first maximum, or the last NaN (NaN wins, as in burn's and PyTorch's
/// pooling).
///
/// Which value wins is a coin toss on real activations, so the scan must not branch on it:
/// the index is an integer select (a `cmov`), while a float select written the same way
/// compiles to a branch without SSE4.1 and ran 6x slower.
#[inline(always)]
fn window_max(src: &[f32], at: usize, width: usize, kh: usize, kw: usize) -> (f32, usize) {
    let (mut value, mut best, mut nan) = (src[at], at, false);
    for h in 0..kh {
        let row = at + h * width;
        for (w, &v) in src[row..][..kw].iter().enumerate() {
            let wins = v > value;
            best = if wins { row + w } else { best };
            value = if wins { v } else { value };
            nan |= v.is_nan();
        }
    }
    if nan {
        let last_nan = (0..kh * kw).rev().map(|k| at + k / kw * width + k % kw).find(|&i| src[i].is_nan());
        return (f32::NAN, last_nan.unwrap_or(at));
    }
    (value, best)
}

fn dims4(x: &FlexTensor) -> [usize; 4] {
    let shape = x.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The autodiff rule: the forward keeps the input and the argmax for the backward.
impl<B: Backend + MaxPoolOps, C: CheckpointStrategy> MaxPoolOps for Autodiff<B, C> {
    fn max_pool(x: FloatTensor<Self>, size: [usize; 2], stride: [usize; 2]) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaxPool;

        impl<B: Backend + MaxPoolOps> Backward<B, 1> for MaxPool {
            type State = (FloatTensor<B>, IntTensor<B>, [usize; 2], [usize; 2]);

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (x, argmax, size, stride) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::max_pool_backward(x, size, stride, grad, argmax));
            }
        }

        let node = x.node();
        let input = x.into_primitive();
        let (pooled, argmax) = B::max_pool_with_argmax(input.clone(), size, stride);
        match MaxPool.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((input, argmax, size, stride), pooled),
            OpsKind::UnTracked(prep) => prep.finish(pooled),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module;
    use burn::tensor::ops::MaxPoolOptions;

    use super::*;
    use crate::model::testing::{input, values};

    #[test]
    fn pooling_and_its_gradient_match_burn() {
        let device = Device::flex().autodiff();
        for (size, stride) in [(2, 2), (3, 3), (3, 1), (3, 2), (2, 3)] {
            let x = input([2, 3, 9, 8], &device).require_grad();
            let ours = max_pool2d(x.clone(), size, stride);
            let options = MaxPoolOptions::new([size, size]).with_stride([stride, stride]);
            let theirs = module::max_pool2d(x.clone(), options);
            assert_eq!(ours.dims(), theirs.dims(), "2-D size {size} stride {stride}");
            assert_eq!(values(ours.clone()), values(theirs.clone()), "2-D size {size} stride {stride}");
            let (g_ours, g_theirs) = (ours.powi_scalar(2).sum().backward(), theirs.powi_scalar(2).sum().backward());
            assert_eq!(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), "2-D gradient");

            let x = input([2, 3, 11], &device).require_grad();
            let ours = max_pool1d(x.clone(), size, stride);
            let theirs = module::max_pool1d(x.clone(), MaxPoolOptions::new([size]).with_stride([stride]));
            assert_eq!(values(ours.clone()), values(theirs.clone()), "1-D size {size} stride {stride}");
            let (g_ours, g_theirs) = (ours.powi_scalar(2).sum().backward(), theirs.powi_scalar(2).sum().backward());
            assert_eq!(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), "1-D gradient");
        }
    }

    #[test]
    fn nan_wins_its_window_and_takes_its_gradient() {
        let device = Device::flex().autodiff();
        let data = TensorData::new(vec![1.0, f32::NAN, 3.0, 2.0, 5.0, 4.0], [1, 1, 2, 3]);
        let x = Tensor::<4>::from_data(data, &device).require_grad();
        let pooled = max_pool2d(x.clone(), 2, 1);
        let out = values(pooled.clone());
        assert!(out[0].is_nan() && out[1].is_nan(), "{out:?}");
        let grads = pooled.sum().backward();
        assert_eq!(values(x.grad(&grads).unwrap()), [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);

        // Windows that tile the input take another path; a NaN sends its row back to this one.
        let data = TensorData::new(vec![1.0, f32::NAN, 3.0, 2.0, 5.0, 4.0, 0.0, 7.0], [1, 1, 2, 4]);
        let x = Tensor::<4>::from_data(data, &device).require_grad();
        let pooled = max_pool2d(x.clone(), 2, 2);
        let out = values(pooled.clone());
        assert!(out[0].is_nan() && out[1] == 7.0, "{out:?}");
        let grads = pooled.sum().backward();
        assert_eq!(values(x.grad(&grads).unwrap()), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
