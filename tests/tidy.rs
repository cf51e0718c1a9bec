//! Repository hygiene: every Rust file opens with a `//!` line, and no test is ignored.

use std::path::Path;

mod common;

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
