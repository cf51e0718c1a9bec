//! `msh blocks` and `msh plugin check`: what packs offer, and whether a plugin is sound.

use super::say;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use burn::prelude::Device;
use clap::{Args, Subcommand};
use msh_graph::{Architecture, infer_block};
use msh_plugin::{Limits, PackStore, Plugin, PluginHost, World};
use msh_store::{BlockRef, Metrics, TrialRecord, TrialStatus};
use msh_train::model::{Model, ModelSpec, Task};
use msh_vocab::space::{HparamRange, SearchContext, SearchSpace, SpaceBlock};

#[derive(Debug, Subcommand)]
pub enum BlocksCommand {
    /// List the blocks of the built-in pack (or of --pack FILE).
    List(PackArg),
    /// Show a block's parameters and the graph it builds for a sample input.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct PackArg {
    /// A block pack instead of the built-in core-blocks: a .wasm file or an installed pack
    /// (NAME or NAME@sha256:PREFIX).
    #[arg(long)]
    pack: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    name: String,
    #[command(flatten)]
    pack: PackArg,
    /// Sample input shape, e.g. 16,32 [default: one per accepted rank].
    #[arg(long, value_delimiter = ',')]
    input_shape: Option<Vec<usize>>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Validate a plugin: contract version, world, and that it works on sample inputs.
    Check { file: PathBuf },
}

fn pack(host: &PluginHost, arg: &PackArg) -> anyhow::Result<Plugin> {
    let plugin = match &arg.pack {
        Some(file) if std::path::Path::new(file).is_file() => host.load_file(file.as_ref())?,
        Some(installed) => PackStore::default_location().load(host, installed)?,
        None => host.embedded("core-blocks")?,
    };
    if plugin.world != World::BlockPack {
        bail!("{} is a {}, not a block pack", plugin.name, plugin.world);
    }
    Ok(plugin)
}

/// A representative input for each rank.
pub fn sample_shape(rank: u8) -> Vec<usize> {
    match rank {
        1 => vec![64],
        2 => vec![16, 32],
        _ => vec![16, 16, 16],
    }
}

fn rank_text(ranks: &[u8]) -> String {
    ranks.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",")
}

