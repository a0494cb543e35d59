//! `status`: the live lab, namespace by namespace, compared against its plan.

use crate::plan::{LinkKind, NsPlan, Plan, Role};
use crate::sys;
use crate::LabError;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::process::Command;

/// One interface as found in its namespace.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub found: bool,
    /// Administratively up and carrier on (flags UP and LOWER_UP).
    pub up: bool,
    pub mac: Option<String>,
    pub expected_mac: Option<String>,
    /// IPv4 addresses, `a.b.c.d/len`.
    pub addrs: Vec<String>,
    pub master: Option<String>,
    pub mtu: Option<u64>,
    /// What is on the other side (`veth to k8s-rtr:k8s-w1`, `bridge`, `loopback`).
    pub role: String,
}

/// One planned route and whether it is in the main table.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub route: String,
    pub present: bool,
}

/// One namespace.
#[derive(Debug, Clone, Serialize)]
pub struct NsStatus {
    pub target: String,
    pub role: Role,
    pub netns: String,
    pub exists: bool,
    pub links: Vec<LinkStatus>,
    pub routes: Vec<RouteStatus>,
}

/// The whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub id: String,
    pub prefix: String,
    pub topology: String,
    /// `up`, `building`, or `unknown` (no state file).
    pub phase: String,
    pub namespaces: Vec<NsStatus>,
    /// Namespaces with the lab's prefix that the plan does not know.
    pub extra_namespaces: Vec<String>,
    /// Everything that differs from the plan, one line each; empty when healthy.
    pub problems: Vec<String>,
}

