//! Producing follow-ups in order, and waiting for Kafka to take them.
//!
//! A follow-up the producer does not take at once (its queue is full, or it
//! refuses it) is handed to it again, after a wait, before anything newer of
//! the same partition worker: follow-ups of one key never overtake each
//! other on the way in. One that Kafka fails after the producer took it
//! (librdkafka has retried it for `message.timeout.ms`) is produced again
//! when the worker settles its record, which can be after newer ones.
//!
//! An error that producing again cannot cure (too large, no such topic, not
//! authorised: [`permanent`]) is a [`Refused`]: the record's plugin failed,
//! and the record is dead-lettered instead of holding its partition.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use tokio_util::sync::CancellationToken;

use eddy_core::cancel::{Cancelled, pause};
use eddy_core::outcome::{FollowUp, PluginId};
use eddy_core::policy::backoff;
use eddy_core::text::OneLine;
use eddy_core::trace::{self, FollowUpTrace};

use crate::client::EddyProducer;
use crate::headers;

/// First wait for room in a full producer queue; it doubles up to
/// [`QUEUE_FULL_MAX_WAIT`]. Acknowledgements empty the queue in
/// milliseconds on a healthy broker.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);
const QUEUE_FULL_MAX_WAIT: Duration = Duration::from_millis(50);
/// How long the queue stays full before the wait is said in the log.
const QUEUE_FULL_SAY: Duration = Duration::from_secs(10);

/// Why follow-ups were not all taken.
#[derive(Debug)]
pub enum NotTaken {
    Cancelled,
    Refused(Refused),
    /// The producer can take nothing more: its transaction failed, or it
    /// hit a fatal error. Producing again cannot help.
    Broken(String),
}

/// A follow-up Kafka will never take: the plugin that published it failed.
#[derive(Debug, Clone)]
pub struct Refused {
    pub plugin: String,
    pub topic: String,
    pub error: String,
}

impl Refused {
    /// The failure's message: `follow-up to <topic> refused: <error>`.
    pub fn reason(&self) -> String {
        format!("follow-up to {} refused: {}", self.topic, self.error)
    }
}

impl From<Cancelled> for NotTaken {
    fn from(_: Cancelled) -> NotTaken {
        NotTaken::Cancelled
    }
}

/// Whether Kafka will never take a record it refused with `code`.
pub fn permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidRecord
            | UnknownTopic
            | UnknownPartition
            | UnknownTopicOrPartition
            | InvalidTopic
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | PolicyViolation
            | InvalidArgument
    )
}

/// Whether Kafka refused a record with `code` for its size: a smaller one
/// may be taken.
pub fn too_large(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
    )
}

/// Whether the producer will take nothing more after `code`: its
/// transaction is in an error state, or it hit a fatal error.
fn broken(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::State | RDKafkaErrorCode::Fatal)
}

/// A follow-up handed to the producer.
pub struct Sent {
    follow_up: FollowUp,
    plugin: Arc<PluginId>,
    hops: u32,
    ack: Ack,
}

enum Ack {
    Waiting(DeliveryFuture),
    Done,
    /// Kafka answered with an error: to be produced again.
    Failed,
    /// Kafka answered with an error producing again cannot cure.
    Refused(String),
}

/// What the acknowledgements of a record's follow-ups came to, so far.
pub enum Acks {
    Done,
    Waiting,
    /// One was refused for good: settling the record dead-letters it.
    Refused,
}

/// Hands `plugin`'s follow-ups to the producer, in order, without waiting
/// for Kafka's acknowledgements; appends them to `sent`.
/// `cause` is the record they follow; they are one hop deeper.
pub async fn produce(
    producer: &EddyProducer,
    token: &CancellationToken,
    cause: &OwnedMessage,
    plugin: &Arc<PluginId>,
    follow_ups: Vec<FollowUp>,
    sent: &mut Vec<Sent>,
) -> Result<(), NotTaken> {
    let hops = hops_after(cause);
    for follow_up in follow_ups {
        let ack = Ack::Waiting(enqueue(producer, token, &follow_up, plugin, hops).await?);
        eddy_trace::produced(&follow_up.trace, &follow_up.topic, &follow_up.event_id);
        sent.push(Sent {
            follow_up,
            plugin: plugin.clone(),
            hops,
            ack,
        });
    }
    Ok(())
}

