//! The history a searcher is handed, kept up to date from the store's finish log so that
//! each proposal costs only the trials that finished since the last one. With a limit it
//! holds the best half and the most recent half, so memory does not grow with the run.

use std::collections::VecDeque;

use crate::plugin::types;
use crate::store::{StoreError, Txn};

#[derive(Debug)]
pub struct History {
    stage: String,
    /// Position in the store's finish log read so far.
    position: u64,
    limit: Option<usize>,
    /// Every trial (no limit), or the best ones, best first (with a limit).
    best: Vec<types::Trial>,
    recent: VecDeque<types::Trial>,
    /// Finished trials of the stage, including those no longer held.
    pub finished: u64,
}

impl History {
    pub fn new(stage: &str, limit: Option<usize>) -> Self {
        Self { stage: stage.into(), position: 0, limit, best: Vec::new(), recent: VecDeque::new(), finished: 0 }
    }

    /// Reads what finished since the last call (inside the claiming transaction, so the
    /// searcher sees every trial other trainers and processes have recorded).
    pub fn refresh(&mut self, txn: &Txn<'_>) -> Result<(), StoreError> {
        let (trials, position) = txn.finished_since(self.position)?;
        self.position = position;
        for trial in trials {
            if trial.stage != self.stage {
                continue;
            }
            self.finished += 1;
            self.push(trial.to_plugin());
        }
        Ok(())
    }

    fn push(&mut self, trial: types::Trial) {
        let Some(limit) = self.limit else {
            self.best.push(trial);
            return;
        };
        let keep_best = limit.div_ceil(2);
        let keep_recent = limit - keep_best;
        let score = |t: &types::Trial| match (t.status, t.objective) {
            (types::TrialStatus::Completed, Some(o)) if o.is_finite() => o,
            _ => f64::INFINITY,
        };
        if score(&trial).is_finite() {
            let at = self.best.partition_point(|t| score(t) <= score(&trial));
            if at < keep_best {
                self.best.insert(at, trial.clone());
                self.best.truncate(keep_best);
            }
        }
        if keep_recent > 0 {
            self.recent.push_back(trial);
            if self.recent.len() > keep_recent {
                self.recent.pop_front();
            }
        }
    }

    /// The trials to hand the searcher, oldest first, each once.
    pub fn view(&self) -> Vec<types::Trial> {
        if self.limit.is_none() {
            return self.best.clone();
        }
        let mut all: Vec<types::Trial> = self.best.iter().cloned().collect();
        all.extend(self.recent.iter().filter(|t| !self.best.iter().any(|b| b.id == t.id)).cloned());
        all.sort_by_key(|t| t.id);
        all
    }
}
