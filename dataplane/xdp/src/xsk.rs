//! AF_XDP sockets over one shared UMEM: the only module of the dataplane with `unsafe`.
//!
//! Why not xsk-rs: its frame descriptor hides the descriptor address (crate-private fields), so
//! a header cannot be pushed into the headroom in front of a received packet without moving the
//! whole payload, and its descriptors are `Copy`, which leaves "do not reuse a frame the kernel
//! owns" to the caller. Here a frame is a move-only [`XskFrame`]: created only from what the
//! kernel hands back (rx and completion rings), consumed when handed to the kernel (fill and tx
//! rings), so userspace and the kernel never own a chunk at the same time, and at most one
//! mutable view of a chunk exists. The kernel ABI (linux/if_xdp.h) comes from `libc`.
//!
//! Layout: one UMEM per worker, split into `frame_count` chunks of `chunk_size` bytes; every
//! socket of the worker (one per port: pod veths and the uplink) binds with `XDP_SHARED_UMEM`
//! and its own fill and completion rings, so a frame received on one port is transmitted on
//! another without a copy in userspace. The kernel writes received data at
//! `chunk + XDP_PACKET_HEADROOM` (256 bytes), which is the headroom the pipeline pushes tunnel
//! headers into; a tx descriptor then simply points at the new start.
//!
//! Ring protocol (Documentation/networking/af_xdp.rst): each ring is a producer index, a
//! consumer index and an array, shared with the kernel. Reading the other side's index uses
//! Acquire (pairs with the kernel's `smp_store_release`/`smp_wmb` before publishing); publishing
//! ours uses Release (pairs with the kernel's `smp_load_acquire`/`smp_rmb`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Headroom the kernel leaves in front of received data in every chunk.
pub const XDP_PACKET_HEADROOM: usize = 256;

/// Why an AF_XDP resource could not be set up. Each names the step and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid UMEM geometry: {0}")]
    Geometry(&'static str),
    #[error("cannot allocate the {bytes}-byte UMEM: {source}")]
    Mmap { bytes: usize, source: io::Error },
    #[error("interface {0:?} does not exist in this network namespace")]
    NoInterface(String),
    #[error("{step} failed on {iface}: {source}{hint}")]
    Socket {
        step: &'static str,
        iface: String,
        source: io::Error,
        hint: &'static str,
    },
}

