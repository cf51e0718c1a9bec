//! The retrain stage: the best architecture of a search, trained longer on train +
//! validation, recorded as a trial of the stage with the best trial as its parent.

use super::training::{record_stage_model, train_for_stage};
use super::{EngineError, Run};
use crate::workflow::RetrainStage;
use msh_train::data::Splits;
use msh_train::{Checkpoint, Guidance};

/// Trains the best architecture of `source` on train + validation for longer; the model
/// is recorded as a trial of this stage with the best trial as its parent.
pub fn run_retrain(
    run: &Run,
    name: &str,
    settings: &RetrainStage,
    source: &str,
) -> Result<Option<String>, EngineError> {
    let mut best = run.best_of(source)?;
    // An intermixed ensemble is retrained as its best member.
    if let Some(member) = best.parent.filter(|_| best.is_combination()) {
        best = run.store.trial(member)?;
    }
    let checkpoint =
        best.checkpoint.as_ref().ok_or_else(|| EngineError::Stage(format!("trial {} has no checkpoint", best.id)))?;
    let meta = Checkpoint::new(run.dir.join(checkpoint)).meta().map_err(|e| EngineError::Stage(e.to_string()))?;
    let splits = run.splits()?;
    let merged = Splits {
        train: splits.train.clone().concat(&splits.valid),
        valid: splits.valid.select(&[]),
        ..(*splits).clone()
    };
    let mut config = run.workflow.trial_config(&best.hparams, run.workflow.seed ^ best.id);
    let epochs = settings.epochs.unwrap_or(config.epochs * 2);
    config.epochs = epochs;
    let id = run.store.write(|t| t.next_trial_id())?;
    let trained = train_for_stage(run, name, id, &best, &meta.spec, &merged, &config, &Guidance::default())
        .map_err(|e| EngineError::Stage(format!("retraining trial {}: {e}", best.id)))?;
    let Some((trial, trained)) = trained else { return Ok(None) };
    let trial = record_stage_model(run, trial, None, &meta.spec, &merged, &trained)?;
    match (&trial.test, &best.test) {
        (Some(after), Some(before)) => Ok(Some(format!(
            "trial {} retrained for {epochs} epochs as trial {id}: test {} (was {})",
            best.id,
            after.headline(),
            before.headline()
        ))),
        _ => Err(EngineError::Stage(format!("retraining trial {} {}", best.id, trial.error.unwrap_or_default()))),
    }
}
