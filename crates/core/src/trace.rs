//! Trace context: the W3C `traceparent` of each record read, a
//! `traceparent` on every follow-up and dead letter written, and
//! OpenTelemetry spans for both when export is switched on (built and sent by
//! the `eddy-trace` crate).
//!
//! A record's context comes from its Kafka header `traceparent` (what the
//! OpenTelemetry Kafka instrumentations write), else from the CloudEvents
//! distributed-tracing extension (`ce_traceparent` in binary mode, the
//! `traceparent` attribute in structured mode, which the decoder puts in
//! the event's metadata: `eddy-kafka`'s `trace_headers::pin_to_headers` copies it to the record's
//! headers in memory, so every later step reads the headers alone). A
//! record without one, or with one that is not W3C's shape, starts a new
//! trace; `eddy replay` starts a new one linked to the record's own.
//!
//! Each plugin's handling of a record is a CONSUMER span; each follow-up a
//! PRODUCER span under it, whose id is the follow-up's `traceparent`; a
//! dead letter's `traceparent` names the span that gave up on the record.
//! The ids are derived, not kept: a new trace's id and a handling span's
//! id are keyed hashes (the key drawn once per process) of the record's
//! place and the plugin's name, so the first pass on the batch thread, the
//! retries on the worker and the dead letter written after them all name
//! the same span without carrying it between them. Follow-up span ids are
//! random.
//!
//! Propagation costs a header scan and a hash per record and a formatted
//! header per follow-up; it runs whether export is on or not, so a chain
//! of services keeps its trace through an eddy that exports nothing.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::config::telemetry::Sampler;
use crate::event::{Event, Place};

/// The header a W3C trace context travels in.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// Guest log lines kept per attempt as span events.
const MAX_LOGS: usize = 100;

/// A W3C `traceparent`: trace id, parent span id, sampled flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value as W3C Trace Context level 1 has it:
    /// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero; a later
    /// version may append fields after the flags.
    pub fn parse(text: &str) -> Result<TraceParent, &'static str> {
        let mut parts = text.split('-');
        let version = parts.next().unwrap_or_default();
        let (Some(trace), Some(span), Some(flags)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("not version-traceid-parentid-flags");
        };
        let version = hex::<1>(version).ok_or("the version is not 2 lowercase hex digits")?;
        if version[0] == 0xff {
            return Err("version ff is invalid");
        }
        if version[0] == 0 && parts.next().is_some() {
            return Err("version 00 has four fields");
        }
        let trace_id = hex::<16>(trace).ok_or("the trace id is not 32 lowercase hex digits")?;
        let span_id = hex::<8>(span).ok_or("the parent id is not 16 lowercase hex digits")?;
        let flags = hex::<1>(flags).ok_or("the flags are not 2 lowercase hex digits")?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err("an id is all zeros");
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The `traceparent` value.
    pub fn header(&self) -> String {
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &self.span_id);
        text.push_str(if self.sampled { "-01" } else { "-00" });
        text
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Set by `eddy replay`: a replayed record's own context is linked to, not
/// continued; its run starts a new trace.
static REPLAYING: AtomicBool = AtomicBool::new(false);

/// Makes every record read from here on start a new trace linked to its
/// own (`eddy replay`).
pub fn link_instead_of_continuing() {
    REPLAYING.store(true, Ordering::Relaxed);
}

/// The trace a record's handling belongs to.
#[derive(Clone, Debug)]
pub struct RecordTrace {
    pub trace_id: [u8; 16],
    /// The span the record was written under, if it said.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    /// Its `tracestate`, passed on to what it causes.
    pub state: Option<String>,
    /// A replayed record's original context.
    pub link: Option<TraceParent>,
    /// A keyed hash of the record's place, what derived ids start from.
    place: u64,
}

/// The trace context a record carries in its headers: `traceparent` (or
/// CloudEvents' `ce_traceparent`) and `tracestate`, as found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried<'a> {
    pub parent: Option<&'a str>,
    pub state: Option<&'a str>,
}

