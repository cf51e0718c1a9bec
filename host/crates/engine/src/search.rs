//! The search stage: N trainers, in any number of processes and machines, work
//! asynchronously; whenever one is free it claims the next trial by the store's lease
//! protocol (`store/claims.rs`): a requeued one, else a reservation that the searcher
//! (told every trial so far) fills outside any transaction. It trains the trial and
//! records the result. A proposal that repeats a finished or running trial, or that
//! cannot be built, is handed back to the searcher as rejected: it costs no training and
//! no budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::history::History;
use super::lifecycle::Start;
use super::trainer::{Evaluated, Table, Trainer};
use super::{EngineError, EngineEvent, Role, Run};
use crate::workflow::{Budget, EnsembleStrategy, TrainerKind, validate_config};
use msh_store::{self as store, Claim, Claimant, Committed, Finished, StageRecord, StoreError, TrialRecord};
use msh_vocab::space::{Proposal, SearchContext};

/// One search stage being worked on by this process.
struct Search<'a> {
    run: &'a Run,
    name: &'a str,
    budget: Budget,
    history: Mutex<History>,
    trainer: Trainer,
    started: Instant,
    /// The stage's `spent_seconds` when this process started on it.
    spent_before: f64,
    /// Set when a trainer hits an error that ends the stage.
    abort: AtomicBool,
    /// When the stage's spent time was last recorded.
    time_recorded: Mutex<Instant>,
    /// Trials between searcher snapshots (`searcher.snapshot_every`; 0: none).
    snapshot_every: u64,
}

/// Proposals rejected in a row (duplicates, unbuildable) before the stage gives up.
const MAX_REJECTED_IN_A_ROW: usize = 200;

/// Seeds differ per stage so two search stages do not propose the same trials.
fn stage_seed(seed: u64, stage: &str) -> u64 {
    stage.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Runs the stage until its budget is spent (its message) or Ctrl-C (`None`).
pub fn run_search(run: &Arc<Run>, name: &str, start: &Start<'_>) -> Result<Option<String>, EngineError> {
    let wf = &run.workflow;
    let stage = &wf.stages[name];
    let spec = wf.searcher_of(stage);
    let budget = wf.budget_of(stage);
    let started = Instant::now();
    let trainer = match (wf.trainers.kind, &run.resolved.table) {
        (TrainerKind::Table, Some(path)) => Trainer::Table(Table::load(path)?),
        _ => Trainer::Burn,
    };
    let context = SearchContext {
        seed: stage_seed(wf.seed, name),
        budget: budget.trials.unwrap_or(0),
        config: validate_config(spec).map_err(EngineError::Stage)?,
    };
    let mut space = run.resolved.space.clone();
    if matches!(trainer, Trainer::Burn) {
        space.input_rank = run.splits()?.train.shape.len() as u8;
    }
    let session = run.resolved.searchers[name]
        .search(&context, &space, spec.history)
        .map_err(|e| EngineError::Stage(format!("search stage `{name}`: {e}")))?;
    let mut history = History::new(name, session, wf.ensembling.top_k);
    if spec.snapshot_every > 0 {
        history.start_from(run.store.snapshot(name)?, &run.store)?;
    }
    if let Some(earlier) = &run.earlier {
        let trials = earlier.for_stage(name);
        run.note(format!(
            "search stage `{name}`: warm start from {}: {} earlier trials told to the searcher",
            earlier.dir().display(),
            trials.len()
        ));
        history.tell_earlier(&trials);
    }
    tracing::debug!("search stage `{name}`: trainer and history ready in {:.3} s", started.elapsed().as_secs_f64());
    let search = Search {
        run,
        name,
        budget,
        history: Mutex::new(history),
        trainer,
        started: Instant::now(),
        spent_before: 0.0,
        abort: AtomicBool::new(false),
        time_recorded: Mutex::new(Instant::now()),
        snapshot_every: spec.snapshot_every,
    };
    let spent_before = start.begin(budget.trials.map(u64::from))?;
    let search = Search { spent_before, ..search };

    // burn's autodiff serialises the threads of one process on a global lock, so extra
    // trainers of burn searches are worker processes; each trains in its own process.
    let mut helpers =
        if run.trainers > 1 && run.role != Role::TrainerOf(name.into()) && wf.trainers.kind == TrainerKind::Burn {
            spawn_helpers(run, name, run.trainers - 1)?
        } else {
            Vec::new()
        };
    let local = if helpers.is_empty() { run.trainers } else { 1 };
    loop {
        let results: Vec<Result<(), EngineError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..local)
                .map(|i| {
                    scope.spawn({
                        let search = &search;
                        move || search.work(i)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(EngineError::Stage("a trainer panicked".into()))))
                .collect()
        });
        let failed = results.into_iter().find_map(Result::err);
        if failed.is_some() || run.stopping() {
            // Closing their stdin stops the helpers; they requeue what they were training.
            for helper in &mut helpers {
                helper.stdin.take();
            }
        }
        for helper in helpers.drain(..) {
            helper.join(run);
        }
        if failed.is_some() || run.stopping() || !search.wait_for_others()? {
            search.record_time(true)?;
            if let Some(e) = failed {
                return Err(e);
            }
            break;
        }
    }
    if run.stopping() {
        // A clean stop keeps the searcher's state as it is: the next run replays nothing.
        search.keep_snapshot(true)?;
        return Ok(None);
    }
    Ok(Some(format!("{} trials finished", finished_trials(run, name)?)))
}

