//! NumPy provider: features and targets as `.npy` arrays, apart or inside one `.npz`.
//! The first axis counts samples; the rest is the sample shape (or `shape:` reshapes it).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use npyz::{DType, NpyFile, Order, TypeChar};

use super::{DataError, DataSpec, Dataset, TaskKind, apply_shape};

/// The array names `npz:FILE` reads when none are given.
pub const DEFAULT_ARRAYS: [&str; 2] = ["x", "y"];

/// One array, as `f32`, in C order.
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

pub(super) fn load_npy(x: &Path, y: &Path, spec: &DataSpec) -> Result<Dataset, DataError> {
    let features = read_npy_file(x)?;
    let targets = read_npy_file(y)?;
    assemble(features, targets, spec, x, y, &format!("{} and {}", x.display(), y.display()))
}

pub(super) fn load_npz(path: &Path, names: &[String; 2], spec: &DataSpec) -> Result<Dataset, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    read_npz(BufReader::new(file), path, names, spec)
}

/// Reads arrays `names` of the `.npz` in `input`; errors name `path`.
pub fn read_npz(
    input: impl Read + io::Seek,
    path: &Path,
    names: &[String; 2],
    spec: &DataSpec,
) -> Result<Dataset, DataError> {
    let bad = |reason: String| DataError::File { path: path.to_path_buf(), reason };
    let mut zip = zip::ZipArchive::new(input).map_err(|e| bad(format!("not an .npz (zip) file: {e}")))?;
    let held: Vec<String> = zip.file_names().filter_map(|n| n.strip_suffix(".npy")).map(String::from).collect();
    let mut read = |name: &str| -> Result<Array, DataError> {
        let member = format!("{name}.npy");
        let mut entry = match zip.by_name(&member) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(bad(format!(
                    "has no array `{name}`; it holds {}. Name the feature and target arrays: npz:{}:FEATURES,TARGETS",
                    if held.is_empty() { "none".into() } else { held.join(", ") },
                    path.display()
                )));
            }
            Err(e) => return Err(bad(format!("cannot read array `{name}`: {e}"))),
        };
        let size = entry.size();
        read_npy(&mut entry, size).map_err(|reason| bad(format!("array `{name}`: {reason}")))
    };
    let features = read(&names[0])?;
    let targets = read(&names[1])?;
    assemble(features, targets, spec, path, path, &path.display().to_string())
}

fn read_npy_file(path: &Path) -> Result<Array, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let size = file.metadata().map_err(|source| DataError::Io { path: path.to_path_buf(), source })?.len();
    read_npy(&mut BufReader::new(file), size).map_err(|reason| DataError::File { path: path.to_path_buf(), reason })
}

/// Reads one `.npy` stream of `size` bytes: numeric or boolean elements, any byte order,
/// C or Fortran order. The header's shape is checked against `size` before allocating.
pub fn read_npy(reader: &mut dyn Read, size: u64) -> Result<Array, String> {
    let head = read_header(reader)?;
    let npy = NpyFile::new(io::Cursor::new(head).chain(reader))
        .map_err(|e| format!("unsupported .npy header ({e}): msh reads arrays of numbers or booleans"))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let DType::Plain(type_str) = npy.dtype() else {
        return Err(format!("structured dtype {:?} is not supported: save plain numeric arrays", npy.dtype()));
    };
    let width = type_str.size_field();
    let count = npy.shape().iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    match count.and_then(|n| n.checked_mul(width)) {
        Some(bytes) if bytes <= size => {}
        _ => return Err(format!("header declares shape {shape:?} of {type_str}, more than the file's {size} bytes")),
    }
    let order = npy.order();
    let error = |e: io::Error| format!("cannot read the values: {e}");
    // Lossy, as NumPy's `astype(np.float32)`.
    macro_rules! as_f32 {
        ($t:ty) => {
            npy.into_vec::<$t>().map_err(error)?.into_iter().map(|v| v as f32).collect()
        };
    }
    let values: Vec<f32> = match (type_str.type_char(), width) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(error)?,
        (TypeChar::Float, 8) => as_f32!(f64),
        (TypeChar::Int, 1) => as_f32!(i8),
        (TypeChar::Int, 2) => as_f32!(i16),
        (TypeChar::Int, 4) => as_f32!(i32),
        (TypeChar::Int, 8) => as_f32!(i64),
        (TypeChar::Uint, 1) => as_f32!(u8),
        (TypeChar::Uint, 2) => as_f32!(u16),
        (TypeChar::Uint, 4) => as_f32!(u32),
        (TypeChar::Uint, 8) => as_f32!(u64),
        (TypeChar::Bool, 1) => npy.into_vec::<bool>().map_err(error)?.into_iter().map(f32::from).collect(),
        _ => return Err(format!("dtype {type_str} is not supported: use floats, integers or booleans")),
    };
    let values = match order {
        Order::C => values,
        Order::Fortran => to_c_order(&values, &shape),
    };
    Ok(Array { shape, values })
}

