//! Manifest text → objects: the two passes over a multi-document YAML (or JSON) stream, `kind:
//! List` documents, defaulting and validation.

use super::errors::{LoadError, Origin, Warning};
use super::object::{Kind, Located, Object, Parsed};
use serde::de::Deserializer;
use serde::Deserialize;
use serde_yaml::Value;

/// `apiVersion`, `kind` and `metadata.name` of a document, read before the typed pass.
fn header(v: &Value) -> Result<(String, String, Option<String>), String> {
    let Value::Mapping(_) = v else {
        return Err("a manifest document must be a mapping".into());
    };
    let field = |k: &str| match v.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{k}: must be a string")),
        None => Err(format!("{k}: missing")),
    };
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((field("apiVersion")?, field("kind")?, name))
}

pub(super) fn decode<'de, D: Deserializer<'de>>(kind: Kind, d: D) -> Result<Object, D::Error> {
    fn t<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
    Ok(match kind {
        Kind::Node => Object::Node(t(d)?),
        Kind::Namespace => Object::Namespace(t(d)?),
        Kind::Pod => Object::Pod(t(d)?),
        Kind::Deployment => Object::Deployment(t(d)?),
        Kind::NetworkPolicy => Object::NetworkPolicy(t(d)?),
        Kind::IpPool => Object::IpPool(t(d)?),
        Kind::FelixConfiguration => Object::FelixConfiguration(t(d)?),
        Kind::CalicoNetworkPolicy => Object::CalicoNetworkPolicy(t(d)?),
        Kind::GlobalNetworkPolicy => Object::GlobalNetworkPolicy(t(d)?),
    })
}

/// A `serde_yaml` message without its trailing location (for re-parsed list items, whose lines
/// would not be the file's).
fn without_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match e.location() {
        Some(l) => s
            .strip_suffix(&format!(" at line {} column {}", l.line(), l.column()))
            .map_or(s.clone(), str::to_string),
        None => s,
    }
}

#[derive(Deserialize)]
struct ListDoc {
    #[serde(default)]
    items: Vec<Value>,
}

/// Parses a multi-document YAML (or JSON) stream. `origin` names it in errors and warnings.
pub fn parse_str(origin: &str, text: &str) -> Result<Parsed, LoadError> {
    let err = |document: Option<usize>, item: Option<usize>, object: Option<String>, m: String| {
        LoadError {
            file: origin.to_string(),
            document,
            item,
            object,
            message: m,
        }
    };
    // First pass: syntax, and each document's header.
    let mut values = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(d)
            .map_err(|e| err(Some(i + 1), None, None, format!("malformed YAML: {e}")))?;
        values.push(v);
    }
    let mut out = Parsed::default();
    // Second pass: typed, so that errors carry the field path and the line in the stream.
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let v = &values[i];
        if v.is_null() {
            continue; // an empty document (`---` at the end, comments only)
        }
        let (api, kind_name, name) = header(v).map_err(|m| err(Some(doc), None, None, m))?;
        let what = Some(match &name {
            Some(n) => format!("{kind_name} {n}"),
            None => kind_name.clone(),
        });
        if kind_name == "List" || kind_name.ends_with("List") && api == "v1" {
            let list = ListDoc::deserialize(d)
                .map_err(|e| err(Some(doc), None, what.clone(), e.to_string()))?;
            for (j, item) in list.items.iter().enumerate() {
                let (api, kind_name, name) = header(item)
                    .map_err(|m| err(Some(doc), Some(j), None, format!("items[{j}].{m}")))?;
                let what = Some(match &name {
                    Some(n) => format!("{kind_name} {n}"),
                    None => kind_name.clone(),
                });
                let Some(kind) = Kind::of(&api, &kind_name) else {
                    out.warnings
                        .push(skipped(origin, doc, &api, &kind_name, &name));
                    continue;
                };
                // Through text again so that the error has the field path.
                let text = serde_yaml::to_string(item).expect("a Value serialises");
                let de = serde_yaml::Deserializer::from_str(&text);
                let object = decode(kind, de)
                    .map_err(|e| err(Some(doc), Some(j), what.clone(), without_location(&e)))?;
                out.objects.push(
                    finish(object, origin, doc, Some(j))
                        .map_err(|m| err(Some(doc), Some(j), what.clone(), m))?,
                );
            }
            continue;
        }
        let Some(kind) = Kind::of(&api, &kind_name) else {
            out.warnings
                .push(skipped(origin, doc, &api, &kind_name, &name));
            continue;
        };
        let object =
            decode(kind, d).map_err(|e| err(Some(doc), None, what.clone(), e.to_string()))?;
        out.objects.push(
            finish(object, origin, doc, None).map_err(|m| err(Some(doc), None, what.clone(), m))?,
        );
    }
    Ok(out)
}

fn skipped(origin: &str, doc: usize, api: &str, kind: &str, name: &Option<String>) -> Warning {
    Warning {
        file: origin.to_string(),
        document: Some(doc),
        message: format!(
            "skipped {kind} {} ({api}): not a kind Ferry reads",
            name.as_deref().unwrap_or("(unnamed)")
        ),
    }
}

/// The object finished ([`Object::finish`]) with where it came from.
fn finish(
    mut object: Object,
    file: &str,
    document: usize,
    item: Option<usize>,
) -> Result<Located, String> {
    object.finish()?;
    Ok(Located {
        origin: Origin {
            file: file.to_string(),
            document,
            item,
        },
        object,
    })
}
