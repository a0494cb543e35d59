//! ADD, DEL and CHECK: what a pod gets (an address, a veth pair, routes, an endpoint), how a
//! failed ADD is undone, and what CHECK compares. The stores and the cluster are read through
//! the core ([`crate::ipam`], [`crate::kube_ipam`], [`cluster::model`]); links and routes go
//! through [`super::net`].

use super::conf::{env_err, Datastore, Env, NetConf};
use super::wep::{WepStore, WorkloadEndpoint};
use super::{code, host_veth_name, net, result_json, CniError, GATEWAY};
use crate::ipam::{pod_handle, pools_from_annotations, AssignRequest, Ipam, IpamStore};
use crate::kube_ipam::KubeIpam;
use cluster::model::{ObjectMeta, Pod, PodSpec, PodStatus};
use pipeline::wire::MacAddr;
use serde_json::Value;
use std::path::Path;

fn stores(conf: &NetConf) -> Result<(Box<dyn IpamStore>, WepStore), CniError> {
    let ipam: Box<dyn IpamStore> = match conf.datastore {
        Datastore::Manifests => Box::new(Ipam::open(&conf.state)?),
        Datastore::Kubernetes => Box::new(KubeIpam::connect(conf.kubeconfig.as_deref())?),
    };
    Ok((ipam, WepStore::open(&conf.state)?))
}

fn require_pod(env: &Env) -> Result<(String, String), CniError> {
    env.pod()?.ok_or_else(|| {
        env_err(
            "CNI_ARGS",
            "K8S_POD_NAMESPACE and K8S_POD_NAME are required (ferry-cni serves Kubernetes pods)",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// ADD.

/// Undoes a half-done ADD when dropped armed (an error return or a panic).
struct AddUndo<'a> {
    host: &'a net::Host,
    ipam: &'a dyn IpamStore,
    weps: &'a WepStore,
    namespace: String,
    pod: String,
    handle: String,
    veth: Option<String>,
    armed: bool,
}

impl Drop for AddUndo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(v) = &self.veth {
            // Deleting the host side deletes its peer and the host route too.
            let _ = self.host.delete_link(v);
        }
        // Keep the address if an endpoint of the pod (an older sandbox) still holds it.
        if let Ok(None) = self.weps.of_pod(&self.namespace, &self.pod) {
            let _ = self.ipam.release(&self.handle);
        }
    }
}

/// ADD: assign, wire, register; returns the result JSON.
pub fn add(conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    let (namespace, pod_name) = require_pod(env)?;
    let netns = env.netns.clone().unwrap_or_default();
    if !Path::new(&netns).exists() {
        return Err(env_err("CNI_NETNS", format!("{netns} does not exist")));
    }
    let node = conf.node_name()?;
    let (ipam, weps) = stores(conf)?;

    // A repeated ADD of the same container: the same result if it asks the same thing.
    if let Some(w) = weps.get(&env.container_id)? {
        if w.netns == netns
            && w.ifname == env.ifname
            && w.namespace == namespace
            && w.pod == pod_name
        {
            return Ok(result_json(&conf.cni_version, &w));
        }
        return Err(CniError::new(
            code::ENDPOINT_CONFLICT,
            "the container already has an endpoint",
            format!(
                "container {} is pod {}/{} with {} in {}; DEL it first",
                w.container_id, w.namespace, w.pod, w.ifname, w.netns
            ),
        ));
    }

    // The node, the pod's namespace and labels/annotations, the pools: from the API with the
    // Kubernetes datastore, else from the manifest directory.
    let (cluster, source) = match conf.datastore {
        Datastore::Kubernetes => {
            let client = crate::kube::KubeConfig::load(conf.kubeconfig.as_deref())
                .and_then(crate::kube::KubeClient::new)
                .map_err(|e| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        "cannot configure the Kubernetes client",
                        e.to_string(),
                    )
                })?;
            let state = crate::kube_ipam::cluster_for_pod(&client, &node, &namespace, &pod_name)
                .map_err(|e| {
                    CniError::new(
                        code::TRY_AGAIN_LATER,
                        "cannot read the cluster from the Kubernetes API",
                        e,
                    )
                })?;
            (state, "the Kubernetes API".to_string())
        }
        Datastore::Manifests => {
            let manifests = conf.manifests.as_deref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "\"manifests\" (the cluster's manifest directory) is required for ADD",
                )
            })?;
            let cluster = crate::manifest_dir::load_path(manifests)
                .map_err(|e| {
                    CniError::new(
                        code::INVALID_CONFIG,
                        "cannot load the cluster manifests",
                        e.to_string(),
                    )
                })?
                .state;
            (cluster, manifests.display().to_string())
        }
    };
    let node_obj = cluster.nodes.get(&node).ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "unknown node",
            format!("node {node:?} is not in {source}"),
        )
    })?;
    let pod = cluster
        .pods
        .get(&(namespace.clone(), pod_name.clone()))
        .cloned()
        .or_else(|| {
            cluster
                .pods()
                .into_iter()
                .find(|p| p.metadata.namespace() == namespace && p.metadata.name == pod_name)
        })
        .unwrap_or_else(|| Pod {
            metadata: ObjectMeta {
                name: pod_name.clone(),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: PodSpec::default(),
            status: PodStatus::default(),
        });
    let annotations = pools_from_annotations(&pod, cluster.namespaces.get(&namespace))?;
    let pools: Vec<_> = cluster.ip_pools.values().cloned().collect();
    let handle = pod_handle(&pod);
    let host = net::Host::open()?;
    let ip = ipam.assign(&AssignRequest {
        handle: &handle,
        node: &node,
        node_labels: &node_obj.metadata.labels,
        pools: &pools,
        pool_names: annotations.pool_names,
        ip: annotations.ip,
    })?;

    let veth = host_veth_name(&namespace, &pod_name);
    let mut undo = AddUndo {
        host: &host,
        ipam: &*ipam,
        weps: &weps,
        namespace: namespace.clone(),
        pod: pod_name.clone(),
        handle,
        veth: None,
        armed: true,
    };
    let pod_ns = net::PodNs::open(&netns)?;
    // A veth left by a killed ADD or an older sandbox of the pod: replace it.
    host.delete_link(&veth)?;
    undo.veth = Some(veth.clone());
    host.create_veth(&veth, &env.ifname, &pod_ns, conf.mtu)?;
    host.offloads_off(&veth)?;
    pod_ns.offloads_off(&env.ifname)?;
    let mac = pod_ns.configure(&env.ifname, ip)?;
    host.configure(&veth, ip)?;
    let wep = WorkloadEndpoint {
        namespace,
        pod: pod_name,
        node,
        container_id: env.container_id.clone(),
        interface: veth,
        ifname: env.ifname.clone(),
        ip,
        mac,
        netns,
    };
    weps.upsert(wep.clone())?;
    undo.armed = false;
    Ok(result_json(&conf.cni_version, &wep))
}

