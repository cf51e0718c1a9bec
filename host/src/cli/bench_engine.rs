//! `msh bench engine` and `msh bench trainers`: the engine's own cost per trial with the
//! table trainer, memory over a long run, the time a resume of it takes to its first new
//! proposal (every trial replayed, or the searcher's snapshot restored), and trials per
//! minute with one vs two trainers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use msh_engine::{self as engine, EngineEvent, RunEnd, RunOptions};

#[derive(Debug, Args)]
pub struct BenchEngineArgs {
    /// Trials of the table run.
    #[arg(long, default_value_t = 100_000)]
    trials: u32,
    /// The searcher (the default searcher unless given).
    #[arg(long, default_value = msh_engine::workflow::DEFAULT_SEARCHER)]
    searcher: String,
}

#[derive(Debug, Args)]
pub struct BenchTrainersArgs {
    /// Trials per run: one architecture at different learning rates, so every trial costs the same.
    #[arg(long, default_value_t = 24)]
    trials: u32,
    #[arg(long, default_value_t = 10)]
    epochs: u32,
    /// Trainer counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    counts: Vec<usize>,
    /// The MNIST-1D training CSV.
    #[arg(long, default_value = "data/mnist1d/train.csv")]
    data: PathBuf,
}

/// Resident and peak memory of this process, in MiB (Linux).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("msh-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Wall time of a run and the part of it the searcher took.
pub struct Timing {
    pub seconds: f64,
    pub searcher_seconds: f64,
}

/// Runs a workflow in this process; calls `on_trial(n)` after the n-th finished trial.
pub fn run_in_process(
    workflow: &Path,
    run_dir: &Path,
    trainers: Option<usize>,
    on_trial: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Timing> {
    run_until(workflow, run_dir, trainers, Default::default(), on_trial)
}

/// `run_in_process`, stopped (as by Ctrl-C) once `stop` is set: an interrupted run is then
/// a success too.
fn run_until(
    workflow: &Path,
    run_dir: &Path,
    trainers: Option<usize>,
    stop: Arc<AtomicBool>,
    on_trial: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Timing> {
    let finished = AtomicU64::new(0);
    let searcher_micros = Arc::new(AtomicU64::new(0));
    let reporter = {
        let searcher_micros = searcher_micros.clone();
        Arc::new(move |event: EngineEvent| match event {
            EngineEvent::TrialFinished { .. } => on_trial(finished.fetch_add(1, Ordering::Relaxed) + 1),
            EngineEvent::TrialStarted { searcher_seconds, .. } => {
                searcher_micros.fetch_add((searcher_seconds * 1e6) as u64, Ordering::Relaxed);
            }
            _ => {}
        })
    };
    let options = options(workflow, run_dir, trainers, stop.clone());
    let start = Instant::now();
    let end = engine::run_workflow(workflow, &options, reporter)?;
    if end != RunEnd::Done && !(end == RunEnd::Interrupted && stop.load(Ordering::Relaxed)) {
        bail!("the benchmark run ended with {end:?}");
    }
    Ok(Timing {
        seconds: start.elapsed().as_secs_f64(),
        searcher_seconds: searcher_micros.load(Ordering::Relaxed) as f64 / 1e6,
    })
}

fn options(workflow: &Path, run_dir: &Path, trainers: Option<usize>, stop: Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        run_dir: run_dir.to_path_buf(),
        trainers,
        backend: Some(msh_train::Backend::Cpu),
        threads: None,
        allow_changed_plugins: false,
        allow_changed_data: false,
        role: Default::default(),
        launcher: Some(super::run::launcher(workflow, run_dir, Some(msh_train::Backend::Cpu))),
        stop,
        store: None,
        lease_seconds: None,
    }
}

/// A copy of a run directory (an LMDB store: plain files).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("cannot copy {} to {}", entry.path().display(), target.display()))?;
        }
    }
    Ok(())
}

/// What a resume took until the searcher's first new proposal.
struct Resume {
    /// All in: the store opened and recovered, the plugins loaded, the stage started.
    seconds: f64,
    /// The searcher's share: brought up to date (restored or replayed) and proposing.
    searcher_seconds: f64,
    /// Peak memory added, in MiB.
    mib: f64,
}

