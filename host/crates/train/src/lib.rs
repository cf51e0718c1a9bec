//! Training: the autodiff loop, optimisers, losses, evaluation and checkpoints.

mod backend;
mod checkpoint;
mod combiner;
pub mod data;
mod ensemble;
mod metrics;
pub mod model;

pub use backend::{Backend, NoGpu, Selected, cores, threads_per_trainer, use_threads};
pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, CheckpointError, CheckpointMeta};
pub use combiner::{LearnedCombiner, learn_combiner};
pub use ensemble::{
    Combine, ENSEMBLE_FILE, EnsembleFile, Member, Predictor, add_outputs, combine, learn_weights, to_probabilities,
};
pub use metrics::{Metrics, argmax, evaluate, metrics_of, predict};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdaGradConfig, AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig, SgdConfig};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Splits};
use crate::model::{Donor, Model, ModelSpec, Task, inherit};
use msh_graph::GraphError;

/// Optimisers Model Search's trainers offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    #[default]
    Adam,
    /// SGD with momentum 0.9.
    Sgd,
    Rmsprop,
    Adagrad,
}

/// The most epochs one training run may ask for.
pub const MAX_EPOCHS: usize = 10_000;
/// The largest batch one training run may ask for.
pub const MAX_BATCH_SIZE: usize = 1 << 16;

fn default_epochs() -> usize {
    20
}
fn default_batch() -> usize {
    64
}
fn default_lr() -> f64 {
    1e-3
}

/// Hyper-parameters of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Exponential decay: the rate is multiplied by `lr_decay_rate` every `lr_decay_steps`.
    #[serde(default)]
    pub lr_decay_rate: Option<f64>,
    #[serde(default)]
    pub lr_decay_steps: Option<usize>,
    /// Clip the gradient's global norm to this value.
    #[serde(default)]
    pub gradient_clip: Option<f32>,
    /// L2 penalty (weight decay).
    #[serde(default)]
    pub l2: f32,
    #[serde(default)]
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch(),
            learning_rate: default_lr(),
            optimizer: OptimizerKind::Adam,
            lr_decay_rate: None,
            lr_decay_steps: None,
            gradient_clip: None,
            l2: 0.0,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Every setting in its range: the first one that is not, as an error.
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |what: String| Err(TrainError::Config(what));
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return bad(format!("`epochs` must be in 1..={MAX_EPOCHS}, got {}", self.epochs));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return bad(format!("`batch_size` must be in 1..={MAX_BATCH_SIZE}, got {}", self.batch_size));
        }
        if let Some(clip) = self.gradient_clip
            && !(clip.is_finite() && clip > 0.0)
        {
            return bad(format!("`gradient_clip` must be positive, got {clip}"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!("`learning_rate` must be positive, got {}", self.learning_rate));
        }
        if let Some(rate) = self.lr_decay_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return bad(format!("`lr_decay_rate` must be in (0, 1], got {rate}"));
        }
        if self.lr_decay_steps == Some(0) {
            return bad("`lr_decay_steps` must be at least 1".into());
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!("`l2` must be non-negative, got {}", self.l2));
        }
        Ok(())
    }

    fn optimizer(&self) -> ModuleOptimizer {
        let decay = (self.l2 > 0.0).then(|| WeightDecayConfig::new(self.l2));
        let clip = self.gradient_clip.map(GradientClippingConfig::Norm);
        match self.optimizer {
            OptimizerKind::Adam => AdamConfig::new().with_weight_decay(decay).with_grad_clipping(clip).init(),
            OptimizerKind::Sgd => SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)))
                .with_weight_decay(decay)
                .with_gradient_clipping(clip)
                .init(),
            OptimizerKind::Rmsprop => {
                RmsPropConfig::new().with_momentum(0.0).with_weight_decay(decay).with_grad_clipping(clip).init()
            }
            OptimizerKind::Adagrad => AdaGradConfig::new().with_weight_decay(decay).with_grad_clipping(clip).init(),
        }
    }

    /// Learning rate at optimisation step `step` (continuous exponential decay).
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        match self.lr_decay_rate {
            Some(rate) => self.learning_rate * rate.powf(step as f64 / self.lr_decay_steps.unwrap_or(1000) as f64),
            None => self.learning_rate,
        }
    }
}

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training setting: {0}")]
    Config(String),
    #[error("invalid architecture: {0}")]
    Graph(#[from] GraphError),
    #[error("the architecture expects samples of shape {expected:?}, the data set has {found:?}")]
    Shape { expected: Vec<usize>, found: Vec<usize> },
    #[error(transparent)]
    Transfer(#[from] crate::model::TransferError),
}

/// What happened during one epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid: Metrics,
    pub learning_rate: f64,
    pub seconds: f64,
}

