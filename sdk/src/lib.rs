//! Write event handlers in Rust for eddy, the host that runs them on Kafka
//! events in a WebAssembly sandbox (its README says how to run one).
//!
//! A handler is one annotated function. It receives the event, may publish
//! follow-up events, and returns `Ok(())` or a [`HandlerError`]:
//!
//! ```
//! use eddy_sdk::{Event, HandlerError};
//!
//! #[eddy_sdk::handler]
//! fn handle(event: Event) -> Result<(), HandlerError> {
//!     eddy_sdk::log::info(format!("got {}", event.event_type));
//!     let reply = Event::integration("greeting.sent").with_json(serde_json::json!({"hi": true}));
//!     eddy_sdk::publish("greetings", None, &reply)?;
//!     Ok(())
//! }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` and drop the
//! `.wasm` into eddy's plugin folder. Off wasm32 (`cargo test`), [`publish`],
//! [`log`] and [`config`] talk to a recorder instead of the host, which the
//! [`testing`] module reads and sets, so handlers unit-test natively.
//!
//! # Layout
//! - [`Event`] builders and accessors (this file);
//! - `host`: the calls into the eddy host, or into the recorder off wasm32;
//! - [`testing`]: the recorder (native builds only).

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler",
        default_bindings_module: "::eddy_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use bindings::eddy::plugin::log::Level;
pub use bindings::eddy::plugin::types::{Delivery, Event, HandlerError, PublishError};
/// Marks the function that handles events; see the crate documentation.
pub use eddy_sdk_macros::handler;
pub use host::{config, publish};
/// JSON values, for [`Event::with_json`] and untyped [`Event::data`].
pub use serde_json::{Value, json};

/// Writes to the host's log, tagged with the plugin and the event.
pub mod log {
    use crate::Level;
    pub use crate::host::log as write;

    pub fn trace(message: impl AsRef<str>) {
        write(Level::Trace, message.as_ref())
    }
    pub fn debug(message: impl AsRef<str>) {
        write(Level::Debug, message.as_ref())
    }
    pub fn info(message: impl AsRef<str>) {
        write(Level::Info, message.as_ref())
    }
    pub fn warn(message: impl AsRef<str>) {
        write(Level::Warn, message.as_ref())
    }
    pub fn error(message: impl AsRef<str>) {
        write(Level::Error, message.as_ref())
    }
}

/// Which of the envelope's shapes an event has, judged by its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Only the common fields.
    Plain,
    /// Has `aggregate_id` (and usually `aggregate_type`).
    Domain,
    /// Has `correlation_id` or `causation_id` and no aggregate or command.
    Integration,
    /// Has `command_name`.
    Command,
}

impl Event {
    /// A plain event. `data` is `{}` until set; the host fills `event_id`,
    /// `timestamp` and `service_name` when it is published.
    pub fn new(event_type: impl Into<String>) -> Self {
        Event {
            event_id: String::new(),
            event_type: event_type.into(),
            timestamp: String::new(),
            service_name: String::new(),
            version: "1.0".to_string(),
            data: "{}".to_string(),
            metadata: Vec::new(),
            aggregate_id: None,
            aggregate_type: None,
            correlation_id: None,
            causation_id: None,
            command_name: None,
            reply_to: None,
            timeout_ms: None,
        }
    }

    /// A domain event about one aggregate. Published without an explicit key,
    /// it is keyed by `aggregate_id`.
    pub fn domain(
        event_type: impl Into<String>,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
    ) -> Self {
        Event {
            aggregate_type: Some(aggregate_type.into()),
            aggregate_id: Some(aggregate_id.into()),
            ..Event::new(event_type)
        }
    }

    /// An integration event. The host sets `causation_id` and
    /// `correlation_id` from the triggering event unless you do.
    pub fn integration(event_type: impl Into<String>) -> Self {
        Event::new(event_type)
    }

    /// A command for another service to carry out.
    pub fn command(event_type: impl Into<String>, command_name: impl Into<String>) -> Self {
        Event {
            command_name: Some(command_name.into()),
            ..Event::new(event_type)
        }
    }

    /// Sets `data` from any serializable value.
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Result<Self, HandlerError> {
        self.data = serde_json::to_string(data).map_err(|e| {
            HandlerError::Reject(format!("cannot serialize data of {}: {e}", self.event_type))
        })?;
        Ok(self)
    }

    /// Sets `data` from a JSON value (see [`json!`]).
    pub fn with_json(mut self, data: Value) -> Self {
        self.data = data.to_string();
        self
    }

    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    pub fn with_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((name.into(), value.into()));
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    pub fn with_reply_to(mut self, topic: impl Into<String>) -> Self {
        self.reply_to = Some(topic.into());
        self
    }

    pub fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Sets `event_id`; useful when building incoming events in tests.
    pub fn with_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = event_id.into();
        self
    }

    /// Decodes `data` into `T`. A mismatch is a permanent error
    /// ([`HandlerError::Reject`]): retrying will not change the payload.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_str(&self.data).map_err(|e| {
            HandlerError::Reject(format!(
                "data of {} {} does not have the expected shape: {e}",
                self.event_type, self.event_id
            ))
        })
    }

    /// The first metadata value under `name`.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn kind(&self) -> EventKind {
        if self.command_name.is_some() {
            EventKind::Command
        } else if self.aggregate_id.is_some() {
            EventKind::Domain
        } else if self.correlation_id.is_some() || self.causation_id.is_some() {
            EventKind::Integration
        } else {
            EventKind::Plain
        }
    }
}

impl Delivery {
    /// The record key as text, if it has one and it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }
}

impl HandlerError {
    /// A transient failure: the host retries with backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        HandlerError::Retry(reason.into())
    }

    /// A permanent failure: the host dead-letters the event at once.
    pub fn reject(reason: impl Into<String>) -> Self {
        HandlerError::Reject(reason.into())
    }
}

/// A refused publish ends the handler with a permanent error when passed on
/// with `?`: the plugin or its configuration must change, not the timing.
impl From<PublishError> for HandlerError {
    fn from(e: PublishError) -> Self {
        HandlerError::Reject(match e {
            PublishError::NotAllowed(m) => format!("publish not allowed: {m}"),
            PublishError::Invalid(m) => format!("invalid follow-up: {m}"),
            PublishError::LimitExceeded(m) => format!("follow-up limit exceeded: {m}"),
        })
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
}
