//! Ensembles: several checkpoints combined by a weighted average of their predicted
//! probabilities (classification) or values (regression), a sum of outputs, or a learned
//! dense layer. The combination rules, the ways of learning weights, and `ensemble.json`,
//! which makes an ensemble loadable like a single model.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

use super::{Checkpoint, CheckpointError, CheckpointMeta, LearnedCombiner, predict};
use crate::data::Dataset;
use crate::model::{Model, Task};

/// The file that marks a directory as an ensemble.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// A member: its checkpoint directory (relative to the ensemble file) and weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub trial: u64,
    pub checkpoint: PathBuf,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleFile {
    pub members: Vec<Member>,
    /// How the weights were found (`average`, `weighted`, `greedy`, `residual`, ...).
    pub method: String,
    #[serde(default)]
    pub combine: Combine,
    /// The dense layer of `Combine::Learned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combiner: Option<LearnedCombiner>,
}

/// How members' outputs make the ensemble's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The weighted mean of probabilities (classification) or values (regression).
    #[default]
    Average,
    /// The sum of raw outputs: members trained on the residual of those before them.
    Sum,
    /// A dense layer over the members' concatenated log-probabilities (or values).
    Learned,
}

/// Adds `base` to `outputs` element-wise (a residual member on top of its ensemble).
pub fn add_outputs(mut outputs: Vec<f32>, base: &[f32]) -> Vec<f32> {
    for (o, b) in outputs.iter_mut().zip(base) {
        *o += b;
    }
    outputs
}

/// Probabilities (rows of `classes`) or regression values of one model's raw outputs.
pub fn to_probabilities(outputs: &[f32], task: Task) -> Vec<f64> {
    match task {
        Task::Classification { classes } => outputs
            .chunks(classes)
            .flat_map(|row| {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
                let total: f64 = exps.iter().sum();
                exps.into_iter().map(move |e| e / total)
            })
            .collect(),
        Task::Regression => outputs.iter().map(|&v| v as f64).collect(),
    }
}

/// The weighted mean of members' probabilities, as outputs the metrics read: the log of
/// the mean probability acts as logits (log-softmax of it is itself).
pub fn combine(members: &[&[f64]], weights: &[f64], task: Task) -> Vec<f32> {
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut mean = vec![0f64; members.first().map_or(0, |m| m.len())];
    for (values, w) in members.iter().zip(weights) {
        for (m, v) in mean.iter_mut().zip(values.iter()) {
            *m += w / total * v;
        }
    }
    match task {
        Task::Classification { .. } => mean.into_iter().map(|p| p.max(1e-12).ln() as f32).collect(),
        Task::Regression => mean.into_iter().map(|v| v as f32).collect(),
    }
}

/// Mixture weights maximising the validation likelihood (EM, which never lowers it), or
/// for regression weights proportional to 1 / each member's squared error.
pub fn learn_weights(members: &[&[f64]], data: &Dataset, task: Task) -> Vec<f64> {
    let k = members.len();
    let mut weights = vec![1.0 / k as f64; k];
    match task {
        Task::Classification { classes } => {
            for _ in 0..200 {
                let mut next = vec![0f64; k];
                for (i, &target) in data.targets.iter().enumerate() {
                    let at = i * classes + target as usize;
                    let likelihoods: Vec<f64> = members.iter().zip(&weights).map(|(m, w)| w * m[at]).collect();
                    let total: f64 = likelihoods.iter().sum::<f64>().max(f64::MIN_POSITIVE);
                    for (n, l) in next.iter_mut().zip(likelihoods) {
                        *n += l / total;
                    }
                }
                let n = data.len().max(1) as f64;
                weights = next.into_iter().map(|w| w / n).collect();
            }
        }
        Task::Regression => {
            weights = members
                .iter()
                .map(|m| {
                    let mse = m.iter().zip(&data.targets).map(|(p, &t)| (p - t as f64).powi(2)).sum::<f64>()
                        / data.len().max(1) as f64;
                    1.0 / mse.max(1e-12)
                })
                .collect();
        }
    }
    weights
}

/// A loaded single model or ensemble, predicting raw outputs for normalised samples.
pub struct Predictor {
    members: Vec<(Model, f64)>,
    pub meta: CheckpointMeta,
    pub ensemble: Option<EnsembleFile>,
}

