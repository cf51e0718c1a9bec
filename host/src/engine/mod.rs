//! The workflow engine: runs a workflow's stages in dependency order (independent ones
//! at once) on a tokio runtime, with the store as the only shared state. A run directory
//! holds the store, a copy of the workflow and one checkpoint per trial; running it again
//! resumes where it stopped.

mod distill;
mod early_stop;
mod ensemble;
mod history;
mod search;
mod stages;
mod trainer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use stages::{ExportError, best_trial, export_trial, pareto_front};
pub use trainer::{Table, TableError};

use crate::data::{self, DataError, Splits};
use crate::plugin::{PackStore, PluginHost};
use crate::store::{self, Owner, RunMeta, StageRecord, StageState, Store, StoreError, TrialRecord, TrialStatus};
use crate::train::{self, Backend, Selected};
use crate::workflow::{self, Resolved, StageKind, TrainerKind, Workflow, WorkflowError};

/// Settings of `msh run` that are not part of the workflow.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    /// Overrides `trainers.count`.
    pub trainers: Option<usize>,
    /// Overrides `trainers.backend`.
    pub backend: Option<Backend>,
    /// Overrides `trainers.threads`.
    pub threads: Option<usize>,
    /// Resume even where a plugin's content differs from the one the run started with.
    pub allow_changed_plugins: bool,
    /// Work as one extra trainer of this search stage for a parent `msh run` (which
    /// reads the events this process prints) and run nothing else.
    pub worker_of: Option<String>,
}

/// What the engine reports as it goes, for progress bars and logs. Worker processes send
/// theirs to the parent as JSON lines.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum EngineEvent {
    StageStarted {
        stage: String,
        kind: StageKind,
        trials: Option<u64>,
        done: u64,
    },
    StageFinished {
        stage: String,
        state: StageState,
        message: String,
    },
    /// `searcher_seconds`: how long the searcher took to propose it (0 when requeued).
    TrialStarted {
        stage: String,
        trainer: usize,
        trial: u64,
        arch: String,
        searcher_seconds: f64,
    },
    TrialEpoch {
        trainer: usize,
        trial: u64,
        epoch: usize,
        epochs: usize,
    },
    TrialFinished {
        stage: String,
        trainer: usize,
        trial: Box<TrialRecord>,
    },
    Note(String),
}

pub type Reporter = Arc<dyn Fn(EngineEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the data of {workflow}: {source}")]
    Data { workflow: String, source: DataError },
    #[error("cannot fetch the data of {workflow}: {source}")]
    Fetch { workflow: String, source: data::fetch::FetchError },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Backend(#[from] crate::train::NoGpu),
    #[error(
        "run directory {} was started from a different workflow (its copy is {}); \
         pass --run-dir for a new run, or restore that workflow to resume",
        dir.display(), dir.join("workflow.yaml").display()
    )]
    DifferentWorkflow { dir: PathBuf },
    #[error(
        "plugin `{plugin}` has changed since run directory {} started (sha256 {recorded} then, {now} now); \
         resume with the plugin it started with, or pass --allow-changed-plugins to go on with this one",
        dir.display()
    )]
    ChangedPlugin { dir: PathBuf, plugin: String, recorded: String, now: String },
    #[error("{0}")]
    Stage(String),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Downloads the data set a workflow's `fetch:` asks for, if it is not there yet.
fn fetch_data(wf: &Workflow, resolved: &Resolved) -> Result<(), EngineError> {
    let plan = resolved.data.fetch_plan().map_err(EngineError::Stage)?;
    let Some(plan) = plan else { return Ok(()) };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    data::fetch::ensure(&plan.dataset, &plan.dest, &plan.archive, progress, &|line| eprintln!("msh: {line}"))
        .map_err(|source| EngineError::Fetch { workflow: wf.name.clone(), source })?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every stage is done.
    Done,
    /// Stopped by Ctrl-C; running again resumes.
    Interrupted,
    /// These stages failed (their dependants did not run).
    Failed(Vec<String>),
}

/// Everything the stages of one run share.
pub(crate) struct Run {
    pub workflow: Workflow,
    pub workflow_path: PathBuf,
    pub resolved: Resolved,
    pub store: Store,
    pub dir: PathBuf,
    pub trainers: usize,
    pub backend: Backend,
    /// CPU threads of each trainer process.
    pub threads: usize,
    /// Set in worker processes: which search stage this process helps with.
    pub worker_of: Option<String>,
    pub owner: Owner,
    pub stop: AtomicBool,
    pub report: Reporter,
    device: OnceLock<Result<Selected, String>>,
    splits: Mutex<Option<Arc<Splits>>>,
    teachers: distill::TeacherCache,
}

impl Run {
    /// The data, loaded on first use and shared by every trainer.
    pub fn splits(&self) -> Result<Arc<Splits>, EngineError> {
        let mut slot = self.splits.lock().expect("no panics while loading data");
        if let Some(splits) = slot.as_ref() {
            return Ok(splits.clone());
        }
        let splits = Arc::new(
            data::load(&self.resolved.data, self.workflow.seed)
                .map_err(|source| EngineError::Data { workflow: self.workflow.name.clone(), source })?,
        );
        *slot = Some(splits.clone());
        Ok(splits)
    }

