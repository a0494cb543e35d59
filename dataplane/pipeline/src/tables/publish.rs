//! Publication of snapshots: one writer (the control plane) swaps in whole [`Tables`]; every
//! worker loads one snapshot per batch, lock-free (arc-swap), so a batch never sees half an
//! update and publishing never waits for a worker.

use super::Tables;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The writer's side of the published snapshot.
pub struct TablesPublisher {
    current: Arc<ArcSwap<Tables>>,
}

/// A worker's side: cheap to clone, one per worker.
#[derive(Clone)]
pub struct TablesReader {
    current: Arc<ArcSwap<Tables>>,
}

impl TablesPublisher {
    pub fn new(initial: Tables) -> (TablesPublisher, TablesReader) {
        let current = Arc::new(ArcSwap::from_pointee(initial));
        (
            TablesPublisher {
                current: current.clone(),
            },
            TablesReader { current },
        )
    }

    /// Makes `tables` the snapshot every batch from now on reads. Never waits for workers: a
    /// worker still holding the old snapshot finishes its batch with it, and the old snapshot
    /// is freed when the last batch drops it.
    pub fn publish(&self, tables: Tables) {
        self.current.store(Arc::new(tables));
    }

    pub fn current(&self) -> Arc<Tables> {
        self.current.load_full()
    }
}

impl TablesReader {
    /// The snapshot for one batch (lock-free; no allocation on the common path).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.current.load()
    }
}
