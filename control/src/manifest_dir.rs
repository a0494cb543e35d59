//! The manifest directory: the embedded datastore for labs, demos and tests.
//!
//! A directory of YAML/JSON manifests (any file names; read in name order, later definitions
//! of the same object winning) plus the objects `ferry apply -f` stored, in
//! `DIR/.ferry/applied.yaml`, read last. `ferry apply` and `ferry delete` change only that
//! file, under an exclusive lock (`DIR/.ferry/lock`), and replace it atomically (temporary
//! file, fsync, rename): a reader sees the old set or the new one, never half of an apply.
//! Every apply is checked against the whole resulting state first; a bad input changes nothing.
//! Objects defined in hand-written files can be overridden by `apply` but not deleted by
//! `delete` (edit the file); `delete` says which file defines them.
//!
//! [`DirWatcher`] polls the directory (cheap: names, sizes and modification times) and turns
//! what changed into [`Change`]s; node daemons poll every 100 ms, so a change is in force well
//! within a second. An invalid state is reported and skipped: the last good state stays.
//!
//! This is also where manifest files are read for the core's parser (`cluster::model` parses
//! text only): [`parse_file`], [`manifest_files`], [`parse_dir`], [`parse_path`], [`load_files`].

use cluster::model::{parse_str, ClusterState, Kind, LoadError, Loaded, Object, ObjectKey, Parsed};
use cluster::source::{diff, state_objects, Change};
use serde_yaml::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of `apply` and `delete`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestDirError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{key} is not found in {}", dir.display())]
    NotFound { key: ObjectKey, dir: PathBuf },
    #[error("{key} is defined in {file}, which ferry did not write: remove it there")]
    HandWritten { key: ObjectKey, file: String },
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> ManifestDirError {
    ManifestDirError::Io {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

/// What `apply` did to one object, in kubectl's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Deleted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
        })
    }
}

/// A manifest directory.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    dir: PathBuf,
}

const META_DIR: &str = ".ferry";
const APPLIED: &str = "applied.yaml";
const LOCK: &str = "lock";

/// `kind/name` as kubectl prints it (`pod/nginx`, `ippool.projectcalico.org/external-pool`).
pub fn kubectl_name(key: &ObjectKey) -> String {
    let kind = match key.kind {
        Kind::IpPool => "ippool.projectcalico.org",
        Kind::FelixConfiguration => "felixconfiguration.projectcalico.org",
        Kind::CalicoNetworkPolicy => "networkpolicy.projectcalico.org",
        Kind::GlobalNetworkPolicy => "globalnetworkpolicy.projectcalico.org",
        Kind::NetworkPolicy => "networkpolicy.networking.k8s.io",
        Kind::Deployment => "deployment.apps",
        Kind::Node => "node",
        Kind::Namespace => "namespace",
        Kind::Pod => "pod",
    };
    format!("{kind}/{}", key.name)
}

/// The documents of a stream as values with their keys (lists expanded, skipped kinds and
/// empty documents dropped), in the order `parse_str` returns its objects.
fn keyed_documents(text: &str) -> Result<Vec<(ObjectKey, Value)>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let mut push = |v: Value| {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(api), Some(kind)) = (s("apiVersion"), s("kind")) else {
            return;
        };
        let Some(kind) = Kind::of(&api, &kind) else {
            return;
        };
        let meta = |k: &str| {
            v.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let name = meta("name").unwrap_or_default();
        let namespace = kind
            .namespaced()
            .then(|| meta("namespace").unwrap_or_else(|| "default".into()));
        out.push((
            ObjectKey {
                kind,
                namespace,
                name,
            },
            v,
        ));
    };
    for d in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(d).map_err(|e| e.to_string())?;
        let is_list = v
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k == "List" || k.ends_with("List"));
        if is_list {
            if let Some(Value::Sequence(items)) = v.get("items") {
                items.iter().cloned().for_each(&mut push);
            }
        } else if !v.is_null() {
            push(v);
        }
    }
    Ok(out)
}

