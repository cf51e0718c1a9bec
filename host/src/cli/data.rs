//! `msh data`: download the data sets that msh knows, verified against their checksums.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use msh_train::data::fetch::{self, Archive, Fetched, KnownDataset};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a data set, verify its checksum and extract it into DIR.
    Fetch(FetchArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DatasetName {
    /// CIFAR-10, binary version (170 MB), into DIR/cifar-10-batches-bin.
    Cifar10,
}

impl DatasetName {
    fn known(self) -> KnownDataset {
        match self {
            DatasetName::Cifar10 => fetch::CIFAR10,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    dataset: DatasetName,
    /// Directory the data set's own directory is created in (what workflows under
    /// workflows/ read: `data`).
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Download from this mirror instead of the data set's published address; needs
    /// --md5 or --sha256.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, requires = "url")]
    md5: Option<String>,
    #[arg(long, requires = "url")]
    sha256: Option<String>,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Fetch(args) => {
            let dataset = args.dataset.known();
            let archive = match args.url {
                Some(url) => Archive { url, md5: args.md5, sha256: args.sha256 },
                None => Archive::published(&dataset),
            };
            let dest = args.dir.join(dataset.root);
            let progress = std::io::stderr().is_terminal();
            let fetched = fetch::ensure(&dataset, &dest, &archive, progress, &|line| eprintln!("msh: {line}"))
                .with_context(|| format!("cannot fetch {}", dataset.name))?;
            match fetched {
                Fetched::AlreadyThere => println!("{} is already in {}", dataset.name, dest.display()),
                Fetched::Downloaded { bytes } => {
                    println!("fetched {} ({bytes} bytes, verified) into {}", dataset.name, dest.display())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