    pub fn device(&self) -> Result<Selected, EngineError> {
        let selected = self.device.get_or_init(|| self.backend.select().map_err(|e| e.to_string()));
        selected.clone().map_err(EngineError::Stage)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Completed trials of `stage` that have a checkpoint (models and ensembles), by id.
    /// Stopped trials are left out: early stopping judged them worse, and their objective
    /// comes from fewer epochs, so they are neither ensemble members, donors nor teachers.
    pub fn completed(&self, stage: &str) -> Result<Vec<TrialRecord>, StoreError> {
        let trials = self.store.trials()?;
        Ok(trials
            .into_iter()
            .filter(|t| t.stage == stage && t.status == TrialStatus::Completed && t.checkpoint.is_some())
            .collect())
    }

    pub fn note(&self, text: String) {
        (self.report)(EngineEvent::Note(text));
    }
}

/// Whether the process that claimed a trial is still at it.
fn owner_alive(owner: &Owner, me: &Owner) -> bool {
    if owner.pid == me.pid {
        return owner.session == me.session;
    }
    Path::new(&format!("/proc/{}", owner.pid)).exists()
}

/// Opens or creates the run directory; refuses to resume a different workflow.
/// Opens (or creates) the run's store. A resumed run must have the same workflow text and
/// the same plugins (by content) unless `allow_changed_plugins`; the changes allowed are
/// logged and returned.
fn open_run_dir(
    dir: &Path,
    source: &workflow::Source,
    wf: &Workflow,
    plugins: BTreeMap<String, String>,
    allow_changed_plugins: bool,
) -> Result<(Store, Vec<String>), EngineError> {
    let store = Store::open(dir)?;
    let copy = dir.join("workflow.yaml");
    let mut changes = Vec::new();
    store.write(|t| -> Result<(), EngineError> {
        match t.run_meta()? {
            Some(meta) if meta.workflow_text != source.text => {
                Err(EngineError::DifferentWorkflow { dir: dir.to_path_buf() })
            }
            Some(mut meta) => {
                for (plugin, now) in &plugins {
                    match meta.plugins.get(plugin) {
                        Some(recorded) if recorded == now => continue,
                        Some(recorded) if !allow_changed_plugins => {
                            return Err(EngineError::ChangedPlugin {
                                dir: dir.to_path_buf(),
                                plugin: plugin.clone(),
                                recorded: recorded.clone(),
                                now: now.clone(),
                            });
                        }
                        Some(recorded) => {
                            let change = format!(
                                "plugin `{plugin}` changed (sha256 {recorded} then, {now} now); going on with it"
                            );
                            t.log(None, None, change.clone())?;
                            changes.push(change);
                        }
                        // Runs from before plugins were recorded learn them now.
                        None => {}
                    }
                }
                if meta.plugins != plugins {
                    meta.plugins = plugins.clone();
                    t.put_run_meta(&meta)?;
                }
                Ok(())
            }
            None => {
                crate::atomic_file::write_atomic(&copy, source.text.as_bytes())
                    .map_err(|e| EngineError::Io { path: copy.clone(), source: e })?;
                t.put_run_meta(&RunMeta {
                    workflow_name: wf.name.clone(),
                    workflow_path: source.path.clone(),
                    workflow_text: source.text.clone(),
                    created: store::now(),
                    msh_version: env!("CARGO_PKG_VERSION").into(),
                    plugins: plugins.clone(),
                })?;
                t.log(None, None, format!("run of `{}` created", wf.name))?;
                Ok(())
            }
        }
    })?;
    Ok((store, changes))
}

/// Requeues trials whose process is gone and recounts every search stage.
fn recover(store: &Store, wf: &Workflow, me: &Owner) -> Result<usize, StoreError> {
    store.write(|t| {
        let mut requeued = 0;
        let mut counts: BTreeMap<String, (Vec<u64>, Vec<u64>, u64)> = BTreeMap::new();
        for mut trial in t.trials()? {
            if trial.status == TrialStatus::Running && !trial.owner.is_some_and(|o| owner_alive(&o, me)) {
                trial.status = TrialStatus::Pending;
                trial.owner = None;
                t.put_trial(&trial)?;
                t.log(Some(&trial.stage), Some(trial.id), "requeued: its trainer stopped before it finished")?;
                requeued += 1;
            }
            let entry = counts.entry(trial.stage.clone()).or_default();
            match trial.status {
                TrialStatus::Pending => entry.0.push(trial.id),
                TrialStatus::Running => entry.1.push(trial.id),
                _ => entry.2 += 1,
            }
        }
        for (name, stage) in &wf.stages {
            let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, &stage.kind.to_string()));
            let (pending, running, finished) = counts.remove(name).unwrap_or_default();
            record.pending = pending;
            record.running = running.len() as u64;
            record.in_flight = running;
            record.finished_trials = finished;
            t.put_stage(&record)?;
        }
        Ok(requeued)
    })
}

