//! A lab's state file under [`STATE_DIR`] (which process owns it, how far `up` got) and its id.

use super::*;
use crate::sys;
use crate::topology::Topology;
use crate::LabError;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// `fl-<id>` from `id`, `fl-id` or `fl-id-`, checked.
pub fn normalize_id(id: &str) -> Result<String, LabError> {
    let id = id.trim_end_matches('-');
    let id = id.strip_prefix(PREFIX_ROOT).unwrap_or(id);
    let bad = |reason: &str| LabError::BadId {
        id: id.to_owned(),
        reason: reason.to_owned(),
    };
    if id.is_empty() {
        return Err(bad("it is empty"));
    }
    if id.len() > ID_MAX {
        return Err(bad(&format!("at most {ID_MAX} characters")));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(bad("use only a-z and 0-9"));
    }
    Ok(id.to_owned())
}

/// The namespace prefix of a lab id: `fl-<id>-`.
pub fn prefix_of(id: &str) -> String {
    format!("{PREFIX_ROOT}{id}-")
}

pub(super) fn state_path(id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{PREFIX_ROOT}{id}.json"))
}

pub(super) fn log_dir(id: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{PREFIX_ROOT}{id}"))
}

pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn io_err(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what, source }
}

pub(super) fn read_state(id: &str) -> Result<Option<LabState>, LabError> {
    let path = state_path(id);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| LabError::StateFormat { path, source })
}

/// Creates the state file, failing if it exists: the claim that makes `up` race-free. The
/// content is written to a private file first and hard-linked into place, so no reader ever sees
/// a half-written state file (which would look like an orphan).
pub(super) fn claim_state(state: &LabState) -> Result<(), LabError> {
    fs::create_dir_all(STATE_DIR).map_err(io_err(format!("creating {STATE_DIR}")))?;
    let path = state_path(&state.id);
    let tmp = path.with_extension(format!("json.{}.claim", std::process::id()));
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    fs::write(&tmp, json).map_err(io_err(format!("writing {}", tmp.display())))?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(LabError::Exists {
            id: state.id.clone(),
            detail: format!("its state file {} exists", path.display()),
        }),
        Err(e) => Err(io_err(format!("creating {}", path.display()))(e)),
    }
}

/// Rewrites the state file atomically.
pub(super) fn write_state(state: &LabState) -> Result<(), LabError> {
    let path = state_path(&state.id);
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    fs::write(&tmp, json).map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_err(format!("renaming {}", tmp.display())))
}

pub(super) fn preflight(topology: &Topology) -> Result<(), LabError> {
    if !sys::is_root() {
        return Err(LabError::NotRoot);
    }
    let mut need = vec!["ip"];
    if topology.spec().disable_offloads {
        need.push("ethtool");
    }
    for p in need {
        if !sys::have_program(p) {
            return Err(LabError::MissingProgram(p));
        }
    }
    Ok(())
}

/// Whether anything of lab `id` exists: its state file or a namespace with its prefix.
pub(super) fn exists(id: &str) -> Result<Option<String>, LabError> {
    if state_path(id).exists() {
        return Ok(Some(format!(
            "its state file {} exists",
            state_path(id).display()
        )));
    }
    let ns = sys::netns_with_prefix(&prefix_of(id))?;
    if !ns.is_empty() {
        return Ok(Some(format!(
            "{} namespace(s) with prefix {} exist ({}…)",
            ns.len(),
            prefix_of(id),
            ns[0]
        )));
    }
    Ok(None)
}

pub(super) fn fresh_id() -> Result<String, LabError> {
    for _ in 0..64 {
        let id = format!("{:04x}", sys::random_u32() & 0xffff);
        if exists(&id)?.is_none() {
            return Ok(id);
        }
    }
    Err(LabError::BadId {
        id: "(random)".into(),
        reason: "no free random id after 64 tries".into(),
    })
}
