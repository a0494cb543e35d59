//! The manifest directory as a datastore: `ferry apply`/`delete` semantics (all-or-nothing,
//! kubectl's outcomes, hand-written files protected), the watcher's change events, and the
//! incremental compiler agreeing with a compile from scratch after every change.

use cluster::compile::{CompileInputs, NodeCompiler};
use cluster::model::Kind;
use cluster::source::{apply_changes, Change};
use control::manifest_dir::{DirWatcher, ManifestDir, Outcome};
use std::process::Command;

const STUDY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/study");

/// A scratch directory, removed on drop.
fn tempdir(tag: &str) -> testbeds::TempDir {
    testbeds::TempDir::new(&format!("md-{tag}")).unwrap()
}

fn study(name: &str) -> String {
    std::fs::read_to_string(format!("{STUDY}/{name}")).unwrap()
}

const NODES: &str = "\
apiVersion: v1
kind: Node
metadata: {name: k8s-w1, annotations: {projectcalico.org/IPv4Address: 192.168.10.101/24}}
---
apiVersion: v1
kind: Node
metadata: {name: k8s-w2, annotations: {projectcalico.org/IPv4Address: 192.168.10.102/24}}
---
apiVersion: v1
kind: Node
metadata: {name: k8s-w0, annotations: {projectcalico.org/IPv4Address: 192.168.20.100/24}}
";

fn pod(name: &str, node: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {ip}}}\n"
    )
}

#[test]
fn apply_reports_created_unchanged_configured_and_stores_atomically() {
    let d = tempdir("apply");
    let md = ManifestDir::open(d.path()).unwrap();
    let text = format!("{NODES}---\n{}", study("01-default-pool.yaml"));
    let out = md.apply("nodes+pool", &text).unwrap();
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|(_, o)| *o == Outcome::Created), "{out:?}");
    let again = md.apply("nodes+pool", &text).unwrap();
    assert!(again.iter().all(|(_, o)| *o == Outcome::Unchanged));
    let changed = text.replace("192.168.20.100/24", "192.168.20.101/24");
    let out = md.apply("changed", &changed).unwrap();
    let configured: Vec<_> = out
        .iter()
        .filter(|(_, o)| *o == Outcome::Configured)
        .map(|(k, _)| k.name.clone())
        .collect();
    assert_eq!(configured, ["k8s-w0"]);
    let state = md.load().unwrap().state;
    assert_eq!(state.nodes.len(), 3);
    assert_eq!(
        state.nodes["k8s-w0"].metadata.annotations["projectcalico.org/IPv4Address"],
        "192.168.20.101/24"
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join(".ferry"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_bad_apply_changes_nothing_and_names_file_document_and_field() {
    let d = tempdir("bad");
    let md = ManifestDir::open(d.path()).unwrap();
    md.apply(
        "good",
        &format!("{NODES}---\n{}", study("01-default-pool.yaml")),
    )
    .unwrap();
    let before = std::fs::read(d.path().join(".ferry/applied.yaml")).unwrap();
    // Second document bad: the first (valid) one must not be stored either.
    let bad_mode = format!(
        "{}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: p2}}\nspec: {{cidr: 10.9.0.0/16, ipipMode: Sometimes}}\n",
        pod("a", "k8s-w1", "172.16.158.9")
    );
    let e = md.apply("bad.yaml", &bad_mode).unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml") && e.contains("document 2") && e.contains("ipipMode"),
        "{e}"
    );
    // Overlapping the default pool: refused, naming both.
    let overlap = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p3}\nspec: {cidr: 172.16.128.0/17}\n";
    let e = md.apply("overlap.yaml", overlap).unwrap_err().to_string();
    assert!(
        e.contains("overlaps") && e.contains("default-ipv4-ippool"),
        "{e}"
    );
    let e = md
        .apply("sel.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p4}\nspec: {cidr: 10.8.0.0/16, nodeSelector: \"has(\"}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sel.yaml") && e.contains("nodeSelector"), "{e}");
    let e = md
        .apply("yaml.yaml", "kind: [unclosed")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("yaml.yaml") && e.contains("malformed YAML"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(d.path().join(".ferry/applied.yaml")).unwrap(),
        before
    );
    assert!(!md
        .load()
        .unwrap()
        .state
        .pods
        .contains_key(&("default".into(), "a".into())));
}

