//! Prometheus metrics: one place that names and labels them (the binary
//! installs the recorder that renders them). Counters end in `_total`, durations are histograms in seconds.
//!
//! | metric | labels |
//! | --- | --- |
//! | `eddy_events_consumed_total` | topic |
//! | `eddy_events_skipped_total` (no route) | topic |
//! | `eddy_events_handled_total` | plugin, version, topic |
//! | `eddy_events_retried_total` | plugin, topic, reason |
//! | `eddy_events_dead_lettered_total` | plugin (empty when undecodable or too large), topic, reason |
//! | `eddy_follow_ups_published_total` | plugin, topic (where it went) |
//! | `eddy_handler_failures_total` (traps, timeouts, memory, …) | plugin, version, kind |
//! | `eddy_handler_duration_seconds` | plugin, version |
//! | `eddy_instantiation_duration_seconds` | plugin, version |
//! | `eddy_consumer_lag` (records not yet finished) | topic, partition |
//! | `eddy_partition_fetch_pauses_total` (a partition's worker far behind) | topic |
//! | `eddy_plugin_reloads_total` | plugin, outcome (ok, failed, removed) |
//! | `eddy_plugins_loaded` | — |
//! | `eddy_transactions_total` (exactly-once) | outcome (committed, aborted) |
//! | `eddy_transaction_duration_seconds` (offsets sent to committed) | — |
//! | `eddy_transaction_producers_replaced_total` (stuck in a call) | — |
//! | `eddy_spans_exported_total` (OpenTelemetry export on) | — |
//! | `eddy_spans_dropped_total` (queue full, collector unreachable) | reason |
//! | `eddy_schema_checks_total` | door (in, out), event_type (empty when no schema names it), outcome (valid, invalid, unknown, no-schema) |
//! | `eddy_schema_registry_fetches_total` | outcome (ok, missing, error) |
//! | `eddy_schema_reloads_total` (schema files) | outcome (ok, failed) |
//! | `eddy_consumer_errors_total` (what the consumer handed back instead of records) | code |

pub use metrics::Histogram;
use metrics::{counter, gauge, histogram};

/// Counts of a run of records from one topic, added to the counters at once.
#[derive(Default)]
pub struct Tally {
    consumed: u64,
    skipped: u64,
    /// (plugin, version) → events handled.
    handled: Vec<(String, String, u64)>,
    /// (plugin, topic written to) → follow-ups.
    follow_ups: Vec<(String, String, u64)>,
}

impl Tally {
    pub fn consumed(&mut self) {
        self.consumed += 1;
    }

    pub fn skipped(&mut self) {
        self.skipped += 1;
    }

    /// One event handled by `plugin`, which published to `topics`.
    pub fn handled<'a>(
        &mut self,
        plugin: &str,
        version: &str,
        topics: impl IntoIterator<Item = &'a str>,
    ) {
        bump(&mut self.handled, plugin, version);
        for topic in topics {
            bump(&mut self.follow_ups, plugin, topic);
        }
    }

    /// Adds the counts to the counters of records from `topic`.
    pub fn flush(self, topic: &str) {
        if self.consumed > 0 {
            counter!("eddy_events_consumed_total", "topic" => topic.to_string())
                .increment(self.consumed);
        }
        if self.skipped > 0 {
            counter!("eddy_events_skipped_total", "topic" => topic.to_string())
                .increment(self.skipped);
        }
        for (plugin, version, count) in self.handled {
            counter!("eddy_events_handled_total", "plugin" => plugin, "version" => version, "topic" => topic.to_string())
                .increment(count);
        }
        for (plugin, to, count) in self.follow_ups {
            counter!("eddy_follow_ups_published_total", "plugin" => plugin, "topic" => to)
                .increment(count);
        }
    }
}

/// Adds one to the count of (`a`, `b`).
fn bump(counts: &mut Vec<(String, String, u64)>, a: &str, b: &str) {
    match counts.iter_mut().find(|(x, y, _)| x == a && y == b) {
        Some((_, _, n)) => *n += 1,
        None => counts.push((a.to_string(), b.to_string(), 1)),
    }
}

pub fn retried(plugin: &str, topic: &str, reason: &'static str) {
    counter!("eddy_events_retried_total", "plugin" => plugin.to_string(), "topic" => topic.to_string(), "reason" => reason).increment(1);
}

pub fn dead_lettered(plugin: &str, topic: &str, reason: &'static str) {
    counter!("eddy_events_dead_lettered_total", "plugin" => plugin.to_string(), "topic" => topic.to_string(), "reason" => reason).increment(1);
}

pub fn handler_failed(plugin: &str, version: &str, kind: &'static str) {
    counter!("eddy_handler_failures_total", "plugin" => plugin.to_string(), "version" => version.to_string(), "kind" => kind).increment(1);
}

/// The instantiation and handler-call duration histograms of a plugin
/// version, made once when it loads.
pub fn durations(plugin: &str, version: &str) -> (Histogram, Histogram) {
    let labels = [
        ("plugin", plugin.to_string()),
        ("version", version.to_string()),
    ];
    (
        histogram!("eddy_instantiation_duration_seconds", &labels),
        histogram!("eddy_handler_duration_seconds", &labels),
    )
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!("eddy_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

pub fn reload(plugin: &str, outcome: &'static str) {
    counter!("eddy_plugin_reloads_total", "plugin" => plugin.to_string(), "outcome" => outcome)
        .increment(1);
}

pub fn plugins_loaded(count: usize) {
    gauge!("eddy_plugins_loaded").set(count as f64);
}

/// A transaction ended (`committed` or `aborted`), `took` after its
/// offsets were sent.
pub fn transaction(outcome: &'static str, took: std::time::Duration) {
    counter!("eddy_transactions_total", "outcome" => outcome).increment(1);
    histogram!("eddy_transaction_duration_seconds").record(took.as_secs_f64());
}

/// A partition of `topic` stopped being fetched for a while: its worker
/// was far behind (see `partition::parked`).
pub fn partition_fetch_paused(topic: &str) {
    counter!("eddy_partition_fetch_pauses_total", "topic" => topic.to_string()).increment(1);
}

/// A transactional producer stuck in a call was replaced by a new one.
pub fn transaction_producer_replaced() {
    counter!("eddy_transaction_producers_replaced_total").increment(1);
}

pub fn spans_exported(count: usize) {
    counter!("eddy_spans_exported_total").increment(count as u64);
}

pub fn spans_dropped(reason: &'static str, count: usize) {
    counter!("eddy_spans_dropped_total", "reason" => reason).increment(count as u64);
}

pub fn consumer_error(code: String) {
    counter!("eddy_consumer_errors_total", "code" => code).increment(1);
}

pub fn schema_check(door: &'static str, event_type: &str, outcome: &'static str) {
    counter!("eddy_schema_checks_total", "door" => door, "event_type" => event_type.to_string(), "outcome" => outcome).increment(1);
}

pub fn schema_fetch(outcome: &'static str) {
    counter!("eddy_schema_registry_fetches_total", "outcome" => outcome).increment(1);
}

pub fn schema_reload(outcome: &'static str) {
    counter!("eddy_schema_reloads_total", "outcome" => outcome).increment(1);
}
