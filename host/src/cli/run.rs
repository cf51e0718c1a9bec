//! `msh run` and `msh validate`: run (or resume) a workflow, or only check it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use msh::engine::{self, EngineEvent, RunEnd, RunOptions};
use msh::plugin::{PackStore, PluginHost};
use msh::store::{StageState, TrialStatus};
use msh::train::Backend;
use msh::workflow;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (YAML).
    workflow: PathBuf,
    /// Where the store, checkpoints and exports go [default: runs/<workflow name>].
    /// An existing run directory is resumed.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Trainers working at once (overrides `trainers.count`).
    #[arg(long)]
    trainers: Option<usize>,
    /// Overrides `trainers.backend`.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// CPU threads per trainer (overrides `trainers.threads`) [default: the cores divided
    /// among the trainers].
    #[arg(long)]
    threads: Option<usize>,
    /// Resume even where a plugin (a `.wasm` file, an installed or built-in pack) differs
    /// from the one the run started with; the change is logged.
    #[arg(long)]
    allow_changed_plugins: bool,
    /// Internal: be one trainer of a search stage for a parent `msh run`.
    #[arg(long, hide = true)]
    worker_of: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The workflow file (YAML).
    workflow: PathBuf,
}

pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let (source, wf) = workflow::load(&args.workflow)?;
    let host = PluginHost::new(wf.limits);
    let resolved = workflow::resolve(&source, &wf, &host, &PackStore::default_location())?;
    println!(
        "{}: ok: workflow `{}`, {} stage(s) ({}), {} block(s), searcher {}",
        args.workflow.display(),
        wf.name,
        resolved.order.len(),
        resolved.order.join(" -> "),
        resolved.space.blocks.len(),
        wf.searcher.plugin
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let run_dir = match &args.run_dir {
        Some(dir) => dir.clone(),
        None => {
            let (_, wf) = workflow::load(&args.workflow)?;
            Path::new("runs").join(&wf.name)
        }
    };
    let options = RunOptions {
        run_dir: run_dir.clone(),
        trainers: args.trainers,
        threads: args.threads,
        allow_changed_plugins: args.allow_changed_plugins,
        backend: args.backend,
        worker_of: args.worker_of.clone(),
    };
    if options.worker_of.is_some() {
        // Events go to the parent as JSON lines.
        let reporter = Arc::new(|event: EngineEvent| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", serde_json::to_string(&event).expect("events serialise"));
            let _ = out.flush();
        });
        return Ok(match engine::run_workflow(&args.workflow, &options, reporter)? {
            RunEnd::Interrupted => ExitCode::from(130),
            _ => ExitCode::SUCCESS,
        });
    }
    eprintln!("msh: running {} in {}", args.workflow.display(), run_dir.display());
    let display = Arc::new(Mutex::new(Display::new()));
    let reporter = {
        let display = display.clone();
        Arc::new(move |event: EngineEvent| display.lock().expect("no panics while drawing").on_event(event))
    };
    let end = engine::run_workflow(&args.workflow, &options, reporter)?;
    display.lock().expect("no panics while drawing").finish();
    let shown = run_dir.display();
    Ok(match end {
        RunEnd::Done => {
            eprintln!("msh: done; see `msh status {shown}` and `msh best {shown}`");
            ExitCode::SUCCESS
        }
        RunEnd::Interrupted => {
            eprintln!("msh: interrupted; run the same command again to resume");
            ExitCode::from(130)
        }
        RunEnd::Failed(stages) => {
            eprintln!("msh: stage(s) failed: {}; see `msh status {shown}`", stages.join(", "));
            ExitCode::from(1)
        }
    })
}

/// One progress line on stderr. A reader that goes away (`msh run 2>&1 | head`) must not
/// stop the run mid-transaction, so write errors are ignored: the run goes on to its end.
fn plain_line(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Progress bars per stage and per trainer on a terminal, plain lines otherwise.
struct Display {
    bars: Option<MultiProgress>,
    stages: BTreeMap<String, ProgressBar>,
    trainers: BTreeMap<usize, ProgressBar>,
}

impl Display {
    fn new() -> Self {
        Self {
            bars: std::io::stderr().is_terminal().then(MultiProgress::new),
            stages: BTreeMap::new(),
            trainers: BTreeMap::new(),
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(text);
            }
            None => plain_line(&text),
        }
    }

    fn on_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::StageStarted { stage, kind, trials, done } => {
                if let Some(bars) = &self.bars {
                    let bar = bars.add(ProgressBar::new(trials.unwrap_or(0)));
                    bar.set_style(style("{prefix:>12} [{bar:30}] {pos}/{len} trials {msg}"));
                    bar.set_prefix(stage.clone());
                    bar.set_position(done);
                    self.stages.insert(stage.clone(), bar);
                }
                let budget = trials.map(|t| format!(", {done}/{t} trials done")).unwrap_or_default();
                self.line(format!("[{stage}] {kind} stage started{budget}"));
            }
            EngineEvent::StageFinished { stage, state, message } => {
                if let Some(bar) = self.stages.remove(&stage) {
                    bar.finish_and_clear();
                }
                let verb = if state == StageState::Failed { "failed" } else { "done" };
                self.line(format!("[{stage}] {verb}: {message}"));
            }
            EngineEvent::TrialStarted { stage, trainer, trial, arch, .. } => {
                if let Some(bars) = &self.bars {
                    let bar = self.trainers.entry(trainer).or_insert_with(|| {
                        let bar = bars.add(ProgressBar::new(0));
                        bar.set_style(style("{prefix:>12} [{bar:30}] epoch {pos}/{len} {msg}"));
                        bar.set_prefix(format!("trainer {trainer}"));
                        bar
                    });
                    bar.set_position(0);
                    bar.set_message(format!("trial {trial}: {arch}"));
                } else {
                    plain_line(&format!("[{stage}] trial {trial} started on trainer {trainer}: {arch}"));
                }
            }
            EngineEvent::TrialEpoch { trainer, epoch, epochs, .. } => {
                if let Some(bar) = self.trainers.get(&trainer) {
                    bar.set_length(epochs as u64);
                    bar.set_position(epoch as u64);
                }
            }
            EngineEvent::TrialFinished { stage, trial, .. } => {
                if let Some(bar) = self.stages.get(&stage) {
                    bar.inc(1);
                }
                let result = match (&trial.error, &trial.valid, &trial.test) {
                    (Some(error), _, _) => error.clone(),
                    (None, Some(valid), Some(test)) => format!("valid {}, test {}", valid.headline(), test.headline()),
                    (None, Some(valid), None) => format!("valid {}", valid.headline()),
                    (None, None, Some(test)) => format!("test {}", test.headline()),
                    (None, None, None) => String::new(),
                };
                let status = match trial.status {
                    TrialStatus::Stopped => format!("stopped at epoch {}", trial.epochs),
                    other => other.name().to_string(),
                };
                self.line(format!(
                    "[{stage}] trial {} {status}: {result} ({} params, {:.1}s)",
                    trial.id, trial.parameters, trial.train_seconds
                ));
            }
            EngineEvent::Note(text) => self.line(format!("msh: {text}")),
        }
    }

    fn finish(&mut self) {
        for bar in self.trainers.values().chain(self.stages.values()) {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("static template").progress_chars("=> ")
}
