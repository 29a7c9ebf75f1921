//! eddy: consumes Kafka topics and runs each event through sandboxed
//! WebAssembly handler components, which may publish follow-up events.
//!
//! # Layout
//! - [`config`]: `eddy.toml`, strict, with environment overrides;
//! - [`envelope`]: decoding records (plain JSON, CloudEvents structured and
//!   binary) and encoding follow-ups;
//! - [`routing`]: which plugins an event goes to;
//! - [`runtime`]: the wasmtime sandbox, one fresh instance per event;
//! - [`plugins`]: the plugin folder, and `eddy check`'s report;
//! - [`reload`]: watching the plugin folder and `eddy.toml`, and swapping in
//!   what changed;
//! - [`pipeline`]: the Kafka consumer, follow-ups, dead letters and offsets;
//! - `workers`: one task per partition, stopped cleanly on a revoke;
//! - [`metrics`]: the Prometheus metrics, named in one place;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the `eddy health` probe;
//! - [`scaffold`]: `eddy new`, a plugin crate to start from;
//! - `bindings`: host bindings of the WIT world in `wit/`.

#[cfg(feature = "bench-native")]
mod bench_native;
mod bindings;
pub mod config;
pub mod envelope;
pub mod http;
pub mod metrics;
mod output;
pub mod pipeline;
pub mod plugins;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod scaffold;
mod workers;

pub use bindings::{Delivery, Event};
pub use config::Config;
pub use pipeline::run;
