//! A frame buffer with headroom: the bytes of one packet inside a larger buffer (a UMEM chunk, or
//! a replay buffer), so that outer headers can be pushed in front of the packet and popped off it
//! without moving the payload.

/// Why a frame could not be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough headroom in front of the packet for the push.
    NoHeadroom,
    /// The packet is shorter than what was to be popped or kept.
    TooShort,
    /// Start and length do not lie inside the buffer.
    OutOfBounds,
}

/// One packet: `buf[head..head + len]`, with `buf[..head]` free for pushes.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// The packet occupies `buf[head..head + len]`.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Result<Self, FrameError> {
        match head.checked_add(len) {
            Some(end) if end <= buf.len() => Ok(Frame { buf, head, len }),
            _ => Err(FrameError::OutOfBounds),
        }
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the packet within the buffer (what an AF_XDP tx descriptor carries).
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grows the packet by `n` bytes at the front (their content is whatever was there).
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Result<(), FrameError> {
        if n > self.head {
            return Err(FrameError::NoHeadroom);
        }
        self.head -= n;
        self.len += n;
        Ok(())
    }

    /// Drops `n` bytes from the front of the packet.
    #[inline]
    pub fn pop_front(&mut self, n: usize) -> Result<(), FrameError> {
        if n > self.len {
            return Err(FrameError::TooShort);
        }
        self.head += n;
        self.len -= n;
        Ok(())
    }

    /// Keeps only the first `len` bytes (trailing Ethernet padding, quoted ICMP payloads).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Moves the first `n` bytes of the packet `by` bytes towards the back, then pops `by`
    /// bytes: removes `by` bytes that followed a leading header of `n` bytes (IPIP decap keeps
    /// the Ethernet header and drops the outer IP header this way).
    pub fn remove_after(&mut self, n: usize, by: usize) -> Result<(), FrameError> {
        if n.checked_add(by).is_none_or(|end| end > self.len) {
            return Err(FrameError::TooShort);
        }
        let h = self.head;
        self.buf.copy_within(h..h + n, h + by);
        self.pop_front(by)
    }

    /// Pushes `by` bytes and moves the first `n` bytes of the old packet to the new front:
    /// opens a gap of `by` bytes after a leading header of `n` bytes (IPIP encap).
    pub fn insert_after(&mut self, n: usize, by: usize) -> Result<(), FrameError> {
        if n > self.len {
            return Err(FrameError::TooShort);
        }
        self.push_front(by)?;
        let h = self.head;
        self.buf.copy_within(h + by..h + by + n, h);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_and_bounds() {
        let mut b = [0u8; 32];
        b[8..12].copy_from_slice(b"abcd");
        let mut f = Frame::new(&mut b, 8, 4).unwrap();
        assert_eq!(f.data(), b"abcd");
        assert_eq!((f.headroom(), f.tailroom()), (8, 20));
        f.push_front(2).unwrap();
        f.data_mut()[..2].copy_from_slice(b"xy");
        assert_eq!(f.data(), b"xyabcd");
        assert_eq!(f.push_front(7), Err(FrameError::NoHeadroom));
        f.pop_front(3).unwrap();
        assert_eq!(f.data(), b"bcd");
        assert_eq!(f.pop_front(4), Err(FrameError::TooShort));
        f.truncate(1);
        assert_eq!(f.data(), b"b");
        assert!(Frame::new(&mut [0u8; 4], 3, 2).is_err());
        assert!(Frame::new(&mut [0u8; 4], usize::MAX, 2).is_err());
    }

    #[test]
    fn insert_and_remove_gap_after_header() {
        let mut b = [0u8; 16];
        b[4..10].copy_from_slice(b"EEpayl");
        let mut f = Frame::new(&mut b, 4, 6).unwrap();
        f.insert_after(2, 3).unwrap();
        assert_eq!(&f.data()[..2], b"EE");
        assert_eq!(&f.data()[5..], b"payl");
        f.data_mut()[2..5].copy_from_slice(b"OUT");
        assert_eq!(f.data(), b"EEOUTpayl");
        f.remove_after(2, 3).unwrap();
        assert_eq!(f.data(), b"EEpayl");
        assert_eq!(f.remove_after(5, 3), Err(FrameError::TooShort));
        assert_eq!(f.insert_after(2, 100), Err(FrameError::NoHeadroom));
    }
}
