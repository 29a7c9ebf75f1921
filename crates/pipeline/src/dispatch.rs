//! Running a batch of one partition's records through their handlers, on a
//! blocking thread: one attempt per routed plugin, in order, until a record
//! needs more than that. Nothing here touches Kafka: what the handlers
//! published comes back to the partition's worker, which produces it.

use eddy_kafka::trace_headers;
use std::sync::Arc;
use std::time::SystemTime;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::RecordError;
use crate::snapshot::{Handler, Snapshot};
use eddy_core::envelope;
use eddy_core::event::{Delivery, Event};
use eddy_core::metrics::Tally;
use eddy_core::outcome::{Failure, FollowUp, Outcome};
use eddy_core::text::OneLine;
use eddy_core::trace;
use eddy_kafka::headers;
use eddy_sandbox::{Plugin, Runtime, Trigger, Warm};
use eddy_schema::{self, Unavailable};

/// The warm instances of one partition worker, by plugin name.
pub type Instances = std::collections::HashMap<String, Option<Warm>>;

/// One record after its first pass through the handlers.
pub struct Ran {
    pub record: OwnedMessage,
    /// The decoded event, or why the record is dead-lettered undecoded.
    pub event: Result<Arc<Event>, RecordError>,
    /// What the plugins that handled it so far published.
    pub handled: Vec<(Arc<Plugin>, Vec<FollowUp>)>,
    /// Where the pass stopped, if it did.
    pub stopped: Option<Stopped>,
}

/// The routed plugins a record's first pass did not finish: from the one
/// that failed its first attempt (with that failure) or is not loaded (no
/// failure) on.
#[derive(Default)]
pub struct Stopped {
    pub left: Vec<String>,
    pub failure: Option<Failure>,
    /// When the failed attempt began, and the guest log lines it left for
    /// its span.
    pub started: Option<SystemTime>,
    pub logs: Vec<trace::GuestLog>,
}

impl Ran {
    /// Every routed plugin handled the event on its first attempt.
    pub fn finished(&self) -> bool {
        self.event.is_ok() && self.stopped.is_none()
    }
}

/// What a batch's pass did.
pub struct Pass {
    pub ran: Vec<Ran>,
    /// The records after the last that ran, untouched.
    pub rest: Vec<OwnedMessage>,
    /// Why the first of `rest` could not be run yet: the schema registry,
    /// which its check needs, does not answer.
    pub waiting: Option<Unavailable>,
}

/// Runs `batch` (records of one partition, in order) through their
/// handlers, one attempt each, until a record needs more than that (a
/// failure, a dead letter), cannot be checked yet, or `token` is cancelled.
pub fn run_batch(
    runtime: &Runtime,
    snapshot: &Snapshot,
    token: &CancellationToken,
    batch: Vec<OwnedMessage>,
    instances: &mut Instances,
) -> Pass {
    let mut tally = Tally::default();
    let mut ran = Vec::with_capacity(batch.len());
    let mut records = batch.into_iter();
    // Every record of the batch is from one partition: the delivery handed
    // to the plugins is filled in per record, in place.
    let mut delivery = Delivery {
        topic: records
            .as_slice()
            .first()
            .map(|r| r.topic().to_string())
            .unwrap_or_default(),
        partition: 0,
        offset: 0,
        key: None,
        attempt: 1,
    };
    let mut waiting = None;
    for record in records.by_ref() {
        let one = match run_record(
            runtime,
            snapshot,
            record,
            &mut delivery,
            instances,
            &mut tally,
        ) {
            Ok(one) => one,
            Err(waits) => {
                waiting = Some(*waits);
                break;
            }
        };
        tally.consumed();
        let stop = !one.finished();
        ran.push(one);
        if stop || token.is_cancelled() {
            break;
        }
    }
    tally.flush(&delivery.topic);
    let (rest, waiting) = match waiting {
        Some((record, unavailable)) => (
            std::iter::once(record).chain(records).collect(),
            Some(unavailable),
        ),
        None => (records.collect(), None),
    };
    Pass { ran, rest, waiting }
}

