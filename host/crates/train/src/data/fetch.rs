//! Data sets that arrive by themselves: download (resuming), verify, extract aside, then
//! move into place in one rename, so a run never reads a half-extracted data set.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A data set msh knows how to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownDataset {
    pub name: &'static str,
    /// Where the data set's authors publish it, and the checksums they publish.
    pub url: &'static str,
    pub md5: &'static str,
    pub sha256: &'static str,
    /// The directory inside the archive that becomes the data directory.
    pub root: &'static str,
    /// Files that must be in that directory.
    pub files: &'static [&'static str],
}

/// CIFAR-10's binary version, as the University of Toronto publishes it (170,052,171 bytes).
pub const CIFAR10: KnownDataset = KnownDataset {
    name: "cifar10",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
    sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    root: "cifar-10-batches-bin",
    files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ],
};

/// Where an archive is downloaded from and what it must hash to: a known data set's own, or
/// a mirror's (which must name at least one checksum).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Archive {
    pub fn published(dataset: &KnownDataset) -> Self {
        Self { url: dataset.url.into(), md5: Some(dataset.md5.into()), sha256: Some(dataset.sha256.into()) }
    }

    /// Checks that the URL is HTTP(S) and that each checksum is hex of the right length.
    pub fn check(&self) -> Result<(), String> {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            return Err(format!("download URL `{}` must start with https:// or http://", self.url));
        }
        if self.md5.is_none() && self.sha256.is_none() {
            return Err(format!("download from `{}` needs a checksum: `md5` or `sha256`", self.url));
        }
        for (name, value, len) in [("md5", &self.md5, 32), ("sha256", &self.sha256, 64)] {
            if let Some(hex) = value
                && !(hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(format!("`{name}` must be {len} hex digits, got `{hex}`"));
            }
        }
        Ok(())
    }

    /// The archive's file name, from the last segment of its URL.
    fn file_name(&self) -> String {
        let path = self.url.split(['?', '#']).next().unwrap_or_default();
        match path.rsplit('/').next() {
            Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_string(),
            _ => "download".into(),
        }
    }
}

/// Why a data set could not be fetched. Every variant names the URL or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "{}: {algorithm} is {actual}, expected {expected}: the download is corrupt or the server sent \
         another file; it was deleted, so the next try downloads afresh",
        path.display()
    )]
    Checksum { path: PathBuf, algorithm: &'static str, actual: String, expected: String },
    #[error("{}: {reason}", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Destination { path: PathBuf, reason: String },
}

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    AlreadyThere,
    Downloaded { bytes: u64 },
}

/// Whether `dir` holds every file of `dataset`.
pub fn is_complete(dataset: &KnownDataset, dir: &Path) -> bool {
    dataset.files.iter().all(|f| dir.join(f).is_file())
}

