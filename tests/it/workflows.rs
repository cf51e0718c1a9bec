//! Workflow files: the bundled ones validate, and each kind of mistake is reported with
//! `FILE:LINE:COLUMN` and, where one is close, a suggestion.

use crate::common;

use common::{TempDir, failure, run};

/// A valid workflow; tests replace one line at a time. Line numbers matter below.
fn base() -> String {
    let iris = common::root().join("data/iris/iris.csv");
    format!(
        "name: iris\n\
         data:\n  source: csv:{}\n\
         space:\n  packs: [core-blocks]\n  blocks: [dense, dense_bn]\n  max_depth: 3\n\
         searcher:\n  plugin: random-search\n\
         budget:\n  trials: 4\n\
         stages:\n  search:\n    kind: search\n  export:\n    kind: export\n    needs: [search]\n",
        iris.display()
    )
}

/// The stderr of `msh validate` on `text`, with the file path replaced by `w.yaml`.
fn invalid(text: &str) -> String {
    let dir = TempDir::new();
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, text).unwrap();
    failure(&["validate", path.to_str().unwrap()]).replace(path.to_str().unwrap(), "w.yaml")
}

fn replace(from: &str, to: &str) -> String {
    let text = base();
    assert!(text.contains(from), "base workflow has `{from}`");
    text.replacen(from, to, 1)
}

