//! The events as a document: an [AsyncAPI 3](https://www.asyncapi.com/docs/reference/specification/v3.0.0)
//! description of the `TICKETING` stream, built from the payload types themselves, so
//! that the picture of who publishes and who consumes what cannot drift from the code.
//! `docs/asyncapi.yaml` is this document; a test fails when they differ.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::{
    ExpirationComplete, OrderCancelled, OrderCreated, PaymentCreated, SessionRevoked, Subject,
    TicketCreated, TicketUpdated,
};

/// The JSON Schema of a subject's payload, with every reference inlined.
pub fn payload_schema(subject: Subject) -> Value {
    match subject {
        Subject::TicketCreated => inlined::<TicketCreated>(),
        Subject::TicketUpdated => inlined::<TicketUpdated>(),
        Subject::OrderCreated => inlined::<OrderCreated>(),
        Subject::OrderCancelled => inlined::<OrderCancelled>(),
        Subject::ExpirationComplete => inlined::<ExpirationComplete>(),
        Subject::PaymentCreated => inlined::<PaymentCreated>(),
        Subject::SessionRevoked => inlined::<SessionRevoked>(),
    }
}

fn inlined<T: ToSchema>() -> Value {
    let mut referenced: Vec<(String, RefOr<Schema>)> = Vec::new();
    T::schemas(&mut referenced);
    let named: BTreeMap<String, Value> = referenced
        .into_iter()
        .map(|(name, schema)| (name, to_value(&schema)))
        .collect();
    inline(to_value(&T::schema()), &named)
}

fn to_value(schema: &RefOr<Schema>) -> Value {
    // A schema always serialises.
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// Replaces `{"$ref": "#/components/schemas/Name"}` by the schema `Name`.
fn inline(value: Value, named: &BTreeMap<String, Value>) -> Value {
    match value {
        Value::Object(object) => {
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| named.get(name));
            match target {
                Some(schema) => inline(schema.clone(), named),
                None => Value::Object(
                    object
                        .into_iter()
                        .map(|(key, value)| (key, inline(value, named)))
                        .collect(),
                ),
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|v| inline(v, named)).collect()),
        other => other,
    }
}

/// `ticket.created` → `ticketCreated`.
fn camel(subject: Subject) -> String {
    let mut name = String::new();
    let mut upper = false;
    for c in subject.as_str().chars() {
        if c == '.' {
            upper = true;
        } else if upper {
            name.extend(c.to_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    name
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The AsyncAPI 3 document of the stream.
pub fn asyncapi() -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    for subject in Subject::ALL {
        let name = camel(subject);
        let schema = payload_schema(subject);
        let summary = schema
            .get("description")
            .cloned()
            .unwrap_or_else(|| json!(subject.as_str()));
        channels.insert(
            name.clone(),
            json!({
                "address": subject.as_str(),
                "description": format!("Published by {}. {}", subject.publisher(), subject.effects()),
                "messages": { name.clone(): { "$ref": format!("#/components/messages/{name}") } },
            }),
        );
        operations.insert(
            format!("{}Publishes{}", subject.publisher(), capitalised(&name)),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{name}") },
                "summary": format!("{} appends it to its outbox in the transaction of the change it announces; the relay publishes it.", subject.publisher()),
            }),
        );
        for consumer in subject.consumers() {
            operations.insert(
                format!("{consumer}Consumes{}", capitalised(&name)),
                json!({
                    "action": "receive",
                    "channel": { "$ref": format!("#/channels/{name}") },
                    "summary": format!("Durable consumer `{}` handles it once in effect.", super::durable_name(consumer, subject)),
                }),
            );
        }
        messages.insert(
            name,
            json!({
                "name": subject.as_str(),
                "summary": summary,
                "contentType": "application/json",
                "headers": {
                    "type": "object",
                    "required": ["Nats-Msg-Id"],
                    "properties": {
                        "Nats-Msg-Id": {
                            "type": "string",
                            "description": "The event id: JetStream drops a copy published within its duplicate window, and consumers record it to handle the event once.",
                        },
                        "Ticketing-Appended-At": {
                            "type": "string",
                            "pattern": "^[0-9]+$",
                            "description": "When the event was appended to its publisher's outbox, in microseconds since the Unix epoch: consumers measure the event's lag from it (event_lag_seconds).",
                        },
                        "Nats-Batch-Id": {
                            "type": "string",
                            "description": "On events the relay published together as one atomic batch (NATS ADR-50), which JetStream stored whole: the batch's id. Consumers ignore it.",
                        },
                        "Nats-Batch-Sequence": {
                            "type": "string",
                            "pattern": "^[0-9]+$",
                            "description": "The event's place in its atomic batch, from 1.",
                        },
                        "Nats-Batch-Commit": {
                            "type": "string",
                            "description": "On the last event of an atomic batch: the one that committed it.",
                        },
                    },
                },
                "payload": schema,
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ticketing events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every event of the Ticketing services, on the one JetStream stream TICKETING. Generated from the payload types in `common::events` (see `common::events::schema`); do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "NATS with JetStream; stream TICKETING (file storage, 10-minute duplicate window).",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    })
}

/// A JSON value as YAML (block style; every string quoted, as JSON writes it).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(object) if !object.is_empty() => {
            for (key, value) in object {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                write_nested(value, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                write_nested(item, indent, out);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(object) if !object.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(value, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// A mapping key, bare when YAML reads it back as the same string.
fn yaml_key(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.$-".contains(c))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        key.to_owned()
    } else {
        Value::String(key.to_owned()).to_string()
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_schemas_name_their_fields_and_inline_references() {
        let schema = payload_schema(Subject::OrderCreated);
        let properties = schema["properties"].as_object().unwrap();
        let names: Vec<&str> = properties.keys().map(String::as_str).collect();
        for field in ["id", "version", "status", "userId", "expiresAt", "ticket"] {
            assert!(names.contains(&field), "{field} in {names:?}");
        }
        assert!(!schema.to_string().contains("$ref"), "{schema}");
        assert_eq!(
            properties["status"]["enum"],
            json!(["created", "cancelled", "awaiting:payment", "complete"])
        );
    }

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let yaml = to_yaml(&json!({"a": {"b": [1, "x"], "c": []}, "on": true}));
        assert_eq!(
            yaml,
            "a:\n  b:\n    - 1\n    - \"x\"\n  c: []\n\"on\": true\n"
        );
    }
}