/// A random number for this process's owner tag.
fn session_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// Runs (or resumes) the workflow at `path`.
pub fn run_workflow(path: &Path, options: &RunOptions, report: Reporter) -> Result<RunEnd, EngineError> {
    let (source, wf) = workflow::load(path)?;
    // Before anything runs on the pool (wasmtime compiles plugins on it too).
    let trainers = options.trainers.unwrap_or(wf.trainers.count).max(1);
    let threads = options.threads.or(wf.trainers.threads).unwrap_or_else(|| train::threads_per_trainer(trainers));
    if wf.trainers.kind == TrainerKind::Burn {
        train::use_threads(threads).map_err(EngineError::Stage)?;
    }
    let host = PluginHost::new(wf.limits);
    let resolved = workflow::resolve(&source, &wf, &host, &PackStore::default_location())?;
    if options.worker_of.is_none() {
        fetch_data(&wf, &resolved)?;
    }
    let plugins =
        resolved.packs.iter().chain(resolved.searchers.values()).map(|p| (p.name.clone(), p.sha256.clone())).collect();
    let (store, changed_plugins) =
        open_run_dir(&options.run_dir, &source, &wf, plugins, options.allow_changed_plugins)?;
    let owner = Owner { pid: std::process::id(), session: session_id() };
    let requeued = recover(&store, &wf, &owner)?;
    let run = Arc::new(Run {
        trainers,
        threads,
        backend: options.backend.unwrap_or(wf.trainers.backend),
        workflow: wf,
        workflow_path: path.to_path_buf(),
        worker_of: options.worker_of.clone(),
        resolved,
        store,
        dir: options.run_dir.clone(),
        owner,
        stop: AtomicBool::new(false),
        report,
        device: OnceLock::new(),
        splits: Mutex::new(None),
        teachers: Default::default(),
    });
    for change in changed_plugins {
        run.note(change);
    }
    if requeued > 0 {
        run.note(format!("resuming: {requeued} interrupted trial(s) requeued"));
    }
    let cores = train::cores();
    if run.trainers > cores && run.workflow.trainers.kind == TrainerKind::Burn && run.worker_of.is_none() {
        run.note(format!(
            "{} trainers share {cores} cores: trials/min usually peaks at one trainer per core",
            run.trainers
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Stage(format!("cannot start the runtime: {e}")))?;
    if let Some(stage) = &options.worker_of {
        if run.workflow.stages.get(stage).is_none_or(|s| s.kind != StageKind::Search) {
            return Err(EngineError::Stage(format!("`{stage}` is not a search stage of {}", path.display())));
        }
        // The parent closes our stdin to stop us (and so does its death).
        let watched = run.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            watched.stop.store(true, Ordering::Relaxed);
        });
        return Ok(if search::run_search(&run, stage)? { RunEnd::Done } else { RunEnd::Interrupted });
    }
    runtime.block_on(run_stages(run))
}

/// Starts each stage when what it needs is done; stops starting them on Ctrl-C.
async fn run_stages(run: Arc<Run>) -> Result<RunEnd, EngineError> {
    let watcher = {
        let run = run.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                run.stop.store(true, Ordering::Relaxed);
                run.note("stopping: running trials go back to the queue (Ctrl-C again quits at once)".into());
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        })
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut failed: Vec<String> = Vec::new();
    for record in run.store.stages()? {
        if record.state == StageState::Done {
            done.insert(record.name.clone());
        }
    }
    let mut started: BTreeSet<String> = done.clone();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if !run.stopping() {
            for name in &run.resolved.order {
                let stage = &run.workflow.stages[name];
                if started.contains(name) || !stage.needs.iter().all(|n| done.contains(n)) {
                    continue;
                }
                started.insert(name.clone());
                let (run, name) = (run.clone(), name.clone());
                tasks.spawn_blocking(move || {
                    let result = stages::run_stage(&run, &name);
                    (name, result)
                });
            }
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (name, result) = joined.map_err(|e| EngineError::Stage(format!("a stage panicked: {e}")))?;
        match result {
            Ok(true) => {
                done.insert(name);
            }
            Ok(false) => {} // interrupted
            Err(e) => {
                let message = e.to_string();
                run.store.write(|t| -> Result<(), StoreError> {
                    let mut record = t.stage(&name)?.unwrap_or_else(|| StageRecord::new(&name, "?"));
                    record.state = StageState::Failed;
                    record.finished = Some(store::now());
                    record.message = Some(message.clone());
                    t.put_stage(&record)?;
                    t.log(Some(&name), None, format!("failed: {message}"))
                })?;
                (run.report)(EngineEvent::StageFinished { stage: name.clone(), state: StageState::Failed, message });
                failed.push(name);
            }
        }
    }
    watcher.abort();
    if run.stopping() {
        return Ok(RunEnd::Interrupted);
    }
    if !failed.is_empty() {
        return Ok(RunEnd::Failed(failed));
    }
    Ok(RunEnd::Done)
}