pub fn run_blocks(cmd: BlocksCommand) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new(Limits::default());
    match cmd {
        BlocksCommand::List(arg) => {
            let plugin = pack(&host, &arg)?;
            let blocks = plugin.blocks()?;
            say!("{} ({} blocks, msh:plugin@{})", plugin.name, blocks.len(), plugin.version);
            for b in blocks {
                say!("  {:<24} ranks {:<6} {}", b.name, rank_text(&b.input_ranks), b.description);
            }
        }
        BlocksCommand::Show(args) => {
            let plugin = pack(&host, &args.pack)?;
            let blocks = plugin.blocks()?;
            let Some(info) = blocks.iter().find(|b| b.name == args.name) else {
                bail!("{} has no block `{}` (see `msh blocks list`)", plugin.name, args.name);
            };
            say!("{}: {}", info.name, info.description);
            say!("input ranks: {}", rank_text(&info.input_ranks));
            for p in &info.params {
                say!(
                    "  {:<18} {:<28} default {:<8} {}",
                    p.name,
                    p.kind.to_string(),
                    p.default.to_string(),
                    p.description
                );
            }
            let shapes = match args.input_shape {
                Some(shape) => vec![shape],
                None => info.input_ranks.iter().map(|&r| sample_shape(r)).collect(),
            };
            for shape in shapes {
                let graph = plugin.build(&info.name, &shape, &[])?;
                let inferred = infer_block(&graph, 0, &shape)?;
                say!("\nfor input {shape:?}: {} parameters", block_parameters(&graph, &shape)?);
                for (i, node) in graph.nodes.iter().enumerate() {
                    let op = serde_json::to_string(&node.op)?;
                    say!(
                        "  {:>3} <- {:<10} {:<16} {op}",
                        i + 1,
                        format!("{:?}", node.input_ids(i + 1)),
                        format!("{:?}", inferred[i + 1])
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parameters of one block, built alone.
fn block_parameters(graph: &msh_graph::BlockGraph, shape: &[usize]) -> anyhow::Result<usize> {
    let spec = ModelSpec {
        architecture: Architecture { blocks: vec![graph.clone()] },
        input_shape: shape.to_vec(),
        task: Task::Regression,
    };
    let model = Model::new(&spec, &Device::flex())?;
    Ok(model
        .parameter_paths()
        .iter()
        .filter(|(p, _)| p.starts_with("blocks.") && !p.contains(".running_"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

/// A synthetic history for checking searchers: trials over `blocks`, some failed.
pub fn sample_history(blocks: &[String], trials: u64) -> Vec<TrialRecord> {
    (0..trials)
        .map(|id| {
            let architecture = (0..=(id % 3) as usize)
                .map(|d| BlockRef { name: blocks[(id as usize + d) % blocks.len()].clone(), params: vec![] })
                .collect();
            let failed = id % 7 == 6;
            let mut trial = TrialRecord::new(id, "search", architecture, vec![("learning_rate".into(), 1e-3)]);
            trial.status = if failed { TrialStatus::Failed } else { TrialStatus::Completed };
            trial.objective = (!failed).then(|| 1.0 / (1.0 + id as f64));
            trial.valid = (!failed).then(|| Metrics {
                samples: 100,
                loss: 1.0 / (1.0 + id as f64),
                accuracy: Some(0.5 + id as f64 / (2.0 * trials as f64)),
                r2: None,
                rmse: None,
            });
            trial.parameters = 1000 + id * 10;
            trial.parent = id.checked_sub(1);
            trial.epochs = 10;
            trial
        })
        .collect()
}

/// A synthetic space over `blocks` (no parameters, ranks unknown).
pub fn sample_space(blocks: Vec<String>) -> SearchSpace {
    SearchSpace {
        blocks: blocks
            .into_iter()
            .map(|name| SpaceBlock { name, description: String::new(), params: vec![], ranks: vec![] })
            .collect(),
        input_rank: 0,
        min_depth: 1,
        max_depth: 5,
        hparams: vec![HparamRange { name: "learning_rate".into(), low: 1e-4, high: 1e-2, log: true, choices: vec![] }],
    }
}

pub fn run_plugin(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    let PluginCommand::Check { file } = cmd;
    let host = PluginHost::new(Limits::default());
    let plugin = host.load_file(&file)?;
    say!("{}: {} built against msh:plugin@{} (sha256 {})", file.display(), plugin.world, plugin.version, plugin.sha256);
    let mut failures = 0;
    match plugin.world {
        World::BlockPack => {
            let blocks = plugin.blocks()?;
            if blocks.is_empty() {
                bail!("{}: the pack offers no blocks", file.display());
            }
            for b in &blocks {
                if b.input_ranks.is_empty() || b.input_ranks.iter().any(|r| !(1..=3).contains(r)) {
                    say!("  FAIL {}: input ranks {:?} must be among 1, 2, 3", b.name, b.input_ranks);
                    failures += 1;
                    continue;
                }
                for &rank in &b.input_ranks {
                    let shape = sample_shape(rank);
                    match plugin.build(&b.name, &shape, &[]) {
                        Ok(graph) => say!("  ok   {} on {shape:?}: {} nodes", b.name, graph.nodes.len()),
                        Err(e) => {
                            say!("  FAIL {e}");
                            failures += 1;
                        }
                    }
                }
            }
        }
        World::Searcher => {
            let blocks: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
            let space = sample_space(blocks.clone());
            let context = SearchContext { seed: 1, budget: 100, config: vec![] };
            for history_len in [0, 1, 20] {
                let history = sample_history(&blocks, history_len);
                match plugin.propose_once(&context, &space, &history, 4) {
                    Ok(p) => say!("  ok   propose with {history_len} trials of history: {} proposals", p.len()),
                    Err(e) => {
                        say!("  FAIL {e}");
                        failures += 1;
                    }
                }
            }
        }
    }
    if failures > 0 {
        bail!("{}: {failures} check(s) failed", file.display());
    }
    say!("all checks passed");
    Ok(ExitCode::SUCCESS)
}
