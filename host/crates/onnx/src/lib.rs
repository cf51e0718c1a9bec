//! ONNX export: a saved model or ensemble as one self-contained ONNX graph (opset 17).
//!
//! The graph reads what the user has: `input`, `[batch, features]` raw values in the data
//! set's order. Standardisation with the training split's statistics and the reshape to
//! the model's input shape are inside the graph. It writes `probabilities` and `logits`
//! (classification) or `values` in target units (regression). An ensemble's members are
//! inlined under name prefixes (`m0.`, `m1.`, ...) below their combiner.

mod builder;
mod lower;
mod proto;

use std::path::{Path, PathBuf};

use burn::prelude::Device;

use builder::{GraphBuilder, int};
use msh_graph::GraphError;
use msh_train::data::Normalization;
use msh_train::model::Task;
use msh_train::{CheckpointError, CheckpointMeta, Combine, EnsembleFile, Predictor};
use proto::{
    DataType, Dimension, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto,
};
pub use proto::{ModelProto, OPSET};

/// The name of the exported file beside `model.json`.
pub const ONNX_FILE: &str = "model.onnx";
/// The smallest probability whose log an ensemble takes (as `train::combine` does).
const MIN_PROBABILITY: f32 = 1e-12;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{}: cannot export to ONNX: {at}", dir.display())]
    Unsupported { dir: PathBuf, at: GraphError },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where a model comes from, recorded in the file's `metadata_props`.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub run: Option<String>,
    pub trial: Option<u64>,
}

/// The model or ensemble saved in `dir` (`model.json` or `ensemble.json`) as ONNX.
pub fn export_dir(dir: &Path, provenance: &Provenance) -> Result<ModelProto, OnnxError> {
    let predictor = Predictor::load(dir, &Device::flex())?;
    to_onnx(&predictor, provenance).map_err(|at| OnnxError::Unsupported { dir: dir.to_path_buf(), at })
}

/// Exports `dir` to the file `dest` (written atomically); returns its size in bytes.
pub fn write(dir: &Path, dest: &Path, provenance: &Provenance) -> Result<usize, OnnxError> {
    let bytes = export_dir(dir, provenance)?.to_bytes();
    msh_io::atomic_file::write_atomic(dest, &bytes)
        .map_err(|source| OnnxError::Write { path: dest.to_path_buf(), source })?;
    Ok(bytes.len())
}

/// A loaded model or ensemble as one graph.
pub fn to_onnx(predictor: &Predictor, provenance: &Provenance) -> Result<ModelProto, GraphError> {
    let meta = &predictor.meta;
    let task = meta.spec.task;
    let mut g = GraphBuilder::default();
    let input = g.fresh("input");
    let features: usize = meta.spec.input_shape.iter().product();
    let x = standardise(&mut g, &input, &meta.normalization, features);
    let x = if meta.spec.input_shape.len() > 1 {
        let shape: Vec<i64> = std::iter::once(0).chain(meta.spec.input_shape.iter().map(|&d| d as i64)).collect();
        let shape = g.ints("input.shape", &shape);
        g.op("Reshape", &[&x, &shape], vec![], "input.reshape")
    } else {
        x
    };
    let members = predictor.members();
    let outputs = match &predictor.ensemble {
        None => vec![lower::lower_model(&mut g, &members[0].0, &x, "")?],
        Some(_) => members
            .iter()
            .enumerate()
            .map(|(i, (model, _))| lower::lower_model(&mut g, model, &x, &format!("m{i}.")))
            .collect::<Result<_, _>>()?,
    };
    let weights: Vec<f64> = members.iter().map(|(_, w)| *w).collect();
    let combined = combine(&mut g, predictor.ensemble.as_ref(), &outputs, &weights, task);
    let outputs = finish(&mut g, combined, task, &meta.normalization);

    let batch = || Dimension { dim_value: None, dim_param: Some("batch".into()) };
    let fixed = |n: usize| Dimension { dim_value: Some(n as i64), dim_param: None };
    let tensor = |name: &str, width: usize, doc: &str| ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto { dim: vec![batch(), fixed(width)] }),
            }),
        }),
        doc_string: Some(doc.to_string()),
    };
    let mut graph = g.finish("msh");
    graph.input.push(tensor(
        "input",
        features,
        &format!(
            "raw features, one row per sample, {features} values in the data set's order (a sample of shape {:?} \
             flattened row-major); standardised inside the graph",
            meta.spec.input_shape
        ),
    ));
    graph.output = outputs.iter().map(|(name, doc)| tensor(name, task.outputs(), doc)).collect();
    Ok(ModelProto {
        ir_version: Some(proto::IR_VERSION),
        producer_name: Some("msh".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        domain: None,
        model_version: None,
        doc_string: Some(describe(predictor)),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        metadata_props: metadata(meta, predictor.ensemble.as_ref(), provenance),
    })
}

