//! Reading a replay's records, and what a record is to a replay: which
//! filters it passes, and, for a dead letter, the original record it
//! stands for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::range::Span;
use eddy_core::envelope;
use eddy_core::routing;
use eddy_kafka::headers;

/// Reads `spans` of `topic`, each from its start to its end, handing each
/// record to `each` in partition order. Stops early (returning `false`)
/// when `stop` is raised or `each` says so.
pub fn read<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    spans: &[Span],
    stop: &AtomicBool,
    mut each: impl FnMut(OwnedMessage) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let mut assignment = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for span in spans.iter().filter(|s| s.len() > 0) {
        assignment.add_partition_offset(topic, span.partition, Offset::Offset(span.start))?;
        ends.insert(span.partition, span.end);
    }
    if ends.is_empty() {
        return Ok(true);
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("cannot read {topic}"))?;
    let mut said = None::<String>;
    while !ends.is_empty() {
        if stop.load(Ordering::Relaxed) {
            consumer.unassign()?;
            return Ok(false);
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else {
                    continue;
                };
                if message.offset() >= end {
                    ends.remove(&partition);
                    continue;
                }
                if message.offset() + 1 >= end {
                    ends.remove(&partition);
                }
                if !each(message.detach())? {
                    consumer.unassign()?;
                    return Ok(false);
                }
            }
            // The end of what can be read now: with read_committed, records
            // of transactions still open lie past it, and are not replayed.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            // The consumer resets no offset (`auto.offset.reset = error`): a
            // record of the range that is gone is an error, not a skip.
            Some(Err(e))
                if matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
                ) =>
            {
                consumer.unassign()?;
                bail!(
                    "{topic}: records of the range are no longer on the broker ({e}): retention \
                     deleted them, or the topic was made anew; plan the replay again"
                );
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if said.as_ref() != Some(&text) {
                    eprintln!("reading {topic}: {text}; trying again");
                    said = Some(text);
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(true)
}

/// What a record must match to be replayed; each filter is optional.
#[derive(Default)]
pub struct Filters {
    /// Exact or a glob with `*`.
    pub event_type: Option<String>,
    pub key: Option<String>,
    /// A dead letter's reason (the start of `eddy-error`).
    pub reason: Option<String>,
    /// A dead letter's `eddy-plugin`.
    pub plugin: Option<String>,
}

/// What a replay needs to know of one record it read.
pub struct Seen {
    /// Its event type, or why it has none.
    pub event_type: Result<String, String>,
    pub reason: Option<String>,
    pub plugin: Option<String>,
    /// A dead letter an earlier replay wrote (`eddy-replayed`).
    pub replayed: bool,
}

impl Seen {
    pub fn of(record: &OwnedMessage) -> Seen {
        // A record in the Confluent wire format is an event after its frame.
        let (_, value) = eddy_schema::unframe(record.payload());
        let decoded = envelope::decode(value, headers::text_named(record.headers()));
        let header = |name: &str| text_header(record.headers(), name);
        Seen {
            event_type: decoded.map(|e| e.event_type).map_err(|e| e.to_string()),
            reason: header("eddy-error")
                .map(|error| error.split(':').next().unwrap_or_default().to_string()),
            plugin: header("eddy-plugin").filter(|p| !p.is_empty()),
            replayed: header("eddy-replayed").is_some(),
        }
    }
}

impl Filters {
    pub fn pass(&self, record: &OwnedMessage, seen: &Seen) -> bool {
        let event_type_passes = self.event_type.as_ref().is_none_or(|pattern| {
            seen.event_type
                .as_ref()
                .is_ok_and(|t| routing::glob_match(pattern, t))
        });
        let key_passes = self
            .key
            .as_ref()
            .is_none_or(|key| record.key() == Some(key.as_bytes()));
        let reason_passes = self
            .reason
            .as_ref()
            .is_none_or(|r| seen.reason.as_ref() == Some(r));
        let plugin_passes = self
            .plugin
            .as_ref()
            .is_none_or(|p| seen.plugin.as_ref() == Some(p));
        event_type_passes && key_passes && reason_passes && plugin_passes
    }
}

/// The value of the first header called `name`, as text.
pub fn text_header(headers: Option<&OwnedHeaders>, name: &str) -> Option<String> {
    headers::text_named(headers)
        .into_iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, value)| value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// `record`'s headers without eddy's own (`eddy-*`, but for its hop
/// count: a loop is not reset by redriving it) and those named in `drop`:
/// what a replayed record carries on.
pub fn carried_headers(record: &OwnedMessage, drop: &[String]) -> OwnedHeaders {
    let mut carried = OwnedHeaders::new();
    if let Some(own) = record.headers() {
        for (name, value) in headers::each(own) {
            let ours = name.starts_with(b"eddy-") && name != headers::HOPS.as_bytes();
            let dropped = ours || drop.iter().any(|d| d.as_bytes() == name);
            if !dropped {
                headers::add(&mut carried, name, value);
            }
        }
    }
    carried
}

/// Where a dead letter's original is: topic, partition, offset, from its
/// `eddy-original-*` headers.
pub fn original_place(dead_letter: &OwnedMessage) -> Result<(String, i32, i64), String> {
    let header = |name: &str| text_header(dead_letter.headers(), name);
    let topic = header("eddy-original-topic").filter(|t| !t.is_empty());
    let partition = header("eddy-original-partition").and_then(|p| p.parse().ok());
    let offset = header("eddy-original-offset").and_then(|o| o.parse().ok());
    match (topic, partition, offset) {
        (Some(topic), Some(partition), Some(offset)) => Ok((topic, partition, offset)),
        _ => Err(format!(
            "{}/{}/{} has no eddy-original-topic, -partition and -offset headers: it is not a \
             dead letter eddy wrote",
            dead_letter.topic(),
            dead_letter.partition(),
            dead_letter.offset()
        )),
    }
}

/// The record a dead letter stands for: its key, value and own headers, at
/// the original's topic, partition and offset, so the plugin sees the
/// delivery it saw then and a new dead letter points at the original.
pub fn original_of(dead_letter: &OwnedMessage) -> Result<OwnedMessage, String> {
    let (topic, partition, offset) = original_place(dead_letter)?;
    Ok(OwnedMessage::new(
        dead_letter.payload().map(<[u8]>::to_vec),
        dead_letter.key().map(<[u8]>::to_vec),
        topic,
        dead_letter.timestamp(),
        partition,
        offset,
        Some(carried_headers(dead_letter, &[])),
    ))
}

/// `topic/partition/offset` of `record`.
pub fn place_of(record: &OwnedMessage) -> String {
    format!(
        "{}/{}/{}",
        record.topic(),
        record.partition(),
        record.offset()
    )
}
