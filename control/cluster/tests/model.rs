//! `cluster::model` from text: Calico's and Kubernetes' defaults, later documents replacing
//! earlier ones, and refusals naming the document and the field. (The tests that read the
//! manifest fixtures from files are control's, `control/tests/model.rs`.)

use cluster::model::{parse_str, ClusterState, Protocol};
use pipeline::tables::EncapMode;

#[test]
fn pool_defaults_are_calicos() {
    let l = ClusterState::load_str(
        "inline.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n",
    )
    .unwrap();
    let p = &l.state.ip_pools["p"].spec;
    assert_eq!(p.block_size, 26);
    assert_eq!(p.ipip_mode, EncapMode::Never);
    assert_eq!(p.vxlan_mode, EncapMode::Never);
    assert!(!p.nat_outgoing);
    assert_eq!(p.node_selector, "all()");
    assert!(!p.disabled);
    assert!(l.warnings.is_empty());
}

#[test]
fn crd_api_group_is_accepted() {
    let l = ClusterState::load_str(
        "crd.yaml",
        "apiVersion: crd.projectcalico.org/v1\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/16\n  vxlanMode: Always\n",
    )
    .unwrap();
    assert_eq!(l.state.ip_pools["p"].spec.vxlan_mode, EncapMode::Always);
}

#[test]
fn replicas_default_to_one_and_selector_must_match() {
    let base = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: ";
    let l = ClusterState::load_str("d.yaml", &format!("{base}web\n")).unwrap();
    let d = &l.state.deployments[&("default".to_string(), "web".to_string())];
    assert_eq!(d.spec.replicas, 1);
    assert_eq!(d.pods().len(), 1);
    let e = ClusterState::load_str("d.yaml", &format!("{base}other\n")).unwrap_err();
    let t = e.to_string();
    assert!(t.contains("d.yaml, document 1 (Deployment web)"), "{t}");
    assert!(t.contains("spec.template.metadata.labels"), "{t}");
}

#[test]
fn list_item_errors_name_the_item() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: b\n  spec:\n    containers:\n    - name: c\n      ports:\n      - containerPort: 70000\n";
    let t = parse_str("list.yaml", text).unwrap_err().to_string();
    assert!(
        t.starts_with("list.yaml, document 1, item 1 (Pod b): "),
        "{t}"
    );
    assert!(
        t.contains("spec.containers[0].ports[0].containerPort"),
        "{t}"
    );
}

#[test]
fn calico_rule_ports_need_a_port_protocol() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: g\nspec:\n  ingress:\n  - action: Allow\n    protocol: ICMP\n    destination:\n      ports: [80]\n";
    let t = parse_str("g.yaml", text).unwrap_err().to_string();
    assert!(
        t.contains("g.yaml, document 1 (GlobalNetworkPolicy g): spec.ingress[0].destination.ports"),
        "{t}"
    );
    let bad_action = text.replace("Allow", "Accept");
    let t = parse_str("g.yaml", &bad_action).unwrap_err().to_string();
    assert!(t.contains("spec.ingress[0].action"), "{t}");
}

#[test]
fn later_documents_replace_earlier_ones() {
    let pool = |cidr: &str, bs: u8| {
        format!("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: {cidr}\n  blockSize: {bs}\n")
    };
    // Same name: the second replaces the first, so the two CIDRs never overlap each other.
    let text = format!("{}---\n{}", pool("10.0.0.0/16", 26), pool("10.0.0.0/8", 24));
    let l = ClusterState::load_str("r.yaml", &text).unwrap();
    assert_eq!(l.state.ip_pools.len(), 1);
    assert_eq!(l.state.ip_pools["p"].spec.block_size, 24);
    assert_eq!(l.state.origins.values().next().unwrap().document, 2);
}

#[test]
fn json_and_empty_documents() {
    let json =
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"j","labels":{"a":"b"}}}"#;
    let l = ClusterState::load_str("ns.json", json).unwrap();
    assert_eq!(l.state.namespaces["j"].metadata.labels["a"], "b");
    let l = ClusterState::load_str("empty.yaml", "# nothing\n---\n---\n").unwrap();
    assert_eq!(l.state, ClusterState::default());
}

#[test]
fn more_refusals_name_their_field() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.1/16\n",
            "spec.cidr",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.0.0.0/28\n",
            "spec.cidr",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  annotations:\n    cni.projectcalico.org/ipv4pools: external-pool\n",
            "metadata.annotations.cni.projectcalico.org/ipv4pools",
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  vxlanVNI: 16777216\n",
            "spec.vxlanVNI",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: n\nspec:\n  ingress:\n  - from:\n    - ipBlock:\n        cidr: 10.0.0.0/16\n        except: [10.1.0.0/24]\n",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: n\nspec:\n  egress:\n  - ports:\n    - port: http\n      endPort: 90\n",
            "spec.egress[0].ports[0].endPort",
        ),
        ("kind: Pod\nmetadata:\n  name: p\n", "apiVersion: missing"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "metadata: missing field `name`"),
    ];
    for (text, field) in cases {
        let t = parse_str("x.yaml", text).unwrap_err().to_string();
        assert!(t.starts_with("x.yaml, document 1"), "{t}");
        assert!(t.contains(field), "{t:?} lacks {field:?}");
    }
}

#[test]
fn pods_default_to_the_default_namespace() {
    let l = ClusterState::load_str(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: 8080\n",
    )
    .unwrap();
    let p = &l.state.pods[&("default".to_string(), "p".to_string())];
    assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(p.spec.containers[0].ports[0].protocol, Protocol::TCP);
}

#[test]
fn dangling_pool_annotation_is_a_warning() {
    let l = ClusterState::load_str(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  annotations:\n    cni.projectcalico.org/ipv4pools: '[\"nope\"]'\n",
    )
    .unwrap();
    assert_eq!(l.warnings.len(), 1);
    assert!(l.warnings[0].to_string().contains("IPPool nope"));
}
