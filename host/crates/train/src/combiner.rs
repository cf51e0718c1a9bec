//! The learned combiner (Model Search's WEIGHTED ensemble): one dense layer over the
//! members' concatenated log-probabilities (classification) or values (regression),
//! trained on the training split and kept at its best validation loss.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::model::Task;

/// Training samples the combiner fits at most (an evenly spaced selection beyond).
const MAX_FIT_SAMPLES: usize = 10_000;
/// Full-batch Adam steps for classification.
const STEPS: usize = 300;
const LEARNING_RATE: f64 = 0.01;
/// L2 penalty on the weights' distance from the plain average the layer starts as.
const L2: f64 = 1e-3;
/// Smallest probability taken as an input (its log bounds the inputs).
const MIN_PROBABILITY: f64 = 1e-12;

/// A dense layer from `members * width` inputs to `outputs` outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedCombiner {
    pub members: usize,
    /// Inputs per member: the classes, or 1 for regression.
    pub width: usize,
    /// `outputs x (members * width)`, row-major.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
}

impl LearnedCombiner {
    fn inputs(&self) -> usize {
        self.members * self.width
    }

    fn outputs(&self) -> usize {
        self.bias.len()
    }

    /// The plain average: each output reads its own class (or value) of every member.
    fn average(members: usize, width: usize) -> Self {
        let inputs = members * width;
        let mut weights = vec![0.0; width * inputs];
        for out in 0..width {
            for m in 0..members {
                weights[out * inputs + m * width + out] = 1.0 / members as f64;
            }
        }
        Self { members, width, weights, bias: vec![0.0; width] }
    }

    /// Why this combiner cannot combine `members` members for `task`, if it cannot.
    pub fn check(&self, members: usize, task: Task) -> Result<(), String> {
        let width = task.outputs();
        if self.members != members || self.width != width {
            return Err(format!(
                "the combiner reads {} members of {} outputs; the ensemble has {members} of {width}",
                self.members, self.width
            ));
        }
        if self.weights.len() != self.inputs() * width || self.bias.len() != width {
            return Err(format!(
                "the combiner holds {} weights and {} biases; {} members of {width} outputs need {} and {width}",
                self.weights.len(),
                self.bias.len(),
                members,
                self.inputs() * width
            ));
        }
        if !self.weights.iter().chain(&self.bias).all(|v| v.is_finite()) {
            return Err("the combiner holds a value that is not finite".into());
        }
        Ok(())
    }

    /// Outputs the metrics read (logits, or values) for members' probabilities or values
    /// (each `samples x width`, as `to_probabilities` gives them).
    pub fn apply(&self, members: &[&[f64]], task: Task) -> Vec<f32> {
        let samples = members.first().map_or(0, |m| m.len() / self.width);
        let mut x = vec![0.0; self.inputs()];
        let mut out = Vec::with_capacity(samples * self.outputs());
        for s in 0..samples {
            gather(members, self.width, s, task, &mut x);
            for o in 0..self.outputs() {
                out.push(self.output(o, &x) as f32);
            }
        }
        out
    }

