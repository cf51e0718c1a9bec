//! Shape inference and validation of block graphs: every defect becomes a `GraphError`
//! naming the block and node, never a panic.

use super::{Architecture, BlockGraph, GraphError, Node, Op, Shape, shape_text};

/// The most nodes one block may have.
pub const MAX_NODES: usize = 4096;
/// The largest integer an op parameter may hold (filters, kernel, stride, units, ...).
pub const MAX_OP_VALUE: u64 = 1 << 24;
/// The most values one node may produce per sample (256 MiB of `f32`).
pub const MAX_ELEMENTS: usize = 1 << 26;

/// The most trainable values one node may hold (1 GiB of `f32`).
pub const MAX_NODE_PARAMETERS: u64 = 1 << 28;
/// The most trainable values one model may hold (4 GiB of `f32`).
pub const MAX_MODEL_PARAMETERS: u64 = 1 << 30;

/// Values in a tensor of `shape`, if at most `MAX_ELEMENTS` (checked: plugins choose shapes).
fn elements(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| format!("{} holds more than {MAX_ELEMENTS} values per sample", shape_text(shape)))
}

/// Every integer parameter of `op` within `MAX_OP_VALUE`: bounds all shape arithmetic below.
fn op_in_bounds(op: &Op) -> Result<(), String> {
    fn check(name: &str, value: &serde_json::Value) -> Result<(), String> {
        match value {
            serde_json::Value::Number(n) if n.as_u64().is_some_and(|v| v > MAX_OP_VALUE) => {
                Err(format!("`{name}` = {n} is over the limit of {MAX_OP_VALUE}"))
            }
            serde_json::Value::Array(items) => items.iter().try_for_each(|v| check(name, v)),
            serde_json::Value::Object(fields) => fields.iter().try_for_each(|(k, v)| check(k, v)),
            _ => Ok(()),
        }
    }
    check("op", &serde_json::to_value(op).unwrap_or_default())
}

/// Infers the shape of every node of `block` (index 0 is the input) from the input shape.
pub fn infer_block(block: &BlockGraph, block_index: usize, input: &[usize]) -> Result<Vec<Shape>, GraphError> {
    let fail = |node: usize, op: &str, reason: String| GraphError {
        block: block.name.clone(),
        block_index,
        node,
        op: op.to_string(),
        reason,
    };
    if block.nodes.is_empty() {
        return Err(fail(0, "input", "the block has no nodes".into()));
    }
    if block.nodes.len() > MAX_NODES {
        return Err(fail(0, "input", format!("the block has {} nodes; at most {MAX_NODES}", block.nodes.len())));
    }
    if input.contains(&0) || input.is_empty() {
        return Err(fail(0, "input", format!("input shape {} is empty", shape_text(input))));
    }
    let mut shapes: Vec<Shape> = vec![input.to_vec()];
    for (i, node) in block.nodes.iter().enumerate() {
        let id = i + 1;
        let op = node.op.name();
        let inputs = node.input_ids(id);
        for &src in &inputs {
            if src >= id {
                let what = if src == id { "itself".to_string() } else { format!("node {src}") };
                return Err(fail(
                    id,
                    op,
                    format!(
                        "reads {what}, which is not computed before it (a cycle or forward reference; \
                     nodes may only read smaller ids)"
                    ),
                ));
            }
            if src > block.nodes.len() {
                return Err(fail(id, op, format!("reads node {src}, which does not exist")));
            }
        }
        let in_shapes: Vec<&Shape> = inputs.iter().map(|&s| &shapes[s]).collect();
        op_in_bounds(&node.op).map_err(|reason| fail(id, op, reason))?;
        let out = infer_node(node, &in_shapes).map_err(|reason| fail(id, op, reason))?;
        elements(&out).map_err(|reason| fail(id, op, format!("produces {reason}")))?;
        let parameters = node_parameters(&node.op, in_shapes[0]);
        if parameters > MAX_NODE_PARAMETERS {
            return Err(fail(id, op, format!("would hold {parameters} parameters; at most {MAX_NODE_PARAMETERS}")));
        }
        if out.contains(&0) || out.is_empty() {
            return Err(fail(
                id,
                op,
                format!("produces an empty tensor {} from input {}", shape_text(&out), shape_text(in_shapes[0])),
            ));
        }
        shapes.push(out);
    }
    Ok(shapes)
}

