//! The SDK's three calls into the host. On wasm32 they go through the WIT
//! imports; elsewhere they go to the recorder in [`crate::testing`].

use crate::{Event, Level, PublishError};

/// Publishes `event` to `topic` once the handler returns `Ok`. Without a key
/// the host keys the record by the event's `aggregate_id`, else not at all.
pub fn publish(topic: &str, key: Option<&str>, event: &Event) -> Result<(), PublishError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::eddy::plugin::publisher::publish(topic, key, event)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::record_publish(topic, key, event)
    }
}

/// Writes one line to the host's log.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::eddy::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// A value from the plugin's `config` table in `eddy.toml`.
pub fn config(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::eddy::plugin::config::get(name)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::config_value(name)
    }
}
