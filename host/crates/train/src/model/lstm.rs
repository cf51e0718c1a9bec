//! The LSTM as one op on the CPU, and lowered to fewer, larger tensor ops elsewhere.
//!
//! burn-nn's LSTM runs eight matmuls per time step (four gates, input and hidden apart)
//! and writes each step's output into a copy of the whole sequence. Here the gates'
//! weights are stacked once per forward. On Flex the whole sequence is a backend extension
//! (`LstmOps`): the input transform of every step in one matmul, then per step one pass in
//! which each task multiplies its samples' hidden states by W_h and computes their gates;
//! the backward pass is written out (backpropagation through time: per step one pass with
//! one product per task, then the weights' gradients in two matmuls over all steps). Composed from tensor ops, a step was some fifteen autodiff
//! nodes. On other backends each step is one matmul over the step's input beside the
//! hidden state, and autodiff derives the gradients.

use super::activation::{sigmoid, sigmoid_of, tanh, tanh_of};
use super::flex::{Mat, backward_on_flex, f32_tensor, fused, gemm, matmul, samples_per_task};
use super::rnn::{scan, step_order};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::GateController;
use burn::nn::activation::Activation;
use burn::nn::lstm::Lstm;
use burn::prelude::*;
use burn::tensor::Shape as TensorShape;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Runs `m` over `x` (`[B, T, C]`), from the last step to the first when `reverse`, from
/// zero states. Returns every step's hidden state (`[B, T, H]`, in input order) and the
/// last one computed (`[B, H]`), as `m.forward_iter` does.
pub fn lstm(m: &Lstm, x: Tensor<3>, reverse: bool) -> (Tensor<3>, Tensor<2>) {
    let [batch, steps, _] = x.dims();
    let standard = m.clip.is_none()
        && matches!(m.gate_activation, Activation::Sigmoid(_))
        && matches!(m.cell_activation, Activation::Tanh(_))
        && matches!(m.hidden_activation, Activation::Tanh(_));
    let Some(forget) = m.forget_gate.as_ref().filter(|_| standard && steps > 0) else {
        let device = x.device();
        let timesteps = x.iter_dim(1).enumerate();
        let (seq, state) = if reverse {
            m.forward_iter(timesteps.rev(), None, batch, steps, &device)
        } else {
            m.forward_iter(timesteps, None, batch, steps, &device)
        };
        return (seq, state.hidden);
    };
    let hidden = m.d_hidden;
    let gates = [&m.input_gate, forget, &m.output_gate, &m.cell_gate];
    // [C + H, 4H]: rows read the step's input then the hidden state; columns are the
    // input, forget, output and cell gates.
    let weights = Tensor::cat(
        vec![
            Tensor::cat(gates.iter().map(|g| g.input_transform.weight.val()).collect(), 1),
            Tensor::cat(gates.iter().map(|g| g.hidden_transform.weight.val()).collect(), 1),
        ],
        0,
    );
    let bias: Option<Tensor<2>> = gates
        .iter()
        .map(|g| gate_bias(g))
        .collect::<Option<Vec<_>>>()
        .map(|b| Tensor::cat(b, 0).reshape([1, 4 * hidden]));
    let device = x.device();
    if fused(&x) {
        let bias = bias.map_or_else(|| Tensor::zeros([4 * hidden], &device), |b| b.reshape([4 * hidden]));
        let seq = Tensor::from_dispatch(<Dispatch as LstmOps>::lstm_steps(
            x.into_dispatch(),
            weights.into_dispatch(),
            bias.into_dispatch(),
            reverse,
        ));
        let last = seq.clone().narrow(1, if reverse { 0 } else { steps - 1 }, 1).reshape([batch, hidden]);
        return (seq, last);
    }
    let zeros = || Tensor::<2>::zeros([batch, hidden], &device);
    let channels = x.dims()[2];
    scan(steps, reverse, (zeros(), zeros()), |t, (h, c)| {
        let step = x.clone().narrow(1, t, 1).reshape([batch, channels]);
        let mut z = Tensor::cat(vec![step, h], 1).matmul(weights.clone());
        if let Some(bias) = &bias {
            z = z + bias.clone();
        }
        let [i, f, o, g]: [Tensor<2>; 4] = z.chunk(4, 1).try_into().expect("4H columns make four chunks");
        let c = sigmoid(f) * c + sigmoid(i) * tanh(g);
        let h = sigmoid(o) * tanh(c.clone());
        ((h.clone(), c), h)
    })
}

