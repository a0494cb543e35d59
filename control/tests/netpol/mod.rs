//! Network policy cases modelled on the upstream Kubernetes e2e tests
//! (test/e2e/network/netpol/network_policy.go): namespaces x, y, z (labelled `ns: NAME`) with
//! pods a, b, c (labelled `pod: NAME`), each serving 80 and 81 over TCP and UDP on the named
//! ports `serve-80-tcp`, `serve-80-udp`, `serve-81-tcp`, `serve-81-udp`.
//!
//! Each case is the policies' YAML and, per probed port, the expected truth table written out
//! the way the e2e tests' `reachability.Expect…` calls do. A pod always reaches itself
//! (loopback never leaves the pod; e2e's `AllowLoopback`). Shared so that a lab test can run the
//! same cases against the real dataplane (`#[path = "netpol/mod.rs"] mod netpol;`).
#![allow(dead_code)]

use std::collections::BTreeMap;

pub(crate) const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub(crate) const PODS: [&str; 3] = ["a", "b", "c"];

/// The address of pod `ns/pod`: 10.0.{1,2,3}.{1,2,3}.
pub(crate) fn pod_ip(ns: &str, pod: &str) -> String {
    let n = NAMESPACES.iter().position(|x| *x == ns).expect("namespace") + 1;
    let p = PODS.iter().position(|x| *x == pod).expect("pod") + 1;
    format!("10.0.{n}.{p}")
}

/// Namespaces and pods of every case.
pub(crate) fn cluster_yaml() -> String {
    let mut s = String::new();
    for ns in NAMESPACES {
        s += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        );
        for pod in PODS {
            s += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\n\
                 spec:\n  containers:\n"
            );
            for port in [80, 81] {
                for proto in ["TCP", "UDP"] {
                    let l = proto.to_lowercase();
                    s += &format!(
                        "  - name: cont-{port}-{l}\n    ports: [{{name: serve-{port}-{l}, containerPort: {port}, protocol: {proto}}}]\n"
                    );
                }
            }
            s += &format!("status: {{podIP: {}}}\n---\n", pod_ip(ns, pod));
        }
    }
    s
}

/// The expected reachability for one port: every (from, to) pod pair.
#[derive(Debug, Clone)]
pub(crate) struct Reachability {
    pub port: u16,
    pub protocol: &'static str,
    pub expected: BTreeMap<(String, String), bool>,
}

fn all_pods() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

/// `*`, `x/*`, `*/a` or `x/a`.
fn matches(pattern: &str, pod: &str) -> bool {
    let (pn, pp) = pattern.split_once('/').unwrap_or(("*", "*"));
    let (n, p) = pod.split_once('/').expect("ns/pod");
    (pn == "*" || pn == n) && (pp == "*" || pp == p)
}

impl Reachability {
    /// Every pair `default`.
    pub(crate) fn new(port: u16, protocol: &'static str, default: bool) -> Self {
        let mut expected = BTreeMap::new();
        for f in all_pods() {
            for t in all_pods() {
                expected.insert((f.clone(), t), default);
            }
        }
        Reachability {
            port,
            protocol,
            expected,
        }
    }

    /// Sets every pair whose source matches `from` and destination matches `to` (patterns:
    /// `*`, `x/*`, `*/a`, `x/a`). Later calls override earlier ones.
    pub(crate) fn expect(mut self, from: &str, to: &str, allowed: bool) -> Self {
        for ((f, t), v) in &mut self.expected {
            if matches(from, f) && matches(to, t) {
                *v = allowed;
            }
        }
        self
    }

    /// The table with loopback allowed.
    pub(crate) fn with_loopback(&self) -> BTreeMap<(String, String), bool> {
        let mut m = self.expected.clone();
        for ((f, t), v) in &mut m {
            if f == t {
                *v = true;
            }
        }
        m
    }
}

/// One case.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub name: &'static str,
    /// The upstream e2e test it is modelled on (or what it checks).
    pub about: &'static str,
    pub policies: String,
    pub probes: Vec<Reachability>,
}

fn r(port: u16, protocol: &'static str) -> Reachability {
    Reachability::new(port, protocol, true)
}

