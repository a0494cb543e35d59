//! IPv4 headers (options allowed) and their in-place rewrites.

use super::{checksum, WireError};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// IP protocol numbers Ferry looks at.
pub mod protocol {
    pub const ICMP: u8 = 1;
    /// IPv4-in-IPv4 (RFC 2003), what Calico's IPIP mode sends.
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const SCTP: u8 = 132;
}

/// Field offsets within the header.
mod field {
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const TOTAL_LEN: usize = 2;
    pub(super) const IDENT: usize = 4;
    pub(super) const FLAGS_FRAG: usize = 6;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: usize = 10;
    pub(super) const SRC: usize = 12;
    pub(super) const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet at the start of `buffer`. After [`Ipv4Packet::new_checked`] the
/// header (with options) and the `total_len` bytes it declares are inside the buffer, so no
/// accessor can panic.
#[derive(Debug)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Validates version, IHL and total length against the buffer. The header is parsed by
    /// etherparse; the total length check (which etherparse's header slice leaves to the
    /// caller) is ours. The checksum is verified separately by [`Ipv4Packet::verify_checksum`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        use etherparse::err::ipv4::HeaderSliceError;
        let hdr =
            etherparse::Ipv4HeaderSlice::from_slice(buffer.as_ref()).map_err(|e| match e {
                HeaderSliceError::Len(_) => WireError::Truncated,
                HeaderSliceError::Content(_) => WireError::Malformed,
            })?;
        let total = usize::from(hdr.total_len());
        if total < hdr.slice().len() {
            return Err(WireError::Malformed);
        }
        if total > buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Validates version and IHL against the buffer, but not the total length: for the header
    /// an ICMP error quotes, whose total length still describes the whole original packet
    /// while the quote holds only its start. Read the quoted transport header with
    /// [`Ipv4Packet::after_header`], not [`Ipv4Packet::payload`].
    pub fn new_quoted(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        let first = *b.first().ok_or(WireError::Truncated)?;
        let hl = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if b.len() < hl {
            return Err(WireError::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn u16_at(&self, at: usize) -> u16 {
        super::be_u16(self.b(), at)
    }

    fn u32_at(&self, at: usize) -> u32 {
        super::be_u32(self.b(), at)
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::TOTAL_LEN))
    }

    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        self.u16_at(field::FLAGS_FRAG) & FRAG_OFFSET_MASK
    }

