//! `msh bench searchers`: searchers side by side on a metrics table. Each runs a table
//! search for every seed; printed are the median trials until an architecture of the
//! table's best fraction was found, the runs that never found one, and the share of
//! proposals rejected as repeats.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use super::bench_engine::{Scratch, run_in_process};

#[derive(Debug, Args)]
pub struct BenchSearchersArgs {
    /// The metrics table: an `arch` column of block names joined by `,`, and `loss` or
    /// `accuracy`.
    #[arg(long, default_value = "bench/mnist1d-table.csv")]
    table: PathBuf,
    /// Runs per searcher (seeds 1..=N).
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// Trials per run.
    #[arg(long, default_value_t = 100)]
    budget: u32,
    /// The target: any architecture among this fraction of the table's best (by loss).
    #[arg(long, default_value_t = 0.02)]
    top: f64,
    /// Searchers to compare: built-in names or `.wasm` files, each optionally with settings
    /// (`local-search:explore=0.5,beam_size=4`).
    #[arg(long = "searcher", default_values_t = ["local-search", "beam-search", "regularized-evolution", "harmonica", "linear-model", "random-search"].map(String::from))]
    searchers: Vec<String>,
}

/// The table's blocks, depth bounds, size, and the loss an architecture must reach.
struct TableFacts {
    blocks: Vec<String>,
    depths: (usize, usize),
    rows: usize,
    target_loss: f64,
}

fn table_facts(path: &Path, top: f64) -> anyhow::Result<TableFacts> {
    let table = msh_engine::Table::load(path)?;
    let mut blocks = std::collections::BTreeSet::new();
    let (mut min_depth, mut max_depth) = (usize::MAX, 0);
    let mut losses = Vec::new();
    for (key, loss) in table.losses() {
        let names: Vec<&str> = key.split(',').collect();
        min_depth = min_depth.min(names.len());
        max_depth = max_depth.max(names.len());
        blocks.extend(names.iter().map(|n| n.to_string()));
        losses.push(loss);
    }
    if losses.is_empty() {
        bail!("{}: the table has no rows", path.display());
    }
    losses.sort_by(f64::total_cmp);
    let k = ((losses.len() as f64 * top).ceil() as usize).clamp(1, losses.len());
    Ok(TableFacts {
        blocks: blocks.into_iter().collect(),
        depths: (min_depth, max_depth),
        rows: losses.len(),
        target_loss: losses[k - 1],
    })
}

/// One run: trials until the target (None: never), rejected proposals, trials finished.
struct Outcome {
    to_target: Option<usize>,
    rejected: u64,
    finished: usize,
    seconds: f64,
}

fn run_once(
    scratch: &Path,
    facts: &TableFacts,
    table: &Path,
    searcher: &str,
    seed: u64,
    budget: u32,
) -> anyhow::Result<Outcome> {
    // A workflow name: settings (`:`, `=`, `,`) and paths become `_`.
    let plain: String = searcher.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let name = format!("{plain}-{seed}");
    let dir = scratch.join(&name);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data.csv");
    std::fs::write(&data, "label,x\n0,1\n1,2\n0,3\n1,4\n")?;
    let workflow = dir.join("search.yaml");
    let (plugin, settings) = searcher.split_once(':').unwrap_or((searcher, ""));
    let plugin = if plugin.ends_with(".wasm") {
        std::fs::canonicalize(plugin).with_context(|| format!("cannot find searcher {plugin}"))?.display().to_string()
    } else {
        plugin.to_string()
    };
    let config: Vec<String> = settings
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| format!("{k}: '{v}'"))
                .with_context(|| format!("setting `{kv}` is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let text = format!(
        "name: {name}\nseed: {seed}\ndata: {{source: 'csv:{}'}}\n\
         space: {{packs: [], blocks: [{}], min_depth: {}, max_depth: {}}}\n\
         searcher: {{plugin: '{plugin}', config: {{{}}}}}\ntrainers: {{kind: table, table: '{}'}}\n\
         budget: {{trials: {budget}}}\nstages: {{search: {{kind: search}}}}\n",
        data.display(),
        facts.blocks.join(", "),
        facts.depths.0,
        facts.depths.1,
        config.join(", "),
        table.display(),
    );
    std::fs::write(&workflow, text)?;
    let run_dir = dir.join("run");
    let seconds = run_in_process(&workflow, &run_dir, Some(1), |_| {})?.seconds;
    let store = msh_store::Store::open(&run_dir)?;
    let mut trials: Vec<_> = store.trials()?.into_iter().filter(|t| t.status.is_finished()).collect();
    trials.sort_by_key(|t| t.id);
    let to_target = trials.iter().position(|t| t.objective.is_some_and(|o| o <= facts.target_loss)).map(|i| i + 1);
    let rejected = store.stages()?.iter().map(|s| s.rejected_proposals).sum();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome { to_target, rejected, finished: trials.len(), seconds })
}

/// The median (NaN for none); sorts `values`.
pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn searchers(args: BenchSearchersArgs) -> anyhow::Result<std::process::ExitCode> {
    let table =
        std::fs::canonicalize(&args.table).with_context(|| format!("cannot find table {}", args.table.display()))?;
    let facts = table_facts(&table, args.top)?;
    println!(
        "table {}: {} architectures over {} blocks, depth {}-{}; target: loss <= {:.4} (the best {:.1}%); {} seeds, {} trials each",
        args.table.display(),
        facts.rows,
        facts.blocks.len(),
        facts.depths.0,
        facts.depths.1,
        facts.target_loss,
        args.top * 100.0,
        args.seeds,
        args.budget
    );
    println!("{:<24} {:>16} {:>8} {:>12} {:>14}", "searcher", "median to target", "missed", "rejected", "ms per trial");
    let scratch = Scratch::new("searchers")?;
    for searcher in &args.searchers {
        let mut to_target = Vec::new();
        let (mut missed, mut rejected, mut proposals, mut seconds, mut trials) = (0, 0, 0, 0.0, 0);
        for seed in 1..=args.seeds {
            let outcome = run_once(&scratch.0, &facts, &table, searcher, seed, args.budget)
                .with_context(|| format!("searcher {searcher}, seed {seed}"))?;
            // A run that never reaches the target counts as needing more than its budget.
            to_target.push(outcome.to_target.map_or(f64::INFINITY, |n| n as f64));
            missed += usize::from(outcome.to_target.is_none());
            rejected += outcome.rejected;
            proposals += outcome.rejected + outcome.finished as u64;
            seconds += outcome.seconds;
            trials += outcome.finished;
        }
        let median = median(&mut to_target);
        println!(
            "{searcher:<24} {:>16} {:>8} {:>11.1}% {:>14.3}",
            if median.is_finite() { format!("{median:.1}") } else { format!("> {}", args.budget) },
            format!("{missed}/{}", args.seeds),
            100.0 * rejected as f64 / proposals.max(1) as f64,
            seconds * 1e3 / trials.max(1) as f64
        );
    }
    println!(
        "median to target: trials until one reached the target (a run that missed counts as more than the budget); \
         rejected: proposals that repeated a finished or running trial, not trained and not counted"
    );
    Ok(std::process::ExitCode::SUCCESS)
}
