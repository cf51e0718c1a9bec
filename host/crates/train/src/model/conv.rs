//! Ungrouped 2-D convolution (1-D as a height-1 2-D) as a burn backend extension: on Flex,
//! sample by sample, an im2col into a reused patch buffer and one matrix product, with a
//! backward pass of two products and a col2im scatter-add; burn's own convolution on the
//! other backends.
//!
//! burn-flex's own convolution tiles im2col per 512 outputs, scatters each tile's result
//! channel by channel, and differentiates through generic transposed convolutions. Composed
//! from tensor ops instead (strided slices, stack, matmul), the backward pass of the patch
//! matrix cost one zero-filled tensor, one strided write and one copy per kernel tap: a
//! quarter of a CIFAR-shaped CNN's training step. Written out, im2col and col2im are one
//! pass each. A patch matrix for the whole batch (7-19 MB on CIFAR shapes) cost a fifth of
//! the step again in page faults; one sample's stays in cache.

use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, backend_extension};
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::{PaddingConfig1d, PaddingConfig2d};
use burn::prelude::*;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;
use rayon::iter::Either;
use rayon::prelude::*;

use super::flex::{Mat, f32_tensor, gemm};

/// Stride, symmetric padding and dilation of each spatial axis (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

/// `[B, C, H, W]` convolved with `[O, C, KH, KW]` (no bias, one group).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, g: Geometry) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvOps>::conv2d_plain(
        x.into_dispatch(),
        weight.into_dispatch(),
        g.stride,
        g.padding,
        g.dilation,
    ))
}

/// `m.forward(x)` through `conv2d` (as a height-1 image) where it applies: one group,
/// symmetric explicit padding, a window that fits; burn's module otherwise.
pub fn conv1d_module(m: &Conv1d, x: Tensor<3>) -> Tensor<3> {
    let PaddingConfig1d::Explicit(left, right) = m.padding else { return m.forward(x) };
    let [batch, channels, length] = x.dims();
    let weight = m.weight.val();
    let [filters, _, kernel] = weight.dims();
    if m.groups != 1 || left != right || length + 2 * left < m.dilation * (kernel - 1) + 1 {
        return m.forward(x);
    }
    let g = Geometry { stride: [1, m.stride], padding: [0, left], dilation: [1, m.dilation] };
    let out = conv2d(x.reshape([batch, channels, 1, length]), weight.reshape([filters, channels, 1, kernel]), g);
    let [_, _, _, out_len] = out.dims();
    let out = out.reshape([batch, filters, out_len]);
    match &m.bias {
        Some(bias) => out + bias.val().reshape([1, filters, 1]),
        None => out,
    }
}

/// `m.forward(x)` through `conv2d` where it applies (as `conv1d_module`).
pub fn conv2d_module(m: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = m.padding else { return m.forward(x) };
    let [_, _, height, width] = x.dims();
    let weight = m.weight.val();
    let [filters, _, kh, kw] = weight.dims();
    let fits = height + 2 * top >= m.dilation[0] * (kh - 1) + 1 && width + 2 * left >= m.dilation[1] * (kw - 1) + 1;
    if m.groups != 1 || top != bottom || left != right || !fits {
        return m.forward(x);
    }
    let g = Geometry { stride: m.stride, padding: [top, left], dilation: m.dilation };
    let out = conv2d(x, weight, g);
    match &m.bias {
        Some(bias) => out + bias.val().reshape([1, filters, 1, 1]),
        None => out,
    }
}

#[backend_extension(Flex, Cube, Autodiff)]
pub trait ConvOps: Backend {
    /// The convolution; burn's by default.
    fn conv2d_plain(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, ConvOptions::new(stride, padding, dilation, 1))
    }

    /// The gradients of the input (when `x_grad`) and the weight from the output's; burn's by
    /// default.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_plain_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        x_grad: bool,
    ) -> (Option<FloatTensor<Self>>, FloatTensor<Self>) {
        burn_conv2d_backward::<Self>(x, weight, grad, ConvOptions::new(stride, padding, dilation, 1), x_grad)
    }
}

/// burn's own gradients of an ungrouped convolution: the input's (when `x_grad`), then the
/// weight's.
fn burn_conv2d_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: ConvOptions<2>,
    x_grad: bool,
) -> (Option<FloatTensor<B>>, FloatTensor<B>) {
    let x_grad = x_grad.then(|| B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone()));
    (x_grad, B::conv2d_weight_backward(x, weight, grad, options))
}

