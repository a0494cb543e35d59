//! IPv4 longest-prefix match: DIR-24-8 with tbl8 groups, the structure of DPDK's `rte_lpm`.
//!
//! Why this structure: a forwarding lookup must cost the same whether the table holds ten
//! routes or a full BGP view, and it must touch as few cache lines as possible. DIR-24-8
//! spends memory to get there:
//!
//! - `tbl24` has one entry per /24 (2^24 entries, 64 MiB). The top 24 bits of the address
//!   index it directly. Every prefix of length 0 to 24 is expanded into the range of /24
//!   entries it covers, so a lookup that lands on a plain entry is finished after one load.
//! - A /24 that holds at least one longer prefix (/25 to /32) points instead to a tbl8
//!   *group*: 256 entries indexed by the low 8 bits of the address. Such a lookup costs a
//!   second, dependent load. In a real BGP table fewer than 4% of prefixes are longer than
//!   /24, so most lookups never take that path.
//!
//! Every entry is one `u32` (see [`Entry`] bits below): a 24-bit next hop, a valid bit, an
//! "extended" bit that turns the next hop field into a tbl8 group index, and the depth of the
//! rule that wrote the entry. Storing the depth in the entry is what makes updates
//! incremental: an insert only overwrites entries written by shorter rules, and a delete only
//! rewrites entries whose depth is the deleted depth, with the longest shorter rule that
//! covers the prefix. Nothing is ever rebuilt.
//!
//! The rule set itself (prefix, depth, next hop) is kept beside the tables, one hash map per
//! depth, because a delete needs to find the covering rule, and the control plane needs to
//! list what is installed. The pipeline only reads the tables.
//!
//! `tbl24` is allocated zeroed, which the allocator serves with fresh lazily-mapped pages: an
//! empty table costs address space, not memory, and only the /24 ranges that routes touch
//! become resident. tbl8 groups are allocated on demand up to a limit, and groups emptied by
//! deletes are reused through a free list.
//!
//! The table is a plain value: the control plane mutates a private copy and publishes it with
//! `Clone` (copy-on-publish); the workers only ever see immutable tables.
//!
//! [`Entry`]: #entry-layout
//!
//! # Entry layout
//!
//! ```text
//!  31     26 25  24  23                     0
//! +---------+---+---+------------------------+
//! |  depth  |ext|val|  next hop / group id   |
//! +---------+---+---+------------------------+
//! ```
//!
//! An all-zero entry is "no route". An entry with `ext` set only appears in `tbl24`.

use std::collections::HashMap;
use std::fmt;

/// Largest next hop a rule can carry: next hops are indexes into a route table and share the
/// entry word with the flags, so they have 24 bits.
pub const MAX_NEXT_HOP: u32 = (1 << 24) - 1;

/// tbl8 group limit of [`Lpm::new`]: 65,536 groups (64 MiB when all are in use), room for
/// every /24 that holds a longer prefix in a full Internet table (about 40,000 today).
pub const DEFAULT_MAX_TBL8_GROUPS: u32 = 1 << 16;

/// Hard ceiling on the tbl8 group limit: a group index must fit the 24-bit next hop field of a
/// `tbl24` entry.
pub const MAX_TBL8_GROUPS: u32 = 1 << 24;

/// Number of `tbl24` entries: one per /24.
const TBL24_LEN: usize = 1 << 24;
/// Number of entries in a tbl8 group: one per address of the /24.
const TBL8_GROUP_LEN: usize = 256;
/// Addresses per chunk in [`Lpm::lookup_batch`]: enough independent `tbl24` misses to fill
/// the memory pipeline, few enough that two chunks in flight fit the CPU's reorder window.
/// Measured on the DPDK test-fib workload (docs/benchmarks.md, LPM): 16 beat 8, 12, 20 and 32.
const BATCH_CHUNK: usize = 16;

const NH_MASK: u32 = 0x00ff_ffff;
const VALID: u32 = 1 << 24;
const EXT: u32 = 1 << 25;
const DEPTH_SHIFT: u32 = 26;

/// One tbl8 group: the 256 entries below one /24.
type Tbl8Group = [u32; TBL8_GROUP_LEN];

/// Why an update was refused. A refused update leaves the table exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LpmError {
    /// IPv4 prefixes are at most 32 bits long.
    #[error("invalid prefix length /{0}: IPv4 prefixes are /0 to /32")]
    InvalidDepth(u8),
    /// The next hop does not fit the 24 bits an entry has for it.
    #[error("next hop {0} is larger than the maximum {MAX_NEXT_HOP}")]
    NextHopTooLarge(u32),
    /// A prefix longer than /24 needs a tbl8 group for its /24 and all `limit` groups are in
    /// use.
    #[error("all {limit} tbl8 groups are in use")]
    Tbl8Exhausted {
        /// The group limit the table was created with.
        limit: u32,
    },
    /// No rule with this prefix (host bits masked off) and length is installed.
    #[error("no route {}/{depth}", std::net::Ipv4Addr::from(*prefix))]
    NotFound {
        /// The prefix, host byte order, host bits cleared.
        prefix: u32,
        /// The prefix length.
        depth: u8,
    },
}

