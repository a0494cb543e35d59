//! ARP for IPv4 over Ethernet (RFC 826). The pipeline hands ARP to the kernel (Calico answers
//! pods' requests for 169.254.1.1 with proxy ARP on the host side of the veth); the view is here
//! so the node agent and the diagnosis tools can read requests and replies.

use super::{MacAddr, WireError};

pub const PACKET_LEN: usize = 28;

pub mod operation {
    pub const REQUEST: u16 = 1;
    pub const REPLY: u16 = 2;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Validates the packet with etherparse and requires Ethernet/IPv4 address sizes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let a = etherparse::ArpPacketSlice::from_slice(buffer.as_ref())
            .map_err(|_| WireError::Truncated)?;
        if a.hw_addr_type() != etherparse::ArpHardwareId::ETHERNET
            || a.proto_addr_type() != etherparse::EtherType::IPV4
            || a.hw_addr_size() != 6
            || a.proto_addr_size() != 4
        {
            return Err(WireError::Malformed);
        }
        Ok(ArpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn operation(&self) -> u16 {
        super::be_u16(self.b(), 6)
    }

    pub fn sender_mac(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[8], b[9], b[10], b[11], b[12], b[13]])
    }

    pub fn sender_ip(&self) -> u32 {
        super::be_u32(self.b(), 14)
    }

    pub fn target_mac(&self) -> MacAddr {
        let b = self.b();
        MacAddr([b[18], b[19], b[20], b[21], b[22], b[23]])
    }

    pub fn target_ip(&self) -> u32 {
        super::be_u32(self.b(), 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_built_by_etherparse() {
        let req = etherparse::ArpPacket::new(
            etherparse::ArpHardwareId::ETHERNET,
            etherparse::EtherType::IPV4,
            etherparse::ArpOperation::REQUEST,
            &[2, 0, 0, 0, 0, 1],
            &[172, 16, 0, 1],
            &[0; 6],
            &[169, 254, 1, 1],
        )
        .unwrap();
        let bytes = req.to_bytes();
        let a = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(a.operation(), operation::REQUEST);
        assert_eq!(a.sender_mac(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(a.sender_ip(), 0xac10_0001);
        assert_eq!(a.target_ip(), 0xa9fe_0101);
        assert_eq!(a.target_mac(), MacAddr::ZERO);
        for len in 0..bytes.len() {
            assert!(ArpPacket::new_checked(&bytes[..len]).is_err());
        }
    }
}
