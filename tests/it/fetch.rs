//! `msh data fetch` and `fetch:` in workflows against a loopback HTTP server that serves a
//! small archive in CIFAR-10's binary format: success, resuming an interrupted download,
//! and a corrupt one.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::Digest;

/// A CIFAR-10-shaped `.tar.gz` (20 records per batch) and its sha256 and md5.
fn cifar_archive() -> (Vec<u8>, String, String) {
    let staging = common::TempDir::new();
    let root = staging.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&root).unwrap();
    common::write_cifar(&root, 20);
    std::fs::write(root.join("batches.meta.txt"), "airplane\nautomobile\n").unwrap();
    // World-writable in the archive, as some published archives are.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(root.join("test_batch.bin"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.append_dir_all("cifar-10-batches-bin", &root).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let hex = |digest: &[u8]| digest.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sha256 = hex(&sha2::Sha256::digest(&bytes));
    let md5 = hex(&md5::Md5::digest(&bytes));
    (bytes, sha256, md5)
}

/// Serves `body` over HTTP/1.1 with range requests. The first `cut` responses stop half
/// way through; `requests` records each request's Range header.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<Option<String>>>>,
}

impl Server {
    fn start(body: Vec<u8>, cut: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let range = read_request(&stream);
                let index = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(range.clone());
                    seen.len() - 1
                };
                respond(stream, &body, range.as_deref(), index < cut);
            }
        });
        Server { url, requests }
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads a request's head; returns its Range header.
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return range;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
}