impl XskError {
    /// The queue is still held by a socket being torn down (the kernel frees a closed
    /// socket's UMEM binding asynchronously): binding again shortly after will succeed.
    pub fn is_busy(&self) -> bool {
        matches!(self, XskError::Socket { source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }
}

fn os_err(step: &'static str, iface: &str) -> XskError {
    let source = io::Error::last_os_error();
    let hint = match source.raw_os_error() {
        Some(libc::EPERM) => " (AF_XDP needs root or CAP_NET_ADMIN + CAP_NET_RAW)",
        Some(libc::ENOMEM) => " (raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK)",
        Some(libc::EAFNOSUPPORT) => " (the kernel was built without CONFIG_XDP_SOCKETS)",
        Some(libc::EBUSY) => " (another AF_XDP socket is bound to this queue)",
        Some(libc::EINVAL) => " (the kernel refused the ring or UMEM setup)",
        _ => "",
    };
    XskError::Socket {
        step,
        iface: iface.to_string(),
        source,
        hint,
    }
}

/// The shared packet buffer area of one worker.
pub struct Umem {
    /// This UMEM's brand: every frame it hands out carries it, and every use of a frame checks
    /// it, so a chunk of one UMEM is never taken for the same offset of another.
    id: u32,
    area: NonNull<u8>,
    len: usize,
    chunk_size: u32,
    frame_count: u32,
}

// SAFETY: `Umem` is a raw memory region; all access goes through `XskFrame` handles, which are
// unique per chunk, so moving the owner to another thread cannot create aliasing.
unsafe impl Send for Umem {}

/// Ownership of one UMEM chunk. Not `Copy`, not `Clone`: whoever holds it may read and write the
/// chunk; giving it to the kernel consumes it. It names the UMEM it came from: handing it to
/// another UMEM (its `chunk_mut`, or the fill or tx ring of a socket bound to it) panics, as
/// an out-of-bounds index does, because a foreign chunk offset would alias one of that UMEM's
/// own chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct XskFrame {
    umem: u32,
    chunk: u64,
}

/// Brands of the UMEMs of this process (never reused).
static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

/// The check every use of a frame makes (one compare; the branch is never taken).
#[inline]
#[track_caller]
fn check_brand(frame: &XskFrame, umem: u32) {
    assert_eq!(
        frame.umem, umem,
        "an AF_XDP frame of UMEM {} given to UMEM {umem}",
        frame.umem
    );
}

/// A frame and the window of its chunk that holds the packet: what an rx ring gives and a tx
/// ring takes. The one shape a frame has outside the pipeline (inside, `pipeline::Packet` views
/// the window's bytes while the handle stays here).
#[derive(Debug)]
pub struct XskDesc {
    pub frame: XskFrame,
    /// Offset of the packet's first byte in the chunk.
    pub head: usize,
    pub len: usize,
}

impl XskFrame {
    /// Address of the chunk's first byte within the UMEM.
    pub fn chunk_addr(&self) -> u64 {
        self.chunk
    }
}

impl Umem {
    /// Maps `frame_count` chunks of `chunk_size` bytes (a power of two from 2048 to 4096, as
    /// aligned mode requires) and returns every frame, all owned by the caller at first.
    pub fn new(frame_count: u32, chunk_size: u32) -> Result<(Umem, Vec<XskFrame>), XskError> {
        if !(chunk_size == 2048 || chunk_size == 4096) {
            return Err(XskError::Geometry("chunk size must be 2048 or 4096"));
        }
        if frame_count == 0 || frame_count > 1 << 20 {
            return Err(XskError::Geometry("frame count must be 1..=1048576"));
        }
        let len = frame_count as usize * chunk_size as usize;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XskError::Mmap {
                bytes: len,
                source: io::Error::last_os_error(),
            });
        }
        let area = NonNull::new(p.cast::<u8>()).ok_or(XskError::Geometry("mmap returned null"))?;
        let id = NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed);
        let frames = (0..u64::from(frame_count))
            .map(|i| XskFrame {
                umem: id,
                chunk: i * u64::from(chunk_size),
            })
            .collect();
        Ok((
            Umem {
                id,
                area,
                len,
                chunk_size,
                frame_count,
            },
            frames,
        ))
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// The bytes of the chunk `frame` owns. The borrow of the handle bounds the slice, so one
    /// handle never yields two live mutable views.
    pub fn chunk_mut<'a>(&'a self, frame: &'a mut XskFrame) -> &'a mut [u8] {
        check_brand(frame, self.id);
        debug_assert!(frame.chunk as usize + self.chunk_size as usize <= self.len);
        // SAFETY: `frame` carries this UMEM's brand (checked above), so `frame.chunk` was
        // produced by this UMEM's `new` or `frame_from_kernel` (which masks a kernel address to a
        // chunk inside the area), and the range lies inside the mapping. The
        // chunk is owned by this unique, mutably borrowed handle: the kernel does not access it
        // (it only touches chunks in its rings), and no other handle names the same chunk.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.as_ptr().add(frame.chunk as usize),
                self.chunk_size as usize,
            )
        }
    }

    /// A handle for the chunk containing `addr`, an address the kernel returned in an rx or
    /// completion descriptor; `None` when the address is outside the UMEM (a kernel or
    /// configuration bug; the frame is then lost rather than aliased).
    fn frame_from_kernel(&self, addr: u64) -> Option<(XskFrame, usize)> {
        let chunk = addr & !(u64::from(self.chunk_size) - 1);
        if chunk >= u64::from(self.frame_count) * u64::from(self.chunk_size) {
            return None;
        }
        Some((
            XskFrame {
                umem: self.id,
                chunk,
            },
            (addr - chunk) as usize,
        ))
    }

    fn registration(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.len as u64,
            chunk_size: self.chunk_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`. Sockets registered on it hold the
        // pages pinned in the kernel until they close; they are owned by the worker that owns
        // this UMEM and are dropped first (field order in `Worker`).
        unsafe {
            libc::munmap(self.area.as_ptr().cast(), self.len);
        }
    }
}

/// One mmapped ring of `T` entries shared with the kernel.
struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our copy of our own index (producer for fill/tx, consumer for rx/completion).
    cached_own: u32,
    /// Our last read of the kernel's index.
    cached_other: u32,
}

impl<T> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of socket `fd`.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
        iface: &str,
        step: &'static str,
    ) -> Result<Self, XskError> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: maps the ring the kernel created for `fd` at the documented page offset;
        // the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err(step, iface));
        }
        let base = p.cast::<u8>();
        // SAFETY: the offsets come from the kernel's XDP_MMAP_OFFSETS for this ring and lie
        // inside the `map_len` bytes just mapped; the fields are 4-byte aligned u32s.
        let at = |o: u64| unsafe { NonNull::new_unchecked(base.add(o as usize)) };
        Ok(Ring {
            map: at(0),
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            size,
            cached_own: 0,
            cached_other: 0,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`); the kernel only accesses it atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Producer side: how many entries can be written now.
    fn free(&mut self) -> u32 {
        self.cached_other = self.consumer().load(Ordering::Acquire);
        self.size - self.cached_own.wrapping_sub(self.cached_other)
    }

    /// Producer side: writes one entry at our next slot (the caller checked `free`).
    fn write(&mut self, v: T) {
        let idx = (self.cached_own & self.mask) as usize;
        // SAFETY: idx < size; the slot is ours between the kernel's consumer and our producer.
        unsafe { self.descs.as_ptr().add(idx).write(v) };
        self.cached_own = self.cached_own.wrapping_add(1);
    }

    /// Producer side: makes the written entries visible to the kernel.
    fn submit(&mut self) {
        self.producer().store(self.cached_own, Ordering::Release);
    }

    /// Consumer side: how many entries the kernel has produced for us.
    fn available(&mut self) -> u32 {
        self.cached_other = self.producer().load(Ordering::Acquire);
        self.cached_other.wrapping_sub(self.cached_own)
    }

    /// Consumer side: reads the next entry (the caller checked `available`).
    fn read(&mut self) -> T
    where
        T: Copy,
    {
        let idx = (self.cached_own & self.mask) as usize;
        // SAFETY: idx < size; the kernel published this slot (Acquire in `available`).
        let v = unsafe { self.descs.as_ptr().add(idx).read() };
        self.cached_own = self.cached_own.wrapping_add(1);
        v
    }

    /// Consumer side: gives the read slots back to the kernel.
    fn release(&mut self) {
        self.consumer().store(self.cached_own, Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

// SAFETY: a ring is plain shared memory owned by one socket owner; moving it between threads
// is fine, concurrent use is prevented by `&mut self` on every operation.
unsafe impl<T> Send for Ring<T> {}

/// Ring sizes of one socket.
#[derive(Debug, Clone, Copy)]
pub struct RingSizes {
    pub rx: u32,
    pub tx: u32,
    pub fill: u32,
    pub completion: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            rx: 1024,
            tx: 1024,
            fill: 1024,
            completion: 1024,
        }
    }
}

