//! `msh status`, `msh trials`, `msh best` and `msh predict`: reading a run's store.

use super::say;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use msh_engine::export_trial;
use msh_engine::workflow::ExportFormat;
use msh_store::{StageRecord, StageState, Stale, Store, TrialRecord, TrialStatus};
use msh_store::{best_trial, pareto_front};
use msh_train::data::{self, DataSpec, LabelColumn, Source};
use msh_train::model::Task;
use msh_train::{self as train, Backend, Predictor};
use serde_json::json;

pub(super) fn open(run: &Path) -> anyhow::Result<Store> {
    if !Store::exists(run) {
        bail!(
            "{} is not a run directory (no store/data.mdb); start one with `msh run WORKFLOW --run-dir {}`",
            run.display(),
            run.display()
        );
    }
    Ok(Store::open(run)?)
}

/// The name of the workflow a run runs (what exports record as their run).
pub(super) fn run_name(store: &Store) -> anyhow::Result<String> {
    Ok(store.run_meta()?.map_or_else(|| store.name().to_string(), |m| m.workflow_name))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    run: PathBuf,
    /// Also show the last N lines of the run's event log (times since the run began).
    #[arg(long, default_value_t = 0)]
    events: usize,
    #[arg(long)]
    json: bool,
    /// Redraw the status until the run ends.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// Seconds between redraws with --watch.
    #[arg(long, default_value_t = 2.0, requires = "watch")]
    interval: f64,
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.run)?;
    if !args.watch {
        show_status(&args, &store)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!("--interval must be a positive number of seconds, got {}", args.interval);
    }
    loop {
        // Home and clear on a terminal, so that each frame replaces the last; elsewhere (a
        // file, a pipe) frames follow one another as pages, each after a form feed.
        if std::io::stdout().is_terminal() {
            print!("\x1b[H\x1b[2J");
        } else {
            print!("\x0c");
        }
        if store.run_meta()?.is_none() {
            say!("{}: waiting for the run to start", args.run.display());
        } else if show_status(&args, &store)? {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(args.interval));
    }
}

