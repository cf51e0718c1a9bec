//! The GRU treated like the LSTM (`lstm.rs`): on Flex one op for the whole sequence
//! (`GruOps`: the input transform of all steps in one matmul, per step one pass in which
//! each task multiplies its samples' states by W_h and computes their gates,
//! backpropagation through time written out);
//! elsewhere per step one matmul of the input and one of the hidden state for all three
//! gates, the update and reset gates through one sigmoid, and autodiff.

use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::GateController;
use burn::nn::activation::Activation;
use burn::nn::gru::Gru;
use burn::prelude::*;
use burn::tensor::Shape as TensorShape;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::activation::{sigmoid, sigmoid_of, tanh, tanh_of};
use super::flex::{Mat, backward_on_flex, f32_tensor, fused, gemm, matmul, samples_per_task};
use super::rnn::{scan, step_order};

/// A gate's weights and bias of one transform (input or hidden), stacked update, reset,
/// new: `[in, 3H]` and `[3H]` (zeros without biases).
fn stacked(gates: [&GateController; 3], hidden: bool, width: usize, device: &Device) -> (Tensor<2>, Tensor<1>) {
    fn transform(g: &GateController, hidden: bool) -> &burn::nn::Linear {
        if hidden { &g.hidden_transform } else { &g.input_transform }
    }
    let weights = Tensor::cat(gates.iter().map(|g| transform(g, hidden).weight.val()).collect(), 1);
    let biases = gates
        .iter()
        .map(|g| transform(g, hidden).bias.as_ref().map(|b| b.val()).unwrap_or_else(|| Tensor::zeros([width], device)))
        .collect();
    (weights, Tensor::cat(biases, 0))
}

/// Runs `m` over `x` (`[B, T, C]`) from a zero state, from the last step to the first when
/// `reverse`. Returns every step's state (`[B, T, H]`, in input order) and the last one
/// computed (`[B, H]`), as burn's `Gru` does.
pub fn gru(m: &Gru, x: Tensor<3>, reverse: bool) -> (Tensor<3>, Tensor<2>) {
    let [batch, steps, channels] = x.dims();
    let hidden = m.d_hidden;
    let standard = m.reset_after
        && m.clip.is_none()
        && matches!(m.gate_activation, Activation::Sigmoid(_))
        && matches!(m.hidden_activation, Activation::Tanh(_));
    if !standard || steps == 0 {
        // burn's own, on the sequence flipped for the reverse direction.
        let input = if reverse { x.flip([1]) } else { x };
        let seq = m.forward(input, None);
        let last = seq.clone().narrow(1, steps.saturating_sub(1), 1).reshape([batch, hidden]);
        return (if reverse { seq.flip([1]) } else { seq }, last);
    }
    let device = x.device();
    let gates = [&m.update_gate, &m.reset_gate, &m.new_gate];
    let (input_weights, input_bias) = stacked(gates, false, hidden, &device);
    let (hidden_weights, hidden_bias) = stacked(gates, true, hidden, &device);
    if fused(&x) {
        let seq = Tensor::from_dispatch(<Dispatch as GruOps>::gru_steps(
            x.into_dispatch(),
            input_weights.into_dispatch(),
            hidden_weights.into_dispatch(),
            input_bias.into_dispatch(),
            hidden_bias.into_dispatch(),
            reverse,
        ));
        let last = seq.clone().narrow(1, if reverse { 0 } else { steps - 1 }, 1).reshape([batch, hidden]);
        return (seq, last);
    }
    let (input_bias, hidden_bias): (Tensor<2>, Tensor<2>) = (input_bias.unsqueeze(), hidden_bias.unsqueeze());
    let h = Tensor::<2>::zeros([batch, hidden], &device);
    scan(steps, reverse, h, |t, h| {
        let step = x.clone().narrow(1, t, 1).reshape([batch, channels]);
        let from_x = step.matmul(input_weights.clone()) + input_bias.clone();
        let from_h = h.clone().matmul(hidden_weights.clone()) + hidden_bias.clone();
        let gates = sigmoid(from_x.clone().narrow(1, 0, 2 * hidden) + from_h.clone().narrow(1, 0, 2 * hidden));
        let [update, reset]: [Tensor<2>; 2] = gates.chunk(2, 1).try_into().expect("2H columns make two chunks");
        let candidate = tanh(from_x.narrow(1, 2 * hidden, hidden) + reset * from_h.narrow(1, 2 * hidden, hidden));
        // (1 - z) n + z h, as n + z (h - n).
        let h = candidate.clone() + update * (h - candidate);
        (h.clone(), h)
    })
}

