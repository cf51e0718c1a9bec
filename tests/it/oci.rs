//! Plugins shared through a real OCI registry (Debian's `docker-registry`, started on
//! loopback by each test): push, install, workflows naming `oci://` plugins, lock files,
//! and a tampered blob.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use sha2::Digest;

/// A registry on a free loopback port, storing into a temporary directory.
struct Registry {
    child: Child,
    host: String,
    storage: TempDir,
}

impl Registry {
    fn start() -> Registry {
        Self::start_with("")
    }

    /// A registry whose configuration adds `auth` (YAML) under its top level.
    fn start_with(auth: &str) -> Registry {
        let storage = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let host = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n\
                 http: {{addr: '{host}'}}\n{auth}",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Debian's docker-registry is installed (bash .ci/run installs it)");
        let started = Instant::now();
        // Any answer will do, a refusal included: a registry with auth answers 401.
        while matches!(ureq::get(&format!("http://{host}/v2/")).call(), Err(e) if !matches!(e, ureq::Error::StatusCode(_)))
        {
            assert!(started.elapsed() < Duration::from_secs(30), "the registry at {host} did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, host, storage }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The stored blob of `digest` (hex sha256).
    fn blob(&self, digest: &str) -> PathBuf {
        self.storage.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{digest}/data", &digest[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `msh` with its own pack store.
fn msh(home: &Path, args: &[&str]) -> Output {
    common::msh().args(args).env("MSH_HOME", home).output().unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let out = msh(home, args);
    assert!(out.status.success(), "msh {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failure(home: &Path, args: &[&str]) -> String {
    let out = msh(home, args);
    assert!(!out.status.success(), "msh {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256_of(path: &str) -> String {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn plugins_travel_through_a_registry_and_a_lock_pins_them() {
    let registry = Registry::start();
    let (home, work) = (TempDir::new(), TempDir::new());
    let home = home.path();
    let blocks = format!("oci://{}/team/blocks:v1", registry.host);
    let searcher = format!("oci://{}/team/searcher:v1", registry.host);
    let core_blocks = env!("MSH_PLUGIN_CORE_BLOCKS");

    let pushed = ok(home, &["pack", "push", core_blocks, &blocks]);
    assert!(pushed.contains(&format!("pushed core_blocks@sha256:{}", sha256_of(core_blocks))), "{pushed}");
    ok(home, &["pack", "push", env!("MSH_PLUGIN_RANDOM_SEARCH"), &searcher]);

    // The layout of a wasm component: one application/wasm layer, a wasm config.
    let manifest: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("http://{}/v2/team/blocks/manifests/v1", registry.host))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json", "{manifest:#}");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm", "{manifest:#}");

    let installed = ok(home, &["pack", "install", &blocks]);
    assert!(installed.contains(&format!("installed blocks@sha256:{}", sha256_of(core_blocks))), "{installed}");

    // A workflow naming both by tag runs, and the run records the bytes it used.
    let iris = common::root().join("data/iris/iris.csv");
    let workflow = work.path().join("w.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: oci\ndata: {{source: 'csv:{}'}}\nspace: {{packs: ['{blocks}'], blocks: [dense], max_depth: 1}}\n\
             searcher: {{plugin: '{searcher}'}}\ntraining: {{epochs: 1}}\ntrainers: {{count: 1, backend: cpu}}\n\
             budget: {{trials: 2}}\nstages: {{search: {{kind: search}}}}\n",
            iris.display()
        ),
    )
    .unwrap();
    let workflow_text = workflow.to_str().unwrap();
    let run_dir = work.path().join("run");
    ok(home, &["run", workflow_text, "--run-dir", run_dir.to_str().unwrap()]);
    let meta = msh_store::Store::open(&run_dir).unwrap().run_meta().unwrap().unwrap();
    assert_eq!(meta.plugins.get("blocks"), Some(&sha256_of(core_blocks)), "{:?}", meta.plugins);

    // The lock pins both tags to the manifests pushed above.
    let locked = ok(home, &["pack", "lock", workflow_text]);
    let lock = std::fs::read_to_string(work.path().join("w.yaml.lock")).unwrap();
    assert!(lock.contains(&blocks) && lock.contains(&searcher), "{locked}\n{lock}");

    // The tag moves to another pack; the locked workflow still gets the pinned bytes, even
    // with the registry gone.
    ok(home, &["pack", "push", env!("MSH_HOSTILE_PLUGIN"), &blocks]);
    let moved = ok(home, &["pack", "install", &blocks]);
    assert!(!moved.contains(&sha256_of(core_blocks)), "the tag moved: {moved}");
    let mut registry = registry;
    registry.stop();
    let validated = ok(home, &["validate", workflow_text]);
    assert!(validated.contains(": ok:"), "{validated}");

    // Without the lock, a tag needs the registry: the error names it.
    std::fs::remove_file(work.path().join("w.yaml.lock")).unwrap();
    let err = failure(home, &["validate", workflow_text]);
    assert!(err.contains("w.yaml:") && err.contains(&format!("cannot pull {blocks}")), "{err}");
}

#[test]
fn a_tampered_blob_and_a_wrong_digest_are_refused() {
    let registry = Registry::start();
    let home = TempDir::new();
    let home = home.path();
    let blocks = format!("oci://{}/team/blocks:v1", registry.host);
    let core_blocks = env!("MSH_PLUGIN_CORE_BLOCKS");
    ok(home, &["pack", "push", core_blocks, &blocks]);

    let wrong = format!("oci://{}/team/blocks@sha256:{}", registry.host, "0".repeat(64));
    let err = failure(home, &["pack", "install", &wrong]);
    assert!(err.contains(&format!("cannot pull {wrong}")), "{err}");

    // Flip a byte of the stored wasm layer: the registry serves it, msh refuses it.
    let blob = registry.blob(&sha256_of(core_blocks));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let err = failure(home, &["pack", "install", &blocks]);
    assert!(err.contains(&blocks[..blocks.len() - 3]) && err.contains("sha256"), "{err}");
    let listed = ok(home, &["pack", "list"]);
    assert!(listed.contains("no packs installed"), "nothing was installed: {listed}");

    let err = failure(home, &["pack", "push", core_blocks, "oci://team/blocks:v1"]);
    assert!(err.contains("`oci://team/blocks:v1` is not an OCI reference (it names no registry host)"), "{err}");
}

/// A token service on loopback, as registries that speak bearer auth name in their
/// challenge: it hands out one token and keeps the query of every request.
fn token_service() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let (sender, queries) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            // The rest of the request head.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let query = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
            let _ = sender.send(query);
            let body = r#"{"token": "a-token"}"#;
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (realm, queries)
}

#[test]
fn a_registry_that_asks_for_a_bearer_token_gets_one_from_its_token_service() {
    // The registry's `silly` auth asks every request without an Authorization header for a
    // bearer token from `realm`; the token service here answers.
    let (realm, queries) = token_service();
    let registry = Registry::start_with(&format!("auth: {{silly: {{realm: '{realm}', service: msh-test}}}}\n"));
    let home = TempDir::new();
    let home = home.path();
    let blocks = format!("oci://{}/team/blocks:v1", registry.host);
    let core_blocks = env!("MSH_PLUGIN_CORE_BLOCKS");
    ok(home, &["pack", "push", core_blocks, &blocks]);
    let installed = ok(home, &["pack", "install", &blocks]);
    assert!(installed.contains(&format!("installed blocks@sha256:{}", sha256_of(core_blocks))), "{installed}");
    let asked: Vec<String> = queries.try_iter().collect();
    let push = "/token?scope=repository%3Ateam%2Fblocks%3Apull%2Cpush&service=msh-test";
    let pull = "/token?scope=repository%3Ateam%2Fblocks%3Apull&service=msh-test";
    assert!(asked.iter().any(|q| q == push) && asked.iter().any(|q| q == pull), "{asked:?}");
}