    fn output(&self, o: usize, x: &[f64]) -> f64 {
        let row = &self.weights[o * x.len()..(o + 1) * x.len()];
        self.bias[o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }
}

/// Sample `s`'s inputs: every member's log-probabilities (or values), member after member.
fn gather(members: &[&[f64]], width: usize, s: usize, task: Task, x: &mut [f64]) {
    for (m, values) in members.iter().enumerate() {
        for (slot, &v) in x[m * width..(m + 1) * width].iter_mut().zip(&values[s * width..(s + 1) * width]) {
            *slot = match task {
                Task::Classification { .. } => v.max(MIN_PROBABILITY).ln(),
                Task::Regression => v,
            };
        }
    }
}

/// Fits a combiner to members' outputs on `train` (`train_outputs`), choosing the step
/// with the lowest loss on `valid` (`valid_outputs`).
pub fn learn_combiner(
    train_outputs: &[&[f64]],
    train: &Dataset,
    valid_outputs: &[&[f64]],
    valid: &Dataset,
    task: Task,
) -> LearnedCombiner {
    let width = task.outputs();
    let members = train_outputs.len();
    let mut combiner = LearnedCombiner::average(members, width);
    let fit = Inputs::new(train_outputs, train, task, width);
    let check = Inputs::new(valid_outputs, valid, task, width);
    if fit.rows == 0 {
        return combiner;
    }
    if let Task::Regression = task {
        if let Some(solved) = ridge(&fit, members) {
            combiner = solved;
        }
        return combiner;
    }
    let start = combiner.clone();
    let mut best = (check.loss(&combiner), combiner.clone());
    let params = combiner.weights.len() + combiner.bias.len();
    let (mut m, mut v) = (vec![0.0; params], vec![0.0; params]);
    for step in 1..=STEPS {
        let mut grad = fit.gradient(&combiner);
        for (g, (w, w0)) in grad.iter_mut().zip(combiner.weights.iter().zip(&start.weights)) {
            *g += 2.0 * L2 * (w - w0);
        }
        let (b1, b2) = (0.9f64, 0.999f64);
        let values = combiner.weights.iter_mut().chain(combiner.bias.iter_mut());
        for (i, value) in values.enumerate() {
            m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
            v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
            let (m_hat, v_hat) = (m[i] / (1.0 - b1.powi(step as i32)), v[i] / (1.0 - b2.powi(step as i32)));
            *value -= LEARNING_RATE * m_hat / (v_hat.sqrt() + 1e-8);
        }
        if step % 10 == 0 {
            let loss = check.loss(&combiner);
            if loss < best.0 {
                best = (loss, combiner.clone());
            }
        }
    }
    best.1
}

/// A split's combiner inputs and targets, at most `MAX_FIT_SAMPLES` rows.
struct Inputs {
    x: Vec<f64>,
    targets: Vec<f64>,
    rows: usize,
    width: usize,
}

impl Inputs {
    fn new(outputs: &[&[f64]], data: &Dataset, task: Task, width: usize) -> Self {
        let n = data.len();
        let stride = n.div_ceil(MAX_FIT_SAMPLES).max(1);
        let inputs = outputs.len() * width;
        let rows: Vec<usize> = (0..n).step_by(stride).collect();
        let mut x = vec![0.0; rows.len() * inputs];
        for (r, &s) in rows.iter().enumerate() {
            gather(outputs, width, s, task, &mut x[r * inputs..(r + 1) * inputs]);
        }
        let targets = rows.iter().map(|&s| data.targets[s] as f64).collect();
        Self { x, targets, rows: rows.len(), width }
    }

    fn row(&self, r: usize) -> &[f64] {
        let inputs = self.x.len() / self.rows.max(1);
        &self.x[r * inputs..(r + 1) * inputs]
    }

    /// Softmax probabilities of the combiner's outputs for row `r`.
    fn softmax(&self, c: &LearnedCombiner, r: usize, probabilities: &mut [f64]) {
        let x = self.row(r);
        for (o, p) in probabilities.iter_mut().enumerate() {
            *p = c.output(o, x);
        }
        let max = probabilities.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = probabilities
            .iter_mut()
            .map(|p| {
                *p = (*p - max).exp();
                *p
            })
            .sum();
        probabilities.iter_mut().for_each(|p| *p /= total);
    }

    /// Mean cross-entropy of the combiner on these rows.
    fn loss(&self, c: &LearnedCombiner) -> f64 {
        let mut p = vec![0.0; self.width];
        let total: f64 = (0..self.rows)
            .map(|r| {
                self.softmax(c, r, &mut p);
                -p[self.targets[r] as usize].max(f64::MIN_POSITIVE).ln()
            })
            .sum();
        total / self.rows.max(1) as f64
    }