/// Validates a whole architecture; returns each block's output shape.
pub fn infer_architecture(arch: &Architecture, input: &[usize]) -> Result<Vec<Shape>, GraphError> {
    let mut current = input.to_vec();
    let mut outputs = Vec::with_capacity(arch.blocks.len());
    for (index, block) in arch.blocks.iter().enumerate() {
        let shapes = infer_block(block, index, &current)?;
        current = shapes.last().cloned().unwrap_or_default();
        outputs.push(current.clone());
    }
    Ok(outputs)
}

/// Trainable values of a model of `arch` on samples of shape `input` with `outputs` head
/// units, counted from the inferred shapes: nothing is allocated. Batch-norm running
/// statistics are not trainable and not counted.
pub fn parameter_count(arch: &Architecture, input: &[usize], outputs: usize) -> Result<u64, GraphError> {
    infer_model(arch, input, outputs).map(|(_, parameters)| parameters)
}

/// Every block's node shapes (as `infer_block`) and the model's parameter count (as
/// `parameter_count`), bounded by `MAX_MODEL_PARAMETERS`: all a model builder needs to
/// know before it allocates.
pub fn infer_model(arch: &Architecture, input: &[usize], outputs: usize) -> Result<(Vec<Vec<Shape>>, u64), GraphError> {
    let mut current = input.to_vec();
    let mut total: u64 = 0;
    let mut blocks = Vec::with_capacity(arch.blocks.len());
    for (index, block) in arch.blocks.iter().enumerate() {
        let shapes = infer_block(block, index, &current)?;
        for (i, node) in block.nodes.iter().enumerate() {
            total = total.saturating_add(node_parameters(&node.op, &shapes[node.input_ids(i + 1)[0]]));
        }
        current = shapes.last().cloned().unwrap_or_default();
        blocks.push(shapes);
    }
    let features = current.iter().map(|&d| d as u64).product::<u64>();
    total = total.saturating_add((features + 1).saturating_mul(outputs as u64));
    if total > MAX_MODEL_PARAMETERS {
        let last = arch.blocks.len().saturating_sub(1);
        return Err(GraphError {
            block: arch.blocks.last().map(|b| b.name.clone()).unwrap_or_default(),
            block_index: last,
            node: 0,
            op: "model".into(),
            reason: format!("the model would hold {total} parameters; at most {MAX_MODEL_PARAMETERS}"),
        });
    }
    Ok((blocks, total))
}

/// Trainable values of one node reading `x` (its first input), as burn's modules hold them.
fn node_parameters(op: &Op, x: &[usize]) -> u64 {
    let c = x.first().copied().unwrap_or(0) as u64;
    let product = |values: &[u64]| values.iter().fold(1u64, |n, &v| n.saturating_mul(v));
    let gates = |gates: u64, hidden: usize, bidirectional: bool| {
        let h = hidden as u64;
        // Per gate an input and a hidden transform, each with a bias.
        let one = gates.saturating_mul(product(&[c, h]) + product(&[h, h]) + 2 * h);
        if bidirectional { one.saturating_mul(2) } else { one }
    };
    match op {
        Op::Dense { units, bias } => product(&[c, *units as u64]) + if *bias { *units as u64 } else { 0 },
        Op::Conv1d { filters, kernel, groups, .. } => {
            product(&[*filters as u64, c / (*groups).max(1) as u64, *kernel as u64]) + *filters as u64
        }
        Op::Conv2d { filters, kernel, groups, .. } => {
            let taps = product(&[kernel.along(0) as u64, kernel.along(1) as u64]);
            product(&[*filters as u64, c / (*groups).max(1) as u64, taps]) + *filters as u64
        }
        Op::SeparableConv { filters, kernel, .. } => {
            let taps = (*kernel as u64).saturating_pow(x.len().saturating_sub(1) as u32);
            let depthwise = product(&[c, taps]) + c;
            depthwise + product(&[c, *filters as u64]) + *filters as u64
        }
        Op::BatchNorm | Op::LayerNorm => 2 * c,
        Op::Lstm { hidden, bidirectional, .. } => gates(4, *hidden, *bidirectional),
        Op::Gru { hidden, bidirectional, .. } => gates(3, *hidden, *bidirectional),
        Op::Rnn { hidden, bidirectional, .. } => gates(1, *hidden, *bidirectional),
        Op::SelfAttention { .. } => 4 * (product(&[c, c]) + c),
        Op::Embedding { vocab, dim } => product(&[*vocab as u64, *dim as u64]),
        _ => 0,
    }
}

