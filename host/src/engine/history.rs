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
    /// Finished and completed trials of the stage, including those no longer held.
    pub finished: u64,
    pub completed: u64,
    /// Trials that are members of an ensemble recorded in the stage (most recent last).
    pub ensemble_members: std::collections::BTreeSet<u64>,
}

impl History {
    pub fn new(stage: &str, limit: Option<usize>) -> Self {
        Self {
            stage: stage.into(),
            position: 0,
            limit,
            best: Vec::new(),
            recent: VecDeque::new(),
            finished: 0,
            completed: 0,
            ensemble_members: Default::default(),
        }
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
            self.completed += u64::from(trial.status == crate::store::TrialStatus::Completed);
            self.ensemble_members.extend(trial.members.iter().map(|(id, _)| *id));
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

    /// What the plugin contract's trial record cannot say, as `msh.*` entries of the
    /// searcher's config: how many trials completed (a bounded history holds fewer), and
    /// which are ensemble members.
    pub fn facts(&self) -> Vec<(String, String)> {
        let members: Vec<String> = self.ensemble_members.iter().map(u64::to_string).collect();
        vec![
            ("msh.completed_trials".into(), self.completed.to_string()),
            ("msh.ensemble_members".into(), members.join(",")),
        ]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreError, TrialRecord};

    fn trial(id: u64, objective: f64, members: Vec<(u64, f64)>) -> TrialRecord {
        let status = crate::store::TrialStatus::Completed;
        TrialRecord { status, objective: Some(objective), members, ..TrialRecord::new(id, "s", vec![], vec![]) }
    }

    #[test]
    fn a_bounded_history_keeps_the_best_and_the_recent_and_reports_the_rest() {
        let dir = std::env::temp_dir().join(format!("msh-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let objectives = [5.0, 1.0, 4.0, 3.0, 2.0, 6.0];
        store
            .write(|t| -> Result<(), StoreError> {
                for (id, o) in objectives.iter().enumerate() {
                    let members = if id == 5 { vec![(1, 0.5), (4, 0.5)] } else { vec![] };
                    t.put_trial(&trial(id as u64, *o, members))?;
                }
                Ok(())
            })
            .unwrap();
        let mut history = History::new("s", Some(4));
        store.write(|t| history.refresh(t)).unwrap();
        let ids: Vec<u64> = history.view().iter().map(|t| t.id).collect();
        // The two best (1, 4) and the two most recent (4, 5), once each, oldest first.
        assert_eq!(ids, [1, 4, 5]);
        let facts = history.facts();
        assert_eq!(facts[0], ("msh.completed_trials".to_string(), "6".to_string()));
        assert_eq!(facts[1], ("msh.ensemble_members".to_string(), "1,4".to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
