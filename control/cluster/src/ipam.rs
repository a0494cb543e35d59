//! Calico-style IPAM: IP pools carved into blocks with a node affinity, the state of every
//! block and handle, and how an address is chosen.
//!
//! # Semantics (as Calico's `libcalico-go/lib/ipam`, `strictAffinity: false`)
//!
//! - A pool ([`IpPool`]) is carved into blocks of `spec.blockSize`. A block is created the first
//!   time a node claims it and from then on has an *affinity* to that node.
//! - An automatic assignment for a node takes, in order: a free address in one of the node's
//!   affine blocks (lowest block, lowest address first); else a new block claimed for the node
//!   (the lowest unclaimed block of the first allowed pool that has one); else a free address
//!   *borrowed* from another node's block (lowest block first), as Calico does when
//!   `strictAffinity` is false. Only blocks inside the allowed pools are considered.
//! - The allowed pools: those named by the pod's `cni.projectcalico.org/ipv4pools` annotation
//!   (pool names or CIDRs), else by its namespace's, else every enabled pool whose
//!   `nodeSelector` matches the node's labels. As in Calico's `determinePools`, pools named by an
//!   annotation are used *regardless* of their node selector (that is how a `!all()` pool is
//!   used), and naming a pool that is unknown or disabled is an error.
//! - `cni.projectcalico.org/ipAddrs` asks for one exact address (Calico's `AssignIP`): it must lie
//!   in an enabled pool (node selectors and `ipv4pools` are ignored, as in Calico); if its block
//!   does not exist yet it is claimed with affinity to the node; if the address is taken the
//!   request fails naming the holder, and nothing is written.
//! - Every address of a block is allocatable, including a block's first and last address (the
//!   pool's network address `x.y.0.0` too): Calico skips none, since pod addresses are /32 routes
//!   and there is no subnet broadcast. Ferry follows it.
//! - One address per handle (IPv4 only). Assigning again with a handle that already holds an
//!   address returns that address (a retried CNI ADD), unless a different exact address is asked
//!   for, which is an error. Release by handle is idempotent. A block whose last address is
//!   released keeps its affinity (as Calico; it shows empty in [`IpamState`]).
//! - Difference from Calico: a released address goes back to the lowest-first order at once,
//!   where Calico appends it to the end of the block's free list (delaying reuse).
//!
//!
//! This module is the state and its logic, in memory ([`IpamState::assign`],
//! [`IpamState::release`]); keeping it (a locked JSON file in a state directory, or Calico's
//! objects in the API server) is the adapters' (`control::ipam`, `control::kube_ipam`), behind
//! [`IpamStore`].

use crate::model::{IpPool, Namespace, Pod, IPV4POOLS_ANNOTATION};
use crate::selector::Selector;
use pipeline::tables::Ipv4Prefix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The annotation asking for exact addresses: a JSON list with one IPv4 address.
pub const IPADDRS_ANNOTATION: &str = "cni.projectcalico.org/ipAddrs";

/// Why an IPAM request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// No free address in any allowed pool (affine, new or borrowed).
    #[error("no free address for {handle} on node {node}: IP pools {pools:?} are exhausted")]
    PoolExhausted {
        handle: String,
        node: String,
        pools: Vec<String>,
    },
    /// No pool is allowed at all (no enabled pool selects the node, or none is loaded).
    #[error("no enabled IP pool selects node {node} (and the pod names none)")]
    NoPool { node: String },
    /// The exact address asked for is held by another handle.
    #[error("{IPADDRS_ANNOTATION}: {ip} is already assigned to {holder}; nothing was allocated for {handle}")]
    AddressTaken {
        ip: Ipv4Addr,
        holder: String,
        handle: String,
    },
    /// The exact address asked for is outside every enabled pool.
    #[error("{IPADDRS_ANNOTATION}: {ip} is not in any enabled IP pool")]
    OutsidePools { ip: Ipv4Addr },
    /// The handle already holds a different address than the one asked for.
    #[error("{handle} already holds {held}, not the requested {requested}")]
    HandleHoldsOther {
        handle: String,
        held: Ipv4Addr,
        requested: Ipv4Addr,
    },
    /// An `ipv4pools` annotation names a pool that does not exist or is disabled.
    #[error("{IPV4POOLS_ANNOTATION}: IP pool {name:?} does not exist or is disabled")]
    UnknownPool { name: String },
    /// An annotation is not what it should be.
    #[error("{annotation} on {object}: {value:?} {message}")]
    Annotation {
        annotation: &'static str,
        object: String,
        value: String,
        message: String,
    },
    /// A pool's node selector does not parse (only for pools built by hand).
    #[error("IPPool {pool}: spec.nodeSelector: {message}")]
    PoolSelector { pool: String, message: String },
    /// The store could not be read or written, or is corrupt.
    #[error("{}: {message}", path.display())]
    Store { path: PathBuf, message: String },
}

