//! Starting eddy, producing records and reading what came out, on the
//! shared broker or on a test's own. The tests import everything from here.
//!
//! - `topics`: creating topics, deleting records, reading offsets;
//! - `producer`: sending records, and the seed-style event;
//! - `reader`: reading records back, to a topic's end;
//! - `eddy`: an `eddy run` process, `eddy check`, and its HTTP endpoints;
//! - `broker`: a Kafka broker of a test's own.

mod broker;
mod eddy;
mod producer;
mod reader;
mod topics;

use std::path::PathBuf;

pub use broker::{TestBroker, kafka_java};
pub use eddy::{Eddy, PluginFile, check, config_head, http_get};
pub use producer::{producer, producer_for, producer_with, seed_event};
pub use reader::{Record, dead_letters, follow_ups_of, read, read_from, read_to_end, read_until};
pub use topics::{
    alter_topic, committed, create_topics, create_topics_on, create_topics_with,
    delete_records_before, end_offsets,
};

pub fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run the tests with `cargo xtask test`"))
}

pub fn bootstrap() -> String {
    std::env::var("EDDY_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
