//! What a search stage has seen, kept up to date from the store's finish log so that each
//! proposal costs only the trials that finished since the last one: the searcher is told
//! each new trial once, every trial's key is kept so that none is trained twice, and the
//! best few are kept for intermixed ensembles. A process that starts on a stage with a
//! searcher snapshot in the store restores it, takes the keys, ids and best trials it
//! lists for the trials before it, and reads and tells the searcher only the trials that
//! finished after it; every so many trials it saves one in turn.

use std::collections::HashMap;

use msh_plugin::{PluginError, SearchSession};
use msh_store::TrialStatus;
use msh_store::{SnapshotRecord, Store, StoreError, TrialRecord};

#[derive(Debug)]
pub struct History {
    stage: String,
    /// Position in the store's finish log read so far.
    position: u64,
    pub session: SearchSession,
    /// Every finished trial of the stage by key (`SearchSession::key`), to its id.
    keys: HashMap<String, u64>,
    /// The best completed single-model trials, best first, at most `keep_best`.
    best: Vec<TrialRecord>,
    keep_best: usize,
    /// Notes for the event log, until `take_notes` reads them.
    notes: Vec<String>,
    /// Trials of the stage read from the finish log, and of those since the last snapshot.
    trials: u64,
    since_snapshot: u64,
    /// Epochs trained by the trials read (for `budget.epochs`), those a restored snapshot
    /// stands for excepted: their ids, until an epoch budget first asks (then summed once).
    epochs: u64,
    unsummed: Vec<u64>,
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
            notes: Vec::new(),
            trials: 0,
            since_snapshot: 0,
            epochs: 0,
            unsummed: Vec::new(),
        }
    }

    /// Starts from `snapshot` (the stage's latest in the store), before the first `refresh`:
    /// a new searcher restores it, the keys, ids and best trials it lists stand for the
    /// trials before it, and only the trials that finished after it are read and told. A
    /// snapshot of another plugin build is ignored, and one that does not restore is
    /// noted: then every trial is read and replayed, as without one.
    pub fn start_from(&mut self, snapshot: Option<SnapshotRecord>, store: &Store) -> Result<(), StoreError> {
        let Some(snapshot) = snapshot else { return Ok(()) };
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
            return Ok(());
        }
        if !self.session.keeps_snapshots() || self.position > 0 {
            return Ok(());
        }
        let name = plugin.name.clone();
        let started = std::time::Instant::now();
        if let Err(e) = self.session.restore(snapshot.state, snapshot.trials, &snapshot.ids) {
            let note = format!(
                "searcher `{name}`: its snapshot of {} trials could not be restored ({e}); every trial is replayed \
                 instead",
                snapshot.trials
            );
            tracing::warn!("{note}");
            self.notes.push(note);
            return Ok(());
        }
        self.keys = snapshot.keys.into_iter().collect();
        self.best.clear();
        for id in snapshot.best {
            let record = store.trial(id)?;
            self.offer_best(&record);
        }
        self.position = snapshot.position;
        self.trials = snapshot.trials;
        // The snapshot keeps no epoch count; only a run with an epoch budget needs one.
        self.unsummed = snapshot.ids.clone();
        tracing::debug!(
            "search stage `{}`: searcher snapshot of {} trials restored in {:.3} s",
            self.stage,
            self.trials,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Tells the searcher an earlier run's trials (warm start), unless a snapshot restored
    /// its state, which holds them already.
    pub fn tell_earlier(&mut self, trials: &[TrialRecord]) {
        if self.position == 0 && !trials.is_empty() {
            self.session.observe(trials);
        }
    }

    /// Notes for the event log (a snapshot that would not restore), and the searcher's own.
    pub fn take_notes(&mut self) -> Vec<String> {
        let mut notes = std::mem::take(&mut self.notes);
        notes.extend(self.session.take_notes());
        notes
    }

    /// Reads what finished since the last call, so the searcher sees every trial other
    /// trainers and processes have recorded.
    pub fn refresh(&mut self, store: &Store) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (trials, position) = store.finished_since(self.position)?;
        self.position = position;
        let new = self.absorb(trials);
        if new > 1000 {
            tracing::debug!(
                "search stage `{}`: {new} trials read in {:.3} s",
                self.stage,
                started.elapsed().as_secs_f64()
            );
        }
        self.since_snapshot += new;
        Ok(())
    }

    /// Tells the searcher the stage's trials among `records`, noting their keys and the
    /// best; how many there were. One at a time, so that a long replay never holds every
    /// record beside its searcher-side copy.
    fn absorb(&mut self, records: Vec<TrialRecord>) -> u64 {
        let mut new = 0;
        for record in records {
            if record.stage != self.stage {
                continue;
            }
            if !record.is_combination() {
                self.keys.entry(self.session.key(&record.architecture, &record.hparams)).or_insert(record.id);
            }
            self.offer_best(&record);
            self.epochs += u64::from(record.epochs);
            self.session.observe(std::slice::from_ref(&record));
            new += 1;
        }
        self.trials += new;
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
            saved: msh_store::now(),
            state,
            keys: self.keys.iter().map(|(key, id)| (key.clone(), *id)).collect(),
            ids: self.session.known().collect(),
            best: self.best.iter().map(|t| t.id).collect(),
        }))
    }

    /// Keeps `trial` among the best if it is one: a completed trial of a model of its own
    /// (a residual trial counts) with a finite objective.
    fn offer_best(&mut self, trial: &TrialRecord) {
        let score = TrialRecord::score;
        let usable = trial.status == TrialStatus::Completed && !trial.is_combination() && score(trial).is_finite();
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
        running.iter().find(|t| self.session.key(&t.architecture, &t.hparams) == key).map(|t| t.id)
    }

    /// Epochs trained by the stage's finished trials read so far; the first call after a
    /// snapshot restore reads the trials it stands for.
    pub fn epochs(&mut self, store: &Store) -> Result<u64, StoreError> {
        if !self.unsummed.is_empty() {
            let ids: std::collections::HashSet<u64> = std::mem::take(&mut self.unsummed).into_iter().collect();
            let mut sum = 0;
            store.each_trial(|t| {
                if t.stage == self.stage && ids.contains(&t.id) {
                    sum += u64::from(t.epochs);
                }
                Ok(())
            })?;
            self.epochs += sum;
        }
        Ok(self.epochs)
    }

    /// The best completed single-model trials, best first.
    pub fn best(&self) -> &[TrialRecord] {
        &self.best
    }
}
