//! A running tally of a run's trials, kept beside them and updated by every trial write:
//! how many of each stage have each status, their training seconds and the best one. It
//! lets `msh status` and `msh best` answer from one record instead of reading 100,000.
//! Runs created before it (and stores without a run record) have none; they are read in full.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TrialRecord, TrialStatus};

/// Per stage name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub stages: BTreeMap<String, StageTally>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTally {
    /// Trials by status, in `TrialStatus::ALL`'s order.
    pub counts: [u64; 6],
    /// Training seconds of the finished trials.
    pub finished_seconds: f64,
    /// The completed trial with the lowest finite objective (first id on ties), and it.
    pub best: Option<(u64, f64)>,
    /// Set when the best trial was rewritten worse: the best is then found by reading
    /// every trial (a result is not rewritten in practice; this keeps the tally honest).
    #[serde(default)]
    pub best_unknown: bool,
}

fn slot(status: TrialStatus) -> usize {
    TrialStatus::ALL.iter().position(|s| *s == status).expect("every status is in ALL")
}

/// A trial `best_trial` may pick: completed, with a finite objective.
fn candidate(t: &TrialRecord) -> Option<f64> {
    (t.status == TrialStatus::Completed).then_some(t.objective).flatten().filter(|o| o.is_finite())
}

impl Tally {
    /// Counts `after` in place of `before` (the record it replaces, if any).
    pub fn replace(&mut self, before: Option<&TrialRecord>, after: &TrialRecord) {
        if let Some(old) = before {
            let stage = self.stages.entry(old.stage.clone()).or_default();
            stage.counts[slot(old.status)] = stage.counts[slot(old.status)].saturating_sub(1);
            if old.status.is_finished() {
                stage.finished_seconds -= old.train_seconds;
            }
            let worse = candidate(after).filter(|_| after.stage == old.stage).is_none_or(|o| Some(o) > candidate(old));
            if stage.best.is_some_and(|(id, _)| id == old.id) && worse {
                stage.best_unknown = true;
            }
        }
        let stage = self.stages.entry(after.stage.clone()).or_default();
        stage.counts[slot(after.status)] += 1;
        if after.status.is_finished() {
            stage.finished_seconds += after.train_seconds;
        }
        if let Some(objective) = candidate(after) {
            let better = stage.best.is_none_or(|(id, best)| objective < best || (objective == best && after.id <= id));
            if better {
                stage.best = Some((after.id, objective));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: u64, status: TrialStatus, objective: Option<f64>) -> TrialRecord {
        TrialRecord { status, objective, train_seconds: 1.0, ..TrialRecord::new(id, "search", vec![], vec![]) }
    }

    #[test]
    fn the_tally_follows_each_trial_through_its_statuses() {
        let mut tally = Tally::default();
        let running = trial(1, TrialStatus::Running, None);
        tally.replace(None, &running);
        let done = trial(1, TrialStatus::Completed, Some(0.5));
        tally.replace(Some(&running), &done);
        tally.replace(None, &trial(2, TrialStatus::Completed, Some(0.7)));
        tally.replace(None, &trial(3, TrialStatus::Failed, None));
        let stage = &tally.stages["search"];
        assert_eq!(stage.counts, [2, 0, 1, 0, 0, 0]);
        assert_eq!(stage.finished_seconds, 3.0);
        assert_eq!(stage.best, Some((1, 0.5)));
        assert!(!stage.best_unknown);
        // The best trial rewritten worse: the tally no longer knows the best.
        tally.replace(Some(&done), &trial(1, TrialStatus::Completed, Some(0.9)));
        assert!(tally.stages["search"].best_unknown);
    }
}
