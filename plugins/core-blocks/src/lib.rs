//! The default block pack: Model Search's block families (convolutions, pooling, ResNet,
//! Inception, flattening, dense variants, SVDF and recurrent layers) plus Transformer
//! encoder layers, NASNet-A style cells and a small ResNet as a whole-network block. 1-D
//! and 2-D where it makes sense.

use msh_plugin_sdk::ops::Padding;
use msh_plugin_sdk::prelude::*;

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

/// Helps build graphs of either spatial rank.
struct Net {
    g: GraphBuilder,
    rank: usize,
}

impl Net {
    fn conv(&mut self, from: u32, filters: i64, kernel: i64, stride: i64, dilation: i64) -> u32 {
        if self.rank == 2 {
            self.g.add_from(ops::conv1d(filters, kernel).stride(stride).dilation(dilation), &[from])
        } else {
            self.g.add_from(ops::conv2d(filters, kernel).stride(stride).dilation(dilation), &[from])
        }
    }

    fn conv_bn_relu(&mut self, from: u32, filters: i64, kernel: i64, stride: i64, dilation: i64) -> u32 {
        self.conv(from, filters, kernel, stride, dilation);
        self.g.add(ops::batch_norm());
        self.g.add(ops::relu())
    }

    fn residual(&mut self, from: u32, channels: i64, kernel: i64) -> u32 {
        self.conv_bn_relu(from, channels, kernel, 1, 1);
        self.conv(self.g.last(), channels, kernel, 1, 1);
        let branch = self.g.add(ops::batch_norm());
        self.g.add_from(ops::add(), &[from, branch]);
        self.g.add(ops::relu())
    }

    /// Adds the block input `input` (`in_width` features or channels) to `out` (`out_width`),
    /// through a projection (dense, or a per-step 1x1 convolution) when they differ.
    fn skip(&mut self, input: u32, out: u32, in_width: i64, out_width: i64) -> u32 {
        let skip = if in_width == out_width {
            input
        } else if self.rank == 1 {
            self.g.add_from(ops::dense(out_width), &[input])
        } else {
            self.conv(input, out_width, 1, 1, 1)
        };
        self.g.add_from(ops::add(), &[out, skip])
    }

