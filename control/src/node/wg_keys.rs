//! A node's WireGuard key pair and its publication, as Calico does it: the private key is
//! generated once and kept in node-local state readable only by root
//! (`STATE/wireguard/NODE/private.key`, mode 0600, written atomically); the public key goes into the
//! Node annotation `projectcalico.org/WireguardPublicKey` — through the API server in
//! Kubernetes mode, through `.ferry/applied.yaml` (what `ferry apply` writes) in the manifest
//! directory.

use crate::kube::{ApiError, KubeClient, Resource};
use crate::manifest_dir::ManifestDir;
use cluster::compile::WIREGUARD_KEY_ANNOTATION;
use cluster::model::Node;
use pipeline::wireguard::{WgKey, WgPrivateKey};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a WireGuard private key (base64 of 32 bytes)")]
    Invalid { path: PathBuf },
    #[error("{path}: readable by others (mode {mode:o}); expected 0600")]
    Exposed { path: PathBuf, mode: u32 },
}

/// Where the node's private key lives: `STATE/wireguard/NODE/private.key` (the node name keeps
/// keys apart when nodes share a state directory, as the lab's do).
pub fn key_path(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("wireguard").join(node).join("private.key")
}

/// The node's private key: read from `STATE/wireguard/private.key`, or generated (32 bytes
/// from the kernel's random source) and written there with mode 0600 by temp file + fsync +
/// rename, so a crash never leaves half a key. Returns the key and whether it is new. Every
/// buffer that held the key (the file's text, the random bytes) is erased after use.
pub fn load_or_create(state_dir: &Path, node: &str) -> Result<(WgPrivateKey, bool), KeyFileError> {
    let path = key_path(state_dir, node);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyFileError::Io { path, source }
    };
    match std::fs::read_to_string(&path).map(Zeroizing::new) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)
                .map_err(io(&path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Exposed {
                    path,
                    mode: mode & 0o777,
                });
            }
            let key = WgPrivateKey::from_base64(&text)
                .map_err(|_| KeyFileError::Invalid { path: path.clone() })?;
            return Ok((key, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    let dir = path.parent().unwrap_or(state_dir).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    for d in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(io(d))?;
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut *bytes))
        .map_err(io(Path::new("/dev/urandom")))?;
    let key = WgPrivateKey::from_bytes(*bytes);
    let tmp = dir.join(format!(".private.key.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut line = key.to_base64();
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&path)(e));
    }
    Ok((key, true))
}

/// The Node object with `key` in its WireGuard annotation, as YAML for `ferry apply` (JSON is
/// YAML). The object keeps its labels, other annotations and addresses.
pub fn node_with_key(node: &Node, key: &WgKey) -> String {
    let mut annotations = node.metadata.annotations.clone();
    annotations.insert(WIREGUARD_KEY_ANNOTATION.to_string(), key.to_base64());
    let addresses: Vec<serde_json::Value> = node
        .status
        .addresses
        .iter()
        .map(|a| serde_json::json!({"type": a.kind, "address": a.address}))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.metadata.name,
            "labels": node.metadata.labels,
            "annotations": annotations,
        },
        "status": {"addresses": addresses},
    })
    .to_string()
}

/// Publishes the public key in the manifest directory (a no-op when it is already there).
pub fn publish_in_dir(dir: &ManifestDir, node: &Node, key: &WgKey) -> anyhow::Result<()> {
    if node.metadata.annotations.get(WIREGUARD_KEY_ANNOTATION) == Some(&key.to_base64()) {
        return Ok(());
    }
    dir.apply("ferry node (wireguard key)", &node_with_key(node, key))?;
    Ok(())
}

/// Publishes the public key on the Node in the API (read, set the annotation, replace with
/// the read resourceVersion; a conflict re-reads, three tries).
pub fn publish_in_kube(client: &KubeClient, node: &str, key: &WgKey) -> Result<(), ApiError> {
    let mut last = None;
    for _ in 0..3 {
        let mut obj = client.get(&Resource::nodes(), node)?;
        if obj["metadata"]["annotations"][WIREGUARD_KEY_ANNOTATION].as_str()
            == Some(&key.to_base64())
        {
            return Ok(());
        }
        if !obj["metadata"]["annotations"].is_object() {
            obj["metadata"]["annotations"] = serde_json::json!({});
        }
        obj["metadata"]["annotations"][WIREGUARD_KEY_ANNOTATION] =
            serde_json::Value::String(key.to_base64());
        match client.replace(&Resource::nodes(), &obj) {
            Ok(_) => return Ok(()),
            Err(e @ ApiError::Conflict(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::Conflict("node update kept conflicting".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("ferry-wgkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (k1, new1) = load_or_create(&dir, "n1").unwrap();
        assert!(new1);
        let mode = std::fs::metadata(key_path(&dir, "n1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, new2) = load_or_create(&dir, "n1").unwrap();
        assert!(!new2);
        assert_eq!(k1.public_key(), k2.public_key());
        // A key others can read is refused rather than used.
        std::fs::set_permissions(key_path(&dir, "n1"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            load_or_create(&dir, "n1"),
            Err(KeyFileError::Exposed { .. })
        ));
        std::fs::write(key_path(&dir, "n1"), "not a key").unwrap();
        std::fs::set_permissions(key_path(&dir, "n1"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(matches!(
            load_or_create(&dir, "n1"),
            Err(KeyFileError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
