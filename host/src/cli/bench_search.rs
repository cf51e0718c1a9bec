//! `msh bench search`: searchers and early-stopping settings side by side on real
//! training. Each pair runs a workflow's search stage (the stages after it dropped) for
//! every seed, under a wall-time cap; printed per run and per pair are the minutes and
//! trials until the model selected by validation loss reached each target test accuracy,
//! that model's test accuracy when the cap ran out, and the epochs trained.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde_yaml_ng::Value;

use super::bench_engine::{Scratch, run_in_process};
use super::bench_searchers::median;

#[derive(Debug, Args)]
pub struct BenchSearchArgs {
    /// The workflow whose first search stage is measured.
    #[arg(long, default_value = "workflows/mnist1d.yaml")]
    workflow: PathBuf,
    /// Searchers: `workflow` (the workflow's own, with its settings), a built-in name or a
    /// `.wasm` file, each optionally with settings (`local-search:explore=0.5,beam_size=4`).
    #[arg(long = "searcher", default_values_t = ["workflow".to_string(), "random-search".to_string()])]
    searchers: Vec<String>,
    /// Early-stopping settings: `workflow` (as written in it), `off`, or a mode with the
    /// workflow's other settings (`asha`, `hyperband`, `median`).
    #[arg(long = "early-stopping", value_delimiter = ',', default_values_t = ["workflow".to_string(), "off".to_string()])]
    early_stopping: Vec<String>,
    /// Seeds: each pair runs once per seed.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3])]
    seeds: Vec<u64>,
    /// Wall time of each run, in minutes (replaces the workflow's).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Override the trial budget.
    #[arg(long)]
    trials: Option<u32>,
    /// Keep each run's directory under DIR (`msh report DIR/run-N`) instead of deleting it.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Test accuracies to reach.
    #[arg(long, value_delimiter = ',', default_values_t = [0.98, 0.99])]
    targets: Vec<f64>,
}

/// Makes `csv:REL` and similar paths of a workflow absolute, so a copy can live elsewhere.
fn absolute_paths(value: &mut Value, base: &Path) {
    let fix = |v: &mut Value| {
        if let Value::String(text) = v {
            let (prefix, path) = text.split_once(':').map_or(("", text.as_str()), |(p, rest)| (p, rest));
            if prefix.contains("//") || path.starts_with("//") {
                return; // a URL
            }
            let absolute = base.join(path);
            *text = if prefix.is_empty() {
                absolute.display().to_string()
            } else {
                format!("{prefix}:{}", absolute.display())
            };
        }
    };
    for (section, key) in [("data", "source"), ("data", "test"), ("trainers", "table")] {
        if let Some(v) = value.get_mut(section).and_then(|s| s.get_mut(key)) {
            fix(v);
        }
    }
}

/// The searcher section for `spec` (see `BenchSearchArgs::searchers`).
fn searcher_section(spec: &str, workflow: &Value) -> anyhow::Result<Value> {
    if spec == "workflow" {
        return Ok(workflow.get("searcher").cloned().unwrap_or_else(|| Value::String("local-search".into())));
    }
    let (plugin, settings) = spec.split_once(':').unwrap_or((spec, ""));
    let plugin = if plugin.ends_with(".wasm") {
        std::fs::canonicalize(plugin).with_context(|| format!("cannot find searcher {plugin}"))?.display().to_string()
    } else {
        plugin.to_string()
    };
    let mut config = serde_yaml_ng::Mapping::new();
    for kv in settings.split(',').filter(|kv| !kv.is_empty()) {
        let (key, value) = kv.split_once('=').with_context(|| format!("setting `{kv}` is not KEY=VALUE"))?;
        config.insert(key.into(), serde_yaml_ng::from_str(value).unwrap_or_else(|_| Value::String(value.into())));
    }
    let mut section = serde_yaml_ng::Mapping::new();
    section.insert("plugin".into(), plugin.into());
    section.insert("config".into(), Value::Mapping(config));
    Ok(Value::Mapping(section))
}

/// The workflow's early-stopping section changed per `setting`; `None`: off.
fn early_stopping_section(setting: &str, workflow: &Value) -> anyhow::Result<Option<Value>> {
    let written = workflow.get("early_stopping").cloned();
    Ok(match setting {
        "workflow" => written,
        "off" => None,
        "asha" | "median" | "hyperband" => {
            let mut section = match written {
                Some(Value::Mapping(m)) => m,
                _ => serde_yaml_ng::Mapping::new(),
            };
            if setting == "median" {
                section.remove("reduction_factor");
            }
            section.insert("mode".into(), setting.into());
            Some(Value::Mapping(section))
        }
        other => bail!("early stopping `{other}` is none of workflow, off, asha, hyperband, median"),
    })
}

