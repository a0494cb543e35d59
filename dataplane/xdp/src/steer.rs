//! The XDP steering program (bpf/steer.c) on one interface: loads it (aya), attaches it in
//! native mode, and fills its maps — the AF_XDP socket to redirect to, the node address, the
//! VXLAN port, and (on the uplink) the local prefixes whose plain traffic Ferry forwards.
//!
//! The program is attached through a BPF link owned by this process, so when Ferry exits —
//! cleanly or killed with SIGKILL — the kernel detaches it and the interface goes back to plain
//! kernel forwarding: the node's own traffic never depends on Ferry being alive.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;
use pipeline::tables::Ipv4Prefix;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

// ELF parsing needs the object 8-byte aligned, which plain include_bytes! does not promise.
static STEER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.o"));

/// What an interface is for the steering program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pod = 1,
    Uplink = 2,
}

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    #[error("cannot attach XDP to {iface} in native mode: {message} (the interface needs native XDP support, e.g. veth; is another XDP program attached?)")]
    Attach { iface: String, message: String },
    #[error("cannot update the XDP maps of {iface}: {message}")]
    Map { iface: String, message: String },
}

/// The steering program attached to one interface; detached on drop.
pub struct Steering {
    ebpf: Ebpf,
    iface: String,
    role: Role,
}

impl Steering {
    pub fn attach(
        iface: &str,
        role: Role,
        node: Ipv4Addr,
        vxlan_port: u16,
    ) -> Result<Steering, SteerError> {
        let mut ebpf = Ebpf::load(STEER_OBJ).map_err(|e| SteerError::Load(e.to_string()))?;
        let map_err = |e: aya::maps::MapError| SteerError::Map {
            iface: iface.to_string(),
            message: e.to_string(),
        };
        {
            let mut config: Array<&mut MapData, u32> = Array::try_from(
                ebpf.map_mut("config")
                    .ok_or_else(|| SteerError::Load("no config map".into()))?,
            )
            .map_err(map_err)?;
            config.set(0, role as u32, 0).map_err(map_err)?;
            config
                .set(1, u32::from_ne_bytes(node.octets()), 0)
                .map_err(map_err)?;
            config.set(2, u32::from(vxlan_port), 0).map_err(map_err)?;
        }
        let prog: &mut Xdp = ebpf
            .program_mut("ferry_steer")
            .ok_or_else(|| SteerError::Load("no ferry_steer program".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| SteerError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| SteerError::Load(format!("{e:#}")))?;
        prog.attach(iface, XdpFlags::DRV_MODE)
            .map_err(|e| SteerError::Attach {
                iface: iface.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok(Steering {
            ebpf,
            iface: iface.to_string(),
            role,
        })
    }

    /// Steers UDP to the node on `port` (WireGuard) to Ferry too; 0 turns it off.
    pub fn set_wireguard_port(&mut self, port: u16) -> Result<(), SteerError> {
        let iface = self.iface.clone();
        let map_err = |e: aya::maps::MapError| SteerError::Map {
            iface: iface.clone(),
            message: e.to_string(),
        };
        let mut config: Array<&mut MapData, u32> = Array::try_from(
            self.ebpf
                .map_mut("config")
                .ok_or_else(|| SteerError::Load("no config map".into()))?,
        )
        .map_err(map_err)?;
        config.set(3, u32::from(port), 0).map_err(map_err)
    }

    /// Redirects the interface's queue `queue` to the socket `fd`.
    pub fn set_socket(&mut self, queue: u32, fd: impl AsRawFd) -> Result<(), SteerError> {
        let iface = self.iface.clone();
        let map_err = |e: aya::maps::MapError| SteerError::Map {
            iface: iface.clone(),
            message: e.to_string(),
        };
        let mut xsks: XskMap<&mut MapData> = XskMap::try_from(
            self.ebpf
                .map_mut("xsks")
                .ok_or_else(|| SteerError::Load("no xsks map".into()))?,
        )
        .map_err(map_err)?;
        xsks.set(queue, fd, 0).map_err(map_err)
    }

    /// Replaces the set of local prefixes whose plain traffic the uplink sends to Ferry.
    pub fn set_local_prefixes(&mut self, prefixes: &[Ipv4Prefix]) -> Result<(), SteerError> {
        let iface = self.iface.clone();
        let map_err = |e: aya::maps::MapError| SteerError::Map {
            iface: iface.clone(),
            message: e.to_string(),
        };
        let mut local: LpmTrie<&mut MapData, u32, u32> = LpmTrie::try_from(
            self.ebpf
                .map_mut("local")
                .ok_or_else(|| SteerError::Load("no local map".into()))?,
        )
        .map_err(map_err)?;
        let old: Vec<Key<u32>> = local.keys().filter_map(Result::ok).collect();
        for p in prefixes {
            let k = Key::new(u32::from(p.len), u32::from_ne_bytes(p.addr.to_be_bytes()));
            local.insert(&k, 1, 0).map_err(map_err)?;
        }
        for k in old {
            let keep = prefixes.iter().any(|p| {
                u32::from(p.len) == k.prefix_len()
                    && u32::from_ne_bytes(p.addr.to_be_bytes()) == k.data()
            });
            if !keep {
                local.remove(&k).map_err(map_err)?;
            }
        }
        Ok(())
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn iface(&self) -> &str {
        &self.iface
    }
}
