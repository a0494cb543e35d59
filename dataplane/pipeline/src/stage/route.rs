//! Stage 3, route: one DIR-24-8 lookup for the whole batch, so the table loads of all its
//! packets overlap instead of waiting on each other (all tbl24 loads first, then the tbl8
//! ones). Packets no longer travelling are looked up too (a wasted load is cheaper than a
//! branch per packet) and their result ignored.

use crate::packet::{Packet, BATCH};
use crate::tables::{Tables, NO_ROUTE};

pub(crate) fn run(batch: &mut [Packet<'_>], tables: &Tables) {
    let n = batch.len().min(BATCH);
    let mut dst = [0u32; BATCH];
    let mut adj = [NO_ROUTE; BATCH];
    for (d, p) in dst.iter_mut().zip(batch.iter()) {
        *d = p.dst;
    }
    tables.lookup_batch(&dst[..n], &mut adj[..n]);
    for (p, a) in batch.iter_mut().zip(adj) {
        p.adj = a;
    }
}