/// A gate's two biases summed (`None` when the LSTM has none).
fn gate_bias(gate: &GateController) -> Option<Tensor<1>> {
    match (&gate.input_transform.bias, &gate.hidden_transform.bias) {
        (Some(a), Some(b)) => Some(a.val() + b.val()),
        (Some(a), None) | (None, Some(a)) => Some(a.val()),
        (None, None) => None,
    }
}

/// A standard LSTM (sigmoid gates, tanh cell and output, no clipping) over a whole
/// sequence from zero states. `x` is `[B, T, C]`, `weights` `[C + H, 4H]` (rows: the
/// step's input, then the hidden state; columns: the input, forget, output and cell
/// gates), `bias` `[4H]`; the result is every step's hidden state, `[B, T, H]`.
#[backend_extension(Flex, Autodiff)]
pub trait LstmOps: Backend {
    fn lstm_steps(
        x: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self>;
}

/// Sizes of one LSTM sequence.
#[derive(Clone, Copy)]
struct Sizes {
    batch: usize,
    steps: usize,
    channels: usize,
    hidden: usize,
}

impl Sizes {
    fn of(x: &FlexTensor, weights: &FlexTensor) -> Self {
        let (xs, ws) = (x.layout().shape(), weights.layout().shape());
        Sizes { batch: xs[0], steps: xs[1], channels: xs[2], hidden: ws[1] / 4 }
    }
}

fn rows(t: FlexTensor, from: usize, to: usize, columns: usize) -> FlexTensor {
    let values: &[f32] = t.storage();
    f32_tensor(values[from * columns..to * columns].to_vec(), vec![to - from, columns])
}

impl LstmOps for Flex {
    fn lstm_steps(x: FlexTensor, weights: FlexTensor, bias: FlexTensor, reverse: bool) -> FlexTensor {
        forward(x, weights, bias, reverse, false).0
    }
}

/// The forward pass and what the backward pass reads: the hidden states, the gates after
/// their activations (`[T, B, 4H]`), and the cell states beside their tanh (`[T, B, 2H]`);
/// without `keep`, gates and cells of the last steps only.
fn forward(
    x: FlexTensor,
    weights: FlexTensor,
    bias: FlexTensor,
    reverse: bool,
    keep: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, weights, bias) = (x.to_contiguous(), weights.to_contiguous(), bias.to_contiguous());
    let n = Sizes::of(&x, &weights);
    let (b, t, c, h) = (n.batch, n.steps, n.channels, n.hidden);
    // Every step's input transform in one matmul: [B·T, C] · [C, 4H].
    let x_flat = Flex::float_reshape(x, TensorShape::from(vec![b * t, c]));
    let projected = matmul(x_flat, rows(weights.clone(), 0, c, 4 * h));
    let (projected, bias, weights): (&[f32], &[f32], &[f32]) = (projected.storage(), bias.storage(), weights.storage());
    let w_h = Mat::row_major(&weights[c * 4 * h..], h, 4 * h);
    let per_task = samples_per_task(b, h);
    let mut hidden = vec![0f32; b * t * h];
    // Each step's gates and cells in the slot of its step when the backward pass will read
    // them (`keep`), else in the fewest slots the recurrence needs: one for the gates, two
    // for the cells (this step's and the last one's). Inference over 512 samples of 40
    // steps would otherwise hold a hundred megabytes for a 256-unit layer.
    let (gate_slots, cell_slots) = if keep { (t, t) } else { (1, 2) };
    let slot = |position: usize, step: usize, slots: usize| if keep { step } else { position % slots };
    let mut gates = vec![0f32; gate_slots * b * 4 * h];
    // Per step and sample: the cell state, then its tanh (the backward pass reads both).
    let mut cells = vec![0f32; cell_slots * b * 2 * h];
    let mut h_t = vec![0f32; b * h];
    let mut previous: Option<usize> = None;
    for (position, step) in step_order(t, reverse).into_iter().enumerate() {
        let (span, now) = (b * 2 * h, slot(position, step, cell_slots));
        let (cells_t, cells_prev): (&mut [f32], Option<&[f32]>) =
            match previous.map(|p| slot(position - 1, p, cell_slots)) {
                None => (&mut cells[now * span..(now + 1) * span], None),
                Some(p) if p < now => {
                    let (done, rest) = cells.split_at_mut(now * span);
                    (&mut rest[..span], Some(&done[p * span..(p + 1) * span]))
                }
                Some(p) => {
                    let (rest, done) = cells.split_at_mut(p * span);
                    (&mut rest[now * span..(now + 1) * span], Some(&done[..span]))
                }
            };
        // Each task takes a block of samples: their gates' inputs, the product of their
        // hidden states (read before they are overwritten) by W_h, then the cell.
        let g = slot(position, step, gate_slots);
        let gates_t = &mut gates[g * b * 4 * h..(g + 1) * b * 4 * h];
        let tasks = gates_t.par_chunks_mut(per_task * 4 * h).zip(cells_t.par_chunks_mut(per_task * 2 * h));
        tasks.zip(h_t.par_chunks_mut(per_task * h)).enumerate().for_each(|(task, ((z, cell), h_out))| {
            let first = task * per_task;
            for (j, z) in z.chunks_exact_mut(4 * h).enumerate() {
                let from_x = &projected[((first + j) * t + step) * 4 * h..][..4 * h];
                z.iter_mut().zip(from_x).zip(bias).for_each(|((z, x), b)| *z = x + b);
            }
            if previous.is_some() {
                gemm(z, Mat::row_major(h_out, h_out.len() / h, h), w_h, true);
            }
            let samples = z.chunks_exact_mut(4 * h).zip(cell.chunks_exact_mut(2 * h)).zip(h_out.chunks_exact_mut(h));
            for (j, ((z, cell), h_out)) in samples.enumerate() {
                let c_prev = cells_prev.map(|prev| &prev[(first + j) * 2 * h..][..h]);
                cell_step(z, cell, h_out, c_prev);
            }
        });
        for (s, h_s) in h_t.chunks(h).enumerate() {
            hidden[(s * t + step) * h..][..h].copy_from_slice(h_s);
        }
        previous = Some(step);
    }
    let (gates, cells) = (f32_tensor(gates, vec![gate_slots, b, 4 * h]), f32_tensor(cells, vec![cell_slots, b, 2 * h]));
    (f32_tensor(hidden, vec![b, t, h]), gates, cells)
}

