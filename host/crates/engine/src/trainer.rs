//! Trainers: turn a claimed trial into a finished one. `burn` expands the blocks with
//! their packs, trains and checkpoints; `table` looks the architecture up in a metrics
//! table. The search stage does not know which one it drives.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::training::{TrialError, TrialFailure, TrialOutcome, TrialTraining, checkpoint_dir, record_result};
use super::{EngineError, Run};
use crate::workflow::{EnsembleStrategy, SharingMode};
use msh_graph::{Architecture, infer_block};
use msh_store::{TrialRecord, TrialStatus};
use msh_train::model::{Donor, ModelSpec};
use msh_train::{self as train, Checkpoint, Metrics, Outcome};

/// A metrics table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read table {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}:{line}: {reason}", path.display())]
    Row { path: PathBuf, line: u64, reason: String },
}

/// Metrics by architecture key (block names joined by `,`).
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    rows: HashMap<String, BTreeMap<String, f64>>,
}

impl Table {
    pub fn load(path: &Path) -> Result<Self, TableError> {
        let read = |reason: String| TableError::Read { path: path.to_path_buf(), reason };
        let mut reader = csv::Reader::from_path(path).map_err(|e| read(e.to_string()))?;
        let headers = reader.headers().map_err(|e| read(e.to_string()))?.clone();
        let arch = headers.iter().position(|h| h == "arch").ok_or_else(|| read("no `arch` column".into()))?;
        if !headers.iter().any(|h| h == "loss" || h == "accuracy") {
            return Err(read("needs a `loss` or an `accuracy` column to rank architectures".into()));
        }
        let mut rows = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| read(e.to_string()))?;
            let line = record.position().map_or(0, |p| p.line());
            let mut metrics = BTreeMap::new();
            for (i, (name, cell)) in headers.iter().zip(record.iter()).enumerate() {
                if i == arch || cell.trim().is_empty() {
                    continue;
                }
                let value = cell.trim().parse::<f64>().map_err(|_| TableError::Row {
                    path: path.to_path_buf(),
                    line,
                    reason: format!("`{name}` is `{cell}`, not a number"),
                })?;
                metrics.insert(name.to_string(), value);
            }
            let key: Vec<&str> = record[arch].split(',').map(str::trim).collect();
            rows.insert(key.join(","), metrics);
        }
        Ok(Self { path: path.to_path_buf(), rows })
    }

    /// Every architecture of the table (its key) with the loss a trial of it gets.
    pub fn losses(&self) -> impl Iterator<Item = (&str, f64)> {
        self.rows.iter().map(|(key, row)| (key.as_str(), loss_of(row)))
    }

    /// Fills in the trial from its row, or fails it when the table lacks its architecture.
    fn evaluate(&self, trial: &mut TrialRecord) {
        let key = trial.arch_key();
        let Some(row) = self.rows.get(&key) else {
            trial.status = TrialStatus::Failed;
            trial.error = Some(format!("architecture `{key}` is not in table {}", self.path.display()));
            return;
        };
        let accuracy = row.get("accuracy").copied();
        let loss = loss_of(row);
        let metrics =
            Metrics { samples: 0, loss, accuracy, r2: row.get("r2").copied(), rmse: row.get("rmse").copied() };
        trial.status = TrialStatus::Completed;
        trial.objective = Some(loss);
        trial.test = row.get("test_accuracy").map(|&a| Metrics { accuracy: Some(a), ..metrics.clone() });
        trial.valid = Some(metrics);
        trial.parameters = row.get("params").map_or(0, |&p| p as u64);
        trial.train_seconds = row.get("train_seconds").copied().unwrap_or(0.0);
    }
}

/// A row's `loss`, else 1 - its `accuracy`.
fn loss_of(row: &BTreeMap<String, f64>) -> f64 {
    row.get("loss").copied().or(row.get("accuracy").map(|a| 1.0 - a)).unwrap_or(f64::INFINITY)
}

/// Who evaluates the trials of a run.
#[derive(Debug)]
pub enum Trainer {
    Burn,
    Table(Table),
}

