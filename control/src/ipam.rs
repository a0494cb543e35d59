//! The IPAM store of a state directory: the core's [`IpamState`] (`cluster::ipam`, re-exported
//! here with the rest of the core's IPAM) kept in one file that several node daemons (separate
//! processes) can share.
//!
//! One JSON file, `DIR/ipam.json` ([`IpamState`], `{"blocks": [{"cidr", "affinity",
//! "allocations": {ip: handle}}], "handles": {handle: ip}}`). Every mutation takes an exclusive
//! `flock` on `DIR/ipam.lock`, reads the JSON, applies the change in memory, writes
//! `DIR/ipam.json.tmp`, fsyncs it, renames it over `ipam.json`, fsyncs the directory and unlocks
//! (the shared helper [`crate::store::JsonFile`]). So processes sharing `DIR` never hand out an
//! address twice, a failed request writes nothing, and a crash leaves either the old or the new
//! file, never a torn one. Reads take the shared lock. A file that does not parse or breaks the
//! store's invariants is refused, naming it, and never overwritten.
//!
//! How an address is chosen (affine blocks, new blocks, borrowing, annotations) is the core's:
//! see `cluster::ipam`.

// Re-exported while the adapters move to cluster:: paths.
pub use cluster::ipam::*;

use crate::store::{JsonFile, Lock, StoreError};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "ipam.json";
/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "ipam.lock";

fn store_err(path: &Path, what: &str, e: impl std::fmt::Display) -> IpamError {
    IpamError::Store {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// The IPAM store of one state directory. Cheap; each call opens, locks and closes the files,
/// so any number of `Ipam`s (in any number of processes) may share a directory.
#[derive(Debug, Clone)]
pub struct Ipam {
    file: JsonFile,
}

impl From<StoreError> for IpamError {
    fn from(e: StoreError) -> IpamError {
        IpamError::Store {
            path: e.path,
            message: e.message,
        }
    }
}

impl Ipam {
    /// Opens (creating if needed) the store in `dir`, checking the existing file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Ipam, IpamError> {
        let file = JsonFile::new(dir, STORE_FILE, LOCK_FILE);
        file.create_dir()?;
        let ipam = Ipam { file };
        let lock = ipam.file.lock(true)?;
        if !ipam.file.exists() {
            ipam.file.write(&lock, &IpamState::default())?;
        } else {
            ipam.read(&lock)?;
        }
        Ok(ipam)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        self.file.dir()
    }

    /// `DIR/ipam.json`.
    pub fn store_path(&self) -> PathBuf {
        self.file.path()
    }

    fn read(&self, lock: &Lock) -> Result<IpamState, IpamError> {
        let state: IpamState = self.file.read(lock)?.unwrap_or_default();
        state
            .check()
            .map_err(|e| store_err(&self.store_path(), "corrupt", e))?;
        Ok(state)
    }

    /// Runs `f` on the state under the exclusive lock, writing the result only on success.
    pub fn update<T>(
        &self,
        f: impl FnOnce(&mut IpamState) -> Result<(T, bool), IpamError>,
    ) -> Result<T, IpamError> {
        let lock = self.file.lock(true)?;
        let mut state = self.read(&lock)?;
        let (out, changed) = f(&mut state)?;
        if changed {
            self.file.write(&lock, &state)?;
        }
        Ok(out)
    }

    /// Assigns an address (see `cluster::ipam` for the order).
    pub fn assign(&self, req: &AssignRequest<'_>) -> Result<Ipv4Addr, IpamError> {
        self.update(|s| {
            let before = s.address_of(req.handle);
            let ip = s.assign(req)?;
            Ok((ip, before.is_none()))
        })
    }

    /// Releases `handle`'s address; `None` if it held none (idempotent).
    pub fn release(&self, handle: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        self.update(|s| {
            let ip = s.release(handle);
            Ok((ip, ip.is_some()))
        })
    }

    /// The current state (blocks with affinity and allocations, handles).
    pub fn snapshot(&self) -> Result<IpamState, IpamError> {
        let lock = self.file.lock(false)?;
        self.read(&lock)
    }
}

impl IpamStore for Ipam {
    fn assign(&self, req: &AssignRequest<'_>) -> Result<Ipv4Addr, IpamError> {
        Ipam::assign(self, req)
    }
    fn release(&self, handle: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ipam::release(self, handle)
    }
    fn snapshot(&self) -> Result<IpamState, IpamError> {
        Ipam::snapshot(self)
    }
}
