//! Warm start (`warm_start: {from: DIR}`): an earlier run's finished search trials, read
//! once when the run opens, are told to each search stage's searcher before any trial of
//! this run, and their checkpoints serve weight sharing. They keep their results but take
//! ids of their own (`EARLIER_IDS` + the earlier id), so they never collide with this
//! run's trials, and they are not in this run's store: no budget counts them, no report
//! lists them, and a searcher that proposes one of their architectures trains it anew.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use msh_store::{Store, TrialRecord};
use msh_vocab::space::SearchSpace;

use super::EngineError;

/// Ids of earlier trials start here (this run's count up from 0).
pub const EARLIER_IDS: u64 = 1 << 48;

/// The earlier run's trials that fit this run's space.
#[derive(Debug)]
pub struct Earlier {
    dir: PathBuf,
    /// Only this stage of the earlier run (`warm_start.stage`).
    stage: Option<String>,
    /// By id (renumbered), in the order they finished.
    trials: Vec<TrialRecord>,
    index: HashMap<u64, usize>,
}

impl Earlier {
    /// Reads the finished single-model search trials of the run in `dir` whose blocks
    /// `space` allows; block parameters and hyper-parameters the space does not declare
    /// are dropped.
    pub fn load(dir: &Path, stage: Option<&str>, space: &SearchSpace, run_dir: &Path) -> Result<Self, EngineError> {
        let fail = |reason: String| EngineError::Stage(format!("warm start from {}: {reason}", dir.display()));
        let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
        if same(dir, run_dir) {
            return Err(fail("that is this run's own directory".into()));
        }
        let store = Store::open(dir).map_err(|e| fail(e.to_string()))?;
        let searches: BTreeSet<String> = store
            .stages()
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .filter(|s| s.kind == "search")
            .map(|s| s.name)
            .collect();
        if let Some(stage) = stage.filter(|s| !searches.contains(*s)) {
            let names: Vec<&str> = searches.iter().map(String::as_str).collect();
            return Err(fail(format!("it has no search stage `{stage}` (it has: {})", names.join(", "))));
        }
        let mut trials: Vec<TrialRecord> = store
            .trials()
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .filter(|t| searches.contains(&t.stage) && stage.is_none_or(|s| t.stage == s))
            .filter(|t| t.status.is_finished() && t.members.is_empty())
            .filter_map(|t| fit(t, space))
            .collect();
        trials.sort_by(|a, b| a.finished.unwrap_or(0.0).total_cmp(&b.finished.unwrap_or(0.0)));
        let kept: BTreeSet<u64> = trials.iter().map(|t| t.id).collect();
        for trial in &mut trials {
            trial.id += EARLIER_IDS;
            trial.parent = trial.parent.filter(|p| kept.contains(p)).map(|p| p + EARLIER_IDS);
            trial.teacher = None;
        }
        let index = trials.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        Ok(Self { dir: dir.to_path_buf(), stage: stage.map(String::from), trials, index })
    }

    /// The trials to tell the searcher of search stage `stage`: the earlier run's stage of
    /// that name if it has one, else all of them.
    pub fn for_stage(&self, stage: &str) -> Vec<TrialRecord> {
        let named = self.stage.is_none() && self.trials.iter().any(|t| t.stage == stage);
        self.trials.iter().filter(|t| !named || t.stage == stage).cloned().collect()
    }

    /// An earlier trial by its id here, and the directory its checkpoint is relative to.
    pub fn trial(&self, id: u64) -> Option<(&TrialRecord, &Path)> {
        self.index.get(&id).map(|&i| (&self.trials[i], self.dir.as_path()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `trial` cut to `space`: `None` when it uses a block the space lacks.
fn fit(mut trial: TrialRecord, space: &SearchSpace) -> Option<TrialRecord> {
    for block in &mut trial.architecture {
        let allowed = space.blocks.iter().find(|b| b.name == block.name)?;
        block.params.retain(|(name, _)| allowed.params.iter().any(|p| &p.name == name));
    }
    trial.hparams.retain(|(name, _)| space.hparams.iter().any(|h| &h.name == name));
    Some(trial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use msh_vocab::space::SpaceBlock;
    use msh_vocab::{BlockRef, ParamValue};

    #[test]
    fn trials_outside_the_space_are_left_out_and_the_rest_cut_to_it() {
        let block =
            |name: &str| SpaceBlock { name: name.into(), description: String::new(), params: vec![], ranks: vec![] };
        let space =
            SearchSpace { blocks: vec![block("a")], input_rank: 2, min_depth: 1, max_depth: 3, hparams: vec![] };
        let trial = |names: &[&str]| {
            let architecture = names
                .iter()
                .map(|n| BlockRef { name: n.to_string(), params: vec![("p".into(), ParamValue::Int(3))] })
                .collect();
            TrialRecord::new(0, "search", architecture, vec![("learning_rate".into(), 0.01)])
        };
        assert!(fit(trial(&["a", "b"]), &space).is_none());
        let kept = fit(trial(&["a", "a"]), &space).expect("every block allowed");
        assert!(kept.architecture.iter().all(|b| b.params.is_empty()), "undeclared parameters dropped");
        assert!(kept.hparams.is_empty(), "undeclared hyper-parameters dropped");
    }
}
