//! Helpers shared by the end-to-end tests: the real `msh` binary and the bundled data.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use msh_train::data::{Dataset, Normalization, Splits};
use msh_train::model::Task;

/// The repository root (bundled data and architectures live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

pub fn msh() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_msh"));
    cmd.current_dir(root());
    cmd
}

/// Runs `msh` with `args`; returns the output, whatever the exit status.
pub fn run(args: &[&str]) -> Output {
    msh().args(args).output().expect("msh runs")
}

/// Runs `msh train ... --json` and returns the parsed result; panics with stderr on failure.
pub fn train_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["train", "--json", "--quiet", "--backend", "cpu"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "msh {all:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("msh train --json prints JSON")
}

/// The stderr of a run that must fail.
pub fn failure(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "msh {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A test-split metric of a `train_json` result (printed, for the CI log).
pub fn test_metric(result: &serde_json::Value, name: &str) -> f64 {
    let value = result["test"][name].as_f64().unwrap_or_else(|| panic!("no test {name} in {result:#}"));
    eprintln!(
        "test {name} {value:.4} ({} parameters, {:.1}s)",
        result["parameters"],
        result["train_seconds"].as_f64().unwrap_or(0.0)
    );
    value
}

/// Writes CIFAR-10 binary files with `records` records each into `dir`; labels cycle
/// through 0..10 and each class gets a distinct mean brightness, so a model can learn it.
pub fn write_cifar(dir: &std::path::Path, records: usize) {
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        let mut bytes = Vec::with_capacity(records * 3073);
        for i in 0..records {
            let label = (i % 10) as u8;
            bytes.push(label);
            bytes.extend((0..3072).map(|p| label * 20 + (p % 7) as u8));
        }
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("msh-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("temp dir can be created");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic samples of `shape` (at least 8) with labels cycling through 0..classes,
/// already "normalised"; integer features serve as token ids.
pub fn synthetic(shape: &[usize], samples: usize, classes: usize, integer_features: bool) -> Splits {
    let len: usize = shape.iter().product();
    let features = (0..samples * len)
        .map(|i| if integer_features { (i * 7 % 10) as f32 } else { ((i * 7919) % 1000) as f32 / 500.0 - 1.0 })
        .collect();
    let data =
        Dataset { features, targets: (0..samples).map(|i| (i % classes) as f32).collect(), shape: shape.to_vec() };
    Splits {
        train: data.clone(),
        valid: data.select(&[0, 1, 2, 3]),
        test: data.select(&[4, 5, 6, 7]),
        task: Task::Classification { classes },
        normalization: Normalization::identity(),
        class_names: vec![],
    }
}

/// A directory holding workflow `text` as `w.yaml`, and the run directory to use beside it.
pub fn start(text: &str) -> (TempDir, PathBuf, PathBuf) {
    let dir = TempDir::new();
    let workflow = dir.path().join("w.yaml");
    std::fs::write(&workflow, text).unwrap();
    let run_dir = dir.path().join("run");
    (dir, workflow, run_dir)
}

/// Runs `msh` with `args`, expecting success, and parses its stdout as JSON.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(out.status.success(), "msh {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("msh {args:?} printed no JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// A small MNIST-1D search workflow; `extra` is appended (e.g. more stages).
pub fn mnist1d_workflow(budget: u32, epochs: u32, trainers: u32, extra: &str) -> String {
    let data = root().join("data/mnist1d");
    format!(
        "name: test\nseed: 3\ndata:\n  source: csv:{train}\n  test: csv:{test}\n  shape: [1, 40]\n\
         space:\n  blocks: [fixed_conv, resnet, max_pool, dilated_conv]\n  min_depth: 1\n  max_depth: 3\n\
         searcher:\n  plugin: beam-search\n  config: {{beam_size: 2, increase_complexity_minimum_trials: 2}}\n\
         training: {{epochs: {epochs}, batch_size: 128, learning_rate: 0.003}}\n\
         trainers: {{count: {trainers}, backend: cpu}}\nbudget: {{trials: {budget}}}\n\
         stages:\n  search: {{kind: search}}\n{extra}",
        train = data.join("train.csv").display(),
        test = data.join("test.csv").display(),
    )
}

/// The URLs of the PostgreSQL cluster the store tests use, over TCP on loopback and over
/// its Unix socket: `MSH_TEST_POSTGRES` and `MSH_TEST_POSTGRES_SOCKET`, which `.ci/run`
/// sets, else those of the private cluster `.ci/postgres` starts (or finds).
pub fn postgres_urls() -> (String, String) {
    static URLS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    URLS.get_or_init(|| {
        if let (Ok(tcp), Ok(socket)) = (std::env::var("MSH_TEST_POSTGRES"), std::env::var("MSH_TEST_POSTGRES_SOCKET")) {
            return (tcp, socket);
        }
        let out = Command::new("bash").arg(root().join(".ci/postgres")).output().expect("bash runs");
        assert!(
            out.status.success(),
            "no PostgreSQL for the store tests (set MSH_TEST_POSTGRES, or install Debian's postgresql): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("URLs");
        let mut lines = text.lines().map(str::to_string);
        (lines.next().expect("the TCP URL"), lines.next().expect("the socket URL"))
    })
    .clone()
}

/// The TCP URL of `postgres_urls`.
pub fn postgres_url() -> String {
    postgres_urls().0
}

/// One line of `msh run --events json`: an engine event as the binary wrote it. Any other
/// line fails the test, so the tests that follow a run read only the stream it promises.
pub fn engine_event(line: &str) -> msh_engine::EngineEvent {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not an event of `msh run --events json` ({e}): {line}"))
}

/// Whether `event` reports a trial that completed (not failed, stopped or diverged).
pub fn completes_a_trial(event: &msh_engine::EngineEvent) -> bool {
    matches!(event, msh_engine::EngineEvent::TrialFinished { trial, .. } if trial.status == msh_store::TrialStatus::Completed)
}

/// How many trials the `--events json` stream `stdout` reports completed.
pub fn completions(stdout: &[u8]) -> usize {
    String::from_utf8_lossy(stdout).lines().filter(|line| completes_a_trial(&engine_event(line))).count()
}
