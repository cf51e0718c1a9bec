//! The store's conformance suite: every behaviour the engine relies on (records, the
//! finish log, counters, events, and the lease protocol's claims, commits, finishes,
//! requeues and renewals), one test per backend: `store::lmdb::` and `store::postgres::`
//! (which also holds what only PostgreSQL has).

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use msh_store::{
    BlockRef, Claim, Claimant, Committed, Finished, Owner, ParamValue, StageRecord, Store, StoreError, TrialRecord,
    TrialStatus,
};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Lmdb,
    Postgres,
}

/// Stamps a `#[test]` per backend for each case (`fn(Backend)`), in modules named after
/// the backend so that a failure names it and a filter runs one; `postgres_only` cases
/// (`fn()`) join the PostgreSQL module.
macro_rules! per_backend {
    (each: [$($case:ident),* $(,)?], postgres_only: [$($only:ident),* $(,)?] $(,)?) => {
        mod lmdb {
            $(#[test] fn $case() { super::$case(super::Backend::Lmdb) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(super::Backend::Postgres) })*
            $(#[test] fn $only() { super::$only() })*
        }
    };
}

per_backend! {
    each: [
        records_round_trip_and_the_finish_log_is_incremental,
        newer_and_corrupt_records_are_refused_by_name,
        counters_events_and_rungs_are_shared_by_every_connection,
        concurrent_claims_hold_the_budget_and_never_share_a_trial,
        thirty_two_trainers_spend_a_budget_exactly,
        an_expired_lease_requeues_the_trial_and_drops_the_late_result,
        renewed_leases_hold_and_expired_reservations_are_dropped,
    ],
    postgres_only: [
        a_run_directory_names_its_postgres_run_and_cannot_change_backend,
        store_secrets_stay_out_of_files_and_messages,
        a_postgres_run_from_before_slots_is_given_them,
    ],
}

/// Opens the store of `run_dir` on `backend`: a fresh run the first time.
fn open(backend: Backend, run_dir: &Path) -> Store {
    match backend {
        Backend::Lmdb => Store::open(run_dir).unwrap(),
        Backend::Postgres => Store::open_at(run_dir, Some(&common::postgres_url())).unwrap(),
    }
}

fn trial(id: u64, status: TrialStatus) -> TrialRecord {
    let architecture = vec![BlockRef { name: "dense".into(), params: vec![("units".into(), ParamValue::Int(8))] }];
    TrialRecord { status, ..TrialRecord::new(id, "search", architecture, vec![("learning_rate".into(), 0.01)]) }
}

fn owner(session: u64) -> Owner {
    Owner::this_process(session)
}

/// `me` claiming trials of stage `search`.
fn claimant<'a>(me: &'a Owner, lease: f64, limit: u64, worker: &'a str) -> Claimant<'a> {
    Claimant { stage: "search", me, lease, limit, worker }
}

fn with_stage(store: &Store, name: &str) {
    store.write(|t| t.put_stage(&StageRecord::new(name, "search"))).unwrap();
}

fn records_round_trip_and_the_finish_log_is_incremental(backend: Backend) {
    let dir = TempDir::new();
    let store = open(backend, dir.path());
    store
        .write(|t| -> Result<(), StoreError> {
            for _ in 0..3 {
                let id = t.next_trial_id()?;
                t.put_trial(&trial(id, TrialStatus::Running))?;
            }
            t.log(Some("search"), Some(0), "started")
        })
        .unwrap();
    store.write(|t| t.put_trial(&trial(1, TrialStatus::Completed))).unwrap();
    let (done, position) = store.finished_since(0).unwrap();
    assert_eq!((done.len(), done[0].id, position), (1, 1, 1), "{backend:?}");
    // Rewriting a finished trial does not log it twice.
    store.write(|t| t.put_trial(&trial(1, TrialStatus::Completed))).unwrap();
    store.write(|t| t.put_trial(&trial(2, TrialStatus::Failed))).unwrap();
    let (done, position) = store.finished_since(position).unwrap();
    assert_eq!((done.len(), done[0].id, position), (1, 2, 2), "{backend:?}");
    drop(store);
    let reopened = open(backend, dir.path());
    assert_eq!(reopened.trials().unwrap().len(), 3, "{backend:?}");
    let stored = reopened.trial(0).unwrap();
    assert_eq!(stored, TrialRecord { created: stored.created, ..trial(0, TrialStatus::Running) }, "{backend:?}");
    assert_eq!(reopened.events().unwrap()[0].message, "started", "{backend:?}");
    let err = reopened.trial(9).unwrap_err().to_string();
    assert!(err.contains("no trial 9"), "{backend:?}: {err}");
}

fn newer_and_corrupt_records_are_refused_by_name(backend: Backend) {
    let dir = TempDir::new();
    let store = open(backend, dir.path());
    let future = rmp_serde::to_vec_named(&(9u32, 0u8)).unwrap();
    store.write(|t| t.put_raw_trial(7, &future)).unwrap();
    store.write(|t| t.put_raw_trial(8, b"\xc1 not messagepack")).unwrap();
    let err = store.trial(7).unwrap_err().to_string();
    assert!(err.contains("record 7 of `trials` has schema version 9"), "{backend:?}: {err}");
    let err = store.trial(8).unwrap_err().to_string();
    assert!(err.contains("record 8 of `trials` is corrupt"), "{backend:?}: {err}");
    assert!(err.contains(store.name()), "{backend:?}: {err}");
}

fn counters_events_and_rungs_are_shared_by_every_connection(backend: Backend) {
    let dir = TempDir::new();
    let first = Arc::new(open(backend, dir.path()));
    // Another connection (PostgreSQL) or the same environment (LMDB allows one per process).
    let second = match backend {
        Backend::Lmdb => first.clone(),
        Backend::Postgres => Arc::new(open(backend, dir.path())),
    };
    let ids: Vec<u64> =
        (0..6).map(|i| if i % 2 == 0 { &first } else { &second }.write(|t| t.next_trial_id()).unwrap()).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5], "{backend:?}");
    for (i, store) in [&first, &second, &first].into_iter().enumerate() {
        store.write(|t| t.log(Some("search"), Some(i as u64), format!("event {i}"))).unwrap();
    }
    let events: Vec<String> = second.events().unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(events, ["event 0", "event 1", "event 2"], "{backend:?}");
    let mut rung = first.rung("search", 3).unwrap();
    assert!(rung.values.is_empty());
    rung.values.push((4, 0.5));
    first.write(|t| t.put_rung("search", 3, &rung)).unwrap();
    assert_eq!(second.rung("search", 3).unwrap().values, vec![(4, 0.5)], "{backend:?}");
    assert!(second.rung("search", 4).unwrap().values.is_empty(), "{backend:?}");
}

