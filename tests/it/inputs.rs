//! Bad inputs: each gets a message naming the file and the row, record or node at fault.
//! CSV, NumPy and architecture defects are checked in-process through the library, one
//! data error through the `msh` binary (printed, non-zero exit). Also the CIFAR-10,
//! image-folder and NumPy providers on written data, through the binary (the NumPy
//! fixtures are written by NumPy: tests/fixtures/numpy/make.py).

use crate::common;

use std::path::{Path, PathBuf};

use common::{failure, train_json};
use msh_train::data::{DataSpec, LabelColumn, Source, TaskKind};

const IRIS_ARCH: &str = "workflows/archs/iris_mlp.yaml";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// The message of the data error `msh train` reports for `spec` (after "cannot load data
/// SOURCE:"), from the library in-process: no process boundary is under test here.
fn load_error(spec: &DataSpec) -> String {
    match msh_train::data::load(spec, 0) {
        Ok(_) => panic!("{} loaded", spec.source),
        Err(err) => err.to_string(),
    }
}

/// What `msh train --data csv:PATH` loads, with its defaults.
fn csv_spec(path: &Path) -> DataSpec {
    DataSpec::new(Source::Csv(path.to_path_buf()))
}

/// A file of the repository (the library resolves paths against the test's directory).
fn bundled(path: &str) -> PathBuf {
    common::root().join(path)
}

/// The one data error through the binary: it reaches stderr, with the source it was
/// loading, and `msh train` exits non-zero.
#[test]
fn a_data_error_is_printed_and_msh_train_fails() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "ragged.csv", "label,a,b\n0,1,2\n1,3\n");
    let data = format!("csv:{csv}");
    let err = failure(&["train", "--backend", "cpu", "--epochs", "1", "--data", &data, "--arch", IRIS_ARCH]);
    assert!(err.contains(&format!("cannot load data {data}")), "{err}");
    assert!(err.contains(&format!("{csv}:3: row has 2 fields, expected 3")), "{err}");
}

#[test]
fn missing_csv_file() {
    let missing = bundled("data/nowhere.csv");
    let err = load_error(&csv_spec(&missing));
    assert!(err.contains(&format!("cannot read {}", missing.display())), "{err}");
}

#[test]
fn ragged_row_names_file_and_line() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "ragged.csv", "label,a,b\n0,1,2\n1,3\n");
    let err = load_error(&csv_spec(Path::new(&csv)));
    assert!(err.contains(&format!("{csv}:3: row has 2 fields, expected 3")), "{err}");
}

#[test]
fn non_numeric_cell_names_line_and_column() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "words.csv", "label,a,b\n0,1,2\n1,3,seven\n");
    let err = load_error(&csv_spec(Path::new(&csv)));
    assert!(err.contains(&format!("{csv}:3: column `b`: `seven` is not a number")), "{err}");
}

#[test]
fn label_that_is_not_a_class_index() {
    let dir = common::TempDir::new();
    let csv = write(dir.path(), "neg.csv", "label,a\n0,1\n-1,2\n");
    let err = load_error(&csv_spec(Path::new(&csv)));
    assert!(err.contains(&format!("{csv}:3: label `-1` in column `label` is not a class index")), "{err}");
}

#[test]
fn test_label_out_of_the_training_range() {
    let dir = common::TempDir::new();
    let train = write(dir.path(), "train.csv", "label,a\n0,1\n1,2\n0,3\n1,4\n0,5\n1,6\n");
    let test = write(dir.path(), "test.csv", "label,a\n0,1\n7,2\n");
    let spec = DataSpec { test: Some(Source::Csv(test.into())), ..csv_spec(Path::new(&train)) };
    let err = load_error(&spec);
    assert!(err.contains("test label 7 is out of range: the training split of"), "{err}");
    assert!(err.contains("has classes 0..1"), "{err}");
}

#[test]
fn unknown_label_column_lists_the_columns() {
    let iris = bundled("data/iris/iris.csv");
    let spec = DataSpec { label: Some(LabelColumn::Name("species".into())), ..csv_spec(&iris) };
    let err = load_error(&spec);
    assert!(err.contains("data/iris/iris.csv:1: no column named `species` in the header"), "{err}");
    assert!(err.contains(&format!("{}:1: no column named `species`", iris.display())), "{err}");
}

