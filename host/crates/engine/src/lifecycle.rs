//! One lifecycle for every stage, search included: its start (a claim for the stages
//! that run in one process, a shared start for searches), its end as done, interrupted
//! or failed, with their store records and events. Each kind supplies only its body.

use std::sync::Arc;

use super::{EngineError, EngineEvent, Role, Run, distill, ensemble, export, retrain, search};
use crate::workflow::{Stage, StageKind, StageWork};
use msh_store::{self as store, StageClaim, StageRecord, StageState, StoreError};

/// A stage's start, handed to its body: the body calls `begin` once it is ready to work.
pub(crate) struct Start<'a> {
    run: &'a Run,
    name: &'a str,
    kind: StageKind,
    /// Searches are shared by every process that trains for them; other stages run in
    /// the one process that claimed them.
    shared: bool,
}

impl Start<'_> {
    /// Records the stage as running (a claimed stage already is) and reports it, with
    /// `trials` planned; the seconds spent on it before.
    pub fn begin(&self, trials: Option<u64>) -> Result<f64, EngineError> {
        let (name, mut spent_before, mut done) = (self.name, 0.0, 0);
        if self.shared {
            spent_before = self.run.store.write(|t| -> Result<f64, StoreError> {
                let mut record = t.known_stage(name)?;
                record.state = StageState::Running;
                record.started.get_or_insert_with(store::now);
                t.put_stage(&record)?;
                t.log(Some(name), None, "started")?;
                Ok(record.spent_seconds)
            })?;
            done = self.run.store.stage(name)?.map_or(0, |s| s.finished_trials);
        }
        (self.run.report)(EngineEvent::StageStarted { stage: name.into(), kind: self.kind, trials, done });
        Ok(spent_before)
    }
}

/// Runs stage `name` from its start to its end: `Ok(Ok(true))` when done, `Ok(Ok(false))`
/// when interrupted, `Ok(Err(_))` when it failed. The run's own process records a failure
/// (workers and trainer processes leave it to their caller); the outer error is a store
/// error while recording it.
pub(crate) fn run_stage(run: &Arc<Run>, name: &str) -> Result<Result<bool, EngineError>, StoreError> {
    let result = run_to_end(run, name);
    if let Err(e) = &result
        && run.role == Role::Run
    {
        let message = e.to_string();
        run.store.write(|t| -> Result<(), StoreError> {
            let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, "?"));
            record.state = StageState::Failed;
            record.owner = None;
            record.finished = Some(store::now());
            record.message = Some(message.clone());
            t.put_stage(&record)?;
            t.log(Some(name), None, format!("failed: {message}"))
        })?;
        (run.report)(EngineEvent::StageFinished { stage: name.into(), state: StageState::Failed, message });
    }
    Ok(result)
}

fn run_to_end(run: &Arc<Run>, name: &str) -> Result<bool, EngineError> {
    let stage = &run.workflow.stages[name];
    let kind = stage.kind();
    let start = Start { run, name, kind, shared: kind == StageKind::Search };
    if !start.shared {
        if let Some(ended) = claim(run, name, kind)? {
            return Ok(ended);
        }
        run.held_stages.lock().expect("no panics while holding").insert(name.to_string());
    }
    let outcome = body(run, name, stage, &start);
    if !start.shared {
        run.held_stages.lock().expect("no panics while holding").remove(name);
    }
    let Some(message) = outcome? else {
        // Interrupted: a claimed stage goes back to pending, for whoever runs next.
        if !start.shared {
            run.store.write(|t| -> Result<(), StoreError> {
                let mut record = t.known_stage(name)?;
                (record.state, record.owner) = (StageState::Pending, None);
                t.put_stage(&record)
            })?;
        }
        return Ok(false);
    };
    run.store.write(|t| -> Result<(), StoreError> {
        let mut record = t.stage(name)?.unwrap_or_else(|| StageRecord::new(name, &kind.to_string()));
        record.owner = None;
        record.state = StageState::Done;
        record.finished = Some(store::now());
        record.message = Some(message.clone());
        t.put_stage(&record)?;
        t.log(Some(name), None, format!("done: {message}"))
    })?;
    (run.report)(EngineEvent::StageFinished { stage: name.into(), state: StageState::Done, message });
    Ok(true)
}

/// Claims a stage that runs in one process: `None` once claimed, else how it ended
/// elsewhere (`true`: done, `false`: interrupted while another process held it).
fn claim(run: &Run, name: &str, kind: StageKind) -> Result<Option<bool>, EngineError> {
    let kind = kind.to_string();
    let mut waiting = false;
    loop {
        match run.store.write(|t| t.claim_stage(name, &kind, &run.owner, run.lease))? {
            StageClaim::Taken => return Ok(None),
            StageClaim::Done => {
                if waiting {
                    run.note(format!("[{name}] done in another process"));
                }
                return Ok(Some(true));
            }
            StageClaim::Held if run.stopping() => return Ok(Some(false)),
            StageClaim::Held => {
                if !waiting {
                    run.note(format!("[{name}] runs in another process; waiting for it"));
                    waiting = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

/// What each kind does between its start and its end: its message, or `None` when
/// interrupted.
fn body(run: &Arc<Run>, name: &str, stage: &Stage, start: &Start<'_>) -> Result<Option<String>, EngineError> {
    let needs = &stage.needs;
    Ok(match &stage.work {
        StageWork::Search(_) => search::run_search(run, name, start)?,
        StageWork::Retrain(settings) => retrain::run_retrain(run, name, settings, begin_from(run, name, start)?)?,
        StageWork::Ensemble(settings) => {
            Some(ensemble::run_ensemble(run, name, settings, begin_from(run, name, start)?)?)
        }
        StageWork::Distill(settings) => {
            distill::run_distill(run, name, needs, settings, begin_from(run, name, start)?)?
        }
        StageWork::Export(settings) => Some(export::run_export(run, needs, settings, begin_from(run, name, start)?)?),
    })
}

/// Begins a stage that works from a search's trials: that search stage's name.
fn begin_from<'r>(run: &'r Run, name: &str, start: &Start<'_>) -> Result<&'r str, EngineError> {
    let source = run
        .resolved
        .upstream
        .get(name)
        .ok_or_else(|| EngineError::Stage(format!("stage `{name}` has no search stage before it")))?;
    start.begin(None)?;
    Ok(source)
}
