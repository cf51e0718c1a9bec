//! What a search stage has seen, kept up to date from the store's finish log so that each
//! proposal costs only the trials that finished since the last one: the searcher is told
//! each new trial once, every trial's key is kept so that none is trained twice, and the
//! best few are kept for intermixed ensembles.

use std::collections::HashMap;

use crate::plugin::{SearchSession, types};
use crate::store::{Store, StoreError, TrialRecord};

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
        }
    }

    /// Reads what finished since the last call, so the searcher sees every trial other
    /// trainers and processes have recorded.
    pub fn refresh(&mut self, store: &Store) -> Result<(), StoreError> {
        let (trials, position) = store.finished_since(self.position)?;
        self.position = position;
        let mut new = Vec::new();
        for record in trials {
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
        self.session.observe(new);
        Ok(())
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