fn need_rank(shape: &[usize], ranks: &[usize], layout: &str) -> Result<(), String> {
    if ranks.contains(&shape.len()) {
        Ok(())
    } else {
        Err(format!("expects {layout}, got rank {} shape {}", shape.len(), shape_text(shape)))
    }
}

fn nonzero(value: usize, what: &str) -> Result<usize, String> {
    if value == 0 { Err(format!("`{what}` must be at least 1")) } else { Ok(value) }
}

/// Output length of a sliding window over `len` positions.
fn window_out(len: usize, kernel: usize, stride: usize, pad: (usize, usize), dilation: usize) -> Result<usize, String> {
    let span = dilation * (kernel - 1) + 1;
    let padded = len + pad.0 + pad.1;
    if padded < span {
        return Err(format!(
            "window of {span} (kernel {kernel}, dilation {dilation}) does not fit in length {len} \
             with padding {pad:?}"
        ));
    }
    Ok((padded - span) / stride + 1)
}

fn infer_node(node: &Node, inputs: &[&Shape]) -> Result<Shape, String> {
    let op = &node.op;
    if op.is_merge() {
        if inputs.len() < 2 {
            return Err(format!("needs at least two inputs, got {}", inputs.len()));
        }
    } else if inputs.len() != 1 {
        return Err(format!("takes exactly one input, got {}", inputs.len()));
    }
    let x = inputs[0];
    Ok(match op {
        Op::Dense { units, .. } => {
            need_rank(x, &[1], "rank 1 [features] (add a flatten or global pool first)")?;
            vec![nonzero(*units, "units")?]
        }
        Op::Conv1d { filters, kernel, stride, padding, dilation, groups } => {
            need_rank(x, &[2], "rank 2 [channels, length]")?;
            nonzero(*filters, "filters")?;
            let (k, s, d, g) = (
                nonzero(*kernel, "kernel")?,
                nonzero(*stride, "stride")?,
                nonzero(*dilation, "dilation")?,
                nonzero(*groups, "groups")?,
            );
            check_groups(x[0], *filters, g)?;
            vec![*filters, window_out(x[1], k, s, padding.sides(k, d), d)?]
        }
        Op::Conv2d { filters, kernel, stride, padding, dilation, groups } => {
            need_rank(x, &[3], "rank 3 [channels, height, width]")?;
            nonzero(*filters, "filters")?;
            let (s, d, g) = (nonzero(*stride, "stride")?, nonzero(*dilation, "dilation")?, nonzero(*groups, "groups")?);
            check_groups(x[0], *filters, g)?;
            not_causal(*padding)?;
            let (kh, kw) = (nonzero(kernel.along(0), "kernel")?, nonzero(kernel.along(1), "kernel")?);
            vec![
                *filters,
                window_out(x[1], kh, s, padding.sides(kh, d), d)?,
                window_out(x[2], kw, s, padding.sides(kw, d), d)?,
            ]
        }
        Op::SeparableConv { filters, kernel, stride, padding, dilation } => {
            need_rank(x, &[2, 3], "rank 2 [channels, length] or rank 3 [channels, height, width]")?;
            nonzero(*filters, "filters")?;
            let (k, s, d) = (nonzero(*kernel, "kernel")?, nonzero(*stride, "stride")?, nonzero(*dilation, "dilation")?);
            not_causal(*padding)?;
            let mut out = vec![*filters];
            for &len in &x[1..] {
                out.push(window_out(len, k, s, padding.sides(k, d), d)?);
            }
            out
        }
        Op::BatchNorm | Op::LayerNorm | Op::Relu | Op::Gelu | Op::Swish | Op::Tanh | Op::Sigmoid | Op::Identity => {
            need_rank(x, &[1, 2, 3], "rank 1, 2 or 3")?;
            x.clone()
        }
        Op::LeakyRelu { slope } => {
            if !slope.is_finite() {
                return Err(format!("`slope` must be a finite number, got {slope}"));
            }
            x.clone()
        }
        Op::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("`rate` must be in [0, 1), got {rate}"));
            }
            x.clone()
        }
        Op::MaxPool { size, stride } | Op::AvgPool { size, stride } => {
            need_rank(x, &[2, 3], "rank 2 [channels, length] or rank 3 [channels, height, width]")?;
            let k = nonzero(*size, "size")?;
            let s = nonzero(stride.unwrap_or(k), "stride")?;
            let mut out = vec![x[0]];
            for &len in &x[1..] {
                out.push(window_out(len, k, s, (0, 0), 1)?);
            }
            out
        }
        Op::GlobalAvgPool | Op::GlobalMaxPool => {
            need_rank(x, &[2, 3], "rank 2 [channels, length] or rank 3 [channels, height, width]")?;
            vec![x[0]]
        }
        Op::Flatten => vec![elements(x)?],
        Op::MatchFeatures { units } => {
            need_rank(x, &[1], "rank 1 [features] (add a flatten or global pool first)")?;
            vec![nonzero(*units, "units")?]
        }
        Op::Reshape { shape } => {
            need_rank(shape, &[1, 2, 3], "a target shape of rank 1, 2 or 3")?;
            let (from, to) = (elements(x)?, elements(shape)?);
            if from != to {
                return Err(format!(
                    "cannot reshape {} ({from} values) to {} ({to} values)",
                    shape_text(x),
                    shape_text(shape)
                ));
            }
            shape.clone()
        }
        Op::Add | Op::Multiply => {
            if let Some(other) = inputs.iter().find(|s| **s != x) {
                return Err(format!("inputs must have one shape, got {} and {}", shape_text(x), shape_text(other)));
            }
            x.clone()
        }
        Op::Concat => {
            let mut channels = 0;
            for s in inputs {
                if s.len() != x.len() || s[1..] != x[1..] {
                    return Err(format!(
                        "inputs must agree on every axis but channels, got {} and {}",
                        shape_text(x),
                        shape_text(s)
                    ));
                }
                channels += s[0];
            }
            let mut out = x.clone();
            out[0] = channels;
            out
        }
        Op::Lstm { hidden, bidirectional, return_sequences }
        | Op::Gru { hidden, bidirectional, return_sequences }
        | Op::Rnn { hidden, bidirectional, return_sequences } => {
            need_rank(x, &[2], "rank 2 [features, steps]")?;
            let h = nonzero(*hidden, "hidden")? * if *bidirectional { 2 } else { 1 };
            if *return_sequences { vec![h, x[1]] } else { vec![h] }
        }
        Op::SelfAttention { heads, dropout } => {
            need_rank(x, &[2], "rank 2 [features, steps]")?;
            let heads = nonzero(*heads, "heads")?;
            if x[0] % heads != 0 {
                return Err(format!("{} features do not split into {heads} heads", x[0]));
            }
            if !(0.0..1.0).contains(dropout) {
                return Err(format!("`dropout` must be in [0, 1), got {dropout}"));
            }
            x.clone()
        }
        Op::Embedding { vocab, dim } => {
            need_rank(x, &[1], "rank 1 [steps] of token ids")?;
            nonzero(*vocab, "vocab")?;
            vec![nonzero(*dim, "dim")?, x[0]]
        }
        Op::PositionalEncoding { max_len } => {
            need_rank(x, &[2], "rank 2 [features, steps]")?;
            if x[1] > *max_len {
                return Err(format!("{} steps exceed `max_len` {max_len}", x[1]));
            }
            // Sines and cosines come in pairs of features.
            if x[0] % 2 != 0 {
                return Err(format!("needs an even number of features, got {}", x[0]));
            }
            x.clone()
        }
    })
}

