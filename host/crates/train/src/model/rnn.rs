//! The plain recurrent layer (`rnn` op), `h_t = tanh(W x_t + b + U h_{t-1} + c)`, and
//! `scan`, the step loop it shares with the lowered LSTM and GRU.

use super::activation::tanh;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

#[derive(Config, Debug)]
pub struct RnnConfig {
    pub d_input: usize,
    pub d_hidden: usize,
}

impl RnnConfig {
    pub fn init(&self, device: &Device) -> Rnn {
        Rnn {
            input: LinearConfig::new(self.d_input, self.d_hidden).init(device),
            hidden: LinearConfig::new(self.d_hidden, self.d_hidden).init(device),
        }
    }
}

/// One direction: the input and the hidden transforms, each with a bias (as burn's LSTM
/// and GRU gates hold them, so parameter counts follow one rule).
#[derive(Module, Debug)]
pub struct Rnn {
    pub input: Linear,
    pub hidden: Linear,
}

/// Both directions; outputs are concatenated forward then reverse.
#[derive(Module, Debug)]
pub struct BiRnn {
    pub forward: Rnn,
    pub reverse: Rnn,
}

impl Rnn {
    /// Runs over `x` (`[B, T, C]`) from zero state, from the last step to the first when
    /// `reverse`. Returns every step's state (`[B, T, H]`, in input order) and the last one
    /// computed (`[B, H]`).
    pub fn forward(&self, x: Tensor<3>, reverse: bool) -> (Tensor<3>, Tensor<2>) {
        let [batch, steps, channels] = x.dims();
        let h = Tensor::<2>::zeros([batch, self.hidden.weight.dims()[0]], &x.device());
        scan(steps, reverse, h, |t, h| {
            let step = x.clone().narrow(1, t, 1).reshape([batch, channels]);
            let h = tanh(self.input.forward(step) + self.hidden.forward(h));
            (h.clone(), h)
        })
    }
}

/// The steps in the order a layer computes them: the last first when `reverse`.
pub(super) fn step_order(steps: usize, reverse: bool) -> Vec<usize> {
    if reverse { (0..steps).rev().collect() } else { (0..steps).collect() }
}

/// Runs a recurrence over steps `0..steps` (from the last when `reverse`): `step(t, state)`
/// gives the next state and step `t`'s output. Returns the outputs stacked in input order
/// (`[B, T, H]`) and the last one computed.
///
/// Each step slices its own input: a step sliced from a transform of all steps at once
/// costs, in the backward pass, a zero-filled gradient of all steps per step (1.3x slower
/// on a GRU).
pub(super) fn scan<S>(
    steps: usize,
    reverse: bool,
    mut state: S,
    mut step: impl FnMut(usize, S) -> (S, Tensor<2>),
) -> (Tensor<3>, Tensor<2>) {
    let mut outputs: Vec<Option<Tensor<2>>> = vec![None; steps];
    let mut last = None;
    for t in step_order(steps, reverse) {
        let output;
        (state, output) = step(t, state);
        outputs[t] = Some(output.clone());
        last = Some(output);
    }
    let outputs = outputs.into_iter().map(|o| o.expect("every step ran")).collect();
    (Tensor::stack(outputs, 1), last.expect("shape inference refuses empty sequences"))
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use super::*;
    use crate::model::testing::{assert_close, input, values};

    /// The recurrence written out with plain numbers for one sample.
    fn reference(m: &Rnn, x: &[f32], steps: usize, channels: usize, reverse: bool) -> Vec<f32> {
        let w = values(m.input.weight.val());
        let b = values(m.input.bias.as_ref().unwrap().val());
        let u = values(m.hidden.weight.val());
        let c = values(m.hidden.bias.as_ref().unwrap().val());
        let hidden = b.len();
        let mut h = vec![0f32; hidden];
        let mut out = vec![0f32; steps * hidden];
        let order: Vec<usize> = if reverse { (0..steps).rev().collect() } else { (0..steps).collect() };
        for t in order {
            let next: Vec<f32> = (0..hidden)
                .map(|j| {
                    let from_x: f32 = (0..channels).map(|i| x[t * channels + i] * w[i * hidden + j]).sum();
                    let from_h: f32 = (0..hidden).map(|i| h[i] * u[i * hidden + j]).sum();
                    (from_x + b[j] + from_h + c[j]).tanh()
                })
                .collect();
            out[t * hidden..(t + 1) * hidden].copy_from_slice(&next);
            h = next;
        }
        out
    }

    #[test]
    fn rnn_matches_the_recurrence_written_out() {
        let device = Device::flex();
        let m = RnnConfig::new(3, 4).init(&device);
        for reverse in [false, true] {
            let x = input([1, 5, 3], &device);
            let (seq, last) = m.forward(x.clone(), reverse);
            let expected = reference(&m, &values(x), 5, 3, reverse);
            assert_close(values(seq), expected.clone(), &format!("rnn reverse {reverse}"));
            let at = if reverse { 0 } else { 4 };
            assert_close(values(last), expected[at * 4..(at + 1) * 4].to_vec(), "last state");
        }
    }
}
