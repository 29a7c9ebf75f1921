//! The slow way through: a record whose first pass stopped short is taken
//! to its end here — retried with backoff, or dead-lettered — while its
//! partition waits. Every wait selects on the worker's token.

use eddy_kafka::trace_headers;
use std::sync::Arc;
use std::time::SystemTime;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::dead_letter::{self, RecordError};
use crate::dispatch::Ran;
use crate::pipeline::Pipeline;
use crate::snapshot::{Handler, Snapshot};
use eddy_core::cancel::{Cancelled, pause};
use eddy_core::config::dead_letter_topic_for;
use eddy_core::event::{Delivery, Event};
use eddy_core::metrics::{self, Tally};
use eddy_core::outcome::{Failure, FailureKind, FollowUp, Outcome};
use eddy_core::policy::{self, Next};
use eddy_core::text::OneLine;
use eddy_core::trace;
use eddy_kafka::produce::{self, NotTaken, Refused};
use eddy_sandbox::runtime::Plugin;

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
                let (record_trace, _) = trace_headers::of_record(record, None);
                eddy_trace::consumed(trace::Consumed {
                    place: trace_headers::place(record),
                    event: None,
                    plugin: None,
                    handling: &trace::Handling::new(record_trace, ""),
                    started: SystemTime::now(),
                    retried: &[],
                    attempts: 0,
                    logs: Vec::new(),
                    dead_lettered: Some((error.reason(), error.to_string())),
                });
                let topic = dead_letter_topic_for(None, record.topic());
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
                &plugin.id,
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
    let (record_trace, _) = trace_headers::of_record(record, None);
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
        eddy_trace::consumed(trace::Consumed {
            place: trace_headers::place(record),
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
                let (runtime, plugin, settings, event, handling, schemas) = (
                    pipeline.runtime.clone(),
                    loaded.clone(),
                    settings.clone(),
                    event.clone(),
                    handling.clone(),
                    snapshot.follow_up_schemas().cloned(),
                );
                // Awaited even when the worker is told to stop: nothing of
                // a worker outlives it, and `timeout_ms` bounds the attempt.
                let ran = tokio::task::spawn_blocking(move || {
                    let trigger = eddy_sandbox::Trigger {
                        event: &event,
                        delivery: &delivery,
                        handling: &handling,
                        schemas: schemas.as_ref(),
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
                consumed(span, loaded.hash(), attempt, None);
                let count = follow_ups.len();
                let mut tally = Tally::default();
                tally.handled(
                    plugin,
                    loaded.hash(),
                    follow_ups.iter().map(|f| f.topic.as_str()),
                );
                if let Some(effects) = deferred.as_mut() {
                    effects.push(Effect::FollowUps {
                        plugin: loaded.clone(),
                        follow_ups,
                        attempts: attempt,
                    });
                    tally.flush(record.topic());
                    tracing::debug!(attempt, follow_ups = count, version = %loaded.hash(), "handled");
                    return Ok(());
                }
                let mut sent = Vec::new();
                let producer = &pipeline.producer;
                let produced =
                    produce::produce(producer, token, record, &loaded.id, follow_ups, &mut sent)
                        .await;
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
                tracing::debug!(attempt, follow_ups = count, version = %loaded.hash(), "handled");
                return Ok(());
            }
            Outcome::Failed(failure) => {
                match policy::next(&failure, attempt, settings.max_retries, waits) {
                    Next::WaitForRegistry(delay) => {
                        // The registry's fault, not the event's: the attempt
                        // is made again, uncounted, until it answers.
                        waits += 1;
                        waiting.get_or_insert_with(eddy_schema::Waiting::new);
                        tracing::warn!(
                            attempt,
                            "a follow-up's schema is not to be had, trying again in {delay:?}: {}",
                            failure.message
                        );
                        pause(token, delay).await?;
                    }
                    Next::Retry(delay) => {
                        metrics::handler_failed(plugin, loaded.hash(), failure.kind.as_str());
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
                    Next::DeadLetter => {
                        metrics::handler_failed(plugin, loaded.hash(), failure.kind.as_str());
                        let error = RecordError::Handler {
                            plugin: plugin.to_string(),
                            failure,
                        };
                        consumed(span, loaded.hash(), attempt, Some(&error));
                        let topic = dead_letter_topic;
                        return dead_letter(
                            pipeline, token, record, topic, error, attempt, deferred,
                        )
                        .await;
                    }
                }
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
