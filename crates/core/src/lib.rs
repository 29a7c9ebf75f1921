//! eddy's plain model: what the other crates agree on, with no Kafka
//! client, no WebAssembly engine and no span exporter in it.
//!
//! # Layout
//! - [`config`]: `eddy.toml`, strict, with environment overrides; its
//!   `problems` (what `eddy check` prints), `security` (`[kafka.security]`,
//!   TLS and SASL with secrets from the environment or files) and
//!   `telemetry` (where spans go and what is sampled);
//! - [`routing`]: which plugins an event goes to;
//! - [`event`]: the event a handler is given and where it came from;
//! - [`envelope`]: decoding records (plain JSON, CloudEvents structured and
//!   binary) into events, and encoding follow-ups;
//! - [`outcome`]: what an attempt came to (follow-ups, or a failure);
//! - [`policy`]: the retry policy, what follows a failed attempt;
//! - [`trace`]: W3C trace context, derived span ids and sampling;
//! - [`cancel`]: stopping by cancellation;
//! - [`metrics`]: every metric, named in one place;
//! - [`text`]: outside text on one log line.
//!
//! # Invariant
//! Nothing here does I/O on Kafka or runs a guest: every type is plain
//! data or a pure rule, so the crates above agree on it without depending
//! on each other, and it is tested without a broker.

pub mod cancel;
pub mod config;
pub mod envelope;
pub mod event;
pub mod metrics;
pub mod outcome;
pub mod policy;
pub mod routing;
pub mod text;
pub mod trace;

pub use config::Config;
pub use event::{Delivery, Event};