#[test]
fn delete_is_all_or_nothing_and_protects_hand_written_files() {
    let d = tempdir("delete");
    std::fs::write(d.path().join("01-pool.yaml"), study("01-default-pool.yaml")).unwrap();
    let md = ManifestDir::open(d.path()).unwrap();
    md.apply("nodes", NODES).unwrap();
    md.apply("pod", &pod("a", "k8s-w1", "172.16.158.9"))
        .unwrap();
    // One missing object fails the whole delete: the pod stays.
    let both = format!(
        "{}---\n{}",
        pod("a", "k8s-w1", "172.16.158.9"),
        pod("zz", "k8s-w1", "1.1.1.1")
    );
    let e = md.delete("del", &both, false).unwrap_err().to_string();
    assert!(
        e.contains("Pod default/zz") && e.contains("not found"),
        "{e}"
    );
    assert!(md
        .load()
        .unwrap()
        .state
        .pods
        .contains_key(&("default".into(), "a".into())));
    // With --ignore-not-found the present one goes.
    let out = md.delete("del", &both, true).unwrap();
    assert_eq!(out.len(), 1);
    assert!(md.load().unwrap().state.pods.is_empty());
    // The pool lives in a hand-written file: delete says where.
    let e = md
        .delete("del", &study("01-default-pool.yaml"), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("01-pool.yaml") && e.contains("did not write"),
        "{e}"
    );
}

