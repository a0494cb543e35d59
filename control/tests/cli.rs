//! The `ferry` command's own errors: bad input ends in a clear message and exit 1, never a
//! panic, and nothing is attached or started. (No test here touches an interface: the node
//! daemon is exercised inside lab namespaces in `lab.rs`.)

use std::process::Command;

fn ferry(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .output()
        .expect("run ferry");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn help_explains_every_command() {
    let (code, out, _) = ferry(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["replay", "node", "tables"] {
        assert!(out.contains(cmd), "{out}");
    }
    let (code, out, _) = ferry(&["node", "run", "--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--tables",
        "--metrics",
        "--core",
        "--idle-spins",
        "SIGHUP",
        "SIGTERM",
    ] {
        assert!(
            out.contains(opt),
            "node run --help should mention {opt}:\n{out}"
        );
    }
}

#[test]
fn node_run_with_a_bad_tables_file_fails_before_touching_anything() {
    let dir = testbeds::TempDir::new("cli").unwrap();
    let missing = dir.join("missing.toml");
    let (code, _, err) = ferry(&["node", "run", "--tables", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read tables file") && err.contains("missing.toml"),
        "{err}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[node]\nname = 1\n").unwrap();
    let (code, _, err) = ferry(&["node", "run", "--tables", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml") && err.contains("not valid"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let (code, _, err) = ferry(&["tables", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn tables_check_lists_the_compiled_routes() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/k8s-w1.tables.toml"
    );
    let (code, out, err) = ferry(&["tables", "check", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("node k8s-w1"), "{out}");
    assert!(
        out.contains("172.16.184.0/26") && out.contains("Ipip"),
        "{out}"
    );
    assert!(
        out.contains("172.16.158.1/32") && out.contains("caliw1p1"),
        "{out}"
    );
    assert!(out.contains("0.0.0.0/0"), "{out}");
}

/// `ferry get ippools` prints the study's two pools exactly as calicoctl does in the study;
/// `ferry ipam show --show-blocks` shows the blocks the IPAM store holds and their usage.
#[test]
fn get_ippools_and_ipam_show_like_calicoctl() {
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/study");
    let (code, out, err) = ferry(&["get", "ippools", "--manifests", manifests]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "NAME                  CIDR            SELECTOR\n\
         default-ipv4-ippool   172.16.0.0/16   all()\n\
         external-pool         172.18.0.0/16   !all()\n"
    );
    let (code, out, _) = ferry(&["get", "ippools", "--manifests", manifests, "-o", "wide"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("IPIPMODE") && out.contains("CrossSubnet"),
        "{out}"
    );
    let (code, _, err) = ferry(&["get", "ippools", "--manifests", manifests, "-o", "xml"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown output format"), "{err}");

    // Three pods of the external namespace on two nodes, through the library's IPAM.
    let scratch = testbeds::TempDir::new("cli-ipam").unwrap();
    let dir = scratch.join("state");
    let loaded = control::manifest_dir::load_files(std::path::Path::new(manifests)).unwrap();
    let pools: Vec<_> = loaded.state.ip_pools.values().cloned().collect();
    let ipam = control::ipam::Ipam::open(&dir).unwrap();
    let labels = std::collections::BTreeMap::new();
    for (i, node) in ["k8s-w1", "k8s-w1", "k8s-w2"].iter().enumerate() {
        let handle = format!("external-ns/nginx-{i}");
        let req = control::ipam::AssignRequest {
            handle: &handle,
            node,
            node_labels: &labels,
            pools: &pools,
            pool_names: Some(vec!["external-pool".into()]),
            ip: None,
        };
        ipam.assign(&req).unwrap();
    }
    let (code, out, err) = ferry(&[
        "ipam",
        "show",
        "--manifests",
        manifests,
        "--state",
        dir.to_str().unwrap(),
        "--show-blocks",
    ]);
    assert_eq!(code, 0, "{err}");
    // calicoctl's columns, in the tabwriter look of every `ferry` table.
    assert!(
        out.starts_with("GROUPING   CIDR            IPS TOTAL   IPS IN USE   IPS FREE\n"),
        "{out}"
    );
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{out}"))
            .to_string()
    };
    assert!(
        line("IP Pool    172.18.0.0/16   ").contains("3 (0%)"),
        "{out}"
    );
    assert!(
        line("IP Pool    172.16.0.0/16   ").contains("0 (0%)"),
        "{out}"
    );
    let blocks: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("Block      "))
        .collect();
    assert_eq!(blocks.len(), 2, "one /24 per node:\n{out}");
    assert!(
        blocks
            .iter()
            .any(|b| b.contains("/24") && b.contains("2 (0%)")),
        "{out}"
    );
}

/// `ferry` with extra environment variables: (exit code, stdout, stderr).
fn ferry_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run ferry");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// `ferry node run --log-format json` (as in the DaemonSet) writes one JSON object per line on
/// standard error, its fatal error included; `--log-level` and `RUST_LOG` choose the levels.
/// The tables name ports that exist nowhere, so the daemon logs its start and then fails
/// before attaching anything.
#[test]
fn node_run_writes_json_log_lines_that_parse() {
    let dir = std::env::temp_dir().join(format!("ferry-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = dir.join("tables.toml");
    let uplink = format!("fxnx{}u", std::process::id() % 100_000);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/k8s-w1.tables.toml"
    ))
    .unwrap()
    .replace("\"eth0\"", &format!("\"{uplink}\""))
    .replace("caliw1p", &format!("fxnx{}p", std::process::id() % 100_000));
    std::fs::write(&tables, text).unwrap();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/manifests/study");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "node",
            "run",
            "--tables",
            tables.to_str().unwrap(),
            "--policy",
            policy,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = ferry_env(&args, env);
        assert_eq!(code, 1, "the ports do not exist: exit 1\n{err}");
        assert!(out.is_empty(), "standard output stays clean: {out:?}");
        let lines: Vec<serde_json::Value> = err
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l:?}\nin:\n{err}"))
            })
            .collect();
        for l in &lines {
            for field in ["timestamp", "level", "message", "target"] {
                assert!(l[field].is_string(), "no {field} in {l}");
            }
        }
        let levels: Vec<(String, String)> = lines
            .iter()
            .map(|l| {
                (
                    l["level"].as_str().unwrap().to_string(),
                    l["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (levels, err)
    };
    let (levels, err) = run(&[], &[]);
    assert!(
        levels
            .iter()
            .any(|(l, m)| l == "INFO" && m.contains("policy from") && m.contains("6 policies")),
        "an INFO line about the policies:\n{err}"
    );
    assert!(
        levels
            .iter()
            .any(|(l, m)| l == "ERROR" && m.contains(&uplink) && m.contains("does not exist")),
        "the fatal error as an ERROR line naming the port:\n{err}"
    );
    // --log-level warn: no INFO; RUST_LOG=error: only the error.
    let (levels, err) = run(&["--log-level", "warn"], &[]);
    assert!(
        levels.iter().all(|(l, _)| l != "INFO") && levels.iter().any(|(l, _)| l == "ERROR"),
        "--log-level warn:\n{err}"
    );
    let (levels, err) = run(&[], &[("RUST_LOG", "error")]);
    assert!(
        !levels.is_empty() && levels.iter().all(|(l, _)| l == "ERROR"),
        "RUST_LOG=error:\n{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_log_level_is_refused_with_a_clear_message() {
    let (code, out, err) = ferry_env(&["--log-level", "loud==", "tables", "check", "x"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("log level \"loud==\"") && err.contains("give a level"),
        "{err}"
    );
}