impl Predictor {
    /// Loads `dir`: a checkpoint (`model.json`) or an ensemble (`ensemble.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, CheckpointError> {
        let file = dir.join(ENSEMBLE_FILE);
        if !file.is_file() {
            let (model, meta) = Checkpoint::new(dir).load(device)?;
            return Ok(Self { members: vec![(model, 1.0)], meta, ensemble: None });
        }
        let read_err = |reason: String| CheckpointError::Read { path: file.clone(), reason };
        let bytes = std::fs::read(&file).map_err(|e| read_err(e.to_string()))?;
        let ensemble: EnsembleFile = serde_json::from_slice(&bytes).map_err(|e| read_err(e.to_string()))?;
        if ensemble.members.is_empty() {
            return Err(read_err("has no members".into()));
        }
        let mut members = Vec::new();
        let mut meta: Option<CheckpointMeta> = None;
        for member in &ensemble.members {
            if !(member.weight.is_finite() && member.weight >= 0.0) {
                return Err(read_err(format!(
                    "member {}: weight {} is not a finite, non-negative number",
                    member.trial, member.weight
                )));
            }
            let (model, m) = Checkpoint::new(dir.join(&member.checkpoint)).load(device)?;
            if let Some(first) = &meta
                && (first.spec.input_shape != m.spec.input_shape || first.spec.task != m.spec.task)
            {
                return Err(read_err(format!(
                    "member {} takes samples of shape {:?} for {:?}, the first takes {:?} for {:?}",
                    member.trial, m.spec.input_shape, m.spec.task, first.spec.input_shape, first.spec.task
                )));
            }
            members.push((model, member.weight));
            meta.get_or_insert(m);
        }
        if ensemble.combine == Combine::Average && members.iter().all(|(_, w)| *w == 0.0) {
            return Err(read_err("every member has weight 0".into()));
        }
        let meta = meta.expect("at least one member");
        match (&ensemble.combine, &ensemble.combiner) {
            (Combine::Learned, None) => return Err(read_err("combines `learned` but holds no `combiner`".into())),
            (Combine::Learned, Some(combiner)) => combiner.check(members.len(), meta.spec.task).map_err(read_err)?,
            (_, Some(_)) => return Err(read_err("holds a `combiner` but does not combine `learned`".into())),
            _ => {}
        }
        Ok(Self { members, meta, ensemble: Some(ensemble) })
    }

    /// A model in memory, as if loaded from its checkpoint (with no normalisation): for
    /// tests here and in the exporters.
    #[doc(hidden)]
    pub fn from_model(model: Model) -> Self {
        let spec = model.spec().clone();
        let meta = CheckpointMeta {
            version: super::CHECKPOINT_VERSION,
            parameters: model.parameter_count(),
            spec,
            normalization: crate::data::Normalization::identity(),
            class_names: Vec::new(),
            metrics: Default::default(),
        };
        Self { members: vec![(model, 1.0)], meta, ensemble: None }
    }

    /// The models and their weights (one, weight 1, for a single model).
    pub fn members(&self) -> &[(Model, f64)] {
        &self.members
    }

    /// What a user reads for raw samples (flat, as the data set holds them): class
    /// probabilities (rows of `classes`) or regression values in target units.
    pub fn predict_raw(&self, raw: &[f32]) -> Vec<f64> {
        let sample_len: usize = self.meta.spec.input_shape.iter().product();
        let mut features = raw.to_vec();
        self.meta.normalization.apply_features(&mut features, sample_len);
        let outputs = self.predict(&features, sample_len);
        match self.meta.spec.task {
            task @ Task::Classification { .. } => to_probabilities(&outputs, task),
            Task::Regression => outputs.iter().map(|&v| self.meta.normalization.unscale_target(v) as f64).collect(),
        }
    }

    /// Outputs for flat, normalised samples (for an ensemble: log mean probabilities).
    pub fn predict(&self, features: &[f32], sample_len: usize) -> Vec<f32> {
        let ensemble = self.ensemble.as_ref();
        if let ([(model, _)], None) = (self.members.as_slice(), ensemble.and_then(|e| e.combiner.as_ref())) {
            return predict(model, features, sample_len);
        }
        let task = self.meta.spec.task;
        if ensemble.is_some_and(|e| e.combine == Combine::Sum) {
            return self.members.iter().fold(Vec::new(), |sum, (m, _)| {
                let outputs = predict(m, features, sample_len);
                if sum.is_empty() { outputs } else { add_outputs(outputs, &sum) }
            });
        }
        let outputs: Vec<Vec<f64>> =
            self.members.iter().map(|(m, _)| to_probabilities(&predict(m, features, sample_len), task)).collect();
        let views: Vec<&[f64]> = outputs.iter().map(Vec::as_slice).collect();
        if let Some(combiner) = ensemble.and_then(|e| e.combiner.as_ref()) {
            return combiner.apply(&views, task);
        }
        let weights: Vec<f64> = self.members.iter().map(|(_, w)| *w).collect();
        combine(&views, &weights, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn em_weights_favour_the_member_that_is_right() {
        // Two classes, three samples with label 0; member a is confident and right.
        let a = [0.9, 0.1, 0.9, 0.1, 0.9, 0.1];
        let b = [0.4, 0.6, 0.4, 0.6, 0.4, 0.6];
        let data = Dataset { features: vec![0.0; 3], targets: vec![0.0; 3], shape: vec![1] };
        let w = learn_weights(&[&a, &b], &data, Task::Classification { classes: 2 });
        assert!(w[0] > 0.99, "{w:?}");
        let combined = combine(&[&a, &b], &[1.0, 1.0], Task::Classification { classes: 2 });
        assert!((combined[0] as f64 - 0.65f64.ln()).abs() < 1e-6);
    }
}
