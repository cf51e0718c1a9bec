//! `msh bench store`: how fast the store hands out trials. Workers (threads, each with
//! its own connection on PostgreSQL) run the engine's claim cycle without training (record
//! the last result and claim in one step, commit the proposal in a second) until a budget
//! is spent, on each backend, with 1, 4, 16 and 64 workers; claims per second, and the
//! median and 99th percentile of a claim's latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use msh_store::{
    BlockRef, Claim, Claimant, Committed, Metrics, Owner, ParamValue, StageRecord, Store, TrialRecord, TrialStatus,
};
use serde_json::json;

#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Trials per measurement.
    #[arg(long, default_value_t = 1000)]
    trials: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    workers: Vec<usize>,
    /// The PostgreSQL database to measure (runs are created in it and left there);
    /// without it only LMDB is measured.
    #[arg(long, env = "MSH_STORE", hide_env_values = true)]
    postgres: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// A trial record of a typical size: three blocks, hparams, metrics, ten epochs' losses.
fn typical_trial(id: u64) -> TrialRecord {
    let block = |name: &str| BlockRef {
        name: name.into(),
        params: vec![("filters".into(), ParamValue::Int(64)), ("kernel".into(), ParamValue::Int(3))],
    };
    let mut trial = TrialRecord::new(
        id,
        "search",
        vec![block("fixed_conv"), block("resnet"), block("max_pool")],
        vec![("learning_rate".into(), 0.003), ("batch_size".into(), 128.0)],
    );
    trial.parent = id.checked_sub(1);
    trial
}

/// One worker's loop; returns how many trials it finished and how long each claim took
/// (recording the last result, claiming, and committing the proposal).
fn worker(store: &Store, me: Owner, limit: u64) -> anyhow::Result<(u64, Vec<Duration>)> {
    let who = Claimant { stage: "search", me: &me, lease: 30.0, limit, worker: "bench" };
    let (mut finished, mut claims) = (0, Vec::new());
    let mut done: Option<TrialRecord> = None;
    loop {
        let started = Instant::now();
        let (_, claim) = store.claim(&who, done.as_ref().map(|trial| (trial, "completed: accuracy 0.9")))?;
        finished += u64::from(done.take().is_some());
        let running = match claim {
            Claim::Spent => return Ok((finished, claims)),
            Claim::Trial(trial) => trial,
            Claim::Reserved(id) => match store.commit(&who, typical_trial(id), 0, "proposed")? {
                Committed::Running(trial) => trial,
                Committed::Spent => return Ok((finished, claims)),
            },
        };
        claims.push(started.elapsed());
        let metrics = Metrics { samples: 400, loss: 0.3, accuracy: Some(0.9), r2: None, rmse: None };
        done = Some(TrialRecord {
            status: TrialStatus::Completed,
            objective: Some(0.3),
            valid: Some(metrics.clone()),
            test: Some(metrics),
            losses: vec![0.3; 10],
            ..running
        });
    }
}

/// What one measurement found.
struct Measured {
    claims_per_second: f64,
    /// Store time per trial, summed over workers, in milliseconds.
    store_ms_per_trial: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Claims per second and claim latencies with `workers` workers on a fresh run.
fn measure(backend: &str, url: Option<&str>, workers: usize, trials: u64) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("msh-bench-store-{backend}-{workers}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || Store::open_at(&dir, url).with_context(|| format!("opening the {backend} store"));
    let first = Arc::new(open()?);
    first.write(|t| t.put_stage(&StageRecord::new("search", "search")))?;
    // LMDB allows one environment per process (its lock covers processes alike);
    // PostgreSQL workers each have a connection, as worker processes do.
    let stores: Vec<Arc<Store>> = (0..workers)
        .map(|i| if url.is_none() || i == 0 { Ok(first.clone()) } else { open().map(Arc::new) })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, Vec<Duration>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| scope.spawn(move || worker(store, Owner::this_process(1000 + i as u64), trials)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench workers do not panic")).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let (mut finished, mut claims) = (0, Vec::new());
    for result in results {
        let (n, times) = result?;
        finished += n;
        claims.extend(times);
    }
    anyhow::ensure!(finished == trials, "{backend} with {workers} workers finished {finished} of {trials} trials");
    let stage = first.stage("search")?.context("the stage record")?;
    anyhow::ensure!(stage.finished_trials == trials && stage.running == 0, "{backend}: the stage's counts are off");
    drop(stores);
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
    claims.sort();
    let quantile = |q: f64| claims[((claims.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    let spent: Duration = claims.iter().sum();
    Ok(Measured {
        claims_per_second: trials as f64 / wall,
        store_ms_per_trial: spent.as_secs_f64() * 1e3 / trials as f64,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
    })
}

pub fn store(args: BenchStoreArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut backends: Vec<(&str, Option<&str>)> = vec![("lmdb", None)];
    match &args.postgres {
        Some(url) => backends.push(("postgres", Some(url.as_str()))),
        None => eprintln!("msh: PostgreSQL is not measured: pass --postgres URL (or set MSH_STORE)"),
    }
    if !args.json {
        println!(
            "{:<10} {:>8} {:>10} {:>16} {:>10} {:>10}",
            "backend", "workers", "claims/s", "store ms/trial", "p50 ms", "p99 ms"
        );
    }
    for (backend, url) in backends {
        for &workers in &args.workers {
            let m = measure(backend, url, workers.max(1), args.trials)?;
            if args.json {
                let line = json!({"backend": backend, "workers": workers, "claims_per_second": m.claims_per_second,
                    "store_ms_per_trial": m.store_ms_per_trial, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                    "trials": args.trials});
                println!("{line}");
            } else {
                println!(
                    "{backend:<10} {workers:>8} {:>10.0} {:>16.2} {:>10.2} {:>10.2}",
                    m.claims_per_second, m.store_ms_per_trial, m.p50_ms, m.p99_ms
                );
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
