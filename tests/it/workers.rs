//! Many processes on one run through PostgreSQL: `msh run --store` with three `msh
//! worker`s, each as if on a machine of its own (`MSH_HOST`), one of them SIGKILLed
//! mid-trial. Every trial of the budget must end exactly
//! once, and the killed worker's trial must be retrained by another once its lease expires.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use msh_store::{Store, TrialStatus};

const BUDGET: u64 = 9;

/// Whether this machine lets us start processes in network namespaces of their own.
fn namespaces() -> bool {
    std::process::Command::new("unshare").args(["--net", "true"]).status().is_ok_and(|s| s.success())
}

/// Starts `msh` as if on machine `host`, so that a worker notices another's death only by
/// its lease; `isolated`: in a network namespace of its own, which has no network at all
/// (the store is reached through PostgreSQL's Unix socket, the run through the file system).
fn spawn(args: &[&str], url: &str, host: &str, isolated: bool) -> Child {
    let mut command = if isolated {
        let mut command = std::process::Command::new("unshare");
        command.args(["--net", "--", env!("CARGO_BIN_EXE_msh")]).current_dir(common::root());
        command
    } else {
        common::msh()
    };
    command
        .args(args)
        .env("MSH_STORE", url)
        .env("MSH_HOST", host)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msh starts")
}

