//! ONNX export checked by an independent runtime: every exported model passes ONNX's full
//! check, loads in ONNX Runtime, and gives the probabilities (or values) that `msh predict`
//! gives on the same raw inputs, within 1e-4.
//!
//! ONNX Runtime and ONNX come from PyPI: `MSH_TEST_PYTHON` names the interpreter, else
//! `.ci/python` makes (or reuses) the virtual environment that holds them.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::Device;
use common::TempDir;
use msh_graph::Architecture;
use msh_onnx::{self as onnx, Provenance};
use msh_plugin::{Limits, PluginHost};
use msh_train::model::{ModelSpec, Task};
use msh_train::{self as train, Checkpoint, CheckpointMeta, Predictor, TrainConfig};
use serde_json::Value;

/// The most a probability of ONNX Runtime may differ from msh's (a regression value, relative
/// to its size where that is over 1).
const TOLERANCE: f64 = 1e-4;
/// Inputs each model is compared on.
const SAMPLES: usize = 100;

fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Ok(python) = std::env::var("MSH_TEST_PYTHON") {
                return python;
            }
            let out = Command::new("bash").arg(common::root().join(".ci/python")).output().expect("bash runs");
            assert!(
                out.status.success(),
                "no Python with onnxruntime for the ONNX tests (set MSH_TEST_PYTHON, or let .ci/python make one): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("a path").trim().to_string()
        })
        .clone()
}

/// One exported model to check: its file, raw inputs (a CSV with a header and a label
/// column) and what msh predicts for them (as `msh predict --probabilities` writes it).
struct Case {
    name: String,
    model: PathBuf,
    data: PathBuf,
    label: &'static str,
    expected: PathBuf,
}

/// Checks every case in one Python process; returns each case's report.
fn check(cases: &[Case], dir: &Path) -> Vec<Value> {
    let manifest: Vec<Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({"name": c.name, "model": c.model, "data": c.data, "label": c.label, "expected": c.expected})
        })
        .collect();
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = Command::new(python())
        .arg(common::root().join("tests/onnx/check.py"))
        .arg(&path)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "the ONNX check failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    assert_eq!(reports.len(), cases.len(), "one report per model");
    for report in &reports {
        let diff = report["max_diff"].as_f64().unwrap();
        eprintln!(
            "{:<48} max |onnx - msh| {diff:.2e} over {} inputs, {} bytes",
            report["name"], report["rows"], report["bytes"]
        );
        assert!(diff <= TOLERANCE, "{}: ONNX Runtime differs from msh by {diff}", report["name"]);
        assert_eq!(report["rows"], SAMPLES, "{}", report["name"]);
        assert_eq!(report["opset"], onnx::OPSET, "{}", report["name"]);
    }
    reports
}

