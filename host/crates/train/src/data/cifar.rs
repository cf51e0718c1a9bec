//! CIFAR-10 binary provider: records of one label byte and 3x32x32 channel-major pixels.

use std::path::Path;

use super::{DataError, Dataset};

const PIXELS: usize = 3 * 32 * 32;
const RECORD: usize = 1 + PIXELS;

pub(super) const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Reads `files` from `dir`; pixels are scaled to [0, 1].
pub(super) fn load(dir: &Path, files: &[String]) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::File {
            path: dir.to_path_buf(),
            reason: "is not a directory; CIFAR-10 binary needs data_batch_1.bin .. data_batch_5.bin and \
                     test_batch.bin there (the \"CIFAR-10 binary version\" archive from the University \
                     of Toronto, extracted)"
                .into(),
        });
    }
    let mut features = Vec::new();
    let mut targets = Vec::new();
    for name in files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
        parse(&bytes, &path, &mut features, &mut targets)?;
    }
    Ok(Dataset { features, targets, shape: vec![3, 32, 32] })
}

/// Appends the records of one batch file's `bytes`; errors name `path`.
pub fn parse(bytes: &[u8], path: &Path, features: &mut Vec<f32>, targets: &mut Vec<f32>) -> Result<(), DataError> {
    let bad = |reason: String| DataError::File { path: path.to_path_buf(), reason };
    if bytes.len() % RECORD != 0 {
        return Err(bad(format!(
            "truncated record {}: {} bytes is not a whole number of {RECORD}-byte records",
            bytes.len() / RECORD,
            bytes.len()
        )));
    }
    features.reserve(bytes.len() / RECORD * PIXELS);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] as usize >= CLASSES.len() {
            return Err(bad(format!("record {i}: label {} is not in 0..9", record[0])));
        }
        targets.push(record[0] as f32);
        features.extend(record[1..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok(())
}
