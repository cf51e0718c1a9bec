//! Searcher snapshots (msh:plugin@0.3.0 `save`/`restore`): a run killed mid-search resumes
//! from the searcher's latest snapshot and tells it only the trials that finished after
//! it; a snapshot that does not restore, or comes from another plugin build, falls back to
//! replaying every trial; a searcher of the 0.2.0 contract runs and resumes without one.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{TempDir, msh, start};
use msh_store::{Store, TrialRecord};

fn blocks() -> Vec<String> {
    ('a'..='j').map(String::from).collect()
}

/// Every architecture of `blocks()` of depth 1-3 (1,110) in a table, and a data file.
fn table(dir: &Path) {
    let blocks = blocks();
    let mut archs: Vec<Vec<String>> = blocks.iter().map(|b| vec![b.clone()]).collect();
    for depth in 2..=3 {
        let longer: Vec<Vec<String>> = archs
            .iter()
            .filter(|a| a.len() == depth - 1)
            .flat_map(|a| blocks.iter().map(move |b| [a.clone(), vec![b.clone()]].concat()))
            .collect();
        archs.extend(longer);
    }
    let mut text = String::from("arch,accuracy\n");
    for (i, arch) in archs.iter().enumerate() {
        text.push_str(&format!("\"{}\",0.{:04}\n", arch.join(","), (i * 7919) % 10_000));
    }
    std::fs::write(dir.join("table.csv"), text).unwrap();
    std::fs::write(dir.join("data.csv"), "label,x\n0,1\n1,2\n").unwrap();
}

/// A table search of `budget` trials with a snapshot every `every`.
fn workflow(searcher: &str, budget: u32, every: u32) -> (TempDir, std::path::PathBuf, std::path::PathBuf) {
    let text = format!(
        "name: snapshots\nseed: 11\ndata: {{source: 'csv:data.csv'}}\n\
         space: {{packs: [], blocks: [{}], min_depth: 1, max_depth: 3}}\n\
         searcher: {{plugin: '{searcher}', snapshot_every: {every}}}\ntrainers: {{kind: table, table: table.csv}}\n\
         budget: {{trials: {budget}}}\nstages: {{search: {{kind: search}}}}\n",
        blocks().join(", ")
    );
    let (dir, workflow, run_dir) = start(&text);
    table(dir.path());
    (dir, workflow, run_dir)
}