    /// True for any fragment (first, middle or last).
    pub fn is_fragment(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Source address, host byte order.
    pub fn src(&self) -> u32 {
        self.u32_at(field::SRC)
    }

    /// Destination address, host byte order.
    pub fn dst(&self) -> u32 {
        self.u32_at(field::DST)
    }

    /// True when the header checksum verifies (options included).
    pub fn verify_checksum(&self) -> bool {
        // No options (nearly every packet): five 32-bit words, no loop.
        if let Some(h) = self.b().get(..MIN_HEADER_LEN).filter(|h| h[0] & 0x0f == 5) {
            let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
            return checksum::fold(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff;
        }
        checksum::fold(checksum::sum(&self.b()[..self.header_len()])) == 0xffff
    }

    /// Everything in the buffer after the header (for a quoted header: the quoted start of
    /// its payload).
    pub fn after_header(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }

    /// The payload: from the end of the header to the declared total length.
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    fn set_u16(&mut self, at: usize, v: u16) {
        self.bm()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Decrements the TTL and patches the checksum incrementally (RFC 1624): the TTL shares a
    /// 16-bit word with the protocol, so one word update is exact.
    pub fn decrement_ttl(&mut self) {
        let old = self.u16_at(field::TTL);
        let new = old.wrapping_sub(0x0100);
        self.set_u16(field::TTL, new);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_u16(field::CHECKSUM, c);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[field::TTL] = ttl;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.set_u16(field::TOTAL_LEN, len);
    }

    pub fn set_src(&mut self, a: u32) {
        self.bm()[field::SRC..field::SRC + 4].copy_from_slice(&a.to_be_bytes());
    }

    pub fn set_dst(&mut self, a: u32) {
        self.bm()[field::DST..field::DST + 4].copy_from_slice(&a.to_be_bytes());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_u16(field::CHECKSUM, 0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_u16(field::CHECKSUM, c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len());
        &mut self.bm()[h..t]
    }
}

/// An option-less IPv4 header to emit (outer tunnel headers, router-originated ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: u32,
    pub dst: u32,
    pub protocol: u8,
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Bytes after the header.
    pub payload_len: u16,
}

impl Ipv4Repr {
    /// Writes the 20-byte header with its checksum into `buf[..20]`; the caller guarantees the
    /// length (a frame push does). The payload length must leave the total within 65535.
    pub fn emit(&self, buf: &mut [u8]) {
        let total = self.payload_len.saturating_add(MIN_HEADER_LEN as u16);
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        let ttl_proto = u16::from_be_bytes([self.ttl, self.protocol]);
        // The checksum comes from the field values, not from reading the header back: a wide
        // load over the narrow stores just made cannot be store-forwarded and stalls.
        let acc = u64::from(0x4500 | u16::from(self.tos))
            + u64::from(total)
            + u64::from(self.ident)
            + u64::from(flags)
            + u64::from(ttl_proto)
            + u64::from(self.src >> 16)
            + u64::from(self.src & 0xffff)
            + u64::from(self.dst >> 16)
            + u64::from(self.dst & 0xffff);
        let c = !checksum::fold(acc);
        let h = &mut buf[..MIN_HEADER_LEN];
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ident.to_be_bytes());
        h[6..8].copy_from_slice(&flags.to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h[12..16].copy_from_slice(&self.src.to_be_bytes());
        h[16..20].copy_from_slice(&self.dst.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(options: &[u8], payload: &[u8]) -> Vec<u8> {
        let hl = MIN_HEADER_LEN + options.len();
        let mut v = vec![0u8; hl + payload.len()];
        Ipv4Repr {
            src: 0xac10_0001,
            dst: 0xac10_0102,
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: true,
            payload_len: (options.len() + payload.len()) as u16,
        }
        .emit(&mut v);
        v[0] = 0x40 | (hl / 4) as u8;
        v[MIN_HEADER_LEN..hl].copy_from_slice(options);
        v[hl..].copy_from_slice(payload);
        let mut p = Ipv4Packet::new_unchecked(&mut v[..]);
        p.fill_checksum();
        v
    }

    #[test]
    fn emit_then_parse() {
        let v = sample(&[], b"hello");
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 25);
        assert_eq!(p.src(), 0xac10_0001);
        assert_eq!(p.dst(), 0xac10_0102);
        assert_eq!(p.ttl(), 64);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert_eq!(p.payload(), b"hello");
        // etherparse, an independent decoder, agrees on every field.
        let e = etherparse::Ipv4HeaderSlice::from_slice(&v)
            .unwrap()
            .to_header();
        assert_eq!(e.header_checksum, e.calc_header_checksum());
        assert_eq!(e.identification, 0x1234);
    }

    #[test]
    fn options_are_part_of_the_header() {
        // Record-route style option padded to 8 bytes.
        let v = sample(&[7, 7, 4, 0, 0, 0, 0, 0], b"xy");
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), b"xy");
        assert!(p.verify_checksum());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut v = sample(&[], b"abc");
        for ttl in (1..=64).rev() {
            let mut p = Ipv4Packet::new_checked(&mut v[..]).unwrap();
            assert_eq!(p.ttl(), ttl);
            p.decrement_ttl();
            assert!(p.verify_checksum(), "after ttl {ttl}");
        }
    }

    #[test]
    fn bad_headers_are_rejected() {
        let good = sample(&[], b"abcd");
        for len in 0..good.len() {
            assert!(Ipv4Packet::new_checked(&good[..len]).is_err(), "len {len}");
        }
        let mut v = good.clone();
        v[0] = 0x65; // version 6
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(WireError::Malformed)
        );
        let mut v = good.clone();
        v[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(WireError::Malformed)
        );
        let mut v = good.clone();
        v[0] = 0x4f; // IHL 15: 60 bytes, past the buffer
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(WireError::Truncated)
        );
        let mut v = good.clone();
        v[2..4].copy_from_slice(&10u16.to_be_bytes()); // total < IHL
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(WireError::Malformed)
        );
        let mut v = good.clone();
        v[2..4].copy_from_slice(&100u16.to_be_bytes()); // total past the buffer
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).err(),
            Some(WireError::Truncated)
        );
        let mut v = good;
        v[12] ^= 1; // corrupt the source: checksum no longer verifies
        assert!(!Ipv4Packet::new_checked(&v[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let mut v = sample(&[], b"abcdefgh");
        v[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes());
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 3);
    }
}
