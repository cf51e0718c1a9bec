//! The plugin sandbox with real wasm components: hostile plugins are contained, the
//! built-in pack's blocks build and train, and searchers stay inside the search space.

use crate::common;

use burn::prelude::Device;
use msh_graph::Architecture;
use msh_plugin::{Limits, PluginHost, World};
use msh_store::{BlockRef, Metrics, ParamValue, TrialRecord, TrialStatus};
use msh_train::model::{ModelSpec, Task};
use msh_train::{self as train, TrainConfig};
use msh_vocab::space::{HparamRange, ParamKind, ParamSpec, SearchContext, SearchSpace, SpaceBlock};

const HOSTILE: &str = env!("MSH_HOSTILE_PLUGIN");

fn hostile_host() -> PluginHost {
    PluginHost::new(Limits { fuel: 200_000_000, memory_bytes: 64 << 20, max_items: 4096 })
}

fn build_error(host: &PluginHost, block: &str) -> String {
    let plugin = host.load_file(HOSTILE.as_ref()).unwrap();
    let err = plugin.build(block, &[8], &[]).expect_err(block).to_string();
    // Whatever happened, a well-behaved call on the same plugin still works.
    let graph = plugin.build("good", &[8], &[]).expect("good still builds");
    assert_eq!(graph.nodes.len(), 2);
    err
}

#[test]
fn hostile_plugins_are_contained_and_named() {
    let host = hostile_host();
    let expect = |block: &str, parts: &[&str]| {
        let err = build_error(&host, block);
        assert!(err.starts_with(&format!("plugin `hostile` (msh:plugin@0.3.0), build({block}, [8]): ")), "{err}");
        for part in parts {
            assert!(err.contains(part), "{block}: expected {part:?} in {err:?}");
        }
    };
    expect("loop", &["exceeded its CPU budget of 200000000 fuel"]);
    expect("alloc", &["memory limit of 64 MiB"]);
    expect("panic", &["trapped"]);
    expect("cycle", &["invalid graph", "node 1 (relu): reads node 2, which is not computed before it"]);
    expect("mismatch", &["invalid graph", "node 2 (add): inputs must have one shape, got [8] and [3]"]);
    expect("unknown_op", &["invalid graph", "node 1 (conv9d)", "unknown variant `conv9d`"]);
    expect("huge", &["returned 100000 nodes, more than the limit of 4096"]);
    expect("bad_rank", &["node 1 (conv1d): expects rank 2"]);
    // Sizes are bounded before any arithmetic or allocation.
    expect("wide", &["node 1 (dense): `units` = 1099511627776 is over the limit of 16777216"]);
    expect("overflow", &["node 1 (reshape): [8388608, 8388608, 8388608] holds more than 67108864 values"]);
    expect("padding", &["node 3 (conv1d): `explicit` = 4611686018427387903 is over the limit"]);
    expect("params", &["node 2 (dense): would hold 281474993487872 parameters; at most 268435456"]);
}

#[test]
fn plugins_get_no_files_sockets_environment_or_clock() {
    let err = build_error(&hostile_host(), "io");
    for part in ["file=Err", "dir=Err", "socket=Err", "env=0", "clock=Ok(0)"] {
        assert!(err.contains(part), "expected {part:?} in {err}");
    }
}

/// The hostile pack with its contract version renamed (same length, so the binary stays valid).
fn with_version(version: &str) -> Vec<u8> {
    let mut patched = std::fs::read(HOSTILE).unwrap();
    let old = b"msh:plugin/types@0.3.0".as_slice();
    let new = format!("msh:plugin/types@{version}");
    let mut count = 0;
    for i in 0..patched.len().saturating_sub(old.len()) {
        if &patched[i..i + old.len()] == old {
            patched[i..i + old.len()].copy_from_slice(new.as_bytes());
            count += 1;
        }
    }
    assert!(count > 0, "the component names its contract version");
    patched
}

#[test]
fn incompatible_contract_versions_and_non_components_are_refused() {
    let host = hostile_host();
    let err = host.load_bytes("future", &with_version("0.9.0")).unwrap_err().to_string();
    assert!(
        err.contains(
            "plugin `future` (msh:plugin@0.9.0), load: built against msh:plugin@0.9.0; this msh supports 0.3.0, 0.2.0, 0.1.0"
        ),
        "{err}"
    );
    // Block packs of 0.1.0 and 0.2.0 have the same shape as one of 0.3.0: they load and build.
    for version in ["0.1.0", "0.2.0"] {
        let old = host.load_bytes("old-pack", &with_version(version)).unwrap();
        assert_eq!((old.version.as_str(), old.world), (version, World::BlockPack));
        assert_eq!(old.build("good", &[8], &[]).unwrap().nodes.len(), 2);
    }

    let err = host.load_bytes("junk", b"\0asm junk").unwrap_err().to_string();
    assert!(err.contains("plugin `junk` (msh:plugin@?), load: not a WebAssembly component"), "{err}");
}

