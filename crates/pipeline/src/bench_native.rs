//! Benchmarks only (`--features bench-native`): the no-op handler compiled
//! into the host, run through the same pipeline as a plugin — on the same
//! blocking threads, in the same batches, with the same metrics — so the
//! Wasm sandbox's cost can be measured apart. Routed as plugin [`NAME`]
//! (a `reload::Handler::Native` in every snapshot). Only in the binary
//! `cargo xtask bench` builds with this feature; never in the default one.

use eddy_core::event::Event;

/// The plugin name that routes to the native handler.
pub const NAME: &str = "native-noop";

/// Decodes the event's data, as the `noop` plugin does (the envelope
/// decoder has already made sure it is JSON).
pub fn handle(event: &Event) {
    let _ = std::hint::black_box(serde_json::from_str::<serde_json::Value>(&event.data));
}