fn respond(mut stream: TcpStream, body: &[u8], range: Option<&str>, cut: bool) {
    let start: usize = range.and_then(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok()).unwrap_or(0);
    let head = if start >= body.len() && start > 0 {
        let _ = write!(stream, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    } else if start > 0 {
        format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n", body.len() - 1, body.len())
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    let rest = &body[start..];
    let sent = if cut { &rest[..rest.len() / 2] } else { rest };
    let _ = write!(stream, "{head}Content-Length: {}\r\nConnection: close\r\n\r\n", rest.len());
    let _ = stream.write_all(sent);
    let _ = stream.flush();
}

fn fetch(dir: &Path, url: &str, checksum: [&str; 2]) -> std::process::Output {
    common::run(&[
        "data",
        "fetch",
        "cifar10",
        "--dir",
        &dir.display().to_string(),
        "--url",
        url,
        checksum[0],
        checksum[1],
    ])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn fetch_verifies_extracts_and_resumes_an_interrupted_download() {
    let (archive, sha256, _) = cifar_archive();
    let server = Server::start(archive, 2);
    let dir = common::TempDir::new();
    let out = fetch(dir.path(), &server.url, ["--sha256", &sha256]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let data = dir.path().join("cifar-10-batches-bin");
    let expected = common::TempDir::new();
    common::write_cifar(expected.path(), 20);
    for name in ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"] {
        assert_eq!(std::fs::read(data.join(name)).unwrap(), std::fs::read(expected.path().join(name)).unwrap());
    }
    // Nobody but the owner may write what was fetched, whatever modes the archive held.
    use std::os::unix::fs::PermissionsExt;
    for path in [data.clone(), data.join("test_batch.bin")] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o022, 0, "{} has mode {mode:o}", path.display());
    }
    // The tries after the cut ones asked for the rest only.
    let ranges = server.ranges();
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[0], None);
    for range in &ranges[1..] {
        let start: u64 = range.as_deref().unwrap().trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
        assert!(start > 0, "{ranges:?}");
    }
    // Nothing is left beside the data set, and a second fetch downloads nothing.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["cifar-10-batches-bin"]);
    let again = fetch(dir.path(), &server.url, ["--sha256", &sha256]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already in"), "{}", stderr(&again));
    assert_eq!(server.ranges().len(), 3);
}

#[test]
fn a_download_cut_every_time_is_kept_and_the_next_fetch_resumes_it() {
    let (archive, _, md5) = cifar_archive();
    let server = Server::start(archive, 4);
    let dir = common::TempDir::new();
    let out = fetch(dir.path(), &server.url, ["--md5", &md5]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot download {}", server.url)) && err.contains("the next try resumes"), "{err}");
    assert!(!dir.path().join("cifar-10-batches-bin").exists(), "no data set before the download is whole");

    let out = fetch(dir.path(), &server.url, ["--md5", &md5]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ranges = server.ranges();
    assert!(ranges[4].as_deref().is_some_and(|r| r != "bytes=0-"), "{ranges:?}");
    assert!(dir.path().join("cifar-10-batches-bin/test_batch.bin").is_file());
}

#[test]
fn a_corrupt_download_names_the_file_and_is_deleted() {
    let (mut archive, sha256, _) = cifar_archive();
    let middle = archive.len() / 2;
    archive[middle] ^= 0x55;
    let server = Server::start(archive, 0);
    let dir = common::TempDir::new();
    let out = fetch(dir.path(), &server.url, ["--sha256", &sha256]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let part = dir.path().join(".msh-fetch-cifar10/cifar-10-binary.tar.gz.part");
    assert!(err.contains(&format!("{}: sha256 is ", part.display())), "{err}");
    assert!(err.contains(&format!("expected {sha256}")), "{err}");
    assert!(!part.exists(), "the corrupt download is deleted");
    assert!(!dir.path().join("cifar-10-batches-bin").exists());
}

#[test]
fn a_workflow_fetches_its_data_on_the_first_run_and_validate_downloads_nothing() {
    let (archive, sha256, _) = cifar_archive();
    let server = Server::start(archive, 0);
    let dir = common::TempDir::new();
    let workflow = dir.path().join("cifar-tiny.yaml");
    std::fs::write(
        &workflow,
        format!(
            "name: cifar-tiny\nseed: 1\n\
             data:\n  source: cifar10:data/cifar-10-batches-bin\n  fetch: {{url: \"{}\", sha256: {sha256}}}\n\
             space:\n  blocks: [fixed_conv]\n  min_depth: 1\n  max_depth: 1\n\
             searcher:\n  plugin: random-search\n\
             training: {{epochs: 1, batch_size: 50}}\n\
             trainers: {{count: 1, backend: cpu}}\nbudget: {{trials: 1}}\n\
             stages:\n  search: {{kind: search}}\n",
            server.url
        ),
    )
    .unwrap();
    let workflow = workflow.display().to_string();
    let out = common::run(&["validate", &workflow]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.ranges().is_empty(), "validate downloads nothing");

    let run_dir = dir.path().join("run").display().to_string();
    let out = common::run(&["run", &workflow, "--run-dir", &run_dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("downloading cifar10"), "{}", stderr(&out));
    assert!(dir.path().join("data/cifar-10-batches-bin/data_batch_1.bin").is_file());
    let trials = common::json(&["trials", &run_dir, "--json"]);
    assert_eq!(trials.as_array().map(Vec::len), Some(1), "{trials:#}");
    assert_eq!(server.ranges().len(), 1);
}

#[test]
fn fetch_is_refused_for_sources_msh_cannot_download() {
    let dir = common::TempDir::new();
    let workflow = dir.path().join("csv.yaml");
    let csv = common::root().join("data/iris/iris.csv");
    std::fs::write(
        &workflow,
        format!(
            "name: csv\ndata:\n  source: csv:{}\n  fetch: true\nspace:\n  blocks: [dense]\n\
             searcher:\n  plugin: random-search\nbudget: {{trials: 1}}\nstages:\n  search: {{kind: search}}\n",
            csv.display()
        ),
    )
    .unwrap();
    let err = common::failure(&["validate", &workflow.display().to_string()]);
    assert!(err.contains("csv.yaml") && err.contains("`fetch` downloads cifar10 sources only"), "{err}");

    std::fs::write(
        &workflow,
        "name: m\ndata:\n  source: cifar10:nowhere\n  fetch: {url: \"https://example.org/c.tar.gz\"}\n\
         space:\n  blocks: [dense]\nsearcher:\n  plugin: random-search\nbudget: {trials: 1}\n\
         stages:\n  search: {kind: search}\n",
    )
    .unwrap();
    let err = common::failure(&["validate", &workflow.display().to_string()]);
    assert!(err.contains("needs a checksum: `md5` or `sha256`"), "{err}");
}
