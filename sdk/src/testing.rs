//! What a handler did, for native unit tests (`cargo test`).
//!
//! Each test thread has its own record, so tests run in parallel without
//! seeing each other's events. Call [`reset`] when a test handles several
//! events and wants to look at them one at a time.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::{Event, Level, PublishError};

/// One follow-up the handler published.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub topic: String,
    pub key: Option<String>,
    pub event: Event,
}

#[derive(Default)]
struct Record {
    published: Vec<Published>,
    logs: Vec<(Level, String)>,
    config: HashMap<String, String>,
    allowed_topics: Option<Vec<String>>,
}

thread_local! {
    static RECORD: RefCell<Record> = RefCell::new(Record::default());
}

/// The follow-ups published on this thread so far, in order.
pub fn published() -> Vec<Published> {
    RECORD.with(|r| r.borrow().published.clone())
}

/// The log lines written on this thread so far, in order.
pub fn logs() -> Vec<(Level, String)> {
    RECORD.with(|r| r.borrow().logs.clone())
}

/// Sets a value that [`crate::config`] returns, as `eddy.toml` would.
pub fn set_config(name: impl Into<String>, value: impl Into<String>) {
    RECORD.with(|r| r.borrow_mut().config.insert(name.into(), value.into()));
}

/// Refuses publishes to topics not in `topics`, as the host's `publish_to`
/// allow-list does. Without this call every topic is allowed.
pub fn allow_publish_to(topics: &[&str]) {
    RECORD.with(|r| {
        r.borrow_mut().allowed_topics = Some(topics.iter().map(|t| t.to_string()).collect())
    });
}

/// Forgets everything recorded and set on this thread.
pub fn reset() {
    RECORD.with(|r| *r.borrow_mut() = Record::default());
}

pub(crate) fn record_publish(
    topic: &str,
    key: Option<&str>,
    event: &Event,
) -> Result<(), PublishError> {
    RECORD.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(allowed) = &r.allowed_topics
            && !allowed.iter().any(|t| t == topic)
        {
            return Err(PublishError::NotAllowed(format!(
                "topic {topic:?} is not in publish_to"
            )));
        }
        r.published.push(Published {
            topic: topic.to_string(),
            key: key.map(str::to_string),
            event: event.clone(),
        });
        Ok(())
    })
}

pub(crate) fn record_log(level: Level, message: &str) {
    RECORD.with(|r| r.borrow_mut().logs.push((level, message.to_string())));
}

pub(crate) fn config_value(name: &str) -> Option<String> {
    RECORD.with(|r| r.borrow().config.get(name).cloned())
}
