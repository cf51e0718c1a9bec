//! Helpers for the unit tests that compare the model's own kernels with burn's ops.

use burn::prelude::*;

/// Element-wise equality to 1e-4, relative to the reference value (at least 1).
pub fn assert_close(ours: Vec<f32>, theirs: Vec<f32>, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: {a} vs burn's {b}");
    }
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Deterministic values in [-1, 1) with no two equal among any 997 in a row, so that every
/// pooling window has one maximum.
pub fn input<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    let len: usize = shape.iter().product();
    let data: Vec<f32> = (0..len).map(|i| ((i * 7919 % 997) as f32 / 498.0) - 1.0).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}
