//! TCP headers (the fields a router reads: ports and flags).

use super::WireError;

pub const MIN_HEADER_LEN: usize = 20;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A view of a TCP segment at the start of `buffer`.
#[derive(Debug)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// Bytes up to and including the flags byte.
pub const FLAGS_END: usize = 14;

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// The flags of a header cut short (a first fragment, an ICMP quote), if its first
    /// [`FLAGS_END`] bytes are present.
    pub fn flags_of_partial(buffer: T) -> Option<u8> {
        buffer.as_ref().get(FLAGS_END - 1).copied()
    }

    /// Checks the header and its options are present and the data offset is sane (etherparse).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        use etherparse::err::tcp::HeaderSliceError;
        etherparse::TcpHeaderSlice::from_slice(buffer.as_ref()).map_err(|e| match e {
            HeaderSliceError::Len(_) => WireError::Truncated,
            HeaderSliceError::Content(_) => WireError::Malformed,
        })?;
        Ok(TcpPacket { buffer })
    }

    pub fn src_port(&self) -> u16 {
        super::be_u16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        super::be_u16(self.buffer.as_ref(), 2)
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ports_flags_and_reject_bad_offsets() {
        let mut b = [0u8; 24];
        b[0..2].copy_from_slice(&12345u16.to_be_bytes());
        b[2..4].copy_from_slice(&80u16.to_be_bytes());
        b[12] = 6 << 4; // 24-byte header with 4 bytes of options
        b[13] = flags::SYN;
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (t.src_port(), t.dst_port(), t.header_len(), t.flags()),
            (12345, 80, 24, flags::SYN)
        );
        assert_eq!(
            TcpPacket::new_checked(&b[..23]).err(),
            Some(WireError::Truncated)
        );
        b[12] = 4 << 4; // data offset below the minimum
        assert_eq!(
            TcpPacket::new_checked(&b[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
