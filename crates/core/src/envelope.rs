//! The event envelope on the wire: decoding records in the three formats the
//! services write, and encoding follow-ups as plain JSON.
//!
//! Detection, per record:
//! 1. a `ce_specversion` header: CloudEvents binary (headers carry the
//!    attributes, the value is the data);
//! 2. a `content-type` header starting with `application/cloudevents`
//!    (any case): CloudEvents structured;
//! 3. otherwise plain JSON, as the Python bus writes it. A JSON object with
//!    `specversion` and no `event_type` is read as structured CloudEvents too,
//!    for producers that leave out the content type.
//!
//! Anything else is a [`DecodeError`] whose text is the dead-letter reason.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::Event;

/// Why a record is not an event. The text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

/// Decodes one record. `headers` are the record's headers in order.
pub fn decode<'a>(
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Result<Event, DecodeError> {
    let mut content_type = None;
    let mut ce_headers = Vec::new();
    for (name, header_value) in headers {
        let text = header_value.and_then(|v| std::str::from_utf8(v).ok());
        if name.eq_ignore_ascii_case("content-type") {
            content_type = text;
        } else if let Some(attribute) = name.strip_prefix("ce_") {
            let text = text.ok_or_else(|| {
                DecodeError::new(format!("CloudEvents header {name} is not UTF-8 text"))
            })?;
            ce_headers.push((attribute, text));
        }
    }
    if ce_headers.iter().any(|(a, _)| *a == "specversion") {
        return decode_binary(value, &ce_headers, content_type);
    }
    let value = value.ok_or_else(|| DecodeError::new("record has no value (null)"))?;
    let structured = content_type.is_some_and(|ct| {
        ct.get(..23)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/cloudevents"))
    });
    if structured {
        let object: Map<String, Value> = serde_json::from_slice(value).map_err(|e| {
            DecodeError::new(format!(
                "CloudEvents structured value is not a JSON object: {e}"
            ))
        })?;
        return decode_structured(object);
    }
    decode_plain(value)
}

/// The plain-JSON envelope as the Python services write it.
#[derive(Deserialize)]
struct PlainIn<'a> {
    event_id: Option<String>,
    event_type: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, Value>>,
    aggregate_id: Option<String>,
    aggregate_type: Option<String>,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    command_name: Option<String>,
    reply_to: Option<String>,
    timeout_ms: Option<u64>,
    /// Only looked at to recognise CloudEvents sent without a content type.
    specversion: Option<&'a RawValue>,
}

fn decode_plain(value: &[u8]) -> Result<Event, DecodeError> {
    let text = std::str::from_utf8(value)
        .map_err(|e| DecodeError::new(format!("value is not UTF-8 text: {e}")))?;
    let first = text.trim_start().chars().next();
    if first != Some('{') {
        return Err(DecodeError::new(
            match serde_json::from_str::<&RawValue>(text) {
                Ok(_) => "value is JSON but not an object, so not an event envelope".to_string(),
                Err(e) => format!("value is not JSON: {e}"),
            },
        ));
    }
    let wire: PlainIn = serde_json::from_str(text).map_err(|e| {
        DecodeError::new(match e.classify() {
            serde_json::error::Category::Data => format!("value is not an event envelope: {e}"),
            _ => format!("value is not JSON: {e}"),
        })
    })?;
    if wire.specversion.is_some() && wire.event_type.is_none() {
        let object: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| DecodeError::new(format!("value is not JSON: {e}")))?;
        return decode_structured(object);
    }
    let event_type = required(wire.event_type, "event_type")?;
    let event_id = required(wire.event_id, "event_id")?;
    Ok(Event {
        event_id,
        event_type,
        timestamp: wire.timestamp.unwrap_or_default(),
        service_name: wire.service_name.unwrap_or_default(),
        version: wire.version.unwrap_or_else(default_version),
        data: wire
            .data
            .map_or_else(|| "null".to_string(), |d| d.get().to_string()),
        metadata: wire
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, text_of(v)))
            .collect(),
        aggregate_id: wire.aggregate_id,
        aggregate_type: wire.aggregate_type,
        correlation_id: wire.correlation_id,
        causation_id: wire.causation_id,
        command_name: wire.command_name,
        reply_to: wire.reply_to,
        timeout_ms: wire.timeout_ms,
    })
}

fn required(field: Option<String>, name: &str) -> Result<String, DecodeError> {
    match field {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(DecodeError::new(format!(
            "value is not an event envelope: {name} is missing or empty"
        ))),
    }
}

fn default_version() -> String {
    "1.0".to_string()
}

/// Metadata and extension values are strings; anything else keeps its JSON text.
fn text_of(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Envelope fields that travel as CloudEvents extension attributes.
const EXTENSIONS: &[&str] = &[
    "aggregateid",
    "aggregatetype",
    "correlationid",
    "causationid",
    "commandname",
    "replyto",
    "timeoutms",
    "eventversion",
];

/// Attributes with a meaning of their own that are not carried into metadata.
const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "datacontenttype",
    "dataschema",
];

