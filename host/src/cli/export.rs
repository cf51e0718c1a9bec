//! `msh export`: any trial of a run, or a saved model or ensemble directory, as one ONNX file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use msh_onnx::{self as onnx, Provenance};
use msh_store::{Store, TrialRecord, best_trial};

use super::inspect::{open, run_name};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory (its best trial, or `--trial N`), or a model or ensemble directory
    /// (a trial's checkpoint, or what `msh best --export` and export stages write).
    model: PathBuf,
    /// The trial of the run to export (any trial with a model, not only the best).
    #[arg(long)]
    trial: Option<u64>,
    /// The ONNX file to write.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (dir, provenance) = if Store::exists(&args.model) {
        let store = open(&args.model)?;
        let trial = match args.trial {
            Some(id) => store.trial(id).with_context(|| format!("{}: no trial {id}", args.model.display()))?,
            None => best_trial(&store, None)?
                .with_context(|| format!("{}: no completed trial yet", args.model.display()))?,
        };
        let checkpoint = trial
            .checkpoint
            .as_ref()
            .with_context(|| format!("trial {} has no model to export (it was {})", trial.id, trial.status.name()))?;
        (args.model.join(checkpoint), Provenance { run: Some(run_name(&store)?), trial: Some(trial.id) })
    } else {
        if args.trial.is_some() {
            bail!("{}: --trial picks a trial of a run, and this is not a run directory", args.model.display());
        }
        (args.model.clone(), exported_provenance(&args.model))
    };
    let started = Instant::now();
    let bytes = onnx::write(&dir, &args.output, &provenance)?;
    eprintln!(
        "exported {} to {} ({:.1} KiB in {:.2} s)",
        dir.display(),
        args.output.display(),
        bytes as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// The trial an exported directory holds, from the `trial.json` written beside it.
fn exported_provenance(dir: &std::path::Path) -> Provenance {
    let trial =
        std::fs::read(dir.join("trial.json")).ok().and_then(|bytes| serde_json::from_slice::<TrialRecord>(&bytes).ok());
    Provenance { run: None, trial: trial.map(|t| t.id) }
}