/// A trial's fate once its trainer returns.
#[derive(Debug)]
pub enum Evaluated {
    Finished(TrialRecord),
    /// Stopped by Ctrl-C: the trial goes back to the queue.
    Interrupted,
}

/// Expands a trial's block references into block graphs, block by block, each built for
/// the previous block's output shape.
pub fn expand(run: &Run, trial: &TrialRecord, input_shape: &[usize]) -> Result<Architecture, String> {
    let mut shape = input_shape.to_vec();
    let mut blocks = Vec::with_capacity(trial.architecture.len());
    for (i, block) in trial.architecture.iter().enumerate() {
        let pack = run
            .resolved
            .block_pack
            .get(&block.name)
            .map(|&p| &run.resolved.packs[p])
            .ok_or_else(|| format!("block `{}` (#{i}) is offered by no pack of the workflow", block.name))?;
        let graph = pack.build(&block.name, &shape, &block.params).map_err(|e| e.to_string())?;
        shape = infer_block(&graph, i, &shape).map_err(|e| e.to_string())?.pop().unwrap_or(shape);
        blocks.push(graph);
    }
    Ok(Architecture { blocks })
}

impl Trainer {
    pub fn evaluate(&self, run: &Run, trainer: usize, mut trial: TrialRecord) -> Result<Evaluated, EngineError> {
        match self {
            Trainer::Table(table) => table.evaluate(&mut trial),
            Trainer::Burn if !trial.members.is_empty() => ensemble_trial(run, &mut trial)?,
            Trainer::Burn => match train_trial(run, trainer, &mut trial) {
                Ok(TrialOutcome::Recorded(())) => {}
                Ok(TrialOutcome::Interrupted) => return Ok(Evaluated::Interrupted),
                Err(TrialError::Failure(failure)) => failure.record_on(&mut trial),
                Err(TrialError::Engine(e)) => return Err(e),
            },
        }
        Ok(Evaluated::Finished(trial))
    }
}

/// A residual trial's base: the best residual ensemble completed before its window of
/// `every` trials, with that ensemble's summed outputs on each split.
struct ResidualBase {
    members: Vec<u64>,
    guidance: train::Residual,
    test: Vec<f32>,
}

fn residual_base(
    run: &Run,
    splits: &msh_train::data::Splits,
    trial: &TrialRecord,
) -> Result<Option<ResidualBase>, EngineError> {
    let ensembling = run.workflow.ensembling;
    if ensembling.strategy != EnsembleStrategy::Residual {
        return Ok(None);
    }
    let window_start = trial.id / ensembling.every as u64 * ensembling.every as u64;
    let best = run
        .completed(&trial.stage)?
        .into_iter()
        .filter(|t| t.id < window_start && !t.members.is_empty() && !t.is_combination())
        .min_by(|a, b| a.score().total_cmp(&b.score()));
    let members: Vec<u64> = best.map(|b| b.members.iter().map(|(id, _)| *id).collect()).unwrap_or_default();
    let device = run.device()?;
    let mut sums = [Vec::new(), Vec::new(), Vec::new()];
    for id in &members {
        let (model, _) = Checkpoint::new(run.dir.join(checkpoint_dir(*id)))
            .load(&device.device)
            .map_err(|e| EngineError::Stage(e.to_string()))?;
        for (sum, data) in sums.iter_mut().zip([&splits.train, &splits.valid, &splits.test]) {
            let outputs = train::predict(&model, &data.features, data.sample_len());
            *sum = if sum.is_empty() { outputs } else { train::add_outputs(outputs, sum) };
        }
    }
    let [train_sum, valid_sum, test] = sums;
    Ok(Some(ResidualBase {
        members,
        guidance: train::Residual { train: std::sync::Arc::new(train_sum), valid: std::sync::Arc::new(valid_sum) },
        test,
    }))
}

