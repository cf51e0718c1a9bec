//! Plugins shared through OCI registries, laid out as WebAssembly components are (the CNCF
//! wasm OCI artifact: one `application/wasm` layer and an `application/vnd.wasm.config.v0+json`
//! config). Every pull is verified: the layer against the manifest's digest, and the manifest
//! against a pinned digest when the reference or a lock file names one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_wasm::{WasmClient, WasmConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `oci://` and what follows: `HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    reference: Reference,
}

pub const SCHEME: &str = "oci://";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "`{text}` is not an OCI reference ({reason}): expected oci://HOST[:PORT]/REPOSITORY:TAG or \
         oci://HOST[:PORT]/REPOSITORY@sha256:DIGEST"
    )]
    Reference { text: String, reason: String },
    #[error("cannot push to {reference}: {reason}")]
    Push { reference: String, reason: String },
    #[error("cannot pull {reference}: {reason}")]
    Pull { reference: String, reason: String },
    #[error("{reference}: {what} has sha256:{actual}, expected sha256:{expected}")]
    Digest { reference: String, what: &'static str, actual: String, expected: String },
}

impl FromStr for OciRef {
    type Err = OciError;

    fn from_str(text: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::Reference { text: text.into(), reason: reason.into() };
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| bad("it does not start with oci://"))?;
        // Without a host, the client would pick Docker Hub: a pack's home must be explicit.
        let host = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad("it names no registry host"));
        }
        let reference = Reference::try_from(rest).map_err(|e| bad(&e.to_string()))?;
        Ok(Self { reference })
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.reference.whole())
    }
}

impl OciRef {
    /// The manifest digest the reference pins (`@sha256:...`), without its `sha256:` prefix.
    pub fn pinned(&self) -> Option<&str> {
        self.reference.digest().and_then(|d| d.strip_prefix("sha256:"))
    }

    /// The same repository pinned to `manifest` (a hex sha256).
    pub fn at_digest(&self, manifest: &str) -> OciRef {
        let r = &self.reference;
        let reference =
            Reference::with_digest(r.registry().to_string(), r.repository().to_string(), format!("sha256:{manifest}"));
        OciRef { reference }
    }

    /// `oci://HOST/REPOSITORY:TAG` without any digest: what a lock file keys on.
    pub fn without_digest(&self) -> String {
        let r = &self.reference;
        match r.tag() {
            Some(tag) => format!("{SCHEME}{}/{}:{tag}", r.registry(), r.repository()),
            None => format!("{SCHEME}{}/{}", r.registry(), r.repository()),
        }
    }

    /// The repository's last segment: the plugin's name in messages.
    pub fn name(&self) -> &str {
        self.reference.repository().rsplit('/').next().unwrap_or_default()
    }