/// An IPv4 longest-prefix-match table (DIR-24-8). See the [module docs](self) for the design.
///
/// Next hops are opaque 24-bit values (indexes into the caller's route table); prefixes and
/// addresses are `u32` in host byte order.
#[derive(Clone)]
pub struct Lpm {
    /// One entry per /24. A fixed-size array so that indexing with `addr >> 8` needs no
    /// bounds check.
    tbl24: Box<[u32; TBL24_LEN]>,
    /// tbl8 groups, in use or on the free list.
    tbl8: Vec<Tbl8Group>,
    /// Indexes of groups in `tbl8` that no /24 points to, reused before `tbl8` grows.
    free_groups: Vec<u32>,
    /// Most groups that may be in use at once.
    max_tbl8_groups: u32,
    /// The installed rules: `rules[depth]` maps a masked prefix to its next hop.
    rules: [HashMap<u32, u32>; 33],
    /// Number of installed rules (sum of the map sizes, kept to make `len` O(1)).
    len: usize,
}

impl Lpm {
    /// An empty table with room for [`DEFAULT_MAX_TBL8_GROUPS`] tbl8 groups.
    pub fn new() -> Self {
        Self::with_max_tbl8_groups(DEFAULT_MAX_TBL8_GROUPS)
    }

    /// An empty table whose prefixes longer than /24 may occupy at most `limit` distinct /24s
    /// (one tbl8 group each, 1 KiB). Groups are allocated when first needed, so a high limit
    /// costs nothing up front. `limit` is capped at [`MAX_TBL8_GROUPS`].
    pub fn with_max_tbl8_groups(limit: u32) -> Self {
        Self {
            tbl24: zeroed_tbl24(),
            tbl8: Vec::new(),
            free_groups: Vec::new(),
            max_tbl8_groups: limit.min(MAX_TBL8_GROUPS),
            rules: std::array::from_fn(|_| HashMap::new()),
            len: 0,
        }
    }

    /// Installs `prefix/depth -> next_hop`. `prefix` is in host byte order; bits beyond
    /// `depth` are masked off. Returns the previous next hop when the same prefix and length
    /// was already installed (the rule is replaced).
    ///
    /// On error nothing changes: a prefix longer than /24 takes its tbl8 group before any
    /// entry is written.
    pub fn insert(
        &mut self,
        prefix: u32,
        depth: u8,
        next_hop: u32,
    ) -> Result<Option<u32>, LpmError> {
        if depth > 32 {
            return Err(LpmError::InvalidDepth(depth));
        }
        if next_hop > MAX_NEXT_HOP {
            return Err(LpmError::NextHopTooLarge(next_hop));
        }
        let prefix = prefix & mask(depth);
        let new = route_entry(next_hop, depth);
        if depth <= 24 {
            self.fill_small(prefix, depth, new);
        } else {
            self.fill_big(prefix, depth, new)?;
        }
        let previous = self.rules_at_mut(depth).insert(prefix, next_hop);
        if previous.is_none() {
            self.len += 1;
        }
        Ok(previous)
    }

    /// Removes the rule `prefix/depth` (host bits masked off) and returns its next hop. The
    /// addresses it covered fall back to the longest shorter rule that covers them, if any.
    pub fn remove(&mut self, prefix: u32, depth: u8) -> Result<u32, LpmError> {
        if depth > 32 {
            return Err(LpmError::InvalidDepth(depth));
        }
        let prefix = prefix & mask(depth);
        let Some(next_hop) = self.rules_at_mut(depth).remove(&prefix) else {
            return Err(LpmError::NotFound { prefix, depth });
        };
        self.len -= 1;
        // The rule is already gone from the map, so this finds the rule that takes over.
        let replacement = self
            .covering_rule(prefix, depth)
            .map_or(0, |(nh, d)| route_entry(nh, d));
        if depth <= 24 {
            self.clear_small(prefix, depth, replacement);
        } else {
            self.clear_big(prefix, depth, replacement);
        }
        Ok(next_hop)
    }

    /// The next hop of the rule `prefix/depth` exactly (host bits masked off), not a
    /// longest-prefix match. `None` when no such rule or `depth > 32`.
    pub fn get(&self, prefix: u32, depth: u8) -> Option<u32> {
        let rules = self.rules.get(usize::from(depth))?;
        rules.get(&(prefix & mask(depth))).copied()
    }

