//! eddy's Kafka side: the clients' settings and errors, producing
//! follow-ups in order, a record's headers and trace context, the offset
//! lease, and exactly-once transactions.
//!
//! # Layout
//! - [`client`]: consumer and producer settings (security included), the
//!   errors the clients report, the producer's context;
//! - [`headers`]: a record's headers as bytes (a name need not be UTF-8);
//! - [`trace_headers`]: the trace context a record's headers carry;
//! - [`produce`]: follow-ups to Kafka in order, and their acknowledgements;
//! - [`lease`]: a worker's right to store its partition's offsets;
//! - [`transaction`]: a record's effects and its offset in one Kafka
//!   transaction, and a new producer when one is stuck.
//!
//! # Invariant: transactions
//! With exactly-once delivery no record is ever half in a transaction: a
//! worker writes all of a record's effects and stages its offset while
//! holding the gate for reading, and the committer takes it for writing.
//! A transaction that fails is aborted, and eddy rewinds to the last
//! commit; an offset is sent only with the effects of every record before
//! it.

pub mod client;
pub mod headers;
pub mod lease;
pub mod produce;
pub mod trace_headers;
pub mod transaction;
