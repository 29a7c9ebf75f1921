//! Producing follow-ups in order, and waiting for Kafka to take them.
//!
//! A follow-up the producer does not take at once (its queue is full, or it
//! refuses it) is handed to it again, after a wait, before anything newer of
//! the same partition worker: follow-ups of one key never overtake each
//! other on the way in. One that Kafka fails after the producer took it
//! (librdkafka has retried it for `message.timeout.ms`) is produced again
//! when the worker settles its record, which can be after newer ones.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::partition::{Cancelled, pause};
use crate::retry::backoff;
use crate::runtime::{FollowUp, Plugin};

/// First wait for room in a full producer queue; it doubles up to
/// [`QUEUE_FULL_MAX_WAIT`]. Acknowledgements empty the queue in
/// milliseconds on a healthy broker.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);
const QUEUE_FULL_MAX_WAIT: Duration = Duration::from_millis(50);

/// A follow-up handed to the producer.
pub struct Sent {
    follow_up: FollowUp,
    plugin: Arc<Plugin>,
    ack: Ack,
}

enum Ack {
    Waiting(DeliveryFuture),
    Done,
    /// Kafka answered with an error: to be produced again.
    Failed,
}

/// Hands `plugin`'s follow-ups to the producer, in order, without waiting
/// for Kafka's acknowledgements; appends them to `sent`.
pub async fn produce(
    producer: &FutureProducer,
    token: &CancellationToken,
    plugin: &Arc<Plugin>,
    follow_ups: Vec<FollowUp>,
    sent: &mut Vec<Sent>,
) -> Result<(), Cancelled> {
    for follow_up in follow_ups {
        let ack = Ack::Waiting(enqueue(producer, token, &follow_up, plugin).await?);
        sent.push(Sent {
            follow_up,
            plugin: plugin.clone(),
            ack,
        });
    }
    Ok(())
}

/// Whether every follow-up in `sent` is acknowledged, looking without
/// waiting.
pub fn acknowledged_now(sent: &mut [Sent]) -> bool {
    let mut all = true;
    for sent in sent {
        if let Ack::Waiting(ack) = &mut sent.ack {
            match ack.now_or_never() {
                Some(result) => sent.ack = outcome(&sent.follow_up, result),
                None => all = false,
            }
        }
        all &= matches!(sent.ack, Ack::Done);
    }
    all
}

/// Waits until every follow-up in `sent` is acknowledged, producing again,
/// in order, any Kafka failed.
pub async fn settle(
    producer: &FutureProducer,
    token: &CancellationToken,
    sent: &mut [Sent],
) -> Result<(), Cancelled> {
    for sent in sent {
        loop {
            match std::mem::replace(&mut sent.ack, Ack::Failed) {
                Ack::Done => {
                    sent.ack = Ack::Done;
                    break;
                }
                Ack::Waiting(mut ack) => {
                    let result = tokio::select! {
                        _ = token.cancelled() => {
                            sent.ack = Ack::Waiting(ack);
                            return Err(Cancelled);
                        }
                        result = &mut ack => result,
                    };
                    sent.ack = outcome(&sent.follow_up, result);
                }
                Ack::Failed => {
                    let ack = enqueue(producer, token, &sent.follow_up, &sent.plugin).await?;
                    sent.ack = Ack::Waiting(ack);
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

/// Hands one follow-up to the producer, waiting for room while its queue is
/// full and retrying with backoff what it refuses.
async fn enqueue(
    producer: &FutureProducer,
    token: &CancellationToken,
    follow_up: &FollowUp,
    plugin: &Plugin,
) -> Result<DeliveryFuture, Cancelled> {
    let mut record = FutureRecord::to(&follow_up.topic)
        .payload(&follow_up.payload)
        .headers(headers(plugin));
    if let Some(key) = &follow_up.key {
        record = record.key(key);
    }
    let mut full_wait = QUEUE_FULL_WAIT;
    let mut refusals: u32 = 0;
    loop {
        match producer.send_result(record) {
            Ok(ack) => return Ok(ack),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                pause(token, full_wait).await?;
                full_wait = (full_wait * 2).min(QUEUE_FULL_MAX_WAIT);
            }
            Err((e, back)) => {
                record = back;
                refusals += 1;
                tracing::warn!(
                    topic = %follow_up.topic,
                    event_id = %follow_up.event_id,
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
        Ok(Err((e, _))) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %follow_up.event_id,
                "follow-up not acknowledged, retrying: {e}"
            );
            Ack::Failed
        }
        Err(_) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %follow_up.event_id,
                "the producer dropped a follow-up, retrying"
            );
            Ack::Failed
        }
    }
}

/// The headers every follow-up of `plugin` carries.
fn headers(plugin: &Plugin) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
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
}
