//! WireGuard between nodes, sans-IO: the peers of one node and what to do with a datagram or an
//! inner packet. The protocol core — Noise_IKpsk2 handshake, cookie replies under load,
//! ChaCha20-Poly1305 transport with a counter nonce, the sliding replay window, the rekey /
//! reject / keepalive timers — is boringtun's `noise::Tunn` (one per peer). This module adds
//! what a node with many peers needs around it: finding the peer of a datagram (receiver index
//! for responses, cookies and data; the initiator's static key, decrypted from the initiation,
//! for initiations), endpoint roaming, the counters, and keeping the peers in step with the
//! tables (a new public key is a new peer, so a rotated key re-handshakes).
//!
//! The pipeline works on the UDP payload only: it strips and writes the outer Ethernet, IPv4
//! and UDP headers itself. Nothing here does I/O; [`WgDevice::poll`] hands the datagrams that
//! timers produce (handshake retries, keepalives, packets queued during a handshake) to a
//! closure, which the worker turns into frames on the uplink.

use crate::wire::ethernet::MacAddr;
use base64::Engine;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Calico's default listening port.
pub const DEFAULT_PORT: u16 = 51820;
/// Calico's default WireGuard MTU for IPv4 on a 1500-byte uplink.
pub const DEFAULT_MTU: u16 = 1440;
/// Outer IPv4 (20) + UDP (8) + WireGuard data header (16) + Poly1305 tag (16).
pub const OVERHEAD: usize = 60;
/// Bytes a WireGuard message adds to the packet it carries (header + tag).
pub const DATA_OVERHEAD: usize = 32;
/// The largest datagram the module writes: an inner packet of a 2 KiB chunk plus overhead.
pub const MAX_DATAGRAM: usize = 4096;
/// How often [`WgDevice::poll`] should run (boringtun's device uses 250 ms).
pub const TIMER_TICK: Duration = Duration::from_millis(100);
/// Handshake initiations accepted per second before cookies are demanded (boringtun's device
/// default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// A Curve25519 public key, 32 bytes; text form base64 as `wg` writes it. Public keys are
/// published and compared freely (peers are found by them), so the type is `Copy`; a private
/// key is a [`WgPrivateKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WgKey(pub [u8; 32]);

impl WgKey {
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<WgKey, KeyError> {
        Ok(WgKey(*decode_key(s)?))
    }
}

impl std::fmt::Debug for WgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The public form is printed on purpose (`to_base64`), never by accident.
        write!(f, "WgKey(..)")
    }
}

/// A node's Curve25519 private key. Not `Copy` (every copy would be one more to erase),
/// zeroed when dropped (zeroize), and never printed: `Debug` shows no key material and there
/// is no `Display`. Its public key is [`WgPrivateKey::public_key`].
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct WgPrivateKey([u8; 32]);

impl WgPrivateKey {
    /// Takes the key's bytes; the caller erases its own copy if it keeps one.
    pub fn from_bytes(bytes: [u8; 32]) -> WgPrivateKey {
        WgPrivateKey(bytes)
    }

    /// Parses the text form (`wg genkey`'s base64); the decoded bytes are erased after use.
    pub fn from_base64(s: &str) -> Result<WgPrivateKey, KeyError> {
        Ok(WgPrivateKey(*decode_key(s)?))
    }

    /// The text form, for the key file; erased when dropped.
    pub fn to_base64(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0))
    }

    /// The public key of this private key.
    pub fn public_key(&self) -> WgKey {
        WgKey(PublicKey::from(&self.secret()).to_bytes())
    }

    /// The key as x25519's secret, which erases itself on drop too.
    fn secret(&self) -> StaticSecret {
        StaticSecret::from(self.0)
    }
}

impl std::fmt::Debug for WgPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgPrivateKey(..)")
    }
}

