//! A search session: one searcher plugin driving one search stage. A 0.2.0 or later
//! searcher is a live resource told each trial once (`observe`), so a proposal costs the
//! same at any history length; after a trap, or in a resumed run, a new one is made and
//! brought up to date: from its latest snapshot (0.3.0 `save`/`restore`) and the trials
//! observed since, else by replaying every observed trial. A 0.1.0 searcher is stateless
//! and gets its (optionally bounded) history in every call. All answer through the same
//! checks.

use std::collections::{BTreeSet, HashSet, VecDeque};

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::bindings::{searcher::Searcher, searcher_v1, searcher_v2};
use super::sandbox::{self, Sandbox};
use super::{Plugin, PluginError, convert, types};
use msh_store::TrialRecord;
use msh_vocab::space::{ParamKind, Proposal, SearchContext, SearchSpace, Setting};
use msh_vocab::{BlockRef, ParamValue};

/// Trials per `observe` call when replaying (each call gets its own fuel).
const REPLAY_CHUNK: usize = 512;

/// A searcher and what it has been told.
pub struct SearchSession {
    plugin: Plugin,
    context: types::Context,
    space: types::SearchSpace,
    /// The space in the host's terms, for the checks.
    domain: SearchSpace,
    /// Ids of every trial observed, so that a proposal's parent can be checked.
    known: HashSet<u64>,
    kind: Kind,
    /// What happened to the live searcher since the last call (rebuilt after a trap,
    /// restored from a snapshot), for the event log, until `take_notes` reads it.
    notes: Vec<String>,
    /// Trials covered by the snapshot just restored, until the next call tells the rest.
    restored: Option<u64>,
}

impl std::fmt::Debug for SearchSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchSession").field("plugin", &self.plugin.name).finish()
    }
}

enum Kind {
    /// 0.2.0 and later: the live resource (made on first use), the trials observed in
    /// order and how many of them it was told, and the latest snapshot to rebuild it from.
    /// `complete`: `observed` holds every trial (not so after a restore: the snapshot
    /// stands for those before it).
    Live { live: Option<Live>, observed: Vec<types::Trial>, told: usize, base: Option<Base>, complete: bool },
    /// 0.1.0: the history handed over in every call.
    Stateless(Window),
}

/// A searcher snapshot and how many of the observed trials it covers.
struct Base {
    state: Vec<u8>,
    covers: usize,
}

struct Live {
    store: Store<Sandbox>,
    bindings: Bindings,
    handle: ResourceAny,
}

/// The searcher resource of each live contract version; 0.2.0's lacks `save`/`restore`.
enum Bindings {
    Current(Searcher),
    V2(searcher_v2::Searcher),
}

impl Live {
    /// A new searcher made with `context`.
    fn new(plugin: &Plugin, context: &types::Context, space: &types::SearchSpace) -> Result<Self, PluginError> {
        let mut store = sandbox::store(&plugin.engine, &plugin.limits);
        let instantiate = |store: &mut Store<Sandbox>| {
            if super::compatible("0.2.0", &plugin.version) {
                searcher_v2::Searcher::instantiate(store, &plugin.component, &plugin.linker).map(Bindings::V2)
            } else {
                Searcher::instantiate(store, &plugin.component, &plugin.linker).map(Bindings::Current)
            }
        };
        let bindings = instantiate(&mut store).map_err(|e| plugin.call_error("instantiate", e))?;
        let handle = match &bindings {
            Bindings::Current(b) => b.msh_plugin_search().searcher().call_constructor(&mut store, context, space),
            Bindings::V2(b) => b.msh_plugin_search().searcher().call_constructor(&mut store, context, space),
        }
        .map_err(|e| plugin.call_error("searcher constructor", e))?;
        Ok(Self { store, bindings, handle })
    }

    fn observe(&mut self, plugin: &Plugin, trials: &[types::Trial]) -> Result<(), PluginError> {
        self.store.set_fuel(plugin.limits.fuel).expect("fuel is enabled");
        let (store, handle) = (&mut self.store, self.handle);
        match &self.bindings {
            Bindings::Current(b) => b.msh_plugin_search().searcher().call_observe(store, handle, trials),
            Bindings::V2(b) => b.msh_plugin_search().searcher().call_observe(store, handle, trials),
        }
        .map_err(|e| plugin.call_error(&format!("observe({} trials)", trials.len()), e))
    }