#[test]
fn reshape_that_does_not_fit() {
    let spec = DataSpec { shape: Some(vec![2, 3]), ..csv_spec(&bundled("data/iris/iris.csv")) };
    let err = load_error(&spec);
    assert!(err.contains("shape [2, 3] holds 6 values but samples have 4"), "{err}");
}

#[test]
fn misspelt_architecture_key_has_line_and_column() {
    let dir = common::TempDir::new();
    let arch = write(dir.path(), "arch.yaml", "blocks:\n  - name: b\n    nodes:\n      - {op: dense, unit: 8}\n");
    let err = msh_graph::arch_file::read(Path::new(&arch)).unwrap_err().to_string();
    assert!(err.contains(&format!("{arch}:4:")), "{err}");
    assert!(err.contains("unknown field `unit`"), "{err}");
}

/// Checked as `msh train` checks it: against the samples' shape once the data is loaded.
#[test]
fn architecture_that_does_not_fit_names_block_and_node() {
    let dir = common::TempDir::new();
    let arch = write(
        dir.path(),
        "arch.yaml",
        "blocks:\n  - name: stem\n    nodes:\n      - {op: conv1d, filters: 8, kernel: 3}\n",
    );
    let splits = msh_train::data::load(&csv_spec(&bundled("data/iris/iris.csv")), 0).unwrap();
    let architecture = msh_graph::arch_file::read(Path::new(&arch)).unwrap();
    let err = msh_graph::infer_architecture(&architecture, &splits.train.shape).unwrap_err().to_string();
    assert!(
        err.contains("block `stem` (#0), node 1 (conv1d): expects rank 2 [channels, length], got rank 1 shape [4]"),
        "{err}"
    );
}

#[test]
fn cifar10_binary_trains_and_truncation_is_reported() {
    let dir = common::TempDir::new();
    common::write_cifar(dir.path(), 20);
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
    // A subset of the training batches; the test batch stays whole.
    let r =
        train_json(&["--data", &data, "--arch", "workflows/archs/cifar_cnn.yaml", "--epochs", "1", "--subset", "40"]);
    assert_eq!((r["test"]["samples"].as_u64(), r["valid"]["samples"].as_u64()), (Some(20), Some(4)));

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

const NUMPY: &str = "tests/fixtures/numpy";

/// Reads a source as it is, with the library (paths from the repository root).
fn read_source(source: &str, task: TaskKind) -> msh_train::data::Dataset {
    let source: Source = source.parse().unwrap();
    let spec = DataSpec { task, ..DataSpec::new(source.relative_to(&common::root())) };
    msh_train::data::read(&spec.source, &spec).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_same_values(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "value {i}: {x} against {y}");
    }
}

#[test]
fn numpy_arrays_hold_what_the_csv_holds_in_every_layout() {
    let csv = read_source("csv:data/digits/digits.csv", TaskKind::Classification);
    // Deflated .npz, uint8 samples of shape [1, 8, 8] and int64 labels.
    let npz = read_source(&format!("npz:{NUMPY}/digits.npz"), TaskKind::Classification);
    assert_eq!(npz.shape, [1, 8, 8]);
    assert_same_values(&npz.features, &csv.features);
    assert_eq!(npz.targets, csv.targets);
    // A pair of .npy files: big-endian float32 in Fortran order, labels of shape [N, 1].
    let npy = read_source(&format!("npy:{NUMPY}/digits_x.npy,{NUMPY}/digits_y.npy"), TaskKind::Classification);
    assert_eq!((npy.len(), npy.shape.as_slice()), (600, &[64][..]));
    assert_same_values(&npy.features, &csv.features[..600 * 64]);
    assert_eq!(npy.targets, csv.targets[..600]);
    // Named float64 arrays of an uncompressed .npz, regression targets.
    let csv = read_source("csv:data/diabetes/diabetes.csv", TaskKind::Regression);
    let npz = read_source(&format!("npz:{NUMPY}/diabetes.npz:features,target"), TaskKind::Regression);
    assert_same_values(&npz.features, &csv.features);
    assert_same_values(&npz.targets, &csv.targets);
}

