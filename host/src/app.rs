//! eddy as a whole: wiring the parts together, the fetch loop that hands
//! each record to its partition's worker, the reload loop, readiness, and
//! the shutdown sequence.
//!
//! The invariant the whole keeps: an offset is stored (and so later
//! committed) only after every plugin routed for its event finished —
//! handled, with all its follow-ups acknowledged by Kafka (`acks=all`,
//! idempotent producer), or dead-lettered with the dead-letter record
//! acknowledged — and so did every record before it in its partition
//! (`partition::Ledger`). A failed attempt leaves nothing in Kafka:
//! follow-ups are buffered in the store and produced only when the handler
//! returns `Ok`.

use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeliveryMode};
use crate::kafka::{self, EddyContext, EddyProducer, KafkaErrors, ProducerContext, Retired};
use crate::partition::{Parked, Worker, Workers};
use crate::reload::{self, Reloader, Snapshot};
use crate::runtime::{Runtime, SlotReset};
use crate::swap::Swap;
use crate::transaction::Transactions;
use crate::{http, metrics, trace};

/// Longest eddy waits at shutdown for the spans still queued to be sent.
const SPANS_FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How often eddy looks whether swap was turned on (see [`watch_swap`]).
const SWAP_CHECK: Duration = Duration::from_secs(10);
/// How often records parked for a worker that was behind are offered to it
/// again (only while some are parked).
const UNPARK_EVERY: Duration = Duration::from_millis(5);

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
    kafka_errors: Arc<KafkaErrors>,
    /// Cancelled when eddy begins stopping.
    shutdown: CancellationToken,
}

