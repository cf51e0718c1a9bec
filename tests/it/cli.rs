//! The conventions of the command line: `--version` with the commit and backends, shell
//! completions and manual pages from the clap definitions, documented exit statuses, and
//! no colour codes or library chatter on a stream that is not a terminal.

use crate::common::{self, TempDir};

#[test]
fn version_names_the_commit_and_the_backends() {
    let out = common::run(&["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with(&format!("msh {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains("; backends: cpu, wgpu)"), "{version}");
    // The commit is this checkout's, as git names it.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(common::root())
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = String::from_utf8_lossy(&head.stdout);
        assert!(version.contains(&format!("(commit {};", head.trim())), "{version} is not built from {head}");
    }
}

#[test]
fn completions_and_manual_pages_come_from_the_command_line_definition() {
    for (shell, expected) in [("bash", "_msh()"), ("zsh", "#compdef msh"), ("fish", "complete -c msh")] {
        let out = common::run(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains(expected), "{shell}: {script:.200}");
        // Every subcommand completes, including those added later.
        assert!(script.contains("worker") && script.contains("export") && script.contains("man"), "{shell}");
    }
    let err = common::failure(&["completions", "tcsh"]);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");

    let out = common::run(&["man"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && page.contains(".TH msh 1"), "{page:.300}");
    assert!(page.contains("Exit status:") && page.contains("130"), "the exit statuses are in the page");

    let dir = TempDir::new();
    let out = common::run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["msh.1", "msh-run.1", "msh-pack-install.1", "msh-bench-train.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(!dir.path().join("msh-fuzz.1").exists(), "hidden commands get no page");
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = common::run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for line in ["0    success", "2    training diverged", "130  interrupted"] {
        assert!(help.contains(line), "{help}");
    }
    let out = common::run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2, as clap's do");
}

#[test]
fn warnings_to_a_file_carry_no_colour_codes() {
    // An inline password in `store:` draws a warning from `msh validate`.
    let (_dir, workflow, _run) =
        common::start(&(common::mnist1d_workflow(1, 1, 1, "") + "store: \"postgres://me:secret@127.0.0.1:1/db\"\n"));
    for no_color in [None, Some("1")] {
        let mut cmd = common::msh();
        cmd.args(["validate", workflow.to_str().unwrap()]);
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("WARN") && err.contains("holds a password"), "{err}");
        assert!(!err.contains('\x1b'), "colour codes in a file: {err:?}");
    }
}

#[test]
fn cpu_and_auto_runs_print_nothing_from_gpu_drivers() {
    // Without XDG_RUNTIME_DIR (servers, containers) a display-server probe would print
    // `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`; nothing probes
    // on the CPU, and `auto` probes only the backends burn trains on.
    let dir = TempDir::new();
    let arch = dir.path().join("arch.yaml");
    std::fs::write(&arch, "blocks:\n  - name: d\n    nodes:\n      - {op: dense, units: 8}\n").unwrap();
    let iris = format!("csv:{}", common::root().join("data/iris/iris.csv").display());
    for backend in ["cpu", "auto"] {
        let out = common::msh()
            .args(["train", "--data", &iris, "--arch", arch.to_str().unwrap(), "--epochs", "1", "--backend", backend])
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{backend}: {err}");
        assert!(!err.contains("XDG_RUNTIME_DIR") && !err.contains("error"), "{backend}: {err}");
    }
}
