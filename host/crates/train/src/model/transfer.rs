//! Weight sharing: a new model starts from other trials' weights wherever a parameter's
//! stable path and shape match (a snapshot of the parent, or a weighted average over
//! several donors); everything else keeps its fresh initialisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, DType};
use burn_pack::{Reader, Tensor as PackTensor, Writer};

use super::Model;

/// A checkpoint to take weights from, and its weight in an average.
#[derive(Debug, Clone)]
pub struct Donor {
    pub weights: PathBuf,
    pub weight: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot share weights from {}: {reason}", path.display())]
pub struct TransferError {
    pub path: PathBuf,
    pub reason: String,
}

/// The donor's tensors by path: (shape, f32 values).
fn read_tensors(path: &Path) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>, TransferError> {
    let fail = |reason: String| TransferError { path: path.to_path_buf(), reason };
    let reader = Reader::from_file(path).map_err(|e| fail(e.to_string()))?;
    let mut out = HashMap::new();
    for tensor in reader.into_tensors().map_err(|e| fail(e.to_string()))? {
        let (name, dtype, shape, _, bytes) = tensor.into_parts().map_err(|e| fail(e.to_string()))?;
        if dtype != DType::F32 {
            continue;
        }
        out.insert(name, (shape.to_vec(), f32_values(&bytes)));
    }
    Ok(out)
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Loads into `model` every parameter the donors have at the same path and shape
/// (averaged with the donors' weights where several have it). Returns the model and the
/// number of trainable values it inherited.
pub fn inherit(model: Model, donors: &[Donor]) -> Result<(Model, usize), TransferError> {
    if donors.is_empty() {
        return Ok((model, 0));
    }
    let tables: Vec<(f64, HashMap<String, (Vec<usize>, Vec<f32>)>)> =
        donors.iter().map(|d| Ok((d.weight, read_tensors(&d.weights)?))).collect::<Result<_, TransferError>>()?;
    let internal = |reason: String| TransferError { path: donors[0].weights.clone(), reason };
    let own = model.clone().into_record().into_bytes().map_err(|e| internal(e.to_string()))?;
    let reader = Reader::from_bytes(own).map_err(|e| internal(e.to_string()))?;
    let mut inherited = 0;
    let mut tensors = Vec::new();
    for tensor in reader.into_tensors().map_err(|e| internal(e.to_string()))? {
        let (name, dtype, shape, id, bytes) = tensor.into_parts().map_err(|e| internal(e.to_string()))?;
        let dims = shape.to_vec();
        let matches: Vec<(f64, &Vec<f32>)> = tables
            .iter()
            .filter_map(|(w, t)| t.get(&name).filter(|(s, _)| dtype == DType::F32 && *s == dims).map(|(_, v)| (*w, v)))
            .collect();
        let total: f64 = matches.iter().map(|(w, _)| w).sum();
        let bytes = if matches.is_empty() || total <= 0.0 {
            bytes
        } else {
            let mut mean = vec![0f64; matches[0].1.len()];
            for (w, values) in &matches {
                for (m, v) in mean.iter_mut().zip(values.iter()) {
                    *m += w / total * *v as f64;
                }
            }
            // Counted like `Model::parameter_count`: batch-norm running statistics are
            // copied but are not trainable parameters.
            if !name.contains(".running_") {
                inherited += mean.len();
            }
            Bytes::from_elems(mean.into_iter().map(|v| v as f32).collect::<Vec<f32>>())
        };
        tensors.push(PackTensor::new(name, dtype, shape, id, bytes));
    }
    let bytes = Writer::new(tensors).into_bytes().map_err(|e| internal(e.to_string()))?;
    let record = ModuleRecord::from_bytes(bytes).map_err(|e| internal(e.to_string()))?;
    let model = model.try_load_record(record).map_err(|e| internal(e.to_string()))?;
    Ok((model, inherited))
}