/// A CSV of `rows` with a `label` column first, then `features` columns `f0..`.
fn write_csv(path: &Path, features: usize, rows: &[(f32, Vec<f32>)]) {
    let mut text = String::from("label");
    for j in 0..features {
        text.push_str(&format!(",f{j}"));
    }
    text.push('\n');
    for (label, values) in rows {
        text.push_str(&label.to_string());
        for v in values {
            text.push_str(&format!(",{v}"));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// `samples` rows of `features` values drawn from `seed` (scaled and shifted, so that
/// standardisation matters), labels cycling through `classes`.
fn random_rows(samples: usize, features: usize, classes: usize, seed: u64) -> Vec<(f32, Vec<f32>)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..samples)
        .map(|i| {
            let label = (i % classes) as f32;
            (label, (0..features).map(|j| 3.0 * next() + label * 0.5 + (j % 5) as f32).collect())
        })
        .collect()
}

/// `msh predict MODEL` on `data`, probabilities written to `out`.
fn predict(model: &Path, data: &Path, out: &Path) {
    let out_arg = out.to_str().unwrap();
    let data_arg = format!("csv:{}", data.display());
    let args = ["predict", model.to_str().unwrap(), "--data", &data_arg, "--output", out_arg, "--probabilities"];
    let result = common::run(&[&args[..], &["--backend", "cpu"]].concat());
    assert!(result.status.success(), "msh {args:?}:\n{}", String::from_utf8_lossy(&result.stderr));
}

/// The case of `model.onnx` against `msh predict MODEL` on `data`.
fn case(name: &str, onnx: PathBuf, model: &Path, data: &Path, dir: &Path) -> Case {
    let expected = dir.join(format!("{name}.expected.csv"));
    predict(model, data, &expected);
    Case { name: name.into(), model: onnx, data: data.to_path_buf(), label: "label", expected }
}

/// `msh export MODEL [extra...] -o DIR/NAME.onnx`; returns the file.
fn export(name: &str, model: &Path, extra: &[&str], dir: &Path) -> PathBuf {
    let file = dir.join(format!("{name}.onnx"));
    let mut args = vec!["export", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", file.to_str().unwrap()]);
    let out = common::run(&args);
    assert!(out.status.success(), "msh {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    file
}

/// A model exported with `msh export` against `msh predict` of the same model.
fn export_and_predict(name: &str, model: &Path, data: &Path, dir: &Path) -> Case {
    case(name, export(name, model, &[], dir), model, data, dir)
}

/// Hand-written models through the real binary: every op of the IR (tests/fixtures,
/// checked against `Op::NAMES` by tests/it/model.rs), an embedding with attention over
/// token ids (the op the fixture leaves out), and a regression on diabetes (values in
/// target units).
#[test]
fn every_op_model_predicts_in_onnx_runtime_as_in_msh() {
    let dir = TempDir::new();
    let d = dir.path();
    let train_csv = d.join("train.csv");
    let test_csv = d.join("test.csv");
    write_csv(&train_csv, 48, &random_rows(96, 48, 3, 1));
    write_csv(&test_csv, 48, &random_rows(SAMPLES, 48, 3, 2));
    let fixture = common::root().join("tests/fixtures/every_op.yaml");
    let train = |arch: &Path, data: &Path, extra: &[&str], save: &Path| {
        let data = format!("csv:{}", data.display());
        let mut args = vec!["--arch", arch.to_str().unwrap(), "--data", &data, "--epochs", "2"];
        args.extend_from_slice(&["--batch-size", "16", "--save", save.to_str().unwrap()]);
        args.extend_from_slice(extra);
        common::train_json(&args);
    };
    let every_op = d.join("every_op");
    train(&fixture, &train_csv, &["--shape", "4,12"], &every_op);
    let (images_train, images_test) = (d.join("images_train.csv"), d.join("images_test.csv"));
    write_csv(&images_train, 192, &random_rows(96, 192, 3, 5));
    write_csv(&images_test, 192, &random_rows(SAMPLES, 192, 3, 6));
    let more_ops = d.join("more_ops");
    let more_fixture = common::root().join("tests/fixtures/more_ops.yaml");
    train(&more_fixture, &images_train, &["--shape", "3,8,8"], &more_ops);

    let tokens_arch = d.join("tokens.yaml");
    std::fs::write(
        &tokens_arch,
        "blocks:\n- name: t\n  nodes:\n  - {op: embedding, vocab: 12, dim: 8}\n  - {op: positional_encoding}\n  \
         - {op: self_attention, heads: 2}\n  - {op: global_avg_pool}\n",
    )
    .unwrap();
    let tokens = |seed| -> Vec<(f32, Vec<f32>)> {
        random_rows(SAMPLES, 10, 2, seed)
            .into_iter()
            .map(|(l, v)| (l, v.iter().map(|x| (x * 7.0) % 12.0).map(f32::floor).collect()))
            .collect()
    };
    let (tokens_train, tokens_test) = (d.join("tokens_train.csv"), d.join("tokens_test.csv"));
    write_csv(&tokens_train, 10, &tokens(3));
    write_csv(&tokens_test, 10, &tokens(4));
    let tokens_model = d.join("tokens");
    train(&tokens_arch, &tokens_train, &["--normalize", "none"], &tokens_model);

    let diabetes = common::root().join("data/diabetes/diabetes.csv");
    let diabetes_model = d.join("diabetes");
    let arch = common::root().join("workflows/archs/diabetes_mlp.yaml");
    train(&arch, &diabetes, &["--task", "regression", "--label", "target"], &diabetes_model);
    let diabetes_inputs = d.join("diabetes_inputs.csv");
    let text = std::fs::read_to_string(&diabetes).unwrap();
    std::fs::write(&diabetes_inputs, text.lines().take(SAMPLES + 1).collect::<Vec<_>>().join("\n")).unwrap();

    // `msh predict` takes diabetes' `target` column as the label; so does the checker.
    let regression = export_and_predict("diabetes_regression", &diabetes_model, &diabetes_inputs, d);
    let cases = vec![
        export_and_predict("every_op", &every_op, &test_csv, d),
        export_and_predict("more_ops", &more_ops, &images_test, d),
        export_and_predict("embedding_attention", &tokens_model, &tokens_test, d),
        Case { label: "target", ..regression },
    ];
    let reports = check(&cases, d);
    let meta = &reports[0]["metadata"];
    assert_eq!(meta["msh.task"], "classification");
    assert_eq!(meta["msh.classes"], "[\"0\",\"1\",\"2\"]");
    assert_eq!(meta["msh.input_shape"], "[4,12]");
    assert_eq!(reports[0]["outputs"], serde_json::json!(["probabilities", "logits"]));
    assert_eq!(reports[0]["inputs"], serde_json::json!([["input", ["batch", 48]]]));
    assert_eq!(reports[3]["outputs"], serde_json::json!(["values"]));
}

/// Every block of core-blocks on every rank it accepts, trained a step on synthetic data
/// and exported through the library.
#[test]
fn every_core_block_on_every_rank_predicts_in_onnx_runtime_as_in_msh() {
    let dir = TempDir::new();
    let d = dir.path();
    let host = PluginHost::new(Limits::default());
    let pack = host.embedded("core-blocks").unwrap();
    let config = TrainConfig { epochs: 1, batch_size: 8, ..TrainConfig::default() };
    let mut cases = Vec::new();
    for info in pack.blocks().unwrap() {
        for &rank in &info.input_ranks {
            let shape: Vec<usize> = match rank {
                1 => vec![24],
                2 => vec![8, 12],
                _ => vec![4, 8, 8],
            };
            let name = format!("{}_rank{rank}", info.name);
            let graph = pack.build(&info.name, &shape, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            let spec = ModelSpec {
                architecture: Architecture { blocks: vec![graph] },
                input_shape: shape.clone(),
                task: Task::Classification { classes: 3 },
            };
            let splits = common::synthetic(&shape, 16, 3, false);
            let trained = train::train(&spec, &splits, &config, &Device::flex(), &mut |_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let checkpoint = Checkpoint::new(d.join(&name));
            let meta = CheckpointMeta {
                version: train::CHECKPOINT_VERSION,
                spec,
                normalization: splits.normalization.clone(),
                class_names: Vec::new(),
                parameters: trained.parameters,
                metrics: Default::default(),
            };
            checkpoint.save(&trained.model, &meta).unwrap();
            let model = d.join(format!("{name}.onnx"));
            onnx::write(&checkpoint.dir, &model, &Provenance::default()).unwrap_or_else(|e| panic!("{name}: {e}"));

            // What `msh predict --probabilities` computes, in process (a hundred models).
            let features: usize = shape.iter().product();
            let rows = random_rows(SAMPLES, features, 3, features as u64);
            let data = d.join(format!("{name}.csv"));
            write_csv(&data, features, &rows);
            let predictor = Predictor::load(&checkpoint.dir, &Device::flex()).unwrap();
            let raw: Vec<f32> = rows.iter().flat_map(|(_, v)| v.iter().copied()).collect();
            let probabilities = predictor.predict_raw(&raw);
            let mut text = String::from("prediction,p_0,p_1,p_2\n");
            for row in probabilities.chunks(3) {
                text.push_str(&format!("0,{},{},{}\n", row[0], row[1], row[2]));
            }
            let expected = d.join(format!("{name}.expected.csv"));
            std::fs::write(&expected, text).unwrap();
            cases.push(Case { name, model, data, label: "label", expected });
        }
    }
    assert!(cases.len() >= 40, "{} block and rank pairs", cases.len());
    check(&cases, d);
}

/// The winner of a real search of each shipped workflow family, three ensembles (learned,
/// greedy, residual) and a distilled student, each through `msh run`, `msh best --export`,
/// `msh export` and `msh predict`.
#[test]
fn searched_models_ensembles_and_students_predict_in_onnx_runtime_as_in_msh() {
    let dir = TempDir::new();
    let d = dir.path();
    let root = common::root();
    let mnist1d = |stages: &str, blocks: &str| {
        format!(
            "data:\n  source: csv:{}\n  test: csv:{}\n  shape: [1, 40]\n  subset: 400\n\
             space:\n  blocks: [{blocks}]\n  min_depth: 1\n  max_depth: 2\n\
             searcher: {{plugin: random-search}}\ntraining: {{epochs: 2, batch_size: 64}}\n\
             trainers: {{count: 1, backend: cpu}}\nbudget: {{trials: 3}}\nstages:\n  search: {{kind: search}}\n{stages}",
            root.join("data/mnist1d/train.csv").display(),
            root.join("data/mnist1d/test.csv").display()
        )
    };
    let digits = format!(
        "data:\n  source: csv:{}\n  shape: [1, 8, 8]\n\
         space:\n  blocks: [fixed_conv, resnet, inception, max_pool, dilated_conv]\n  min_depth: 1\n  max_depth: 2\n\
         searcher: {{plugin: random-search}}\ntraining: {{epochs: 2, batch_size: 64}}\n\
         trainers: {{count: 1, backend: cpu}}\nbudget: {{trials: 3}}\nstages:\n  search: {{kind: search}}\n",
        root.join("data/digits/digits.csv").display()
    );
    let ensembles = "  learned: {kind: ensemble, needs: [search], method: learned, top_k: 3}\n  \
                     greedy: {kind: ensemble, needs: [search], method: greedy, top_k: 3}\n  \
                     distill: {kind: distill, needs: [greedy], epochs: 2}\n  \
                     export: {kind: export, needs: [search]}\n";
    let workflows = [
        ("cnn1d", mnist1d(ensembles, "fixed_conv, resnet, max_pool, dilated_conv")),
        ("cnn2d", digits),
        ("recurrent", mnist1d("", "svdf, lstm, gru, rnn")),
        // The encoder needs a stem whose channels split into its heads: depth 2, and
        // proposals that start with it are refused and proposed again.
        ("transformer", mnist1d("", "fixed_conv, transformer_encoder").replace("min_depth: 1", "min_depth: 2")),
        // Residual trials: their own weights on top of the best ensemble's, outputs summed.
        (
            "residual",
            mnist1d("", "fixed_conv, max_pool").replace("trials: 3", "trials: 4")
                + "ensembling: {strategy: residual, every: 2}\n",
        ),
    ];
    let mnist1d_inputs = d.join("mnist1d_inputs.csv");
    let text = std::fs::read_to_string(root.join("data/mnist1d/test.csv")).unwrap();
    std::fs::write(&mnist1d_inputs, text.lines().take(SAMPLES + 1).collect::<Vec<_>>().join("\n")).unwrap();
    let digits_inputs = d.join("digits_inputs.csv");
    let text = std::fs::read_to_string(root.join("data/digits/digits.csv")).unwrap();
    std::fs::write(&digits_inputs, text.lines().take(SAMPLES + 1).collect::<Vec<_>>().join("\n")).unwrap();

    let mut cases = Vec::new();
    for (name, body) in &workflows {
        let workflow = d.join(format!("{name}.yaml"));
        std::fs::write(&workflow, format!("name: onnx-{name}\nseed: 4\n{body}")).unwrap();
        let run = d.join(name);
        let out = common::run(&["run", workflow.to_str().unwrap(), "--run-dir", run.to_str().unwrap()]);
        assert!(out.status.success(), "msh run {name}:\n{}", String::from_utf8_lossy(&out.stderr));
        let inputs = if *name == "cnn2d" { &digits_inputs } else { &mnist1d_inputs };
        cases.push(export_and_predict(&format!("{name}_best"), &run, inputs, d));
    }

    let run = d.join("cnn1d");
    // The export stage wrote the search's best as ONNX beside msh's files.
    let stage_export = run.join("export");
    assert!(stage_export.join("model.onnx").is_file() && stage_export.join("model.json").is_file());
    cases.push(case("cnn1d_export_stage", stage_export.join("model.onnx"), &stage_export, &mnist1d_inputs, d));
    for stage in ["learned", "greedy", "distill"] {
        let dest = d.join(format!("best_{stage}"));
        let out = common::run(&["best", run.to_str().unwrap(), "--stage", stage, "--export", dest.to_str().unwrap()]);
        assert!(out.status.success(), "msh best --stage {stage}:\n{}", String::from_utf8_lossy(&out.stderr));
        cases.push(case(&format!("cnn1d_{stage}"), dest.join("model.onnx"), &dest, &mnist1d_inputs, d));
    }
    // Any trial, not only the best: the first one, by id.
    let trials = common::json(&["trials", run.to_str().unwrap(), "--json"]);
    let first = &trials.as_array().unwrap()[0];
    let checkpoint = run.join(first["checkpoint"].as_str().unwrap());
    let trial_id = first["id"].to_string();
    let name = format!("cnn1d_trial_{trial_id}");
    let file = export(&name, &run, &["--trial", &trial_id], d);
    cases.push(case(&name, file, &checkpoint, &mnist1d_inputs, d));

    // A residual ensemble (a trial among its own members, on top of others), by its id.
    let residual_run = d.join("residual");
    let trials = common::json(&["trials", residual_run.to_str().unwrap(), "--json"]);
    let residual = trials
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["members"].as_array().is_some_and(|m| m.len() >= 2 && m.iter().any(|member| member[0] == t["id"])))
        .expect("a residual trial");
    let id = residual["id"].to_string();
    let file = export(&format!("residual_{id}"), &residual_run, &["--trial", &id], d);
    let checkpoint = residual_run.join(residual["checkpoint"].as_str().unwrap());
    cases.push(case(&format!("residual_trial_{id}"), file, &checkpoint, &mnist1d_inputs, d));

    let reports = check(&cases, d);
    let residual = reports.iter().find(|r| r["name"] == format!("residual_trial_{id}")).unwrap();
    assert_eq!(residual["metadata"]["msh.ensemble"], "residual");
    let learned = reports.iter().find(|r| r["name"] == "cnn1d_learned").unwrap();
    assert_eq!(learned["metadata"]["msh.ensemble"], "learned");
    assert_eq!(learned["metadata"]["msh.run"], "onnx-cnn1d");
    let trial = reports.iter().find(|r| r["name"] == format!("cnn1d_trial_{trial_id}")).unwrap();
    assert_eq!(trial["metadata"]["msh.trial"], trial_id);
}

#[test]
fn export_refuses_what_it_cannot_read_with_the_path() {
    let dir = TempDir::new();
    let out = dir.path().join("x.onnx");
    let err = common::failure(&["export", dir.path().to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(err.contains("cannot read checkpoint") && err.contains("model.json"), "{err}");
    let err = common::failure(&["export", dir.path().to_str().unwrap(), "--trial", "3", "-o", out.to_str().unwrap()]);
    assert!(err.contains("--trial picks a trial of a run, and this is not a run directory"), "{err}");
    assert!(!out.exists());
}
