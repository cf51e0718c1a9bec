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
        let tasks = output.par_chunks_mut(plane_out).zip(argmax.par_chunks_mut(plane_out));
        tasks.with_min_len(per_task(height * width)).enumerate().for_each(|(plane, (out, arg))| {
            let src = &input[plane * height * width..(plane + 1) * height * width];
            for oh in 0..out_h {
                let top = oh * stride[0] * width;
                let window_rows = &src[top..top + size[0] * width];
                let outputs = out[oh * out_w..(oh + 1) * out_w].iter_mut().zip(&mut arg[oh * out_w..(oh + 1) * out_w]);
                for (ow, (out, arg)) in outputs.enumerate() {
                    let left = ow * stride[1];
                    let (mut value, mut best) = (window_rows[left], left);
                    for h in 0..size[0] {
                        let row = &window_rows[h * width + left..][..size[1]];
                        for (w, &v) in row.iter().enumerate() {
                            // NaN wins, as in burn's and PyTorch's pooling.
                            if v > value || v.is_nan() {
                                (value, best) = (v, h * width + left + w);
                            }
                        }
                    }
                    *out = value;
                    *arg = (top + best) as i64;
                }
            }
        });
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
    fn nan_wins_its_window() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(TensorData::new(vec![1.0, f32::NAN, 3.0, 2.0], [1, 1, 2, 2]), &device);
        assert!(values(max_pool2d(x, 2, 2))[0].is_nan());
    }
}
