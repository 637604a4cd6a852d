//! The AsyncAPI 3.0 document of a region's topic, generated from the code: one message per
//! CloudEvents type ([`EventType`]), its headers from [`super::headers`], its payload the
//! JSON Schema that schemars derives from the domain's event types (draft-07, the dialect
//! AsyncAPI schemas extend), narrowed to the type's `stream` and `type` values.
//!
//! Served at `/asyncapi.json` and committed as `docs/reference/asyncapi.json`
//! (`stockflow asyncapi`, checked for drift by `scripts/generate.sh --check`); the
//! official AsyncAPI parser validates it in `scripts/asyncapi-check.sh`.

use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};
use stockflow_domain::cloudevent::{DATA_CONTENT_TYPE, SPEC_VERSION, Stream};
use stockflow_domain::{
    CatalogEvent, EventType, ID_PATTERN, PolicyEvent, StockEvent, default_topic,
};

use super::headers;

/// Where the schemas live in the document; schemars writes its `$ref`s against it.
const SCHEMAS: &str = "/components/schemas";
/// The one channel: the region's topic.
const CHANNEL: &str = "stockEvents";
/// Version of the Kafka bindings object used.
const KAFKA_BINDING: &str = "0.5.0";

/// The document.
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = SCHEMAS.into();
    // What we write, not what we would accept: fields always written are required.
    settings.contract = Contract::Serialize;
    settings.meta_schema = None;
    let mut generator = settings.into_generator();
    let stock = generator.subschema_for::<StockEvent>().to_value();
    let catalog = generator.subschema_for::<CatalogEvent>().to_value();
    let policy = generator.subschema_for::<PolicyEvent>().to_value();
    let schemas = generator.take_definitions(true);

    let mut messages = Map::new();
    let mut channel_messages = Map::new();
    let mut operation_messages = Vec::new();
    for t in EventType::all() {
        let name = t.as_str();
        let (data, summary) = match t.stream() {
            Stream::Stock(kind) => (&stock, variant_description(&schemas, kind.as_str())),
            Stream::Catalog => (&catalog, description(&schemas, "CatalogEvent")),
            Stream::Policy => (&policy, description(&schemas, "PolicyEvent")),
        };
        messages.insert(name.to_string(), message(t, data, summary));
        channel_messages.insert(
            name.to_string(),
            json!({"$ref": format!("#/components/messages/{name}")}),
        );
        operation_messages.push(json!({
            "$ref": format!("#/channels/{CHANNEL}/messages/{}", pointer_escape(name))
        }));
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "stockflow events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every applied change to stock, catalog or policy, published once \
                per change (at least once on the wire: a republished event keeps its id) to \
                the region's topic, as a CloudEvents 1.0 event in the Kafka binding's binary \
                content mode: the record value is the event's JSON (the message payload), the \
                context attributes are `ce_*` headers. The record key is the SKU, so one \
                SKU's events keep their order in one partition. Consumers deduplicate on \
                `ce_source` + `ce_id` and apply an event only if its `version` is newer than \
                the one they hold for its subject.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": DATA_CONTENT_TYPE,
        "channels": {
            CHANNEL: {
                "address": default_topic("{region}"),
                "title": "Stock events of one region",
                "description": "One topic per region; the name is the default a region's \
                    topic gets (`--bus-topic` chooses another).",
                "parameters": {
                    "region": {"description": "The region id."},
                },
                "messages": channel_messages,
            },
        },
        "operations": {
            "publishStockEvents": {
                "action": "send",
                "channel": {"$ref": format!("#/channels/{CHANNEL}")},
                "summary": "The publisher moves each committed change from the outbox to the \
                    topic.",
                "messages": operation_messages,
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
        },
    })
}

/// The message of type `t`, whose data is the `data` schema (a `$ref`).
fn message(t: EventType, data: &Value, summary: Option<String>) -> Value {
    let mut discriminators = Map::new();
    discriminators.insert("stream".into(), json!({"const": t.stream().as_str()}));
    if let Stream::Stock(kind) = t.stream() {
        discriminators.insert("type".into(), json!({"const": kind.as_str()}));
    }
    let required: Vec<&String> = discriminators.keys().collect();
    let payload = json!({
        "allOf": [
            data,
            {"type": "object", "required": required, "properties": discriminators},
        ],
    });
    let mut message = json!({
        "name": t.as_str(),
        "title": t.as_str(),
        "contentType": DATA_CONTENT_TYPE,
        "headers": header_schema(t),
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": "The SKU: every event of one SKU lands in one partition.",
                    "pattern": ID_PATTERN,
                },
                "bindingVersion": KAFKA_BINDING,
            },
        },
    });
    if let (Some(summary), Some(object)) = (summary, message.as_object_mut()) {
        object.insert("summary".into(), Value::String(summary));
    }
    message
}

