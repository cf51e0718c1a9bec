//! Plugins shared through OCI registries, laid out as WebAssembly components are (the CNCF
//! wasm OCI artifact: one `application/wasm` layer and an `application/vnd.wasm.config.v0+json`
//! config). Every pull is verified: the layer against the manifest's digest, and the manifest
//! against a pinned digest when the reference or a lock file names one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `oci://` and what follows: `HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    /// `sha256:` and 64 hex digits.
    digest: Option<String>,
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

    /// The grammar of the distribution spec: path components of lowercase letters and
    /// digits joined by `.`, `_`, `__` or dashes; tags of up to 128 word characters, `.`
    /// and `-`; digests in sha256 only, as everything msh pushes is.
    fn from_str(text: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::Reference { text: text.into(), reason: reason.into() };
        let rest = text.strip_prefix(SCHEME).ok_or_else(|| bad("it does not start with oci://"))?;
        // Without a host, a client would pick Docker Hub: a pack's home must be explicit.
        let (registry, path) = rest.split_once('/').unwrap_or((rest, ""));
        if path.is_empty() || !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad("it names no registry host"));
        }
        if !registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)) {
            return Err(bad("the registry host holds characters a host name cannot"));
        }
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                let hex = digest.strip_prefix("sha256:").ok_or_else(|| bad("the digest is not sha256:..."))?;
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
                    return Err(bad("a sha256 digest is 64 lowercase hex digits"));
                }
                (path, Some(digest.to_string()))
            }
            None => (path, None),
        };
        // A colon after the last slash starts the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if let Some(tag) = tag {
            let first_ok = tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            if tag.len() > 128 || !first_ok || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                return Err(bad("a tag is up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"));
            }
        }
        let component_ok = |component: &str| {
            let bytes = component.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || b"._-".contains(b))
                && !component.contains("..")
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad("a repository is `/`-separated lowercase letters and digits, joined by `.`, `_` or `-`"));
        }
        // A bare repository means its `latest` tag, as for every other OCI client.
        let tag = tag.map(str::to_string).or_else(|| digest.is_none().then(|| "latest".to_string()));
        Ok(Self { registry: registry.to_string(), repository: repository.to_string(), tag, digest })
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.without_digest())?;
        match &self.digest {
            Some(digest) => write!(f, "@{digest}"),
            None => Ok(()),
        }
    }
}

impl OciRef {
    /// The manifest digest the reference pins (`@sha256:...`), without its `sha256:` prefix.
    pub fn pinned(&self) -> Option<&str> {
        self.digest.as_deref().and_then(|d| d.strip_prefix("sha256:"))
    }

    /// The same repository pinned to `manifest` (a hex sha256).
    pub fn at_digest(&self, manifest: &str) -> OciRef {
        OciRef { tag: None, digest: Some(format!("sha256:{manifest}")), ..self.clone() }
    }

    /// `oci://HOST/REPOSITORY:TAG` without any digest: what a lock file keys on.
    pub fn without_digest(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{SCHEME}{}/{}:{tag}", self.registry, self.repository),
            None => format!("{SCHEME}{}/{}", self.registry, self.repository),
        }
    }

    /// The repository's last segment: the plugin's name in messages.
    pub fn name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or_default()
    }

    /// What the registry's API calls the manifest: its digest when pinned, else the tag.
    fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).expect("a reference has a tag or a digest")
    }

    fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => host,
            _ => &self.registry,
        };
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
        msh_io::atomic_file::write_atomic(&path, text.as_bytes())?;
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

/// Media types of the CNCF wasm OCI artifact.
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Manifests are small; the distribution spec asks registries to accept 4 MiB.
const MANIFEST_LIMIT: u64 = 4 << 20;
/// A pack larger than this is refused before it fills the memory.
const BLOB_LIMIT: u64 = 1 << 30;

/// An OCI image manifest, the fields msh writes and reads.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    /// `sha256:` and the hex digest.
    digest: String,
    size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", sha256_hex(bytes)),
            size: bytes.len() as u64,
        }
    }
}

/// The wasm artifact's config: what the component imports and exports, for registries
/// and tools that index them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<String>,
    component: ComponentWorld,
}

#[derive(Debug, Serialize)]
struct ComponentWorld {
    exports: Vec<String>,
    imports: Vec<String>,
}

