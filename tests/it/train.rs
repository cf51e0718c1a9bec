//! End-to-end training of real models on the bundled real data, through the `msh` binary.

use crate::common;

use common::{test_metric, train_json};

#[test]
fn mlp_on_iris_reaches_90_percent() {
    let r = train_json(&[
        "--data",
        "csv:data/iris/iris.csv",
        "--arch",
        "workflows/archs/iris_mlp.yaml",
        "--epochs",
        "60",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "1",
    ]);
    let acc = test_metric(&r, "accuracy");
    assert!(acc >= 0.9, "iris test accuracy {acc}");
    assert_eq!(r["outcome"]["status"], "completed");
    // 4*32+32 + 32*32+32 + 32*3+3
    assert_eq!(r["parameters"], 1315);
}

#[test]
fn regression_mlp_on_diabetes_reaches_linear_r2() {
    let r = train_json(&[
        "--data",
        "csv:data/diabetes/diabetes.csv",
        "--task",
        "regression",
        "--arch",
        "workflows/archs/diabetes_mlp.yaml",
        "--epochs",
        "60",
        "--batch-size",
        "32",
        "--lr",
        "0.003",
        "--seed",
        "3",
    ]);
    let r2 = test_metric(&r, "r2");
    assert!(r2 >= 0.4, "diabetes test r2 {r2}");
    assert!(test_metric(&r, "rmse") > 1.0, "rmse is reported in target units");
}

#[test]
fn cnn_2d_on_digits_reaches_95_percent() {
    let r = train_json(&[
        "--data",
        "csv:data/digits/digits.csv",
        "--shape",
        "1,8,8",
        "--arch",
        "workflows/archs/digits_cnn.yaml",
        "--epochs",
        "15",
        "--seed",
        "2",
    ]);
    let acc = test_metric(&r, "accuracy");
    assert!(acc >= 0.95, "digits test accuracy {acc}");
}

const MNIST1D: [&str; 6] =
    ["--data", "csv:data/mnist1d/train.csv", "--test-data", "csv:data/mnist1d/test.csv", "--shape", "1,40"];

#[test]
fn cnn_1d_on_mnist1d_reaches_90_percent() {
    let mut args = MNIST1D.to_vec();
    args.extend([
        "--arch",
        "workflows/archs/mnist1d_cnn.yaml",
        "--epochs",
        "25",
        "--lr",
        "0.002",
        "--lr-decay-rate",
        "0.5",
        "--lr-decay-steps",
        "800",
        "--seed",
        "4",
    ]);
    let r = train_json(&args);
    let acc = test_metric(&r, "accuracy");
    assert!(acc >= 0.90, "mnist1d cnn test accuracy {acc}");
}

#[test]
fn lstm_on_mnist1d_beats_the_published_mlp() {
    let mut args = MNIST1D.to_vec();
    args.extend([
        "--arch",
        "workflows/archs/mnist1d_lstm.yaml",
        "--epochs",
        "12",
        "--lr",
        "0.003",
        "--clip",
        "5",
        "--seed",
        "5",
    ]);
    let r = train_json(&args);
    let acc = test_metric(&r, "accuracy");
    assert!(acc > 0.68, "mnist1d lstm test accuracy {acc}");
}

#[test]
fn self_attention_on_mnist1d_beats_the_published_mlp() {
    let mut args = MNIST1D.to_vec();
    args.extend(["--arch", "workflows/archs/mnist1d_attention.yaml", "--epochs", "25", "--lr", "0.002", "--seed", "6"]);
    let r = train_json(&args);
    let acc = test_metric(&r, "accuracy");
    assert!(acc > 0.68, "mnist1d attention test accuracy {acc}");
}

#[test]
fn every_optimizer_trains_iris() {
    for (optimizer, lr) in [("sgd", "0.05"), ("rmsprop", "0.005"), ("adagrad", "0.1")] {
        let r = train_json(&[
            "--data",
            "csv:data/iris/iris.csv",
            "--arch",
            "workflows/archs/iris_mlp.yaml",
            "--epochs",
            "40",
            "--batch-size",
            "16",
            "--optimizer",
            optimizer,
            "--lr",
            lr,
            "--l2",
            "0.0001",
            "--clip",
            "5",
            "--lr-decay-rate",
            "0.9",
            "--lr-decay-steps",
            "100",
        ]);
        let acc = test_metric(&r, "accuracy");
        assert!(acc >= 0.8, "{optimizer}: iris test accuracy {acc}");
    }
}