/// An AF_XDP socket bound to one interface queue, with its own fill and completion rings on the
/// worker's shared UMEM.
pub struct XskSocket {
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    completion: Ring<u64>,
    fd: OwnedFd,
    iface: String,
    queue: u32,
    /// Frames in the tx ring not yet completed.
    tx_in_flight: u32,
    /// Frames in the fill ring (or received into the rx ring) not yet returned to us.
    fill_in_flight: u32,
    /// The brand of the UMEM the socket is bound to.
    umem: u32,
}

fn setsockopt<T>(
    fd: RawFd,
    opt: libc::c_int,
    v: &T,
    iface: &str,
    step: &'static str,
) -> Result<(), XskError> {
    // SAFETY: `v` points to a live value of the size passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os_err(step, iface));
    }
    Ok(())
}

impl XskSocket {
    /// Creates a socket on `iface` queue `queue`, in copy mode with need_wakeup. The first
    /// socket of a UMEM registers it (`shared_with = None`); later ones share it by passing the
    /// first socket.
    pub fn bind(
        umem: &Umem,
        iface: &str,
        queue: u32,
        sizes: RingSizes,
        shared_with: Option<&XskSocket>,
    ) -> Result<XskSocket, XskError> {
        for s in [sizes.rx, sizes.tx, sizes.fill, sizes.completion] {
            if !s.is_power_of_two() {
                return Err(XskError::Geometry("ring sizes must be powers of two"));
            }
        }
        let cname = CString::new(iface).map_err(|_| XskError::NoInterface(iface.to_string()))?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(XskError::NoInterface(iface.to_string()));
        }
        // SAFETY: plain socket(2); the result is checked and owned immediately.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_err("socket(AF_XDP)", iface));
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        if shared_with.is_none() {
            setsockopt(
                f,
                libc::XDP_UMEM_REG,
                &umem.registration(),
                iface,
                "XDP_UMEM_REG",
            )?;
        }
        setsockopt(
            f,
            libc::XDP_UMEM_FILL_RING,
            &sizes.fill,
            iface,
            "XDP_UMEM_FILL_RING",
        )?;
        setsockopt(
            f,
            libc::XDP_UMEM_COMPLETION_RING,
            &sizes.completion,
            iface,
            "XDP_UMEM_COMPLETION_RING",
        )?;
        setsockopt(f, libc::XDP_RX_RING, &sizes.rx, iface, "XDP_RX_RING")?;
        setsockopt(f, libc::XDP_TX_RING, &sizes.tx, iface, "XDP_TX_RING")?;
        // SAFETY: xdp_mmap_offsets is plain old data; zero is a valid bit pattern.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `optlen` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                f,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(os_err("XDP_MMAP_OFFSETS", iface));
        }
        let rx = Ring::map(
            f,
            &off.rx,
            sizes.rx,
            libc::XDP_PGOFF_RX_RING as u64,
            iface,
            "mmap rx ring",
        )?;
        let tx = Ring::map(
            f,
            &off.tx,
            sizes.tx,
            libc::XDP_PGOFF_TX_RING as u64,
            iface,
            "mmap tx ring",
        )?;
        let fill = Ring::map(
            f,
            &off.fr,
            sizes.fill,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            iface,
            "mmap fill ring",
        )?;
        let completion = Ring::map(
            f,
            &off.cr,
            sizes.completion,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            iface,
            "mmap completion ring",
        )?;
        let (flags, shared_fd) = match shared_with {
            // A sharing socket may not pass mode flags: it inherits copy mode and need_wakeup
            // from the socket that registered the UMEM (the kernel answers EINVAL otherwise).
            Some(first) => (libc::XDP_SHARED_UMEM, first.fd.as_raw_fd() as u32),
            None => (libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, 0),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_fd,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                f,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(os_err("bind", iface));
        }
        Ok(XskSocket {
            umem: umem.id,
            rx,
            tx,
            fill,
            completion,
            fd,
            iface: iface.to_string(),
            queue,
            tx_in_flight: 0,
            fill_in_flight: 0,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Frames this socket holds in the kernel (fill ring + tx ring).
    pub fn frames_in_kernel(&self) -> u32 {
        self.tx_in_flight + self.fill_in_flight
    }

    /// Tops the fill ring up to `target` frames in flight from `free`.
    pub fn refill(&mut self, free: &mut Vec<XskFrame>, target: u32) {
        let want = target
            .saturating_sub(self.fill_in_flight)
            .min(self.fill.free())
            .min(free.len() as u32);
        if want == 0 {
            return;
        }
        for _ in 0..want {
            if let Some(f) = free.pop() {
                check_brand(&f, self.umem);
                self.fill.write(f.chunk);
            }
        }
        self.fill.submit();
        self.fill_in_flight += want;
    }

    /// True when the kernel asks to be woken (poll/recvfrom) to process the fill ring.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Receives up to `max` frames into `out`.
    pub fn recv(&mut self, umem: &Umem, max: usize, out: &mut Vec<XskDesc>) -> usize {
        let n = (self.rx.available() as usize).min(max);
        for _ in 0..n {
            let d = self.rx.read();
            if let Some((frame, off)) = umem.frame_from_kernel(d.addr) {
                let len = (d.len as usize).min(umem.chunk_size as usize - off);
                out.push(XskDesc {
                    frame,
                    head: off,
                    len,
                });
            }
        }
        if n > 0 {
            self.rx.release();
            self.fill_in_flight = self.fill_in_flight.saturating_sub(n as u32);
        }
        n
    }

    /// Queues frames for transmission. Frames that do not fit in the tx ring are returned to
    /// `free` (counted by the caller as tx drops). Returns how many were queued. Call
    /// [`XskSocket::kick`] once after the batch.
    pub fn send(&mut self, frames: &mut Vec<XskDesc>, free: &mut Vec<XskFrame>) -> usize {
        let room = self.tx.free() as usize;
        let n = frames.len().min(room);
        for d in frames.drain(..n) {
            check_brand(&d.frame, self.umem);
            self.tx.write(libc::xdp_desc {
                addr: d.frame.chunk + d.head as u64,
                len: d.len as u32,
                options: 0,
            });
        }
        free.extend(frames.drain(..).map(|d| d.frame));
        if n > 0 {
            self.tx.submit();
            self.tx_in_flight += n as u32;
        }
        n
    }

    /// Wakes the kernel to transmit what was queued (copy mode transmits inside this call).
    pub fn kick(&mut self) {
        if self.tx_in_flight > 0 && self.tx.needs_wakeup() {
            // SAFETY: a zero-length sendto on our own socket, no buffers passed.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                );
            }
        }
    }

    /// Moves completed transmissions back to `free`.
    pub fn reap(&mut self, umem: &Umem, free: &mut Vec<XskFrame>) -> usize {
        let n = self.completion.available();
        for _ in 0..n {
            let addr = self.completion.read();
            if let Some((f, _)) = umem.frame_from_kernel(addr) {
                free.push(f);
            }
        }
        if n > 0 {
            self.completion.release();
            self.tx_in_flight = self.tx_in_flight.saturating_sub(n);
        }
        n as usize
    }

    /// The kernel's counters for this socket.
    pub fn statistics(&self) -> Option<libc::xdp_statistics> {
        // SAFETY: plain old data, zero is valid.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` and `len` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(s)
    }
}

