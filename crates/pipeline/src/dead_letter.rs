//! Dead letters: why a record could not be handled, where it goes, and
//! writing it so that it is never dropped.

use eddy_kafka::trace_headers;
use std::fmt;
use std::path::PathBuf;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use eddy_core::cancel::{Cancelled, pause};
use eddy_core::envelope::DecodeError;
use eddy_core::metrics;
use eddy_core::outcome::Failure;
use eddy_core::policy::backoff;
use eddy_core::text::OneLine;
use eddy_core::trace;
use eddy_kafka::client::EddyProducer;
use eddy_kafka::headers;
use eddy_schema::Refusal;

/// How long a dead letter waits for room in a full producer queue, in a
/// transaction, before it is handed over again.
const QUEUE_FULL_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a record ends in its dead-letter topic.
#[derive(Debug, Clone)]
pub enum RecordError {
    /// The value is not an event.
    Undecodable(DecodeError),
    /// The value is over `[plugins] max_event_bytes`.
    TooLarge { size: usize, max: usize },
    /// A routed plugin has no usable file.
    PluginMissing { plugin: String, dir: PathBuf },
    /// The event is a follow-up of follow-ups past `[plugins] max_hops`.
    Loop { hops: u32, max: u32 },
    /// A plugin failed for good: `reject`, or out of retries.
    Handler { plugin: String, failure: Failure },
    /// The event's `data` does not match its schema, or it has none that
    /// can be checked against.
    Schema(Refusal),
}

impl RecordError {
    /// The reason's name: the start of the `eddy-error` header and the
    /// `reason` label of `eddy_events_dead_lettered_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Undecodable(_) => "undecodable",
            RecordError::TooLarge { .. } => "too-large",
            RecordError::PluginMissing { .. } => "plugin-missing",
            RecordError::Loop { .. } => "loop",
            RecordError::Handler { failure, .. } => failure.kind.as_str(),
            RecordError::Schema(refusal) => refusal.reason(),
        }
    }

    /// The plugin it concerns; none when the record never reached one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            RecordError::Undecodable(_)
            | RecordError::TooLarge { .. }
            | RecordError::Loop { .. }
            | RecordError::Schema(_) => None,
            RecordError::PluginMissing { plugin, .. } | RecordError::Handler { plugin, .. } => {
                Some(plugin)
            }
        }
    }
}

/// `reason: detail`, the `eddy-error` header.
impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.reason())?;
        match self {
            RecordError::Undecodable(e) => write!(f, "{e}"),
            RecordError::TooLarge { size, max } => {
                write!(f, "value of {size} bytes is over max_event_bytes ({max})")
            }
            RecordError::PluginMissing { plugin, dir } => {
                write!(f, "no usable {plugin}.wasm in {}", dir.display())
            }
            RecordError::Loop { hops, max } => write!(
                f,
                "the event is a follow-up {hops} deep, [plugins] max_hops is {max}: \
                 a plugin may publish to a topic it reads"
            ),
            RecordError::Handler { failure, .. } => f.write_str(&failure.message),
            RecordError::Schema(refusal) => f.write_str(refusal.detail()),
        }
    }
}

