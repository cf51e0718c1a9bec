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
    let root = manifest_dir.parent().expect("host/ sits in the repository").to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for path in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "plugin-sdk/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/wit-0.1.0",
        "plugin-sdk/wit-0.2.0",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rustc-env=MSH_COMMIT={}", commit(&root));
    let target_dir = out_dir.join("plugins-target");
    // Tests that build guest crates of their own reuse these compiled dependencies.
    println!("cargo:rerun-if-env-changed=MSH_GUEST_TOOLCHAIN");
    println!("cargo:rustc-env=MSH_PLUGINS_TARGET_DIR={}", target_dir.display());
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
    for package in EMBEDDED {
        let built = built(package);
        let file = built.file_name().expect("a file");
        std::fs::copy(&built, out_dir.join(file)).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
        // Tests load the built files too, e.g. MSH_PLUGIN_CORE_BLOCKS.
        println!("cargo:rustc-env=MSH_PLUGIN_{}={}", package.replace('-', "_").to_uppercase(), built.display());
    }
    for (package, variable) in FIXTURES {
        println!("cargo:rustc-env={variable}={}", built(package).display());
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

/// The commit being built, for `msh --version`: `git rev-parse`, or `MSH_COMMIT` where the
/// sources are not a git checkout (a tarball, a vendored copy), else `unknown`.
fn commit(root: &Path) -> String {
    println!("cargo:rerun-if-env-changed=MSH_COMMIT");
    if let Ok(commit) = std::env::var("MSH_COMMIT") {
        return commit;
    }
    // Built again when HEAD moves: HEAD names a branch, the branch's ref file names the commit.
    let git = root.join(".git");
    let head = git.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
        let branch =
            std::fs::read_to_string(&head).ok().and_then(|h| Some(h.strip_prefix("ref: ")?.trim().to_string()));
        // A watched path that does not exist would rebuild every time: a packed ref lives
        // in packed-refs.
        let loose = branch.map(|b| git.join(b)).filter(|path| path.is_file());
        if let Some(watched) = loose.or_else(|| Some(git.join("packed-refs")).filter(|p| p.is_file())) {
            println!("cargo:rerun-if-changed={}", watched.display());
        }
    }
    Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|commit| commit.trim().to_string())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