fn wait(mut child: Child, what: &str, deadline: Instant) -> String {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            assert!(status.success(), "{what} failed with {status}:\n{stderr}");
            return stderr;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_workers_share_a_run_and_a_killed_workers_trial_is_retrained() {
    let (url, socket_url) = common::postgres_urls();
    let isolated = namespaces();
    eprintln!("workers in network namespaces: {isolated}");
    let worker_url = if isolated { socket_url } else { url.clone() };
    // Children start from their parents' checkpoints, whichever worker wrote them.
    let workflow = common::mnist1d_workflow(BUDGET as u32, 12, 1, "") + "weight_sharing: {mode: snapshot}\n";
    let (_dir, workflow, run_dir) = common::start(&workflow);
    let (workflow, run) = (workflow.to_str().unwrap(), run_dir.to_str().unwrap());
    let lease = ["--lease-seconds", "2", "--threads", "1"];
    let mut args = vec!["run", workflow, "--run-dir", run, "--trainers", "1"];
    args.extend(lease);
    let coordinator = spawn(&args, &url, "coordinator", false);
    let started = Instant::now();
    while !run_dir.join("store.json").is_file()
        || Store::open(&run_dir).and_then(|s| s.run_meta()).ok().flatten().is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(60), "msh run did not create the run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = vec!["worker", run];
    args.extend(lease);
    let mut workers: Vec<Child> = (0..3).map(|i| spawn(&args, &worker_url, &format!("machine{i}"), isolated)).collect();
    let victim = workers[0].id();
    let store = Store::open(&run_dir).unwrap();
    assert_eq!(store.backend(), "postgres");

    // Kill the first worker while it trains a trial.
    let tag = format!(" pid {victim} ");
    let killed_trial = loop {
        assert!(started.elapsed() < Duration::from_secs(120), "worker {victim} never trained a trial");
        let trials = store.trials().unwrap();
        let running = trials
            .iter()
            .find(|t| t.status == TrialStatus::Running && t.worker.as_deref().is_some_and(|w| w.contains(&tag)));
        if let Some(trial) = running {
            let _ = std::process::Command::new("kill").args(["-9", &victim.to_string()]).status();
            break trial.id;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut victim_process = workers.remove(0);
    let _ = victim_process.wait();
    let at_kill = store.trial(killed_trial).unwrap();
    assert_eq!(at_kill.status, TrialStatus::Running, "the kill landed mid-trial: {at_kill:#?}");

    let deadline = Instant::now() + Duration::from_secs(300);
    for (i, worker) in workers.into_iter().enumerate() {
        wait(worker, &format!("worker {}", i + 2), deadline);
    }
    wait(coordinator, "msh run", deadline);

    let trials = store.trials().unwrap();
    let search: Vec<_> = trials.iter().filter(|t| t.stage == "search").collect();
    assert_eq!(search.len() as u64, BUDGET, "the budget holds across workers: {search:#?}");
    assert!(search.iter().all(|t| t.status.is_finished()), "every trial ended: {search:#?}");
    let (log, _) = store.finished_since(0).unwrap();
    let mut ends: BTreeMap<u64, usize> = BTreeMap::new();
    for trial in &log {
        *ends.entry(trial.id).or_default() += 1;
    }
    assert!(ends.values().all(|&n| n == 1), "a trial ended twice: {ends:?}");
    assert_eq!(ends.len() as u64, BUDGET, "every trial ended once: {ends:?}");
    let stage = store.stage("search").unwrap().unwrap();
    assert_eq!((stage.finished_trials, stage.running, stage.reserved.len()), (BUDGET, 0, 0));

    let retried = store.trial(killed_trial).unwrap();
    assert_eq!(retried.attempts, 2, "the killed worker's trial ran again: {retried:#?}");
    assert!(!retried.worker.as_deref().unwrap_or("").contains(&tag), "it was retrained elsewhere: {retried:#?}");
    let events = store.events().unwrap();
    assert!(
        events.iter().any(|e| e.trial == Some(killed_trial)
            && e.message.starts_with("requeued:")
            && e.message.contains(&tag)
            && e.message.contains("its lease expired")),
        "the requeue is logged: {events:#?}"
    );
    // Work was shared, and every checkpoint is in the shared run directory.
    let pids: std::collections::BTreeSet<&str> =
        search.iter().filter_map(|t| t.worker.as_deref()).map(|w| w.split(" trainer").next().unwrap()).collect();
    assert!(pids.len() >= 3, "the trials ran in several processes: {pids:?}");
    let inherited_elsewhere = search.iter().filter(|t| t.inherited > 0).any(|t| {
        let parent = search.iter().find(|p| Some(p.id) == t.parent).expect("a parent of the stage");
        let process = |w: &Option<String>| w.as_deref().map(|w| w.split(" trainer").next().unwrap().to_string());
        process(&parent.worker) != process(&t.worker)
    });
    assert!(inherited_elsewhere, "a trial inherited weights that another process wrote: {search:#?}");
    for trial in search.iter().filter(|t| t.status == TrialStatus::Completed) {
        let checkpoint = run_dir.join(trial.checkpoint.as_ref().expect("completed trials have a checkpoint"));
        assert!(checkpoint.join("weights.bpk").is_file(), "{}", checkpoint.display());
    }
}

/// The flags `msh worker --help` lists.
fn worker_flags() -> String {
    let out = common::run(&["worker", "--help"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_kubernetes_job_and_slurm_script_run_real_worker_commands() {
    let help = worker_flags();
    let text = std::fs::read_to_string(common::root().join("deploy/kubernetes/workers.yaml")).unwrap();
    let job: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("the Job parses as YAML");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["parallelism"], spec["completions"]);
    let container = &spec["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(command, ["msh", "worker"]);
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "the Job passes {flag}, which `msh worker` lacks");
    }
    let threads = args.iter().position(|a| *a == "--threads").map(|i| args[i + 1]);
    assert_eq!(threads, container["resources"]["requests"]["cpu"].as_str(), "CPU request = threads");
    let env = &container["env"][0];
    assert_eq!(
        (env["name"].as_str(), env["valueFrom"]["secretKeyRef"]["name"].as_str()),
        (Some("MSH_STORE"), Some("msh-store"))
    );
    assert!(help.contains("MSH_STORE"), "`msh worker` reads MSH_STORE");

    let script = common::root().join("deploy/slurm/workers.sbatch");
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array="), "an array job");
    let line = text.lines().find(|l| l.trim_start().starts_with("args=(worker")).expect("the worker command");
    for flag in line.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "the script passes {flag}, which `msh worker` lacks");
    }
    // A worker pointed at a directory that holds no run says so, and creates nothing.
    let dir = common::TempDir::new();
    let missing = dir.path().join("typo");
    let err = common::failure(&["worker", missing.to_str().unwrap()]);
    assert!(err.contains("is not a run directory"), "{err}");
    assert!(!missing.exists());
}

/// A run survives its database connections being cut again and again: every backend of
/// the run is terminated every 20 ms for 10 s (longer, until 20 were, on a loaded machine)
/// while it trains, and it still ends with every trial of its budget exactly once.
#[test]
fn a_run_survives_terminated_database_backends() {
    const TRIALS: u64 = 12;
    let name = format!("msh-fault-{}", std::process::id());
    let url = format!("{}?application_name={name}", common::postgres_url());
    let (_dir, workflow, run_dir) = common::start(&common::mnist1d_workflow(TRIALS as u32, 2, 2, ""));
    let run_text = run_dir.to_str().unwrap();
    let run = spawn(&["run", workflow.to_str().unwrap(), "--run-dir", run_text], &url, "fault", false);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let terminated = runtime.block_on(async {
        let (admin, connection) =
            tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                    WHERE application_name = $1 AND pid <> pg_backend_pid()";
        let started = Instant::now();
        let mut terminated = 0;
        // Ten seconds, and on a loaded machine (a slow start) until twenty were cut.
        let under_fire = |terminated: i64| {
            let elapsed = started.elapsed();
            elapsed < Duration::from_secs(10) || (terminated < 20 && elapsed < Duration::from_secs(60))
        };
        while under_fire(terminated) {
            terminated += admin.query_one(kill, &[&name]).await.unwrap().get::<_, i64>(0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        terminated
    });
    assert!(terminated >= 20, "only {terminated} backends were terminated: the run was not under fire");
    wait(run, "the run under terminated backends", Instant::now() + Duration::from_secs(300));

    let store = Store::open_at(&run_dir, Some(&common::postgres_url())).unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials.len() as u64, TRIALS, "{trials:#?}");
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed), "{trials:#?}");
    // A trial is its blocks with their parameters and its hyper-parameters.
    let keys: std::collections::BTreeSet<String> =
        trials.iter().map(|t| format!("{:?}|{:?}", t.architecture, t.hparams)).collect();
    assert_eq!(keys.len() as u64, TRIALS, "no trial was trained twice: {trials:#?}");
    let stage = store.stage("search").unwrap().unwrap();
    assert_eq!(stage.finished_trials, TRIALS);
}
