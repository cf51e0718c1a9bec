//! The model builder and checkpoints through the library: stable parameter paths, every
//! primitive op in a trainable model (the fixture checked against `Op::NAMES`), and
//! save/load round trips.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use burn::prelude::Device;
use msh_graph::{Architecture, Op};
use msh_train::data::{self, DataSpec, Source, Splits};
use msh_train::model::{Model, ModelSpec, Task};
use msh_train::{self as train, CHECKPOINT_VERSION, Checkpoint, CheckpointMeta, TrainConfig};

fn arch(yaml: &str) -> Architecture {
    msh_graph::arch_file::parse(yaml).unwrap()
}

#[test]
fn parameter_paths_name_block_node_and_parameter() {
    let spec = ModelSpec {
        architecture: arch(
            "blocks:\n- name: a\n  nodes:\n  - {op: conv1d, filters: 4, kernel: 3}\n  - {op: relu}\n  - {op: batch_norm}\n",
        ),
        input_shape: vec![2, 10],
        task: Task::Classification { classes: 3 },
    };
    let model = Model::new(&spec, &Device::flex()).unwrap();
    let paths: BTreeMap<String, Vec<usize>> = model.parameter_paths().into_iter().collect();
    assert_eq!(paths["blocks.0.nodes.0.Conv1d.weight"], vec![4, 2, 3]);
    assert_eq!(paths["blocks.0.nodes.2.BatchNorm.gamma"], vec![4]);
    assert_eq!(paths["blocks.0.nodes.2.BatchNorm.running_var"], vec![4]);
    assert_eq!(paths["head.weight"], vec![40, 3]);
    assert_eq!(model.parameter_count(), 4 * 2 * 3 + 4 + 4 + 4 + 40 * 3 + 3);
}

fn train_briefly(yaml: &str, splits: &Splits) -> train::Trained {
    let spec = ModelSpec { architecture: arch(yaml), input_shape: splits.train.shape.clone(), task: splits.task };
    let config = TrainConfig { epochs: 2, batch_size: 8, ..TrainConfig::default() };
    let trained = train::train(&spec, splits, &config, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(trained.outcome, train::Outcome::Completed);
    assert_eq!(trained.epochs.len(), 2);
    trained
}

/// The model that `every_op_builds_and_trains` trains and tests/it/onnx.rs exports.
const EVERY_OP_FIXTURE: &str = "tests/fixtures/every_op.yaml";

/// The ops `EVERY_OP_FIXTURE` leaves out, each with the reason; the fixture holds every
/// other op of `Op::NAMES`.
const NOT_IN_EVERY_OP: &[(&str, &str)] = &[(
    "embedding",
    "it reads token ids `[L]`, not the fixture's `[4, 12]` features; \
     tests/it/onnx.rs trains and exports one in a model of its own",
)];

/// A new op joins `Op::NAMES` (the compiler sees to that), so it fails here until the
/// every-op fixture uses it, and then is trained below and exported to ONNX.
#[test]
fn the_every_op_fixture_has_a_node_of_every_op() {
    let yaml = std::fs::read_to_string(common::root().join(EVERY_OP_FIXTURE)).unwrap();
    let used: BTreeSet<&str> = arch(&yaml).blocks.iter().flat_map(|b| &b.nodes).map(|n| n.op.name()).collect();
    let left_out: BTreeSet<&str> = NOT_IN_EVERY_OP.iter().map(|(name, _)| *name).collect();
    for name in Op::NAMES {
        assert!(
            used.contains(name) || left_out.contains(name),
            "{EVERY_OP_FIXTURE} has no `{name}` node; add one, or list it in NOT_IN_EVERY_OP with the reason"
        );
    }
    for (name, reason) in NOT_IN_EVERY_OP {
        assert!(Op::NAMES.contains(name), "NOT_IN_EVERY_OP lists `{name}`, which is no op");
        assert!(!used.contains(name), "{EVERY_OP_FIXTURE} uses `{name}`, listed as left out ({reason})");
    }
}

/// One model using every primitive op (but those of `NOT_IN_EVERY_OP`) trains without
/// error.
#[test]
fn every_op_builds_and_trains() {
    let yaml = std::fs::read_to_string(common::root().join(EVERY_OP_FIXTURE)).unwrap();
    let yaml = yaml.as_str();
    let trained = train_briefly(yaml, &common::synthetic(&[4, 12], 32, 3, false));
    // The count from shapes alone (what budgets and bounds use) is what the model holds.
    assert_eq!(msh_graph::parameter_count(&arch(yaml), &[4, 12], 3).unwrap(), trained.parameters as u64);
}

#[test]
fn causal_convolutions_see_no_later_step() {
    // The model's outputs read only the first five steps of the convolution's output.
    let model = |padding: &str| {
        let yaml = format!(
            "blocks:\n- name: c\n  nodes:\n  - {{op: conv1d, filters: 1, kernel: 4, padding: {padding}}}\n  \
             - {{op: flatten}}\n  - {{op: match_features, units: 5}}\n"
        );
        let spec = ModelSpec { architecture: arch(&yaml), input_shape: vec![1, 12], task: Task::Regression };
        Model::seeded(&spec, 3, &Device::flex()).unwrap()
    };
    let outputs = |m: &Model, later: f32| {
        let x: Vec<f32> = (0..12).map(|i| if i < 5 { i as f32 * 0.3 } else { later }).collect();
        let input = burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(x, [1, 12]), &Device::flex());
        m.forward(input).into_data().try_to_vec::<f32>().unwrap()
    };
    let causal = model("causal");
    assert_eq!(outputs(&causal, 1.0), outputs(&causal, -7.0));
    let same = model("same");
    assert_ne!(outputs(&same, 1.0), outputs(&same, -7.0), "a centred kernel reads the next steps");
}

