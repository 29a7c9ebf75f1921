//! eddy: consumes Kafka topics and runs each event through sandboxed
//! WebAssembly handler components, which may publish follow-up events.
//!
//! This crate is the binary's library: the commands, wired from the
//! crates below it. Each crate may use only those before it:
//!
//! | crate | holds |
//! | --- | --- |
//! | `eddy-core` | config, routing, the envelope, events and outcomes, trace context, the retry policy, metric names |
//! | `eddy-schema` | schemas of events' data: files, the registry, framing |
//! | `eddy-trace` | spans and their OTLP export |
//! | `eddy-sandbox` | the wasmtime sandbox and the plugin folder |
//! | `eddy-kafka` | Kafka clients, produce, headers, the offset lease, transactions |
//! | `eddy-pipeline` | the record path: fetch, workers, dispatch, retry, dead letters, reload |
//!
//! # Layout
//! - `app`: `eddy run`, the parts wired together, and the shutdown
//!   sequence (its [`run`] is what `eddy run` calls);
//! - [`check`]: `eddy check`'s report;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the `eddy health` probe;
//! - [`scaffold`]: `eddy new`, a plugin crate to start from;
//! - [`replay`]: `eddy replay`, events run again from a range of a topic or
//!   from dead letters, into a plugin or onto a topic;
//! - [`offline`]: `eddy test`, a plugin run on a file of events without
//!   Kafka, through the same path as `eddy run`.

mod app;
pub mod check;
pub mod http;
pub mod offline;
pub mod replay;
pub mod scaffold;

pub use app::run;
pub use eddy_core::Config;
