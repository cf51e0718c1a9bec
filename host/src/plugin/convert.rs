//! WIT block graphs to the host's IR: each node's op name and parameters are parsed exactly
//! like an architecture file's, so plugins and files share one definition of the ops.

use serde_json::{Map, Value as Json};

use super::types;
use crate::graph::{BlockGraph, Node};

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
