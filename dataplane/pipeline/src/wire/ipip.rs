//! IPv4-in-IPv4 (RFC 2003, IP protocol 4), Calico's IPIP mode: an outer IPv4 header between the
//! Ethernet header and the inner packet.

/// What encapsulation adds: one option-less IPv4 header.
pub const OVERHEAD: usize = super::ipv4::MIN_HEADER_LEN;

/// Outer TTL and DF as Linux's `tunl0` sets them: Calico's tunnel has `ttl inherit` and
/// `pmtudisc`, so the outer TTL copies the inner (already decremented) TTL and DF is always set.
#[inline]
pub fn outer_ttl(inner_ttl: u8) -> u8 {
    inner_ttl
}

/// The outer TOS: DSCP not copied (tunnel `tos 0`), ECN copied from the inner header with CE
/// turned into ECT(0) (RFC 6040 normal mode, `INET_ECN_encapsulate`).
#[inline]
pub fn outer_tos(inner_tos: u8) -> u8 {
    let ecn = inner_tos & 0x03;
    if ecn == 0x03 {
        0x02
    } else {
        ecn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecn_is_copied_with_ce_as_ect0_and_dscp_cleared() {
        assert_eq!(outer_tos(0xb8), 0x00);
        assert_eq!(outer_tos(0xb9), 0x01);
        assert_eq!(outer_tos(0x02), 0x02);
        assert_eq!(outer_tos(0x03), 0x02);
        assert_eq!(outer_ttl(63), 63);
    }
}
