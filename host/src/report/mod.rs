//! A run drawn as HTML: `msh report` writes it as one self-contained file (inline SVG and
//! script, no network), `msh ui` serves the same sections live. Everything is read from the
//! store; nothing here writes to it.

mod sections;
pub mod svg;

use crate::store::{Event, RunMeta, StageRecord, Store, StoreError, TrialRecord};
use crate::workflow::Workflow;

pub use sections::trial_detail;

/// What a page shows: the store's records at one moment.
pub struct Snapshot {
    pub meta: RunMeta,
    pub workflow: Option<Workflow>,
    pub stages: Vec<StageRecord>,
    pub trials: Vec<TrialRecord>,
    pub events: Vec<Event>,
}

impl Snapshot {
    /// Reads the run; `None` when the store has no run record yet.
    pub fn read(store: &Store) -> Result<Option<Self>, StoreError> {
        let Some(meta) = store.run_meta()? else { return Ok(None) };
        let workflow = serde_yaml_ng::from_str(&meta.workflow_text).ok();
        Ok(Some(Self { workflow, stages: store.stages()?, trials: store.trials()?, events: store.events()?, meta }))
    }

    /// Finished trials: what a page changes with.
    pub fn finished(&self) -> usize {
        finished(&self.trials)
    }
}

fn finished(trials: &[TrialRecord]) -> usize {
    trials.iter().filter(|t| t.status.is_finished()).count()
}

/// What a live page waits on, read without the rest of a snapshot: the finished trials,
/// and whether every stage is done or failed.
pub fn progress(store: &Store) -> Result<(usize, bool), StoreError> {
    Ok((finished(&store.trials()?), StageRecord::run_ended(&store.stages()?)))
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
         <style>\n{STYLE}</style>\n</head>\n<body data-live=\"{live}\" data-finished=\"{}\">\n\
         <main id=\"report\">\n{}</main>\n<aside id=\"detail\" hidden></aside>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        snapshot.finished(),
        body(snapshot)
    )
}
