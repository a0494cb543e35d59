//! Hashes of the packet path: the 3-word mix behind ECMP source ports and IP ID buckets, and
//! the IPv4 identification generator for packets this node originates.

/// A small, fast 3-word mix (murmur3's finaliser over a multiply-xor combine): good enough to
/// spread flows over ECMP paths and ID buckets, not a cryptographic hash.
#[inline]
pub fn mix3(a: u32, b: u32, c: u32) -> u32 {
    let mut h = a.wrapping_mul(0xcc9e_2d51)
        ^ b.rotate_left(15).wrapping_mul(0x1b87_3593)
        ^ c.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// IPv4 identification for packets this node originates (outer tunnel headers, ICMP errors,
/// WireGuard datagrams), the way Linux's `__ip_select_ident` does it: a counter per hash bucket
/// of (source, destination, protocol), starting from a random point, so IDs are not
/// predictable across destinations yet stay unique per flow for reassembly.
pub struct IdentGenerator {
    seed: u32,
    counters: Box<[u16; IDENT_SLOTS]>,
}

const IDENT_SLOTS: usize = 2048;

impl IdentGenerator {
    pub fn new(seed: u64) -> Self {
        let mut counters = Box::new([0u16; IDENT_SLOTS]);
        let mut s = seed | 1;
        for c in counters.iter_mut() {
            // xorshift64: a different start for each bucket.
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *c = s as u16;
        }
        IdentGenerator {
            seed: (seed >> 32) as u32 ^ seed as u32,
            counters,
        }
    }

    #[inline]
    pub fn next(&mut self, src: u32, dst: u32, protocol: u8) -> u16 {
        let h = mix3(src ^ self.seed, dst, u32::from(protocol));
        let c = &mut self.counters[h as usize % IDENT_SLOTS];
        *c = c.wrapping_add(1);
        *c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_counts_per_flow() {
        let mut g = IdentGenerator::new(42);
        let a = g.next(1, 2, 4);
        assert_eq!(g.next(1, 2, 4), a.wrapping_add(1));
    }

    #[test]
    fn mix3_spreads_neighbouring_inputs() {
        // Flows that differ in one port must land in different ECMP buckets most of the time.
        let buckets: std::collections::BTreeSet<u32> =
            (0..64u32).map(|p| mix3(1, 2, p) % 16).collect();
        assert!(
            buckets.len() >= 12,
            "64 flows hit only {} of 16 buckets",
            buckets.len()
        );
    }
}
