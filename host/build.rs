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
    // In a linked worktree `.git` is a file naming the worktree's git dir, whose HEAD is its
    // own while branches live in the common dir.
    let dot_git = root.join(".git");
    let git_dir = match std::fs::read_to_string(&dot_git) {
        Ok(link) => link.strip_prefix("gitdir: ").map(|dir| root.join(dir.trim())),
        Err(_) => Some(dot_git),
    };
    if let Some(head) = git_dir.as_ref().map(|dir| dir.join("HEAD")).filter(|head| head.is_file()) {
        let git_dir = git_dir.expect("HEAD is in it");
        let common = std::fs::read_to_string(git_dir.join("commondir"))
            .map(|dir| git_dir.join(dir.trim()))
            .unwrap_or_else(|_| git_dir.clone());
        println!("cargo:rerun-if-changed={}", head.display());
        let branch =
            std::fs::read_to_string(&head).ok().and_then(|h| Some(h.strip_prefix("ref: ")?.trim().to_string()));
        // A watched path that does not exist would rebuild every time: a packed ref lives
        // in packed-refs.
        let loose = branch.map(|b| common.join(b)).filter(|path| path.is_file());
        if let Some(watched) = loose.or_else(|| Some(common.join("packed-refs")).filter(|p| p.is_file())) {
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