/// Writes `record`, unchanged, with the `eddy-*` headers to `topic`, waits
/// for Kafka's acknowledgement, then counts it. Until Kafka takes it the
/// partition does not advance: a dead letter is never dropped. A value the
/// topic will not take is left out, said so in a header: the original stays
/// at its topic, partition and offset.
///
/// With [`Durability::InTransaction`] the write is part of the open
/// transaction, whose commit makes it durable; so it waits only until the
/// producer takes the record. An error other than a full queue or a record
/// too large then ends the write with `Cancelled`: the transaction cannot be
/// committed.
pub async fn write(
    producer: &EddyProducer,
    token: &CancellationToken,
    record: &OwnedMessage,
    topic: &str,
    error: &RecordError,
    attempts: u32,
    durability: Durability<'_>,
) -> Result<(), Cancelled> {
    tracing::error!(
        attempts,
        dead_letter_topic = topic,
        "event dead-lettered: {}",
        OneLine(&error.to_string())
    );
    let ours = eddy_headers(record, error, attempts);
    let at = format!(
        "{}/{}/{}",
        record.topic(),
        record.partition(),
        record.offset()
    );
    let mut round: u32 = 0;
    // What the topic will not take is left out, in this order, each said in
    // a header: the value, the key, the record's own headers.
    let mut kept = Kept::all_of(record, at);
    let (mut refused, mut answers, omit) = match durability {
        Durability::Acknowledged => (None, None, 0),
        Durability::InTransaction {
            answers,
            omit,
            refused,
        } => (Some(refused), Some(answers), omit),
    };
    for _ in 0..omit {
        if !kept.leave_out_next() {
            break;
        }
    }
    loop {
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(
            dead_letter_headers(record, kept.own_headers, &ours, &kept.omitted),
        );
        if let Some(key) = kept.key {
            out = out.key(key);
        }
        if let Some(value) = kept.value {
            out = out.payload(value);
        }
        let sent = if let Some(answers) = answers.as_deref_mut() {
            match producer.send_result(out) {
                Ok(answer) => {
                    answers.push(answer);
                    Ok(())
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    pause(token, QUEUE_FULL_WAIT).await?;
                    continue;
                }
                Err((e, _)) => Err(e),
            }
        } else {
            tokio::select! {
                _ = token.cancelled() => return Err(Cancelled),
                sent = producer.send(out, Timeout::Never) => sent.map(|_| ()).map_err(|(e, _)| e),
            }
        };
        let too_large = match &sent {
            Ok(_) => {
                metrics::dead_lettered(
                    error.plugin().unwrap_or(""),
                    record.topic(),
                    error.reason(),
                );
                return Ok(());
            }
            Err(KafkaError::MessageProduction(code)) => eddy_kafka::produce::too_large(*code),
            Err(_) => false,
        };
        if !(too_large && kept.leave_out_next()) {
            if let Some(refused) = refused.as_deref_mut() {
                // Refused for good (no such topic, not allowed), or the
                // producer takes nothing more into this transaction, which
                // is no fault of this dead letter's.
                *refused = matches!(
                    &sent,
                    Err(KafkaError::MessageProduction(code)) if eddy_kafka::produce::permanent(*code)
                );
                tracing::error!(
                    dead_letter_topic = topic,
                    "the dead-letter record cannot join the transaction: {}",
                    sent.err().map(|e| e.to_string()).unwrap_or_default()
                );
                return Err(Cancelled);
            }
            round += 1;
            tracing::error!(
                dead_letter_topic = topic,
                "cannot write the dead-letter record ({}); partition {} of {} \
                 will not advance until it can",
                sent.err().map(|e| e.to_string()).unwrap_or_default(),
                record.partition(),
                record.topic()
            );
            pause(token, backoff(round)).await?;
            continue;
        }
        tracing::warn!(
            dead_letter_topic = topic,
            "the dead-letter record is too large for its topic; {}",
            kept.omitted.last().map_or("", |(name, _)| name)
        );
    }
}

/// How a dead letter is made durable.
pub enum Durability<'a> {
    /// Kafka's acknowledgement is awaited.
    Acknowledged,
    /// It is written into the open transaction. Its answer goes to
    /// `answers`, and `omit` parts of the record are left out from the
    /// start: a dead letter of this record was refused before. If it cannot
    /// join the transaction, `refused` says whether Kafka refused it for
    /// good (rather than the transaction having failed).
    InTransaction {
        answers: &'a mut Vec<DeliveryFuture>,
        omit: u32,
        refused: &'a mut bool,
    },
}

/// What of a record its dead letter carries: less each time the topic
/// refuses it as too large.
struct Kept<'r> {
    record: &'r OwnedMessage,
    /// Where the original is, for the `eddy-*-omitted` headers.
    at: String,
    value: Option<&'r [u8]>,
    key: Option<&'r [u8]>,
    own_headers: bool,
    /// The `eddy-*-omitted` headers saying what was left out.
    omitted: Vec<(&'static str, String)>,
}

