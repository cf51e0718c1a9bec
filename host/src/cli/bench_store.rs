//! `msh bench store`: how fast the store hands out trials. Workers (threads, each with
//! its own connection on PostgreSQL) run the engine's claim cycle without training (record
//! the last result and claim in one transaction, commit the proposal in a second) until a
//! budget is spent, on each backend, with 1, 4 and 16 workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use msh::store::{
    BlockRef, Claim, Committed, Finished, Metrics, Owner, ParamValue, StageRecord, Store, TrialRecord, TrialStatus,
};
use serde_json::json;

#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Trials per measurement.
    #[arg(long, default_value_t = 1000)]
    trials: u64,
    /// Worker counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
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

/// One worker's loop; returns how many trials it finished and the time it spent in the store.
fn worker(store: &Store, me: Owner, limit: u64) -> anyhow::Result<(u64, Duration)> {
    let (mut finished, mut spent) = (0, Duration::ZERO);
    let mut done: Option<TrialRecord> = None;
    loop {
        let started = Instant::now();
        let claim = store.write(|t| -> Result<Claim, msh::store::StoreError> {
            let mut stage = t.known_stage("search")?;
            if let Some(trial) = &done {
                if t.finish(&mut stage, trial, &me)? == Finished::Recorded {
                    t.log(Some("search"), Some(trial.id), "completed: accuracy 0.9")?;
                }
            }
            t.requeue_expired(&mut stage, &me)?;
            t.claim(&mut stage, &me, 30.0, limit, "bench")
        })?;
        finished += u64::from(done.take().is_some());
        let running = match claim {
            Claim::Spent => {
                spent += started.elapsed();
                return Ok((finished, spent));
            }
            Claim::Trial(trial) => trial,
            Claim::Reserved(id) => {
                let committed = store.write(|t| {
                    let mut stage = t.known_stage("search")?;
                    t.log(Some("search"), Some(id), "proposed")?;
                    t.commit(&mut stage, typical_trial(id), &me, 30.0, limit, "bench")
                })?;
                match committed {
                    Committed::Running(trial) => trial,
                    Committed::Spent => {
                        spent += started.elapsed();
                        return Ok((finished, spent));
                    }
                }
            }
        };
        spent += started.elapsed();
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

/// Claims per second and store time per trial with `workers` workers on a fresh run.
fn measure(backend: &str, url: Option<&str>, workers: usize, trials: u64) -> anyhow::Result<(f64, f64)> {
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
    let results: Vec<anyhow::Result<(u64, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| scope.spawn(move || worker(store, Owner::this_process(1000 + i as u64), trials)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench workers do not panic")).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let (mut finished, mut spent) = (0, Duration::ZERO);
    for result in results {
        let (n, s) = result?;
        finished += n;
        spent += s;
    }
    anyhow::ensure!(finished == trials, "{backend} with {workers} workers finished {finished} of {trials} trials");
    let stage = first.stage("search")?.context("the stage record")?;
    anyhow::ensure!(stage.finished_trials == trials && stage.running == 0, "{backend}: the stage's counts are off");
    drop(stores);
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((trials as f64 / wall, spent.as_secs_f64() * 1e3 / trials as f64))
}

pub fn store(args: BenchStoreArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut backends: Vec<(&str, Option<&str>)> = vec![("lmdb", None)];
    match &args.postgres {
        Some(url) => backends.push(("postgres", Some(url.as_str()))),
        None => eprintln!("msh: PostgreSQL is not measured: pass --postgres URL (or set MSH_STORE)"),
    }
    if !args.json {
        println!("{:<10} {:>8} {:>12} {:>18}", "backend", "workers", "claims/s", "store ms/trial");
    }
    for (backend, url) in backends {
        for &workers in &args.workers {
            let (rate, overhead) = measure(backend, url, workers.max(1), args.trials)?;
            if args.json {
                let line = json!({"backend": backend, "workers": workers, "claims_per_second": rate,
                    "store_ms_per_trial": overhead, "trials": args.trials});
                println!("{line}");
            } else {
                println!("{backend:<10} {workers:>8} {rate:>12.0} {overhead:>18.2}");
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
