//! Router-originated ICMP errors: built in place in the frame of the packet that caused them,
//! and rate-limited the way Linux limits them.

use crate::wire::icmp::{kind, IcmpErrorRepr};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::{ethernet, Frame};

/// Linux quotes as much of the offending datagram as fits in a 576-byte reply (RFC 1812 4.3.2.3).
pub const MAX_ERROR_LEN: usize = 576;
const ICMP_HDR: usize = crate::wire::icmp::HEADER_LEN;
const REPLY_HDRS: usize = ipv4::MIN_HEADER_LEN + ICMP_HDR;
/// Linux marks ICMP errors as network control (`IPTOS_PREC_INTERNETCONTROL`).
const TOS_INTERNETCONTROL: u8 = 0xc0;
const NS_PER_MS: u64 = 1_000_000;

/// Whether an error may be sent about this packet at all (RFC 1122 3.2.2, RFC 1812 4.3.2.7):
/// never about an ICMP error, a non-first fragment, or a packet from an address that is not a
/// unicast host (0.0.0.0, loopback, multicast, broadcast).
pub fn may_reply_to(ip: &Ipv4Packet<&[u8]>) -> bool {
    let src = ip.src();
    let first_octet = (src >> 24) as u8;
    if src == 0 || src == u32::MAX || first_octet == 127 || (224..=239).contains(&first_octet) {
        return false;
    }
    if ip.frag_offset() != 0 {
        return false;
    }
    if ip.protocol() == ipv4::protocol::ICMP {
        // The ICMP type is the first payload byte; an unreadable one is treated as an error.
        return match ip.payload().first() {
            Some(t) => !kind::is_error(*t),
            None => false,
        };
    }
    true
}

/// Rewrites `frame` (Ethernet + the offending IPv4 packet) into Ethernet + IPv4 + ICMP error
/// quoting the offending packet, addressed back to its source. The 28 bytes of new headers go
/// into the headroom in front of the quoted packet, which stays where it is; the Ethernet
/// header is left for the rewrite stage. Returns the destination (the offender's source), or
/// `None` when the frame lacks headroom (the caller then just drops).
pub fn build_error(frame: &mut Frame<'_>, err: IcmpErrorRepr, src: u32, ident: u16) -> Option<u32> {
    let eth = ethernet::HEADER_LEN;
    let (offender_src, quote_len) = {
        let ip = Ipv4Packet::new_checked(frame.data().get(eth..)?).ok()?;
        (ip.src(), ip.total_len().min(MAX_ERROR_LEN - REPLY_HDRS))
    };
    frame.truncate(eth + quote_len);
    frame.push_front(REPLY_HDRS).ok()?;
    let data = frame.data_mut();
    let msg = &mut data[eth + ipv4::MIN_HEADER_LEN..];
    err.emit(msg);
    Ipv4Repr {
        src,
        dst: offender_src,
        protocol: ipv4::protocol::ICMP,
        ttl: 64,
        tos: TOS_INTERNETCONTROL,
        ident,
        dont_frag: false,
        payload_len: (ICMP_HDR + quote_len) as u16,
    }
    .emit(&mut data[eth..]);
    Some(offender_src)
}

/// Linux's ICMP rate limit: a global token bucket (`icmp_msgs_per_sec` 1000, `icmp_msgs_burst`
/// 50) and a per-destination one (`icmp_ratelimit` 1000 ms, burst 6 × that), applied to the
/// types in `icmp_ratemask` (destination unreachable and time exceeded among them) — except
/// fragmentation needed, which Linux never limits because path MTU discovery depends on it.
/// Fixed-size and allocation-free: destinations hash into a small table, and a collision just
/// starts the newcomer with a full bucket (as a fresh inet_peer would).
pub struct IcmpRateLimiter {
    global_tokens: u64,
    global_last_ns: u64,
    peers: Box<[PeerBucket; PEER_SLOTS]>,
}

#[derive(Clone, Copy, Default)]
struct PeerBucket {
    dst: u32,
    used: bool,
    /// Credit in nanoseconds, capped at `BURST_NS`.
    credit_ns: u64,
    last_ns: u64,
}