// ---------------------------------------------------------------------------------------------
// The persisted state.

/// One block: its CIDR, the node it is affine to and its allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub cidr: Ipv4Prefix,
    pub affinity: Option<String>,
    /// Allocated address → handle.
    #[serde(default)]
    pub allocations: BTreeMap<Ipv4Addr, String>,
}

impl Block {
    /// How many addresses the block holds.
    pub fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.cidr.len))
    }

    /// How many addresses are allocated.
    pub fn used(&self) -> u32 {
        self.allocations.len() as u32
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(u32::from(ip))
    }

    /// The lowest free address.
    fn first_free(&self) -> Option<Ipv4Addr> {
        (0..self.size())
            .map(|o| Ipv4Addr::from(self.cidr.addr + o))
            .find(|a| !self.allocations.contains_key(a))
    }
}

/// The whole store: every block (sorted by address) and every handle's address. This is the
/// JSON of the state directory's `ipam.json` and what [`IpamStore::snapshot`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamState {
    #[serde(default)]
    pub blocks: Vec<Block>,
    /// Handle → address.
    #[serde(default)]
    pub handles: BTreeMap<String, Ipv4Addr>,
}

impl IpamState {
    /// The block holding `ip`, if it exists.
    pub fn block_of(&self, ip: Ipv4Addr) -> Option<&Block> {
        self.blocks.iter().find(|b| b.contains(ip))
    }