/// Builds an intermixed ensemble trial from the candidates its claim chose.
fn ensemble_trial(run: &Run, trial: &mut TrialRecord) -> Result<(), EngineError> {
    let started = std::time::Instant::now();
    // Earlier ensembles among the best stand for their members.
    let mut candidates: Vec<TrialRecord> = Vec::new();
    let mut queue: Vec<u64> = trial.members.iter().map(|(id, _)| *id).collect();
    while let Some(id) = queue.pop() {
        let candidate = run.store.trial(id)?;
        if candidate.is_combination() {
            queue.extend(candidate.members.iter().map(|(id, _)| *id));
        } else if !candidates.iter().any(|c| c.id == id) {
            candidates.push(candidate);
        }
    }
    candidates.sort_by_key(|c| c.id);
    let ensembling = run.workflow.ensembling;
    let relative = super::ensemble::ensemble_dir(&format!("trial-{}", trial.id));
    let built =
        super::ensemble::build(run, candidates, ensembling.method, ensembling.top_k, 3, ensembling.every, &relative)?;
    built.describe_in(trial, relative);
    trial.train_seconds = started.elapsed().as_secs_f64();
    Ok(())
}

/// The checkpoints a trial starts from, per the workflow's `weight_sharing`.
fn donors(run: &Run, trial: &TrialRecord) -> Result<Vec<Donor>, EngineError> {
    let sharing = run.workflow.weight_sharing;
    let weights = |t: &TrialRecord| t.checkpoint.as_ref().map(|c| Checkpoint::new(run.dir.join(c)).weights());
    Ok(match sharing.mode {
        SharingMode::None => Vec::new(),
        SharingMode::Snapshot => {
            // A parent from an earlier run (warm start) lends its checkpoint from there.
            if let Some((earlier, dir)) = trial.parent.and_then(|id| run.earlier.as_ref()?.trial(id)) {
                let weights = earlier.checkpoint.as_ref().map(|c| Checkpoint::new(dir.join(c)).weights());
                return Ok(weights.map(|w| Donor { weights: w, weight: 1.0 }).into_iter().collect());
            }
            let mut parent = trial.parent.map(|id| run.store.trial(id)).transpose()?;
            // An ensemble's weights are its best member's.
            if let Some(ensemble) = parent.as_ref().filter(|p| p.is_combination()) {
                parent = ensemble.parent.map(|id| run.store.trial(id)).transpose()?;
            }
            parent.as_ref().and_then(weights).map(|w| Donor { weights: w, weight: 1.0 }).into_iter().collect()
        }
        SharingMode::Average | SharingMode::LossWeighted => {
            let mut done = run.completed(&trial.stage)?;
            done.retain(|t| !t.is_combination());
            done.sort_by(|a, b| b.finished.unwrap_or(0.0).total_cmp(&a.finished.unwrap_or(0.0)));
            done.iter()
                .take(sharing.donors)
                .enumerate()
                .filter_map(|(age, t)| {
                    let mut weight = sharing.discount.powi(age as i32);
                    if sharing.mode == SharingMode::LossWeighted {
                        weight /= t.objective.filter(|o| *o > 0.0)?;
                    }
                    weights(t).map(|w| Donor { weights: w, weight })
                })
                .collect()
        }
    })
}

/// Inference time per sample: the median of three passes over a batch of up to 256
/// validation samples.
fn latency_ms(model: &msh_train::model::Model, data: &msh_train::data::Dataset) -> f64 {
    let n = data.len().clamp(1, 256);
    let features = &data.features[..(n * data.sample_len()).min(data.features.len())];
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            train::predict(model, features, data.sample_len());
            start.elapsed().as_secs_f64() * 1e3 / n as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[1]
}

