//! One JSON document in a state directory, shared by several processes: the helper under the
//! IPAM store (`ipam.json`) and the workload-endpoint store (`endpoints.json`).
//!
//! A [`JsonFile`] names the document (`DIR/NAME`) and its lock file (`DIR/LOCK`). Callers take
//! the lock ([`JsonFile::lock`], an exclusive or shared `flock` through std's [`File::lock`]),
//! read, and — holding the exclusive lock — write. [`JsonFile::write`] writes `DIR/NAME.tmp`,
//! fsyncs it, renames it over `DIR/NAME` and fsyncs the directory, so a crash at any point
//! leaves either the old or the new document, never a torn one. The lock file is never removed
//! (removing it would let two processes hold "the" lock on different inodes).

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A store file could not be locked, read, decoded or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct StoreError {
    /// The file (or directory) concerned.
    pub path: PathBuf,
    /// What went wrong, e.g. `corrupt: expected value at line 1 column 1`.
    pub message: String,
}

impl StoreError {
    /// `path: what: e`.
    pub fn new(path: &Path, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: path.to_path_buf(),
            message: format!("{what}: {e}"),
        }
    }
}

/// A held lock; dropping it unlocks (closing the file releases the `flock`).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// A JSON document `DIR/name` guarded by the lock file `DIR/lock`.
#[derive(Debug, Clone)]
pub struct JsonFile {
    dir: PathBuf,
    name: &'static str,
    lock: &'static str,
}

impl JsonFile {
    /// Names the document; touches nothing.
    pub fn new(dir: impl AsRef<Path>, name: &'static str, lock: &'static str) -> JsonFile {
        JsonFile {
            dir: dir.as_ref().to_path_buf(),
            name,
            lock,
        }
    }

    /// Creates the directory (and its parents) if needed.
    pub fn create_dir(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::new(&self.dir, "cannot create", e))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/name`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// Takes the lock, blocking until it is free: exclusive to write, shared to read.
    pub fn lock(&self, exclusive: bool) -> Result<Lock, StoreError> {
        let path = self.dir.join(self.lock);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::new(&path, "cannot open the lock file", e))?;
        let r = if exclusive { f.lock() } else { f.lock_shared() };
        r.map_err(|e| StoreError::new(&path, "cannot lock", e))?;
        Ok(Lock { _file: f })
    }

    /// Whether the document exists.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Reads and decodes the document; `None` if it does not exist. Call with the lock held.
    pub fn read<T: DeserializeOwned>(&self, _held: &Lock) -> Result<Option<T>, StoreError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::new(&path, "cannot read", e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::new(&path, "corrupt", e))
    }

    /// Replaces the document atomically (temp file, fsync, rename, directory fsync). Call with
    /// the exclusive lock held.
    pub fn write<T: Serialize>(&self, _held: &Lock, value: &T) -> Result<(), StoreError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{}.tmp", self.name));
        let mut text = serde_json::to_vec_pretty(value)
            .map_err(|e| StoreError::new(&path, "cannot encode", e))?;
        text.push(b'\n');
        let mut f = File::create(&tmp).map_err(|e| StoreError::new(&tmp, "cannot create", e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::new(&tmp, "cannot write", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::new(&path, "cannot replace", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::new(&self.dir, "cannot sync the directory", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_and_corrupt_is_refused() {
        let dir = std::env::temp_dir().join(format!("ferry-store-{}", std::process::id()));
        let f = JsonFile::new(&dir, "doc.json", "doc.lock");
        f.create_dir().unwrap();
        {
            let l = f.lock(true).unwrap();
            assert_eq!(f.read::<Vec<u32>>(&l).unwrap(), None);
            f.write(&l, &vec![1u32, 2]).unwrap();
            assert_eq!(f.read::<Vec<u32>>(&l).unwrap(), Some(vec![1, 2]));
            assert!(!dir.join("doc.json.tmp").exists());
        }
        std::fs::write(f.path(), "{not json").unwrap();
        let l = f.lock(false).unwrap();
        let e = f.read::<Vec<u32>>(&l).unwrap_err();
        assert!(e.to_string().contains("doc.json: corrupt"), "{e}");
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
