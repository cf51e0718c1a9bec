//! Convolutions and LSTMs lowered to fewer, larger tensor ops than burn-nn's.
//!
//! burn-flex's own convolution tiles im2col per output block and scatters each tile's
//! result into the output channel by channel, and its gradients go through generic
//! transposed convolutions; on the shapes searches produce (few channels, small spatial
//! sizes, batches of 32–256) that is several times slower than one matmul over the whole
//! patch matrix. Here the patches are strided slices of the padded input stacked once,
//! the product is one broadcast matmul per batch, and autodiff derives the gradients from
//! those ops (slice, stack, matmul), whose backward passes are plain copies and matmuls.
//! Grouped convolutions keep burn's implementation.
//!
//! burn-nn's LSTM runs eight matmuls per time step (four gates, input and hidden apart)
//! and writes each step's output into a copy of the whole sequence. Here the gates'
//! weights are stacked once per forward, each step is one matmul over the step's input
//! beside the hidden state, and the outputs are stacked once at the end.

use burn::nn::activation::Activation;
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::lstm::Lstm;
use burn::nn::{GateController, PaddingConfig1d, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Slice;
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::ops::PadMode;

/// `m.forward(x)`, computed as im2col + matmul where that applies.
pub fn conv1d(m: &Conv1d, x: Tensor<3>) -> Tensor<3> {
    let PaddingConfig1d::Explicit(left, right) = m.padding else { return m.forward(x) };
    if m.groups != 1 {
        return m.forward(x);
    }
    let [batch, channels, length] = x.dims();
    let weight = m.weight.val();
    let [filters, _, kernel] = weight.dims();
    let padded = length + left + right;
    let span = m.dilation * (kernel - 1) + 1;
    if padded < span {
        return m.forward(x);
    }
    let out_len = (padded - span) / m.stride + 1;
    let x = if left + right > 0 { x.pad([(left, right)], PadMode::Constant(0.0)) } else { x };
    let cols = if kernel == 1 && m.stride == 1 {
        x
    } else {
        let taps: Vec<Tensor<3>> = (0..kernel)
            .map(|k| {
                let start = (k * m.dilation) as isize;
                let end = start + ((out_len - 1) * m.stride + 1) as isize;
                x.clone().slice([Slice::full(), Slice::full(), Slice::new(start, Some(end), m.stride as isize)])
            })
            .collect();
        // [B, C, K, L] flattens to rows ordered (c, k): the weight's own [C, K] order.
        Tensor::stack::<4>(taps, 2).reshape([batch, channels * kernel, out_len])
    };
    let weight = weight.reshape([1, filters, channels * kernel]);
    let out = weight.matmul(cols);
    match &m.bias {
        Some(bias) => out + bias.val().reshape([1, filters, 1]),
        None => out,
    }
}

/// `m.forward(x)`, computed as im2col + matmul where that applies.
pub fn conv2d(m: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = m.padding else { return m.forward(x) };
    if m.groups != 1 {
        return m.forward(x);
    }
    let [batch, channels, height, width] = x.dims();
    let weight = m.weight.val();
    let [filters, _, kh, kw] = weight.dims();
    let (padded_h, padded_w) = (height + top + bottom, width + left + right);
    let span = |kernel: usize, axis: usize| m.dilation[axis] * (kernel - 1) + 1;
    if padded_h < span(kh, 0) || padded_w < span(kw, 1) {
        return m.forward(x);
    }
    let out_h = (padded_h - span(kh, 0)) / m.stride[0] + 1;
    let out_w = (padded_w - span(kw, 1)) / m.stride[1] + 1;
    let x =
        if top + bottom + left + right > 0 { x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0)) } else { x };
    let taps = kh * kw;
    let cols = if taps == 1 && m.stride == [1, 1] {
        x.reshape([batch, channels, out_h * out_w])
    } else {
        let axis = |k: usize, out: usize, dim: usize| {
            let start = (k * m.dilation[dim]) as isize;
            Slice::new(start, Some(start + ((out - 1) * m.stride[dim] + 1) as isize), m.stride[dim] as isize)
        };
        let slices: Vec<Tensor<4>> = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i, j)))
            .map(|(i, j)| x.clone().slice([Slice::full(), Slice::full(), axis(i, out_h, 0), axis(j, out_w, 1)]))
            .collect();
        // [B, C, KH·KW, H, W] flattens to rows ordered (c, i, j): the weight's own order.
        Tensor::stack::<5>(slices, 2).reshape([batch, channels * taps, out_h * out_w])
    };
    let weight = weight.reshape([1, filters, channels * taps]);
    let out = weight.matmul(cols).reshape([batch, filters, out_h, out_w]);
    match &m.bias {
        Some(bias) => out + bias.val().reshape([1, filters, 1, 1]),
        None => out,
    }
}

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
    let mut h = Tensor::<2>::zeros([batch, hidden], &device);
    let mut c = Tensor::<2>::zeros([batch, hidden], &device);
    let mut outputs: Vec<Option<Tensor<2>>> = vec![None; steps];
    let order: Box<dyn Iterator<Item = usize>> = if reverse { Box::new((0..steps).rev()) } else { Box::new(0..steps) };
    for t in order {
        let step = x.clone().narrow(1, t, 1).reshape([batch, x.dims()[2]]);
        let mut z = Tensor::cat(vec![step, h], 1).matmul(weights.clone());
        if let Some(bias) = &bias {
            z = z + bias.clone();
        }
        let [i, f, o, g]: [Tensor<2>; 4] = z.chunk(4, 1).try_into().expect("4H columns make four chunks");
        c = sigmoid(f) * c + sigmoid(i) * tanh(g);
        h = sigmoid(o) * tanh(c.clone());
        outputs[t] = Some(h.clone());
    }
    let outputs = outputs.into_iter().map(|o| o.expect("every step ran")).collect();
    (Tensor::stack(outputs, 1), h)
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
    use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
    use burn::prelude::*;

    use super::*;

    fn assert_close(ours: Vec<f32>, theirs: Vec<f32>, what: &str) {
        assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: {a} vs burn's {b}");
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn input<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        let len: usize = shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| ((i * 7919 % 97) as f32 / 48.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(data, shape), device)
    }

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
        let outputs = (conv1d(&m, x.clone()), m.forward(x.clone()));
        let what = format!("{config:?} on {shape:?}");
        compare(&what, &x, outputs, m.weight.val(), m.bias.as_ref().map(|b| b.val()));
    }

    fn check_2d(config: Conv2dConfig, shape: [usize; 4]) {
        let device = Device::flex().autodiff();
        let m = config.init(&device);
        let x = input(shape, &device).require_grad();
        let outputs = (conv2d(&m, x.clone()), m.forward(x.clone()));
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

    #[test]
    fn grouped_and_too_small_inputs_fall_back_to_burn() {
        check_1d(Conv1dConfig::new(4, 4, 3).with_groups(2).with_padding(PaddingConfig1d::Explicit(1, 1)), [2, 4, 9]);
        check_1d(Conv1dConfig::new(2, 3, 5).with_padding(PaddingConfig1d::Explicit(0, 0)), [1, 2, 5]);
    }
}