#[test]
fn watcher_reports_changes_and_keeps_the_last_good_state() {
    let d = tempdir("watch");
    let md = ManifestDir::open(d.path()).unwrap();
    md.apply(
        "setup",
        &format!("{NODES}---\n{}", study("01-default-pool.yaml")),
    )
    .unwrap();
    let (mut w, _) = DirWatcher::new(md.clone()).unwrap();
    assert_eq!(w.poll().unwrap(), None, "nothing changed yet");
    md.apply("pod", &pod("a", "k8s-w2", "172.16.184.1"))
        .unwrap();
    let changes = w.poll().unwrap().expect("a change");
    assert!(
        matches!(changes.as_slice(), [Change::Applied(o)] if o.kind() == Kind::Pod),
        "{changes:?}"
    );
    // A broken hand-written file: an error, and the good state stays.
    std::fs::write(
        d.path().join("zz-broken.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {}\n",
    )
    .unwrap();
    assert!(w.poll().is_err());
    assert!(w.state().pods.contains_key(&("default".into(), "a".into())));
    std::fs::remove_file(d.path().join("zz-broken.yaml")).unwrap();
    md.delete("del", &pod("a", "k8s-w2", "172.16.184.1"), false)
        .unwrap();
    let changes = w.poll().unwrap().expect("a change");
    assert!(
        matches!(changes.as_slice(), [Change::Deleted(k)] if k.name == "a"),
        "{changes:?}"
    );
}

/// After each of a sequence of changes (pods local, remote, borrowed, moved, deleted; a node
/// moved; a pool added), the incrementally kept spec equals a compile from scratch.
#[test]
fn incremental_compile_equals_full_compile_after_every_change() {
    let base = cluster::model::ClusterState::load_str(
        "base",
        &format!("{NODES}---\n{}", study("01-default-pool.yaml")),
    )
    .unwrap()
    .state;
    let obj = |text: &str| {
        cluster::model::parse_str("t", text)
            .unwrap()
            .objects
            .remove(0)
            .object
    };
    let steps: Vec<Change> = vec![
        Change::Applied(obj(&pod("l1", "k8s-w1", "172.16.158.1"))),
        Change::Applied(obj(&pod("r1", "k8s-w2", "172.16.184.1"))),
        Change::Applied(obj(&pod("r2", "k8s-w2", "172.16.184.2"))),
        // Borrowed: k8s-w0's pod in k8s-w2's block → a /32 to k8s-w0.
        Change::Applied(obj(&pod("b1", "k8s-w0", "172.16.184.3"))),
        // A remote pod in an existing block: no table change, but still equal.
        Change::Applied(obj(&pod("r3", "k8s-w2", "172.16.184.4"))),
        // Moved to this node.
        Change::Applied(obj(&pod("r3", "k8s-w1", "172.16.158.4"))),
        Change::Deleted(obj(&pod("r1", "k8s-w2", "1.1.1.1")).key()),
        Change::Deleted(obj(&pod("r2", "k8s-w2", "1.1.1.1")).key()),
        // k8s-w0 now owns the block by majority... with only b1 left it is the sole owner.
        Change::Applied(obj("apiVersion: v1\nkind: Node\nmetadata: {name: k8s-w0, annotations: {projectcalico.org/IPv4Address: 192.168.10.100/24}}\n")),
        Change::Applied(obj("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.50.0.0/16, vxlanMode: Always, ipipMode: Never}\n")),
        Change::Applied(obj(&pod("v1", "k8s-w2", "10.50.0.7"))),
        Change::Deleted(obj(&pod("l1", "k8s-w1", "1.1.1.1")).key()),
    ];
    let mut state = base.clone();
    let mut inc = NodeCompiler::new(&state, "k8s-w1", CompileInputs::default()).unwrap();
    for (i, c) in steps.iter().enumerate() {
        apply_changes(&mut state, std::slice::from_ref(c), "step").unwrap();
        let before = inc.spec();
        let changed = inc.apply(&state, c).unwrap();
        let full = NodeCompiler::new(&state, "k8s-w1", CompileInputs::default())
            .unwrap()
            .spec();
        assert_eq!(inc.spec(), full, "step {i}: {c:?}");
        if !changed {
            assert_eq!(
                before, full,
                "step {i} said nothing changed, but the tables did"
            );
        }
        let route = |p: &str| {
            full.routes
                .iter()
                .find(|r| r.prefix.to_string() == p)
                .cloned()
        };
        match i {
            // The borrowed address routes to its own node, the block to its owner.
            3 => {
                assert_eq!(
                    route("172.16.184.3/32").unwrap().peer.as_deref(),
                    Some("k8s-w0")
                );
                assert_eq!(
                    route("172.16.184.0/26").unwrap().peer.as_deref(),
                    Some("k8s-w2")
                );
            }
            // Only k8s-w0's pod is left in the block: it owns it, no /32 any more.
            7 => {
                assert!(route("172.16.184.3/32").is_none());
                assert_eq!(
                    route("172.16.184.0/26").unwrap().peer.as_deref(),
                    Some("k8s-w0")
                );
            }
            _ => {}
        }
    }
}

#[test]
fn ferry_apply_and_delete_from_the_command_line() {
    let d = tempdir("cli");
    let input = tempdir("cli-input");
    let m = d.path().to_str().unwrap();
    let f = input.path().join("in.yaml");
    std::fs::write(
        &f,
        format!("{NODES}---\n{}", study("02-external-pool.yaml")),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["apply", "-f", f.to_str().unwrap(), "--manifests", m]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node/k8s-w1 created"), "{text}");
    assert!(
        text.contains("ippool.projectcalico.org/external-pool created"),
        "{text}"
    );
    let out = run(&["get", "nodes", "-o", "wide", "--manifests", m]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["k8s-w0", "(64512)", "192.168.20.100/24"])),
        "{text}"
    );
    let out = run(&["get", "ippools", "-o", "json", "--manifests", m]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["spec"]["cidr"], "172.18.0.0/16");
    assert_eq!(v["items"][0]["spec"]["nodeSelector"], "!all()");
    let out = run(&["delete", "-f", f.to_str().unwrap(), "--manifests", m]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["delete", "-f", f.to_str().unwrap(), "--manifests", m]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// With an IPAM state (the node daemon's case), a pool change rebuilds the compiler: the IPAM
/// blocks must still route to their nodes afterwards, exactly as a compile from scratch does.
#[test]
fn incremental_compile_with_ipam_survives_a_pool_change() {
    let state = cluster::model::ClusterState::load_str(
        "base",
        &format!("{NODES}---\n{}", study("01-default-pool.yaml")),
    )
    .unwrap()
    .state;
    let ipam: control::ipam::IpamState = serde_json::from_value(serde_json::json!({
        "blocks": [
            {"cidr": "172.16.158.0/26", "affinity": "k8s-w1", "allocations": {"172.16.158.0": "default/a"}},
            {"cidr": "172.16.184.0/26", "affinity": "k8s-w2", "allocations": {"172.16.184.0": "default/b"}}
        ],
        "handles": {"default/a": "172.16.158.0", "default/b": "172.16.184.0"}
    }))
    .unwrap();
    let inputs = CompileInputs {
        ipam: Some(&ipam),
        endpoints: Some(&[]),
        gateway: None,
    };
    let mut inc = NodeCompiler::new(&state, "k8s-w1", inputs).unwrap();
    let route_to_w2 = |spec: &pipeline::tables::TablesSpec| {
        spec.routes.iter().any(|r| {
            r.prefix.to_string() == "172.16.184.0/26" && r.peer.as_deref() == Some("k8s-w2")
        })
    };
    assert!(route_to_w2(&inc.spec()));
    let pool = cluster::model::parse_str(
        "p",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: extra}\nspec: {cidr: 10.99.0.0/16, nodeSelector: \"!all()\"}\n",
    )
    .unwrap()
    .objects
    .remove(0)
    .object;
    let mut after = state.clone();
    let change = Change::Applied(pool);
    apply_changes(&mut after, std::slice::from_ref(&change), "t").unwrap();
    assert!(inc.apply(&after, &change).unwrap());
    let full = NodeCompiler::new(&after, "k8s-w1", inputs).unwrap().spec();
    assert_eq!(inc.spec(), full);
    assert!(
        route_to_w2(&inc.spec()),
        "the IPAM block lost its route after a pool change"
    );
}