#[test]
fn exploding_learning_rate_is_reported_as_diverged() {
    let out = common::run(&[
        "train",
        "--json",
        "--quiet",
        "--backend",
        "cpu",
        "--data",
        "csv:data/diabetes/diabetes.csv",
        "--task",
        "regression",
        "--normalize",
        "none",
        "--arch",
        "workflows/archs/diabetes_mlp.yaml",
        "--optimizer",
        "sgd",
        "--lr",
        "1e6",
        "--epochs",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("training diverged at epoch 1"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"]["status"], "diverged");
}

#[test]
fn plain_output_when_piped() {
    let out = common::run(&[
        "train",
        "--backend",
        "cpu",
        "--data",
        "csv:data/iris/iris.csv",
        "--arch",
        "workflows/archs/iris_mlp.yaml",
        "--epochs",
        "2",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("epoch 2/2  train loss"), "{stderr}");
    assert!(!stderr.contains('\r'), "no progress bar when piped");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test           accuracy"), "{stdout}");
}

/// The GPU code path (burn-wgpu, with the lowered convolutions, and the LSTM and GRU composed
/// from tensor ops) trains the same models as the CPU (its own kernels, the LSTM and GRU as
/// one op each): same data and seed, so the same starting weights and batches, and losses
/// equal to 1e-4. Without a GPU this runs on Vulkan's software adapter (lavapipe, from Debian's
/// `mesa-vulkan-drivers`, which `.ci/run` installs).
#[test]
fn wgpu_training_matches_the_cpu() {
    let dir = common::TempDir::new();
    let models = [
        (
            "cnn",
            "1,8,8",
            "- {op: conv2d, filters: 8, kernel: 3}\n      - {op: relu}\n      - {op: max_pool, size: 2}\n      - {op: flatten}",
        ),
        // Digits as 8 steps of 8 features.
        ("lstm", "8,8", "- {op: lstm, hidden: 8, return_sequences: true}\n      - {op: lstm, hidden: 8}"),
        ("gru", "8,8", "- {op: gru, hidden: 8}"),
    ];
    for (name, shape, nodes) in models {
        let arch = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&arch, format!("blocks:\n  - name: features\n    nodes:\n      {nodes}\n")).unwrap();
        let arch = arch.to_str().unwrap();
        let train = |backend: &str| {
            let args = [
                "train",
                "--json",
                "--quiet",
                "--backend",
                backend,
                "--data",
                "csv:data/digits/digits.csv",
                "--shape",
                shape,
                "--arch",
                arch,
                "--epochs",
                "2",
                "--seed",
                "4",
            ];
            let out = common::run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success(),
                "msh {args:?} failed (without a GPU, install mesa-vulkan-drivers for lavapipe):\n{stderr}"
            );
            let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("msh train --json prints JSON");
            (result, stderr)
        };
        let (cpu, _) = train("cpu");
        let (gpu, stderr) = train("wgpu");
        let backend = gpu["backend"].as_str().unwrap();
        assert!(backend.starts_with("wgpu: "), "{backend}");
        if backend.contains("software") {
            assert!(
                stderr.contains("much slower than --backend cpu"),
                "a software adapter is used with a warning: {stderr}"
            );
        }
        let close = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{name}: {what}: wgpu {a} vs cpu {b}");
        };
        for (g, c) in gpu["epochs"].as_array().unwrap().iter().zip(cpu["epochs"].as_array().unwrap()) {
            close(&g["train_loss"], &c["train_loss"], "train loss");
            close(&g["valid"]["loss"], &c["valid"]["loss"], "valid loss");
        }
        close(&gpu["test"]["loss"], &cpu["test"]["loss"], "test loss");
        close(&gpu["test"]["accuracy"], &cpu["test"]["accuracy"], "test accuracy");
    }
}
