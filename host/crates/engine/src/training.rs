//! The one path by which a trial's model is trained, whether a search trial, a retrained
//! model or a distilled student (a leaf: it imports no stage): train with progress
//! events, turn training's failures into the trial's, record what training measured, and
//! checkpoint the model.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use super::{EngineError, EngineEvent, Run};
use msh_store::{self as store, StoreError, TrialRecord, TrialStatus};
use msh_train::data::Splits;
use msh_train::model::ModelSpec;
use msh_train::{
    self as train, Checkpoint, CheckpointMeta, Guidance, Metrics, Outcome, Selected, TrainConfig, Trained,
};

/// How a trial's training ended when neither it nor the run failed.
#[derive(Debug)]
pub enum TrialOutcome<T> {
    /// Trained (to the end, stopped early, or diverged): what training measured is on
    /// the trial.
    Recorded(T),
    /// Stopped by Ctrl-C: nothing of it is kept.
    Interrupted,
}

/// The status a failed trial is recorded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStatus {
    Failed,
    Diverged,
}

/// Why a trial has no result: recorded on the trial (`record_on`), and the run goes on.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct TrialFailure {
    pub status: FailureStatus,
    pub reason: String,
}

impl TrialFailure {
    pub fn failed(reason: impl Into<String>) -> Self {
        Self { status: FailureStatus::Failed, reason: reason.into() }
    }

    pub fn diverged(reason: impl Into<String>) -> Self {
        Self { status: FailureStatus::Diverged, reason: reason.into() }
    }

    /// Marks `trial` failed or diverged, with the reason as its error.
    pub fn record_on(self, trial: &mut TrialRecord) {
        trial.status = match self.status {
            FailureStatus::Failed => TrialStatus::Failed,
            FailureStatus::Diverged => TrialStatus::Diverged,
        };
        trial.error = Some(self.reason);
    }
}

/// What ends a trial's training early: a failure of the trial, or an error of the run.
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Failure(#[from] TrialFailure),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for TrialError {
    fn from(e: StoreError) -> Self {
        Self::Engine(e.into())
    }
}

/// One model to train as a trial, and where its progress is reported.
pub struct TrialTraining<'a> {
    /// The trainer whose progress events it sends.
    pub trainer: usize,
    pub spec: &'a ModelSpec,
    pub splits: &'a Splits,
    pub config: &'a TrainConfig,
    pub device: &'a Selected,
    pub guidance: &'a Guidance<'a>,
}

impl TrialTraining<'_> {
    /// Trains the model, reporting each epoch, and records what training measured on
    /// `trial`. An error or a panic of training is a failure of the trial, not of the run.
    pub fn train(&self, run: &Run, trial: &mut TrialRecord) -> Result<TrialOutcome<Trained>, TrialFailure> {
        let (trainer, id, epochs) = (self.trainer, trial.id, self.config.epochs);
        let mut on_event = |event: train::TrainEvent<'_>| {
            if let train::TrainEvent::Epoch(report) = event {
                (run.report)(EngineEvent::TrialEpoch { trainer, trial: id, epoch: report.epoch, epochs });
            }
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            train::train_until(
                self.spec,
                self.splits,
                self.config,
                &self.device.device,
                self.guidance,
                &mut on_event,
                &run.stop,
            )
        }));
        let trained = match result {
            Ok(Ok(trained)) => trained,
            Ok(Err(e)) => return Err(TrialFailure::failed(e.to_string())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                let message = message.unwrap_or_else(|| "no message".into());
                return Err(TrialFailure::failed(format!("training panicked: {message}")));
            }
        };
        record_training(trial, &trained);
        Ok(match trained.outcome {
            Outcome::Interrupted { .. } => TrialOutcome::Interrupted,
            _ => TrialOutcome::Recorded(trained),
        })
    }
}

