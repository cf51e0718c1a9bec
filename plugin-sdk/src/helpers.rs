//! Helpers over the generated WIT types: parameters, graph building, RNG, history.

pub use crate::bindings::Guest;
pub use crate::bindings::msh::plugin::types::*;

/// Typed access to a parameter list.
pub trait Params {
    fn value(&self, name: &str) -> Option<&Value>;

    /// An integer parameter (a float with no fraction also counts), or `default`.
    fn int(&self, name: &str, default: i64) -> i64 {
        match self.value(name) {
            Some(Value::Int(v)) => *v,
            Some(Value::Float(v)) if v.fract() == 0.0 => *v as i64,
            _ => default,
        }
    }

    fn float(&self, name: &str, default: f64) -> f64 {
        match self.value(name) {
            Some(Value::Float(v)) => *v,
            Some(Value::Int(v)) => *v as f64,
            _ => default,
        }
    }

    fn flag(&self, name: &str, default: bool) -> bool {
        match self.value(name) {
            Some(Value::Flag(v)) => *v,
            _ => default,
        }
    }

    fn text(&self, name: &str, default: &str) -> String {
        match self.value(name) {
            Some(Value::Text(v)) => v.clone(),
            _ => default.to_string(),
        }
    }
}

impl Params for [Param] {
    fn value(&self, name: &str) -> Option<&Value> {
        self.iter().find(|p| p.name == name).map(|p| &p.value)
    }
}

impl Params for Vec<Param> {
    fn value(&self, name: &str) -> Option<&Value> {
        self.as_slice().value(name)
    }
}

/// `name = value` for an integer.
pub fn int(name: &str, value: i64) -> Param {
    Param { name: name.into(), value: Value::Int(value) }
}

pub fn float(name: &str, value: f64) -> Param {
    Param { name: name.into(), value: Value::Float(value) }
}

pub fn flag(name: &str, value: bool) -> Param {
    Param { name: name.into(), value: Value::Flag(value) }
}

pub fn text(name: &str, value: &str) -> Param {
    Param { name: name.into(), value: Value::Text(value.into()) }
}

pub fn ints(name: &str, values: &[i64]) -> Param {
    Param { name: name.into(), value: Value::Ints(values.to_vec()) }
}

/// Builds a block graph node by node. Node 0 is the block input; `op` reads the previous
/// node, `op_from` names its inputs. Both return the new node's id.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), nodes: Vec::new() }
    }

    /// The id of the last node added (0, the input, when none).
    pub fn last(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn op(&mut self, op: &str, params: Vec<Param>) -> u32 {
        self.op_from(op, params, &[])
    }

    pub fn op_from(&mut self, op: &str, params: Vec<Param>, inputs: &[u32]) -> u32 {
        self.nodes.push(Node { op: op.into(), params, inputs: inputs.to_vec() });
        self.last()
    }

    pub fn build(self) -> BlockGraph {
        BlockGraph { name: self.name, nodes: self.nodes }
    }
}

/// A small, fast, seedable generator (SplitMix64); plugins get no OS randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x853c_49e6_748f_ea9b)
    }

    /// A generator for this call: the run's seed mixed with how much history there is, so
    /// every call differs but a rerun with the same history repeats.
    pub fn for_call(context: &Context, history_len: usize) -> Self {
        Self::new(context.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ history_len as u64)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Uniform integer in lo..=hi.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1).max(1) as usize) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// A searcher setting from the workflow, parsed.
pub fn config<T: std::str::FromStr>(context: &Context, key: &str) -> Option<T> {
    context.config.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok())
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

/// A block of the space, with default parameters.
pub fn random_block(space: &SearchSpace, rng: &mut Rng) -> BlockRef {
    BlockRef { name: space.blocks[rng.below(space.blocks.len())].clone(), params: Vec::new() }
}

/// Sets hyper-parameter `name` in `hparams`, adding it when absent.
pub fn set_hparam(hparams: &mut Vec<(String, f64)>, name: &str, value: f64) {
    match hparams.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => hparams.push((name.to_string(), value)),
    }
}

/// `depth` blocks of the space, chosen at random.
pub fn random_architecture(space: &SearchSpace, depth: usize, rng: &mut Rng) -> Vec<BlockRef> {
    (0..depth).map(|_| random_block(space, rng)).collect()
}

/// The space's depth bounds as the host enforces them: at least 1, max never below min.
pub fn depth_bounds(space: &SearchSpace) -> (usize, usize) {
    let min = space.min_depth.max(1) as usize;
    (min, (space.max_depth as usize).max(min))
}

/// Completed trials with a finite objective, in history order.
pub fn scored(history: &[Trial]) -> Vec<&Trial> {
    history
        .iter()
        .filter(|t| matches!(t.status, TrialStatus::Completed) && t.objective.is_some_and(f64::is_finite))
        .collect()
}

/// Completed trials with an objective, best (lowest) first, at most `k`.
pub fn top_k(history: &[Trial], k: usize) -> Vec<&Trial> {
    let mut done = scored(history);
    done.sort_by(|a, b| a.objective.unwrap_or(f64::INFINITY).total_cmp(&b.objective.unwrap_or(f64::INFINITY)));
    done.truncate(k);
    done
}

/// Number of blocks in a trial's architecture.
pub fn depth(trial: &Trial) -> usize {
    trial.architecture.len()
}

/// The trial with this id.
pub fn find(history: &[Trial], id: u64) -> Option<&Trial> {
    history.iter().find(|t| t.id == id)
}

/// Number of completed trials.
pub fn completed(history: &[Trial]) -> usize {
    history.iter().filter(|t| matches!(t.status, TrialStatus::Completed)).count()
}

/// Completed trials of the whole search: msh reports them as `msh.completed_trials`, since
/// a workflow may hand the searcher only part of the history.
pub fn completed_in_search(context: &Context, history: &[Trial]) -> usize {
    config(context, "msh.completed_trials").unwrap_or_else(|| completed(history))
}

/// Trials that are members of an ensemble of the search (`msh.ensemble_members`).
pub fn ensemble_members(context: &Context) -> Vec<u64> {
    context
        .config
        .iter()
        .find(|(k, _)| k == "msh.ensemble_members")
        .map(|(_, v)| v.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}