/// How many trials of the stage have finished (the store counts them).
fn finished_trials(run: &Run, name: &str) -> Result<u64, StoreError> {
    Ok(run.store.stage(name)?.map_or(0, |s| s.finished_trials))
}

/// A worker process training for this stage, and the thread relaying its events.
struct Helper {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    relay: std::thread::JoinHandle<()>,
}

impl Helper {
    fn join(mut self, run: &Run) {
        let _ = self.relay.join();
        match self.child.wait() {
            Ok(status) if status.success() || status.code() == Some(130) => {}
            Ok(status) => run.note(format!("a trainer process ended with {status}")),
            Err(e) => run.note(format!("a trainer process could not be waited for: {e}")),
        }
    }
}

/// Starts `count` trainer processes (through the run's launcher) as trainers 1..=count.
fn spawn_helpers(run: &Arc<Run>, stage: &str, count: usize) -> Result<Vec<Helper>, EngineError> {
    use std::io::BufRead;
    use std::process::Stdio;
    let Some(launcher) = &run.launcher else { return Ok(Vec::new()) };
    let mut helpers = Vec::with_capacity(count);
    for index in 1..=count {
        let mut command = launcher.trainer(stage, index, run.threads);
        let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| {
            EngineError::Stage(format!("cannot start trainer process {:?}: {e}", command.get_program()))
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let relay = std::thread::spawn({
            let run = run.clone();
            move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    let Ok(event) = serde_json::from_str::<EngineEvent>(&line) else { continue };
                    match event {
                        EngineEvent::TrialStarted { stage, trial, arch, searcher_seconds, .. } => {
                            (run.report)(EngineEvent::TrialStarted {
                                stage,
                                trainer: index,
                                trial,
                                arch,
                                searcher_seconds,
                            })
                        }
                        EngineEvent::TrialEpoch { trial, epoch, epochs, .. } => {
                            (run.report)(EngineEvent::TrialEpoch { trainer: index, trial, epoch, epochs })
                        }
                        EngineEvent::TrialFinished { stage, trial, .. } => {
                            (run.report)(EngineEvent::TrialFinished { stage, trainer: index, trial })
                        }
                        EngineEvent::Note(text) => run.note(format!("trainer {index}: {text}")),
                        EngineEvent::StageStarted { .. } | EngineEvent::StageFinished { .. } => {}
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        helpers.push(Helper { child, stdin, relay });
    }
    Ok(helpers)
}

impl Search<'_> {
    /// Waits while other processes still train or reserve trials of this stage.
    /// `Ok(true)` when some of theirs were requeued because their lease expired: this
    /// one takes them over.
    fn wait_for_others(&self) -> Result<bool, EngineError> {
        loop {
            if self.run.stopping() {
                return Ok(false);
            }
            if !self.run.store.requeue_expired(self.name, &self.run.owner)?.is_empty() {
                return Ok(true);
            }
            let stage = self.run.store.stage(self.name)?;
            if stage.is_none_or(|s| s.running + s.reserved.len() as u64 == 0) {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    /// One trainer's loop. A finished trial is recorded in the same transaction that
    /// claims the next one: one commit (one fsync) per trial.
    fn work(&self, trainer: usize) -> Result<(), EngineError> {
        let mut done: Option<TrialRecord> = None;
        loop {
            let recorded = done.take();
            let (claimed, finished) =
                self.claim(recorded.as_ref(), trainer).inspect_err(|_| self.abort.store(true, Ordering::Relaxed))?;
            match (recorded, finished) {
                (Some(trial), Finished::Recorded) => (self.run.report)(EngineEvent::TrialFinished {
                    stage: self.name.into(),
                    trainer,
                    trial: Box::new(trial),
                }),
                (Some(trial), Finished::LeaseLost) => self.run.note(format!(
                    "[{}] trial {} dropped: lease lost (the trial was requeued while this trainer held it; its \
                     result here is not recorded)",
                    self.name, trial.id
                )),
                (None, _) => {}
            }
            let Some((trial, searcher_seconds)) = claimed else { return Ok(()) };
            (self.run.report)(EngineEvent::TrialStarted {
                stage: self.name.into(),
                trainer,
                trial: trial.id,
                arch: trial.arch_key(),
                searcher_seconds,
            });
            match self.trainer.evaluate(self.run, trainer, trial.clone()) {
                Ok(Evaluated::Finished(mut finished)) => {
                    finished.finished = Some(store::now());
                    done = Some(finished);
                }
                Ok(Evaluated::Interrupted) => self.requeue(trial)?,
                Err(e) => {
                    self.abort.store(true, Ordering::Relaxed);
                    self.requeue(trial)?;
                    return Err(e);
                }
            }
        }
    }

    /// Records `trial`, finished by this process: kept unless its lease was lost.
    fn record_finished(
        &self,
        who: &Claimant,
        trial: &TrialRecord,
        stop: bool,
    ) -> Result<(Finished, Claim), StoreError> {
        let event = match (&trial.error, &trial.valid) {
            (Some(error), _) => format!("{}: {error}", trial.status.name()),
            (None, Some(valid)) => format!("{}: {}", trial.status.name(), valid.headline()),
            (None, None) => trial.status.name().to_string(),
        };
        let (kept, claim) = if stop {
            (self.run.store.finish(who, trial, &event)?, Claim::Spent)
        } else {
            self.run.store.claim(who, Some((trial, &event)))?
        };
        if kept == Finished::LeaseLost {
            // Unless an earlier attempt recorded it (its commit's reply was lost with the
            // connection): then the stored result is this one.
            let stored = self.run.store.trial(trial.id)?;
            if stored.finished == trial.finished && stored.status == trial.status {
                return Ok((Finished::Recorded, claim));
            }
        }
        Ok((kept, claim))
    }

    /// The stage's wall time so far, across the sessions of the run.
    fn spent_seconds(&self) -> f64 {
        self.spent_before + self.started.elapsed().as_secs_f64()
    }

    /// Records the stage's spent time, at most once a second (a killed process loses
    /// little), or now when `always`.
    fn record_time(&self, always: bool) -> Result<(), StoreError> {
        let mut last = self.time_recorded.lock().expect("no panics while recording time");
        if always || last.elapsed().as_secs_f64() >= 1.0 {
            *last = Instant::now();
            self.run.store.record_time(self.name, self.spent_seconds())?;
        }
        Ok(())
    }

    fn out_of_time(&self) -> bool {
        self.budget.wall_time.is_some_and(|w| self.spent_seconds() >= w.as_secs_f64())
    }

    /// The next trial for a free trainer, marked running, and the seconds the searcher
    /// took to propose it; `None` when the stage is spent. Reserve, propose, commit: the
    /// searcher runs between two store steps, so other trainers' claims never wait on it.
    /// The first step also records `finished`; the second value says whether it was kept.
    fn claim(
        &self,
        finished: Option<&TrialRecord>,
        trainer: usize,
    ) -> Result<(Option<(TrialRecord, f64)>, Finished), EngineError> {
        let mut history = self.history.lock().expect("no panics while proposing");
        let run = self.run;
        let worker = format!("{} pid {} trainer {trainer}", run.host, run.owner.pid);
        let who = Claimant {
            stage: self.name,
            me: &run.owner,
            lease: run.lease,
            limit: self.budget.trials.map_or(u64::MAX, u64::from),
            worker: &worker,
        };
        self.record_time(false)?;
        let out_of_epochs = match self.budget.epochs {
            Some(budget) => {
                history.refresh(&run.store)?;
                // The trial just finished is recorded below, after the decision: it counts here.
                history.epochs(&run.store)? + finished.map_or(0, |t| u64::from(t.epochs)) >= budget
            }
            None => false,
        };
        let stop = run.stopping() || self.abort.load(Ordering::Relaxed) || self.out_of_time() || out_of_epochs;
        let (kept, claim) = match finished {
            Some(trial) => self.record_finished(&who, trial, stop)?,
            None if stop => (Finished::Recorded, Claim::Spent),
            None => run.store.claim(&who, None)?,
        };
        if let Some(trial) = finished {
            run.release(trial.id);
        }
        let id = match claim {
            Claim::Spent => return Ok((None, kept)),
            Claim::Trial(trial) => {
                run.hold(trial.id);
                return Ok((Some((trial, 0.0)), kept));
            }
            Claim::Reserved(id) => id,
        };
        run.hold(id);
        history.refresh(&run.store)?;
        if let Some(trial) = self.intermixed_ensemble(id, history.best())? {
            return Ok(match run.store.commit(&who, trial, 0, "an intermixed ensemble")? {
                Committed::Running(trial) => (Some((trial, 0.0)), kept),
                Committed::Spent => {
                    run.release(id);
                    (None, kept)
                }
            });
        }
        let mut running = run.store.running(self.name)?;
        let (mut searcher_seconds, mut refused) = (0.0, 0);
        let committed = loop {
            let asked = Instant::now();
            let mut notes = Vec::new();
            let proposed = self.next_proposal(&mut history, &mut refused, &running, &mut notes);
            searcher_seconds += asked.elapsed().as_secs_f64();
            if !notes.is_empty() {
                run.store.write(|t| notes.iter().try_for_each(|note| t.log(Some(self.name), None, note.as_str())))?;
            }
            let proposal = match proposed {
                Ok(Some(proposal)) => proposal,
                Ok(None) => {
                    run.store.release(self.name, id, refused)?;
                    run.note(format!("search stage `{}`: the searcher has nothing more to propose", self.name));
                    break Ok(None);
                }
                Err(e) => {
                    run.store.release(self.name, id, refused)?;
                    break Err(format!("search stage `{}`: {e}", self.name));
                }
            };
            // Another process may have recorded or started the same trial meanwhile.
            history.refresh(&run.store)?;
            running = run.store.running(self.name)?;
            let key = history.session.key(&proposal.architecture, &proposal.hparams);
            if let Some(twin) = history.trained(&key).or_else(|| history.running_twin(&running, &key)) {
                refused += 1;
                history.session.reject(&proposal, format!("it repeats trial {twin}"));
                continue;
            }
            break match run.store.commit(&who, new_trial(id, self.name, proposal), refused, "proposed")? {
                Committed::Running(trial) => Ok(Some(trial)),
                Committed::Spent => Ok(None),
            };
        };
        if history.snapshot_due(self.snapshot_every) {
            drop(history);
            self.keep_snapshot(false)?;
        }
        match committed {
            Ok(Some(trial)) => Ok((Some((trial, searcher_seconds)), kept)),
            Ok(None) => {
                run.release(id);
                Ok((None, kept))
            }
            Err(e) => {
                run.release(id);
                Err(EngineError::Stage(e))
            }
        }
    }

    /// Saves the searcher's snapshot in the store, with an event. `last`: when the stage
    /// stops, after reading what finished since the last proposal. A searcher that fails
    /// to save is noted and the search goes on (a resume replays more).
    fn keep_snapshot(&self, last: bool) -> Result<(), EngineError> {
        let mut history = self.history.lock().expect("no panics while proposing");
        if self.snapshot_every == 0 {
            return Ok(());
        }
        if last {
            history.refresh(&self.run.store)?;
            if !history.snapshot_stale() {
                return Ok(());
            }
        } else if !history.snapshot_due(self.snapshot_every) {
            // Another trainer of this process saved it meanwhile.
            return Ok(());
        }
        let started = Instant::now();
        let snapshot = match history.snapshot() {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.run.note(format!("search stage `{}`: no searcher snapshot this time: {e}", self.name));
                return Ok(());
            }
        };
        self.run.store.write(|t| -> Result<(), StoreError> {
            if t.put_snapshot(self.name, &snapshot)? {
                let message = format!(
                    "searcher `{}`: snapshot of {} trials kept ({} KiB)",
                    snapshot.plugin,
                    snapshot.trials,
                    snapshot.state.len().div_ceil(1024)
                );
                t.log(Some(self.name), None, message)?;
            }
            Ok(())
        })?;
        tracing::debug!(
            "search stage `{}`: searcher snapshot of {} trials saved in {:.3} s",
            self.name,
            snapshot.trials,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// With `ensembling: intermixed`, every `every`-th trial is an ensemble of the best
    /// trials so far; its members are chosen when a trainer evaluates it.
    fn intermixed_ensemble(&self, id: u64, best: &[TrialRecord]) -> Result<Option<TrialRecord>, StoreError> {
        let ensembling = self.run.workflow.ensembling;
        if ensembling.strategy != EnsembleStrategy::Intermixed || best.len() < 2 {
            return Ok(None);
        }
        let stage = self.run.store.stage(self.name)?.unwrap_or_else(|| StageRecord::new(self.name, "search"));
        // Counting the reservation `id` itself.
        let position = stage.finished_trials + stage.running + stage.reserved.len() as u64;
        if position % ensembling.every as u64 != 0 {
            return Ok(None);
        }
        let mut trial = new_trial(
            id,
            self.name,
            Proposal {
                architecture: best[0].architecture.clone(),
                hparams: best[0].hparams.clone(),
                parent: Some(best[0].id),
                teacher: None,
            },
        );
        trial.members = best.iter().take(ensembling.top_k).map(|t| (t.id, 0.0)).collect();
        Ok(Some(trial))
    }

    /// The searcher's next proposal that is new and can be built. Rejected ones are told
    /// back to the searcher and counted in the stage; those that are not mere repeats, and
    /// rebuilds of a searcher that trapped, are added to `notes` for the event log.
    /// `Ok(None)` when it has nothing more.
    fn next_proposal(
        &self,
        history: &mut History,
        rejected_count: &mut u64,
        running: &[TrialRecord],
        notes: &mut Vec<String>,
    ) -> Result<Option<Proposal>, String> {
        let mut last = String::new();
        for _ in 0..MAX_REJECTED_IN_A_ROW {
            let proposed = history.session.propose(running, 1);
            notes.extend(history.take_notes());
            let Some(proposal) = proposed.map_err(|e| e.to_string())?.into_iter().next() else {
                return Ok(None);
            };
            let key = history.session.key(&proposal.architecture, &proposal.hparams);
            let running_twin = history.running_twin(running, &key);
            // A mere repeat is only counted; a proposal that cannot be trained is also logged.
            let reason = if let Some(id) = history.trained(&key) {
                format!("it repeats trial {id}")
            } else if let Some(id) = running_twin {
                format!("it repeats trial {id}, which is running")
            } else if let Some(reason) = history
                .session
                .invalid(&proposal)
                .or_else(|| self.unbuildable(&proposal).map(|e| format!("it cannot be built: {e}")))
            {
                let arch: Vec<&str> = proposal.architecture.iter().map(|b| b.name.as_str()).collect();
                let searcher = &history.session.plugin().name;
                notes.push(format!("searcher `{searcher}`: proposal {} rejected: {reason}", arch.join(",")));
                reason
            } else {
                return Ok(Some(proposal));
            };
            *rejected_count += 1;
            history.session.reject(&proposal, reason.clone());
            last = reason;
        }
        Err(format!(
            "searcher `{}` proposed {MAX_REJECTED_IN_A_ROW} trials in a row that could not be trained; the last: {last}",
            history.session.plugin().name
        ))
    }

    /// Why a proposal's blocks cannot be built for the data, when trainers build them.
    fn unbuildable(&self, proposal: &Proposal) -> Option<String> {
        if !matches!(self.trainer, Trainer::Burn) {
            return None;
        }
        let shape = &self.run.splits().ok()?.train.shape;
        super::trainer::expand(self.run, &new_trial(0, self.name, proposal.clone()), shape).err()
    }

    /// Puts an interrupted trial back at the head of the queue (`Store::give_back`).
    fn requeue(&self, trial: TrialRecord) -> Result<(), EngineError> {
        self.run.store.give_back(self.name, &trial, &self.run.owner)?;
        self.run.release(trial.id);
        Ok(())
    }
}

fn new_trial(id: u64, stage: &str, proposal: Proposal) -> TrialRecord {
    TrialRecord {
        parent: proposal.parent,
        // An earlier run's trial (warm start) teaches nothing: distillation reads this run.
        teacher: proposal.teacher.filter(|&id| id < super::warm_start::EARLIER_IDS),
        ..TrialRecord::new(id, stage, proposal.architecture, proposal.hparams)
    }
}
