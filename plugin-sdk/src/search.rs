//! Searcher helpers: the `Search` trait and its export macro, trial identity and duplicate
//! tracking, settings, and rank-aware architectures and one-step moves over the space.

use std::cell::RefCell;
use std::collections::HashSet;

pub use crate::bindings::exports::msh::plugin::search::Guest as SearchExports;
use crate::bindings::exports::msh::plugin::search::GuestSearcher;
pub use crate::bindings::msh::plugin::types::*;
use crate::helpers::Rng;

/// A search algorithm. msh creates one per search stage (`new`), hands it every trial as it
/// finishes (`observe`, also for proposals it rejected), and asks it for proposals. After a
/// trap or a resume msh makes a new one and restores its latest snapshot (`save`,
/// `restore`), then tells it the trials that finished since; a searcher without snapshots
/// gets every finished trial replayed, so the state must follow from `new` and the
/// observed trials alone. Export it with `export_search!`.
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
        impl $crate::SearchExports for MshSearchExports {
            type Searcher = $crate::Hosted<$ty>;
            fn settings() -> ::std::vec::Vec<$crate::Setting> {
                <$ty as $crate::Search>::settings()
            }
        }
        $crate::bindings::export_searcher!(MshSearchExports with_types_in $crate::bindings);
    };
}

/// A setting declaration.
pub fn setting(name: &str, description: &str, default: impl ToString) -> Setting {
    Setting { name: name.into(), description: description.into(), default: default.to_string() }
}

/// Setting `key` from the workflow, or `default` when absent; an error names a value that
/// does not parse.
pub fn config<T: std::str::FromStr>(context: &Context, key: &str, default: T) -> Result<T, String> {
    match context.config.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v.trim().parse().map_err(|_| format!("setting `{key}` is `{v}`, which is not a valid value")),
    }
}

/// The space's depth bounds as the host enforces them: at least 1, max never below min.
pub fn depth_bounds(space: &SearchSpace) -> (usize, usize) {
    let min = space.min_depth.max(1) as usize;
    (min, (space.max_depth as usize).max(min))
}

/// Draws one value of a hyper-parameter range.
pub fn sample_hparam(range: &HparamRange, rng: &mut Rng) -> f64 {
    if !range.choices.is_empty() {
        return range.choices[rng.below(range.choices.len())];
    }
    if range.log && range.low > 0.0 {
        (range.low.ln() + rng.unit() * (range.high.ln() - range.low.ln())).exp()
    } else {
        range.low + rng.unit() * (range.high - range.low)
    }
}

/// Draws every hyper-parameter of the space.
pub fn sample_hparams(space: &SearchSpace, rng: &mut Rng) -> Vec<(String, f64)> {
    space.hparams.iter().map(|h| (h.name.clone(), sample_hparam(h, rng))).collect()
}

/// Sets hyper-parameter `name` in `hparams`, adding it when absent.
pub fn set_hparam(hparams: &mut Vec<(String, f64)>, name: &str, value: f64) {
    match hparams.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => hparams.push((name.to_string(), value)),
    }
}

/// The hyper-parameters one step away: one value moved a quarter of its (log) range up or
/// down, or for a choice, replaced by each other choice.
pub fn hparam_neighbours(space: &SearchSpace, hparams: &[(String, f64)]) -> Vec<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for range in &space.hparams {
        let current = hparams.iter().find(|(n, _)| *n == range.name).map(|(_, v)| *v);
        let candidates: Vec<f64> = if !range.choices.is_empty() {
            range.choices.iter().copied().filter(|c| Some(*c) != current).collect()
        } else {
            let v = current.unwrap_or((range.low + range.high) / 2.0);
            if range.log && range.low > 0.0 && v > 0.0 {
                let step = (range.high.ln() - range.low.ln()) / 4.0;
                vec![(v.ln() - step).exp().max(range.low), (v.ln() + step).exp().min(range.high)]
            } else {
                let step = (range.high - range.low) / 4.0;
                vec![(v - step).max(range.low), (v + step).min(range.high)]
            }
        };
        for c in candidates.into_iter().filter(|c| Some(*c) != current) {
            let mut next = hparams.to_vec();
            set_hparam(&mut next, &range.name, c);
            out.push(next);
        }
    }
    out
}

/// A block of the space by name.
pub fn space_block<'a>(space: &'a SearchSpace, name: &str) -> Option<&'a SpaceBlock> {
    space.blocks.iter().find(|b| b.name == name)
}

/// The rank block `name` yields on input of `rank`; `None` when it does not accept it.
/// Blocks whose ranks are unknown accept any rank and keep it, as does an unknown rank (0).
pub fn output_rank(space: &SearchSpace, name: &str, rank: u8) -> Option<u8> {
    let block = space_block(space, name)?;
    if block.ranks.is_empty() || rank == 0 {
        return Some(rank);
    }
    block.ranks.iter().find(|(input, _)| *input == rank).map(|(_, output)| *output)
}

