//! What the CPU sides of the backend extensions share: when they apply, tensors from
//! vectors, task sizes for rayon, and the autodiff backward step on Flex.

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
