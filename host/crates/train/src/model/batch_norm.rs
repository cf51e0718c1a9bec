//! Batch normalisation in training as a burn backend extension on Flex: the statistics in
//! one pass per channel, the output in one pass per sample, and the backward pass as two;
//! burn's module elsewhere (and in inference).
//!
//! burn composes the training op from tensor ops: each statistic and each gradient sum
//! transposes the activation to channels-first rows first, a copy that was the largest
//! single cost of a 1-D ResNet's step after the matmuls.

use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{backward_on_flex, f32_tensor, fused, per_task};

/// `m.forward(x)`, with the training path through `BatchNormOps` on Flex: the same output,
/// gradients and running statistics.
pub fn batch_norm_module<const D: usize>(m: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !(fused(&x) && device.is_autodiff() && m.training.is_enabled()) {
        return m.forward(x);
    }
    let (output, mean, variance) = <Dispatch as BatchNormOps>::batch_norm_fused(
        x.into_dispatch(),
        m.gamma.val().into_dispatch(),
        m.beta.val().into_dispatch(),
        m.epsilon,
    );
    let (mean, variance) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(variance));
    let keep = |running: Tensor<1>, batch: Tensor<1>| {
        running.to_device(&device).mul_scalar(1.0 - m.momentum).add(batch.detach().mul_scalar(m.momentum)).detach()
    };
    m.running_mean.update(keep(m.running_mean.value_sync(), mean));
    m.running_var.update(keep(m.running_var.value_sync(), variance));
    Tensor::from_dispatch(output)
}

#[backend_extension(Flex, Autodiff)]
pub trait BatchNormOps: Backend {
    /// The normalised output of `x` (`[B, C, ...]`) with the batch's own statistics, and
    /// those statistics: the mean and the biased variance per channel.
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// `[B, C, S]`: samples, channels, and the values of a channel in one sample.
fn sizes(x: &FlexTensor) -> (usize, usize, usize) {
    let shape = x.layout().shape();
    let (batch, channels) = (shape[0], shape[1]);
    (batch, channels, shape.num_elements() / (batch * channels).max(1))
}

/// Per channel, `f(channel)` over the channel's values in every sample, in parallel.
fn per_channel(
    values: &[f32],
    (batch, channels, spatial): (usize, usize, usize),
    f: impl Fn(usize, &mut dyn Iterator<Item = (usize, &[f32])>) -> (f32, f32) + Sync,
) -> Vec<(f32, f32)> {
    (0..channels)
        .into_par_iter()
        .with_min_len(per_task(batch * spatial))
        .map(|c| {
            let mut rows = (0..batch).map(|b| (b, &values[(b * channels + c) * spatial..][..spatial]));
            f(c, &mut rows)
        })
        .collect()
}

impl BatchNormOps for Flex {
    fn batch_norm_fused(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        forward(x, gamma, beta, epsilon)
    }
}

/// The output, mean and variance of `BatchNormOps::batch_norm_fused`.
fn forward(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, gamma, beta) = (x.to_contiguous(), gamma.to_contiguous(), beta.to_contiguous());
    let shape = x.layout().shape().clone();
    let (batch, channels, spatial) = sizes(&x);
    let count = (batch * spatial) as f64;
    let values: &[f32] = x.storage();
    // Sums in f64: a channel can hold a great many values.
    let stats = per_channel(values, (batch, channels, spatial), |_, rows| {
        let rows: Vec<&[f32]> = rows.map(|(_, r)| r).collect();
        let mean = rows.iter().flat_map(|r| r.iter()).map(|&v| v as f64).sum::<f64>() / count;
        let variance = rows.iter().flat_map(|r| r.iter()).map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / count;
        (mean as f32, variance as f32)
    });
    let (gamma, beta): (&[f32], &[f32]) = (gamma.storage(), beta.storage());
    let scale: Vec<(f32, f32)> = stats
        .iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&(mean, variance), (&g, &b))| {
            let a = g / (variance as f64 + epsilon).sqrt() as f32;
            (a, b - a * mean)
        })
        .collect();
    let mut output = vec![0f32; values.len()];
    output.par_chunks_mut(channels * spatial).zip(values.par_chunks(channels * spatial)).for_each(|(out, x)| {
        for ((out, x), &(a, b)) in out.chunks_mut(spatial).zip(x.chunks(spatial)).zip(&scale) {
            out.iter_mut().zip(x).for_each(|(o, &x)| *o = a * x + b);
        }
    });
    let (mean, variance): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
    (f32_tensor(output, shape.to_vec()), f32_tensor(mean, vec![channels]), f32_tensor(variance, vec![channels]))
}

