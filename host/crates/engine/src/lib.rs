//! The workflow engine: runs a workflow's stages in dependency order (independent ones
//! at once) on a tokio runtime, with the store as the only shared state. A run directory
//! holds the store, a copy of the workflow and one checkpoint per trial; running it again
//! resumes where it stopped.

pub mod workflow;

// Each stage has its file; `trainer` evaluates search trials; `training` is the leaf
// that the stages share.
mod distill;
pub mod early_stop;
mod ensemble;
mod export;
mod history;
mod lifecycle;
mod retrain;
mod search;
mod trainer;
mod training;
mod warm_start;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use export::{ExportError, export_trial};
pub use trainer::{Table, TableError};

use crate::workflow::{Resolved, StageKind, TrainerKind, Workflow, WorkflowError};
use msh_plugin::{PackStore, PluginHost};
use msh_store::{self as store, Owner, RunMeta, StageRecord, StageState, Store, StoreError, TrialRecord, TrialStatus};
use msh_train::data::{self, DataError, Splits};
use msh_train::{self as train, Backend, Selected};

/// What this process does for a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Role {
    /// `msh run`: every stage, in dependency order, with its local trainers.
    #[default]
    Run,
    /// `msh worker`: one trainer of each search stage of a run started elsewhere, stage
    /// after stage as their needs are done; the other stages are `msh run`'s.
    Worker,
    /// One extra trainer of this search stage for a parent `msh run` (which reads the
    /// events this process reports, and starts it through its `Launcher`).
    TrainerOf(String),
}

/// How a run starts extra trainer processes: the binary knows its own command line.
pub trait Launcher: Send + Sync + std::fmt::Debug {
    /// The command that runs trainer `index` of search stage `stage` with `threads`
    /// compute threads (`Role::TrainerOf`, on this process's run and store).
    fn trainer(&self, stage: &str, index: usize, threads: usize) -> std::process::Command;
}

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
    /// Join or resume even where the data differs from what the run started with.
    pub allow_changed_data: bool,
    pub role: Role,
    /// Starts the extra trainer processes of `trainers` > 1 (none: trainers are threads).
    pub launcher: Option<Arc<dyn Launcher>>,
    /// Set by the caller to stop: running trials go back to the queue, and the run
    /// resumes where it stopped when started again.
    pub stop: Arc<AtomicBool>,
    /// Keep the run's trials in this PostgreSQL database (`postgres://...`) instead of
    /// LMDB in the run directory.
    pub store: Option<String>,
    /// Seconds a claimed trial stays this process's without a heartbeat [default: 30].
    pub lease_seconds: Option<f64>,
}

/// How long a claimed trial stays its trainer's without a heartbeat, by default.
pub const DEFAULT_LEASE_SECONDS: f64 = 30.0;

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
    Backend(#[from] msh_train::NoGpu),
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
    #[error(
        "the data differs from what run directory {} trains on ({recorded} then, {now} now); use the \
         same data, or pass --allow-changed-data to train on this",
        dir.display()
    )]
    ChangedData { dir: PathBuf, recorded: String, now: String },
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
    pub resolved: Resolved,
    pub store: Store,
    pub dir: PathBuf,
    pub trainers: usize,
    pub backend: Backend,
    /// CPU threads of each trainer process.
    pub threads: usize,
    pub role: Role,
    launcher: Option<Arc<dyn Launcher>>,
    pub owner: Owner,
    /// This machine's name, in trial records' `worker`.
    pub host: String,
    /// Seconds of lease per claim and heartbeat.
    pub lease: f64,
    /// Trials and reservations this process holds: the heartbeat renews their leases.
    held: Mutex<BTreeSet<u64>>,
    /// The stages (not searches) this process runs now, under leases it renews.
    held_stages: Mutex<BTreeSet<String>>,
    stop: Arc<AtomicBool>,
    pub report: Reporter,
    device: OnceLock<Result<Selected, String>>,
    splits: Mutex<Option<Arc<Splits>>>,
    teachers: distill::TeacherCache,
    /// The trials of `warm_start.from`.
    pub earlier: Option<warm_start::Earlier>,
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

    /// The best completed trial of `stage` (see `store::best_trial`).
    pub fn best_of(&self, stage: &str) -> Result<TrialRecord, EngineError> {
        store::best_trial(&self.store, Some(stage))?
            .ok_or_else(|| EngineError::Stage(format!("search stage `{stage}` has no completed trial to use")))
    }

    /// The model a retrain, ensemble or distill stage produced (its latest), if any.
    pub fn produced(&self, stage: &str) -> Result<Option<TrialRecord>, StoreError> {
        Ok(self.store.trials()?.into_iter().rev().find(|t| t.stage == stage && t.status == TrialStatus::Completed))
    }

    /// Starts renewing the lease on a trial or reservation this process claimed.
    pub fn hold(&self, id: u64) {
        self.held.lock().expect("no panics while holding").insert(id);
    }

    pub fn release(&self, id: u64) {
        self.held.lock().expect("no panics while holding").remove(&id);
    }
}

