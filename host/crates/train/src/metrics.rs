//! Evaluation: loss, accuracy or R² of a model on a data set, and raw predictions.

use burn::prelude::*;

use crate::data::{Dataset, Normalization};
use crate::model::{Model, Task};

const EVAL_BATCH: usize = 512;

pub use msh_vocab::Metrics;

/// Model outputs for flat, already normalised samples: `len * outputs` values, row-major.
pub fn predict(model: &Model, features: &[f32], sample_len: usize) -> Vec<f32> {
    let device = model.device();
    let mut out = Vec::new();
    for chunk in features.chunks(EVAL_BATCH * sample_len) {
        let rows = chunk.len() / sample_len;
        let x = Tensor::from_data(TensorData::new(chunk.to_vec(), [rows, sample_len]), &device);
        let y = model.forward(x).into_data();
        out.extend(y.try_into_vec_as::<f32>().expect("float outputs convert to f32"));
    }
    out
}

/// Evaluates a (validation-mode) model on `data`.
pub fn evaluate(model: &Model, data: &Dataset, task: Task, norm: &Normalization) -> Metrics {
    metrics_of(&predict(model, &data.features, data.sample_len()), data, task, norm)
}

/// Metrics of model outputs (logits, or standardised regression values) against `data`.
pub fn metrics_of(outputs: &[f32], data: &Dataset, task: Task, norm: &Normalization) -> Metrics {
    let width = task.outputs();
    let n = data.len();
    match task {
        Task::Classification { .. } => {
            let (mut loss, mut correct) = (0.0f64, 0usize);
            for (row, &target) in outputs.chunks(width).zip(&data.targets) {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let log_sum = row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln() + max as f64;
                loss += log_sum - row[target as usize] as f64;
                let predicted = argmax(row);
                correct += usize::from(predicted == target as usize);
            }
            let n = n.max(1) as f64;
            Metrics { samples: data.len(), loss: loss / n, accuracy: Some(correct as f64 / n), r2: None, rmse: None }
        }
        Task::Regression => {
            let (mut sq, mut sq_units) = (0.0f64, 0.0f64);
            let truth: Vec<f64> = data.targets.iter().map(|&t| norm.unscale_target(t) as f64).collect();
            for ((&p, &t), &truth) in outputs.iter().zip(&data.targets).zip(&truth) {
                sq += ((p - t) as f64).powi(2);
                sq_units += (norm.unscale_target(p) as f64 - truth).powi(2);
            }
            let mean = truth.iter().sum::<f64>() / n.max(1) as f64;
            let total: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
            let n = n.max(1) as f64;
            Metrics {
                samples: data.len(),
                loss: sq / n,
                accuracy: None,
                r2: Some(if total > 0.0 { 1.0 - sq_units / total } else { 0.0 }),
                rmse: Some((sq_units / n).sqrt()),
            }
        }
    }
}

/// Index of the largest value (NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}
