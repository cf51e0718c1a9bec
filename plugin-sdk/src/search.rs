//! The searcher's side of the contract: the [`Search`] trait and [`export_search!`],
//! snapshots ([`save_state`], [`restore_keeping_rng`]), trial identity and duplicate
//! tracking ([`trial_key`], [`Seen`]), and ranking ([`score`], [`Beam`]).

use std::cell::RefCell;
use std::collections::HashSet;

#[doc(hidden)]
pub use crate::bindings::exports::msh::plugin::search::Guest as SearchExports;
use crate::bindings::exports::msh::plugin::search::GuestSearcher;
use crate::rng::Rng;
use crate::types::*;

/// A search algorithm. msh creates one per search stage (`new`), hands it every trial as it
/// finishes (`observe`, also for proposals it rejected), and asks it for proposals. After a
/// trap or a resume msh makes a new one and restores its latest snapshot (`save`,
/// `restore`), then tells it the trials that finished since; a searcher without snapshots
/// gets every finished trial replayed, so the state must follow from `new` and the
/// observed trials alone. Export it with [`export_search!`](crate::export_search!).
///
/// ```
/// use msh_plugin_sdk::prelude::*;
///
/// /// Random architectures, none proposed twice.
/// struct Random {
///     space: SearchSpace,
///     rng: Rng,
///     seen: Seen,
/// }
///
/// impl Search for Random {
///     fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
///         Ok(Random { space, rng: Rng::new(context.seed), seen: Seen::default() })
///     }
///     fn observe(&mut self, trial: Trial) {
///         self.seen.insert(&trial.architecture, &trial.hparams);
///     }
///     fn propose(&mut self, _running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
///         let depths = depth_bounds(&self.space);
///         Ok((0..count).map_while(|_| unseen_random(&self.space, &mut self.seen, depths, 64, &mut self.rng)).collect())
///     }
/// }
/// // In the plugin crate: `export_search!(Random);`
///
/// let block = SpaceBlock { name: "dense".into(), description: String::new(), params: vec![], ranks: vec![] };
/// let space = SearchSpace { blocks: vec![block], input_rank: 0, min_depth: 1, max_depth: 3, hparams: vec![] };
/// let mut search = Random::new(Context { seed: 1, budget: 10, config: vec![] }, space).unwrap();
/// // Three depths of one block: three architectures, then nothing unseen is left.
/// assert_eq!(search.propose(&[], 5).unwrap().len(), 3);
/// ```
pub trait Search: Sized + 'static {
    /// The `searcher.config` keys this searcher reads; msh refuses any other key.
    fn settings() -> Vec<Setting> {
        Vec::new()
    }

    /// A new search; an error (a bad setting, an empty space) is returned by every `propose`.
    fn new(context: Context, space: SearchSpace) -> Result<Self, String>;

    /// One trial that finished or was rejected, in the order they finished.
    fn observe(&mut self, trial: Trial);

    /// Up to `count` proposals; `running` are the trials being trained now.
    fn propose(&mut self, running: &[Trial], count: u32) -> Result<Vec<Proposal>, String>;

    /// A snapshot of the state after every trial observed so far; `None` (the default)
    /// keeps none, and a resumed run replays every trial. With a state that derives serde's
    /// `Serialize`, `save_state(self)` is the whole implementation.
    fn save(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the state of a searcher `new` just made by a snapshot `save` returned (from
    /// this same build of the plugin). Keep the new searcher's random state: it was seeded
    /// for this process, and the snapshot's would redraw what was proposed after it.
    /// `restore_state` decodes what `save_state` encoded. An error makes msh replay every
    /// trial into a fresh searcher instead.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Err("this searcher keeps no snapshots".into())
    }
}

/// `state` as snapshot bytes (MessagePack), for `Search::save`.
pub fn save_state<T: serde::Serialize + ?Sized>(state: &T) -> Option<Vec<u8>> {
    rmp_serde::to_vec(state).ok()
}

/// The state `save_state` encoded, for `Search::restore`; an error says why the bytes are
/// not one.
pub fn restore_state<T: serde::de::DeserializeOwned>(state: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(state).map_err(|e| format!("the snapshot is not this searcher's state: {e}"))
}