/// The 32 bytes of a base64 key, in a buffer that erases itself.
fn decode_key(s: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, KeyError> {
    let v = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| KeyError::NotBase64)?,
    );
    let mut a = zeroize::Zeroizing::new([0u8; 32]);
    if v.len() != a.len() {
        return Err(KeyError::WrongLength);
    }
    a.copy_from_slice(&v);
    Ok(a)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64")]
    NotBase64,
    #[error("not 32 bytes")]
    WrongLength,
}

/// One peer as the tables describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer node's address: its initial endpoint and the node whose blocks its packets
    /// may come from.
    pub node: Ipv4Addr,
    pub key: WgKey,
    /// The next hop's MAC towards the node (until a packet from a roamed endpoint teaches
    /// another).
    pub mac: Option<MacAddr>,
}

/// Counters of the whole device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WgCounters {
    /// Initiations or responses that failed: bad MAC, unknown initiator, bad timestamp, no
    /// handshake in progress.
    pub handshake_failures: u64,
    /// Transport data whose authentication tag did not verify.
    pub auth_failures: u64,
    /// Transport data with a counter already seen or left of the replay window.
    pub replays: u64,
    /// Datagrams for an index no peer owns, or not WireGuard at all.
    pub unknown: u64,
    /// Cookie replies sent because the handshake rate was over the limit.
    pub cookies_sent: u64,
    pub handshakes_completed: u64,
    /// Roaming: authenticated packets from an endpoint other than the one known.
    pub endpoint_changes: u64,
}

/// One peer's state for `wg show`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub node: Ipv4Addr,
    pub key: WgKey,
    pub endpoint: SocketAddrV4,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of inner packets received / sent.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

struct Peer {
    tunn: Tunn,
    cfg: PeerConfig,
    endpoint: SocketAddrV4,
    mac: Option<MacAddr>,
    /// Our index for this peer (the upper 24 bits of the session indices boringtun uses).
    index: u32,
    /// Packets were queued during a handshake and wait for [`WgDevice::poll`].
    queued: bool,
    /// New peer: the next poll sends it a handshake initiation unprompted, so that a node
    /// that restarted (or a rotated key) re-establishes the tunnel at once instead of waiting
    /// for the other side's session to time out.
    initiate: bool,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub endpoint: SocketAddrV4,
    /// Next-hop MAC; `None` when neither the tables nor a received packet gave one.
    pub mac: Option<MacAddr>,
}

/// What became of an inner packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `len` bytes of transport data in `out`, to send to `dest`.
    Data { len: usize, dest: Dest },
    /// No session yet: the packet was queued and a handshake initiation (`len` bytes in `out`)
    /// is to be sent in its place.
    Handshake { len: usize, dest: Dest },
    /// No session yet, a handshake is already under way: the packet was queued.
    Queued,
    /// No peer for that node.
    NoPeer,
}

/// What a received datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decapsulated {
    /// An authenticated inner packet, `len` bytes in `out`, from the peer node `node`.
    Packet {
        len: usize,
        node: Ipv4Addr,
    },
    /// A reply (handshake response, keepalive, cookie) of `len` bytes in `out` to send back.
    Reply {
        len: usize,
        dest: Dest,
    },
    /// Consumed: a keepalive or a cookie reply.
    Consumed,
    Dropped(WgDrop),
}

/// Why a datagram was dropped (each has a counter in [`WgCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgDrop {
    HandshakeFailed,
    AuthFailed,
    Replay,
    Unknown,
}

/// A node's WireGuard interface: its key pair and its peers.
pub struct WgDevice {
    private: StaticSecret,
    public: PublicKey,
    port: u16,
    limiter: Arc<RateLimiter>,
    peers: Vec<Peer>,
    by_key: HashMap<WgKey, usize>,
    by_node: HashMap<Ipv4Addr, usize>,
    by_index: HashMap<u32, usize>,
    next_index: u32,
    counters: WgCounters,
    last_limiter_reset: Instant,
    /// When boringtun last reported each handshake age, turned into wall-clock time.
    started: (Instant, SystemTime),
    /// The tables generation the peers were last synchronised with.
    pub synced_generation: u64,
}