/// The standard GRU (reset after the product, sigmoid gates, tanh candidate) over a whole
/// sequence from a zero state: `x` `[B, T, C]`, `w_x` `[C, 3H]` and `w_h` `[H, 3H]`
/// (columns: update, reset, new), biases `[3H]`; every step's state, `[B, T, H]`.
#[backend_extension(Flex, Autodiff)]
pub trait GruOps: Backend {
    fn gru_steps(
        x: FloatTensor<Self>,
        w_x: FloatTensor<Self>,
        w_h: FloatTensor<Self>,
        b_x: FloatTensor<Self>,
        b_h: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self>;
}

impl GruOps for Flex {
    fn gru_steps(
        x: FlexTensor,
        w_x: FlexTensor,
        w_h: FlexTensor,
        b_x: FlexTensor,
        b_h: FlexTensor,
        reverse: bool,
    ) -> FlexTensor {
        forward(x, w_x, w_h, b_x, b_h, reverse, false).0
    }
}

/// The forward pass and what the backward pass reads: the states, and per step and sample
/// the update and reset gates, the candidate and the hidden transform's new-gate part
/// (`[T, B, 4H]`; without `keep`, the last step's only).
fn forward(
    x: FlexTensor,
    w_x: FlexTensor,
    w_h: FlexTensor,
    b_x: FlexTensor,
    b_h: FlexTensor,
    reverse: bool,
    keep: bool,
) -> (FlexTensor, FlexTensor) {
    let (x, w_x, w_h) = (x.to_contiguous(), w_x.to_contiguous(), w_h.to_contiguous());
    let (b_x, b_h) = (b_x.to_contiguous(), b_h.to_contiguous());
    let (xs, h) = (x.layout().shape().clone(), w_h.layout().shape()[0]);
    let (b, t, c) = (xs[0], xs[1], xs[2]);
    let projected = matmul(Flex::float_reshape(x, TensorShape::from(vec![b * t, c])), w_x);
    let (projected, b_x, b_h, w_h): (&[f32], &[f32], &[f32], &[f32]) =
        (projected.storage(), b_x.storage(), b_h.storage(), w_h.storage());
    let w_h = Mat::row_major(w_h, h, 3 * h);
    let per_task = samples_per_task(b, h);
    let mut hidden = vec![0f32; b * t * h];
    // Every step's gates for the backward pass (`keep`), else one step's at a time.
    let slots = if keep { t } else { 1 };
    let mut saved = vec![0f32; slots * b * 4 * h];
    let mut h_t = vec![0f32; b * h];
    // Each step's states times W_h (zeros before the first step, which has no product).
    let mut recurrent = vec![0f32; b * 3 * h];
    let mut first = true;
    for step in step_order(t, reverse) {
        // Each task takes a block of samples: the product of their states (read before they
        // are overwritten) by W_h, then their gates and new states.
        let slot = if keep { step } else { 0 };
        let saved_t = &mut saved[slot * b * 4 * h..(slot + 1) * b * 4 * h];
        let tasks = saved_t.par_chunks_mut(per_task * 4 * h).zip(h_t.par_chunks_mut(per_task * h));
        tasks.zip(recurrent.par_chunks_mut(per_task * 3 * h)).enumerate().for_each(
            |(task, ((keep, states), recurrent))| {
                if !first {
                    gemm(recurrent, Mat::row_major(states, states.len() / h, h), w_h, false);
                }
                let samples =
                    keep.chunks_exact_mut(4 * h).zip(states.chunks_exact_mut(h)).zip(recurrent.chunks_exact(3 * h));
                for (j, ((keep, state), recurrent)) in samples.enumerate() {
                    let fx = &projected[((task * per_task + j) * t + step) * 3 * h..][..3 * h];
                    let fh = |k: usize| b_h[k] + recurrent[k];
                    let (gates, rest) = keep.split_at_mut(2 * h);
                    let (candidate, fh_n) = rest.split_at_mut(h);
                    for (k, g) in gates.iter_mut().enumerate() {
                        *g = sigmoid_of(fx[k] + b_x[k] + fh(k));
                    }
                    for k in 0..h {
                        fh_n[k] = fh(2 * h + k);
                        candidate[k] = tanh_of(fx[2 * h + k] + b_x[2 * h + k] + gates[h + k] * fh_n[k]);
                        // (1 - z) n + z h, as n + z (h - n).
                        state[k] = candidate[k] + gates[k] * (state[k] - candidate[k]);
                    }
                }
            },
        );
        for (s, state) in h_t.chunks(h).enumerate() {
            hidden[(s * t + step) * h..][..h].copy_from_slice(state);
        }
        first = false;
    }
    (f32_tensor(hidden, vec![b, t, h]), f32_tensor(saved, vec![slots, b, 4 * h]))
}

/// The gradients of `x`, `w_x`, `w_h`, `b_x` and `b_h` from the states' (`grad`).
fn backward(
    x: FlexTensor,
    w_x: FlexTensor,
    w_h: FlexTensor,
    hidden: FlexTensor,
    saved: FlexTensor,
    grad: FlexTensor,
    reverse: bool,
) -> (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor) {
    let (x, w_x, w_h, grad) = (x.to_contiguous(), w_x.to_contiguous(), w_h.to_contiguous(), grad.to_contiguous());
    let (xs, h) = (x.layout().shape().clone(), w_h.layout().shape()[0]);
    let (b, t, c) = (xs[0], xs[1], xs[2]);
    let (hidden_v, saved_v, grad_v): (&[f32], &[f32], &[f32]) = (hidden.storage(), saved.storage(), grad.storage());
    let w_h_v: &[f32] = w_h.storage();
    let w_h_t = Mat::row_major(w_h_v, h, 3 * h).t();
    let per_task = samples_per_task(b, h);
    let order = step_order(t, reverse);
    // Per (sample, step) row: the pre-activation gradients of the input and hidden
    // transforms, and the state before the step (zeros before the first).
    let (mut dfx, mut dfh) = (vec![0f32; b * t * 3 * h], vec![0f32; b * t * 3 * h]);
    let mut h_prev = vec![0f32; b * t * h];
    let mut dh_next = vec![0f32; b * h];
    let (mut dfx_t, mut dfh_t) = (vec![0f32; b * 3 * h], vec![0f32; b * 3 * h]);
    for (position, &step) in order.iter().enumerate().rev() {
        let previous = position.checked_sub(1).map(|p| order[p]);
        let saved_t = &saved_v[step * b * 4 * h..(step + 1) * b * 4 * h];
        // Each task takes a block of samples: their pre-activation gradients, then what their
        // previous states get: dh·z directly (in place of dh, once read) plus dfh · W_hᵀ.
        let tasks = dfx_t.par_chunks_mut(per_task * 3 * h).zip(dfh_t.par_chunks_mut(per_task * 3 * h));
        tasks.zip(dh_next.par_chunks_mut(per_task * h)).enumerate().for_each(|(task, ((dx, dhh), dh_next))| {
            let samples = dx.chunks_exact_mut(3 * h).zip(dhh.chunks_exact_mut(3 * h)).zip(dh_next.chunks_exact_mut(h));
            for (j, ((dx, dhh), dh_next)) in samples.enumerate() {
                let s = task * per_task + j;
                let keep = &saved_t[s * 4 * h..(s + 1) * 4 * h];
                let (z, r, n, fh_n) = (&keep[..h], &keep[h..2 * h], &keep[2 * h..3 * h], &keep[3 * h..]);
                let prev = previous.map(|p| &hidden_v[(s * t + p) * h..][..h]);
                for k in 0..h {
                    let dh = grad_v[(s * t + step) * h + k] + dh_next[k];
                    let h_before = prev.map_or(0.0, |p| p[k]);
                    let dn = dh * (1.0 - z[k]) * (1.0 - n[k] * n[k]);
                    let dz = dh * (h_before - n[k]) * z[k] * (1.0 - z[k]);
                    let dr = dn * fh_n[k] * r[k] * (1.0 - r[k]);
                    (dx[k], dx[h + k], dx[2 * h + k]) = (dz, dr, dn);
                    (dhh[k], dhh[h + k], dhh[2 * h + k]) = (dz, dr, dn * r[k]);
                    dh_next[k] = dh * z[k];
                }
            }
            if previous.is_some() {
                gemm(dh_next, Mat::row_major(dhh, dhh.len() / (3 * h), 3 * h), w_h_t, true);
            }
        });
        for s in 0..b {
            let row = s * t + step;
            dfx[row * 3 * h..][..3 * h].copy_from_slice(&dfx_t[s * 3 * h..(s + 1) * 3 * h]);
            dfh[row * 3 * h..][..3 * h].copy_from_slice(&dfh_t[s * 3 * h..(s + 1) * 3 * h]);
            if let Some(p) = previous {
                h_prev[row * h..][..h].copy_from_slice(&hidden_v[(s * t + p) * h..][..h]);
            }
        }
    }
    let (dfx, dfh) = (f32_tensor(dfx, vec![b * t, 3 * h]), f32_tensor(dfh, vec![b * t, 3 * h]));
    let x_flat = Flex::float_reshape(x, TensorShape::from(vec![b * t, c]));
    let h_prev = f32_tensor(h_prev, vec![b * t, h]);
    let dw_x = matmul(Flex::float_swap_dims(x_flat, 0, 1), dfx.clone());
    let dw_h = matmul(Flex::float_swap_dims(h_prev, 0, 1), dfh.clone());
    let sum = |rows: FlexTensor| Flex::float_reshape(Flex::float_sum_dim(rows, 0), TensorShape::from(vec![3 * h]));
    let (db_x, db_h) = (sum(dfx.clone()), sum(dfh));
    let dx = matmul(dfx, Flex::float_swap_dims(w_x, 0, 1));
    (Flex::float_reshape(dx, TensorShape::from(vec![b, t, c])), dw_x, dw_h, db_x, db_h)
}

impl<C: CheckpointStrategy> GruOps for Autodiff<Flex, C> {
    fn gru_steps(
        x: FloatTensor<Self>,
        w_x: FloatTensor<Self>,
        w_h: FloatTensor<Self>,
        b_x: FloatTensor<Self>,
        b_h: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Steps;

        impl Backward<Flex, 5> for Steps {
            /// The input, both weights, the states and what the forward pass saved.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, bool);

            fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                backward_on_flex(ops, grads, |(x, w_x, w_h, hidden, saved, reverse), grad| {
                    backward(x, w_x, w_h, hidden, saved, grad, reverse).into()
                });
            }
        }

