//! Knowledge distillation: the teacher of a search trial (the best trial so far, the
//! average of the best few, or the one its searcher names), its outputs on the training
//! split computed once per teacher and cached, and the distill stage, which trains a
//! student from the best ensemble next to the same student trained alone.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::training::{record_stage_model, train_for_stage};
use super::{EngineError, Run};
use crate::workflow::{DistillMode, DistillStage, StageKind, TeacherKind};
use msh_store::{TrialRecord, TrialStatus};
use msh_train::data::Splits;
use msh_train::{self as train, Checkpoint, Distill, DistillLoss, Guidance, Predictor};

/// Teachers' training-split outputs by the checkpoint directories that make them.
pub type TeacherCache = std::sync::Mutex<BTreeMap<Vec<PathBuf>, Arc<Vec<f32>>>>;

/// The outputs of a model or the average of several (directories of checkpoints or
/// ensembles) on the training split, computed once.
fn teacher_outputs(run: &Run, splits: &Splits, dirs: Vec<PathBuf>) -> Result<Arc<Vec<f32>>, EngineError> {
    if let Some(hit) = run.teachers.lock().expect("no panics while caching").get(&dirs) {
        return Ok(hit.clone());
    }
    let device = run.device()?;
    let train_set = &splits.train;
    let mut probabilities = Vec::new();
    let mut only = None;
    for dir in &dirs {
        let predictor =
            Predictor::load(dir, &device.device).map_err(|e| EngineError::Stage(format!("teacher: {e}")))?;
        let outputs = predictor.predict(&train_set.features, train_set.sample_len());
        if dirs.len() == 1 {
            only = Some(outputs);
        } else {
            probabilities.push(train::to_probabilities(&outputs, splits.task));
        }
    }
    let outputs = Arc::new(only.unwrap_or_else(|| {
        let views: Vec<&[f64]> = probabilities.iter().map(Vec::as_slice).collect();
        train::combine(&views, &vec![1.0; views.len()], splits.task)
    }));
    let mut cache = run.teachers.lock().expect("no panics while caching");
    // Teachers change as the search improves; old ones are not needed again.
    if cache.len() >= 8 {
        cache.clear();
    }
    cache.insert(dirs, outputs.clone());
    Ok(outputs)
}

/// The distillation a search trial trains with, and the id of its (main) teacher.
pub fn search_guidance(run: &Run, splits: &Splits, trial: &TrialRecord) -> Result<Option<(Distill, u64)>, EngineError> {
    let spec = run.workflow.distillation;
    let Some(loss) = spec.mode.loss() else { return Ok(None) };
    let mut done = run.completed(&trial.stage)?;
    done.retain(|t| t.id != trial.id);
    let finished = done.len();
    done.sort_by(|a, b| a.score().total_cmp(&b.score()));
    let named = trial.teacher.and_then(|id| done.iter().find(|t| t.id == id)).cloned();
    let teachers: Vec<TrialRecord> = match (named, spec.teacher) {
        (Some(t), _) => vec![t],
        (None, TeacherKind::Best) => done.into_iter().take(1).collect(),
        (None, TeacherKind::Ensemble) => done.into_iter().take(spec.top_k).collect(),
    };
    let Some(main) = teachers.first().map(|t| t.id) else { return Ok(None) };
    let dirs = teachers.iter().map(|t| run.dir.join(t.checkpoint.as_ref().expect("filtered on checkpoints"))).collect();
    let lambda = match spec.mode {
        DistillMode::Adaptive => spec.lambda * (finished as f64 / spec.ramp_trials as f64).min(1.0),
        _ => spec.lambda,
    };
    let teacher = teacher_outputs(run, splits, dirs)?;
    Ok(Some((Distill { loss, lambda, temperature: spec.temperature, teacher }, main)))
}

/// The distill stage: the student is the best trial of `source` (under `max_parameters`
/// when set); the teacher is the ensemble of an ensemble stage among the needs, else the
/// best trial. The student is trained twice, with and without the teacher.
pub fn run_distill(
    run: &Run,
    name: &str,
    needs: &[String],
    stage: &DistillStage,
    source: &str,
) -> Result<Option<String>, EngineError> {
    let trials = run.store.trials()?;
    let teacher = needs
        .iter()
        .filter(|n| run.workflow.stages.get(*n).is_some_and(|s| s.kind() == StageKind::Ensemble))
        .find_map(|n| trials.iter().rev().find(|t| &t.stage == n && t.status == TrialStatus::Completed))
        .or_else(|| best_of(&trials, source, None))
        .cloned()
        .ok_or_else(|| EngineError::Stage(format!("search stage `{source}` has no completed trial to learn from")))?;
    let singles: Vec<TrialRecord> = trials.iter().filter(|t| t.members.is_empty()).cloned().collect();
    let student = best_of(&singles, source, stage.max_parameters).cloned().ok_or_else(|| {
        EngineError::Stage(format!(
            "search stage `{source}` has no completed trial with at most {} parameters to use as the student",
            stage.max_parameters.unwrap_or(u64::MAX)
        ))
    })?;
    let meta =
        Checkpoint::new(run.dir.join(student.checkpoint.as_ref().expect("completed burn trials have checkpoints")))
            .meta()
            .map_err(|e| EngineError::Stage(e.to_string()))?;
    let splits = run.splits()?;
    let spec = run.workflow.distillation;
    let teacher_dir = run.dir.join(teacher.checkpoint.as_ref().expect("has a checkpoint"));
    let distill = Distill {
        loss: spec.mode.loss().unwrap_or(DistillLoss::CrossEntropy),
        lambda: spec.lambda,
        temperature: spec.temperature,
        teacher: teacher_outputs(run, &splits, vec![teacher_dir])?,
    };
    let mut config = run.workflow.trial_config(&student.hparams, run.workflow.seed ^ student.id);
    config.epochs = stage.epochs.unwrap_or(config.epochs);
    let id = run.store.write(|t| t.next_trial_id())?;
    let train = |guidance: &Guidance| {
        train_for_stage(run, name, id, &student, &meta.spec, &splits, &config, guidance)
            .map_err(|e| EngineError::Stage(format!("distilling into trial {}'s architecture: {e}", student.id)))
    };
    let Some((_, alone)) = train(&Guidance::default())? else { return Ok(None) };
    let taught = train(&Guidance { distill: Some(distill), ..Guidance::default() })?;
    let Some((trial, taught)) = taught else { return Ok(None) };
    let record = record_stage_model(run, trial, Some(teacher.id), &meta.spec, &splits, &taught)?;
    let Some(test) = &record.test else {
        return Err(EngineError::Stage(format!(
            "the distilled student, trial {id}, {}",
            record.error.unwrap_or_default()
        )));
    };
    let alone_test = train::evaluate(&alone.model, &splits.test, splits.task, &splits.normalization);
    Ok(Some(format!(
        "student {} ({} parameters) taught by trial {} as trial {id}: test {} distilled, {} alone (teacher: test {})",
        student.arch_key(),
        taught.parameters,
        teacher.id,
        test.headline(),
        alone_test.headline(),
        teacher.test.as_ref().map(train::Metrics::headline).unwrap_or_default(),
    )))
}

fn best_of<'a>(trials: &'a [TrialRecord], stage: &str, max_parameters: Option<u64>) -> Option<&'a TrialRecord> {
    trials
        .iter()
        .filter(|t| t.stage == stage && t.status == TrialStatus::Completed && t.checkpoint.is_some())
        .filter(|t| max_parameters.is_none_or(|m| t.parameters <= m))
        .min_by(|a, b| a.score().total_cmp(&b.score()))
}
