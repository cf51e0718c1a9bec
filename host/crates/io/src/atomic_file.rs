//! Files replaced atomically: written beside their destination, synced, then renamed, so a
//! reader sees the old or the new content, never a partial file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Tries at a fresh temporary name before giving up (each collides only with a file that
/// someone else created at a random name).
const ATTEMPTS: usize = 16;

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
///
/// The temporary file has a random name and is created with `create_new` (`O_EXCL`), so a
/// file or symlink planted beside `path` (in a shared run directory, say) is never opened:
/// the write cannot be redirected.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let tmp = temp_path(path);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < ATTEMPTS => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let written = file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A random temporary name beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{:016x}", rand::random::<u64>()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_beside_the_file_is_never_written_through() {
        let dir = std::env::temp_dir().join(format!("msh-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let target = dir.join("model.json");
        // The name the writer once used, predictable from the process id.
        let mut planted = target.file_name().unwrap().to_os_string();
        planted.push(format!(".tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        write_atomic(&target, b"new").unwrap();
        write_atomic(&target, b"newer").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&target).unwrap(), b"newer");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 3, "victim, target and the planted link: no temporary file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