    /// The next hop of the longest prefix that contains `addr` (host byte order), or `None`.
    ///
    /// One load from `tbl24`, plus one from a tbl8 group when the /24 holds longer prefixes.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let mut entry = self.tbl24[(addr >> 8) as usize];
        if entry & EXT != 0 {
            entry = self.tbl8_entry(entry, addr);
        }
        if entry & VALID != 0 {
            Some(entry & NH_MASK)
        } else {
            None
        }
    }

    /// Looks up a batch: `out[i]` is the next hop for `addrs[i]`, or `miss` when no route
    /// matches. If the lengths differ only the first `min(addrs.len(), out.len())` are done.
    ///
    /// Why a batch is faster than a loop of [`lookup`](Self::lookup): a lookup is one or two
    /// cache misses (64 MiB of `tbl24` does not stay cached) and little else, so throughput is
    /// set by how many misses are in flight at once. The addresses are taken in chunks of 16.
    /// The `tbl24` loads of a chunk are independent and issued together, *before* the
    /// previous chunk's dependent tbl8 loads and hard-to-predict "extended?" branches (a
    /// two-stage software pipeline), so a chunk's worth of misses stays in flight across
    /// branch mispredictions. DPDK's `rte_lpm_lookup_bulk` and FIB bulk lookup get the same
    /// effect from `rte_prefetch0`, which safe Rust cannot issue. (DPDK's prefetching loop,
    /// written with `_mm_prefetch`, measured slower than this one: docs/benchmarks.md, LPM.)
    pub fn lookup_batch(&self, addrs: &[u32], out: &mut [u32], miss: u32) {
        let n = addrs.len().min(out.len());
        let (addrs, out) = (&addrs[..n], &mut out[..n]);
        let mut addr_chunks = addrs.chunks_exact(BATCH_CHUNK);
        let mut out_chunks = out.chunks_exact_mut(BATCH_CHUNK);
        type Chunk<'a> = (
            [u32; BATCH_CHUNK],
            &'a [u32; BATCH_CHUNK],
            &'a mut [u32; BATCH_CHUNK],
        );
        let mut pending: Option<Chunk<'_>> = None;
        for (a, o) in (&mut addr_chunks).zip(&mut out_chunks) {
            // Fixed-size views let the compiler drop every bounds check in the chunk.
            let (Ok(a), Ok(o)) = (
                <&[u32; BATCH_CHUNK]>::try_from(a),
                <&mut [u32; BATCH_CHUNK]>::try_from(o),
            ) else {
                continue; // unreachable: chunks_exact yields BATCH_CHUNK elements
            };
            let mut entries = [0u32; BATCH_CHUNK];
            for (e, &addr) in entries.iter_mut().zip(a) {
                *e = self.tbl24[(addr >> 8) as usize];
            }
            if let Some((entries, a, o)) = pending.replace((entries, a, o)) {
                self.finish_chunk(entries, a, o, miss);
            }
        }
        if let Some((entries, a, o)) = pending {
            self.finish_chunk(entries, a, o, miss);
        }
        for (o, &addr) in out_chunks
            .into_remainder()
            .iter_mut()
            .zip(addr_chunks.remainder())
        {
            *o = self.lookup(addr).unwrap_or(miss);
        }
    }

    /// Second stage of [`lookup_batch`](Self::lookup_batch): tbl8 loads for the extended
    /// entries of a chunk, then the next hops.
    #[inline(always)]
    fn finish_chunk(
        &self,
        mut entries: [u32; BATCH_CHUNK],
        addrs: &[u32; BATCH_CHUNK],
        out: &mut [u32; BATCH_CHUNK],
        miss: u32,
    ) {
        for (e, &addr) in entries.iter_mut().zip(addrs) {
            if *e & EXT != 0 {
                *e = self.tbl8_entry(*e, addr);
            }
        }
        for (o, &e) in out.iter_mut().zip(&entries) {
            *o = if e & VALID != 0 { e & NH_MASK } else { miss };
        }
    }

    /// Number of installed rules.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no rule is installed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of tbl8 groups in use: the number of /24s holding a prefix longer than /24.
    pub fn tbl8_groups_in_use(&self) -> usize {
        self.tbl8.len() - self.free_groups.len()
    }

    /// The tbl8 group limit this table was created with (after capping).
    pub fn max_tbl8_groups(&self) -> u32 {
        self.max_tbl8_groups
    }

    /// The installed rules as `(prefix, depth, next_hop)`, by increasing depth; the order
    /// within one depth is unspecified.
    pub fn rules(&self) -> impl Iterator<Item = (u32, u8, u32)> + '_ {
        (0u8..).zip(self.rules.iter()).flat_map(|(depth, rules)| {
            rules
                .iter()
                .map(move |(&prefix, &next_hop)| (prefix, depth, next_hop))
        })
    }

    /// The tbl8 entry for `addr` below the extended `tbl24` entry `ext`. An index past the
    /// groups cannot happen (groups are never shrunk) and reads as "no route" rather than
    /// panicking in the data path.
    #[inline(always)]
    fn tbl8_entry(&self, ext: u32, addr: u32) -> u32 {
        match self.tbl8.get((ext & NH_MASK) as usize) {
            Some(group) => group[(addr & 0xff) as usize],
            None => 0,
        }
    }

    fn rules_at_mut(&mut self, depth: u8) -> &mut HashMap<u32, u32> {
        // depth <= 32 is checked by every caller; the array has 33 maps.
        &mut self.rules[usize::from(depth.min(32))]
    }

    /// The longest rule strictly shorter than `depth` that contains `prefix`.
    fn covering_rule(&self, prefix: u32, depth: u8) -> Option<(u32, u8)> {
        (0..depth).rev().find_map(|d| {
            let rules = self.rules.get(usize::from(d))?;
            rules.get(&(prefix & mask(d))).map(|&nh| (nh, d))
        })
    }

    /// Writes `new` (a rule of `depth` <= 24) over every entry of its /24 range, and of the
    /// tbl8 groups below that range, that belongs to no longer rule.
    fn fill_small(&mut self, prefix: u32, depth: u8, new: u32) {
        let Self { tbl24, tbl8, .. } = self;
        for slot in tbl24_range(tbl24, prefix, depth) {
            if *slot & EXT == 0 {
                if overwritable(*slot, depth) {
                    *slot = new;
                }
            } else if let Some(group) = tbl8.get_mut(group_index(*slot)) {
                for e in group.iter_mut().filter(|e| overwritable(**e, depth)) {
                    *e = new;
                }
            }
        }
    }

    /// Writes `new` (a rule of `depth` > 24) into the tbl8 group of its /24, creating the
    /// group, seeded with what the /24 resolved to so far, if there is none.
    fn fill_big(&mut self, prefix: u32, depth: u8, new: u32) -> Result<(), LpmError> {
        let i24 = (prefix >> 8) as usize;
        let current = self.tbl24[i24];
        if current & EXT != 0 {
            if let Some(group) = self.tbl8.get_mut(group_index(current)) {
                for e in group_range(group, prefix, depth) {
                    if overwritable(*e, depth) {
                        *e = new;
                    }
                }
            }
            return Ok(());
        }
        // `current` is what every address of the /24 resolves to now (a rule of depth <= 24,
        // or nothing); the new group starts as a copy of it.
        let group_id = self.alloc_group()?;
        let mut group: Tbl8Group = [current; TBL8_GROUP_LEN];
        for e in group_range(&mut group, prefix, depth) {
            *e = new;
        }
        if let Some(slot) = self.tbl8.get_mut(group_id as usize) {
            *slot = group;
        }
        // The group is complete before tbl24 points to it.
        self.tbl24[i24] = VALID | EXT | group_id;
        Ok(())
    }

    /// Rewrites the entries that rule `prefix/depth` (depth <= 24) wrote with `replacement`.
    fn clear_small(&mut self, prefix: u32, depth: u8, replacement: u32) {
        let Self { tbl24, tbl8, .. } = self;
        for slot in tbl24_range(tbl24, prefix, depth) {
            if *slot & EXT == 0 {
                if written_by(*slot, depth) {
                    *slot = replacement;
                }
            } else if let Some(group) = tbl8.get_mut(group_index(*slot)) {
                for e in group.iter_mut().filter(|e| written_by(**e, depth)) {
                    *e = replacement;
                }
            }
        }
        // Groups below the range still hold their longer rules: none can collapse here.
    }

    /// Rewrites the entries that rule `prefix/depth` (depth > 24) wrote with `replacement`,
    /// then folds the group back into `tbl24` if no rule longer than /24 is left in it.
    fn clear_big(&mut self, prefix: u32, depth: u8, replacement: u32) {
        let i24 = (prefix >> 8) as usize;
        let current = self.tbl24[i24];
        if current & EXT == 0 {
            return; // unreachable: a rule longer than /24 always has a group
        }
        let group_id = group_index(current);
        let Some(group) = self.tbl8.get_mut(group_id) else {
            return;
        };
        for e in group_range(group, prefix, depth) {
            if written_by(*e, depth) {
                *e = replacement;
            }
        }
        // With no entry deeper than /24 left, all 256 entries come from the same covering
        // rule (or none): they are identical and one tbl24 entry says the same.
        if group
            .iter()
            .all(|&e| e & VALID == 0 || entry_depth(e) <= 24)
        {
            self.tbl24[i24] = group[0];
            self.free_groups.push(group_id as u32);
        }
    }

    /// A free tbl8 group index, reusing freed groups first.
    /// Reserves room for `groups` more tbl8 groups, so that building a large table does not
    /// copy the groups again and again as the vector grows.
    pub fn reserve_tbl8_groups(&mut self, groups: usize) {
        let room = (self.max_tbl8_groups as usize).saturating_sub(self.tbl8.len());
        self.tbl8.reserve(groups.min(room));
    }

    fn alloc_group(&mut self) -> Result<u32, LpmError> {
        if let Some(id) = self.free_groups.pop() {
            return Ok(id);
        }
        let exhausted = LpmError::Tbl8Exhausted {
            limit: self.max_tbl8_groups,
        };
        let id = u32::try_from(self.tbl8.len()).map_err(|_| exhausted.clone())?;
        if id >= self.max_tbl8_groups {
            return Err(exhausted);
        }
        self.tbl8.push([0; TBL8_GROUP_LEN]);
        Ok(id)
    }
}

