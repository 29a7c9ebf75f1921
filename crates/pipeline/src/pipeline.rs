//! What every partition worker shares ([`Pipeline`]), readiness, and
//! the reload loop that swaps in each new snapshot.
//!
//! The invariant the whole keeps: an offset is stored (and so later
//! committed) only after every plugin routed for its event finished —
//! handled, with all its follow-ups acknowledged by Kafka (`acks=all`,
//! idempotent producer), or dead-lettered with the dead-letter record
//! acknowledged — and so did every record before it in its partition
//! (`partition::Ledger`). A failed attempt leaves nothing in Kafka:
//! follow-ups are buffered in the store and produced only when the handler
//! returns `Ok`.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use arc_swap::ArcSwap;
use eddy_core::metrics;
use eddy_kafka::client::{EddyProducer, KafkaErrors};
use eddy_kafka::transaction::Transactions;
use eddy_sandbox::Runtime;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use crate::context::EddyContext;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;

/// What every partition worker shares.
pub struct Pipeline {
    pub runtime: Arc<Runtime>,
    /// What events are dispatched with; swapped whole by the reload thread.
    pub state: ArcSwap<Snapshot>,
    pub producer: EddyProducer,
    pub consumer: StreamConsumer<EddyContext>,
    /// With exactly-once delivery, the transactions records are written in.
    pub transactions: Option<Arc<Transactions>>,
    /// What the consumer handed back instead of records, and what its
    /// client reported.
    pub kafka_errors: Arc<KafkaErrors>,
    /// Cancelled when eddy begins stopping.
    pub shutdown: CancellationToken,
}

/// Applies each change on disk as a new snapshot; ends when the watcher does.
pub fn reload_loop(pipeline: &Pipeline, mut reloader: Reloader, changes: Receiver<()>) {
    while changes.recv().is_ok() {
        while changes.try_recv().is_ok() {}
        let current = pipeline.state.load_full();
        let Some(next) = reloader.reconcile(&current) else {
            continue;
        };
        let topics = next.config.topics();
        if topics != current.config.topics() {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            match pipeline.consumer.subscribe(&refs) {
                Ok(()) => tracing::info!(?topics, "subscription changed"),
                Err(e) => tracing::error!(?topics, "cannot change the subscription: {e}"),
            }
        }
        metrics::plugins_loaded(next.plugins.len());
        pipeline.state.store(Arc::new(next));
    }
}

impl Pipeline {
    /// Why eddy is not ready to do its work, if it is not. Blocks for up to
    /// two seconds on a metadata request.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.shutdown.is_cancelled() {
            reasons.push("shutting down".to_string());
        }
        if let Err(e) = self.consumer.fetch_metadata(None, Duration::from_secs(2)) {
            reasons.push(format!("the Kafka brokers do not answer: {e}"));
        }
        reasons.extend(self.kafka_errors.recent());
        match self.consumer.assignment() {
            Ok(assignment) if assignment.count() > 0 => {}
            Ok(_) => reasons.push("no partitions assigned yet".to_string()),
            Err(e) => reasons.push(format!("cannot read the partition assignment: {e}")),
        }
        let snapshot = self.state.load();
        let mut missing: Vec<&str> = snapshot
            .config
            .routes
            .iter()
            .map(|r| r.plugin.as_str())
            .filter(|p| snapshot.handler(p).is_none())
            .collect();
        missing.dedup();
        for plugin in missing {
            reasons.push(format!("routed plugin {plugin} is not loaded"));
        }
        let waiting = eddy_schema::waiting();
        if waiting > 0 {
            let why = snapshot
                .schemas
                .registry()
                .and_then(|r| r.trouble())
                .unwrap_or_else(|| "the schema registry does not answer".to_string());
            reasons.push(format!(
                "records waiting for the schema registry, each holding its partition: \
                 {waiting}; {why}"
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}
