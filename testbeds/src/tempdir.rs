//! Scratch directories that remove themselves. Every file a lab or a test writes goes in one,
//! so nothing is left in the temporary directory, on failure too: the guard drops while a
//! panic unwinds.

use crate::LabError;
use std::ops::Deref;
use std::path::Path;

/// An empty directory `$TMPDIR/ferry-TAG-XXXXXX` (unique), removed with everything in it when
/// the guard drops. Derefs to its path.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates the directory; `tag` says whose it is (`ferry-TAG-…`).
    pub fn new(tag: &str) -> Result<TempDir, LabError> {
        let prefix = format!("ferry-{tag}-");
        tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map(TempDir)
            .map_err(|source| LabError::Io {
                what: format!("creating a temporary directory {prefix}*"),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_on_drop_with_its_files_also_when_a_panic_unwinds() {
        let d = TempDir::new("tempdir-test").expect("create");
        let p = d.to_path_buf();
        assert!(p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("ferry-tempdir-test-")));
        std::fs::create_dir_all(p.join("a/b")).expect("subdir");
        std::fs::write(p.join("a/b/f"), "x").expect("file");
        drop(d);
        assert!(!p.exists(), "{} is left", p.display());

        let d = TempDir::new("tempdir-test").expect("create");
        let p = d.to_path_buf();
        let r = std::panic::catch_unwind(move || {
            let _d = d;
            panic!("a failing test");
        });
        assert!(r.is_err());
        assert!(!p.exists(), "{} is left after a panic", p.display());
    }
}