    fn is_loopback(&self) -> bool {
        let host = self.reference.registry().rsplit_once(':').map_or(self.reference.registry(), |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// `WORKFLOW.lock` beside a workflow: the manifest digest (hex sha256) of every `oci://`
/// plugin it names by tag, so that a team's runs use the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackLock {
    pub packs: BTreeMap<String, String>,
}

impl PackLock {
    pub fn path_for(workflow: &Path) -> PathBuf {
        let mut path = workflow.as_os_str().to_owned();
        path.push(".lock");
        PathBuf::from(path)
    }

    /// The lock beside `workflow`, if there is one.
    pub fn read(workflow: &Path) -> Result<Option<Self>, String> {
        let path = Self::path_for(workflow);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .map(Some)
                .map_err(|e| format!("lock file {} is malformed: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read lock file {}: {e}", path.display())),
        }
    }

    pub fn write(&self, workflow: &Path) -> std::io::Result<PathBuf> {
        let path = Self::path_for(workflow);
        let text = format!(
            "# Written by `msh pack lock`: the OCI plugins of {} pinned by manifest digest.\n{}",
            workflow.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            serde_yaml_ng::to_string(self).expect("a lock serialises")
        );
        crate::atomic_file::write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }

    /// `reference` pinned to the digest the lock holds for it.
    pub fn pin(&self, reference: &OciRef, workflow: &Path) -> Result<OciRef, String> {
        if reference.pinned().is_some() {
            return Ok(reference.clone());
        }
        match self.packs.get(&reference.without_digest()) {
            Some(digest) => Ok(reference.at_digest(digest)),
            None => Err(format!(
                "{reference} is not in {}; run `msh pack lock {}` again",
                Self::path_for(workflow).display(),
                workflow.display()
            )),
        }
    }
}

/// A pulled plugin: its bytes, the manifest's digest and the layer's (both hex sha256).
#[derive(Debug, Clone)]
pub struct Pulled {
    pub bytes: Vec<u8>,
    pub manifest: String,
    pub layer: String,
}

/// Registries speak HTTPS, except on this machine's loopback address (as Docker's do).
/// Credentials come from MSH_OCI_USERNAME and MSH_OCI_PASSWORD; anonymous otherwise.
fn client(reference: &OciRef) -> (WasmClient, RegistryAuth) {
    let protocol = if reference.is_loopback() {
        ClientProtocol::HttpsExcept(vec![reference.reference.registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    let client = Client::new(ClientConfig { protocol, ..Default::default() });
    let auth = match (std::env::var("MSH_OCI_USERNAME"), std::env::var("MSH_OCI_PASSWORD")) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    };
    (WasmClient::new(client), auth)
}

fn block_on<T>(work: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(work)
}

fn sha256_hex(bytes: &[u8]) -> String {
    super::hex(&Sha256::digest(bytes))
}

fn strip(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Pushes a component; returns the manifest's digest (hex sha256).
pub fn push(bytes: &[u8], reference: &OciRef) -> Result<String, OciError> {
    let fail = |reason: String| OciError::Push { reference: reference.to_string(), reason };
    let (config, layer) = WasmConfig::from_raw_component(bytes.to_vec(), None)
        .map_err(|e| fail(format!("not a WebAssembly component: {e:#}")))?;
    let (client, auth) = client(reference);
    block_on(async {
        client.push(&reference.reference, &auth, layer, config, None).await.map_err(|e| fail(format!("{e:#}")))?;
        let digest =
            client.fetch_manifest_digest(&reference.reference, &auth).await.map_err(|e| fail(e.to_string()))?;
        Ok(strip(&digest).to_string())
    })
}

/// The digest (hex sha256) of the manifest `reference` names now.
pub fn resolve(reference: &OciRef) -> Result<String, OciError> {
    let (client, auth) = client(reference);
    let digest = block_on(client.fetch_manifest_digest(&reference.reference, &auth))
        .map_err(|e| OciError::Pull { reference: reference.to_string(), reason: e.to_string() })?;
    Ok(strip(&digest).to_string())
}

/// Pulls a component and checks its layer against the manifest, and the manifest against
/// the digest the reference pins.
pub fn pull(reference: &OciRef) -> Result<Pulled, OciError> {
    let shown = reference.to_string();
    let fail = |reason: String| OciError::Pull { reference: shown.clone(), reason };
    let (client, auth) = client(reference);
    let image = block_on(client.pull(&reference.reference, &auth)).map_err(|e| fail(format!("{e:#}")))?;
    let manifest = image.manifest.as_ref().ok_or_else(|| fail("the registry sent no manifest".into()))?;
    let ([layer], [described]) = (image.layers.as_slice(), manifest.layers.as_slice()) else {
        return Err(fail(format!("{} layers: a plugin is one application/wasm layer", image.layers.len())));
    };
    let actual = sha256_hex(&layer.data);
    let expected = strip(&described.digest).to_string();
    if actual != expected {
        return Err(OciError::Digest { reference: shown, what: "the wasm layer", actual, expected });
    }
    let manifest_digest = strip(image.digest.as_deref().unwrap_or_default()).to_string();
    if let Some(pinned) = reference.pinned()
        && pinned != manifest_digest
    {
        return Err(OciError::Digest {
            reference: shown,
            what: "the manifest",
            actual: manifest_digest,
            expected: pinned.into(),
        });
    }
    Ok(Pulled { bytes: layer.data.to_vec(), manifest: manifest_digest, layer: actual })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_registry() {
        let r: OciRef = "oci://127.0.0.1:5000/team/blocks:v1".parse().unwrap();
        assert_eq!(r.to_string(), "oci://127.0.0.1:5000/team/blocks:v1");
        assert!(r.is_loopback() && r.pinned().is_none());
        let pinned = r.at_digest(&"ab".repeat(32));
        assert_eq!(pinned.pinned(), Some("ab".repeat(32).as_str()));
        assert_eq!(pinned.without_digest(), "oci://127.0.0.1:5000/team/blocks");
        assert_eq!(r.without_digest(), "oci://127.0.0.1:5000/team/blocks:v1");
        for bad in ["team/blocks:v1", "oci://blocks:v1", "oci://team/blocks"] {
            let err = bad.parse::<OciRef>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}` is not an OCI reference")), "{err}");
        }
    }
}