#[test]
fn every_core_block_builds_on_its_ranks_and_trains_a_step() {
    let host = PluginHost::new(Limits::default());
    let pack = host.embedded("core-blocks").unwrap();
    assert_eq!(pack.world, World::BlockPack);
    let blocks = pack.blocks().unwrap();
    assert!(blocks.len() >= 30, "{} blocks", blocks.len());
    let config = TrainConfig { epochs: 1, batch_size: 8, ..TrainConfig::default() };
    for info in &blocks {
        for &rank in &info.input_ranks {
            let shape: Vec<usize> = match rank {
                1 => vec![24],
                2 => vec![8, 12],
                _ => vec![8, 8, 8],
            };
            let graph = pack.build(&info.name, &shape, &[]).unwrap_or_else(|e| panic!("{e}"));
            let spec = ModelSpec {
                architecture: Architecture { blocks: vec![graph] },
                input_shape: shape.clone(),
                task: Task::Classification { classes: 2 },
            };
            let trained =
                train::train(&spec, &common::synthetic(&shape, 8, 2, false), &config, &Device::flex(), &mut |_| {})
                    .unwrap_or_else(|e| panic!("{} on {shape:?}: {e}", info.name));
            assert_eq!(trained.outcome, train::Outcome::Completed, "{} on {shape:?}", info.name);
        }
    }
}