/// `Search::restore` for a searcher that is its own state (derives serde): `this` becomes
/// the snapshot, keeping its own random generator (`rng` picks it out).
pub fn restore_keeping_rng<T: serde::de::DeserializeOwned>(
    this: &mut T,
    state: &[u8],
    rng: fn(&mut T) -> &mut Rng,
) -> Result<(), String> {
    let mut restored: T = restore_state(state)?;
    std::mem::swap(rng(&mut restored), rng(this));
    *this = restored;
    Ok(())
}

/// The WIT resource around a `Search` (used by `export_search!`).
#[doc(hidden)]
pub struct Hosted<S>(RefCell<Result<S, String>>);

impl<S: Search> GuestSearcher for Hosted<S> {
    fn new(context: Context, space: SearchSpace) -> Self {
        Hosted(RefCell::new(S::new(context, space)))
    }

    fn observe(&self, trials: Vec<Trial>) {
        if let Ok(search) = self.0.borrow_mut().as_mut() {
            trials.into_iter().for_each(|t| search.observe(t));
        }
    }

    fn propose(&self, running: Vec<Trial>, count: u32) -> Result<Vec<Proposal>, String> {
        match self.0.borrow_mut().as_mut() {
            Ok(search) => search.propose(&running, count),
            Err(e) => Err(e.clone()),
        }
    }

    fn save(&self) -> Option<Vec<u8>> {
        self.0.borrow().as_ref().ok().and_then(S::save)
    }

    fn restore(&self, state: Vec<u8>) -> Result<(), String> {
        match self.0.borrow_mut().as_mut() {
            Ok(search) => search.restore(&state),
            Err(e) => Err(e.clone()),
        }
    }
}

/// Exports a type implementing `Search` as the plugin's searcher.
#[macro_export]
macro_rules! export_search {
    ($ty:ty) => {
        #[doc(hidden)]
        struct MshSearchExports;
        impl $crate::search::SearchExports for MshSearchExports {
            type Searcher = $crate::search::Hosted<$ty>;
            fn settings() -> ::std::vec::Vec<$crate::types::Setting> {
                <$ty as $crate::search::Search>::settings()
            }
        }
        $crate::bindings::export_searcher!(MshSearchExports with_types_in $crate::bindings);
    };
}

/// The canonical text of a trial (`msh_vocab::trial_key`, the host's own): blocks with
/// the parameters they name, sorted by name, then hyper-parameters by name. Two proposals
/// with one key are the same experiment.
pub fn trial_key(architecture: &[BlockRef], hparams: &[(String, f64)]) -> String {
    let architecture: Vec<msh_vocab::BlockRef> = architecture.iter().map(vocab_block).collect();
    msh_vocab::trial_key(&architecture, hparams, |_, _, _| false)
}

/// A block in the shared vocabulary's terms.
pub(crate) fn vocab_block(block: &BlockRef) -> msh_vocab::BlockRef {
    msh_vocab::BlockRef {
        name: block.name.clone(),
        params: block.params.iter().map(|p| (p.name.clone(), vocab_value(&p.value))).collect(),
    }
}

/// A parameter value in the shared vocabulary's terms.
pub(crate) fn vocab_value(value: &Value) -> msh_vocab::ParamValue {
    match value {
        Value::Int(v) => msh_vocab::ParamValue::Int(*v),
        Value::Float(v) => msh_vocab::ParamValue::Float(*v),
        Value::Flag(v) => msh_vocab::ParamValue::Flag(*v),
        Value::Text(v) => msh_vocab::ParamValue::Text(v.clone()),
        Value::Ints(v) => msh_vocab::ParamValue::Ints(v.clone()),
    }
}

/// The trials a search has seen (finished, running, rejected), by [`trial_key`]: a
/// parameter at its default counts as absent.
///
/// ```
/// use msh_plugin_sdk::prelude::*;
///
/// let mut seen = Seen::default();
/// let lr = vec![("learning_rate".to_string(), 0.01)];
/// assert!(seen.insert(&[block_ref("conv"), block_ref("dense")], &lr));
/// assert!(!seen.insert(&[block_ref("conv"), block_ref("dense")], &lr), "a repeat");
/// assert!(!seen.contains(&[block_ref("conv")], &lr));
/// assert_eq!(seen.len(), 1);
/// ```
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Seen(HashSet<String>);