/// The record headers of type `t`: the CloudEvents attributes and the trace context.
fn header_schema(t: EventType) -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    let subject = format!("The event's subject: `{}`.", t.subject_form());
    json!({
        "type": "object",
        "required": headers::REQUIRED,
        "properties": {
            headers::SPECVERSION: {
                "const": SPEC_VERSION,
                "description": "CloudEvents `specversion`.",
            },
            headers::ID: string(
                "CloudEvents `id`: the event id, the same on every republish of the event.",
            ),
            headers::SOURCE: {
                "type": "string",
                "format": "uri-reference",
                "description": "CloudEvents `source`: `/stockflow/regions/{region}` for stock \
                    changes, `/stockflow/catalog` and `/stockflow/policies` for SKU-wide ones.",
            },
            headers::TYPE: {"const": t.as_str(), "description": "CloudEvents `type`."},
            headers::SUBJECT: string(&subject),
            headers::TIME: {
                "type": "string",
                "format": "date-time",
                "description": "CloudEvents `time`: when the change was decided (RFC 3339, \
                    UTC).",
            },
            headers::CONTENT_TYPE: {
                "const": DATA_CONTENT_TYPE,
                "description": "CloudEvents `datacontenttype`.",
            },
            headers::CE_TRACEPARENT: {
                "type": "string",
                "description": "The distributed tracing extension: the W3C `traceparent` \
                    of the change, when it has one: the store write's span where the region \
                    exports traces, else the causing request's header as it was sent.",
            },
            headers::TRACEPARENT: {
                "type": "string",
                "description": "The same trace context under its W3C name, for OpenTelemetry's \
                    Kafka instrumentation.",
            },
        },
    })
}

/// The description schemars took from the doc comment of type `name`.
fn description(schemas: &Map<String, Value>, name: &str) -> Option<String> {
    schemas
        .get(name)?
        .get("description")?
        .as_str()
        .map(str::to_string)
}

/// The doc comment of the [`stockflow_domain::EventKind`] spelled `kind`.
fn variant_description(schemas: &Map<String, Value>, kind: &str) -> Option<String> {
    schemas
        .get("EventKind")?
        .get("oneOf")?
        .as_array()?
        .iter()
        .find(|variant| variant.get("const").and_then(Value::as_str) == Some(kind))?
        .get("description")?
        .as_str()
        .map(str::to_string)
}

/// `name` as one JSON Pointer token (RFC 6901).
fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_a_message_of_the_channel_with_its_headers_and_payload() {
        let doc = document();
        for t in EventType::all() {
            let name = t.as_str();
            let message = &doc["components"]["messages"][name];
            assert_eq!(message["name"], name);
            assert!(
                message["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{name} has a summary from the doc comments"
            );
            assert_eq!(
                message["headers"]["properties"]["ce_type"]["const"], name,
                "{name}"
            );
            assert_eq!(
                doc["channels"][CHANNEL]["messages"][name]["$ref"],
                format!("#/components/messages/{name}")
            );
            let ops = doc["operations"]["publishStockEvents"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(ops.iter().any(|m| {
                m["$ref"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!("/messages/{name}")))
            }));
        }
        assert_eq!(
            doc["channels"][CHANNEL]["address"],
            "stockflow-{region}-stock-events"
        );
    }

    #[test]
    fn every_reference_resolves_inside_the_document() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(refs.len() > 20, "the document uses references: {refs:?}");
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or(&r);
            assert!(doc.pointer(pointer).is_some(), "{r} points nowhere");
        }
    }

    #[test]
    fn stock_payloads_name_their_stream_and_kind() {
        let doc = document();
        let payload = &doc["components"]["messages"]["dev.stockflow.stock.adjusted.v1"]["payload"];
        assert_eq!(
            payload["allOf"][0]["$ref"],
            "#/components/schemas/StockEvent"
        );
        assert_eq!(
            payload["allOf"][1]["properties"]["stream"]["const"],
            "stock"
        );
        assert_eq!(
            payload["allOf"][1]["properties"]["type"]["const"],
            "stock_adjusted"
        );
        let sku = &doc["components"]["schemas"]["Sku"];
        assert_eq!(sku["pattern"], ID_PATTERN);
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