/// Model Search's block families with their variants (skip connections, projections,
/// ranks, modes), each on bundled data: MNIST-1D as a sequence of 40 steps, or digits as
/// 8x8 images; a short training runs through every one.
#[test]
fn model_search_block_variants_build_and_train_on_bundled_data() {
    use ParamValue::{Flag, Int, Text};
    let host = PluginHost::new(Limits::default());
    let pack = host.embedded("core-blocks").unwrap();
    let root = common::root();
    let load = |source: msh_train::data::Source, shape: Vec<usize>| {
        let spec = msh_train::data::DataSpec {
            shape: Some(shape),
            subset: Some(96),
            ..msh_train::data::DataSpec::new(source)
        };
        msh_train::data::load(&spec, 1).unwrap()
    };
    let sequences = load(msh_train::data::Source::Csv(root.join("data/mnist1d/train.csv")), vec![1, 40]);
    let images = load(msh_train::data::Source::Csv(root.join("data/digits/digits.csv")), vec![1, 8, 8]);
    let variants: Vec<(&str, Vec<(&str, ParamValue)>)> = vec![
        ("svdf", vec![("units", Int(32)), ("memory", Int(4)), ("rank", Int(2)), ("projection", Int(7))]),
        ("tunable_svdf", vec![("units", Int(50)), ("memory", Int(32)), ("rank", Int(3))]),
        ("rnn", vec![("hidden", Int(16)), ("skip", Flag(true))]),
        ("rnn", vec![("hidden", Int(8)), ("return_sequences", Flag(false))]),
        ("lstm", vec![("hidden", Int(8)), ("skip", Flag(true))]),
        ("bilstm", vec![("hidden", Int(8)), ("skip", Flag(true))]),
        ("gru", vec![("hidden", Int(8)), ("skip", Flag(true))]),
        ("recurrent_dense", vec![("units", Int(16)), ("skip", Flag(true))]),
        ("sequence_conv", vec![("filters", Int(16)), ("kernel", Int(5)), ("skip", Flag(true))]),
        ("sequence_conv", vec![("filters", Int(8)), ("kernel", Int(1))]),
        ("downsample_flatten", vec![]),
        ("plate_reduction_flatten", vec![]),
        ("low_rank_dense", vec![("rank", Int(1)), ("skip", Flag(true))]),
        ("bottleneck", vec![("bottleneck", Int(32)), ("skip", Flag(false))]),
        ("dense_residual", vec![("units", Int(16)), ("mode", Text("force_match".into()))]),
        ("dense_residual", vec![("units", Int(100)), ("mode", Text("force_match".into()))]),
    ];
    let image_variants: Vec<(&str, Vec<(&str, ParamValue)>)> = vec![
        ("asymmetric_conv", vec![("length", Int(7)), ("axis", Text("width".into()))]),
        ("asymmetric_conv", vec![("length", Int(3))]),
        ("downsample_flatten", vec![]),
        ("plate_reduction_flatten", vec![]),
    ];
    let config = TrainConfig { epochs: 1, batch_size: 32, ..TrainConfig::default() };
    let all = variants.into_iter().map(|v| (v, &sequences)).chain(image_variants.into_iter().map(|v| (v, &images)));
    for ((name, params), splits) in all {
        let params: Vec<(String, ParamValue)> = params.into_iter().map(|(n, value)| (n.into(), value)).collect();
        let shape = splits.train.shape.clone();
        let graph = pack.build(name, &shape, &params).unwrap_or_else(|e| panic!("{name} {params:?}: {e}"));
        let spec = ModelSpec {
            architecture: Architecture { blocks: vec![graph] },
            input_shape: shape.clone(),
            task: splits.task,
        };
        let trained = train::train(&spec, splits, &config, &Device::flex(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{name} {params:?} on {shape:?}: {e}"));
        assert_eq!(trained.outcome, train::Outcome::Completed, "{name} {params:?}");
        assert!(trained.epochs[0].valid.loss.is_finite(), "{name} {params:?}");
    }
    // A skip needs every step to add the input to.
    let no_sequences = [("skip".into(), Flag(true)), ("return_sequences".into(), Flag(false))];
    let err = pack.build("lstm", &[4, 10], &no_sequences).unwrap_err().to_string();
    assert!(err.contains("block `lstm`: `skip` needs `return_sequences`"), "{err}");
}

#[test]
fn core_block_parameters_are_range_checked() {
    let host = PluginHost::new(Limits::default());
    let pack = host.embedded("core-blocks").unwrap();
    let params = [("kernel".into(), ParamValue::Int(99))];
    let err = pack.build("conv", &[4, 16], &params).unwrap_err().to_string();
    assert!(err.contains("refused: block `conv`: parameter `kernel` = 99 is outside 1..=7"), "{err}");
    let err = pack.build("lstm", &[16], &[]).unwrap_err().to_string();
    assert!(err.contains("block `lstm` takes input ranks [2], got shape [16]"), "{err}");
}

/// A space like core-blocks' over [channels, length]: dense yields features, after which
/// no conv fits; `conv` has a searchable parameter.
fn ranked_space() -> SearchSpace {
    let block = |name: &str, ranks: Vec<(u8, u8)>, params: Vec<ParamSpec>| SpaceBlock {
        name: name.into(),
        description: String::new(),
        params,
        ranks,
    };
    let filters = ParamSpec {
        name: "filters".into(),
        description: String::new(),
        kind: ParamKind::IntRange(4, 512),
        default: ParamValue::Int(32),
    };
    SearchSpace {
        blocks: vec![
            block("conv", vec![(2, 2)], vec![filters]),
            block("resnet", vec![(2, 2)], vec![]),
            block("dense", vec![(1, 1), (2, 1)], vec![]),
            block("max_pool", vec![(2, 2)], vec![]),
        ],
        input_rank: 2,
        min_depth: 2,
        max_depth: 4,
        hparams: vec![HparamRange { name: "learning_rate".into(), low: 1e-4, high: 1e-2, log: true, choices: vec![] }],
    }
}

fn trial(id: u64, architecture: &[&str], objective: Option<f64>) -> TrialRecord {
    let architecture = architecture.iter().map(|n| BlockRef { name: n.to_string(), params: vec![] }).collect();
    let mut trial = TrialRecord::new(id, "search", architecture, vec![("learning_rate".into(), 1e-3)]);
    trial.status = if objective.is_some() { TrialStatus::Completed } else { TrialStatus::Failed };
    trial.objective = objective;
    trial.valid = objective.map(|loss| Metrics { samples: 100, loss, accuracy: None, r2: None, rmse: None });
    trial.parameters = 100;
    trial.epochs = 3;
    trial
}

#[test]
fn searchers_propose_new_trials_that_fit_the_space_deterministically() {
    let host = PluginHost::new(Limits::default());
    let space = ranked_space();
    let names = ["conv", "resnet", "dense", "max_pool"];
    let history: Vec<TrialRecord> = (0..40u64)
        .map(|id| {
            let arch: Vec<&str> = (0..2 + (id % 2) as usize).map(|d| names[(id as usize + d) % 2]).collect();
            let mut arch = arch;
            arch.push("dense");
            trial(id, &arch, (id % 5 != 4).then(|| ((id * 37) % 11) as f64))
        })
        .collect();
    let context = SearchContext { seed: 7, budget: 100, config: vec![] };
    for name in ["random-search", "beam-search", "regularized-evolution", "local-search", "harmonica", "linear-model"] {
        let searcher = host.embedded(name).unwrap();
        for told in [0usize, 3, 40] {
            let propose = || {
                let mut session = searcher.search(&context, &space, None).unwrap();
                session.observe(&history[..told]);
                let proposals = session.propose(&[], 8).unwrap_or_else(|e| panic!("{e}"));
                (session, proposals)
            };
            let (session, first) = propose();
            assert_eq!(first.len(), 8, "{name} after {told} trials");
            let mut keys: Vec<String> =
                history[..told].iter().map(|t| session.key(&t.architecture, &t.hparams)).collect();
            for p in &first {
                assert_eq!(session.invalid(p), None, "{name}: {p:?}");
                let key = session.key(&p.architecture, &p.hparams);
                assert!(!keys.contains(&key), "{name} proposed {key} twice");
                keys.push(key);
                let after_dense = p.architecture.iter().skip_while(|b| b.name != "dense").skip(1);
                assert!(after_dense.clone().all(|b| b.name == "dense"), "{name}: a conv after dense in {p:?}");
            }
            let (_, again) = propose();
            assert_eq!(format!("{first:?}"), format!("{again:?}"), "{name} is deterministic");
        }
    }
}

#[test]
fn every_bundled_searcher_restores_its_snapshot_and_goes_on_without_repeating() {
    let host = PluginHost::new(Limits::default());
    let space = ranked_space();
    let names = ["conv", "resnet", "dense", "max_pool"];
    let history: Vec<TrialRecord> = (0..40u64)
        .map(|id| {
            let mut arch: Vec<&str> = (0..1 + (id % 3) as usize).map(|d| names[(id as usize + d) % 2]).collect();
            arch.push("dense");
            trial(id, &arch, Some(((id * 37) % 11) as f64))
        })
        .collect();
    let context = SearchContext { seed: 7, budget: 100, config: vec![] };
    for name in msh_plugin::EMBEDDED.iter().map(|(n, _)| *n).filter(|n| *n != "core-blocks") {
        let searcher = host.embedded(name).unwrap();
        let mut first = searcher.search(&context, &space, None).unwrap();
        first.observe(&history);
        let before = first.propose(&[], 4).unwrap_or_else(|e| panic!("{e}"));
        let state = first.snapshot().unwrap().unwrap_or_else(|| panic!("{name} keeps a snapshot"));

        let mut resumed = searcher.search(&context, &space, None).unwrap();
        let ids: Vec<u64> = history.iter().map(|t| t.id).collect();
        resumed.restore(state, 40, &ids).unwrap_or_else(|e| panic!("{e}"));
        let after = resumed.propose(&[], 4).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            resumed.take_notes(),
            [format!("searcher `{name}`: restored its snapshot of 40 trials; replayed the 0 observed after it")]
        );
        // It remembers the trials and its own proposals: none comes again.
        let mut keys: Vec<String> = history.iter().map(|t| resumed.key(&t.architecture, &t.hparams)).collect();
        keys.extend(before.iter().map(|p| resumed.key(&p.architecture, &p.hparams)));
        for p in &after {
            let key = resumed.key(&p.architecture, &p.hparams);
            assert!(!keys.contains(&key), "{name} proposed {key} again after a restore");
            keys.push(key);
        }
    }
    // A 0.2.0 searcher has none: a resume replays every trial.
    let v2 = host.load_file(std::path::Path::new(env!("MSH_SEARCHER_V2_PLUGIN"))).unwrap();
    let mut session = v2.search(&context, &space, None).unwrap();
    session.observe(&history);
    assert!(!session.keeps_snapshots());
    assert_eq!(session.snapshot().unwrap(), None);
    assert_eq!(session.propose(&[], 2).unwrap().len(), 2);
}

/// The best objective `searcher` finds in `budget` trials of an objective that adds up by
/// depth: at depth d block `(6 - 2d) % 6` costs nothing and the others up to 0.5; each
/// depth short of 4 costs 0.25. The optimum, 0, is one of 1,554 architectures.
fn best_found(searcher: &str, seed: u64, budget: u64) -> f64 {
    let host = PluginHost::new(Limits::default());
    let names = ["a", "b", "c", "d", "e", "f"];
    let block =
        |name: &str| SpaceBlock { name: name.into(), description: String::new(), params: vec![], ranks: vec![] };
    let space = SearchSpace {
        blocks: names.iter().map(|n| block(n)).collect(),
        input_rank: 0,
        min_depth: 1,
        max_depth: 4,
        hparams: vec![],
    };
    let objective = |architecture: &[BlockRef]| {
        let cost: f64 = architecture
            .iter()
            .enumerate()
            .map(|(d, b)| ((names.iter().position(|n| *n == b.name).unwrap() + 2 * d) % 6) as f64 * 0.1)
            .sum();
        cost + 0.25 * (4 - architecture.len()) as f64
    };
    let context = SearchContext { seed, budget: budget as u32, config: vec![] };
    let mut session = host.embedded(searcher).unwrap().search(&context, &space, None).unwrap();
    let mut best = f64::INFINITY;
    for id in 0..budget {
        let Some(p) = session.propose(&[], 1).unwrap().pop() else { break };
        let value = objective(&p.architecture);
        best = best.min(value);
        let mut done = trial(id, &[], Some(value));
        done.architecture = p.architecture;
        done.hparams = p.hparams;
        session.observe(&[done]);
    }
    best
}

#[test]
fn model_based_searchers_learn_an_additive_objective() {
    // Ridge regression on blocks by depth is exact here: the linear model finds the optimum.
    for seed in 1..=3 {
        assert_eq!(best_found("linear-model", seed, 30), 0.0, "seed {seed}");
    }
    let total = |searcher: &str| (1..=3).map(|seed| best_found(searcher, seed, 40)).sum::<f64>();
    let (harmonica, random) = (total("harmonica"), total("random-search"));
    eprintln!("best found over 3 seeds: harmonica {harmonica:.2}, random search {random:.2}");
    assert!(harmonica < random, "harmonica {harmonica} vs random {random}");
}

#[test]
fn regularized_evolution_ages_its_population_by_completion_not_by_id() {
    // Trial 5 completed first and is the best, so it ages out of a population of two: the
    // tournaments draw from 1 and 2, which finished after it (by id, 5 would be the newest).
    let host = PluginHost::new(Limits::default());
    let context = SearchContext {
        seed: 3,
        budget: 100,
        config: vec![("population_size".into(), "2".into()), ("sample_size".into(), "2".into())],
    };
    let searcher = host.embedded("regularized-evolution").unwrap();
    let mut session = searcher.search(&context, &ranked_space(), None).unwrap();
    session.observe(&[
        trial(5, &["conv", "dense"], Some(0.1)),
        trial(1, &["resnet", "dense"], Some(0.9)),
        trial(2, &["max_pool", "dense"], Some(0.8)),
    ]);
    let proposals = session.propose(&[], 6).unwrap();
    assert_eq!(proposals.len(), 6);
    assert!(proposals.iter().all(|p| matches!(p.parent, Some(1) | Some(2))), "{proposals:?}");
}

#[test]
fn a_searcher_declares_its_settings() {
    let host = PluginHost::new(Limits::default());
    let settings = host.embedded("beam-search").unwrap().settings().unwrap();
    let names: Vec<&str> = settings.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"beam_size") && names.contains(&"increase_complexity_probability"), "{names:?}");
    let legacy = host.load_file(std::path::Path::new(env!("MSH_LEGACY_SEARCHER_PLUGIN"))).unwrap();
    assert_eq!(legacy.version, "0.1.0");
    assert!(legacy.settings().unwrap().is_empty(), "0.1.0 searchers declare nothing and accept any key");
    let v2 = host.load_file(std::path::Path::new(env!("MSH_SEARCHER_V2_PLUGIN"))).unwrap();
    assert_eq!((v2.version.as_str(), v2.world), ("0.2.0", World::Searcher));
    assert!(v2.settings().unwrap().is_empty());
}

