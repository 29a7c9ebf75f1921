//! The event a handler is given, and where it came from: plain types, with
//! the field names of the seed's envelope. The sandbox converts them to the
//! WIT world's types at its door; nothing here knows the engine.

/// The event envelope, with the names the Python services already write.
///
/// Kind-specific fields are set or not: a domain event has
/// `aggregate_id`/`aggregate_type`, an integration event
/// `correlation_id`/`causation_id`, a command `command_name`, `reply_to`
/// and `timeout_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub event_type: String,
    /// RFC 3339.
    pub timestamp: String,
    pub service_name: String,
    /// Schema version of `data`, e.g. "1.0".
    pub version: String,
    /// JSON text.
    pub data: String,
    pub metadata: Vec<(String, String)>,
    pub aggregate_id: Option<String>,
    pub aggregate_type: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub command_name: Option<String>,
    pub reply_to: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// Where an event came from, and which attempt this is (1 for the first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub attempt: u32,
}

/// A record's place, borrowed: what a span or a log line names it by.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
}
