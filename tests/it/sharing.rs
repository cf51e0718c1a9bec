//! Weight sharing on MNIST-1D: a child starts from its parent's checkpoint where parameter
//! paths and shapes match, and starts better off than the same network initialised fresh.

use crate::common;

use std::sync::atomic::AtomicBool;

use burn::prelude::Device;
use msh_train::data::{self, DataSpec, Source, Splits};
use msh_train::model::{Donor, ModelSpec};
use msh_train::{self as train, Checkpoint, CheckpointMeta, TrainConfig, Trained};

const PARENT: &str = "blocks:
- name: stem
  nodes: [{op: conv1d, filters: 16, kernel: 5}, {op: relu}, {op: max_pool, size: 2}]
- name: body
  nodes: [{op: conv1d, filters: 32, kernel: 3}, {op: relu}]
";

fn mnist1d() -> Splits {
    let root = common::root();
    let spec = DataSpec {
        test: Some(Source::Csv(root.join("data/mnist1d/test.csv"))),
        shape: Some(vec![1, 40]),
        ..DataSpec::new(Source::Csv(root.join("data/mnist1d/train.csv")))
    };
    data::load(&spec, 1).unwrap()
}

fn run(yaml: &str, splits: &Splits, epochs: usize, donors: &[Donor]) -> (ModelSpec, Trained) {
    let spec = ModelSpec {
        architecture: msh_graph::arch_file::parse(yaml).unwrap(),
        input_shape: vec![1, 40],
        task: splits.task,
    };
    let config = TrainConfig { epochs, batch_size: 64, learning_rate: 0.003, seed: 11, ..TrainConfig::default() };
    let guidance = train::Guidance { donors: donors.to_vec(), ..Default::default() };
    let trained =
        train::train_until(&spec, splits, &config, &Device::flex(), &guidance, &mut |_| {}, &AtomicBool::new(false))
            .unwrap();
    (spec, trained)
}

#[test]
fn a_snapshot_child_starts_below_a_fresh_one_and_inherits_only_matching_parameters() {
    let splits = mnist1d();
    let (spec, parent) = run(PARENT, &splits, 4, &[]);
    let dir = common::TempDir::new();
    let checkpoint = Checkpoint::new(dir.path());
    let meta = CheckpointMeta {
        version: train::CHECKPOINT_VERSION,
        spec,
        normalization: splits.normalization.clone(),
        class_names: vec![],
        parameters: parent.parameters,
        metrics: Default::default(),
    };
    checkpoint.save(&parent.model, &meta).unwrap();
    let donor = [Donor { weights: checkpoint.weights(), weight: 1.0 }];

    // The same architecture (an hparam mutation): everything is inherited.
    let (_, fresh) = run(PARENT, &splits, 1, &[]);
    let (_, child) = run(PARENT, &splits, 1, &donor);
    assert_eq!(child.inherited, child.parameters);
    let (fresh_loss, child_loss) = (fresh.epochs[0].valid.loss, child.epochs[0].valid.loss);
    eprintln!("first-epoch validation loss: fresh {fresh_loss:.4}, snapshot child {child_loss:.4}");
    assert!(child_loss < fresh_loss, "fresh {fresh_loss}, child {child_loss}");

    // A wider body: the stem and the head bias are inherited, the body and head weights not.
    let wider = PARENT.replace("filters: 32", "filters: 48");
    let (_, grown) = run(&wider, &splits, 1, &donor);
    assert_eq!(grown.inherited, 16 * 5 + 16 + 10, "the stem and the head bias");

    // An average of the parent with itself is the parent.
    let twice = [Donor { weight: 0.3, ..donor[0].clone() }, Donor { weight: 0.7, ..donor[0].clone() }];
    let (_, averaged) = run(PARENT, &splits, 1, &twice);
    assert_eq!(averaged.inherited, averaged.parameters);
    assert!((averaged.epochs[0].valid.loss - child_loss).abs() < 1e-3);
}
