//! The records the store keeps, as MessagePack maps (field names included, so that a
//! field added later reads as its default in older records).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use msh_vocab::{BlockRef, Metrics, ParamValue};

/// About the run as a whole, written once when the run directory is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub workflow_name: String,
    pub workflow_path: PathBuf,
    /// The workflow's text when the run started: a resumed run must use the same.
    pub workflow_text: String,
    pub created: f64,
    pub msh_version: String,
    /// The SHA-256 of every plugin the run uses, by name: a resumed run must use the same.
    #[serde(default)]
    pub plugins: BTreeMap<String, String>,
    /// The fingerprint of the data the run trains on (`Splits::fingerprint`), recorded by
    /// the first process that loads it: every later one must load the same.
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Pending,
    Running,
    Done,
    Failed,
}

/// A stage's progress. For search stages, trial counts are kept here so that claiming
/// the next trial does not scan every trial (on PostgreSQL, `Store::stage` reads the queue
/// and counts from the stage's slots instead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub kind: String,
    pub state: StageState,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    /// Seconds spent in earlier sessions (wall-time budgets span resumes).
    #[serde(default)]
    pub spent_seconds: f64,
    /// Trials waiting to run (requeued after an interruption), oldest first.
    #[serde(default)]
    pub pending: Vec<u64>,
    #[serde(default)]
    pub running: u64,
    /// The trials being trained now (searchers see them; none is proposed twice).
    #[serde(default)]
    pub in_flight: Vec<u64>,
    /// Budget slots held by searchers proposing now; they count against the budget.
    #[serde(default)]
    pub reserved: Vec<Reservation>,
    /// Proposals refused without training: repeats of earlier trials, or unbuildable.
    #[serde(default)]
    pub rejected_proposals: u64,
    /// Completed, stopped, failed and diverged trials.
    #[serde(default)]
    pub finished_trials: u64,
    /// What the stage produced, or why it failed.
    #[serde(default)]
    pub message: Option<String>,
    /// The process running a stage that runs once (not a search), under its lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

impl StageRecord {
    pub fn new(name: &str, kind: &str) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            state: StageState::Pending,
            started: None,
            finished: None,
            spent_seconds: 0.0,
            pending: Vec::new(),
            running: 0,
            in_flight: Vec::new(),
            reserved: Vec::new(),
            rejected_proposals: 0,
            finished_trials: 0,
            message: None,
            owner: None,
        }
    }

    /// Done or failed: nothing more will happen in the stage.
    pub fn ended(&self) -> bool {
        matches!(self.state, StageState::Done | StageState::Failed)
    }

    /// Whether a run with these stages has ended: it has stages, and all have ended.
    pub fn run_ended(stages: &[StageRecord]) -> bool {
        !stages.is_empty() && stages.iter().all(StageRecord::ended)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Diverged,
    /// Ended early by the workflow's `early_stopping`: a result at fewer epochs, with its
    /// metrics and checkpoint like a completed trial.
    Stopped,
}

impl TrialStatus {
    /// Every status, results first, in the order summaries list them.
    pub const ALL: [TrialStatus; 6] = [
        TrialStatus::Completed,
        TrialStatus::Stopped,
        TrialStatus::Failed,
        TrialStatus::Diverged,
        TrialStatus::Running,
        TrialStatus::Pending,
    ];

    /// How many of `trials` have each status, in `ALL`'s order.
    pub fn counts(trials: &[TrialRecord]) -> [(TrialStatus, usize); 6] {
        Self::ALL.map(|s| (s, trials.iter().filter(|t| t.status == s).count()))
    }

    pub fn is_finished(self) -> bool {
        matches!(self, TrialStatus::Completed | TrialStatus::Failed | TrialStatus::Diverged | TrialStatus::Stopped)
    }

    pub fn name(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Completed => "completed",
            TrialStatus::Failed => "failed",
            TrialStatus::Diverged => "diverged",
            TrialStatus::Stopped => "stopped",
        }
    }
}

/// The process working on a trial, and its lease: a trial whose lease has expired is
/// requeued by whoever notices first (`claims.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Random per process start, so that a reused pid is not mistaken for the owner.
    pub session: u64,
    /// A hash of the machine's host name: on its own machine a dead owner is noticed
    /// before its lease expires.
    #[serde(default)]
    pub host: u64,
    /// Store-clock seconds until which the trial is the owner's; renewed by heartbeats.
    #[serde(default)]
    pub lease_until: f64,
}

