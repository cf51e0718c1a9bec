//! Builds the default plugins (plugins/) for wasm32-wasip2 with a nested cargo, so that
//! `msh` embeds them and works out of the box.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugin crates embedded in `msh`, by package name.
const EMBEDDED: [&str; 8] = [
    "core-blocks",
    "random-search",
    "beam-search",
    "regularized-evolution",
    "local-search",
    "grid-search",
    "harmonica",
    "linear-model",
];
/// Test fixtures: built beside the embedded ones, their paths given to the tests.
const FIXTURES: [(&str, &str); 5] = [
    ("hostile", "MSH_HOSTILE_PLUGIN"),
    ("hostile-searcher", "MSH_HOSTILE_SEARCHER_PLUGIN"),
    ("legacy-searcher", "MSH_LEGACY_SEARCHER_PLUGIN"),
    ("simple-local-search", "MSH_SIMPLE_LOCAL_SEARCH_PLUGIN"),
    ("flaky-searcher", "MSH_FLAKY_SEARCHER_PLUGIN"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the repository").to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for path in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugin-sdk/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/wit-0.1.0",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let target_dir = out_dir.join("plugins-target");
    // Tests that build guest crates of their own reuse these compiled dependencies.
    println!("cargo:rerun-if-env-changed=MSH_GUEST_TOOLCHAIN");
    println!("cargo:rustc-env=MSH_PLUGINS_TARGET_DIR={}", target_dir.display());
    for package in EMBEDDED {
        println!("cargo:rerun-if-changed={}", root.join("plugins").join(package).display());
        let built = build_plugin(&root, package, &target_dir);
        let file = built.file_name().expect("a file");
        std::fs::copy(&built, out_dir.join(file)).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
        // Tests load the built files too, e.g. MSH_PLUGIN_CORE_BLOCKS.
        println!("cargo:rustc-env=MSH_PLUGIN_{}={}", package.replace('-', "_").to_uppercase(), built.display());
    }
    for (package, variable) in FIXTURES {
        println!("cargo:rerun-if-changed={}", root.join("plugins/testing").join(package).display());
        let built = build_plugin(&root, package, &target_dir);
        println!("cargo:rustc-env={variable}={}", built.display());
    }
}

/// Builds one plugin crate; returns the path of its `.wasm`.
fn build_plugin(root: &Path, package: &str, target_dir: &Path) -> PathBuf {
    // MSH_GUEST_TOOLCHAIN builds the plugins with another rustup toolchain than the host's
    // (fuzz/run.sh builds the host with nightly, which may lack wasm32-wasip2).
    let mut cmd = match std::env::var("MSH_GUEST_TOOLCHAIN") {
        Ok(toolchain) if !toolchain.is_empty() => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", &toolchain, "cargo"]).env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN");
            cmd
        }
        _ => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
    };
    cmd.args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "-p", package, "--manifest-path"])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // The outer build's settings are for the host target, not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build plugin `{package}`: {e}"));
    if !status.success() {
        panic!(
            "building plugin `{package}` for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", package.replace('-', "_")))
}
