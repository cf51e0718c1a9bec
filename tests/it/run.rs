//! `msh run` end to end: a real search on MNIST-1D with two trainers, the store's
//! contents, status/trials/best/predict, and resuming after SIGKILL and Ctrl-C.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TempDir, failure, json, mnist1d_workflow, msh, run, start};
use serde_json::Value;

/// `msh run` to the end; panics with its stderr unless it succeeded, else returns it.
fn run_ok(workflow: &Path, run_dir: &Path) -> String {
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "msh run failed:\n{stderr}");
    stderr
}

fn trials(run_dir: &str) -> Vec<Value> {
    json(&["trials", run_dir, "--json"]).as_array().expect("a list of trials").clone()
}

#[test]
fn search_with_two_trainers_records_lineage_and_exports_a_model_that_predicts_as_recorded() {
    let extra = "  ensemble: {kind: ensemble, needs: [search], top_k: 3, method: weighted}\n  export: {kind: export, needs: [search], dir: best}\n";
    let (dir, workflow, run_dir) = start(&mnist1d_workflow(8, 3, 2, extra));
    let run_dir_text = run_dir.to_str().unwrap();
    let stderr = run_ok(&workflow, &run_dir);
    // Both trainers worked.
    assert!(stderr.contains("on trainer 0") && stderr.contains("on trainer 1"), "{stderr}");

    let everything = trials(run_dir_text);
    let all: Vec<Value> = everything.iter().filter(|t| t["stage"] == "search").cloned().collect();
    assert_eq!(all.len(), 8, "the budget is 8 trials");
    let ids: Vec<u64> = all.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    for t in &all {
        assert_eq!(t["status"], "completed", "{t:#}");
        assert!(t["valid"]["accuracy"].as_f64().unwrap() > 0.1, "{t:#}");
        assert!(t["checkpoint"].is_string(), "{t:#}");
        if let Some(parent) = t["parent"].as_u64() {
            assert!(
                ids.contains(&parent) && parent < t["id"].as_u64().unwrap(),
                "lineage points at an earlier trial: {t:#}"
            );
        }
    }
    let children = all.iter().filter(|t| t["parent"].is_u64()).count();
    assert!(children >= 4, "beam search mutates recorded trials ({children} children)");

    let status = json(&["status", run_dir_text, "--json"]);
    assert_eq!(status["trials"]["completed"], 9, "8 trials and the ensemble: {status:#}");
    let states: BTreeMap<String, String> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states.values().filter(|s| *s == "done").count(), 3, "{states:?}");
    // The ensemble is recorded like a trial, with its members and their learned weights.
    let ensemble = everything.iter().find(|t| t["stage"] == "ensemble").expect("an ensemble record");
    let members = ensemble["members"].as_array().unwrap();
    assert!(!members.is_empty() && members.len() <= 3, "{ensemble:#}");
    assert!(members.iter().all(|m| ids.contains(&m[0].as_u64().unwrap())), "{ensemble:#}");
    assert!(run_dir.join("ensembles/ensemble/ensemble.json").is_file());

    // The best model (trial or ensemble) has the lowest validation loss.
    let best_objective = everything.iter().map(|t| t["objective"].as_f64().unwrap()).fold(f64::INFINITY, f64::min);
    let export = dir.path().join("exported");
    let best = json(&["best", run_dir_text, "--export", export.to_str().unwrap(), "--json"]);
    assert_eq!(best["objective"].as_f64().unwrap(), best_objective);
    assert_eq!(status["best"]["id"], best["id"]);
    // The export stage wrote the same trial.
    let staged: Value = serde_json::from_slice(&std::fs::read(run_dir.join("best/trial.json")).unwrap()).unwrap();
    let best_search = all
        .iter()
        .min_by(|a, b| a["objective"].as_f64().unwrap().total_cmp(&b["objective"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(staged["id"], best_search["id"]);

    // The exported model reloads and predicts the test set with the recorded accuracy.
    let test_csv = common::root().join("data/mnist1d/test.csv");
    let data = format!("csv:{}", test_csv.display());
    let predicted = json(&["predict", export.to_str().unwrap(), "--data", &data, "--json", "--backend", "cpu"]);
    let recorded = best["test"]["accuracy"].as_f64().unwrap();
    assert_eq!(predicted["metrics"]["accuracy"].as_f64().unwrap(), recorded, "{predicted:#}");
    assert_eq!(predicted["samples"], 1000);
    // The run directory predicts with its best model too.
    let from_run = json(&["predict", run_dir_text, "--data", &data, "--json", "--backend", "cpu"]);
    assert_eq!(from_run["metrics"]["accuracy"].as_f64().unwrap(), recorded);
    // The export stage's single model predicts as recorded too, and `msh train` reads its
    // architecture.
    let staged_prediction =
        json(&["predict", run_dir.join("best").to_str().unwrap(), "--data", &data, "--json", "--backend", "cpu"]);
    assert_eq!(staged_prediction["metrics"]["accuracy"], staged["test"]["accuracy"]);
    let arch = run_dir.join("best/architecture.yaml");
    let trained = common::train_json(&[
        "--data",
        &format!("csv:{}", common::root().join("data/mnist1d/train.csv").display()),
        "--shape",
        "1,40",
        "--arch",
        arch.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert_eq!(trained["parameters"], staged["parameters"]);
}

/// Waits until at least `n` trials are completed; panics after `limit`.
fn wait_for_completed(run_dir: &str, n: usize, limit: Duration) {
    let start = Instant::now();
    loop {
        if msh().args(["trials", run_dir, "--json"]).output().is_ok_and(|o| {
            o.status.success()
                && serde_json::from_slice::<Vec<Value>>(&o.stdout)
                    .is_ok_and(|t| t.iter().filter(|t| t["status"] == "completed").count() >= n)
        }) {
            return;
        }
        assert!(start.elapsed() < limit, "no {n} completed trials after {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn completed_by_id(run_dir: &str) -> BTreeMap<u64, Value> {
    trials(run_dir).into_iter().filter(|t| t["status"] == "completed").map(|t| (t["id"].as_u64().unwrap(), t)).collect()
}

/// Checks that a resumed run finished the budget without losing or retraining a
/// trial completed before the interruption.
fn assert_resumed(run_dir: &str, before: &BTreeMap<u64, Value>, budget: usize) {
    let after = trials(run_dir);
    assert_eq!(after.len(), budget, "exactly the budget of trials: {after:#?}");
    assert!(after.iter().all(|t| t["status"] == "completed"), "{after:#?}");
    for (id, trial) in before {
        let now = after.iter().find(|t| t["id"].as_u64() == Some(*id)).expect("completed trial kept");
        assert_eq!(now, trial, "trial {id} changed after the restart");
        assert_eq!(now["attempts"], 1, "trial {id} was trained once");
    }
}

#[test]
fn a_killed_run_resumes_without_losing_or_retraining_completed_trials() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(8, 6, 1, ""));
    let run_dir_text = run_dir.to_str().unwrap();
    let mut child = msh()
        .args(["run", workflow.to_str().unwrap(), "--run-dir", run_dir_text])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_completed(run_dir_text, 2, Duration::from_secs(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = completed_by_id(run_dir_text);
    let orphans = trials(run_dir_text).iter().filter(|t| t["status"] == "running").count();
    assert!(before.len() >= 2 && before.len() < 8, "killed mid-search: {} completed", before.len());

    let stderr = run_ok(&workflow, &run_dir);
    if orphans > 0 {
        assert!(
            stderr.contains(&format!("{orphans} interrupted trial(s) requeued")),
            "the running trial is requeued:\n{stderr}"
        );
    }
    assert_resumed(run_dir_text, &before, 8);
}

/// xorshift64: the same kill moments on every run of the suite.
fn moments(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// SIGKILLs `msh run` `kills` times, each after 1..=`most` trial completions and up to 3 ms
/// more (so that some kills land inside a transaction). After every kill no completed trial
/// has changed or disappeared, and the search is not over; then a last run completes the
/// budget with every trial completed once and each completed trial as first seen.
fn kill_repeatedly(
    workflow: &Path,
    run_dir: &Path,
    kills: usize,
    most: u64,
    budget: usize,
    next: &mut impl FnMut() -> u64,
) {
    let run_dir_text = run_dir.to_str().unwrap();
    let mut known: BTreeMap<u64, Value> = BTreeMap::new();
    for round in 0..kills {
        let mut child = msh()
            .args(["run", workflow.to_str().unwrap(), "--run-dir", run_dir_text, "--events", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let target = 1 + next() % most;
        let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let mut completions = 0;
        for line in lines.map_while(Result::ok) {
            completions += usize::from(common::completes_a_trial(&common::engine_event(&line)));
            if completions as u64 >= target {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(next() % 3000));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // The earliest kills may come before the store exists.
        let now = if run_dir.join("store").exists() { completed_by_id(run_dir_text) } else { BTreeMap::new() };
        for (id, trial) in &known {
            assert_eq!(now.get(id), Some(trial), "kill {round}: completed trial {id} changed or disappeared");
        }
        assert!(now.len() < budget, "kill {round} came after the search ended");
        known = now;
    }
    assert!(!known.is_empty(), "the kills came before any trial completed");
    run_ok(workflow, run_dir);
    // A trial killed while training is trained again (its `attempts` counts it), but none
    // completed is ever trained again: each is as it was when first seen completed.
    let after = completed_by_id(run_dir_text);
    assert_eq!(trials(run_dir_text).len(), budget, "exactly the budget of trials");
    assert_eq!(after.len(), budget, "all of them completed");
    for (id, trial) in &known {
        assert_eq!(after.get(id), Some(trial), "completed trial {id} changed after the last run");
    }
}

/// SIGKILL at 20 random moments of a 1,000-trial table search (random search over 1,110
/// architectures).
#[test]
fn a_search_killed_at_twenty_moments_loses_and_repeats_nothing() {
    let blocks: Vec<String> = ('a'..='j').map(String::from).collect();
    let text = table_workflow("random-search", &blocks.join(", "), 1000).replace("max_depth: 2", "max_depth: 3");
    let (dir, workflow, run_dir) = start(&text);
    let mut next = moments(0x9e37_79b9_7f4a_7c15);
    // Every architecture of depth 1-3 with an accuracy of its own.
    let mut table = String::from("arch,accuracy\n");
    let mut archs: Vec<Vec<&str>> = blocks.iter().map(|b| vec![b.as_str()]).collect();
    for _ in 1..3 {
        let longer: Vec<Vec<&str>> = archs
            .iter()
            .filter(|a| a.len() == archs.last().unwrap().len())
            .flat_map(|a| blocks.iter().map(move |b| [a.clone(), vec![b.as_str()]].concat()))
            .collect();
        archs.extend(longer);
    }
    for arch in &archs {
        table.push_str(&format!("\"{}\",0.{:04}\n", arch.join(","), next() % 10_000));
    }
    std::fs::write(dir.path().join("table.csv"), table).unwrap();
    std::fs::write(dir.path().join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
    kill_repeatedly(&workflow, &run_dir, 20, 40, 1000, &mut next);
}

/// The same with burn trainers: two trainer processes training small dense networks on
/// iris, SIGKILLed at 20 moments; killed trials are retrained, completed ones never.
#[test]
fn a_burn_search_killed_at_twenty_moments_loses_and_repeats_nothing() {
    let iris = common::root().join("data/iris/iris.csv");
    let text = format!(
        "name: burn-kills\nseed: 5\ndata: {{source: 'csv:{}'}}\n\
         space: {{blocks: [dense, dense_bn, dense_residual, low_rank_dense], min_depth: 1, max_depth: 3,\n\
         \x20 hparams: {{learning_rate: {{low: 0.001, high: 0.03, log: true}}}}}}\n\
         searcher: {{plugin: random-search}}\ntraining: {{epochs: 2, batch_size: 32}}\n\
         trainers: {{count: 2, backend: cpu}}\nbudget: {{trials: 60}}\nstages: {{search: {{kind: search}}}}\n",
        iris.display()
    );
    let (_dir, workflow, run_dir) = start(&text);
    kill_repeatedly(&workflow, &run_dir, 20, 2, 60, &mut moments(0x2545_f491_4f6c_dd1d));
}

#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_resumes() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(5, 6, 1, ""));
    let run_dir_text = run_dir.to_str().unwrap();
    let child = msh()
        .args(["run", workflow.to_str().unwrap(), "--run-dir", run_dir_text])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_completed(run_dir_text, 1, Duration::from_secs(300));
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted; run the same command again to resume"), "{stderr}");
    let before = completed_by_id(run_dir_text);
    assert!(trials(run_dir_text).iter().all(|t| t["status"] != "running"), "nothing is left running");

    run_ok(&workflow, &run_dir);
    assert_resumed(run_dir_text, &before, 5);
}

#[test]
fn a_run_directory_refuses_a_different_workflow() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(1, 1, 1, ""));
    let args = ["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()];
    assert!(run(&args).status.success());
    std::fs::write(&workflow, mnist1d_workflow(2, 1, 1, "")).unwrap();
    let err = common::failure(&args);
    assert!(err.contains("was started from a different workflow"), "{err}");
}

#[test]
fn two_processes_share_one_run_within_its_budget() {
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(6, 4, 1, ""));
    let spawn = || {
        msh()
            .args(["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap(), "--events", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(), spawn());
    let outputs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
    let mut trained = Vec::new();
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        trained.push(common::completions(&out.stdout));
    }
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 6, "{all:#?}");
    assert!(all.iter().all(|t| t["status"] == "completed" && t["attempts"] == 1), "{all:#?}");
    assert_eq!(trained.iter().sum::<usize>(), 6, "each trial trained by one process: {trained:?}");
    assert!(trained.iter().all(|&n| n >= 1), "both processes trained: {trained:?}");
}

#[test]
fn hostile_blocks_fail_their_trials_and_the_search_goes_on() {
    let hostile = env!("MSH_HOSTILE_PLUGIN");
    let text = mnist1d_workflow(8, 1, 1, "")
        .replace(
            "  blocks: [fixed_conv, resnet, max_pool, dilated_conv]",
            &format!("  packs: [core-blocks, {hostile}]\n  blocks: [fixed_conv, loop, panic, alloc]"),
        )
        .replace("  min_depth: 1\n  max_depth: 3", "  min_depth: 1\n  max_depth: 1")
        .replace("plugin: beam-search", "plugin: random-search")
        .replace("budget: {trials: 8}", "budget: {trials: 8}\nlimits: {fuel: 100000000, memory_bytes: 67108864}");
    let (_dir, workflow, run_dir) = start(&text);
    run_ok(&workflow, &run_dir);
    // Blocks that cannot be built are never trained: their proposals are rejected (and
    // logged, naming the plugin), so the only trial is the one architecture that builds.
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["architecture"][0]["name"], "fixed_conv");
    assert_eq!(all[0]["status"], "completed");
    let status = common::run(&["status", run_dir.to_str().unwrap(), "--events", "100"]);
    let text = String::from_utf8_lossy(&status.stdout);
    for (block, part) in [
        ("loop", "exceeded its CPU budget of 100000000 fuel"),
        ("panic", "trapped"),
        ("alloc", "exceeded its memory limit of 64 MiB"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(&format!("proposal {block} rejected"))
                && l.contains("plugin `hostile`")
                && l.contains(part)),
            "no rejection of {block} ({part}) in:\n{text}"
        );
    }
    assert!(text.contains("proposals rejected"), "{text}");
}

#[test]
fn the_table_trainer_looks_metrics_up_and_fails_missing_architectures() {
    let (dir, workflow, run_dir) = start(
        "name: table\ndata: {source: 'csv:data.csv'}\nspace: {packs: [], blocks: [a, b, c], min_depth: 1, max_depth: 2}\n\
         searcher: {plugin: random-search}\ntrainers: {kind: table, table: table.csv}\nbudget: {trials: 40}\n\
         stages: {search: {kind: search}}\n",
    );
    // Every architecture of depth 1-2 over a, b, c but `c,c`.
    let mut table = String::from("arch,accuracy,params\n");
    for (i, x) in ["a", "b", "c"].iter().enumerate() {
        table.push_str(&format!("{x},0.{},{}\n", 5 + i, 10 * (i + 1)));
        for (j, y) in ["a", "b", "c"].iter().enumerate() {
            if (x, y) != (&"c", &"c") {
                table.push_str(&format!("\"{x},{y}\",0.{}{},{}\n", 6 + i, j, 100 * (i + j + 1)));
            }
        }
    }
    std::fs::write(dir.path().join("table.csv"), table).unwrap();
    std::fs::write(dir.path().join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
    run_ok(&workflow, &run_dir);
    // No architecture is tried twice: the 12 of the space, then the searcher has nothing new.
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 12);
    let keys: std::collections::BTreeSet<String> = all.iter().map(|t| t["architecture"].to_string()).collect();
    assert_eq!(keys.len(), 12);
    let mut failed = 0;
    for t in &all {
        let arch: Vec<&str> =
            t["architecture"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
        if arch == ["c", "c"] {
            failed += 1;
            assert_eq!(t["status"], "failed");
            assert!(t["error"].as_str().unwrap().contains("architecture `c,c` is not in table"), "{t:#}");
        } else {
            assert_eq!(t["status"], "completed", "{t:#}");
            let accuracy = t["valid"]["accuracy"].as_f64().unwrap();
            assert!((accuracy - (1.0 - t["objective"].as_f64().unwrap())).abs() < 1e-12);
        }
    }
    assert_eq!(failed, 1, "`c,c` is tried once");
    let top = all.iter().filter_map(|t| t["valid"]["accuracy"].as_f64()).fold(0.0, f64::max);
    let best = json(&["best", run_dir.to_str().unwrap(), "--json"]);
    assert_eq!(best["valid"]["accuracy"].as_f64(), Some(top), "{best:#}");
}

/// A table over blocks a, b, c of depth 1-2 (all nine of depth 2), accuracy rising with
/// the letters.
fn abc_table(dir: &Path) {
    let mut table = String::from("arch,accuracy\n");
    for (i, x) in ["a", "b", "c"].iter().enumerate() {
        table.push_str(&format!("{x},0.{}\n", 5 + i));
        for (j, y) in ["a", "b", "c"].iter().enumerate() {
            table.push_str(&format!("\"{x},{y}\",0.{}{}\n", 6 + i, j));
        }
    }
    std::fs::write(dir.join("table.csv"), table).unwrap();
    std::fs::write(dir.join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
}

fn table_workflow(searcher: &str, blocks: &str, trials: u32) -> String {
    format!(
        "name: table\ndata: {{source: 'csv:data.csv'}}\nspace: {{packs: [], blocks: [{blocks}], min_depth: 1, max_depth: 2}}\n\
         searcher: {{plugin: '{searcher}'}}\ntrainers: {{kind: table, table: table.csv}}\nbudget: {{trials: {trials}}}\n\
         stages: {{search: {{kind: search}}}}\n"
    )
}

/// A table search over `blocks` run to its end: its directory, run directory and trials.
fn table_run(searcher: &str, blocks: &str, budget: u32) -> (TempDir, PathBuf, Vec<Value>) {
    let (dir, workflow, run_dir) = start(&table_workflow(searcher, blocks, budget));
    abc_table(dir.path());
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir.to_str().unwrap());
    (dir, run_dir, all)
}

#[test]
fn a_searcher_of_the_frozen_0_1_0_contract_still_runs() {
    let legacy = env!("MSH_LEGACY_SEARCHER_PLUGIN");
    // It replaces the last block of its best trial, so it can reach the three of depth 1.
    let (_dir, _, all) = table_run(legacy, "a, b, c", 3);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|t| t["status"] == "completed"), "{all:#?}");
    assert!(all.iter().skip(1).all(|t| t["parent"].is_u64()), "it mutates its best trial: {all:#?}");
}

#[test]
fn a_searcher_that_traps_is_rebuilt_from_the_trials_it_was_told() {
    // It traps on the third call of every instance; each time msh makes a new one, replays
    // the finished trials into it, and asks again, so the search runs to its budget with
    // no trial repeated.
    let flaky = env!("MSH_FLAKY_SEARCHER_PLUGIN");
    let (_dir, run_dir, all) = table_run(flaky, "a, b, c", 10);
    assert_eq!(all.len(), 10);
    let keys: std::collections::BTreeSet<String> = all.iter().map(|t| t["architecture"].to_string()).collect();
    assert_eq!(keys.len(), 10, "no trial repeats after a rebuild");
    let status = common::run(&["status", run_dir.to_str().unwrap(), "--events", "100"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("plugin `flaky_searcher`") && text.contains("trapped") && text.contains("rebuilt from"),
        "{text}"
    );
}

#[test]
fn proposals_that_cannot_be_trained_are_rejected_value_by_value() {
    // The hostile searcher proposes, one per call: epochs 1e9, batch size -5, clip norm -1,
    // optimizer 99, a NaN learning rate, an unknown setting, and an unknown block
    // parameter; then valid trials. None of the bad ones is trained or aborts the run.
    let hostile = env!("MSH_HOSTILE_SEARCHER_PLUGIN");
    let space = "max_depth: 2, hparams: {epochs: {choices: [1, 2]}, batch_size: {choices: [16]}, \
                 gradient_clip: {low: 0.5, high: 1}, optimizer: {choices: [adam, sgd]}, \
                 learning_rate: {low: 0.001, high: 0.01}}}";
    let (dir, workflow, run_dir) = start(&table_workflow(hostile, "a, b, c", 3).replace("max_depth: 2}", space));
    abc_table(dir.path());
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(all.iter().all(|t| t["status"] == "completed"), "{all:#?}");
    let status = common::run(&["status", run_dir.to_str().unwrap(), "--events", "100"]);
    let events = String::from_utf8_lossy(&status.stdout);
    for reason in [
        "hyper-parameter `epochs` = 1000000000 is outside the workflow's space",
        "hyper-parameter `batch_size` = -5 is outside the workflow's space",
        "hyper-parameter `gradient_clip` = -1 is outside the workflow's space",
        "hyper-parameter `optimizer` = 99 is outside the workflow's space",
        "hyper-parameter `learning_rate` = NaN is outside the workflow's space",
        "hyper-parameter `no_such_setting` is not in the workflow's space.hparams",
        "parameter `no_such_param` is not a parameter of the block",
    ] {
        assert!(
            events
                .lines()
                .any(|l| l.contains("searcher `hostile_searcher`: proposal a rejected") && l.contains(reason)),
            "no rejection naming the searcher and {reason:?} in:\n{events}"
        );
    }
}

#[test]
fn a_searcher_that_only_repeats_itself_is_stopped_with_a_clear_error() {
    // On a one-block space the 0.1.0 searcher can only propose `a` again.
    let legacy = env!("MSH_LEGACY_SEARCHER_PLUGIN");
    let text = table_workflow(legacy, "a", 5).replace("max_depth: 2", "max_depth: 1");
    let (dir, workflow, run_dir) = start(&text);
    abc_table(dir.path());
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("searcher `legacy_searcher` proposed 200 trials in a row that could not be trained; the last: it repeats trial"),
        "{stderr}"
    );
    // What was recorded stays: the one trial it ran.
    assert_eq!(trials(run_dir.to_str().unwrap()).len(), 1);
}

#[test]
fn grid_search_measures_a_space_into_a_table_that_the_table_trainer_reads_back() {
    let (dir, workflow, run_dir) = start(&table_workflow("grid-search", "a, b, c", 100));
    abc_table(dir.path());
    let stderr = run_ok(&workflow, &run_dir);
    assert!(stderr.contains("nothing more to propose"), "{stderr}");
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 12, "every architecture of depth 1-2 once");
    let out = run(&["trials", run_dir.to_str().unwrap(), "--table"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().next(), Some("arch,loss,accuracy,test_accuracy,params,train_seconds"));
    assert_eq!(table.lines().count(), 13, "{table}");
    assert!(table.lines().any(|l| l.starts_with("\"c,c\",0.18") && l.contains(",0.82,")), "{table}");
    // The exported table drives a search of its own.
    std::fs::write(dir.path().join("table.csv"), table.as_bytes()).unwrap();
    let (_again, workflow, run_dir) = start(&table_workflow("local-search", "a, b, c", 6));
    std::fs::copy(dir.path().join("table.csv"), workflow.parent().unwrap().join("table.csv")).unwrap();
    std::fs::copy(dir.path().join("data.csv"), workflow.parent().unwrap().join("data.csv")).unwrap();
    run_ok(&workflow, &run_dir);
    assert!(trials(run_dir.to_str().unwrap()).iter().all(|t| t["status"] == "completed"));
}

#[test]
fn bench_searchers_compares_searchers_on_a_table() {
    let dir = TempDir::new();
    abc_table(dir.path());
    let table = dir.path().join("table.csv");
    let simple = env!("MSH_SIMPLE_LOCAL_SEARCH_PLUGIN");
    let out = run(&[
        "bench",
        "searchers",
        "--table",
        table.to_str().unwrap(),
        "--seeds",
        "3",
        "--budget",
        "12",
        "--top",
        "0.1",
        "--searcher",
        "local-search:explore=0.5,beam_size=4",
        "--searcher",
        "random-search",
        "--searcher",
        simple,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("12 architectures over 3 blocks, depth 1-2"), "{text}");
    for name in ["local-search:explore=0.5,beam_size=4", "random-search", simple] {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        // 12 trials cover the whole space, so every run reaches the target; none repeats.
        assert!(line.contains(" 0/3 ") && line.contains(" 0.0%"), "{line}");
    }
}

/// `msh bench search` on real (tiny) training: each searcher x early-stopping pair runs
/// once per seed; every run and every pair gets a line with its figures.
#[test]
fn bench_search_runs_each_searcher_and_early_stopping_setting_per_seed() {
    let early = "early_stopping: {mode: asha, grace_epochs: 1, reduction_factor: 2, min_trials: 2}\n";
    let (_dir, workflow, _run_dir) = start(&(mnist1d_workflow(3, 2, 1, "") + early));
    let out = run(&[
        "bench",
        "search",
        "--workflow",
        workflow.to_str().unwrap(),
        "--searcher",
        "workflow",
        "--searcher",
        "random-search",
        "--early-stopping",
        "workflow,off",
        "--seeds",
        "1,2",
        "--minutes",
        "5",
        "--targets",
        "0.5,0.999",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for pair in [
        "workflow / early stopping workflow",
        "workflow / early stopping off",
        "random-search / early stopping workflow",
        "random-search / early stopping off",
    ] {
        for seed in [1, 2] {
            let line = format!("  {pair}, seed {seed} (run-");
            let row = text.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("no {line}:\n{text}"));
            // Three trials of two epochs: 6 epochs unless some stopped early; nothing
            // reaches 99.9% test accuracy.
            assert!(row.contains("; 3 trials (") && row.contains(", never; best "), "{row}");
            let epochs: u64 = row.split(" epochs").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
            assert!((3..=6).contains(&epochs), "{row}");
        }
        let summary =
            text.lines().find(|l| l.starts_with(pair)).unwrap_or_else(|| panic!("no summary for {pair}:\n{text}"));
        assert!(summary.contains("> 5.0"), "the 99.9% target is missed in both seeds: {summary}");
    }
}

#[test]
fn diverging_trials_are_recorded_as_such_and_the_stage_still_finishes() {
    let iris = common::root().join("data/iris/iris.csv");
    let (_dir, workflow, run_dir) = start(&format!(
        "name: diverge\ndata: {{source: 'csv:{}'}}\nspace: {{blocks: [dense, dense_bn], max_depth: 2}}\n\
             searcher: {{plugin: random-search}}\ntraining: {{epochs: 3, learning_rate: 1.0e9, optimizer: sgd}}\n\
             trainers: {{backend: cpu}}\nbudget: {{trials: 3}}\nstages: {{search: {{kind: search}}, export: {{kind: export, needs: [search]}}}}\n",
        iris.display()
    ));
    let out = run(&["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every trial diverged: the search is done, the export has nothing to export.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("search stage `search` has no completed trial to use"), "{stderr}");
    let all = trials(run_dir.to_str().unwrap());
    assert_eq!(all.len(), 3);
    for t in &all {
        assert_eq!(t["status"], "diverged", "{t:#}");
        assert!(t["error"].as_str().unwrap().contains("loss became"), "{t:#}");
    }
    let status = json(&["status", run_dir.to_str().unwrap(), "--json"]);
    assert_eq!(status["trials"]["diverged"], 3);
}

#[test]
fn snapshot_weight_sharing_records_what_children_inherit() {
    let (_dir, workflow, run_dir) = start(&(mnist1d_workflow(6, 2, 1, "") + "weight_sharing: {mode: snapshot}\n"));
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir.to_str().unwrap());
    let mut inheriting = 0;
    for t in &all {
        let inherited = t["inherited"].as_u64().unwrap();
        match t["parent"].as_u64() {
            None => assert_eq!(inherited, 0, "a root starts fresh: {t:#}"),
            Some(_) => inheriting += usize::from(inherited > 0),
        }
        assert!(inherited <= t["parameters"].as_u64().unwrap(), "{t:#}");
    }
    assert!(inheriting >= 2, "children start from their parents: {all:#?}");
}

#[test]
fn ensembles_beat_their_best_member_and_export_and_predict_like_trials() {
    let methods = ["average", "weighted", "greedy", "non_adaptive", "adaptive", "learned"];
    let stages: String = methods
        .iter()
        .map(|m| format!("  {m}: {{kind: ensemble, needs: [search], method: {m}, top_k: 4, width: 3, every: 2}}\n"))
        .collect();
    let (dir, workflow, run_dir) = start(&mnist1d_workflow(8, 3, 1, &stages));
    let run_dir_text = run_dir.to_str().unwrap();
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir_text);
    let by_id = |id: u64| all.iter().find(|t| t["id"].as_u64() == Some(id)).unwrap();
    let data = format!("csv:{}", common::root().join("data/mnist1d/test.csv").display());
    for method in methods {
        let ensemble = all.iter().find(|t| t["stage"] == method).unwrap_or_else(|| panic!("no {method} ensemble"));
        let members = ensemble["members"].as_array().unwrap();
        let best_member = members
            .iter()
            .map(|m| by_id(m[0].as_u64().unwrap())["objective"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        let loss = ensemble["objective"].as_f64().unwrap();
        eprintln!(
            "{method}: {} members, valid loss {loss:.4} (best member {best_member:.4}), test accuracy {}",
            members.len(),
            ensemble["test"]["accuracy"]
        );
        // Learned weights and greedy selection can always fall back to the best member alone.
        if matches!(method, "weighted" | "greedy") {
            assert!(loss <= best_member + 1e-4, "{method}: {loss} vs best member {best_member}");
        }
        // Exported like a trial; predicts the test split with the recorded accuracy.
        let export = dir.path().join(format!("export-{method}"));
        json(&["best", run_dir_text, "--stage", method, "--export", export.to_str().unwrap(), "--json"]);
        assert!(export.join("ensemble.json").is_file() && export.join("members").is_dir());
        let file: Value = serde_json::from_slice(&std::fs::read(export.join("ensemble.json")).unwrap()).unwrap();
        assert_eq!(file["combine"] == "learned", method == "learned", "{file:#}");
        let predicted = json(&["predict", export.to_str().unwrap(), "--data", &data, "--json", "--backend", "cpu"]);
        let recorded = ensemble["test"]["accuracy"].as_f64().unwrap();
        assert!(
            (predicted["metrics"]["accuracy"].as_f64().unwrap() - recorded).abs() < 1e-9,
            "{method}: {predicted:#}"
        );
    }
}

#[test]
fn distillation_teaches_search_trials_and_the_distill_stage_reports_the_student_alone() {
    let stages = "  ensemble: {kind: ensemble, needs: [search], top_k: 3}\n  \
                  distill: {kind: distill, needs: [ensemble], epochs: 3, max_parameters: 20000}\n";
    let text = mnist1d_workflow(5, 2, 1, stages)
        + "distillation: {mode: adaptive, teacher: ensemble, ramp_trials: 2, top_k: 2}\n";
    let (_dir, workflow, run_dir) = start(&text);
    let run_dir_text = run_dir.to_str().unwrap();
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir_text);
    let search: Vec<&Value> = all.iter().filter(|t| t["stage"] == "search").collect();
    assert!(search[0]["teacher"].is_null(), "the first trial has no one to learn from");
    for t in &search[1..] {
        let teacher =
            t["teacher"].as_u64().unwrap_or_else(|| panic!("trial {} learned from a teacher: {t:#}", t["id"]));
        assert!(teacher < t["id"].as_u64().unwrap());
    }
    let ensemble = all.iter().find(|t| t["stage"] == "ensemble").unwrap();
    let student = all.iter().find(|t| t["stage"] == "distill").expect("a distilled student");
    assert_eq!(student["teacher"], ensemble["id"]);
    assert!(student["parameters"].as_u64().unwrap() <= 20000, "{student:#}");
    assert!(search.iter().any(|t| t["id"] == student["parent"]), "the student's architecture is a search trial's");
    // The stage reports the student with and without its teacher.
    let status = json(&["status", run_dir_text, "--json"]);
    let message = status["stages"].as_array().unwrap().iter().find(|s| s["name"] == "distill").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("{message}");
    assert!(message.contains("distilled") && message.contains("alone"), "{message}");
}

#[test]
fn a_parameter_budget_fails_big_architectures_and_the_pareto_front_is_non_dominated() {
    let text = mnist1d_workflow(8, 2, 1, "  export: {kind: export, needs: [search]}\n")
        .replace("plugin: beam-search", "plugin: random-search")
        + "objectives: {max_parameters: 5000, pareto: true}\n";
    let (_dir, workflow, run_dir) = start(&text);
    let run_dir_text = run_dir.to_str().unwrap();
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir_text);
    for t in &all {
        let parameters = t["parameters"].as_u64().unwrap();
        match t["status"].as_str().unwrap() {
            "completed" => {
                assert!(parameters <= 5000, "{t:#}");
                assert!(t["latency_ms"].as_f64().unwrap() > 0.0, "{t:#}");
            }
            "failed" => assert!(t["error"].as_str().unwrap().contains("over the budget of 5000"), "{t:#}"),
            other => panic!("unexpected status {other}"),
        }
    }
    let count = |status: &str| all.iter().filter(|t| t["status"] == status).count();
    assert!(count("completed") >= 2 && count("failed") >= 1, "{all:#?}");
    let front = json(&["best", run_dir_text, "--pareto", "--json"]);
    let front = front.as_array().unwrap();
    assert!(!front.is_empty());
    let completed: Vec<&Value> = all.iter().filter(|t| t["status"] == "completed").collect();
    let costs = |t: &Value| {
        [t["objective"].as_f64().unwrap(), t["parameters"].as_f64().unwrap(), t["latency_ms"].as_f64().unwrap()]
    };
    for f in front {
        for other in &completed {
            let (a, b) = (costs(other), costs(f));
            let dominates = a.iter().zip(&b).all(|(x, y)| x <= y) && a.iter().zip(&b).any(|(x, y)| x < y);
            assert!(!dominates, "trial {} dominates front member {}", other["id"], f["id"]);
        }
        assert!(run_dir.join("export/pareto").join(f["id"].to_string()).join("model.json").is_file());
    }
    // The lowest-loss trial is always on the front.
    let best = json(&["best", run_dir_text, "--json"]);
    assert_eq!(front[0]["id"], best["id"]);
}

#[test]
fn intermixed_ensembles_are_trials_of_the_search() {
    intermixed_ensembles("weighted");
}

#[test]
fn intermixed_ensembles_may_learn_their_combiner() {
    intermixed_ensembles("learned");
}

fn intermixed_ensembles(method: &str) {
    let text = mnist1d_workflow(9, 2, 1, "  retrain: {kind: retrain, needs: [search], epochs: 1}\n")
        + &format!("ensembling: {{strategy: intermixed, every: 3, method: {method}, top_k: 2}}\n")
        + "weight_sharing: {mode: snapshot}\n";
    let (_dir, workflow, run_dir) = start(&text);
    let run_dir_text = run_dir.to_str().unwrap();
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir_text);
    let search: Vec<&Value> = all.iter().filter(|t| t["stage"] == "search").collect();
    assert_eq!(search.len(), 9);
    let ensembles: Vec<&&Value> = search.iter().filter(|t| !t["members"].as_array().unwrap().is_empty()).collect();
    assert_eq!(ensembles.len(), 3, "trials 3, 6 and 9 are ensembles: {search:#?}");
    for e in ensembles {
        assert_eq!(e["status"], "completed");
        let members = e["members"].as_array().unwrap();
        for m in members {
            let member = search.iter().find(|t| t["id"] == m[0]).unwrap();
            assert!(member["members"].as_array().unwrap().is_empty(), "members are single models");
            assert!(member["id"].as_u64() < e["id"].as_u64());
        }
        let file = run_dir.join(e["checkpoint"].as_str().unwrap()).join("ensemble.json");
        let file: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        if method == "learned" {
            assert_eq!(file["combine"], "learned", "{file:#}");
            assert_eq!(file["combiner"]["members"].as_u64(), Some(members.len() as u64), "{file:#}");
            continue;
        }
        // EM weights can always fall back to the best member alone.
        let best_member = members
            .iter()
            .map(|m| search.iter().find(|t| t["id"] == m[0]).unwrap()["objective"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert!(e["objective"].as_f64().unwrap() <= best_member + 1e-4, "{e:#}");
    }
    assert!(all.iter().any(|t| t["stage"] == "retrain" && t["status"] == "completed"));
}

#[test]
fn residual_members_train_on_the_ensembles_loss_and_predict_as_a_sum() {
    let text = mnist1d_workflow(6, 2, 1, "") + "ensembling: {strategy: residual, every: 2}\n";
    let (dir, workflow, run_dir) = start(&text);
    let run_dir_text = run_dir.to_str().unwrap();
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir_text);
    let members =
        |t: &Value| -> Vec<u64> { t["members"].as_array().unwrap().iter().map(|m| m[0].as_u64().unwrap()).collect() };
    for t in &all {
        let id = t["id"].as_u64().unwrap();
        let m = members(t);
        assert_eq!(m.last(), Some(&id), "a residual trial ends its own ensemble: {t:#}");
        // Its base is the best ensemble finished before its window of two.
        let window_start = id / 2 * 2;
        let base: Vec<u64> = m[..m.len() - 1].to_vec();
        let earlier: Vec<&Value> = all.iter().filter(|o| o["id"].as_u64().unwrap() < window_start).collect();
        match earlier
            .iter()
            .min_by(|a, b| a["objective"].as_f64().unwrap().total_cmp(&b["objective"].as_f64().unwrap()))
        {
            Some(best) => assert_eq!(base, members(best), "trial {id}"),
            None => assert!(base.is_empty(), "trial {id} of the first window trains alone"),
        }
    }
    assert!(all.iter().any(|t| members(t).len() >= 2), "the ensemble grew");
    // The best is an ensemble; exported, it predicts the test split as recorded.
    let export = dir.path().join("export");
    let best = json(&["best", run_dir_text, "--export", export.to_str().unwrap(), "--json"]);
    let data = format!("csv:{}", common::root().join("data/mnist1d/test.csv").display());
    let predicted = json(&["predict", export.to_str().unwrap(), "--data", &data, "--json", "--backend", "cpu"]);
    assert!(
        (predicted["metrics"]["accuracy"].as_f64().unwrap() - best["test"]["accuracy"].as_f64().unwrap()).abs() < 1e-9
    );
}

#[test]
fn a_wall_time_budget_ends_the_search() {
    let text =
        mnist1d_workflow(1000, 1, 1, "").replace("budget: {trials: 1000}", "budget: {trials: 1000, wall_time: 4s}");
    let (_dir, workflow, run_dir) = start(&text);
    let started = std::time::Instant::now();
    run_ok(&workflow, &run_dir);
    let seconds = started.elapsed().as_secs_f64();
    let first = trials(run_dir.to_str().unwrap()).len();
    assert!(first >= 1 && first < 1000, "{first} trials in {seconds:.1}s");
    // The stage is done: running again trains nothing more.
    run_ok(&workflow, &run_dir);
    assert_eq!(trials(run_dir.to_str().unwrap()).len(), first);
    let status = json(&["status", run_dir.to_str().unwrap(), "--json"]);
    assert_eq!(status["stages"][0]["state"], "done", "{status:#}");
}

#[test]
fn asha_stops_trials_early_and_stopped_trials_are_results() {
    let epochs = 4;
    let early = "early_stopping: {mode: asha, grace_epochs: 1, reduction_factor: 2, min_trials: 2}\n";
    // A higher learning rate than the helper's spreads the first epochs' losses.
    let text = mnist1d_workflow(8, epochs, 1, "").replace("learning_rate: 0.003", "learning_rate: 0.01");
    let (_dir, workflow, run_dir) = start(&(text + early));
    let run_dir_text = run_dir.to_str().unwrap();
    let stderr = run_ok(&workflow, &run_dir);

    let all = trials(run_dir_text);
    assert_eq!(all.len(), 8, "{all:#?}");
    let stopped: Vec<&Value> = all.iter().filter(|t| t["status"] == "stopped").collect();
    assert!(!stopped.is_empty(), "halving at epochs 1 and 2 stops someone: {all:#?}");
    for t in &all {
        let losses: Vec<f64> = t["losses"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
        let trained = t["epochs"].as_u64().unwrap();
        assert_eq!(losses.len() as u64, trained, "one validation loss per epoch: {t:#}");
        // A stopped trial is a result: metrics, a checkpoint, its best loss as objective.
        assert!(t["valid"]["accuracy"].is_f64() && t["test"]["accuracy"].is_f64(), "{t:#}");
        assert!(t["checkpoint"].is_string() && t["error"].is_null(), "{t:#}");
        assert_eq!(t["objective"].as_f64().unwrap(), losses.iter().copied().fold(f64::INFINITY, f64::min));
        match t["status"].as_str().unwrap() {
            "completed" => assert_eq!(trained, epochs as u64, "{t:#}"),
            "stopped" => {
                assert!([1, 2].contains(&trained), "stopped at a rung before the last epoch: {t:#}");
                assert!(stderr.contains(&format!("trial {} stopped at epoch {trained}", t["id"])), "{stderr}");
            }
            other => panic!("trial {} is {other}", t["id"]),
        }
    }
    // The first trial is alone at every rung, so it completes.
    assert_eq!(all[0]["status"], "completed");

    let status = json(&["status", run_dir_text, "--json"]);
    assert_eq!(status["trials"]["stopped"], stopped.len(), "{status:#}");
    assert_eq!(status["trials"]["completed"], 8 - stopped.len(), "{status:#}");
    assert_eq!(status["best"]["status"], "completed", "stopped trials are not picked as best");
    let text = String::from_utf8_lossy(&run(&["status", run_dir_text, "--events", "100"]).stdout).into_owned();
    assert!(text.contains(&format!("stopped {}", stopped.len())), "{text}");
    assert!(text.contains("early stopping (asha) at epoch"), "{text}");
    let table = String::from_utf8_lossy(&run(&["trials", run_dir_text]).stdout).into_owned();
    assert_eq!(table.matches(" stopped ").count(), stopped.len(), "{table}");
}

/// A run records its data's fingerprint; a resume (or a worker) whose data differs, even
/// under an identical workflow, is refused with both, unless `--allow-changed-data`.
#[test]
fn a_resume_with_other_data_is_refused() {
    let dir = TempDir::new();
    let csv = dir.path().join("iris.csv");
    let iris = std::fs::read_to_string(common::root().join("data/iris/iris.csv")).unwrap();
    std::fs::write(&csv, &iris).unwrap();
    let workflow = dir.path().join("w.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: fingerprint\ndata: {{source: csv:{}}}\nspace: {{blocks: [dense], max_depth: 1}}\n\
             searcher: {{plugin: random-search}}\ntraining: {{epochs: 1}}\ntrainers: {{backend: cpu}}\n\
             budget: {{trials: 1}}\nstages: {{search: {{kind: search}}}}\n",
            csv.display()
        ),
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    let args = ["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()];
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The same file with its labels rotated: a different data set under the same workflow.
    let rotated: String = iris
        .lines()
        .enumerate()
        .map(|(i, line)| match (i, line.split_once(',')) {
            (0, _) | (_, None) => format!("{line}\n"),
            (_, Some((label, rest))) => format!("{},{rest}\n", (label.parse::<u32>().unwrap() + 1) % 3),
        })
        .collect();
    std::fs::write(&csv, rotated).unwrap();
    let err = failure(&args);
    assert!(err.contains("the data differs from what run directory"), "{err}");
    assert!(err.matches("sha256 ").count() == 2 && err.contains("--allow-changed-data"), "{err}");
    let out = run(&[&args[..], &["--allow-changed-data"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = run(&["status", run_dir.to_str().unwrap(), "--events", "10"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("data changed (sha256 "));
}

/// Two `msh run` processes on one run directory share the search and run every later
/// stage once: the stage is claimed under a lease like a trial, and the other waits.
#[test]
fn two_runs_on_one_directory_run_each_stage_once() {
    let stages = "  ensemble: {kind: ensemble, needs: [search], top_k: 2}\n  \
                  retrain: {kind: retrain, needs: [search], epochs: 2}\n  \
                  export: {kind: export, needs: [ensemble]}\n";
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(4, 1, 1, stages));
    let args = ["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()];
    let children: Vec<_> =
        (0..2).map(|_| msh().args(args).stderr(std::process::Stdio::piped()).spawn().unwrap()).collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let trials = json(&["trials", run_dir.to_str().unwrap(), "--json"]);
    let mut by_stage = BTreeMap::new();
    for t in trials.as_array().unwrap() {
        *by_stage.entry(t["stage"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(by_stage, BTreeMap::from([("ensemble".into(), 1), ("retrain".into(), 1), ("search".into(), 4)]));
    let status = json(&["status", run_dir.to_str().unwrap(), "--json"]);
    let states: Vec<&str> = status["stages"].as_array().unwrap().iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["done"; 4]);
    let log =
        String::from_utf8_lossy(&run(&["status", run_dir.to_str().unwrap(), "--events", "100"]).stdout).into_owned();
    for stage in ["ensemble", "retrain", "export"] {
        assert_eq!(log.matches(&format!("[{stage}] done:")).count(), 1, "{log}");
    }
}

/// A trainer frozen past its lease loses its trial to another process; when it wakes and
/// finishes, its result is dropped, and it says so instead of "completed".
#[test]
fn a_result_after_a_lost_lease_is_reported_as_dropped() {
    use std::io::{BufRead, BufReader};
    let (_dir, workflow, run_dir) = start(&mnist1d_workflow(1, 20, 1, ""));
    let args = ["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap(), "--lease-seconds", "1"];
    let mut frozen = msh().args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(frozen.stderr.take().unwrap()).lines();
    let started = lines.by_ref().map(|l| l.unwrap()).find(|l| l.contains("started on trainer")).unwrap();
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill").args([name, &frozen.id().to_string()]).status().unwrap().success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(2500));
    let other = run(&args);
    signal("-CONT");
    assert!(other.status.success(), "{}", String::from_utf8_lossy(&other.stderr));
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(frozen.wait().unwrap().success(), "{rest:?}");
    let id = started.split("trial ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(rest.iter().any(|l| l.contains(&format!("trial {id} dropped: lease lost"))), "{started}\n{rest:#?}");
    assert!(!rest.iter().any(|l| l.contains(&format!("trial {id} completed"))), "{rest:#?}");
    let trials = json(&["trials", run_dir.to_str().unwrap(), "--json"]);
    assert_eq!(trials.as_array().unwrap().len(), 1);
}

#[test]
fn an_epoch_budget_ends_the_search_once_its_trials_trained_that_many_epochs() {
    let text = mnist1d_workflow(1000, 2, 1, "").replace("budget: {trials: 1000}", "budget: {trials: 1000, epochs: 7}");
    let (_dir, workflow, run_dir) = start(&text);
    run_ok(&workflow, &run_dir);
    let all = trials(run_dir.to_str().unwrap());
    let epochs: u64 = all.iter().map(|t| t["epochs"].as_u64().unwrap()).sum();
    // One trainer, two epochs a trial: the fourth trial passes 7 and none starts after it.
    assert_eq!((all.len(), epochs), (4, 8), "{all:#?}");
    std::fs::write(run_dir.with_file_name("zero.yaml"), text.replace("epochs: 7", "epochs: 0")).unwrap();
    let err = failure(&["validate", run_dir.with_file_name("zero.yaml").to_str().unwrap()]);
    assert!(err.contains("zero.yaml:") && err.contains("`epochs` must be at least 1"), "{err}");
}

/// A second run warm-started from a first: its searcher is told the first run's trials
/// (so it proposes none of them again), a trial whose parent is an earlier trial starts
/// from that trial's checkpoint, and the first run is left as it was.
#[test]
fn a_warm_started_run_builds_on_an_earlier_runs_trials() {
    let first_text = mnist1d_workflow(6, 1, 1, "weight_sharing: {mode: snapshot}\n");
    let (dir, workflow, first) = start(&first_text);
    run_ok(&workflow, &first);
    let earlier = trials(first.to_str().unwrap());
    let second_text = first_text.replace("name: test", "name: second") + "warm_start: {from: run}\n";
    let second_workflow = dir.path().join("second.yaml");
    std::fs::write(&second_workflow, &second_text).unwrap();
    let second = dir.path().join("second");
    let stderr = run_ok(&second_workflow, &second);
    assert!(stderr.contains("warm start from") && stderr.contains("6 earlier trials told to the searcher"), "{stderr}");
    let later = trials(second.to_str().unwrap());
    assert_eq!(later.len(), 6, "the budget counts this run's trials only");
    let key = |t: &Value| format!("{} {}", t["architecture"], t["hparams"]);
    let before: Vec<String> = earlier.iter().map(key).collect();
    assert!(later.iter().all(|t| !before.contains(&key(t))), "an earlier trial proposed again");
    // Beam search grows the earlier best: the first trial's parent is an earlier trial,
    // whose weights it inherits.
    let warm_parent = later.iter().find(|t| t["parent"].as_u64().is_some_and(|p| p >= 1 << 48));
    let child = warm_parent.unwrap_or_else(|| panic!("no trial grew an earlier one: {later:#?}"));
    assert!(child["inherited"].as_u64().unwrap() > 0, "{child:#}");
    assert_eq!(trials(first.to_str().unwrap()), earlier);

    std::fs::write(&second_workflow, second_text.replace("from: run", "from: nowhere")).unwrap();
    let err = failure(&["validate", second_workflow.to_str().unwrap()]);
    assert!(err.contains("second.yaml:") && err.contains("nowhere is not a run directory"), "{err}");
}