#[test]
fn parameters_are_counted_from_shapes_as_the_model_holds_them() {
    let archs = [
        ("mnist1d_cnn", vec![1, 40], 10),
        ("mnist1d_resnet", vec![1, 40], 10),
        ("mnist1d_lstm", vec![1, 40], 10),
        ("mnist1d_attention", vec![1, 40], 10),
        ("cifar_cnn", vec![3, 32, 32], 10),
        ("digits_cnn", vec![1, 8, 8], 10),
        ("iris_mlp", vec![4], 3),
        ("diabetes_mlp", vec![10], 1),
    ];
    for (name, shape, outputs) in archs {
        let text = std::fs::read_to_string(common::root().join(format!("workflows/archs/{name}.yaml"))).unwrap();
        let architecture = arch(&text);
        let task = if outputs == 1 { Task::Regression } else { Task::Classification { classes: outputs } };
        let spec = ModelSpec { architecture: architecture.clone(), input_shape: shape.clone(), task };
        let held = Model::new(&spec, &Device::flex()).unwrap().parameter_count() as u64;
        assert_eq!(msh_graph::parameter_count(&architecture, &shape, outputs).unwrap(), held, "{name}");
    }
}

#[test]
fn embedding_of_token_ids_trains() {
    let yaml = "blocks:\n- name: e\n  nodes:\n  - {op: embedding, vocab: 10, dim: 4}\n  - {op: global_avg_pool}\n";
    let trained = train_briefly(yaml, &common::synthetic(&[5], 32, 2, true));
    assert_eq!(trained.parameters, 10 * 4 + 4 * 2 + 2);
    assert_eq!(msh_graph::parameter_count(&arch(yaml), &[5], 2).unwrap(), trained.parameters as u64);
}

#[test]
fn checkpoint_round_trip_gives_identical_logits() {
    let spec =
        DataSpec { shape: Some(vec![1, 8, 8]), ..DataSpec::new(Source::Csv("../data/digits/digits.csv".into())) };
    let splits = data::load(&spec, 7).unwrap();
    let model_spec = ModelSpec {
        architecture: arch(
            "blocks:\n- name: f\n  nodes:\n  - {op: conv2d, filters: 8, kernel: 3}\n  - {op: batch_norm}\n  - {op: relu}\n  - {op: global_avg_pool}\n",
        ),
        input_shape: splits.train.shape.clone(),
        task: splits.task,
    };
    let config = TrainConfig { epochs: 1, ..TrainConfig::default() };
    let trained = train::train(&model_spec, &splits, &config, &Device::flex(), &mut |_| {}).unwrap();
    let before = train::predict(&trained.model, &splits.test.features, splits.test.sample_len());

    let dir = common::TempDir::new();
    let checkpoint = Checkpoint::new(dir.path().join("ckpt"));
    let meta = CheckpointMeta {
        version: CHECKPOINT_VERSION,
        spec: model_spec.clone(),
        normalization: splits.normalization.clone(),
        class_names: vec![],
        parameters: trained.parameters,
        metrics: BTreeMap::new(),
    };
    checkpoint.save(&trained.model, &meta).unwrap();
    let (loaded, loaded_meta) = checkpoint.load(&Device::flex()).unwrap();
    let after = train::predict(&loaded, &splits.test.features, splits.test.sample_len());
    assert_eq!(before, after, "logits differ after reload");
    assert_eq!(loaded_meta.spec, model_spec);
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path().join("ckpt")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "only model.json and weights.bpk remain: {leftovers:?}");

    std::fs::write(dir.path().join("ckpt/weights.bpk"), b"garbage").unwrap();
    let err = checkpoint.load(&Device::flex()).unwrap_err().to_string();
    assert!(err.contains("weights.bpk"), "{err}");
}