/// `msh run` on the run directory's LMDB store, or on PostgreSQL at `store`.
fn msh_run(workflow: &Path, run_dir: &Path, store: Option<&str>) -> std::process::Command {
    let mut command = msh();
    command.args(["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()]);
    if let Some(url) = store {
        command.env("MSH_STORE", url);
    }
    command
}

/// Starts `msh run` and SIGKILLs it once `completions` trials have completed.
fn run_and_kill(workflow: &Path, run_dir: &Path, store: Option<&str>, completions: usize) {
    let mut child = msh_run(workflow, run_dir, store)
        .args(["--events", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = 0;
    for line in lines.map_while(Result::ok) {
        seen += usize::from(common::completes_a_trial(&common::engine_event(&line)));
        if seen >= completions {
            break;
        }
    }
    assert!(seen >= completions, "the run ended before {completions} trials completed");
    let _ = child.kill(); // SIGKILL
    child.wait().unwrap();
}

/// `msh run` to the end; its stderr.
fn run_to_end(workflow: &Path, run_dir: &Path, store: Option<&str>) -> String {
    let out = msh_run(workflow, run_dir, store).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "msh run failed:\n{stderr}");
    stderr
}

fn finished(store: &Store) -> Vec<TrialRecord> {
    store.trials().unwrap().into_iter().filter(|t| t.status.is_finished()).collect()
}

fn events(run_dir: &Path, store: Option<&str>) -> Vec<String> {
    Store::open_at(run_dir, store).unwrap().events().unwrap().into_iter().map(|e| e.message).collect()
}

/// The run completed its budget, every trial once.
fn assert_complete(run_dir: &Path, store: Option<&str>, budget: usize) {
    let store = Store::open_at(run_dir, store).unwrap();
    let done = finished(&store);
    assert_eq!(done.len(), budget);
    let keys: BTreeSet<String> = done.iter().map(TrialRecord::arch_key).collect();
    assert_eq!(keys.len(), budget, "no trial repeats");
}

/// The numbers in `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect()
}

/// A search killed mid-run resumes from the searcher's latest snapshot and tells it only
/// the trials that finished after it.
fn resume_from_a_snapshot(store: Option<&str>) {
    let (_dir, workflow, run_dir) = workflow("local-search", 400, 25);
    run_and_kill(&workflow, &run_dir, store, 120);
    let (snapshot, before) = {
        let store = Store::open_at(&run_dir, store).unwrap();
        (store.snapshot("search").unwrap().expect("a snapshot every 25 trials"), finished(&store).len() as u64)
    };
    assert!(snapshot.trials >= 100 && snapshot.trials <= before, "{} of {before}", snapshot.trials);
    assert!(!snapshot.state.is_empty());
    assert_eq!(snapshot.keys.len() as u64, snapshot.trials, "every covered trial's key");
    let kept = events(&run_dir, store);
    assert!(kept.iter().any(|e| e.starts_with("searcher `local-search`: snapshot of 25 trials kept (")), "{kept:#?}");
    assert!(before - snapshot.trials <= 25, "a snapshot every 25 trials: {} of {before}", snapshot.trials);

    run_to_end(&workflow, &run_dir, store);
    assert_complete(&run_dir, store, 400);
    let all = events(&run_dir, store);
    let restored: Vec<&String> = all.iter().filter(|e| e.contains("restored its snapshot")).collect();
    assert_eq!(restored.len(), 1, "{all:#?}");
    // It was told only the trials that finished after the snapshot, not all of them (and
    // perhaps the one the kill interrupted, retrained first).
    assert!(restored[0].starts_with("searcher `local-search`: restored its snapshot of "), "{}", restored[0]);
    let counts = numbers(restored[0]);
    assert_eq!(counts.len(), 2, "{}", restored[0]);
    assert_eq!(counts[0], snapshot.trials, "{}", restored[0]);
    assert!((before - snapshot.trials..=before - snapshot.trials + 1).contains(&counts[1]), "{}", restored[0]);
    assert!(!all.iter().any(|e| e.contains("could not be restored")), "{all:#?}");
}

#[test]
fn a_killed_search_restores_its_snapshot_and_replays_only_the_trials_after_it() {
    resume_from_a_snapshot(None);
}

/// The same on PostgreSQL, where workers on many machines share the snapshot.
#[test]
fn a_killed_search_on_postgresql_restores_its_snapshot() {
    resume_from_a_snapshot(Some(&common::postgres_url()));
}

#[test]
fn a_corrupt_snapshot_falls_back_to_replaying_every_trial() {
    let (_dir, workflow, run_dir) = workflow("local-search", 200, 20);
    run_and_kill(&workflow, &run_dir, None, 60);
    let covered = {
        let store = Store::open(&run_dir).unwrap();
        let mut snapshot = store.snapshot("search").unwrap().expect("a snapshot every 20 trials");
        // Not MessagePack: the searcher refuses it.
        snapshot.state = vec![0xc1; 64];
        assert!(store.write(|t| t.put_snapshot("search", &snapshot)).unwrap());
        snapshot.trials
    };

    let stderr = run_to_end(&workflow, &run_dir, None);
    assert_complete(&run_dir, None, 200);
    let all = events(&run_dir, None);
    let fallback: Vec<&String> = all.iter().filter(|e| e.contains("could not be restored")).collect();
    assert_eq!(fallback.len(), 1, "{all:#?}");
    assert!(fallback[0].starts_with("searcher `local-search`: its snapshot of "), "{}", fallback[0]);
    assert!(fallback[0].contains("refused: the snapshot is not this searcher's state"), "{}", fallback[0]);
    assert!(fallback[0].ends_with("); every trial is replayed instead"), "{}", fallback[0]);
    assert_eq!(numbers(fallback[0])[0], covered, "{}", fallback[0]);
    assert!(!all.iter().any(|e| e.contains("restored its snapshot")), "{all:#?}");
    // The warning names the plugin.
    assert!(stderr.contains("searcher `local-search`: its snapshot of"), "{stderr}");
}

#[test]
fn a_snapshot_of_another_plugin_build_is_ignored() {
    let (_dir, workflow, run_dir) = workflow("random-search", 150, 20);
    run_and_kill(&workflow, &run_dir, None, 50);
    {
        let store = Store::open(&run_dir).unwrap();
        let mut snapshot = store.snapshot("search").unwrap().expect("a snapshot every 20 trials");
        snapshot.sha256 = "0".repeat(64);
        assert!(store.write(|t| t.put_snapshot("search", &snapshot)).unwrap());
    }
    let stderr = run_to_end(&workflow, &run_dir, None);
    assert_complete(&run_dir, None, 150);
    assert!(stderr.contains("not `random-search`") && stderr.contains("ignored, every trial is replayed"), "{stderr}");
    let all = events(&run_dir, None);
    assert!(!all.iter().any(|e| e.contains("restored its snapshot") || e.contains("could not be")), "{all:#?}");
}

#[test]
fn a_searcher_of_the_frozen_0_2_0_contract_runs_and_resumes_without_snapshots() {
    // The 0.2.0 fixture walks the space in order; 0.1.0's runs in run.rs.
    let v2 = env!("MSH_SEARCHER_V2_PLUGIN");
    assert_eq!(msh_plugin::PluginHost::new(Default::default()).load_file(Path::new(v2)).unwrap().version, "0.2.0");
    let (_dir, workflow, run_dir) = workflow(v2, 150, 10);
    run_and_kill(&workflow, &run_dir, None, 40);
    run_to_end(&workflow, &run_dir, None);
    assert_complete(&run_dir, None, 150);
    let store = Store::open(&run_dir).unwrap();
    assert!(store.snapshot("search").unwrap().is_none(), "a 0.2.0 searcher keeps no snapshot");
    let all = events(&run_dir, None);
    assert!(!all.iter().any(|e| e.contains("snapshot of")), "{all:#?}");
}

#[test]
fn a_searcher_that_traps_is_rebuilt_from_its_latest_snapshot() {
    // It traps on the third call of every instance; with a snapshot every 2 trials, each
    // new instance restores the latest one and is told only the trials since.
    let (_dir, workflow, run_dir) = workflow(env!("MSH_FLAKY_SEARCHER_PLUGIN"), 12, 2);
    run_to_end(&workflow, &run_dir, None);
    assert_complete(&run_dir, None, 12);
    let all = events(&run_dir, None);
    let rebuilt: Vec<&String> = all.iter().filter(|e| e.contains("trapped")).collect();
    assert!(!rebuilt.is_empty(), "{all:#?}");
    // The first trap comes before the first snapshot: every trial is replayed then.
    assert!(rebuilt.iter().all(|e| e.contains("; rebuilt from ")), "{rebuilt:#?}");
    assert!(rebuilt.iter().skip(1).all(|e| e.contains("; rebuilt from its latest snapshot and the ")), "{rebuilt:#?}");
    assert!(rebuilt.len() >= 2, "{rebuilt:#?}");
}