    /// The answer (a refusal is `Ok(Err(..))`); `Err` when the call trapped.
    fn propose(
        &mut self,
        plugin: &Plugin,
        call: &str,
        running: &[types::Trial],
        count: u32,
    ) -> Result<Result<Vec<types::Proposal>, PluginError>, PluginError> {
        self.store.set_fuel(plugin.limits.fuel).expect("fuel is enabled");
        let (store, handle) = (&mut self.store, self.handle);
        Ok(match &self.bindings {
            Bindings::Current(b) => b.msh_plugin_search().searcher().call_propose(store, handle, running, count),
            Bindings::V2(b) => b.msh_plugin_search().searcher().call_propose(store, handle, running, count),
        }
        .map_err(|e| plugin.call_error(call, e))?
        .map_err(|reason| plugin.error(call, format!("refused: {reason}"))))
    }

    /// Its snapshot; `None` when it keeps none (a 0.2.0 searcher never does).
    fn save(&mut self, plugin: &Plugin) -> Result<Option<Vec<u8>>, PluginError> {
        let Bindings::Current(b) = &self.bindings else { return Ok(None) };
        self.store.set_fuel(plugin.limits.fuel).expect("fuel is enabled");
        b.msh_plugin_search()
            .searcher()
            .call_save(&mut self.store, self.handle)
            .map_err(|e| plugin.call_error("save()", e))
    }

    fn restore(&mut self, plugin: &Plugin, state: &[u8]) -> Result<(), PluginError> {
        let call = format!("restore({} bytes)", state.len());
        let Bindings::Current(b) = &self.bindings else {
            return Err(plugin.error(&call, "a 0.2.0 searcher cannot restore a snapshot".into()));
        };
        self.store.set_fuel(plugin.limits.fuel).expect("fuel is enabled");
        b.msh_plugin_search()
            .searcher()
            .call_restore(&mut self.store, self.handle, state)
            .map_err(|e| plugin.call_error(&call, e))?
            .map_err(|reason| plugin.error(&call, format!("refused: {reason}")))
    }
}

impl Plugin {
    /// Starts a search with this searcher; `history` bounds what a 0.1.0 searcher is handed
    /// (the best half and the most recent half).
    pub fn search(
        &self,
        context: &SearchContext,
        space: &SearchSpace,
        history: Option<usize>,
    ) -> Result<SearchSession, PluginError> {
        self.expect_world("search", super::World::Searcher)?;
        let kind = if self.is_stateless_searcher() {
            Kind::Stateless(Window::new(history))
        } else {
            Kind::Live { live: None, observed: Vec::new(), told: 0, base: None, complete: true }
        };
        Ok(SearchSession {
            plugin: self.clone(),
            context: convert::context(context),
            space: convert::space(space),
            domain: space.clone(),
            known: HashSet::new(),
            kind,
            notes: Vec::new(),
            restored: None,
        })
    }

    /// The `searcher.config` keys a searcher declares (empty: it accepts any).
    pub fn settings(&self) -> Result<Vec<Setting>, PluginError> {
        self.expect_world("settings()", super::World::Searcher)?;
        if self.is_stateless_searcher() {
            return Ok(Vec::new());
        }
        let mut store = sandbox::store(&self.engine, &self.limits);
        let settings = if super::compatible("0.2.0", &self.version) {
            let bindings = searcher_v2::Searcher::instantiate(&mut store, &self.component, &self.linker)
                .map_err(|e| self.call_error("instantiate", e))?;
            bindings.msh_plugin_search().call_settings(&mut store)
        } else {
            let bindings = Searcher::instantiate(&mut store, &self.component, &self.linker)
                .map_err(|e| self.call_error("instantiate", e))?;
            bindings.msh_plugin_search().call_settings(&mut store)
        }
        .map_err(|e| self.call_error("settings()", e))?;
        if settings.len() > self.limits.max_items {
            return Err(self.error("settings()", format!("returned {} settings", settings.len())));
        }
        Ok(settings.into_iter().map(convert::setting_from).collect())
    }

    /// One proposal round from a fresh search told `history`: for checks and benchmarks.
    pub fn propose_once(
        &self,
        context: &SearchContext,
        space: &SearchSpace,
        history: &[TrialRecord],
        count: u32,
    ) -> Result<Vec<Proposal>, PluginError> {
        let mut session = self.search(context, space, None)?;
        session.observe(history);
        session.propose(&[], count)
    }
}