const K: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n";
const C: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n";
const G: &str = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n";

/// A Kubernetes NetworkPolicy `ns/name` with the given `spec` (YAML flow mapping body).
fn np(ns: &str, name: &str, spec: &str) -> String {
    format!("{K}metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

fn cnp(ns: &str, name: &str, spec: &str) -> String {
    format!("{C}metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

fn gnp(name: &str, spec: &str) -> String {
    format!("{G}metadata: {{name: {name}}}\nspec: {spec}\n---\n")
}

/// The study's three policies (control/tests/manifests/study/05-policies.yaml), in namespace x.
pub(crate) fn study_policy(name: &str) -> String {
    let text = include_str!("../manifests/study/05-policies.yaml");
    let doc = text
        .split("---")
        .find(|d| d.contains(&format!("name: {name}")))
        .expect("study policy");
    doc.replace("metadata:\n", "metadata:\n  namespace: x\n")
        .trim()
        .to_string()
        + "\n---\n"
}

const A: &str = "podSelector: {matchLabels: {pod: a}}";

pub(crate) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "no-policy",
            about: "without policies every pod reaches every pod",
            policies: String::new(),
            probes: vec![r(80, "TCP"), r(81, "UDP")],
        },
        Case {
            name: "deny-all-ingress",
            about: "should support a 'default-deny-ingress' policy",
            policies: np("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}"),
            probes: vec![r(80, "TCP").expect("*", "x/*", false)],
        },
        Case {
            name: "deny-all-egress",
            about: "should enforce egress policy denying all egress (policyTypes Egress)",
            policies: np("x", "deny-all-egress", "{podSelector: {}, policyTypes: [Egress]}"),
            probes: vec![r(80, "TCP").expect("x/*", "*", false)],
        },
        Case {
            name: "deny-all-both",
            about: "should support a 'default-deny-all' policy",
            policies: np("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
            probes: vec![r(80, "TCP")
                .expect("x/*", "*", false)
                .expect("*", "x/*", false)],
        },
        Case {
            name: "allow-all-ingress",
            about: "should support allow-all policy (ingress: [{}]) next to a default deny",
            policies: np("x", "deny-all", "{podSelector: {}, policyTypes: [Ingress]}")
                + &np("x", "allow-all", "{podSelector: {}, ingress: [{}]}"),
            probes: vec![r(80, "TCP"), r(81, "UDP")],
        },
        Case {
            name: "allow-same-namespace",
            about: "should enforce policy to allow traffic from pods within server namespace based on PodSelector {}",
            policies: np("x", "allow-same-ns", "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"),
            probes: vec![r(80, "TCP")
                .expect("*", "x/*", false)
                .expect("x/*", "x/*", true)],
        },
        Case {
            name: "allow-from-namespace-by-label",
            about: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            policies: np("x", "allow-ns-y", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("y/*", "x/a", true)],
        },
        Case {
            name: "pod-and-namespace-selector",
            about: "should enforce policy based on PodSelector and NamespaceSelector (one peer: AND)",
            policies: np("x", "allow-y-b", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("y/b", "x/a", true)],
        },
        Case {
            name: "pod-or-namespace-selector",
            about: "should enforce policy based on PodSelector or NamespaceSelector (two peers: OR)",
            policies: np("x", "allow-y-or-b", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}, {{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("y/*", "x/a", true)
                .expect("x/b", "x/a", true)],
        },
        Case {
            name: "ingress-ipblock-except",
            about: "should enforce except clause while ingress access from a CIDR block (pod IPs match ipBlock)",
            policies: np("x", "allow-cidr", &format!("{{{A}, ingress: [{{from: [{{ipBlock: {{cidr: 10.0.2.0/24, except: [10.0.2.2/32]}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("y/a", "x/a", true)
                .expect("y/c", "x/a", true)],
        },
        Case {
            name: "named-port-ingress",
            about: "should allow ingress access on one named port",
            policies: np("x", "allow-81", "{podSelector: {}, ingress: [{ports: [{port: serve-81-tcp}]}]}"),
            probes: vec![r(80, "TCP").expect("*", "x/*", false), r(81, "TCP"), r(81, "UDP").expect("*", "x/*", false)],
        },
        Case {
            name: "port-81-from-namespace",
            about: "should allow ingress access from namespace on one named port (numeric port 81 from ns y)",
            policies: np("x", "allow-y-81", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81}]}]}"),
            probes: vec![
                r(80, "TCP").expect("*", "x/*", false),
                r(81, "TCP").expect("*", "x/*", false).expect("y/*", "x/*", true),
            ],
        },
        Case {
            name: "endport-ingress",
            about: "should support policy with endPort field (81..=90)",
            policies: np("x", "allow-81-90", "{podSelector: {}, ingress: [{ports: [{protocol: TCP, port: 81, endPort: 90}]}]}"),
            probes: vec![
                r(80, "TCP").expect("*", "x/*", false),
                r(81, "TCP"),
                r(90, "TCP"),
                r(91, "TCP").expect("*", "x/*", false),
            ],
        },
        Case {
            name: "endport-egress",
            about: "should enforce egress policy with endPort (79..=80)",
            policies: np("x", "egress-79-80", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 79, endPort: 80}]}]}"),
            probes: vec![r(80, "TCP"), r(81, "TCP").expect("x/*", "*", false)],
        },
        Case {
            name: "egress-to-specific-pod",
            about: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
            policies: np("x", "a-to-y-b", &format!("{{{A}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("x/a", "*", false)
                .expect("x/a", "y/b", true)],
        },
        Case {
            name: "policy-types-egress-only",
            about: "policyTypes [Egress] ignores the ingress rules: the pod is not isolated for ingress",
            policies: np("x", "egress-only", &format!("{{{A}, policyTypes: [Egress], ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: c}}}}}}]}}], egress: [{{to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("x/a", "*", false)
                .expect("x/a", "x/b", true)],
        },
        Case {
            name: "policy-types-default",
            about: "without policyTypes a policy with egress rules is Ingress and Egress: no ingress rules = deny all ingress",
            policies: np("x", "egress-all", &format!("{{{A}, egress: [{{}}]}}")),
            probes: vec![r(80, "TCP").expect("*", "x/a", false)],
        },
        Case {
            name: "multiple-policies-union",
            about: "should enforce multiple, stacked policies with overlapping podSelectors (union)",
            policies: np("x", "from-b", &format!("{{{A}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"))
                + &np("x", "from-y", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("x/b", "x/a", true)
                .expect("y/*", "x/a", true)],
        },
        Case {
            name: "stacked-allow-all-wins",
            about: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
            policies: np("x", "only-80", &format!("{{{A}, ingress: [{{ports: [{{port: 80}}]}}]}}"))
                + &np("x", "allow-all", &format!("{{{A}, ingress: [{{}}]}}")),
            probes: vec![r(80, "TCP"), r(81, "TCP")],
        },
        Case {
            name: "ingress-port-81-only",
            about: "should enforce policy to allow ingress traffic for a target on port 81 only",
            policies: np("x", "only-81", &format!("{{{A}, ingress: [{{ports: [{{port: 81, protocol: TCP}}]}}]}}")),
            probes: vec![r(80, "TCP").expect("*", "x/a", false), r(81, "TCP")],
        },
        Case {
            name: "udp-any-port",
            about: "should enforce ingress policy allowing any port traffic to a server on a specific protocol (UDP, no port)",
            policies: np("x", "udp-only", "{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}"),
            probes: vec![r(80, "TCP").expect("*", "x/*", false), r(80, "UDP"), r(81, "UDP")],
        },
        Case {
            name: "tcp-not-udp",
            about: "a TCP port rule does not allow UDP on the same port",
            policies: np("x", "tcp-80", "{podSelector: {}, ingress: [{ports: [{port: 80, protocol: TCP}]}]}"),
            probes: vec![r(80, "TCP"), r(80, "UDP").expect("*", "x/*", false)],
        },
        Case {
            name: "any-namespace-pod-b",
            about: "namespaceSelector {} with podSelector: the pods of every namespace",
            policies: np("x", "from-any-b", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("*/b", "x/a", true)],
        },
        Case {
            name: "pod-selector-same-namespace",
            about: "a peer with only podSelector means pods of the policy's namespace",
            policies: np("x", "from-b", &format!("{{{A}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("x/b", "x/a", true)],
        },
        Case {
            name: "namespace-match-expressions",
            about: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector [MatchExpressions]",
            policies: np("x", "not-x", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [x]}}]}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("y/*", "x/a", true)
                .expect("z/*", "x/a", true)],
        },
        Case {
            name: "pod-match-expressions",
            about: "should enforce policy based on PodSelector with MatchExpressions",
            policies: np("x", "b-or-c", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("*/b", "x/a", true)
                .expect("*/c", "x/a", true)],
        },
        Case {
            name: "namespace-by-metadata-name",
            about: "namespaceSelector on the kubernetes.io/metadata.name label Kubernetes sets",
            policies: np("x", "from-z", &format!("{{{A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: z}}}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("*", "x/a", false)
                .expect("z/*", "x/a", true)],
        },
        Case {
            name: "egress-ipblock",
            about: "should allow egress access to server in CIDR block",
            policies: np("x", "a-to-z-cidr", &format!("{{{A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.0.3.0/24}}}}]}}]}}")),
            probes: vec![r(80, "TCP")
                .expect("x/a", "*", false)
                .expect("x/a", "z/*", true)],
        },
        Case {
            name: "egress-ipblock-except",
            about: "should enforce except clause while egress access to server in CIDR block",
            policies: np("x", "a-not-z", &format!("{{{A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/16, except: [10.0.3.0/24]}}}}]}}]}}")),
            probes: vec![r(80, "TCP").expect("x/a", "z/*", false)],
        },
        Case {
            name: "egress-named-port",
            about: "should allow egress access on one named port (resolved per destination pod)",
            policies: np("x", "egress-81-udp", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]}"),
            probes: vec![
                r(81, "UDP"),
                r(80, "UDP").expect("x/*", "*", false),
                r(81, "TCP").expect("x/*", "*", false),
            ],
        },
        Case {
            name: "both-sides-must-allow",
            about: "the sender's egress and the receiver's ingress must both allow",
            policies: np("y", "egress-to-z", "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}")
                + &np("x", "from-y", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]}"),
            probes: vec![r(80, "TCP")
                .expect("y/*", "*", false)
                .expect("y/*", "z/*", true)
                .expect("*", "x/*", false)],
        },
        Case {
            name: "empty-from-with-port",
            about: "a rule without from (all sources) limited to port 80",
            policies: np("x", "any-80", &format!("{{{A}, ingress: [{{from: [], ports: [{{port: 80}}]}}]}}")),
            probes: vec![r(80, "TCP"), r(81, "TCP").expect("*", "x/a", false)],
        },
        Case {
            name: "selects-no-pod",
            about: "a policy whose podSelector matches nothing isolates nothing",
            policies: np("x", "nobody", "{podSelector: {matchLabels: {pod: nope}}, policyTypes: [Ingress, Egress]}"),
            probes: vec![r(80, "TCP")],
        },
        Case {
            name: "egress-deny-ingress-elsewhere",
            about: "should deny egress from all pods in a namespace while other namespaces are untouched",
            policies: np("z", "deny-egress", "{podSelector: {}, policyTypes: [Egress]}")
                + &np("x", "allow-from-all", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}]}]}"),
            probes: vec![r(80, "TCP").expect("z/*", "*", false)],
        },
        // The study's three policies (in namespace x).
        Case {
            name: "study-deny-all",
            about: "study 05-policies.yaml: deny-all-networkpolicy",
            policies: study_policy("deny-all-networkpolicy"),
            probes: vec![r(80, "TCP")
                .expect("x/*", "*", false)
                .expect("*", "x/*", false)],
        },
        Case {
            name: "study-deny-all-and-allow-all",
            about: "study 05-policies.yaml: deny-all plus allow-all-networkpolicy (union: all allowed)",
            policies: study_policy("deny-all-networkpolicy") + &study_policy("allow-all-networkpolicy"),
            probes: vec![r(80, "TCP"), r(81, "UDP")],
        },
        Case {
            name: "study-deny-all-and-cloud",
            about: "study 05-policies.yaml: deny-all plus cloud-networkpolicy (egress all, ingress none)",
            policies: study_policy("deny-all-networkpolicy") + &study_policy("cloud-networkpolicy"),
            probes: vec![r(80, "TCP").expect("*", "x/*", false)],
        },
        // Calico on top.
        Case {
            name: "calico-deny-before-k8s-allow",
            about: "a Calico policy (order 100) denies ns y before a Kubernetes allow-all; unmatched traffic goes on to the Kubernetes policies",
            policies: np("x", "allow-all", "{podSelector: {}, ingress: [{}]}")
                + &cnp("x", "deny-y", "{order: 100, selector: all(), types: [Ingress], ingress: [{action: Deny, source: {namespaceSelector: \"ns == 'y'\"}}]}"),
            probes: vec![r(80, "TCP").expect("y/*", "x/*", false)],
        },
        Case {
            name: "calico-pass-to-k8s",
            about: "a GlobalNetworkPolicy passes ns y to the Kubernetes tier and denies the rest",
            policies: gnp("x-ingress", "{order: 10, selector: \"projectcalico.org/namespace == 'x'\", types: [Ingress], ingress: [{action: Pass, source: {namespaceSelector: \"ns == 'y'\"}}, {action: Deny}]}")
                + &np("x", "from-any-b", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]}"),
            probes: vec![r(80, "TCP")
                .expect("*", "x/*", false)
                .expect("y/b", "x/*", true)],
        },
        Case {
            name: "calico-global-namespace-selector",
            about: "a GlobalNetworkPolicy with selector all() and namespaceSelector isolates ns z; its source selector spans all namespaces",
            policies: gnp("z-from-a", "{selector: all(), namespaceSelector: \"ns == 'z'\", ingress: [{action: Allow, source: {selector: \"pod == 'a'\"}}]}"),
            probes: vec![r(80, "TCP")
                .expect("*", "z/*", false)
                .expect("*/a", "z/*", true)],
        },
        Case {
            name: "calico-order",
            about: "lower order first: deny pod c (order 100) before allow all (order 200); a namespaced policy's rule selector stays in its namespace",
            policies: cnp("x", "allow-all", "{order: 200, selector: all(), ingress: [{action: Allow}]}")
                + &cnp("x", "deny-c", "{order: 100, selector: all(), ingress: [{action: Deny, source: {selector: \"pod == 'c'\"}}]}"),
            probes: vec![r(80, "TCP").expect("x/c", "x/*", false)],
        },
        Case {
            name: "calico-pass-without-k8s",
            about: "Pass with no Kubernetes policy allows; no match at the end of the Calico tier denies",
            policies: gnp("egress-udp-pass", "{selector: all(), types: [Egress], egress: [{action: Log}, {action: Pass, protocol: UDP}]}"),
            probes: vec![r(80, "UDP"), r(80, "TCP").expect("*", "*", false)],
        },
        Case {
            name: "calico-nets-ports",
            about: "Calico egress rule with protocol, destination nets, notNets and ports",
            policies: cnp("x", "a-egress", "{selector: \"pod == 'a'\", types: [Egress], egress: [{action: Allow, protocol: TCP, destination: {nets: [10.0.0.0/16], notNets: [10.0.2.0/24], ports: [81]}}]}"),
            probes: vec![
                r(81, "TCP")
                    .expect("x/a", "*", false)
                    .expect("x/a", "x/*", true)
                    .expect("x/a", "z/*", true),
                r(80, "TCP").expect("x/a", "*", false),
            ],
        },
        Case {
            name: "calico-log-then-deny-udp",
            about: "Log continues; Deny UDP; Allow the rest",
            policies: gnp("deny-udp", "{order: 1, selector: all(), ingress: [{action: Log}, {action: Deny, protocol: UDP}, {action: Allow}]}"),
            probes: vec![r(80, "TCP"), r(80, "UDP").expect("*", "*", false)],
        },
    ]
}
