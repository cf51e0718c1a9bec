//! Questions the CLI and the stages ask of a run's trials: the best one, the Pareto
//! front, and whether a running trial's worker is gone.

use super::{Owner, Store, StoreError, TrialRecord, TrialStatus};

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
    // The tally names each stage's best: one trial read instead of all.
    if let Some(tally) = store.tally()? {
        let bests: Vec<_> =
            tally.stages.iter().filter(|(name, _)| stage.map_or_else(|| is_search(name), |s| *name == s)).collect();
        if bests.iter().all(|(_, t)| !t.best_unknown) {
            let best = bests.iter().filter_map(|(_, t)| t.best).min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            return best.map(|(id, _)| store.trial(id)).transpose();
        }
    }
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

/// A running trial whose worker is gone (its lease ran out, or its process on this
/// machine exited): it stays `running` in the store until a worker requeues it, and views
/// show it as stale rather than as running or failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stale {
    /// The trainer that held it (`HOST pid P trainer T`).
    pub worker: String,
    /// When its lease ran (or runs) out, in store-clock seconds.
    pub lease_until: f64,
    /// `lease expired`, `process exited` or `no owner`.
    pub reason: &'static str,
}

/// Who looks at a run without working on it: `stale` judges owners as this one sees them.
pub fn viewer() -> Owner {
    Owner::this_process(super::random_u64())
}

/// Whether `trial` is running for a worker that is gone, as `viewer` sees it at store-clock `now`.
pub fn stale(trial: &TrialRecord, now: f64, viewer: &Owner) -> Option<Stale> {
    if trial.status != TrialStatus::Running {
        return None;
    }
    super::lost(trial, now, viewer)?;
    let lease_until = trial.owner.map_or(trial.started.unwrap_or(trial.created), |o| o.lease_until);
    let reason = match trial.owner {
        None => "no owner",
        Some(o) if o.lease_until < now => "lease expired",
        Some(_) => "process exited",
    };
    Some(Stale { worker: trial.worker.clone().unwrap_or_else(|| "an unknown trainer".into()), lease_until, reason })
}