impl ManifestDir {
    /// A manifest directory (created if missing).
    pub fn open(dir: impl AsRef<Path>) -> Result<ManifestDir, ManifestDirError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join(META_DIR))
            .map_err(|e| io_err(&dir, "cannot create", e))?;
        Ok(ManifestDir { dir })
    }

    /// A manifest directory for reading only (nothing is created).
    pub fn existing(dir: impl AsRef<Path>) -> ManifestDir {
        ManifestDir {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn applied_path(&self) -> PathBuf {
        self.dir.join(META_DIR).join(APPLIED)
    }

    /// Parses everything: hand-written files, then the applied objects.
    pub fn parse(&self) -> Result<Parsed, LoadError> {
        let mut p = parse_dir(&self.dir)?;
        let applied = self.applied_path();
        if let Ok(text) = std::fs::read_to_string(&applied) {
            let a = parse_str(&applied.display().to_string(), &text)?;
            p.objects.extend(a.objects);
            p.warnings.extend(a.warnings);
        }
        Ok(p)
    }

    /// Loads the whole state (all-or-nothing).
    pub fn load(&self) -> Result<Loaded, LoadError> {
        ClusterState::from_parsed(self.parse()?)
    }

    fn lock(&self) -> Result<File, ManifestDirError> {
        let path = self.dir.join(META_DIR).join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(&path, "cannot open the lock file", e))?;
        f.lock().map_err(|e| io_err(&path, "cannot lock", e))?;
        Ok(f)
    }

    fn read_applied(&self) -> Result<Vec<(ObjectKey, Value)>, ManifestDirError> {
        let path = self.applied_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => keyed_documents(&t).map_err(|e| io_err(&path, "corrupt", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&path, "cannot read", e)),
        }
    }

    fn write_applied(&self, docs: &[(ObjectKey, Value)]) -> Result<(), ManifestDirError> {
        let path = self.applied_path();
        let tmp = path.with_extension("yaml.tmp");
        let mut text = format!(
            "# Objects stored by `ferry apply`; written atomically, edit with ferry apply/delete.\n# stamp: {}\n",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        for (_, v) in docs {
            text.push_str("---\n");
            text.push_str(
                &serde_yaml::to_string(v).map_err(|e| io_err(&path, "cannot encode", e))?,
            );
        }
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, "cannot write", e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, "cannot replace", e))?;
        File::open(path.parent().unwrap_or(&self.dir))
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, "cannot sync", e))
    }

    /// Applies a YAML stream (`origin` names it in errors): every object is validated, then the
    /// resulting state as a whole, then stored at once. Returns what happened to each object.
    pub fn apply(
        &self,
        origin: &str,
        text: &str,
    ) -> Result<Vec<(ObjectKey, Outcome)>, ManifestDirError> {
        let input = parse_str(origin, text)?;
        let docs = keyed_documents(text).map_err(|e| io_err(Path::new(origin), "malformed", e))?;
        let _lock = self.lock()?;
        let current = self.load()?.state;
        // The whole state after the apply must load.
        let mut all = self.parse()?;
        all.objects.extend(input.objects.iter().cloned());
        ClusterState::from_parsed(all)?;
        let mut applied = self.read_applied()?;
        let mut out = Vec::new();
        let current_objects: std::collections::BTreeMap<ObjectKey, Object> =
            state_objects(&current)
                .into_iter()
                .map(|l| (l.object.key(), l.object))
                .collect();
        for ((key, value), located) in docs.into_iter().zip(&input.objects) {
            let outcome = match current_objects.get(&key) {
                None => Outcome::Created,
                Some(o) if *o == located.object => Outcome::Unchanged,
                Some(_) => Outcome::Configured,
            };
            match applied.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => applied.push((key.clone(), value)),
            }
            out.push((key, outcome));
        }
        if out.iter().any(|(_, o)| *o != Outcome::Unchanged) {
            self.write_applied(&applied)?;
        }
        Ok(out)
    }

    /// Deletes the objects named in a YAML stream (only their kind, namespace and name
    /// matter). All-or-nothing: an object that is not there, or that a hand-written file
    /// defines, fails the whole delete unless `ignore_not_found` (which skips missing ones).
    pub fn delete(
        &self,
        origin: &str,
        text: &str,
        ignore_not_found: bool,
    ) -> Result<Vec<(ObjectKey, Outcome)>, ManifestDirError> {
        let keys = keyed_documents(text).map_err(|e| io_err(Path::new(origin), "malformed", e))?;
        let _lock = self.lock()?;
        let hand = parse_dir(&self.dir)?;
        let mut applied = self.read_applied()?;
        let mut out = Vec::new();
        for (key, _) in keys {
            if let Some(l) = hand.objects.iter().find(|l| l.object.key() == key) {
                return Err(ManifestDirError::HandWritten {
                    key,
                    file: l.origin.file.clone(),
                });
            }
            match applied.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    applied.remove(i);
                    out.push((key, Outcome::Deleted));
                }
                None if ignore_not_found => {}
                None => {
                    return Err(ManifestDirError::NotFound {
                        key,
                        dir: self.dir.clone(),
                    })
                }
            }
        }
        // The state without them must still load (it does unless a file is broken).
        let mut rest = hand;
        let remaining: String = applied
            .iter()
            .map(|(_, v)| format!("---\n{}", serde_yaml::to_string(v).unwrap_or_default()))
            .collect();
        let a = parse_str(&self.applied_path().display().to_string(), &remaining)?;
        rest.objects.extend(a.objects);
        ClusterState::from_parsed(rest)?;
        if !out.is_empty() {
            self.write_applied(&applied)?;
        }
        Ok(out)
    }

    /// A cheap fingerprint of the directory: names, sizes and modification times of the files
    /// it reads.
    pub fn fingerprint(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut files = manifest_files(&self.dir).unwrap_or_default();
        files.push(self.applied_path());
        files
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect()
    }

    /// When the last `ferry apply`/`delete` wrote the store (its stamp), if it did.
    pub fn last_write(&self) -> Option<SystemTime> {
        let text = std::fs::read_to_string(self.applied_path()).ok()?;
        let ns: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("# stamp: "))?
            .trim()
            .parse()
            .ok()?;
        Some(UNIX_EPOCH + Duration::from_nanos(ns))
    }
}