impl Default for Lpm {
    fn default() -> Self {
        Self::new()
    }
}

/// Summarises instead of printing 16 million entries.
impl fmt::Debug for Lpm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm")
            .field("rules", &self.len)
            .field("tbl8_groups_in_use", &self.tbl8_groups_in_use())
            .field("max_tbl8_groups", &self.max_tbl8_groups)
            .finish_non_exhaustive()
    }
}

/// A zeroed `tbl24`, built through `Vec` so that it is one zeroed allocation (lazily mapped
/// pages) and never a 64 MiB value on the stack.
fn zeroed_tbl24() -> Box<[u32; TBL24_LEN]> {
    match vec![0u32; TBL24_LEN].into_boxed_slice().try_into() {
        Ok(table) => table,
        Err(_) => unreachable!("vec![_; TBL24_LEN] has TBL24_LEN entries"),
    }
}

/// The network mask of a prefix length (`depth` <= 32).
#[inline]
fn mask(depth: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(depth.min(32)))
        .unwrap_or(0)
}

#[inline]
fn route_entry(next_hop: u32, depth: u8) -> u32 {
    VALID | (u32::from(depth) << DEPTH_SHIFT) | (next_hop & NH_MASK)
}

#[inline]
fn entry_depth(entry: u32) -> u8 {
    (entry >> DEPTH_SHIFT) as u8
}

#[inline]
fn group_index(ext_entry: u32) -> usize {
    (ext_entry & NH_MASK) as usize
}

/// May a rule of `depth` write over `entry`? Yes unless a longer rule wrote it. Equal depth
/// means the same rule (one prefix per depth covers a given address): that is a replace.
#[inline]
fn overwritable(entry: u32, depth: u8) -> bool {
    entry & VALID == 0 || entry_depth(entry) <= depth
}

/// Was `entry` written by the rule of `depth` that covers it?
#[inline]
fn written_by(entry: u32, depth: u8) -> bool {
    entry & VALID != 0 && entry_depth(entry) == depth
}