    /// The blocks affine to `node`.
    pub fn blocks_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks
            .iter()
            .filter(move |b| b.affinity.as_deref() == Some(node))
    }

    /// The address held by `handle`.
    pub fn address_of(&self, handle: &str) -> Option<Ipv4Addr> {
        self.handles.get(handle).copied()
    }

    /// The number of allocated addresses.
    pub fn used(&self) -> usize {
        self.handles.len()
    }

    /// Checks the invariants a loaded file must satisfy: blocks sorted and disjoint,
    /// allocations inside their block, and `handles` the exact inverse of the allocations.
    pub fn check(&self) -> Result<(), String> {
        for w in self.blocks.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let a_end = u64::from(a.cidr.addr) + u64::from(a.size());
            if a_end > u64::from(b.cidr.addr) {
                return Err(format!(
                    "blocks {} and {} overlap or are out of order",
                    a.cidr, b.cidr
                ));
            }
        }
        let mut n = 0;
        for b in &self.blocks {
            for (ip, h) in &b.allocations {
                if !b.contains(*ip) {
                    return Err(format!("block {}: allocation {ip} is outside it", b.cidr));
                }
                if self.handles.get(h) != Some(ip) {
                    return Err(format!(
                        "block {}: {ip} is allocated to {h}, but handles says {:?}",
                        b.cidr,
                        self.handles.get(h)
                    ));
                }
                n += 1;
            }
        }
        if n != self.handles.len() {
            return Err(format!(
                "{} handles but {n} allocations (a handle's address is in no block)",
                self.handles.len()
            ));
        }
        Ok(())
    }

    fn block_index(&self, ip: Ipv4Addr) -> Option<usize> {
        self.blocks.iter().position(|b| b.contains(ip))
    }

    fn insert_block(&mut self, block: Block) -> usize {
        let i = self
            .blocks
            .partition_point(|b| b.cidr.addr < block.cidr.addr);
        self.blocks.insert(i, block);
        i
    }

    fn allocate(&mut self, block: usize, ip: Ipv4Addr, handle: &str) -> Ipv4Addr {
        self.blocks[block]
            .allocations
            .insert(ip, handle.to_string());
        self.handles.insert(handle.to_string(), ip);
        ip
    }

    /// Applies an assignment in memory (the store's mutation, without I/O).
    pub fn assign(&mut self, req: &AssignRequest<'_>) -> Result<Ipv4Addr, IpamError> {
        if let Some(held) = self.address_of(req.handle) {
            return match req.ip {
                Some(r) if r != held => Err(IpamError::HandleHoldsOther {
                    handle: req.handle.to_string(),
                    held,
                    requested: r,
                }),
                _ => Ok(held),
            };
        }
        if let Some(ip) = req.ip {
            return self.assign_exact(req, ip);
        }
        let pools = allowed_pools(req)?;
        let in_pools = |b: &Block| pools.iter().any(|p| p.spec.cidr.contains(b.cidr.addr));
        // 1. The node's affine blocks.
        for i in 0..self.blocks.len() {
            let b = &self.blocks[i];
            if b.affinity.as_deref() == Some(req.node) && in_pools(b) {
                if let Some(ip) = b.first_free() {
                    return Ok(self.allocate(i, ip, req.handle));
                }
            }
        }
        // 2. A new block for the node.
        for p in &pools {
            if let Some(cidr) = self.first_unclaimed_block(p) {
                let i = self.insert_block(Block {
                    cidr,
                    affinity: Some(req.node.to_string()),
                    allocations: BTreeMap::new(),
                });
                let ip = Ipv4Addr::from(cidr.addr);
                return Ok(self.allocate(i, ip, req.handle));
            }
        }
        // 3. Borrow from any block in the pools (strictAffinity: false).
        for i in 0..self.blocks.len() {
            if in_pools(&self.blocks[i]) {
                if let Some(ip) = self.blocks[i].first_free() {
                    return Ok(self.allocate(i, ip, req.handle));
                }
            }
        }
        Err(IpamError::PoolExhausted {
            handle: req.handle.to_string(),
            node: req.node.to_string(),
            pools: pools.iter().map(|p| p.metadata.name.clone()).collect(),
        })
    }

    fn assign_exact(
        &mut self,
        req: &AssignRequest<'_>,
        ip: Ipv4Addr,
    ) -> Result<Ipv4Addr, IpamError> {
        let pool = req
            .pools
            .iter()
            .find(|p| !p.spec.disabled && p.spec.cidr.contains(u32::from(ip)))
            .ok_or(IpamError::OutsidePools { ip })?;
        let i = match self.block_index(ip) {
            Some(i) => i,
            None => {
                let len = pool.spec.block_size;
                let cidr = Ipv4Prefix {
                    addr: u32::from(ip) & Ipv4Prefix::mask(len),
                    len,
                };
                self.insert_block(Block {
                    cidr,
                    affinity: Some(req.node.to_string()),
                    allocations: BTreeMap::new(),
                })
            }
        };
        if let Some(holder) = self.blocks[i].allocations.get(&ip) {
            return Err(IpamError::AddressTaken {
                ip,
                holder: holder.clone(),
                handle: req.handle.to_string(),
            });
        }
        Ok(self.allocate(i, ip, req.handle))
    }

    /// The lowest block of `pool` that no block of the store overlaps: one walk over the
    /// (sorted) blocks, so claiming stays linear in the number of blocks even for a /8 pool.
    fn first_unclaimed_block(&self, pool: &IpPool) -> Option<Ipv4Prefix> {
        let len = pool.spec.block_size;
        let step = 1u64 << (32 - u32::from(len));
        let start = u64::from(pool.spec.cidr.addr);
        let end = start + (1u64 << (32 - u32::from(pool.spec.cidr.len)));
        let mut a = start;
        for b in &self.blocks {
            let (bs, be) = (
                u64::from(b.cidr.addr),
                u64::from(b.cidr.addr) + u64::from(b.size()),
            );
            if be <= a {
                continue;
            }
            if a + step <= bs || a >= end {
                break;
            }
            // `b` overlaps the candidate: the next candidate is the first aligned one after it.
            a = be.div_ceil(step) * step;
        }
        (a + step <= end).then_some(Ipv4Prefix {
            addr: a as u32,
            len,
        })
    }

    /// Releases `handle`'s address, if it has one (in memory).
    pub fn release(&mut self, handle: &str) -> Option<Ipv4Addr> {
        let ip = self.handles.remove(handle)?;
        if let Some(i) = self.block_index(ip) {
            self.blocks[i].allocations.remove(&ip);
        }
        Some(ip)
    }
}