#[test]
fn the_base_and_bundled_workflows_validate() {
    let dir = TempDir::new();
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, base()).unwrap();
    let out = run(&["validate", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The CIFAR workflows download their data on the first run: they validate without it.
    for name in ["quickstart", "mnist1d", "mnist1d-rnn", "digits", "iris", "cifar", "cifar-cpu"] {
        let file = format!("workflows/{name}.yaml");
        let out = run(&["validate", &file]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let err = invalid(&replace("    needs: [search]", "    neds: [search]"));
    assert!(err.contains("w.yaml:17:5: "), "{err}");
    assert!(err.contains("unknown field `neds`") && err.contains("did you mean `needs`?"), "{err}");
}

#[test]
fn wrong_type_is_located() {
    let err = invalid(&replace("  trials: 4", "  trials: four"));
    assert!(err.contains("w.yaml:11:"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn unknown_block_is_located_with_a_suggestion() {
    let err = invalid(&replace("[dense, dense_bn]", "[dense, dens_bn]"));
    assert!(err.contains("w.yaml:6:19: unknown block `dens_bn`"), "{err}");
    assert!(err.contains("did you mean `dense_bn`?"), "{err}");
}

#[test]
fn unknown_pack_is_located() {
    let err = invalid(&replace("[core-blocks]", "[core-block]"));
    assert!(err.contains("w.yaml:5:11: unknown plugin `core-block`"), "{err}");
    assert!(err.contains("did you mean `core-blocks`?"), "{err}");
}

#[test]
fn needs_of_a_missing_stage_is_located() {
    let err = invalid(&replace("needs: [search]", "needs: [serch]"));
    assert!(err.contains("w.yaml:17:13: stage `export` needs `serch`, which is not a stage"), "{err}");
    assert!(err.contains("did you mean `search`?"), "{err}");
}

#[test]
fn a_cycle_is_reported_with_its_stages() {
    let text = replace("    kind: search\n", "    kind: search\n    needs: [export]\n");
    let err = invalid(&text);
    assert!(
        err.contains("w.yaml:") && err.contains("stages depend on each other in a cycle: export -> search -> export"),
        "{err}"
    );
    let line: usize = err.split("w.yaml:").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(line == 15 || line == 18, "points at a `needs` of the cycle: {err}");
}

#[test]
fn missing_data_and_cifar_say_where_to_get_it() {
    let err = invalid(&replace("csv:", "csv:/nonexistent/"));
    assert!(err.contains("w.yaml:3:3: data file /nonexistent/"), "{err}");
    let text = base();
    let line = text.lines().nth(2).unwrap().to_string();
    let err = invalid(&text.replace(&line, "  source: cifar10:/nonexistent/cifar"));
    assert!(err.contains("w.yaml:3:3: CIFAR-10 is not at /nonexistent/cifar"), "{err}");
    assert!(err.contains("msh data fetch cifar10 --dir /nonexistent") && err.contains("fetch: true"), "{err}");
}

#[test]
fn misplaced_settings_hparams_and_budgets_are_refused() {
    let err = invalid(&replace("    kind: export\n", "    kind: export\n    top_k: 3\n"));
    assert!(err.contains("w.yaml:17:5: `top_k` applies to ensemble stages, not to export stages"), "{err}");
    let err = invalid(&replace(
        "  max_depth: 3\n",
        "  max_depth: 3\n  hparams:\n    learning_rat: {low: 0.001, high: 0.1}\n",
    ));
    assert!(err.contains("w.yaml:9:5: unknown hyper-parameter `learning_rat`"), "{err}");
    assert!(err.contains("did you mean `learning_rate`?"), "{err}");
    let err = invalid(&replace("  trials: 4\n", "  trials: 0\n"));
    assert!(err.contains("w.yaml:10:1: `trials` must be at least 1"), "{err}");
    let err = invalid(&replace("random-search", "core-blocks"));
    assert!(err.contains("w.yaml:9:3: `core-blocks` is a block-pack, not a searcher"), "{err}");
    let err = invalid(&replace("  trials: 4\n", "  trials: 4\nstore: mysql://db/runs\n"));
    assert!(err.contains("w.yaml:12:1: `store` is a `postgres://USER@HOST/DB` URL"), "{err}");
}

#[test]
fn malformed_yaml_is_located() {
    let err = invalid(&replace("  blocks: [dense, dense_bn]", "  blocks: [dense, dense_bn"));
    assert!(err.contains("w.yaml:"), "{err}");
    let err = invalid(&replace("stages:\n", "stages: [\n"));
    assert!(err.contains("w.yaml:"), "{err}");
}

#[test]
fn early_stopping_values_are_checked_and_located() {
    let text = replace("  trials: 4\n", "  trials: 4\nearly_stopping: {mode: asha, reduction_factor: 1}\n");
    let err = invalid(&text);
    assert!(err.contains("w.yaml:12:30: `reduction_factor` must be at least 2, got 1"), "{err}");
    let err = invalid(&replace("  trials: 4\n", "  trials: 4\nearly_stopping:\n  mode: median\n  grace_epochs: 0\n"));
    assert!(err.contains("w.yaml:14:3: `grace_epochs` must be at least 1"), "{err}");
    let err = invalid(&replace("  trials: 4\n", "  trials: 4\nearly_stopping: {mode: median, reduction_factor: 2}\n"));
    assert!(err.contains("w.yaml:12:32: `reduction_factor` applies to `mode: asha` only"), "{err}");
    let err = invalid(&replace("  trials: 4\n", "  trials: 4\nearly_stopping: {mode: asha, grace_epoch: 2}\n"));
    assert!(err.contains("unknown field `grace_epoch`") && err.contains("did you mean `grace_epochs`?"), "{err}");
}

#[test]
fn a_misspelt_searcher_setting_is_located_with_a_suggestion() {
    let text = replace("  plugin: random-search\n", "  plugin: beam-search\n  config: {beam_siz: 4}\n");
    let err = invalid(&text);
    assert!(err.contains("w.yaml:10:12: `beam_siz` is not a setting of searcher `beam-search`"), "{err}");
    assert!(err.contains("did you mean `beam_size`?"), "{err}");
}

#[test]
fn zero_threads_per_trainer_is_located() {
    let err = invalid(&replace("budget:\n", "trainers: {count: 2, threads: 0}\nbudget:\n"));
    assert!(err.contains("w.yaml:10:"), "{err}");
    assert!(err.contains("`threads` must be at least 1"), "{err}");
}

#[test]
fn hyper_parameter_ranges_outside_their_domain_are_located() {
    let with = |line: &str| invalid(&replace("  max_depth: 3\n", &format!("  max_depth: 3\n  hparams:\n    {line}\n")));
    let err = with("batch_size: {low: -5, high: 64}");
    assert!(
        err.contains("w.yaml:9:") && err.contains("`batch_size` must be an integer in [1, 65536], got -5"),
        "{err}"
    );
    let err = with("epochs: {choices: [10, 1000000000]}");
    assert!(err.contains("`epochs` must be an integer in [1, 10000], got 1000000000"), "{err}");
    let err = with("gradient_clip: {low: -1, high: 1}");
    assert!(err.contains("`gradient_clip` must be a number in (0, 1000000], got -1"), "{err}");
    let err = with("optimizer: {choices: [0, 99]}");
    assert!(err.contains("`optimizer` must be an integer in [0, 3], got 99"), "{err}");
    let err = invalid(&replace("budget:\n", "training: {epochs: 1000000000}\nbudget:\n"));
    assert!(err.contains("w.yaml:10:") && err.contains("`epochs` must be in 1..=10000"), "{err}");
}

/// Names that become directories are identifiers; an export's `dir` stays in the run.
#[test]
fn names_and_dirs_cannot_leave_their_roots() {
    let err = invalid(&replace("name: iris", "name: ../.."));
    assert!(err.contains("w.yaml:1:1: workflow name \"../..\": use letters, digits"), "{err}");
    let err = invalid(&replace("  export:\n", "  ../../../X:\n"));
    assert!(err.contains("w.yaml:15:3: stage name \"../../../X\": use letters, digits"), "{err}");
    let err = invalid(&replace("    needs: [search]\n", "    needs: [search]\n    dir: ../../elsewhere\n"));
    assert!(
        err.contains("w.yaml:18:5: `dir` ../../elsewhere must be a relative path inside the run directory"),
        "{err}"
    );
    let err = invalid(&replace("    needs: [search]\n", "    needs: [search]\n    dir: /tmp/elsewhere\n"));
    assert!(err.contains("must be a relative path inside the run directory"), "{err}");
    let out = run(&["validate", "/dev/null"]);
    assert!(!out.status.success());
}

/// Deeply nested flow collections and huge files are refused before the YAML parser (whose
/// time grows faster than the nesting) sees them.
#[test]
fn deep_nesting_and_huge_files_are_refused_quickly() {
    let started = std::time::Instant::now();
    let err = invalid(&format!("{}budget_x: {}\n", base(), "[".repeat(80_000)));
    assert!(err.contains("w.yaml:18:75: flow collections nest deeper than 64 levels"), "{err}");
    let err = invalid(&format!("{}# {}\n", base(), "x".repeat(2 << 20)));
    assert!(err.contains("bytes; a workflow is at most 1048576"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Control characters from a workflow (an OSC window title, a BEL) reach the terminal
/// escaped.
#[test]
fn control_characters_reach_the_terminal_escaped() {
    let err = invalid(&replace("plugin: random-search", "plugin: \"random\\e]0;pwned\\aesearch\""));
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("random\\x1b]0;pwned\\x07esearch"), "{err}");
}

/// A setting value the searcher refuses is an error of `msh validate`, located at the key,
/// not a failure of the run's first proposal.
#[test]
fn searcher_setting_values_are_checked_by_the_searcher() {
    let err = invalid(&replace("  plugin: random-search\n", "  plugin: beam-search\n  config:\n    beam_size: many\n"));
    assert!(err.contains("w.yaml:11:5: searcher `beam-search` refuses it: setting `beam_size` is `many`"), "{err}");
    let ok = replace("  plugin: random-search\n", "  plugin: beam-search\n  config:\n    beam_size: 2\n");
    let dir = TempDir::new();
    let path = dir.path().join("w.yaml");
    std::fs::write(&path, ok).unwrap();
    let out = run(&["validate", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