/// One sample's step from its gate inputs `z` (`[4H]`, replaced by the gates after their
/// activations): the cell state and its tanh into `cell` (`[2H]`), the hidden state into
/// `h_out`; `c_prev` is the previous cell state (none at the first step).
fn cell_step(z: &mut [f32], cell: &mut [f32], h_out: &mut [f32], c_prev: Option<&[f32]>) {
    let h = h_out.len();
    let (sig, g) = z.split_at_mut(3 * h);
    sig.iter_mut().for_each(|v| *v = sigmoid_of(*v));
    g.iter_mut().for_each(|v| *v = tanh_of(*v));
    let (i, f, o, g) = (&z[..h], &z[h..2 * h], &z[2 * h..3 * h], &z[3 * h..]);
    let (c_new, tanh_c) = cell.split_at_mut(h);
    match c_prev {
        Some(prev) => c_new.iter_mut().zip(prev).zip(f).for_each(|((c, p), f)| *c = f * p),
        None => c_new.fill(0.0),
    }
    c_new.iter_mut().zip(i).zip(g).for_each(|((c, i), g)| *c += i * g);
    tanh_c.iter_mut().zip(c_new.iter()).for_each(|(tc, c)| *tc = tanh_of(*c));
    h_out.iter_mut().zip(o).zip(tanh_c.iter()).for_each(|((h, o), tc)| *h = o * tc);
}

