//! Between the plugin contract's types and the host's, the one place that knows both: WIT
//! block graphs to the host's IR (each node's op name and parameters are parsed exactly
//! like an architecture file's, so plugins and files share one definition of the ops),
//! store records to what searchers see, and the search vocabulary both ways.

use serde_json::{Map, Value as Json};

use super::types;
use msh_graph::{BlockGraph, Node};
use msh_store::{TrialRecord, TrialStatus};
use msh_vocab::space::{BlockInfo, ParamKind, ParamSpec, Proposal, SearchContext, SearchSpace, Setting};
use msh_vocab::{BlockRef, ParamValue};

fn json(value: &types::Value) -> Json {
    match value {
        types::Value::Int(v) => Json::from(*v),
        types::Value::Float(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        types::Value::Flag(v) => Json::Bool(*v),
        types::Value::Text(v) => Json::String(v.clone()),
        types::Value::Ints(v) => Json::Array(v.iter().map(|&i| Json::from(i)).collect()),
    }
}

/// Converts one node; an integer `padding` means explicit padding.
fn node(index: usize, node: types::Node) -> Result<Node, String> {
    let mut map = Map::new();
    map.insert("op".into(), Json::String(node.op.clone()));
    for p in &node.params {
        let value = match (p.name.as_str(), &p.value) {
            ("padding", types::Value::Int(n)) => serde_json::json!({ "explicit": n }),
            (_, v) => json(v),
        };
        if map.insert(p.name.clone(), value).is_some() {
            return Err(format!("node {} ({}): parameter `{}` is given twice", index + 1, node.op, p.name));
        }
    }
    if !node.inputs.is_empty() {
        map.insert("inputs".into(), Json::Array(node.inputs.iter().map(|&i| Json::from(i)).collect()));
    }
    serde_json::from_value(Json::Object(map)).map_err(|e| format!("node {} ({}): {e}", index + 1, node.op))
}

pub fn block_graph(graph: types::BlockGraph) -> Result<BlockGraph, String> {
    let nodes = graph.nodes.into_iter().enumerate().map(|(i, n)| node(i, n)).collect::<Result<_, _>>()?;
    Ok(BlockGraph { name: graph.name, nodes })
}

/// The 0.2.0 records as a 0.1.0 searcher reads them.
mod v1 {
    pub use crate::bindings::searcher_v1::msh::plugin::types::*;
}

fn value_v1(value: &types::Value) -> v1::Value {
    match value {
        types::Value::Int(v) => v1::Value::Int(*v),
        types::Value::Float(v) => v1::Value::Float(*v),
        types::Value::Flag(v) => v1::Value::Flag(*v),
        types::Value::Text(v) => v1::Value::Text(v.clone()),
        types::Value::Ints(v) => v1::Value::Ints(v.clone()),
    }
}

fn value_from_v1(value: v1::Value) -> types::Value {
    match value {
        v1::Value::Int(v) => types::Value::Int(v),
        v1::Value::Float(v) => types::Value::Float(v),
        v1::Value::Flag(v) => types::Value::Flag(v),
        v1::Value::Text(v) => types::Value::Text(v),
        v1::Value::Ints(v) => types::Value::Ints(v),
    }
}

pub fn context_v1(context: &types::Context) -> v1::Context {
    v1::Context { seed: context.seed, budget: context.budget, config: context.config.clone() }
}

pub fn space_v1(space: &types::SearchSpace) -> v1::SearchSpace {
    v1::SearchSpace {
        blocks: space.blocks.iter().map(|b| b.name.clone()).collect(),
        min_depth: space.min_depth,
        max_depth: space.max_depth,
        hparams: space
            .hparams
            .iter()
            .map(|h| v1::HparamRange {
                name: h.name.clone(),
                low: h.low,
                high: h.high,
                log: h.log,
                choices: h.choices.clone(),
            })
            .collect(),
    }
}

/// A stopped trial is a result, so 0.1.0 sees it as completed.
pub fn trial_v1(trial: &types::Trial) -> v1::Trial {
    v1::Trial {
        id: trial.id,
        architecture: trial
            .architecture
            .iter()
            .map(|b| v1::BlockRef {
                name: b.name.clone(),
                params: b
                    .params
                    .iter()
                    .map(|p| v1::Param { name: p.name.clone(), value: value_v1(&p.value) })
                    .collect(),
            })
            .collect(),
        hparams: trial.hparams.clone(),
        status: match trial.status {
            types::TrialStatus::Completed | types::TrialStatus::Stopped => v1::TrialStatus::Completed,
            types::TrialStatus::Diverged => v1::TrialStatus::Diverged,
            _ => v1::TrialStatus::Failed,
        },
        objective: trial.objective,
        accuracy: trial.accuracy,
        parameters: trial.parameters,
        parent: trial.parent,
        inherited: trial.inherited,
    }
}

pub fn proposal_from_v1(proposal: v1::Proposal) -> types::Proposal {
    types::Proposal {
        architecture: proposal
            .architecture
            .into_iter()
            .map(|b| types::BlockRef {
                name: b.name,
                params: b
                    .params
                    .into_iter()
                    .map(|p| types::Param { name: p.name, value: value_from_v1(p.value) })
                    .collect(),
            })
            .collect(),
        hparams: proposal.hparams,
        parent: proposal.parent,
        teacher: proposal.teacher,
    }
}

/// A trial as searchers see it.
pub fn trial(record: &TrialRecord) -> types::Trial {
    types::Trial {
        id: record.id,
        architecture: record.architecture.iter().map(block_ref).collect(),
        hparams: record.hparams.clone(),
        status: match record.status {
            TrialStatus::Completed => types::TrialStatus::Completed,
            TrialStatus::Stopped => types::TrialStatus::Stopped,
            TrialStatus::Diverged => types::TrialStatus::Diverged,
            TrialStatus::Running | TrialStatus::Pending => types::TrialStatus::Running,
            TrialStatus::Failed => types::TrialStatus::Failed,
        },
        // A residual trial trains a model of its own: searchers see it as one.
        kind: match record.is_combination() {
            false => types::TrialKind::Single,
            true => types::TrialKind::Ensemble(record.members.iter().map(|(id, _)| *id).collect()),
        },
        objective: record.objective,
        accuracy: record.valid.as_ref().and_then(|m| m.accuracy),
        parameters: record.parameters,
        parent: record.parent,
        inherited: record.inherited,
        epochs: record.epochs,
        error: record.error.clone(),
    }
}

/// A block parameter's value as plugins see it.
pub fn value(value: &ParamValue) -> types::Value {
    match value {
        ParamValue::Int(v) => types::Value::Int(*v),
        ParamValue::Float(v) => types::Value::Float(*v),
        ParamValue::Flag(v) => types::Value::Flag(*v),
        ParamValue::Text(v) => types::Value::Text(v.clone()),
        ParamValue::Ints(v) => types::Value::Ints(v.clone()),
    }
}

/// A plugin's block parameter value as the store keeps it.
pub fn param_value(value: &types::Value) -> ParamValue {
    match value {
        types::Value::Int(v) => ParamValue::Int(*v),
        types::Value::Float(v) => ParamValue::Float(*v),
        types::Value::Flag(v) => ParamValue::Flag(*v),
        types::Value::Text(v) => ParamValue::Text(v.clone()),
        types::Value::Ints(v) => ParamValue::Ints(v.clone()),
    }
}

pub fn block_ref(block: &BlockRef) -> types::BlockRef {
    types::BlockRef {
        name: block.name.clone(),
        params: block.params.iter().map(|(n, v)| types::Param { name: n.clone(), value: value(v) }).collect(),
    }
}

fn block_ref_from(block: types::BlockRef) -> BlockRef {
    BlockRef { name: block.name, params: block.params.into_iter().map(|p| (p.name, param_value(&p.value))).collect() }
}

pub fn proposal_from(proposal: types::Proposal) -> Proposal {
    Proposal {
        architecture: proposal.architecture.into_iter().map(block_ref_from).collect(),
        hparams: proposal.hparams,
        parent: proposal.parent,
        teacher: proposal.teacher,
    }
}

/// A rejected proposal as its searcher is told of it (never stored; no id of its own).
pub fn rejected(proposal: &Proposal, reason: String) -> types::Trial {
    types::Trial {
        id: u64::MAX,
        architecture: proposal.architecture.iter().map(block_ref).collect(),
        hparams: proposal.hparams.clone(),
        status: types::TrialStatus::Rejected,
        kind: types::TrialKind::Single,
        objective: None,
        accuracy: None,
        parameters: 0,
        parent: proposal.parent,
        inherited: 0,
        epochs: 0,
        error: Some(reason),
    }
}

pub fn context(context: &SearchContext) -> types::Context {
    types::Context { seed: context.seed, budget: context.budget, config: context.config.clone() }
}

fn param_spec(spec: &ParamSpec) -> types::ParamSpec {
    types::ParamSpec {
        name: spec.name.clone(),
        description: spec.description.clone(),
        kind: match &spec.kind {
            ParamKind::IntRange(lo, hi) => types::ParamKind::IntRange((*lo, *hi)),
            ParamKind::FloatRange(lo, hi) => types::ParamKind::FloatRange((*lo, *hi)),
            ParamKind::Choice(words) => types::ParamKind::Choice(words.clone()),
            ParamKind::Flag => types::ParamKind::Flag,
        },
        default: value(&spec.default),
    }
}

fn param_spec_from(spec: types::ParamSpec) -> ParamSpec {
    ParamSpec {
        name: spec.name,
        description: spec.description,
        kind: match spec.kind {
            types::ParamKind::IntRange((lo, hi)) => ParamKind::IntRange(lo, hi),
            types::ParamKind::FloatRange((lo, hi)) => ParamKind::FloatRange(lo, hi),
            types::ParamKind::Choice(words) => ParamKind::Choice(words),
            types::ParamKind::Flag => ParamKind::Flag,
        },
        default: param_value(&spec.default),
    }
}

pub fn block_info_from(info: types::BlockInfo) -> BlockInfo {
    BlockInfo {
        name: info.name,
        description: info.description,
        params: info.params.into_iter().map(param_spec_from).collect(),
        input_ranks: info.input_ranks,
    }
}

pub fn setting_from(setting: types::Setting) -> Setting {
    Setting { name: setting.name, description: setting.description, default: setting.default }
}

pub fn space(space: &SearchSpace) -> types::SearchSpace {
    types::SearchSpace {
        blocks: space
            .blocks
            .iter()
            .map(|b| types::SpaceBlock {
                name: b.name.clone(),
                description: b.description.clone(),
                params: b.params.iter().map(param_spec).collect(),
                ranks: b.ranks.clone(),
            })
            .collect(),
        input_rank: space.input_rank,
        min_depth: space.min_depth,
        max_depth: space.max_depth,
        hparams: space
            .hparams
            .iter()
            .map(|h| types::HparamRange {
                name: h.name.clone(),
                low: h.low,
                high: h.high,
                log: h.log,
                choices: h.choices.clone(),
            })
            .collect(),
    }
}
