//! `eddy run`: the parts wired together — the sandbox and the first
//! snapshot, the Kafka clients, transactions, the workers, the HTTP
//! endpoint, the reload thread and the fetch loop — and the shutdown
//! sequence.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use eddy_core::config::{Config, DeliveryMode};
use eddy_core::metrics;
use eddy_kafka::client::{self as kafka, EddyProducer, KafkaErrors, ProducerContext, Retired};
use eddy_kafka::transaction::Transactions;
use eddy_pipeline::context::EddyContext;
use eddy_pipeline::partition::Workers;
use eddy_pipeline::pipeline::{Pipeline, reload_loop};
use eddy_pipeline::reload::{self, Reloader};
use eddy_pipeline::snapshot::Snapshot;
use eddy_sandbox::swap::Swap;
use eddy_sandbox::{Runtime, SlotReset};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::http;

/// Longest eddy waits at shutdown for the spans still queued to be sent.
const SPANS_FLUSH_WAIT: Duration = Duration::from_secs(5);
/// How often eddy looks whether swap was turned on (see [`watch_swap`]).
const SWAP_CHECK: Duration = Duration::from_secs(10);

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
    let metrics_handle = http::install_metrics();
    eddy_trace::start(&config.telemetry, &config.kafka.group_id)?;
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

    let fetched = eddy_pipeline::fetch::fetch(&pipeline, &workers, shutdown).await;

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
    tokio::task::spawn_blocking(|| eddy_trace::flush(SPANS_FLUSH_WAIT))
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
        .map(|p| format!("{}@{}", p.name(), p.hash()))
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