impl WgDevice {
    pub fn new(private: &WgPrivateKey, port: u16) -> WgDevice {
        let private = private.secret();
        let public = PublicKey::from(&private);
        WgDevice {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            port,
            peers: Vec::new(),
            by_key: HashMap::new(),
            by_node: HashMap::new(),
            by_index: HashMap::new(),
            next_index: 1,
            counters: WgCounters::default(),
            last_limiter_reset: Instant::now(),
            started: (Instant::now(), SystemTime::now()),
            synced_generation: u64::MAX,
        }
    }

    pub fn public_key(&self) -> WgKey {
        WgKey(self.public.to_bytes())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    pub fn counters(&self) -> WgCounters {
        self.counters
    }

    /// Makes the peers those of `peers`: a peer whose node and key are unchanged keeps its
    /// sessions; a new key (rotation) or a new node is a new peer that handshakes afresh; a
    /// peer no longer listed is forgotten. Allocates; runs when the tables change.
    pub fn sync(&mut self, peers: &[PeerConfig]) {
        let mut old: HashMap<WgKey, Peer> = self.peers.drain(..).map(|p| (p.cfg.key, p)).collect();
        self.by_key.clear();
        self.by_node.clear();
        self.by_index.clear();
        for cfg in peers {
            if self.by_key.contains_key(&cfg.key) || self.by_node.contains_key(&cfg.node) {
                continue; // the first entry wins; the compiler never emits duplicates
            }
            let peer = match old.remove(&cfg.key) {
                Some(mut p) if p.cfg.node == cfg.node => {
                    if p.cfg.mac != cfg.mac {
                        p.mac = cfg.mac;
                    }
                    p.cfg = *cfg;
                    p
                }
                _ => self.new_peer(*cfg),
            };
            let slot = self.peers.len();
            self.by_key.insert(cfg.key, slot);
            self.by_node.insert(cfg.node, slot);
            self.by_index.insert(peer.index, slot);
            self.peers.push(peer);
        }
    }

    fn new_peer(&mut self, cfg: PeerConfig) -> Peer {
        let index = self.next_index & 0x00ff_ffff;
        self.next_index = self.next_index.wrapping_add(1).max(1);
        let tunn = Tunn::new(
            self.private.clone(),
            PublicKey::from(cfg.key.0),
            None,
            None,
            index,
            Some(self.limiter.clone()),
        );
        Peer {
            tunn,
            cfg,
            endpoint: SocketAddrV4::new(cfg.node, self.port),
            mac: cfg.mac,
            index,
            queued: false,
            initiate: true,
        }
    }

    /// Encrypts the IPv4 packet `packet` for the peer on node `node` into `out` (at least
    /// `packet.len() + 32` and 148 bytes).
    pub fn encapsulate(&mut self, node: Ipv4Addr, packet: &[u8], out: &mut [u8]) -> Encapsulated {
        let Some(&slot) = self.by_node.get(&node) else {
            return Encapsulated::NoPeer;
        };
        if out.len() < (packet.len() + DATA_OVERHEAD).max(148) {
            return Encapsulated::NoPeer;
        }
        let p = &mut self.peers[slot];
        let dest = Dest {
            endpoint: p.endpoint,
            mac: p.mac,
        };
        match p.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(b) => {
                let len = b.len();
                // boringtun writes a data message (type 4) or, without a session, an
                // initiation (type 1) and queues the packet.
                if len >= 4 && out[0] == 1 {
                    p.queued = true;
                    Encapsulated::Handshake { len, dest }
                } else {
                    Encapsulated::Data { len, dest }
                }
            }
            _ => {
                p.queued = true;
                Encapsulated::Queued
            }
        }
    }

