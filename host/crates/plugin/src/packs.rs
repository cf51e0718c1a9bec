//! The pack store: installed plugins in the user's data directory, content-addressed by
//! SHA-256, so a workflow can pin `name@sha256:<hex>` and a shared pack is verified
//! before use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::oci::{self, OciRef};
use super::{PluginError, PluginHost, hex};

/// One installed plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackEntry {
    pub name: String,
    /// `block-pack` or `searcher`.
    pub world: String,
    /// The contract version it was built against.
    pub version: String,
    pub sha256: String,
    /// Where it was installed from.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack store {}: {reason}", dir.display())]
    Store { dir: PathBuf, reason: String },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("no installed pack matches `{0}` (see `msh pack list`)")]
    NotFound(String),
    #[error("`{query}` matches several packs: {matches}; give more of the sha256")]
    Ambiguous { query: String, matches: String },
    #[error("pack `{name}` is corrupt: {} has sha256 {actual}, installed as {expected}", path.display())]
    Corrupt { name: String, path: PathBuf, expected: String, actual: String },
    #[error(transparent)]
    Oci(#[from] super::oci::OciError),
}

/// A plugin `fetch_oci` installed (or found installed), with its manifest's digest (hex).
pub struct OciPack {
    pub entry: PackEntry,
    pub plugin: super::Plugin,
    pub manifest: String,
}

/// The directory of installed packs and its index.
#[derive(Debug, Clone)]
pub struct PackStore {
    dir: PathBuf,
}

const INDEX: &str = "index.json";

