//! Checkpoints: a model's spec, normalisation and metrics (JSON) beside its weights
//! (burnpack), each written atomically (temporary file, then rename).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::Device;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::model::{Model, ModelSpec};
use msh_io::atomic_file::write_atomic;

use super::Metrics;

/// Bumped when `CheckpointMeta` changes incompatibly.
pub const CHECKPOINT_VERSION: u32 = 1;
const META_FILE: &str = "model.json";
const WEIGHTS_FILE: &str = "weights.bpk";

/// Everything about a trained model but its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    pub spec: ModelSpec,
    pub normalization: Normalization,
    #[serde(default)]
    pub class_names: Vec<String>,
    pub parameters: usize,
    /// Metrics by split name (`valid`, `test`).
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, Metrics>,
}

impl CheckpointMeta {
    /// Parses `model.json` and checks what prediction relies on: the version, a sample
    /// shape, and statistics that standardise to finite values.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let meta: CheckpointMeta = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if meta.version != CHECKPOINT_VERSION {
            return Err(format!("format version {} is not {CHECKPOINT_VERSION}", meta.version));
        }
        let shape = &meta.spec.input_shape;
        if shape.is_empty() || shape.contains(&0) {
            return Err(format!("input shape {shape:?} is empty"));
        }
        let n = &meta.normalization;
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if n.mean.is_empty() || n.mean.len() != n.std.len() || n.group == 0 {
            return Err(format!(
                "normalization has {} means, {} deviations and groups of {}: expected as many means as \
                 deviations, at least one, in groups of at least 1",
                n.mean.len(),
                n.std.len(),
                n.group
            ));
        }
        if !(n.mean.iter().all(|v| v.is_finite()) && n.std.iter().all(|&v| positive(v))) {
            return Err("normalization holds a non-finite mean or a deviation that is not positive".into());
        }
        if !(n.target_mean.is_finite() && positive(n.target_std)) {
            return Err(format!("target normalization {} ± {} is not finite", n.target_mean, n.target_std));
        }
        Ok(meta)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoint {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read checkpoint {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// A checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
}

impl Checkpoint {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The weights file.
    pub fn weights(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }

    /// Writes the meta data and the model's weights.
    pub fn save(&self, model: &Model, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
        let write_err = |path: &Path, source| CheckpointError::Write { path: path.to_path_buf(), source };
        std::fs::create_dir_all(&self.dir).map_err(|e| write_err(&self.dir, e))?;
        let weights = self.dir.join(WEIGHTS_FILE);
        let bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| write_err(&weights, std::io::Error::other(e.to_string())))?;
        write_atomic(&weights, &bytes).map_err(|e| write_err(&weights, e))?;
        let json = serde_json::to_vec_pretty(meta).expect("checkpoint meta serialises");
        write_atomic(&self.dir.join(META_FILE), &json).map_err(|e| write_err(&self.dir.join(META_FILE), e))
    }

    pub fn meta(&self) -> Result<CheckpointMeta, CheckpointError> {
        let path = self.dir.join(META_FILE);
        let read_err = |reason: String| CheckpointError::Read { path: path.clone(), reason };
        let bytes = std::fs::read(&path).map_err(|e| read_err(e.to_string()))?;
        CheckpointMeta::from_json(&bytes).map_err(read_err)
    }

    /// Rebuilds the model on `device` and loads its weights.
    pub fn load(&self, device: &Device) -> Result<(Model, CheckpointMeta), CheckpointError> {
        let meta = self.meta()?;
        let weights = self.dir.join(WEIGHTS_FILE);
        let read_err = |reason: String| CheckpointError::Read { path: weights.clone(), reason };
        let model =
            Model::new(&meta.spec, device).map_err(|e| read_err(format!("its architecture is invalid: {e}")))?;
        let record = ModuleRecord::load(&weights).map_err(|e| read_err(e.to_string()))?;
        let model = model.try_load_record(record).map_err(|e| read_err(e.to_string()))?;
        Ok((model.valid(), meta))
    }
}
