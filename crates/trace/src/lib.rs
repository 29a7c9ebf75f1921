//! OpenTelemetry export of eddy's spans over OTLP/HTTP (protobuf), off by
//! default. Switched on by the standard variables
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`) or
//! `[telemetry] endpoint`; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` switch it off again. `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (or their
//! `[telemetry]` keys) name the service and choose what is sampled.
//!
//! Spans are built here whole, with the ids `eddy_core::trace` derived, as the
//! SDK's `SpanData`, and handed to the OTLP exporter of the standard crate.
//! A handler thread never waits for export: a finished span is put on a
//! bounded queue, or dropped and counted (`eddy_spans_dropped_total`) when
//! the queue is full because the collector is slow or away. One thread
//! sends the queue in batches.
//!
//! The exporter's HTTP client is eddy's own (`http`).
//!
//! # Layout
//! - this file: starting the export, the queue and its sending thread, and
//!   the spans: [`consumed`] (a plugin's handling of a record),
//!   [`produced`] (a follow-up), [`republish_span`] (`eddy replay`);
//! - `http`: the exporter's plain HTTP/1.1 client.
//!
//! # Invariant
//! A thread that handles records never waits here: a span is queued
//! without blocking, or dropped and counted.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use opentelemetry::trace::{
    Event as SpanEvent, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

mod http;

use eddy_core::config::telemetry::{self, TelemetryConfig};
use eddy_core::metrics;
use eddy_core::trace::{Consumed, FollowUpTrace, TraceParent};

use crate::http::PlainHttp;

/// Spans a batch holds at most.
const BATCH: usize = 512;
/// A text attribute's bytes at most (a record's key, ids, a topic name, a
/// handler's reason): they come from records, and a span is kept until it
/// is sent. Longer ones are cut and end in `…`.
const MAX_TEXT: usize = 256;
/// A guest log line's bytes at most in a span (the log itself has the 100
/// lines an event may log, each up to 4 KiB).
const MAX_LOG_TEXT: usize = 1024;
/// Bytes of attributes the queue holds at most, whatever the number of
/// spans: past it spans are dropped and counted.
const MAX_QUEUED_BYTES: usize = 16 << 20;

/// Bytes of attributes the queue holds now.
static QUEUED_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// How often failed exports are said again.
const SAY_AGAIN: Duration = Duration::from_secs(60);

/// The running export.
struct Export {
    queue: SyncSender<Message>,
    group: String,
    scope: InstrumentationScope,
}

enum Message {
    /// A span, and the bytes of its attributes.
    Span(Box<SpanData>, usize),
    /// Send what is queued, then answer.
    Flush(SyncSender<()>),
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// Whether spans are exported.
pub fn is_on() -> bool {
    EXPORT.get().is_some()
}

/// Starts exporting spans if `config` and the environment say so; `group`
/// is the consumer group spans name. Once per process.
pub fn start(config: &TelemetryConfig, group: &str) -> anyhow::Result<()> {
    let Some(settings) = telemetry::settings(config).map_err(anyhow::Error::msg)? else {
        return Ok(());
    };
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.clone())
        .with_http_client(PlainHttp)
        .build()
        .context("cannot make the OTLP span exporter")?;
    exporter.set_resource(&resource);
    let (queue, queued) = mpsc::sync_channel(settings.queue);
    let delay = settings.delay;
    std::thread::Builder::new()
        .name("eddy-spans".into())
        .spawn(move || send_batches(&exporter, &queued, delay))
        .context("cannot start the span export thread")?;
    let export = Export {
        queue,
        group: group.to_string(),
        scope: InstrumentationScope::builder("eddy")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    };
    let _ = EXPORT.set(export);
    eddy_core::trace::exporting(settings.sampler);
    tracing::info!(
        endpoint = settings.endpoint,
        service = settings.service_name,
        "exporting spans over OTLP/HTTP"
    );
    Ok(())
}

/// Sends what is queued, waiting at most `within`: at shutdown.
pub fn flush(within: Duration) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    let (done, flushed) = mpsc::sync_channel(1);
    if export.queue.send(Message::Flush(done)).is_ok() && flushed.recv_timeout(within).is_err() {
        tracing::warn!("spans not all sent to the collector within {within:?}");
    }
}

fn queue(span: SpanData) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    use std::sync::atomic::Ordering;
    let bytes = span_bytes(&span);
    if QUEUED_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_QUEUED_BYTES {
        QUEUED_BYTES.fetch_sub(bytes, Ordering::Relaxed);
        metrics::spans_dropped("queue-full", 1);
        return;
    }
    let dropped = match export.queue.try_send(Message::Span(Box::new(span), bytes)) {
        Ok(()) => return,
        Err(TrySendError::Full(_)) => "queue-full",
        Err(TrySendError::Disconnected(_)) => "export-stopped",
    };
    QUEUED_BYTES.fetch_sub(bytes, Ordering::Relaxed);
    metrics::spans_dropped(dropped, 1);
}

/// About what a span's attributes and events' attributes take.
fn span_bytes(span: &SpanData) -> usize {
    let of = |attributes: &[KeyValue]| -> usize {
        attributes
            .iter()
            .map(|kv| kv.key.as_str().len() + kv.value.as_str().len() + 16)
            .sum()
    };
    256 + of(&span.attributes)
        + span
            .events
            .iter()
            .map(|event| 64 + event.name.len() + of(&event.attributes))
            .sum::<usize>()
}

/// `value` as an attribute: at most `max` bytes, cut on a character and
/// ending in `…` if it was longer.
fn capped(value: &str, max: usize) -> opentelemetry::Value {
    if value.len() <= max {
        return opentelemetry::Value::String(value.to_string().into());
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    opentelemetry::Value::String(format!("{}…", &value[..end]).into())
}

fn send_batches(
    exporter: &opentelemetry_otlp::SpanExporter,
    queued: &Receiver<Message>,
    delay: Duration,
) {
    let mut said = None::<Instant>;
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = queued.recv() {
        let deadline = Instant::now() + delay;
        let mut next = Some(first);
        let mut flushed = None;
        while let Some(message) = next.take() {
            match message {
                Message::Span(span, bytes) => {
                    QUEUED_BYTES.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                    batch.push(*span);
                }
                Message::Flush(done) => {
                    flushed = Some(done);
                    break;
                }
            }
            if batch.len() >= BATCH {
                break;
            }
            match queued.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(message) => next = Some(message),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        if !batch.is_empty() {
            let count = batch.len();
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            match futures::executor::block_on(exporter.export(spans)) {
                Ok(()) => metrics::spans_exported(count),
                Err(e) => {
                    metrics::spans_dropped("export-failed", count);
                    if said.is_none_or(|at| at.elapsed() >= SAY_AGAIN) {
                        said = Some(Instant::now());
                        tracing::warn!(
                            "cannot send {count} spans to the collector: {e}; they are \
                             dropped (eddy_spans_dropped_total), events flow on; said again \
                             at most once a minute"
                        );
                    }
                }
            }
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn span_context(trace_id: [u8; 16], span_id: [u8; 8], remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::SAMPLED,
        remote,
        TraceState::NONE,
    )
}

fn text(value: &str) -> opentelemetry::Value {
    capped(value, MAX_TEXT)
}

/// The CONSUMER span of one plugin's handling of one record.
fn consumer_span(consumed: Consumed<'_>) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    let (place, handling) = (consumed.place, consumed.handling);
    let topic = place.topic;
    let mut attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.destination.name", text(topic)),
        KeyValue::new(
            "messaging.destination.partition.id",
            place.partition.to_string(),
        ),
        KeyValue::new("messaging.kafka.offset", place.offset),
        KeyValue::new("messaging.consumer.group.name", text(&export.group)),
        KeyValue::new("eddy.attempts", i64::from(consumed.attempts)),
    ];
    if let Some(key) = place.key {
        attributes.push(KeyValue::new(
            "messaging.kafka.message.key",
            text(&String::from_utf8_lossy(
                &key[..key.len().min(MAX_TEXT + 4)],
            )),
        ));
    }
    if let Some((name, version)) = consumed.plugin {
        attributes.push(KeyValue::new("eddy.plugin", text(name)));
        attributes.push(KeyValue::new("eddy.plugin.version", text(version)));
    }
    if let Some(event) = consumed.event {
        attributes.push(KeyValue::new("eddy.event_id", text(&event.event_id)));
        attributes.push(KeyValue::new("eddy.event_type", text(&event.event_type)));
        if let Some(causation) = &event.causation_id {
            attributes.push(KeyValue::new("eddy.causation_id", text(causation)));
        }
        let correlation = event.correlation_id.as_ref().unwrap_or(&event.event_id);
        attributes.push(KeyValue::new("eddy.correlation_id", text(correlation)));
    }
    let mut events = SpanEvents::default();
    for retried in consumed.retried {
        let mut attributes = vec![KeyValue::new("eddy.attempt", i64::from(retried.attempt))];
        if let Some((kind, message)) = &retried.failure {
            attributes.push(KeyValue::new("error.type", *kind));
            attributes.push(KeyValue::new("exception.message", text(message)));
        }
        events
            .events
            .push(SpanEvent::new("retry", retried.at, attributes, 0));
    }
    for log in consumed.logs {
        let attributes = vec![
            KeyValue::new("log.level", log.level),
            KeyValue::new("log.message", capped(&log.message, MAX_LOG_TEXT)),
        ];
        events
            .events
            .push(SpanEvent::new("guest.log", log.at, attributes, 0));
    }
    events.events.sort_by_key(|event| event.timestamp);
    let status = match consumed.dead_lettered {
        Some((kind, reason)) => {
            attributes.push(KeyValue::new("error.type", text(kind)));
            attributes.push(KeyValue::new("eddy.outcome", "dead-lettered"));
            Status::error(reason)
        }
        None => {
            attributes.push(KeyValue::new("eddy.outcome", "handled"));
            Status::Unset
        }
    };
    let mut links = SpanLinks::default();
    if let Some(original) = handling.trace.link {
        links
            .links
            .push(Link::with_context(original_context(original)));
    }
    let trace = &handling.trace;
    queue(SpanData {
        span_context: span_context(trace.trace_id, handling.span_id, false),
        parent_span_id: trace.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: trace.parent.is_some(),
        span_kind: SpanKind::Consumer,
        name: Cow::Owned(format!("process {topic}")),
        start_time: consumed.started,
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events,
        links,
        status,
        instrumentation_scope: export.scope.clone(),
    });
}

fn original_context(original: TraceParent) -> SpanContext {
    let flags = if original.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from_bytes(original.trace_id),
        SpanId::from_bytes(original.span_id),
        flags,
        true,
        TraceState::NONE,
    )
}

/// The PRODUCER span of one follow-up, under its handling span.
fn producer_span(trace: &FollowUpTrace, topic: &str, event_id: &str) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    let mut attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation.type", "send"),
        KeyValue::new("messaging.operation.name", "send"),
        KeyValue::new("messaging.destination.name", text(topic)),
        KeyValue::new("eddy.event_id", text(event_id)),
    ];
    if let Some(ids) = &trace.ids {
        attributes.push(KeyValue::new("eddy.causation_id", text(&ids.causation)));
        attributes.push(KeyValue::new("eddy.correlation_id", text(&ids.correlation)));
    }
    queue(SpanData {
        span_context: span_context(trace.parent.trace_id, trace.parent.span_id, false),
        parent_span_id: SpanId::from_bytes(trace.handling),
        parent_span_is_remote: false,
        span_kind: SpanKind::Producer,
        name: Cow::Owned(format!("send {topic}")),
        start_time: trace.at,
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: export.scope.clone(),
    });
}

/// The PRODUCER span of a record `eddy replay` republishes: the root of a
/// new trace, linked to the record's original context.
pub fn republish_span(span: &TraceParent, original: Option<TraceParent>, topic: &str) {
    let Some(export) = EXPORT.get() else {
        return;
    };
    let mut links = SpanLinks::default();
    if let Some(original) = original {
        links
            .links
            .push(Link::with_context(original_context(original)));
    }
    let now = SystemTime::now();
    queue(SpanData {
        span_context: span_context(span.trace_id, span.span_id, false),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Producer,
        name: Cow::Owned(format!("send {topic}")),
        start_time: now,
        end_time: now,
        attributes: vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", text(topic)),
            KeyValue::new("eddy.replayed", true),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links,
        status: Status::Unset,
        instrumentation_scope: export.scope.clone(),
    });
}

/// Exports the handling span described, if it is recorded.
pub fn consumed(consumed: Consumed<'_>) {
    if consumed.handling.is_recorded() {
        consumer_span(consumed);
    }
}

/// Exports a follow-up's PRODUCER span, if recorded, as it is handed to
/// Kafka.
pub fn produced(trace: &FollowUpTrace, topic: &str, event_id: &str) {
    if trace.ids.is_some() {
        producer_span(trace, topic, event_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_records_is_cut_on_a_character_with_a_mark() {
        assert_eq!(capped("short", 8).as_str(), "short");
        assert_eq!(capped("abcdefghij", 4).as_str(), "abcd…");
        // 'é' is two bytes: not cut in half.
        assert_eq!(capped("aaaé", 4).as_str(), "aaa…");
        let key = "k".repeat(600_000);
        assert!(text(&key).as_str().len() <= MAX_TEXT + '…'.len_utf8());
    }
}