impl ComponentWorld {
    /// The names a component's outermost level imports and exports (nested modules and
    /// components are skipped).
    fn of(bytes: &[u8]) -> Result<Self, String> {
        if !wasmparser::Parser::is_component(bytes) {
            return Err("not a WebAssembly component".into());
        }
        let mut world = ComponentWorld { exports: Vec::new(), imports: Vec::new() };
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let invalid = |e: wasmparser::BinaryReaderError| format!("not a WebAssembly component: {e}");
            match payload.map_err(invalid)? {
                wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                wasmparser::Payload::ComponentImportSection(imports) if depth == 0 => {
                    for import in imports {
                        world.imports.push(import.map_err(invalid)?.name.name.to_string());
                    }
                }
                wasmparser::Payload::ComponentExportSection(exports) if depth == 0 => {
                    for export in exports {
                        world.exports.push(export.map_err(invalid)?.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(world)
    }
}

/// One repository of one registry, spoken to over the distribution API. Registries speak
/// HTTPS, except on this machine's loopback address (as Docker's do). Credentials come
/// from MSH_OCI_USERNAME and MSH_OCI_PASSWORD: sent as basic auth where the registry asks
/// for it, or traded for a bearer token where it names a token service.
struct Registry {
    agent: ureq::Agent,
    base: String,
    repository: String,
    credentials: Option<(String, String)>,
    /// The `Authorization` header that the last challenge earned.
    authorization: Option<String>,
    /// `pull` or `pull,push`: the access a token is asked for.
    actions: &'static str,
}

/// A response's status, the headers that matter, and its body.
struct Answer {
    status: u16,
    location: Option<String>,
    challenge: Option<String>,
    body: Vec<u8>,
}

impl Registry {
    fn new(reference: &OciRef, actions: &'static str) -> Self {
        let agent = msh_io::http::agent(Duration::from_secs(120));
        let scheme = if reference.is_loopback() { "http" } else { "https" };
        let credentials = match (std::env::var("MSH_OCI_USERNAME"), std::env::var("MSH_OCI_PASSWORD")) {
            (Ok(user), Ok(password)) => Some((user, password)),
            _ => None,
        };
        Registry {
            agent,
            base: format!("{scheme}://{}", reference.registry),
            repository: reference.repository.clone(),
            credentials,
            authorization: None,
            actions,
        }
    }

    /// `path` under the repository's API (`/v2/REPOSITORY/...`), or a `Location` the
    /// registry gave, which may be absolute or relative to the host.
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/v2/{}/{path}", self.base, self.repository)
        }
    }

    /// Sends a request, answering one authentication challenge on the way.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
    ) -> Result<Answer, String> {
        let url = self.url(path);
        let mut answer = self.send_once(method, &url, headers, body, limit, self.authorization.as_deref())?;
        if answer.status == 401 {
            let challenge = answer.challenge.take().ok_or("the registry refused access (401) and asked for nothing")?;
            self.authorization = Some(self.authorize(&challenge)?);
            answer = self.send_once(method, &url, headers, body, limit, self.authorization.as_deref())?;
        }
        Ok(answer)
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        limit: u64,
        authorization: Option<&str>,
    ) -> Result<Answer, String> {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        let sent = if body.is_empty() && matches!(method, "GET" | "HEAD") {
            // Bodiless methods get no body at all, not an empty one.
            request.body(()).map(|r| self.agent.run(r))
        } else {
            request.body(body).map(|r| self.agent.run(r))
        };
        let mut response =
            sent.map_err(|e| format!("{method} {url}: {e}"))?.map_err(|e| format!("{method} {url}: {e}"))?;
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, challenge) = (header("location"), header("www-authenticate"));
        let status = response.status().as_u16();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?
        };
        Ok(Answer { status, location, challenge, body })
    }

    /// The `Authorization` header a `WWW-Authenticate` challenge asks for.
    fn authorize(&self, challenge: &str) -> Result<String, String> {
        let (scheme, params) = parse_challenge(challenge);
        let basic = || {
            let (user, password) = self
                .credentials
                .as_ref()
                .ok_or("the registry asks for credentials: set MSH_OCI_USERNAME and MSH_OCI_PASSWORD")?;
            Ok::<_, String>(format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
        };
        if scheme.eq_ignore_ascii_case("basic") {
            return basic();
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!("the registry asks for `{scheme}` authentication, which msh does not speak"));
        }
        let realm = params.get("realm").ok_or("the registry's bearer challenge names no token service (realm)")?;
        let mut query = vec![format!("scope={}", escape(&format!("repository:{}:{}", self.repository, self.actions)))];
        if let Some(service) = params.get("service") {
            query.push(format!("service={}", escape(service)));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{}", query.join("&"));
        let credentials = self.credentials.is_some().then(basic).transpose()?;
        let answer = self.send_once("GET", &url, &[], &[], MANIFEST_LIMIT, credentials.as_deref())?;
        if answer.status != 200 {
            return Err(format!("token service {realm} answered {}{}", answer.status, registry_error(&answer.body)));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token =
            serde_json::from_slice(&answer.body).map_err(|e| format!("token service {realm} sent no token: {e}"))?;
        let token = token.token.or(token.access_token).ok_or_else(|| format!("token service {realm} sent no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Uploads a blob unless the repository has it already.
    fn put_blob(&mut self, bytes: &[u8], descriptor: &Descriptor) -> Result<(), String> {
        let blob = format!("blobs/{}", descriptor.digest);
        if self.send("HEAD", &blob, &[], &[], 0)?.status == 200 {
            return Ok(());
        }
        let started = self.send("POST", "blobs/uploads/", &[], &[], MANIFEST_LIMIT)?;
        let location = match (started.status, started.location) {
            (202, Some(location)) => location,
            (status, _) => {
                return Err(format!(
                    "starting an upload: the registry answered {status}{}",
                    registry_error(&started.body)
                ));
            }
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{separator}digest={}", escape(&descriptor.digest));
        let headers = [("Content-Type", "application/octet-stream")];
        let done = self.send("PUT", &target, &headers, bytes, MANIFEST_LIMIT)?;
        if done.status != 201 {
            return Err(format!(
                "uploading {}: the registry answered {}{}",
                descriptor.digest,
                done.status,
                registry_error(&done.body)
            ));
        }
        Ok(())
    }

    /// The manifest `reference` names: its bytes, parsed, and its digest (hex sha256).
    fn manifest(&mut self, reference: &OciRef) -> Result<(Manifest, String), String> {
        let path = format!("manifests/{}", reference.manifest_reference());
        let answer = self.send("GET", &path, &[("Accept", MANIFEST_MEDIA_TYPE)], &[], MANIFEST_LIMIT)?;
        if answer.status != 200 {
            return Err(format!(
                "the registry answered {} for its manifest{}",
                answer.status,
                registry_error(&answer.body)
            ));
        }
        let manifest = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("its manifest is not an OCI image manifest: {e}"))?;
        Ok((manifest, sha256_hex(&answer.body)))
    }
}

/// `Bearer realm="https://auth.example/token",service="registry"` as its scheme and
/// parameters.
fn parse_challenge(challenge: &str) -> (String, BTreeMap<String, String>) {
    let challenge = challenge.trim();
    let (scheme, mut rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = BTreeMap::new();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').unwrap_or(quoted.len());
                (quoted[..end].to_string(), quoted.get(end + 1..).unwrap_or_default())
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        params.insert(key, value);
        rest = remaining;
    }
    (scheme.to_string(), params)
}

/// `: CODE: message` from a registry's JSON error body, when it sent one.
fn registry_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(Errors { errors }) if !errors.is_empty() => {
            let shown: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.code, e.message)).collect();
            format!(" ({})", shown.join("; "))
        }
        _ => String::new(),
    }
}

