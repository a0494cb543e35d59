//! Per-worker counters. Verdicts on the packet path are fieldless `Copy` enums that index plain
//! counter arrays: counting a drop is one add, never a lookup or an allocation. The node daemon
//! publishes a worker's counters after each batch; the replay prints them as JSON.

use serde::Serialize;

/// Why the pipeline dropped a packet. Each reason has its own counter and a stable snake_case
/// name (the `reason` label in `/metrics`, the key in the replay summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    pub const COUNT: usize = 28;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::BadIpChecksum,
        DropReason::UnsupportedEthertype,
        DropReason::UnknownPort,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::Blackhole,
        DropReason::UnknownTunnelPeer,
        DropReason::VxlanBadVni,
        DropReason::VxlanMalformed,
        DropReason::TunnelFragment,
        DropReason::MalformedInner,
        DropReason::MtuExceeded,
        DropReason::NeighborUnresolved,
        DropReason::NoHeadroom,
        DropReason::PolicyDenied,
        DropReason::SpoofedSource,
        DropReason::SpoofedTunnelSource,
        DropReason::FragmentWithoutFirst,
        DropReason::FragmentTooSmall,
        DropReason::ConntrackFull,
        DropReason::WireguardNoPeer,
        DropReason::WireguardHandshakePending,
        DropReason::WireguardHandshakeFailed,
        DropReason::WireguardAuthFailed,
        DropReason::WireguardReplay,
        DropReason::WireguardUnknown,
        DropReason::WireguardConsumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::UnknownPort => "unknown_port",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoute => "no_route",
            DropReason::Blackhole => "blackhole",
            DropReason::UnknownTunnelPeer => "unknown_tunnel_peer",
            DropReason::VxlanBadVni => "vxlan_bad_vni",
            DropReason::VxlanMalformed => "vxlan_malformed",
            DropReason::TunnelFragment => "tunnel_fragment",
            DropReason::MalformedInner => "malformed_inner",
            DropReason::MtuExceeded => "mtu_exceeded",
            DropReason::NeighborUnresolved => "neighbor_unresolved",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::PolicyDenied => "policy_denied",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::SpoofedTunnelSource => "spoofed_tunnel_source",
            DropReason::FragmentWithoutFirst => "fragment_without_first",
            DropReason::FragmentTooSmall => "fragment_too_small",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::WireguardNoPeer => "wireguard_no_peer",
            DropReason::WireguardHandshakePending => "wireguard_handshake_pending",
            DropReason::WireguardHandshakeFailed => "wireguard_handshake_failed",
            DropReason::WireguardAuthFailed => "wireguard_auth_failed",
            DropReason::WireguardReplay => "wireguard_replay",
            DropReason::WireguardUnknown => "wireguard_unknown",
            DropReason::WireguardConsumed => "wireguard_consumed",
        }
    }
}

/// ICMP errors the router sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IcmpSent {
    TimeExceeded,
    FragNeeded,
}

impl IcmpSent {
    pub const COUNT: usize = 2;
    pub const ALL: [IcmpSent; Self::COUNT] = [IcmpSent::TimeExceeded, IcmpSent::FragNeeded];

    pub fn as_str(self) -> &'static str {
        match self {
            IcmpSent::TimeExceeded => "time_exceeded",
            IcmpSent::FragNeeded => "frag_needed",
        }
    }
}

/// One worker's counters. Plain integers: only the owning worker writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Handed to the kernel (ARP, the node's own traffic).
    pub host_packets: u64,
    pub drops: [u64; DropReason::COUNT],
    pub icmp_sent: [u64; IcmpSent::COUNT],
    /// ICMP errors suppressed by the rate limit.
    pub icmp_rate_limited: u64,
    pub decap_ipip: u64,
    pub decap_vxlan: u64,
    pub encap_ipip: u64,
    pub encap_vxlan: u64,
    pub decap_wireguard: u64,
    pub encap_wireguard: u64,
    pub batches: u64,
    /// Connections tracked (new flows allowed by policy).
    pub ct_created: u64,
    /// Packets of tracked connections (no policy evaluation).
    pub ct_established: u64,
    /// Unconfirmed connections evicted to make room.
    pub ct_early_dropped: u64,
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

    /// Adds another worker's counters (for node-wide totals).
    pub fn merge(&mut self, o: &Stats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.host_packets += o.host_packets;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        for (a, b) in self.icmp_sent.iter_mut().zip(o.icmp_sent) {
            *a += b;
        }
        self.icmp_rate_limited += o.icmp_rate_limited;
        self.decap_ipip += o.decap_ipip;
        self.decap_vxlan += o.decap_vxlan;
        self.encap_ipip += o.encap_ipip;
        self.encap_vxlan += o.encap_vxlan;
        self.decap_wireguard += o.decap_wireguard;
        self.encap_wireguard += o.encap_wireguard;
        self.batches += o.batches;
        self.ct_created += o.ct_created;
        self.ct_established += o.ct_established;
        self.ct_early_dropped += o.ct_early_dropped;
    }

    /// A serialisable summary with named drop reasons (zero counters left out).
    pub fn summary(&self) -> StatsSummary {
        StatsSummary {
            rx_packets: self.rx_packets,
            tx_packets: self.tx_packets,
            host_packets: self.host_packets,
            dropped_packets: self.total_drops(),
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
            icmp_rate_limited: self.icmp_rate_limited,
            decap_ipip: self.decap_ipip,
            decap_vxlan: self.decap_vxlan,
            encap_ipip: self.encap_ipip,
            encap_vxlan: self.encap_vxlan,
            ct_created: self.ct_created,
            ct_established: self.ct_established,
        }
    }
}

/// [`Stats`] with names, for JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSummary {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub host_packets: u64,
    pub dropped_packets: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
    pub icmp_sent: std::collections::BTreeMap<String, u64>,
    pub icmp_rate_limited: u64,
    pub decap_ipip: u64,
    pub decap_vxlan: u64,
    pub encap_ipip: u64,
    pub encap_vxlan: u64,
    pub ct_created: u64,
    pub ct_established: u64,
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
        assert_eq!(s.drops.get("ttl_exceeded"), Some(&1));
        assert!(!s.drops.contains_key("malformed"));
    }
}
