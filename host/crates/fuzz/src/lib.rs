//! Fuzz targets: every parser of outside input, each taking arbitrary bytes. An input must
//! end in a value or a located error: a panic, an abort or a hang is a bug. `fuzz/` drives
//! them coverage-guided (cargo-fuzz); tests/it/fuzz.rs runs a fast slice in the suite.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use burn::module::Module;
use burn::prelude::Device;

use msh_engine::workflow;
use msh_graph::{Architecture, infer_model};
use msh_plugin::fuzzing::{block_graph, types};
use msh_train::data::{DataSpec, Source, TaskKind, cifar, csv_source, numpy};
use msh_train::model::{Model, ModelSpec, Task};
use msh_train::{Checkpoint, CheckpointMeta, Predictor};

/// A target: a name (`cargo fuzz run NAME`) and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

pub const TARGETS: &[Target] = &[
    ("workflow", workflow_yaml),
    ("architecture", architecture_file),
    ("plugin_graph", plugin_graph),
    ("hparams", hparams),
    ("csv", csv),
    ("cifar", cifar_batch),
    ("npy", npy),
    ("npz", npz),
    ("image", image),
    ("checkpoint_meta", checkpoint_meta),
    ("weights", weights),
    ("ensemble", ensemble),
    ("store_record", store_record),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Sample shapes architectures are inferred on: flat, sequence and image data.
const SHAPES: [&[usize]; 3] = [&[4], &[1, 40], &[3, 8, 8]];

/// Models above this many parameters are only inferred, not built: a fuzzer's input may
/// ask for the largest model the bounds allow, which takes seconds to allocate.
const BUILD_AT_MOST: u64 = 100_000;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workflow_yaml(bytes: &[u8]) {
    let source = workflow::Source { path: "fuzz.yaml".into(), text: text(bytes) };
    if let Ok(wf) = source.parse() {
        let _ = wf.data.fetch_plan();
        let _ = wf.training.check();
        for stage in wf.stages.values() {
            let _ = wf.budget_of(stage);
        }
    }
}

/// Infers (and, when small, builds) `arch` on every shape in `SHAPES`.
fn infer_and_build(arch: &Architecture) {
    for shape in SHAPES {
        if let Ok((_, parameters)) = infer_model(arch, shape, 10)
            && parameters <= BUILD_AT_MOST
        {
            let spec = ModelSpec {
                architecture: arch.clone(),
                input_shape: shape.to_vec(),
                task: Task::Classification { classes: 10 },
            };
            Model::new(&spec, &Device::flex()).expect("a model whose shapes were inferred builds");
        }
    }
}

fn architecture_file(bytes: &[u8]) {
    if let Ok(arch) = msh_graph::arch_file::parse(&text(bytes)) {
        infer_and_build(&arch);
    }
}

/// A block graph as a pack returns it, drawn from the input; ops and parameter names
/// mostly from the real ones, so that inputs reach shape inference.
fn arbitrary_graph(u: &mut Unstructured<'_>) -> arbitrary::Result<types::BlockGraph> {
    const OPS: &[&str] = &[
        "dense",
        "conv1d",
        "conv2d",
        "separable_conv",
        "batch_norm",
        "layer_norm",
        "dropout",
        "relu",
        "tanh",
        "max_pool",
        "avg_pool",
        "global_avg_pool",
        "flatten",
        "reshape",
        "add",
        "multiply",
        "concat",
        "lstm",
        "gru",
        "rnn",
        "leaky_relu",
        "match_features",
        "self_attention",
        "embedding",
        "positional_encoding",
        "identity",
    ];
    const PARAMS: &[&str] = &[
        "units",
        "slope",
        "filters",
        "kernel",
        "stride",
        "dilation",
        "padding",
        "groups",
        "size",
        "rate",
        "shape",
        "hidden",
        "heads",
        "dim",
        "bias",
        "bidirectional",
        "return_sequences",
        "vocab",
        "max_len",
        "dropout",
    ];
    let name = |u: &mut Unstructured<'_>, known: &[&str]| -> arbitrary::Result<String> {
        Ok(if u.ratio(1, 16)? { String::arbitrary(u)? } else { u.choose(known)?.to_string() })
    };
    let mut nodes = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let op = name(u, OPS)?;
        let mut params = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let value = match u.int_in_range(0..=4)? {
                0 => types::Value::Int(if u.ratio(1, 4)? { i64::arbitrary(u)? } else { u.int_in_range(-2..=70)? }),
                1 => types::Value::Float(f64::arbitrary(u)?),
                2 => types::Value::Flag(bool::arbitrary(u)?),
                3 => types::Value::Text(String::arbitrary(u)?),
                _ => types::Value::Ints(
                    (0..u.int_in_range(0..=4)?).map(|_| u.int_in_range(-1..=9)).collect::<arbitrary::Result<_>>()?,
                ),
            };
            params.push(types::Param { name: name(u, PARAMS)?, value });
        }
        let inputs = (0..u.int_in_range(0..=2)?).map(|_| u.int_in_range(0..=7)).collect::<arbitrary::Result<_>>()?;
        nodes.push(types::Node { op, params, inputs });
    }
    Ok(types::BlockGraph { name: "fuzz".into(), nodes })
}