/// One trainer's loop: claim, commit a proposal into a reservation, finish; the ids it
/// finished.
fn train_until_spent(store: &Store, me: Owner, limit: u64) -> Vec<u64> {
    let who = claimant(&me, 30.0, limit, "test");
    let mut finished = Vec::new();
    loop {
        let (_, claim) = store.claim(&who, None).unwrap();
        let running = match claim {
            Claim::Spent => return finished,
            Claim::Trial(trial) => trial,
            Claim::Reserved(id) => {
                // Proposing happens here, outside any transaction.
                std::thread::sleep(Duration::from_millis(2));
                match store.commit(&who, trial(id, TrialStatus::Pending), 0, "proposed").unwrap() {
                    Committed::Running(trial) => trial,
                    Committed::Spent => return finished,
                }
            }
        };
        assert_eq!(running.status, TrialStatus::Running);
        let done = TrialRecord { status: TrialStatus::Completed, objective: Some(0.5), ..running };
        assert_eq!(store.finish(&who, &done, "completed").unwrap(), Finished::Recorded);
        finished.push(done.id);
    }
}

/// `trainers` trainers, each on a connection of its own (PostgreSQL), spend a budget of
/// `limit`: every slot is used once, by one trainer, and the counts add up.
fn spend_together(backend: Backend, trainers: u64, limit: u64) {
    let dir = TempDir::new();
    let store = Arc::new(open(backend, dir.path()));
    with_stage(&store, "search");
    let trainers: Vec<_> = (0..trainers)
        .map(|session| {
            let store = match backend {
                Backend::Lmdb => store.clone(),
                Backend::Postgres => Arc::new(open(backend, dir.path())),
            };
            std::thread::spawn(move || train_until_spent(&store, owner(100 + session), limit))
        })
        .collect();
    let mut all: Vec<u64> = trainers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    assert_eq!(all, (0..limit).collect::<Vec<_>>(), "{backend:?}: every slot once");
    let stage = store.stage("search").unwrap().unwrap();
    assert_eq!((stage.finished_trials, stage.running, stage.reserved.len()), (limit, 0, 0), "{backend:?}");
    let (log, _) = store.finished_since(0).unwrap();
    assert_eq!(log.len() as u64, limit, "{backend:?}: each trial joins the finish log once");
    assert!(store.trials().unwrap().iter().all(|t| t.attempts == 1 && t.owner.is_none()), "{backend:?}");
}

