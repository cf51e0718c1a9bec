//! The plugin SDK's README tutorial, built for wasm32-wasip2 and run as a searcher, so the
//! tutorial cannot rot.

use crate::common;

use std::process::Command;

use msh_plugin::{Limits, PluginHost, World};
use msh_store::{Metrics, TrialRecord, TrialStatus};
use msh_vocab::space::{SearchContext, SearchSpace, SpaceBlock};

/// The code block that follows `<!-- tutorial:NAME -->` in the README.
fn snippet(readme: &str, name: &str) -> String {
    let marker = format!("<!-- tutorial:{name} -->");
    let after = &readme[readme.find(&marker).unwrap_or_else(|| panic!("README has no {marker}")) + marker.len()..];
    let start = after.find("```").expect("a code block follows");
    let body = &after[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_string()
}

#[test]
fn readme_tutorial_searcher_builds_and_proposes() {
    let root = common::root();
    let readme = std::fs::read_to_string(root.join("plugin-sdk/README.md")).unwrap();
    let dir = common::TempDir::new();
    let manifest = snippet(&readme, "Cargo.toml")
        .replace("PATH/TO/msh/plugin-sdk", &root.join("plugin-sdk").display().to_string())
        + "\n[workspace]\n";
    std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), snippet(&readme, "lib.rs")).unwrap();

    let target = env!("MSH_PLUGINS_TARGET_DIR");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir", target])
        .current_dir(dir.path())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "the tutorial does not build:\n{}", String::from_utf8_lossy(&out.stderr));

    let wasm = std::path::Path::new(target).join("wasm32-wasip2/release/greedy.wasm");
    let host = PluginHost::new(Limits::default());
    let greedy = host.load_file(&wasm).unwrap();
    assert_eq!(greedy.world, World::Searcher);
    let space = SearchSpace {
        blocks: ["conv", "dense"]
            .map(|name| SpaceBlock { name: name.into(), description: String::new(), params: vec![], ranks: vec![] })
            .to_vec(),
        input_rank: 0,
        min_depth: 2,
        max_depth: 4,
        hparams: vec![],
    };
    let context = SearchContext { seed: 3, budget: 10, config: vec![] };
    let mut search = greedy.search(&context, &space, None).unwrap();
    let first = search.propose(&[], 2).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].architecture.len(), 2);
    let mut done = TrialRecord::new(5, "search", first[0].architecture.clone(), vec![]);
    done.status = TrialStatus::Completed;
    done.objective = Some(0.3);
    done.valid = Some(Metrics { samples: 10, loss: 0.3, accuracy: Some(0.9), r2: None, rmse: None });
    done.parameters = 10;
    done.epochs = 1;
    search.observe(&[done]);
    let next = search.propose(&[], 3).unwrap();
    assert!(next.iter().all(|p| p.parent == Some(5)), "{next:?}");
    let keys: std::collections::HashSet<String> =
        next.iter().chain(&first).map(|p| search.key(&p.architecture, &p.hparams)).collect();
    assert_eq!(keys.len(), 5, "no proposal repeats another");

    let check = common::run(&["plugin", "check", wasm.to_str().unwrap()]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn the_sdk_unit_tests_pass() {
    // The SDK is a crate of its own (plugins build it for wasm32-wasip2); its helpers' unit
    // tests run natively here.
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--features", "searcher", "--target-dir", env!("MSH_PLUGINS_TARGET_DIR"), "--manifest-path"])
        .arg(common::root().join("plugin-sdk/Cargo.toml"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("neighbours_fit_and_step_parameters ... ok"), "{stdout}");
}
