//! The default block pack: Model Search's block families (convolutions, pooling, ResNet,
//! Inception, flattening, dense variants, SVDF and recurrent layers) plus Transformer
//! encoder layers, NASNet-A style cells and a small ResNet as a whole-network block. 1-D
//! and 2-D where it makes sense.

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

fn skip_spec() -> ParamSpec {
    spec(
        "skip",
        "add the input to the output (through a projection when the widths differ)",
        ParamKind::Flag,
        Value::Flag(false),
    )
}

fn sequences_spec(keep: &str) -> ParamSpec {
    spec("return_sequences", &format!("keep every step (else {keep})"), ParamKind::Flag, Value::Flag(true))
}

/// SVDF's parameters; `units` spans `units` (Model Search's named variants span 32..1024,
/// its tunable one 50..100).
fn svdf_specs(units: (i64, i64, i64)) -> Vec<ParamSpec> {
    vec![
        int_spec("units", "output features per step", units.0, units.1, units.2),
        int_spec("memory", "steps each unit's time filter sees (the current one included)", 2, 32, 8),
        int_spec("rank", "feature filters per unit", 1, 3, 1),
        int_spec("projection", "a per-step dense projection to this width (0: none)", 0, 128, 0),
    ]
}

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
        info(
            "asymmetric_conv",
            "convolution with a 1-wide kernel along one axis (3x1 ... 7x1, 1x3 ... 1x7) keeping the \
             channels, batch norm, relu",
            vec![
                int_spec("length", "kernel length along `axis`", 2, 7, 3),
                spec(
                    "axis",
                    "the axis the kernel spans",
                    ParamKind::Choice(vec!["height".into(), "width".into()]),
                    Value::Text("height".into()),
                ),
            ],
            &[3],
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
        info(
            "downsample_flatten",
            "stride-2 convolutions doubling the channels (at most 1000), leaky relu, until one \
             position is left, then flatten",
            vec![],
            CONV_RANKS,
        ),
        info(
            "plate_reduction_flatten",
            "the mean of each channel over positions; features pass through",
            vec![],
            &[1, 2, 3],
        ),
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
                    "how the input rejoins: projected and added, concatenated, or cropped or \
                     zero-padded to the width and added (force_match)",
                    ParamKind::Choice(vec!["project".into(), "concat".into(), "force_match".into()]),
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
            "fully connected layer factored through a low rank; with skip, back to the input's \
             width and added to it",
            vec![
                int_spec("rank", "inner rank", 1, 128, 16),
                int_spec("units", "output features (without skip)", 8, 2048, 128),
                spec("skip", "keep the input's width and add the input", ParamKind::Flag, Value::Flag(false)),
            ],
            &[1, 2, 3],
        ),
        info(
            "bottleneck",
            "dense squeeze to a bottleneck and back to the input's width, added to the input \
             unless skip is off",
            vec![
                int_spec("bottleneck", "inner width", 8, 256, 32),
                spec("skip", "add the input", ParamKind::Flag, Value::Flag(true)),
            ],
            &[1, 2, 3],
        ),
        info("identity", "passes the input through", vec![], &[1, 2, 3]),
        info(
            "lstm",
            "LSTM over [features, steps]",
            vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
            &[2],
        ),
        info(
            "bilstm",
            "bidirectional LSTM over [features, steps]",
            vec![
                int_spec("hidden", "hidden units per direction", 4, 1024, 64),
                sequences_spec("the final states"),
                skip_spec(),
            ],
            &[2],
        ),
        info(
            "gru",
            "GRU over [features, steps]",
            vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
            &[2],
        ),
        info(
            "rnn",
            "plain tanh recurrent layer over [features, steps]",
            vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
            &[2],
        ),
        info(
            "svdf",
            "SVDF over [features, steps]: rank-limited feature filters, a causal time filter of \
             `memory` steps per unit, relu",
            svdf_specs((32, 1024, 64)),
            &[2],
        ),
        info(
            "tunable_svdf",
            "SVDF with Model Search's tunable ranges (50..100 units)",
            svdf_specs((50, 100, 64)),
            &[2],
        ),
        info(
            "recurrent_dense",
            "the same dense layer applied at every step of [features, steps], no activation",
            vec![int_spec("units", "output features per step", 8, 1024, 128), skip_spec()],
            &[2],
        ),
        info(
            "sequence_conv",
            "convolution over the steps of [features, steps], relu when the kernel spans steps",
            vec![
                int_spec("filters", "output features", 8, 512, 128),
                int_spec("kernel", "steps", 1, 7, 3),
                skip_spec(),
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

    /// Adds the block input `input` (`in_width` features or channels) to `out` (`out_width`),
    /// through a projection (dense, or a per-step 1x1 convolution) when they differ.
    fn skip(&mut self, input: u32, out: u32, in_width: i64, out_width: i64) -> u32 {
        let skip = if in_width == out_width {
            input
        } else if self.rank == 1 {
            self.g.op_from("dense", vec![int("units", out_width)], &[input])
        } else {
            self.conv(input, out_width, 1, 1, 1)
        };
        self.g.op_from("add", vec![], &[out, skip])
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
    let features: i64 = shape.iter().map(|&d| d as i64).product();
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
        "asymmetric_conv" => {
            let length = params.int("length", 3);
            let kernel = match params.text("axis", "height").as_str() {
                "height" => [length, 1],
                "width" => [1, length],
                other => return Err(format!("block `asymmetric_conv`: axis `{other}` is not height or width")),
            };
            n.g.op("conv2d", vec![int("filters", channels), ints("kernel", &kernel)]);
            n.g.op("batch_norm", vec![]);
            n.g.op("relu", vec![]);
        }
        "downsample_flatten" => {
            let (mut channels, mut spatial) = (channels, shape[1..].iter().map(|&d| d as i64).collect::<Vec<_>>());
            while spatial.iter().any(|&d| d > 1) {
                channels = (channels * 2).min(1000);
                // A kernel of 2 along every axis still longer than 1; stride 2 halves them.
                let kernel: Vec<i64> = spatial.iter().map(|&d| d.min(2)).collect();
                let op = if n.rank == 2 { "conv1d" } else { "conv2d" };
                let size = if n.rank == 2 { int("kernel", kernel[0]) } else { ints("kernel", &kernel) };
                n.g.op(op, vec![int("filters", channels), size, int("stride", 2), text("padding", "valid")]);
                n.g.op("leaky_relu", vec![]);
                spatial = spatial.iter().zip(&kernel).map(|(&d, &k)| (d - k) / 2 + 1).collect();
            }
            n.g.op("flatten", vec![]);
        }
        "plate_reduction_flatten" => {
            n.g.op(if n.rank == 1 { "identity" } else { "global_avg_pool" }, vec![]);
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
                "force_match" => {
                    let matched = n.g.op_from("match_features", vec![int("units", units)], &[input]);
                    n.g.op_from("add", vec![], &[hidden, matched]);
                }
                other => {
                    return Err(format!(
                        "block `dense_residual`: mode `{other}` is not project, concat or force_match"
                    ));
                }
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
            let input = n.g.last();
            let skip = params.flag("skip", false);
            let units = if skip { features } else { params.int("units", 128) };
            n.g.op("dense", vec![int("units", params.int("rank", 16)), flag("bias", false)]);
            n.g.op("dense", vec![int("units", units)]);
            let out = n.g.op("relu", vec![]);
            if skip {
                n.g.op_from("add", vec![], &[input, out]);
            }
        }
        "bottleneck" => {
            n.flatten_if_needed();
            let input = n.g.last();
            n.g.op("dense", vec![int("units", params.int("bottleneck", 32))]);
            n.g.op("relu", vec![]);
            let back = n.g.op("dense", vec![int("units", features)]);
            if params.flag("skip", true) {
                n.g.op_from("add", vec![], &[input, back]);
            }
        }
        "identity" => {
            n.g.op("identity", vec![]);
        }
        "lstm" | "bilstm" | "gru" | "rnn" => {
            let op = if name == "bilstm" { "lstm" } else { name };
            let hidden = params.int("hidden", 64);
            let sequences = params.flag("return_sequences", true);
            let out = n.g.op(
                op,
                vec![
                    int("hidden", hidden),
                    flag("bidirectional", name == "bilstm"),
                    flag("return_sequences", sequences),
                ],
            );
            if params.flag("skip", false) {
                if !sequences {
                    return Err(format!("block `{name}`: `skip` needs `return_sequences`"));
                }
                let width = if name == "bilstm" { 2 * hidden } else { hidden };
                n.skip(0, out, channels, width);
            }
        }
        "svdf" | "tunable_svdf" => {
            let (units, rank) = (params.int("units", 64), params.int("rank", 1));
            // The feature filters, then one grouped causal convolution: each unit's `rank`
            // filters, each filtered over `memory` steps, summed with the unit's bias.
            n.conv(0, units * rank, 1, 1, 1);
            let memory = params.int("memory", 8);
            n.g.op(
                "conv1d",
                vec![int("filters", units), int("kernel", memory), int("groups", units), text("padding", "causal")],
            );
            n.g.op("relu", vec![]);
            let projection = params.int("projection", 0);
            if projection > 0 {
                n.conv(n.g.last(), projection, 1, 1, 1);
            }
        }
        "recurrent_dense" => {
            let units = params.int("units", 128);
            let out = n.conv(0, units, 1, 1, 1);
            if params.flag("skip", false) {
                n.skip(0, out, channels, units);
            }
        }
        "sequence_conv" => {
            let filters = params.int("filters", 128);
            let kernel = params.int("kernel", 3);
            let mut out = n.conv(0, filters, kernel, 1, 1);
            if kernel > 1 {
                out = n.g.op("relu", vec![]);
            }
            if params.flag("skip", false) {
                n.skip(0, out, channels, filters);
            }
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
