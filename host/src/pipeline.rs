//! From Kafka records to handled events, follow-ups and dead letters.
//!
//! The invariant: an offset is stored (and so later committed) only after
//! every plugin routed for its event finished — handled, with all its
//! follow-ups acknowledged by Kafka (`acks=all`, idempotent producer), or
//! dead-lettered with the dead-letter record acknowledged. Each partition has
//! one worker that runs its records through the handlers in order; while
//! their follow-ups await acknowledgement, a record's offset is stored only
//! once it and every record before it are finished, so a stored offset never
//! skips one. Partitions run in parallel.
//!
//! A failed attempt leaves nothing in Kafka: follow-ups are buffered in the
//! store and produced only when the handler returns `Ok`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use futures::FutureExt;
use rand::Rng;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::bindings::{Delivery, Event};
use crate::config::{Config, KafkaConfig};
use crate::envelope;
use crate::metrics::Tally;
use crate::reload::{self, Reloader, Snapshot};
use crate::runtime::{Failure, FailureKind, FollowUp, Outcome, Plugin, Runtime, Trigger, Warm};
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
        let (topic, partition) = (message.topic(), message.partition());
        let sender = workers.sender(topic, partition, |records, state| {
            let at = (topic.to_string(), partition);
            tokio::spawn(partition_worker(pipeline.clone(), at, records, state))
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
        // librdkafka stops fetching a partition whose local queue is full,
        // for a second by default: long enough for eddy to drain it and sit
        // idle. Look again soon instead.
        .set("fetch.queue.backoff.ms", "10")
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
        mut first: Option<Failure>,
    ) -> bool {
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
            let outcome = match first.take() {
                // The first attempt already ran, in the record's batch.
                Some(failure) => Outcome::Failed(failure),
                None => {
                    let (runtime, task_plugin, task_settings, event) = (
                        self.runtime.clone(),
                        loaded.clone(),
                        settings.clone(),
                        event.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        let trigger = Trigger {
                            event: &event,
                            delivery: &delivery,
                        };
                        runtime.invoke(&task_plugin, &task_settings, trigger, None)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Outcome::Failed(Failure {
                            kind: FailureKind::Trap,
                            message: format!("the host task running the handler failed: {e}"),
                        })
                    })
                }
            };
            match outcome {
                Outcome::Handled(follow_ups) => {
                    let count = follow_ups.len();
                    let mut tally = Tally::default();
                    tally.handled(
                        plugin,
                        &loaded.hash,
                        follow_ups.iter().map(|f| f.topic.as_str()),
                    );
                    if !self.produce_follow_ups(follow_ups, &loaded).await {
                        return false;
                    }
                    tally.flush(record.topic());
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
    async fn produce_follow_ups(&self, follow_ups: Vec<FollowUp>, plugin: &Arc<Plugin>) -> bool {
        let mut sent = self.send_all(plugin, follow_ups);
        self.settle(&mut sent).await
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

/// Records run per hop to a blocking thread.
const BATCH: usize = 256;
/// Handled records per partition whose follow-ups may await Kafka's
/// acknowledgement at once.
const MAX_UNACKED: usize = 4096;

/// One record after its first pass through the handlers, on a blocking
/// thread.
struct Ran {
    record: OwnedMessage,
    /// The decoded event, or the dead-letter reason (kind, detail).
    event: Result<Arc<Event>, (&'static str, String)>,
    /// What the plugins handled so far published.
    handled: Vec<(Arc<Plugin>, Vec<FollowUp>)>,
    /// Where the pass stopped, if it did: the routed plugins left, from the
    /// one that failed (with its failure) or is not loaded (no failure) on.
    stopped: Option<(Vec<String>, Option<Failure>)>,
}

impl Ran {
    /// Every routed plugin handled the event on its first attempt.
    fn finished(&self) -> bool {
        self.event.is_ok() && self.stopped.is_none()
    }
}

/// A handled record whose follow-ups are on their way to Kafka.
struct Unacked {
    offset: i64,
    sent: Vec<Sent>,
}

struct Sent {
    follow_up: FollowUp,
    plugin: Arc<Plugin>,
    ack: Ack,
}

enum Ack {
    Waiting(DeliveryFuture),
    Done,
    /// Refused by Kafka, or not taken by the producer: produced again.
    Refused,
}

/// A worker's topic and partition.
type Partition = (String, i32);

/// The warm instances of one partition worker, by plugin name.
type Instances = HashMap<String, Option<Warm>>;

/// Takes one partition's records in order, in batches: each batch runs on a
/// blocking thread, where the handlers run, and comes back with what they
/// published. Follow-ups are produced at once, and a record's offset is
/// stored once it and every record before it are finished, so up to
/// [`MAX_UNACKED`] records' acknowledgements are awaited together. A record
/// that failed or must be dead-lettered goes the slow way: what was
/// produced before it is settled first, then it is retried or dead-lettered
/// in order.
///
/// Once eddy is stopping, or the partition is revoked, the worker settles
/// what its handlers finished and leaves the rest: their offsets were never
/// stored, so the partition's next owner reads them again.
async fn partition_worker(
    pipeline: Arc<Pipeline>,
    at: Partition,
    mut records: mpsc::Receiver<OwnedMessage>,
    state: Arc<WorkerState>,
) {
    let mut queue: VecDeque<OwnedMessage> = VecDeque::new();
    let mut unacked: VecDeque<Unacked> = VecDeque::new();
    let mut instances = Instances::new();
    // Held while there is work in hand: a revoke waits for it.
    let mut busy = None;
    loop {
        pipeline.store_acknowledged(&at, &mut unacked);
        if busy.is_some() && (state.revoked() || pipeline.stopping()) {
            // Abandoned only if Kafka refuses follow-ups while stopping.
            let _ = pipeline.settle_all(&at, &mut unacked).await;
            break;
        }
        if queue.is_empty() {
            if unacked.is_empty() {
                busy = None;
                let mut incoming = Vec::with_capacity(BATCH);
                if records.recv_many(&mut incoming, BATCH).await == 0 {
                    break;
                }
                queue.extend(incoming);
            } else {
                while queue.len() < BATCH {
                    let Ok(record) = records.try_recv() else {
                        break;
                    };
                    queue.push_back(record);
                }
                if queue.is_empty() {
                    pipeline.settle_oldest(&at, &mut unacked).await;
                    continue;
                }
            }
        }
        if busy.is_none() {
            let Some(guard) = state.begin().await else {
                break;
            };
            busy = Some(guard);
            continue;
        }
        if unacked.len() >= MAX_UNACKED {
            pipeline.settle_oldest(&at, &mut unacked).await;
            continue;
        }

        // One snapshot per batch: a reload applies from the next batch on.
        let snapshot = pipeline.state.load_full();
        let batch: Vec<OwnedMessage> = queue.drain(..queue.len().min(BATCH)).collect();
        let task = {
            let (pipeline, snapshot) = (pipeline.clone(), snapshot.clone());
            tokio::task::spawn_blocking(move || {
                let (ran, rest) = pipeline.run_batch(&snapshot, batch, &mut instances);
                (ran, rest, instances)
            })
        };
        let (ran, rest, returned) = match task.await {
            Ok(done) => done,
            Err(e) => {
                // Nothing of the batch was stored: it is read again after
                // the restart this leads to.
                tracing::error!("the thread running a batch of handlers failed: {e}");
                return;
            }
        };
        instances = returned;
        for record in rest.into_iter().rev() {
            queue.push_front(record);
        }
        for ran in ran {
            if ran.finished() {
                unacked.push_back(pipeline.send_follow_ups(ran));
                continue;
            }
            let offset = ran.record.offset();
            if !pipeline.settle_all(&at, &mut unacked).await
                || !pipeline.finish(ran, &snapshot).await
            {
                // Abandoned because eddy is stopping: the offset stays, the
                // record is read again.
                return;
            }
            pipeline.store_offset(&at.0, at.1, offset);
        }
    }
}

impl Pipeline {
    /// Runs the batch's records through their handlers, in order, one
    /// attempt each, until one needs more than that (a failure, a dead
    /// letter) or eddy is stopping. Returns what ran, and the records after
    /// it, untouched.
    fn run_batch(
        &self,
        snapshot: &Snapshot,
        batch: Vec<OwnedMessage>,
        instances: &mut Instances,
    ) -> (Vec<Ran>, Vec<OwnedMessage>) {
        let mut tally = Tally::default();
        let mut ran = Vec::with_capacity(batch.len());
        let mut records = batch.into_iter();
        // Every record of the batch is from one partition: the delivery
        // handed to the plugins is filled in per record, in place.
        let mut delivery = Delivery {
            topic: records
                .as_slice()
                .first()
                .map(|r| r.topic().to_string())
                .unwrap_or_default(),
            partition: 0,
            offset: 0,
            key: None,
            attempt: 1,
        };
        for record in records.by_ref() {
            tally.consumed();
            let one = self.run_record(snapshot, record, &mut delivery, instances, &mut tally);
            let stop = !one.finished();
            ran.push(one);
            if stop || self.stopping() {
                break;
            }
        }
        tally.flush(&delivery.topic);
        (ran, records.collect())
    }

    fn run_record(
        &self,
        snapshot: &Snapshot,
        record: OwnedMessage,
        delivery: &mut Delivery,
        instances: &mut Instances,
        tally: &mut Tally,
    ) -> Ran {
        let max = snapshot.config.plugins.max_event_bytes;
        let size = record.payload().map_or(0, <[u8]>::len);
        let decoded = if size > max {
            Err((
                "too-large",
                format!("value of {size} bytes is over max_event_bytes ({max})"),
            ))
        } else {
            envelope::decode(record.payload(), record_headers(&record))
                .map_err(|e| ("undecodable", e.to_string()))
        };
        let mut ran = Ran {
            record,
            event: Err(("", String::new())),
            handled: Vec::new(),
            stopped: None,
        };
        let event = match decoded {
            Ok(event) => Arc::new(event),
            Err(reason) => {
                ran.event = Err(reason);
                return ran;
            }
        };
        let record = &ran.record;
        let routed = snapshot
            .router
            .plugins_for(record.topic(), &event.event_type);
        if routed.is_empty() {
            tally.skipped();
            tracing::debug!(
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                event_id = %event.event_id,
                event_type = %event.event_type,
                "no route; skipped"
            );
        }
        delivery.partition = record.partition();
        delivery.offset = record.offset();
        match (record.key(), &mut delivery.key) {
            (Some(key), Some(buffer)) => {
                buffer.clear();
                buffer.extend_from_slice(key);
            }
            (key, slot) => *slot = key.map(<[u8]>::to_vec),
        }
        let left = |i: usize| routed[i..].iter().map(|p| p.to_string()).collect();
        for (i, &name) in routed.iter().enumerate() {
            #[cfg(feature = "bench-native")]
            if name == crate::bench_native::NAME {
                crate::bench_native::handle(&event);
                tally.handled(name, "native", []);
                continue;
            }
            let Some(plugin) = snapshot.plugins.get(name) else {
                ran.stopped = Some((left(i), None));
                break;
            };
            if !instances.contains_key(name) {
                instances.insert(name.to_string(), None);
            }
            let outcome = self.runtime.invoke(
                plugin,
                &snapshot.settings(name),
                Trigger {
                    event: &event,
                    delivery,
                },
                instances.get_mut(name),
            );
            match outcome {
                Outcome::Handled(follow_ups) => {
                    tally.handled(
                        name,
                        &plugin.hash,
                        follow_ups.iter().map(|f| f.topic.as_str()),
                    );
                    tracing::debug!(
                        topic = record.topic(),
                        partition = record.partition(),
                        offset = record.offset(),
                        plugin = %name,
                        version = %plugin.hash,
                        follow_ups = follow_ups.len(),
                        "handled"
                    );
                    ran.handled.push((plugin.clone(), follow_ups));
                }
                Outcome::Failed(failure) => {
                    ran.stopped = Some((left(i), Some(failure)));
                    break;
                }
            }
        }
        ran.event = Ok(event);
        ran
    }

    /// Produces a finished record's follow-ups without waiting for Kafka.
    fn send_follow_ups(&self, ran: Ran) -> Unacked {
        let mut sent = Vec::new();
        for (plugin, follow_ups) in ran.handled {
            sent.extend(self.send_all(&plugin, follow_ups));
        }
        Unacked {
            offset: ran.record.offset(),
            sent,
        }
    }

    /// Produces `plugin`'s follow-ups without waiting for Kafka.
    fn send_all(&self, plugin: &Arc<Plugin>, follow_ups: Vec<FollowUp>) -> Vec<Sent> {
        follow_ups
            .into_iter()
            .map(|follow_up| Sent {
                ack: self.send(&follow_up, plugin),
                follow_up,
                plugin: plugin.clone(),
            })
            .collect()
    }

    fn send(&self, follow_up: &FollowUp, plugin: &Plugin) -> Ack {
        let mut record = FutureRecord::to(&follow_up.topic)
            .payload(&follow_up.payload)
            .headers(follow_up_headers(plugin));
        if let Some(key) = &follow_up.key {
            record = record.key(key);
        }
        match self.producer.send_result(record) {
            Ok(ack) => Ack::Waiting(ack),
            Err((e, _)) => {
                tracing::warn!(
                    topic = %follow_up.topic,
                    event_id = %follow_up.event_id,
                    "follow-up not taken by the producer, retrying: {e}"
                );
                Ack::Refused
            }
        }
    }

    /// Stores the offset after the oldest records whose follow-ups are all
    /// acknowledged, without waiting.
    fn store_acknowledged(&self, at: &Partition, unacked: &mut VecDeque<Unacked>) {
        let mut finished = None;
        while let Some(oldest) = unacked.front_mut() {
            let mut all = true;
            for sent in &mut oldest.sent {
                if let Ack::Waiting(ack) = &mut sent.ack {
                    match ack.now_or_never() {
                        Some(result) => sent.ack = acknowledged(&sent.follow_up, result),
                        None => all = false,
                    }
                }
                all &= matches!(sent.ack, Ack::Done);
            }
            if !all {
                break;
            }
            finished = unacked.pop_front().map(|u| u.offset);
        }
        if let Some(offset) = finished {
            self.store_offset(&at.0, at.1, offset);
        }
    }

    /// Waits until the oldest record's follow-ups are all acknowledged and
    /// stores its offset. `false` if eddy began stopping first.
    async fn settle_oldest(&self, at: &Partition, unacked: &mut VecDeque<Unacked>) -> bool {
        let Some(oldest) = unacked.front_mut() else {
            return true;
        };
        if !self.settle(&mut oldest.sent).await {
            return false;
        }
        if let Some(done) = unacked.pop_front() {
            self.store_offset(&at.0, at.1, done.offset);
        }
        true
    }

    /// Waits until every follow-up in `sent` is acknowledged, producing again
    /// any Kafka refused, with backoff: an event is finished only when all of
    /// them are taken. `false` if eddy began stopping first.
    async fn settle(&self, sent: &mut [Sent]) -> bool {
        for sent in sent {
            let mut round: u32 = 0;
            loop {
                match std::mem::replace(&mut sent.ack, Ack::Refused) {
                    Ack::Done => {
                        sent.ack = Ack::Done;
                        break;
                    }
                    Ack::Waiting(ack) => sent.ack = acknowledged(&sent.follow_up, ack.await),
                    Ack::Refused => {
                        round += 1;
                        if self.pause(backoff(round)).await {
                            return false;
                        }
                        sent.ack = self.send(&sent.follow_up, &sent.plugin);
                    }
                }
            }
        }
        true
    }

    /// Settles every record in `unacked`, oldest first. `false` if eddy
    /// began stopping first.
    async fn settle_all(&self, at: &Partition, unacked: &mut VecDeque<Unacked>) -> bool {
        while !unacked.is_empty() {
            if !self.settle_oldest(at, unacked).await {
                return false;
            }
        }
        true
    }

    /// Marks the record at `offset` finished: its offset (the next to read)
    /// will be committed.
    fn store_offset(&self, topic: &str, partition: i32, offset: i64) {
        let mut finished = TopicPartitionList::new();
        let stored = finished
            .add_partition_offset(topic, partition, Offset::Offset(offset + 1))
            .and_then(|()| self.consumer.store_offsets(&finished));
        if let Err(e) = stored {
            // The partition was revoked meanwhile; its new owner handles
            // the record again (at-least-once).
            tracing::warn!(topic, partition, offset, "cannot store offset: {e}");
        }
    }

    /// Takes a record whose first pass stopped short to the end: the
    /// dead letter of an undecodable record, the follow-ups of the plugins
    /// that handled it, then retries or dead letters for the plugin that
    /// failed and the plugins after it. `false` if eddy began stopping
    /// first (the record is handled again later).
    async fn finish(&self, ran: Ran, snapshot: &Snapshot) -> bool {
        let record = &ran.record;
        let span = tracing::info_span!(
            "record",
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset()
        );
        async {
            let event = match ran.event {
                Ok(event) => event,
                Err((kind, reason)) => {
                    tracing::warn!("record dead-lettered, {kind}: {reason}");
                    metrics::dead_lettered("", record.topic(), kind);
                    let topic = format!("{}.dlq", record.topic());
                    return self
                        .dead_letter(record, &topic, None, &format!("{kind}: {reason}"), 0)
                        .await;
                }
            };
            for (plugin, follow_ups) in ran.handled {
                if !self.produce_follow_ups(follow_ups, &plugin).await {
                    return false;
                }
            }
            let (left, mut failure) = ran.stopped.unwrap_or_default();
            for plugin in &left {
                // The first attempt of the plugin that stopped the pass ran
                // already; the plugins after it have not run.
                let first = failure.take();
                let finished = self
                    .deliver(record, &event, plugin, snapshot, first)
                    .instrument(tracing::info_span!("plugin", plugin, event_id = %event.event_id))
                    .await;
                if !finished {
                    return false;
                }
            }
            true
        }
        .instrument(span)
        .await
    }
}

/// What an acknowledgement came to.
fn acknowledged(
    follow_up: &FollowUp,
    result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Ack {
    match result {
        Ok(Ok(_)) => Ack::Done,
        Ok(Err((e, _))) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %follow_up.event_id,
                "follow-up not acknowledged, retrying: {e}"
            );
            Ack::Refused
        }
        Err(_) => {
            tracing::error!(
                topic = %follow_up.topic,
                event_id = %follow_up.event_id,
                "the producer dropped a follow-up, retrying"
            );
            Ack::Refused
        }
    }
}

/// The headers every follow-up of `plugin` carries.
fn follow_up_headers(plugin: &Plugin) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(3)
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
        })
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
