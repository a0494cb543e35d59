//! Where objects come from, and what a load says when it fails or skips something.

use std::fmt;

/// Where an object came from: a file (or origin name) and its document (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    /// Index inside a `kind: List` document (0-based), if the object came from one.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file, self.document)?;
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        Ok(())
    }
}

/// A load that failed. Its `Display` is the whole story, for example
/// `manifests/pool.yaml, document 2 (IPPool external-pool): spec.blockSize: 33 is outside 20..=32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file or origin name.
    pub file: String,
    /// The document (1-based), when the error is inside one.
    pub document: Option<usize>,
    /// Index inside a `kind: List` document, if any.
    pub item: Option<usize>,
    /// `Kind name` of the object, when known.
    pub object: Option<String>,
    /// The field path and what is wrong with it (or the parser's message, with its line).
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ", document {d}")?;
        }
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Something skipped rather than refused (an unknown kind, a dangling reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub document: Option<usize>,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(d) = self.document {
            write!(f, ", document {d}")?;
        }
        write!(f, ": {}", self.message)
    }
}
