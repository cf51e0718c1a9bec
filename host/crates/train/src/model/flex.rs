//! What the CPU sides of the backend extensions share: when they apply, tensors from
//! vectors, task sizes for rayon, matrix products on slices, and the autodiff backward step
//! on Flex.

use burn::backend::ops::FloatTensorOps;
use burn::backend::{DType, DispatchDevice, Flex};
use burn::prelude::*;
use burn::tensor::{Bytes, Shape as TensorShape};
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::Ops;
use burn_flex::{FlexTensor, Layout};

/// Whether `x` is an `f32` tensor on Flex (with or without autodiff): where the fused
/// recurrent and normalisation ops run.
pub(super) fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && matches!(x.device().as_dispatch().clone().inner(), DispatchDevice::Flex(_))
}

/// Chunks of `len` values per parallel task: enough that waking a thread pays off (small
/// tensors stay on one thread; rayon's wake-ups cost more than the copies).
pub(super) fn per_task(len: usize) -> usize {
    (1 << 15) / len.max(1) + 1
}

/// Samples per parallel task of one recurrent step: the batch split over the threads, but
/// no task under about 2,048 gate values (a thread's wake-up costs more than that work).
pub(super) fn samples_per_task(batch: usize, hidden: usize) -> usize {
    batch.div_ceil(rayon::current_num_threads()).max(2048 / (4 * hidden).max(1)).max(1)
}

pub(super) fn f32_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(TensorShape::from(shape)), DType::F32)
}

/// A read-only `rows`x`cols` matrix inside a slice: element (i, j) at
/// `i * row_stride + j * col_stride`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// The row-major `rows`x`cols` matrix at the start of `data`.
    pub(super) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, read in place.
    pub(super) fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether every element lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = a · b`, or `dst += a · b` when `accumulate`, with `dst` the row-major
/// `a.rows`x`b.cols` matrix; on the calling thread (callers split their work by sample).
///
/// On slices rather than tensors: burn-flex's product allocates a zeroed buffer and copies
/// it into an aligned one for every result, and a convolution wants many small products
/// into buffers it reuses.
#[allow(unsafe_code)]
pub(super) fn gemm(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    assert!(
        a.cols == b.rows && dst.len() == a.rows * b.cols && a.in_bounds() && b.in_bounds(),
        "gemm of {}x{} by {}x{} into {} values",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst.len()
    );
    let stride = |s: usize| s as isize;
    // SAFETY: gemm reads `a` and `b` only at the indices checked by `in_bounds` and writes
    // the `a.rows * b.cols` values of `dst`; `dst` is borrowed mutably, so it overlaps neither.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            stride(b.cols),
            accumulate,
            a.data.as_ptr(),
            stride(a.col_stride),
            stride(a.row_stride),
            b.data.as_ptr(),
            stride(b.col_stride),
            stride(b.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

pub(super) fn matmul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
    Flex::float_matmul(a, b).to_contiguous()
}

/// The body of a `Backward` on Flex: `gradients(state, the output's gradient)` gives every
/// parent's gradient, in order; those of the parents that track one are registered.
pub(super) fn backward_on_flex<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(S, FlexTensor) -> [FlexTensor; N],
) {
    let grad = grads.consume::<Flex>(&ops.node);
    for (parent, gradient) in ops.parents.into_iter().zip(gradients(ops.state, grad)) {
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, gradient);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product by definition, for row-major `a` (`m`x`k`) and `b` (`k`x`n`).
    fn product(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|at| (0..k).map(|p| a[at / n * k + p] * b[p * n + at % n]).sum()).collect()
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|at| a[at % rows * cols + at / rows]).collect()
    }

    #[test]
    fn gemm_multiplies_transposes_and_accumulates() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|v| (v as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|v| (v as f32 * 0.91).cos()).collect();
        let expected = product(&a, &b, m, k, n);
        let close = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5);

        let mut dst = vec![f32::NAN; m * n];
        gemm(&mut dst, Mat::row_major(&a, m, k), Mat::row_major(&b, k, n), false);
        assert!(close(&dst, &expected), "{dst:?} against {expected:?}");

        let (a_t, b_t) = (transpose(&a, m, k), transpose(&b, k, n));
        let mut again = vec![0.0; m * n];
        gemm(&mut again, Mat::row_major(&a_t, k, m).t(), Mat::row_major(&b_t, n, k).t(), false);
        assert!(close(&again, &expected));

        gemm(&mut again, Mat::row_major(&a, m, k), Mat::row_major(&b, k, n), true);
        assert!(close(&again, &expected.iter().map(|v| 2.0 * v).collect::<Vec<_>>()));
    }

    #[test]
    #[should_panic(expected = "gemm of 2x3 by 3x2 into 4 values")]
    fn gemm_refuses_views_outside_their_slices() {
        let mut dst = vec![0.0; 4];
        gemm(&mut dst, Mat::row_major(&[1.0; 5], 2, 3), Mat::row_major(&[1.0; 6], 3, 2), false);
    }
}
