//! CSV provider: numeric columns, one of them the label or regression target.

use std::path::Path;

use super::{DataError, DataSpec, Dataset, LabelColumn, TaskKind, apply_shape};

pub(super) fn load(path: &Path, spec: &DataSpec) -> Result<Dataset, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    read(file, path, spec)
}

/// Parses CSV text from `input`; errors name `path`.
pub fn read(input: impl std::io::Read, path: &Path, spec: &DataSpec) -> Result<Dataset, DataError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(spec.header).flexible(true).from_reader(input);
    let row_error = |line: u64, reason: String| DataError::Row { path: path.to_path_buf(), line, reason };

    let headers: Vec<String> = if spec.header {
        reader
            .headers()
            .map_err(|e| row_error(1, format!("cannot read the header: {e}")))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let label = match (&spec.label, spec.header) {
        (Some(LabelColumn::Index(i)), _) => *i,
        (Some(LabelColumn::Name(name)), true) => headers.iter().position(|h| h == name).ok_or_else(|| {
            row_error(1, format!("no column named `{name}` in the header (columns: {})", headers.join(", ")))
        })?,
        (Some(LabelColumn::Name(name)), false) => {
            return Err(DataError::Spec(format!(
                "label column `{name}` is a name, but the CSV has no header; give an index"
            )));
        }
        (None, _) => headers.iter().position(|h| h == "label" || h == "target").unwrap_or(0),
    };
    let column_name = |j: usize| headers.get(j).cloned().unwrap_or_else(|| format!("#{j}"));

    let mut width = if spec.header { Some(headers.len()) } else { None };
    let mut features = Vec::new();
    let mut targets = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let more = reader.read_record(&mut record).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            row_error(line, format!("malformed CSV: {e}"))
        })?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let expected = *width.get_or_insert(record.len());
        if record.len() != expected {
            return Err(row_error(line, format!("row has {} fields, expected {expected}", record.len())));
        }
        if label >= expected {
            return Err(row_error(line, format!("label column {label} is past the last column ({})", expected - 1)));
        }
        for (j, cell) in record.iter().enumerate() {
            let value: f32 = cell
                .trim()
                .parse()
                .map_err(|_| row_error(line, format!("column `{}`: `{cell}` is not a number", column_name(j))))?;
            if !value.is_finite() {
                return Err(row_error(line, format!("column `{}`: `{cell}` is not finite", column_name(j))));
            }
            if j == label {
                if spec.task == TaskKind::Classification && (value < 0.0 || value.fract() != 0.0 || value > 1e6) {
                    return Err(row_error(
                        line,
                        format!("label `{cell}` in column `{}` is not a class index (0, 1, 2, ...)", column_name(j)),
                    ));
                }
                targets.push(value);
            } else {
                features.push(value);
            }
        }
    }
    let values = width.unwrap_or(1).saturating_sub(1);
    if values == 0 {
        return Err(DataError::File { path: path.to_path_buf(), reason: "has no feature columns".into() });
    }
    let shape = apply_shape(&spec.shape, values, path)?;
    Ok(Dataset { features, targets, shape })
}
