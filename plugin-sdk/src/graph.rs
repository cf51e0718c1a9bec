//! Block graphs and parameter lists: [`GraphBuilder`] adds nodes (typed ones from
//! [`ops`](crate::ops), or an op by name), [`Params`] reads a parameter list with
//! defaults, and [`int`], [`float`], [`flag`], [`text`] and [`ints`] write one parameter.

use crate::ops::OpNode;
use crate::types::*;

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

/// Builds a block graph node by node. Node 0 is the block input; `add` (a typed op from
/// [`ops`](crate::ops)) and `op` (an op by name) read the previous node, `add_from` and
/// `op_from` name their inputs. Each returns the new node's id.
///
/// ```
/// use msh_plugin_sdk::prelude::*;
///
/// // A residual block: two convolutions, added to the input (node 0).
/// let mut g = GraphBuilder::new("residual");
/// g.add(ops::conv1d(16, 3));
/// g.add(ops::relu());
/// let branch = g.add(ops::conv1d(16, 3));
/// assert_eq!(branch, 3);
/// g.add_from(ops::add(), &[0, branch]);
/// let graph = g.build();
/// assert_eq!(graph.nodes.len(), 4);
/// assert_eq!(graph.nodes[3].inputs, [0, 3]);
/// assert!(graph.nodes[1].inputs.is_empty(), "the previous node");
/// ```
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

    /// Adds a typed op ([`ops`](crate::ops)) that reads the previous node.
    pub fn add(&mut self, op: impl Into<OpNode>) -> u32 {
        self.add_from(op, &[])
    }

    /// Adds a typed op that reads `inputs`.
    pub fn add_from(&mut self, op: impl Into<OpNode>, inputs: &[u32]) -> u32 {
        let OpNode { op, params } = op.into();
        self.op_from(op, params, inputs)
    }

    /// Adds an op by name (prefer [`add`](Self::add): a misspelt name is only found by the
    /// host).
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