/// Waits until one of `sockets` has something to receive, or `timeout_ms` passes. Used when a
/// worker has been idle for a while, so idle nodes do not burn a core (the lab runs several
/// nodes on two cores); also wakes the kernel for fill rings flagged need_wakeup.
pub fn wait_readable(sockets: &[XskSocket], timeout_ms: i32) {
    const MAX: usize = 256;
    let mut fds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    let n = sockets.len().min(MAX);
    for (p, s) in fds.iter_mut().zip(sockets) {
        p.fd = s.fd();
        p.events = libc::POLLIN;
    }
    // SAFETY: `fds[..n]` are initialised pollfd entries.
    unsafe {
        libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, timeout_ms);
    }
}

/// Lets the process lock as much memory as UMEMs need (older kernels charge UMEM pages to
/// RLIMIT_MEMLOCK; newer ones to the memory cgroup).
pub fn raise_memlock_limit() -> io::Result<()> {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `r` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umem_frames_are_distinct_chunks_and_geometry_is_checked() {
        let (umem, mut frames) = Umem::new(8, 2048).unwrap();
        assert_eq!(frames.len(), 8);
        let addrs: std::collections::BTreeSet<u64> =
            frames.iter().map(super::XskFrame::chunk_addr).collect();
        assert_eq!(addrs.len(), 8);
        let c = umem.chunk_mut(&mut frames[3]);
        assert_eq!(c.len(), 2048);
        c[0] = 1;
        c[2047] = 2;
        assert_eq!(
            umem.frame_from_kernel(3 * 2048 + 256)
                .map(|(f, o)| (f.chunk_addr(), o)),
            Some((6144, 256))
        );
        assert!(umem.frame_from_kernel(8 * 2048).is_none());
        assert!(Umem::new(8, 1000).is_err());
        assert!(Umem::new(0, 2048).is_err());
    }

    #[test]
    fn a_frame_is_refused_by_another_umem() {
        let (a, mut fa) = Umem::new(4, 2048).unwrap();
        let (b, _) = Umem::new(4, 2048).unwrap();
        // Its own UMEM takes it, and frames coming back from the kernel carry the brand.
        assert_eq!(a.chunk_mut(&mut fa[0]).len(), 2048);
        let (mut back, _) = a.frame_from_kernel(2048 + 256).unwrap();
        assert_eq!(a.chunk_mut(&mut back).len(), 2048);
        // The same offset in another UMEM of the same geometry would alias its chunk 1.
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.chunk_mut(&mut back).len()
        }));
        let msg = refused.expect_err("another UMEM must refuse the frame");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("given to UMEM"), "panic said: {msg}");
    }
}
