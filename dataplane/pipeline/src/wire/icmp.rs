//! ICMPv4 messages: the header, and the error messages a router sends.

use super::{checksum, WireError};

pub const HEADER_LEN: usize = 8;

/// ICMP types and codes Ferry reads or sends.
pub mod kind {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Destination unreachable code 4: fragmentation needed and DF set (RFC 1191).
    pub const CODE_FRAG_NEEDED: u8 = 4;
    /// Time exceeded code 0: TTL exceeded in transit.
    pub const CODE_TTL_EXCEEDED: u8 = 0;

    /// Error messages (which must never be sent in reply to another error, RFC 1122 3.2.2).
    pub fn is_error(t: u8) -> bool {
        matches!(
            t,
            DEST_UNREACHABLE | 4 | 5 | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }
}

/// A view of an ICMP message at the start of `buffer`.
#[derive(Debug)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// The 4 bytes after the checksum (echo id/sequence, or unused + next-hop MTU).
    pub fn rest_of_header(&self) -> u32 {
        super::be_u32(self.buffer.as_ref(), 4)
    }

    /// An echo request's or reply's identifier (the first half of the rest of the header).
    pub fn echo_ident(&self) -> u16 {
        (self.rest_of_header() >> 16) as u16
    }

    /// True when the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

/// An ICMP error message to emit: type, code, the 4-byte rest of header; the quoted original
/// datagram is already in place after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    pub msg_type: u8,
    pub code: u8,
    pub rest_of_header: u32,
}

impl IcmpErrorRepr {
    /// Writes the header into `msg[..8]` and the checksum over all of `msg` (header + quote).
    pub fn emit(&self, msg: &mut [u8]) {
        msg[0] = self.msg_type;
        msg[1] = self.code;
        msg[2..4].copy_from_slice(&[0, 0]);
        msg[4..8].copy_from_slice(&self.rest_of_header.to_be_bytes());
        let c = checksum::checksum(msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_frag_needed_and_verify() {
        let mut m = [0u8; 36];
        m[8..].copy_from_slice(&[0x45; 28]);
        IcmpErrorRepr {
            msg_type: kind::DEST_UNREACHABLE,
            code: kind::CODE_FRAG_NEEDED,
            rest_of_header: 1480,
        }
        .emit(&mut m);
        let p = IcmpPacket::new_checked(&m[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.code(), p.rest_of_header()), (3, 4, 1480));
        assert!(kind::is_error(p.msg_type()));
        assert!(!kind::is_error(kind::ECHO_REQUEST));
        assert_eq!(
            IcmpPacket::new_checked(&m[..7]).err(),
            Some(WireError::Truncated)
        );
    }
}