/// What `msh status` counts: trials by status (stale ones apart from running), the
/// running ones, and the mean training time of the finished ones.
struct Counts {
    by_status: Vec<(&'static str, u64)>,
    running: Vec<(TrialRecord, Option<Stale>)>,
    finished: u64,
    mean_seconds: f64,
}

/// Counts from the run's tally and its stages' running trials; runs from before the tally
/// are read in full, one trial at a time.
fn count(store: &Store, stages: &[StageRecord]) -> anyhow::Result<Counts> {
    let (now, viewer) = (store.clock()?, msh_store::viewer());
    let mut by_status = [0u64; 6];
    let (mut finished, mut seconds) = (0u64, 0.0);
    let mut running = Vec::new();
    match store.tally()? {
        Some(tally) => {
            for stage in tally.stages.values() {
                by_status.iter_mut().zip(stage.counts).for_each(|(n, c)| *n += c);
                seconds += stage.finished_seconds;
            }
            finished = TrialStatus::ALL.iter().zip(by_status).filter(|(s, _)| s.is_finished()).map(|(_, n)| n).sum();
            for id in stages.iter().flat_map(|s| &s.in_flight) {
                let trial = store.trial(*id)?;
                let stale = msh_store::stale(&trial, now, &viewer);
                running.push((trial, stale));
            }
        }
        None => store.each_trial(|t| {
            by_status[TrialStatus::ALL.iter().position(|s| *s == t.status).expect("every status")] += 1;
            if t.status.is_finished() {
                finished += 1;
                seconds += t.train_seconds;
            }
            if t.status == TrialStatus::Running {
                let stale = msh_store::stale(&t, now, &viewer);
                running.push((t, stale));
            }
            Ok(())
        })?,
    }
    let stale = running.iter().filter(|(_, s)| s.is_some()).count() as u64;
    let mut counts: Vec<(&'static str, u64)> = TrialStatus::ALL.iter().map(|s| s.name()).zip(by_status).collect();
    if let Some(slot) = counts.iter_mut().find(|(name, _)| *name == "running") {
        slot.1 = slot.1.saturating_sub(stale);
    }
    counts.insert(counts.len() - 1, ("stale", stale));
    Ok(Counts { by_status: counts, running, finished, mean_seconds: seconds / finished.max(1) as f64 })
}

/// Prints the status once; returns whether every stage has ended (done or failed).
fn show_status(args: &StatusArgs, store: &Store) -> anyhow::Result<bool> {
    let meta = store.run_meta()?.with_context(|| format!("{}: the store has no run record", args.run.display()))?;
    let workflow: Option<msh_engine::workflow::Workflow> = serde_yaml_ng::from_str(&meta.workflow_text).ok();
    let stages = store.stages()?;
    let Counts { by_status: counts, running, finished, mean_seconds: mean } = count(store, &stages)?;
    let best = best_trial(store, None)?;
    let ended = StageRecord::run_ended(&stages);
    // ETA: trials left in running search stages, at the mean trial time, spread over the trainers.
    let trainers = workflow.as_ref().map_or(1, |w| w.trainers.count.max(1));
    let left: u64 = stages
        .iter()
        .filter(|s| s.kind == "search" && s.state != StageState::Done)
        .filter_map(|s| {
            let wf = workflow.as_ref()?;
            let budget = wf.budget_of(wf.stages.get(&s.name)?).trials? as u64;
            Some(budget.saturating_sub(s.finished_trials))
        })
        .sum();
    let eta = (left > 0 && finished > 0).then(|| left as f64 * mean / trainers as f64);
    let stale: Vec<_> = running
        .iter()
        .filter_map(|(t, s)| {
            s.as_ref()
                .map(|s| json!({"id": t.id, "worker": s.worker, "lease_until": s.lease_until, "reason": s.reason}))
        })
        .collect();

    if args.json {
        let value = json!({
            "workflow": meta.workflow_name,
            "store": store.name(),
            "stages": stages.iter().map(|s| json!({
                "name": s.name, "kind": s.kind, "state": s.state, "finished_trials": s.finished_trials,
                "running": s.running, "pending": s.pending.len(), "message": s.message,
                "rejected_proposals": s.rejected_proposals,
            })).collect::<Vec<_>>(),
            "trials": counts.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "best": best,
            "stale": stale,
            "eta_seconds": eta,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ended);
    }
    say!("run        {} ({}), workflow {}", meta.workflow_name, args.run.display(), meta.workflow_path.display());
    say!("store      {}", store.name());
    for s in &stages {
        let state = serde_json::to_value(s.state)?.as_str().unwrap_or("?").to_string();
        let trials = if s.kind == "search" {
            let rejected = match s.rejected_proposals {
                0 => String::new(),
                n => format!(", {n} proposals rejected"),
            };
            format!("{} finished, {} running, {} queued{rejected}", s.finished_trials, s.running, s.pending.len())
        } else {
            String::new()
        };
        say!("stage      {:<12} {:<8} {:<8} {trials}  {}", s.name, s.kind, state, s.message.as_deref().unwrap_or(""));
    }
    say!("trials     {}", counts.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", "));
    for (trial, stale) in &running {
        match stale {
            None => {
                say!("running    trial {} on {}", trial.id, trial.worker.as_deref().unwrap_or("an unknown trainer"))
            }
            Some(s) => say!(
                "stale      trial {}: {} is gone ({}; lease until {}), until a worker requeues it",
                trial.id,
                s.worker,
                s.reason,
                clock_time(s.lease_until - meta.created)
            ),
        }
    }
    if let Some(best) = &best {
        say!("best       {}", describe(best));
    }
    if let Some(eta) = eta {
        say!(
            "eta        about {:.0} min ({left} trials left at {mean:.0}s each on {trainers} trainer(s))",
            (eta / 60.0).ceil()
        );
    }
    for event in &store.last_events(args.events)? {
        let stage = event.stage.as_deref().map(|s| format!("[{s}] ")).unwrap_or_default();
        let trial = event.trial.map(|t| format!("trial {t}: ")).unwrap_or_default();
        say!("event      +{:.1}s {stage}{trial}{}", event.time - meta.created, event.message);
    }
    Ok(ended)
}

/// Seconds since the run began, as `+12.3s`.
fn clock_time(seconds: f64) -> String {
    format!("+{seconds:.1}s")
}

fn describe(t: &TrialRecord) -> String {
    let valid = t.valid.as_ref().map(|m| format!("valid {}", m.headline())).unwrap_or_default();
    let test = t.test.as_ref().map(|m| format!(", test {}", m.headline())).unwrap_or_default();
    format!("trial {} of `{}`: {valid}{test}; {} params; {}", t.id, t.stage, t.parameters, t.arch_key())
}

#[derive(Debug, Args)]
pub struct TrialsArgs {
    run: PathBuf,
    #[arg(long, conflicts_with = "table")]
    json: bool,
    /// Print finished single-model trials as a metrics table for the `table` trainer
    /// (`arch,loss,accuracy,test_accuracy,params,train_seconds`; failed ones with an
    /// infinite loss), e.g. to benchmark searchers on a measured space.
    #[arg(long)]
    table: bool,
}

/// A trial as `msh trials --json` prints it: the record, and whether it is stale.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    trial: &'a TrialRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<Stale>,
}

pub fn trials(args: TrialsArgs) -> anyhow::Result<ExitCode> {
    use serde::ser::{SerializeSeq, Serializer};
    use std::io::Write;

    let store = open(&args.run)?;
    let (now, viewer) = (store.clock()?, msh_store::viewer());
    let created = store.run_meta()?.map_or(0.0, |m| m.created);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Trials are read and printed one at a time: a run of any size prints in bounded memory.
    // The store's callback takes store errors; an error of the output is kept until it returns.
    let mut failed: Option<anyhow::Error> = None;
    if args.json {
        let mut json = serde_json::Serializer::pretty(&mut out);
        let mut seq = json.serialize_seq(None)?;
        store.each_trial(|t| {
            if failed.is_none() {
                let stale = msh_store::stale(&t, now, &viewer);
                failed = seq.serialize_element(&Shown { trial: &t, stale }).err().map(Into::into);
            }
            Ok(())
        })?;
        seq.end()?;
        writeln!(out)?;
    } else if args.table {
        let mut table = csv::Writer::from_writer(&mut out);
        table.write_record(["arch", "loss", "accuracy", "test_accuracy", "params", "train_seconds"])?;
        let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        store.each_trial(|t| {
            if failed.is_some() || !(t.status.is_finished() && t.members.is_empty()) {
                return Ok(());
            }
            let completed = t.status == TrialStatus::Completed;
            let valid = t.valid.as_ref().filter(|_| completed);
            failed = table
                .write_record([
                    t.arch_key(),
                    if completed { number(t.objective) } else { "inf".into() },
                    number(valid.and_then(|m| m.accuracy)),
                    number(t.test.as_ref().filter(|_| completed).and_then(|m| m.accuracy)),
                    t.parameters.to_string(),
                    format!("{:.3}", t.train_seconds),
                ])
                .err()
                .map(Into::into);
            Ok(())
        })?;
        table.flush()?;
    } else {
        writeln!(
            out,
            "{:>5} {:<10} {:<9} {:>9} {:>9} {:>9} {:>7} {:>6}  architecture",
            "id", "stage", "status", "valid", "test", "params", "secs", "parent"
        )?;
        let headline = |m: &Option<train::Metrics>| {
            m.as_ref().map(|m| format!("{:.4}", m.accuracy.or(m.r2).unwrap_or(m.loss))).unwrap_or_else(|| "-".into())
        };
        store.each_trial(|t| {
            if failed.is_some() {
                return Ok(());
            }
            let stale = msh_store::stale(&t, now, &viewer);
            let note = match (&stale, &t.error) {
                (Some(s), _) => format!(
                    "  ({} is gone: {}, lease until {})",
                    s.worker,
                    s.reason,
                    clock_time(s.lease_until - created)
                ),
                (None, Some(e)) => format!("  ({e})"),
                (None, None) => String::new(),
            };
            let line = format!(
                "{:>5} {:<10} {:<9} {:>9} {:>9} {:>9} {:>7.1} {:>6}  {}{note}",
                t.id,
                t.stage,
                if stale.is_some() { "stale" } else { t.status.name() },
                headline(&t.valid),
                headline(&t.test),
                t.parameters,
                t.train_seconds,
                t.parent.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                t.arch_key(),
            );
            failed = writeln!(out, "{}", super::printable(&line)).err().map(Into::into);
            Ok(())
        })?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct BestArgs {
    run: PathBuf,
    /// The best of this stage only (e.g. an ensemble or distill stage).
    #[arg(long)]
    stage: Option<String>,
    /// List the Pareto front of validation loss, parameters and latency instead.
    #[arg(long, conflicts_with_all = ["stage", "export"])]
    pareto: bool,
    /// Write the model here: model.json, weights.bpk, architecture.yaml (msh's format),
    /// model.onnx (ONNX) and trial.json.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Which files `--export` writes.
    #[arg(long, value_enum, default_value_t = ExportFormat::All, requires = "export")]
    format: ExportFormat,
    #[arg(long)]
    json: bool,
}

pub fn best(args: BestArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.run)?;
    if args.pareto {
        let front = pareto_front(&store)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&front)?);
        } else {
            for t in &front {
                let latency = t.latency_ms.map(|l| format!("{l:.3} ms/sample")).unwrap_or_else(|| "-".into());
                say!("{}; valid loss {:.4}; {latency}", describe(t), t.objective.unwrap_or(f64::NAN));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(best) = best_trial(&store, args.stage.as_deref())? else {
        match &args.stage {
            Some(stage) => bail!("{}: stage `{stage}` has no completed trial", args.run.display()),
            None => bail!("{}: no completed trial yet", args.run.display()),
        }
    };
    if let Some(dest) = &args.export {
        export_trial(&args.run, &run_name(&store)?, &best, dest, args.format)?;
        eprintln!("exported trial {} to {}", best.id, dest.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&best)?);
    } else {
        say!("{}", describe(&best));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run directory (its best trial or ensemble), or an exported or saved model or
    /// ensemble directory.
    model: PathBuf,
    /// Samples: csv:PATH, cifar10:DIR, images:DIR, npy:X.npy,Y.npy or npz:FILE.npz[:X,Y]
    /// (labels, when present, give metrics).
    #[arg(long)]
    data: Source,
    /// CSV label column, by name or 0-based index [default: label, target, else 0].
    #[arg(long)]
    label: Option<LabelColumn>,
    /// The CSV has no header row.
    #[arg(long)]
    no_header: bool,
    /// Write one prediction per sample (CSV) here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// With `--output`, also write each class's probability (columns `p_<class>`).
    #[arg(long, requires = "output")]
    probabilities: bool,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    #[arg(long)]
    json: bool,
}

pub fn predict(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let dir = if Store::exists(&args.model) {
        let store = open(&args.model)?;
        let best =
            best_trial(&store, None)?.with_context(|| format!("{}: no completed trial yet", args.model.display()))?;
        let checkpoint = best.checkpoint.with_context(|| format!("trial {} has no model (table trainer)", best.id))?;
        // An ensemble's directory holds `ensemble.json`; a trial's, its checkpoint.
        args.model.join(checkpoint)
    } else {
        args.model.clone()
    };
    let device = args.backend.select()?;
    let predictor = Predictor::load(&dir, &device.device)?;
    let meta = &predictor.meta;
    let spec = DataSpec { label: args.label.clone(), header: !args.no_header, ..DataSpec::new(args.data.clone()) };
    let mut samples = data::read(&args.data, &spec).with_context(|| format!("cannot load data {}", args.data))?;
    let expected: usize = meta.spec.input_shape.iter().product();
    if samples.sample_len() != expected {
        bail!(
            "{}: samples have {} values, the model expects {:?} ({expected})",
            args.data,
            samples.sample_len(),
            meta.spec.input_shape
        );
    }
    samples.shape = meta.spec.input_shape.clone();
    let task = meta.spec.task;
    meta.normalization.apply(&mut samples, task);
    let outputs = predictor.predict(&samples.features, samples.sample_len());
    let metrics = train::metrics_of(&outputs, &samples, task, &meta.normalization);
    let predictions: Vec<String> = match task {
        Task::Classification { classes } => outputs
            .chunks(classes)
            .map(|row| {
                let class = train::argmax(row);
                meta.class_names.get(class).cloned().unwrap_or_else(|| class.to_string())
            })
            .collect(),
        Task::Regression => outputs.iter().map(|&v| meta.normalization.unscale_target(v).to_string()).collect(),
    };
    if let Some(path) = &args.output {
        let mut text = String::from("prediction");
        let probabilities = match task {
            Task::Classification { classes } if args.probabilities => {
                for class in 0..classes {
                    let label = meta.class_names.get(class).cloned().unwrap_or_else(|| class.to_string());
                    text.push_str(&format!(",p_{label}"));
                }
                train::to_probabilities(&outputs, task)
            }
            _ => Vec::new(),
        };
        text.push('\n');
        let width = task.outputs();
        for (i, p) in predictions.iter().enumerate() {
            text.push_str(p);
            for value in probabilities.iter().skip(i * width).take(width) {
                text.push_str(&format!(",{value}"));
            }
            text.push('\n');
        }
        msh_io::atomic_file::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "model": dir, "samples": samples.len(), "metrics": metrics }))?
        );
    } else {
        say!("model      {}", dir.display());
        say!("samples    {}", samples.len());
        say!("metrics    {}  loss {:.4}", metrics.headline(), metrics.loss);
    }
    Ok(ExitCode::SUCCESS)
}
