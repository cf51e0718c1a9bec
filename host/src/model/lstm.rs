//! The LSTM lowered to fewer, larger tensor ops than burn-nn's.
//!
//! burn-nn's LSTM runs eight matmuls per time step (four gates, input and hidden apart)
//! and writes each step's output into a copy of the whole sequence. Here the gates'
//! weights are stacked once per forward, each step is one matmul over the step's input
//! beside the hidden state, and the outputs are stacked once at the end; autodiff derives
//! the gradients, so it runs on every backend.

use super::activation::{sigmoid, tanh};
use super::rnn::scan;
use burn::nn::GateController;
use burn::nn::activation::Activation;
use burn::nn::lstm::Lstm;
use burn::prelude::*;

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

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    #[test]
    fn lstm_matches_burn_in_both_directions_with_gradients() {
        use burn::nn::lstm::LstmConfig;
        let device = Device::flex().autodiff();
        for bias in [true, false] {
            let m = LstmConfig::new(3, 5, bias).init(&device);
            for reverse in [false, true] {
                let x = input([2, 4, 3], &device).require_grad();
                let (seq, last) = lstm(&m, x.clone(), reverse);
                let timesteps = x.clone().iter_dim(1).enumerate();
                let (their_seq, state) = if reverse {
                    m.forward_iter(timesteps.rev(), None, 2, 4, &device)
                } else {
                    m.forward_iter(timesteps, None, 2, 4, &device)
                };
                let what = format!("lstm bias {bias} reverse {reverse}");
                assert_close(values(seq.clone()), values(their_seq.clone()), &what);
                assert_close(values(last.clone()), values(state.hidden.clone()), &format!("{what}: last"));
                let ours = seq.powi_scalar(2).sum() + last.sum();
                let theirs = their_seq.powi_scalar(2).sum() + state.hidden.sum();
                let (g_ours, g_theirs) = (ours.backward(), theirs.backward());
                assert_close(values(x.grad(&g_ours).unwrap()), values(x.grad(&g_theirs).unwrap()), &what);
                let w = m.cell_gate.hidden_transform.weight.val();
                assert_close(values(w.grad(&g_ours).unwrap()), values(w.grad(&g_theirs).unwrap()), &what);
            }
        }
    }
}
