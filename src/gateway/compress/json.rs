//! Large JSON: the structure and its first items kept in their order, long arrays and
//! objects cut to their ends with a count, long strings shortened.

use super::lines::Out;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt::Write;

const ARRAY_HEAD: usize = 3;
const OBJECT_HEAD: usize = 24;
const STRING_MAX: usize = 240;
/// Deeper than this, a value is written compactly on one line.
const DEPTH_MAX: usize = 64;

/// A JSON value that keeps the order of its keys (serde_json's map sorts them).
enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    String(String),
    Other(String),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Other(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Other(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Other(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Other(serde_json::Value::from(v).to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Other("null".into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Node>()? {
                    entries.push((key, value));
                }
                Ok(Node::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes the condensed form, or returns `false` when `text` is not one JSON value.
pub fn filter(text: &str, out: &mut Out) -> bool {
    // serde_json's recursion limit stays on: a hostile document cannot overflow the stack.
    let mut deserializer = serde_json::Deserializer::from_str(text.trim());
    let Ok(node) = Node::deserialize(&mut deserializer) else {
        return false;
    };
    if deserializer.end().is_err() {
        return false;
    }
    let mut written = String::with_capacity(text.len() / 4);
    write(&node, 0, &mut written);
    out.line(&written);
    true
}

fn write(node: &Node, depth: usize, out: &mut String) {
    let pad = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth.min(DEPTH_MAX) {
            out.push_str("  ");
        }
    };
    match node {
        Node::Other(raw) => out.push_str(raw),
        Node::String(s) => {
            let shown = super::lines::truncate(s, STRING_MAX);
            out.push_str(&serde_json::Value::from(shown.as_ref()).to_string());
        }
        Node::Array(items) if items.is_empty() => out.push_str("[]"),
        Node::Object(entries) if entries.is_empty() => out.push_str("{}"),
        Node::Array(items) => {
            out.push('[');
            let cut = items.len() > ARRAY_HEAD + 2;
            for (i, item) in items.iter().enumerate() {
                if cut && i == ARRAY_HEAD {
                    pad(out, depth + 1);
                    let _ = write!(
                        out,
                        "\"[clutch: {} more items]\",",
                        items.len() - ARRAY_HEAD - 1
                    );
                }
                if cut && i >= ARRAY_HEAD && i + 1 < items.len() {
                    continue;
                }
                pad(out, depth + 1);
                write(item, depth + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
            }
            pad(out, depth);
            out.push(']');
        }
        Node::Object(entries) => {
            out.push('{');
            let cut = entries.len() > OBJECT_HEAD + 2;
            for (i, (key, value)) in entries.iter().enumerate() {
                if cut && i == OBJECT_HEAD {
                    pad(out, depth + 1);
                    let names: Vec<&str> = entries[OBJECT_HEAD..entries.len() - 1]
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .take(40)
                        .collect();
                    let _ = write!(
                        out,
                        "\"[clutch: {} more keys]\": {},",
                        entries.len() - OBJECT_HEAD - 1,
                        serde_json::Value::from(names.join(", "))
                    );
                }
                if cut && i >= OBJECT_HEAD && i + 1 < entries.len() {
                    continue;
                }
                pad(out, depth + 1);
                out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                out.push_str(": ");
                write(value, depth + 1, out);
                if i + 1 < entries.len() {
                    out.push(',');
                }
            }
            pad(out, depth);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_keep_their_ends_and_order() {
        let text = r#"{"z": 1, "a": [1, 2, 3, 4, 5, 6, 7], "s": "x"}"#;
        let mut out = Out::with_capacity(64);
        assert!(filter(text, &mut out));
        assert_eq!(
            out.into_string(),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2,\n    3,\n    \"[clutch: 3 more items]\",\n    7\n  ],\n  \"s\": \"x\"\n}"
        );
        assert!(!filter("not json", &mut Out::with_capacity(8)));
    }
}
