//! What a topology becomes: the namespaces, the interfaces in each (name, MAC, MTU, addresses,
//! bridge, veth peer), the routes and the sysctls — and the `ip` batches and shell lines that
//! build them. Pure data, so it is unit-tested without privileges; [`crate::Lab`] runs it and
//! `status` compares the live lab against it.

use crate::topology::{IfAddr, Topology};
use pipeline::tables::Ipv4Prefix;
use pipeline::wire::MacAddr;
use std::fmt;
use std::net::Ipv4Addr;
use study::mac_of;

/// The gateway Calico gives every pod; the host side of the veth answers ARP for it (proxy ARP).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// What a namespace plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Router,
    Node,
    Pod,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Router => "router",
            Role::Node => "node",
            Role::Pod => "pod",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Loopback,
    Bridge,
    /// One end of a veth pair; the other end is `peer_name` in `peer_target`'s namespace.
    Veth {
        peer_target: String,
        peer_name: String,
    },
}

/// One interface of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub name: String,
    pub kind: LinkKind,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u16>,
    pub addrs: Vec<IfAddr>,
    /// Bridge this interface is a port of.
    pub master: Option<String>,
    /// Calico's host-side settings: proxy_arp=1, proxy_delay=0.
    pub proxy_arp: bool,
}

/// One route of a namespace's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// `None` is the default route.
    pub dst: Option<Ipv4Prefix>,
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    pub onlink: bool,
}

impl RoutePlan {
    /// The `ip route add` arguments.
    pub fn args(&self) -> String {
        let mut s = match &self.dst {
            None => "default".to_owned(),
            Some(p) => p.to_string(),
        };
        if let Some(v) = self.via {
            s.push_str(&format!(" via {v}"));
        }
        s.push_str(&format!(" dev {}", self.dev));
        if self.onlink {
            s.push_str(" onlink");
        }
        s
    }
}

impl fmt::Display for RoutePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.args())
    }
}

/// One namespace of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsPlan {
    /// The name `exec`, `status` and the API use (`k8s-w1`, `k8s-w1-pod1`, `k8s-rtr`).
    pub target: String,
    pub role: Role,
    pub links: Vec<LinkPlan>,
    pub routes: Vec<RoutePlan>,
    /// net.ipv4.ip_forward.
    pub forwarding: bool,
}

impl NsPlan {
    pub fn link(&self, name: &str) -> Option<&LinkPlan> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// One veth pair, created in one `ip link add` directly in its two namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPlan {
    pub a_target: String,
    pub a_name: String,
    pub a_mac: MacAddr,
    pub b_target: String,
    pub b_name: String,
    pub b_mac: MacAddr,
    pub mtu: u16,
    /// Interface indexes of the two ends, distinct across the lab: the i-th pair gets
    /// `FIRST_IFINDEX + 2i` and `FIRST_IFINDEX + 2i + 1`. Besides being reproducible, they keep
    /// the kernel's link watcher fast: it handles a veth's carrier change at once only when the
    /// veth's index differs from its peer's, which two fresh namespaces would otherwise often
    /// make equal (both ends index 2), delaying bridge ports by up to a second.
    pub a_index: u32,
    pub b_index: u32,
}

/// The first interface index the lab gives a veth end.
pub const FIRST_IFINDEX: u32 = 10;

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Router first, then nodes, then pods.
    pub namespaces: Vec<NsPlan>,
    pub veths: Vec<VethPlan>,
    pub disable_offloads: bool,
    /// Queues of every veth end.
    pub queues: u32,
}

/// The MAC of the router's port towards a node: `02:01:` + the node address (never on the wire
/// as a source unless the bridge floods its own frames; set only so that captures are
/// reproducible).
pub fn router_port_mac(node: Ipv4Addr) -> MacAddr {
    let o = node.octets();
    MacAddr([0x02, 0x01, o[0], o[1], o[2], o[3]])
}

fn lo(addrs: Vec<IfAddr>) -> LinkPlan {
    LinkPlan {
        name: "lo".into(),
        kind: LinkKind::Loopback,
        mac: None,
        mtu: None,
        addrs,
        master: None,
        proxy_arp: false,
    }
}