/// Progress as the loop runs, for bars and logs.
#[derive(Debug, Clone)]
pub enum TrainEvent<'a> {
    /// Sent every few batches and after the last; `loss` is the mean since the last event.
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f64,
    },
    Epoch(&'a EpochReport),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    Completed,
    /// The loss became NaN or infinite; the run stopped there.
    Diverged {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    /// The caller asked to stop (`train_until`); the result is incomplete.
    Interrupted {
        epoch: usize,
    },
    /// `Guidance::early_stop` ended the run after this epoch (before the last): the result
    /// is the best epoch so far.
    Stopped {
        epoch: usize,
    },
}

/// The result of a run: the model with the best validation loss, and its history.
#[derive(Debug)]
pub struct Trained {
    pub model: Model,
    pub outcome: Outcome,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub parameters: usize,
    /// Values taken from donors' weights (weight sharing) rather than initialised.
    pub inherited: usize,
    pub train_time: Duration,
}

/// The distillation term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistillLoss {
    /// Mean squared error between student and teacher logits.
    MseLogits,
    /// Mean squared error between their softmax outputs.
    MseSoftmax,
    /// Cross-entropy against the teacher's softened outputs at a temperature (scaled by T²).
    #[default]
    CrossEntropy,
}

/// Learning from a teacher: loss = label loss + `lambda` · distillation term.
#[derive(Debug, Clone)]
pub struct Distill {
    pub loss: DistillLoss,
    pub lambda: f64,
    pub temperature: f64,
    /// The teacher's outputs for every training sample (row-major, one row per sample),
    /// computed once before training.
    pub teacher: std::sync::Arc<Vec<f32>>,
}

/// An ensemble's raw outputs that a residual member's outputs are added to, on the
/// training and validation splits (one row per sample).
#[derive(Debug, Clone)]
pub struct Residual {
    pub train: std::sync::Arc<Vec<f32>>,
    pub valid: std::sync::Arc<Vec<f32>>,
}

/// Asked after every epoch with the reports so far; `false` ends the run there.
#[derive(Clone, Copy)]
pub struct EpochRule<'a>(pub &'a (dyn Fn(&[EpochReport]) -> bool + Sync));

impl std::fmt::Debug for EpochRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochRule")
    }
}

/// What a run starts from and learns from besides the labels, and when it may end early.
#[derive(Debug, Clone, Default)]
pub struct Guidance<'a> {
    /// Weight sharing: checkpoints to initialise matching parameters from.
    pub donors: Vec<Donor>,
    pub distill: Option<Distill>,
    /// Train on the loss of this ensemble plus the model; validation metrics are the sum's.
    pub residual: Option<Residual>,
    /// Early stopping: consulted after every epoch, it can end the run before the last
    /// (`Outcome::Stopped`).
    pub early_stop: Option<EpochRule<'a>>,
}

/// Batches between two reads of the training loss (progress events, divergence checks).
const LOSS_READ_INTERVAL: usize = 8;

