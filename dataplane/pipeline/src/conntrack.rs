//! Connection tracking: one table per worker (no lock, no allocation after construction), so
//! established flows pass without a policy evaluation and replies of allowed connections are let
//! back in.
//!
//! - A flow is keyed by its 5-tuple as first seen (the *original* direction); both directions
//!   hash to the same place (the key is ordered before hashing), and a hit says whether the
//!   packet is a reply.
//! - TCP is followed through a small state machine (SYN sent → SYN received → established →
//!   FIN seen → closed/time-wait, RST closes), each state with its own timeout as Linux's
//!   `nf_conntrack_proto_tcp` has; UDP and ICMP echo have an "unreplied" and a "replied"
//!   timeout. An ICMP error quoting a tracked flow is *related* to it (Linux's RELATED).
//! - The table is bounded: open addressing with a probe window of [`PROBE`] slots. A new flow
//!   takes a free or expired slot in its window, else evicts the window's oldest *unconfirmed*
//!   flow (SYN sent, unreplied UDP/ICMP — Linux's early drop); if every slot holds a confirmed
//!   flow, the new flow is refused and counted (`full`): a SYN flood churns through unconfirmed
//!   slots but cannot push established connections out or grow memory.
//! - Hashing is seeded per table so that an attacker cannot aim flows at one window.
//! - Time is passed in (nanoseconds from any fixed origin), so the table is testable without
//!   clocks and runs the same in replay.

/// Slots probed for one key.
pub const PROBE: usize = 8;

/// IP protocol numbers the tracker knows.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// TCP flag bits (as in the header's 13th byte).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A flow as a packet shows it. For ICMP echo, `src_port` is the identifier and `dst_port` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowTuple {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl FlowTuple {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> FlowTuple {
        FlowTuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    /// Direction-independent form: the lower (address, port) end first.
    fn canonical(&self) -> FlowTuple {
        if (self.src, self.src_port) <= (self.dst, self.dst_port) {
            *self
        } else {
            self.reversed()
        }
    }
}

/// Where a tracked flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Free,
    TcpSynSent,
    TcpSynRecv,
    /// A TCP flow first seen mid-stream (no SYN): picked up as Linux does with
    /// `nf_conntrack_tcp_loose=1`, so connections survive a restart of the tracker. It stays
    /// unconfirmed (evictable, short timeout) until a packet is seen each way.
    TcpPickedUp,
    TcpEstablished,
    TcpFinWait,
    TcpTimeWait,
    TcpClose,
    /// UDP or ICMP, no reply seen yet.
    Unreplied,
    /// UDP or ICMP, a reply was seen.
    Replied,
}

impl State {
    /// Confirmed flows (both directions seen) are never evicted by new ones.
    fn confirmed(self) -> bool {
        matches!(
            self,
            State::TcpEstablished | State::TcpFinWait | State::Replied
        )
    }
}

/// Timeouts in seconds (Linux's defaults, `net.netfilter.nf_conntrack_*`, except established
/// TCP: 2 hours instead of 5 days, so forgotten flows free their slot within a working day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_replied: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 7200,
            tcp_fin_wait: 120,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 120,
            icmp: 30,
        }
    }
}

impl Timeouts {
    fn of(&self, proto: u8, s: State) -> u32 {
        match s {
            State::Free => 0,
            State::TcpSynSent => self.tcp_syn_sent,
            State::TcpSynRecv | State::TcpPickedUp => self.tcp_syn_recv,
            State::TcpEstablished => self.tcp_established,
            State::TcpFinWait => self.tcp_fin_wait,
            State::TcpTimeWait => self.tcp_time_wait,
            State::TcpClose => self.tcp_close,
            State::Unreplied | State::Replied if proto == PROTO_ICMP => self.icmp,
            State::Unreplied => self.udp_unreplied,
            State::Replied => self.udp_replied,
        }
    }
}

/// One slot.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// The flow in its original direction.
    key: FlowTuple,
    state: State,
    expires_ns: u64,
    /// Which policy verdict let the flow in (for counters); opaque to the tracker.
    tag: u32,
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A tracked flow: its slot, and whether this packet goes the reply way.
    Hit { slot: u32, reply: bool },
    /// Not tracked.
    Miss,
}

