//! `eddy:plugin/log`: a guest's lines in the host's log, bounded per event,
//! and on its handling span when that is recorded.

use eddy_core::text::OneLine;

use crate::bindings::{self, Level};
use crate::host::HostState;
use crate::runtime::capped_to;

/// `log` lines of one event that reach the host's log, and their length.
const MAX_LOG_LINES: u32 = 100;
const MAX_LOG_LINE_BYTES: usize = 4096;

impl bindings::eddy::plugin::log::Host for HostState {
    fn log(&mut self, level: Level, mut message: String) {
        // A guest may not flood the host's log: so many lines per event, of
        // so many bytes, like its stdout and stderr.
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        if self.log_lines == MAX_LOG_LINES {
            message =
                format!("(log lines after {MAX_LOG_LINES} of this event are dropped) {message}");
        }
        let message = capped_to(message, MAX_LOG_LINE_BYTES);
        eddy_core::trace::guest_log(level_name(level), &message);
        let message = OneLine(&message);
        let plugin = self.plugin.as_str();
        let event_id = OneLine(&self.record.event_id);
        self.in_record_spans(|| match level {
            Level::Trace => tracing::trace!(target: "eddy::guest", plugin, %event_id, "{message}"),
            Level::Debug => tracing::debug!(target: "eddy::guest", plugin, %event_id, "{message}"),
            Level::Info => tracing::info!(target: "eddy::guest", plugin, %event_id, "{message}"),
            Level::Warn => tracing::warn!(target: "eddy::guest", plugin, %event_id, "{message}"),
            Level::Error => tracing::error!(target: "eddy::guest", plugin, %event_id, "{message}"),
        });
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