/// Headers longer than this are not NumPy's (it writes a few hundred bytes at most).
const MAX_HEADER: usize = 1 << 16;

/// Reads the magic, version and header dict of a `.npy` stream, and refuses a header that
/// nests deeper than a plain array's: npyz's parser takes exponential time on nested
/// brackets, so a crafted 100-byte header would hang the read.
fn read_header(reader: &mut dyn Read) -> Result<Vec<u8>, String> {
    let mut head = vec![0u8; 8];
    if reader.read_exact(&mut head).is_err() || &head[..6] != b"\x93NUMPY" {
        return Err("not a NumPy .npy array (it does not start with \\x93NUMPY)".into());
    }
    let width = if head[6] == 1 { 2 } else { 4 };
    let mut length = [0u8; 4];
    reader.read_exact(&mut length[..width]).map_err(|e| format!("truncated .npy header: {e}"))?;
    head.extend_from_slice(&length[..width]);
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_HEADER {
        return Err(format!("the .npy header claims {length} bytes: not a NumPy array"));
    }
    let start = head.len();
    head.resize(start + length, 0);
    reader.read_exact(&mut head[start..]).map_err(|e| format!("truncated .npy header: {e}"))?;
    let mut depth = 0usize;
    for &b in &head[start..] {
        match b {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 3 {
            return Err("unsupported .npy header: it nests brackets deeper than a plain array's".into());
        }
    }
    Ok(head)
}

/// Reorders column-major values to row-major.
fn to_c_order(values: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    let mut index = vec![0usize; shape.len()];
    for &v in values {
        // Walks the Fortran order (first axis fastest) and writes at the C offset.
        let offset = index.iter().zip(shape).fold(0, |o, (&i, &d)| o * d + i);
        out[offset] = v;
        for (i, &d) in index.iter_mut().zip(shape) {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Checks that features and targets pair up, and builds the data set.
pub fn assemble(
    x: Array,
    y: Array,
    spec: &DataSpec,
    x_path: &Path,
    y_path: &Path,
    both: &str,
) -> Result<Dataset, DataError> {
    let samples = *x.shape.first().ok_or_else(|| DataError::File {
        path: x_path.to_path_buf(),
        reason: "features are a 0-d array: the first axis must count samples".into(),
    })?;
    let target_ok = matches!(y.shape.as_slice(), [n] | [n, 1] if *n == samples);
    if !target_ok {
        return Err(DataError::Spec(format!(
            "{both}: features have shape {:?} and targets {:?}; targets need shape [{samples}] (one per sample)",
            x.shape, y.shape
        )));
    }
    let sample_shape: Vec<usize> = if x.shape.len() == 1 { vec![1] } else { x.shape[1..].to_vec() };
    let values: usize = sample_shape.iter().product();
    let shape = match (&spec.shape, sample_shape.len()) {
        (None, 1..=3) if !sample_shape.contains(&0) => sample_shape,
        (None, _) => {
            return Err(DataError::File {
                path: x_path.to_path_buf(),
                reason: format!(
                    "samples of shape {sample_shape:?} are not [F], [C, L] or [C, H, W]; reshape them with `shape:`"
                ),
            });
        }
        (Some(_), _) => apply_shape(&spec.shape, values, x_path)?,
    };
    if let Some(i) = x.values.iter().position(|v| !v.is_finite()) {
        return Err(DataError::File {
            path: x_path.to_path_buf(),
            reason: format!("sample {}, value {}: {} is not finite", i / values.max(1), i % values.max(1), x.values[i]),
        });
    }
    for (i, &t) in y.values.iter().enumerate() {
        let bad = match spec.task {
            TaskKind::Classification => !(t >= 0.0 && t.fract() == 0.0 && t <= 1e6),
            TaskKind::Regression => !t.is_finite(),
        };
        if bad {
            let what = match spec.task {
                TaskKind::Classification => "is not a class index (0, 1, 2, ...)",
                TaskKind::Regression => "is not finite",
            };
            return Err(DataError::File { path: y_path.to_path_buf(), reason: format!("target {i}: {t} {what}") });
        }
    }
    Ok(Dataset { features: x.values, targets: y.values, shape })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_headers_are_refused_before_parsing() {
        // Found by fuzzing: npyz took over 10 s on a header like this one.
        let header = format!("{{'descr': '<i4', {} 'fortran_order': False}}\n", "{".repeat(100));
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        let err = read_npy(&mut &bytes[..], bytes.len() as u64).err().expect("refused");
        assert!(err.contains("nests brackets deeper"), "{err}");
    }

    #[test]
    fn fortran_order_is_transposed() {
        // [[0, 1, 2], [3, 4, 5]] stored column by column.
        assert_eq!(to_c_order(&[0., 3., 1., 4., 2., 5.], &[2, 3]), vec![0., 1., 2., 3., 4., 5.]);
    }
}
