//! The export stage, and `export_trial`, which `msh best --export` shares: a trial's
//! checkpoint (or an ensemble and its members) copied out to stand alone, and as ONNX.

use std::path::{Path, PathBuf};

use super::{EngineError, Run};
use crate::workflow::{ExportFormat, ExportStage, StageKind};
use msh_onnx::{self as onnx, ONNX_FILE, OnnxError, Provenance};
use msh_store::{StoreError, TrialRecord, pareto_front};
use msh_train::{self as train, Checkpoint};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] train::CheckpointError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("trial {0} has no model to export to ONNX (it was looked up in a metrics table)")]
    NoModel(u64),
}

/// Writes a trial of the run `run` to `dest`: in msh's format its checkpoint (model.json,
/// weights.bpk) and its architecture as a file `msh train --arch` reads, or for an ensemble
/// `ensemble.json` and its members under `members/`; in ONNX `model.onnx`; and always
/// `trial.json` with the record and metrics.
pub fn export_trial(
    run_dir: &Path,
    run: &str,
    trial: &TrialRecord,
    dest: &Path,
    format: ExportFormat,
) -> Result<(), ExportError> {
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    match &trial.checkpoint {
        Some(relative) if format.onnx() => {
            let provenance = Provenance { run: Some(run.to_string()), trial: Some(trial.id) };
            onnx::write(&run_dir.join(relative), &dest.join(ONNX_FILE), &provenance)?;
        }
        None if format == ExportFormat::Onnx => return Err(ExportError::NoModel(trial.id)),
        _ => {}
    }
    if format.msh() {
        copy_checkpoint(run_dir, trial, dest)?;
    }
    let record = serde_json::to_vec_pretty(trial).expect("trial records serialise");
    msh_io::atomic_file::write_atomic(&dest.join("trial.json"), &record).map_err(io(&dest.join("trial.json")))
}

/// The error of an I/O operation on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Io { path, source }
}

/// msh's own files of a trial, copied to `dest`.
fn copy_checkpoint(run_dir: &Path, trial: &TrialRecord, dest: &Path) -> Result<(), ExportError> {
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
        msh_io::atomic_file::write_atomic(&dest.join(train::ENSEMBLE_FILE), &json)
            .map_err(io(&dest.join(train::ENSEMBLE_FILE)))?;
    } else if let Some(relative) = &trial.checkpoint {
        let from = Checkpoint::new(run_dir.join(relative));
        let meta = from.meta()?;
        for file in ["model.json", "weights.bpk"] {
            std::fs::copy(from.dir.join(file), dest.join(file)).map_err(io(&dest.join(file)))?;
        }
        let yaml = serde_yaml_ng::to_string(&meta.spec.architecture).expect("architectures serialise");
        msh_io::atomic_file::write_atomic(&dest.join("architecture.yaml"), yaml.as_bytes())
            .map_err(io(&dest.join("architecture.yaml")))?;
    }
    Ok(())
}

/// Exports the model its needs produced: a retrained model or an ensemble, else the
/// search's best trial.
pub fn run_export(run: &Run, needs: &[String], stage: &ExportStage, source: &str) -> Result<String, EngineError> {
    let mut chosen = None;
    for need in needs {
        let kind = run.workflow.stages.get(need).map(|s| s.kind());
        if matches!(kind, Some(StageKind::Retrain | StageKind::Ensemble | StageKind::Distill)) {
            chosen = run.produced(need)?;
        }
    }
    let trial = match chosen {
        Some(t) => t,
        None => run.best_of(source)?,
    };
    let dest = run.dir.join(stage.dir.as_deref().unwrap_or(Path::new("export")));
    let format = stage.format.unwrap_or_default();
    let export = |trial: &TrialRecord, dest: &Path| {
        export_trial(&run.dir, &run.workflow.name, trial, dest, format).map_err(|e| EngineError::Stage(e.to_string()))
    };
    export(&trial, &dest)?;
    if !run.workflow.objectives.pareto {
        return Ok(format!("trial {} exported to {}", trial.id, dest.display()));
    }
    let front = pareto_front(&run.store)?;
    for member in &front {
        export(member, &dest.join("pareto").join(member.id.to_string()))?;
    }
    let ids: Vec<String> = front.iter().map(|t| t.id.to_string()).collect();
    Ok(format!(
        "trial {} exported to {}, the Pareto front (trials {}) to its pareto/",
        trial.id,
        dest.display(),
        ids.join(", ")
    ))
}