    fn flatten_if_needed(&mut self) {
        if self.rank > 1 {
            self.g.add(ops::flatten());
        }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(block: &str, name: &str, value: T, low: T, high: T) -> Result<T, String> {
    if value < low || value > high {
        return Err(format!("block `{block}`: parameter `{name}` = {value} is outside {low}..={high}"));
    }
    Ok(value)
}

/// What a block's builder reads: the block's name, its input shape and parameters, the
/// input's channels (its first axis) and its feature count (all axes).
struct Input<'a> {
    name: &'a str,
    shape: &'a [u32],
    params: &'a [Param],
    channels: i64,
    features: i64,
}

/// One block of the pack: what `blocks()` lists and how `build` makes it.
struct Block {
    info: BlockInfo,
    build: fn(&mut Net, &Input) -> Result<(), String>,
}

fn pool(n: &mut Net, &Input { name, params, .. }: &Input) -> Result<(), String> {
    let size = params.int("size", 2);
    if name == "avg_pool" {
        n.g.add(ops::avg_pool(size));
    } else {
        n.g.add(ops::max_pool(size));
    }
    Ok(())
}

/// `lstm`, `bilstm` (an lstm both ways), `gru` and `rnn`.
fn recurrent(n: &mut Net, &Input { name, params, channels, .. }: &Input) -> Result<(), String> {
    let hidden = params.int("hidden", 64);
    let sequences = params.flag("return_sequences", true);
    let bidirectional = name == "bilstm";
    let out = match name {
        "gru" => n.g.add(ops::gru(hidden).bidirectional(bidirectional).return_sequences(sequences)),
        "rnn" => n.g.add(ops::rnn(hidden).bidirectional(bidirectional).return_sequences(sequences)),
        _ => n.g.add(ops::lstm(hidden).bidirectional(bidirectional).return_sequences(sequences)),
    };
    if params.flag("skip", false) {
        if !sequences {
            return Err(format!("block `{name}`: `skip` needs `return_sequences`"));
        }
        let width = if bidirectional { 2 * hidden } else { hidden };
        n.skip(0, out, channels, width);
    }
    Ok(())
}

fn svdf(n: &mut Net, &Input { params, .. }: &Input) -> Result<(), String> {
    let (units, rank) = (params.int("units", 64), params.int("rank", 1));
    // The feature filters, then one grouped causal convolution: each unit's `rank`
    // filters, each filtered over `memory` steps, summed with the unit's bias.
    n.conv(0, units * rank, 1, 1, 1);
    let memory = params.int("memory", 8);
    n.g.add(ops::conv1d(units, memory).groups(units).padding(Padding::Causal));
    n.g.add(ops::relu());
    let projection = params.int("projection", 0);
    if projection > 0 {
        n.conv(n.g.last(), projection, 1, 1, 1);
    }
    Ok(())
}

fn fixed_dense(n: &mut Net, &Input { name, .. }: &Input) -> Result<(), String> {
    n.flatten_if_needed();
    let units: i64 = name["fixed_dense_".len()..].parse().map_err(|_| format!("bad block name `{name}`"))?;
    n.g.add(ops::dense(units));
    n.g.add(ops::relu());
    Ok(())
}

/// Every block of the pack, each listed once with its builder.
fn table() -> Vec<Block> {
    let kernel = || int_spec("kernel", "kernel size", 1, 7, 3);
    let mut blocks = vec![
        Block {
            info: info("conv", "convolution keeping the channel count, batch norm, relu", vec![kernel()], CONV_RANKS),
            build: |n, &Input { channels, params, .. }| {
                let kernel = params.int("kernel", 3);
                n.conv_bn_relu(0, channels, kernel, 1, 1);
                Ok(())
            },
        },
        Block {
            info: info(
                "fixed_conv",
                "convolution to a fixed channel count, batch norm, relu",
                vec![int_spec("filters", "output channels", 4, 512, 32), kernel()],
                CONV_RANKS,
            ),
            build: |n, &Input { params, .. }| {
                let kernel = params.int("kernel", 3);
                n.conv_bn_relu(0, params.int("filters", 32), kernel, 1, 1);
                Ok(())
            },
        },
        Block {
            info: info(
                "increase_channels_conv",
                "convolution multiplying the channel count, batch norm, relu",
                vec![int_spec("factor", "channel multiplier", 2, 4, 2), kernel()],
                CONV_RANKS,
            ),
            build: |n, &Input { params, channels, .. }| {
                let kernel = params.int("kernel", 3);
                n.conv_bn_relu(0, channels * params.int("factor", 2), kernel, 1, 1);
                Ok(())
            },
        },
        Block {
            info: info(
                "downsample_conv",
                "stride-2 convolution doubling the channels, batch norm, relu",
                vec![kernel()],
                CONV_RANKS,
            ),
            build: |n, &Input { channels, params, .. }| {
                let kernel = params.int("kernel", 3);
                n.conv_bn_relu(0, channels * 2, kernel, 2, 1);
                Ok(())
            },
        },
        Block {
            info: info(
                "dilated_conv",
                "dilated convolution keeping the channels, batch norm, relu",
                vec![int_spec("dilation", "spacing of kernel taps", 2, 4, 2), kernel()],
                CONV_RANKS,
            ),
            build: |n, &Input { params, channels, .. }| {
                let kernel = params.int("kernel", 3);
                n.conv_bn_relu(0, channels, kernel, 1, params.int("dilation", 2));
                Ok(())
            },
        },
        Block {
            info: info(
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
            build: |n, &Input { params, channels, .. }| {
                let length = params.int("length", 3);
                let kernel = match params.text("axis", "height").as_str() {
                    "height" => [length, 1],
                    "width" => [1, length],
                    other => return Err(format!("block `asymmetric_conv`: axis `{other}` is not height or width")),
                };
                n.g.add(ops::conv2d(channels, kernel));
                n.g.add(ops::batch_norm());
                n.g.add(ops::relu());
                Ok(())
            },
        },
        Block {
            info: info("avg_pool", "average pooling", vec![int_spec("size", "window and stride", 2, 4, 2)], CONV_RANKS),
            build: pool,
        },
        Block {
            info: info("max_pool", "max pooling", vec![int_spec("size", "window and stride", 2, 4, 2)], CONV_RANKS),
            build: pool,
        },
        Block {
            info: info(
                "resnet",
                "residual block: two convolutions with batch norm, added to the input",
                vec![kernel()],
                CONV_RANKS,
            ),
            build: |n, &Input { channels, params, .. }| {
                let kernel = params.int("kernel", 3);
                n.residual(0, channels, kernel);
                Ok(())
            },
        },
        Block {
            info: info(
                "dual_resnet",
                "residual block with two branches (kernels 3 and 5) added to the input",
                vec![],
                CONV_RANKS,
            ),
            build: |n, &Input { channels, .. }| {
                let mut ends = vec![0];
                for k in [3, 5] {
                    n.conv_bn_relu(0, channels, k, 1, 1);
                    n.conv(n.g.last(), channels, k, 1, 1);
                    ends.push(n.g.add(ops::batch_norm()));
                }
                n.g.add_from(ops::add(), &ends);
                n.g.add(ops::relu());
                Ok(())
            },
        },
        Block {
            info: info(
                "inception",
                "parallel 1, 3 and 5 convolutions (1x1-reduced), concatenated",
                vec![int_spec("filters", "channels per branch", 4, 256, 16)],
                CONV_RANKS,
            ),
            build: |n, &Input { params, .. }| {
                let filters = params.int("filters", 16);
                let one = n.conv_bn_relu(0, filters, 1, 1, 1);
                let reduce3 = n.conv_bn_relu(0, filters, 1, 1, 1);
                let three = n.conv_bn_relu(reduce3, filters, 3, 1, 1);
                let reduce5 = n.conv_bn_relu(0, filters, 1, 1, 1);
                let five = n.conv_bn_relu(reduce5, filters, 5, 1, 1);
                n.g.add_from(ops::concat(), &[one, three, five]);
                Ok(())
            },
        },
        Block {
            info: info("flatten", "flattens to [features]", vec![], &[1, 2, 3]),
            build: |n, _| {
                n.g.add(ops::flatten());
                Ok(())
            },
        },
        Block {
            info: info(
                "downsample_flatten",
                "stride-2 convolutions doubling the channels (at most 1000), leaky relu, until one \
                 position is left, then flatten",
                vec![],
                CONV_RANKS,
            ),
            build: |n, &Input { shape, channels, .. }| {
                let (mut channels, mut spatial) = (channels, shape[1..].iter().map(|&d| d as i64).collect::<Vec<_>>());
                while spatial.iter().any(|&d| d > 1) {
                    channels = (channels * 2).min(1000);
                    // A kernel of 2 along every axis still longer than 1; stride 2 halves them.
                    let kernel: Vec<i64> = spatial.iter().map(|&d| d.min(2)).collect();
                    if n.rank == 2 {
                        n.g.add(ops::conv1d(channels, kernel[0]).stride(2).padding(Padding::Valid));
                    } else {
                        n.g.add(ops::conv2d(channels, [kernel[0], kernel[1]]).stride(2).padding(Padding::Valid));
                    }
                    n.g.add(ops::leaky_relu());
                    spatial = spatial.iter().zip(&kernel).map(|(&d, &k)| (d - k) / 2 + 1).collect();
                }
                n.g.add(ops::flatten());
                Ok(())
            },
        },
        Block {
            info: info(
                "plate_reduction_flatten",
                "the mean of each channel over positions; features pass through",
                vec![],
                &[1, 2, 3],
            ),
            build: |n, _| {
                if n.rank == 1 {
                    n.g.add(ops::identity())
                } else {
                    n.g.add(ops::global_avg_pool())
                };
                Ok(())
            },
        },
        Block {
            info: info("global_pool", "global average pooling to [channels]", vec![], CONV_RANKS),
            build: |n, _| {
                n.g.add(ops::global_avg_pool());
                Ok(())
            },
        },
        Block {
            info: info(
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
            build: |n, &Input { params, .. }| {
                n.flatten_if_needed();
                n.g.add(ops::dense(params.int("units", 128)));
                let activation = params.text("activation", "relu");
                if !["relu", "gelu", "tanh", "swish"].contains(&activation.as_str()) {
                    return Err(format!("block `dense`: activation `{activation}` is not relu, gelu, tanh or swish"));
                }
                match activation.as_str() {
                    "relu" => n.g.add(ops::relu()),
                    "gelu" => n.g.add(ops::gelu()),
                    "tanh" => n.g.add(ops::tanh()),
                    _ => n.g.add(ops::swish()),
                };
                Ok(())
            },
        },
        Block {
            info: info(
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
            build: |n, &Input { params, .. }| {
                n.flatten_if_needed();
                let input = n.g.last();
                let units = params.int("units", 128);
                n.g.add(ops::dense(units));
                let hidden = n.g.add(ops::relu());
                match params.text("mode", "project").as_str() {
                    "project" => {
                        let skip = n.g.add_from(ops::dense(units).bias(false), &[input]);
                        n.g.add_from(ops::add(), &[hidden, skip]);
                    }
                    "concat" => {
                        n.g.add_from(ops::concat(), &[input, hidden]);
                    }
                    "force_match" => {
                        let matched = n.g.add_from(ops::match_features(units), &[input]);
                        n.g.add_from(ops::add(), &[hidden, matched]);
                    }
                    other => {
                        return Err(format!(
                            "block `dense_residual`: mode `{other}` is not project, concat or force_match"
                        ));
                    }
                }
                Ok(())
            },
        },
        Block {
            info: info(
                "dense_bn",
                "fully connected layer, batch norm, relu",
                vec![int_spec("units", "output features", 8, 2048, 128)],
                &[1, 2, 3],
            ),
            build: |n, &Input { params, .. }| {
                n.flatten_if_needed();
                n.g.add(ops::dense(params.int("units", 128)));
                n.g.add(ops::batch_norm());
                n.g.add(ops::relu());
                Ok(())
            },
        },
        Block {
            info: info(
                "dense_pyramid",
                "three fully connected layers halving in width",
                vec![int_spec("units", "first width", 16, 2048, 256)],
                &[1, 2, 3],
            ),
            build: |n, &Input { params, .. }| {
                n.flatten_if_needed();
                let units = params.int("units", 256);
                for width in [units, units / 2, (units / 4).max(1)] {
                    n.g.add(ops::dense(width));
                    n.g.add(ops::relu());
                }
                Ok(())
            },
        },
        Block {
            info: info(
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
            build: |n, &Input { params, features, .. }| {
                n.flatten_if_needed();
                let input = n.g.last();
                let skip = params.flag("skip", false);
                let units = if skip { features } else { params.int("units", 128) };
                n.g.add(ops::dense(params.int("rank", 16)).bias(false));
                n.g.add(ops::dense(units));
                let out = n.g.add(ops::relu());
                if skip {
                    n.g.add_from(ops::add(), &[input, out]);
                }
                Ok(())
            },
        },
        Block {
            info: info(
                "bottleneck",
                "dense squeeze to a bottleneck and back to the input's width, added to the input \
                 unless skip is off",
                vec![
                    int_spec("bottleneck", "inner width", 8, 256, 32),
                    spec("skip", "add the input", ParamKind::Flag, Value::Flag(true)),
                ],
                &[1, 2, 3],
            ),
            build: |n, &Input { params, features, .. }| {
                n.flatten_if_needed();
                let input = n.g.last();
                n.g.add(ops::dense(params.int("bottleneck", 32)));
                n.g.add(ops::relu());
                let back = n.g.add(ops::dense(features));
                if params.flag("skip", true) {
                    n.g.add_from(ops::add(), &[input, back]);
                }
                Ok(())
            },
        },
        Block {
            info: info("identity", "passes the input through", vec![], &[1, 2, 3]),
            build: |n, _| {
                n.g.add(ops::identity());
                Ok(())
            },
        },
        Block {
            info: info(
                "lstm",
                "LSTM over [features, steps]",
                vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
                &[2],
            ),
            build: recurrent,
        },
        Block {
            info: info(
                "bilstm",
                "bidirectional LSTM over [features, steps]",
                vec![
                    int_spec("hidden", "hidden units per direction", 4, 1024, 64),
                    sequences_spec("the final states"),
                    skip_spec(),
                ],
                &[2],
            ),
            build: recurrent,
        },
        Block {
            info: info(
                "gru",
                "GRU over [features, steps]",
                vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
                &[2],
            ),
            build: recurrent,
        },
        Block {
            info: info(
                "rnn",
                "plain tanh recurrent layer over [features, steps]",
                vec![int_spec("hidden", "hidden units", 4, 1024, 64), sequences_spec("the last"), skip_spec()],
                &[2],
            ),
            build: recurrent,
        },
        Block {
            info: info(
                "svdf",
                "SVDF over [features, steps]: rank-limited feature filters, a causal time filter of \
                 `memory` steps per unit, relu",
                svdf_specs((32, 1024, 64)),
                &[2],
            ),
            build: svdf,
        },
        Block {
            info: info(
                "tunable_svdf",
                "SVDF with Model Search's tunable ranges (50..100 units)",
                svdf_specs((50, 100, 64)),
                &[2],
            ),
            build: svdf,
        },
        Block {
            info: info(
                "recurrent_dense",
                "the same dense layer applied at every step of [features, steps], no activation",
                vec![int_spec("units", "output features per step", 8, 1024, 128), skip_spec()],
                &[2],
            ),
            build: |n, &Input { params, channels, .. }| {
                let units = params.int("units", 128);
                let out = n.conv(0, units, 1, 1, 1);
                if params.flag("skip", false) {
                    n.skip(0, out, channels, units);
                }
                Ok(())
            },
        },
        Block {
            info: info(
                "sequence_conv",
                "convolution over the steps of [features, steps], relu when the kernel spans steps",
                vec![
                    int_spec("filters", "output features", 8, 512, 128),
                    int_spec("kernel", "steps", 1, 7, 3),
                    skip_spec(),
                ],
                &[2],
            ),
            build: |n, &Input { params, channels, .. }| {
                let filters = params.int("filters", 128);
                let kernel = params.int("kernel", 3);
                let mut out = n.conv(0, filters, kernel, 1, 1);
                if kernel > 1 {
                    out = n.g.add(ops::relu());
                }
                if params.flag("skip", false) {
                    n.skip(0, out, channels, filters);
                }
                Ok(())
            },
        },
        Block {
            info: info(
                "transformer_encoder",
                "self-attention and a pointwise feed-forward, each with residual and layer norm",
                vec![
                    int_spec("heads", "attention heads (must divide the features)", 1, 16, 4),
                    int_spec("ff_multiplier", "feed-forward width / features", 1, 8, 2),
                ],
                &[2],
            ),
            build: |n, &Input { params, channels, .. }| {
                let heads = params.int("heads", 4);
                if channels % heads != 0 {
                    return Err(format!(
                        "block `transformer_encoder`: {channels} features do not split into {heads} heads"
                    ));
                }
                let attention = n.g.add(ops::self_attention(heads));
                n.g.add_from(ops::add(), &[0, attention]);
                let normed = n.g.add(ops::layer_norm());
                n.conv(normed, channels * params.int("ff_multiplier", 2), 1, 1, 1);
                n.g.add(ops::gelu());
                let ff = n.conv(n.g.last(), channels, 1, 1, 1);
                n.g.add_from(ops::add(), &[normed, ff]);
                n.g.add(ops::layer_norm());
                Ok(())
            },
        },
        Block {
            info: info(
                "nasnet_normal",
                "NASNet-A style normal cell: separable convolutions combined pairwise",
                vec![],
                CONV_RANKS,
            ),
            build: |n, &Input { channels, .. }| {
                let a = n.g.add_from(ops::separable_conv(channels, 3), &[0]);
                let a = n.g.add_from(ops::batch_norm(), &[a]);
                let b = n.g.add_from(ops::separable_conv(channels, 5), &[0]);
                let b = n.g.add_from(ops::batch_norm(), &[b]);
                let left = n.g.add_from(ops::add(), &[a, 0]);
                let right = n.g.add_from(ops::add(), &[a, b]);
                n.g.add_from(ops::concat(), &[left, right]);
                n.g.add(ops::relu());
                n.conv(n.g.last(), channels, 1, 1, 1);
                Ok(())
            },
        },
        Block {
            info: info(
                "nasnet_reduction",
                "NASNet-A style reduction cell: stride-2 separable convolutions, doubled channels",
                vec![],
                CONV_RANKS,
            ),
            build: |n, &Input { channels, .. }| {
                let a = n.g.add_from(ops::separable_conv(channels, 3).stride(2), &[0]);
                let b = n.g.add_from(ops::separable_conv(channels, 5).stride(2), &[0]);
                n.g.add_from(ops::concat(), &[a, b]);
                n.g.add(ops::batch_norm());
                n.g.add(ops::relu());
                Ok(())
            },
        },
        Block {
            info: info(
                "small_resnet",
                "a whole small ResNet: stem, three residual stages, global pooling",
                vec![int_spec("width", "stem channels", 8, 64, 16)],
                CONV_RANKS,
            ),
            build: |n, &Input { params, .. }| {
                let width = params.int("width", 16);
                let mut x = n.conv_bn_relu(0, width, 3, 1, 1);
                for stage in 0..3 {
                    let channels = width << stage;
                    if stage > 0 {
                        x = n.conv_bn_relu(x, channels, 3, 2, 1);
                    }
                    x = n.residual(x, channels, 3);
                }
                n.g.add_from(ops::global_avg_pool(), &[x]);
                Ok(())
            },
        },
    ];
    for width in FIXED_DENSE {
        blocks.push(Block {
            info: info(
                &format!("fixed_dense_{width}"),
                &format!("fully connected layer of {width} units, relu"),
                vec![],
                &[1, 2, 3],
            ),
            build: fixed_dense,
        });
    }
    blocks
}

fn build(name: &str, shape: &[u32], params: &[Param]) -> Result<BlockGraph, String> {
    let blocks = table();
    let Some(block) = blocks.iter().find(|b| b.info.name == name) else {
        let names: Vec<&str> = blocks.iter().map(|b| b.info.name.as_str()).collect();
        return Err(format!("unknown block `{name}`; this pack has: {}", names.join(", ")));
    };
    let info = &block.info;
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
    let input =
        Input { name, shape, params, channels: shape[0] as i64, features: shape.iter().map(|&d| d as i64).product() };
    let mut n = Net { g: GraphBuilder::new(name), rank: shape.len() };
    (block.build)(&mut n, &input)?;
    Ok(n.g.build())
}

impl Guest for CoreBlocks {
    fn blocks() -> Vec<BlockInfo> {
        table().into_iter().map(|b| b.info).collect()
    }

    fn build(name: String, input_shape: Vec<u32>, params: Vec<Param>) -> Result<BlockGraph, String> {
        build(&name, &input_shape, &params)
    }
}

export_block_pack!(CoreBlocks);
