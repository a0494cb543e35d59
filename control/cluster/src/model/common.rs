//! Pieces both APIs share: metadata, IPv4 prefixes as fields, ports, label selectors, policy
//! types.

use pipeline::tables::Ipv4Prefix;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// `metadata`: what Ferry keeps of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    /// Namespaced kinds get `default` when it is absent; cluster-scoped kinds ignore it.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// Prefixes parsed inside the scalar's visitor, so that `serde_yaml` reports the field's own path
/// (`spec.cidr: …`) rather than its parent's.
struct PrefixVisitor;

impl de::Visitor<'_> for PrefixVisitor {
    type Value = Ipv4Prefix;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an IPv4 prefix a.b.c.d/len")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ipv4Prefix, E> {
        v.parse().map_err(E::custom)
    }
}

struct PrefixDe(Ipv4Prefix);

impl<'de> Deserialize<'de> for PrefixDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(PrefixVisitor).map(PrefixDe)
    }
}

pub(super) fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Prefix, D::Error> {
    d.deserialize_str(PrefixVisitor)
}

pub(super) fn prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ipv4Prefix>, D::Error> {
    Ok(Vec::<PrefixDe>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// A Kubernetes port protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

/// A port given as a number or as a container port's name (`port: 80` / `port: http`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(u16),
    Name(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (1..=65535) or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                match u16::try_from(v) {
                    Ok(p) if p > 0 => Ok(IntOrString::Int(p)),
                    _ => Err(E::custom(format!("port {v} is outside 1..=65535"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Err(E::custom(format!("port {v} is outside 1..=65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                if v.is_empty() {
                    return Err(E::custom("empty port name"));
                }
                Ok(IntOrString::Name(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed). Empty selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let got = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => got.is_some_and(|g| e.values.contains(g)),
                    SelectorOperator::NotIn => !got.is_some_and(|g| e.values.contains(g)),
                    SelectorOperator::Exists => got.is_some(),
                    SelectorOperator::DoesNotExist => got.is_none(),
                }
            })
    }

    /// Whether it selects everything (`{}`).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub(super) fn validate(&self, path: &str) -> Result<(), String> {
        for (i, e) in self.match_expressions.iter().enumerate() {
            let has_values = !e.values.is_empty();
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if !has_values => {
                    return Err(format!(
                        "{path}.matchExpressions[{i}].values: must be non-empty for {:?}",
                        e.operator
                    ))
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if has_values => {
                    return Err(format!(
                        "{path}.matchExpressions[{i}].values: must be empty for {:?}",
                        e.operator
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Ingress / Egress, as both Kubernetes and Calico spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// Both APIs: without explicit types, a policy is Ingress, plus Egress if it has egress rules.
pub(super) fn effective_types(given: &[PolicyType], has_egress: bool) -> Vec<PolicyType> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut t = vec![PolicyType::Ingress];
    if has_egress {
        t.push(PolicyType::Egress);
    }
    t
}
