//! VXLAN (RFC 7348): an 8-byte header after UDP, carrying a 24-bit VNI and an Ethernet frame.

use super::WireError;

pub const HEADER_LEN: usize = 8;
/// IANA-assigned VXLAN port (Linux's default is 8472; Calico configures 4789).
pub const UDP_PORT: u16 = 4789;
/// The VNI Calico gives its `vxlan.calico` device.
pub const CALICO_VNI: u32 = 4096;
/// The I flag: "VNI present"; all other flag bits are reserved and must be zero on send.
pub const FLAG_VNI: u8 = 0x08;
/// Outer Ethernet + IPv4 (no options) + UDP + VXLAN: what encapsulation adds to an inner frame.
pub const OVERHEAD: usize = 14 + 20 + 8 + HEADER_LEN;

/// A view of a VXLAN header at the start of `buffer`.
#[derive(Debug)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Requires the 8-byte header and the I flag (RFC 7348: receivers must check it; other
    /// reserved bits are ignored on receipt).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] & FLAG_VNI == 0 {
            return Err(WireError::Malformed);
        }
        Ok(VxlanPacket { buffer })
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// A VXLAN header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    pub vni: u32,
}

impl VxlanRepr {
    /// Writes the header into `buf[..8]`: flags 0x08, reserved zero, the low 24 bits of the VNI.
    pub fn emit(&self, buf: &mut [u8]) {
        let v = self.vni.to_be_bytes();
        buf[..HEADER_LEN].copy_from_slice(&[FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

/// The UDP source port Linux's VXLAN device picks: the inner flow's hash scaled into the local
/// port range (`udp_flow_src_port`, range 32768..=60999 by default), so that ECMP routers between
/// nodes spread flows while each flow keeps one path.
#[inline]
pub fn source_port(flow_hash: u32) -> u16 {
    const MIN: u32 = 32768;
    const MAX: u32 = 61000;
    ((u64::from(flow_hash) * u64::from(MAX - MIN)) >> 32) as u16 + MIN as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_parse_vni_and_flags() {
        let mut b = [0u8; 8];
        VxlanRepr { vni: CALICO_VNI }.emit(&mut b);
        assert_eq!(b, [0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0]);
        let v = VxlanPacket::new_checked(&b[..]).unwrap();
        assert_eq!((v.flags(), v.vni()), (0x08, 4096));
        VxlanRepr { vni: 0xabcdef }.emit(&mut b);
        assert_eq!(VxlanPacket::new_checked(&b[..]).unwrap().vni(), 0xabcdef);
        b[0] = 0;
        assert_eq!(
            VxlanPacket::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
        assert_eq!(
            VxlanPacket::new_checked(&b[..7]).err(),
            Some(WireError::Truncated)
        );
    }

    #[test]
    fn source_port_stays_in_the_linux_range() {
        for h in [0u32, 1, 0x8000_0000, u32::MAX, 0x1234_5678] {
            let p = source_port(h);
            assert!((32768..61000).contains(&p), "{h:#x} -> {p}");
        }
        assert_ne!(source_port(0x1000_0000), source_port(0x9000_0000));
    }
}
