//! Repository hygiene: every Rust file opens with a `//!` line, and no test is ignored.

use std::path::Path;

use crate::common;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory").flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_has_a_module_doc_and_no_ignored_test() {
    let mut files = Vec::new();
    rust_files(&common::root(), &mut files);
    assert!(files.len() > 10, "found only {} Rust files", files.len());
    let ignore_attr = concat!("#[", "ignore");
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        if !text.starts_with("//!") {
            problems.push(format!("{}: does not start with a `//!` line", file.display()));
        }
        if text.contains(ignore_attr) {
            problems.push(format!("{}: has an ignored test", file.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Released WIT versions are frozen: plugins built against them must keep loading. A
/// change to the contract goes into a new version (`plugin-sdk/wit/` holds the newest,
/// each released one is kept in `plugin-sdk/wit-VERSION/`), never into a released one.
const FROZEN_WIT: [(&str, &str, &str); 2] = [
    ("0.1.0", "plugin-sdk/wit-0.1.0/plugin.wit", "bae5674a94f916c43bf08809865611743bd069a3dc02ae10dadc2f617c67712e"),
    ("0.2.0", "plugin-sdk/wit-0.2.0/plugin.wit", "7b68780ab16f84936d1116f883c8d2d52c2acff398de0a7c5f154c9877e2285a"),
];

#[test]
fn released_wit_versions_are_unchanged() {
    use sha2::{Digest, Sha256};
    for (version, path, expected) in FROZEN_WIT {
        let file = common::root().join(path);
        let text = std::fs::read_to_string(&file).expect("the released WIT file exists");
        assert!(text.contains(&format!("package msh:plugin@{version};")), "{path} no longer declares {version}");
        let actual: String = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(actual, expected, "{path} (msh:plugin@{version}) changed after release; add a new version instead");
    }
}