impl PackStore {
    /// `$MSH_HOME/packs`, else `$XDG_DATA_HOME/msh/packs`, else `~/.local/share/msh/packs`.
    pub fn default_location() -> Self {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = env("MSH_HOME")
            .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("msh")))
            .or_else(|| env("HOME").map(|h| h.join(".local/share/msh")))
            .unwrap_or_else(|| PathBuf::from(".msh"));
        Self::at(base.join("packs"))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn fail(&self, reason: String) -> PackError {
        PackError::Store { dir: self.dir.clone(), reason }
    }

    pub fn list(&self) -> Result<Vec<PackEntry>, PackError> {
        let path = self.dir.join(INDEX);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.fail(format!("{INDEX} is unreadable: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.fail(format!("cannot read {INDEX}: {e}"))),
        }
    }

    fn write_index(&self, entries: &[PackEntry]) -> Result<(), PackError> {
        let json = serde_json::to_vec_pretty(entries).expect("entries serialise");
        msh_io::atomic_file::write_atomic(&self.dir.join(INDEX), &json)
            .map_err(|e| self.fail(format!("cannot write {INDEX}: {e}")))
    }

    fn file(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Validates a plugin with `host` and stores it under its hash (installing the same
    /// bytes under the same name again is a no-op; under another name, adds that name).
    pub fn install(&self, host: &PluginHost, path: &Path) -> Result<PackEntry, PackError> {
        let bytes = std::fs::read(path).map_err(|e| self.fail(format!("cannot read {}: {e}", path.display())))?;
        let name = host.load_file(path)?.name;
        self.install_bytes(host, &name, &bytes, &path.display().to_string())
    }

    /// Validates plugin `bytes` that came from `source` and stores them under their hash.
    pub fn install_bytes(
        &self,
        host: &PluginHost,
        name: &str,
        bytes: &[u8],
        source: &str,
    ) -> Result<PackEntry, PackError> {
        let plugin = host.load_bytes(name, bytes)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| self.fail(format!("cannot create: {e}")))?;
        msh_io::atomic_file::write_atomic(&self.file(&plugin.sha256), bytes)
            .map_err(|e| self.fail(format!("cannot store {source}: {e}")))?;
        let entry = PackEntry {
            name: plugin.name.clone(),
            world: plugin.world.to_string(),
            version: plugin.version.clone(),
            sha256: plugin.sha256.clone(),
            source: source.to_string(),
        };
        // The same bytes may be installed under several names; each name stays.
        let mut entries = self.list()?;
        entries.retain(|e| (e.sha256.as_str(), e.name.as_str()) != (entry.sha256.as_str(), entry.name.as_str()));
        entries.push(entry.clone());
        self.write_index(&entries)?;
        Ok(entry)
    }

    /// Finds one pack by `name`, `name@sha256:<hex prefix>` or a sha256 prefix.
    pub fn find(&self, query: &str) -> Result<PackEntry, PackError> {
        let (name, hash) = match query.split_once("@sha256:") {
            Some((n, h)) => (Some(n), Some(h)),
            None if query.len() >= 8 && query.chars().all(|c| c.is_ascii_hexdigit()) => (None, Some(query)),
            None => (Some(query), None),
        };
        let matches: Vec<PackEntry> = self
            .list()?
            .into_iter()
            .filter(|e| {
                name.is_none_or(|n| e.name == n) && hash.is_none_or(|h| e.sha256.starts_with(&h.to_ascii_lowercase()))
            })
            .collect();
        match matches.as_slice() {
            [] => Err(PackError::NotFound(query.into())),
            [one] => Ok(one.clone()),
            many => Err(PackError::Ambiguous {
                query: query.into(),
                matches: many
                    .iter()
                    .map(|e| format!("{}@sha256:{}", e.name, &e.sha256[..12]))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Re-hashes a pack's file; the path when it is intact.
    pub fn verify(&self, entry: &PackEntry) -> Result<PathBuf, PackError> {
        let path = self.file(&entry.sha256);
        let bytes = std::fs::read(&path).map_err(|e| self.fail(format!("cannot read {}: {e}", path.display())))?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != entry.sha256 {
            return Err(PackError::Corrupt { name: entry.name.clone(), path, expected: entry.sha256.clone(), actual });
        }
        Ok(path)
    }

    /// Finds, verifies and loads a pack.
    pub fn load(&self, host: &PluginHost, query: &str) -> Result<super::Plugin, PackError> {
        let entry = self.find(query)?;
        let path = self.verify(&entry)?;
        let bytes = std::fs::read(&path).map_err(|e| self.fail(format!("cannot read {}: {e}", path.display())))?;
        Ok(host.load_bytes(&entry.name, &bytes)?)
    }

    /// The plugin an `oci://` reference names, installed. A reference pinned to a manifest
    /// digest that was installed before is loaded without asking the registry; a tag is
    /// resolved to its digest first.
    pub fn fetch_oci(&self, host: &PluginHost, reference: &OciRef) -> Result<OciPack, PackError> {
        let manifest = match reference.pinned() {
            Some(digest) => digest.to_string(),
            None => oci::resolve(reference)?,
        };
        // The manifest digest names the bytes, whichever tag or repository they came from.
        let pinned = format!("@sha256:{manifest}");
        let source = format!("{}{pinned}", reference.without_digest());
        let installed =
            self.list()?.into_iter().find(|e| e.source.starts_with(oci::SCHEME) && e.source.ends_with(&pinned));
        if let Some(entry) = installed {
            let path = self.verify(&entry)?;
            let bytes = std::fs::read(&path).map_err(|e| self.fail(format!("cannot read {}: {e}", path.display())))?;
            let plugin = host.load_bytes(&entry.name, &bytes)?;
            return Ok(OciPack { entry, plugin, manifest });
        }
        let pulled = oci::pull(&reference.at_digest(&manifest))?;
        let entry = self.install_bytes(host, reference.name(), &pulled.bytes, &source)?;
        let plugin = host.load_bytes(&entry.name, &pulled.bytes)?;
        Ok(OciPack { entry, plugin, manifest })
    }

    pub fn remove(&self, query: &str) -> Result<PackEntry, PackError> {
        let entry = self.find(query)?;
        let mut entries = self.list()?;
        entries.retain(|e| e != &entry);
        self.write_index(&entries)?;
        // The bytes stay while another name holds them.
        if entries.iter().any(|e| e.sha256 == entry.sha256) {
            return Ok(entry);
        }
        match std::fs::remove_file(self.file(&entry.sha256)) {
            Ok(()) => Ok(entry),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(entry),
            Err(e) => Err(self.fail(format!("cannot remove {}: {e}", entry.sha256))),
        }
    }
}
