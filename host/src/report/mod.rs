//! A run drawn as HTML: `msh report` writes it as one self-contained file (inline SVG and
//! script, no network), `msh ui` serves the same sections live. Everything is read from the
//! store; nothing here writes to it.

mod sections;
pub mod svg;

use std::collections::BTreeMap;

use msh_engine::workflow::Workflow;
use msh_store::{Event, RunMeta, StageRecord, Stale, Store, StoreError, TrialRecord};

pub use sections::{plots, rows_json, summary, trial_detail};

/// Events a page shows (the last ones).
pub const EVENTS: usize = 30;

/// What a page shows: the store's records at one moment.
pub struct Snapshot {
    pub meta: RunMeta,
    pub workflow: Option<Workflow>,
    pub stages: Vec<StageRecord>,
    /// Every trial, by id.
    pub trials: Vec<TrialRecord>,
    /// The last `EVENTS` events.
    pub events: Vec<Event>,
    /// Running trials whose worker is gone, by id.
    pub stale: BTreeMap<u64, Stale>,
    /// The finish log's position the trials are read at (a live page asks what changed since).
    pub position: u64,
    /// Counts the updates that changed anything: what is drawn from the snapshot can be
    /// kept until it moves.
    pub version: u64,
}

impl Snapshot {
    /// Reads the run; `None` when the store has no run record yet.
    pub fn read(store: &Store) -> Result<Option<Self>, StoreError> {
        // The position first: a trial that finishes while the rest is read is then sent again
        // by the next poll, never missed.
        let position = store.finished_since(u64::MAX)?.1;
        let Some(meta) = store.run_meta()? else { return Ok(None) };
        let workflow = serde_yaml_ng::from_str(&meta.workflow_text).ok();
        let mut snapshot = Self {
            workflow,
            stages: store.stages()?,
            trials: store.trials()?,
            events: store.last_events(EVENTS)?,
            meta,
            stale: BTreeMap::new(),
            position,
            version: 0,
        };
        snapshot.judge(store.clock()?, &msh_store::viewer());
        Ok(Some(snapshot))
    }

    /// Notes which running trials are stale at store-clock `now`.
    fn judge(&mut self, now: f64, viewer: &msh_store::Owner) {
        self.stale = self.trials.iter().filter_map(|t| msh_store::stale(t, now, viewer).map(|s| (t.id, s))).collect();
    }

    /// Brings the snapshot up to date by reading only what changed: the trials that
    /// finished since its position, and those that run or wait (few), not every trial.
    pub fn update(&mut self, store: &Store) -> Result<(), StoreError> {
        let (finished, position) = store.finished_since(self.position)?;
        let stages = store.stages()?;
        let mut open: std::collections::BTreeSet<u64> =
            self.trials.iter().filter(|t| !t.status.is_finished()).map(|t| t.id).collect();
        open.extend(stages.iter().flat_map(|s| s.in_flight.iter().chain(&s.pending)));
        for id in finished.iter().map(|t| t.id) {
            open.remove(&id);
        }
        let mut changed = finished;
        for id in open {
            changed.push(store.trial(id)?);
        }
        let mut moved = false;
        for trial in changed {
            match self.trials.binary_search_by_key(&trial.id, |t| t.id) {
                Ok(at) if self.trials[at] == trial => {}
                Ok(at) => {
                    self.trials[at] = trial;
                    moved = true;
                }
                Err(at) => {
                    self.trials.insert(at, trial);
                    moved = true;
                }
            }
        }
        let events = store.last_events(EVENTS)?;
        let stale = std::mem::take(&mut self.stale);
        self.judge(store.clock()?, &msh_store::viewer());
        moved |= self.position != position || self.stages != stages || self.events != events || self.stale != stale;
        self.position = position;
        self.stages = stages;
        self.events = events;
        self.version += u64::from(moved);
        Ok(())
    }

    /// Where trial `id` is in `trials` (which are in id order).
    pub fn index(&self, id: u64) -> Option<usize> {
        self.trials.binary_search_by_key(&id, |t| t.id).ok()
    }

    pub fn trial(&self, id: u64) -> Option<&TrialRecord> {
        self.index(id).map(|i| &self.trials[i])
    }

    /// Finished trials: what a page changes with.
    pub fn finished(&self) -> usize {
        self.trials.iter().filter(|t| t.status.is_finished()).count()
    }
}

/// Whether every stage of the run is done or failed (what a live page stops on).
pub fn ended(store: &Store) -> Result<bool, StoreError> {
    Ok(StageRecord::run_ended(&store.stages()?))
}

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// The sections of the page (also what `msh ui` refreshes).
pub fn body(snapshot: &Snapshot) -> String {
    sections::all(snapshot)
}

/// A whole HTML document: the sections, the style and the table script; with `live`, the
/// script also follows the run through `msh ui`'s endpoints.
pub fn document(snapshot: &Snapshot, live: bool) -> String {
    let title = svg::escape(&format!("msh: {}", snapshot.meta.workflow_name));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body data-live=\"{live}\" data-finished=\"{}\" data-position=\"{}\">\n\
         <main id=\"report\">\n{}</main>\n<aside id=\"detail\" hidden></aside>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        snapshot.finished(),
        snapshot.position,
        body(snapshot)
    )
}
