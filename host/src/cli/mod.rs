//! Subcommands of the `msh` binary.

mod bench;
mod progress;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "msh", version, about = "Neural architecture search: sandboxed plugins, native trainers")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train one architecture and report validation and test metrics.
    Train(train::TrainArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
