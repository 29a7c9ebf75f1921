//! eddy's record path: from the fetch loop to the stored offset, through
//! the partition workers, the sandbox, retries and dead letters; and the
//! snapshots hot reload swaps in.
//!
//! # Layout
//! - [`pipeline`]: what every worker shares, readiness, the reload loop;
//! - [`fetch`]: the fetch loop, parking records of a worker that is
//!   behind, and the rewind after an aborted transaction;
//! - [`context`]: the consumer's callbacks; a rebalance stops the revoked
//!   partitions' workers and commits their finished work;
//! - [`partition`]: one worker per partition, stopped by cancellation, the
//!   in-flight ledger that says which offset may be stored, and parked
//!   records;
//! - [`dispatch`]: a batch of records through the handlers, on a blocking
//!   thread;
//! - [`retry`]: the slow way, retries with backoff or a dead letter;
//! - [`dead_letter`]: why a record is dead-lettered, where, and the write;
//! - [`direct`]: one record through its plugins, retries and dead letters
//!   included, without a worker: for `eddy test` and `eddy replay`;
//! - [`snapshot`]: what events are dispatched with, swapped whole;
//! - [`reload`]: watching the plugin folder and `eddy.toml`, and building
//!   the next snapshot.
//!
//! # Invariant: order and offsets
//! Records of a partition are handled in offset order. An offset is
//! stored (and so later committed) only after every plugin routed for its
//! event finished — handled, with all its follow-ups acknowledged by Kafka,
//! or dead-lettered with the dead letter acknowledged (with exactly-once
//! delivery: written in the open transaction) — and so did every record
//! before it in its partition. A failed attempt leaves nothing in Kafka:
//! follow-ups are buffered in the sandbox and produced only on `ok`.

#[cfg(feature = "bench-native")]
mod bench_native;
pub mod context;
pub mod dead_letter;
pub mod direct;
pub mod dispatch;
pub mod fetch;
pub mod partition;
pub mod pipeline;
pub mod reload;
pub mod retry;
pub mod snapshot;
