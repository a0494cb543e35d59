//! Wire formats as typed views over frame bytes, in the manner of smoltcp: a `Packet`-like view
//! wraps a byte slice, `new_checked` validates lengths once (delegating header validation to
//! etherparse where it has a parser), after which no accessor can panic; a `Repr` describes a
//! header to emit. Outer headers are pushed and popped in place using the frame's headroom
//! ([`Frame`]), so encapsulation never copies the payload.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod icmp;
pub mod ipip;
pub mod ipv4;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use ethernet::{EtherType, MacAddr};
pub use frame::{Frame, FrameError};

/// The big-endian `u16` at `at` of `b`: every view's two-byte field reader. Views call it only
/// after `new_checked` has made sure the field is inside the buffer.
#[inline]
pub(crate) fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian `u32` at `at` of `b` (as [`be_u16`]).
#[inline]
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Why a view could not be made over some bytes. Mapped onto drop reasons by the pipeline;
/// the variants stay fieldless so that producing one costs nothing on the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer ends before the header (or the length the header declares) does.
    Truncated,
    /// A field holds a value the format forbids (IP version, IHL < 5, total length < IHL, ...).
    Malformed,
    /// The header checksum does not verify.
    BadChecksum,
}
