//! What one attempt of one plugin on one event came to: follow-ups to
//! produce, or a failure of a kind the retry policy and the dead-letter
//! reasons name.

use crate::trace::FollowUpTrace;

/// A follow-up ready to produce.
#[derive(Debug, Clone)]
pub struct FollowUp {
    pub topic: String,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub event_id: String,
    /// Its PRODUCER span, under the handling span.
    pub trace: FollowUpTrace,
}

/// What one attempt of one plugin on one event came to.
#[derive(Debug)]
pub enum Outcome {
    Handled(Vec<FollowUp>),
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler returned `retry`.
    Retry,
    /// The handler returned `reject`.
    Reject,
    /// The guest trapped (a panic, `unreachable`, a stack overflow, …).
    Trap,
    /// The attempt ran past `timeout_ms`.
    Timeout,
    /// The guest tried to grow memory past `memory_mb`.
    Memory,
    /// The plugin could not be instantiated (e.g. the pool is exhausted).
    Instantiate,
    /// Kafka refused, for good, a follow-up the handler published (too
    /// large, no such topic, not authorised): retrying cannot help.
    FollowUpRefused,
    /// A follow-up's schema was needed from the schema registry, which did
    /// not answer: not the event's fault, so the attempt does not count and
    /// is made again when the registry answers.
    SchemaUnavailable,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl FailureKind {
    /// The name used in dead-letter reasons, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retry => "retry",
            FailureKind::Reject => "reject",
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory-limit",
            FailureKind::Instantiate => "instantiate",
            FailureKind::FollowUpRefused => "follow-up-refused",
            FailureKind::SchemaUnavailable => "schema-unavailable",
        }
    }
}

impl Failure {
    pub fn retryable(&self) -> bool {
        !matches!(
            self.kind,
            FailureKind::Reject | FailureKind::FollowUpRefused
        )
    }

    /// The dead-letter reason: `kind: message`.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.kind.as_str(), self.message)
    }
}

/// A loaded plugin version, as its follow-ups' headers, the metrics and
/// the logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginId {
    pub name: String,
    /// First 12 hex digits of the file's SHA-256: the version's identity.
    pub hash: String,
}
