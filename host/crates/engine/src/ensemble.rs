//! The ensemble stage: pick and weight members among a search's trials (average,
//! weighted, greedy, non-adaptive, adaptive) or learn a combiner over them (learned),
//! evaluate the ensemble, and record it as a trial of the stage whose "checkpoint" is an
//! `ensemble.json` over the members'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::{EngineError, EngineEvent, Run};
use crate::workflow::{EnsembleMethod, EnsembleStage};
use msh_store::{self as store, StoreError, TrialRecord, TrialStatus};
use msh_train::data::Splits;
use msh_train::{self as train, Checkpoint, EnsembleFile, LearnedCombiner, Member, Metrics};

/// A candidate's predicted probabilities on the validation and test splits (and on the
/// training split, which only a learned combiner reads).
struct Candidate {
    trial: TrialRecord,
    valid: Vec<f64>,
    test: Vec<f64>,
    train: Vec<f64>,
}

/// Where ensemble files of stage `name` live, relative to the run directory.
pub fn ensemble_dir(name: &str) -> PathBuf {
    PathBuf::from("ensembles").join(name)
}

fn metrics(members: &[(&Candidate, f64)], splits: &Splits, valid: bool) -> Metrics {
    metrics_with(members, None, splits, valid)
}

fn metrics_with(
    members: &[(&Candidate, f64)],
    combiner: Option<&LearnedCombiner>,
    splits: &Splits,
    valid: bool,
) -> Metrics {
    let views: Vec<&[f64]> =
        members.iter().map(|(c, _)| if valid { c.valid.as_slice() } else { c.test.as_slice() }).collect();
    let weights: Vec<f64> = members.iter().map(|(_, w)| *w).collect();
    let outputs = match combiner {
        Some(combiner) => combiner.apply(&views, splits.task),
        None => train::combine(&views, &weights, splits.task),
    };
    let data = if valid { &splits.valid } else { &splits.test };
    train::metrics_of(&outputs, data, splits.task, &splits.normalization)
}

fn valid_loss(members: &[(&Candidate, f64)], splits: &Splits) -> f64 {
    metrics(members, splits, true).loss
}

