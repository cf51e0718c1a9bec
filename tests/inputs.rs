//! Bad inputs through the `msh` binary: each gets a message naming the file and the row,
//! record or node at fault. Also the CIFAR-10 and image-folder providers on written data.

mod common;

use std::path::Path;

use common::{failure, train_json};

const IRIS_ARCH: &str = "workflows/archs/iris_mlp.yaml";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn train_csv(csv: &str, extra: &[&str]) -> String {
    let data = format!("csv:{csv}");
    let mut args = vec!["train", "--backend", "cpu", "--epochs", "1", "--data", &data, "--arch", IRIS_ARCH];
    args.extend_from_slice(extra);
    failure(&args)
}

#[test]
fn missing_csv_file() {
    let err = train_csv("data/nowhere.csv", &[]);
    assert!(err.contains("cannot read data/nowhere.csv"), "{err}");
}

#[test]
fn ragged_row_names_file_and_line() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "ragged.csv", "label,a,b\n0,1,2\n1,3\n");
    let err = train_csv(&csv, &[]);
    assert!(err.contains(&format!("{csv}:3: row has 2 fields, expected 3")), "{err}");
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "words.csv", "label,a,b\n0,1,2\n1,3,seven\n");
    let err = train_csv(&csv, &[]);
    assert!(err.contains(&format!("{csv}:3: column `b`: `seven` is not a number")), "{err}");
}

#[test]
fn label_that_is_not_a_class_index() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "neg.csv", "label,a\n0,1\n-1,2\n");
    let err = train_csv(&csv, &[]);
    assert!(err.contains(&format!("{csv}:3: label `-1` in column `label` is not a class index")), "{err}");
}

#[test]
fn test_label_out_of_the_training_range() {
    let dir = common::TempDir::new();
    let train = write(dir.path(), "train.csv", "label,a\n0,1\n1,2\n0,3\n1,4\n0,5\n1,6\n");
    let test = format!("csv:{}", write(dir.path(), "test.csv", "label,a\n0,1\n7,2\n"));
    let err = train_csv(&train, &["--test-data", &test]);
    assert!(err.contains("test label 7 is out of range: the training split of"), "{err}");
    assert!(err.contains("has classes 0..1"), "{err}");
}

#[test]
fn unknown_label_column_lists_the_columns() {
    let err = train_csv("data/iris/iris.csv", &["--label", "species"]);
    assert!(err.contains("data/iris/iris.csv:1: no column named `species` in the header"), "{err}");
}

#[test]
fn reshape_that_does_not_fit() {
    let err = train_csv("data/iris/iris.csv", &["--shape", "2,3"]);
    assert!(err.contains("shape [2, 3] holds 6 values but samples have 4"), "{err}");
}

#[test]
fn misspelt_architecture_key_has_line_and_column() {
    let dir = common::TempDir::new();
    let arch = write(dir.path(), "arch.yaml", "blocks:\n  - name: b\n    nodes:\n      - {op: dense, unit: 8}\n");
    let err = failure(&["train", "--data", "csv:data/iris/iris.csv", "--arch", &arch]);
    assert!(err.contains(&format!("{arch}:4:")), "{err}");
    assert!(err.contains("unknown field `unit`"), "{err}");
}

#[test]
fn architecture_that_does_not_fit_names_block_and_node() {
    let dir = common::TempDir::new();
    let arch = write(
        dir.path(),
        "arch.yaml",
        "blocks:\n  - name: stem\n    nodes:\n      - {op: conv1d, filters: 8, kernel: 3}\n",
    );
    let err = failure(&["train", "--data", "csv:data/iris/iris.csv", "--arch", &arch]);
    assert!(
        err.contains("block `stem` (#0), node 1 (conv1d): expects rank 2 [channels, length], got rank 1 shape [4]"),
        "{err}"
    );
}

/// Writes CIFAR-10 binary files with `records` records each; labels cycle through 0..10 and
/// each class gets a distinct mean brightness, so a model can learn it.
fn write_cifar(dir: &Path, records: usize) {
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        let mut bytes = Vec::with_capacity(records * 3073);
        for i in 0..records {
            let label = (i % 10) as u8;
            bytes.push(label);
            bytes.extend((0..3072).map(|p| label * 20 + (p % 7) as u8));
        }
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

#[test]
fn cifar10_binary_trains_and_truncation_is_reported() {
    let dir = common::TempDir::new();
    write_cifar(dir.path(), 20);
    let data = format!("cifar10:{}", dir.path().display());
    let r = train_json(&[
        "--data",
        &data,
        "--arch",
        "workflows/archs/cifar_cnn.yaml",
        "--epochs",
        "3",
        "--batch-size",
        "20",
    ]);
    assert_eq!(r["test"]["samples"], 20);
    assert_eq!(r["valid"]["samples"], 10);

    let batch3 = dir.path().join("data_batch_3.bin");
    let mut bytes = std::fs::read(&batch3).unwrap();
    bytes.truncate(3073 * 4 + 100);
    std::fs::write(&batch3, bytes).unwrap();
    let err = failure(&["train", "--data", &data, "--arch", "workflows/archs/cifar_cnn.yaml"]);
    assert!(err.contains(&format!("{}: truncated record 4", batch3.display())), "{err}");

    std::fs::remove_file(&batch3).unwrap();
    let err = failure(&["train", "--data", &data, "--arch", "workflows/archs/cifar_cnn.yaml"]);
    assert!(err.contains(&format!("cannot read {}", batch3.display())), "{err}");
}

#[test]
fn image_folders_train_and_a_broken_image_is_named() {
    let dir = common::TempDir::new();
    for (class, value) in [("dark", 30u8), ("light", 220u8)] {
        let class_dir = dir.path().join(class);
        std::fs::create_dir(&class_dir).unwrap();
        for i in 0..6u8 {
            let img =
                image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([value, value.wrapping_add(i), (x + y) as u8]));
            img.save(class_dir.join(format!("{i}.png"))).unwrap();
        }
    }
    let data = format!("images:{}", dir.path().display());
    let r = train_json(&[
        "--data",
        &data,
        "--image-size",
        "8",
        "--arch",
        "workflows/archs/digits_cnn.yaml",
        "--epochs",
        "2",
        "--test-fraction",
        "0.25",
    ]);
    assert_eq!(r["test"]["samples"], 3);

    let broken = dir.path().join("light").join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let err = failure(&["train", "--data", &data, "--arch", "workflows/archs/digits_cnn.yaml"]);
    assert!(err.contains(&format!("{}: cannot read image", broken.display())), "{err}");
}
