//! `msh fuzz` (hidden): write the fuzz targets' seed inputs, and replay inputs through a
//! target on a stable build, e.g. a crash file that `fuzz/run.sh` saved.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum FuzzCommand {
    /// Write every target's seed inputs to DIR/<target>/.
    Seeds { dir: PathBuf },
    /// Run TARGET on each FILE; a panic is the bug the file reproduces.
    Replay { target: String, files: Vec<PathBuf> },
}

pub fn run(cmd: FuzzCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FuzzCommand::Seeds { dir } => {
            let root = std::env::current_dir().context("cannot read the current directory")?;
            for (name, _) in msh_fuzz::TARGETS {
                let target_dir = dir.join(name);
                std::fs::create_dir_all(&target_dir)
                    .with_context(|| format!("cannot create {}", target_dir.display()))?;
                for (i, seed) in msh_fuzz::seeds(name, &root).iter().enumerate() {
                    let path = target_dir.join(format!("seed-{i}"));
                    std::fs::write(&path, seed).with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
        }
        FuzzCommand::Replay { target, files } => {
            let run = msh_fuzz::target(&target).with_context(|| {
                let names: Vec<&str> = msh_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
                format!("no fuzz target `{target}`; targets: {}", names.join(", "))
            })?;
            for file in files {
                let input = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
                run(&input);
                println!("{}: ok", file.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