/// The `tbl24` entries of `prefix/depth`, `depth` <= 24, `prefix` masked.
fn tbl24_range(tbl24: &mut [u32; TBL24_LEN], prefix: u32, depth: u8) -> &mut [u32] {
    let first = (prefix >> 8) as usize;
    let count = 1usize << (24 - depth.min(24));
    tbl24.get_mut(first..first + count).unwrap_or_default()
}

/// The entries of a tbl8 group covered by `prefix/depth`, 24 < `depth` <= 32, `prefix` masked.
fn group_range(group: &mut Tbl8Group, prefix: u32, depth: u8) -> &mut [u32] {
    let first = (prefix & 0xff) as usize;
    let count = 1usize << (32 - depth.clamp(24, 32));
    group.get_mut(first..first + count).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_be_bytes([a, b, c, d])
    }

    /// Linear longest match over a list of rules: obviously right, used as the oracle.
    #[derive(Default, Clone)]
    struct Reference {
        rules: HashMap<(u32, u8), u32>,
    }

    impl Reference {
        fn lookup(&self, addr: u32) -> Option<u32> {
            self.rules
                .iter()
                .filter(|((p, d), _)| addr & mask(*d) == *p)
                .max_by_key(|((_, d), _)| *d)
                .map(|(_, &nh)| nh)
        }
    }

    /// The invariants the lookup path relies on, checked from the outside.
    fn check_groups(lpm: &Lpm, reference: &Reference) {
        let mut slash24s: Vec<u32> = reference
            .rules
            .keys()
            .filter(|(_, d)| *d > 24)
            .map(|(p, _)| p >> 8)
            .collect();
        slash24s.sort_unstable();
        slash24s.dedup();
        assert_eq!(lpm.tbl8_groups_in_use(), slash24s.len());
        assert_eq!(lpm.len(), reference.rules.len());
        let mut rules: Vec<_> = lpm.rules().collect();
        rules.sort_unstable();
        let mut expected: Vec<_> = reference
            .rules
            .iter()
            .map(|(&(p, d), &nh)| (p, d, nh))
            .collect();
        expected.sort_unstable();
        assert_eq!(rules, expected);
    }

    #[test]
    fn empty_table_misses() {
        let lpm = Lpm::new();
        assert!(lpm.is_empty());
        assert_eq!(lpm.len(), 0);
        assert_eq!(lpm.lookup(0), None);
        assert_eq!(lpm.lookup(u32::MAX), None);
        let mut out = [7u32; 3];
        lpm.lookup_batch(&[0, 1, 2], &mut out, 99);
        assert_eq!(out, [99; 3]);
    }

    #[test]
    fn default_route_matches_everything() {
        let mut lpm = Lpm::new();
        assert_eq!(lpm.insert(ip(1, 2, 3, 4), 0, 5), Ok(None));
        assert_eq!(
            lpm.get(0, 0),
            Some(5),
            "host bits of a /0 are all masked off"
        );
        for addr in [0, 1, ip(10, 0, 0, 1), ip(255, 255, 255, 255)] {
            assert_eq!(lpm.lookup(addr), Some(5));
        }
        lpm.insert(ip(10, 0, 0, 0), 8, 6).unwrap();
        lpm.insert(ip(10, 1, 1, 128), 25, 7).unwrap();
        assert_eq!(lpm.lookup(ip(10, 1, 1, 1)), Some(6));
        assert_eq!(lpm.lookup(ip(10, 1, 1, 200)), Some(7));
        assert_eq!(lpm.lookup(ip(11, 0, 0, 0)), Some(5));
        assert_eq!(lpm.remove(0, 0), Ok(5));
        assert_eq!(lpm.lookup(ip(11, 0, 0, 0)), None);
        assert_eq!(lpm.lookup(ip(10, 1, 1, 1)), Some(6));
        assert_eq!(lpm.lookup(ip(10, 1, 1, 200)), Some(7));
    }

    #[test]
    fn host_route_matches_one_address() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(192, 0, 2, 1), 32, 1).unwrap();
        assert_eq!(lpm.lookup(ip(192, 0, 2, 1)), Some(1));
        assert_eq!(lpm.lookup(ip(192, 0, 2, 0)), None);
        assert_eq!(lpm.lookup(ip(192, 0, 2, 2)), None);
        assert_eq!(lpm.tbl8_groups_in_use(), 1);
        lpm.insert(ip(255, 255, 255, 255), 32, 2).unwrap();
        assert_eq!(lpm.lookup(u32::MAX), Some(2));
        assert_eq!(lpm.lookup(u32::MAX - 1), None);
        lpm.insert(0, 32, 3).unwrap();
        assert_eq!(lpm.lookup(0), Some(3));
        assert_eq!(lpm.lookup(1), None);
    }

    #[test]
    fn slash24_boundaries() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(10, 0, 1, 0), 24, 1).unwrap();
        assert_eq!(lpm.lookup(ip(10, 0, 0, 255)), None);
        assert_eq!(lpm.lookup(ip(10, 0, 1, 0)), Some(1));
        assert_eq!(lpm.lookup(ip(10, 0, 1, 255)), Some(1));
        assert_eq!(lpm.lookup(ip(10, 0, 2, 0)), None);
        assert_eq!(lpm.tbl8_groups_in_use(), 0);
        // /23 and /25 around the /24.
        lpm.insert(ip(10, 0, 2, 0), 23, 2).unwrap();
        assert_eq!(lpm.lookup(ip(10, 0, 3, 255)), Some(2));
        assert_eq!(lpm.lookup(ip(10, 0, 4, 0)), None);
    }

    #[test]
    fn slash25_inside_slash24() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(10, 0, 0, 0), 24, 1).unwrap();
        lpm.insert(ip(10, 0, 0, 128), 25, 2).unwrap();
        assert_eq!(lpm.lookup(ip(10, 0, 0, 127)), Some(1));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 128)), Some(2));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 255)), Some(2));
        assert_eq!(lpm.tbl8_groups_in_use(), 1);
        // Replacing the /24 must not touch the /25 half of the group.
        assert_eq!(lpm.insert(ip(10, 0, 0, 0), 24, 3), Ok(Some(1)));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 0)), Some(3));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 200)), Some(2));
        // Removing the /24 leaves the /25 and a hole.
        assert_eq!(lpm.remove(ip(10, 0, 0, 0), 24), Ok(3));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 0)), None);
        assert_eq!(lpm.lookup(ip(10, 0, 0, 200)), Some(2));
        // Removing the /25 frees the group.
        assert_eq!(lpm.remove(ip(10, 0, 0, 128), 25), Ok(2));
        assert_eq!(lpm.tbl8_groups_in_use(), 0);
        assert_eq!(lpm.lookup(ip(10, 0, 0, 200)), None);
        assert!(lpm.is_empty());
    }

    #[test]
    fn overlapping_prefixes_in_every_insertion_order() {
        let rules: [(u32, u8, u32); 6] = [
            (ip(10, 0, 0, 0), 8, 1),
            (ip(10, 1, 0, 0), 16, 2),
            (ip(10, 1, 1, 0), 24, 3),
            (ip(10, 1, 1, 0), 26, 4),
            (ip(10, 1, 1, 32), 30, 5),
            (ip(10, 1, 1, 33), 32, 6),
        ];
        let probes = [
            (ip(10, 2, 0, 0), Some(1)),
            (ip(10, 1, 2, 0), Some(2)),
            (ip(10, 1, 1, 100), Some(3)),
            (ip(10, 1, 1, 0), Some(4)),
            (ip(10, 1, 1, 34), Some(5)),
            (ip(10, 1, 1, 33), Some(6)),
            (ip(11, 0, 0, 0), None),
        ];
        let mut order: Vec<usize> = (0..rules.len()).collect();
        let mut count = 0;
        permutations(&mut order, 0, &mut |order| {
            count += 1;
            let mut lpm = Lpm::new();
            for &i in order {
                let (p, d, nh) = rules[i];
                assert_eq!(lpm.insert(p, d, nh), Ok(None));
            }
            for (addr, want) in probes {
                assert_eq!(lpm.lookup(addr), want, "order {order:?} addr {addr:#x}");
            }
            // And delete in the same order, checking against the rules left.
            let mut reference = Reference::default();
            for &(p, d, nh) in &rules {
                reference.rules.insert((p, d), nh);
            }
            for &i in order {
                let (p, d, nh) = rules[i];
                assert_eq!(lpm.remove(p, d), Ok(nh));
                reference.rules.remove(&(p, d));
                for (addr, _) in probes {
                    assert_eq!(lpm.lookup(addr), reference.lookup(addr));
                }
                check_groups(&lpm, &reference);
            }
            assert_eq!(lpm.tbl8_groups_in_use(), 0);
        });
        assert_eq!(count, 720);
    }

    fn permutations(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permutations(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn replace_returns_previous_next_hop() {
        let mut lpm = Lpm::new();
        assert_eq!(lpm.insert(ip(10, 0, 0, 0), 8, 1), Ok(None));
        assert_eq!(lpm.insert(ip(10, 9, 9, 9), 8, 2), Ok(Some(1)));
        assert_eq!(lpm.lookup(ip(10, 200, 0, 1)), Some(2));
        assert_eq!(lpm.insert(ip(10, 0, 0, 4), 30, 3), Ok(None));
        assert_eq!(lpm.insert(ip(10, 0, 0, 5), 30, 4), Ok(Some(3)));
        assert_eq!(lpm.lookup(ip(10, 0, 0, 6)), Some(4));
        assert_eq!(lpm.len(), 2);
        assert_eq!(lpm.tbl8_groups_in_use(), 1);
    }

    #[test]
    fn remove_missing_is_not_found() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
        assert_eq!(
            lpm.remove(ip(10, 0, 0, 0), 9),
            Err(LpmError::NotFound {
                prefix: ip(10, 0, 0, 0),
                depth: 9
            })
        );
        assert_eq!(
            lpm.remove(ip(10, 1, 2, 3), 16),
            Err(LpmError::NotFound {
                prefix: ip(10, 1, 0, 0),
                depth: 16
            })
        );
        assert_eq!(
            lpm.remove(ip(10, 1, 2, 3), 8),
            Ok(1),
            "host bits are masked"
        );
        assert_eq!(
            lpm.remove(ip(10, 0, 0, 0), 8),
            Err(LpmError::NotFound {
                prefix: ip(10, 0, 0, 0),
                depth: 8
            })
        );
    }

    #[test]
    fn invalid_arguments_are_refused() {
        let mut lpm = Lpm::new();
        assert_eq!(lpm.insert(0, 33, 1), Err(LpmError::InvalidDepth(33)));
        assert_eq!(lpm.insert(0, 255, 1), Err(LpmError::InvalidDepth(255)));
        assert_eq!(lpm.remove(0, 33), Err(LpmError::InvalidDepth(33)));
        assert_eq!(lpm.get(0, 33), None);
        assert_eq!(
            lpm.insert(0, 8, MAX_NEXT_HOP + 1),
            Err(LpmError::NextHopTooLarge(MAX_NEXT_HOP + 1))
        );
        assert_eq!(
            lpm.insert(0, 8, u32::MAX),
            Err(LpmError::NextHopTooLarge(u32::MAX))
        );
        assert!(lpm.is_empty());
        assert_eq!(lpm.insert(0, 8, MAX_NEXT_HOP), Ok(None));
        assert_eq!(lpm.lookup(1), Some(MAX_NEXT_HOP));
        assert_eq!(
            LpmError::NotFound {
                prefix: ip(10, 0, 0, 0),
                depth: 8
            }
            .to_string(),
            "no route 10.0.0.0/8"
        );
    }

    #[test]
    fn tbl8_exhaustion_leaves_table_unchanged() {
        let mut lpm = Lpm::with_max_tbl8_groups(2);
        lpm.insert(ip(10, 0, 0, 0), 16, 1).unwrap();
        lpm.insert(ip(10, 0, 1, 1), 32, 2).unwrap();
        lpm.insert(ip(10, 0, 2, 1), 32, 3).unwrap();
        // Same /24 as an existing group: no new group needed.
        lpm.insert(ip(10, 0, 2, 128), 25, 4).unwrap();
        let before = lpm.clone();
        assert_eq!(
            lpm.insert(ip(10, 0, 3, 1), 32, 5),
            Err(LpmError::Tbl8Exhausted { limit: 2 })
        );
        assert_eq!(lpm.len(), 4);
        assert_eq!(lpm.get(ip(10, 0, 3, 1), 32), None);
        assert_eq!(lpm.tbl8_groups_in_use(), 2);
        assert!(lpm.tbl24[..] == before.tbl24[..]);
        assert!(lpm.tbl8 == before.tbl8);
        assert_eq!(lpm.lookup(ip(10, 0, 3, 1)), Some(1));
        // Freeing one group makes room again.
        lpm.remove(ip(10, 0, 1, 1), 32).unwrap();
        assert_eq!(lpm.insert(ip(10, 0, 3, 1), 32, 5), Ok(None));
        assert_eq!(lpm.lookup(ip(10, 0, 3, 1)), Some(5));

        let mut none = Lpm::with_max_tbl8_groups(0);
        assert_eq!(
            none.insert(1, 25, 1),
            Err(LpmError::Tbl8Exhausted { limit: 0 })
        );
        assert_eq!(none.insert(1, 24, 1), Ok(None));
        assert_eq!(
            Lpm::with_max_tbl8_groups(u32::MAX).max_tbl8_groups(),
            MAX_TBL8_GROUPS
        );
    }

    #[test]
    fn groups_collapse_and_are_reused() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(172, 16, 0, 0), 12, 9).unwrap();
        for i in 0..50u32 {
            let base = ip(172, 16, 0, 0) + (i << 8);
            lpm.insert(base + 64, 26, i).unwrap();
            lpm.insert(base + 65, 32, 100 + i).unwrap();
        }
        assert_eq!(lpm.tbl8_groups_in_use(), 50);
        for i in 0..50u32 {
            let base = ip(172, 16, 0, 0) + (i << 8);
            assert_eq!(lpm.lookup(base + 65), Some(100 + i));
            assert_eq!(lpm.lookup(base + 66), Some(i));
            assert_eq!(lpm.lookup(base + 1), Some(9));
            lpm.remove(base + 64, 26).unwrap();
            lpm.remove(base + 65, 32).unwrap();
        }
        assert_eq!(lpm.tbl8_groups_in_use(), 0);
        assert_eq!(lpm.len(), 1);
        assert_eq!(lpm.lookup(ip(172, 16, 3, 65)), Some(9));
        // Freed groups are reused: the group vector does not grow.
        let allocated = lpm.tbl8.len();
        for i in 0..50u32 {
            lpm.insert(ip(172, 17, 0, 0) + (i << 8), 28, i).unwrap();
        }
        assert_eq!(lpm.tbl8.len(), allocated);
        assert_eq!(lpm.tbl8_groups_in_use(), 50);
    }

    #[test]
    fn clone_is_independent() {
        let mut a = Lpm::new();
        a.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
        a.insert(ip(10, 0, 0, 1), 32, 2).unwrap();
        let b = a.clone();
        a.remove(ip(10, 0, 0, 1), 32).unwrap();
        a.insert(ip(10, 0, 0, 0), 8, 3).unwrap();
        assert_eq!(b.lookup(ip(10, 0, 0, 1)), Some(2));
        assert_eq!(b.lookup(ip(10, 0, 0, 2)), Some(1));
        assert_eq!(a.lookup(ip(10, 0, 0, 1)), Some(3));
        assert_eq!(
            format!("{b:?}"),
            "Lpm { rules: 2, tbl8_groups_in_use: 1, max_tbl8_groups: 65536, .. }"
        );
    }

    #[test]
    fn lookup_batch_handles_any_lengths() {
        let mut lpm = Lpm::new();
        lpm.insert(ip(10, 0, 0, 0), 8, 1).unwrap();
        lpm.insert(ip(10, 0, 0, 7), 32, 2).unwrap();
        let addrs: Vec<u32> = (0..40)
            .map(|i| ip(10, 0, 0, i))
            .chain([ip(11, 0, 0, 0)])
            .collect();
        for len in [0, 1, 15, 16, 17, 33, 41] {
            let mut out = vec![0xdead; len];
            lpm.lookup_batch(&addrs, &mut out, u32::MAX);
            for (i, &o) in out.iter().enumerate() {
                assert_eq!(o, lpm.lookup(addrs[i]).unwrap_or(u32::MAX));
            }
            // Shorter input than output: the tail of `out` is untouched.
            let mut out = vec![0xdead; 50];
            lpm.lookup_batch(&addrs[..len], &mut out, u32::MAX);
            assert!(out[len..].iter().all(|&o| o == 0xdead));
        }
    }

    // ---- property tests ----

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u8, u32),
        Remove(u32, u8),
    }

    /// Prefixes packed into a few small regions (and around 0 and the top of the space) so
    /// that random rules overlap, share /24s and get removed again.
    fn prefix() -> impl Strategy<Value = u32> {
        let base = prop_oneof![
            Just(0u32),
            Just(ip(10, 0, 0, 0)),
            Just(ip(10, 0, 255, 0)),
            Just(ip(192, 168, 1, 0)),
            Just(ip(255, 255, 252, 0)),
        ];
        (base, 0u32..0x400).prop_map(|(b, off)| b.wrapping_add(off))
    }

    /// Every length can occur, most are /20 to /32 where tbl8 groups live. Very short
    /// prefixes are rare: each one rewrites millions of entries, slow in a debug build.
    fn depth() -> impl Strategy<Value = u8> {
        prop_oneof![1 => 0u8..=7, 8 => 8u8..=19, 24 => 20u8..=32]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (prefix(), depth(), 0u32..8).prop_map(|(p, d, nh)| Op::Insert(p, d, nh)),
            2 => (prefix(), depth()).prop_map(|(p, d)| Op::Remove(p, d)),
        ]
    }

    fn probes(reference: &Reference, random: &[u32]) -> Vec<u32> {
        let mut addrs = random.to_vec();
        for &(p, d) in reference.rules.keys() {
            let last = p | !mask(d);
            for a in [p, last] {
                addrs.extend([a, a.wrapping_sub(1), a.wrapping_add(1)]);
            }
        }
        addrs
    }

    fn apply(lpm: &mut Lpm, reference: &mut Reference, op: &Op) {
        match *op {
            Op::Insert(p, d, nh) => {
                let key = (p & mask(d), d);
                match lpm.insert(p, d, nh) {
                    Ok(previous) => {
                        assert_eq!(previous, reference.rules.insert(key, nh));
                    }
                    Err(LpmError::Tbl8Exhausted { .. }) => {
                        // Only a new /24 with a long prefix may be refused.
                        assert!(d > 24);
                        assert_eq!(lpm.tbl8_groups_in_use() as u32, lpm.max_tbl8_groups());
                        assert!(!reference
                            .rules
                            .keys()
                            .any(|&(q, e)| e > 24 && q >> 8 == key.0 >> 8));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Op::Remove(p, d) => {
                let key = (p & mask(d), d);
                match reference.rules.remove(&key) {
                    Some(nh) => assert_eq!(lpm.remove(p, d), Ok(nh)),
                    None => assert_eq!(
                        lpm.remove(p, d),
                        Err(LpmError::NotFound {
                            prefix: key.0,
                            depth: d
                        })
                    ),
                }
            }
        }
    }

    fn check_lookups(lpm: &Lpm, reference: &Reference, addrs: &[u32]) {
        let mut out = vec![0; addrs.len()];
        lpm.lookup_batch(addrs, &mut out, u32::MAX);
        for (&addr, &got) in addrs.iter().zip(&out) {
            let want = reference.lookup(addr);
            assert_eq!(lpm.lookup(addr), want, "lookup {addr:#010x}");
            assert_eq!(got, want.unwrap_or(u32::MAX), "lookup_batch {addr:#010x}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_reference(
            ops in proptest::collection::vec(op(), 1..60),
            random in proptest::collection::vec(any::<u32>(), 32),
        ) {
            let mut lpm = Lpm::new();
            let mut reference = Reference::default();
            for op in &ops {
                apply(&mut lpm, &mut reference, op);
            }
            check_groups(&lpm, &reference);
            check_lookups(&lpm, &reference, &probes(&reference, &random));
            for &(p, d) in reference.rules.keys() {
                prop_assert_eq!(lpm.get(p, d), reference.rules.get(&(p, d)).copied());
            }
            // Removing everything returns the table to empty, groups included.
            let keys: Vec<_> = reference.rules.keys().copied().collect();
            for (p, d) in keys {
                apply(&mut lpm, &mut reference, &Op::Remove(p, d));
            }
            prop_assert!(lpm.is_empty());
            prop_assert_eq!(lpm.tbl8_groups_in_use(), 0);
            check_lookups(&lpm, &reference, &random);
        }

        #[test]
        fn matches_reference_with_few_tbl8_groups(
            limit in 0u32..4,
            ops in proptest::collection::vec(op(), 1..60),
            random in proptest::collection::vec(any::<u32>(), 16),
        ) {
            let mut lpm = Lpm::with_max_tbl8_groups(limit);
            let mut reference = Reference::default();
            for op in &ops {
                apply(&mut lpm, &mut reference, op);
                prop_assert!(lpm.tbl8_groups_in_use() <= limit as usize);
            }
            check_groups(&lpm, &reference);
            check_lookups(&lpm, &reference, &probes(&reference, &random));
        }
    }
}
