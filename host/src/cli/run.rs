//! `msh run`, `msh worker` and `msh validate`: run (or resume) a workflow, join a run's
//! search stages from any machine, or only check a workflow. The stop signals (Ctrl-C;
//! a trainer process's closed stdin) and the trainer processes' command line live here.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

use msh_engine::workflow;
use msh_engine::{self as engine, EngineEvent, Launcher, Role, RunEnd, RunOptions};
use msh_plugin::{PackStore, PluginHost};
use msh_store::{StageState, TrialStatus};
use msh_train::Backend;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (YAML).
    workflow: PathBuf,
    /// Where the store, checkpoints and exports go [default: runs/<workflow name>].
    /// An existing run directory is resumed.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    trainer: TrainerArgs,
    /// Resume even where a plugin (a `.wasm` file, an installed or built-in pack) differs
    /// from the one the run started with; the change is logged.
    #[arg(long)]
    allow_changed_plugins: bool,
    /// Also write the engine's events to stdout, one JSON object per line
    /// (`{"TrialFinished": {...}}`), for programs that follow the run; the progress for
    /// people stays on stderr.
    #[arg(long, value_enum)]
    events: Option<EventFormat>,
    /// Internal: be one trainer of a search stage for a parent `msh run`.
    #[arg(long, hide = true)]
    worker_of: Option<String>,
}

/// How `--events` writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EventFormat {
    Json,
}

/// Writes an event to stdout as one JSON line (trainer processes to their parent, and
/// `msh run --events json`).
fn print_json_event(event: &EngineEvent) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(event).expect("events serialise"));
    let _ = out.flush();
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The run directory, shared with `msh run` and the other workers.
    run_dir: PathBuf,
    /// The workflow file [default: the path the run was started from].
    #[arg(long)]
    workflow: Option<PathBuf>,
    #[command(flatten)]
    trainer: TrainerArgs,
}

/// How this process trains, and where the run keeps its trials (`msh run`, `msh worker`).
#[derive(Debug, Default, Args)]
struct TrainerArgs {
    /// Trainers working at once (overrides `trainers.count`) [`msh worker`: 1].
    #[arg(long)]
    trainers: Option<usize>,
    /// Overrides `trainers.backend`.
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// CPU threads per trainer (overrides `trainers.threads`) [default: the cores divided
    /// among the trainers].
    #[arg(long)]
    threads: Option<usize>,
    /// The run's PostgreSQL store (`postgres://USER:PASSWORD@HOST/DB`), so that workers on
    /// other machines can join; overrides the workflow's `store:` [`msh worker`: the URL
    /// the run was created with].
    #[arg(long, env = "MSH_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Seconds a claimed trial stays this process's without a heartbeat; another worker
    /// retrains it after that [default: 30].
    #[arg(long)]
    lease_seconds: Option<f64>,
    /// Train even where the data differs from what the run started with (its fingerprint
    /// is recorded when the run starts); the change is logged.
    #[arg(long)]
    allow_changed_data: bool,
}

impl TrainerArgs {
    fn launcher(&self, workflow: &Path, run_dir: &Path) -> SelfLauncher {
        SelfLauncher {
            workflow: workflow.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            backend: self.backend,
            store: self.store.clone(),
            lease_seconds: self.lease_seconds,
            allow_changed_data: self.allow_changed_data,
        }
    }
}

/// Starts trainer processes as `msh run --worker-of STAGE` with this process's settings.
#[derive(Debug)]
struct SelfLauncher {
    workflow: PathBuf,
    run_dir: PathBuf,
    backend: Option<Backend>,
    store: Option<String>,
    lease_seconds: Option<f64>,
    allow_changed_data: bool,
}

impl Launcher for SelfLauncher {
    fn trainer(&self, stage: &str, _index: usize, threads: usize) -> std::process::Command {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("msh"));
        let mut command = std::process::Command::new(exe);
        command.arg("run").arg(&self.workflow).arg("--run-dir").arg(&self.run_dir);
        command.args(["--trainers", "1", "--worker-of", stage]);
        let backend = self.backend.and_then(|b| clap::ValueEnum::to_possible_value(&b));
        command.args(backend.iter().flat_map(|b| ["--backend".to_string(), b.get_name().to_string()]));
        command.args(["--threads", &threads.to_string()]);
        command.args(self.lease_seconds.iter().flat_map(|s| ["--lease-seconds".to_string(), s.to_string()]));
        if self.allow_changed_data {
            command.arg("--allow-changed-data");
        }
        // The URL may hold a password: it goes by the environment, not the command line.
        if let Some(url) = &self.store {
            command.env(msh_store::STORE_ENV, url);
        }
        command
    }
}