fn plugin_graph(bytes: &[u8]) {
    let Ok(graph) = arbitrary_graph(&mut Unstructured::new(bytes)) else { return };
    if let Ok(block) = block_graph(graph) {
        infer_and_build(&Architecture { blocks: vec![block] });
    }
}

/// Hyper-parameters a searcher proposes, checked against the domains and the training
/// configuration they make.
fn hparams(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    // Every hyper-parameter, and a name no trainer knows.
    let names: Vec<&str> = workflow::hparam_names().chain(["x"]).collect();
    let mut chosen = Vec::new();
    // An exhausted `Unstructured` keeps answering (with zeros): stop at its end.
    while !u.is_empty() && chosen.len() < names.len() {
        let (Ok(name), Ok(value)) = (u.choose(&names), f64::arbitrary(&mut u)) else { break };
        if workflow::hparam_outside_domain(name, value).is_none() {
            chosen.push((name.to_string(), value));
        }
    }
    static WORKFLOW: OnceLock<workflow::Workflow> = OnceLock::new();
    let wf = WORKFLOW.get_or_init(|| {
        let text = "name: fuzz\ndata: {source: csv:x.csv}\nspace: {blocks: [dense]}\n\
                    searcher: {plugin: random-search}\nbudget: {trials: 1}\nstages: {search: {kind: search}}\n";
        workflow::Source { path: "fuzz.yaml".into(), text: text.into() }.parse().expect("the base workflow parses")
    });
    let _ = wf.trial_config(&chosen, 0).check();
}

fn spec(task: TaskKind) -> DataSpec {
    DataSpec { task, ..DataSpec::new(Source::Csv("fuzz.csv".into())) }
}

fn csv(bytes: &[u8]) {
    for (header, task) in [(true, TaskKind::Classification), (false, TaskKind::Regression)] {
        let _ = csv_source::read(bytes, Path::new("fuzz.csv"), &DataSpec { header, ..spec(task) });
    }
}

fn cifar_batch(bytes: &[u8]) {
    let _ = cifar::parse(bytes, Path::new("fuzz.bin"), &mut Vec::new(), &mut Vec::new());
}

fn npy(bytes: &[u8]) {
    let Ok(x) = numpy::read_npy(&mut &bytes[..], bytes.len() as u64) else { return };
    // Targets that fit the features, so the input reaches the pairing checks.
    let samples = x.shape.first().copied().unwrap_or(0);
    // Zero-sized samples let a header claim any count without the bytes to back it.
    if samples > 1 << 20 {
        return;
    }
    let y = numpy::Array { shape: vec![samples], values: (0..samples).map(|i| (i % 3) as f32).collect() };
    let path = Path::new("fuzz.npy");
    let _ = numpy::assemble(x, y, &spec(TaskKind::Classification), path, path, "fuzz.npy");
}

fn npz(bytes: &[u8]) {
    let names = numpy::DEFAULT_ARRAYS.map(String::from);
    let _ = numpy::read_npz(Cursor::new(bytes), Path::new("fuzz.npz"), &names, &spec(TaskKind::Regression));
}

fn image(bytes: &[u8]) {
    let mut reader = image::ImageReader::new(Cursor::new(bytes));
    let mut limits = image::Limits::default();
    // A small image is all a fuzzer needs; the default limit (512 MiB) stays for users.
    limits.max_alloc = Some(16 << 20);
    reader.limits(limits);
    if let Ok(decoded) = reader.with_guessed_format().map_err(drop).and_then(|r| r.decode().map_err(drop)) {
        let _ = decoded.resize_exact(8, 8, image::imageops::FilterType::Triangle).to_rgb8();
    }
}

fn checkpoint_meta(bytes: &[u8]) {
    let Ok(meta) = CheckpointMeta::from_json(bytes) else { return };
    if let Ok((_, parameters)) = infer_model(&meta.spec.architecture, &meta.spec.input_shape, meta.spec.task.outputs())
        && parameters <= BUILD_AT_MOST
    {
        Model::new(&meta.spec, &Device::flex()).expect("a model whose shapes were inferred builds");
    }
    let sample_len: usize = meta.spec.input_shape.iter().product();
    if sample_len <= 1 << 16 {
        let mut sample = vec![1.0; sample_len];
        meta.normalization.apply_features(&mut sample, sample_len);
    }
}

