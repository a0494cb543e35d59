//! The cluster model (`cluster::model`, read from files by `control::manifest_dir`): the study's
//! manifests verbatim, Calico's and Kubernetes' defaults, and every refusal naming the file, the
//! document and the field. (The tests from text alone are the cluster crate's:
//! `control/cluster/tests/model.rs`.)

use cluster::model::{
    Action, CalicoPort, CalicoProtocol, IntOrString, Kind, LoadError, ObjectKey, PolicyType,
    Protocol,
};
use control::manifest_dir::load_files;
use pipeline::tables::EncapMode;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

fn manifests(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(rel)
}

fn study() -> cluster::model::Loaded {
    load_files(&manifests("study")).expect("the study manifests load")
}

/// Loads a bad fixture and checks the error names the file, the document and every fragment.
fn refused(file: &str, document: usize, fragments: &[&str]) -> LoadError {
    let path = manifests(&format!("bad/{file}"));
    let e = load_files(&path).expect_err("must be refused");
    let text = e.to_string();
    assert!(text.contains(file), "{text}");
    assert!(text.contains(&format!("document {document}")), "{text}");
    for f in fragments {
        assert!(text.contains(f), "{text:?} lacks {f:?}");
    }
    assert_eq!(e.document, Some(document), "{text}");
    e
}

#[test]
fn study_pools_as_written() {
    let s = study().state;
    let ext = &s.ip_pools["external-pool"].spec;
    assert_eq!(ext.cidr.to_string(), "172.18.0.0/16");
    assert_eq!(ext.block_size, 24);
    assert_eq!(ext.ipip_mode, EncapMode::CrossSubnet);
    assert_eq!(ext.vxlan_mode, EncapMode::Never);
    assert!(!ext.nat_outgoing);
    assert_eq!(ext.node_selector, "!all()");
    assert!(!ext.disabled);

    let def = &s.ip_pools["default-ipv4-ippool"];
    assert_eq!(def.spec.cidr.to_string(), "172.16.0.0/16");
    let spec = def.to_pool_spec();
    assert_eq!(spec.ipip_mode, EncapMode::Always);
    assert!(spec.nat_outgoing);
}

#[test]
fn namespace_names_its_pool() {
    let s = study().state;
    let ns = &s.namespaces["external-ns"];
    assert_eq!(ns.ipv4_pools(), Some(vec!["external-pool".to_string()]));
    let pools = s.namespace_pools("external-ns").unwrap();
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].spec.cidr.to_string(), "172.18.0.0/16");
    assert!(s.namespace_pools("default").is_none());
}

#[test]
fn nginx_deployment_expands_to_three_pods() {
    let s = study().state;
    let d = &s.deployments[&("external-ns".to_string(), "nginx".to_string())];
    assert_eq!(d.spec.replicas, 3);
    let pods = d.pods();
    let names: Vec<_> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    assert_eq!(names, ["nginx-0", "nginx-1", "nginx-2"]);
    for p in &pods {
        assert_eq!(p.metadata.namespace(), "external-ns");
        assert_eq!(p.metadata.labels["app"], "nginx");
        assert_eq!(p.metadata.labels["version"], "v1");
        assert_eq!(p.spec.node_name, None);
        assert_eq!(p.spec.containers[0].name, "nginx");
        assert_eq!(p.status.pod_ip, None);
    }
    // All the cluster's pods: the deployment's three and pod1 from the List.
    let all: Vec<_> = s
        .pods()
        .iter()
        .map(|p| format!("{}/{}", p.metadata.namespace(), p.metadata.name))
        .collect();
    assert_eq!(
        all,
        [
            "default/pod1",
            "external-ns/nginx-0",
            "external-ns/nginx-1",
            "external-ns/nginx-2"
        ]
    );
}

