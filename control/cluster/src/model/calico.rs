//! The Calico kinds Ferry reads (`projectcalico.org/v3`; `crd.projectcalico.org/v1` is accepted
//! too): IPPool, FelixConfiguration, NetworkPolicy and GlobalNetworkPolicy, with their load-time
//! checks.

use super::common::{effective_types, prefix, prefixes, ObjectMeta, PolicyType};
use crate::selector::{Selector, SelectorError};
use pipeline::tables::{EncapMode, Ipv4Prefix, PoolSpec};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;

/// `IPPool`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpPool {
    pub metadata: ObjectMeta,
    pub spec: IpPoolSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(deserialize_with = "prefix")]
    pub cidr: Ipv4Prefix,
    #[serde(default = "default_block_size")]
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    /// A Calico selector over node labels, `all()` by default.
    #[serde(default = "default_node_selector")]
    pub node_selector: String,
    #[serde(default)]
    pub disabled: bool,
}

fn default_block_size() -> u8 {
    26
}

fn default_node_selector() -> String {
    "all()".to_string()
}

impl IpPool {
    /// The settings the dataplane's tables take.
    pub fn to_pool_spec(&self) -> PoolSpec {
        PoolSpec {
            cidr: self.spec.cidr,
            ipip_mode: self.spec.ipip_mode,
            vxlan_mode: self.spec.vxlan_mode,
            nat_outgoing: self.spec.nat_outgoing,
            disabled: self.spec.disabled,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let s = &self.spec;
        if !(20..=32).contains(&s.block_size) {
            return Err(format!(
                "spec.blockSize: {} is outside 20..=32",
                s.block_size
            ));
        }
        if s.cidr.len > s.block_size {
            return Err(format!(
                "spec.cidr: {} is smaller than one /{} block (spec.blockSize)",
                s.cidr, s.block_size
            ));
        }
        if s.ipip_mode != EncapMode::Never && s.vxlan_mode != EncapMode::Never {
            return Err(format!(
                "spec.ipipMode/spec.vxlanMode: only one may be enabled (ipipMode {:?}, vxlanMode {:?})",
                s.ipip_mode, s.vxlan_mode
            ));
        }
        if s.node_selector.trim().is_empty() {
            return Err("spec.nodeSelector: empty (use \"all()\")".into());
        }
        check_selector("spec.nodeSelector", &s.node_selector)
    }

    /// The pool's node selector, parsed (validated at load, so this only fails for a pool that
    /// was built by hand).
    pub fn node_selector(&self) -> Result<Selector, SelectorError> {
        Selector::parse(&self.spec.node_selector)
    }
}

/// `FelixConfiguration`: the dataplane knobs Ferry honours. Absent fields keep Felix's
/// defaults, given by the accessor methods.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FelixConfiguration {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: FelixConfigurationSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FelixConfigurationSpec {
    #[serde(default)]
    pub wireguard_enabled: Option<bool>,
    #[serde(default)]
    pub wireguard_listening_port: Option<u16>,
    #[serde(default, rename = "wireguardMTU")]
    pub wireguard_mtu: Option<u16>,
    #[serde(default, rename = "vxlanMTU")]
    pub vxlan_mtu: Option<u16>,
    #[serde(default, rename = "ipipMTU")]
    pub ipip_mtu: Option<u16>,
    #[serde(default, rename = "vxlanVNI")]
    pub vxlan_vni: Option<u32>,
    #[serde(default)]
    pub vxlan_port: Option<u16>,
}

impl FelixConfigurationSpec {
    pub fn wireguard_enabled(&self) -> bool {
        self.wireguard_enabled.unwrap_or(false)
    }
    pub fn wireguard_listening_port(&self) -> u16 {
        self.wireguard_listening_port.unwrap_or(51820)
    }
    pub fn vxlan_vni(&self) -> u32 {
        self.vxlan_vni.unwrap_or(4096)
    }
    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port.unwrap_or(4789)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(v) = self.vxlan_vni {
            if v == 0 || v >= 1 << 24 {
                return Err(format!("spec.vxlanVNI: {v} is outside 1..=16777215"));
            }
        }
        for (field, v) in [
            ("wireguardListeningPort", self.wireguard_listening_port),
            ("vxlanPort", self.vxlan_port),
        ] {
            if v == Some(0) {
                return Err(format!("spec.{field}: 0 is outside 1..=65535"));
            }
        }
        for (field, v) in [
            ("wireguardMTU", self.wireguard_mtu),
            ("vxlanMTU", self.vxlan_mtu),
            ("ipipMTU", self.ipip_mtu),
        ] {
            if let Some(m) = v {
                if m != 0 && m < 576 {
                    return Err(format!("spec.{field}: {m} is below the IPv4 minimum 576"));
                }
            }
        }
        Ok(())
    }
}

/// Checks a Calico selector at `field`, naming the field in the error.
fn check_selector(field: &str, text: &str) -> Result<(), String> {
    Selector::parse(text)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

/// Calico `NetworkPolicy` (namespaced) and `GlobalNetworkPolicy` (cluster-wide).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CalicoPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CalicoPolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoPolicySpec {
    /// Lower orders apply first; absent orders apply last.
    #[serde(default)]
    pub order: Option<f64>,
    /// A Calico selector over endpoints; empty means `all()`.
    #[serde(default)]
    pub selector: String,
    /// GlobalNetworkPolicy only: a Calico selector over namespaces.
    #[serde(default)]
    pub namespace_selector: Option<String>,
    /// As written; see [`CalicoPolicySpec::effective_types`].
    #[serde(default)]
    pub types: Vec<PolicyType>,
    #[serde(default)]
    pub ingress: Vec<CalicoRule>,
    #[serde(default)]
    pub egress: Vec<CalicoRule>,
}

