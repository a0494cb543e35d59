//! Network policy: Kubernetes `NetworkPolicy` and Calico `NetworkPolicy`/`GlobalNetworkPolicy`
//! compiled from the cluster state into [`pipeline::policy::PolicyTables`], the text of
//! verdicts, and the offline reachability matrix behind `ferry policy check|matrix`.
//!
//! Selectors over pods are resolved here, into address sets of pod IPs; named ports are
//! resolved per destination pod (the endpoint itself for ingress, each peer pod for egress).
//! Endpoints are pods with an address: `status.podIP`, else `cni.projectcalico.org/ipAddrs`;
//! pods without one are reported in [`Compiled::skipped`]. Compilation is all-or-nothing.
//! See docs/policy.md.
//!
//! - `compiler`: the policies → address sets and rule sets per endpoint ([`compile`]).
//! - `report`: verdicts in words ([`describe`]) and the pod-to-pod reachability matrix
//!   ([`matrix`]).

mod compiler;
mod report;

pub use compiler::compile;
pub use report::{
    describe, describe_direction, matrix, matrix_table, parse_ports, PortProto, Probe,
};

use crate::ipam::IPADDRS_ANNOTATION;
use crate::model::{ClusterState, Pod, Protocol};
use pipeline::policy::{PolicyTables, PolicyTablesError};
use std::net::Ipv4Addr;

/// Why the policies of a cluster do not compile. Each names the policy and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{policy}: {field}: invalid CIDR {value}: {message}")]
    Cidr {
        policy: String,
        field: String,
        value: String,
        message: String,
    },
    #[error("{policy}: {field}: unknown protocol {value:?}")]
    Protocol {
        policy: String,
        field: String,
        value: String,
    },
    #[error("{policy}: {field}: selector {value:?} does not parse: {message}")]
    Selector {
        policy: String,
        field: String,
        value: String,
        message: String,
    },
    #[error("{policy}: {field}: {message}")]
    Unsupported {
        policy: String,
        field: String,
        message: String,
    },
    #[error(transparent)]
    Tables(#[from] PolicyTablesError),
}

/// A pod that is a policy endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    pub namespace: String,
    pub name: String,
    pub addr: Ipv4Addr,
}

impl PodEndpoint {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Compiled tables plus what the text and the matrix need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub tables: PolicyTables,
    /// Endpoints sorted by namespace and name.
    pub pods: Vec<PodEndpoint>,
    /// Pods left out, with why (no address).
    pub skipped: Vec<String>,
}

impl Compiled {
    /// The endpoint named `namespace/name`.
    pub fn pod(&self, id: &str) -> Option<&PodEndpoint> {
        let (ns, name) = id.split_once('/')?;
        self.pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
    }
}

/// The address of a pod: `status.podIP`, else the single IPv4 of `ipAddrs`.
fn pod_addr(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.pod_ip.or_else(|| {
        let v = pod.metadata.annotations.get(IPADDRS_ANNOTATION)?;
        let list: Vec<String> = serde_json::from_str(v).ok()?;
        list.iter().find_map(|a| a.parse().ok())
    })
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::TCP => 6,
        Protocol::UDP => 17,
        Protocol::SCTP => 132,
    }
}

/// The state with every pod's address filled in from IPAM (handle `namespace/pod`) where the
/// pod object has none: in the node daemon, `ferry-cni` assigns addresses and the manifests do
/// not carry them. Deployment replicas become pod objects of their own.
pub fn with_ipam_addresses(state: &ClusterState, ipam: &crate::ipam::IpamState) -> ClusterState {
    let mut s = state.clone();
    for pod in state.pods() {
        let key = (
            pod.metadata.namespace().to_string(),
            pod.metadata.name.clone(),
        );
        let mut pod = s.pods.get(&key).cloned().unwrap_or(pod);
        if pod_addr(&pod).is_none() {
            pod.status.pod_ip = ipam.address_of(&format!("{}/{}", key.0, key.1));
        }
        s.pods.insert(key, pod);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CalicoPolicy, NetworkPolicy};

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_ports("80/TCP, 81/udp,82").unwrap(),
            vec![
                PortProto {
                    port: 80,
                    protocol: Protocol::TCP
                },
                PortProto {
                    port: 81,
                    protocol: Protocol::UDP
                },
                PortProto {
                    port: 82,
                    protocol: Protocol::TCP
                }
            ]
        );
        assert!(parse_ports("80/ICMP").is_err());
        assert!(parse_ports("x/TCP").is_err());
    }

    #[test]
    fn bad_selector_and_except_name_policy_and_field() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
status: {podIP: 10.0.0.1}
"#;
        let mut state = ClusterState::load_str("t", text).unwrap().state;
        let gnp: CalicoPolicy = serde_yaml::from_str(
            "metadata: {name: g}\nspec: {selector: all(), ingress: [{action: Allow, source: {selector: 'pod ==' }}]}",
        )
        .unwrap();
        state.global_network_policies.insert("g".into(), gnp);
        let e = compile(&state).unwrap_err().to_string();
        assert!(e.contains("GlobalNetworkPolicy g"), "{e}");
        assert!(e.contains("spec.ingress[0].source.selector"), "{e}");
        state.global_network_policies.clear();
        let np: NetworkPolicy = serde_yaml::from_str(
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.1.0.0/24]}}]}]}",
        )
        .unwrap();
        state.network_policies.insert(("x".into(), "p".into()), np);
        let e = compile(&state).unwrap_err().to_string();
        assert!(
            e.contains("x/p") && e.contains("spec.ingress[0].from[0].ipBlock.except[0]"),
            "{e}"
        );
    }
}
