//! UDP headers.

use super::WireError;

pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram at the start of `buffer`.
#[derive(Debug)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Checks the header is present (etherparse) and that the length field covers it and fits
    /// the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let h = etherparse::UdpHeaderSlice::from_slice(buffer.as_ref())
            .map_err(|_| WireError::Truncated)?;
        let len = usize::from(h.length());
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > buffer.as_ref().len() {
            return Err(WireError::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    fn u16_at(&self, at: usize) -> u16 {
        super::be_u16(self.buffer.as_ref(), at)
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(0)
    }

    pub fn dst_port(&self) -> u16 {
        self.u16_at(2)
    }

    pub fn len(&self) -> usize {
        usize::from(self.u16_at(4))
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(6)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len()]
    }
}

/// A UDP header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: u16,
}

impl UdpRepr {
    /// Writes the header into `buf[..8]` with a zero checksum: for IPv4 a zero UDP checksum
    /// means "none", and it is what Linux's VXLAN device sends by default (no `udpcsum`).
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        h[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        h[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        h[4..6]
            .copy_from_slice(&(self.payload_len.saturating_add(HEADER_LEN as u16)).to_be_bytes());
        h[6..8].copy_from_slice(&[0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_parse_and_bad_lengths() {
        let mut b = [0u8; 12];
        UdpRepr {
            src_port: 40000,
            dst_port: 4789,
            payload_len: 4,
        }
        .emit(&mut b);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (40000, 4789, 12, 0)
        );
        assert_eq!(u.payload().len(), 4);
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&b[..len]).err(),
                Some(WireError::Truncated)
            );
        }
        assert_eq!(
            UdpPacket::new_checked(&b[..11]).err(),
            Some(WireError::Truncated)
        );
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
