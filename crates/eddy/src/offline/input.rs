//! The events file of `eddy test`: one JSON object per line, either a
//! record as Kafka would hand it over, or a bare event envelope.
//!
//! A record: `{"topic", "partition"?, "offset"?, "key"?, "headers"?,
//! "value"}`. `value` is an object (written as its JSON text), a string (the
//! record's bytes as they are: a malformed record is written this way) or
//! `null` (no value). A line without `value` is an envelope, the record's
//! whole value on the default topic; one with `specversion` is a CloudEvent
//! in structured mode, so its record says so in `content-type`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use serde_json::{Map, Value};

/// One event of the file, as the record the consumer would have handed on.
pub struct Input {
    /// Its line in the file, 1-based.
    pub line: usize,
    pub record: OwnedMessage,
}

const RECORD_FIELDS: [&str; 6] = ["topic", "partition", "offset", "key", "headers", "value"];

/// Reads the events file at `path`. Records without a topic, and bare
/// envelopes, go to `default_topic`. Offsets not given count up from 0 per
/// partition.
pub fn read(path: &Path, default_topic: &str) -> anyhow::Result<Vec<Input>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the events file {}", path.display()))?;
    let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut inputs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {number}", path.display());
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{} is not JSON", at()))?;
        let Value::Object(object) = value else {
            bail!(
                "{} is not a JSON object: write a record {{\"topic\", \"value\", …}} \
                 or an event envelope",
                at()
            );
        };
        let record = if object.contains_key("value") {
            record(object, default_topic, &mut next_offsets).with_context(at)?
        } else {
            envelope(object, default_topic, &mut next_offsets)
        };
        inputs.push(Input {
            line: number,
            record,
        });
    }
    Ok(inputs)
}

/// A line in the record form.
fn record(
    object: Map<String, Value>,
    default_topic: &str,
    next_offsets: &mut HashMap<(String, i32), i64>,
) -> anyhow::Result<OwnedMessage> {
    if let Some(unknown) = object.keys().find(|k| !RECORD_FIELDS.contains(&k.as_str())) {
        bail!(
            "unknown field {unknown:?}: a record has {}",
            RECORD_FIELDS.join(", ")
        );
    }
    let topic = match object.get("topic") {
        None => default_topic.to_string(),
        Some(Value::String(topic)) if !topic.is_empty() => topic.clone(),
        Some(other) => bail!("topic must be a non-empty string, not {other}"),
    };
    let partition = match object.get("partition") {
        None => 0,
        Some(value) => value
            .as_u64()
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("partition must be a number from 0, not {value}"))?,
    };
    let offset = match object.get("offset") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|o| i64::try_from(o).ok())
                .with_context(|| format!("offset must be a number from 0, not {value}"))?,
        ),
    };
    let key = match object.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) => Some(key.clone().into_bytes()),
        Some(other) => bail!("key must be a string or null, not {other}"),
    };
    let mut headers = OwnedHeaders::new();
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let value = match value {
                    Value::Null => None,
                    Value::String(text) => Some(text.as_str()),
                    other => bail!("header {name:?} must be a string or null, not {other}"),
                };
                headers = headers.insert(Header { key: name, value });
            }
        }
        Some(other) => bail!("headers must be an object of strings, not {other}"),
    }
    let payload = match &object["value"] {
        Value::Null => None,
        Value::String(raw) => Some(raw.clone().into_bytes()),
        json => Some(json.to_string().into_bytes()),
    };
    let offset = place(next_offsets, &topic, partition, offset);
    Ok(OwnedMessage::new(
        payload,
        key,
        topic,
        Timestamp::NotAvailable,
        partition,
        offset,
        Some(headers),
    ))
}

/// A line that is an event envelope: the value of a record on
/// `default_topic`, partition 0.
fn envelope(
    object: Map<String, Value>,
    default_topic: &str,
    next_offsets: &mut HashMap<(String, i32), i64>,
) -> OwnedMessage {
    let headers = object.contains_key("specversion").then(|| {
        OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        })
    });
    let offset = place(next_offsets, default_topic, 0, None);
    OwnedMessage::new(
        Some(Value::Object(object).to_string().into_bytes()),
        None,
        default_topic.to_string(),
        Timestamp::NotAvailable,
        0,
        offset,
        headers,
    )
}

/// The record's offset: `given`, or the one after the partition's last.
fn place(
    next_offsets: &mut HashMap<(String, i32), i64>,
    topic: &str,
    partition: i32,
    given: Option<i64>,
) -> i64 {
    let next = next_offsets
        .entry((topic.to_string(), partition))
        .or_insert(0);
    let offset = given.unwrap_or(*next);
    *next = offset + 1;
    offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Message;
    use rdkafka::message::Headers;

    fn read_text(text: &str) -> anyhow::Result<Vec<Input>> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static FILES: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "eddy-input-{}-{}.jsonl",
            std::process::id(),
            FILES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text)?;
        let inputs = read(&path, "in");
        std::fs::remove_file(&path)?;
        inputs
    }

    #[test]
    fn records_and_envelopes_become_records() {
        let inputs = read_text(concat!(
            r#"{"event_id": "1", "event_type": "a"}"#,
            "\n\n",
            r#"{"topic": "t", "partition": 2, "key": "k", "headers": {"h": "v", "n": null}, "value": "not json"}"#,
            "\n",
            r#"{"specversion": "1.0", "id": "2", "type": "b", "source": "s"}"#,
            "\n",
            r#"{"topic": "t", "partition": 2, "offset": 40, "value": null}"#,
            "\n",
            r#"{"topic": "t", "partition": 2, "value": {"x": 1}}"#,
            "\n",
        ))
        .unwrap();
        let lines: Vec<usize> = inputs.iter().map(|i| i.line).collect();
        assert_eq!(lines, [1, 3, 4, 5, 6]);
        let first = &inputs[0].record;
        assert_eq!(
            (first.topic(), first.partition(), first.offset()),
            ("in", 0, 0)
        );
        let raw = &inputs[1].record;
        assert_eq!((raw.topic(), raw.partition(), raw.offset()), ("t", 2, 0));
        assert_eq!(raw.payload(), Some(&b"not json"[..]));
        assert_eq!(raw.key(), Some(&b"k"[..]));
        let headers = raw.headers().unwrap();
        assert_eq!(headers.count(), 2);
        assert_eq!(headers.get(1).value, None);
        let cloud_event = &inputs[2].record;
        assert_eq!(cloud_event.offset(), 1);
        let content_type = cloud_event.headers().unwrap().get(0);
        assert_eq!(content_type.key, "content-type");
        assert_eq!(inputs[3].record.offset(), 40);
        assert_eq!(inputs[3].record.payload(), None);
        assert_eq!(inputs[4].record.offset(), 41);
        assert_eq!(inputs[4].record.payload(), Some(&br#"{"x":1}"#[..]));
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let cases = [
            ("{\"event_id\": \"1\"}\n{oops\n", "line 2 is not JSON"),
            ("[1, 2]\n", "line 1 is not a JSON object"),
            (
                "{\"value\": {}, \"partiton\": 1}\n",
                "unknown field \"partiton\"",
            ),
            ("{\"value\": {}, \"key\": 5}\n", "key must be a string"),
            (
                "{\"value\": {}, \"partition\": -1}\n",
                "partition must be a number",
            ),
        ];
        for (text, wanted) in cases {
            let error = format!("{:#}", read_text(text).err().unwrap());
            assert!(error.contains(wanted), "{error:?} does not say {wanted:?}");
        }
    }
}
