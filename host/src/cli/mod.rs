//! Subcommands of the `msh` binary.

mod bench;
mod bench_engine;
mod bench_search;
mod bench_searchers;
mod bench_store;
mod bench_views;
mod blocks;
mod data;
mod export;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod inspect;
mod pack;
mod progress;
mod run;
mod shell;
mod train;
mod ui;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `msh --version`: the release, the commit it was built from and the compute backends
/// compiled in.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MSH_COMMIT"), "; backends: cpu, wgpu)");

/// What `msh --help` and the manual page say about exit statuses.
const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    an error, or a stage of the run failed
  2    training diverged (msh train), or the command line is wrong
  130  interrupted (Ctrl-C); `msh run` resumes where it stopped

Environment: MSH_LOG (log filter, e.g. debug), MSH_HOME (installed packs),
MSH_OCI_USERNAME and MSH_OCI_PASSWORD (registry credentials), NO_COLOR.";

#[derive(Debug, Parser)]
#[command(
    name = "msh",
    version = VERSION,
    about = "Neural architecture search: sandboxed plugins, native trainers",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run (or resume) a workflow: search, then the stages after it.
    Run(run::RunArgs),
    /// Join the search stages of a run kept in PostgreSQL (from any machine).
    Worker(run::WorkerArgs),
    /// Check a workflow file without running it.
    Validate(run::ValidateArgs),
    /// A run's stages, trial counts, best trial and ETA.
    Status(inspect::StatusArgs),
    /// Every trial of a run.
    Trials(inspect::TrialsArgs),
    /// A run's best trial; `--export DIR` writes it out.
    Best(inspect::BestArgs),
    /// Write any trial's model (or a saved model or ensemble) as one ONNX file.
    Export(export::ExportArgs),
    /// Predict with a run's best model or a saved model directory.
    Predict(inspect::PredictArgs),
    /// Write a run as one self-contained HTML page of plots (RUN/report.html by default).
    Report(ui::ReportArgs),
    /// Serve a live dashboard of a run on localhost.
    Ui(ui::UiArgs),
    /// Train one architecture and report validation and test metrics.
    Train(train::TrainArgs),
    /// Blocks offered by block packs.
    #[command(subcommand)]
    Blocks(blocks::BlocksCommand),
    /// Data sets: download and verify.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Shared plugins: install, list, remove, verify.
    #[command(subcommand)]
    Pack(pack::PackCommand),
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(blocks::PluginCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print a shell's completion script for msh.
    Completions(shell::CompletionsArgs),
    /// Print msh's manual page, or write one page per subcommand with --dir.
    Man(shell::ManArgs),
    /// Fuzz targets' seeds and replays (for fuzz/run.sh).
    #[cfg(feature = "fuzzing")]
    #[command(subcommand, hide = true)]
    Fuzz(fuzz::FuzzCommand),
}

/// `text` with its control characters (ESC, BEL, C1 codes...) written as `\x1b`-style
/// escapes, newlines and tabs kept: names and error texts that come from workflows, data
/// and plugins cannot retitle the window, write the clipboard or redraw the terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return text.into();
    }
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => format!("\\x{:02x}", c as u32),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// `println!` for text that holds names or messages from plugins, workflows or data: its
/// control characters are escaped (`printable`).
macro_rules! say {
    ($($arg:tt)*) => { println!("{}", $crate::cli::printable(&format!($($arg)*))) };
}
pub(crate) use say;

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Worker(args) => run::worker(args),
        Command::Validate(args) => run::validate(args),
        Command::Status(args) => inspect::status(args),
        Command::Trials(args) => inspect::trials(args),
        Command::Best(args) => inspect::best(args),
        Command::Export(args) => export::export(args),
        Command::Predict(args) => inspect::predict(args),
        Command::Report(args) => ui::write_report(args),
        Command::Ui(args) => ui::serve(args),
        Command::Train(args) => train::run(args),
        Command::Blocks(cmd) => blocks::run_blocks(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::Pack(cmd) => pack::run(cmd),
        Command::Plugin(cmd) => blocks::run_plugin(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
        #[cfg(feature = "fuzzing")]
        Command::Fuzz(cmd) => fuzz::run(cmd),
    }
}