/// One record's first pass; the record back, untouched, if its schema
/// check needs a registry that does not answer.
fn run_record(
    runtime: &Runtime,
    snapshot: &Snapshot,
    mut record: OwnedMessage,
    delivery: &mut Delivery,
    instances: &mut Instances,
    tally: &mut Tally,
) -> Result<Ran, Box<(OwnedMessage, Unavailable)>> {
    let (framed, decoded) = decode(snapshot, &record);
    let (record_trace, malformed) = trace_headers::of_record(
        &record,
        decoded.as_ref().ok().map(|event| event.metadata.as_slice()),
    );
    if let Some((text, why)) = malformed {
        tracing::debug!(
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset(),
            "traceparent {text:?} is not W3C's ({why}); the event starts a new trace"
        );
    }
    if let Ok(event) = &decoded {
        // A context the payload carries is pinned to the record's headers,
        // where retries and dead letters read it.
        record = trace_headers::pin_to_headers(record, &event.metadata);
    }
    let event = match decoded {
        Ok(event) => Arc::new(event),
        Err(error) => {
            return Ok(Ran {
                record,
                event: Err(error),
                handled: Vec::new(),
                stopped: None,
            });
        }
    };
    let routed = snapshot
        .router
        .plugins_for(record.topic(), &event.event_type);
    // Checked before any plugin sees it; an event no plugin sees is not.
    if !routed.is_empty() && !snapshot.schemas.is_off() {
        let checked = snapshot.schemas.check_in(
            record.topic(),
            &event.event_type,
            &event.version,
            &event.data,
            framed,
        );
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => {
                return Ok(Ran {
                    record,
                    event: Err(RecordError::Schema(refusal)),
                    handled: Vec::new(),
                    stopped: None,
                });
            }
            Err(unavailable) => return Err(Box::new((record, unavailable))),
        }
    }
    if routed.is_empty() {
        tally.skipped();
        tracing::debug!(
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset(),
            event_id = %OneLine(&event.event_id),
            event_type = %OneLine(&event.event_type),
            "no route; skipped"
        );
    }
    delivery.partition = record.partition();
    delivery.offset = record.offset();
    match (record.key(), &mut delivery.key) {
        (Some(key), Some(buffer)) => {
            buffer.clear();
            buffer.extend_from_slice(key);
        }
        (key, slot) => *slot = key.map(<[u8]>::to_vec),
    }
    let mut handled = Vec::new();
    let mut stopped = None;
    let left = |i: usize| routed[i..].iter().map(|p| p.to_string()).collect();
    for (i, &name) in routed.iter().enumerate() {
        let plugin = match snapshot.handler(name) {
            Some(Handler::Wasm(plugin)) => plugin,
            #[cfg(feature = "bench-native")]
            Some(Handler::Native) => {
                crate::bench_native::handle(&event);
                tally.handled(name, "native", []);
                continue;
            }
            None => {
                stopped = Some(Stopped {
                    left: left(i),
                    ..Stopped::default()
                });
                break;
            }
        };
        if !instances.contains_key(name) {
            instances.insert(name.to_string(), None);
        }
        let handling = trace::Handling::new(record_trace.clone(), name);
        let started = SystemTime::now();
        trace::collect_logs(&handling);
        let outcome = runtime.invoke(
            plugin,
            &snapshot.settings(name),
            Trigger {
                event: &event,
                delivery,
                handling: &handling,
                schemas: snapshot.follow_up_schemas(),
            },
            instances.get_mut(name),
        );
        let logs = trace::take_logs();
        match outcome {
            Outcome::Handled(follow_ups) => {
                tally.handled(
                    name,
                    plugin.hash(),
                    follow_ups.iter().map(|f| f.topic.as_str()),
                );
                tracing::debug!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    plugin = %name,
                    version = %plugin.hash(),
                    follow_ups = follow_ups.len(),
                    "handled"
                );
                eddy_trace::consumed(trace::Consumed {
                    place: trace_headers::place(&record),
                    event: Some(&event),
                    plugin: Some((name, plugin.hash())),
                    handling: &handling,
                    started,
                    retried: &[],
                    attempts: 1,
                    logs,
                    dead_lettered: None,
                });
                handled.push((plugin.clone(), follow_ups));
            }
            Outcome::Failed(failure) => {
                stopped = Some(Stopped {
                    left: left(i),
                    failure: Some(failure),
                    started: Some(started),
                    logs,
                });
                break;
            }
        }
    }
    Ok(Ran {
        record,
        event: Ok(event),
        handled,
        stopped,
    })
}

/// The schema id of the record's Confluent frame, if it has one, and the
/// record's event, or why it is not one.
fn decode(snapshot: &Snapshot, record: &OwnedMessage) -> (Option<u32>, Result<Event, RecordError>) {
    let max = snapshot.config.plugins.max_event_bytes;
    let size =
        headers::value_not_read(record).unwrap_or_else(|| record.payload().map_or(0, <[u8]>::len));
    if size > max {
        return (None, Err(RecordError::TooLarge { size, max }));
    }
    let hops = headers::hops(record.headers());
    let max_hops = snapshot.config.plugins.max_hops;
    if hops >= max_hops {
        return (
            None,
            Err(RecordError::Loop {
                hops,
                max: max_hops,
            }),
        );
    }
    let (framed, value) = eddy_schema::unframe(record.payload());
    let headers = headers::text_named(record.headers());
    let event = envelope::decode(value, headers).map_err(RecordError::Undecodable);
    (framed, event)
}