impl Plan {
    pub fn new(t: &Topology) -> Plan {
        let spec = t.spec();
        let router = &spec.router;
        let mut namespaces = Vec::new();
        let mut veths = Vec::new();

        // The router: loopback test addresses, one bridge per subnet, one port per node.
        let mut rlinks = vec![lo(router.loopbacks.clone())];
        for s in t.subnets() {
            rlinks.push(LinkPlan {
                name: s.bridge.clone(),
                kind: LinkKind::Bridge,
                mac: Some(mac_of(s.gateway)),
                mtu: Some(spec.uplink_mtu),
                addrs: vec![IfAddr::new(s.gateway, s.cidr.len)],
                master: None,
                proxy_arp: false,
            });
        }
        let mut rroutes = Vec::new();
        for n in t.nodes() {
            let bridge = t.subnets()[n.subnet].bridge.clone();
            rlinks.push(LinkPlan {
                name: n.name.clone(),
                kind: LinkKind::Veth {
                    peer_target: n.name.clone(),
                    peer_name: "eth0".into(),
                },
                mac: Some(router_port_mac(n.address)),
                mtu: Some(spec.uplink_mtu),
                addrs: Vec::new(),
                master: Some(bridge.clone()),
                proxy_arp: false,
            });
            veths.push(VethPlan {
                a_target: n.name.clone(),
                a_name: "eth0".into(),
                a_mac: mac_of(n.address),
                b_target: router.name.clone(),
                b_name: n.name.clone(),
                b_mac: router_port_mac(n.address),
                mtu: spec.uplink_mtu,
                a_index: 0,
                b_index: 0,
            });
            if router.pod_routes {
                let dsts: Vec<Ipv4Prefix> = match n.block {
                    Some(b) => vec![b],
                    None => t
                        .pods_of(&n.name)
                        .map(|p| Ipv4Prefix {
                            addr: u32::from(p.address),
                            len: 32,
                        })
                        .collect(),
                };
                for d in dsts {
                    rroutes.push(RoutePlan {
                        dst: Some(d),
                        via: Some(n.address),
                        dev: bridge.clone(),
                        onlink: false,
                    });
                }
            }
        }
        namespaces.push(NsPlan {
            target: router.name.clone(),
            role: Role::Router,
            links: rlinks,
            routes: rroutes,
            forwarding: true,
        });

        // The nodes: uplink eth0 and one Calico-style port per pod.
        for n in t.nodes() {
            let mut links = vec![
                lo(Vec::new()),
                LinkPlan {
                    name: "eth0".into(),
                    kind: LinkKind::Veth {
                        peer_target: router.name.clone(),
                        peer_name: n.name.clone(),
                    },
                    mac: Some(mac_of(n.address)),
                    mtu: Some(spec.uplink_mtu),
                    addrs: vec![IfAddr::new(n.address, n.cidr.len)],
                    master: None,
                    proxy_arp: false,
                },
            ];
            let mut routes = vec![RoutePlan {
                dst: None,
                via: Some(n.gateway),
                dev: "eth0".into(),
                onlink: false,
            }];
            for p in t.pods_of(&n.name) {
                links.push(LinkPlan {
                    name: p.port.clone(),
                    kind: LinkKind::Veth {
                        peer_target: p.name.clone(),
                        peer_name: "eth0".into(),
                    },
                    mac: Some(MacAddr::CALICO_HOST_SIDE),
                    mtu: Some(spec.pod_mtu),
                    addrs: Vec::new(),
                    master: None,
                    proxy_arp: true,
                });
                routes.push(RoutePlan {
                    dst: Some(Ipv4Prefix {
                        addr: u32::from(p.address),
                        len: 32,
                    }),
                    via: None,
                    dev: p.port.clone(),
                    onlink: false,
                });
            }
            namespaces.push(NsPlan {
                target: n.name.clone(),
                role: Role::Node,
                links,
                routes,
                forwarding: true,
            });
        }

        // The pods: eth0 with address/32 and Calico's default route.
        for p in t.pods() {
            veths.push(VethPlan {
                a_target: p.name.clone(),
                a_name: "eth0".into(),
                a_mac: mac_of(p.address),
                b_target: p.node.clone(),
                b_name: p.port.clone(),
                b_mac: MacAddr::CALICO_HOST_SIDE,
                mtu: spec.pod_mtu,
                a_index: 0,
                b_index: 0,
            });
            namespaces.push(NsPlan {
                target: p.name.clone(),
                role: Role::Pod,
                links: vec![
                    lo(Vec::new()),
                    LinkPlan {
                        name: "eth0".into(),
                        kind: LinkKind::Veth {
                            peer_target: p.node.clone(),
                            peer_name: p.port.clone(),
                        },
                        mac: Some(mac_of(p.address)),
                        mtu: Some(spec.pod_mtu),
                        addrs: vec![IfAddr::new(p.address, 32)],
                        master: None,
                        proxy_arp: false,
                    },
                ],
                routes: vec![RoutePlan {
                    dst: None,
                    via: Some(POD_GATEWAY),
                    dev: "eth0".into(),
                    onlink: true,
                }],
                forwarding: false,
            });
        }

        for (i, v) in (0u32..).zip(veths.iter_mut()) {
            v.a_index = FIRST_IFINDEX + 2 * i;
            v.b_index = FIRST_IFINDEX + 2 * i + 1;
        }
        Plan {
            namespaces,
            veths,
            disable_offloads: spec.disable_offloads,
            queues: spec.queues.clamp(1, 64),
        }
    }