/// Chooses members and weights among `pool` (ordered by trial id).
fn choose<'a>(
    method: EnsembleMethod,
    pool: &'a [Candidate],
    top_k: usize,
    width: usize,
    every: usize,
    seed: u64,
    splits: &Splits,
) -> Vec<(&'a Candidate, f64)> {
    let mut best: Vec<&Candidate> = pool.iter().collect();
    best.sort_by(|a, b| a.trial.score().total_cmp(&b.trial.score()));
    best.truncate(top_k);
    match method {
        // A learned combiner weighs the members itself.
        EnsembleMethod::Average | EnsembleMethod::Learned => best.into_iter().map(|c| (c, 1.0)).collect(),
        EnsembleMethod::Weighted => {
            let views: Vec<&[f64]> = best.iter().map(|c| c.valid.as_slice()).collect();
            let weights = train::learn_weights(&views, &splits.valid, splits.task);
            best.into_iter().zip(weights).filter(|(_, w)| *w > 1e-6).collect()
        }
        EnsembleMethod::Greedy => {
            // Forward selection with replacement; keep the best ensemble seen.
            let mut counts: BTreeMap<usize, f64> = BTreeMap::new();
            let mut best_seen = (f64::INFINITY, counts.clone());
            for _ in 0..(2 * best.len()).max(1) {
                let (pick, loss) = (0..best.len())
                    .map(|i| {
                        let mut trial = counts.clone();
                        *trial.entry(i).or_default() += 1.0;
                        let members: Vec<(&Candidate, f64)> = trial.iter().map(|(&j, &w)| (best[j], w)).collect();
                        (i, valid_loss(&members, splits))
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .expect("at least one candidate");
                *counts.entry(pick).or_default() += 1.0;
                if loss < best_seen.0 {
                    best_seen = (loss, counts.clone());
                }
            }
            best_seen.1.into_iter().map(|(j, w)| (best[j], w)).collect()
        }
        EnsembleMethod::NonAdaptive => {
            let width = width.min(best.len()).max(1);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let mut groups: Vec<Vec<&Candidate>> = vec![best[..width].to_vec()];
            for _ in 0..64 {
                let mut shuffled = best.clone();
                shuffled.shuffle(&mut rng);
                groups.push(shuffled[..width].to_vec());
            }
            let group = groups
                .into_iter()
                .map(|g| {
                    let members: Vec<(&Candidate, f64)> = g.iter().map(|c| (*c, 1.0)).collect();
                    (valid_loss(&members, splits), members)
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .expect("at least one group");
            group.1
        }
        EnsembleMethod::Adaptive => {
            let mut members: Vec<(&Candidate, f64)> = Vec::new();
            let mut loss = f64::INFINITY;
            for window in pool.chunks(every.max(1)) {
                let Some(champion) = window
                    .iter()
                    .filter(|c| !members.iter().any(|(m, _)| m.trial.id == c.trial.id))
                    .min_by(|a, b| a.trial.score().total_cmp(&b.trial.score()))
                else {
                    continue;
                };
                let mut grown = members.clone();
                grown.push((champion, 1.0));
                let grown_loss = valid_loss(&grown, splits);
                if grown_loss < loss {
                    (members, loss) = (grown, grown_loss);
                }
            }
            members
        }
    }
}

/// An ensemble chosen, evaluated and written as `ensemble.json`.
pub struct Built {
    pub members: Vec<(u64, f64)>,
    pub valid: Metrics,
    pub test: Metrics,
    /// The member with the lowest validation loss.
    pub best_member: TrialRecord,
    pub parameters: u64,
    pub method: String,
}

/// Chooses members among `candidates` (completed trials with checkpoints, in id order),
/// evaluates the ensemble and writes its `ensemble.json` to `relative` in the run dir.
pub fn build(
    run: &Run,
    mut candidates: Vec<TrialRecord>,
    method: EnsembleMethod,
    top_k: usize,
    width: usize,
    every: usize,
    relative: &Path,
) -> Result<Built, EngineError> {
    // Every method but `adaptive` looks only at the best `top_k`: predict only for them.
    if method != EnsembleMethod::Adaptive {
        let mut ranked = candidates.clone();
        ranked.sort_by(|a, b| a.score().total_cmp(&b.score()));
        let keep: Vec<u64> = ranked.iter().take(top_k).map(|t| t.id).collect();
        candidates.retain(|t| keep.contains(&t.id));
    }
    let splits = run.splits()?;
    let device = run.device()?;
    let mut pool = Vec::with_capacity(candidates.len());
    for trial in candidates {
        let dir = run.dir.join(trial.checkpoint.as_ref().expect("candidates have checkpoints"));
        let (model, _) = Checkpoint::new(dir).load(&device.device).map_err(|e| EngineError::Stage(e.to_string()))?;
        let predict = |data: &msh_train::data::Dataset| {
            train::to_probabilities(&train::predict(&model, &data.features, data.sample_len()), splits.task)
        };
        let train = if method == EnsembleMethod::Learned { predict(&splits.train) } else { Vec::new() };
        pool.push(Candidate { valid: predict(&splits.valid), test: predict(&splits.test), train, trial });
    }
    let members = choose(method, &pool, top_k, width, every, run.workflow.seed, &splits);
    let combiner = (method == EnsembleMethod::Learned).then(|| {
        let train: Vec<&[f64]> = members.iter().map(|(c, _)| c.train.as_slice()).collect();
        let valid: Vec<&[f64]> = members.iter().map(|(c, _)| c.valid.as_slice()).collect();
        train::learn_combiner(&train, &splits.train, &valid, &splits.valid, splits.task)
    });
    let (valid, test) = (
        metrics_with(&members, combiner.as_ref(), &splits, true),
        metrics_with(&members, combiner.as_ref(), &splits, false),
    );
    let file = EnsembleFile {
        members: members
            .iter()
            .map(|(c, w)| Member {
                trial: c.trial.id,
                checkpoint: Path::new("../..").join(c.trial.checkpoint.as_ref().expect("candidates have checkpoints")),
                weight: *w,
            })
            .collect(),
        method: serde_json::to_value(method).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        combine: if combiner.is_some() { train::Combine::Learned } else { train::Combine::Average },
        combiner,
    };
    let dir = run.dir.join(relative);
    std::fs::create_dir_all(&dir).map_err(|source| EngineError::Io { path: dir.clone(), source })?;
    let path = dir.join(train::ENSEMBLE_FILE);
    msh_io::atomic_file::write_atomic(&path, &serde_json::to_vec_pretty(&file).expect("json"))
        .map_err(|source| EngineError::Io { path, source })?;
    let best_member = members
        .iter()
        .map(|(c, _)| c)
        .min_by(|a, b| a.trial.score().total_cmp(&b.trial.score()))
        .expect("an ensemble has members")
        .trial
        .clone();
    Ok(Built {
        members: members.iter().map(|(c, w)| (c.trial.id, *w)).collect(),
        parameters: members.iter().map(|(c, _)| c.trial.parameters).sum(),
        valid,
        test,
        best_member,
        method: file.method,
    })
}

impl Built {
    /// Fills `trial` in as this ensemble: completed, its metrics, members and file.
    pub fn describe_in(&self, trial: &mut TrialRecord, relative: PathBuf) {
        trial.status = TrialStatus::Completed;
        trial.architecture = self.best_member.architecture.clone();
        trial.hparams = self.best_member.hparams.clone();
        trial.parent = Some(self.best_member.id);
        trial.objective = Some(self.valid.loss);
        trial.valid = Some(self.valid.clone());
        trial.test = Some(self.test.clone());
        trial.parameters = self.parameters;
        trial.members = self.members.clone();
        trial.checkpoint = Some(relative);
    }
}

/// Runs an ensemble stage over the completed trials of search stage `source`.
pub fn run_ensemble(run: &Run, name: &str, stage: &EnsembleStage, source: &str) -> Result<String, EngineError> {
    let method = stage.method.unwrap_or_default();
    let top_k = stage.top_k.unwrap_or(if method == EnsembleMethod::Adaptive { usize::MAX } else { 5 });
    let mut candidates = run.completed(source)?;
    candidates.retain(|t| t.members.is_empty());
    if let Some(pool) = stage.pool {
        candidates.truncate(pool);
    }
    if candidates.is_empty() {
        return Err(EngineError::Stage(format!("search stage `{source}` has no completed trial to ensemble")));
    }
    let relative = ensemble_dir(name);
    let built = build(run, candidates, method, top_k, stage.width.unwrap_or(3), stage.every.unwrap_or(5), &relative)?;
    let now = store::now();
    let mut record = TrialRecord {
        stage: name.into(),
        teacher: None,
        owner: None,
        attempts: 1,
        inherited: 0,
        epochs: 0,
        best_epoch: 0,
        created: now,
        started: Some(now),
        finished: Some(now),
        train_seconds: 0.0,
        error: None,
        latency_ms: None,
        losses: Vec::new(),
        worker: None,
        ..built.best_member.clone()
    };
    built.describe_in(&mut record, relative);
    let record = run.store.write(|t| -> Result<TrialRecord, StoreError> {
        let mut record = record.clone();
        record.id = t.next_trial_id()?;
        t.put_trial(&record)?;
        Ok(record)
    })?;
    (run.report)(EngineEvent::TrialFinished { stage: name.into(), trainer: 0, trial: Box::new(record.clone()) });
    let ids: Vec<String> = built.members.iter().map(|(id, w)| format!("{id}x{w:.2}")).collect();
    let best = &built.best_member;
    Ok(format!(
        "{} of trials [{}] as trial {}: valid {}, test {} (best member, trial {}: valid {}, test {})",
        built.method,
        ids.join(", "),
        record.id,
        built.valid.headline(),
        built.test.headline(),
        best.id,
        best.valid.as_ref().map(Metrics::headline).unwrap_or_default(),
        best.test.as_ref().map(Metrics::headline).unwrap_or_default(),
    ))
}