impl ConvOps for burn_cubecl::CubeBackend {}

/// Sizes of one convolution, read from its operands.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    filters: usize,
    kh: usize,
    kw: usize,
    out_h: usize,
    out_w: usize,
    g: Geometry,
}

impl Dims {
    fn of(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> Self {
        let (xs, ws) = (x.layout().shape(), weight.layout().shape());
        let out = |len: usize, k: usize, axis: usize| {
            (len + 2 * g.padding[axis] - g.dilation[axis] * (k - 1) - 1) / g.stride[axis] + 1
        };
        Dims {
            batch: xs[0],
            channels: xs[1],
            height: xs[2],
            width: xs[3],
            filters: ws[0],
            kh: ws[2],
            kw: ws[3],
            out_h: out(xs[2], ws[2], 0),
            out_w: out(xs[3], ws[3], 1),
            g,
        }
    }

    /// Rows of the patch matrix: one per (channel, kernel row, kernel column).
    fn patch_rows(&self) -> usize {
        self.channels * self.kh * self.kw
    }

    fn outputs(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Values of one input sample.
    fn plane(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Every run of consecutive outputs of one output row that read inside the input, for
    /// every patch row `(c, i, j)`: calls `f(row, first output, first input index, count)`;
    /// output `k` of the run reads input `first + k * stride[1]`.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let g = &self.g;
        for c in 0..self.channels {
            for i in 0..self.kh {
                for j in 0..self.kw {
                    let row = (c * self.kh + i) * self.kw + j;
                    // Output columns whose input column `ow·s + j·d - p` lies in 0..width.
                    let offset = j * g.dilation[1];
                    let first = g.padding[1].saturating_sub(offset).div_ceil(g.stride[1]);
                    let end = if self.width + g.padding[1] > offset {
                        ((self.width - 1 + g.padding[1] - offset) / g.stride[1] + 1).min(self.out_w)
                    } else {
                        0
                    };
                    if first >= end {
                        continue;
                    }
                    for oh in 0..self.out_h {
                        let h = (oh * g.stride[0] + i * g.dilation[0]).wrapping_sub(g.padding[0]);
                        if h >= self.height {
                            continue;
                        }
                        let w = first * g.stride[1] + offset - g.padding[1];
                        f(row, oh * self.out_w + first, (c * self.height + h) * self.width + w, end - first);
                    }
                }
            }
        }
    }

    /// Whether the patch matrix is the input itself: a 1x1 kernel every pixel, no padding.
    fn pointwise(&self) -> bool {
        (self.kh, self.kw, self.g.stride, self.g.padding) == (1, 1, [1, 1], [0, 0])
    }

    /// One sample's patch matrix `[C·KH·KW, OH·OW]`: `x` itself where the convolution is
    /// pointwise, else written into `cols`. Entries that read padding are never written, so
    /// `cols` holds zeros there as long as it only ever holds patches of this geometry.
    fn patches<'a>(&self, x: &'a [f32], cols: &'a mut Vec<f32>) -> &'a [f32] {
        if self.pointwise() {
            return x;
        }
        let outputs = self.outputs();
        cols.resize(self.patch_rows() * outputs, 0.0);
        let step = self.g.stride[1];
        self.for_each_run(|row, out, at, count| {
            let dst = &mut cols[row * outputs + out..][..count];
            if step == 1 {
                dst.copy_from_slice(&x[at..at + count]);
            } else {
                dst.iter_mut().enumerate().for_each(|(k, v)| *v = x[at + k * step]);
            }
        });
        cols
    }

    /// One sample's input gradient from its patch matrix's: every patch entry added back
    /// where it was read.
    fn col2im(&self, cols: &[f32], x_grad: &mut [f32]) {
        let (outputs, step) = (self.outputs(), self.g.stride[1]);
        self.for_each_run(|row, out, at, count| {
            let src = &cols[row * outputs + out..][..count];
            if step == 1 {
                x_grad[at..at + count].iter_mut().zip(src).for_each(|(v, g)| *v += g);
            } else {
                src.iter().enumerate().for_each(|(k, g)| x_grad[at + k * step] += g);
            }
        });
    }
}

/// What one backward task keeps between its samples.
struct BackwardScratch {
    cols: Vec<f32>,
    cols_grad: Vec<f32>,
    weight_grad: Vec<f32>,
}

/// Sample by sample, each in its own task: the patches (rebuilt in a buffer the task
/// reuses, so they stay in cache and no page is faulted in per call) and one product.
impl ConvOps for Flex {
    fn conv2d_plain(
        x: FlexTensor,
        weight: FlexTensor,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> FlexTensor {
        if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
            return Self::conv2d(x, weight, None, ConvOptions::new(stride, padding, dilation, 1));
        }
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let d = Dims::of(&x, &weight, Geometry { stride, padding, dilation });
        let (input, weight): (&[f32], &[f32]) = (x.storage(), weight.storage());
        let (rows, outputs) = (d.patch_rows(), d.outputs());
        let weight = Mat::row_major(weight, d.filters, rows);
        let mut out = vec![0f32; d.batch * d.filters * outputs];
        let samples = out.par_chunks_mut(d.filters * outputs).zip(input.par_chunks(d.plane()));
        samples.for_each_init(Vec::new, |cols, (out, x)| {
            gemm(out, weight, Mat::row_major(d.patches(x, cols), rows, outputs), false);
        });
        f32_tensor(out, vec![d.batch, d.filters, d.out_h, d.out_w])
    }

    fn conv2d_plain_backward(
        x: FlexTensor,
        weight: FlexTensor,
        grad: FlexTensor,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        x_grad: bool,
    ) -> (Option<FlexTensor>, FlexTensor) {
        if [x.dtype(), weight.dtype(), grad.dtype()] != [DType::F32; 3] {
            let options = ConvOptions::new(stride, padding, dilation, 1);
            return burn_conv2d_backward::<Self>(x, weight, grad, options, x_grad);
        }
        let (x, weight, grad) = (x.to_contiguous(), weight.to_contiguous(), grad.to_contiguous());
        let d = Dims::of(&x, &weight, Geometry { stride, padding, dilation });
        let (input, weight, grad): (&[f32], &[f32], &[f32]) = (x.storage(), weight.storage(), grad.storage());
        let (rows, outputs) = (d.patch_rows(), d.outputs());
        let weight_t = Mat::row_major(weight, d.filters, rows).t();
        let mut input_grad = vec![0f32; if x_grad { d.batch * d.plane() } else { 0 }];
        let input_grads = match x_grad {
            true => Either::Left(input_grad.par_chunks_mut(d.plane()).map(Some)),
            false => Either::Right((0..d.batch).into_par_iter().map(|_| None)),
        };
        let samples = grad.par_chunks(d.filters * outputs).zip(input.par_chunks(d.plane())).zip(input_grads);
        let scratch =
            || BackwardScratch { cols: Vec::new(), cols_grad: Vec::new(), weight_grad: vec![0.0; d.filters * rows] };
        let weight_grad = samples
            .fold(scratch, |mut s, ((grad, x), x_grad)| {
                let grad = Mat::row_major(grad, d.filters, outputs);
                // dW += grad · patchesᵀ
                gemm(&mut s.weight_grad, grad, Mat::row_major(d.patches(x, &mut s.cols), rows, outputs).t(), true);
                // dpatches = Wᵀ · grad, then back onto the input.
                if let Some(x_grad) = x_grad {
                    if d.pointwise() {
                        gemm(x_grad, weight_t, grad, false);
                    } else {
                        s.cols_grad.resize(rows * outputs, 0.0);
                        gemm(&mut s.cols_grad, weight_t, grad, false);
                        d.col2im(&s.cols_grad, x_grad);
                    }
                }
                s
            })
            .map(|s| s.weight_grad)
            .reduce(
                || vec![0.0; d.filters * rows],
                |mut sum, part| {
                    sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                    sum
                },
            );
        (
            x_grad.then(|| f32_tensor(input_grad, vec![d.batch, d.channels, d.height, d.width])),
            f32_tensor(weight_grad, vec![d.filters, d.channels, d.kh, d.kw]),
        )
    }
}

impl<B: Backend + ConvOps, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn conv2d_plain(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Conv;

        impl<B: Backend + ConvOps> Backward<B, 2> for Conv {
            type State = (FloatTensor<B>, FloatTensor<B>, [usize; 2], [usize; 2], [usize; 2]);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let (x, weight, stride, padding, dilation) = ops.state;
                let [x_node, weight_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_grad, weight_grad) =
                    B::conv2d_plain_backward(x, weight, grad, stride, padding, dilation, x_node.is_some());
                if let (Some(node), Some(x_grad)) = (x_node, x_grad) {
                    grads.register::<B>(node.id, x_grad);
                }
                if let Some(node) = weight_node {
                    grads.register::<B>(node.id, weight_grad);
                }
            }
        }

        let nodes = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        let out = B::conv2d_plain(x.clone(), weight.clone(), stride, padding, dilation);
        match Conv.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, stride, padding, dilation), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    /// Our output, and the gradients it gives the input, weight and bias, against burn's.
    fn compare<const D: usize>(
        what: &str,
        x: &Tensor<D>,
        (ours, theirs): (Tensor<D>, Tensor<D>),
        weight: Tensor<D>,
        bias: Option<Tensor<1>>,
    ) {
        assert_eq!(ours.dims(), theirs.dims(), "{what}");
        assert_close(values(ours.clone()), values(theirs.clone()), what);
        let (g_ours, g_theirs) = (ours.powi_scalar(2).sum().backward(), theirs.powi_scalar(2).sum().backward());
        assert_close(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), &format!("{what}: input"));
        assert_close(values(weight.grad(&g_ours).unwrap()), values(weight.grad(&g_theirs).unwrap()), what);
        if let Some(b) = bias {
            assert_close(
                values(b.grad(&g_ours).unwrap()),
                values(b.grad(&g_theirs).unwrap()),
                &format!("{what}: bias"),
            );
        }
    }

    fn check_1d(config: Conv1dConfig, shape: [usize; 3]) {
        let device = Device::flex().autodiff();
        let m = config.init(&device);
        let x = input(shape, &device).require_grad();
        let outputs = (conv1d_module(&m, x.clone()), m.forward(x.clone()));
        let what = format!("{config:?} on {shape:?}");
        compare(&what, &x, outputs, m.weight.val(), m.bias.as_ref().map(|b| b.val()));
    }

    fn check_2d(config: Conv2dConfig, shape: [usize; 4]) {
        let device = Device::flex().autodiff();
        let m = config.init(&device);
        let x = input(shape, &device).require_grad();
        let outputs = (conv2d_module(&m, x.clone()), m.forward(x.clone()));
        let what = format!("{config:?} on {shape:?}");
        compare(&what, &x, outputs, m.weight.val(), m.bias.as_ref().map(|b| b.val()));
    }

    #[test]
    fn conv1d_matches_burn_on_search_shapes() {
        for (kernel, stride, dilation, pad) in
            [(5, 1, 1, 2), (3, 1, 1, 1), (3, 2, 1, 1), (3, 1, 2, 2), (1, 1, 1, 0), (7, 3, 1, 0)]
        {
            let config = Conv1dConfig::new(3, 4, kernel)
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(PaddingConfig1d::Explicit(pad, pad));
            check_1d(config.clone(), [2, 3, 17]);
            check_1d(config.with_bias(false), [3, 3, 9]);
        }
    }

    #[test]
    fn conv2d_matches_burn_on_search_shapes() {
        for (kernel, stride, dilation, pad) in [
            ([3, 3], 1, 1, [1, 1]),
            ([5, 5], 1, 1, [2, 2]),
            ([3, 3], 2, 1, [1, 1]),
            ([3, 1], 1, 2, [2, 0]),
            ([1, 1], 1, 1, [0, 0]),
        ] {
            let config = Conv2dConfig::new([3, 5], kernel)
                .with_stride([stride, stride])
                .with_dilation([dilation, dilation])
                .with_padding(PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]));
            check_2d(config.clone(), [2, 3, 8, 7]);
            check_2d(config.with_bias(false), [1, 3, 6, 6]);
        }
    }

    #[test]
    fn the_weight_gradient_alone_matches_burn() {
        // A first layer: its input tracks no gradient, so none is computed for it.
        let device = Device::flex().autodiff();
        let config = Conv2dConfig::new([3, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
        let m = config.init(&device);
        let x = input([3, 3, 7, 6], &device);
        let (ours, theirs) = (conv2d_module(&m, x.clone()), m.forward(x));
        let (g_ours, g_theirs) = (ours.powi_scalar(2).sum().backward(), theirs.powi_scalar(2).sum().backward());
        let weight = m.weight.val();
        assert_close(values(weight.grad(&g_ours).unwrap()), values(weight.grad(&g_theirs).unwrap()), "weight");
    }

    #[test]
    fn grouped_and_too_small_inputs_fall_back_to_burn() {
        check_1d(Conv1dConfig::new(4, 4, 3).with_groups(2).with_padding(PaddingConfig1d::Explicit(1, 1)), [2, 4, 9]);
        check_1d(Conv1dConfig::new(2, 3, 5).with_padding(PaddingConfig1d::Explicit(0, 0)), [1, 2, 5]);
    }
}