impl SearchSession {
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// What happened to the live searcher since the last call (rebuilt after a trap,
    /// restored from a snapshot, a snapshot that would not restore), for the event log.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Whether the searcher may keep snapshots (0.3.0 and later; it may still decline).
    pub fn keeps_snapshots(&self) -> bool {
        matches!(self.kind, Kind::Live { .. }) && !super::compatible("0.2.0", &self.plugin.version)
    }

    /// The space the searcher draws from.
    pub fn space(&self) -> &SearchSpace {
        &self.domain
    }

    /// Tells the searcher trials that finished (delivered with the next `propose`).
    pub fn observe(&mut self, trials: &[TrialRecord]) {
        self.tell(trials.iter().map(convert::trial).collect());
    }

    /// Tells the searcher that `proposal` was not trained, and why.
    pub fn reject(&mut self, proposal: &Proposal, reason: String) {
        self.tell(vec![convert::rejected(proposal, reason)]);
    }

    fn tell(&mut self, trials: Vec<types::Trial>) {
        self.known.extend(trials.iter().map(|t| t.id));
        match &mut self.kind {
            Kind::Live { observed, .. } => observed.extend(trials),
            Kind::Stateless(window) => trials.into_iter().for_each(|t| window.push(t)),
        }
    }

    /// Every trial id observed (the parents a proposal may name).
    pub fn known(&self) -> impl Iterator<Item = u64> + '_ {
        self.known.iter().copied().filter(|&id| id != u64::MAX)
    }

    /// Starts from a stored snapshot of a searcher that had been told `trials` trials, with
    /// these ids: a new searcher restores it now, and is told only what is observed after.
    /// Before anything is observed. An error (the snapshot would not restore) leaves the
    /// session as it was: every trial is to be observed instead.
    pub fn restore(&mut self, state: Vec<u8>, trials: u64, ids: &[u64]) -> Result<(), PluginError> {
        if !matches!(&self.kind, Kind::Live { live: None, observed, .. } if observed.is_empty()) {
            return Err(self.plugin.error("restore", "the session has started already".into()));
        }
        let mut context = self.context.clone();
        context.seed ^= (ids.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut made = Live::new(&self.plugin, &context, &self.space)?;
        made.restore(&self.plugin, &state)?;
        let Kind::Live { live, base, complete, told, .. } = &mut self.kind else { unreachable!("checked above") };
        *live = Some(made);
        *told = 0;
        *base = Some(Base { state, covers: 0 });
        *complete = false;
        self.known.extend(ids);
        self.restored = Some(trials);
        Ok(())
    }

    /// The context of a searcher made again (a restart, a trap): a seed of its own. With
    /// the first one it would redraw everything it proposed before (now seen, so skipped)
    /// and, past a few hundred trials, give up before reaching anything new.
    fn restart_context(&self) -> types::Context {
        let mut context = self.context.clone();
        context.seed ^= (self.known.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        context
    }

    /// A snapshot of the searcher after every trial observed so far, kept in memory too
    /// (a rebuild after a trap starts from it, and the trials it covers are let go);
    /// `None` when it keeps none. After a trap the searcher is made anew at the next call.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>, PluginError> {
        if !self.keeps_snapshots() {
            return Ok(None);
        }
        let saved = self.ready().and_then(|()| {
            let Kind::Live { live: Some(live), .. } = &mut self.kind else { unreachable!("made ready") };
            live.save(&self.plugin)
        });
        let Kind::Live { live, observed, base, told, complete } = &mut self.kind else {
            unreachable!("a live session")
        };
        match saved {
            // It stands for every trial observed so far (all told): only those after it are
            // kept, so memory stays bounded however long the run. Should it ever fail to
            // restore after a trap, a new run replays the trials from the store.
            Ok(Some(state)) => {
                observed.clear();
                *told = 0;
                *complete = false;
                *base = Some(Base { state: state.clone(), covers: 0 });
                Ok(Some(state))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                *live = None;
                Err(e)
            }
        }
    }

    /// Up to `count` proposals, checked against the space: depth bounds, allowed blocks,
    /// and a parent the searcher has been told of.
    pub fn propose(&mut self, running: &[TrialRecord], count: u32) -> Result<Vec<Proposal>, PluginError> {
        let running: Vec<types::Trial> = running.iter().map(convert::trial).collect();
        let running = &running[..];
        let call = format!("propose({} running, count {count})", running.len());
        let proposals = match &mut self.kind {
            Kind::Stateless(window) => {
                let history = window.view();
                let mut context = self.context.clone();
                context.config.extend(window.facts());
                // Each call gets its own seed: the same history must not give the same answer.
                context.seed ^= (window.calls as u64 + running.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                window.calls += 1;
                self.plugin.propose_v1(&call, &context, &self.space, &history, count)?
            }
            Kind::Live { .. } => match self.propose_live(&call, running, count) {
                Ok(answer) => answer?,
                // A trap leaves the instance unusable: rebuild it and retry once.
                Err(trap) => {
                    if let Kind::Live { live, observed, base, .. } = &mut self.kind {
                        *live = None;
                        let from = match base {
                            Some(base) => {
                                format!(
                                    "its latest snapshot and the {} trials observed since",
                                    observed.len() - base.covers
                                )
                            }
                            None => format!("{} trials", observed.len()),
                        };
                        self.notes.push(format!("{trap}; rebuilt from {from}"));
                    }
                    self.propose_live(&call, running, count).unwrap_or_else(Err)?
                }
            },
        };
        let proposals = proposals.into_iter().map(convert::proposal_from).collect();
        self.check(&call, running, count, proposals)
    }

    /// The live searcher's answer (a refusal is `Ok(Err(..))`); `Err` when a call trapped.
    fn propose_live(
        &mut self,
        call: &str,
        running: &[types::Trial],
        count: u32,
    ) -> Result<Result<Vec<types::Proposal>, PluginError>, PluginError> {
        self.ready()?;
        let Kind::Live { live: Some(live), .. } = &mut self.kind else { unreachable!("made ready") };
        live.propose(&self.plugin, call, running, count)
    }

    /// Makes the live searcher when there is none (from the latest snapshot and the trials
    /// observed since, else from every trial), and tells it every trial observed that it
    /// has not been told. `Err` when a call trapped.
    fn ready(&mut self) -> Result<(), PluginError> {
        let context = self.restart_context();
        let plugin = &self.plugin;
        let Kind::Live { live, observed, told, base, complete } = &mut self.kind else {
            unreachable!("a live session")
        };
        if live.is_none() {
            let mut made = Live::new(plugin, &context, &self.space)?;
            *told = 0;
            if let Some(snapshot) = base.as_ref() {
                match made.restore(plugin, &snapshot.state) {
                    Ok(()) => *told = snapshot.covers,
                    // The trials before the snapshot are in the store, not here: a new run
                    // replays them.
                    Err(e) if !*complete => {
                        return Err(plugin.error(
                            "restore",
                            format!(
                                "rebuilding the searcher after a trap, its snapshot would not restore ({e}); run \
                                 again to resume, replaying every trial"
                            ),
                        ));
                    }
                    // Nothing is lost: a fresh searcher is told every trial instead.
                    Err(e) => {
                        let note = format!(
                            "searcher `{}`: its snapshot could not be restored ({e}); replayed all {} trials instead",
                            plugin.name,
                            observed.len()
                        );
                        tracing::warn!("{note}");
                        self.notes.push(note);
                        *base = None;
                        made = Live::new(plugin, &context, &self.space)?;
                    }
                }
            }
            *live = Some(made);
        }
        let live = live.as_mut().expect("made above");
        let before = *told;
        for chunk in observed[*told..].chunks(REPLAY_CHUNK) {
            live.observe(plugin, chunk)?;
            *told += chunk.len();
        }
        if let Some(trials) = self.restored.take() {
            self.notes.push(format!(
                "searcher `{}`: restored its snapshot of {trials} trials; replayed the {} observed after it",
                plugin.name,
                *told - before
            ));
        }
        Ok(())
    }

    /// Why a proposal cannot be trained as asked, if it cannot: a block parameter the block
    /// does not declare, of the wrong type or out of its range, or a hyper-parameter outside
    /// the workflow's space.
    pub fn invalid(&self, proposal: &Proposal) -> Option<String> {
        for (i, block) in proposal.architecture.iter().enumerate() {
            let specs = self.domain.blocks.iter().find(|b| b.name == block.name).map_or(&[][..], |b| &b.params[..]);
            for (j, (name, value)) in block.params.iter().enumerate() {
                let at = format!("block `{}` (#{i}), parameter `{name}`", block.name);
                if block.params[..j].iter().any(|(n, _)| n == name) {
                    return Some(format!("{at} is given twice"));
                }
                let Some(spec) = specs.iter().find(|s| s.name == *name) else {
                    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    return Some(format!("{at} is not a parameter of the block (it has: {})", known.join(", ")));
                };
                if let Err(reason) = value_fits(&spec.kind, value) {
                    return Some(format!("{at}: {reason}"));
                }
            }
        }
        for (name, value) in &proposal.hparams {
            let Some(range) = self.domain.hparams.iter().find(|h| h.name == *name) else {
                return Some(format!("hyper-parameter `{name}` is not in the workflow's space.hparams"));
            };
            if !range.contains(*value) {
                return Some(format!("hyper-parameter `{name}` = {value} is outside the workflow's space"));
            }
        }
        None
    }

    /// The canonical text of a proposal (`SearchSpace::trial_key`): equal keys are the same
    /// experiment.
    pub fn key(&self, architecture: &[BlockRef], hparams: &[(String, f64)]) -> String {
        self.domain.trial_key(architecture, hparams)
    }

    fn check(
        &self,
        call: &str,
        running: &[types::Trial],
        count: u32,
        proposals: Vec<Proposal>,
    ) -> Result<Vec<Proposal>, PluginError> {
        let space = &self.domain;
        if proposals.len() > count as usize {
            return Err(self.plugin.error(call, format!("returned {} proposals for {count} asked", proposals.len())));
        }
        for (i, p) in proposals.iter().enumerate() {
            let depth = p.architecture.len() as u32;
            if depth < space.min_depth.max(1) || depth > space.max_depth.max(space.min_depth) {
                return Err(self.plugin.error(
                    call,
                    format!("proposal {i} has depth {depth}, outside {}..={}", space.min_depth, space.max_depth),
                ));
            }
            if let Some(bad) = p.architecture.iter().find(|b| !space.blocks.iter().any(|s| s.name == b.name)) {
                return Err(self
                    .plugin
                    .error(call, format!("proposal {i} uses block `{}`, which the space does not allow", bad.name)));
            }
            let known = |id: u64| self.known.contains(&id) || running.iter().any(|t| t.id == id);
            if let Some(parent) = p.parent.filter(|id| !known(*id)) {
                return Err(self
                    .plugin
                    .error(call, format!("proposal {i} names parent trial {parent}, which it was never told of")));
            }
        }
        Ok(proposals)
    }
}

impl Plugin {
    fn is_stateless_searcher(&self) -> bool {
        super::compatible("0.1.0", &self.version)
    }

    fn propose_v1(
        &self,
        call: &str,
        context: &types::Context,
        space: &types::SearchSpace,
        history: &[types::Trial],
        count: u32,
    ) -> Result<Vec<types::Proposal>, PluginError> {
        let mut store = sandbox::store(&self.engine, &self.limits);
        let searcher = searcher_v1::Searcher::instantiate(&mut store, &self.component, &self.linker)
            .map_err(|e| self.call_error("instantiate", e))?;
        let history: Vec<_> = history.iter().map(convert::trial_v1).collect();
        let proposals = searcher
            .call_propose(&mut store, &convert::context_v1(context), &convert::space_v1(space), &history, count)
            .map_err(|e| self.call_error(call, e))?
            .map_err(|reason| self.error(call, format!("refused: {reason}")))?;
        Ok(proposals.into_iter().map(convert::proposal_from_v1).collect())
    }
}

/// Whether a value is of a spec's kind and within its range.
fn value_fits(kind: &ParamKind, value: &ParamValue) -> Result<(), String> {
    use {ParamKind as K, ParamValue as V};
    match (kind, value) {
        (K::IntRange(lo, hi), V::Int(v)) if (lo..=hi).contains(&v) => Ok(()),
        (K::IntRange(lo, hi), V::Float(v)) if v.fract() == 0.0 && *v >= *lo as f64 && *v <= *hi as f64 => Ok(()),
        (K::IntRange(lo, hi), v) => Err(format!("{v} is not an integer in {lo}..={hi}")),
        (K::FloatRange(lo, hi), V::Float(v)) if v.is_finite() && v >= lo && v <= hi => Ok(()),
        (K::FloatRange(lo, hi), V::Int(v)) if (*v as f64) >= *lo && (*v as f64) <= *hi => Ok(()),
        (K::FloatRange(lo, hi), v) => Err(format!("{v} is not a number in {lo}..={hi}")),
        (K::Choice(words), V::Text(w)) if words.contains(w) => Ok(()),
        (K::Choice(words), v) => Err(format!("{v} is not one of {}", words.join(", "))),
        (K::Flag, V::Flag(_)) => Ok(()),
        (K::Flag, v) => Err(format!("{v} is not true or false")),
    }
}

/// What a 0.1.0 searcher is handed: every trial, or with a limit the best half and the most
/// recent half, so memory and call cost stay bounded. Also the facts its record lacks.
struct Window {
    limit: Option<usize>,
    /// Every trial (no limit), or the best ones, best first (with a limit).
    best: Vec<types::Trial>,
    recent: VecDeque<types::Trial>,
    completed: u64,
    ensemble_members: BTreeSet<u64>,
    /// Calls so far (mixed into the seed).
    calls: usize,
}

impl Window {
    fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            best: Vec::new(),
            recent: VecDeque::new(),
            completed: 0,
            ensemble_members: BTreeSet::new(),
            calls: 0,
        }
    }

    fn push(&mut self, trial: types::Trial) {
        if matches!(trial.status, types::TrialStatus::Rejected) {
            return;
        }
        self.completed +=
            u64::from(matches!(trial.status, types::TrialStatus::Completed | types::TrialStatus::Stopped));
        if let types::TrialKind::Ensemble(members) = &trial.kind {
            self.ensemble_members.extend(members.iter().copied());
        }
        let Some(limit) = self.limit else {
            self.best.push(trial);
            return;
        };
        let keep_best = limit.div_ceil(2);
        let keep_recent = limit - keep_best;
        let score = |t: &types::Trial| match (t.status, t.objective) {
            (types::TrialStatus::Completed, Some(o)) if o.is_finite() => o,
            _ => f64::INFINITY,
        };
        if score(&trial).is_finite() {
            let at = self.best.partition_point(|t| score(t) <= score(&trial));
            if at < keep_best {
                self.best.insert(at, trial.clone());
                self.best.truncate(keep_best);
            }
        }
        if keep_recent > 0 {
            self.recent.push_back(trial);
            if self.recent.len() > keep_recent {
                self.recent.pop_front();
            }
        }
    }

    /// What 0.1.0's trial record cannot say, as `msh.*` config entries: completed trials of
    /// the whole search (a bounded history holds fewer), and the ensembles' members.
    fn facts(&self) -> Vec<(String, String)> {
        let members: Vec<String> = self.ensemble_members.iter().map(u64::to_string).collect();
        vec![
            ("msh.completed_trials".into(), self.completed.to_string()),
            ("msh.ensemble_members".into(), members.join(",")),
        ]
    }

    /// The trials to hand over, oldest first, each once.
    fn view(&self) -> Vec<types::Trial> {
        if self.limit.is_none() {
            return self.best.clone();
        }
        let mut all: Vec<types::Trial> = self.best.clone();
        all.extend(self.recent.iter().filter(|t| !self.best.iter().any(|b| b.id == t.id)).cloned());
        all.sort_by_key(|t| t.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(id: u64, objective: f64, members: Vec<u64>) -> types::Trial {
        types::Trial {
            id,
            architecture: vec![],
            hparams: vec![],
            status: types::TrialStatus::Completed,
            kind: if members.is_empty() { types::TrialKind::Single } else { types::TrialKind::Ensemble(members) },
            objective: Some(objective),
            accuracy: None,
            parameters: 0,
            parent: None,
            inherited: 0,
            epochs: 1,
            error: None,
        }
    }

    #[test]
    fn a_bounded_window_keeps_the_best_and_the_recent_and_reports_the_rest() {
        let mut window = Window::new(Some(4));
        for (id, o) in [5.0, 1.0, 4.0, 3.0, 2.0, 6.0].into_iter().enumerate() {
            window.push(trial(id as u64, o, if id == 5 { vec![1, 4] } else { vec![] }));
        }
        let ids: Vec<u64> = window.view().iter().map(|t| t.id).collect();
        // The two best (1, 4) and the two most recent (4, 5), once each, oldest first.
        assert_eq!(ids, [1, 4, 5]);
        let facts = window.facts();
        assert_eq!(facts[0], ("msh.completed_trials".to_string(), "6".to_string()));
        assert_eq!(facts[1], ("msh.ensemble_members".to_string(), "1,4".to_string()));
    }
}