/// Builds an event from CloudEvents attributes (already as strings) and data.
fn from_attributes(
    attributes: BTreeMap<String, String>,
    data: String,
    format: &str,
) -> Result<Event, DecodeError> {
    for required in ["specversion", "id", "source", "type"] {
        if attributes.get(required).is_none_or(|v| v.is_empty()) {
            return Err(DecodeError::new(format!(
                "CloudEvents {format} event lacks the required attribute {required:?}"
            )));
        }
    }
    if attributes["specversion"] != "1.0" {
        return Err(DecodeError::new(format!(
            "CloudEvents specversion {:?} is not supported; use \"1.0\"",
            attributes["specversion"]
        )));
    }
    let get = |name: &str| attributes.get(name).cloned();
    let timeout_ms = match get("timeoutms") {
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            DecodeError::new(format!(
                "CloudEvents extension timeoutms {t:?} is not a number"
            ))
        })?),
        None => None,
    };
    let metadata = attributes
        .iter()
        .filter(|(k, _)| !CONTEXT_ATTRIBUTES.contains(&k.as_str()))
        .filter(|(k, _)| !EXTENSIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Event {
        event_id: attributes["id"].clone(),
        event_type: attributes["type"].clone(),
        timestamp: get("time").unwrap_or_default(),
        service_name: attributes["source"].clone(),
        version: get("eventversion").unwrap_or_else(default_version),
        data,
        metadata,
        aggregate_id: get("aggregateid"),
        aggregate_type: get("aggregatetype"),
        correlation_id: get("correlationid"),
        causation_id: get("causationid"),
        command_name: get("commandname"),
        reply_to: get("replyto"),
        timeout_ms,
    })
}

fn decode_structured(mut object: Map<String, Value>) -> Result<Event, DecodeError> {
    if object.contains_key("data_base64") {
        return Err(DecodeError::new(
            "CloudEvents structured event carries data_base64; only JSON data is supported",
        ));
    }
    let data = object.remove("data").unwrap_or(Value::Null).to_string();
    let attributes = object.into_iter().map(|(k, v)| (k, text_of(v))).collect();
    from_attributes(attributes, data, "structured")
}

fn decode_binary(
    value: Option<&[u8]>,
    ce_headers: &[(&str, &str)],
    content_type: Option<&str>,
) -> Result<Event, DecodeError> {
    let mut attributes: BTreeMap<String, String> = ce_headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(ct) = content_type {
        attributes.insert("datacontenttype".into(), ct.to_string());
    }
    let data = match value {
        None => "null".to_string(),
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|e| {
                DecodeError::new(format!("CloudEvents binary data is not UTF-8 text: {e}"))
            })?;
            match serde_json::from_str::<&RawValue>(text) {
                Ok(json) => json.get().to_string(),
                Err(_) => Value::String(text.to_string()).to_string(),
            }
        }
    };
    from_attributes(attributes, data, "binary")
}

/// A follow-up as the plain JSON the Python services read.
#[derive(Serialize)]
struct PlainOut<'a> {
    event_id: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    service_name: &'a str,
    version: &'a str,
    data: &'a RawValue,
    metadata: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// Encodes `event` as plain JSON. Fails when `data` is not JSON text.
