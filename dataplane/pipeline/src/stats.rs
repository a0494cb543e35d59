//! Per-worker counters. Verdicts on the packet path are fieldless `Copy` enums that index plain
//! counter arrays: counting a drop is one add, never a lookup or an allocation. The node daemon
//! publishes a worker's counters after each batch; the replay prints them as JSON.
//!
//! Every counter is named once, in [`counters!`]'s invocation below: the plain [`Stats`] a
//! worker adds to, the atomic [`SharedStats`] it publishes them into for `/metrics`, merging,
//! publishing, loading and the JSON summary all come from that one list. Drop reasons and ICMP
//! kinds get their count, list and snake_case names from strum.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the pipeline dropped a packet. Each reason has its own counter and a stable snake_case
/// name (the `reason` label in `/metrics`, the key in the replay summary).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::EnumCount,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum DropReason {
    /// Ethernet or IPv4 header truncated or invalid (length, version, IHL, total length).
    Malformed,
    /// IPv4 header checksum does not verify.
    BadIpChecksum,
    /// Neither IPv4 nor ARP (IPv6, VLAN-tagged, LLDP, ...).
    UnsupportedEthertype,
    /// The frame arrived on a port the tables do not know.
    UnknownPort,
    /// TTL would reach zero; an ICMP time exceeded went back unless rate-limited.
    TtlExceeded,
    /// No route covers the destination.
    NoRoute,
    /// A blackhole route covers the destination (unallocated pool space, as Calico installs).
    Blackhole,
    /// IPIP or VXLAN addressed to this node from an address that is not a known node.
    UnknownTunnelPeer,
    /// VXLAN with a VNI other than this node's.
    VxlanBadVni,
    /// VXLAN header without the I flag, or a short UDP/VXLAN header.
    VxlanMalformed,
    /// A fragmented tunnel packet: Ferry does not reassemble outer packets.
    TunnelFragment,
    /// The packet inside a tunnel is not a valid IPv4 packet (or inner Ethernet frame).
    MalformedInner,
    /// Larger than the egress MTU after encapsulation; ICMP fragmentation needed went back when
    /// DF was set, otherwise dropped (Ferry does not fragment).
    MtuExceeded,
    /// The next hop's MAC address is not known yet.
    NeighborUnresolved,
    /// Not enough frame headroom to push the outer headers.
    NoHeadroom,
    /// Denied by network policy (the policy stage hooks in here).
    PolicyDenied,
    /// From a pod, with a source address that is not that pod's (strict reverse-path check).
    SpoofedSource,
    /// Decapsulated, with an inner source outside the sending node's blocks.
    SpoofedTunnelSource,
    /// A later fragment whose first fragment was not seen (policy cannot judge it).
    FragmentWithoutFirst,
    /// A first fragment too short to hold the transport ports (RFC 1858's tiny fragment).
    FragmentTooSmall,
    /// A new connection that the full connection table could not track.
    ConntrackFull,
    /// To a WireGuard peer the device does not know (no key yet).
    WireguardNoPeer,
    /// Queued inside the WireGuard peer while its handshake runs (sent after it, at most 256).
    WireguardHandshakePending,
    /// A handshake message that failed (bad MAC, unknown initiator, replayed timestamp).
    WireguardHandshakeFailed,
    /// Transport data whose authentication tag did not verify.
    WireguardAuthFailed,
    /// Transport data with a counter already seen or left of the replay window.
    WireguardReplay,
    /// For an unknown receiver index, not WireGuard, or not IPv4 inside.
    WireguardUnknown,
    /// Not an error: a keepalive or a cookie reply ends here.
    WireguardConsumed,
}

impl DropReason {
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;
    /// Every reason, in discriminant order.
    pub const ALL: [DropReason; Self::COUNT] = *<Self as strum::VariantArray>::VARIANTS
        .first_chunk()
        .expect("strum's VARIANTS has COUNT entries");

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// ICMP errors the router sends.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::VariantArray, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum IcmpSent {
    TimeExceeded,
    FragNeeded,
}

