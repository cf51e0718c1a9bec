//! Architecture files (YAML or JSON): parsing with locations, and validation messages that
//! name the file.

use std::path::{Path, PathBuf};

use crate::graph::Architecture;

#[derive(Debug, thiserror::Error)]
pub enum ArchFileError {
    #[error("cannot read architecture {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
}

/// Reads an architecture; YAML is a superset of JSON, so one parser serves both.
pub fn read(path: &Path) -> Result<Architecture, ArchFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArchFileError::Io { path: path.to_path_buf(), source })?;
    parse(&text).map_err(|message| ArchFileError::Parse { path: path.to_path_buf(), message })
}

/// Parses architecture text; errors carry `line:column` where the parser knows it.
pub fn parse(text: &str) -> Result<Architecture, String> {
    serde_yaml_ng::from_str::<Architecture>(text).map_err(|e| match e.location() {
        Some(loc) => format!("{}:{}: {}", loc.line(), loc.column(), strip_location(&e.to_string())),
        None => e.to_string(),
    })
}

/// serde_yaml_ng appends ` at line L column C`; the location is put first instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_key_is_located() {
        let text = "blocks:\n  - name: stem\n    nodes:\n      - {op: conv1d, filters: 4, kernal: 3}\n";
        let err = parse(text).unwrap_err();
        assert!(err.starts_with("4:"), "{err}");
        assert!(err.contains("kernal"), "{err}");
    }
}