impl<'r> Kept<'r> {
    fn all_of(record: &'r OwnedMessage, at: String) -> Kept<'r> {
        // A value too large to be read was never copied out of Kafka.
        let omitted = headers::value_not_read(record)
            .map(|size| {
                let text = format!(
                    "{size} bytes, over max_event_bytes, not read; the original is at {at}"
                );
                ("eddy-value-omitted", text)
            })
            .into_iter()
            .collect();
        Kept {
            record,
            at,
            value: record.payload(),
            key: record.key(),
            own_headers: true,
            omitted,
        }
    }

    /// Leaves the next part out, in this order: the value, the key, the
    /// record's own headers; says so in `omitted`. `false` when nothing is
    /// left to leave out.
    fn leave_out_next(&mut self) -> bool {
        if let Some(left_out) = self.value.take() {
            let text = omission(left_out.len(), &self.at);
            self.omitted.push(("eddy-value-omitted", text));
        } else if let Some(left_out) = self.key.take() {
            let text = omission(left_out.len(), &self.at);
            self.omitted.push(("eddy-key-omitted", text));
        } else if self.own_headers && self.record.headers().is_some() {
            self.own_headers = false;
            self.omitted.push((
                "eddy-headers-omitted",
                format!("too large for this topic; the originals are at {}", self.at),
            ));
        } else {
            return false;
        }
        true
    }
}

/// The `eddy-*-omitted` header's text.
fn omission(size: usize, at: &str) -> String {
    format!("{size} bytes, too large for this topic; the original is at {at}")
}

/// eddy's own headers on a dead letter of `record`: why, which plugin,
/// where the original is, after how many attempts.
fn eddy_headers(
    record: &OwnedMessage,
    error: &RecordError,
    attempts: u32,
) -> [(&'static str, String); 7] {
    // A child of the span that gave the record up.
    let (trace, _) = trace_headers::of_record(record, None);
    let handling = trace::Handling::new(trace, error.plugin().unwrap_or(""));
    [
        ("eddy-error", error.to_string()),
        ("eddy-plugin", error.plugin().unwrap_or("").to_string()),
        ("eddy-original-topic", record.topic().to_string()),
        ("eddy-original-partition", record.partition().to_string()),
        ("eddy-original-offset", record.offset().to_string()),
        ("eddy-attempts", attempts.to_string()),
        (trace::TRACEPARENT, handling.child_header()),
    ]
}

/// The header saying that some header names were escaped.
pub const ESCAPED_NAMES: &str = "eddy-header-names-escaped";

/// A header name that is not UTF-8, with each byte that is not written
/// `\xNN`: clients that decode header names as text (aiokafka, for one)
/// fail on the whole batch holding one that is not. `None` when it is
/// UTF-8 already.
fn readable_name(name: &[u8]) -> Option<String> {
    if std::str::from_utf8(name).is_ok() {
        return None;
    }
    let mut text = String::with_capacity(name.len() + 8);
    for chunk in name.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    Some(text)
}

/// The headers of `record`'s dead letter when its topic takes it whole:
/// what `eddy test` shows.
pub fn headers_of(record: &OwnedMessage, error: &RecordError, attempts: u32) -> OwnedHeaders {
    dead_letter_headers(record, true, &eddy_headers(record, error, attempts), &[])
}

/// A dead letter's headers: the record's own (unless left out), values as
/// bytes and names made readable ([`readable_name`]), but not its `eddy-*` ones: a record could forge
/// `eddy-original-topic` and mislead whoever redrives the dead letters.
/// Then eddy's own (its `traceparent` among them), and what was left out.
fn dead_letter_headers(
    record: &OwnedMessage,
    own: bool,
    ours: &[(&str, String)],
    omitted: &[(&str, String)],
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    let mut escaped = 0;
    if let Some(original) = record.headers().filter(|_| own) {
        for (name, value) in headers::each(original) {
            // Its `traceparent` is replaced by eddy's.
            if !name.starts_with(b"eddy-")
                && !name.eq_ignore_ascii_case(trace::TRACEPARENT.as_bytes())
            {
                match readable_name(name) {
                    Some(name) => {
                        escaped += 1;
                        headers::add(&mut headers, name.as_bytes(), value);
                    }
                    None => headers::add(&mut headers, name, value),
                }
            }
        }
    }
    // The original's hop count goes with it, so that redriving a loop's
    // dead letter does not start its count again.
    let hops = headers::hops(record.headers());
    if hops > 0 {
        headers = headers.insert(Header {
            key: headers::HOPS,
            value: Some(&hops.to_string()),
        });
    }
    if escaped > 0 {
        let text =
            format!("{escaped} header names were not UTF-8; their other bytes are written \\xNN");
        headers = headers.insert(Header {
            key: ESCAPED_NAMES,
            value: Some(&text),
        });
    }
    for (name, value) in ours.iter().chain(omitted) {
        headers = headers.insert(Header {
            key: name,
            value: Some(value),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::readable_name;

    #[test]
    fn a_header_name_that_is_not_utf8_is_escaped_byte_by_byte() {
        assert_eq!(readable_name(b"x-plain"), None);
        assert_eq!(readable_name("x-caf\u{e9}".as_bytes()), None);
        assert_eq!(
            readable_name(b"bad\xffname").as_deref(),
            Some("bad\\xffname")
        );
        assert_eq!(
            readable_name(b"\xc3caf\xc3\xa9\x80").as_deref(),
            Some("\\xc3caf\u{e9}\\x80")
        );
    }
}