/// `(x - mean) / std` per feature or channel, the training split's statistics expanded to
/// one per input value; nothing when they are the identity.
fn standardise(g: &mut GraphBuilder, input: &str, n: &Normalization, features: usize) -> String {
    if n.mean.iter().all(|&m| m == 0.0) && n.std.iter().all(|&s| s == 1.0) {
        return input.to_string();
    }
    let at = |j: usize| (j / n.group).min(n.mean.len() - 1);
    let mean: Vec<f32> = (0..features).map(|j| n.mean[at(j)]).collect();
    let std: Vec<f32> = (0..features).map(|j| n.std[at(j)]).collect();
    let mean = g.floats("input.mean", &[features], &mean);
    let std = g.floats("input.std", &[features], &std);
    let centred = g.op("Sub", &[input, &mean], vec![], "input.standardise");
    g.op("Div", &[&centred, &std], vec![], "input.standardise")
}

/// What the combination gives: logits, or probabilities already averaged.
enum Combined {
    Logits(String),
    Probabilities(String),
}

/// Members' head outputs combined as `Predictor::predict` combines them.
fn combine(
    g: &mut GraphBuilder,
    ensemble: Option<&EnsembleFile>,
    outputs: &[String],
    weights: &[f64],
    task: Task,
) -> Combined {
    let classification = matches!(task, Task::Classification { .. });
    let Some(ensemble) = ensemble else {
        return Combined::Logits(outputs[0].clone());
    };
    let probabilities = |g: &mut GraphBuilder, i: usize| {
        if classification {
            g.op("Softmax", &[&outputs[i]], vec![int("axis", 1)], &format!("m{i}.probabilities"))
        } else {
            outputs[i].clone()
        }
    };
    match (ensemble.combine, &ensemble.combiner) {
        (Combine::Sum, _) => {
            let mut sum = outputs[0].clone();
            for next in &outputs[1..] {
                sum = g.op("Add", &[&sum, next], vec![], "ensemble.sum");
            }
            Combined::Logits(sum)
        }
        (Combine::Learned, Some(combiner)) => {
            let floor = g.scalar("ensemble.min_probability", MIN_PROBABILITY);
            let inputs: Vec<String> = (0..outputs.len())
                .map(|i| {
                    let p = probabilities(g, i);
                    if classification {
                        let p = g.op("Max", &[&p, &floor], vec![], "ensemble.floor");
                        g.op("Log", &[&p], vec![], "ensemble.log")
                    } else {
                        p
                    }
                })
                .collect();
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let x = g.op("Concat", &inputs, vec![int("axis", 1)], "ensemble.inputs");
            // The combiner's `outputs x inputs` rows as a `[inputs, outputs]` matrix.
            let (rows, cols) = (combiner.bias.len(), combiner.members * combiner.width);
            let mut w = vec![0f32; rows * cols];
            for r in 0..rows {
                for c in 0..cols {
                    w[c * rows + r] = combiner.weights[r * cols + c] as f32;
                }
            }
            let w = g.floats("ensemble.combiner.weight", &[cols, rows], &w);
            let bias: Vec<f32> = combiner.bias.iter().map(|&b| b as f32).collect();
            let b = g.floats("ensemble.combiner.bias", &[rows], &bias);
            let y = g.op("MatMul", &[&x, &w], vec![], "ensemble.combiner");
            Combined::Logits(g.op("Add", &[&y, &b], vec![], "ensemble.combiner"))
        }
        _ => {
            let total = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            let mut mean: Option<String> = None;
            for (i, w) in weights.iter().enumerate() {
                let p = probabilities(g, i);
                let weight = g.scalar(&format!("ensemble.weight{i}"), (w / total) as f32);
                let term = g.op("Mul", &[&p, &weight], vec![], "ensemble.mean");
                mean = Some(match mean {
                    None => term,
                    Some(sum) => g.op("Add", &[&sum, &term], vec![], "ensemble.mean"),
                });
            }
            let mean = mean.expect("an ensemble has members");
            if classification { Combined::Probabilities(mean) } else { Combined::Logits(mean) }
        }
    }
}

