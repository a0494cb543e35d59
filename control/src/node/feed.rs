//! Where a cluster source's changes come from: a watched manifest directory or the Kubernetes
//! source's change channel, both as the same [`Change`]s over the last good [`ClusterState`].
//! Reading only: compiling the changes into tables is [`super::cluster_tables`]'s.

use crate::kube::{KubeConfig, KubeSource, Resource};
use crate::manifest_dir::DirWatcher;
use anyhow::{bail, Context, Result};
use cluster::model::{ClusterState, Kind};
use cluster::source::{apply_changes, Change};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where cluster changes come from.
pub(super) enum Feed {
    Dir(DirWatcher),
    Kube {
        rx: std::sync::mpsc::Receiver<Change>,
        state: ClusterState,
        stop: Arc<AtomicBool>,
    },
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Feed::Kube { stop, .. } = self {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// New changes, the state after them, and when they were applied (if known).
type FeedUpdate<'a> = (Vec<Change>, &'a ClusterState, Option<std::time::SystemTime>);

/// How long the daemon waits for the first complete list of every resource.
const KUBE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

impl Feed {
    /// Starts the Kubernetes source and waits until every resource was listed once.
    pub(super) fn kube(kubeconfig: Option<&Path>) -> Result<(Feed, ClusterState)> {
        let config =
            KubeConfig::load(kubeconfig).context("cannot configure the Kubernetes client")?;
        let resources = Resource::all();
        let mut waiting: std::collections::BTreeSet<Kind> =
            resources.iter().filter_map(Resource::model_kind).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        // The threads end with the stop flag; they are not joined.
        drop(
            KubeSource::new(config, resources)
                .start(tx, stop.clone())
                .context("cannot start the Kubernetes source")?,
        );
        let mut state = ClusterState::default();
        let deadline = Instant::now() + KUBE_SYNC_TIMEOUT;
        let mut pending = Vec::new();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(c) => {
                    if let Change::Reset { kind, .. } = &c {
                        waiting.remove(kind);
                    }
                    pending.push(c);
                }
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    bail!(
                        "the Kubernetes API did not list {} within {}s",
                        waiting
                            .iter()
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        KUBE_SYNC_TIMEOUT.as_secs()
                    );
                }
            }
        }
        apply_changes(&mut state, &pending, "kubernetes")
            .context("the cluster's objects do not make a valid state")?;
        Ok((
            Feed::Kube {
                rx,
                state: state.clone(),
                stop,
            },
            state,
        ))
    }

    /// The current (last good) cluster state.
    pub(super) fn state(&self) -> &ClusterState {
        match self {
            Feed::Dir(w) => w.state(),
            Feed::Kube { state, .. } => state,
        }
    }

    /// New changes and the state after them; `Ok(None)` when nothing changed.
    pub(super) fn poll(&mut self) -> Result<Option<FeedUpdate<'_>>> {
        match self {
            Feed::Dir(w) => match w.poll() {
                Ok(None) => Ok(None),
                Ok(Some(changes)) => {
                    let stamp = w.dir().last_write();
                    Ok(Some((changes, w.state(), stamp)))
                }
                Err(e) => bail!(
                    "the manifests changed into an invalid state, keeping the current tables: {e}"
                ),
            },
            Feed::Kube { rx, state, .. } => {
                let changes: Vec<Change> = rx.try_iter().collect();
                if changes.is_empty() {
                    return Ok(None);
                }
                let received = std::time::SystemTime::now();
                apply_changes(state, &changes, "kubernetes").context(
                    "the cluster's changes make an invalid state, keeping the current tables",
                )?;
                Ok(Some((changes, &*state, Some(received))))
            }
        }
    }
}
