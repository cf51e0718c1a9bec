//! `msh bench train`: training throughput (samples/s) of reference CNNs on the CPU.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use msh::data::{Dataset, Normalization, Splits};
use msh::model::{ModelSpec, Task};
use msh::train::{self, Backend, TrainConfig};
use serde_json::json;

/// The MNIST-1D CNN of the test suite and the CIFAR-shaped CNN (conv32-pool-conv64-pool-dense10).
const MNIST1D_CNN: &str = include_str!("../../../workflows/archs/mnist1d_cnn.yaml");
const CIFAR_CNN: &str = include_str!("../../../workflows/archs/cifar_cnn.yaml");

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training samples per second for the reference models.
    Train(BenchTrainArgs),
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Samples per timed epoch (random data of the model's shape).
    #[arg(long, default_value_t = 2048)]
    samples: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Timed epochs after one warm-up epoch; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    let BenchCommand::Train(args) = cmd;
    let backend = args.backend.select()?;
    if !args.json {
        println!("backend {}, batch {}, {} samples per epoch, median of {}", backend.description, args.batch_size, args.samples, args.repeats);
    }
    for (name, text, shape) in [("mnist1d_cnn", MNIST1D_CNN, vec![1, 40]), ("cifar_cnn", CIFAR_CNN, vec![3, 32, 32])] {
        let architecture = msh::arch_file::parse(text).with_context(|| format!("bundled {name}"))?;
        let spec = ModelSpec { architecture, input_shape: shape.clone(), task: Task::Classification { classes: 10 } };
        let splits = random_splits(&shape, args.samples);
        let config = TrainConfig { epochs: 1 + args.repeats, batch_size: args.batch_size, ..TrainConfig::default() };
        let mut last = Instant::now();
        let mut rates = Vec::new();
        let mut epoch_done = |e: train::TrainEvent<'_>| {
            if let train::TrainEvent::Batch { batch, batches, .. } = e
                && batch == batches
            {
                rates.push(args.samples as f64 / last.elapsed().as_secs_f64());
            }
            if let train::TrainEvent::Epoch(_) = e {
                last = Instant::now();
            }
        };
        let trained = train::train(&spec, &splits, &config, &backend.device, &mut epoch_done)?;
        let mut timed: Vec<f64> = rates.into_iter().skip(1).collect();
        timed.sort_by(f64::total_cmp);
        let median = timed[timed.len() / 2];
        if args.json {
            println!("{}", json!({"model": name, "samples_per_s": median, "parameters": trained.parameters, "runs": timed}));
        } else {
            println!("{name:<12} {median:>10.0} samples/s  ({} parameters; runs {:?})", trained.parameters, timed.iter().map(|r| r.round()).collect::<Vec<_>>());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Throughput does not depend on the values; a tiny validation split keeps evaluation cheap.
fn random_splits(shape: &[usize], samples: usize) -> Splits {
    let len: usize = shape.iter().product();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let make = |n: usize, next: &mut dyn FnMut() -> f32| Dataset {
        features: (0..n * len).map(|_| next()).collect(),
        targets: (0..n).map(|i| (i % 10) as f32).collect(),
        shape: shape.to_vec(),
    };
    let train = make(samples, &mut next);
    let valid = make(16, &mut next);
    Splits {
        test: valid.clone(),
        train,
        valid,
        task: Task::Classification { classes: 10 },
        normalization: Normalization::identity(),
        class_names: Vec::new(),
    }
}