fn concurrent_claims_hold_the_budget_and_never_share_a_trial(backend: Backend) {
    spend_together(backend, 6, 23);
}

/// Many trainers at once: claims that take rows of their own must neither deadlock nor
/// overrun the budget where they meet (the last slots, the counters).
fn thirty_two_trainers_spend_a_budget_exactly(backend: Backend) {
    spend_together(backend, 32, 300);
}

fn an_expired_lease_requeues_the_trial_and_drops_the_late_result(backend: Backend) {
    let dir = TempDir::new();
    let store = open(backend, dir.path());
    with_stage(&store, "search");
    let (slow, other) = (owner(1), owner(2));
    let slow_claims = claimant(&slow, 0.3, 10, "slow");
    let (_, Claim::Reserved(id)) = store.claim(&slow_claims, None).unwrap() else { panic!("a reservation") };
    let committed = store.commit(&slow_claims, trial(id, TrialStatus::Pending), 0, "proposed").unwrap();
    assert!(matches!(committed, Committed::Running(_)), "{backend:?}");
    // Within the lease nothing is requeued.
    assert!(store.requeue_expired("search", &other).unwrap().is_empty(), "{backend:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(store.requeue_expired("search", &other).unwrap(), vec![id], "{backend:?}");
    let events = store.events().unwrap();
    let last = &events.last().unwrap().message;
    assert!(last.contains("slow stopped (its lease expired) before it finished attempt 1"), "{backend:?}: {last}");
    // The other trainer gets it back, as a second attempt.
    let other_claims = claimant(&other, 30.0, 10, "other");
    let (_, Claim::Trial(retried)) = store.claim(&other_claims, None).unwrap() else { panic!("the requeued trial") };
    assert_eq!((retried.id, retried.attempts, retried.status), (id, 2, TrialStatus::Running), "{backend:?}");
    let done = TrialRecord { status: TrialStatus::Completed, ..retried.clone() };
    assert_eq!(store.finish(&slow_claims, &done, "completed").unwrap(), Finished::LeaseLost, "{backend:?}");
    assert_eq!(store.finish(&other_claims, &done, "completed").unwrap(), Finished::Recorded, "{backend:?}");
    let (log, _) = store.finished_since(0).unwrap();
    assert_eq!(log.len(), 1, "{backend:?}: the trial ends once");
    let stage = store.stage("search").unwrap().unwrap();
    assert_eq!((stage.finished_trials, stage.running, stage.pending.len()), (1, 0, 0), "{backend:?}");
}

fn renewed_leases_hold_and_expired_reservations_are_dropped(backend: Backend) {
    let dir = TempDir::new();
    let store = open(backend, dir.path());
    with_stage(&store, "search");
    let (holder, other) = (owner(1), owner(2));
    let claim = |who: &Claimant| store.claim(who, None).unwrap().1;
    let holds = claimant(&holder, 0.4, 2, "test");
    let Claim::Reserved(kept) = claim(&holds) else { panic!("a reservation") };
    let Claim::Reserved(lost) = claim(&holds) else { panic!("a reservation") };
    // Reservations count against the budget.
    let others = claimant(&other, 30.0, 2, "test");
    assert!(matches!(claim(&others), Claim::Spent), "{backend:?}");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        let unheld = store.renew(&[kept], &holder, 0.4).unwrap();
        assert!(unheld.is_empty(), "{backend:?}");
    }
    store.requeue_expired("search", &other).unwrap();
    let stage = store.stage("search").unwrap().unwrap();
    let reserved: Vec<u64> = stage.reserved.iter().map(|r| r.id).collect();
    assert_eq!(reserved, vec![kept], "{backend:?}: the renewed one stays, the other is dropped");
    // The dropped one's slot is free again; the late commit of `lost` finds the budget spent.
    assert!(matches!(claim(&others), Claim::Reserved(_)), "{backend:?}");
    let late_claims = claimant(&holder, 30.0, 2, "late");
    let late = store.commit(&late_claims, trial(lost, TrialStatus::Pending), 0, "proposed").unwrap();
    assert!(matches!(late, Committed::Spent), "{backend:?}");
    assert_eq!(store.renew(&[lost], &holder, 30.0).unwrap(), vec![lost], "{backend:?}");
}

