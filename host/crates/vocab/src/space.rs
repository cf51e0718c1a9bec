//! What a search is about, as the host speaks of it: the blocks a pack offers and their
//! parameters, the space a search draws from, the context it starts with and what it
//! proposes. The plugin host turns these into the plugin contract's types and back.

use serde::{Deserialize, Serialize};

use crate::{BlockRef, ParamValue};

/// The values a block parameter may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    IntRange(i64, i64),
    FloatRange(f64, f64),
    Choice(Vec<String>),
    Flag,
}

impl std::fmt::Display for ParamKind {
    /// `int 1..=8`, `float 0..=0.5`, `one of relu|gelu`, `flag`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamKind::IntRange(lo, hi) => write!(f, "int {lo}..={hi}"),
            ParamKind::FloatRange(lo, hi) => write!(f, "float {lo}..={hi}"),
            ParamKind::Choice(words) => write!(f, "one of {}", words.join("|")),
            ParamKind::Flag => f.write_str("flag"),
        }
    }
}

/// One parameter of a block: its name, what it means, its values and its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    pub name: String,
    pub description: String,
    pub kind: ParamKind,
    pub default: ParamValue,
}

/// A block as its pack describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    /// Input ranks it accepts (1: features, 2: sequences, 3: images).
    pub input_ranks: Vec<u8>,
}

/// A block of a search space: its parameters and the ranks it maps (input, output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceBlock {
    pub name: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
    pub ranks: Vec<(u8, u8)>,
}

/// A hyper-parameter's range (`low..=high`, on a log scale if `log`), or its `choices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HparamRange {
    pub name: String,
    pub low: f64,
    pub high: f64,
    pub log: bool,
    pub choices: Vec<f64>,
}

impl HparamRange {
    /// Whether `value` is in the range (or one of the choices).
    pub fn contains(&self, value: f64) -> bool {
        if self.choices.is_empty() {
            value.is_finite() && value >= self.low && value <= self.high
        } else {
            self.choices.contains(&value)
        }
    }
}

/// Everything a searcher may propose from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    pub blocks: Vec<SpaceBlock>,
    /// Rank of one sample (0 until the data is read).
    pub input_rank: u8,
    pub min_depth: u32,
    pub max_depth: u32,
    pub hparams: Vec<HparamRange>,
}

impl SearchSpace {
    /// The spec of `block`'s parameter `param`, where the space has it.
    pub fn param(&self, block: &str, param: &str) -> Option<&ParamSpec> {
        self.blocks.iter().find(|b| b.name == block)?.params.iter().find(|p| p.name == param)
    }

    /// The canonical text of a trial in this space: parameters at their defaults left out.
    pub fn trial_key(&self, architecture: &[BlockRef], hparams: &[(String, f64)]) -> String {
        crate::trial_key(architecture, hparams, |block, param, value| {
            self.param(block, param).is_some_and(|spec| spec.default.to_string() == value.to_string())
        })
    }
}

/// What a searcher starts with: its seed, the trial budget (0: by time only) and its
/// settings from the workflow, as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchContext {
    pub seed: u64,
    pub budget: u32,
    pub config: Vec<(String, String)>,
}

/// A setting a searcher reads from its workflow's `config`, with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub description: String,
    pub default: String,
}

/// A trial a searcher proposes: blocks, hyper-parameters, and the trials it builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub architecture: Vec<BlockRef>,
    pub hparams: Vec<(String, f64)>,
    pub parent: Option<u64>,
    pub teacher: Option<u64>,
}