/// Trains `spec` on `splits.train`, selecting the epoch with the best validation loss.
pub fn train(
    spec: &ModelSpec,
    splits: &Splits,
    config: &TrainConfig,
    device: &Device,
    on_event: &mut (dyn FnMut(TrainEvent<'_>) + Send),
) -> Result<Trained, TrainError> {
    train_until(spec, splits, config, device, &Guidance::default(), on_event, &AtomicBool::new(false))
}

/// `train` with guidance (weight sharing, distillation, early stopping), stopping after the
/// current batch once `stop` is set.
///
/// The loop runs on a thread of the compute pool. Run from outside it, every parallel op
/// would wake the pool's threads while the caller waits, and between ops they would
/// compete for the cores with the caller's serial work (autodiff's bookkeeping): a
/// quarter of a small CNN's time went to the scheduler (`sched_yield`, futex wake-ups).
pub fn train_until(
    spec: &ModelSpec,
    splits: &Splits,
    config: &TrainConfig,
    device: &Device,
    guidance: &Guidance<'_>,
    on_event: &mut (dyn FnMut(TrainEvent<'_>) + Send),
    stop: &AtomicBool,
) -> Result<Trained, TrainError> {
    let mut train = || -> Result<Trained, TrainError> {
        config.check()?;
        if spec.input_shape != splits.train.shape {
            return Err(TrainError::Shape { expected: spec.input_shape.clone(), found: splits.train.shape.clone() });
        }
        let started = Instant::now();
        let device = device.clone().autodiff();
        device.seed(config.seed);
        let outputs = spec.task.outputs();
        guidance.check(splits, outputs)?;
        let (model, inherited) = inherit(Model::seeded(spec, config.seed, &device)?, &guidance.donors)?;
        let parameters = model.parameter_count();
        let run = TrainingRun { spec, splits, config, guidance, device, outputs };
        let ended = run.epochs(model, on_event, stop);
        Ok(Trained {
            model: ended.model,
            outcome: ended.outcome,
            epochs: ended.epochs,
            best_epoch: ended.best_epoch,
            parameters,
            inherited,
            train_time: started.elapsed(),
        })
    };
    match rayon::current_thread_index() {
        Some(_) => train(),
        None => rayon::scope(|_| train()),
    }
}

impl Guidance<'_> {
    /// The residual base and the teacher must give one row of `outputs` per sample.
    fn check(&self, splits: &Splits, outputs: usize) -> Result<(), TrainError> {
        if let Some(residual) = &self.residual
            && (residual.train.len() != splits.train.len() * outputs
                || residual.valid.len() != splits.valid.len() * outputs)
        {
            return Err(TrainError::Config("the residual base does not match the data set".into()));
        }
        if let Some(distill) = &self.distill
            && distill.teacher.len() != splits.train.len() * outputs
        {
            return Err(TrainError::Config(format!(
                "the teacher gave {} outputs for {} training samples of {outputs}",
                distill.teacher.len(),
                splits.train.len()
            )));
        }
        Ok(())
    }
}

/// One training run's fixed parts: what it trains, on what, how, and on which device.
struct TrainingRun<'a> {
    spec: &'a ModelSpec,
    splits: &'a Splits,
    config: &'a TrainConfig,
    guidance: &'a Guidance<'a>,
    /// The autodiff device.
    device: Device,
    /// Outputs per sample.
    outputs: usize,
}

/// The optimiser's state, and how many steps it has taken (the learning rate decays with
/// them).
struct Optimization {
    optimizer: ModuleOptimizer,
    step: usize,
}

/// Where the epochs left the model: the best epoch's, and the history.
struct Ended {
    model: Model,
    outcome: Outcome,
    epochs: Vec<EpochReport>,
    best_epoch: usize,
}

/// The training loss of the batches since it was last read. Reading it waits for the
/// device: on a GPU that stalls the queue at every batch, so the sum stays on the device
/// and is read every few batches.
#[derive(Default)]
struct PendingLoss {
    sum: Option<Tensor<1>>,
    samples: usize,
}

impl PendingLoss {
    fn add(&mut self, weighted: Tensor<1>, samples: usize) {
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + weighted,
            None => weighted,
        });
        self.samples += samples;
    }

    /// The sum since the last read and its mean per sample.
    fn read(&mut self) -> (f64, f64) {
        let sum = self.sum.take().map_or(0.0, |t| t.into_scalar::<f32>() as f64);
        let mean = sum / std::mem::take(&mut self.samples) as f64;
        (sum, mean)
    }
}