        let nodes = [x.node(), w_x.node(), w_h.node(), b_x.node(), b_h.node()];
        let (x, w_x, w_h) = (x.into_primitive(), w_x.into_primitive(), w_h.into_primitive());
        let (b_x, b_h) = (b_x.into_primitive(), b_h.into_primitive());
        match Steps.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (hidden, saved) = forward(x.clone(), w_x.clone(), w_h.clone(), b_x, b_h, reverse, true);
                prep.finish((x, w_x, w_h, hidden.clone(), saved, reverse), hidden)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, w_x, w_h, b_x, b_h, reverse, false).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::gru::{BiGruConfig, GruConfig};
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    #[test]
    fn inference_matches_burn_in_both_directions() {
        // Without autodiff the op keeps one step's gates, not the sequence's.
        let device = Device::flex();
        let m = BiGruConfig::new(3, 6, true).init(&device);
        let x = input([5, 7, 3], &device);
        let (seq, last) = gru(&m.forward, x.clone(), false);
        let (seq_back, last_back) = gru(&m.reverse, x.clone(), true);
        let (their_seq, their_states) = m.forward(x, None);
        assert_close(values(Tensor::cat(vec![seq, seq_back], 2)), values(their_seq), "bigru inference");
        assert_close(values(Tensor::stack::<3>(vec![last, last_back], 0)), values(their_states), "bigru states");
    }

