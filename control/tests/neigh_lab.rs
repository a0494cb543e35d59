//! The node daemon's view of the kernel (`control::node::neigh::KernelWatch`) against real network
//! namespaces: the default gateway and neighbours arrive by netlink subscription, a MAC change
//! moves the view, a deleted entry leaves it, and `resolve` makes the kernel ARP for a next hop.
//! Needs root (CI runs as root); FERRY_LAB_SKIP=1 skips knowingly. Namespaces are removed by a
//! guard, also when the test fails.

use control::node::neigh::KernelWatch;
use pipeline::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn runnable() -> bool {
    match testbeds::can_run() {
        Ok(()) => true,
        Err(e) if std::env::var_os("FERRY_LAB_SKIP").is_some_and(|v| v != "0") => {
            eprintln!("skipping neighbour lab test (FERRY_LAB_SKIP): {e}");
            false
        }
        Err(e) => panic!(
            "the neighbour lab test cannot run here: {e} (run as root, or set FERRY_LAB_SKIP=1)"
        ),
    }
}

fn sh(args: &[&str]) -> String {
    // testbeds' one command runner: its error names the command and its stderr.
    testbeds::sys::run_args(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Network namespaces, deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Waits until `what` holds (checked every 10 ms), for at most 5 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn mac_of(ns: &str, dev: &str) -> MacAddr {
    let out = sh(&["ip", "-n", ns, "-o", "link", "show", "dev", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MAC in {out}"))
}

#[test]
fn kernel_view_follows_neighbours_and_routes() {
    if !runnable() {
        return;
    }
    let (a, b) = (
        format!("ferrynl-{}-a", std::process::id()),
        format!("ferrynl-{}-b", std::process::id()),
    );
    let _guard = Namespaces(vec![a.clone(), b.clone()]);
    sh(&["ip", "netns", "add", &a]);
    sh(&["ip", "netns", "add", &b]);
    sh(&[
        "ip", "-n", &a, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb", "netns",
        &b,
    ]);
    sh(&[
        "ip",
        "-n",
        &a,
        "addr",
        "add",
        "198.18.200.1/24",
        "dev",
        "va",
    ]);
    sh(&[
        "ip",
        "-n",
        &b,
        "addr",
        "add",
        "198.18.200.2/24",
        "dev",
        "vb",
    ]);
    sh(&["ip", "-n", &a, "link", "set", "va", "up"]);
    sh(&["ip", "-n", &b, "link", "set", "vb", "up"]);

    let watch = KernelWatch::start_in(Some(Path::new(&format!("/var/run/netns/{a}"))))
        .expect("the watch starts in the namespace");
    assert_eq!(watch.default_gateway(), None, "no default route yet");
    let gw = Ipv4Addr::new(198, 18, 200, 2);
    assert!(
        !watch.neighbors().contains_key(&gw),
        "the peer is not resolved yet: {:?}",
        watch.neighbors()
    );

    // The default route, by notification.
    sh(&[
        "ip",
        "-n",
        &a,
        "route",
        "add",
        "default",
        "via",
        "198.18.200.2",
    ]);
    wait_for("the default gateway 198.18.200.2", || {
        watch.default_gateway() == Some(gw)
    });

    // resolve(): the kernel ARPs for the peer; its MAC arrives by notification.
    let peer_mac = mac_of(&b, "vb");
    let before = watch.version();
    let deadline = Instant::now() + Duration::from_secs(5);
    while watch.neighbors().get(&gw) != Some(&peer_mac) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 198.18.200.2 at {peer_mac}: {:?}",
            watch.neighbors()
        );
        watch.resolve(&[gw]);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(watch.version() > before, "the version moved");

    // A static entry; its MAC changes; it is deleted.
    let other = Ipv4Addr::new(198, 18, 200, 3);
    for mac in ["02:00:00:00:00:03", "02:00:00:00:00:04"] {
        sh(&[
            "ip",
            "-n",
            &a,
            "neigh",
            "replace",
            "198.18.200.3",
            "lladdr",
            mac,
            "dev",
            "va",
            "nud",
            "permanent",
        ]);
        let want: MacAddr = mac.parse().unwrap();
        wait_for(&format!("198.18.200.3 at {mac}"), || {
            watch.neighbors().get(&other) == Some(&want)
        });
    }
    sh(&["ip", "-n", &a, "neigh", "del", "198.18.200.3", "dev", "va"]);
    wait_for("198.18.200.3 to leave the view", || {
        !watch.neighbors().contains_key(&other)
    });

    // The route goes: so does the gateway.
    sh(&["ip", "-n", &a, "route", "del", "default"]);
    wait_for("the default gateway to go", || {
        watch.default_gateway().is_none()
    });

    // Dropping the watch stops its thread (the drop joins it).
    drop(watch);
}

#[test]
fn a_namespace_that_is_not_one_is_refused_with_the_errno() {
    if !runnable() {
        return;
    }
    let e = KernelWatch::start_in(Some(Path::new("/proc/self/status")))
        .err()
        .expect("a regular file is not a network namespace");
    assert_eq!(e.op, "setns", "{e}");
    assert_eq!(e.errno(), Some(22), "EINVAL: {e}");
}
