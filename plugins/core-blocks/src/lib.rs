//! The default block pack: Model Search's block families (convolutions, pooling, ResNet,
//! Inception, dense variants, recurrent layers) plus Transformer encoder layers, NASNet-A
//! style cells and a small ResNet as a whole-network block. 1-D and 2-D where it makes sense.

use msh_plugin_sdk::*;

struct CoreBlocks;

const CONV_RANKS: &[u8] = &[2, 3];

fn spec(name: &str, description: &str, kind: ParamKind, default: Value) -> ParamSpec {
    ParamSpec { name: name.into(), description: description.into(), kind, default }
}

fn int_spec(name: &str, description: &str, low: i64, high: i64, default: i64) -> ParamSpec {
    spec(name, description, ParamKind::IntRange((low, high)), Value::Int(default))
}

fn info(name: &str, description: &str, params: Vec<ParamSpec>, ranks: &[u8]) -> BlockInfo {
    BlockInfo { name: name.into(), description: description.into(), params, input_ranks: ranks.to_vec() }
}

const FIXED_DENSE: [i64; 5] = [64, 128, 256, 512, 1024];

fn catalogue() -> Vec<BlockInfo> {
    let kernel = || int_spec("kernel", "kernel size", 1, 7, 3);
    let mut blocks = vec![
        info("conv", "convolution keeping the channel count, batch norm, relu", vec![kernel()], CONV_RANKS),
        info(
            "fixed_conv",
            "convolution to a fixed channel count, batch norm, relu",
            vec![int_spec("filters", "output channels", 4, 512, 32), kernel()],
            CONV_RANKS,
        ),
        info(
            "increase_channels_conv",
            "convolution multiplying the channel count, batch norm, relu",
            vec![int_spec("factor", "channel multiplier", 2, 4, 2), kernel()],
            CONV_RANKS,
        ),
        info(
            "downsample_conv",
            "stride-2 convolution doubling the channels, batch norm, relu",
            vec![kernel()],
            CONV_RANKS,
        ),
        info(
            "dilated_conv",
            "dilated convolution keeping the channels, batch norm, relu",
            vec![int_spec("dilation", "spacing of kernel taps", 2, 4, 2), kernel()],
            CONV_RANKS,
        ),
        info("avg_pool", "average pooling", vec![int_spec("size", "window and stride", 2, 4, 2)], CONV_RANKS),
        info("max_pool", "max pooling", vec![int_spec("size", "window and stride", 2, 4, 2)], CONV_RANKS),
        info(
            "resnet",
            "residual block: two convolutions with batch norm, added to the input",
            vec![kernel()],
            CONV_RANKS,
        ),
        info(
            "dual_resnet",
            "residual block with two branches (kernels 3 and 5) added to the input",
            vec![],
            CONV_RANKS,
        ),
        info(
            "inception",
            "parallel 1, 3 and 5 convolutions (1x1-reduced), concatenated",
            vec![int_spec("filters", "channels per branch", 4, 256, 16)],
            CONV_RANKS,
        ),
        info("flatten", "flattens to [features]", vec![], &[1, 2, 3]),
        info("global_pool", "global average pooling to [channels]", vec![], CONV_RANKS),
        info(
            "dense",
            "fully connected layer with an activation (flattens first when needed)",
            vec![
                int_spec("units", "output features", 8, 2048, 128),
                spec(
                    "activation",
                    "non-linearity",
                    ParamKind::Choice(vec!["relu".into(), "gelu".into(), "tanh".into(), "swish".into()]),
                    Value::Text("relu".into()),
                ),
            ],
            &[1, 2, 3],
        ),
        info(
            "dense_residual",
            "fully connected layer with a residual: projection (add) or concat",
            vec![
                int_spec("units", "output features", 8, 2048, 128),
                spec(
                    "mode",
                    "how the input rejoins",
                    ParamKind::Choice(vec!["project".into(), "concat".into()]),
                    Value::Text("project".into()),
                ),
            ],
            &[1, 2, 3],
        ),
        info(
            "dense_bn",
            "fully connected layer, batch norm, relu",
            vec![int_spec("units", "output features", 8, 2048, 128)],
            &[1, 2, 3],
        ),
        info(
            "dense_pyramid",
            "three fully connected layers halving in width",
            vec![int_spec("units", "first width", 16, 2048, 256)],
            &[1, 2, 3],
        ),
        info(
            "low_rank_dense",
            "fully connected layer factored through a low rank",
            vec![int_spec("rank", "inner rank", 2, 128, 16), int_spec("units", "output features", 8, 2048, 128)],
            &[1, 2, 3],
        ),
        info(
            "bottleneck",
            "dense squeeze to a bottleneck and back, added to the input",
            vec![int_spec("bottleneck", "inner width", 8, 256, 32)],
            &[1, 2, 3],
        ),
        info("identity", "passes the input through", vec![], &[1, 2, 3]),
        info(
            "lstm",
            "LSTM over [features, steps]",
            vec![
                int_spec("hidden", "hidden units", 4, 512, 64),
                spec("return_sequences", "keep every step (else the last)", ParamKind::Flag, Value::Flag(true)),
            ],
            &[2],
        ),
        info(
            "bilstm",
            "bidirectional LSTM over [features, steps]",
            vec![
                int_spec("hidden", "hidden units per direction", 4, 512, 64),
                spec("return_sequences", "keep every step (else the final states)", ParamKind::Flag, Value::Flag(true)),
            ],
            &[2],
        ),
        info(
            "gru",
            "GRU over [features, steps]",
            vec![
                int_spec("hidden", "hidden units", 4, 512, 64),
                spec("return_sequences", "keep every step (else the last)", ParamKind::Flag, Value::Flag(true)),
            ],
            &[2],
        ),
        info(
            "transformer_encoder",
            "self-attention and a pointwise feed-forward, each with residual and layer norm",
            vec![
                int_spec("heads", "attention heads (must divide the features)", 1, 16, 4),
                int_spec("ff_multiplier", "feed-forward width / features", 1, 8, 2),
            ],
            &[2],
        ),
        info(
            "nasnet_normal",
            "NASNet-A style normal cell: separable convolutions combined pairwise",
            vec![],
            CONV_RANKS,
        ),
        info(
            "nasnet_reduction",
            "NASNet-A style reduction cell: stride-2 separable convolutions, doubled channels",
            vec![],
            CONV_RANKS,
        ),
        info(
            "small_resnet",
            "a whole small ResNet: stem, three residual stages, global pooling",
            vec![int_spec("width", "stem channels", 8, 64, 16)],
            CONV_RANKS,
        ),
    ];
    for width in FIXED_DENSE {
        blocks.push(info(
            &format!("fixed_dense_{width}"),
            &format!("fully connected layer of {width} units, relu"),
            vec![],
            &[1, 2, 3],
        ));
    }
    blocks
}

