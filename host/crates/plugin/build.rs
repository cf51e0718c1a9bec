//! Builds the default plugins (plugins/) for wasm32-wasip2 with a nested cargo, so that
//! msh embeds them and works out of the box; writes the list `EMBEDDED` includes, and
//! hands the built files' paths to the `msh` package's tests (`links` metadata).

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
const FIXTURES: [(&str, &str); 6] = [
    ("hostile", "MSH_HOSTILE_PLUGIN"),
    ("hostile-searcher", "MSH_HOSTILE_SEARCHER_PLUGIN"),
    ("legacy-searcher", "MSH_LEGACY_SEARCHER_PLUGIN"),
    ("simple-local-search", "MSH_SIMPLE_LOCAL_SEARCH_PLUGIN"),
    ("flaky-searcher", "MSH_FLAKY_SEARCHER_PLUGIN"),
    ("searcher-v2", "MSH_SEARCHER_V2_PLUGIN"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.ancestors().nth(3).expect("host/crates/plugin sits in the repository").to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for path in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugin-sdk/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/wit-0.1.0",
        "plugin-sdk/wit-0.2.0",
        // The SDK builds the shared vocabulary into every plugin.
        "host/crates/vocab",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let target_dir = out_dir.join("plugins-target");
    // Tests that build guest crates of their own reuse these compiled dependencies.
    println!("cargo:rerun-if-env-changed=MSH_GUEST_TOOLCHAIN");
    println!("cargo:PLUGINS_TARGET_DIR={}", target_dir.display());
    // One cargo per kind of plugin, so that shared dependencies build once and in parallel;
    // block packs and searchers apart, as the SDK's `block-pack` and `searcher` features
    // export different worlds and cannot be unified.
    let (mut packs, mut searchers) = (Vec::new(), Vec::new());
    for package in EMBEDDED.iter().chain(FIXTURES.iter().map(|(package, _)| package)) {
        let dir = if EMBEDDED.contains(package) { root.join("plugins") } else { root.join("plugins/testing") };
        println!("cargo:rerun-if-changed={}", dir.join(package).display());
        let manifest = std::fs::read_to_string(dir.join(package).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("cannot read plugin `{package}`'s Cargo.toml: {e}"));
        if manifest.contains("\"block-pack\"") { packs.push(*package) } else { searchers.push(*package) }
    }
    build_plugins(&root, &packs, &target_dir);
    build_plugins(&root, &searchers, &target_dir);
    let built =
        |package: &str| target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", package.replace('-', "_")));
    let mut embedded = format!(
        "/// The plugins built into msh, by package name.\npub const EMBEDDED: [(&str, &[u8]); {}] = [\n",
        EMBEDDED.len()
    );
    for package in EMBEDDED {
        let built = built(package);
        let file = built.file_name().expect("a file");
        std::fs::copy(&built, out_dir.join(file)).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
        embedded +=
            &format!("    ({package:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{}\"))),\n", file.display());
        // Tests load the built files too, e.g. MSH_PLUGIN_CORE_BLOCKS.
        println!("cargo:PLUGIN_{}={}", package.replace('-', "_").to_uppercase(), built.display());
    }
    embedded += "];\n";
    std::fs::write(out_dir.join("embedded.rs"), embedded).expect("OUT_DIR is writable");
    for (package, variable) in FIXTURES {
        println!("cargo:{}={}", variable.trim_start_matches("MSH_"), built(package).display());
    }
}

/// Builds the plugin crates `packages` for wasm32-wasip2, into `target_dir`.
fn build_plugins(root: &Path, packages: &[&str], target_dir: &Path) {
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
    cmd.args(["build", "--release", "--locked", "--target", "wasm32-wasip2"]);
    for package in packages {
        cmd.args(["-p", package]);
    }
    cmd.arg("--manifest-path").arg(root.join("plugins/Cargo.toml")).arg("--target-dir").arg(target_dir);
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
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the plugins ({}) for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)",
            packages.join(", ")
        );
    }
}
