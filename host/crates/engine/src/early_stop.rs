//! Early stopping of search trials (multi-fidelity): at chosen epochs a burn trial records
//! its best validation loss so far for its stage, and goes on only if it compares well
//! with the other trials' values at the same epoch. `asha` is asynchronous successive
//! halving, stopping variant (Optuna's `SuccessiveHalvingPruner`); `hyperband` runs ASHA
//! in brackets of growing grace periods, one bracket per trial in turn (asynchronous
//! Hyperband, stopping variant: Optuna's `HyperbandPruner`); `median` is the median rule.
//! The values live in the store's `rungs` table, so every trainer process of a run shares
//! them and a resumed run keeps them.

use crate::workflow::{EarlyStopping, StopMode};
use msh_store::{Store, StoreError};

/// Whether the rule looks at `epoch` (1-based): a value is recorded there and the trial
/// may stop.
/// For `hyperband`, the rungs of its first bracket, which hold every other bracket's.
pub fn is_decision_epoch(rule: &EarlyStopping, epoch: usize) -> bool {
    match rule.mode {
        StopMode::Median => epoch >= rule.grace_epochs,
        StopMode::Asha | StopMode::Hyperband => {
            // Rungs: grace · η^k.
            let eta = rule.reduction_factor().max(2);
            let mut rung = rule.grace_epochs.max(1);
            while rung < epoch {
                rung = rung.saturating_mul(eta);
            }
            rung == epoch
        }
    }
}