/// Checkpoints a model trained to the end or stopped early and records its result on
/// `trial`: status, validation and `test` metrics, objective, checkpoint.
pub fn record_result(
    run: &Run,
    trial: &mut TrialRecord,
    spec: &ModelSpec,
    splits: &Splits,
    trained: &Trained,
    test: Metrics,
) -> Result<(), TrialFailure> {
    let valid = best_valid(trained, splits);
    let relative = save_model(run, trial.id, spec.clone(), splits, trained, valid.as_ref(), &test)
        .map_err(|e| TrialFailure::failed(e.to_string()))?;
    // A stopped trial is a result like a completed one, from fewer epochs.
    trial.status = match trained.outcome {
        Outcome::Stopped { .. } => TrialStatus::Stopped,
        _ => TrialStatus::Completed,
    };
    trial.objective = valid.as_ref().map(|v| v.loss);
    trial.valid = valid;
    trial.test = Some(test);
    trial.checkpoint = Some(relative);
    Ok(())
}

/// Trains a model for a stage (retrain, distill) as trial `id`, with `base`'s
/// architecture and hparams and `base` as its parent, reporting progress as trainer 0;
/// `None` when interrupted. Training's failures are the stage's.
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
) -> Result<Option<(TrialRecord, Trained)>, EngineError> {
    let started = EngineEvent::TrialStarted {
        stage: stage.into(),
        trainer: 0,
        trial: id,
        arch: base.arch_key(),
        searcher_seconds: 0.0,
    };
    (run.report)(started);
    let device = run.device()?;
    let training = TrialTraining { trainer: 0, spec, splits, config, device: &device, guidance };
    let mut trial = TrialRecord {
        parent: Some(base.id),
        attempts: 1,
        ..TrialRecord::new(id, stage, base.architecture.clone(), base.hparams.clone())
    };
    match training.train(run, &mut trial).map_err(|failure| EngineError::Stage(failure.reason))? {
        TrialOutcome::Recorded(trained) => Ok(Some((trial, trained))),
        TrialOutcome::Interrupted => Ok(None),
    }
}

/// Records a model a stage trained (`train_for_stage`) in the store: test metrics, and a
/// checkpoint unless it diverged.
pub fn record_stage_model(
    run: &Run,
    mut trial: TrialRecord,
    teacher: Option<u64>,
    spec: &ModelSpec,
    splits: &Splits,
    trained: &Trained,
) -> Result<TrialRecord, EngineError> {
    let now = store::now();
    trial.teacher = teacher;
    trial.started = Some(now - trained.train_time.as_secs_f64());
    trial.finished = Some(now);
    if let Outcome::Diverged { epoch, loss, .. } = trained.outcome {
        TrialFailure::diverged(format!("loss became {loss} at epoch {epoch}")).record_on(&mut trial);
    } else {
        let test = train::evaluate(&trained.model, &splits.test, splits.task, &splits.normalization);
        record_result(run, &mut trial, spec, splits, trained, test)
            .map_err(|failure| EngineError::Stage(failure.reason))?;
        // Without a validation split (retraining on train + valid) the training loss ranks it.
        trial.objective = trial.objective.or(trained.epochs.last().map(|e| e.train_loss));
    }
    run.store.write(|t| t.put_trial(&trial))?;
    let finished =
        EngineEvent::TrialFinished { stage: trial.stage.clone(), trainer: 0, trial: Box::new(trial.clone()) };
    (run.report)(finished);
    Ok(trial)
}

/// Copies what training measured into the trial's record.
fn record_training(trial: &mut TrialRecord, trained: &Trained) {
    trial.parameters = trained.parameters as u64;
    trial.inherited = trained.inherited as u64;
    trial.epochs = trained.epochs.len() as u32;
    trial.best_epoch = trained.best_epoch as u32;
    trial.train_seconds = trained.train_time.as_secs_f64();
    trial.losses = trained.epochs.iter().map(|e| e.valid.loss).collect();
}

/// The best epoch's validation metrics, when the data has a validation split (without
/// one, the loop validated on the training split).
fn best_valid(trained: &Trained, splits: &Splits) -> Option<Metrics> {
    let best = trained.epochs.iter().find(|e| e.epoch == trained.best_epoch)?;
    (!splits.valid.is_empty()).then(|| best.valid.clone())
}

/// Saves a trained model with its metrics as trial `id`'s checkpoint; returns the
/// checkpoint's directory relative to the run directory.
fn save_model(
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
