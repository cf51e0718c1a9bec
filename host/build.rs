//! The commit `msh --version` names, and the built plugins' paths for the tests (from
//! msh-plugin's build script, whose `links` metadata arrives as `DEP_MSH_PLUGINS_*`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the repository").to_path_buf();
    println!("cargo:rustc-env=MSH_COMMIT={}", commit(&root));
    // e.g. MSH_PLUGIN_CORE_BLOCKS, MSH_HOSTILE_PLUGIN, MSH_PLUGINS_TARGET_DIR.
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("DEP_MSH_PLUGINS_") {
            println!("cargo:rustc-env=MSH_{name}={value}");
        }
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