// ---------------------------------------------------------------------------------------------
// DEL.

/// DEL: delete the host veth, release the address, remove the endpoint. Idempotent: anything
/// already gone (endpoint, veth, address, network namespace) is not an error.
pub fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let (ipam, weps) = stores(conf)?;
    let host = net::Host::open()?;
    if let Some(w) = weps.get(&env.container_id)? {
        // Order: veth, address, endpoint — a DEL killed half-way is finished by the next one.
        host.delete_link(&w.interface)?;
        ipam.release(&w.pod_key())?;
        weps.remove(&env.container_id)?;
        return Ok(());
    }
    // No endpoint for this container: a failed or killed ADD, or a DEL repeated. Clean what the
    // pod's name points at, unless another sandbox of the pod owns it.
    let Some((namespace, pod)) = env.pod()? else {
        return Ok(());
    };
    if weps.of_pod(&namespace, &pod)?.is_some() {
        return Ok(());
    }
    host.delete_link(&host_veth_name(&namespace, &pod))?;
    ipam.release(&format!("{namespace}/{pod}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CHECK.

fn check_failed(details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, "CHECK failed", details)
}

/// CHECK: the endpoint, IPAM, the host veth and the pod's interface, address and routes agree
/// with what ADD set up (and with `prevResult`, when given).
pub fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    if matches!(conf.cni_version.as_str(), "0.3.0" | "0.3.1") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            "CHECK needs cniVersion 0.4.0 or later",
        ));
    }
    let (ipam, weps) = stores(conf)?;
    let w = weps
        .get(&env.container_id)?
        .ok_or_else(|| check_failed(format!("no endpoint for container {}", env.container_id)))?;
    let netns = env.netns.clone().unwrap_or_default();
    if w.netns != netns || w.ifname != env.ifname {
        return Err(check_failed(format!(
            "the endpoint is {} in {}, not {} in {netns}",
            w.ifname, w.netns, env.ifname
        )));
    }
    match ipam.snapshot()?.address_of(&w.pod_key()) {
        Some(a) if a == w.ip => {}
        other => {
            return Err(check_failed(format!(
                "IPAM gives {} {other:?}, the endpoint says {}",
                w.pod_key(),
                w.ip
            )))
        }
    }
    if let Some(prev) = &conf.prev_result {
        let want = format!("{}/32", w.ip);
        let has = prev["ips"]
            .as_array()
            .is_some_and(|ips| ips.iter().any(|i| i["address"] == want.as_str()));
        if !has {
            return Err(check_failed(format!("prevResult does not list {want}")));
        }
    }
    match net::Host::open()?.link_mac(&w.interface)? {
        Some(m) if m == MacAddr::CALICO_HOST_SIDE => {}
        Some(m) => {
            return Err(check_failed(format!(
                "host veth {} has MAC {m}, not {}",
                w.interface,
                MacAddr::CALICO_HOST_SIDE
            )))
        }
        None => {
            return Err(check_failed(format!(
                "host veth {} is missing",
                w.interface
            )))
        }
    }
    if !Path::new(&netns).exists() {
        return Err(check_failed(format!(
            "network namespace {netns} is missing"
        )));
    }
    let state = net::PodNs::open(&netns)?
        .state(&w.ifname)?
        .ok_or_else(|| check_failed(format!("{} is missing in {netns}", w.ifname)))?;
    if state.mac != w.mac {
        return Err(check_failed(format!(
            "{} has MAC {}, the endpoint says {}",
            w.ifname, state.mac, w.mac
        )));
    }
    if !state.up {
        return Err(check_failed(format!("{} is down", w.ifname)));
    }
    if !state.addrs.contains(&(w.ip, 32)) {
        return Err(check_failed(format!(
            "{} has {:?}, not {}/32",
            w.ifname, state.addrs, w.ip
        )));
    }
    if !state.gateway_route {
        return Err(check_failed(format!(
            "route {GATEWAY} dev {} scope link is missing",
            w.ifname
        )));
    }
    if !state.default_route {
        return Err(check_failed(format!(
            "route default via {GATEWAY} dev {} is missing",
            w.ifname
        )));
    }
    Ok(())
}
