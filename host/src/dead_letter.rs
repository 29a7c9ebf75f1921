//! Dead letters: why a record could not be handled, where it goes, and
//! writing it so that it is never dropped.

use std::fmt;
use std::path::PathBuf;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::envelope::DecodeError;
use crate::metrics;
use crate::partition::{Cancelled, pause};
use crate::retry::backoff;
use crate::runtime::Failure;

/// Why a record ends in its dead-letter topic.
#[derive(Debug, Clone)]
pub enum RecordError {
    /// The value is not an event.
    Undecodable(DecodeError),
    /// The value is over `[plugins] max_event_bytes`.
    TooLarge { size: usize, max: usize },
    /// A routed plugin has no usable file.
    PluginMissing { plugin: String, dir: PathBuf },
    /// A plugin failed for good: `reject`, or out of retries.
    Handler { plugin: String, failure: Failure },
}

impl RecordError {
    /// The reason's name: the start of the `eddy-error` header and the
    /// `reason` label of `eddy_events_dead_lettered_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Undecodable(_) => "undecodable",
            RecordError::TooLarge { .. } => "too-large",
            RecordError::PluginMissing { .. } => "plugin-missing",
            RecordError::Handler { failure, .. } => failure.kind.as_str(),
        }
    }

    /// The plugin it concerns; none when the record never reached one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            RecordError::Undecodable(_) | RecordError::TooLarge { .. } => None,
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
            RecordError::Handler { failure, .. } => f.write_str(&failure.message),
        }
    }
}

/// The dead-letter topic of records from `topic`: the plugin's
/// `dead_letter_topic` when it sets one, else `<topic>.dlq`.
pub fn topic_for(configured: Option<&str>, topic: &str) -> String {
    match configured {
        Some(configured) => configured.to_string(),
        None => format!("{topic}.dlq"),
    }
}

/// Writes `record`, unchanged, with the `eddy-*` headers to `topic`, waits
/// for Kafka's acknowledgement, then counts it. Until Kafka takes it the
/// partition does not advance: a dead letter is never dropped. A value the
/// topic will not take is left out, said so in a header: the original stays
/// at its topic, partition and offset.
pub async fn write(
    producer: &FutureProducer,
    token: &CancellationToken,
    record: &OwnedMessage,
    topic: &str,
    error: &RecordError,
    attempts: u32,
) -> Result<(), Cancelled> {
    tracing::error!(
        attempts,
        dead_letter_topic = topic,
        "event dead-lettered: {error}"
    );
    let mut headers = OwnedHeaders::new();
    if let Some(original) = record.headers() {
        for header in original.iter() {
            headers = headers.insert(header);
        }
    }
    let reason = error.to_string();
    let partition = record.partition().to_string();
    let offset = record.offset().to_string();
    let attempts = attempts.to_string();
    for (key, value) in [
        ("eddy-error", reason.as_str()),
        ("eddy-plugin", error.plugin().unwrap_or("")),
        ("eddy-original-topic", record.topic()),
        ("eddy-original-partition", &partition),
        ("eddy-original-offset", &offset),
        ("eddy-attempts", &attempts),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut round: u32 = 0;
    let mut value = record.payload();
    loop {
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.clone());
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = value {
            out = out.payload(value);
        }
        let sent = tokio::select! {
            _ = token.cancelled() => return Err(Cancelled),
            sent = producer.send(out, Timeout::Never) => sent,
        };
        match sent {
            Ok(_) => {
                metrics::dead_lettered(
                    error.plugin().unwrap_or(""),
                    record.topic(),
                    error.reason(),
                );
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                if value.is_some() =>
            {
                let size = value.map_or(0, <[u8]>::len);
                tracing::warn!(
                    dead_letter_topic = topic,
                    "the record ({size} bytes) is too large for the dead-letter topic; \
                     writing it without its value"
                );
                value = None;
                headers = headers.insert(Header {
                    key: "eddy-value-omitted",
                    value: Some(&format!(
                        "{size} bytes, too large for this topic; the original is at {}/{}/{}",
                        record.topic(),
                        record.partition(),
                        record.offset()
                    )),
                });
            }
            Err((e, _)) => {
                round += 1;
                tracing::error!(
                    dead_letter_topic = topic,
                    "cannot write the dead-letter record ({e}); partition {} of {} \
                     will not advance until it can",
                    record.partition(),
                    record.topic()
                );
                pause(token, backoff(round)).await?;
            }
        }
    }
}
