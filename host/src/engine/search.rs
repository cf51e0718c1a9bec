//! The search stage: N trainers work asynchronously; whenever one is free it claims the
//! next trial (a requeued one, else a new proposal from the searcher, which has been told
//! every trial so far), trains it and records the result. Claiming is one store
//! transaction, so several processes can share a stage without exceeding its budget. A
//! proposal that repeats a finished or running trial, or that cannot be built, is handed
//! back to the searcher as rejected: it costs no training and no budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::history::History;
use super::trainer::{Evaluated, Table, Trainer};
use super::{EngineError, EngineEvent, Run};
use crate::plugin::types;
use crate::store::{self, BlockRef, ParamValue, StageRecord, StageState, StoreError, TrialRecord, TrialStatus, Txn};
use crate::workflow::{Budget, EnsembleStrategy, TrainerKind, validate_config};

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
}

/// Proposals rejected in a row (duplicates, unbuildable) before the stage gives up.
const MAX_REJECTED_IN_A_ROW: usize = 200;

/// Seeds differ per stage so two search stages do not propose the same trials.
fn stage_seed(seed: u64, stage: &str) -> u64 {
    stage.bytes().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Runs the stage until its budget is spent (`Ok(true)`) or Ctrl-C (`Ok(false)`).
pub fn run_search(run: &Arc<Run>, name: &str) -> Result<bool, EngineError> {
    let wf = &run.workflow;
    let stage = &wf.stages[name];
    let spec = wf.searcher_of(stage);
    let budget = wf.budget_of(stage);
    let trainer = match (wf.trainers.kind, &run.resolved.table) {
        (TrainerKind::Table, Some(path)) => Trainer::Table(Table::load(path)?),
        _ => Trainer::Burn,
    };
    let context = types::Context {
        seed: stage_seed(wf.seed, name),
        budget: budget.trials.unwrap_or(0),
        config: validate_config(spec).map_err(EngineError::Stage)?,
    };
    let mut space = run.resolved.space.clone();
    if matches!(trainer, Trainer::Burn) {
        space.input_rank = run.splits()?.train.shape.len() as u8;
    }
    let session = run.resolved.searchers[name]
        .search(context, space, spec.history)
        .map_err(|e| EngineError::Stage(format!("search stage `{name}`: {e}")))?;
    let search = Search {
        run,
        name,
        budget,
        history: Mutex::new(History::new(name, session, wf.ensembling.top_k)),
        trainer,
        started: Instant::now(),
        spent_before: 0.0,
        abort: AtomicBool::new(false),
    };
    let (done, spent_before) = run.store.write(|t| -> Result<(u64, f64), StoreError> {
        let mut record = t.stage(name)?.expect("recovery writes every stage");
        record.state = StageState::Running;
        record.started.get_or_insert_with(store::now);
        t.put_stage(&record)?;
        t.log(Some(name), None, "started")?;
        Ok((record.finished_trials, record.spent_seconds))
    })?;
    let search = Search { spent_before, ..search };
    (run.report)(EngineEvent::StageStarted {
        stage: name.into(),
        kind: stage.kind,
        trials: budget.trials.map(u64::from),
        done,
    });

    // burn's autodiff serialises the threads of one process on a global lock, so extra
    // trainers of burn searches are worker processes; each trains in its own process.
    let mut helpers = if run.trainers > 1 && run.worker_of.is_none() && wf.trainers.kind == TrainerKind::Burn {
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
            run.store.write(|t| -> Result<(), StoreError> {
                let mut record = t.stage(name)?.expect("recovery writes every stage");
                search.record_time(&mut record);
                t.put_stage(&record)
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            break;
        }
    }
    if run.stopping() {
        return Ok(false);
    }
    let message = run.store.write(|t| -> Result<String, StoreError> {
        let mut record = t.stage(name)?.expect("recovery writes every stage");
        record.state = StageState::Done;
        record.finished = Some(store::now());
        let message = format!("{} trials finished", record.finished_trials);
        record.message = Some(message.clone());
        t.put_stage(&record)?;
        t.log(Some(name), None, format!("done: {message}"))?;
        Ok(message)
    })?;
    (run.report)(EngineEvent::StageFinished { stage: name.into(), state: StageState::Done, message });
    Ok(true)
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

/// Starts `count` worker processes (`msh run --worker-of STAGE`) as trainers 1..=count.
fn spawn_helpers(run: &Arc<Run>, stage: &str, count: usize) -> Result<Vec<Helper>, EngineError> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe()
        .map_err(|e| EngineError::Stage(format!("cannot find the msh binary to start trainers: {e}")))?;
    let backend = clap::ValueEnum::to_possible_value(&run.backend)
        .map(|v| v.get_name().to_string())
        .unwrap_or_else(|| "auto".into());
    let mut helpers = Vec::with_capacity(count);
    for index in 1..=count {
        let mut child = Command::new(&exe)
            .arg("run")
            .arg(&run.workflow_path)
            .arg("--run-dir")
            .arg(&run.dir)
            .args(["--trainers", "1", "--backend", &backend, "--worker-of", stage])
            .args(["--threads", &run.threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| EngineError::Stage(format!("cannot start trainer process {}: {e}", exe.display())))?;
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
    /// Waits while other processes still train trials of this stage. `Ok(true)` when some
    /// of theirs were requeued because their process is gone: this one takes them over.
    fn wait_for_others(&self) -> Result<bool, EngineError> {
        loop {
            if self.run.stopping() {
                return Ok(false);
            }
            let running: Vec<TrialRecord> = self
                .run
                .store
                .trials()?
                .into_iter()
                .filter(|t| t.stage == self.name && t.status == TrialStatus::Running)
                .collect();
            if running.is_empty() {
                return Ok(false);
            }
            let orphans: Vec<TrialRecord> = running
                .into_iter()
                .filter(|t| !t.owner.is_some_and(|o| super::owner_alive(&o, &self.run.owner)))
                .collect();
            if !orphans.is_empty() {
                for trial in orphans {
                    self.requeue(trial)?;
                }
                return Ok(true);
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
            let claimed =
                self.claim(recorded.as_ref(), trainer).inspect_err(|_| self.abort.store(true, Ordering::Relaxed))?;
            if let Some(trial) = recorded {
                (self.run.report)(EngineEvent::TrialFinished {
                    stage: self.name.into(),
                    trainer,
                    trial: Box::new(trial),
                });
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
                    finished.owner = None;
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

    /// Records a finished trial inside the claiming transaction.
    fn record_finished(&self, t: &mut Txn<'_>, stage: &mut StageRecord, trial: &TrialRecord) -> Result<(), StoreError> {
        stage.running = stage.running.saturating_sub(1);
        stage.in_flight.retain(|id| *id != trial.id);
        stage.finished_trials += 1;
        t.put_trial(trial)?;
        let what = match (&trial.error, &trial.valid) {
            (Some(error), _) => format!("{}: {error}", trial.status.name()),
            (None, Some(valid)) => format!("{}: {}", trial.status.name(), valid.headline()),
            (None, None) => trial.status.name().to_string(),
        };
        t.log(Some(self.name), Some(trial.id), what)
    }

    /// Brings the stage's spent time up to date. Every claim records it, so a killed
    /// process loses little; processes working at once measure the same wall time, so
    /// the larger count wins.
    fn record_time(&self, stage: &mut StageRecord) {
        stage.spent_seconds = stage.spent_seconds.max(self.spent_before + self.started.elapsed().as_secs_f64());
    }

    fn out_of_time(&self, stage: &StageRecord) -> bool {
        self.budget.wall_time.is_some_and(|w| stage.spent_seconds >= w.as_secs_f64())
    }

    /// The next trial for a free trainer, marked running, and the seconds the searcher
    /// took to propose it; `None` when the stage is spent.
    fn claim(&self, finished: Option<&TrialRecord>, trainer: usize) -> Result<Option<(TrialRecord, f64)>, EngineError> {
        let mut history = self.history.lock().expect("no panics while proposing");
        let run = self.run;
        // A searcher failure still commits the finished trial: it is returned inside `Ok`.
        let claimed = run.store.write(|t| -> Result<Result<Option<(TrialRecord, f64)>, String>, EngineError> {
            let mut stage = t.stage(self.name)?.expect("recovery writes every stage");
            if let Some(trial) = finished {
                self.record_finished(t, &mut stage, trial)?;
            }
            let mut searcher_seconds = 0.0;
            self.record_time(&mut stage);
            t.put_stage(&stage)?;
            if self.run.stopping() || self.abort.load(Ordering::Relaxed) || self.out_of_time(&stage) {
                return Ok(Ok(None));
            }
            let mut trial = if !stage.pending.is_empty() {
                t.trial(stage.pending.remove(0))?
            } else {
                let limit = self.budget.trials.map_or(u64::MAX, u64::from);
                if stage.finished_trials + stage.running >= limit {
                    return Ok(Ok(None));
                }
                history.refresh(t)?;
                if let Some(trial) = self.intermixed_ensemble(t, &stage, history.best())? {
                    trial
                } else {
                    let running: Vec<TrialRecord> =
                        stage.in_flight.iter().map(|&id| t.trial(id)).collect::<Result<_, _>>()?;
                    let asked = Instant::now();
                    let mut notes = Vec::new();
                    let proposed = self.next_proposal(&mut history, &mut stage, &running, &mut notes);
                    searcher_seconds = asked.elapsed().as_secs_f64();
                    for note in notes {
                        t.log(Some(self.name), None, note)?;
                    }
                    let proposal = match proposed {
                        Ok(Some(proposal)) => proposal,
                        Ok(None) => {
                            t.put_stage(&stage)?;
                            run.note(format!("search stage `{}`: the searcher has nothing more to propose", self.name));
                            return Ok(Ok(None));
                        }
                        Err(e) => {
                            t.put_stage(&stage)?;
                            return Ok(Err(format!("search stage `{}`: {e}", self.name)));
                        }
                    };
                    let id = t.next_trial_id()?;
                    t.log(Some(self.name), Some(id), "proposed")?;
                    new_trial(id, self.name, proposal)
                }
            };
            trial.status = TrialStatus::Running;
            trial.owner = Some(run.owner);
            trial.worker = Some(format!("pid {} trainer {trainer}", run.owner.pid));
            trial.attempts += 1;
            trial.started = Some(store::now());
            stage.running += 1;
            stage.in_flight.push(trial.id);
            t.put_trial(&trial)?;
            t.put_stage(&stage)?;
            Ok(Ok(Some((trial, searcher_seconds))))
        })?;
        claimed.map_err(EngineError::Stage)
    }

    /// With `ensembling: intermixed`, every `every`-th trial is an ensemble of the best
    /// trials so far; its members are chosen when a trainer evaluates it.
    fn intermixed_ensemble(
        &self,
        t: &mut Txn<'_>,
        stage: &StageRecord,
        best: &[types::Trial],
    ) -> Result<Option<TrialRecord>, StoreError> {
        let ensembling = self.run.workflow.ensembling;
        let position = stage.finished_trials + stage.running + 1;
        if ensembling.strategy != EnsembleStrategy::Intermixed
            || position % ensembling.every as u64 != 0
            || best.len() < 2
        {
            return Ok(None);
        }
        let id = t.next_trial_id()?;
        t.log(Some(self.name), Some(id), "an intermixed ensemble")?;
        let mut trial = new_trial(
            id,
            self.name,
            types::Proposal {
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
        stage: &mut StageRecord,
        running: &[TrialRecord],
        notes: &mut Vec<String>,
    ) -> Result<Option<types::Proposal>, String> {
        let running: Vec<types::Trial> = running.iter().map(TrialRecord::to_plugin).collect();
        let running_keys: Vec<String> =
            running.iter().map(|t| history.session.key(&t.architecture, &t.hparams)).collect();
        let mut last = String::new();
        for _ in 0..MAX_REJECTED_IN_A_ROW {
            let proposed = history.session.propose(&running, 1);
            notes.extend(history.session.take_rebuild());
            let Some(proposal) = proposed.map_err(|e| e.to_string())?.into_iter().next() else {
                return Ok(None);
            };
            let key = history.session.key(&proposal.architecture, &proposal.hparams);
            let running_twin = running_keys.iter().position(|k| *k == key).map(|i| running[i].id);
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
            stage.rejected_proposals += 1;
            history.session.observe(vec![rejected(proposal, reason.clone())]);
            last = reason;
        }
        Err(format!(
            "searcher `{}` proposed {MAX_REJECTED_IN_A_ROW} trials in a row that could not be trained; the last: {last}",
            history.session.plugin().name
        ))
    }

    /// Why a proposal's blocks cannot be built for the data, when trainers build them.
    fn unbuildable(&self, proposal: &types::Proposal) -> Option<String> {
        if !matches!(self.trainer, Trainer::Burn) {
            return None;
        }
        let shape = &self.run.splits().ok()?.train.shape;
        super::trainer::expand(self.run, &new_trial(0, self.name, proposal.clone()), shape).err()
    }

    /// Puts an interrupted trial back at the head of the queue.
    fn requeue(&self, mut trial: TrialRecord) -> Result<(), EngineError> {
        trial.status = TrialStatus::Pending;
        trial.owner = None;
        self.run.store.write(|t| -> Result<(), StoreError> {
            let mut stage = t.stage(self.name)?.expect("recovery writes every stage");
            stage.running = stage.running.saturating_sub(1);
            stage.in_flight.retain(|id| *id != trial.id);
            stage.pending.insert(0, trial.id);
            t.put_trial(&trial)?;
            t.put_stage(&stage)?;
            t.log(Some(self.name), Some(trial.id), "interrupted: back in the queue")
        })?;
        Ok(())
    }
}

fn new_trial(id: u64, stage: &str, proposal: types::Proposal) -> TrialRecord {
    let architecture = proposal
        .architecture
        .into_iter()
        .map(|b| BlockRef {
            name: b.name,
            params: b.params.into_iter().map(|p| (p.name, ParamValue::from_plugin(&p.value))).collect(),
        })
        .collect();
    TrialRecord {
        parent: proposal.parent,
        teacher: proposal.teacher,
        ..TrialRecord::new(id, stage, architecture, proposal.hparams)
    }
}

/// A rejected proposal as its searcher is told of it (never stored; no id of its own).
fn rejected(proposal: types::Proposal, reason: String) -> types::Trial {
    types::Trial {
        id: u64::MAX,
        architecture: proposal.architecture,
        hparams: proposal.hparams,
        status: types::TrialStatus::Rejected,
        kind: types::TrialKind::Single,
        objective: None,
        accuracy: None,
        parameters: 0,
        parent: proposal.parent,
        inherited: 0,
        epochs: 0,
        error: Some(reason),
    }
}