impl Seen {
    /// Records a trial; `false` when it was already seen.
    pub fn insert(&mut self, architecture: &[BlockRef], hparams: &[(String, f64)]) -> bool {
        self.0.insert(trial_key(architecture, hparams))
    }

    pub fn contains(&self, architecture: &[BlockRef], hparams: &[(String, f64)]) -> bool {
        self.0.contains(&trial_key(architecture, hparams))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A trial with a usable score: a single model that completed or was stopped early, with a
/// finite objective.
pub fn is_scored(trial: &Trial) -> bool {
    matches!(trial.status, TrialStatus::Completed | TrialStatus::Stopped)
        && matches!(trial.kind, TrialKind::Single)
        && trial.objective.is_some_and(f64::is_finite)
}

/// The objective for ranking, lower is better; trials without one rank last.
pub fn score(trial: &Trial) -> f64 {
    if is_scored(trial) { trial.objective.unwrap_or(f64::INFINITY) } else { f64::INFINITY }
}

/// The best `k` scored trials, kept sorted as trials arrive (a beam).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Beam {
    k: usize,
    trials: Vec<Trial>,
}

impl Beam {
    pub fn new(k: usize) -> Self {
        Self { k: k.max(1), trials: Vec::new() }
    }

    /// Offers a trial; `true` when it entered the beam.
    pub fn offer(&mut self, trial: &Trial) -> bool {
        if !is_scored(trial) {
            return false;
        }
        let at = self.trials.partition_point(|t| score(t) <= score(trial));
        if at >= self.k {
            return false;
        }
        self.trials.insert(at, trial.clone());
        self.trials.truncate(self.k);
        true
    }

    /// Best first.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    pub fn best(&self) -> Option<&Trial> {
        self.trials.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moves::*;
    use crate::space::*;

    fn space() -> SearchSpace {
        let conv = SpaceBlock {
            name: "conv".into(),
            description: String::new(),
            params: vec![ParamSpec {
                name: "filters".into(),
                description: String::new(),
                kind: ParamKind::IntRange((4, 512)),
                default: Value::Int(32),
            }],
            ranks: vec![(2, 2), (3, 3)],
        };
        let dense = SpaceBlock {
            name: "dense".into(),
            description: String::new(),
            params: vec![],
            ranks: vec![(1, 1), (2, 1)],
        };
        SearchSpace { blocks: vec![conv, dense], input_rank: 2, min_depth: 1, max_depth: 3, hparams: vec![] }
    }

    #[test]
    fn ranks_rule_out_a_conv_after_a_dense_block() {
        let space = space();
        assert!(fits(&space, &[block_ref("conv"), block_ref("dense")]));
        assert!(!fits(&space, &[block_ref("dense"), block_ref("conv")]));
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            assert!(fits(&space, &random_architecture(&space, 3, &mut rng)));
        }
        assert_eq!(growth_position(&space, &[block_ref("conv"), block_ref("dense")]), 1);
    }

    #[test]
    fn neighbours_fit_and_step_parameters() {
        let space = space();
        let all = neighbours(&space, &[block_ref("conv"), block_ref("dense")]);
        assert!(all.iter().all(|n| fits(&space, n)));
        let keys: Vec<String> = all.iter().map(|n| trial_key(n, &[])).collect();
        assert!(keys.contains(&"conv(filters=16),dense".to_string()), "{keys:?}");
        assert!(keys.contains(&"conv(filters=64),dense".to_string()), "{keys:?}");
        assert!(keys.contains(&"conv,conv,dense".to_string()), "{keys:?}");
        assert!(!keys.contains(&"dense,conv".to_string()));
    }

