//! The stages after a search: retrain the best architecture longer, ensemble the best
//! trials, export the best model. Also `best_trial` and `export_trial`, which `msh best`
//! shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::distill::run_distill;
use super::ensemble::run_ensemble;
use super::search::run_search;
use super::trainer::{best_valid, record_training, save_model};
use super::{EngineError, EngineEvent, Run};
use crate::data::Splits;
use crate::model::ModelSpec;
use crate::store::{self, StageRecord, StageState, Store, StoreError, TrialRecord, TrialStatus};
use crate::train::{self, Checkpoint, Guidance, Outcome, TrainConfig, Trained};
use crate::workflow::{StageKind, upstream_search};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] train::CheckpointError),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

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

/// Writes a trial to `dest`: its checkpoint (model.json, weights.bpk) and its architecture
/// as a file `msh train --arch` reads, or for an ensemble `ensemble.json` and its members
/// under `members/`; and `trial.json` with the record and metrics.
pub fn export_trial(run_dir: &Path, trial: &TrialRecord, dest: &Path) -> Result<(), ExportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    let ensemble =
        trial.checkpoint.as_ref().map(|c| run_dir.join(c).join(train::ENSEMBLE_FILE)).filter(|f| f.is_file());
    if let Some(file) = ensemble {
        // Members are copied beside the file, so the export stands alone.
        let read = |e: String| ExportError::Io { path: file.clone(), source: std::io::Error::other(e) };
        let text = std::fs::read(&file).map_err(|e| read(e.to_string()))?;
        let mut ensemble: train::EnsembleFile = serde_json::from_slice(&text).map_err(|e| read(e.to_string()))?;
        for member in &mut ensemble.members {
            let from = Checkpoint::new(file.parent().expect("a file has a parent").join(&member.checkpoint));
            let to = PathBuf::from("members").join(member.trial.to_string());
            std::fs::create_dir_all(dest.join(&to)).map_err(io(&dest.join(&to)))?;
            for name in ["model.json", "weights.bpk"] {
                std::fs::copy(from.dir.join(name), dest.join(&to).join(name))
                    .map_err(io(&dest.join(&to).join(name)))?;
            }
            member.checkpoint = to;
        }
        let json = serde_json::to_vec_pretty(&ensemble).expect("ensembles serialise");
        crate::atomic_file::write_atomic(&dest.join(train::ENSEMBLE_FILE), &json)
            .map_err(io(&dest.join(train::ENSEMBLE_FILE)))?;
    } else if let Some(relative) = &trial.checkpoint {
        let from = Checkpoint::new(run_dir.join(relative));
        let meta = from.meta()?;
        for file in ["model.json", "weights.bpk"] {
            std::fs::copy(from.dir.join(file), dest.join(file)).map_err(io(&dest.join(file)))?;
        }
        let yaml = serde_yaml_ng::to_string(&meta.spec.architecture).expect("architectures serialise");
        crate::atomic_file::write_atomic(&dest.join("architecture.yaml"), yaml.as_bytes())
            .map_err(io(&dest.join("architecture.yaml")))?;
    }
    let record = serde_json::to_vec_pretty(trial).expect("trial records serialise");
    crate::atomic_file::write_atomic(&dest.join("trial.json"), &record).map_err(io(&dest.join("trial.json")))
}