/// The launcher of a run with defaults but for the backend (benchmarks).
pub(super) fn launcher(workflow: &Path, run_dir: &Path, backend: Option<Backend>) -> Arc<dyn Launcher> {
    let settings = TrainerArgs { backend, ..TrainerArgs::default() };
    Arc::new(settings.launcher(workflow, run_dir))
}

/// A stop flag that the first Ctrl-C sets (running trials go back to the queue); the
/// second quits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::Relaxed);
                plain_line("msh: stopping: running trials go back to the queue (Ctrl-C again quits at once)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    });
    stop
}

/// A stop flag that is set when stdin closes: a parent `msh run` stops its trainer
/// processes so (and so does its death).
fn stop_on_stdin_close() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        flag.store(true, Ordering::Relaxed);
    });
    stop
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
    let trainer_of = args.worker_of.clone();
    let t = &args.trainer;
    let options = RunOptions {
        run_dir: run_dir.clone(),
        trainers: t.trainers,
        threads: t.threads,
        allow_changed_plugins: args.allow_changed_plugins,
        allow_changed_data: t.allow_changed_data,
        backend: t.backend,
        role: trainer_of.clone().map_or(Role::Run, Role::TrainerOf),
        launcher: Some(Arc::new(t.launcher(&args.workflow, &run_dir))),
        stop: if trainer_of.is_some() { stop_on_stdin_close() } else { stop_on_ctrl_c() },
        store: t.store.clone(),
        lease_seconds: t.lease_seconds,
    };
    if trainer_of.is_some() {
        // Events go to the parent as JSON lines.
        let reporter = Arc::new(|event: EngineEvent| print_json_event(&event));
        return Ok(match engine::run_workflow(&args.workflow, &options, reporter)? {
            RunEnd::Interrupted => ExitCode::from(130),
            _ => ExitCode::SUCCESS,
        });
    }
    eprintln!("msh: running {} in {}", args.workflow.display(), run_dir.display());
    let end = run_with_display(&args.workflow, &options, args.events == Some(EventFormat::Json))?;
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

/// `msh worker`: joins the search stages of a run that `msh run --store` started.
pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let t = &args.trainer;
    let workflow = match &args.workflow {
        Some(path) => path.clone(),
        None => engine::run_workflow_path(&args.run_dir, t.store.as_deref())?,
    };
    if !workflow.is_file() {
        anyhow::bail!(
            "cannot read workflow {}, which run {} was started from; pass --workflow with its path on this machine",
            workflow.display(),
            args.run_dir.display()
        );
    }
    let options = RunOptions {
        run_dir: args.run_dir.clone(),
        trainers: Some(t.trainers.unwrap_or(1)),
        threads: t.threads,
        backend: t.backend,
        role: Role::Worker,
        launcher: Some(Arc::new(t.launcher(&workflow, &args.run_dir))),
        stop: stop_on_ctrl_c(),
        store: t.store.clone(),
        lease_seconds: t.lease_seconds,
        allow_changed_plugins: false,
        allow_changed_data: t.allow_changed_data,
    };
    eprintln!("msh: worker {} pid {} joins {}", msh_store::host_name(), std::process::id(), args.run_dir.display());
    Ok(match run_with_display(&workflow, &options, false)? {
        RunEnd::Done => {
            eprintln!("msh: every search stage of {} has ended", args.run_dir.display());
            ExitCode::SUCCESS
        }
        RunEnd::Interrupted => ExitCode::from(130),
        RunEnd::Failed(stages) => {
            eprintln!("msh: stage(s) failed: {}", stages.join(", "));
            ExitCode::from(1)
        }
    })
}

/// Runs with progress bars (or lines) on stderr, and each event as JSON on stdout when
/// `json_events`.
fn run_with_display(workflow: &Path, options: &RunOptions, json_events: bool) -> anyhow::Result<RunEnd> {
    let display = Arc::new(Mutex::new(Display::new()));
    let reporter = {
        let display = display.clone();
        Arc::new(move |event: EngineEvent| {
            if json_events {
                print_json_event(&event);
            }
            display.lock().expect("no panics while drawing").on_event(event)
        })
    };
    let end = engine::run_workflow(workflow, options, reporter)?;
    display.lock().expect("no panics while drawing").finish();
    Ok(end)
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
        let text = super::printable(&text).into_owned();
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
                    bar.set_message(format!("trial {trial}: {}", super::printable(&arch)));
                } else {
                    plain_line(&super::printable(&format!(
                        "[{stage}] trial {trial} started on trainer {trainer}: {arch}"
                    )));
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