#[test]
fn blocks_and_plugin_commands() {
    let out = common::run(&["blocks", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("core-blocks (") && text.contains("transformer_encoder") && text.contains("small_resnet"),
        "{text}"
    );

    let out = common::run(&["blocks", "show", "resnet"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("kernel") && text.contains("for input [16, 32]: ") && text.contains("\"op\":\"add\""),
        "{text}"
    );

    let out = common::run(&["plugin", "check", env!("MSH_PLUGIN_CORE_BLOCKS")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));

    let out = common::run(&["plugin", "check", HOSTILE]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ok   good on [64]") && text.contains("FAIL plugin `hostile`"), "{text}");
}

#[test]
fn pack_store_installs_verifies_and_removes() {
    let home = common::TempDir::new();
    let run = |args: &[&str]| {
        let out = common::msh().args(args).env("MSH_HOME", home.path()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let wasm = env!("MSH_PLUGIN_CORE_BLOCKS");
    let (ok, text) = run(&["pack", "install", wasm]);
    assert!(ok, "{text}");
    let sha = text.split("@sha256:").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(sha.len(), 64);

    let (ok, text) = run(&["pack", "list"]);
    assert!(ok && text.contains("core_blocks") && text.contains("block-pack"), "{text}");
    let (ok, text) = run(&["blocks", "list", "--pack", &format!("core_blocks@sha256:{}", &sha[..10])]);
    assert!(ok && text.contains("resnet"), "{text}");
    let (ok, text) = run(&["pack", "verify"]);
    assert!(ok && text.contains("ok      core_blocks"), "{text}");

    // The same bytes under a second name: both names stay, and removing one keeps the other.
    let copy = home.path().join("my_blocks.wasm");
    std::fs::copy(wasm, &copy).unwrap();
    let (ok, text) = run(&["pack", "install", copy.to_str().unwrap()]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["pack", "list"]);
    assert!(ok && text.contains("core_blocks") && text.contains("my_blocks"), "{text}");
    let (ok, text) = run(&["pack", "remove", "my_blocks"]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["blocks", "list", "--pack", "core_blocks"]);
    assert!(ok && text.contains("resnet"), "{text}");

    // A pack altered after installation is caught before use.
    let stored = home.path().join("packs").join(format!("{sha}.wasm"));
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let (ok, text) = run(&["pack", "verify"]);
    assert!(!ok && text.contains("pack `core_blocks` is corrupt"), "{text}");
    let (ok, text) = run(&["blocks", "list", "--pack", "core_blocks"]);
    assert!(!ok && text.contains("is corrupt"), "{text}");

    let (ok, text) = run(&["pack", "remove", "core_blocks"]);
    assert!(ok, "{text}");
    let (ok, text) = run(&["pack", "remove", "core_blocks"]);
    assert!(!ok && text.contains("no installed pack matches `core_blocks`"), "{text}");
}

/// A run records every plugin's SHA-256; resuming with a `.wasm` whose content changed is
/// refused with both digests named, unless `--allow-changed-plugins`, which logs the change.
#[test]
fn a_changed_plugin_file_is_refused_on_resume() {
    let dir = common::TempDir::new();
    let searcher = dir.path().join("searcher.wasm");
    std::fs::copy(env!("MSH_PLUGIN_RANDOM_SEARCH"), &searcher).unwrap();
    let workflow = dir.path().join("w.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: changed\ndata: {{source: 'csv:{}'}}\nspace: {{blocks: [dense], max_depth: 1}}\n\
             searcher: {{plugin: '{}'}}\ntraining: {{epochs: 1}}\nbudget: {{trials: 1}}\n\
             stages: {{search: {{kind: search}}}}\n",
            common::root().join("data/iris/iris.csv").display(),
            searcher.display()
        ),
    )
    .unwrap();
    let run_dir = dir.path().join("run");
    let args = |extra: &[&str]| {
        let mut all =
            vec!["run", workflow.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap(), "--backend", "cpu"];
        all.extend_from_slice(extra);
        common::run(&all)
    };
    let first = args(&[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    // The same file again resumes (and finds the run done).
    assert!(args(&[]).status.success());

    std::fs::copy(env!("MSH_PLUGIN_GRID_SEARCH"), &searcher).unwrap();
    let refused = args(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a changed plugin must be refused");
    assert!(
        stderr.contains("has changed since run directory") && stderr.contains("--allow-changed-plugins"),
        "{stderr}"
    );
    let digest = |path: &str| {
        use sha2::Digest;
        msh_plugin::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
    };
    assert!(stderr.contains(&digest(env!("MSH_PLUGIN_RANDOM_SEARCH"))), "{stderr}");
    assert!(stderr.contains(&digest(env!("MSH_PLUGIN_GRID_SEARCH"))), "{stderr}");

    let allowed = args(&["--allow-changed-plugins"]);
    let stderr = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success(), "{stderr}");
    assert!(stderr.contains("changed (sha256"), "the change is reported: {stderr}");
    // Accepted once, the new plugin is the run's: resuming with it needs no flag.
    assert!(args(&[]).status.success());
}