/// Runs one stage; `Ok(false)` when interrupted.
pub fn run_stage(run: &Arc<Run>, name: &str) -> Result<bool, EngineError> {
    let stage = &run.workflow.stages[name];
    if stage.kind == StageKind::Search {
        return run_search(run, name);
    }
    let source = upstream_search(&run.workflow, name).expect("validation ensures an upstream search stage");
    run.store.write(|t| -> Result<(), StoreError> {
        let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, &stage.kind.to_string()));
        record.state = StageState::Running;
        record.started = Some(store::now());
        t.put_stage(&record)
    })?;
    (run.report)(EngineEvent::StageStarted { stage: name.into(), kind: stage.kind, trials: None, done: 0 });
    let outcome = match stage.kind {
        StageKind::Retrain => retrain(run, name, &source)?,
        StageKind::Ensemble => Some(run_ensemble(run, name, &source)?),
        StageKind::Export => Some(export(run, name, stage.dir.as_deref())?),
        StageKind::Distill => run_distill(run, name, &source)?,
        StageKind::Search => unreachable!("search stages run above"),
    };
    let Some(message) = outcome else { return Ok(false) };
    run.store.write(|t| -> Result<(), StoreError> {
        let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, &stage.kind.to_string()));
        record.state = StageState::Done;
        record.finished = Some(store::now());
        record.message = Some(message.clone());
        t.put_stage(&record)?;
        t.log(Some(name), None, format!("done: {message}"))
    })?;
    (run.report)(EngineEvent::StageFinished { stage: name.into(), state: StageState::Done, message });
    Ok(true)
}

fn best_of(run: &Run, stage: &str) -> Result<TrialRecord, EngineError> {
    best_trial(&run.store, Some(stage))?
        .ok_or_else(|| EngineError::Stage(format!("search stage `{stage}` has no completed trial to use")))
}

/// Trains a model for a stage (retrain, distill) as trial `id`, reporting progress as
/// trainer 0; `None` when interrupted.
#[allow(clippy::too_many_arguments)]
pub(super) fn train_for_stage(
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
pub(super) fn record_stage_model(
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

/// The model a retrain, ensemble or distill stage produced (its latest), if any.
fn produced(run: &Run, stage: &str) -> Result<Option<TrialRecord>, StoreError> {
    Ok(run.store.trials()?.into_iter().rev().find(|t| t.stage == stage && t.status == TrialStatus::Completed))
}

/// Trains the best architecture of `source` on train + validation for longer; the model
/// is recorded as a trial of this stage with the best trial as its parent.
fn retrain(run: &Run, name: &str, source: &str) -> Result<Option<String>, EngineError> {
    let mut best = best_of(run, source)?;
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
    let epochs = run.workflow.stages[name].epochs.unwrap_or(config.epochs * 2);
    config.epochs = epochs;
    let id = run.store.write(|t| t.next_trial_id())?;
    let trained = train_for_stage(run, name, id, &best, &meta.spec, &merged, &config, &Guidance::default())
        .map_err(|e| EngineError::Stage(format!("retraining trial {}: {e}", best.id)))?;
    let Some(trained) = trained else { return Ok(None) };
    let trial = record_stage_model(run, name, id, &best, None, meta.spec, &merged, &trained)?;
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

/// Exports the model its needs produced: a retrained model or an ensemble, else the
/// search's best trial.
fn export(run: &Run, name: &str, dir: Option<&Path>) -> Result<String, EngineError> {
    let stage = &run.workflow.stages[name];
    let mut chosen = None;
    for need in &stage.needs {
        if matches!(run.workflow.stages[need].kind, StageKind::Retrain | StageKind::Ensemble | StageKind::Distill) {
            chosen = produced(run, need)?;
        }
    }
    let trial = match chosen {
        Some(t) => t,
        None => best_of(run, &upstream_search(&run.workflow, name).expect("validated"))?,
    };
    let dest = run.dir.join(dir.unwrap_or(Path::new("export")));
    export_trial(&run.dir, &trial, &dest).map_err(|e| EngineError::Stage(e.to_string()))?;
    if !run.workflow.objectives.pareto {
        return Ok(format!("trial {} exported to {}", trial.id, dest.display()));
    }
    let front = pareto_front(&run.store)?;
    for member in &front {
        export_trial(&run.dir, member, &dest.join("pareto").join(member.id.to_string()))
            .map_err(|e| EngineError::Stage(e.to_string()))?;
    }
    let ids: Vec<String> = front.iter().map(|t| t.id.to_string()).collect();
    Ok(format!(
        "trial {} exported to {}, the Pareto front (trials {}) to its pareto/",
        trial.id,
        dest.display(),
        ids.join(", ")
    ))
}