#[test]
fn numpy_data_trains_through_the_binary() {
    let data = format!("npz:{NUMPY}/digits.npz");
    let r = train_json(&["--data", &data, "--arch", "workflows/archs/digits_cnn.yaml", "--epochs", "4"]);
    let acc = common::test_metric(&r, "accuracy");
    assert!(acc > 0.9, "digits from .npz: test accuracy {acc}");
    let data = format!("npz:{NUMPY}/diabetes.npz:features,target");
    let r = train_json(&[
        "--data",
        &data,
        "--task",
        "regression",
        "--arch",
        "workflows/archs/diabetes_mlp.yaml",
        "--epochs",
        "20",
        "--seed",
        "3",
    ]);
    let r2 = common::test_metric(&r, "r2");
    assert!(r2 > 0.2, "diabetes from .npz: test r2 {r2}");
}

/// A `.npy` file with `header` (a Python dict literal) and `body`.
fn npy_bytes(header: &str, body: &[u8]) -> Vec<u8> {
    let mut text = format!("{header}\n");
    while (10 + text.len()) % 64 != 0 {
        text.insert(text.len() - 1, ' ');
    }
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((text.len() as u16).to_le_bytes());
    bytes.extend(text.as_bytes());
    bytes.extend(body);
    bytes
}

fn f32_npy(dir: &Path, name: &str, shape: &str, values: &[f32]) -> String {
    let body: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = npy_bytes(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"), &body);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn bad_numpy_inputs_name_the_file_and_the_fault() {
    let dir = common::TempDir::new();
    let train = |data: String| load_error(&DataSpec::new(data.parse::<Source>().unwrap().relative_to(&common::root())));
    let x = f32_npy(dir.path(), "x.npy", "(4, 2)", &[1., 2., 3., 4., 5., f32::NAN, 7., 8.]);
    let y = f32_npy(dir.path(), "y.npy", "(3,)", &[0., 1., 0.]);
    let err = train(format!("npy:{x},{y}"));
    assert!(err.contains("features have shape [4, 2] and targets [3]"), "{err}");

    let y = f32_npy(dir.path(), "y4.npy", "(4,)", &[0., 1., 0., 1.]);
    let err = train(format!("npy:{x},{y}"));
    assert!(err.contains(&format!("{x}: sample 2, value 1: NaN is not finite")), "{err}");

    let bad_label = f32_npy(dir.path(), "half.npy", "(4,)", &[0., 1.5, 0., 1.]);
    let x = f32_npy(dir.path(), "x_ok.npy", "(4, 2)", &[1., 2., 3., 4., 5., 6., 7., 8.]);
    let err = train(format!("npy:{x},{bad_label}"));
    assert!(err.contains(&format!("{bad_label}: target 1: 1.5 is not a class index")), "{err}");

    // A header that promises more than the file holds is refused before allocating.
    let liar = dir.path().join("liar.npy");
    std::fs::write(
        &liar,
        npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4000000000, 1000), }", &[0; 16]),
    )
    .unwrap();
    let err = train(format!("npy:{},{y}", liar.display()));
    assert!(err.contains(&format!("{}: header declares shape [4000000000, 1000]", liar.display())), "{err}");

    let objects = dir.path().join("objects.npy");
    std::fs::write(&objects, npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", &[0; 32])).unwrap();
    let err = train(format!("npy:{x},{}", objects.display()));
    assert!(err.contains(&format!("{}: unsupported .npy header", objects.display())), "{err}");

    let not_npy = write(dir.path(), "text.npy", "label,a\n0,1\n");
    let err = train(format!("npy:{not_npy},{y}"));
    assert!(err.contains(&format!("{not_npy}: not a NumPy .npy array")), "{err}");

    let err = train(format!("npz:{NUMPY}/diabetes.npz"));
    let diabetes = bundled(&format!("{NUMPY}/diabetes.npz"));
    assert!(
        err.contains("diabetes.npz: has no array `x`; it holds features, target")
            && err.contains(&format!("npz:{}:FEATURES,TARGETS", diabetes.display())),
        "{err}"
    );
    let err = train(format!("npz:{not_npy}"));
    assert!(err.contains(&format!("{not_npy}: not an .npz (zip) file")), "{err}");
}