/// Whether every block accepts the rank the one before it yields.
pub fn fits(space: &SearchSpace, architecture: &[BlockRef]) -> bool {
    architecture.iter().try_fold(space.input_rank, |rank, b| output_rank(space, &b.name, rank)).is_some()
}

fn int_of(value: &Value) -> Option<i64> {
    match value {
        Value::Int(v) => Some(*v),
        Value::Float(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

fn float_of(value: &Value) -> Option<f64> {
    match value {
        Value::Float(v) => Some(*v),
        Value::Int(v) => Some(*v as f64),
        _ => None,
    }
}

/// Values one step from `current` within a parameter's spec: an integer range of ratio 8
/// or more doubles or halves, a narrower one moves by one; a float range moves by half;
/// a choice takes each other word; a flag flips.
pub fn param_steps(spec: &ParamSpec, current: &Value) -> Vec<Value> {
    match &spec.kind {
        ParamKind::IntRange((lo, hi)) => {
            let v = int_of(current).unwrap_or(*lo);
            let (down, up) = if *lo > 0 && *hi >= lo * 8 { (v / 2, v * 2) } else { (v - 1, v + 1) };
            [down, up].into_iter().filter(|n| *n != v && (lo..=hi).contains(&n)).map(Value::Int).collect()
        }
        ParamKind::FloatRange((lo, hi)) => {
            let v = float_of(current).unwrap_or(*lo);
            let step = (hi - lo) / 4.0;
            [(v - step).max(*lo), (v + step).min(*hi)].into_iter().filter(|n| *n != v).map(Value::Float).collect()
        }
        ParamKind::Choice(words) => {
            words.iter().filter(|w| !matches!(current, Value::Text(c) if c == *w)).cloned().map(Value::Text).collect()
        }
        ParamKind::Flag => vec![Value::Flag(!matches!(current, Value::Flag(true)))],
    }
}

/// A random value of a parameter spec.
pub fn sample_param(spec: &ParamSpec, rng: &mut Rng) -> Value {
    match &spec.kind {
        ParamKind::IntRange((lo, hi)) if *lo > 0 && *hi >= lo * 8 => {
            // Wide ranges are sampled on a log scale (filters 4..512).
            let v = ((*lo as f64).ln() + rng.unit() * ((*hi as f64).ln() - (*lo as f64).ln())).exp();
            Value::Int((v.round() as i64).clamp(*lo, *hi))
        }
        ParamKind::IntRange((lo, hi)) => Value::Int(rng.range(*lo, *hi)),
        ParamKind::FloatRange((lo, hi)) => Value::Float(lo + rng.unit() * (hi - lo)),
        ParamKind::Choice(words) => rng.choose(words).map_or(spec.default.clone(), |w| Value::Text(w.clone())),
        ParamKind::Flag => Value::Flag(rng.chance(0.5)),
    }
}

/// Sets parameter `name` of a block; a value equal to the spec's default is left out, so
/// that one configuration has one spelling.
pub fn set_param(block: &mut BlockRef, spec: &ParamSpec, value: Value) {
    block.params.retain(|p| p.name != spec.name);
    if vocab_value(&value).to_string() != vocab_value(&spec.default).to_string() {
        block.params.push(Param { name: spec.name.clone(), value });
        block.params.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// The value a block uses for a parameter: its own, else the spec's default.
pub fn param_value<'a>(block: &'a BlockRef, spec: &'a ParamSpec) -> &'a Value {
    block.params.iter().find(|p| p.name == spec.name).map_or(&spec.default, |p| &p.value)
}

/// Block `name` with default parameters.
pub fn block_ref(name: &str) -> BlockRef {
    BlockRef { name: name.into(), params: Vec::new() }
}

/// Block `name` with every parameter drawn at random (with probability `p`, else default).
pub fn random_params(space: &SearchSpace, name: &str, p: f64, rng: &mut Rng) -> BlockRef {
    let mut block = block_ref(name);
    for spec in space_block(space, name).map(|b| b.params.as_slice()).unwrap_or_default() {
        if rng.chance(p) {
            set_param(&mut block, spec, sample_param(spec, rng));
        }
    }
    block
}

/// A block of the space at random, with default parameters.
pub fn random_block(space: &SearchSpace, rng: &mut Rng) -> BlockRef {
    block_ref(&space.blocks[rng.below(space.blocks.len())].name)
}

/// `depth` blocks, each accepting the rank of the one before (up to 64 draws; then any
/// blocks). Default parameters.
pub fn random_architecture(space: &SearchSpace, depth: usize, rng: &mut Rng) -> Vec<BlockRef> {
    if space.blocks.is_empty() {
        return Vec::new();
    }
    for _ in 0..64 {
        let mut rank = space.input_rank;
        let mut architecture = Vec::with_capacity(depth);
        for _ in 0..depth {
            let fitting: Vec<&SpaceBlock> =
                space.blocks.iter().filter(|b| output_rank(space, &b.name, rank).is_some()).collect();
            let Some(block) = rng.choose(&fitting) else { break };
            rank = output_rank(space, &block.name, rank).unwrap_or(rank);
            architecture.push(block_ref(&block.name));
        }
        if architecture.len() == depth {
            return architecture;
        }
    }
    (0..depth).map(|_| random_block(space, rng)).collect()
}

/// A random architecture (depth drawn from `depths`, inclusive) with random
/// hyper-parameters that `seen` does not hold yet, recorded there; `None` after `draws`
/// tries.
pub fn unseen_random(
    space: &SearchSpace,
    seen: &mut Seen,
    depths: (usize, usize),
    draws: usize,
    rng: &mut Rng,
) -> Option<Proposal> {
    for _ in 0..draws {
        let depth = if depths.0 >= depths.1 { depths.0 } else { rng.range(depths.0 as i64, depths.1 as i64) as usize };
        let architecture = random_architecture(space, depth, rng);
        let hparams = sample_hparams(space, rng);
        if seen.insert(&architecture, &hparams) {
            return Some(Proposal { architecture, hparams, parent: None, teacher: None });
        }
    }
    None
}

/// `unseen_random` with depths from `preferred` for the first half of the draws, then from
/// the space's whole range (a shallow start that still finds something when those repeat).
pub fn unseen_random_preferring(
    space: &SearchSpace,
    seen: &mut Seen,
    preferred: (usize, usize),
    draws: usize,
    rng: &mut Rng,
) -> Option<Proposal> {
    unseen_random(space, seen, preferred, draws / 2, rng)
        .or_else(|| unseen_random(space, seen, depth_bounds(space), draws / 2, rng))
}

/// Every architecture one move from `architecture` that fits the space: one block replaced
/// by another, one inserted or removed (within the depth bounds), or one parameter of one
/// block stepped (`param_steps`).
pub fn neighbours(space: &SearchSpace, architecture: &[BlockRef]) -> Vec<Vec<BlockRef>> {
    let (min_depth, max_depth) = depth_bounds(space);
    let mut out = Vec::new();
    let mut push = |candidate: Vec<BlockRef>| {
        if fits(space, &candidate) {
            out.push(candidate);
        }
    };
    for (i, block) in architecture.iter().enumerate() {
        for other in space.blocks.iter().filter(|b| b.name != block.name) {
            let mut next = architecture.to_vec();
            next[i] = block_ref(&other.name);
            push(next);
        }
        for spec in space_block(space, &block.name).map(|b| b.params.as_slice()).unwrap_or_default() {
            for value in param_steps(spec, param_value(block, spec)) {
                let mut next = architecture.to_vec();
                set_param(&mut next[i], spec, value);
                push(next);
            }
        }
        if architecture.len() > min_depth {
            let mut next = architecture.to_vec();
            next.remove(i);
            push(next);
        }
    }
    if architecture.len() < max_depth {
        for at in 0..=architecture.len() {
            for other in &space.blocks {
                let mut next = architecture.to_vec();
                next.insert(at, block_ref(&other.name));
                push(next);
            }
        }
    }
    out
}

/// Where Model Search grows an architecture: before its first block that yields features
/// (rank 1: flatten, dense), else at the end.
pub fn growth_position(space: &SearchSpace, architecture: &[BlockRef]) -> usize {
    let mut rank = space.input_rank;
    for (i, block) in architecture.iter().enumerate() {
        let next = output_rank(space, &block.name, rank).unwrap_or(rank);
        if next == 1 && rank > 1 {
            return i;
        }
        rank = next;
    }
    architecture.len()
}

/// The canonical text of a trial (`msh_vocab::trial_key`, the host's own): blocks with
/// the parameters they name, sorted by name, then hyper-parameters by name. Two proposals
/// with one key are the same experiment.
pub fn trial_key(architecture: &[BlockRef], hparams: &[(String, f64)]) -> String {
    let architecture: Vec<msh_vocab::BlockRef> = architecture.iter().map(vocab_block).collect();
    msh_vocab::trial_key(&architecture, hparams, |_, _, _| false)
}

/// A block in the shared vocabulary's terms.
pub fn vocab_block(block: &BlockRef) -> msh_vocab::BlockRef {
    msh_vocab::BlockRef {
        name: block.name.clone(),
        params: block.params.iter().map(|p| (p.name.clone(), vocab_value(&p.value))).collect(),
    }
}

/// A parameter value in the shared vocabulary's terms.
pub fn vocab_value(value: &Value) -> msh_vocab::ParamValue {
    match value {
        Value::Int(v) => msh_vocab::ParamValue::Int(*v),
        Value::Float(v) => msh_vocab::ParamValue::Float(*v),
        Value::Flag(v) => msh_vocab::ParamValue::Flag(*v),
        Value::Text(v) => msh_vocab::ParamValue::Text(v.clone()),
        Value::Ints(v) => msh_vocab::ParamValue::Ints(v.clone()),
    }
}

/// The trials a search has seen (finished, running, rejected), by `trial_key`.
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