/// The gradients of `x`, `weights` and `bias` from the hidden states' (`grad`).
fn backward(
    x: FlexTensor,
    weights: FlexTensor,
    hidden: FlexTensor,
    gates: FlexTensor,
    cells: FlexTensor,
    grad: FlexTensor,
    reverse: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let (x, weights, grad) = (x.to_contiguous(), weights.to_contiguous(), grad.to_contiguous());
    let n = Sizes::of(&x, &weights);
    let (b, t, c, h) = (n.batch, n.steps, n.channels, n.hidden);
    let (hidden_v, gates_v, cells_v, grad_v): (&[f32], &[f32], &[f32], &[f32]) =
        (hidden.storage(), gates.storage(), cells.storage(), grad.storage());
    let weights_v: &[f32] = weights.storage();
    let w_h_t = Mat::row_major(&weights_v[c * 4 * h..], h, 4 * h).t();
    let per_task = samples_per_task(b, h);
    let order = step_order(t, reverse);
    // dZ of every step, rows as `x`'s (sample, step); and each step's previous hidden
    // state in the same rows (zeros before the first step).
    let mut dz = vec![0f32; b * t * 4 * h];
    let mut h_prev = vec![0f32; b * t * h];
    let (mut dh_next, mut dc_next) = (vec![0f32; b * h], vec![0f32; b * h]);
    let mut dz_t = vec![0f32; b * 4 * h];
    for (position, &step) in order.iter().enumerate().rev() {
        let previous = position.checked_sub(1).map(|p| order[p]);
        let gates_t = &gates_v[step * b * 4 * h..(step + 1) * b * 4 * h];
        let cells_t = &cells_v[step * b * 2 * h..(step + 1) * b * 2 * h];
        // Each task takes a block of samples: their gates' gradients, then (read before it
        // is overwritten) the gradient their previous hidden states get, dZ · W_hᵀ.
        let tasks = dz_t.par_chunks_mut(per_task * 4 * h).zip(dc_next.par_chunks_mut(per_task * h));
        tasks.zip(dh_next.par_chunks_mut(per_task * h)).enumerate().for_each(|(task, ((d, dc_next), dh_next))| {
            let samples = d.chunks_exact_mut(4 * h).zip(dc_next.chunks_exact_mut(h)).zip(dh_next.chunks(h));
            for (j, ((d, dc_next), dh_s)) in samples.enumerate() {
                let s = task * per_task + j;
                let z = &gates_t[s * 4 * h..(s + 1) * 4 * h];
                let (i, f, o, g) = (&z[..h], &z[h..2 * h], &z[2 * h..3 * h], &z[3 * h..]);
                let tanh_c = &cells_t[s * 2 * h + h..(s + 1) * 2 * h];
                let c_prev = previous.map(|p| &cells_v[(p * b + s) * 2 * h..][..h]);
                let grad_s = &grad_v[(s * t + step) * h..][..h];
                let (di, rest) = d.split_at_mut(h);
                let (df, rest) = rest.split_at_mut(h);
                let (d_o, dg) = rest.split_at_mut(h);
                for k in 0..h {
                    let dh = grad_s[k] + dh_s[k];
                    let tc = tanh_c[k];
                    let dc = dh * o[k] * (1.0 - tc * tc) + dc_next[k];
                    dc_next[k] = dc * f[k];
                    di[k] = dc * g[k] * i[k] * (1.0 - i[k]);
                    df[k] = dc * c_prev.map_or(0.0, |p| p[k]) * f[k] * (1.0 - f[k]);
                    d_o[k] = dh * tc * o[k] * (1.0 - o[k]);
                    dg[k] = dc * i[k] * (1.0 - g[k] * g[k]);
                }
            }
            if previous.is_some() {
                gemm(dh_next, Mat::row_major(d, d.len() / (4 * h), 4 * h), w_h_t, false);
            }
        });
        for s in 0..b {
            dz[(s * t + step) * 4 * h..][..4 * h].copy_from_slice(&dz_t[s * 4 * h..(s + 1) * 4 * h]);
            if let Some(p) = previous {
                h_prev[(s * t + step) * h..][..h].copy_from_slice(&hidden_v[(s * t + p) * h..][..h]);
            }
        }
    }
    let dz = f32_tensor(dz, vec![b * t, 4 * h]);
    let x_flat = Flex::float_reshape(x, TensorShape::from(vec![b * t, c]));
    let h_prev = f32_tensor(h_prev, vec![b * t, h]);
    // dW = [x, h_prev]ᵀ · dZ over all steps at once; dx = dZ · W_xᵀ.
    let dw_x = matmul(Flex::float_swap_dims(x_flat, 0, 1), dz.clone());
    let dw_h = matmul(Flex::float_swap_dims(h_prev, 0, 1), dz.clone());
    let dweights = Flex::float_cat(vec![dw_x, dw_h], 0);
    let dbias = Flex::float_sum_dim(dz.clone(), 0);
    let dbias = Flex::float_reshape(dbias, TensorShape::from(vec![4 * h]));
    let dx = matmul(dz, Flex::float_swap_dims(rows(weights, 0, c, 4 * h), 0, 1));
    (Flex::float_reshape(dx, TensorShape::from(vec![b, t, c])), dweights, dbias)
}

