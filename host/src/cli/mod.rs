//! Subcommands of the `msh` binary.

mod bench;
mod blocks;
mod pack;
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
    /// Blocks offered by block packs.
    #[command(subcommand)]
    Blocks(blocks::BlocksCommand),
    /// Shared plugins: install, list, remove, verify.
    #[command(subcommand)]
    Pack(pack::PackCommand),
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(blocks::PluginCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Blocks(cmd) => blocks::run_blocks(cmd),
        Command::Pack(cmd) => pack::run(cmd),
        Command::Plugin(cmd) => blocks::run_plugin(cmd),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
