//! What a handler did, for native unit tests (`cargo test`).
//!
//! Each test thread has its own record, so tests run in parallel without
//! seeing each other's events. Call [`reset`] when a test handles several
//! events and wants to look at them one at a time.
//!
//! The recorder keeps the host's rules, so a test sees what eddy would do:
//! - what a handler published is dropped when it returns `Err` (through
//!   `#[eddy_sdk::handler]`, which marks where each event starts);
//! - a publish to a topic outside [`allow_publish_to`], past
//!   [`set_limits`]' count or bytes for one event, with an empty
//!   `event_type`, or whose `data` is not JSON fails with the host's error.
//!
//! The host fills in a follow-up's missing `event_id`, `timestamp`,
//! `causation_id` and `correlation_id` before it counts its bytes; the
//! recorder counts those as 36, 30, 36 and 36 bytes (a UUID, a time with
//! nanoseconds), and a missing `service_name` (the plugin's name) as none.
//!
//! For [`Event::data`] the recorder keeps the text as published; `eddy test`
//! runs the built `.wasm` through the host itself.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{Event, Level, PublishError};

/// One follow-up the handler published.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub topic: String,
    pub key: Option<String>,
    pub event: Event,
}

#[derive(Default)]
struct Record {
    published: Vec<Published>,
    logs: Vec<(Level, String)>,
    config: HashMap<String, String>,
    allowed_topics: Option<Vec<String>>,
    limits: Option<(usize, usize)>,
    /// Where the follow-ups of the event being handled start in
    /// `published`, and their bytes so far.
    event_start: usize,
    event_bytes: usize,
}

/// The host's defaults of `max_follow_ups` and `max_follow_up_bytes`.
const DEFAULT_LIMITS: (usize, usize) = (100, 512 << 10);

thread_local! {
    static RECORD: RefCell<Record> = RefCell::new(Record::default());
}

/// The follow-ups published on this thread so far, in order.
pub fn published() -> Vec<Published> {
    RECORD.with(|r| r.borrow().published.clone())
}

/// The log lines written on this thread so far, in order.
pub fn logs() -> Vec<(Level, String)> {
    RECORD.with(|r| r.borrow().logs.clone())
}

/// Sets a value that [`crate::config`] returns, as `eddy.toml` would.
pub fn set_config(name: impl Into<String>, value: impl Into<String>) {
    RECORD.with(|r| r.borrow_mut().config.insert(name.into(), value.into()));
}

/// Refuses publishes to topics not in `topics`, as the host's `publish_to`
/// allow-list does. Without this call every topic is allowed.
pub fn allow_publish_to(topics: &[&str]) {
    RECORD.with(|r| {
        r.borrow_mut().allowed_topics = Some(topics.iter().map(|t| t.to_string()).collect())
    });
}

/// Sets how many follow-ups one event may publish and how many bytes they
/// may total, keys included, as `max_follow_ups` and `max_follow_up_bytes`
/// in `[plugin.NAME]` do. Without this call the host's defaults apply (100,
/// 512 KiB).
pub fn set_limits(max_follow_ups: usize, max_follow_up_bytes: usize) {
    RECORD.with(|r| r.borrow_mut().limits = Some((max_follow_ups, max_follow_up_bytes)));
}

/// Forgets everything recorded and set on this thread.
pub fn reset() {
    RECORD.with(|r| *r.borrow_mut() = Record::default());
}

/// Marks the start of an event: what is published from here on is the
/// event's, counted against the limits and dropped if it fails.
/// `#[eddy_sdk::handler]` calls it.
#[doc(hidden)]
pub fn __begin_event() {
    RECORD.with(|r| {
        let mut r = r.borrow_mut();
        r.event_start = r.published.len();
        r.event_bytes = 0;
    });
}

/// Marks the end of an event; the host drops what a failed one published.
/// `#[eddy_sdk::handler]` calls it.
#[doc(hidden)]
pub fn __end_event(failed: bool) {
    RECORD.with(|r| {
        let mut r = r.borrow_mut();
        if failed {
            let start = r.event_start;
            r.published.truncate(start);
        }
        r.event_start = r.published.len();
        r.event_bytes = 0;
    });
}

pub(crate) fn record_publish(
    topic: &str,
    key: Option<&str>,
    event: &Event,
) -> Result<(), PublishError> {
    RECORD.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(allowed) = &r.allowed_topics
            && !allowed.iter().any(|t| t == topic)
        {
            return Err(PublishError::NotAllowed(format!(
                "topic {topic:?} is not in publish_to"
            )));
        }
        let (max_follow_ups, max_bytes) = r.limits.unwrap_or(DEFAULT_LIMITS);
        if r.published.len() - r.event_start >= max_follow_ups {
            return Err(PublishError::LimitExceeded(format!(
                "at most {max_follow_ups} follow-ups per event (max_follow_ups)"
            )));
        }
        if event.event_type.is_empty() {
            return Err(PublishError::Invalid("event_type is empty".into()));
        }
        let size = encoded_size(event)? + key.or(event.aggregate_id.as_deref()).map_or(0, str::len);
        if r.event_bytes + size > max_bytes {
            return Err(PublishError::LimitExceeded(format!(
                "follow-ups of one event may total {max_bytes} bytes, keys included \
                 (max_follow_up_bytes)"
            )));
        }
        r.event_bytes += size;
        r.published.push(Published {
            topic: topic.to_string(),
            key: key.map(str::to_string),
            event: event.clone(),
        });
        Ok(())
    })
}

/// The bytes of `event` as the host encodes it, with what the host fills in
/// counted as the module doc says. Fails as the host does when `data` is not
/// JSON.
fn encoded_size(event: &Event) -> Result<usize, PublishError> {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&event.data) {
        return Err(PublishError::Invalid(format!(
            "data of {} is not JSON: {e}",
            event.event_type
        )));
    }
    let or_usual = |value: &str, usual: usize| if value.is_empty() { usual } else { value.len() };
    let id = |value: &Option<String>| value.as_deref().map_or(36, str::len);
    let mut envelope = serde_json::json!({
        "event_id": "",
        "event_type": event.event_type,
        "timestamp": "",
        "service_name": event.service_name,
        "version": event.version,
        "data": null,
        "metadata": event.metadata.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "causation_id": "",
        "correlation_id": "",
    });
    let optional = [
        ("aggregate_id", event.aggregate_id.clone()),
        ("aggregate_type", event.aggregate_type.clone()),
        ("command_name", event.command_name.clone()),
        ("reply_to", event.reply_to.clone()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            envelope[name] = serde_json::Value::String(value);
        }
    }
    if let Some(timeout) = event.timeout_ms {
        envelope["timeout_ms"] = timeout.into();
    }
    let fixed = envelope.to_string().len() - "null".len();
    Ok(fixed
        + event.data.len()
        + or_usual(&event.event_id, 36)
        + or_usual(&event.timestamp, 30)
        + id(&event.causation_id)
        + id(&event.correlation_id))
}

pub(crate) fn record_log(level: Level, message: &str) {
    RECORD.with(|r| r.borrow_mut().logs.push((level, message.to_string())));
}

pub(crate) fn config_value(name: &str) -> Option<String> {
    RECORD.with(|r| r.borrow().config.get(name).cloned())
}