/// Watches a manifest directory: [`DirWatcher::poll`] reports what changed since the last
/// good state.
#[derive(Debug)]
pub struct DirWatcher {
    dir: ManifestDir,
    fingerprint: Vec<(PathBuf, u64, SystemTime)>,
    state: ClusterState,
}

impl DirWatcher {
    /// Loads the directory (the initial state must be valid).
    pub fn new(dir: ManifestDir) -> Result<(DirWatcher, ClusterState), LoadError> {
        let fingerprint = dir.fingerprint();
        let state = dir.load()?.state;
        Ok((
            DirWatcher {
                dir,
                fingerprint,
                state: state.clone(),
            },
            state,
        ))
    }

    pub fn dir(&self) -> &ManifestDir {
        &self.dir
    }

    /// The last good state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// `Ok(None)`: nothing changed. `Ok(Some(changes))`: the directory changed (the changes
    /// may be empty if only formatting did). `Err`: it changed into something invalid; the last
    /// good state stays and the error is reported once per change of the files.
    pub fn poll(&mut self) -> Result<Option<Vec<Change>>, LoadError> {
        let fp = self.dir.fingerprint();
        if fp == self.fingerprint {
            return Ok(None);
        }
        self.fingerprint = fp;
        let next = self.dir.load()?.state;
        let changes = diff(&self.state, &next);
        self.state = next;
        Ok(Some(changes))
    }
}

/// Loads a single manifest file, or a manifest directory with the objects `ferry apply`
/// stored: what every reader of "the manifests" (CLI, CNI, daemon) sees.
pub fn load_path(path: &Path) -> Result<Loaded, LoadError> {
    if path.is_dir() {
        ManifestDir::existing(path).load()
    } else {
        load_files(path)
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest files: the reading half of `cluster::model` (which parses text).

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError {
        file: path.display().to_string(),
        document: None,
        item: None,
        object: None,
        message: format!("cannot read: {e}"),
    })
}

/// Parses one file; its path (as given) names it in errors.
pub fn parse_file(path: &Path) -> Result<Parsed, LoadError> {
    parse_str(&path.display().to_string(), &read(path)?)
}

/// The manifest files of a directory: `*.yaml`, `*.yml`, `*.json`, sorted by name (not
/// recursive; hidden files skipped).
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |e: std::io::Error| LoadError {
        file: dir.display().to_string(),
        document: None,
        item: None,
        object: None,
        message: format!("cannot list: {e}"),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if p.is_file() && !name.starts_with('.') && matches!(ext, "yaml" | "yml" | "json") {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every manifest file of a directory, in name order.
pub fn parse_dir(dir: &Path) -> Result<Parsed, LoadError> {
    let mut out = Parsed::default();
    for f in manifest_files(dir)? {
        let p = parse_file(&f)?;
        out.objects.extend(p.objects);
        out.warnings.extend(p.warnings);
    }
    Ok(out)
}

/// Parses a file, or every manifest file of a directory.
pub fn parse_path(path: &Path) -> Result<Parsed, LoadError> {
    if path.is_dir() {
        parse_dir(path)
    } else {
        parse_file(path)
    }
}

/// Loads a file, or every manifest file of a directory (without the objects `ferry apply`
/// stored; [`load_path`] adds those).
pub fn load_files(path: &Path) -> Result<Loaded, LoadError> {
    ClusterState::from_parsed(parse_path(path)?)
}