    /// A searcher with a snapshot: random unseen proposals.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Snapshotting {
        space: SearchSpace,
        rng: Rng,
        seen: Seen,
        observed: usize,
    }

    impl Search for Snapshotting {
        fn new(context: Context, space: SearchSpace) -> Result<Self, String> {
            Ok(Self { space, rng: Rng::new(context.seed), seen: Seen::default(), observed: 0 })
        }
        fn observe(&mut self, trial: Trial) {
            self.seen.insert(&trial.architecture, &trial.hparams);
            self.observed += 1;
        }
        fn propose(&mut self, _running: &[Trial], count: u32) -> Result<Vec<Proposal>, String> {
            let depths = depth_bounds(&self.space);
            Ok((0..count)
                .map_while(|_| unseen_random(&self.space, &mut self.seen, depths, 256, &mut self.rng))
                .collect())
        }
        fn save(&self) -> Option<Vec<u8>> {
            save_state(self)
        }
        fn restore(&mut self, state: &[u8]) -> Result<(), String> {
            restore_keeping_rng(self, state, |s| &mut s.rng)
        }
    }

    /// A searcher without one.
    struct Forgetful;

    impl Search for Forgetful {
        fn new(_context: Context, _space: SearchSpace) -> Result<Self, String> {
            Ok(Self)
        }
        fn observe(&mut self, _trial: Trial) {}
        fn propose(&mut self, _running: &[Trial], _count: u32) -> Result<Vec<Proposal>, String> {
            Ok(Vec::new())
        }
    }

    fn finished(id: u64, architecture: Vec<BlockRef>) -> Trial {
        Trial {
            id,
            architecture,
            hparams: vec![("learning_rate".into(), 0.01)],
            status: TrialStatus::Completed,
            kind: TrialKind::Single,
            objective: Some(id as f64),
            accuracy: Some(0.5),
            parameters: 10,
            parent: None,
            inherited: 0,
            epochs: 3,
            error: None,
        }
    }

    #[test]
    fn a_snapshot_restores_the_state_and_keeps_the_new_seed() {
        let context = Context { seed: 7, budget: 0, config: vec![] };
        let mut rng = Rng::new(3);
        let trials: Vec<Trial> =
            (0..40).map(|id| finished(id, random_architecture(&space(), 1 + id as usize % 3, &mut rng))).collect();
        let told = Hosted::<Snapshotting>::new(context.clone(), space());
        told.observe(trials.clone());
        let state = GuestSearcher::save(&told).expect("a snapshot");

        // Restored into a searcher of the same seed: the same state, so the same answers.
        let restored = Hosted::<Snapshotting>::new(context.clone(), space());
        GuestSearcher::restore(&restored, state.clone()).expect("it restores");
        assert_eq!(restored.0.borrow().as_ref().unwrap().observed, 40);
        let keys = |proposals: Vec<Proposal>| -> Vec<String> {
            proposals.iter().map(|p| trial_key(&p.architecture, &p.hparams)).collect()
        };
        let (a, b) = (keys(told.propose(vec![], 5).unwrap()), keys(restored.propose(vec![], 5).unwrap()));
        assert_eq!(a.len(), 5);
        assert_eq!(a, b);
        let old: HashSet<String> = trials.iter().map(|t| trial_key(&t.architecture, &t.hparams)).collect();
        assert!(b.iter().all(|key| !old.contains(key)), "{b:?}");

        // Into one of another seed: the seen trials, but that seed's draws.
        let reseeded = Hosted::<Snapshotting>::new(Context { seed: 8, ..context.clone() }, space());
        GuestSearcher::restore(&reseeded, state).expect("it restores");
        let search = reseeded.0.borrow();
        let search = search.as_ref().unwrap();
        assert_eq!(search.seen.len(), told.0.borrow().as_ref().unwrap().seen.len() - 5);
        assert_eq!(search.rng.clone().next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn corrupt_snapshots_and_searchers_without_them_are_refused() {
        let context = Context { seed: 7, budget: 0, config: vec![] };
        let searcher = Hosted::<Snapshotting>::new(context.clone(), space());
        let refused = GuestSearcher::restore(&searcher, vec![0xc1, 1, 2]).unwrap_err();
        assert!(refused.starts_with("the snapshot is not this searcher's state"), "{refused}");
        let forgetful = Hosted::<Forgetful>::new(context, space());
        assert_eq!(GuestSearcher::save(&forgetful), None);
        assert_eq!(GuestSearcher::restore(&forgetful, vec![1]).unwrap_err(), "this searcher keeps no snapshots");
    }

    #[test]
    fn a_default_value_has_the_same_key_as_none() {
        let space = space();
        let spec = &space.blocks[0].params[0];
        let mut block = block_ref("conv");
        set_param(&mut block, spec, Value::Int(64));
        set_param(&mut block, spec, Value::Int(32));
        assert_eq!(trial_key(&[block], &[]), trial_key(&[block_ref("conv")], &[]));
    }
}