/// Percent-encodes a query value.
fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding, for basic auth.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Now as RFC 3339 in UTC, for the config's `created`.
fn now_rfc3339() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

fn rfc3339(seconds: u64) -> String {
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn sha256_hex(bytes: &[u8]) -> String {
    super::hex(&Sha256::digest(bytes))
}

/// Pushes a component; returns the manifest's digest (hex sha256).
pub fn push(bytes: &[u8], reference: &OciRef) -> Result<String, OciError> {
    let fail = |reason: String| OciError::Push { reference: reference.to_string(), reason };
    let world = ComponentWorld::of(bytes).map_err(fail)?;
    let layer = Descriptor::of(LAYER_MEDIA_TYPE, bytes);
    let config = WasmConfig {
        created: now_rfc3339(),
        architecture: "wasm",
        os: "wasip2",
        layer_digests: vec![layer.digest.clone()],
        component: world,
    };
    let config = serde_json::to_vec(&config).expect("a config serialises");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: Descriptor::of(CONFIG_MEDIA_TYPE, &config),
        layers: vec![layer],
    };
    let mut registry = Registry::new(reference, "pull,push");
    registry.put_blob(&config, &manifest.config).map_err(fail)?;
    registry.put_blob(bytes, &manifest.layers[0]).map_err(fail)?;
    let manifest = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let path = format!("manifests/{}", reference.manifest_reference());
    let answer = registry
        .send("PUT", &path, &[("Content-Type", MANIFEST_MEDIA_TYPE)], &manifest, MANIFEST_LIMIT)
        .map_err(fail)?;
    if answer.status != 201 {
        return Err(fail(format!(
            "the registry answered {} for the manifest{}",
            answer.status,
            registry_error(&answer.body)
        )));
    }
    Ok(sha256_hex(&manifest))
}