impl IcmpSent {
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;
    pub const ALL: [IcmpSent; Self::COUNT] = *<Self as strum::VariantArray>::VARIANTS
        .first_chunk()
        .expect("strum's VARIANTS has COUNT entries");

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Defines the scalar counters once: [`Stats`], [`SharedStats`], and the code that moves
/// numbers between them.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A worker's counters (plain integers: the worker alone writes them).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
            /// Per [`DropReason`], indexed by its discriminant.
            pub drops: [u64; DropReason::COUNT],
            /// Per [`IcmpSent`].
            pub icmp_sent: [u64; IcmpSent::COUNT],
        }

        /// A worker's counters as it last published them (written by the worker only, read by
        /// the metrics server).
        #[derive(Debug, Default)]
        pub struct SharedStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            pub drops: [AtomicU64; DropReason::COUNT],
            pub icmp_sent: [AtomicU64; IcmpSent::COUNT],
        }

        impl Stats {
            /// Adds another worker's counters.
            pub fn merge(&mut self, o: &Stats) {
                $(self.$name += o.$name;)*
                for (a, b) in self.drops.iter_mut().zip(o.drops) {
                    *a += b;
                }
                for (a, b) in self.icmp_sent.iter_mut().zip(o.icmp_sent) {
                    *a += b;
                }
            }

            /// The scalar counters by name, in declaration order.
            pub fn scalars(&self) -> [(&'static str, u64); counters!(@count $($name)*)] {
                [$((stringify!($name), self.$name),)*]
            }
        }

        impl SharedStats {
            /// Stores a worker's counters (relaxed: each is a statistic on its own).
            pub fn publish(&self, s: &Stats) {
                let r = Ordering::Relaxed;
                $(self.$name.store(s.$name, r);)*
                for (a, v) in self.drops.iter().zip(s.drops) {
                    a.store(v, r);
                }
                for (a, v) in self.icmp_sent.iter().zip(s.icmp_sent) {
                    a.store(v, r);
                }
            }

            /// The counters last published.
            pub fn load(&self) -> Stats {
                let r = Ordering::Relaxed;
                Stats {
                    $($name: self.$name.load(r),)*
                    drops: std::array::from_fn(|i| self.drops[i].load(r)),
                    icmp_sent: std::array::from_fn(|i| self.icmp_sent[i].load(r)),
                }
            }
        }
    };
    (@count) => { 0 };
    (@count $head:ident $($tail:ident)*) => { 1 + counters!(@count $($tail)*) };
}

counters! {
    rx_packets,
    rx_bytes,
    tx_packets,
    tx_bytes,
    /// Frames given to the kernel (ARP, the node's own traffic).
    host_packets,
    /// ICMP errors not sent because of the rate limit.
    icmp_rate_limited,
    decap_ipip,
    decap_vxlan,
    encap_ipip,
    encap_vxlan,
    decap_wireguard,
    encap_wireguard,
    batches,
    /// Connections the police stage started tracking.
    ct_created,
    /// Packets of tracked connections (or ICMP errors about them) let through by conntrack.
    ct_established,
    /// Tracked connections evicted early to make room.
    ct_early_dropped,
}

impl Stats {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn icmp(&self, k: IcmpSent) -> u64 {
        self.icmp_sent[k as usize]
    }

    /// A serialisable summary with named drop reasons (zero counters left out).
    pub fn summary(&self) -> StatsSummary {
        StatsSummary {
            dropped_packets: self.total_drops(),
            counters: self.scalars().into_iter().collect(),
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.dropped(**r) > 0)
                .map(|r| (r.as_str().to_string(), self.dropped(*r)))
                .collect(),
            icmp_sent: IcmpSent::ALL
                .iter()
                .filter(|k| self.icmp(**k) > 0)
                .map(|k| (k.as_str().to_string(), self.icmp(*k)))
                .collect(),
        }
    }
}

/// [`Stats`] with names, for JSON output: every scalar counter by its name, the total of
/// drops, and the non-zero drop reasons and ICMP errors.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSummary {
    #[serde(flatten)]
    pub counters: BTreeMap<&'static str, u64>,
    pub dropped_packets: u64,
    pub drops: BTreeMap<String, u64>,
    pub icmp_sent: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_table_is_complete_and_names_are_unique() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must follow the discriminants");
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn published_counters_load_back_equal() {
        let mut a = Stats {
            rx_packets: 7,
            ct_early_dropped: 2,
            ..Stats::default()
        };
        a.drop(DropReason::WireguardConsumed);
        a.icmp_sent[IcmpSent::FragNeeded as usize] = 4;
        let shared = SharedStats::default();
        shared.publish(&a);
        assert_eq!(shared.load(), a);
    }

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(DropReason::BadIpChecksum.as_str(), "bad_ip_checksum");
        assert_eq!(
            DropReason::WireguardHandshakePending.as_str(),
            "wireguard_handshake_pending"
        );
        assert_eq!(IcmpSent::FragNeeded.as_str(), "frag_needed");
        assert_eq!(DropReason::COUNT, 28);
    }

    #[test]
    fn merge_and_summary() {
        let mut a = Stats::default();
        a.drop(DropReason::NoRoute);
        a.rx_packets = 3;
        let mut b = Stats::default();
        b.drop(DropReason::NoRoute);
        b.drop(DropReason::TtlExceeded);
        a.merge(&b);
        assert_eq!(a.dropped(DropReason::NoRoute), 2);
        let s = a.summary();
        assert_eq!(s.dropped_packets, 3);
        assert_eq!(s.counters.get("rx_packets"), Some(&3));
        assert_eq!(s.drops.get("ttl_exceeded"), Some(&1));
        assert!(!s.drops.contains_key("malformed"));
    }
}