/// What the acknowledgements of `sent` came to, looking without waiting.
pub fn acknowledged_now(sent: &mut [Sent]) -> Acks {
    let mut all = true;
    for sent in sent.iter_mut() {
        if let Ack::Waiting(ack) = &mut sent.ack {
            match ack.now_or_never() {
                Some(result) => sent.ack = outcome(&sent.follow_up, result),
                None => all = false,
            }
        }
        all &= matches!(sent.ack, Ack::Done);
    }
    if refusal(sent).is_some() {
        Acks::Refused
    } else if all {
        Acks::Done
    } else {
        Acks::Waiting
    }
}

/// The first follow-up of `sent` Kafka refused for good, if any.
fn refusal(sent: &[Sent]) -> Option<Refused> {
    sent.iter().find_map(|sent| match &sent.ack {
        Ack::Refused(error) => Some(Refused {
            plugin: sent.plugin.name.clone(),
            topic: sent.follow_up.topic.clone(),
            error: error.clone(),
        }),
        _ => None,
    })
}

/// Waits until every follow-up in `sent` is acknowledged, producing again,
/// in order, any Kafka failed. A refusal stops the wait: the rest no
/// longer matter, the record fails.
pub async fn settle(
    producer: &EddyProducer,
    token: &CancellationToken,
    sent: &mut [Sent],
) -> Result<(), NotTaken> {
    if let Some(refused) = refusal(sent) {
        return Err(NotTaken::Refused(refused));
    }
    for index in 0..sent.len() {
        let one = &mut sent[index];
        loop {
            match std::mem::replace(&mut one.ack, Ack::Failed) {
                Ack::Done => {
                    one.ack = Ack::Done;
                    break;
                }
                Ack::Refused(error) => {
                    one.ack = Ack::Refused(error);
                    let refused = refusal(sent).expect("a refusal was just put back");
                    return Err(NotTaken::Refused(refused));
                }
                Ack::Waiting(mut ack) => {
                    let result = tokio::select! {
                        _ = token.cancelled() => {
                            one.ack = Ack::Waiting(ack);
                            return Err(NotTaken::Cancelled);
                        }
                        result = &mut ack => result,
                    };
                    one.ack = outcome(&one.follow_up, result);
                }
                Ack::Failed => {
                    match enqueue(producer, token, &one.follow_up, &one.plugin, one.hops).await {
                        Ok(ack) => one.ack = Ack::Waiting(ack),
                        Err(NotTaken::Refused(refused)) => {
                            one.ack = Ack::Refused(refused.error.clone());
                            return Err(NotTaken::Refused(refused));
                        }
                        Err(other) => {
                            one.ack = Ack::Failed;
                            return Err(other);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Waits, up to `deadline`, for the acknowledgements of `sent` without
/// producing anything again: what a stopping worker does. Whether all came.
pub async fn acknowledged_by(sent: &mut [Sent], deadline: tokio::time::Instant) -> bool {
    for sent in sent {
        if let Ack::Waiting(ack) = &mut sent.ack {
            match tokio::time::timeout_at(deadline, ack).await {
                Ok(result) => sent.ack = outcome(&sent.follow_up, result),
                Err(_) => return false,
            }
        }
        if !matches!(sent.ack, Ack::Done) {
            return false;
        }
    }
    true
}

/// The first follow-up of `sent`, written into a transaction, that the
/// broker refused for good; waits (blocking the thread) until each was
/// answered or `deadline` passed. Other errors are no refusal, and not
/// logged: an aborted transaction's records are purged.
pub fn refused_in_transaction(sent: &mut [Sent], deadline: std::time::Instant) -> Option<Refused> {
    for one in sent.iter_mut() {
        let Ack::Waiting(ack) = &mut one.ack else {
            continue;
        };
        match answer(ack, deadline) {
            Answer::Waiting => {}
            Answer::Answered => one.ack = Ack::Done,
            Answer::Refused(code) => {
                tracing::error!(
                    topic = %one.follow_up.topic,
                    event_id = %OneLine(&one.follow_up.event_id),
                    "follow-up refused by Kafka for good: {code:?}"
                );
                one.ack = Ack::Refused(format!("{code:?}"));
            }
        }
    }
    refusal(sent)
}

/// What Kafka answered for a record handed to the producer, so far.
pub enum Answer {
    Waiting,
    /// Taken, or failed in a way producing again could cure.
    Answered,
    /// Refused for good.
    Refused(RDKafkaErrorCode),
}

/// Kafka's answer for the record of `ack`, waiting (blocking the thread)
/// until it comes or `deadline` passes. Once answered, `ack` is done: it is
/// not to be asked again.
pub fn answer(ack: &mut DeliveryFuture, deadline: std::time::Instant) -> Answer {
    loop {
        match ack.now_or_never() {
            Some(Ok(Err((KafkaError::MessageProduction(code), _)))) if permanent(code) => {
                return Answer::Refused(code);
            }
            Some(_) => return Answer::Answered,
            None if std::time::Instant::now() >= deadline => return Answer::Waiting,
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Hands one follow-up to the producer, waiting for room while its queue is
/// full and retrying with backoff what it refuses for now.
async fn enqueue(
    producer: &EddyProducer,
    token: &CancellationToken,
    follow_up: &FollowUp,
    plugin: &PluginId,
    hops: u32,
) -> Result<DeliveryFuture, NotTaken> {
    let mut record = FutureRecord::to(&follow_up.topic)
        .payload(&follow_up.payload)
        .headers(follow_up_headers(plugin, hops, &follow_up.trace));
    if let Some(key) = &follow_up.key {
        record = record.key(key);
    }
    let mut full_wait = QUEUE_FULL_WAIT;
    let mut full_since = None;
    let mut said = false;
    let mut refusals: u32 = 0;
    loop {
        match producer.send_result(record) {
            Ok(ack) => return Ok(ack),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                let since = *full_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= QUEUE_FULL_SAY && !said {
                    said = true;
                    tracing::warn!(
                        topic = %follow_up.topic,
                        "the producer's queue has been full for {:?}: the brokers take \
                         nothing; this partition waits",
                        since.elapsed()
                    );
                }
                pause(token, full_wait).await?;
                full_wait = (full_wait * 2).min(QUEUE_FULL_MAX_WAIT);
            }
            Err((KafkaError::MessageProduction(code), _)) if broken(code) => {
                return Err(NotTaken::Broken(format!(
                    "the producer takes no more records: {code:?}"
                )));
            }
            Err((KafkaError::MessageProduction(code), _)) if permanent(code) => {
                return Err(NotTaken::Refused(Refused {
                    plugin: plugin.name.clone(),
                    topic: follow_up.topic.clone(),
                    error: format!("{code:?}"),
                }));
            }
            Err((e, back)) => {
                record = back;
                refusals += 1;
                tracing::warn!(
                    topic = %follow_up.topic,
                    event_id = %OneLine(&follow_up.event_id),
                    "follow-up not taken by the producer, retrying: {e}"
                );
                pause(token, backoff(refusals)).await?;
            }
        }
    }
}

/// What an acknowledgement came to.
fn outcome(
    follow_up: &FollowUp,
    result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Ack {
    match result {
        Ok(Ok(_)) => Ack::Done,
        Ok(Err((KafkaError::MessageProduction(code), _))) if permanent(code) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %OneLine(&follow_up.event_id),
                "follow-up refused by Kafka for good: {code:?}"
            );
            Ack::Refused(format!("{code:?}"))
        }
        Ok(Err((e, _))) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %OneLine(&follow_up.event_id),
                "follow-up not acknowledged, retrying: {e}"
            );
            Ack::Failed
        }
        Err(_) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %OneLine(&follow_up.event_id),
                "the producer dropped a follow-up, retrying"
            );
            Ack::Failed
        }
    }
}

/// How deep a follow-up of `cause` is: one hop more than `cause`.
pub fn hops_after(cause: &OwnedMessage) -> u32 {
    headers::hops(cause.headers()).saturating_add(1)
}

/// The headers every follow-up of `plugin` carries.
pub fn follow_up_headers(plugin: &PluginId, hops: u32, trace: &FollowUpTrace) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "eddy-plugin",
            value: Some(&plugin.name),
        })
        .insert(Header {
            key: "eddy-plugin-version",
            value: Some(&plugin.hash),
        })
        .insert(Header {
            key: headers::HOPS,
            value: Some(&hops.to_string()),
        })
        .insert(Header {
            key: trace::TRACEPARENT,
            value: Some(&trace.header()),
        });
    match &trace.state {
        Some(state) => headers.insert(Header {
            key: trace::TRACESTATE,
            value: Some(state),
        }),
        None => headers,
    }
}
