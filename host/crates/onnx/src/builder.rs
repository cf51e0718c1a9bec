//! An ONNX graph under construction: nodes appended in execution order, weights and
//! constants as initializers, every tensor name unique.

use std::collections::HashSet;

use super::proto::{AttributeProto, AttributeType, DataType, GraphProto, NodeProto, TensorProto};

#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: HashSet<String>,
}

impl GraphBuilder {
    /// `hint` itself when unused, else `hint` with the first free `_<n>` suffix: names
    /// stay readable (`b0.n3.conv`) in a viewer such as Netron.
    pub fn fresh(&mut self, hint: &str) -> String {
        let mut name = hint.to_string();
        let mut n = 1;
        while self.names.contains(&name) {
            name = format!("{hint}_{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Appends a node with one output; returns the output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<AttributeProto>, hint: &str) -> String {
        self.op_with_outputs(op_type, inputs, attributes, hint, 1).remove(0)
    }

    /// Appends a node with `outputs` outputs (`LSTM`'s sequence and last state, say).
    pub fn op_with_outputs(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        hint: &str,
        outputs: usize,
    ) -> Vec<String> {
        let outputs: Vec<String> = (0..outputs).map(|i| self.fresh(&format!("{hint}.{i}"))).collect();
        let name = self.fresh(&format!("{hint}.{op_type}"));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name: Some(name),
            op_type: Some(op_type.to_string()),
            attribute: attributes,
            domain: None,
        });
        outputs
    }

    /// Names the output of the last node `name` (a graph output).
    pub fn rename_last_output(&mut self, name: &str) {
        let last = self.nodes.last_mut().expect("a node to rename");
        self.names.insert(name.to_string());
        last.output[0] = name.to_string();
    }

    /// A float initializer of `dims` holding `values` (row-major).
    pub fn floats(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len(), "{hint}: dims and values disagree");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, dims, DataType::Float, raw)
    }

    /// A one-dimensional int64 initializer (shapes, axes, pads, slice bounds).
    pub fn ints(&mut self, hint: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(hint, &[values.len()], DataType::Int64, raw)
    }

    /// A float scalar (rank 0) initializer.
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        self.initializer(hint, &[], DataType::Float, value.to_le_bytes().to_vec())
    }

    fn initializer(&mut self, hint: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            name: Some(name.clone()),
            raw_data: Some(raw),
        });
        name
    }

    /// The nodes and initializers as a graph; inputs and outputs are the caller's.
    pub fn finish(self, name: &str) -> GraphProto {
        GraphProto {
            node: self.nodes,
            name: Some(name.to_string()),
            initializer: self.initializers,
            doc_string: None,
            input: Vec::new(),
            output: Vec::new(),
        }
    }
}

fn attribute(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.to_string()), r#type: Some(kind as i32), ..Default::default() }
}

pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { i: Some(value), ..attribute(name, AttributeType::Int) }
}

pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { f: Some(value), ..attribute(name, AttributeType::Float) }
}

pub fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { ints: values.to_vec(), ..attribute(name, AttributeType::Ints) }
}

pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto { s: Some(value.as_bytes().to_vec()), ..attribute(name, AttributeType::String) }
}

/// `values` as ONNX `int64` attribute values.
pub fn i64s(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}