/// The gradients of `x`, `gamma` and `beta` from the output's.
fn backward(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let shape = x.layout().shape().clone();
    let (batch, channels, spatial) = sizes(&x);
    let count = (batch * spatial) as f32;
    let (values, grads): (&[f32], &[f32]) = (x.storage(), grad.storage());
    let (gamma, mean, variance) = (gamma.to_contiguous(), mean.to_contiguous(), variance.to_contiguous());
    let (gamma, mean, variance): (&[f32], &[f32], &[f32]) = (gamma.storage(), mean.storage(), variance.storage());
    let inv_std: Vec<f32> = variance.iter().map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32).collect();
    // Per channel: Σ grad (beta's gradient) and Σ grad · x̂ (gamma's).
    let sums = per_channel(values, (batch, channels, spatial), |c, rows| {
        let (mut sum, mut dot) = (0f64, 0f64);
        for (b, x) in rows {
            let g = &grads[(b * channels + c) * spatial..][..spatial];
            for (&x, &g) in x.iter().zip(g) {
                sum += g as f64;
                dot += (g * (x - mean[c]) * inv_std[c]) as f64;
            }
        }
        (sum as f32, dot as f32)
    });
    let mut x_grad = vec![0f32; values.len()];
    let samples = x_grad.par_chunks_mut(channels * spatial).zip(values.par_chunks(channels * spatial));
    samples.zip(grads.par_chunks(channels * spatial)).for_each(|((dx, x), g)| {
        for (c, ((dx, x), g)) in dx.chunks_mut(spatial).zip(x.chunks(spatial)).zip(g.chunks(spatial)).enumerate() {
            let (sum, dot) = sums[c];
            let (scale, m, s) = (gamma[c] * inv_std[c], mean[c], inv_std[c]);
            let (mean_grad, mean_dot) = (sum / count, dot / count);
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                *dx = scale * (g - mean_grad - (x - m) * s * mean_dot);
            }
        }
    });
    let (beta_grad, gamma_grad): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
    (f32_tensor(x_grad, shape.to_vec()), f32_tensor(gamma_grad, vec![channels]), f32_tensor(beta_grad, vec![channels]))
}

impl<C: CheckpointStrategy> BatchNormOps for Autodiff<Flex, C> {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct Normalise;

        impl Backward<Flex, 3> for Normalise {
            /// The input, gamma, the batch's mean and variance, and epsilon.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, f64);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                backward_on_flex(ops, grads, |(x, gamma, mean, variance, epsilon), grad| {
                    backward(x, gamma, mean, variance, epsilon, grad).into()
                });
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        let (output, mean, variance) = forward(x.clone(), gamma.clone(), beta, epsilon);
        // The statistics feed the running averages only: constants to autodiff.
        let constant = |t: &FlexTensor| <Self as AutodiffBackend>::from_inner(t.clone());
        let stats = (constant(&mean), constant(&variance));
        let output = match Normalise.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, gamma, mean, variance, epsilon), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        (output, stats.0, stats.1)
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::BatchNormConfig;
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    #[test]
    fn batch_norm_matches_burn_with_gradients_and_running_statistics() {
        let device = Device::flex().autodiff();
        // 1-D and 2-D activations; the second splits channels over parallel tasks.
        for shape in [vec![4, 3, 7], vec![2, 5, 3, 4], vec![64, 40, 600]] {
            let channels = shape[1];
            // Gamma and beta away from their initial ones and zeros.
            let module = || {
                let mut m = BatchNormConfig::new(channels).init(&device);
                m.gamma = m.gamma.map(|g| g.mul_scalar(1.5).add_scalar(0.25).detach().require_grad());
                m.beta = m.beta.map(|b| b.add_scalar(-0.5).detach().require_grad());
                m
            };
            let (ours_m, theirs_m) = (module(), module());
            let x: Tensor<3> = input([shape[0], channels, shape[2..].iter().product()], &device).require_grad();
            let (ours, theirs) =
                (batch_norm_module(&ours_m, x.clone() * 3.0 + 1.0), theirs_m.forward(x.clone() * 3.0 + 1.0));
            let what = format!("batch norm on {shape:?}");
            assert_close(values(ours.clone()), values(theirs.clone()), &what);
            let weights = input([shape[0], channels, shape[2..].iter().product()], &device);
            let (g_ours, g_theirs) = ((ours * weights.clone()).sum().backward(), (theirs * weights).sum().backward());
            assert_close(
                values(x.grad(&g_ours).unwrap()),
                values(x.grad(&g_theirs).unwrap()),
                &format!("{what}: input"),
            );
            for (a, b, name) in [(&ours_m.gamma, &theirs_m.gamma, "gamma"), (&ours_m.beta, &theirs_m.beta, "beta")] {
                let (a, b) = (a.val(), b.val());
                assert_close(
                    values(a.grad(&g_ours).unwrap()),
                    values(b.grad(&g_theirs).unwrap()),
                    &format!("{what}: {name}"),
                );
            }
            let running = |m: &BatchNorm| (values(m.running_mean.value()), values(m.running_var.value()));
            let (ours_r, theirs_r) = (running(&ours_m), running(&theirs_m));
            assert_close(ours_r.0, theirs_r.0, &format!("{what}: running mean"));
            assert_close(ours_r.1, theirs_r.1, &format!("{what}: running variance"));
        }
    }
}
