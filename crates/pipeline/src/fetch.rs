//! The fetch loop: each record read is handed to its partition's worker
//! (parked when the worker is behind, so no partition holds up another),
//! and, with exactly-once delivery, the rewind after an aborted
//! transaction.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;

use crate::partition::{Parked, Worker, Workers};
use crate::pipeline::Pipeline;
use eddy_kafka::headers;
use eddy_kafka::transaction::Transactions;

/// How often records parked for a worker that was behind are offered to it
/// again (only while some are parked).
const UNPARK_EVERY: Duration = Duration::from_millis(5);

/// Hands each fetched record to its partition's worker until `shutdown`.
/// Fails if a worker ended on its own (its batch thread failed): the
/// records it held were not stored, and a restart reads them again. With
/// exactly-once delivery, rewinds after an aborted transaction.
pub async fn fetch(
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
            // Also while the records held leave no room: looked at again
            // as workers finish theirs.
            _ = unpark.tick(), if !parked.is_empty() || !room(workers, &parked) => {
                if parked.hand_on(consumer, workers, Instant::now()).is_err() {
                    worker_gone(pipeline, workers, &mut parked, &mut shutdown).await?;
                }
                continue;
            }
            // Past the parked records' bounds, the backlog waits in
            // librdkafka's queue.
            // A value over max_event_bytes is not copied out: it is
            // dead-lettered unread.
            message = consumer.recv(), if room(workers, &parked) => message.map(|m| {
                headers::detach_bounded(&m, pipeline.state.load().config.plugins.max_event_bytes)
            }),
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

/// Whether the fetch loop may read another record: the parked records are
/// within their bounds, and everything held (parked, queued, running,
/// awaiting acknowledgements) within the process's budget.
fn room(workers: &Workers, parked: &Parked) -> bool {
    parked.has_room() && workers.held().has_room(parked.bytes())
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