/// One run's figures.
struct Outcome {
    /// Per target: (trials finished, minutes since the stage started) when the selected
    /// model first reached it.
    reached: Vec<Option<(usize, f64)>>,
    /// Test accuracy of the model selected when the run ended.
    best_test: Option<f64>,
    finished: usize,
    stopped: usize,
    epochs: u64,
    minutes: f64,
}

/// Replays the run's search trials in the order they finished: after each, the model
/// selected is the completed trial of lowest validation loss so far.
fn outcome(store: &msh_store::Store, stage: &str, targets: &[f64], seconds: f64) -> anyhow::Result<Outcome> {
    let trials: Vec<_> = store.trials()?.into_iter().filter(|t| t.stage == stage).collect();
    let started = store
        .stages()?
        .iter()
        .find(|s| s.name == stage)
        .and_then(|s| s.started)
        .unwrap_or_else(|| trials.iter().map(|t| t.created).fold(f64::INFINITY, f64::min));
    let mut finished: Vec<_> = trials.iter().filter(|t| t.status.is_finished() && t.finished.is_some()).collect();
    finished.sort_by(|a, b| a.finished.unwrap_or(0.0).total_cmp(&b.finished.unwrap_or(0.0)));
    let mut reached = vec![None; targets.len()];
    let mut selected: Option<&msh_store::TrialRecord> = None;
    for (i, trial) in finished.iter().enumerate() {
        let eligible = trial.status == msh_store::TrialStatus::Completed
            && !trial.is_combination()
            && trial.objective.is_some_and(f64::is_finite);
        if eligible && selected.is_none_or(|s| trial.score() < s.score()) {
            selected = Some(trial);
        }
        let accuracy = selected.and_then(|s| s.test.as_ref()?.accuracy).unwrap_or(0.0);
        for (slot, target) in reached.iter_mut().zip(targets) {
            if slot.is_none() && accuracy >= *target {
                *slot = Some((i + 1, (trial.finished.unwrap_or(started) - started) / 60.0));
            }
        }
    }
    Ok(Outcome {
        reached,
        best_test: selected.and_then(|s| s.test.as_ref()?.accuracy),
        finished: finished.len(),
        stopped: finished.iter().filter(|t| t.status == msh_store::TrialStatus::Stopped).count(),
        epochs: trials.iter().map(|t| u64::from(t.epochs)).sum(),
        minutes: seconds / 60.0,
    })
}

fn percent(accuracy: Option<f64>) -> String {
    accuracy.map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0))
}

/// `median (min-max)` of the minutes to a target; a run that missed counts as longer than
/// any that reached it, so a median among misses prints as `> cap`.
fn spread(values: &[Option<f64>], cap: f64) -> String {
    let mut all: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    let m = median(&mut all);
    let reached: Vec<f64> = values.iter().flatten().copied().collect();
    let range = match (reached.iter().copied().reduce(f64::min), reached.iter().copied().reduce(f64::max)) {
        (Some(lo), Some(hi)) if values.len() > 1 => format!(" ({lo:.2}-{hi:.2})"),
        _ => String::new(),
    };
    let missed = values.iter().filter(|v| v.is_none()).count();
    let missed = if missed > 0 { format!(" {missed} missed") } else { String::new() };
    if m.is_finite() { format!("{m:.2}{range}{missed}") } else { format!("> {cap:.1}{range}{missed}") }
}