/// A budget slot held while a searcher proposes (reserve, propose, commit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// The id the proposal will be recorded under.
    pub id: u64,
    pub owner: Owner,
}

/// One trial: what was proposed, and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub id: u64,
    pub stage: String,
    pub architecture: Vec<BlockRef>,
    pub hparams: Vec<(String, f64)>,
    pub parent: Option<u64>,
    pub teacher: Option<u64>,
    pub status: TrialStatus,
    pub owner: Option<Owner>,
    /// How many times training started (more than one after an interruption).
    pub attempts: u32,
    /// Lower is better: validation loss, or the table's.
    pub objective: Option<f64>,
    pub valid: Option<Metrics>,
    pub test: Option<Metrics>,
    pub parameters: u64,
    pub inherited: u64,
    pub epochs: u32,
    pub best_epoch: u32,
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub train_seconds: f64,
    /// Relative to the run directory.
    pub checkpoint: Option<PathBuf>,
    /// Why the trial failed or diverged.
    pub error: Option<String>,
    /// For an ensemble: its members (trial ids) and their weights.
    #[serde(default)]
    pub members: Vec<(u64, f64)>,
    /// Measured inference time per sample, in milliseconds (batches of 256).
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// The validation loss of every epoch trained, in order.
    #[serde(default)]
    pub losses: Vec<f64>,
    /// The trainer that last ran it (`HOST pid P trainer T`), for the report's timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl TrialRecord {
    /// A trial not yet run.
    pub fn new(id: u64, stage: &str, architecture: Vec<BlockRef>, hparams: Vec<(String, f64)>) -> Self {
        Self {
            id,
            stage: stage.into(),
            architecture,
            hparams,
            parent: None,
            teacher: None,
            status: TrialStatus::Pending,
            owner: None,
            attempts: 0,
            objective: None,
            valid: None,
            test: None,
            parameters: 0,
            inherited: 0,
            epochs: 0,
            best_epoch: 0,
            created: super::now(),
            started: None,
            finished: None,
            train_seconds: 0.0,
            checkpoint: None,
            error: None,
            members: Vec::new(),
            latency_ms: None,
            losses: Vec::new(),
            worker: None,
        }
    }

    /// Block names joined by `,`: the key of metrics tables.
    pub fn arch_key(&self) -> String {
        self.architecture.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(",")
    }

    /// The objective for ranking: lower is better, trials without one last.
    pub fn score(&self) -> f64 {
        self.objective.unwrap_or(f64::INFINITY)
    }

    /// An ensemble of other trials, with no model of its own (a residual trial is an
    /// ensemble that includes itself).
    pub fn is_combination(&self) -> bool {
        !self.members.is_empty() && !self.members.iter().any(|(id, _)| *id == self.id)
    }
}

/// The values early stopping recorded for one epoch of a search stage: each trial's best
/// validation loss up to that epoch (at rungs for `asha`, at every epoch for `median`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RungRecord {
    /// (trial id, best validation loss so far); one entry per trial, in arrival order.
    #[serde(default)]
    pub values: Vec<(u64, f64)>,
}

/// A line of the run's event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: f64,
    pub stage: Option<String>,
    pub trial: Option<u64>,
    pub message: String,
}

/// A searcher's state (`save` of msh:plugin@0.3.0), kept with the run every so many trials
/// so that a resumed or joining process restores it and tells the searcher only the
/// trials that finished after it, instead of replaying them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The searcher plugin, and the SHA-256 of the build that saved it: only the same
    /// build reads it back.
    pub plugin: String,
    pub sha256: String,
    /// The finish log position it covers: the searcher had been told every trial of the
    /// stage that finished before it.
    pub position: u64,
    /// Trials of the stage it covers.
    pub trials: u64,
    pub saved: f64,
    /// The plugin's bytes, opaque to msh.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// What the engine keeps of the trials it covers, so that a resume reads none of them:
    /// each trial's key (`SearchSession::key`) and id, every trial id (the parents a
    /// proposal may name), and the best trials' ids (intermixed ensembles).
    #[serde(default)]
    pub keys: Vec<(String, u64)>,
    #[serde(default)]
    pub ids: Vec<u64>,
    #[serde(default)]
    pub best: Vec<u64>,
}