    pub fn ns(&self, target: &str) -> Option<&NsPlan> {
        self.namespaces.iter().find(|n| n.target == target)
    }

    /// Step 1, in the root namespace: `netns add` for every namespace.
    pub fn netns_add_lines(&self, prefix: &str) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| format!("netns add {prefix}{}", n.target))
            .collect()
    }

    /// Step 2, from the root namespace: every veth pair, created directly inside its two
    /// namespaces (neither end ever exists in the root namespace).
    pub fn veth_lines(&self, prefix: &str) -> Vec<String> {
        self.veths
            .iter()
            .map(|v| {
                let mut line = format!(
                    "link add name {} index {} netns {prefix}{} address {} mtu {} type veth \
                     peer name {} index {} netns {prefix}{} address {} mtu {}",
                    v.a_name,
                    v.a_index,
                    v.a_target,
                    v.a_mac,
                    v.mtu,
                    v.b_name,
                    v.b_index,
                    v.b_target,
                    v.b_mac,
                    v.mtu
                );
                if self.queues > 1 {
                    // `ip link add` takes the queue counts before `type`, and again per peer.
                    let q = format!("numtxqueues {0} numrxqueues {0}", self.queues);
                    line = line.replacen(" type veth", &format!(" {q} type veth"), 1);
                    line.push_str(&format!(" {q}"));
                }
                line
            })
            .collect()
    }
}

impl NsPlan {
    /// Step 3, a `sh -e` script run inside the namespace: sysctls (IPv6 off, forwarding,
    /// rp_filter off, proxy ARP on pod ports) and offloads off on every veth.
    pub fn config_script(&self, disable_offloads: bool) -> String {
        let mut s = String::from("w() { printf '%s' \"$2\" > \"/proc/sys/net/$1\"; }\n");
        // No IPv6: the dataplane is IPv4-only and router solicitations, MLD and DAD would only
        // add noise to captures.
        s.push_str("if [ -d /proc/sys/net/ipv6 ]; then\n");
        s.push_str("  w ipv6/conf/default/disable_ipv6 1\n  w ipv6/conf/all/disable_ipv6 1\nfi\n");
        s.push_str(&format!(
            "w ipv4/ip_forward {}\n",
            if self.forwarding { 1 } else { 0 }
        ));
        s.push_str("w ipv4/conf/all/rp_filter 0\nw ipv4/conf/default/rp_filter 0\n");
        for l in &self.links {
            if let LinkKind::Veth { .. } = l.kind {
                s.push_str(&format!("w ipv4/conf/{}/rp_filter 0\n", l.name));
                if l.proxy_arp {
                    s.push_str(&format!(
                        "w ipv4/conf/{0}/proxy_arp 1\nw ipv4/neigh/{0}/proxy_delay 0\n",
                        l.name
                    ));
                }
                if disable_offloads {
                    s.push_str(&format!(
                        "ethtool -K {} gro off tso off gso off tx off rx off >/dev/null\n",
                        l.name
                    ));
                }
            }
        }
        s
    }

