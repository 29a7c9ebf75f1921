//! The slow way through: a record whose first pass stopped short is taken
//! to its end here — retried with backoff, or dead-lettered — while its
//! partition waits. Every wait selects on the worker's token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::Pipeline;
use crate::bindings::{Delivery, Event};
use crate::config::PluginSettings;
use crate::dead_letter::{self, RecordError};
use crate::dispatch::Ran;
use crate::metrics::{self, Tally};
use crate::partition::{Cancelled, pause};
use crate::produce::{self, NotTaken, Refused};
use crate::reload::{Handler, Snapshot};
use crate::runtime::{Failure, FailureKind, FollowUp, Outcome, Plugin};
use crate::text::OneLine;
use crate::trace;

/// First retry delay; it doubles per attempt up to [`MAX_BACKOFF`], with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential backoff for attempt `n` (1-based) with ±25 % jitter.
pub fn backoff(n: u32) -> Duration {
    let exponential = BASE_BACKOFF.saturating_mul(1 << n.saturating_sub(1).min(16));
    let capped = exponential.min(MAX_BACKOFF);
    capped.mul_f64(rand::rng().random_range(0.75..=1.25))
}

/// Whether a plugin whose attempt `attempt` (1-based) failed with
/// `failure` is tried again, or the record dead-lettered.
pub fn retries(failure: &Failure, attempt: u32, settings: &PluginSettings) -> bool {
    failure.retryable() && attempt <= settings.max_retries
}

/// How long a record waits for the schema registry before asking it again,
/// the `waits`th time in a row: the retry backoff, at most 5 s.
pub fn schema_wait(waits: u32) -> Duration {
    backoff(waits).min(Duration::from_secs(5))
}

/// What a plugin is told of `record` on its attempt `attempt`.
pub fn delivery(record: &OwnedMessage, attempt: u32) -> Delivery {
    Delivery {
        topic: record.topic().to_string(),
        partition: record.partition(),
        offset: record.offset(),
        key: record.key().map(<[u8]>::to_vec),
        attempt,
    }
}

/// What handling a record leaves to write to Kafka.
pub enum Effect {
    FollowUps {
        plugin: Arc<Plugin>,
        follow_ups: Vec<FollowUp>,
        /// The attempt that published them.
        attempts: u32,
    },
    DeadLetter {
        topic: String,
        error: RecordError,
        attempts: u32,
    },
}

/// Where [`finish`] puts a record's effects: `None` writes each at once
/// (at-least-once); `Some` keeps them, to be written in one transaction
/// with the record's offset (exactly-once).
pub type Deferred = Option<Vec<Effect>>;