/// The pools an automatic assignment may use, in the order tried.
fn allowed_pools<'a>(req: &AssignRequest<'a>) -> Result<Vec<&'a IpPool>, IpamError> {
    if let Some(names) = &req.pool_names {
        let mut out = Vec::new();
        for n in names {
            let p = req
                .pools
                .iter()
                .find(|p| {
                    p.metadata.name == *n || n.parse::<Ipv4Prefix>().is_ok_and(|c| c == p.spec.cidr)
                })
                .filter(|p| !p.spec.disabled)
                .ok_or_else(|| IpamError::UnknownPool { name: n.clone() })?;
            if !out
                .iter()
                .any(|o: &&IpPool| o.metadata.name == p.metadata.name)
            {
                out.push(p);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    let mut out = Vec::new();
    for p in req.pools.iter().filter(|p| !p.spec.disabled) {
        let sel = Selector::parse(&p.spec.node_selector).map_err(|e| IpamError::PoolSelector {
            pool: p.metadata.name.clone(),
            message: e.to_string(),
        })?;
        if sel.matches(req.node_labels) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(IpamError::NoPool {
            node: req.node.to_string(),
        });
    }
    out.sort_by_key(|p| p.spec.cidr);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Requests and annotations.

/// One assignment.
#[derive(Debug, Clone)]
pub struct AssignRequest<'a> {
    /// The pod's `namespace/name` (see [`pod_handle`]) or a CNI container id.
    pub handle: &'a str,
    /// The node the pod runs on.
    pub node: &'a str,
    /// The node's labels, for the pools' `nodeSelector`s.
    pub node_labels: &'a BTreeMap<String, String>,
    /// Every IP pool of the cluster (disabled ones included; they are skipped).
    pub pools: &'a [IpPool],
    /// The pools named by `cni.projectcalico.org/ipv4pools` (names or CIDRs), if any.
    pub pool_names: Option<Vec<String>>,
    /// The exact address of `cni.projectcalico.org/ipAddrs`, if any.
    pub ip: Option<Ipv4Addr>,
}

/// What a pod's (and its namespace's) annotations ask of IPAM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAnnotations {
    /// `ipv4pools`: the pod's, else the namespace's.
    pub pool_names: Option<Vec<String>>,
    /// `ipAddrs`: the one IPv4 address asked for.
    pub ip: Option<Ipv4Addr>,
}

/// The handle of a pod: `namespace/name`.
pub fn pod_handle(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace(), pod.metadata.name)
}

/// Reads `cni.projectcalico.org/ipv4pools` (pod first, then namespace) and
/// `cni.projectcalico.org/ipAddrs` (pod only), with errors naming the annotation and object.
pub fn pools_from_annotations(
    pod: &Pod,
    namespace: Option<&Namespace>,
) -> Result<PodAnnotations, IpamError> {
    let pod_name = format!("Pod {}", pod_handle(pod));
    let list = |annotation: &'static str,
                object: &str,
                a: &BTreeMap<String, String>|
     -> Result<Option<Vec<String>>, IpamError> {
        let Some(v) = a.get(annotation) else {
            return Ok(None);
        };
        let bad = |message: String| IpamError::Annotation {
            annotation,
            object: object.to_string(),
            value: v.clone(),
            message,
        };
        serde_json::from_str::<Vec<String>>(v)
            .map(Some)
            .map_err(|e| bad(format!("is not a JSON list of strings ({e})")))
    };
    let mut pool_names = list(IPV4POOLS_ANNOTATION, &pod_name, &pod.metadata.annotations)?;
    if pool_names.is_none() {
        if let Some(ns) = namespace {
            let obj = format!("Namespace {}", ns.metadata.name);
            pool_names = list(IPV4POOLS_ANNOTATION, &obj, &ns.metadata.annotations)?;
        }
    }
    let ip = match list(IPADDRS_ANNOTATION, &pod_name, &pod.metadata.annotations)? {
        None => None,
        Some(addrs) => {
            let bad = |message: &str| IpamError::Annotation {
                annotation: IPADDRS_ANNOTATION,
                object: pod_name.clone(),
                value: pod.metadata.annotations[IPADDRS_ANNOTATION].clone(),
                message: message.to_string(),
            };
            let v4: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
            if v4.len() != addrs.len() {
                return Err(bad("holds something that is not an IPv4 address"));
            }
            match v4.as_slice() {
                [a] => Some(*a),
                [] => None,
                _ => return Err(bad("lists more than one IPv4 address")),
            }
        }
    };
    Ok(PodAnnotations { pool_names, ip })
}

// ---------------------------------------------------------------------------------------------
// Where the state is kept.

/// The IPAM operations, whichever the datastore: a state directory (`control::ipam::Ipam`) or
/// the Kubernetes API (`control::kube_ipam::KubeIpam`).
pub trait IpamStore {
    /// Assigns an address (idempotent per handle).
    fn assign(&self, req: &AssignRequest<'_>) -> Result<Ipv4Addr, IpamError>;
    /// Releases `handle`'s address; `None` if it held none.
    fn release(&self, handle: &str) -> Result<Option<Ipv4Addr>, IpamError>;
    /// The current state.
    fn snapshot(&self) -> Result<IpamState, IpamError>;
}
