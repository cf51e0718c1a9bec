//! `msh pack`: install, list, remove and verify shared plugins in the pack store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use msh::plugin::{Limits, PackStore, PluginHost};

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Validate a plugin (.wasm) and add it to the store under its sha256.
    Install { file: PathBuf },
    /// List installed packs.
    List,
    /// Remove a pack: NAME, NAME@sha256:PREFIX or a sha256 prefix.
    Remove { pack: String },
    /// Re-hash installed packs (all, or one) and report any that changed.
    Verify { pack: Option<String> },
}

pub fn run(cmd: PackCommand) -> anyhow::Result<ExitCode> {
    let store = PackStore::default_location();
    match cmd {
        PackCommand::Install { file } => {
            let entry = store.install(&PluginHost::new(Limits::default()), &file)?;
            println!(
                "installed {}@sha256:{} ({}, msh:plugin@{})",
                entry.name, entry.sha256, entry.world, entry.version
            );
        }
        PackCommand::List => {
            let entries = store.list()?;
            if entries.is_empty() {
                println!("no packs installed in {}", store.dir().display());
            }
            for e in entries {
                println!(
                    "{:<24} {:<10} msh:plugin@{:<7} sha256:{}  from {}",
                    e.name, e.world, e.version, e.sha256, e.source
                );
            }
        }
        PackCommand::Remove { pack } => {
            let entry = store.remove(&pack)?;
            println!("removed {}@sha256:{}", entry.name, entry.sha256);
        }
        PackCommand::Verify { pack } => {
            let entries = match pack {
                Some(query) => vec![store.find(&query)?],
                None => store.list()?,
            };
            let mut corrupt = 0;
            for entry in &entries {
                match store.verify(entry) {
                    Ok(_) => println!("ok      {}@sha256:{}", entry.name, entry.sha256),
                    Err(e) => {
                        println!("CORRUPT {e}");
                        corrupt += 1;
                    }
                }
            }
            if corrupt > 0 {
                anyhow::bail!("{corrupt} of {} packs failed verification", entries.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