/// Takes a record whose first pass stopped short to its end: the dead
/// letter of a record that is not an event; else the follow-ups of the
/// plugins that handled it, then retries or a dead letter for the plugin
/// that failed and each plugin after it.
pub async fn finish(
    pipeline: &Pipeline,
    token: &CancellationToken,
    ran: Ran,
    snapshot: &Snapshot,
    deferred: &mut Deferred,
) -> Result<(), Cancelled> {
    let record = &ran.record;
    let span = tracing::info_span!(
        "record",
        topic = record.topic(),
        partition = record.partition(),
        offset = record.offset()
    );
    async {
        let event = match ran.event {
            Ok(event) => event,
            Err(error) => {
                let (record_trace, _) = trace::of_record(record, None);
                trace::consumed(trace::Consumed {
                    record,
                    event: None,
                    plugin: None,
                    handling: &trace::Handling::new(record_trace, ""),
                    started: SystemTime::now(),
                    retried: &[],
                    attempts: 0,
                    logs: Vec::new(),
                    dead_lettered: Some((error.reason(), error.to_string())),
                });
                let topic = dead_letter::topic_for(None, record.topic());
                return dead_letter(pipeline, token, record, topic, error, 0, deferred).await;
            }
        };
        let mut sent = Vec::new();
        let mut refused = None;
        let handled = match deferred.as_mut() {
            Some(effects) => {
                for (plugin, follow_ups) in ran.handled {
                    effects.push(Effect::FollowUps {
                        plugin,
                        follow_ups,
                        attempts: 1,
                    });
                }
                Vec::new()
            }
            None => ran.handled,
        };
        for (plugin, follow_ups) in handled {
            let produced = produce::produce(
                &pipeline.producer,
                token,
                record,
                &plugin,
                follow_ups,
                &mut sent,
            )
            .await;
            if let Err(not_taken) = produced {
                refused.get_or_insert(refusal(not_taken)?);
            }
        }
        if let Err(not_taken) = produce::settle(&pipeline.producer, token, &mut sent).await {
            refused.get_or_insert(refusal(not_taken)?);
        }
        if let Some(refused) = refused {
            dead_letter_refused(pipeline, token, record, snapshot, refused, 1).await?;
        }
        let stopped = ran.stopped.unwrap_or_default();
        let mut first = stopped.failure.map(|failure| FirstAttempt {
            failure,
            started: stopped.started.unwrap_or_else(SystemTime::now),
            logs: stopped.logs,
        });
        for plugin in &stopped.left {
            // The first attempt of the plugin that stopped the pass ran
            // already; the plugins after it have not run.
            deliver(
                pipeline,
                token,
                record,
                &event,
                plugin,
                snapshot,
                first.take(),
                deferred,
            )
            .instrument(tracing::info_span!("plugin", plugin, event_id = %OneLine(&event.event_id)))
            .await?;
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Runs `plugin` on the event until it is handled (its follow-ups
/// acknowledged, or deferred) or dead-lettered. `first` is the attempt
/// that ran already, if it failed.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    pipeline: &Pipeline,
    token: &CancellationToken,
    record: &OwnedMessage,
    event: &Arc<Event>,
    plugin: &str,
    snapshot: &Snapshot,
    first: Option<FirstAttempt>,
    deferred: &mut Deferred,
) -> Result<(), Cancelled> {
    let (record_trace, _) = trace::of_record(record, None);
    let handling = trace::Handling::new(record_trace, plugin);
    let mut span = Span {
        started: first.as_ref().map_or_else(SystemTime::now, |f| f.started),
        retried: Vec::new(),
        logs: Vec::new(),
    };
    let mut first = first.map(|first| {
        span.logs = first.logs;
        first.failure
    });
    let consumed = |span: Span, version: &str, attempts: u32, dead: Option<&RecordError>| {
        trace::consumed(trace::Consumed {
            record,
            event: Some(event),
            plugin: Some((plugin, version)),
            handling: &handling,
            started: span.started,
            retried: &span.retried,
            attempts,
            logs: span.logs,
            dead_lettered: dead.map(|error| (error.reason(), error.to_string())),
        });
    };
    let settings = snapshot.settings(plugin);
    let dead_letter_topic = settings.dead_letter_topic_for(record.topic());
    let loaded = match snapshot.handler(plugin) {
        Some(Handler::Wasm(loaded)) => loaded.clone(),
        #[cfg(feature = "bench-native")]
        Some(Handler::Native) => {
            crate::bench_native::handle(event);
            return Ok(());
        }
        None => {
            let error = RecordError::PluginMissing {
                plugin: plugin.to_string(),
                dir: snapshot.config.plugins.dir.clone(),
            };
            consumed(span, "", 0, Some(&error));
            let topic = dead_letter_topic;
            return dead_letter(pipeline, token, record, topic, error, 0, deferred).await;
        }
    };
    let mut attempt: u32 = 1;
    let mut waits: u32 = 0;
    let mut waiting = None;
    loop {
        let attempted_at = SystemTime::now();
        let outcome = match first.take() {
            Some(failure) => Outcome::Failed(failure),
            None => {
                let delivery = delivery(record, attempt);
                let (runtime, plugin, settings, event, handling) = (
                    pipeline.runtime.clone(),
                    loaded.clone(),
                    settings.clone(),
                    event.clone(),
                    handling.clone(),
                );
                // Awaited even when the worker is told to stop: nothing of
                // a worker outlives it, and `timeout_ms` bounds the attempt.
                let ran = tokio::task::spawn_blocking(move || {
                    let trigger = crate::runtime::Trigger {
                        event: &event,
                        delivery: &delivery,
                        handling: &handling,
                    };
                    trace::collect_logs(&handling);
                    let outcome = runtime.invoke(&plugin, &settings, trigger, None);
                    (outcome, trace::take_logs())
                })
                .await;
                match ran {
                    Ok((outcome, logs)) => {
                        span.logs.extend(logs);
                        outcome
                    }
                    Err(e) => Outcome::Failed(Failure {
                        kind: FailureKind::Trap,
                        message: format!("the host task running the handler failed: {e}"),
                    }),
                }
            }
        };
        if token.is_cancelled() {
            return Err(Cancelled);
        }
        match outcome {
            Outcome::Handled(follow_ups) => {
                consumed(span, &loaded.hash, attempt, None);
                let count = follow_ups.len();
                let mut tally = Tally::default();
                tally.handled(
                    plugin,
                    &loaded.hash,
                    follow_ups.iter().map(|f| f.topic.as_str()),
                );
                if let Some(effects) = deferred.as_mut() {
                    effects.push(Effect::FollowUps {
                        plugin: loaded.clone(),
                        follow_ups,
                        attempts: attempt,
                    });
                    tally.flush(record.topic());
                    tracing::debug!(attempt, follow_ups = count, version = %loaded.hash, "handled");
                    return Ok(());
                }
                let mut sent = Vec::new();
                let producer = &pipeline.producer;
                let produced =
                    produce::produce(producer, token, record, &loaded, follow_ups, &mut sent).await;
                let taken = match produced {
                    Ok(()) => produce::settle(producer, token, &mut sent).await,
                    Err(not_taken) => Err(not_taken),
                };
                if let Err(not_taken) = taken {
                    let refused = refusal(not_taken)?;
                    return dead_letter_refused(
                        pipeline, token, record, snapshot, refused, attempt,
                    )
                    .await;
                }
                tally.flush(record.topic());
                tracing::debug!(attempt, follow_ups = count, version = %loaded.hash, "handled");
                return Ok(());
            }
            Outcome::Failed(failure) if failure.kind == FailureKind::SchemaUnavailable => {
                // The registry's fault, not the event's: the attempt is
                // made again, uncounted, until it answers.
                waits += 1;
                waiting.get_or_insert_with(crate::schema::Waiting::new);
                let delay = schema_wait(waits);
                tracing::warn!(
                    attempt,
                    "a follow-up's schema is not to be had, trying again in {delay:?}: {}",
                    failure.message
                );
                pause(token, delay).await?;
            }
            Outcome::Failed(failure) if retries(&failure, attempt, &settings) => {
                let delay = backoff(attempt);
                metrics::handler_failed(plugin, &loaded.hash, failure.kind.as_str());
                metrics::retried(plugin, record.topic(), failure.kind.as_str());
                tracing::warn!(
                    attempt,
                    max_retries = settings.max_retries,
                    "attempt failed, retrying in {delay:?}: {}",
                    failure.reason()
                );
                span.retried.push(trace::Attempted {
                    at: attempted_at,
                    attempt,
                    failure: Some((failure.kind.as_str(), failure.message.clone())),
                });
                pause(token, delay).await?;
                attempt += 1;
            }
            Outcome::Failed(failure) => {
                metrics::handler_failed(plugin, &loaded.hash, failure.kind.as_str());
                let error = RecordError::Handler {
                    plugin: plugin.to_string(),
                    failure,
                };
                consumed(span, &loaded.hash, attempt, Some(&error));
                let topic = dead_letter_topic;
                return dead_letter(pipeline, token, record, topic, error, attempt, deferred).await;
            }
        }
    }
}

/// A plugin's first attempt, made by the first pass, that failed.
struct FirstAttempt {
    failure: Failure,
    started: SystemTime,
    logs: Vec<trace::GuestLog>,
}

/// What a handling span gathers over the attempts.
struct Span {
    started: SystemTime,
    retried: Vec<trace::Attempted>,
    logs: Vec<trace::GuestLog>,
}

/// Dead-letters `record` now, or defers the dead letter.
async fn dead_letter(
    pipeline: &Pipeline,
    token: &CancellationToken,
    record: &OwnedMessage,
    topic: String,
    error: RecordError,
    attempts: u32,
    deferred: &mut Deferred,
) -> Result<(), Cancelled> {
    match deferred {
        Some(effects) => {
            effects.push(Effect::DeadLetter {
                topic,
                error,
                attempts,
            });
            Ok(())
        }
        None => {
            let producer = &pipeline.producer;
            let durability = dead_letter::Durability::Acknowledged;
            dead_letter::write(
                producer, token, record, &topic, &error, attempts, durability,
            )
            .await
        }
    }
}

/// The refusal in `not_taken`, or the cancellation.
fn refusal(not_taken: NotTaken) -> Result<Refused, Cancelled> {
    match not_taken {
        NotTaken::Cancelled | NotTaken::Broken(_) => Err(Cancelled),
        NotTaken::Refused(refused) => Ok(refused),
    }
}

/// Dead-letters `record` for the plugin whose follow-up Kafka refused for
/// good: producing it again cannot help, so it is not retried.
pub async fn dead_letter_refused(
    pipeline: &Pipeline,
    token: &CancellationToken,
    record: &OwnedMessage,
    snapshot: &Snapshot,
    refused: Refused,
    attempts: u32,
) -> Result<(), Cancelled> {
    let (topic, error) = refused_dead_letter(record, snapshot, refused);
    let producer = &pipeline.producer;
    let durability = dead_letter::Durability::Acknowledged;
    dead_letter::write(
        producer, token, record, &topic, &error, attempts, durability,
    )
    .await
}

/// The dead-letter topic and error of `record` for the plugin whose
/// follow-up Kafka refused for good.
pub fn refused_dead_letter(
    record: &OwnedMessage,
    snapshot: &Snapshot,
    refused: Refused,
) -> (String, RecordError) {
    let topic = snapshot
        .settings(&refused.plugin)
        .dead_letter_topic_for(record.topic());
    let error = RecordError::Handler {
        failure: Failure {
            kind: FailureKind::FollowUpRefused,
            message: refused.reason(),
        },
        plugin: refused.plugin,
    };
    (topic, error)
}