    #[test]
    fn gru_matches_burn_in_both_directions_with_gradients() {
        let device = Device::flex().autodiff();
        // The last size splits the samples of a step over parallel tasks, the last one short.
        for (bias, batch, hidden) in [(true, 2, 5), (false, 2, 5), (true, 301, 64)] {
            // burn's bidirectional GRU runs its reverse module from the last step.
            let m = BiGruConfig::new(3, hidden, bias).init(&device);
            let x = input([batch, 4, 3], &device).require_grad();
            let (seq, last) = gru(&m.forward, x.clone(), false);
            let (seq_back, last_back) = gru(&m.reverse, x.clone(), true);
            let states: Tensor<3> = Tensor::stack(vec![last, last_back], 0);
            let ours = (Tensor::cat(vec![seq, seq_back], 2), states);
            let theirs = m.forward(x.clone(), None);
            let what = format!("bigru bias {bias} batch {batch}");
            assert_close(values(ours.0.clone()), values(theirs.0.clone()), &what);
            assert_close(values(ours.1.clone()), values(theirs.1.clone()), &format!("{what}: states"));
            let (g_ours, g_theirs) = (
                (ours.0.powi_scalar(2).sum() + ours.1.sum()).backward(),
                (theirs.0.powi_scalar(2).sum() + theirs.1.sum()).backward(),
            );
            assert_close(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), &what);
            for (direction, g) in [&m.forward, &m.reverse].into_iter().enumerate() {
                for (i, gate) in [&g.update_gate, &g.reset_gate, &g.new_gate].into_iter().enumerate() {
                    for transform in [&gate.input_transform, &gate.hidden_transform] {
                        let w = transform.weight.val();
                        let what = format!("{what}: direction {direction} gate {i}");
                        assert_close(values(w.grad(&g_ours).unwrap()), values(w.grad(&g_theirs).unwrap()), &what);
                        if let Some(b) = &transform.bias {
                            let (b, what) = (b.val(), format!("{what}: bias"));
                            assert_close(values(b.grad(&g_ours).unwrap()), values(b.grad(&g_theirs).unwrap()), &what);
                        }
                    }
                }
            }
        }
        // A GRU that resets before the product goes through burn's own steps.
        let m = GruConfig::new(3, 4, true).with_reset_after(false).init(&device);
        let x = input([2, 5, 3], &device);
        let (seq, _) = gru(&m, x.clone(), false);
        assert_close(values(seq), values(m.forward(x, None)), "reset before");
    }
}