/// The trace of the record at `place`, which carried `carried` (its
/// event's `metadata` is looked in when the headers carry none), and the
/// `traceparent` it carried that is not W3C's shape, if any (with why).
pub fn of_record(
    place: Place<'_>,
    carried: Carried<'_>,
    metadata: Option<&[(String, String)]>,
) -> (RecordTrace, Option<(String, &'static str)>) {
    let place = keyed(|h| {
        h.write(place.topic.as_bytes());
        h.write_i32(place.partition);
        h.write_i64(place.offset);
    });
    let from_metadata = |key: &str| {
        metadata?
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    let found = carried.parent.or_else(|| from_metadata(TRACEPARENT));
    let state = carried.state.or_else(|| from_metadata(TRACESTATE));
    let mut malformed = None;
    let parent = match found.map(TraceParent::parse) {
        Some(Ok(parent)) => Some(parent),
        Some(Err(why)) => {
            malformed = found.map(|text| (text.chars().take(80).collect(), why));
            None
        }
        None => None,
    };
    let fresh = |sampled| RecordTrace {
        trace_id: root_id(place),
        parent: None,
        sampled,
        state: None,
        link: None,
        place,
    };
    let trace = match parent {
        Some(parent) if REPLAYING.load(Ordering::Relaxed) => RecordTrace {
            link: Some(parent),
            ..fresh(root_sampled(&root_id(place)))
        },
        Some(parent) => RecordTrace {
            trace_id: parent.trace_id,
            parent: Some(parent.span_id),
            sampled: sampled(parent.sampled, &parent.trace_id),
            state: state.and_then(bounded_state),
            link: None,
            place,
        },
        None => fresh(root_sampled(&root_id(place))),
    };
    (trace, malformed)
}

/// W3C's limits on what a `tracestate` passes on: 32 list members, and
/// 512 characters (where more, members over 128 go first, then the last).
const MAX_STATE_MEMBERS: usize = 32;
const MAX_STATE_CHARS: usize = 512;
const LONG_STATE_MEMBER: usize = 128;

/// The `tracestate` a record's effects carry on: `text`'s members, within
/// W3C's limits, members that are not printable ASCII `key=value` left
/// out. A record's header could be any size; what eddy copies onto each
/// follow-up (and span) is not. `None` when nothing is left.
pub fn bounded_state(text: &str) -> Option<String> {
    let well_formed =
        |member: &&str| member.contains('=') && member.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let mut members: Vec<&str> = text
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .filter(well_formed)
        .take(MAX_STATE_MEMBERS)
        .collect();
    let length = |members: &[&str]| {
        members.iter().map(|m| m.len()).sum::<usize>() + members.len().saturating_sub(1)
    };
    if length(&members) > MAX_STATE_CHARS {
        members.retain(|m| m.len() <= LONG_STATE_MEMBER);
    }
    while length(&members) > MAX_STATE_CHARS {
        members.pop();
    }
    (!members.is_empty()).then(|| members.join(","))
}

static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// Spans are exported from here on, sampled by `sampler`: said once, by
/// the exporter as it starts.
pub fn exporting(sampler: Sampler) {
    let _ = SAMPLER.set(sampler);
}

/// Whether spans are exported.
pub fn is_exported() -> bool {
    SAMPLER.get().is_some()
}

/// Whether a new trace with this id is recorded. With export off, none is:
/// its `traceparent`s say so.
pub fn root_sampled(trace_id: &[u8; 16]) -> bool {
    SAMPLER.get().is_some_and(|sampler| sampler.root(trace_id))
}

/// Whether a trace a record continues is recorded here, its writer having
/// said `parent_sampled`. With export off, the writer's word is passed on.
pub fn sampled(parent_sampled: bool, trace_id: &[u8; 16]) -> bool {
    match SAMPLER.get() {
        Some(sampler) if !sampler.parent_based => sampler.root(trace_id),
        _ => parent_sampled,
    }
}

/// A new span id: random, never zero.
pub fn new_span_id() -> [u8; 8] {
    rand::random::<u64>().max(1).to_be_bytes()
}

fn salt() -> &'static RandomState {
    static SALT: OnceLock<RandomState> = OnceLock::new();
    SALT.get_or_init(RandomState::new)
}

fn keyed(write: impl FnOnce(&mut std::hash::DefaultHasher)) -> u64 {
    let mut hasher = salt().build_hasher();
    write(&mut hasher);
    hasher.finish()
}

/// A new trace's id for the record at `place`.
fn root_id(place: u64) -> [u8; 16] {
    let high = keyed(|h| h.write_u64(place ^ 0x7472_6163_6568_6967));
    let low = keyed(|h| h.write_u64(place ^ 0x7472_6163_656c_6f77)).max(1);
    let mut id = [0; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// One plugin's handling of one record: the CONSUMER span.
#[derive(Clone, Debug)]
pub struct Handling {
    pub trace: RecordTrace,
    pub span_id: [u8; 8],
}

impl Handling {
    /// The handling of the record traced `trace` by `plugin` (empty for a
    /// record no plugin got: undecodable, too large, a loop).
    pub fn new(trace: RecordTrace, plugin: &str) -> Handling {
        let id = keyed(|h| {
            h.write_u64(trace.place);
            h.write(plugin.as_bytes());
        });
        Handling {
            trace,
            span_id: id.max(1).to_be_bytes(),
        }
    }

    /// The `traceparent` of what this span writes itself (a dead letter).
    pub fn child_header(&self) -> String {
        TraceParent {
            trace_id: self.trace.trace_id,
            span_id: self.span_id,
            sampled: self.trace.sampled,
        }
        .header()
    }

    /// Whether its spans are exported.
    pub fn is_recorded(&self) -> bool {
        self.trace.sampled && is_exported()
    }

    /// The trace of a follow-up published now: a PRODUCER span under this
    /// one. `ids` gives its causation and correlation ids, asked for only
    /// if the span is recorded.
    pub fn follow_up(&self, ids: impl FnOnce() -> (String, String)) -> FollowUpTrace {
        let ids = self.is_recorded().then(|| {
            let (causation, correlation) = ids();
            Box::new(ProducerIds {
                causation,
                correlation,
            })
        });
        FollowUpTrace {
            ids,
            parent: TraceParent {
                trace_id: self.trace.trace_id,
                span_id: new_span_id(),
                sampled: self.trace.sampled,
            },
            handling: self.span_id,
            state: self.trace.state.clone(),
            at: SystemTime::now(),
        }
    }
}

/// A follow-up's trace: its PRODUCER span, whose id its `traceparent`
/// carries, under the handling span.
#[derive(Clone, Debug)]
pub struct FollowUpTrace {
    /// Its causation and correlation ids, when recorded.
    pub ids: Option<Box<ProducerIds>>,
    pub parent: TraceParent,
    pub handling: [u8; 8],
    pub state: Option<String>,
    pub at: SystemTime,
}

#[derive(Clone, Debug)]
pub struct ProducerIds {
    pub causation: String,
    pub correlation: String,
}

impl FollowUpTrace {
    /// The follow-up's `traceparent`.
    pub fn header(&self) -> String {
        self.parent.header()
    }
}

/// A guest's `log` line, as a span event.
pub struct GuestLog {
    pub at: SystemTime,
    pub level: &'static str,
    pub message: String,
}

thread_local! {
    /// The guest log lines of the attempt running on this thread, while
    /// its span is recorded.
    static LOGS: RefCell<Option<Vec<GuestLog>>> = const { RefCell::new(None) };
}

/// Keeps the guest log lines of the attempt about to run on this thread,
/// if its span is recorded.
pub fn collect_logs(handling: &Handling) {
    if handling.is_recorded() {
        LOGS.with(|logs| *logs.borrow_mut() = Some(Vec::new()));
    }
}

/// A guest's log line, kept if its attempt's span is recorded.
pub fn guest_log(level: &'static str, message: &str) {
    LOGS.with(|logs| {
        if let Some(logs) = logs.borrow_mut().as_mut()
            && logs.len() < MAX_LOGS
        {
            logs.push(GuestLog {
                at: SystemTime::now(),
                level,
                message: message.to_string(),
            });
        }
    });
}

/// The log lines kept since [`collect_logs`], which stops keeping them.
pub fn take_logs() -> Vec<GuestLog> {
    LOGS.with(|logs| logs.borrow_mut().take().unwrap_or_default())
}

/// What an attempt came to, for the handling span.
pub struct Attempted {
    pub at: SystemTime,
    pub attempt: u32,
    /// The failure's kind and message, if it failed.
    pub failure: Option<(&'static str, String)>,
}

/// The handling span of one record by one plugin (or by none), once its
/// fate is settled: exported if recorded.
pub struct Consumed<'a> {
    pub place: Place<'a>,
    pub event: Option<&'a Event>,
    /// Name and version.
    pub plugin: Option<(&'a str, &'a str)>,
    pub handling: &'a Handling,
    pub started: SystemTime,
    /// Each attempt that failed and was retried, in order.
    pub retried: &'a [Attempted],
    pub attempts: u32,
    pub logs: Vec<GuestLog>,
    /// Why it was dead-lettered, if it was: the error type, and the reason.
    pub dead_lettered: Option<(&'a str, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracestate_is_kept_within_w3cs_limits() {
        assert_eq!(
            bounded_state("vendor=a, other=b").as_deref(),
            Some("vendor=a,other=b")
        );
        assert_eq!(bounded_state(""), None);
        assert_eq!(bounded_state("no-equals,\u{1b}[31m=x"), None);
        let many: Vec<String> = (0..40).map(|n| format!("k{n}=v")).collect();
        let kept = bounded_state(&many.join(",")).expect("members");
        assert_eq!(kept.split(',').count(), 32);
        assert!(kept.starts_with("k0=v,k1=v"));
        // 600 KB in one member: it goes, the short ones stay.
        let huge = format!("a=1,big={},b=2", "x".repeat(600_000));
        assert_eq!(bounded_state(&huge).as_deref(), Some("a=1,b=2"));
        // Short members past 512 characters: the last go.
        let long: Vec<String> = (0..32)
            .map(|n| format!("k{n:02}={}", "v".repeat(30)))
            .collect();
        let kept = bounded_state(&long.join(",")).expect("members");
        assert!(kept.len() <= 512, "{}", kept.len());
        assert!(kept.starts_with("k00="));
    }

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The place of a record of topic `t`, partition 0, at `offset`.
    fn at(offset: i64) -> Place<'static> {
        Place {
            topic: "t",
            partition: 0,
            offset,
            key: None,
        }
    }

    const NONE: Carried<'static> = Carried {
        parent: None,
        state: None,
    };

    #[test]
    fn a_w3c_traceparent_parses_and_prints_back() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert!(parent.sampled);
        assert_eq!(
            parent.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(parent.header(), VALID);
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceParent::parse(&unsampled).unwrap().sampled);
    }

    #[test]
    fn what_is_not_w3c_shape_is_refused() {
        for bad in [
            "",
            "00-x",
            "00-1-2-01",
            &VALID.to_uppercase(),
            &VALID.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &VALID.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &VALID.replacen("00", "ff", 1),
            &format!("{VALID}-extra"),
            &VALID.replace("-01", "-1"),
            &VALID.replace("4bf9", "+bf9"),
        ] {
            assert!(TraceParent::parse(bad).is_err(), "{bad:?}");
        }
        // A later version may append fields.
        let later = format!("{}-what-comes-later", VALID.replacen("00", "01", 1));
        assert!(TraceParent::parse(&later).is_ok());
    }

    #[test]
    fn derived_ids_are_stable_per_record_and_plugin_and_differ_between() {
        let (trace, malformed) = of_record(at(7), NONE, None);
        assert!(malformed.is_none());
        assert_eq!(trace.parent, None);
        let (again, _) = of_record(at(7), NONE, None);
        assert_eq!(trace.trace_id, again.trace_id);
        let a = Handling::new(trace.clone(), "a");
        assert_eq!(a.span_id, Handling::new(again, "a").span_id);
        assert_ne!(a.span_id, Handling::new(trace, "b").span_id);
    }

    #[test]
    fn a_record_continues_the_trace_its_header_or_metadata_names() {
        let carried = Carried {
            parent: Some(VALID),
            state: None,
        };
        let (trace, _) = of_record(at(7), carried, None);
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(trace.trace_id, parent.trace_id);
        assert_eq!(trace.parent, Some(parent.span_id));
        let metadata = [("traceparent".to_string(), VALID.to_string())];
        let (trace, _) = of_record(at(8), NONE, Some(&metadata));
        assert_eq!(trace.trace_id, parent.trace_id);
        let metadata = [("traceparent".to_string(), "00-x".to_string())];
        let (trace, malformed) = of_record(at(8), NONE, Some(&metadata));
        assert_ne!(trace.trace_id, parent.trace_id);
        assert_eq!(malformed.map(|(text, _)| text).as_deref(), Some("00-x"));
    }
}