/// Renews this process's leases every third of a lease, while the run lives.
fn start_heartbeat(run: &Arc<Run>) {
    let run = Arc::downgrade(run);
    std::thread::spawn(move || {
        loop {
            let Some(period) = run.upgrade().map(|r| r.lease / 3.0) else { return };
            std::thread::sleep(std::time::Duration::from_secs_f64(period));
            let Some(run) = run.upgrade() else { return };
            let ids: Vec<u64> = run.held.lock().expect("no panics while holding").iter().copied().collect();
            let stages: Vec<String> =
                run.held_stages.lock().expect("no panics while holding").iter().cloned().collect();
            if ids.is_empty() && stages.is_empty() {
                continue;
            }
            let renewed = run
                .store
                .write(|t| t.renew_stages(&stages, &run.owner, run.lease))
                .and_then(|()| run.store.renew(&ids, &run.owner, run.lease));
            match renewed {
                Ok(lost) if !lost.is_empty() => run.note(format!(
                    "the leases on trial(s) {lost:?} expired before they were renewed; others retrain them"
                )),
                Ok(_) => {}
                Err(e) => run.note(format!("cannot renew leases: {e}")),
            }
        }
    });
}

/// Opens or creates the run directory; refuses to resume a different workflow.
/// Opens (or creates) the run's store. A resumed run must have the same workflow text and
/// the same plugins (by content) unless `allow_changed_plugins`; the changes allowed are
/// logged and returned.
fn open_run_dir(
    dir: &Path,
    url: Option<&str>,
    source: &workflow::Source,
    wf: &Workflow,
    plugins: BTreeMap<String, String>,
    allow_changed_plugins: bool,
) -> Result<(Store, Vec<String>), EngineError> {
    let store = Store::open_at(dir, url)?;
    let copy = dir.join("workflow.yaml");
    let text = source.redacted_text(wf);
    let mut changes = Vec::new();
    store.write(|t| -> Result<(), EngineError> {
        match t.run_meta()? {
            Some(meta) if meta.workflow_text != text => Err(EngineError::DifferentWorkflow { dir: dir.to_path_buf() }),
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
                msh_io::atomic_file::write_atomic(&copy, text.as_bytes())
                    .map_err(|e| EngineError::Io { path: copy.clone(), source: e })?;
                t.put_run_meta(&RunMeta {
                    workflow_name: wf.name.clone(),
                    workflow_path: std::fs::canonicalize(&source.path).unwrap_or_else(|_| source.path.clone()),
                    workflow_text: text.clone(),
                    created: store::now(),
                    msh_version: env!("CARGO_PKG_VERSION").into(),
                    plugins: plugins.clone(),
                    data: None,
                })?;
                t.log(None, None, format!("run of `{}` created", wf.name))?;
                Ok(())
            }
        }
    })?;
    Ok((store, changes))
}

/// Loads the data and compares its fingerprint with the one the run recorded (recording
/// it when none is): a worker or a resume whose data differs from the run's is refused
/// unless `allow_changed`. Data that cannot be loaded is left to the stages to report.
fn check_data(run: &Run, allow_changed: bool) -> Result<(), EngineError> {
    let Ok(splits) = run.splits() else { return Ok(()) };
    let now = splits.fingerprint();
    run.store.write(|t| -> Result<(), EngineError> {
        let Some(mut meta) = t.run_meta()? else { return Ok(()) };
        match meta.data.as_ref() {
            Some(recorded) if *recorded == now => return Ok(()),
            Some(recorded) if !allow_changed => {
                return Err(EngineError::ChangedData {
                    dir: run.dir.clone(),
                    recorded: recorded.clone(),
                    now: now.clone(),
                });
            }
            Some(recorded) => {
                t.log(None, None, format!("data changed ({recorded} then, {now} now); going on with it"))?
            }
            None => {}
        }
        meta.data = Some(now.clone());
        t.put_run_meta(&meta)?;
        Ok(())
    })
}