impl<C: CheckpointStrategy> LstmOps for Autodiff<Flex, C> {
    fn lstm_steps(
        x: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        reverse: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Steps;

        impl Backward<Flex, 3> for Steps {
            /// The input, the weights, and what the forward pass saved.
            type State = (FlexTensor, FlexTensor, FlexTensor, FlexTensor, FlexTensor, bool);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                backward_on_flex(ops, grads, |(x, weights, hidden, gates, cells, reverse), grad| {
                    backward(x, weights, hidden, gates, cells, grad, reverse).into()
                });
            }
        }

        let nodes = [x.node(), weights.node(), bias.node()];
        let (x, weights, bias) = (x.into_primitive(), weights.into_primitive(), bias.into_primitive());
        match Steps.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (hidden, gates, cells) = forward(x.clone(), weights.clone(), bias, reverse, true);
                prep.finish((x, weights, hidden.clone(), gates, cells, reverse), hidden)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, weights, bias, reverse, false).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    #[test]
    fn inference_matches_burn_in_both_directions() {
        // Without autodiff the op keeps two steps' cells and one step's gates.
        use burn::nn::lstm::LstmConfig;
        let device = Device::flex();
        let m = LstmConfig::new(3, 6, true).init(&device);
        for reverse in [false, true] {
            let x = input([5, 7, 3], &device);
            let (seq, last) = lstm(&m, x.clone(), reverse);
            let timesteps = x.clone().iter_dim(1).enumerate();
            let (their_seq, state) = if reverse {
                m.forward_iter(timesteps.rev(), None, 5, 7, &device)
            } else {
                m.forward_iter(timesteps, None, 5, 7, &device)
            };
            assert_close(values(seq), values(their_seq), &format!("lstm inference reverse {reverse}"));
            assert_close(values(last), values(state.hidden), &format!("lstm inference reverse {reverse}: last"));
        }
    }

    #[test]
    fn lstm_matches_burn_in_both_directions_with_gradients() {
        use burn::nn::lstm::LstmConfig;
        let device = Device::flex().autodiff();
        // The last size splits the samples of a step over parallel tasks, the last one short.
        for (bias, batch, hidden) in [(true, 2, 5), (false, 2, 5), (true, 301, 64)] {
            let m = LstmConfig::new(3, hidden, bias).init(&device);
            for reverse in [false, true] {
                let x = input([batch, 4, 3], &device).require_grad();
                let (seq, last) = lstm(&m, x.clone(), reverse);
                let timesteps = x.clone().iter_dim(1).enumerate();
                let (their_seq, state) = if reverse {
                    m.forward_iter(timesteps.rev(), None, batch, 4, &device)
                } else {
                    m.forward_iter(timesteps, None, batch, 4, &device)
                };
                let what = format!("lstm bias {bias} batch {batch} reverse {reverse}");
                assert_close(values(seq.clone()), values(their_seq.clone()), &what);
                assert_close(values(last.clone()), values(state.hidden.clone()), &format!("{what}: last"));
                let ours = seq.powi_scalar(2).sum() + last.sum();
                let theirs = their_seq.powi_scalar(2).sum() + state.hidden.sum();
                let (g_ours, g_theirs) = (ours.backward(), theirs.backward());
                assert_close(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), &what);
                let gates = [&m.input_gate, m.forget_gate.as_ref().unwrap(), &m.output_gate, &m.cell_gate];
                for (n, gate) in gates.into_iter().enumerate() {
                    for transform in [&gate.input_transform, &gate.hidden_transform] {
                        let w = transform.weight.val();
                        let what = format!("{what}: gate {n} weight");
                        assert_close(values(w.grad(&g_ours).unwrap()), values(w.grad(&g_theirs).unwrap()), &what);
                        if let Some(b) = &transform.bias {
                            let (b, what) = (b.val(), format!("{what}: bias"));
                            assert_close(values(b.grad(&g_ours).unwrap()), values(b.grad(&g_theirs).unwrap()), &what);
                        }
                    }
                }
            }
        }
    }
}