impl LabStatus {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

fn normalize_dst(d: &str) -> String {
    if d == "default" || d.contains('/') {
        d.to_owned()
    } else {
        format!("{d}/32")
    }
}

pub(crate) fn gather(
    id: &str,
    prefix: &str,
    topology: &str,
    phase: &str,
    plan: &Plan,
) -> Result<LabStatus, LabError> {
    let existing = sys::netns_with_prefix(prefix)?;
    let mut problems = Vec::new();
    let mut namespaces = Vec::new();
    for ns in &plan.namespaces {
        let netns = format!("{prefix}{}", ns.target);
        let exists = existing.contains(&netns);
        let st = if exists {
            ns_status(ns, &netns, &mut problems)?
        } else {
            problems.push(format!(
                "{} {}: namespace {netns} is missing",
                ns.role, ns.target
            ));
            NsStatus {
                target: ns.target.clone(),
                role: ns.role,
                netns,
                exists: false,
                links: Vec::new(),
                routes: Vec::new(),
            }
        };
        namespaces.push(st);
    }
    let extra_namespaces: Vec<String> = existing
        .into_iter()
        .filter(|n| !namespaces.iter().any(|s| &s.netns == n))
        .collect();
    for n in &extra_namespaces {
        problems.push(format!(
            "namespace {n} has the lab's prefix but is not in its topology"
        ));
    }
    Ok(LabStatus {
        id: id.to_owned(),
        prefix: prefix.to_owned(),
        topology: topology.to_owned(),
        phase: phase.to_owned(),
        namespaces,
        extra_namespaces,
        problems,
    })
}

fn ns_status(ns: &NsPlan, netns: &str, problems: &mut Vec<String>) -> Result<NsStatus, LabError> {
    let out = sys::run(
        Command::new("ip").args(["-n", netns, "-j", "-batch", "-"]),
        Some("addr show\nroute show\n"),
        &format!("reading the state of {netns}"),
    )?;
    let mut docs = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let bad_json = |e: Option<serde_json::Error>| LabError::Io {
        what: format!("parsing `ip -j` output for {netns}"),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.map(|e| e.to_string())
                .unwrap_or_else(|| "missing output".into()),
        ),
    };
    let addrs = match docs.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(bad_json(Some(e))),
        None => return Err(bad_json(None)),
    };
    let routes = match docs.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(bad_json(Some(e))),
        None => Value::Array(Vec::new()),
    };
    let live: &[Value] = addrs.as_array().map(std::vec::Vec::as_slice).unwrap_or(&[]);
    let who = format!("{} {}", ns.role, ns.target);

    let mut links = Vec::new();
    for l in &ns.links {
        let role = match &l.kind {
            LinkKind::Loopback => "loopback".to_owned(),
            LinkKind::Bridge => "bridge".to_owned(),
            LinkKind::Veth {
                peer_target,
                peer_name,
            } => format!("veth to {peer_target}:{peer_name}"),
        };
        let expected_mac = l.mac.map(|m| m.to_string());
        let Some(v) = live.iter().find(|v| v["ifname"] == l.name.as_str()) else {
            problems.push(format!("{who}: interface {} is missing", l.name));
            links.push(LinkStatus {
                name: l.name.clone(),
                found: false,
                up: false,
                mac: None,
                expected_mac,
                addrs: Vec::new(),
                master: None,
                mtu: None,
                role,
            });
            continue;
        };
        let flags: Vec<&str> = v["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
            .unwrap_or_default();
        let up = flags.contains(&"UP") && flags.contains(&"LOWER_UP");
        let mac = v["address"].as_str().map(str::to_owned);
        let master = v["master"].as_str().map(str::to_owned);
        let mtu = v["mtu"].as_u64();
        let have: Vec<String> = v["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["family"] == "inet")
                    .filter(|x| x["local"] != "127.0.0.1")
                    .filter_map(|x| Some(format!("{}/{}", x["local"].as_str()?, x["prefixlen"])))
                    .collect()
            })
            .unwrap_or_default();
        if !up {
            problems.push(format!(
                "{who}: {} is not up (flags {})",
                l.name,
                flags.join(",")
            ));
        }
        if let (Some(want), Some(got)) = (&expected_mac, &mac) {
            if want != got {
                problems.push(format!("{who}: {} has MAC {got}, expected {want}", l.name));
            }
        }
        if let (Some(want), Some(got)) = (l.mtu, mtu) {
            if u64::from(want) != got {
                problems.push(format!("{who}: {} has MTU {got}, expected {want}", l.name));
            }
        }
        for a in &l.addrs {
            if !have.contains(&a.to_string()) {
                problems.push(format!("{who}: {} lacks address {a}", l.name));
            }
        }
        if l.master.is_some() && l.master != master {
            problems.push(format!(
                "{who}: {} should be a port of {}",
                l.name,
                l.master.as_deref().unwrap_or("-")
            ));
        }
        links.push(LinkStatus {
            name: l.name.clone(),
            found: true,
            up,
            mac,
            expected_mac,
            addrs: have,
            master,
            mtu,
            role,
        });
    }

    let live_routes: &[Value] = routes
        .as_array()
        .map(std::vec::Vec::as_slice)
        .unwrap_or(&[]);
    let mut rs = Vec::new();
    for r in &ns.routes {
        let dst = r
            .dst
            .map(|d| d.to_string())
            .unwrap_or_else(|| "default".into());
        let present = live_routes.iter().any(|v| {
            v["dst"].as_str().map(normalize_dst).as_deref() == Some(dst.as_str())
                && v["dev"] == r.dev.as_str()
                && match r.via {
                    Some(g) => v["gateway"] == g.to_string().as_str(),
                    None => v.get("gateway").is_none(),
                }
        });
        if !present {
            problems.push(format!("{who}: route {} is missing", r.args()));
        }
        rs.push(RouteStatus {
            route: r.args(),
            present,
        });
    }

    Ok(NsStatus {
        target: ns.target.clone(),
        role: ns.role,
        netns: netns.to_owned(),
        exists: true,
        links,
        routes: rs,
    })
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lab {} (prefix {}, topology {}, {})",
            self.id, self.prefix, self.topology, self.phase
        )?;
        for ns in &self.namespaces {
            writeln!(
                f,
                "\n{} {}  [netns {}]{}",
                ns.role,
                ns.target,
                ns.netns,
                if ns.exists { "" } else { "  MISSING" }
            )?;
            let mut links = Vec::new();
            for l in &ns.links {
                let state = if !l.found {
                    "MISSING"
                } else if l.up {
                    "up"
                } else {
                    "DOWN"
                };
                let addrs = if l.addrs.is_empty() {
                    "-".to_owned()
                } else {
                    l.addrs.join(" ")
                };
                let role = match &l.master {
                    Some(m) => format!("{}, port of {m}", l.role),
                    None => l.role.clone(),
                };
                links.push([
                    l.name.clone(),
                    state.to_string(),
                    l.mac.as_deref().unwrap_or("-").to_string(),
                    addrs,
                    role,
                ]);
            }
            let links = texttable::render::<&str, _, _>(&[], links);
            write!(f, "{}", texttable::indent("  ", &links))?;
            for r in &ns.routes {
                writeln!(
                    f,
                    "  route {}{}",
                    r.route,
                    if r.present { "" } else { "  MISSING" }
                )?;
            }
        }
        for n in &self.extra_namespaces {
            writeln!(f, "\nunknown namespace with the lab's prefix: {n}")?;
        }
        if self.problems.is_empty() {
            writeln!(
                f,
                "\nhealthy: every namespace, link, address, MAC and route is in place"
            )
        } else {
            writeln!(f, "\n{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}
