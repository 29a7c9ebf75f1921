//! Benchmarks only (`--features bench-native`): the no-op handler compiled
//! into the host, run through the same pipeline as a plugin — a blocking
//! task per event, the same metrics — so the Wasm sandbox's cost can be
//! measured apart. Routed as plugin [`NAME`]; never in a release build.

use std::sync::Arc;

use crate::bindings::Event;
use crate::metrics;

/// The plugin name that routes to the native handler.
pub const NAME: &str = "native-noop";

/// Decodes the event's data, as the `noop` plugin does (the envelope
/// decoder has already made sure it is JSON).
pub async fn handle(topic: &str, event: &Arc<Event>) {
    let event = event.clone();
    let _ = tokio::task::spawn_blocking(move || {
        serde_json::from_str::<serde_json::Value>(&event.data).map(drop)
    })
    .await;
    metrics::handled(NAME, "native", topic, &[]);
}