/// Requeues trials whose owner's lease expired (or whose process on this machine is
/// gone) and recounts every search stage; live reservations of other workers stay.
fn recover(store: &Store, wf: &Workflow, me: &Owner) -> Result<usize, StoreError> {
    // Search queues first: where the backend keeps them apart, their slots requeue.
    let mut requeued = 0;
    for (name, stage) in &wf.stages {
        if stage.kind() == StageKind::Search && store.stage(name)?.is_some() {
            store.align_queue(name)?;
            requeued += store.requeue_expired(name, me)?.len();
        }
    }
    store.write(|t| {
        let now = t.clock();
        let mut counts: BTreeMap<String, (Vec<u64>, Vec<u64>, u64)> = BTreeMap::new();
        for mut trial in t.trials()? {
            let why = (trial.status == TrialStatus::Running).then(|| store::lost(&trial, now, me)).flatten();
            if let Some(why) = why {
                trial.status = TrialStatus::Pending;
                trial.owner = None;
                t.put_trial(&trial)?;
                t.log(Some(&trial.stage), Some(trial.id), why)?;
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
            let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, &stage.kind().to_string()));
            let (pending, running, finished) = counts.remove(name).unwrap_or_default();
            record.pending = pending;
            record.running = running.len() as u64;
            record.in_flight = running;
            record.finished_trials = finished;
            record.reserved.retain(|r| !r.owner.expired(now, me));
            t.put_stage(&record)?;
        }
        Ok(requeued)
    })
}

/// Runs (or resumes) the workflow at `path`.
pub fn run_workflow(path: &Path, options: &RunOptions, report: Reporter) -> Result<RunEnd, EngineError> {
    let started = std::time::Instant::now();
    let (source, wf) = workflow::load(path)?;
    // Before anything runs on the pool (wasmtime compiles plugins on it too).
    let trainers = options.trainers.unwrap_or(wf.trainers.count).max(1);
    let threads = options.threads.or(wf.trainers.threads).unwrap_or_else(|| train::threads_per_trainer(trainers));
    if wf.trainers.kind == TrainerKind::Burn {
        train::use_threads(threads).map_err(EngineError::Stage)?;
    }
    let host = PluginHost::new(wf.limits);
    let resolved = workflow::resolve(&source, &wf, &host, &PackStore::default_location())?;
    if options.role == Role::Run {
        fetch_data(&wf, &resolved)?;
    }
    let plugins =
        resolved.packs.iter().chain(resolved.searchers.values()).map(|p| (p.name.clone(), p.sha256.clone())).collect();
    let store_url = match &options.store {
        Some(url) => Some(url.clone()),
        None => wf.store_url().map_err(EngineError::Stage)?,
    };
    let (store, changed_plugins) =
        open_run_dir(&options.run_dir, store_url.as_deref(), &source, &wf, plugins, options.allow_changed_plugins)?;
    let owner = Owner::this_process(store::random_u64());
    let requeued = recover(&store, &wf, &owner)?;
    let earlier = match (&resolved.warm_start, &wf.warm_start) {
        (Some(dir), Some(warm)) => {
            Some(warm_start::Earlier::load(dir, warm.stage.as_deref(), &resolved.space, &options.run_dir)?)
        }
        _ => None,
    };
    tracing::debug!("run opened, plugins loaded and trials recovered in {:.3} s", started.elapsed().as_secs_f64());
    let run = Arc::new(Run {
        trainers,
        threads,
        backend: options.backend.unwrap_or(wf.trainers.backend),
        workflow: wf,
        role: options.role.clone(),
        launcher: options.launcher.clone(),
        resolved,
        store,
        dir: options.run_dir.clone(),
        owner,
        host: store::host_name(),
        lease: options.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
        held: Mutex::new(BTreeSet::new()),
        held_stages: Mutex::new(BTreeSet::new()),
        stop: options.stop.clone(),
        report,
        device: OnceLock::new(),
        splits: Mutex::new(None),
        teachers: Default::default(),
        earlier,
    });
    if run.workflow.trainers.kind == TrainerKind::Burn {
        check_data(&run, options.allow_changed_data)?;
    }
    start_heartbeat(&run);
    for change in changed_plugins {
        run.note(change);
    }
    if requeued > 0 {
        run.note(format!("resuming: {requeued} interrupted trial(s) requeued"));
    }
    let cores = train::cores();
    if run.trainers > cores && run.workflow.trainers.kind == TrainerKind::Burn && run.role == Role::Run {
        run.note(format!(
            "{} trainers share {cores} cores: trials/min usually peaks at one trainer per core",
            run.trainers
        ));
    }
    match &options.role {
        Role::Run => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| EngineError::Stage(format!("cannot start the runtime: {e}")))?;
            runtime.block_on(run_stages(run))
        }
        Role::Worker => join_searches(&run),
        Role::TrainerOf(stage) => {
            if run.workflow.stages.get(stage).is_none_or(|s| s.kind() != StageKind::Search) {
                return Err(EngineError::Stage(format!("`{stage}` is not a search stage of {}", path.display())));
            }
            Ok(if lifecycle::run_stage(&run, stage)?? { RunEnd::Done } else { RunEnd::Interrupted })
        }
    }
}

