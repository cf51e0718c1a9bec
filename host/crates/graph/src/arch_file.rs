//! Architecture files (YAML or JSON): parsing with locations, and validation messages that
//! name the file.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::Architecture;

#[derive(Debug, thiserror::Error)]
pub enum ArchFileError {
    #[error("cannot read architecture {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Reads `FILE:LINE:COLUMN: message`, or `FILE: message` without a location.
    #[error("{}{}", path.display(), match error.location {
        Some((line, column)) => format!(":{line}:{column}: {}", error.message),
        None => format!(": {}", error.message),
    })]
    Parse { path: PathBuf, error: ParseError },
}

/// A syntax or schema error, with its 1-based line and column where known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{line}:{column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads an architecture; YAML is a superset of JSON, so one parser serves both.
pub fn read(path: &Path) -> Result<Architecture, ArchFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ArchFileError::Io { path: path.to_path_buf(), source })?;
    parse(&text).map_err(|error| ArchFileError::Parse { path: path.to_path_buf(), error })
}

pub fn parse(text: &str) -> Result<Architecture, ParseError> {
    serde_yaml_ng::from_str::<Architecture>(text).map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
        let message = e.to_string();
        // serde_yaml_ng appends ` at line L column C`; the location goes first instead.
        let message = match (location, message.rfind(" at line ")) {
            (Some(_), Some(i)) => message[..i].to_string(),
            _ => message,
        };
        ParseError { location, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_key_is_located() {
        let text = "blocks:\n  - name: stem\n    nodes:\n      - {op: conv1d, filters: 4, kernal: 3}\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.location.map(|l| l.0), Some(4));
        assert!(err.to_string().contains("kernal"), "{err}");
    }
}