/// The graph's named outputs (with their doc strings) from the combination.
fn finish(g: &mut GraphBuilder, combined: Combined, task: Task, n: &Normalization) -> Vec<(&'static str, String)> {
    match (task, combined) {
        (Task::Classification { .. }, Combined::Logits(logits)) => {
            g.op("Softmax", &[&logits], vec![int("axis", 1)], "probabilities");
            g.rename_last_output("probabilities");
            g.op("Identity", &[&logits], vec![], "logits");
            g.rename_last_output("logits");
            outputs_classification("logits: the head's outputs, before the softmax")
        }
        (Task::Classification { .. }, Combined::Probabilities(mean)) => {
            g.op("Identity", &[&mean], vec![], "probabilities");
            g.rename_last_output("probabilities");
            let floor = g.scalar("ensemble.min_probability", MIN_PROBABILITY);
            let floored = g.op("Max", &[&mean, &floor], vec![], "logits");
            g.op("Log", &[&floored], vec![], "logits");
            g.rename_last_output("logits");
            outputs_classification("logits: the log of the members' weighted mean probability")
        }
        (Task::Regression, Combined::Logits(values) | Combined::Probabilities(values)) => {
            let std = g.scalar("output.target_std", n.target_std);
            let mean = g.scalar("output.target_mean", n.target_mean);
            let scaled = g.op("Mul", &[&values, &std], vec![], "values");
            g.op("Add", &[&scaled, &mean], vec![], "values");
            g.rename_last_output("values");
            vec![("values", "predictions in the target's units".to_string())]
        }
    }
}

fn outputs_classification(logits: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "probabilities",
            "class probabilities, one column per class in label order (see metadata `msh.classes`)".into(),
        ),
        ("logits", logits.to_string()),
    ]
}

