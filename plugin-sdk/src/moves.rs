//! One-step changes: every neighbour of an architecture ([`neighbours`]) or of its
//! hyper-parameters ([`hparam_neighbours`]), parameter steps ([`param_steps`]), mutated
//! hyper-parameters ([`mutated_hparams`]), and where Model Search grows an architecture
//! ([`growth_position`]). Random draws are in [`space`](crate::space).

use crate::rng::Rng;
use crate::space::*;
use crate::types::*;

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

/// Every architecture one move from `architecture` that fits the space: one block replaced
/// by another, one inserted or removed (within the depth bounds), or one parameter of one
/// block stepped ([`param_steps`]).
///
/// ```
/// use msh_plugin_sdk::prelude::*;
///
/// let block = |name: &str, ranks: Vec<(u8, u8)>| SpaceBlock {
///     name: name.into(),
///     description: String::new(),
///     params: vec![],
///     ranks,
/// };
/// // A convolution keeps rank 2; dense takes rank 1 or 2 and yields rank 1.
/// let space = SearchSpace {
///     blocks: vec![block("conv", vec![(2, 2)]), block("dense", vec![(1, 1), (2, 1)])],
///     input_rank: 2,
///     min_depth: 1,
///     max_depth: 2,
///     hparams: vec![],
/// };
/// let keys: Vec<String> = neighbours(&space, &[block_ref("conv")]).iter().map(|a| trial_key(a, &[])).collect();
/// // Replaced, or one block inserted (before or after: `conv,conv` twice); never a
/// // convolution after dense.
/// assert_eq!(keys, ["dense", "conv,conv", "conv,conv", "conv,dense"]);
/// ```
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

/// The hyper-parameters of `base` with each value redrawn with probability `p / n` (`n`
/// ranges), and any missing one drawn; random ones without a base.
pub fn mutated_hparams(
    space: &SearchSpace,
    base: Option<&[(String, f64)]>,
    p: f64,
    rng: &mut Rng,
) -> Vec<(String, f64)> {
    let Some(base) = base else { return sample_hparams(space, rng) };
    let mut hparams = base.to_vec();
    let n = space.hparams.len().max(1) as f64;
    for range in &space.hparams {
        let missing = !hparams.iter().any(|(name, _)| *name == range.name);
        if missing || rng.chance(p / n) {
            set_hparam(&mut hparams, &range.name, sample_hparam(range, rng));
        }
    }
    hparams
}
