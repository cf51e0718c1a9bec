//! What a search stage has seen, kept up to date from the store's finish log so that each
//! proposal costs only the trials that finished since the last one: the searcher is told
//! each new trial once, every trial's key is kept so that none is trained twice, and the
//! best few are kept for intermixed ensembles. A process that starts on a stage with a
//! searcher snapshot in the store restores it and tells the searcher only the trials that
//! finished after it; every so many trials it saves one in turn.

use std::collections::HashMap;

use crate::plugin::{PluginError, SearchSession, types};
use crate::store::{SnapshotRecord, StoreError, TrialRecord, Txn};

#[derive(Debug)]
pub struct History {
    stage: String,
    /// Position in the store's finish log read so far.
    position: u64,
    pub session: SearchSession,
    /// Every finished trial of the stage by key (`SearchSession::key`), to its id.
    keys: HashMap<String, u64>,
    /// The best completed single-model trials, best first, at most `keep_best`.
    best: Vec<types::Trial>,
    keep_best: usize,
    /// A stored snapshot to start from, until the first `refresh` reads the trials it covers.
    resume: Option<SnapshotRecord>,
    /// Trials of the stage read from the finish log, and of those since the last snapshot.
    trials: u64,
    since_snapshot: u64,
}

impl History {
    pub fn new(stage: &str, session: SearchSession, keep_best: usize) -> Self {
        Self {
            stage: stage.into(),
            position: 0,
            session,
            keys: HashMap::new(),
            best: Vec::new(),
            keep_best: keep_best.max(1),
            resume: None,
            trials: 0,
            since_snapshot: 0,
        }
    }

    /// Starts from `snapshot` (the stage's latest in the store), when the searcher can
    /// read it: the same build of the same plugin, of a contract that has snapshots.
    /// Anything else is ignored with a note in the tracing log: every trial is replayed.
    pub fn resume_from(&mut self, snapshot: Option<SnapshotRecord>) {
        let Some(snapshot) = snapshot else { return };
        let plugin = self.session.plugin();
        if snapshot.sha256 != plugin.sha256 || snapshot.plugin != plugin.name {
            tracing::warn!(
                "search stage `{}`: the searcher snapshot was saved by plugin `{}` (sha256 {}), not `{}` (sha256 {}); \
                 ignored, every trial is replayed",
                self.stage,
                snapshot.plugin,
                snapshot.sha256,
                plugin.name,
                plugin.sha256
            );
        } else if self.session.keeps_snapshots() {
            self.resume = Some(snapshot);
        }
    }

    /// Reads what finished since the last call (inside the claiming transaction, so the
    /// searcher sees every trial other trainers and processes have recorded).
    pub fn refresh(&mut self, txn: &Txn<'_>) -> Result<(), StoreError> {
        if let Some(snapshot) = self.resume.take() {
            // The trials the snapshot covers: known (keys, the best, parents), not told.
            let until = snapshot.position.min(txn.finished_count()?);
            let covered = txn.finished_between(self.position, until)?;
            let covered = self.absorb(covered);
            self.session.resume_from(snapshot.state, covered);
            self.position = until;
        }
        let (trials, position) = txn.finished_since(self.position)?;
        self.position = position;
        let new = self.absorb(trials);
        self.since_snapshot += new.len() as u64;
        self.session.observe(new);
        Ok(())
    }

    /// The stage's trials among `records`, their keys and the best of them noted.
    fn absorb(&mut self, records: Vec<TrialRecord>) -> Vec<types::Trial> {
        let mut new = Vec::new();
        for record in records {
            if record.stage != self.stage {
                continue;
            }
            let trial = crate::plugin::convert::trial(&record);
            if !record.is_combination() {
                self.keys.entry(self.session.key(&trial.architecture, &trial.hparams)).or_insert(trial.id);
            }
            self.offer_best(&trial);
            new.push(trial);
        }
        self.trials += new.len() as u64;
        new
    }

    /// Whether `every` trials of the stage have been read since the last snapshot (and the
    /// searcher may keep one).
    pub fn snapshot_due(&self, every: u64) -> bool {
        every > 0 && self.since_snapshot >= every && self.session.keeps_snapshots()
    }

    /// Whether any trial has been read since the last snapshot.
    pub fn snapshot_stale(&self) -> bool {
        self.since_snapshot > 0 && self.session.keeps_snapshots()
    }

    /// The searcher's snapshot, covering every trial read so far; `None` when it keeps none.
    /// The next one is due `every` trials later even when this one failed.
    pub fn snapshot(&mut self) -> Result<Option<SnapshotRecord>, PluginError> {
        self.since_snapshot = 0;
        let Some(state) = self.session.snapshot()? else { return Ok(None) };
        let plugin = self.session.plugin();
        Ok(Some(SnapshotRecord {
            plugin: plugin.name.clone(),
            sha256: plugin.sha256.clone(),
            position: self.position,
            trials: self.trials,
            saved: crate::store::now(),
            state,
        }))
    }

    fn offer_best(&mut self, trial: &types::Trial) {
        let score = |t: &types::Trial| t.objective.unwrap_or(f64::INFINITY);
        let usable = matches!(trial.status, types::TrialStatus::Completed)
            && matches!(trial.kind, types::TrialKind::Single)
            && score(trial).is_finite();
        if usable {
            let at = self.best.partition_point(|t| score(t) <= score(trial));
            if at < self.keep_best {
                self.best.insert(at, trial.clone());
                self.best.truncate(self.keep_best);
            }
        }
    }

    /// The trial already recorded under `key`, if any.
    pub fn trained(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// The trial among `running` whose key (`SearchSession::key`) is `key`, if any.
    pub fn running_twin(&self, running: &[TrialRecord], key: &str) -> Option<u64> {
        running
            .iter()
            .map(crate::plugin::convert::trial)
            .find(|t| self.session.key(&t.architecture, &t.hparams) == key)
            .map(|t| t.id)
    }

    /// The best completed single-model trials, best first.
    pub fn best(&self) -> &[types::Trial] {
        &self.best
    }
}