impl TrainingRun<'_> {
    /// Trains epoch after epoch, keeping the model of the best validation loss, until the
    /// last epoch, divergence, `stop`, or the early-stopping rule.
    fn epochs(&self, mut model: Model, on_event: &mut (dyn FnMut(TrainEvent<'_>) + Send), stop: &AtomicBool) -> Ended {
        let config = self.config;
        let mut optimization = Optimization { optimizer: config.optimizer(), step: 0 };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut order: Vec<usize> = (0..self.splits.train.len()).collect();
        let mut best: Option<(f64, usize, Model)> = None;
        let mut epochs = Vec::with_capacity(config.epochs);
        let mut outcome = Outcome::Completed;
        for epoch in 1..=config.epochs {
            let epoch_start = Instant::now();
            order.shuffle(&mut rng);
            let (trained, loss_sum) = self.train_epoch(model, &mut optimization, &order, epoch, on_event, stop);
            model = trained;
            let step = optimization.step;
            let loss_sum = match loss_sum {
                Ok(sum) => sum,
                Err(ended) => {
                    outcome = ended;
                    break;
                }
            };
            let snapshot = model.valid();
            let valid = self.validate(&snapshot);
            if !valid.loss.is_finite() {
                outcome = Outcome::Diverged { epoch, step, loss: valid.loss };
                break;
            }
            let report = EpochReport {
                epoch,
                train_loss: loss_sum / self.splits.train.len() as f64,
                valid,
                learning_rate: config.learning_rate_at(step),
                seconds: epoch_start.elapsed().as_secs_f64(),
            };
            on_event(TrainEvent::Epoch(&report));
            if best.as_ref().is_none_or(|(loss, _, _)| report.valid.loss < *loss) {
                best = Some((report.valid.loss, epoch, snapshot));
            }
            epochs.push(report);
            // Asked at the last epoch too, so that the rule sees every value; the run is
            // complete then either way.
            if let Some(rule) = self.guidance.early_stop
                && !(rule.0)(&epochs)
                && epoch < config.epochs
            {
                outcome = Outcome::Stopped { epoch };
                break;
            }
        }
        let (best_epoch, model) = match best {
            Some((_, epoch, model)) => (epoch, model),
            None => (0, model.valid()),
        };
        Ended { model, outcome, epochs, best_epoch }
    }

    /// One pass over the training samples in `order`: the model after it, and the
    /// training loss summed over the samples, or the outcome that ended the run mid-epoch
    /// (`stop` set, or the loss diverged).
    fn train_epoch(
        &self,
        mut model: Model,
        optimization: &mut Optimization,
        order: &[usize],
        epoch: usize,
        on_event: &mut (dyn FnMut(TrainEvent<'_>) + Send),
        stop: &AtomicBool,
    ) -> (Model, Result<f64, Outcome>) {
        let batches = order.len().div_ceil(self.config.batch_size);
        let mut loss_sum = 0.0;
        let mut pending = PendingLoss::default();
        for (b, chunk) in order.chunks(self.config.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                return (model, Err(Outcome::Interrupted { epoch }));
            }
            model = self.batch_step(model, optimization, chunk, &mut pending);
            if (b + 1) % LOSS_READ_INTERVAL == 0 || b + 1 == batches {
                let (sum, mean) = pending.read();
                if !mean.is_finite() {
                    return (model, Err(Outcome::Diverged { epoch, step: optimization.step, loss: mean }));
                }
                loss_sum += sum;
                on_event(TrainEvent::Batch { epoch, batch: b + 1, batches, loss: mean });
            }
        }
        (model, Ok(loss_sum))
    }

    /// One optimisation step on the samples of `chunk`; the batch's loss, summed over
    /// its samples, goes to `pending`.
    fn batch_step(
        &self,
        model: Model,
        optimization: &mut Optimization,
        chunk: &[usize],
        pending: &mut PendingLoss,
    ) -> Model {
        let loss = self.batch_loss(&model, chunk);
        pending.add(loss.clone().detach().mul_scalar(chunk.len() as f64), chunk.len());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = self.config.learning_rate_at(optimization.step);
        let model = optimization.optimizer.step(lr, model, grads);
        optimization.step += 1;
        model
    }

    /// The loss of the samples of `chunk`: the task's on the model's outputs (plus the
    /// residual base's), plus the distillation term.
    fn batch_loss(&self, model: &Model, chunk: &[usize]) -> Tensor<1> {
        let task = self.spec.task;
        let (x, y) = batch_tensors(&self.splits.train, chunk, task, &self.device);
        let mut output = model.forward(x);
        if let Some(residual) = &self.guidance.residual {
            output = output + self.rows_of(&residual.train, chunk);
        }
        let mut loss = task_loss(output.clone(), y, task);
        if let Some(distill) = &self.guidance.distill {
            loss = loss + self.distillation_term(distill, output, chunk);
        }
        loss
    }

    /// `lambda` times the distillation loss between the outputs and the teacher's.
    fn distillation_term(&self, distill: &Distill, output: Tensor<2>, chunk: &[usize]) -> Tensor<1> {
        let teacher = self.rows_of(&distill.teacher, chunk);
        distill_loss(output, teacher, distill, self.spec.task).mul_scalar(distill.lambda)
    }

    /// The rows of per-sample outputs (a residual base's, a teacher's) of the samples of
    /// `chunk`, as a `[batch, outputs]` tensor.
    fn rows_of(&self, values: &[f32], chunk: &[usize]) -> Tensor<2> {
        let outputs = self.outputs;
        let rows: Vec<f32> =
            chunk.iter().flat_map(|&i| values[i * outputs..(i + 1) * outputs].iter().copied()).collect();
        Tensor::from_data(TensorData::new(rows, [chunk.len(), outputs]), &self.device)
    }

    /// The epoch's validation metrics of `snapshot` (on the training split when there is
    /// no validation split); with a residual base, of the base's outputs plus the model's.
    fn validate(&self, snapshot: &Model) -> Metrics {
        let splits = self.splits;
        let valid_set = if splits.valid.is_empty() { &splits.train } else { &splits.valid };
        match &self.guidance.residual {
            Some(residual) => {
                let base = if splits.valid.is_empty() { &residual.train } else { &residual.valid };
                let own = predict(snapshot, &valid_set.features, valid_set.sample_len());
                metrics_of(&add_outputs(own, base), valid_set, self.spec.task, &splits.normalization)
            }
            None => evaluate(snapshot, valid_set, self.spec.task, &splits.normalization),
        }
    }
}

/// Builds `[batch, features]` inputs and the matching targets for the samples at `indices`.
fn batch_tensors(data: &Dataset, indices: &[usize], task: Task, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let n = data.sample_len();
    let mut features = Vec::with_capacity(indices.len() * n);
    for &i in indices {
        features.extend_from_slice(data.sample(i));
    }
    let x = Tensor::from_data(TensorData::new(features, [indices.len(), n]), device);
    let y = target_tensor(indices.iter().map(|&i| data.targets[i]), indices.len(), task, device);
    (x, y)
}

/// One-hot rows for classification, a column of targets for regression.
fn target_tensor(targets: impl Iterator<Item = f32>, len: usize, task: Task, device: &Device) -> Tensor<2> {
    match task {
        Task::Classification { classes } => {
            let mut one_hot = vec![0f32; len * classes];
            for (row, t) in targets.enumerate() {
                one_hot[row * classes + t as usize] = 1.0;
            }
            Tensor::from_data(TensorData::new(one_hot, [len, classes]), device)
        }
        Task::Regression => Tensor::from_data(TensorData::new(targets.collect::<Vec<_>>(), [len, 1]), device),
    }
}

/// The distillation term between student and teacher outputs (regression: always MSE).
fn distill_loss(student: Tensor<2>, teacher: Tensor<2>, distill: &Distill, task: Task) -> Tensor<1> {
    use burn::tensor::activation::{log_softmax, softmax};
    match (task, distill.loss) {
        (Task::Regression, _) | (_, DistillLoss::MseLogits) => (student - teacher).powi_scalar(2).mean(),
        (_, DistillLoss::MseSoftmax) => (softmax(student, 1) - softmax(teacher, 1)).powi_scalar(2).mean(),
        (_, DistillLoss::CrossEntropy) => {
            let t = distill.temperature;
            let soft = softmax(teacher.div_scalar(t), 1);
            (soft * log_softmax(student.div_scalar(t), 1)).sum_dim(1).mean().neg().mul_scalar(t * t)
        }
    }
}

/// Cross-entropy on one-hot targets, or mean squared error.
fn task_loss(output: Tensor<2>, target: Tensor<2>, task: Task) -> Tensor<1> {
    match task {
        Task::Classification { .. } => {
            let log_probs = burn::tensor::activation::log_softmax(output, 1);
            (log_probs * target).sum_dim(1).mean().neg()
        }
        Task::Regression => (output - target).powi_scalar(2).mean(),
    }
}