    /// Step 4, an `ip -n NETNS -batch`: bridges, ports, addresses, links up, routes.
    pub fn ip_lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for l in &self.links {
            if l.kind == LinkKind::Bridge {
                let mut line = format!("link add name {}", l.name);
                if let Some(m) = l.mac {
                    line.push_str(&format!(" address {m}"));
                }
                if let Some(mtu) = l.mtu {
                    line.push_str(&format!(" mtu {mtu}"));
                }
                line.push_str(" type bridge stp_state 0 mcast_snooping 0");
                v.push(line);
            }
        }
        for l in &self.links {
            if let Some(m) = &l.master {
                v.push(format!("link set dev {} master {m}", l.name));
            }
        }
        for l in &self.links {
            for a in &l.addrs {
                v.push(format!("addr add {a} dev {}", l.name));
            }
        }
        for l in &self.links {
            v.push(format!("link set dev {} up", l.name));
        }
        for r in &self.routes {
            v.push(format!("route add {}", r.args()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_plan_has_everything_the_brief_lists() {
        let t = Topology::study();
        let p = Plan::new(&t);
        let targets: Vec<&str> = p.namespaces.iter().map(|n| n.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "k8s-rtr",
                "k8s-m",
                "k8s-w1",
                "k8s-w2",
                "k8s-w0",
                "k8s-w1-pod1",
                "k8s-w1-pod2",
                "k8s-w2-pod1",
                "k8s-w2-pod2",
                "k8s-w0-pod1",
                "k8s-w0-pod2"
            ]
        );
        assert_eq!(p.veths.len(), 4 + 6);

        let w1 = p.ns("k8s-w1").unwrap();
        let eth0 = w1.link("eth0").unwrap();
        assert_eq!(eth0.mac.unwrap().to_string(), "02:00:c0:a8:0a:65");
        assert_eq!(eth0.addrs[0].to_string(), "192.168.10.101/24");
        let port = w1.link("caliw1p1").unwrap();
        assert_eq!(port.mac.unwrap().to_string(), "ee:ee:ee:ee:ee:ee");
        assert!(port.proxy_arp);
        let routes: Vec<String> = w1.routes.iter().map(super::RoutePlan::args).collect();
        assert_eq!(
            routes,
            [
                "default via 192.168.10.254 dev eth0",
                "172.16.158.1/32 dev caliw1p1",
                "172.16.158.2/32 dev caliw1p2"
            ]
        );

        let pod = p.ns("k8s-w2-pod1").unwrap();
        assert_eq!(
            pod.routes[0].args(),
            "default via 169.254.1.1 dev eth0 onlink"
        );
        assert_eq!(
            pod.link("eth0").unwrap().addrs[0].to_string(),
            "172.16.184.1/32"
        );
        assert_eq!(
            pod.link("eth0").unwrap().mac.unwrap().to_string(),
            "02:00:ac:10:b8:01"
        );

        let r = p.ns("k8s-rtr").unwrap();
        assert!(r.routes.is_empty(), "no pod routes in the study");
        let lo: Vec<String> = r
            .link("lo")
            .unwrap()
            .addrs
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        assert_eq!(lo, ["10.1.1.254/32", "10.1.2.254/32"]);
        let br20 = r.link("br20").unwrap();
        assert_eq!(br20.mac.unwrap().to_string(), "02:00:c0:a8:14:fe");
        assert_eq!(r.link("k8s-w0").unwrap().master.as_deref(), Some("br20"));
    }

    #[test]
    fn commands_name_everything_with_the_prefix() {
        let p = Plan::new(&Topology::study());
        for l in p.netns_add_lines("fl-x-") {
            assert!(l.starts_with("netns add fl-x-"), "{l}");
        }
        let v = p.veth_lines("fl-x-");
        assert_eq!(
            v[0],
            "link add name eth0 index 10 netns fl-x-k8s-m address 02:00:c0:a8:0a:0a mtu 1500 \
             type veth peer name k8s-m index 11 netns fl-x-k8s-rtr address 02:01:c0:a8:0a:0a \
             mtu 1500"
        );
        for l in &v {
            assert_eq!(l.matches(" netns fl-x-").count(), 2, "{l}");
        }
        let script = p.ns("k8s-w1").unwrap().config_script(true);
        assert!(script.contains("w ipv4/conf/caliw1p1/proxy_arp 1"));
        assert!(script.contains("w ipv4/neigh/caliw1p1/proxy_delay 0"));
        assert!(script.contains("ethtool -K caliw1p2 gro off tso off gso off tx off rx off"));
        assert!(script.contains("w ipv4/ip_forward 1"));
        assert!(p
            .ns("k8s-w1-pod1")
            .unwrap()
            .config_script(true)
            .contains("ip_forward 0"));
    }

    #[test]
    fn pod_routes_option_routes_blocks_via_nodes() {
        let mut spec = Topology::study().spec().clone();
        spec.router.pod_routes = true;
        let p = Plan::new(&Topology::from_spec(spec).unwrap());
        let routes: Vec<String> = p
            .ns("k8s-rtr")
            .unwrap()
            .routes
            .iter()
            .map(super::RoutePlan::args)
            .collect();
        assert!(routes.contains(&"172.16.34.0/26 via 192.168.20.100 dev br20".to_string()));
        assert_eq!(routes.len(), 4);
    }
}