/// Builds, trains, evaluates and checkpoints one trial.
fn train_trial(run: &Run, trainer: usize, trial: &mut TrialRecord) -> Result<TrialOutcome<()>, TrialError> {
    let splits = run.splits()?;
    let device = run.device()?;
    let architecture = expand(run, trial, &splits.train.shape).map_err(TrialFailure::failed)?;
    let spec = ModelSpec { architecture, input_shape: splits.train.shape.clone(), task: splits.task };
    if let Some(budget) = run.workflow.objectives.max_parameters {
        // Counted from the inferred shapes: nothing is allocated for a model over budget.
        let parameters = msh_graph::parameter_count(&spec.architecture, &spec.input_shape, spec.task.outputs())
            .map_err(|e| TrialFailure::failed(e.to_string()))?;
        if parameters > budget {
            trial.parameters = parameters;
            return Err(TrialFailure::failed(format!("{parameters} parameters, over the budget of {budget}")).into());
        }
    }
    let seed = run.workflow.seed ^ trial.id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let config = run.workflow.trial_config(&trial.hparams, seed);
    let id = trial.id;
    let distill = super::distill::search_guidance(run, &splits, trial)?;
    trial.teacher = distill.as_ref().map(|(_, teacher)| *teacher).or(trial.teacher);
    let residual = residual_base(run, &splits, trial)?;
    // Early stopping records the best validation loss so far in the store; a store error
    // ends training and is returned once it has (the trial is requeued).
    let store_error = std::sync::Mutex::new(None);
    let stage = trial.stage.clone();
    let epochs = config.epochs;
    let judge = |reports: &[train::EpochReport]| {
        let (Some(rule), Some(last)) = (&run.workflow.early_stopping, reports.last()) else { return true };
        let best = reports.iter().map(|r| r.valid.loss).fold(f64::INFINITY, f64::min);
        super::early_stop::judge(&run.store, &stage, rule, id, (last.epoch, epochs), best).unwrap_or_else(|e| {
            *store_error.lock().expect("no panics while recording") = Some(e);
            false
        })
    };
    let guidance = train::Guidance {
        donors: donors(run, trial)?,
        distill: distill.map(|(d, _)| d),
        residual: residual.as_ref().filter(|r| !r.members.is_empty()).map(|r| r.guidance.clone()),
        early_stop: run.workflow.early_stopping.is_some().then_some(train::EpochRule(&judge)),
    };
    let training =
        TrialTraining { trainer, spec: &spec, splits: &splits, config: &config, device: &device, guidance: &guidance };
    let outcome = training.train(run, trial);
    if let Some(e) = store_error.into_inner().expect("no panics while recording") {
        return Err(EngineError::from(e).into());
    }
    let trained = match outcome? {
        TrialOutcome::Recorded(trained) => trained,
        TrialOutcome::Interrupted => return Ok(TrialOutcome::Interrupted),
    };
    if let Outcome::Diverged { epoch, step, loss } = trained.outcome {
        return Err(TrialFailure::diverged(format!("loss became {loss} at epoch {epoch}, step {step}")).into());
    }
    let test = match residual.as_ref().filter(|r| !r.members.is_empty()) {
        Some(base) => {
            let own = train::predict(&trained.model, &splits.test.features, splits.test.sample_len());
            train::metrics_of(&train::add_outputs(own, &base.test), &splits.test, splits.task, &splits.normalization)
        }
        None => train::evaluate(&trained.model, &splits.test, splits.task, &splits.normalization),
    };
    record_result(run, trial, &spec, &splits, &trained, test)?;
    if let Some(base) = &residual {
        // The trial is the ensemble of its base and itself, outputs summed.
        let mut members: Vec<train::Member> = base
            .members
            .iter()
            .map(|&id| train::Member { trial: id, checkpoint: PathBuf::from("..").join(id.to_string()), weight: 1.0 })
            .collect();
        members.push(train::Member { trial: trial.id, checkpoint: PathBuf::from("."), weight: 1.0 });
        trial.members = members.iter().map(|m| (m.trial, 1.0)).collect();
        let file =
            train::EnsembleFile { members, method: "residual".into(), combine: train::Combine::Sum, combiner: None };
        let path = run.dir.join(checkpoint_dir(trial.id)).join(train::ENSEMBLE_FILE);
        msh_io::atomic_file::write_atomic(&path, &serde_json::to_vec_pretty(&file).expect("json"))
            .map_err(|source| EngineError::Io { path, source })?;
    }
    trial.latency_ms = Some(latency_ms(&trained.model, &splits.valid));
    Ok(TrialOutcome::Recorded(()))
}