impl CalicoPolicySpec {
    pub fn effective_types(&self) -> Vec<PolicyType> {
        effective_types(&self.types, !self.egress.is_empty())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(o) = self.order {
            if !o.is_finite() {
                return Err(format!("spec.order: {o} is not a finite number"));
            }
        }
        check_selector("spec.selector", &self.selector)?;
        if let Some(ns) = &self.namespace_selector {
            check_selector("spec.namespaceSelector", ns)?;
        }
        for (dir, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            for (i, r) in rules.iter().enumerate() {
                r.validate(&format!("spec.{dir}[{i}]"))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// A Calico rule protocol: a name (`TCP`, `UDP`, `ICMP`, `SCTP`, `UDPLite`, any case) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalicoProtocol {
    Tcp,
    Udp,
    Icmp,
    Sctp,
    UdpLite,
    Number(u8),
}

impl CalicoProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            CalicoProtocol::Tcp => 6,
            CalicoProtocol::Udp => 17,
            CalicoProtocol::Icmp => 1,
            CalicoProtocol::Sctp => 132,
            CalicoProtocol::UdpLite => 136,
            CalicoProtocol::Number(n) => n,
        }
    }

    /// Whether rules with this protocol may name ports.
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }
}

impl<'de> Deserialize<'de> for CalicoProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = CalicoProtocol;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("TCP, UDP, ICMP, SCTP, UDPLite or a protocol number 0..=255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CalicoProtocol, E> {
                u8::try_from(v)
                    .map(CalicoProtocol::Number)
                    .map_err(|_| E::custom(format!("protocol {v} is outside 0..=255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CalicoProtocol, E> {
                Err(E::custom(format!("protocol {v} is outside 0..=255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CalicoProtocol, E> {
                Ok(match v.to_ascii_lowercase().as_str() {
                    "tcp" => CalicoProtocol::Tcp,
                    "udp" => CalicoProtocol::Udp,
                    "icmp" => CalicoProtocol::Icmp,
                    "sctp" => CalicoProtocol::Sctp,
                    "udplite" => CalicoProtocol::UdpLite,
                    _ => return Err(E::custom(format!("unknown protocol {v:?}"))),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A Calico port: `80`, `"8080:8090"` or a named port `"http"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalicoPort {
    Range(u16, u16),
    Named(String),
}

impl<'de> Deserialize<'de> for CalicoPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = CalicoPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number, a range \"lo:hi\" or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CalicoPort, E> {
                u16::try_from(v)
                    .map(|p| CalicoPort::Range(p, p))
                    .map_err(|_| E::custom(format!("port {v} is outside 0..=65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CalicoPort, E> {
                Err(E::custom(format!("port {v} is outside 0..=65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CalicoPort, E> {
                let num = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| E::custom(format!("{s:?} in {v:?} is not a port number")))
                };
                if let Some((lo, hi)) = v.split_once(':') {
                    let (lo, hi) = (num(lo)?, num(hi)?);
                    if lo > hi {
                        return Err(E::custom(format!("port range {v:?} is backwards")));
                    }
                    Ok(CalicoPort::Range(lo, hi))
                } else if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
                    num(v).map(|p| CalicoPort::Range(p, p))
                } else if v.is_empty() {
                    Err(E::custom("empty port name"))
                } else {
                    Ok(CalicoPort::Named(v.to_string()))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalicoRule {
    pub action: Action,
    #[serde(default)]
    pub protocol: Option<CalicoProtocol>,
    #[serde(default)]
    pub not_protocol: Option<CalicoProtocol>,
    #[serde(default)]
    pub source: EntityRule,
    #[serde(default)]
    pub destination: EntityRule,
}

impl CalicoRule {
    fn validate(&self, path: &str) -> Result<(), String> {
        for (side, e) in [("source", &self.source), ("destination", &self.destination)] {
            for (field, sel) in [
                ("selector", &e.selector),
                ("notSelector", &e.not_selector),
                ("namespaceSelector", &e.namespace_selector),
            ] {
                if let Some(sel) = sel {
                    check_selector(&format!("{path}.{side}.{field}"), sel)?;
                }
            }
            if !e.ports.is_empty() || !e.not_ports.is_empty() {
                let ok = self.protocol.is_some_and(CalicoProtocol::has_ports);
                if !ok {
                    return Err(format!(
                        "{path}.{side}.ports: needs protocol TCP, UDP, SCTP or UDPLite"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A rule's `source` or `destination`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub not_selector: Option<String>,
    #[serde(default)]
    pub namespace_selector: Option<String>,
    #[serde(default, deserialize_with = "prefixes")]
    pub nets: Vec<Ipv4Prefix>,
    #[serde(default, deserialize_with = "prefixes")]
    pub not_nets: Vec<Ipv4Prefix>,
    #[serde(default)]
    pub ports: Vec<CalicoPort>,
    #[serde(default)]
    pub not_ports: Vec<CalicoPort>,
}
