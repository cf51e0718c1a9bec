//! `msh pack`: install, list, remove and verify shared plugins in the pack store; push them
//! to OCI registries and pin a workflow's OCI plugins in a lock file.

use super::say;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use msh_engine::workflow;
use msh_plugin::oci::{self, OciRef, PackLock};
use msh_plugin::{Limits, PackStore, PluginHost};

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Validate a plugin (FILE.wasm or oci://HOST/REPO:TAG, digest verified) and add it to
    /// the store under its sha256.
    Install { plugin: String },
    /// Validate a plugin and push it to an OCI registry: oci://HOST[:PORT]/REPO:TAG.
    Push { file: PathBuf, reference: String },
    /// Pin the oci:// plugins a workflow names by tag: writes WORKFLOW.lock beside it.
    Lock { workflow: PathBuf },
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
        PackCommand::Install { plugin } if plugin.starts_with(oci::SCHEME) => {
            let reference: OciRef = plugin.parse()?;
            let entry = store.fetch_oci(&PluginHost::new(Limits::default()), &reference)?.entry;
            say!(
                "installed {}@sha256:{} ({}, msh:plugin@{}) from {}",
                entry.name,
                entry.sha256,
                entry.world,
                entry.version,
                entry.source
            );
        }
        PackCommand::Install { plugin } => {
            let entry = store.install(&PluginHost::new(Limits::default()), &PathBuf::from(plugin))?;
            say!("installed {}@sha256:{} ({}, msh:plugin@{})", entry.name, entry.sha256, entry.world, entry.version);
        }
        PackCommand::List => {
            let entries = store.list()?;
            if entries.is_empty() {
                say!("no packs installed in {}", store.dir().display());
            }
            for e in entries {
                say!(
                    "{:<24} {:<10} msh:plugin@{:<7} sha256:{}  from {}",
                    e.name,
                    e.world,
                    e.version,
                    e.sha256,
                    e.source
                );
            }
        }
        PackCommand::Push { file, reference } => {
            let reference: OciRef = reference.parse()?;
            let plugin = PluginHost::new(Limits::default()).load_file(&file)?;
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = oci::push(&bytes, &reference)?;
            say!(
                "pushed {}@sha256:{} ({}) to {}@sha256:{manifest}",
                plugin.name,
                plugin.sha256,
                plugin.world,
                reference.without_digest()
            );
        }
        PackCommand::Lock { workflow } => {
            let (source, wf) = workflow::load(&workflow)?;
            let searchers = wf.stages.values().filter_map(|s| s.search()?.searcher.as_ref()).chain([&wf.searcher]);
            let named: Vec<&String> = wf.space.packs.iter().chain(searchers.map(|s| &s.plugin)).collect();
            let host = PluginHost::new(wf.limits);
            let mut lock = PackLock::default();
            for text in named.into_iter().filter(|t| t.starts_with(oci::SCHEME)) {
                let reference: OciRef = text.parse()?;
                // Pulled, verified and installed now, so that the pinned runs need no registry.
                let pack = store
                    .fetch_oci(&host, &reference)
                    .with_context(|| format!("{}: cannot lock {text}", source.path.display()))?;
                say!("{text} -> sha256:{} ({}@sha256:{})", pack.manifest, pack.entry.name, pack.entry.sha256);
                lock.packs.insert(reference.without_digest(), pack.manifest);
            }
            if lock.packs.is_empty() {
                anyhow::bail!("{} names no oci:// plugins: nothing to lock", workflow.display());
            }
            let path =
                lock.write(&workflow).with_context(|| format!("cannot write the lock of {}", workflow.display()))?;
            say!("wrote {}", path.display());
        }
        PackCommand::Remove { pack } => {
            let entry = store.remove(&pack)?;
            say!("removed {}@sha256:{}", entry.name, entry.sha256);
        }
        PackCommand::Verify { pack } => {
            let entries = match pack {
                Some(query) => vec![store.find(&query)?],
                None => store.list()?,
            };
            let mut corrupt = 0;
            for entry in &entries {
                match store.verify(entry) {
                    Ok(_) => say!("ok      {}@sha256:{}", entry.name, entry.sha256),
                    Err(e) => {
                        say!("CORRUPT {e}");
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