pub fn search(args: BenchSearchArgs) -> anyhow::Result<std::process::ExitCode> {
    let path = &args.workflow;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = std::fs::canonicalize(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    let mut workflow: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    absolute_paths(&mut workflow, &base);
    // The first search stage, alone.
    let stages = workflow.get("stages").and_then(Value::as_mapping).cloned().unwrap_or_default();
    let (stage, section) = stages
        .iter()
        .find(|(_, s)| s.get("kind").and_then(Value::as_str) == Some("search"))
        .map(|(name, s)| (name.as_str().unwrap_or("search").to_string(), s.clone()))
        .with_context(|| format!("{} has no search stage", path.display()))?;
    let mut only = serde_yaml_ng::Mapping::new();
    only.insert(stage.clone().into(), section);
    workflow["stages"] = Value::Mapping(only);
    let cap_seconds = (args.minutes * 60.0).max(1.0);
    workflow["budget"]["wall_time"] = Value::from(cap_seconds.round() as u64);
    if let Some(trials) = args.trials {
        workflow["budget"]["trials"] = Value::from(trials);
    }
    let targets: Vec<String> = args.targets.iter().map(|t| format!("{:.1}%", t * 100.0)).collect();
    println!(
        "{}: stage `{stage}`, {} seed(s), up to {:.1} minutes each; per run: trials and minutes until the model \
         selected by validation loss reached {} test accuracy",
        path.display(),
        args.seeds.len(),
        cap_seconds / 60.0,
        targets.join(" / ")
    );
    let scratch = Scratch::new("search")?;
    let runs_dir = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => scratch.0.clone(),
    };
    let mut summary = Vec::new();
    for searcher in &args.searchers {
        for stopping in &args.early_stopping {
            let mut copy = workflow.clone();
            copy["searcher"] = searcher_section(searcher, &workflow)?;
            let map = copy.as_mapping_mut().context("a workflow is a mapping")?;
            match early_stopping_section(stopping, &workflow)? {
                Some(section) => {
                    map.insert("early_stopping".into(), section);
                }
                None => {
                    map.remove("early_stopping");
                }
            }
            let label = format!("{searcher} / early stopping {stopping}");
            let mut runs = Vec::new();
            for &seed in &args.seeds {
                copy["seed"] = Value::from(seed);
                let name = format!("run-{}", summary.len() * args.seeds.len() + runs.len());
                let file = scratch.0.join(format!("{name}.yaml"));
                std::fs::write(&file, serde_yaml_ng::to_string(&copy)?)?;
                let run_dir = runs_dir.join(&name);
                // A kept directory from an earlier benchmark would be resumed, not run anew.
                let _ = std::fs::remove_dir_all(&run_dir);
                let seconds = run_in_process(&file, &run_dir, None, |_| {})
                    .with_context(|| format!("{label}, seed {seed}"))?
                    .seconds;
                let store = msh_store::Store::open(&run_dir)?;
                let run = outcome(&store, &stage, &args.targets, seconds)?;
                drop(store);
                if args.keep.is_none() {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
                let reached: Vec<String> = run
                    .reached
                    .iter()
                    .map(|r| r.map_or_else(|| "never".into(), |(n, m)| format!("{n} / {m:.2} min")))
                    .collect();
                println!(
                    "  {label}, seed {seed} ({name}): {}; best {}; {} trials ({} stopped early), {} epochs, {:.1} min",
                    reached.join(", "),
                    percent(run.best_test),
                    run.finished,
                    run.stopped,
                    run.epochs,
                    run.minutes
                );
                runs.push(run);
            }
            summary.push((label, runs));
        }
    }
    println!();
    let mut header = format!("{:<44}", "searcher / early stopping");
    for target in &targets {
        header.push_str(&format!(" {:>24}", format!("min to {target}")));
    }
    println!("{header} {:>10} {:>8} {:>8}", "best test", "epochs", "trials");
    for (label, runs) in &summary {
        // A long label (a searcher with settings) gets a line of its own.
        let mut row = if label.len() > 44 { format!("{label}\n{:<44}", "") } else { format!("{label:<44}") };
        for k in 0..args.targets.len() {
            let minutes: Vec<Option<f64>> = runs.iter().map(|r| r.reached[k].map(|(_, m)| m)).collect();
            row.push_str(&format!(" {:>24}", spread(&minutes, cap_seconds / 60.0)));
        }
        let mut best: Vec<f64> = runs.iter().filter_map(|r| r.best_test).collect();
        let mut epochs: Vec<f64> = runs.iter().map(|r| r.epochs as f64).collect();
        let mut trials: Vec<f64> = runs.iter().map(|r| r.finished as f64).collect();
        let best = median(&mut best);
        println!(
            "{row} {:>10} {:>8.0} {:>8.0}",
            percent(best.is_finite().then_some(best)),
            median(&mut epochs),
            median(&mut trials)
        );
    }
    println!(
        "medians over the seeds, (fastest-slowest) among runs that reached the target; best test: the selected \
         model's when the run ended; epochs: trained by all trials"
    );
    Ok(std::process::ExitCode::SUCCESS)
}