/// Makes `dest` hold `dataset`, downloading `archive` if it does not yet. Downloads resume
/// where an earlier try stopped; a checksum mismatch deletes the download; the archive is
/// extracted beside `dest` and renamed into place only once complete. `log` hears one line
/// per step; `progress` draws a bar on stderr.
pub fn ensure(
    dataset: &KnownDataset,
    dest: &Path,
    archive: &Archive,
    progress: bool,
    log: &dyn Fn(&str),
) -> Result<Fetched, FetchError> {
    if is_complete(dataset, dest) {
        return Ok(Fetched::AlreadyThere);
    }
    archive.check().map_err(|reason| FetchError::Download { url: archive.url.clone(), reason })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside the destination, so that the final rename stays on one file system.
    let staging = parent.join(format!(".msh-fetch-{}", dataset.name));
    fs::create_dir_all(&staging).map_err(io_at("create", &staging))?;
    let lock_path = staging.join("lock");
    let lock = File::create(&lock_path).map_err(io_at("create", &lock_path))?;
    // Two runs asking at once: the second waits, then finds the data there.
    lock.lock().map_err(io_at("lock", &lock_path))?;
    if is_complete(dataset, dest) {
        return Ok(Fetched::AlreadyThere);
    }
    check_destination(dataset, dest)?;

    let part = staging.join(format!("{}.part", archive.file_name()));
    log(&format!("downloading {} from {} into {}", dataset.name, archive.url, dest.display()));
    let bytes = download(archive, &part, progress, log)?;
    verify(archive, &part)?;
    log(&format!("verified {} ({bytes} bytes); extracting", part.display()));

    let extracted = staging.join("extract");
    if extracted.exists() {
        fs::remove_dir_all(&extracted).map_err(io_at("remove", &extracted))?;
    }
    fs::create_dir_all(&extracted).map_err(io_at("create", &extracted))?;
    extract(dataset, &part, &extracted)?;
    let root = extracted.join(dataset.root);
    if let Some(missing) = dataset.files.iter().find(|f| !root.join(f).is_file()) {
        return Err(FetchError::Archive {
            path: part,
            reason: format!("holds no {}/{missing}: not the {} archive", dataset.root, dataset.name),
        });
    }
    if dest.is_dir() {
        // Only an empty directory gets here (check_destination).
        fs::remove_dir(dest).map_err(io_at("remove", dest))?;
    }
    fs::rename(&root, dest).map_err(io_at("move the extracted data set to", dest))?;
    drop(lock);
    fs::remove_dir_all(&staging).map_err(io_at("remove", &staging))?;
    Ok(Fetched::Downloaded { bytes })
}

fn io_at(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FetchError {
    let path = path.to_path_buf();
    move |source| FetchError::Io { action, path, source }
}

/// Refuses to replace a directory that holds something other than the data set.
fn check_destination(dataset: &KnownDataset, dest: &Path) -> Result<(), FetchError> {
    if !dest.exists() {
        return Ok(());
    }
    let empty = dest.is_dir()
        && fs::read_dir(dest)
            .map_err(|source| FetchError::Io { action: "read", path: dest.to_path_buf(), source })?
            .next()
            .is_none();
    if empty {
        return Ok(());
    }
    let missing = dataset.files.iter().find(|f| !dest.join(f).is_file()).copied().unwrap_or_default();
    Err(FetchError::Destination {
        path: dest.to_path_buf(),
        reason: format!("exists but lacks {missing}; move it away so that {} can be put there", dataset.name),
    })
}

/// Tries to download this many times, resuming from what the earlier tries wrote.
const ATTEMPTS: u32 = 4;

fn download(archive: &Archive, part: &Path, progress: bool, log: &dyn Fn(&str)) -> Result<u64, FetchError> {
    let agent = msh_io::http::agent(Duration::from_secs(60));
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            log(&format!("download interrupted ({last}); resuming, try {} of {ATTEMPTS}", attempt + 1));
            std::thread::sleep(Duration::from_millis(250 << attempt));
        }
        match download_once(&agent, archive, part, progress) {
            Ok(bytes) => return Ok(bytes),
            Err(Attempt::Retry(reason)) => last = reason,
            Err(Attempt::Fatal(err)) => return Err(err),
        }
    }
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    Err(FetchError::Download {
        url: archive.url.clone(),
        reason: format!(
            "{last}, {ATTEMPTS} times; the {have} bytes received are kept in {} and the next try resumes there",
            part.display()
        ),
    })
}

enum Attempt {
    /// The connection failed or ended early: try again from where it stopped.
    Retry(String),
    Fatal(FetchError),
}

