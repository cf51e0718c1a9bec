//! Training helpers that the stages share (a leaf: it imports no stage): train a model
//! for a stage, record what training measured, save checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{EngineError, EngineEvent, Run};
use msh_store::{self as store, TrialRecord, TrialStatus};
use msh_train::data::Splits;
use msh_train::model::ModelSpec;
use msh_train::{self as train, Checkpoint, CheckpointMeta, Guidance, Metrics, Outcome, TrainConfig, Trained};

/// Trains a model for a stage (retrain, distill) as trial `id`, reporting progress as
/// trainer 0; `None` when interrupted.
#[allow(clippy::too_many_arguments)]
pub fn train_for_stage(
    run: &Run,
    stage: &str,
    id: u64,
    base: &TrialRecord,
    spec: &ModelSpec,
    splits: &Splits,
    config: &TrainConfig,
    guidance: &Guidance,
) -> Result<Option<Trained>, EngineError> {
    let started = EngineEvent::TrialStarted {
        stage: stage.into(),
        trainer: 0,
        trial: id,
        arch: base.arch_key(),
        searcher_seconds: 0.0,
    };
    (run.report)(started);
    let mut on_event = |event: train::TrainEvent<'_>| {
        if let train::TrainEvent::Epoch(r) = event {
            (run.report)(EngineEvent::TrialEpoch { trainer: 0, trial: id, epoch: r.epoch, epochs: config.epochs });
        }
    };
    let device = run.device()?;
    let trained = train::train_until(spec, splits, config, &device.device, guidance, &mut on_event, &run.stop)
        .map_err(|e| EngineError::Stage(e.to_string()))?;
    Ok((!matches!(trained.outcome, Outcome::Interrupted { .. })).then_some(trained))
}

/// Records a model a stage trained as its trial `id`, with `base`'s architecture and
/// hparams and `base` as its parent: test metrics, and a checkpoint unless it diverged.
#[allow(clippy::too_many_arguments)]
pub fn record_stage_model(
    run: &Run,
    stage: &str,
    id: u64,
    base: &TrialRecord,
    teacher: Option<u64>,
    spec: ModelSpec,
    splits: &Splits,
    trained: &Trained,
) -> Result<TrialRecord, EngineError> {
    let now = store::now();
    let mut trial = TrialRecord {
        parent: Some(base.id),
        teacher,
        status: TrialStatus::Completed,
        attempts: 1,
        started: Some(now - trained.train_time.as_secs_f64()),
        finished: Some(now),
        ..TrialRecord::new(id, stage, base.architecture.clone(), base.hparams.clone())
    };
    record_training(&mut trial, trained);
    if let Outcome::Diverged { epoch, loss, .. } = trained.outcome {
        trial.status = TrialStatus::Diverged;
        trial.error = Some(format!("loss became {loss} at epoch {epoch}"));
    } else {
        let valid = best_valid(trained, splits);
        let test = train::evaluate(&trained.model, &splits.test, splits.task, &splits.normalization);
        let relative = save_model(run, id, spec, splits, trained, valid.as_ref(), &test)
            .map_err(|e| EngineError::Stage(e.to_string()))?;
        // Without a validation split (retraining on train + valid) the training loss ranks it.
        trial.objective = valid.as_ref().map(|v| v.loss).or(trained.epochs.last().map(|e| e.train_loss));
        trial.valid = valid;
        trial.test = Some(test);
        trial.checkpoint = Some(relative);
    }
    run.store.write(|t| t.put_trial(&trial))?;
    (run.report)(EngineEvent::TrialFinished { stage: stage.into(), trainer: 0, trial: Box::new(trial.clone()) });
    Ok(trial)
}

/// Copies what training measured into the trial's record.
pub fn record_training(trial: &mut TrialRecord, trained: &Trained) {
    trial.parameters = trained.parameters as u64;
    trial.inherited = trained.inherited as u64;
    trial.epochs = trained.epochs.len() as u32;
    trial.best_epoch = trained.best_epoch as u32;
    trial.train_seconds = trained.train_time.as_secs_f64();
    trial.losses = trained.epochs.iter().map(|e| e.valid.loss).collect();
}

/// The best epoch's validation metrics, when the data has a validation split (without
/// one, the loop validated on the training split).
pub fn best_valid(trained: &Trained, splits: &Splits) -> Option<Metrics> {
    let best = trained.epochs.iter().find(|e| e.epoch == trained.best_epoch)?;
    (!splits.valid.is_empty()).then(|| best.valid.clone())
}

/// Saves a trained model with its metrics as trial `id`'s checkpoint; returns the
/// checkpoint's directory relative to the run directory.
pub fn save_model(
    run: &Run,
    id: u64,
    spec: ModelSpec,
    splits: &Splits,
    trained: &Trained,
    valid: Option<&Metrics>,
    test: &Metrics,
) -> Result<PathBuf, train::CheckpointError> {
    let mut metrics = BTreeMap::from([("test".to_string(), test.clone())]);
    if let Some(v) = valid {
        metrics.insert("valid".into(), v.clone());
    }
    let meta = CheckpointMeta {
        version: train::CHECKPOINT_VERSION,
        spec,
        normalization: splits.normalization.clone(),
        class_names: splits.class_names.clone(),
        parameters: trained.parameters,
        metrics,
    };
    let relative = checkpoint_dir(id);
    Checkpoint::new(run.dir.join(&relative)).save(&trained.model, &meta)?;
    Ok(relative)
}

/// Where a trial's checkpoint lives, relative to the run directory.
pub fn checkpoint_dir(id: u64) -> PathBuf {
    PathBuf::from("trials").join(id.to_string())
}