/// Resumes the interrupted run in `run_dir` in this process until the searcher's first new
/// proposal.
fn resume_to_first_proposal(workflow: &Path, run_dir: &Path) -> anyhow::Result<Resume> {
    // Peak memory from here on (Linux: writing 5 resets the peak to the current size).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (resident_before, _) = memory_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let first = Arc::new(std::sync::Mutex::new(None));
    let start = Instant::now();
    let reporter = {
        let (stop, first) = (stop.clone(), first.clone());
        Arc::new(move |event: EngineEvent| {
            // A trial the searcher proposed (an interrupted one, requeued, took it no time).
            if let EngineEvent::TrialStarted { searcher_seconds, .. } = event
                && searcher_seconds > 0.0
            {
                let mut first = first.lock().expect("no panics");
                if first.is_none() {
                    *first = Some((start.elapsed().as_secs_f64(), searcher_seconds, memory_mib().1));
                }
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let options = options(workflow, run_dir, Some(1), stop.clone());
    let end = engine::run_workflow(workflow, &options, reporter)?;
    let Some((seconds, searcher_seconds, peak)) = *first.lock().expect("no panics") else {
        bail!("the resumed benchmark run ended ({end:?}) before its searcher proposed a trial");
    };
    Ok(Resume { seconds, searcher_seconds, mib: peak - resident_before })
}

/// Writes the table-trainer workflow of `msh bench engine` (a metrics table that never
/// runs out of architectures) into `dir`; returns its path.
pub fn table_workflow(dir: &Path, trials: u32, searcher: &str) -> anyhow::Result<PathBuf> {
    // Twelve blocks, depth 1-5: 271,452 architectures, every one in the table, so that a
    // search of 100,000 trials never repeats one.
    let blocks: Vec<String> = (0..12).map(|i| format!("b{i}")).collect();
    let mut table = String::from("arch,accuracy,params\n");
    let mut level: Vec<String> = vec![String::new()];
    let mut row = 0usize;
    for _ in 0..5 {
        level = level
            .iter()
            .flat_map(|prefix| {
                blocks.iter().map(move |b| if prefix.is_empty() { b.clone() } else { format!("{prefix},{b}") })
            })
            .collect();
        for arch in &level {
            let accuracy = 0.5 + 0.45 * ((row * 7919) % 1000) as f64 / 1000.0;
            table.push_str(&format!("\"{arch}\",{accuracy:.4},{}\n", 1000 * (arch.matches(',').count() + 1)));
            row += 1;
        }
    }
    std::fs::write(dir.join("table.csv"), table)?;
    let csv = dir.join("data.csv");
    std::fs::write(&csv, "label,x\n0,1\n1,2\n0,3\n1,4\n")?;
    let workflow = dir.join("table.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: bench\ndata: {{source: 'csv:data.csv'}}\nspace: {{packs: [], blocks: [{}], min_depth: 1, max_depth: 5}}\n\
             searcher: {{plugin: '{}'}}\ntrainers: {{kind: table, table: table.csv}}\n\
             budget: {{trials: {}}}\nstages: {{search: {{kind: search}}}}\n",
            blocks.join(", "),
            searcher,
            trials
        ),
    )?;
    Ok(workflow)
}

pub fn engine(args: BenchEngineArgs) -> anyhow::Result<std::process::ExitCode> {
    let scratch = Scratch::new("engine")?;
    // Room to resume into: the run is stopped after `trials`.
    let workflow = table_workflow(&scratch.0, args.trials + 100, &args.searcher)?;
    // Wall time and memory at every tenth of the run: the cost per trial must stay flat.
    let marks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tenth = (args.trials as u64 / 10).max(1);
    let start = Instant::now();
    let run_dir = scratch.0.join("run");
    let stop = Arc::new(AtomicBool::new(false));
    let timing = {
        let (marks, stop, trials) = (marks.clone(), stop.clone(), args.trials as u64);
        run_until(&workflow, &run_dir, Some(1), stop.clone(), move |n| {
            if n % tenth == 0 {
                marks.lock().expect("no panics").push((n, start.elapsed().as_secs_f64(), memory_mib().0));
            }
            if n >= trials {
                stop.store(true, Ordering::Relaxed);
            }
        })?
    };
    let (_, peak) = memory_mib();
    let marks = marks.lock().expect("no panics").clone();
    let per_trial = |seconds: f64| seconds * 1e3 / args.trials as f64;
    let (all_in, searcher) = (per_trial(timing.seconds), per_trial(timing.searcher_seconds));
    println!("table trainer, {}, whole history, {} trials: {:.2} s", args.searcher, args.trials, timing.seconds);
    println!("per trial, all in                      {all_in:>8.3} ms");
    println!("  of which the searcher (propose + checks) {searcher:>6.3} ms");
    println!("  engine + store                       {:>8.3} ms", all_in - searcher);
    println!("{:>10} {:>22} {:>14}", "trials", "ms per trial (window)", "resident MiB");
    let mut before = (0u64, 0.0);
    for (n, seconds, rss) in &marks {
        let window = (seconds - before.1) * 1e3 / (n - before.0).max(1) as f64;
        println!("{n:>10} {window:>22.3} {rss:>14.1}");
        before = (*n, *seconds);
    }
    if let (Some(first), Some(last)) = (marks.first(), marks.last()) {
        let first_window = first.1 * 1e3 / first.0.max(1) as f64;
        let last_window = (last.1 - marks[marks.len().saturating_sub(2)].1) * 1e3 / tenth as f64;
        println!(
            "last tenth vs first tenth: {:.2}x per trial (target: flat, under 1 ms at 100,000 trials); peak {peak:.1} MiB",
            last_window / first_window.max(1e-9)
        );
    }

    // The run was stopped as by Ctrl-C, which keeps a searcher snapshot. Resumed from
    // copies, with the snapshot forgotten (every trial read and replayed) and with it, twice
    // each, alternating (the faster of each pair counts: other work on the machine only
    // slows a run down).
    let snapshot = msh_store::Store::open(&run_dir)?.snapshot("search")?;
    let mut replay: Option<Resume> = None;
    let mut restored: Option<Resume> = None;
    for round in 0..2 {
        for forget in [true, false] {
            let copy = scratch.0.join(format!("resume-{round}-{}", if forget { "replay" } else { "snapshot" }));
            copy_dir(&run_dir, &copy)?;
            if forget {
                msh_store::Store::open(&copy)?.write(|t| t.forget_snapshot("search"))?;
            }
            let resume = resume_to_first_proposal(&workflow, &copy)?;
            let _ = std::fs::remove_dir_all(&copy);
            let best = if forget { &mut replay } else { &mut restored };
            if best.as_ref().is_none_or(|b| resume.seconds < b.seconds) {
                *best = Some(resume);
            }
        }
    }
    let (replay, restored) = (replay.expect("measured"), restored.expect("measured"));
    let kept = match &snapshot {
        Some(s) => format!("a snapshot of {} trials, {} KiB", s.trials, s.state.len().div_ceil(1024)),
        None => "no snapshot: the searcher keeps none".into(),
    };
    println!(
        "resume to first proposal: replay {:.2} s, snapshot {:.2} s ({kept}; target: under 2 s at 100,000 trials)",
        replay.seconds, restored.seconds
    );
    println!(
        "  the first proposal's searcher time: replay {:.3} s (every trial told first), snapshot {:.3} s (restored \
         before the first claim; MSH_LOG=msh=debug shows each step)",
        replay.searcher_seconds, restored.searcher_seconds
    );
    println!("  peak memory added: replay {:.1} MiB, snapshot {:.1} MiB", replay.mib, restored.mib);
    Ok(std::process::ExitCode::SUCCESS)
}

pub fn trainers(args: BenchTrainersArgs) -> anyhow::Result<std::process::ExitCode> {
    let data = std::fs::canonicalize(&args.data).with_context(|| {
        format!("cannot find {} (run from the repository root or pass --data)", args.data.display())
    })?;
    let scratch = Scratch::new("trainers")?;
    let workflow = scratch.0.join("w.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: bench\nseed: 1\ndata: {{source: 'csv:{}', shape: [1, 40]}}\n\
             space: {{blocks: [fixed_conv], min_depth: 2, max_depth: 2,\n\
               hparams: {{learning_rate: {{low: 0.0005, high: 0.005, log: true}}}}}}\n\
             searcher: {{plugin: random-search}}\ntraining: {{epochs: {}, batch_size: 64}}\n\
             budget: {{trials: {}}}\nstages: {{search: {{kind: search}}}}\n",
            data.display(),
            args.epochs,
            args.trials
        ),
    )?;
    let exe = std::env::current_exe().context("cannot find the msh binary")?;
    let cores = msh_train::cores();
    println!("{cores} cores; {} trials of {} epochs per run; each run is a fresh `msh run`", args.trials, args.epochs);
    println!("{:>8} {:>17} {:>9} {:>11} {:>14}", "trainers", "threads each", "seconds", "trials/min", "vs 1 trainer");
    let mut one = None;
    for &count in &args.counts {
        let shared = msh_train::threads_per_trainer(count);
        // The default (cores shared out) and, to show what it saves, every trainer on all cores.
        let mut settings = vec![(shared, "shared")];
        if shared != cores {
            settings.push((cores, "all cores"));
        }
        for (threads, label) in settings {
            let dir = scratch.0.join(format!("run-{count}-{threads}"));
            let start = Instant::now();
            let output = std::process::Command::new(&exe)
                .arg("run")
                .arg(&workflow)
                .arg("--run-dir")
                .arg(&dir)
                .args(["--backend", "cpu", "--trainers", &count.to_string(), "--threads", &threads.to_string()])
                .stdin(std::process::Stdio::null())
                .output()
                .context("cannot start msh run")?;
            if !output.status.success() {
                anyhow::bail!(
                    "msh run with {count} trainer(s) failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            let per_minute = args.trials as f64 * 60.0 / start.elapsed().as_secs_f64();
            let base = *one.get_or_insert(per_minute);
            println!(
                "{count:>8} {:>17} {:>9.1} {per_minute:>11.1} {:>13.2}x",
                format!("{threads} ({label})"),
                start.elapsed().as_secs_f64(),
                per_minute / base
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