    /// The mean cross-entropy's gradient: weights (row-major) then biases.
    fn gradient(&self, c: &LearnedCombiner) -> Vec<f64> {
        let inputs = c.inputs();
        let mut grad = vec![0.0; c.weights.len() + c.bias.len()];
        let mut p = vec![0.0; self.width];
        for r in 0..self.rows {
            self.softmax(c, r, &mut p);
            p[self.targets[r] as usize] -= 1.0;
            let x = self.row(r);
            for (o, &d) in p.iter().enumerate() {
                for (g, &v) in grad[o * inputs..(o + 1) * inputs].iter_mut().zip(x) {
                    *g += d * v;
                }
                grad[c.weights.len() + o] += d;
            }
        }
        let n = self.rows as f64;
        grad.iter_mut().for_each(|g| *g /= n);
        grad
    }
}

/// Ridge regression of the targets on the members' values and a bias (the bias not
/// penalised), by the normal equations; `None` when they are singular.
fn ridge(fit: &Inputs, members: usize) -> Option<LearnedCombiner> {
    let k = members + 1;
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for r in 0..fit.rows {
        let mut row = fit.row(r).to_vec();
        row.push(1.0);
        for i in 0..k {
            b[i] += row[i] * fit.targets[r];
            for j in 0..k {
                a[i * k + j] += row[i] * row[j];
            }
        }
    }
    for i in 0..members {
        a[i * k + i] += L2 * fit.rows as f64;
    }
    let solution = solve(a, b, k)?;
    Some(LearnedCombiner { members, width: 1, weights: solution[..members].to_vec(), bias: vec![solution[members]] })
}

/// Solves `a x = b` (`a` is `k x k`, row-major) by Gaussian elimination with pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, k: usize) -> Option<Vec<f64>> {
    for col in 0..k {
        let pivot = (col..k).max_by(|&i, &j| a[i * k + col].abs().total_cmp(&a[j * k + col].abs()))?;
        if a[pivot * k + col].abs() < 1e-12 {
            return None;
        }
        for j in 0..k {
            a.swap(col * k + j, pivot * k + j);
        }
        b.swap(col, pivot);
        for row in col + 1..k {
            let factor = a[row * k + col] / a[col * k + col];
            for j in col..k {
                a[row * k + j] -= factor * a[col * k + j];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for row in (0..k).rev() {
        let rest: f64 = (row + 1..k).map(|j| a[row * k + j] * x[j]).sum();
        x[row] = (b[row] - rest) / a[row * k + row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(targets: Vec<f32>) -> Dataset {
        Dataset { features: vec![0.0; targets.len()], targets, shape: vec![1] }
    }

    #[test]
    fn a_learned_combiner_trusts_the_member_that_is_right_and_beats_the_average() {
        // Member a is right on class 0 samples, member b on class 1 samples; the average
        // is unsure everywhere, a dense layer can learn whom to believe.
        let targets: Vec<f32> = (0..200).map(|i| (i % 2) as f32).collect();
        let a: Vec<f64> = targets.iter().flat_map(|&t| if t == 0.0 { [0.9, 0.1] } else { [0.6, 0.4] }).collect();
        let b: Vec<f64> = targets.iter().flat_map(|&t| if t == 1.0 { [0.1, 0.9] } else { [0.4, 0.6] }).collect();
        let task = Task::Classification { classes: 2 };
        let (set, members) = (data(targets), [a.as_slice(), b.as_slice()]);
        let combiner = learn_combiner(&members, &set, &members, &set, task);
        combiner.check(2, task).unwrap();
        let check = Inputs::new(&members, &set, task, 2);
        let average = LearnedCombiner::average(2, 2);
        let (learned, plain) = (check.loss(&combiner), check.loss(&average));
        assert!(learned < 0.5 * plain, "learned {learned} vs average {plain}");
        let outputs = combiner.apply(&members, task);
        let right = outputs.chunks(2).zip(&set.targets).filter(|(o, t)| (o[1] > o[0]) == (**t == 1.0)).count();
        assert_eq!(right, 200);
    }

    #[test]
    fn regression_combiner_is_the_ridge_solution() {
        // The target is 2a - b + 1 exactly.
        let a: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..50).map(|i| (i as f64 * 0.11).cos()).collect();
        let set = data(a.iter().zip(&b).map(|(a, b)| (2.0 * a - b + 1.0) as f32).collect());
        let members = [a.as_slice(), b.as_slice()];
        let c = learn_combiner(&members, &set, &members, &set, Task::Regression);
        assert!((c.weights[0] - 2.0).abs() < 0.05 && (c.weights[1] + 1.0).abs() < 0.05, "{c:?}");
        assert!((c.bias[0] - 1.0).abs() < 0.05, "{c:?}");
        assert!(c.check(3, Task::Regression).is_err());
    }
}