#[test]
fn list_items_pods_and_nodes() {
    let s = study().state;
    let pod = &s.pods[&("default".to_string(), "pod1".to_string())];
    assert_eq!(pod.spec.node_name.as_deref(), Some("k8s-w1"));
    assert_eq!(pod.status.pod_ip, Some(Ipv4Addr::new(172, 16, 158, 4)));
    let ports = &pod.spec.containers[0].ports;
    assert_eq!(ports[0].protocol, Protocol::TCP);
    assert_eq!(ports[0].container_port, 80);
    assert_eq!(ports[1].protocol, Protocol::UDP);
    assert_eq!(pod.named_port("http").unwrap().container_port, 80);
    let node = &s.nodes["k8s-w1"];
    assert_eq!(node.internal_ip(), Some(Ipv4Addr::new(192, 168, 10, 101)));
    let o = &s.origins[&ObjectKey {
        kind: Kind::Pod,
        namespace: Some("default".into()),
        name: "pod1".into(),
    }];
    assert_eq!((o.document, o.item), (3, Some(1)));
    assert!(o.file.ends_with("06-extras.yaml"));
}

#[test]
fn study_network_policies() {
    let s = study().state;
    let key = |n: &str| ("default".to_string(), n.to_string());
    let deny = &s.network_policies[&key("deny-all-networkpolicy")].spec;
    assert!(deny.pod_selector.is_empty());
    assert_eq!(deny.types(), [PolicyType::Ingress, PolicyType::Egress]);
    assert!(deny.ingress.is_empty() && deny.egress.is_empty());
    let allow = &s.network_policies[&key("allow-all-networkpolicy")].spec;
    assert_eq!(allow.ingress.len(), 1);
    assert!(allow.ingress[0].from.is_empty() && allow.ingress[0].ports.is_empty());
    assert_eq!(allow.egress.len(), 1);
    let cloud = &s.network_policies[&key("cloud-networkpolicy")].spec;
    assert!(cloud.ingress.is_empty());
    assert_eq!(cloud.egress.len(), 1);
    assert_eq!(s.network_policies.len(), 4);
}

#[test]
fn network_policy_peers_and_ports() {
    let s = study().state;
    let p = &s.network_policies[&("external-ns".to_string(), "web-from-ns".to_string())].spec;
    assert_eq!(p.types(), [PolicyType::Ingress]);
    let r = &p.ingress[0];
    let ns = r.from[0].namespace_selector.as_ref().unwrap();
    let labels = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(ns.matches(&labels(&[("team", "web")])));
    assert!(!ns.matches(&labels(&[("team", "db")])));
    assert!(r.from[0].pod_selector.is_some());
    let b = r.from[1].ip_block.as_ref().unwrap();
    assert_eq!(b.cidr.to_string(), "10.1.0.0/16");
    assert_eq!(b.except[0].to_string(), "10.1.2.0/24");
    assert_eq!(r.ports[0].port, Some(IntOrString::Name("http".into())));
    assert_eq!(r.ports[0].protocol, Protocol::TCP);
    assert_eq!(r.ports[1].protocol, Protocol::UDP);
    assert_eq!(r.ports[1].port, Some(IntOrString::Int(5000)));
    assert_eq!(r.ports[1].end_port, Some(5010));
}

#[test]
fn calico_policies_and_felix() {
    let s = study().state;
    let g = &s.global_network_policies["allow-dns"].spec;
    assert_eq!(g.order, Some(100.0));
    assert_eq!(g.selector, "all()");
    assert_eq!(g.effective_types(), [PolicyType::Egress]);
    assert_eq!(g.egress[0].action, Action::Allow);
    assert_eq!(g.egress[0].protocol, Some(CalicoProtocol::Udp));
    assert_eq!(g.egress[0].destination.ports, [CalicoPort::Range(53, 53)]);
    assert_eq!(
        g.egress[1].destination.ports,
        [
            CalicoPort::Range(8000, 8080),
            CalicoPort::Named("http".into())
        ]
    );
    assert_eq!(g.egress[1].destination.nets[0].to_string(), "10.0.0.0/8");
    assert_eq!(
        g.egress[1].destination.not_nets[0].to_string(),
        "10.1.0.0/16"
    );
    let n = &s.calico_network_policies[&("external-ns".to_string(), "log-icmp".to_string())];
    assert_eq!(n.spec.ingress[0].action, Action::Log);
    assert_eq!(
        n.spec.ingress[0]
            .protocol
            .map(cluster::model::CalicoProtocol::number),
        Some(1)
    );
    assert_eq!(n.spec.ingress[1].action, Action::Pass);
    assert_eq!(n.spec.effective_types(), [PolicyType::Ingress]);

    let f = s.felix();
    assert!(f.wireguard_enabled());
    assert_eq!(f.wireguard_listening_port(), 51820);
    assert_eq!(f.vxlan_mtu, Some(1450));
    assert_eq!(f.wireguard_mtu, None);
    assert_eq!(f.vxlan_vni(), 4096);
    assert_eq!(f.vxlan_port(), 4789);
}