/// Counters, read by the worker once per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtStats {
    pub created: u64,
    /// Slots reused because their flow had expired.
    pub expired: u64,
    /// Unconfirmed flows evicted to make room (early drop).
    pub early_dropped: u64,
    /// New flows refused: every slot of their window held a confirmed flow.
    pub full: u64,
}

/// Why a new flow was not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Every slot in the flow's window holds a live confirmed flow.
    Full,
}

/// A worker's connection table.
pub struct ConnTrack {
    slots: Box<[Entry]>,
    mask: usize,
    seed: u64,
    timeouts: Timeouts,
    stats: CtStats,
}

impl std::fmt::Debug for ConnTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTrack")
            .field("capacity", &self.slots.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit affects every output bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const NS_PER_S: u64 = 1_000_000_000;

impl ConnTrack {
    /// A table of at least `capacity` slots (rounded up to a power of two, at least
    /// [`PROBE`]), allocated once. `seed` keys the hash (use something unpredictable).
    pub fn new(capacity: usize, seed: u64, timeouts: Timeouts) -> ConnTrack {
        let n = capacity.max(PROBE).next_power_of_two();
        ConnTrack {
            slots: vec![Entry::default(); n].into_boxed_slice(),
            mask: n - 1,
            seed,
            timeouts,
            stats: CtStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> CtStats {
        self.stats
    }

    fn home(&self, t: &FlowTuple) -> usize {
        let c = t.canonical();
        let a = (u64::from(c.src) << 32) | u64::from(c.dst);
        let b = (u64::from(c.src_port) << 24) | (u64::from(c.dst_port) << 8) | u64::from(c.proto);
        (mix(a ^ self.seed) ^ mix(b.wrapping_add(self.seed.rotate_left(17)))) as usize & self.mask
    }

    fn live(&self, e: &Entry, now_ns: u64) -> bool {
        e.state != State::Free && e.expires_ns > now_ns
    }

    /// Finds the flow of a packet.
    #[inline]
    pub fn lookup(&self, t: &FlowTuple, now_ns: u64) -> Lookup {
        self.lookup_from(self.home(t), t, now_ns)
    }

    /// The slot where a flow's entry would start, with that slot read so that its cache line is
    /// on its way in. The pipeline asks for a whole batch before it looks any of them up (as
    /// DPDK's bulk hash lookups do): the cache misses of 64 packets then overlap instead of
    /// stalling one after the other. (A read, not a prefetch instruction: no `unsafe`.)
    #[inline]
    pub fn home_touched(&self, t: &FlowTuple) -> usize {
        let home = self.home(t);
        std::hint::black_box(self.slots[home].expires_ns);
        home
    }

    /// [`ConnTrack::lookup`] from the slot [`ConnTrack::home_touched`] returned for `t`.
    #[inline]
    pub fn lookup_from(&self, home: usize, t: &FlowTuple, now_ns: u64) -> Lookup {
        let reversed = t.reversed();
        for i in 0..PROBE {
            let s = (home + i) & self.mask;
            let e = &self.slots[s];
            if !self.live(e, now_ns) {
                continue;
            }
            if e.key == *t {
                return Lookup::Hit {
                    slot: s as u32,
                    reply: false,
                };
            }
            if e.key == reversed {
                return Lookup::Hit {
                    slot: s as u32,
                    reply: true,
                };
            }
        }
        Lookup::Miss
    }

    /// Starts tracking a new flow whose first packet is `t` (with `tcp_flags` for TCP).
    /// Returns the slot. A TCP flow starting without SYN is picked up mid-stream
    /// ([`State::TcpPickedUp`]).
    pub fn insert(
        &mut self,
        t: &FlowTuple,
        tcp_flags: u8,
        tag: u32,
        now_ns: u64,
    ) -> Result<u32, InsertError> {
        let state = match t.proto {
            PROTO_TCP if tcp_flags & TCP_SYN != 0 && tcp_flags & TCP_ACK == 0 => State::TcpSynSent,
            PROTO_TCP => State::TcpPickedUp,
            _ => State::Unreplied,
        };
        let home = self.home(t);
        // A free or expired slot, else the oldest unconfirmed flow of the window.
        let mut victim: Option<(usize, u64)> = None;
        let mut chosen = None;
        for i in 0..PROBE {
            let s = (home + i) & self.mask;
            let e = &self.slots[s];
            if !self.live(e, now_ns) {
                if e.state != State::Free {
                    self.stats.expired += 1;
                }
                chosen = Some(s);
                break;
            }
            if !e.state.confirmed() && victim.is_none_or(|(_, exp)| e.expires_ns < exp) {
                victim = Some((s, e.expires_ns));
            }
        }
        let slot = match (chosen, victim) {
            (Some(s), _) => s,
            (None, Some((s, _))) => {
                self.stats.early_dropped += 1;
                s
            }
            (None, None) => {
                self.stats.full += 1;
                return Err(InsertError::Full);
            }
        };
        self.slots[slot] = Entry {
            key: *t,
            state,
            expires_ns: now_ns + u64::from(self.timeouts.of(t.proto, state)) * NS_PER_S,
            tag,
        };
        self.stats.created += 1;
        Ok(slot as u32)
    }

    /// Advances a tracked flow with one of its packets: `reply` as [`Lookup::Hit`] said,
    /// `tcp_flags` for TCP. Returns the state after the packet.
    pub fn update(&mut self, slot: u32, reply: bool, tcp_flags: u8, now_ns: u64) -> State {
        let timeouts = self.timeouts;
        let Some(e) = self.slots.get_mut(slot as usize) else {
            return State::Free;
        };
        let next = match (e.key.proto, e.state) {
            (PROTO_TCP, s) => tcp_next(s, reply, tcp_flags),
            (_, State::Unreplied) if reply => State::Replied,
            (_, s) => s,
        };
        e.state = next;
        e.expires_ns = now_ns + u64::from(timeouts.of(e.key.proto, next)) * NS_PER_S;
        next
    }

    /// Whether a packet starts a new connection over an old one's entry: a SYN (without ACK)
    /// in the original direction of a closing or closed TCP connection (a reused source port
    /// within time-wait). Linux re-evaluates such a connection; so must policy.
    pub fn is_restart(&self, slot: u32, reply: bool, tcp_flags: u8) -> bool {
        !reply
            && tcp_flags & TCP_SYN != 0
            && tcp_flags & TCP_ACK == 0
            && matches!(
                self.state(slot),
                State::TcpFinWait | State::TcpTimeWait | State::TcpClose
            )
    }

    /// Forgets a flow.
    pub fn remove(&mut self, slot: u32) {
        if let Some(e) = self.slots.get_mut(slot as usize) {
            *e = Entry::default();
        }
    }

    /// The policy tag stored with a flow.
    pub fn tag(&self, slot: u32) -> u32 {
        self.slots.get(slot as usize).map_or(0, |e| e.tag)
    }

    /// The state of a slot's flow (`Free` when out of range).
    pub fn state(&self, slot: u32) -> State {
        self.slots
            .get(slot as usize)
            .map_or(State::Free, |e| e.state)
    }

    /// Whether an ICMP error quoting `inner` (the offending packet's header, as sent: from the
    /// erroring packet's destination's point of view it travelled `inner.src → inner.dst`)
    /// belongs to a tracked flow: Linux's RELATED.
    pub fn related(&self, inner: &FlowTuple, now_ns: u64) -> bool {
        matches!(self.lookup(inner, now_ns), Lookup::Hit { .. })
    }

    /// Live flows (for metrics; walks the table).
    pub fn live_flows(&self, now_ns: u64) -> usize {
        self.slots.iter().filter(|e| self.live(e, now_ns)).count()
    }
}

/// TCP's state machine, simplified as Linux's tracker sees it from the middle.
fn tcp_next(s: State, reply: bool, flags: u8) -> State {
    if flags & TCP_RST != 0 {
        return State::TcpClose;
    }
    match s {
        State::TcpSynSent if reply && flags & TCP_SYN != 0 && flags & TCP_ACK != 0 => {
            State::TcpSynRecv
        }
        State::TcpSynRecv if !reply && flags & TCP_ACK != 0 && flags & TCP_SYN == 0 => {
            State::TcpEstablished
        }
        State::TcpPickedUp if reply => State::TcpEstablished,
        State::TcpEstablished | State::TcpSynRecv if flags & TCP_FIN != 0 => State::TcpFinWait,
        State::TcpFinWait if flags & TCP_FIN != 0 => State::TcpTimeWait,
        State::TcpFinWait if flags & TCP_ACK != 0 => State::TcpFinWait,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = NS_PER_S;

    fn tcp(src: u32, sport: u16, dst: u32, dport: u16) -> FlowTuple {
        FlowTuple {
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            proto: PROTO_TCP,
        }
    }

    fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> FlowTuple {
        FlowTuple {
            proto: PROTO_UDP,
            ..tcp(src, sport, dst, dport)
        }
    }

    #[test]
    fn tcp_handshake_data_and_close() {
        let mut ct = ConnTrack::new(1024, 7, Timeouts::default());
        let c = tcp(0x0a00_0001, 40000, 0x0a00_0002, 80);
        assert_eq!(ct.lookup(&c, 0), Lookup::Miss);
        let slot = ct.insert(&c, TCP_SYN, 3, 0).unwrap();
        assert_eq!(ct.state(slot), State::TcpSynSent);
        assert_eq!(ct.tag(slot), 3);
        // The SYN-ACK is a reply.
        let Lookup::Hit { slot: s2, reply } = ct.lookup(&c.reversed(), S) else {
            panic!("reply not found")
        };
        assert!(reply);
        assert_eq!(s2, slot);
        assert_eq!(
            ct.update(slot, true, TCP_SYN | TCP_ACK, S),
            State::TcpSynRecv
        );
        assert_eq!(ct.update(slot, false, TCP_ACK, S), State::TcpEstablished);
        // Established lives 2 hours, not 2 minutes.
        assert!(matches!(
            ct.lookup(&c, 3600 * S),
            Lookup::Hit { reply: false, .. }
        ));
        assert_eq!(
            ct.update(slot, false, TCP_FIN | TCP_ACK, 3600 * S),
            State::TcpFinWait
        );
        assert_eq!(
            ct.update(slot, true, TCP_FIN | TCP_ACK, 3600 * S),
            State::TcpTimeWait
        );
        // Time-wait expires after 120 s.
        assert_eq!(ct.lookup(&c, 3600 * S + 121 * S), Lookup::Miss);
    }

    #[test]
    fn a_new_syn_on_a_closed_connection_is_a_restart() {
        let mut ct = ConnTrack::new(64, 1, Timeouts::default());
        let c = tcp(1, 40000, 2, 80);
        let s = ct.insert(&c, TCP_SYN, 0, 0).unwrap();
        ct.update(s, true, TCP_SYN | TCP_ACK, 0);
        ct.update(s, false, TCP_ACK, 0);
        assert!(
            !ct.is_restart(s, false, TCP_SYN),
            "established: a SYN is not a restart"
        );
        ct.update(s, false, TCP_FIN | TCP_ACK, 0);
        ct.update(s, true, TCP_FIN | TCP_ACK, 0);
        assert!(ct.is_restart(s, false, TCP_SYN));
        assert!(
            !ct.is_restart(s, true, TCP_SYN),
            "only from the original side"
        );
        ct.remove(s);
        assert_eq!(ct.lookup(&c, S), Lookup::Miss);
    }

    #[test]
    fn rst_closes_quickly_and_unanswered_syn_expires() {
        let mut ct = ConnTrack::new(64, 1, Timeouts::default());
        let c = tcp(1, 1000, 2, 22);
        let s = ct.insert(&c, TCP_SYN, 0, 0).unwrap();
        assert!(matches!(ct.lookup(&c, 119 * S), Lookup::Hit { .. }));
        assert_eq!(ct.lookup(&c, 121 * S), Lookup::Miss);
        let s = {
            let _ = s;
            ct.insert(&c, TCP_SYN, 0, 200 * S).unwrap()
        };
        assert_eq!(ct.update(s, true, TCP_RST, 201 * S), State::TcpClose);
        assert_eq!(ct.lookup(&c, 212 * S), Lookup::Miss);
    }

    #[test]
    fn mid_stream_tcp_is_picked_up_and_confirmed_by_a_reply() {
        let mut ct = ConnTrack::new(64, 3, Timeouts::default());
        let c = tcp(1, 5000, 2, 80);
        let s = ct.insert(&c, TCP_ACK, 0, 0).unwrap();
        assert_eq!(ct.state(s), State::TcpPickedUp);
        assert_eq!(ct.update(s, false, TCP_ACK, S), State::TcpPickedUp);
        assert_eq!(ct.update(s, true, TCP_ACK, S), State::TcpEstablished);
        // An ACK that is never answered is forgotten after a minute.
        let lone = tcp(3, 5000, 2, 80);
        ct.insert(&lone, TCP_ACK, 0, 0).unwrap();
        assert_eq!(ct.lookup(&lone, 61 * S), Lookup::Miss);
    }

    #[test]
    fn udp_reply_extends_the_timeout() {
        let mut ct = ConnTrack::new(64, 1, Timeouts::default());
        let f = udp(1, 5353, 2, 53);
        let s = ct.insert(&f, 0, 0, 0).unwrap();
        assert_eq!(ct.lookup(&f, 31 * S), Lookup::Miss, "unreplied: 30 s");
        let s2 = ct.insert(&f, 0, 0, 40 * S).unwrap();
        let _ = s;
        assert_eq!(ct.update(s2, true, 0, 41 * S), State::Replied);
        assert!(matches!(
            ct.lookup(&f.reversed(), 41 * S + 100 * S),
            Lookup::Hit { reply: true, .. }
        ));
    }

    #[test]
    fn icmp_errors_quoting_a_flow_are_related() {
        let mut ct = ConnTrack::new(64, 9, Timeouts::default());
        let f = udp(1, 4000, 2, 9999);
        ct.insert(&f, 0, 0, 0).unwrap();
        assert!(ct.related(&f, S));
        assert!(!ct.related(&udp(1, 4001, 2, 9999), S));
    }

    /// A SYN flood cannot push established flows out, and memory stays fixed.
    #[test]
    fn syn_flood_evicts_only_unconfirmed_flows() {
        let mut ct = ConnTrack::new(256, 42, Timeouts::default());
        let mut established = Vec::new();
        for i in 0..64u32 {
            let c = tcp(0x0a00_0000 + i, 30000, 0x0a01_0001, 443);
            if let Ok(s) = ct.insert(&c, TCP_SYN, 0, 0) {
                ct.update(s, true, TCP_SYN | TCP_ACK, 0);
                ct.update(s, false, TCP_ACK, 0);
                established.push(c);
            }
        }
        assert_eq!(established.len(), 64);
        for i in 0..100_000u32 {
            let spoofed = tcp(
                mix(u64::from(i)) as u32,
                (i % 60000) as u16,
                0x0a01_0001,
                443,
            );
            let _ = ct.insert(&spoofed, TCP_SYN, 0, S);
        }
        for c in &established {
            assert!(
                matches!(ct.lookup(c, 2 * S), Lookup::Hit { .. }),
                "established flow {c:?} was evicted"
            );
        }
        let st = ct.stats();
        assert!(st.early_dropped > 0, "{st:?}");
        assert_eq!(ct.capacity(), 256);
        assert!(ct.live_flows(2 * S) <= 256);
    }

    #[test]
    fn a_window_of_confirmed_flows_refuses_new_ones_and_counts() {
        // 8 slots: one window covers the whole table.
        let mut ct = ConnTrack::new(PROBE, 5, Timeouts::default());
        for i in 0..PROBE as u32 {
            let f = udp(i, 1, 100, 2);
            let s = ct.insert(&f, 0, 0, 0).unwrap();
            ct.update(s, true, 0, 0);
        }
        assert_eq!(
            ct.insert(&udp(99, 1, 100, 2), 0, 0, S),
            Err(InsertError::Full)
        );
        assert_eq!(ct.stats().full, 1);
        // Once they expire, there is room again.
        assert!(ct.insert(&udp(99, 1, 100, 2), 0, 0, 500 * S).is_ok());
        assert!(ct.stats().expired >= 1);
    }

    proptest! {
        /// Whatever flows arrive, a flow that was inserted and is neither expired nor evicted
        /// is found in both directions, with the right orientation.
        #[test]
        fn inserted_flows_are_found_both_ways(
            flows in proptest::collection::vec((any::<u32>(), any::<u16>(), any::<u32>(), any::<u16>(), prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP)]), 1..200),
            seed in any::<u64>(),
        ) {
            let mut ct = ConnTrack::new(4096, seed, Timeouts::default());
            let mut kept = Vec::new();
            for (a, ap, b, bp, proto) in flows {
                let f = FlowTuple { src: a, dst: b, src_port: ap, dst_port: bp, proto };
                if ct.lookup(&f, 0) != Lookup::Miss || ct.lookup(&f.reversed(), 0) != Lookup::Miss {
                    continue; // a duplicate or a reverse of an earlier flow
                }
                if let Ok(s) = ct.insert(&f, TCP_SYN, 0, 0) {
                    kept.push((s, f));
                }
            }
            // 200 flows in 4,096 slots: a window of 8 overflowing is vanishingly unlikely, so
            // nothing was evicted and every kept flow must be found.
            prop_assert_eq!(ct.stats().early_dropped, 0);
            for (s, f) in kept {
                prop_assert_eq!(ct.lookup(&f, 1), Lookup::Hit { slot: s, reply: false });
                let self_reverse = f == f.reversed();
                if !self_reverse {
                    prop_assert_eq!(ct.lookup(&f.reversed(), 1), Lookup::Hit { slot: s, reply: true });
                }
            }
        }
    }
}

/// The verdicts of first fragments, so that the later fragments of a packet (which carry no
/// ports) follow them: a port rule cannot be bypassed by fragmenting. Keyed by source,
/// destination, protocol and IP identification; bounded (a new entry overwrites its slot's
/// oldest) and short-lived (Linux keeps fragments for 30 s, `ipfrag_time`).
pub struct FragTable {
    slots: Box<[FragEntry]>,
    mask: usize,
    seed: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct FragEntry {
    key: (u32, u32, u16, u8),
    allowed: bool,
    expires_ns: u64,
    used: bool,
}

/// What a non-first fragment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragVerdict {
    Allowed,
    Denied,
    /// Its first fragment was never seen (or expired): drop it.
    Unknown,
}

/// How long a first fragment's verdict is kept.
pub const FRAG_TIMEOUT_NS: u64 = 30 * NS_PER_S;

impl FragTable {
    pub fn new(capacity: usize, seed: u64) -> FragTable {
        let n = capacity.max(4).next_power_of_two();
        FragTable {
            slots: vec![FragEntry::default(); n].into_boxed_slice(),
            mask: n - 1,
            seed,
        }
    }

    fn slot(&self, key: (u32, u32, u16, u8)) -> usize {
        let a = (u64::from(key.0) << 32) | u64::from(key.1);
        let b = (u64::from(key.2) << 8) | u64::from(key.3);
        (mix(a ^ self.seed) ^ mix(b ^ self.seed.rotate_left(29))) as usize & self.mask
    }

    /// Records the verdict of a first fragment (offset 0, more-fragments set).
    pub fn record(
        &mut self,
        src: u32,
        dst: u32,
        ident: u16,
        proto: u8,
        allowed: bool,
        now_ns: u64,
    ) {
        let key = (src, dst, ident, proto);
        let s = self.slot(key);
        self.slots[s] = FragEntry {
            key,
            allowed,
            expires_ns: now_ns + FRAG_TIMEOUT_NS,
            used: true,
        };
    }

    /// The verdict for a later fragment.
    pub fn verdict(&self, src: u32, dst: u32, ident: u16, proto: u8, now_ns: u64) -> FragVerdict {
        let key = (src, dst, ident, proto);
        let e = &self.slots[self.slot(key)];
        if !e.used || e.key != key || e.expires_ns <= now_ns {
            return FragVerdict::Unknown;
        }
        if e.allowed {
            FragVerdict::Allowed
        } else {
            FragVerdict::Denied
        }
    }
}

#[cfg(test)]
mod frag_tests {
    use super::*;

    #[test]
    fn later_fragments_follow_the_first_and_unknown_ones_are_flagged() {
        let mut f = FragTable::new(64, 11);
        f.record(1, 2, 7, PROTO_UDP, false, 0);
        f.record(1, 2, 8, PROTO_UDP, true, 0);
        assert_eq!(f.verdict(1, 2, 7, PROTO_UDP, NS_PER_S), FragVerdict::Denied);
        assert_eq!(
            f.verdict(1, 2, 8, PROTO_UDP, NS_PER_S),
            FragVerdict::Allowed
        );
        // Another protocol, another id, or a fragment arriving with no first: unknown.
        assert_eq!(
            f.verdict(1, 2, 8, PROTO_TCP, NS_PER_S),
            FragVerdict::Unknown
        );
        assert_eq!(
            f.verdict(1, 2, 9, PROTO_UDP, NS_PER_S),
            FragVerdict::Unknown
        );
        // Expired after 30 s.
        assert_eq!(
            f.verdict(1, 2, 8, PROTO_UDP, 31 * NS_PER_S),
            FragVerdict::Unknown
        );
    }
}
