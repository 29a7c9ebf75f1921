//! eddy: consumes Kafka topics and runs each event through sandboxed
//! WebAssembly handler components, which may publish follow-up events.
//!
//! # Layout
//! - [`config`]: `eddy.toml`, strict, with environment overrides;
//! - [`envelope`]: decoding records (plain JSON, CloudEvents structured and
//!   binary) and encoding follow-ups;
//! - [`routing`]: which plugins an event goes to;
//! - [`runtime`]: the wasmtime sandbox, a fresh instance per event (or, where
//!   a plugin opts in with `events_per_instance`, one per N events);
//! - [`plugins`]: the plugin folder, and `eddy check`'s report;
//! - [`reload`]: watching the plugin folder and `eddy.toml`, and swapping in
//!   what changed;
//! - `app`: wiring, the fetch loop, the reload loop, readiness, shutdown
//!   (its [`run`] is what `eddy run` calls);
//! - `kafka`: the client settings, and the consumer's rebalance and
//!   statistics callbacks;
//! - `partition`: one worker per partition, stopped by cancellation, and the
//!   in-flight ledger that says which offset may be stored;
//! - `dispatch`: a batch of records through the handlers, on a blocking
//!   thread;
//! - `direct`: one record through its plugins, retries and dead letters
//!   included, without a worker: for `eddy test` and `eddy replay`;
//! - `produce`: follow-ups to Kafka in order, and their acknowledgements;
//! - `retry`: the slow way, retries with backoff or a dead letter;
//! - `dead_letter`: why a record is dead-lettered, where, and the write;
//! - `headers`: a record's headers as bytes (a name need not be UTF-8);
//! - `clock`: the guest's monotonic clock, which cannot sleep past the
//!   attempt's deadline;
//! - `compiled`: compiled plugins cached on disk between runs;
//! - `text`: outside text on one log line;
//! - `limits`: what one sandbox store may take (memory, instances, tables);
//! - [`security`]: `[kafka.security]`, TLS and SASL with secrets from the
//!   environment or files;
//! - [`swap`]: whether pages can be swapped out, which decides how pool
//!   slots are reset between instances;
//! - [`schema`]: JSON Schemas of events' `data`, from files and a
//!   Confluent-compatible registry, checked in and out;
//! - `trace`: W3C trace context in and out, and OpenTelemetry span export;
//! - `transaction`: exactly-once delivery, a record's effects and offset in
//!   one Kafka transaction, and a new producer when one is stuck;
//! - [`metrics`]: the Prometheus metrics, named in one place;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the `eddy health` probe;
//! - [`scaffold`]: `eddy new`, a plugin crate to start from;
//! - [`replay`]: `eddy replay`, events run again from a range of a topic or
//!   from dead letters, into a plugin or onto a topic;
//! - [`offline`]: `eddy test`, a plugin run on a file of events without
//!   Kafka, through the same path as `eddy run`;
//! - `bindings`: host bindings of the WIT world in `wit/`.

mod app;
#[cfg(feature = "bench-native")]
mod bench_native;
mod bindings;
mod clock;
mod compiled;
pub mod config;
mod dead_letter;
mod direct;
mod dispatch;
pub mod envelope;
mod headers;
pub mod http;
mod kafka;
mod limits;
pub mod metrics;
pub mod offline;
mod output;
mod partition;
pub mod plugins;
mod produce;
pub mod reload;
pub mod replay;
mod retry;
pub mod routing;
pub mod runtime;
pub mod scaffold;
pub mod schema;
pub mod security;
pub mod swap;
mod text;
pub mod trace;
mod transaction;

pub use app::run;
pub use bindings::{Delivery, Event};
pub use config::Config;