pub fn encode_plain(event: &Event) -> Result<Vec<u8>, String> {
    let data: &RawValue = serde_json::from_str(&event.data)
        .map_err(|e| format!("data of {} is not JSON: {e}", event.event_type))?;
    let out = PlainOut {
        event_id: &event.event_id,
        event_type: &event.event_type,
        timestamp: &event.timestamp,
        service_name: &event.service_name,
        version: &event.version,
        data,
        metadata: event
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        aggregate_id: event.aggregate_id.as_deref(),
        aggregate_type: event.aggregate_type.as_deref(),
        correlation_id: event.correlation_id.as_deref(),
        causation_id: event.causation_id.as_deref(),
        command_name: event.command_name.as_deref(),
        reply_to: event.reply_to.as_deref(),
        timeout_ms: event.timeout_ms,
    };
    serde_json::to_vec(&out).map_err(|e| format!("cannot encode {}: {e}", event.event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{
        "event_id": "0192f0c4-1111-7000-8000-000000000001",
        "event_type": "user.created",
        "timestamp": "2026-11-26T10:00:00Z",
        "service_name": "user-service",
        "version": "1.0",
        "data": {"user_id": "u-1", "email": "ada@example.com", "name": "Ada"},
        "metadata": {"source": "seed", "attempt": 1},
        "aggregate_id": "u-1",
        "aggregate_type": "User",
        "correlation_id": null
    }"#;

    fn no_headers() -> Vec<(&'static str, Option<&'static [u8]>)> {
        Vec::new()
    }

    #[test]
    fn plain_json_as_the_python_bus_writes_it() {
        let event = decode(Some(SEED.as_bytes()), no_headers()).unwrap();
        assert_eq!(event.event_type, "user.created");
        assert_eq!(event.service_name, "user-service");
        assert_eq!(event.aggregate_id.as_deref(), Some("u-1"));
        assert_eq!(event.correlation_id, None);
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["email"], "ada@example.com");
        assert!(event.metadata.contains(&("attempt".into(), "1".into())));
    }

    #[test]
    fn plain_json_round_trips() {
        let event = decode(Some(SEED.as_bytes()), no_headers()).unwrap();
        let bytes = encode_plain(&event).unwrap();
        let again = decode(Some(&bytes), no_headers()).unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn cloudevents_structured() {
        let value = br#"{"specversion":"1.0","id":"ce-1","type":"user.created",
            "source":"user-service","time":"2026-11-26T10:00:00Z",
            "datacontenttype":"application/json","aggregateid":"u-1","traceparent":"00-x",
            "data":{"user_id":"u-1"}}"#;
        let headers = [(
            "Content-Type",
            Some(&b"application/CloudEvents+json; charset=utf-8"[..]),
        )];
        let event = decode(Some(value), headers).unwrap();
        assert_eq!(event.event_id, "ce-1");
        assert_eq!(event.event_type, "user.created");
        assert_eq!(event.service_name, "user-service");
        assert_eq!(event.aggregate_id.as_deref(), Some("u-1"));
        assert_eq!(event.data, r#"{"user_id":"u-1"}"#);
        assert_eq!(
            event.metadata,
            [("traceparent".to_string(), "00-x".to_string())]
        );
    }

    #[test]
    fn cloudevents_binary() {
        let headers = [
            ("ce_specversion", Some(&b"1.0"[..])),
            ("ce_id", Some(&b"ce-2"[..])),
            ("ce_type", Some(&b"user.deleted"[..])),
            ("ce_source", Some(&b"user-service"[..])),
            ("ce_correlationid", Some(&b"corr-9"[..])),
            ("content-type", Some(&b"application/json"[..])),
        ];
        let event = decode(Some(br#"{"user_id":"u-2"}"#), headers).unwrap();
        assert_eq!(event.event_type, "user.deleted");
        assert_eq!(event.correlation_id.as_deref(), Some("corr-9"));
        assert_eq!(event.data, r#"{"user_id":"u-2"}"#);
    }

    #[test]
    fn bad_records_say_why() {
        let cases: &[(Option<&[u8]>, &str)] = &[
            (None, "no value"),
            (Some(b"not json"), "not JSON"),
            (Some(b"{oops"), "not JSON"),
            (Some(b"[1,2]"), "not an object"),
            (Some(b"{\"event_type\": \"x\"}"), "event_id is missing"),
            (
                Some(b"{\"event_id\": \"1\", \"event_type\": 5}"),
                "not an event envelope",
            ),
            (Some(b"\xff\xfe"), "not UTF-8"),
            (
                Some(b"{\"specversion\": \"1.0\", \"id\": \"1\"}"),
                "required attribute \"source\"",
            ),
        ];
        for (value, expected) in cases {
            let err = decode(*value, no_headers()).unwrap_err();
            assert!(err.to_string().contains(expected), "{value:?}: {err}");
        }
    }

    #[test]
    fn follow_ups_need_json_data() {
        let mut event = decode(Some(SEED.as_bytes()), no_headers()).unwrap();
        event.data = "{not json".into();
        assert!(encode_plain(&event).unwrap_err().contains("not JSON"));
    }

    mod arbitrary {
        use proptest::prelude::*;

        use super::*;

        /// Header names the decoder looks at, and some it does not.
        fn header_name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("content-type".to_string()),
                Just("ce_specversion".to_string()),
                Just("ce_id".to_string()),
                Just("ce_type".to_string()),
                Just("ce_source".to_string()),
                Just("ce_time".to_string()),
                "ce_[a-z]{0,12}",
                ".{0,16}",
            ]
        }

        /// Values: anything, JSON-ish text, and envelopes with wrong types.
        fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                Just(None),
                proptest::collection::vec(any::<u8>(), 0..256).prop_map(Some),
                "[{}\\[\\]\":,a-z0-9 ]{0,64}".prop_map(|s| Some(s.into_bytes())),
                (any::<bool>(), ".{0,8}", 0i64..10).prop_map(|(b, s, n)| {
                    Some(
                        format!(
                            r#"{{"event_id": {}, "event_type": "{s}", "data": {n}, "specversion": {b}}}"#,
                            if b { format!("{n}") } else { format!("{s:?}") }
                        )
                        .into_bytes(),
                    )
                }),
            ]
        }

        proptest! {
            #[test]
            fn any_record_decodes_or_says_why(
                value in value(),
                headers in proptest::collection::vec(
                    (header_name(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32))),
                    0..6,
                ),
            ) {
                let headers: Vec<(&str, Option<&[u8]>)> =
                    headers.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
                match decode(value.as_deref(), headers) {
                    Ok(event) => {
                        prop_assert!(!event.event_id.is_empty());
                        prop_assert!(!event.event_type.is_empty());
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}
