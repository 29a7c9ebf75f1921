//! From Kafka records to handled events, follow-ups and dead letters.
//!
//! The invariant: an offset is stored (and so later committed) only after
//! every plugin routed for its event finished — handled, with all its
//! follow-ups acknowledged by Kafka (`acks=all`, idempotent producer), or
//! dead-lettered with the dead-letter record acknowledged. Each partition has
//! one worker that takes its records in order, one at a time, so storing the
//! offset after each record never skips one. Partitions run in parallel.
//!
//! A failed attempt leaves nothing in Kafka: follow-ups are buffered in the
//! store and produced only when the handler returns `Ok`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use futures::future::join_all;
use rand::Rng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::bindings::{Delivery, Event};
use crate::config::{Config, KafkaConfig};
use crate::envelope;
use crate::reload::{self, Reloader, Snapshot};
use crate::runtime::{Failure, FailureKind, FollowUp, Outcome, Plugin, Runtime, Trigger};
use crate::workers::{WorkerState, Workers};
use crate::{http, metrics};

/// First retry delay; it doubles per attempt up to [`MAX_BACKOFF`], with jitter.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs eddy until `shutdown` resolves, then stops fetching, lets in-flight
/// events finish, flushes the producer, commits and leaves the group.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let problems = config.problems();
    if !problems.is_empty() {
        anyhow::bail!(
            "the configuration has problems:\n  {}",
            problems.join("\n  ")
        );
    }
    // Installed first, so what start-up counts (plugin loads) is kept.
    let metrics_handle = metrics::install();
    let runtime = Arc::new(Runtime::new()?);
    let mut reloader = Reloader::new(runtime.clone(), &config);
    // Watch before the first scan, so a file that lands meanwhile is not missed.
    let (watcher, changes) = reload::watch(&config)?;
    let snapshot = reloader.initial(config)?;
    let config = snapshot.config.clone();

    let topics = config.topics();
    let workers = Arc::new(Workers::default());
    let consumer: StreamConsumer<EddyContext> = consumer_config(&config.kafka)
        .create_with_context(EddyContext {
            workers: workers.clone(),
        })
        .context("cannot create the Kafka consumer")?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .with_context(|| format!("cannot subscribe to {topics:?}"))?;
    let producer: FutureProducer = producer_config(&config.kafka)
        .create()
        .context("cannot create the Kafka producer")?;
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for /metrics, /healthz and /readyz ([http] listen)",
                config.http.listen
            )
        })?;
    let http_addr = listener.local_addr()?;
    log_summary(&snapshot, &http_addr.to_string());
    metrics::plugins_loaded(snapshot.plugins.len());

    let pipeline = Arc::new(Pipeline {
        runtime,
        state: ArcSwap::from_pointee(snapshot),
        producer,
        consumer,
        stopping: AtomicBool::new(false),
    });
    let reload_thread = {
        let pipeline = pipeline.clone();
        std::thread::Builder::new()
            .name("eddy-reload".into())
            .spawn(move || reload_loop(&pipeline, reloader, changes))
            .context("cannot start the reload thread")?
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = {
        let pipeline = pipeline.clone();
        tokio::spawn(http::serve(
            listener,
            metrics_handle,
            Arc::new(move || pipeline.readiness()),
            async move {
                let _ = http_stopped.await;
            },
        ))
    };

    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            message = pipeline.consumer.recv() => message.map(|m| m.detach()),
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("Kafka consumer: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let sender = workers.sender(message.topic(), message.partition(), |records, state| {
            tokio::spawn(partition_worker(pipeline.clone(), records, state))
        });
        tokio::select! {
            _ = &mut shutdown => break,
            sent = sender.send(message) => {
                if sent.is_err() {
                    anyhow::bail!("a partition worker stopped unexpectedly");
                }
            }
        }
    }

    tracing::info!("shutting down: finishing in-flight events");
    pipeline.stopping.store(true, Ordering::SeqCst);
    // Dropping the watcher ends the reload thread.
    drop(watcher);
    if reload_thread.join().is_err() {
        tracing::error!("the reload thread panicked");
    }
    for handle in workers.drain() {
        if let Err(e) = handle.await {
            tracing::error!("a partition worker failed: {e}");
        }
    }
    pipeline
        .producer
        .flush(Timeout::After(Duration::from_secs(30)))
        .context("cannot flush the producer")?;
    match pipeline.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::error!("final offset commit failed: {e}"),
    }
    pipeline.consumer.unsubscribe();
    let _ = stop_http.send(());
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("{e:#}"),
        Err(e) => tracing::error!("the HTTP server task failed: {e}"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The start-up summary: what runs, in a few lines a person reads at a glance.
fn log_summary(snapshot: &Snapshot, http: &str) {
    let config = &snapshot.config;
    tracing::info!(
        "eddy {} consuming {:?} as group {:?} from {}",
        env!("CARGO_PKG_VERSION"),
        config.topics(),
        config.kafka.group_id,
        config.kafka.bootstrap_servers
    );
    let plugins: Vec<String> = snapshot
        .plugins
        .values()
        .map(|p| format!("{}@{}", p.name, p.hash))
        .collect();
    let plugins = if plugins.is_empty() {
        "none".to_string()
    } else {
        plugins.join(", ")
    };
    tracing::info!("plugins from {}: {plugins}", config.plugins.dir.display());
    for route in &config.routes {
        tracing::info!(
            "route {} [{}] -> {}",
            route.topic,
            route.event_types.join(", "),
            route.plugin
        );
    }
    tracing::info!("serving /metrics, /healthz and /readyz on http://{http}");
}

/// librdkafka callbacks: statistics become the consumer-lag gauges, and a
/// revoke finishes and commits the partitions' work before they move.
struct EddyContext {
    workers: Arc<Workers>,
}

impl ClientContext for EddyContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                // Behind what eddy finished; before anything is stored, behind
                // the committed offset.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if *partition >= 0 && p.desired && lag >= 0 {
                    metrics::consumer_lag(topic, *partition, lag);
                }
            }
        }
    }
}