/// `metadata_props`: where the model comes from and how to read its outputs.
fn metadata(
    meta: &CheckpointMeta,
    ensemble: Option<&EnsembleFile>,
    provenance: &Provenance,
) -> Vec<StringStringEntryProto> {
    let mut props = vec![
        ("msh.version", env!("CARGO_PKG_VERSION").to_string()),
        (
            "msh.task",
            match meta.spec.task {
                Task::Classification { .. } => "classification".into(),
                Task::Regression => "regression".into(),
            },
        ),
        ("msh.input_shape", serde_json::to_string(&meta.spec.input_shape).expect("shapes serialise")),
    ];
    if let Task::Classification { classes } = meta.spec.task {
        let labels: Vec<String> =
            (0..classes).map(|c| meta.class_names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect();
        props.push(("msh.classes", serde_json::to_string(&labels).expect("labels serialise")));
    }
    if let Some(run) = &provenance.run {
        props.push(("msh.run", run.clone()));
    }
    if let Some(trial) = provenance.trial {
        props.push(("msh.trial", trial.to_string()));
    }
    if let Some(ensemble) = ensemble {
        let members: Vec<u64> = ensemble.members.iter().map(|m| m.trial).collect();
        props.push(("msh.ensemble", ensemble.method.clone()));
        props.push(("msh.members", serde_json::to_string(&members).expect("ids serialise")));
    }
    props.into_iter().map(|(key, value)| StringStringEntryProto { key: Some(key.into()), value: Some(value) }).collect()
}

fn describe(predictor: &Predictor) -> String {
    match &predictor.ensemble {
        Some(e) => format!("an msh ensemble ({}) of {} members", e.method, e.members.len()),
        None => format!("an msh model of {} parameters", predictor.meta.parameters),
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::gru::GruConfig;
    use prost::Message;

    use super::*;
    use msh_train::model::{Model, ModelSpec, NodeModule};
    use proto::AttributeProto;

    fn model(yaml: &str, input_shape: Vec<usize>) -> Model {
        let spec = ModelSpec {
            architecture: msh_graph::arch_file::parse(yaml).unwrap(),
            input_shape,
            task: Task::Classification { classes: 3 },
        };
        Model::new(&spec, &Device::flex()).unwrap()
    }

    #[test]
    fn attributes_set_to_zero_are_written() {
        // ONNX's checker wants one value field per attribute: a zero must be on the wire.
        let bytes = int("axis", 0).encode_to_vec();
        let read = AttributeProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(read.i, Some(0));
        assert_eq!(read.r#type, Some(proto::AttributeType::Int as i32));
    }

    #[test]
    fn a_model_reads_raw_features_and_names_its_outputs() {
        let m = model("blocks:\n- name: c\n  nodes:\n  - {op: conv1d, filters: 2, kernel: 3}\n", vec![2, 5]);
        let predictor = Predictor::from_model(m);
        let onnx = to_onnx(&predictor, &Provenance { run: Some("r".into()), trial: Some(4) }).unwrap();
        let onnx = ModelProto::from_bytes(&onnx.to_bytes()).unwrap();
        let graph = onnx.graph.unwrap();
        let dims = |v: &ValueInfoProto| v.r#type.clone().unwrap().tensor_type.unwrap().shape.unwrap().dim;
        assert_eq!(graph.input[0].name.as_deref(), Some("input"));
        assert_eq!(dims(&graph.input[0])[0].dim_param.as_deref(), Some("batch"));
        assert_eq!(dims(&graph.input[0])[1].dim_value, Some(10));
        let outputs: Vec<_> = graph.output.iter().map(|o| o.name.clone().unwrap()).collect();
        assert_eq!(outputs, ["probabilities", "logits"]);
        let ops: Vec<_> = graph.node.iter().map(|n| n.op_type.clone().unwrap()).collect();
        assert_eq!(ops, ["Reshape", "Conv", "Flatten", "MatMul", "Add", "Softmax", "Identity"]);
        let mut names: Vec<_> = graph.node.iter().flat_map(|n| n.output.clone()).collect();
        names.extend(graph.initializer.iter().map(|t| t.name.clone().unwrap()));
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "tensor names are unique: {names:?}");
        let meta: Vec<_> =
            onnx.metadata_props.iter().map(|p| (p.key.clone().unwrap(), p.value.clone().unwrap())).collect();
        assert!(meta.contains(&("msh.trial".into(), "4".into())) && meta.contains(&("msh.run".into(), "r".into())));
    }

    #[test]
    fn what_onnx_cannot_express_is_refused_with_its_location() {
        let mut m = model("blocks:\n- name: g\n  nodes:\n  - {op: gru, hidden: 3}\n", vec![2, 5]);
        m.blocks[0].nodes[0] =
            NodeModule::Gru(GruConfig::new(2, 3, true).with_reset_after(false).init(&Device::flex()));
        let err = lower::lower_model(&mut GraphBuilder::default(), &m, "input", "").unwrap_err().to_string();
        assert_eq!(err, "block `g` (#0), node 1 (gru): a GRU that resets before the hidden product");
    }
}