#[test]
fn unknown_kind_is_skipped_with_a_warning() {
    let l = study();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    let w = l.warnings[0].to_string();
    assert!(w.contains("06-extras.yaml, document 1"), "{w}");
    assert!(w.contains("Service nginx"), "{w}");
}

#[test]
fn directory_load_is_sorted_and_deterministic() {
    let a = study();
    let b = study();
    assert_eq!(a, b);
    let files = control::manifest_dir::manifest_files(&manifests("study")).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 6);
}

#[test]
fn bad_unknown_mode() {
    refused(
        "unknown-mode.yaml",
        2,
        &[
            "(IPPool external-pool)",
            "spec.ipipMode",
            "Sometimes",
            "line 14",
        ],
    );
}

#[test]
fn bad_overlapping_cidrs_name_both_pools() {
    refused(
        "overlap.yaml",
        2,
        &[
            "(IPPool inner-pool)",
            "spec.cidr",
            "172.16.64.0/18",
            "default-ipv4-ippool",
            "172.16.0.0/16",
        ],
    );
}

#[test]
fn bad_block_size_33() {
    let e = refused(
        "block-size-33.yaml",
        2,
        &[
            "(IPPool external-pool)",
            "spec.blockSize: 33 is outside 20..=32",
        ],
    );
    assert!(e
        .to_string()
        .ends_with("document 2 (IPPool external-pool): spec.blockSize: 33 is outside 20..=32"));
}

#[test]
fn bad_block_size_19() {
    refused(
        "block-size-19.yaml",
        2,
        &[
            "(IPPool external-pool)",
            "spec.blockSize: 19 is outside 20..=32",
        ],
    );
}

#[test]
fn bad_malformed_yaml_names_the_line() {
    refused("malformed.yaml", 2, &["malformed YAML", "line 14"]);
}

#[test]
fn bad_missing_cidr() {
    refused(
        "missing-cidr.yaml",
        2,
        &["(IPPool external-pool)", "spec", "missing field `cidr`"],
    );
}

#[test]
fn bad_both_modes() {
    refused(
        "both-modes.yaml",
        2,
        &[
            "(IPPool external-pool)",
            "spec.ipipMode",
            "spec.vxlanMode",
            "CrossSubnet",
            "Always",
        ],
    );
}

#[test]
fn a_bad_file_fails_the_whole_directory() {
    // Every bad fixture is refused as a whole: nothing of the good first document comes back.
    assert!(load_files(&manifests("bad")).is_err());
}

#[test]
fn bad_node_selector_is_refused_with_where_it_fails() {
    refused(
        "bad-selector.yaml",
        2,
        &[
            "(IPPool external-pool)",
            "spec.nodeSelector",
            "expected ')'",
            "offset",
        ],
    );
}

#[test]
fn pool_selectors_choose_nodes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/study");
    let loaded = control::manifest_dir::load_files(std::path::Path::new(dir)).unwrap();
    let labels: std::collections::BTreeMap<String, String> =
        [("kubernetes.io/hostname".to_string(), "k8s-w1".to_string())].into();
    let default_pool = &loaded.state.ip_pools["default-ipv4-ippool"];
    let external = &loaded.state.ip_pools["external-pool"];
    assert!(
        default_pool.node_selector().unwrap().matches(&labels),
        "all() picks every node"
    );
    assert!(
        !external.node_selector().unwrap().matches(&labels),
        "!all() only by annotation"
    );
}
