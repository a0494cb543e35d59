//! The two ports every port-carrying transport (TCP, UDP, SCTP) starts with. A router reads
//! only these (and TCP's flags) to tell flows apart, also from a first fragment or an ICMP
//! quote that holds no more than the first 8 bytes of the transport header.

use super::WireError;

/// Bytes the view needs: source and destination port.
pub const LEN: usize = 4;

/// A view of the first bytes of a TCP, UDP or SCTP header at the start of `buffer`.
#[derive(Debug)]
pub struct PortsView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PortsView<T> {
    /// Checks both ports are inside the buffer; after it no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < LEN {
            return Err(WireError::Truncated);
        }
        Ok(PortsView { buffer })
    }

    pub fn src_port(&self) -> u16 {
        super::be_u16(self.buffer.as_ref(), 0)
    }

    pub fn dst_port(&self) -> u16 {
        super::be_u16(self.buffer.as_ref(), 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ports_and_refuses_a_short_header() {
        let b = [0x30, 0x39, 0x00, 0x50, 0xff];
        let p = PortsView::new_checked(&b[..]).expect("5 bytes hold both ports");
        assert_eq!((p.src_port(), p.dst_port()), (12345, 80));
        assert_eq!(
            PortsView::new_checked(&b[..3]).err(),
            Some(WireError::Truncated)
        );
    }
}
