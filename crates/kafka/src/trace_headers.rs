//! A record's trace context as its Kafka headers carry it: read (names as
//! bytes, since a header name need not be UTF-8), pinned from a structured
//! CloudEvent's attributes into the headers, and made anew for a record
//! `eddy replay` republishes.

use eddy_core::event::Place;
use eddy_core::trace::{self, Carried, RecordTrace, TRACEPARENT, TRACESTATE, TraceParent};
use rdkafka::Message;
use rdkafka::message::{Header, OwnedMessage};

use crate::headers;

/// Where `record` is, borrowed from it.
pub fn place(record: &OwnedMessage) -> Place<'_> {
    Place {
        topic: record.topic(),
        partition: record.partition(),
        offset: record.offset(),
        key: record.key(),
    }
}

/// The trace context `record`'s headers carry: `traceparent` (else
/// CloudEvents' `ce_traceparent`) and `tracestate`.
pub fn carried(record: &OwnedMessage) -> Carried<'_> {
    let mut carried = Carried::default();
    let Some(found) = record.headers() else {
        return carried;
    };
    let mut ce_parent = None;
    for (name, value) in headers::each(found) {
        let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
            continue;
        };
        if name.eq_ignore_ascii_case(TRACEPARENT.as_bytes()) {
            carried.parent = Some(value);
        } else if name.eq_ignore_ascii_case(TRACESTATE.as_bytes()) {
            carried.state = Some(value);
        } else if ce_parent.is_none() && name.eq_ignore_ascii_case(b"ce_traceparent") {
            ce_parent = Some(value);
        }
    }
    carried.parent = carried.parent.or(ce_parent);
    carried
}

/// `record`'s trace (see [`trace::of_record`]), and the `traceparent` it
/// carried that is not W3C's shape, if any (with why).
pub fn of_record(
    record: &OwnedMessage,
    metadata: Option<&[(String, String)]>,
) -> (RecordTrace, Option<(String, &'static str)>) {
    trace::of_record(place(record), carried(record), metadata)
}

/// `record`, with the `traceparent` (and `tracestate`) of its event's
/// `metadata` (a structured CloudEvent's extension attributes) added to
/// its headers when they carry none: every later step reads the context
/// from the headers alone.
pub fn pin_to_headers(mut record: OwnedMessage, metadata: &[(String, String)]) -> OwnedMessage {
    let named = |key: &str| metadata.iter().find(|(name, _)| name == key);
    let Some((_, parent)) = named(TRACEPARENT) else {
        return record;
    };
    let carried = record.headers().is_some_and(|headers| {
        headers::each(headers).any(|(name, _)| {
            name.eq_ignore_ascii_case(TRACEPARENT.as_bytes())
                || name.eq_ignore_ascii_case(b"ce_traceparent")
        })
    });
    if carried {
        return record;
    }
    let mut headers = record.detach_headers().unwrap_or_default().insert(Header {
        key: TRACEPARENT,
        value: Some(parent),
    });
    if let Some((_, state)) = named(TRACESTATE) {
        headers = headers.insert(Header {
            key: TRACESTATE,
            value: Some(state),
        });
    }
    record.replace_headers(Some(headers))
}

/// The `traceparent` of a record `eddy replay` republishes to `topic`: a
/// PRODUCER span of a new trace, linked to the record's own context
/// (exported if recorded).
pub fn republished(record: &OwnedMessage, topic: &str) -> String {
    let (trace, _) = of_record(record, None);
    let span = TraceParent {
        trace_id: trace.trace_id,
        span_id: trace::new_span_id(),
        sampled: trace.sampled,
    };
    if trace.sampled && eddy_trace::is_on() {
        eddy_trace::republish_span(&span, trace.link, topic);
    }
    span.header()
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedHeaders;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn record(headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            rdkafka::Timestamp::NotAvailable,
            0,
            7,
            headers,
        )
    }

    #[test]
    fn a_record_continues_the_trace_its_traceparent_or_ce_traceparent_header_names() {
        let parent = TraceParent::parse(VALID).unwrap();
        for name in ["traceparent", "ce_traceparent", "TraceParent"] {
            let headers = OwnedHeaders::new().insert(Header {
                key: name,
                value: Some(VALID),
            });
            let (trace, malformed) = of_record(&record(Some(headers)), None);
            assert!(malformed.is_none(), "{name}");
            assert_eq!(trace.trace_id, parent.trace_id, "{name}");
            assert_eq!(trace.parent, Some(parent.span_id), "{name}");
        }
        let (bare, _) = of_record(&record(None), None);
        assert_ne!(bare.trace_id, parent.trace_id);
    }

    #[test]
    fn a_structured_cloud_events_context_is_pinned_to_headers_once() {
        let metadata = [("traceparent".to_string(), VALID.to_string())];
        let pinned = pin_to_headers(record(None), &metadata);
        assert_eq!(carried(&pinned).parent, Some(VALID));
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(other),
        });
        let kept = pin_to_headers(record(Some(headers)), &metadata);
        assert_eq!(carried(&kept).parent, Some(other));
    }
}