    /// Handles a datagram that arrived for our port from `src` (its Ethernet source `src_mac`).
    /// `out` must hold [`MAX_DATAGRAM`] bytes or the datagram's length, whichever is smaller.
    pub fn decapsulate(
        &mut self,
        src: SocketAddrV4,
        src_mac: MacAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Decapsulated {
        // boringtun panics on an output buffer smaller than the message: refuse instead.
        if out.len() < datagram.len().max(148) {
            return self.drop(WgDrop::Unknown);
        }
        // MAC1 (and MAC2 under load) of handshake messages, against the whole device's
        // handshake rate, before any Diffie-Hellman.
        let parsed = match self
            .limiter
            .verify_packet(Some(IpAddr::V4(*src.ip())), datagram, out)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.counters.cookies_sent += 1;
                let len = cookie.len();
                return Decapsulated::Reply {
                    len,
                    dest: Dest {
                        endpoint: src,
                        mac: Some(src_mac),
                    },
                };
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                return self.drop(WgDrop::HandshakeFailed)
            }
            Err(_) => return self.drop(WgDrop::Unknown),
        };
        let slot = match &parsed {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(&self.private, &self.public, init) {
                    Ok(half) => match self.by_key.get(&WgKey(half.peer_static_public)) {
                        Some(&s) => s,
                        None => return self.drop(WgDrop::HandshakeFailed),
                    },
                    Err(_) => return self.drop(WgDrop::HandshakeFailed),
                }
            }
            Packet::HandshakeResponse(r) => match self.by_index.get(&(r.receiver_idx >> 8)) {
                Some(&s) => s,
                None => return self.drop(WgDrop::HandshakeFailed),
            },
            Packet::PacketCookieReply(c) => match self.by_index.get(&(c.receiver_idx >> 8)) {
                Some(&s) => s,
                None => return self.drop(WgDrop::Unknown),
            },
            Packet::PacketData(d) => match self.by_index.get(&(d.receiver_idx >> 8)) {
                Some(&s) => s,
                None => return self.drop(WgDrop::Unknown),
            },
        };
        let kind = match parsed {
            Packet::HandshakeInit(_) => 1,
            Packet::HandshakeResponse(_) => 2,
            Packet::PacketCookieReply(_) => 3,
            Packet::PacketData(_) => 4,
        };
        let p = &mut self.peers[slot];
        let result = p
            .tunn
            .decapsulate(Some(IpAddr::V4(*src.ip())), datagram, out);
        let authenticated = !matches!(result, TunnResult::Err(_)) && kind != 3;
        let mut roamed = false;
        if authenticated && (p.endpoint != src || p.mac != Some(src_mac)) {
            roamed = p.endpoint != src;
            p.endpoint = src;
            p.mac = Some(src_mac);
        }
        let dest = Dest {
            endpoint: p.endpoint,
            mac: p.mac,
        };
        let node = p.cfg.node;
        if (kind == 1 || kind == 2) && !matches!(result, TunnResult::Err(_)) {
            // Packets queued while the handshake ran go out at the next poll.
            p.queued = true;
        }
        if roamed {
            self.counters.endpoint_changes += 1;
        }
        match result {
            TunnResult::Done => {
                if kind == 2 {
                    self.counters.handshakes_completed += 1;
                }
                Decapsulated::Consumed
            }
            TunnResult::WriteToNetwork(b) => {
                if kind == 1 || kind == 2 {
                    self.counters.handshakes_completed += 1;
                }
                Decapsulated::Reply { len: b.len(), dest }
            }
            TunnResult::WriteToTunnelV4(b, _) => Decapsulated::Packet { len: b.len(), node },
            // IPv6 inside: Ferry's pods are IPv4 only.
            TunnResult::WriteToTunnelV6(..) => self.drop(WgDrop::Unknown),
            TunnResult::Err(e) => self.drop(classify(kind, e)),
        }
    }

    fn drop(&mut self, why: WgDrop) -> Decapsulated {
        let c = &mut self.counters;
        match why {
            WgDrop::HandshakeFailed => c.handshake_failures += 1,
            WgDrop::AuthFailed => c.auth_failures += 1,
            WgDrop::Replay => c.replays += 1,
            WgDrop::Unknown => c.unknown += 1,
        }
        Decapsulated::Dropped(why)
    }

    /// Runs every peer's timers (handshake retries and give-up, rekey, keepalives, session
    /// expiry), initiates a handshake with peers new since the last poll, and sends what was
    /// queued during handshakes: each datagram goes to `send`.
    /// Off the per-packet path: the worker calls it every [`TIMER_TICK`] and after a batch that
    /// completed a handshake. `buf` is scratch of [`MAX_DATAGRAM`] bytes.
    pub fn poll(&mut self, buf: &mut [u8], mut send: impl FnMut(Dest, &[u8])) {
        if self.last_limiter_reset.elapsed() >= Duration::from_secs(1) {
            self.limiter.reset_count();
            self.last_limiter_reset = Instant::now();
        }
        for p in &mut self.peers {
            let dest = Dest {
                endpoint: p.endpoint,
                mac: p.mac,
            };
            if p.initiate {
                p.initiate = false;
                // Only if traffic has not already started a handshake or made a session.
                if p.tunn.stats().0.is_none() {
                    if let TunnResult::WriteToNetwork(b) =
                        p.tunn.format_handshake_initiation(buf, false)
                    {
                        send(dest, b);
                    }
                }
            }
            if let TunnResult::WriteToNetwork(b) = p.tunn.update_timers(buf) {
                send(dest, b);
            }
            if p.queued {
                p.queued = false;
                // An empty datagram asks boringtun for the next queued packet.
                for _ in 0..256 {
                    match p.tunn.decapsulate(None, &[], buf) {
                        TunnResult::WriteToNetwork(b) => send(dest, b),
                        _ => break,
                    }
                }
            }
        }
    }

    /// Whether a poll has queued packets to send.
    pub fn has_queued(&self) -> bool {
        self.peers.iter().any(|p| p.queued)
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers
            .iter()
            .map(|p| {
                let (age, tx, rx, _, _) = p.tunn.stats();
                let last_handshake = age.and_then(|a| {
                    let at = now.checked_sub(a)?;
                    let since_start = at.checked_duration_since(self.started.0)?;
                    self.started.1.checked_add(since_start)
                });
                PeerStatus {
                    node: p.cfg.node,
                    key: p.cfg.key,
                    endpoint: p.endpoint,
                    last_handshake,
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                }
            })
            .collect()
    }
}

