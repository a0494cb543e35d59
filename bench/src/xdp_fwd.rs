//! The minimal XDP_REDIRECT forwarder of `ferry-bench compare` (bpf/redirect.c): rewrites the
//! Ethernet addresses of every frame arriving on one interface and redirects it through a
//! devmap to another. The upper bound of the kernel's XDP path here, not a router.
//!
//! Interface names and indexes resolve in the network namespace of the calling thread: attach
//! from a thread inside the router's namespace (see `afxdp::enter_netns`).
#![forbid(unsafe_code)]

use aya::maps::{Array, DevMap, MapData};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;
use pipeline::wire::MacAddr;

// ELF parsing needs the object 8-byte aligned, which plain include_bytes! does not promise.
static REDIRECT_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/redirect.o"));

#[derive(Debug, thiserror::Error)]
pub enum XdpFwdError {
    #[error("cannot load the XDP redirect program: {0}")]
    Load(String),
    #[error("cannot attach the XDP redirect program to {iface}: {message}")]
    Attach { iface: String, message: String },
    #[error("cannot fill the XDP redirect program's maps: {0}")]
    Map(String),
}

/// The program attached to the ingress interface; detached on drop.
pub struct XdpRedirect {
    _ebpf: Ebpf,
}

impl XdpRedirect {
    /// Attaches to `in_iface` (native mode): frames leave through the interface with index
    /// `out_ifindex` with destination `dst` and source `src`.
    pub fn attach(
        in_iface: &str,
        out_ifindex: u32,
        dst: MacAddr,
        src: MacAddr,
    ) -> Result<XdpRedirect, XdpFwdError> {
        let mut ebpf = Ebpf::load(REDIRECT_OBJ).map_err(|e| XdpFwdError::Load(e.to_string()))?;
        let map = |e: aya::maps::MapError| XdpFwdError::Map(e.to_string());
        {
            let mut macs: Array<&mut MapData, [u8; 12]> = Array::try_from(
                ebpf.map_mut("macs")
                    .ok_or_else(|| XdpFwdError::Load("no macs map".into()))?,
            )
            .map_err(map)?;
            let mut v = [0u8; 12];
            v[..6].copy_from_slice(&dst.0);
            v[6..].copy_from_slice(&src.0);
            macs.set(0, v, 0).map_err(map)?;
        }
        {
            let mut out: DevMap<&mut MapData> = DevMap::try_from(
                ebpf.map_mut("out")
                    .ok_or_else(|| XdpFwdError::Load("no out map".into()))?,
            )
            .map_err(map)?;
            out.set(0, out_ifindex, None, 0)
                .map_err(|e| XdpFwdError::Map(e.to_string()))?;
        }
        let prog: &mut Xdp = ebpf
            .program_mut("redirect")
            .ok_or_else(|| XdpFwdError::Load("no redirect program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpFwdError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| XdpFwdError::Load(format!("{e:#}")))?;
        prog.attach(in_iface, XdpFlags::DRV_MODE)
            .map_err(|e| XdpFwdError::Attach {
                iface: in_iface.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok(XdpRedirect { _ebpf: ebpf })
    }
}
