//! The GRU lowered like the LSTM (`lstm.rs`): per step one matmul of the input and one of
//! the hidden state for all three gates, the update and reset gates through one sigmoid,
//! and this crate's sigmoid and tanh.

use burn::nn::GateController;
use burn::nn::activation::Activation;
use burn::nn::gru::Gru;
use burn::prelude::*;

use super::activation::{sigmoid, tanh};
use super::rnn::scan;

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

#[cfg(test)]
mod tests {
    use burn::nn::gru::{BiGruConfig, GruConfig};
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    #[test]
    fn gru_matches_burn_in_both_directions_with_gradients() {
        let device = Device::flex().autodiff();
        for bias in [true, false] {
            // burn's bidirectional GRU runs its reverse module from the last step.
            let m = BiGruConfig::new(3, 5, bias).init(&device);
            let x = input([2, 4, 3], &device).require_grad();
            let (seq, last) = gru(&m.forward, x.clone(), false);
            let (seq_back, last_back) = gru(&m.reverse, x.clone(), true);
            let states: Tensor<3> = Tensor::stack(vec![last, last_back], 0);
            let ours = (Tensor::cat(vec![seq, seq_back], 2), states);
            let theirs = m.forward(x.clone(), None);
            let what = format!("bigru bias {bias}");
            assert_close(values(ours.0.clone()), values(theirs.0.clone()), &what);
            assert_close(values(ours.1.clone()), values(theirs.1.clone()), &format!("{what}: states"));
            let (g_ours, g_theirs) = (
                (ours.0.powi_scalar(2).sum() + ours.1.sum()).backward(),
                (theirs.0.powi_scalar(2).sum() + theirs.1.sum()).backward(),
            );
            assert_close(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), &what);
            for (i, gate) in [&m.forward.new_gate, &m.reverse.reset_gate].into_iter().enumerate() {
                let w = gate.hidden_transform.weight.val();
                let what = format!("{what}: weight {i}");
                assert_close(values(w.grad(&g_ours).unwrap()), values(w.grad(&g_theirs).unwrap()), &what);
            }
        }
        // A GRU that resets before the product goes through burn's own steps.
        let m = GruConfig::new(3, 4, true).with_reset_after(false).init(&device);
        let x = input([2, 5, 3], &device);
        let (seq, _) = gru(&m, x.clone(), false);
        assert_close(values(seq), values(m.forward(x, None)), "reset before");
    }
}
