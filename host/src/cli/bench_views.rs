//! `msh bench views`: how long a user waits for each view of a large run. It builds a
//! table-trainer run (100,000 trials by default), then times `msh status`, `msh trials
//! --json`, `msh best`, `msh report` and the dashboard's pages as child processes of this
//! binary, with each one's peak memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::bench_engine::{Scratch, run_in_process, table_workflow};

#[derive(Debug, Args)]
pub struct BenchViewsArgs {
    /// Trials of the run.
    #[arg(long, default_value_t = 100_000)]
    trials: u32,
    /// Timed runs of each view; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Keep the run here (and reuse it when it is already there) instead of a scratch
    /// directory that is removed afterwards.
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

/// Peak resident memory (VmHWM) of a running process, in MiB; 0 once it has exited.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Runs `msh ARGS` to its end, its output thrown away; returns its wall time and peak
/// memory (sampled every 2 ms: the last sample before it exits).
fn time_command(exe: &Path, args: &[&str]) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start msh {}", args.join(" ")))?;
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak.max(peak_mib(child.id()));
        std::thread::sleep(Duration::from_millis(2));
    };
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        bail!("msh {} failed ({status}): {}", args.join(" "), err.trim());
    }
    Ok((seconds, peak))
}

/// `GET path` from the dashboard on `port`; returns the body's length in bytes.
fn get(port: u16, path: &str) -> anyhow::Result<usize> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).context("cannot reach the dashboard")?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").context("the dashboard sent no headers")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    if !head.lines().next().is_some_and(|l| l.contains(" 200 ")) {
        bail!("GET {path}: {}", head.lines().next().unwrap_or("no answer"));
    }
    Ok(response.len() - head_end - 4)
}

/// A dashboard (`msh ui`) serving the run, stopped when dropped.
struct Dashboard {
    child: Child,
    port: u16,
}

impl Dashboard {
    fn start(exe: &Path, run: &Path) -> anyhow::Result<(Self, f64)> {
        let start = Instant::now();
        let mut child = Command::new(exe)
            .arg("ui")
            .arg(run)
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start msh ui")?;
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().context("msh ui has no stdout")?);
        std::io::BufRead::read_line(&mut out, &mut line)?;
        let port = line
            .split("http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("msh ui printed no address: {line:?}"))?;
        Ok((Self { child, port }, start.elapsed().as_secs_f64()))
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn views(args: BenchViewsArgs) -> anyhow::Result<std::process::ExitCode> {
    let exe = std::env::current_exe().context("cannot find the msh binary")?;
    let scratch = Scratch::new("views")?;
    let run = args.run_dir.clone().unwrap_or_else(|| scratch.0.join("run"));
    if msh_store::Store::exists(&run) {
        println!("reusing the run in {}", run.display());
    } else {
        let workflow = table_workflow(&scratch.0, args.trials, msh_engine::workflow::DEFAULT_SEARCHER)?;
        let timing = run_in_process(&workflow, &run, Some(1), |_| {})?;
        println!("built a {}-trial table run in {:.1} s", args.trials, timing.seconds);
    }
    let trials = msh_store::Store::open(&run)?.stages()?.iter().map(|s| s.finished_trials).sum::<u64>();
    let run_text = run.to_str().context("the run directory's path is not UTF-8")?;
    let report = scratch.0.join("report.html");
    let report_text = report.to_str().context("the scratch directory's path is not UTF-8")?;
    let repeats = args.repeats.max(1);
    println!("{trials} trials; median of {repeats} runs; peak memory: VmHWM of the process");
    println!("{:<38} {:>9} {:>10}  output", "view", "seconds", "peak MiB");
    let commands: [(&str, Vec<&str>); 4] = [
        ("msh status", vec!["status", run_text]),
        ("msh trials --json", vec!["trials", run_text, "--json"]),
        ("msh best", vec!["best", run_text]),
        ("msh report", vec!["report", run_text, "-o", report_text]),
    ];
    for (name, command) in commands {
        let mut times = Vec::new();
        let mut peak = 0.0f64;
        for _ in 0..repeats {
            let (seconds, mib) = time_command(&exe, &command)?;
            times.push(seconds);
            peak = peak.max(mib);
        }
        let output = if name == "msh report" {
            format!("{:.1} MiB of HTML", std::fs::metadata(&report)?.len() as f64 / (1 << 20) as f64)
        } else {
            String::new()
        };
        println!("{name:<38} {:>9.3} {peak:>10.1}  {output}", median(times));
    }

    let (dashboard, startup) = Dashboard::start(&exe, &run)?;
    println!("{:<38} {startup:>9.3}", "msh ui: start until it listens");
    // A page that holds the run but for its last 100 finished trials asks what changed.
    let position = msh_store::Store::open(&run)?.finished_since(u64::MAX)?.1;
    let pages: [(&str, String); 5] = [
        ("dashboard: first page (/)", "/".into()),
        ("dashboard: /api/trials (every trial)", "/api/trials".into()),
        ("dashboard: /api/trials?limit=1000", "/api/trials?offset=0&limit=1000".into()),
        ("dashboard: update, 100 new trials", format!("/api/wait?since={}", position.saturating_sub(100))),
        ("dashboard: plots redrawn (/fragment)", "/fragment".into()),
    ];
    for (name, path) in pages {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..repeats {
            let start = Instant::now();
            bytes = get(dashboard.port, &path)?;
            times.push(start.elapsed().as_secs_f64());
        }
        println!(
            "{name:<38} {:>9.3} {:>10.1}  {:.1} MiB sent",
            median(times),
            peak_mib(dashboard.child.id()),
            bytes as f64 / (1 << 20) as f64
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
