//! The search space as a searcher sees it: depth bounds, blocks and the ranks they accept
//! ([`fits`], [`output_rank`]), block parameters ([`set_param`], [`param_value`]),
//! hyper-parameters, and random draws ([`random_architecture`], [`unseen_random`]).
//! One-step changes of an architecture are in [`moves`](crate::moves).

use crate::rng::Rng;
use crate::search::{Seen, vocab_value};
use crate::types::*;

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