fn not_causal(padding: crate::Padding) -> Result<(), String> {
    if padding == crate::Padding::Causal {
        return Err("causal padding is for conv1d over steps only".into());
    }
    Ok(())
}

fn check_groups(channels: usize, filters: usize, groups: usize) -> Result<(), String> {
    if channels % groups != 0 || filters % groups != 0 {
        return Err(format!("`groups` {groups} must divide both input channels ({channels}) and filters ({filters})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Padding;

    fn block(nodes: Vec<Node>) -> BlockGraph {
        BlockGraph { name: "b".into(), nodes }
    }

    fn conv(filters: usize, kernel: usize) -> Node {
        Node::new(Op::Conv1d { filters, kernel, stride: 1, padding: Padding::Same, dilation: 1, groups: 1 })
    }

    #[test]
    fn positional_encoding_needs_pairs_of_features() {
        let b = block(vec![Node::new(Op::PositionalEncoding { max_len: 64 })]);
        assert!(infer_block(&b, 0, &[4, 40]).is_ok());
        let err = infer_block(&b, 0, &[5, 40]).unwrap_err().to_string();
        assert!(err.contains("needs an even number of features, got 5"), "{err}");
    }

    #[test]
    fn chain_shapes() {
        let b = block(vec![
            conv(8, 5),
            Node::new(Op::MaxPool { size: 2, stride: None }),
            Node::new(Op::Flatten),
            Node::new(Op::Dense { units: 10, bias: true }),
        ]);
        let shapes = infer_block(&b, 0, &[1, 40]).unwrap();
        assert_eq!(shapes, vec![vec![1, 40], vec![8, 40], vec![8, 20], vec![160], vec![10]]);
    }

    #[test]
    fn residual_add_and_concat() {
        let b =
            block(vec![conv(4, 3), Node::with_inputs(Op::Add, vec![0, 1]), Node::with_inputs(Op::Concat, vec![1, 2])]);
        let shapes = infer_block(&b, 0, &[4, 10]).unwrap();
        assert_eq!(shapes[3], vec![8, 10]);
    }

    #[test]
    fn errors_name_block_and_node() {
        let cases: Vec<(Vec<Node>, &str)> = vec![
            (vec![Node::with_inputs(Op::Relu, vec![5])], "node 1 (relu): reads node 5, which is not computed"),
            (vec![Node::new(Op::Relu), Node::with_inputs(Op::Relu, vec![2])], "node 2 (relu): reads itself"),
            (
                vec![conv(8, 3), Node::with_inputs(Op::Add, vec![0, 1])],
                "node 2 (add): inputs must have one shape, got [4, 10] and [8, 10]",
            ),
            (vec![Node::new(Op::Dense { units: 3, bias: true })], "node 1 (dense): expects rank 1 [features]"),
            (
                vec![Node::new(Op::Conv1d {
                    filters: 8,
                    kernel: 30,
                    stride: 1,
                    padding: Padding::Valid,
                    dilation: 1,
                    groups: 1,
                })],
                "node 1 (conv1d): window of 30",
            ),
            (vec![Node::new(Op::MaxPool { size: 20, stride: None })], "node 1 (max_pool): window of 20"),
            (
                vec![Node::new(Op::Flatten), Node::new(Op::Dense { units: 0, bias: true })],
                "node 2 (dense): `units` must be at least 1",
            ),
        ];
        for (nodes, expected) in cases {
            let err = infer_block(&block(nodes), 2, &[4, 10]).map(|_| ()).unwrap_err().to_string();
            assert!(err.starts_with("block `b` (#2), "), "{err}");
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn zero_size_output_is_an_error() {
        let b = block(vec![Node::new(Op::Conv1d {
            filters: 2,
            kernel: 3,
            stride: 1,
            padding: Padding::Valid,
            dilation: 1,
            groups: 1,
        })]);
        let err = infer_block(&b, 0, &[1, 2]).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let err = infer_block(&block(vec![Node::new(Op::Relu)]), 0, &[3, 0]).unwrap_err().to_string();
        assert!(err.contains("input shape [3, 0] is empty"), "{err}");
    }

    #[test]
    fn nodes_parse_strictly() {
        let node: Node = serde_json::from_str(r#"{"op":"conv1d","filters":4,"kernel":3,"inputs":[0]}"#).unwrap();
        assert_eq!(node.inputs, vec![0]);
        let err = serde_json::from_str::<Node>(r#"{"op":"conv1d","filters":4,"kernal":3}"#).unwrap_err().to_string();
        assert!(err.contains("kernal"), "{err}");
        let err = serde_json::from_str::<Node>(r#"{"op":"conv9d"}"#).unwrap_err().to_string();
        assert!(err.contains("conv9d"), "{err}");
    }
}