/// Runs eddy until `shutdown` resolves, then stops fetching, lets the
/// workers finish what they have in hand, flushes the producer, commits and
/// leaves the group.
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
    trace::export::start(&config.telemetry, &config.kafka.group_id)?;
    let mut runtime = Runtime::new()?;
    if let Some(dir) = config.plugins.compiled_cache_dir() {
        runtime.cache_compiled_in(&dir);
    }
    let runtime = Arc::new(runtime);
    let mut reloader = Reloader::new(runtime.clone(), &config);
    // Watch before the first scan, so a file that lands meanwhile is not missed.
    let (watcher, changes) = reload::watch(&config)?;
    let snapshot = reloader.initial(config)?;
    let config = snapshot.config.clone();

    let stopping = CancellationToken::new();
    let topics = config.topics();
    let kafka_errors = Arc::new(KafkaErrors::default());
    let make_producer = {
        let (kafka, errors) = (config.kafka.clone(), kafka_errors.clone());
        move || -> anyhow::Result<(EddyProducer, Retired)> {
            let retired = Retired::default();
            let context = ProducerContext::new(
                errors.clone(),
                kafka.security.token_source(),
                retired.clone(),
            );
            let producer = kafka::producer_config(&kafka)
                .create_with_context(context)
                .map_err(kafka::redacted)
                .context("cannot create the Kafka producer")?;
            Ok((producer, retired))
        }
    };
    let (producer, retired) = make_producer()?;
    let transactions = match config.kafka.delivery {
        DeliveryMode::AtLeastOnce => None,
        DeliveryMode::ExactlyOnce => {
            let first = (producer.clone(), retired);
            let (id, process) = (config.kafka.transactional_id(), stopping.clone());
            let started = tokio::task::spawn_blocking(move || {
                Transactions::start(first, Box::new(make_producer), &id, &process)
            })
            .await
            .context("the task starting transactions failed")??;
            Some(Arc::new(started))
        }
    };
    // With transactions, a failed one stops every worker.
    let workers_parent = match &transactions {
        Some(transactions) => transactions.stopped().clone(),
        None => stopping.clone(),
    };
    let workers = Arc::new(Workers::new(workers_parent));
    let consumer: StreamConsumer<EddyContext> = kafka::consumer_config(&config.kafka)
        .create_with_context(EddyContext {
            workers: workers.clone(),
            transactions: transactions.clone(),
            errors: kafka_errors.clone(),
            token: config.kafka.security.token_source(),
        })
        .map_err(kafka::redacted)
        .context("cannot create the Kafka consumer")?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .with_context(|| format!("cannot subscribe to {topics:?}"))?;
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
    let (slot_reset, why) = runtime.slot_reset();
    tracing::info!("pool slots reset: {} ({why})", slot_reset.as_str());
    // Resetting only written pages is right only while nothing can be
    // swapped out: a swap device turned on later stops eddy.
    let swap_on = CancellationToken::new();
    if slot_reset == SlotReset::WrittenPages {
        tokio::spawn(watch_swap(swap_on.clone()));
    }
    let transactions_failed = match &transactions {
        Some(transactions) => transactions.stopped().clone(),
        None => CancellationToken::new(),
    };
    let shutdown = async {
        tokio::select! {
            () = shutdown => {}
            () = swap_on.cancelled() => {}
            () = transactions_failed.cancelled() => {}
        }
    };
    metrics::plugins_loaded(snapshot.plugins.len());

    let pipeline = Arc::new(Pipeline {
        runtime,
        state: ArcSwap::from_pointee(snapshot),
        producer,
        consumer,
        transactions: transactions.clone(),
        kafka_errors: kafka_errors.clone(),
        shutdown: stopping.clone(),
    });
    let committer = transactions.clone().map(|transactions| {
        let (pipeline, every) = (
            pipeline.clone(),
            Duration::from_millis(config.kafka.transaction_ms),
        );
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let metadata = || pipeline.consumer.group_metadata();
            transactions.run(every, metadata, stopping).await;
        })
    });
    let reload_thread = {
        let pipeline = pipeline.clone();
        std::thread::Builder::new()
            .name("eddy-reload".into())
            .spawn(move || reload_loop(&pipeline, reloader, changes))
            .context("cannot start the reload thread")?
    };
    // Served until the very end, so /readyz says "shutting down" meanwhile.
    let stop_http = CancellationToken::new();
    let http = {
        let pipeline = pipeline.clone();
        let stopped = stop_http.clone();
        tokio::spawn(http::serve(
            listener,
            metrics_handle,
            Arc::new(move || pipeline.readiness()),
            async move { stopped.cancelled().await },
        ))
    };

    let fetched = fetch(&pipeline, &workers, shutdown).await;

    tracing::info!("shutting down: finishing in-flight events");
    stopping.cancel();
    // Dropping the watcher ends the reload thread.
    drop(watcher);
    if reload_thread.join().is_err() {
        tracing::error!("the reload thread panicked");
    }
    for ended in workers.drain() {
        ended.cancelled().await;
    }
    if let Some(committer) = committer {
        let _ = committer.await;
    }
    match &pipeline.transactions {
        Some(transactions) => {
            let metadata = || pipeline.consumer.group_metadata();
            transactions.commit(metadata, "at shutdown").await;
        }
        None => {
            pipeline
                .producer
                .flush(Timeout::After(Duration::from_secs(30)))
                .context("cannot flush the producer")?;
            kafka::commit(&pipeline.consumer, "at shutdown");
        }
    }
    pipeline.consumer.unsubscribe();
    tokio::task::spawn_blocking(|| trace::export::flush(SPANS_FLUSH_WAIT))
        .await
        .ok();
    stop_http.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("{e:#}"),
        Err(e) => tracing::error!("the HTTP server task failed: {e}"),
    }
    fetched?;
    if let Some(failure) = transactions.as_ref().and_then(|t| t.failure()) {
        anyhow::bail!("stopped: {failure}");
    }
    if swap_on.is_cancelled() {
        anyhow::bail!(
            "stopped because swap was turned on: pool slots were reset by their written \
             pages, which misses swapped-out ones; a restarted eddy resets them whole"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `swap_on` once a page of this process can be swapped out.
async fn watch_swap(swap_on: CancellationToken) {
    let mut every = tokio::time::interval(SWAP_CHECK);
    loop {
        every.tick().await;
        let swap = Swap::detect();
        if swap.is_possible() {
            tracing::error!(
                "{}: stopping, since pool slots are reset by their written pages only",
                swap.reason()
            );
            swap_on.cancel();
            return;
        }
    }
}

/// Hands each fetched record to its partition's worker until `shutdown`.
/// Fails if a worker ended on its own (its batch thread failed): the
/// records it held were not stored, and a restart reads them again. With
/// exactly-once delivery, rewinds after an aborted transaction.
async fn fetch(
    pipeline: &Arc<Pipeline>,
    workers: &Workers,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let transactions = pipeline.transactions.as_deref();
    let rewind_wanted = || async move {
        match transactions {
            Some(transactions) => transactions.rewind_wanted().await,
            None => std::future::pending().await,
        }
    };
    let consumer = &pipeline.consumer;
    let mut parked = Parked::default();
    let mut unpark = tokio::time::interval(UNPARK_EVERY);
    unpark.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            () = rewind_wanted() => {
                rewind(pipeline, workers, &mut parked, None).await;
                continue;
            }
            _ = unpark.tick(), if !parked.is_empty() => {
                if parked.hand_on(consumer, workers, Instant::now()).is_err() {
                    worker_gone(pipeline, workers, &mut parked, &mut shutdown).await?;
                }
                continue;
            }
            // Past the parked records' bounds, the backlog waits in
            // librdkafka's queue.
            message = consumer.recv(), if parked.has_room() => message.map(|m| m.detach()),
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                pipeline.kafka_errors.record(&e, None);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        if transactions.is_some_and(Transactions::is_rewinding) {
            // Not handed on: the partition is read again from here, or
            // from before.
            let held = (topic.to_string(), partition, offset);
            rewind(pipeline, workers, &mut parked, Some(held)).await;
            continue;
        }
        let sender = workers.sender(topic, partition, offset, |start| {
            tokio::spawn(Worker::run(pipeline.clone(), start));
        });
        let Some(sender) = sender else {
            tracing::debug!(
                topic,
                partition,
                offset,
                "record of a partition no longer assigned; its owner reads it"
            );
            continue;
        };
        // From here on the record's worker has it, or had it: a rewind
        // reads the partition again from the worker's first record or
        // before. A worker that is behind does not hold up the others.
        if parked.hand(consumer, &sender, message).is_err() {
            worker_gone(pipeline, workers, &mut parked, &mut shutdown).await?;
        }
    }
}

/// A partition's worker ended on its own. With exactly-once delivery that
/// is a worker whose transaction is to be aborted: the rewind after the
/// abort goes on. Otherwise its batch thread failed: eddy stops (the
/// records it held were not stored, and a restart reads them again).
async fn worker_gone(
    pipeline: &Pipeline,
    workers: &Workers,
    parked: &mut Parked,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> anyhow::Result<()> {
    let transactions = pipeline.transactions.as_deref();
    let Some(transactions) = transactions.filter(|t| t.is_spoilt()) else {
        anyhow::bail!("a partition worker stopped unexpectedly");
    };
    tokio::select! {
        _ = shutdown => {}
        () = transactions.rewind_wanted() => rewind(pipeline, workers, parked, None).await,
    }
    Ok(())
}

/// After an aborted transaction: stops every worker, seeks each partition
/// that had one back to its last commit (or the worker's first record, if
/// that is later), and `held`'s partition to `held`, a record fetched but
/// handed to no worker; then begins the next transaction. The partitions'
/// records are handled again; nothing of the aborted transaction was
/// visible.
async fn rewind(
    pipeline: &Pipeline,
    workers: &Workers,
    parked: &mut Parked,
    held: Option<(String, i32, i64)>,
) {
    let Some(transactions) = pipeline.transactions.as_deref() else {
        return;
    };
    if !transactions.is_rewinding() {
        // Woken once more for a rewind already done.
        return;
    }
    let mut targets: Vec<(String, i32, i64)> = workers
        .stop_all()
        .await
        .into_iter()
        .map(|(topic, partition, first)| {
            let committed = transactions.committed(&topic, partition);
            let at = committed.map_or(first, |committed| committed.max(first));
            (topic, partition, at)
        })
        .collect();
    if let Some(held) = held
        && !targets.iter().any(|(t, p, _)| *t == held.0 && *p == held.1)
    {
        targets.push(held);
    }
    // Every parked record is after its worker's first: the seeks below
    // read it again. Resumed first, so the seek decides where each
    // partition is fetched from.
    parked.forget_all(&pipeline.consumer);
    let mut seeks = TopicPartitionList::new();
    for (topic, partition, at) in &targets {
        if let Err(e) = seeks.add_partition_offset(topic, *partition, Offset::Offset(*at)) {
            transactions.fail(format!(
                "cannot rewind partition {partition} of {topic}: {e}"
            ));
            return;
        }
    }
    let sought = tokio::task::block_in_place(|| {
        pipeline
            .consumer
            .seek_partitions(seeks, Duration::from_secs(10))
    });
    let failed: Vec<String> = match sought {
        Ok(sought) => sought
            .elements()
            .iter()
            .filter_map(|e| match e.error() {
                Ok(()) => None,
                Err(error) => Some(format!(
                    "partition {} of {}: {error}",
                    e.partition(),
                    e.topic()
                )),
            })
            .collect(),
        Err(e) => vec![e.to_string()],
    };
    if !failed.is_empty() {
        transactions.fail(format!(
            "cannot rewind after the aborted transaction ({}); eddy stops, and a restart \
             handles the records again from the committed offsets",
            failed.join("; ")
        ));
        return;
    }
    tracing::info!(
        partitions = ?targets,
        "rewound to the last commit: (topic, partition, offset read next)"
    );
    transactions.resume();
}

/// The start-up summary: what runs, in a few lines a person reads at a glance.
fn log_summary(snapshot: &Snapshot, http: &str) {
    let config = &snapshot.config;
    tracing::info!(
        "eddy {} consuming {:?} as group {:?} from {} ({})",
        env!("CARGO_PKG_VERSION"),
        config.topics(),
        config.kafka.group_id,
        config.kafka.bootstrap_servers,
        config.kafka.security.summary()
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

impl Pipeline {
    /// Why eddy is not ready to do its work, if it is not. Blocks for up to
    /// two seconds on a metadata request.
    fn readiness(&self) -> Result<(), Vec<String>> {
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
        let waiting = crate::schema::waiting();
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
