//! Image-folder provider: one sub-directory per class, PNG or JPEG files, resized to a square.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{DataError, Dataset};

/// Loads every image under `dir/<class>/` as RGB `[3, size, size]` in [0, 1].
pub(super) fn load(dir: &Path, size: usize) -> Result<(Dataset, Vec<String>), DataError> {
    let io = |path: &Path, source| DataError::Io { path: path.to_path_buf(), source };
    let mut classes: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::File { path: dir.to_path_buf(), reason: "has no class sub-directories".into() });
    }
    let side = size as u32;
    let mut features = Vec::new();
    let mut targets = Vec::new();
    for (label, (name, class_dir)) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(class_dir)
            .map_err(|e| io(class_dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                matches!(ext.as_str(), "png" | "jpg" | "jpeg")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(DataError::File {
                path: class_dir.clone(),
                reason: format!("class `{name}` has no PNG or JPEG images"),
            });
        }
        for file in files {
            let img = image::open(&file)
                .map_err(|e| DataError::File { path: file.clone(), reason: format!("cannot read image: {e}") })?
                .resize_exact(side, side, FilterType::Triangle)
                .to_rgb8();
            // Channel-major: all red, then green, then blue.
            for c in 0..3 {
                features.extend(img.pixels().map(|p| p[c] as f32 / 255.0));
            }
            targets.push(label as f32);
        }
    }
    let names = classes.into_iter().map(|(n, _)| n).collect();
    Ok((Dataset { features, targets, shape: vec![3, size, size] }, names))
}
