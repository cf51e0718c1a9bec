//! `msh train`: one architecture, one data set, metrics out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use msh_train::data::{self, DataSpec, LabelColumn, Normalize, Source, TaskKind};
use msh_train::model::ModelSpec;
use msh_train::{self as train, Backend, Checkpoint, CheckpointMeta, OptimizerKind, Outcome, TrainConfig};
use serde_json::json;

use super::progress::Progress;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: csv:PATH, cifar10:DIR, images:DIR, npy:X.npy,Y.npy or
    /// npz:FILE.npz[:X,Y].
    #[arg(long)]
    data: Source,
    /// A separate test set (same format); otherwise --test-fraction of --data.
    #[arg(long)]
    test_data: Option<Source>,
    /// Architecture file (YAML or JSON).
    #[arg(long)]
    arch: PathBuf,
    /// CSV label column, by name or 0-based index [default: label, target, else 0].
    #[arg(long)]
    label: Option<LabelColumn>,
    /// The CSV has no header row.
    #[arg(long)]
    no_header: bool,
    /// Reshape samples, e.g. 1,40 for [C, L] or 1,8,8 for [C, H, W].
    #[arg(long, value_delimiter = ',')]
    shape: Option<Vec<usize>>,
    #[arg(long, value_enum, default_value_t = TaskKind::Classification)]
    task: TaskKind,
    /// Train and validate on this many samples of --data, drawn with --seed (the test
    /// set stays whole).
    #[arg(long)]
    subset: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    valid_fraction: f64,
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    normalize: Normalize,
    /// Images are resized to SIZE x SIZE.
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    optimizer: OptimizerKind,
    /// Multiply the learning rate by this every --lr-decay-steps steps.
    #[arg(long)]
    lr_decay_rate: Option<f64>,
    #[arg(long)]
    lr_decay_steps: Option<usize>,
    /// Clip the gradient norm.
    #[arg(long)]
    clip: Option<f32>,
    /// L2 penalty.
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// CPU threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Save a checkpoint (model.json + weights.bpk) to this directory.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No per-epoch output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let spec = DataSpec {
        test: args.test_data.clone(),
        label: args.label.clone(),
        header: !args.no_header,
        shape: args.shape.clone(),
        task: args.task,
        valid_fraction: args.valid_fraction,
        test_fraction: args.test_fraction,
        normalize: args.normalize,
        image_size: args.image_size,
        subset: args.subset,
        ..DataSpec::new(args.data.clone())
    };
    let splits = data::load(&spec, args.seed).with_context(|| format!("cannot load data {}", args.data))?;
    let architecture = msh_graph::arch_file::read(&args.arch)?;
    let model_spec = ModelSpec { architecture, input_shape: splits.train.shape.clone(), task: splits.task };
    msh_graph::infer_architecture(&model_spec.architecture, &model_spec.input_shape).with_context(|| {
        format!("{}: does not fit samples of shape {:?}", args.arch.display(), model_spec.input_shape)
    })?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        optimizer: args.optimizer,
        lr_decay_rate: args.lr_decay_rate,
        lr_decay_steps: args.lr_decay_steps,
        gradient_clip: args.clip,
        l2: args.l2,
        seed: args.seed,
    };
    if let Some(threads) = args.threads {
        train::use_threads(threads).map_err(anyhow::Error::msg)?;
    }
    let backend = args.backend.select()?;
    if !args.quiet {
        eprintln!(
            "training {} on {} ({} train / {} valid / {} test samples of shape {:?}) with {}",
            args.arch.display(),
            args.data,
            splits.train.len(),
            splits.valid.len(),
            splits.test.len(),
            splits.train.shape,
            backend.description
        );
    }
    let mut progress = Progress::new(config.epochs, args.quiet);
    let trained = train::train(&model_spec, &splits, &config, &backend.device, &mut |e| progress.on_event(e))?;
    progress.finish();

    let valid = trained.epochs.iter().find(|e| e.epoch == trained.best_epoch).map(|e| e.valid.clone());
    let test = (trained.best_epoch > 0)
        .then(|| train::evaluate(&trained.model, &splits.test, splits.task, &splits.normalization));
    if let (Some(dir), Some(valid), Some(test)) = (&args.save, &valid, &test) {
        let meta = CheckpointMeta {
            version: train::CHECKPOINT_VERSION,
            spec: model_spec.clone(),
            normalization: splits.normalization.clone(),
            class_names: splits.class_names.clone(),
            parameters: trained.parameters,
            metrics: BTreeMap::from([("valid".to_string(), valid.clone()), ("test".to_string(), test.clone())]),
        };
        Checkpoint::new(dir).save(&trained.model, &meta)?;
    }

    if args.json {
        let result = json!({
            "outcome": trained.outcome,
            "parameters": trained.parameters,
            "best_epoch": trained.best_epoch,
            "valid": valid,
            "test": test,
            "train_seconds": trained.train_time.as_secs_f64(),
            "backend": backend.description,
            "epochs": trained.epochs,
        });
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("parameters     {}", trained.parameters);
        println!("train time     {:.1}s", trained.train_time.as_secs_f64());
        if let (Some(valid), Some(test)) = (&valid, &test) {
            println!("best epoch     {}", trained.best_epoch);
            println!("validation     {}  loss {:.4}", valid.headline(), valid.loss);
            println!("test           {}  loss {:.4}", test.headline(), test.loss);
        }
        if let Some(dir) = &args.save.filter(|_| test.is_some()) {
            println!("checkpoint     {}", dir.display());
        }
    }
    if let Outcome::Diverged { epoch, step, loss } = trained.outcome {
        eprintln!("msh: training diverged at epoch {epoch}, step {step}: loss became {loss}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