fn download_once(agent: &ureq::Agent, archive: &Archive, part: &Path, progress: bool) -> Result<u64, Attempt> {
    let io = |action, source| Attempt::Fatal(FetchError::Io { action, path: part.to_path_buf(), source });
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(&archive.url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut response = request.call().map_err(|e| Attempt::Retry(e.to_string()))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let (mut file, start) = match status {
        206 if content_range_start(header("content-range").as_deref()) == Some(have) => {
            (OpenOptions::new().append(true).open(part).map_err(|e| io("open", e))?, have)
        }
        206 => {
            // A range other than the one asked for: start afresh.
            File::create(part).map_err(|e| io("create", e))?;
            return Err(Attempt::Retry(format!("the server resumed elsewhere than byte {have}")));
        }
        200 => (File::create(part).map_err(|e| io("create", e))?, 0),
        // Everything is here already; the checksum decides.
        416 if have > 0 => return Ok(have),
        500.. => return Err(Attempt::Retry(format!("the server answered {status}"))),
        _ => {
            return Err(Attempt::Fatal(FetchError::Download {
                url: archive.url.clone(),
                reason: format!("the server answered {status}"),
            }));
        }
    };
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(length.map_or(0, |l| l + start));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(archive.file_name());
        bar.set_position(start);
        bar
    });
    let mut reader = response.body_mut().as_reader();
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let outcome = loop {
        match reader.read(&mut buffer) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                file.write_all(&buffer[..n]).map_err(|e| io("write", e))?;
                received += n as u64;
                if let Some(bar) = &bar {
                    bar.inc(n as u64);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e.to_string()),
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    file.sync_all().map_err(|e| io("write", e))?;
    outcome.map_err(Attempt::Retry)?;
    if let Some(length) = length
        && received < length
    {
        return Err(Attempt::Retry(format!("the connection closed after {received} of {length} bytes")));
    }
    Ok(start + received)
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn content_range_start(value: Option<&str>) -> Option<u64> {
    value?.strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// Hashes the download; deletes it when a checksum differs.
fn verify(archive: &Archive, part: &Path) -> Result<(), FetchError> {
    let io = |source| FetchError::Io { action: "read", path: part.to_path_buf(), source };
    let mut file = File::open(part).map_err(io)?;
    let (mut md5, mut sha256) = (Md5::new(), Sha256::new());
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha256.update(&buffer[..n]);
    }
    let actual = [
        ("md5", format!("{:x}", md5.finalize()), &archive.md5),
        ("sha256", format!("{:x}", sha256.finalize()), &archive.sha256),
    ];
    for (algorithm, actual, expected) in actual {
        if let Some(expected) = expected
            && !actual.eq_ignore_ascii_case(expected)
        {
            let _ = fs::remove_file(part);
            return Err(FetchError::Checksum {
                path: part.to_path_buf(),
                algorithm,
                actual,
                expected: expected.to_ascii_lowercase(),
            });
        }
    }
    Ok(())
}

/// Unpacks the regular files and directories under the data set's root; `unpack_in`
/// refuses paths that would leave `into`.
fn extract(dataset: &KnownDataset, archive: &Path, into: &Path) -> Result<(), FetchError> {
    let bad = |reason: String| FetchError::Archive { path: archive.to_path_buf(), reason };
    let file = File::open(archive).map_err(|source| FetchError::Io { action: "read", path: archive.into(), source })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    // Modes as the archive has them, less group and world write (some archives are 0777).
    tar.set_mask(0o022);
    let entries = tar.entries().map_err(|e| bad(format!("not a gzip'd tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let kind = entry.header().entry_type();
        let path = entry.path().map_err(|e| bad(format!("corrupt entry name: {e}")))?.into_owned();
        if !(kind.is_file() || kind.is_dir()) || !path.starts_with(dataset.root) {
            continue;
        }
        let unpacked = entry.unpack_in(into).map_err(|e| bad(format!("cannot extract {}: {e}", path.display())))?;
        if !unpacked {
            return Err(bad(format!("entry {} points outside the archive", path.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_need_a_checksum_of_the_right_length() {
        let mut archive = Archive { url: "https://example.org/x.tar.gz".into(), md5: None, sha256: None };
        assert!(archive.check().unwrap_err().contains("needs a checksum"));
        archive.md5 = Some("abc".into());
        assert!(archive.check().unwrap_err().contains("32 hex digits"));
        archive.md5 = Some(CIFAR10.md5.into());
        assert_eq!(archive.check(), Ok(()));
        archive.url = "ftp://example.org/x".into();
        assert!(archive.check().unwrap_err().contains("https://"));
        assert_eq!(Archive::published(&CIFAR10).file_name(), "cifar-10-binary.tar.gz");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("bytes */200")), None);
        assert_eq!(content_range_start(None), None);
    }
}