fn classify(kind: u8, e: WireGuardError) -> WgDrop {
    use WireGuardError as E;
    match (kind, e) {
        (4, E::DuplicateCounter | E::InvalidCounter) => WgDrop::Replay,
        (4, E::InvalidAeadTag | E::InvalidPacket) => WgDrop::AuthFailed,
        (4, _) => WgDrop::Unknown,
        (3, _) => WgDrop::Unknown,
        _ => WgDrop::HandshakeFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> WgPrivateKey {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7 + 1);
        }
        WgPrivateKey::from_bytes(k)
    }

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 11);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 10, 12);
    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);

    /// Two devices that know each other.
    fn pair() -> (WgDevice, WgDevice) {
        let (ka, kb) = (key(1), key(2));
        let mut a = WgDevice::new(&ka, DEFAULT_PORT);
        let mut b = WgDevice::new(&kb, DEFAULT_PORT);
        a.sync(&[PeerConfig {
            node: B,
            key: kb.public_key(),
            mac: Some(MAC_B),
        }]);
        b.sync(&[PeerConfig {
            node: A,
            key: ka.public_key(),
            mac: Some(MAC_A),
        }]);
        (a, b)
    }

    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
            .udp(1000, 2000)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn from(a: Ipv4Addr) -> SocketAddrV4 {
        SocketAddrV4::new(a, DEFAULT_PORT)
    }

    /// Runs the handshake: a's first packet starts it, b answers, a's keepalive and queued
    /// packet follow. Returns the first inner packet b received.
    fn handshake(a: &mut WgDevice, b: &mut WgDevice, first: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let Encapsulated::Handshake { len, dest } = a.encapsulate(B, first, &mut buf) else {
            panic!("no session: a handshake initiation is expected");
        };
        assert_eq!(dest.endpoint, from(B));
        assert_eq!(buf[0], 1, "message type 1");
        let Decapsulated::Reply { len, dest } =
            b.decapsulate(from(A), MAC_A, &buf[..len], &mut out)
        else {
            panic!("b answers an initiation");
        };
        assert_eq!(dest.endpoint, from(A));
        assert_eq!(out[0], 2, "message type 2");
        let resp = out[..len].to_vec();
        let r = a.decapsulate(from(B), MAC_B, &resp, &mut out);
        assert!(matches!(r, Decapsulated::Reply { .. }), "keepalive, {r:?}");
        let keepalive = out[..32].to_vec();
        assert_eq!(keepalive[0], 4);
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &keepalive, &mut out),
            Decapsulated::Consumed
        );
        let mut sent = Vec::new();
        a.poll(&mut buf, |d, bytes| sent.push((d, bytes.to_vec())));
        assert_eq!(sent.len(), 1, "the queued packet goes out at the next poll");
        match b.decapsulate(from(A), MAC_A, &sent[0].1, &mut out) {
            Decapsulated::Packet { len, node } => {
                assert_eq!(node, A);
                out[..len].to_vec()
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn handshake_then_data_both_ways() {
        let (mut a, mut b) = pair();
        let p1 = ipv4([172, 16, 1, 1].into(), [172, 16, 2, 1].into(), b"first");
        assert_eq!(handshake(&mut a, &mut b, &p1), p1);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let p2 = ipv4([172, 16, 2, 1].into(), [172, 16, 1, 1].into(), &[7u8; 1400]);
        let Encapsulated::Data { len, .. } = b.encapsulate(A, &p2, &mut buf) else {
            panic!("b has a session now");
        };
        assert_eq!(len, p2.len() + DATA_OVERHEAD);
        assert!(
            !buf[..len].windows(16).any(|w| w == [7u8; 16]),
            "no payload in clear"
        );
        assert_eq!(
            a.decapsulate(from(B), MAC_B, &buf[..len], &mut out),
            Decapsulated::Packet {
                len: p2.len(),
                node: B
            }
        );
        assert_eq!(&out[..p2.len()], &p2[..]);
        let st = a.peers();
        assert_eq!(st.len(), 1);
        assert!(st[0].last_handshake.is_some());
        assert_eq!(st[0].rx_bytes, p2.len() as u64);
        assert_eq!(a.counters().handshakes_completed, 1);
    }

    #[test]
    fn replayed_and_flipped_packets_are_dropped_and_counted() {
        let (mut a, mut b) = pair();
        let p = ipv4([172, 16, 1, 1].into(), [172, 16, 2, 1].into(), b"x");
        handshake(&mut a, &mut b, &p);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let Encapsulated::Data { len, .. } = a.encapsulate(B, &p, &mut buf) else {
            panic!()
        };
        let msg = buf[..len].to_vec();
        assert!(matches!(
            b.decapsulate(from(A), MAC_A, &msg, &mut out),
            Decapsulated::Packet { .. }
        ));
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &msg, &mut out),
            Decapsulated::Dropped(WgDrop::Replay)
        );
        assert_eq!(b.counters().replays, 1);
        let Encapsulated::Data { len, .. } = a.encapsulate(B, &p, &mut buf) else {
            panic!()
        };
        let mut bad = buf[..len].to_vec();
        bad[len - 20] ^= 0x04;
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &bad, &mut out),
            Decapsulated::Dropped(WgDrop::AuthFailed)
        );
        assert_eq!(b.counters().auth_failures, 1);
        // The unmodified packet still passes: the failed one did not advance the window.
        assert!(matches!(
            b.decapsulate(from(A), MAC_A, &buf[..len], &mut out),
            Decapsulated::Packet { .. }
        ));
    }

    #[test]
    fn a_peer_with_the_wrong_key_never_gets_through() {
        let (ka, kb, kwrong) = (key(1), key(2), key(3));
        // a believes b's key is kwrong's public key; b knows a correctly.
        let mut a = WgDevice::new(&ka, DEFAULT_PORT);
        let mut b = WgDevice::new(&kb, DEFAULT_PORT);
        a.sync(&[PeerConfig {
            node: B,
            key: kwrong.public_key(),
            mac: None,
        }]);
        b.sync(&[PeerConfig {
            node: A,
            key: ka.public_key(),
            mac: None,
        }]);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let p = ipv4([172, 16, 1, 1].into(), [172, 16, 2, 1].into(), b"x");
        let Encapsulated::Handshake { len, .. } = a.encapsulate(B, &p, &mut buf) else {
            panic!()
        };
        // The initiation is for another responder: its MAC1 does not verify at b.
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &buf[..len], &mut out),
            Decapsulated::Dropped(WgDrop::HandshakeFailed)
        );
        assert_eq!(b.counters().handshake_failures, 1);
        // And b, initiating towards a with the right key for a: a does not know b's key.
        let Encapsulated::Handshake { len, .. } = b.encapsulate(A, &p, &mut buf) else {
            panic!()
        };
        assert_eq!(
            a.decapsulate(from(B), MAC_B, &buf[..len], &mut out),
            Decapsulated::Dropped(WgDrop::HandshakeFailed)
        );
        assert_eq!(a.counters().handshake_failures, 1);
        assert!(a.peers()[0].last_handshake.is_none());
    }

    #[test]
    fn authenticated_packet_from_a_new_address_moves_the_endpoint() {
        let (mut a, mut b) = pair();
        let p = ipv4([172, 16, 1, 1].into(), [172, 16, 2, 1].into(), b"x");
        handshake(&mut a, &mut b, &p);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let Encapsulated::Data { len, .. } = a.encapsulate(B, &p, &mut buf) else {
            panic!()
        };
        let roamed = SocketAddrV4::new([10, 9, 9, 9].into(), 40000);
        let mac = MacAddr([2, 9, 9, 9, 9, 9]);
        // A forged copy from the new address with a bad tag does not move it.
        let mut forged = buf[..len].to_vec();
        forged[len - 1] ^= 1;
        b.decapsulate(roamed, mac, &forged, &mut out);
        assert_eq!(b.peers()[0].endpoint, from(A));
        assert!(matches!(
            b.decapsulate(roamed, mac, &buf[..len], &mut out),
            Decapsulated::Packet { .. }
        ));
        assert_eq!(b.peers()[0].endpoint, roamed);
        assert_eq!(b.counters().endpoint_changes, 1);
        let Encapsulated::Data { dest, .. } = b.encapsulate(A, &p, &mut buf) else {
            panic!()
        };
        assert_eq!(
            dest,
            Dest {
                endpoint: roamed,
                mac: Some(mac)
            }
        );
    }

    #[test]
    fn a_rotated_key_is_a_new_peer_that_handshakes_again() {
        let (mut a, mut b) = pair();
        let p = ipv4([172, 16, 1, 1].into(), [172, 16, 2, 1].into(), b"x");
        handshake(&mut a, &mut b, &p);
        // b rotates its key; a learns the new public key from the tables.
        let kb2 = key(9);
        let mut b2 = WgDevice::new(&kb2, DEFAULT_PORT);
        b2.sync(&[PeerConfig {
            node: A,
            key: a.public_key(),
            mac: Some(MAC_A),
        }]);
        a.sync(&[PeerConfig {
            node: B,
            key: kb2.public_key(),
            mac: Some(MAC_B),
        }]);
        assert_eq!(handshake(&mut a, &mut b2, &p), p);
    }

    #[test]
    fn a_new_peer_gets_a_handshake_at_the_first_poll_without_traffic() {
        let (mut a, mut b) = pair();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut out = vec![0u8; MAX_DATAGRAM];
        let mut sent = Vec::new();
        a.poll(&mut buf, |d, bytes| sent.push((d, bytes.to_vec())));
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].0.endpoint, sent[0].1[0]), (from(B), 1));
        let Decapsulated::Reply { len, .. } = b.decapsulate(from(A), MAC_A, &sent[0].1, &mut out)
        else {
            panic!("b answers");
        };
        let resp = out[..len].to_vec();
        let Decapsulated::Reply { len, .. } = a.decapsulate(from(B), MAC_B, &resp, &mut out) else {
            panic!("a confirms with a keepalive");
        };
        let keepalive = out[..len].to_vec();
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &keepalive, &mut out),
            Decapsulated::Consumed
        );
        // Established: later polls send nothing unprompted.
        sent.clear();
        a.poll(&mut buf, |d, bytes| sent.push((d, bytes.to_vec())));
        assert!(sent.is_empty(), "{} datagrams", sent.len());
        // And b, the responder, has a confirmed session: it sends data at once.
        let p = ipv4([172, 16, 2, 1].into(), [172, 16, 1, 1].into(), b"x");
        assert!(matches!(
            b.encapsulate(A, &p, &mut buf),
            Encapsulated::Data { .. }
        ));
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let (_, mut b) = pair();
        let mut out = vec![0u8; MAX_DATAGRAM];
        for d in [&[][..], &[4, 0, 0, 0][..], &[9u8; 200][..], &[4u8; 40][..]] {
            assert!(matches!(
                b.decapsulate(from(A), MAC_A, d, &mut out),
                Decapsulated::Dropped(_)
            ));
        }
        // A datagram larger than the output buffer is refused, not a panic.
        let mut small = vec![0u8; 100];
        assert_eq!(
            b.decapsulate(from(A), MAC_A, &[4u8; 300], &mut small),
            Decapsulated::Dropped(WgDrop::Unknown)
        );
    }

    #[test]
    fn keys_round_trip_as_base64() {
        let k = key(5).public_key();
        assert_eq!(WgKey::from_base64(&k.to_base64()), Ok(k));
        assert_eq!(WgKey::from_base64("YWJj"), Err(KeyError::WrongLength));
        assert_eq!(WgKey::from_base64("!!"), Err(KeyError::NotBase64));
        let private = key(5);
        let again = WgPrivateKey::from_base64(&private.to_base64()).unwrap();
        assert_eq!(again.public_key(), private.public_key());
        assert!(matches!(
            WgPrivateKey::from_base64("YWJj"),
            Err(KeyError::WrongLength)
        ));
    }

    #[test]
    fn a_private_key_is_never_printed() {
        let private = key(5);
        let text = private.to_base64();
        let hex: String = private.0.iter().map(|b| format!("{b:02x}")).collect();
        let decimal = format!("{:?}", private.0);
        for shown in [format!("{private:?}"), format!("{private:#?}")] {
            assert_eq!(shown.trim(), "WgPrivateKey(..)");
            for secret in [text.as_str(), hex.as_str(), decimal.as_str()] {
                assert!(!shown.contains(secret), "{shown} shows the key");
            }
        }
        // The device holding it does not print it either.
        let public = private.public_key();
        assert_eq!(WgDevice::new(&private, DEFAULT_PORT).public_key(), public);
        assert_eq!(format!("{public:?}"), "WgKey(..)");
    }
}
