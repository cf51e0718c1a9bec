//! Questions the CLI and the stages ask of a run's trials: the best one, and the Pareto
//! front.

use super::{Store, StoreError, TrialRecord, TrialStatus};

/// The completed trial with the lowest objective (validation loss), among `stage`'s
/// trials, or when `None` among those of every search, ensemble and distill stage
/// (retrained models have no validation split to compare). Stopped trials are not
/// candidates: early stopping ranked them below others, on fewer epochs. Either rule lets
/// the first trial to reach an epoch go on, so trials that train leave a completed one.
pub fn best_trial(store: &Store, stage: Option<&str>) -> Result<Option<TrialRecord>, StoreError> {
    let stages = store.stages()?;
    let is_search = |name: &str| {
        stages.iter().any(|s| s.name == name && matches!(s.kind.as_str(), "search" | "ensemble" | "distill"))
    };
    Ok(store
        .trials()?
        .into_iter()
        .filter(|t| t.status == TrialStatus::Completed && t.objective.is_some_and(f64::is_finite))
        .filter(|t| stage.map_or_else(|| is_search(&t.stage), |s| t.stage == s))
        .min_by(|a, b| a.score().total_cmp(&b.score())))
}

/// The completed trials and ensembles (of the stages `best_trial` compares) that no other
/// beats on validation loss, parameter count and, where measured, latency at once;
/// ordered by validation loss.
pub fn pareto_front(store: &Store) -> Result<Vec<TrialRecord>, StoreError> {
    let stages = store.stages()?;
    let eligible = |t: &TrialRecord| {
        t.status == TrialStatus::Completed
            && t.objective.is_some_and(f64::is_finite)
            && stages.iter().any(|s| s.name == t.stage && matches!(s.kind.as_str(), "search" | "ensemble" | "distill"))
    };
    let candidates: Vec<TrialRecord> = store.trials()?.into_iter().filter(eligible).collect();
    let costs = |t: &TrialRecord| {
        let latency = if t.members.is_empty() { t.latency_ms.unwrap_or(0.0) } else { f64::INFINITY };
        [t.score(), t.parameters as f64, latency]
    };
    let dominates = |a: &TrialRecord, b: &TrialRecord| {
        let (a, b) = (costs(a), costs(b));
        a.iter().zip(&b).all(|(x, y)| x <= y) && a.iter().zip(&b).any(|(x, y)| x < y)
    };
    let mut front: Vec<TrialRecord> =
        candidates.iter().filter(|t| !candidates.iter().any(|o| dominates(o, t))).cloned().collect();
    front.sort_by(|a, b| a.score().total_cmp(&b.score()));
    Ok(front)
}
