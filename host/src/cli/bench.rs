//! `msh bench`: training throughput (samples/s) of reference CNNs on the CPU and plugin
//! call latencies here; the engine, trainers, searchers and store in files of their own.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use msh_train::data::{Dataset, Normalization, Splits};
use msh_train::model::{ModelSpec, Task};
use msh_train::{self as train, Backend, TrainConfig};
use serde_json::json;

/// The reference models: the MNIST-1D CNN of the test suite, a CIFAR-shaped CNN
/// (conv32-pool-conv64-pool-dense10), and what searches produce on MNIST-1D: a 1-D ResNet
/// of core-blocks' blocks and a conv stem feeding an LSTM. `bench/torch_train.py` has their
/// PyTorch twins.
const REFERENCE_MODELS: [(&str, &str, &[usize]); 4] = [
    ("mnist1d_cnn", include_str!("../../../workflows/archs/mnist1d_cnn.yaml"), &[1, 40]),
    ("cifar_cnn", include_str!("../../../workflows/archs/cifar_cnn.yaml"), &[3, 32, 32]),
    ("mnist1d_resnet", include_str!("../../../workflows/archs/mnist1d_resnet.yaml"), &[1, 40]),
    ("mnist1d_lstm", include_str!("../../../workflows/archs/mnist1d_lstm.yaml"), &[1, 40]),
];

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Training samples per second for the reference models.
    Train(BenchTrainArgs),
    /// Plugin overhead: compile, instantiate, propose and build latencies.
    Plugins {
        /// Calls per measurement; the median is reported.
        #[arg(long, default_value_t = 50)]
        repeats: usize,
    },
    /// Engine + store cost per trial (table trainer) and memory over a long run.
    Engine(super::bench_engine::BenchEngineArgs),
    /// Trials per minute with 1, 2 and 4 trainers on MNIST-1D, threads shared out or not.
    Trainers(super::bench_engine::BenchTrainersArgs),
    /// Searchers x early stopping x seeds on real training: minutes to target accuracies.
    Search(super::bench_search::BenchSearchArgs),
    /// Searchers side by side on a metrics table: trials to a target, repeats rejected.
    Searchers(super::bench_searchers::BenchSearchersArgs),
    /// Claims per second and store time per trial, LMDB and PostgreSQL, 1 to 16 workers.
    Store(super::bench_store::BenchStoreArgs),
    /// Seconds and memory of status, trials, best, report and the dashboard on a 100,000-trial run.
    Views(super::bench_views::BenchViewsArgs),
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
    /// CPU threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Only these reference models (mnist1d_cnn, cifar_cnn, mnist1d_resnet, mnist1d_lstm).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    let args = match cmd {
        BenchCommand::Train(args) => args,
        BenchCommand::Plugins { repeats } => return plugins(repeats.max(1)),
        BenchCommand::Engine(args) => return super::bench_engine::engine(args),
        BenchCommand::Trainers(args) => return super::bench_engine::trainers(args),
        BenchCommand::Search(args) => return super::bench_search::search(args),
        BenchCommand::Searchers(args) => return super::bench_searchers::searchers(args),
        BenchCommand::Store(args) => return super::bench_store::store(args),
        BenchCommand::Views(args) => return super::bench_views::views(args),
    };
    if let Some(threads) = args.threads {
        train::use_threads(threads).map_err(anyhow::Error::msg)?;
    }
    let backend = args.backend.select()?;
    if !args.json {
        println!(
            "backend {}, batch {}, {} samples per epoch, median of {}",
            backend.description, args.batch_size, args.samples, args.repeats
        );
    }
    if let Some(unknown) = args.models.iter().find(|m| !REFERENCE_MODELS.iter().any(|(name, ..)| name == m)) {
        let names: Vec<&str> = REFERENCE_MODELS.iter().map(|(name, ..)| *name).collect();
        anyhow::bail!("no reference model `{unknown}`; there are {}", names.join(", "));
    }
    for (name, text, shape) in REFERENCE_MODELS {
        if !args.models.is_empty() && !args.models.iter().any(|m| m == name) {
            continue;
        }
        let architecture = msh_graph::arch_file::parse(text).with_context(|| format!("bundled {name}"))?;
        let spec = ModelSpec { architecture, input_shape: shape.to_vec(), task: Task::Classification { classes: 10 } };
        let splits = random_splits(shape, args.samples);
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
            println!(
                "{}",
                json!({"model": name, "samples_per_s": median, "parameters": trained.parameters, "runs": timed})
            );
        } else {
            println!(
                "{name:<15} {median:>10.0} samples/s  ({} parameters; runs {:?})",
                trained.parameters,
                timed.iter().map(|r| r.round()).collect::<Vec<_>>()
            );
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

/// Median wall time of `f` over `repeats` calls, in milliseconds.
fn median_ms<T>(repeats: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn plugins(repeats: usize) -> anyhow::Result<std::process::ExitCode> {
    use msh_plugin::{Limits, PluginHost};
    use msh_vocab::space::SearchContext;

    let start = Instant::now();
    let host = PluginHost::new(Limits::default());
    let pack = host.embedded("core-blocks")?;
    println!("compile core-blocks (once per engine)      {:>9.3} ms", start.elapsed().as_secs_f64() * 1e3);
    let load = median_ms(repeats, || Ok(host.embedded("core-blocks")?))?;
    println!("load from cache (hash + version handshake)  {load:>9.3} ms");

    let blocks = pack.blocks()?;
    let names: Vec<String> = blocks.iter().map(|b| b.name.clone()).collect();
    let space = super::blocks::sample_space(names.clone());
    let history = super::blocks::sample_history(&names, 1000);
    let context = SearchContext { seed: 1, budget: 2000, config: vec![] };
    let mut per_trial = 0.0;
    let empty = median_ms(repeats, || Ok(host.embedded("random-search")?.propose_once(&context, &space, &[], 1)?))?;
    println!("propose, empty history (instantiate + call) {empty:>9.3} ms");
    for name in ["random-search", "beam-search", "regularized-evolution", "local-search", "harmonica", "linear-model"] {
        let searcher = host.embedded(name)?;
        // A live search told 1,000 trials; each step tells it one more and asks for one.
        let mut session = searcher.search(&context, &space, None)?;
        session.observe(&history);
        session.propose(&[], 1)?;
        let mut next = history.len() as u64;
        let ms = median_ms(repeats, || {
            let mut trial = history[next as usize % history.len()].clone();
            trial.id = next;
            next += 1;
            session.observe(&[trial]);
            Ok(session.propose(&[], 1)?)
        })?;
        per_trial = f64::max(per_trial, ms);
        println!("observe + propose after 1,000 trials: {name:<22} {ms:>9.3} ms");
    }
    let mut build_total = 0.0;
    let mut slowest = (String::new(), 0.0);
    for info in &blocks {
        let shape = super::blocks::sample_shape(info.input_ranks[0]);
        let ms = median_ms(repeats, || Ok(pack.build(&info.name, &shape, &[])?))?;
        build_total += ms;
        if ms > slowest.1 {
            slowest = (info.name.clone(), ms);
        }
    }
    let build_mean = build_total / blocks.len() as f64;
    println!(
        "build, mean over {} core blocks             {build_mean:>9.3} ms (slowest: {} {:.3} ms)",
        blocks.len(),
        slowest.0,
        slowest.1
    );
    // A trial of depth d costs one propose and d builds.
    let trial = per_trial + 3.0 * build_mean;
    println!("plugin overhead per trial (propose + 3 builds) {trial:>6.3} ms (target: under 1 ms)");
    Ok(std::process::ExitCode::SUCCESS)
}