/// Whether a trial whose best validation loss so far is `own` goes on, given the other
/// trials' values recorded at the same epoch.
pub fn keep_going(rule: &EarlyStopping, own: f64, others: &[f64]) -> bool {
    // Values that are not finite never count as better, nor as peers.
    let others: Vec<f64> = others.iter().copied().filter(|v| v.is_finite()).collect();
    match rule.mode {
        StopMode::Asha | StopMode::Hyperband => {
            let n = others.len() + 1;
            if n < rule.min_trials {
                return true;
            }
            // Within the best ceil(n / η) of the n values, ties in the trial's favour.
            let kept = n.div_ceil(rule.reduction_factor().max(2));
            others.iter().filter(|v| **v < own).count() < kept
        }
        StopMode::Median => {
            if others.len() < rule.min_trials.max(1) {
                return true;
            }
            !(own > median(others))
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// The brackets of `hyperband` for trials of `epochs` epochs: grace periods
/// `grace_epochs · η^b` up to `epochs`.
pub fn brackets(rule: &EarlyStopping, epochs: usize) -> usize {
    let eta = rule.reduction_factor().max(2);
    let mut grace = rule.grace_epochs.max(1);
    let mut count = 1;
    while grace.saturating_mul(eta) <= epochs {
        grace *= eta;
        count += 1;
    }
    count
}

/// The rule trial `trial` follows, and the name its values are kept under: for
/// `hyperband`, ASHA from its bracket's grace period, with rungs of the bracket's own.
pub fn rule_of(rule: &EarlyStopping, stage: &str, trial: u64, epochs: usize) -> (EarlyStopping, String) {
    if rule.mode != StopMode::Hyperband {
        return (*rule, stage.to_string());
    }
    let bracket = (trial % brackets(rule, epochs) as u64) as u32;
    let grace = rule.grace_epochs.max(1).saturating_mul(rule.reduction_factor().max(2).pow(bracket));
    (EarlyStopping { mode: StopMode::Asha, grace_epochs: grace, ..*rule }, format!("{stage}#bracket{bracket}"))
}

/// Records trial `trial`'s best validation loss so far (`best`) for `stage` at `epoch`
/// and decides whether it goes on; one transaction, and none at epochs the rule skips. A
/// trial trained again (requeued) replaces its earlier value. `epochs` is the trial's
/// length (Hyperband's brackets span it).
pub fn judge(
    store: &Store,
    stage: &str,
    rule: &EarlyStopping,
    trial: u64,
    (epoch, epochs): (usize, usize),
    best: f64,
) -> Result<bool, StoreError> {
    let (rule, rungs) = rule_of(rule, stage, trial, epochs);
    let rule = &rule;
    if !is_decision_epoch(rule, epoch) || !best.is_finite() {
        return Ok(true);
    }
    let key = u32::try_from(epoch).unwrap_or(u32::MAX);
    store.write(|t| {
        let mut rung = t.rung(&rungs, key)?;
        match rung.values.iter_mut().find(|(id, _)| *id == trial) {
            Some(entry) => entry.1 = best,
            None => rung.values.push((trial, best)),
        }
        t.put_rung(&rungs, key, &rung)?;
        let others: Vec<f64> = rung.values.iter().filter(|(id, _)| *id != trial).map(|(_, v)| *v).collect();
        let keep = keep_going(rule, best, &others);
        if !keep {
            let mode = match rungs.rsplit_once('#') {
                Some((_, bracket)) => format!("hyperband, {bracket}"),
                None => rule.mode.name().to_string(),
            };
            t.log(
                Some(stage),
                Some(trial),
                format!(
                    "early stopping ({mode}) at epoch {epoch}: best loss {best:.4} among {} trials",
                    others.len() + 1
                ),
            )?;
        }
        Ok(keep)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asha(grace: usize, eta: usize, min_trials: usize) -> EarlyStopping {
        EarlyStopping { mode: StopMode::Asha, grace_epochs: grace, reduction_factor: Some(eta), min_trials }
    }

    fn median_rule(grace: usize, min_trials: usize) -> EarlyStopping {
        EarlyStopping { mode: StopMode::Median, grace_epochs: grace, reduction_factor: None, min_trials }
    }

    #[test]
    fn asha_rungs_are_grace_times_powers_of_eta() {
        let rungs = |rule: &EarlyStopping| (1..=30).filter(|&e| is_decision_epoch(rule, e)).collect::<Vec<_>>();
        assert_eq!(rungs(&asha(1, 3, 1)), [1, 3, 9, 27]);
        assert_eq!(rungs(&asha(2, 2, 1)), [2, 4, 8, 16]);
        assert_eq!(rungs(&asha(5, 3, 1)), [5, 15]);
        // The default η is 3.
        let default = EarlyStopping { reduction_factor: None, ..asha(1, 3, 1) };
        assert_eq!(rungs(&default), [1, 3, 9, 27]);
    }

    #[test]
    fn asha_keeps_the_best_ceil_n_over_eta() {
        let rule = asha(1, 3, 1);
        // n = 4: the best ceil(4 / 3) = 2 go on.
        let others = [0.1, 0.5, 0.9];
        assert!(keep_going(&rule, 0.05, &others));
        assert!(keep_going(&rule, 0.3, &others));
        assert!(!keep_going(&rule, 0.6, &others));
        assert!(!keep_going(&rule, 1.0, &others));
        // Ties count in the trial's favour.
        assert!(keep_going(&rule, 0.5, &others));
        // η = 2 with n = 6: the best 3.
        let rule = asha(1, 2, 1);
        let others = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert!(keep_going(&rule, 0.25, &others));
        assert!(!keep_going(&rule, 0.35, &others));
        // The first trial at a rung is its best.
        assert!(keep_going(&rule, 9.0, &[]));
    }

    #[test]
    fn asha_waits_for_min_trials_at_the_rung() {
        let rule = asha(1, 2, 3);
        // Two values (the trial's included) are fewer than 3: no decision.
        assert!(keep_going(&rule, 9.0, &[0.1]));
        // Three: the worst of them stops.
        assert!(!keep_going(&rule, 9.0, &[0.1, 0.2]));
        // Values that are not finite are not peers.
        assert!(keep_going(&rule, 9.0, &[0.1, f64::NAN]));
    }

    #[test]
    fn median_stops_trials_worse_than_the_others_median() {
        let rule = median_rule(2, 2);
        assert!(!is_decision_epoch(&rule, 1));
        assert!(is_decision_epoch(&rule, 2) && is_decision_epoch(&rule, 7));
        assert!(keep_going(&rule, 0.5, &[0.2, 0.8]));
        assert!(!keep_going(&rule, 0.51, &[0.2, 0.8, 0.3]), "median 0.3");
        assert!(keep_going(&rule, 0.3, &[0.2, 0.8, 0.3]), "equal to the median goes on");
        // Fewer other trials than min_trials: no decision.
        assert!(keep_going(&rule, 9.0, &[0.1]));
    }

    #[test]
    fn hyperband_gives_trials_brackets_in_turn_each_with_its_own_rungs() {
        let rule = EarlyStopping { mode: StopMode::Hyperband, ..asha(1, 3, 1) };
        // Ten epochs: grace 1, 3 and 9.
        assert_eq!(brackets(&rule, 10), 3);
        assert_eq!(brackets(&rule, 8), 2);
        let graces: Vec<usize> = (0..4).map(|t| rule_of(&rule, "s", t, 10).0.grace_epochs).collect();
        assert_eq!(graces, [1, 3, 9, 1]);
        let (bracket, rungs) = rule_of(&rule, "s", 1, 10);
        assert_eq!((bracket.mode, rungs.as_str()), (StopMode::Asha, "s#bracket1"));
        assert_eq!((1..=10).filter(|&e| is_decision_epoch(&bracket, e)).collect::<Vec<_>>(), [3, 9]);
        // Other modes keep the stage's rungs.
        assert_eq!(rule_of(&asha(1, 3, 1), "s", 1, 10).1, "s");
    }

    #[test]
    fn judge_records_values_per_stage_and_epoch_and_replaces_a_retrained_trial() {
        let dir = std::env::temp_dir().join(format!("msh-early-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let rule = asha(1, 2, 2);
        // Epoch 3 is not a rung: nothing recorded.
        assert!(judge(&store, "s", &rule, 0, (3, 10), 0.1).unwrap());
        assert!(store.rung("s", 3).unwrap().values.is_empty());
        assert!(judge(&store, "s", &rule, 0, (2, 10), 0.5).unwrap(), "alone at the rung");
        assert!(!judge(&store, "s", &rule, 1, (2, 10), 0.9).unwrap(), "worse half of two");
        assert!(judge(&store, "other", &rule, 2, (2, 10), 0.9).unwrap(), "stages are separate");
        // Trial 1 trained again after a requeue: its value is replaced, not added.
        assert!(judge(&store, "s", &rule, 1, (2, 10), 0.4).unwrap());
        assert_eq!(store.rung("s", 2).unwrap().values, [(0, 0.5), (1, 0.4)]);
        let logged = store.events().unwrap();
        assert!(logged.iter().any(|e| e.trial == Some(1) && e.message.contains("early stopping (asha) at epoch 2")));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