/// The digest (hex sha256) of the manifest `reference` names now.
pub fn resolve(reference: &OciRef) -> Result<String, OciError> {
    let (_, digest) = Registry::new(reference, "pull")
        .manifest(reference)
        .map_err(|reason| OciError::Pull { reference: reference.to_string(), reason })?;
    Ok(digest)
}

/// Pulls a component and checks its layer against the manifest, and the manifest against
/// the digest the reference pins.
pub fn pull(reference: &OciRef) -> Result<Pulled, OciError> {
    let shown = reference.to_string();
    let fail = |reason: String| OciError::Pull { reference: shown.clone(), reason };
    let mut registry = Registry::new(reference, "pull");
    let (manifest, manifest_digest) = registry.manifest(reference).map_err(fail)?;
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
    let wasm: Vec<&Descriptor> = manifest.layers.iter().filter(|l| l.media_type == LAYER_MEDIA_TYPE).collect();
    let [described] = wasm.as_slice() else {
        return Err(fail(format!("{} {LAYER_MEDIA_TYPE} layers: a plugin is one", wasm.len())));
    };
    let expected = described
        .digest
        .strip_prefix("sha256:")
        .ok_or_else(|| fail(format!("its layer's digest `{}` is not sha256", described.digest)))?
        .to_string();
    let answer = registry
        .send("GET", &format!("blobs/{}", described.digest), &[], &[], BLOB_LIMIT.min(described.size.max(1)))
        .map_err(fail)?;
    if answer.status != 200 {
        return Err(fail(format!(
            "the registry answered {} for the wasm layer{}",
            answer.status,
            registry_error(&answer.body)
        )));
    }
    let actual = sha256_hex(&answer.body);
    if actual != expected {
        return Err(OciError::Digest { reference: shown, what: "the wasm layer", actual, expected });
    }
    Ok(Pulled { bytes: answer.body, manifest: manifest_digest, layer: actual })
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
        let latest: OciRef = "oci://localhost:5000/blocks".parse().unwrap();
        assert_eq!(latest.to_string(), "oci://localhost:5000/blocks:latest");
        let both: OciRef = format!("oci://registry.example/a/b-c:v1.2@sha256:{}", "0f".repeat(32)).parse().unwrap();
        assert_eq!((both.name(), both.manifest_reference()), ("b-c", format!("sha256:{}", "0f".repeat(32)).as_str()));
        assert!(!both.is_loopback());
        for bad in [
            "team/blocks:v1",
            "oci://blocks:v1",
            "oci://team/blocks",
            "oci://localhost:5000/Blocks:v1",
            "oci://localhost:5000/blocks:-v1",
            "oci://localhost:5000/blocks@sha256:abc",
            "oci://localhost:5000/blocks@md5:00",
            "oci://localhost:5000/a//b",
        ] {
            let err = bad.parse::<OciRef>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}` is not an OCI reference")), "{err}");
        }
    }

    #[test]
    fn challenges_parse_as_scheme_and_parameters() {
        let (scheme, params) =
            parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="a,b""#);
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "a,b");
        let (scheme, params) = parse_challenge("Basic realm=registry");
        assert_eq!((scheme.as_str(), params["realm"].as_str()), ("Basic", "registry"));
    }

    #[test]
    fn basic_credentials_and_query_values_are_encoded() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(escape("repository:team/blocks:pull,push"), "repository%3Ateam%2Fblocks%3Apull%2Cpush");
    }

    #[test]
    fn created_is_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        let created = now_rfc3339();
        assert_eq!(created.len(), 20, "{created}");
        assert!(created.starts_with("20") && created.ends_with('Z') && &created[10..11] == "T", "{created}");
    }

    #[test]
    fn a_module_is_not_a_component() {
        let module = b"\0asm\x01\0\0\0";
        assert_eq!(ComponentWorld::of(module).unwrap_err(), "not a WebAssembly component");
    }
}