/// A directory of this process for files the loaders read by path.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("msh-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temporary directory is writable");
        dir
    })
}

/// A small trained-shape checkpoint in `scratch()/member`, written once.
fn member_checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch().join("member");
        let architecture =
            msh_graph::arch_file::parse("blocks:\n  - name: head\n    nodes:\n      - {op: dense, units: 3}\n")
                .expect("the member's architecture parses");
        let spec = ModelSpec { architecture, input_shape: vec![4], task: Task::Classification { classes: 3 } };
        let model = Model::new(&spec, &Device::flex()).expect("the member builds");
        let meta = CheckpointMeta {
            version: msh_train::CHECKPOINT_VERSION,
            spec,
            normalization: msh_train::data::Normalization::identity(),
            class_names: Vec::new(),
            parameters: model.num_params(),
            metrics: Default::default(),
        };
        Checkpoint::new(&dir).save(&model, &meta).expect("the member saves");
        dir
    })
}

fn weights(bytes: &[u8]) {
    let member = member_checkpoint();
    let dir = scratch().join("weights");
    std::fs::create_dir_all(&dir).expect("the scratch directory is writable");
    std::fs::copy(member.join("model.json"), dir.join("model.json")).expect("the member's meta copies");
    std::fs::write(dir.join("weights.bpk"), bytes).expect("the scratch directory is writable");
    if let Ok((model, _)) = Checkpoint::new(&dir).load(&Device::flex()) {
        let _ = msh_train::predict(&model, &[0.5; 4], 4);
    }
}

fn ensemble(bytes: &[u8]) {
    let dir = member_checkpoint().parent().expect("the member is in scratch()").to_path_buf();
    std::fs::write(dir.join("ensemble.json"), bytes).expect("the scratch directory is writable");
    if let Ok(predictor) = Predictor::load(&dir, &Device::flex()) {
        let _ = predictor.predict(&[0.5; 4], 4);
    }
}

fn store_record(bytes: &[u8]) {
    if let Some(trial) = msh_store::decode_every_record(bytes) {
        let _ = msh_plugin::fuzzing::trial(&trial);
    }
}

/// Valid inputs to start from: the repository's own files (under `root`) and files msh
/// writes. Mutating them reaches deeper than random bytes do.
pub fn seeds(name: &str, root: &Path) -> Vec<Vec<u8>> {
    let files = |dir: &str, ext: &str| -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == ext));
        paths.sort();
        paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    };
    let head = |path: &str, bytes: usize| {
        std::fs::read(root.join(path)).map(|mut b| {
            b.truncate(bytes);
            b
        })
    };
    match name {
        "workflow" => files("workflows", "yaml"),
        "architecture" => files("workflows/archs", "yaml"),
        "csv" => ["data/iris/iris.csv", "data/diabetes/diabetes.csv", "data/mnist1d/test.csv"]
            .iter()
            .filter_map(|p| head(p, 2048).ok())
            .collect(),
        "cifar" => vec![(0..2 * 3073).map(|i| if i % 3073 == 0 { (i / 3073) as u8 } else { (i % 251) as u8 }).collect()],
        "npy" => files("tests/fixtures/numpy", "npy"),
        "npz" => files("tests/fixtures/numpy", "npz"),
        "image" => {
            let picture = image::RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
            [image::ImageFormat::Png, image::ImageFormat::Jpeg]
                .into_iter()
                .map(|format| {
                    let mut bytes = Cursor::new(Vec::new());
                    picture.write_to(&mut bytes, format).expect("a small image encodes");
                    bytes.into_inner()
                })
                .collect()
        }
        "checkpoint_meta" => vec![std::fs::read(member_checkpoint().join("model.json")).expect("the member exists")],
        "weights" => vec![std::fs::read(member_checkpoint().join("weights.bpk")).expect("the member exists")],
        "ensemble" => vec![
            br#"{"members": [{"trial": 1, "checkpoint": "member", "weight": 0.5}, {"trial": 2, "checkpoint": "member", "weight": 0.5}], "method": "average"}"#.to_vec(),
            br#"{"members": [{"trial": 1, "checkpoint": "member", "weight": 1.0}], "method": "residual", "combine": "sum"}"#.to_vec(),
            br#"{"members": [{"trial": 1, "checkpoint": "member", "weight": 1.0}], "method": "learned", "combine": "learned", "combiner": {"members": 1, "width": 3, "weights": [1,0,0,0,1,0,0,0,1], "bias": [0,0,0]}}"#.to_vec(),
        ],
        "store_record" => msh_store::record_seeds(),
        // Any bytes make a structured input for these.
        _ => vec![(0..=255u8).collect(), vec![7; 64]],
    }
}
