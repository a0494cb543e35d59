//! `cluster::ipam` without a store: what a pod's and its namespace's annotations ask of IPAM.
//! (Assignment through the file-backed store is control's, `control/tests/ipam.rs`.)

use cluster::ipam::{pools_from_annotations, IPADDRS_ANNOTATION};
use cluster::model::{Namespace, Pod};

/// Malformed annotations fail naming the annotation and the object.
#[test]
fn malformed_annotations() {
    let mk = |ann: &str, v: &str| {
        let mut p: Pod = serde_yaml::from_str("metadata: {name: p, namespace: ns}").unwrap();
        p.metadata.annotations.insert(ann.into(), v.into());
        p
    };
    let e = pools_from_annotations(&mk(IPADDRS_ANNOTATION, "10.0.0.1"), None).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "cni.projectcalico.org/ipAddrs on Pod ns/p: \"10.0.0.1\" is not a JSON list"
        ),
        "{e}"
    );
    let e = pools_from_annotations(&mk(IPADDRS_ANNOTATION, r#"["fd00::1"]"#), None).unwrap_err();
    assert!(e.to_string().contains("not an IPv4 address"), "{e}");
    let e = pools_from_annotations(&mk(IPADDRS_ANNOTATION, r#"["10.0.0.1","10.0.0.2"]"#), None)
        .unwrap_err();
    assert!(e.to_string().contains("more than one"), "{e}");
    let e = pools_from_annotations(
        &mk("cni.projectcalico.org/ipv4pools", "[external-pool]"),
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cni.projectcalico.org/ipv4pools on Pod ns/p:"),
        "{e}"
    );
    // The pod's own ipv4pools wins over its namespace's.
    let ns: Namespace = serde_yaml::from_str(
        "metadata: {name: ns, annotations: {cni.projectcalico.org/ipv4pools: '[\"a\"]'}}",
    )
    .unwrap();
    let p = mk("cni.projectcalico.org/ipv4pools", r#"["b"]"#);
    assert_eq!(
        pools_from_annotations(&p, Some(&ns)).unwrap().pool_names,
        Some(vec!["b".to_string()])
    );
    let p = mk("other", "x");
    assert_eq!(
        pools_from_annotations(&p, Some(&ns)).unwrap().pool_names,
        Some(vec!["a".to_string()])
    );
}
