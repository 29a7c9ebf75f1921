//! The sandbox eddy's handler plugins run in: wasmtime, a WebAssembly
//! component per plugin, a fresh instance per event by default.
//!
//! # Layout
//! - [`runtime`]: the engine (pooling allocator, epoch deadlines, how pool
//!   slots are reset), loading a plugin, and running one attempt;
//! - `host`: what one store holds, on which the WIT imports are
//!   implemented: `publish` (follow-ups), `log`, `config`;
//! - `bindings`: the WIT world's host bindings, converted from and to
//!   eddy-core's plain types at this crate's door;
//! - `clock`: the guest's monotonic clock, which cannot sleep past the
//!   attempt's deadline;
//! - `limits`: what one store may take (memory, instances, tables);
//! - `output`: the guest's stdout and stderr, bounded;
//! - [`compiled`]: compiled plugins cached on disk between runs;
//! - [`swap`]: whether pages can be swapped out, which decides how pool
//!   slots are reset;
//! - [`plugins`]: the plugin folder, read and loaded.
//!
//! # Invariant: isolation
//! Nothing a guest does outlives its attempt unless its plugin opted in
//! with `events_per_instance` (then only within that plugin's instance, and
//! any failure drops it). A guest has no files, network, environment or
//! arguments; every attempt is bounded in time (`timeout_ms`, the epoch
//! deadline and the clock), memory (`memory_mb`) and output; what it
//! publishes is buffered and leaves only on `ok`.

mod bindings;
mod clock;
pub mod compiled;
mod config;
mod host;
mod limits;
mod log;
mod output;
pub mod plugins;
mod publish;
pub mod runtime;
pub mod swap;

pub use host::Trigger;
pub use runtime::{Plugin, Runtime, SlotReset, Warm};
