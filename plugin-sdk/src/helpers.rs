//! Helpers over the generated WIT types for both worlds: parameters, graph building, RNG.

#[cfg(feature = "block-pack")]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x853c_49e6_748f_ea9b)
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

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}