/// The workflow file a run was started from (`msh worker` reads the same one).
pub fn run_workflow_path(run_dir: &Path, store_url: Option<&str>) -> Result<PathBuf, EngineError> {
    if !Store::exists(run_dir) {
        return Err(EngineError::Stage(format!(
            "{} is not a run directory (it has neither {} nor {}/); start the run with              `msh run WORKFLOW --run-dir {0} --store URL`",
            run_dir.display(),
            store::STORE_FILE,
            store::STORE_DIR
        )));
    }
    let store = Store::open_at(run_dir, store_url)?;
    let meta = store.run_meta()?.ok_or_else(|| {
        EngineError::Stage(format!(
            "{} has no run yet: start it with `msh run WORKFLOW --run-dir {} --store URL`",
            store.name(),
            run_dir.display()
        ))
    })?;
    Ok(meta.workflow_path)
}

/// A worker's part: one trainer for each search stage in turn, once what it needs is
/// done, until every search stage has ended.
fn join_searches(run: &Arc<Run>) -> Result<RunEnd, EngineError> {
    let searches: Vec<&String> =
        run.resolved.order.iter().filter(|n| run.workflow.stages[*n].kind() == StageKind::Search).collect();
    for name in searches {
        loop {
            if run.stopping() {
                return Ok(RunEnd::Interrupted);
            }
            let stages = run.store.stages()?;
            let state = |n: &str| stages.iter().find(|s| s.name == n).map(|s| s.state);
            if matches!(state(name), Some(StageState::Done | StageState::Failed)) {
                break;
            }
            let needs = &run.workflow.stages[name].needs;
            if needs.iter().any(|n| state(n) == Some(StageState::Failed)) {
                break;
            }
            if needs.iter().all(|n| state(n) == Some(StageState::Done)) {
                if !lifecycle::run_stage(run, name)?? {
                    return Ok(RunEnd::Interrupted);
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Ok(RunEnd::Done)
}

/// Starts each stage when what it needs is done; stops starting them when asked to stop.
async fn run_stages(run: Arc<Run>) -> Result<RunEnd, EngineError> {
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
                    let result = lifecycle::run_stage(&run, &name);
                    (name, result)
                });
            }
        }
        let Some(joined) = tasks.join_next().await else { break };
        let (name, result) = joined.map_err(|e| EngineError::Stage(format!("a stage panicked: {e}")))?;
        // The lifecycle recorded a failure already.
        match result? {
            Ok(true) => {
                done.insert(name);
            }
            Ok(false) => {} // interrupted
            Err(_) => failed.push(name),
        }
    }
    if run.stopping() {
        return Ok(RunEnd::Interrupted);
    }
    if !failed.is_empty() {
        return Ok(RunEnd::Failed(failed));
    }
    Ok(RunEnd::Done)
}