/// Helps build graphs of either spatial rank.
struct Net {
    g: GraphBuilder,
    rank: usize,
}

impl Net {
    fn conv(&mut self, from: u32, filters: i64, kernel: i64, stride: i64, dilation: i64) -> u32 {
        let op = if self.rank == 2 { "conv1d" } else { "conv2d" };
        let params =
            vec![int("filters", filters), int("kernel", kernel), int("stride", stride), int("dilation", dilation)];
        self.g.op_from(op, params, &[from])
    }

    fn conv_bn_relu(&mut self, from: u32, filters: i64, kernel: i64, stride: i64, dilation: i64) -> u32 {
        self.conv(from, filters, kernel, stride, dilation);
        self.g.op("batch_norm", vec![]);
        self.g.op("relu", vec![])
    }

    fn residual(&mut self, from: u32, channels: i64, kernel: i64) -> u32 {
        self.conv_bn_relu(from, channels, kernel, 1, 1);
        self.conv(self.g.last(), channels, kernel, 1, 1);
        let branch = self.g.op("batch_norm", vec![]);
        self.g.op_from("add", vec![], &[from, branch]);
        self.g.op("relu", vec![])
    }

    fn flatten_if_needed(&mut self) {
        if self.rank > 1 {
            self.g.op("flatten", vec![]);
        }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(block: &str, name: &str, value: T, low: T, high: T) -> Result<T, String> {
    if value < low || value > high {
        return Err(format!("block `{block}`: parameter `{name}` = {value} is outside {low}..={high}"));
    }
    Ok(value)
}

fn build(name: &str, shape: &[u32], params: &[Param]) -> Result<BlockGraph, String> {
    let infos = catalogue();
    let Some(info) = infos.iter().find(|b| b.name == name) else {
        let names: Vec<&str> = infos.iter().map(|b| b.name.as_str()).collect();
        return Err(format!("unknown block `{name}`; this pack has: {}", names.join(", ")));
    };
    if !info.input_ranks.contains(&(shape.len() as u8)) {
        return Err(format!("block `{name}` takes input ranks {:?}, got shape {shape:?}", info.input_ranks));
    }
    // Every declared integer parameter is range-checked against its spec.
    for spec in &info.params {
        if let ParamKind::IntRange((low, high)) = spec.kind {
            let default = if let Value::Int(d) = spec.default { d } else { low };
            check(name, &spec.name, params.int(&spec.name, default), low, high)?;
        }
    }
    let channels = shape[0] as i64;
    let mut n = Net { g: GraphBuilder::new(name), rank: shape.len() };
    let kernel = params.int("kernel", 3);
    match name {
        "conv" => {
            n.conv_bn_relu(0, channels, kernel, 1, 1);
        }
        "fixed_conv" => {
            n.conv_bn_relu(0, params.int("filters", 32), kernel, 1, 1);
        }
        "increase_channels_conv" => {
            n.conv_bn_relu(0, channels * params.int("factor", 2), kernel, 1, 1);
        }
        "downsample_conv" => {
            n.conv_bn_relu(0, channels * 2, kernel, 2, 1);
        }
        "dilated_conv" => {
            n.conv_bn_relu(0, channels, kernel, 1, params.int("dilation", 2));
        }
        "avg_pool" | "max_pool" => {
            n.g.op(name, vec![int("size", params.int("size", 2))]);
        }
        "resnet" => {
            n.residual(0, channels, kernel);
        }
        "dual_resnet" => {
            let mut ends = vec![0];
            for k in [3, 5] {
                n.conv_bn_relu(0, channels, k, 1, 1);
                n.conv(n.g.last(), channels, k, 1, 1);
                ends.push(n.g.op("batch_norm", vec![]));
            }
            n.g.op_from("add", vec![], &ends);
            n.g.op("relu", vec![]);
        }
        "inception" => {
            let filters = params.int("filters", 16);
            let one = n.conv_bn_relu(0, filters, 1, 1, 1);
            let reduce3 = n.conv_bn_relu(0, filters, 1, 1, 1);
            let three = n.conv_bn_relu(reduce3, filters, 3, 1, 1);
            let reduce5 = n.conv_bn_relu(0, filters, 1, 1, 1);
            let five = n.conv_bn_relu(reduce5, filters, 5, 1, 1);
            n.g.op_from("concat", vec![], &[one, three, five]);
        }
        "flatten" => {
            n.g.op("flatten", vec![]);
        }
        "global_pool" => {
            n.g.op("global_avg_pool", vec![]);
        }
        "dense" => {
            n.flatten_if_needed();
            n.g.op("dense", vec![int("units", params.int("units", 128))]);
            let activation = params.text("activation", "relu");
            if !["relu", "gelu", "tanh", "swish"].contains(&activation.as_str()) {
                return Err(format!("block `dense`: activation `{activation}` is not relu, gelu, tanh or swish"));
            }
            n.g.op(&activation, vec![]);
        }
        "dense_residual" => {
            n.flatten_if_needed();
            let input = n.g.last();
            let units = params.int("units", 128);
            n.g.op("dense", vec![int("units", units)]);
            let hidden = n.g.op("relu", vec![]);
            match params.text("mode", "project").as_str() {
                "project" => {
                    let skip = n.g.op_from("dense", vec![int("units", units), flag("bias", false)], &[input]);
                    n.g.op_from("add", vec![], &[hidden, skip]);
                }
                "concat" => {
                    n.g.op_from("concat", vec![], &[input, hidden]);
                }
                other => return Err(format!("block `dense_residual`: mode `{other}` is not project or concat")),
            }
        }
        "dense_bn" => {
            n.flatten_if_needed();
            n.g.op("dense", vec![int("units", params.int("units", 128))]);
            n.g.op("batch_norm", vec![]);
            n.g.op("relu", vec![]);
        }
        "dense_pyramid" => {
            n.flatten_if_needed();
            let units = params.int("units", 256);
            for width in [units, units / 2, (units / 4).max(1)] {
                n.g.op("dense", vec![int("units", width)]);
                n.g.op("relu", vec![]);
            }
        }
        "low_rank_dense" => {
            n.flatten_if_needed();
            n.g.op("dense", vec![int("units", params.int("rank", 16)), flag("bias", false)]);
            n.g.op("dense", vec![int("units", params.int("units", 128))]);
            n.g.op("relu", vec![]);
        }
        "bottleneck" => {
            n.flatten_if_needed();
            let input = n.g.last();
            let features: i64 = shape.iter().map(|&d| d as i64).product();
            n.g.op("dense", vec![int("units", params.int("bottleneck", 32))]);
            n.g.op("relu", vec![]);
            let back = n.g.op("dense", vec![int("units", features)]);
            n.g.op_from("add", vec![], &[input, back]);
        }
        "identity" => {
            n.g.op("identity", vec![]);
        }
        "lstm" | "bilstm" | "gru" => {
            let op = if name == "gru" { "gru" } else { "lstm" };
            n.g.op(
                op,
                vec![
                    int("hidden", params.int("hidden", 64)),
                    flag("bidirectional", name == "bilstm"),
                    flag("return_sequences", params.flag("return_sequences", true)),
                ],
            );
        }
        "transformer_encoder" => {
            let heads = params.int("heads", 4);
            if channels % heads != 0 {
                return Err(format!(
                    "block `transformer_encoder`: {channels} features do not split into {heads} heads"
                ));
            }
            let attention = n.g.op("self_attention", vec![int("heads", heads)]);
            n.g.op_from("add", vec![], &[0, attention]);
            let normed = n.g.op("layer_norm", vec![]);
            n.conv(normed, channels * params.int("ff_multiplier", 2), 1, 1, 1);
            n.g.op("gelu", vec![]);
            let ff = n.conv(n.g.last(), channels, 1, 1, 1);
            n.g.op_from("add", vec![], &[normed, ff]);
            n.g.op("layer_norm", vec![]);
        }
        "nasnet_normal" => {
            let a = n.g.op_from("separable_conv", vec![int("filters", channels), int("kernel", 3)], &[0]);
            let a = n.g.op_from("batch_norm", vec![], &[a]);
            let b = n.g.op_from("separable_conv", vec![int("filters", channels), int("kernel", 5)], &[0]);
            let b = n.g.op_from("batch_norm", vec![], &[b]);
            let left = n.g.op_from("add", vec![], &[a, 0]);
            let right = n.g.op_from("add", vec![], &[a, b]);
            n.g.op_from("concat", vec![], &[left, right]);
            n.g.op("relu", vec![]);
            n.conv(n.g.last(), channels, 1, 1, 1);
        }
        "nasnet_reduction" => {
            let a =
                n.g.op_from("separable_conv", vec![int("filters", channels), int("kernel", 3), int("stride", 2)], &[0]);
            let b =
                n.g.op_from("separable_conv", vec![int("filters", channels), int("kernel", 5), int("stride", 2)], &[0]);
            n.g.op_from("concat", vec![], &[a, b]);
            n.g.op("batch_norm", vec![]);
            n.g.op("relu", vec![]);
        }
        "small_resnet" => {
            let width = params.int("width", 16);
            let mut x = n.conv_bn_relu(0, width, 3, 1, 1);
            for stage in 0..3 {
                let channels = width << stage;
                if stage > 0 {
                    x = n.conv_bn_relu(x, channels, 3, 2, 1);
                }
                x = n.residual(x, channels, 3);
            }
            n.g.op_from("global_avg_pool", vec![], &[x]);
        }
        fixed if fixed.starts_with("fixed_dense_") => {
            n.flatten_if_needed();
            let units: i64 = fixed["fixed_dense_".len()..].parse().map_err(|_| format!("bad block name `{fixed}`"))?;
            n.g.op("dense", vec![int("units", units)]);
            n.g.op("relu", vec![]);
        }
        other => return Err(format!("block `{other}` is listed but has no builder")),
    }
    Ok(n.g.build())
}

impl Guest for CoreBlocks {
    fn blocks() -> Vec<BlockInfo> {
        catalogue()
    }

    fn build(name: String, input_shape: Vec<u32>, params: Vec<Param>) -> Result<BlockGraph, String> {
        build(&name, &input_shape, &params)
    }
}

export_block_pack!(CoreBlocks);