const PEER_SLOTS: usize = 256;
const GLOBAL_PER_SEC: u64 = 1000;
const GLOBAL_BURST: u64 = 50;
const PEER_INTERVAL_NS: u64 = 1000 * NS_PER_MS;
const PEER_BURST_NS: u64 = 6 * PEER_INTERVAL_NS;

impl Default for IcmpRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl IcmpRateLimiter {
    pub fn new() -> Self {
        IcmpRateLimiter {
            global_tokens: GLOBAL_BURST,
            global_last_ns: 0,
            peers: Box::new([PeerBucket::default(); PEER_SLOTS]),
        }
    }

    /// True when an error of this type/code to `dst` may be sent at time `now_ns`.
    pub fn allow(&mut self, msg_type: u8, code: u8, dst: u32, now_ns: u64) -> bool {
        if msg_type == kind::DEST_UNREACHABLE && code == kind::CODE_FRAG_NEEDED {
            return true;
        }
        // Global bucket: refill at GLOBAL_PER_SEC, capped at the burst.
        let elapsed = now_ns.saturating_sub(self.global_last_ns);
        let refill = elapsed.saturating_mul(GLOBAL_PER_SEC) / 1_000_000_000;
        if refill > 0 {
            self.global_tokens = (self.global_tokens + refill).min(GLOBAL_BURST);
            self.global_last_ns = now_ns;
        }
        if self.global_tokens == 0 {
            return false;
        }
        // Per-destination bucket (inet_peer_xrlim_allow).
        let slot = &mut self.peers[(dst.wrapping_mul(0x9e37_79b1) >> 24) as usize % PEER_SLOTS];
        if !slot.used || slot.dst != dst {
            *slot = PeerBucket {
                dst,
                used: true,
                credit_ns: PEER_BURST_NS,
                last_ns: now_ns,
            };
        }
        slot.credit_ns = (slot.credit_ns + now_ns.saturating_sub(slot.last_ns)).min(PEER_BURST_NS);
        slot.last_ns = now_ns;
        if slot.credit_ns < PEER_INTERVAL_NS {
            return false;
        }
        slot.credit_ns -= PEER_INTERVAL_NS;
        self.global_tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_exceeded_is_rate_limited_per_destination_like_linux() {
        let mut rl = IcmpRateLimiter::new();
        let t = 10 * 1_000_000_000;
        // Burst of 6, then one per second.
        let sent = (0..20)
            .filter(|_| rl.allow(kind::TIME_EXCEEDED, 0, 1, t))
            .count();
        assert_eq!(sent, 6);
        assert!(!rl.allow(kind::TIME_EXCEEDED, 0, 1, t + 500 * NS_PER_MS));
        assert!(rl.allow(kind::TIME_EXCEEDED, 0, 1, t + 1000 * NS_PER_MS));
        // Another destination has its own bucket.
        assert!(rl.allow(kind::TIME_EXCEEDED, 0, 2, t));
    }

    #[test]
    fn frag_needed_is_never_limited() {
        let mut rl = IcmpRateLimiter::new();
        assert!((0..1000).all(|_| rl.allow(kind::DEST_UNREACHABLE, kind::CODE_FRAG_NEEDED, 7, 0)));
    }

    #[test]
    fn global_budget_caps_a_spray_over_many_destinations() {
        let mut rl = IcmpRateLimiter::new();
        let t = 5 * 1_000_000_000;
        let sent = (0..1000u32)
            .filter(|d| rl.allow(kind::TIME_EXCEEDED, 0, *d, t))
            .count();
        assert_eq!(sent as u64, GLOBAL_BURST);
        // 100 ms later 100 more tokens have accrued, capped at the burst.
        let later = (1000..2000u32)
            .filter(|d| rl.allow(kind::TIME_EXCEEDED, 0, *d, t + 100 * NS_PER_MS))
            .count();
        assert_eq!(later as u64, GLOBAL_BURST);
    }
}