impl ConsumerContext for EddyContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = partitions_of(list);
                self.workers.revoke(&partitions);
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => tracing::error!("commit before giving up partitions failed: {e}"),
                }
                tracing::info!(?partitions, "partitions revoked; finished work committed");
            }
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list);
                tracing::info!(?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::error!("rebalance failed: {e}"),
        }
    }
}

/// The (topic, partition) pairs of a rebalance's list.
fn partitions_of(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("auto.offset.reset", &kafka.auto_offset_reset)
        // Offsets are stored by the workers once an event is finished; the
        // auto-commit only sends what was stored.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // Partitions move one at a time on a rebalance; the others keep
        // flowing.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "5000");
    for (name, value) in &kafka.consumer {
        config.set(name, value);
    }
    config
}

fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // A handler waits for its follow-ups' acknowledgements before the next event
        // of its partition: lingering to batch them would only add latency.
        .set("linger.ms", "0");
    for (name, value) in &kafka.producer {
        config.set(name, value);
    }
    config
}

/// Applies each change on disk as a new snapshot; ends when the watcher does.
fn reload_loop(pipeline: &Pipeline, mut reloader: Reloader, changes: Receiver<()>) {
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

struct Pipeline {
    runtime: Arc<Runtime>,
    /// What events are dispatched with; swapped whole by the reload thread.
    state: ArcSwap<Snapshot>,
    producer: FutureProducer,
    consumer: StreamConsumer<EddyContext>,
    stopping: AtomicBool,
}

/// Takes one partition's records in order. Once eddy is stopping it finishes
/// the record in hand and leaves the rest: their offsets were never stored,
/// so the next owner of the partition reads them again.
async fn partition_worker(
    pipeline: Arc<Pipeline>,
    mut records: mpsc::Receiver<OwnedMessage>,
    state: Arc<WorkerState>,
) {
    while let Some(record) = records.recv().await {
        let Some(_busy) = state.begin().await else {
            break;
        };
        if pipeline.stopping.load(Ordering::SeqCst) {
            break;
        }
        let span = tracing::info_span!(
            "record",
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset()
        );
        if !pipeline.handle_record(&record).instrument(span).await {
            // Abandoned because eddy is stopping: the offset stays, the
            // record is read again.
            break;
        }
        let mut finished = TopicPartitionList::new();
        let stored = finished
            .add_partition_offset(
                record.topic(),
                record.partition(),
                Offset::Offset(record.offset() + 1),
            )
            .and_then(|()| pipeline.consumer.store_offsets(&finished));
        if let Err(e) = stored {
            // The partition was revoked meanwhile; its new owner re-handles
            // this record (at-least-once).
            tracing::warn!(
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                "cannot store offset: {e}"
            );
        }
    }
}

impl Pipeline {
    /// Why eddy is not ready to do its work, if it is not. Blocks for up to
    /// two seconds on a metadata request.
    fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.stopping() {
            reasons.push("shutting down".to_string());
        }
        if let Err(e) = self.consumer.fetch_metadata(None, Duration::from_secs(2)) {
            reasons.push(format!("the Kafka brokers do not answer: {e}"));
        }
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
            .filter(|p| !snapshot.plugins.contains_key(*p))
            .collect();
        missing.dedup();
        for plugin in missing {
            reasons.push(format!("routed plugin {plugin} is not loaded"));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Handles one record; `false` if it was abandoned unfinished because eddy
    /// is stopping (its offset must not move).
    async fn handle_record(&self, record: &OwnedMessage) -> bool {
        // One snapshot for the whole record: a reload meanwhile applies to
        // the records after it.
        let snapshot = self.state.load_full();
        let headers = record_headers(record);
        metrics::consumed(record.topic());
        let max = snapshot.config.plugins.max_event_bytes;
        let size = record.payload().map_or(0, <[u8]>::len);
        let decoded = if size > max {
            Err((
                "too-large",
                format!("value of {size} bytes is over max_event_bytes ({max})"),
            ))
        } else {
            envelope::decode(record.payload(), headers).map_err(|e| ("undecodable", e.to_string()))
        };
        let event = match decoded {
            Ok(event) => Arc::new(event),
            Err((kind, reason)) => {
                tracing::warn!("record dead-lettered, {kind}: {reason}");
                metrics::dead_lettered("", record.topic(), kind);
                let topic = format!("{}.dlq", record.topic());
                return self
                    .dead_letter(record, &topic, None, &format!("{kind}: {reason}"), 0)
                    .await;
            }
        };
        let plugins = snapshot
            .router
            .plugins_for(record.topic(), &event.event_type);
        if plugins.is_empty() {
            metrics::skipped(record.topic());
            tracing::debug!(event_id = %event.event_id, event_type = %event.event_type, "no route; skipped");
            return true;
        }
        for plugin in plugins {
            let finished = self
                .deliver(record, &event, plugin, &snapshot)
                .instrument(tracing::info_span!("plugin", plugin, event_id = %event.event_id))
                .await;
            if !finished {
                return false;
            }
        }
        true
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits `delay`, cut short when eddy begins stopping; says whether it is.
    async fn pause(&self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        while !self.stopping() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
        true
    }

    /// Runs `plugin` on the event until it is handled or dead-lettered;
    /// `false` if eddy began stopping first.
    async fn deliver(
        &self,
        record: &OwnedMessage,
        event: &Arc<Event>,
        plugin: &str,
        snapshot: &Snapshot,
    ) -> bool {
        #[cfg(feature = "bench-native")]
        if plugin == crate::bench_native::NAME {
            crate::bench_native::handle(record.topic(), event).await;
            return true;
        }
        let settings = snapshot.settings(plugin);
        let dead_letter_topic = settings.dead_letter_topic_for(record.topic());
        let Some(loaded) = snapshot.plugins.get(plugin).cloned() else {
            let reason = format!(
                "plugin-missing: no usable {plugin}.wasm in {}",
                snapshot.config.plugins.dir.display()
            );
            tracing::error!("{reason}; event dead-lettered");
            metrics::dead_lettered(plugin, record.topic(), "plugin-missing");
            return self
                .dead_letter(record, &dead_letter_topic, Some(plugin), &reason, 0)
                .await;
        };
        let mut attempt: u32 = 1;
        loop {
            let delivery = Delivery {
                topic: record.topic().to_string(),
                partition: record.partition(),
                offset: record.offset(),
                key: record.key().map(<[u8]>::to_vec),
                attempt,
            };
            let (runtime, task_plugin, task_settings, event) = (
                self.runtime.clone(),
                loaded.clone(),
                settings.clone(),
                event.clone(),
            );
            // The span follows the handler onto the blocking thread, so the
            // guest's log lines carry the record's topic, partition and offset.
            let span = tracing::Span::current();
            let outcome = tokio::task::spawn_blocking(move || {
                let trigger = Trigger {
                    event: &event,
                    delivery: &delivery,
                };
                span.in_scope(|| runtime.invoke(&task_plugin, &task_settings, trigger))
            })
            .await
            .unwrap_or_else(|e| {
                Outcome::Failed(Failure {
                    kind: FailureKind::Trap,
                    message: format!("the host task running the handler failed: {e}"),
                })
            });
            match outcome {
                Outcome::Handled(follow_ups) => {
                    let count = follow_ups.len();
                    let mut per_topic: Vec<(String, usize)> = Vec::new();
                    for follow_up in &follow_ups {
                        match per_topic.iter_mut().find(|(t, _)| *t == follow_up.topic) {
                            Some((_, n)) => *n += 1,
                            None => per_topic.push((follow_up.topic.clone(), 1)),
                        }
                    }
                    if !self.produce_follow_ups(follow_ups, &loaded).await {
                        return false;
                    }
                    metrics::handled(plugin, &loaded.hash, record.topic(), &per_topic);
                    tracing::debug!(attempt, follow_ups = count, version = %loaded.hash, "handled");
                    return true;
                }
                Outcome::Failed(failure)
                    if failure.retryable() && attempt <= settings.max_retries =>
                {
                    let delay = backoff(attempt);
                    metrics::handler_failed(plugin, &loaded.hash, failure.kind.as_str());
                    metrics::retried(plugin, record.topic(), failure.kind.as_str());
                    tracing::warn!(
                        attempt,
                        max_retries = settings.max_retries,
                        "attempt failed, retrying in {delay:?}: {}",
                        failure.reason()
                    );
                    if self.pause(delay).await {
                        return false;
                    }
                    attempt += 1;
                }
                Outcome::Failed(failure) => {
                    metrics::handler_failed(plugin, &loaded.hash, failure.kind.as_str());
                    tracing::error!(
                        attempt,
                        dead_letter_topic,
                        "event dead-lettered: {}",
                        failure.reason()
                    );
                    let written = self
                        .dead_letter(
                            record,
                            &dead_letter_topic,
                            Some(plugin),
                            &failure.reason(),
                            attempt,
                        )
                        .await;
                    if written {
                        metrics::dead_lettered(plugin, record.topic(), failure.kind.as_str());
                    }
                    return written;
                }
            }
        }
    }

    /// Produces the follow-ups of a handled event and waits for every
    /// acknowledgement. A follow-up Kafka refuses is retried until it is
    /// taken: the event is finished only when all of them are. `false` if
    /// eddy began stopping first (the event is handled again later).
    async fn produce_follow_ups(&self, mut follow_ups: Vec<FollowUp>, plugin: &Plugin) -> bool {
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: "content-type",
                value: Some("application/json"),
            })
            .insert(Header {
                key: "eddy-plugin",
                value: Some(&plugin.name),
            })
            .insert(Header {
                key: "eddy-plugin-version",
                value: Some(&plugin.hash),
            });
        let mut round: u32 = 0;
        while !follow_ups.is_empty() {
            let sends = follow_ups.iter().map(|f| {
                let mut record = FutureRecord::to(&f.topic)
                    .payload(&f.payload)
                    .headers(headers.clone());
                if let Some(key) = &f.key {
                    record = record.key(key);
                }
                self.producer.send(record, Timeout::Never)
            });
            let results = join_all(sends).await;
            let mut failed = Vec::new();
            for (follow_up, result) in follow_ups.into_iter().zip(results) {
                if let Err((e, _)) = result {
                    tracing::error!(
                        topic = %follow_up.topic,
                        event_id = %follow_up.event_id,
                        "follow-up not acknowledged, retrying: {e}"
                    );
                    failed.push(follow_up);
                }
            }
            follow_ups = failed;
            if !follow_ups.is_empty() {
                round += 1;
                if self.pause(backoff(round)).await {
                    return false;
                }
            }
        }
        true
    }

    /// Writes the record, unchanged, with the `eddy-*` headers to `topic`,
    /// and waits for the acknowledgement. Until Kafka takes it the partition
    /// does not advance: a dead letter is never dropped. `false` if eddy
    /// began stopping before it could be written.
    async fn dead_letter(
        &self,
        record: &OwnedMessage,
        topic: &str,
        plugin: Option<&str>,
        reason: &str,
        attempts: u32,
    ) -> bool {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let partition = record.partition().to_string();
        let offset = record.offset().to_string();
        let attempts = attempts.to_string();
        for (key, value) in [
            ("eddy-error", reason),
            ("eddy-plugin", plugin.unwrap_or("")),
            ("eddy-original-topic", record.topic()),
            ("eddy-original-partition", &partition),
            ("eddy-original-offset", &offset),
            ("eddy-attempts", &attempts),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut round: u32 = 0;
        // A value Kafka will not take is left out, said so in a header: the
        // original stays at its topic, partition and offset.
        let mut value = record.payload();
        loop {
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(topic).headers(headers.clone());
            if let Some(key) = record.key() {
                out = out.key(key);
            }
            if let Some(value) = value {
                out = out.payload(value);
            }
            match self.producer.send(out, Timeout::Never).await {
                Ok(_) => return true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if value.is_some() =>
                {
                    let size = value.map_or(0, <[u8]>::len);
                    tracing::warn!(
                        dead_letter_topic = topic,
                        "the record ({size} bytes) is too large for the dead-letter topic; \
                         writing it without its value"
                    );
                    value = None;
                    headers = headers.insert(Header {
                        key: "eddy-value-omitted",
                        value: Some(&format!(
                            "{size} bytes, too large for this topic; the original is at \
                             {}/{}/{}",
                            record.topic(),
                            record.partition(),
                            record.offset()
                        )),
                    });
                }
                Err((e, _)) => {
                    round += 1;
                    tracing::error!(
                        dead_letter_topic = topic,
                        "cannot write the dead-letter record ({e}); partition {} of {} \
                         will not advance until it can",
                        record.partition(),
                        record.topic()
                    );
                    if self.pause(backoff(round)).await {
                        return false;
                    }
                }
            }
        }
    }
}

fn record_headers(record: &OwnedMessage) -> Vec<(&str, Option<&[u8]>)> {
    record
        .headers()
        .map(|headers| headers.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default()
}

/// Exponential backoff for attempt `n` (1-based) with ±25 % jitter.
fn backoff(n: u32) -> Duration {
    let exponential = BASE_BACKOFF.saturating_mul(1 << n.saturating_sub(1).min(16));
    let capped = exponential.min(MAX_BACKOFF);
    capped.mul_f64(rand::rng().random_range(0.75..=1.25))
}