fn a_run_directory_names_its_postgres_run_and_cannot_change_backend() {
    let dir = TempDir::new();
    let url = common::postgres_url();
    let store = Store::open_at(dir.path(), Some(&url)).unwrap();
    assert_eq!(store.backend(), "postgres");
    store.write(|t| t.log(None, None, "hello")).unwrap();
    drop(store);
    // Later commands find the run through store.json, without the URL.
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.events().unwrap()[0].message, "hello");
    assert!(Store::exists(dir.path()));
    let lmdb_dir = TempDir::new();
    Store::open(lmdb_dir.path()).unwrap().write(|t| t.log(None, None, "lmdb")).unwrap();
    let err = Store::open_at(lmdb_dir.path(), Some(&url)).unwrap_err().to_string();
    assert!(err.contains("keeps its trials in LMDB"), "{err}");
    let err = Store::open_at(TempDir::new().path(), Some("mysql://db")).unwrap_err().to_string();
    assert!(err.contains("not a store URL"), "{err}");
    let err =
        Store::open_at(TempDir::new().path(), Some("postgres://nobody@127.0.0.1:1/none")).unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// Secrets of a store URL, in every form tokio-postgres accepts, appear in nothing msh
/// writes or prints: store.json, the run's copy of the workflow, its record, `msh
/// status`, the report, and errors.
fn store_secrets_stay_out_of_files_and_messages() {
    let url = common::postgres_url().replacen("postgres@", "postgres:topsecret1@", 1)
        + "?password=topsecret2&application_name=a@b";
    let (_dir, workflow, run_dir) =
        common::start(&(common::mnist1d_workflow(1, 1, 1, "") + &format!("store: \"{url}\"\n")));
    let run_text = run_dir.to_str().unwrap();
    let validated = common::run(&["validate", workflow.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&validated.stderr).contains("`store:` holds a password"));
    let out = common::run(&["run", workflow.to_str().unwrap(), "--run-dir", run_text]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = common::run(&["status", run_text, "--events", "20"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    common::run(&["report", run_text]);
    let store_file = std::fs::read_to_string(run_dir.join("store.json")).unwrap();
    assert!(
        store_file.contains("@127.0.0.1:55432/msh_test?application_name=a@b"),
        "the host is the URL's: {store_file}"
    );
    let record = common::json(&["status", run_text, "--json"]);
    let shown = [
        store_file,
        std::fs::read_to_string(run_dir.join("workflow.yaml")).unwrap(),
        std::fs::read_to_string(run_dir.join("report.html")).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&status.stdout).into_owned(),
        record.to_string(),
    ];
    for text in &shown {
        assert!(!text.contains("topsecret"), "a secret shows: {text}");
    }
    let typo = common::failure(&[
        "run",
        workflow.to_str().unwrap(),
        "--run-dir",
        "x",
        "--store",
        "postgress:u:topsecret3@db/x",
    ]);
    assert!(!typo.contains("topsecret") && typo.contains("postgress:…"), "{typo}");
}

/// A PostgreSQL run written before budget slots (its queue in the stage record) gets a
/// slot for each trial, in its record's state, and claims go on from there.
fn a_postgres_run_from_before_slots_is_given_them() {
    let dir = TempDir::new();
    let store = open(Backend::Postgres, dir.path());
    with_stage(&store, "search");
    store
        .write(|t| -> Result<(), StoreError> {
            for status in [TrialStatus::Completed, TrialStatus::Failed, TrialStatus::Pending] {
                let id = t.next_trial_id()?;
                t.put_trial(&trial(id, status))?;
            }
            Ok(())
        })
        .unwrap();
    store.align_queue("search").unwrap();
    let stage = store.stage("search").unwrap().unwrap();
    assert_eq!((stage.finished_trials, stage.pending.as_slice(), stage.running), (2, &[2][..], 0));
    let me = owner(1);
    let who = claimant(&me, 30.0, 4, "test");
    let (_, Claim::Trial(again)) = store.claim(&who, None).unwrap() else { panic!("the pending trial") };
    assert_eq!((again.id, again.attempts), (2, 1));
    let (_, Claim::Reserved(id)) = store.claim(&who, None).unwrap() else { panic!("a reservation") };
    assert_eq!(id, 3, "a fresh id");
    assert!(matches!(store.claim(&who, None).unwrap().1, Claim::Spent), "the budget counts the old trials");
}
