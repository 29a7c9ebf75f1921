//! A partition's worker: takes the partition's records in order, in
//! batches. Each batch runs on a blocking thread, where the handlers run,
//! and comes back with what they published. Follow-ups are produced at
//! once and their acknowledgements awaited together (up to
//! [`MAX_IN_FLIGHT`] records); the [`Ledger`] says which offset may be
//! stored as records complete. A record that failed or is to be
//! dead-lettered goes the slow way (`retry`): what was produced before it
//! is settled first, then it is retried or dead-lettered, in order.
//!
//! When its token is cancelled (revoke, shutdown) the worker takes no
//! further record: the batch in hand ends after its current handler and
//! what it handled is produced; a retry or a dead-letter write stops at
//! its next wait. Then the worker waits, at most [`DRAIN_WAIT`], for the
//! acknowledgements of what it produced, stores the offsets of what
//! finished, and ends. Records it had not finished were never stored: the
//! partition's next owner reads them again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::held::{self, Share};
use super::{Cancelled, Lease, Ledger, Start};
use crate::dispatch::{self, Instances, Pass, Ran};
use crate::pipeline::Pipeline;
use crate::retry::{self, Effect};
use crate::snapshot::Snapshot;
use eddy_core::policy;
use eddy_kafka::produce::{self, Acks, NotTaken, Sent};
use eddy_kafka::transaction::{Position, Transactions, Written};
use eddy_schema::Unavailable;

use super::in_transaction::{dead_letter_instead, write_effects};

/// Records run per hop to a blocking thread.
const BATCH: usize = 256;
/// Handled records whose follow-ups may await Kafka's acknowledgement at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest a stopping worker waits for the acknowledgements of what it
/// produced.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

pub struct Worker {
    pipeline: Arc<Pipeline>,
    topic: String,
    /// The topic again, for what is kept per record in a transaction.
    shared_topic: Arc<str>,
    partition: i32,
    token: CancellationToken,
    lease: Lease,
    ledger: Ledger,
    /// What the records it holds cost, released as they complete.
    share: Arc<Share>,
    /// Records taken from the fetch loop, not yet run.
    queue: VecDeque<OwnedMessage>,
    /// Handled records whose follow-ups await acknowledgement, oldest first.
    in_flight: VecDeque<InFlight>,
    instances: Instances,
    /// Times in a row the next record waited for the schema registry.
    schema_waits: u32,
    /// Held while it waits: `/readyz` counts the waiting.
    schema_waiting: Option<eddy_schema::Waiting>,
}

struct InFlight {
    /// Kept for a dead letter, should Kafka refuse a follow-up for good.
    record: OwnedMessage,
    sent: Vec<Sent>,
}

impl Worker {
    /// The worker's task: waits for the partition's previous worker to end,
    /// works until told to stop or let go of, then winds down.
    pub async fn run(pipeline: Arc<Pipeline>, start: Start) {
        let _ended = start.ended.drop_guard();
        let (id, topic, partition) = (start.id, start.topic, start.partition);
        if let Some(previous) = start.previous {
            tracing::info!(
                worker = id,
                topic,
                partition,
                "waiting for the partition's previous worker to end"
            );
            tokio::select! {
                _ = previous.cancelled() => {}
                _ = start.cancel.cancelled() => return,
            }
        }
        tracing::info!(worker = id, topic, partition, "partition worker started");
        let mut worker = Worker {
            pipeline,
            shared_topic: Arc::from(topic.as_str()),
            topic,
            partition,
            token: start.cancel,
            lease: start.lease,
            ledger: Ledger::default(),
            share: start.share,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            instances: Instances::new(),
            schema_waits: 0,
            schema_waiting: None,
        };
        let mut records = start.records;
        // Cancelled, let go of by the fetch loop, or a batch thread failed:
        // wound down the same way.
        let _ = worker.work(&mut records).await;
        worker.wind_down().await;
        // What it did not finish is let go of: queued records too.
        records.close();
        while let Ok(record) = records.try_recv() {
            worker.share.release(held::size(&record));
        }
        worker.share.release(worker.ledger.unfinished_bytes());
        tracing::info!(
            worker = id,
            topic = worker.topic,
            partition = worker.partition,
            "partition worker ended"
        );
    }

    async fn work(&mut self, records: &mut mpsc::Receiver<OwnedMessage>) -> Result<(), Cancelled> {
        loop {
            let refused = self.reap();
            if self.token.is_cancelled() {
                return Err(Cancelled);
            }
            if refused || self.in_flight.len() >= MAX_IN_FLIGHT {
                self.settle_oldest().await?;
                continue;
            }
            if !self.fill(records).await? {
                return Ok(());
            }
            // One snapshot per batch: a reload applies from the next batch on.
            let snapshot = self.pipeline.state.load_full();
            let batch: Vec<OwnedMessage> =
                self.queue.drain(..self.queue.len().min(BATCH)).collect();
            let Some(pass) = self.run_batch(&snapshot, batch).await else {
                return Ok(());
            };
            for record in pass.rest.into_iter().rev() {
                self.queue.push_front(record);
            }
            // Even if the worker was told to stop meanwhile, what the batch
            // handled is handed to the producer (that does not wait); a
            // record that needs the slow way stops at its first wait.
            for ran in pass.ran {
                self.finish(ran, &snapshot).await?;
            }
            match pass.waiting {
                Some(unavailable) => self.wait_for_schemas(&unavailable).await?,
                None => {
                    self.schema_waits = 0;
                    self.schema_waiting = None;
                }
            }
        }
    }

    /// The next record's schema check needs the registry, which does not
    /// answer: the partition waits (its other records with it, in order),
    /// then runs it again. Other partitions go on.
    async fn wait_for_schemas(&mut self, unavailable: &Unavailable) -> Result<(), Cancelled> {
        self.schema_waits += 1;
        self.schema_waiting
            .get_or_insert_with(eddy_schema::Waiting::new);
        let delay = policy::registry_wait(self.schema_waits);
        let offset = self.queue.front().map(|r| r.offset());
        if self.schema_waits == 1 {
            tracing::warn!(
                topic = self.topic,
                partition = self.partition,
                offset,
                "the partition waits for the schema registry: {unavailable}"
            );
        } else {
            tracing::debug!(
                topic = self.topic,
                partition = self.partition,
                offset,
                "still waiting for the schema registry, next try in {delay:?}"
            );
        }
        // What finished before the record is stored while it waits.
        self.settle_all().await?;
        self.store();
        super::pause(&self.token, delay).await
    }

    /// Tops the queue up from the fetch loop. With nothing queued it settles
    /// the oldest in-flight record, or waits for records. `false` when the
    /// fetch loop has let go of the partition and nothing is queued.
    async fn fill(
        &mut self,
        records: &mut mpsc::Receiver<OwnedMessage>,
    ) -> Result<bool, Cancelled> {
        loop {
            while self.queue.len() < BATCH {
                let Ok(record) = records.try_recv() else {
                    break;
                };
                self.take(record);
            }
            if !self.queue.is_empty() {
                return Ok(true);
            }
            if !self.in_flight.is_empty() {
                self.settle_oldest().await?;
                self.reap();
                continue;
            }
            let mut incoming = Vec::with_capacity(BATCH);
            let received = tokio::select! {
                _ = self.token.cancelled() => return Err(Cancelled),
                received = records.recv_many(&mut incoming, BATCH) => received,
            };
            if received == 0 {
                return Ok(false);
            }
            for record in incoming {
                self.take(record);
            }
        }
    }

    fn take(&mut self, record: OwnedMessage) {
        let bytes = held::size(&record);
        if self.ledger.enter_sized(record.offset(), bytes) {
            self.queue.push_back(record);
        } else {
            self.share.release(bytes);
            tracing::warn!(
                topic = self.topic,
                partition = self.partition,
                offset = record.offset(),
                "record not after the one before it; passed over"
            );
        }
    }

    /// Runs a batch on a blocking thread. Awaited even when the worker is
    /// told to stop: nothing of a worker may outlive it, and the batch looks
    /// at the token between records, so it ends after the handler in hand.
    /// `None` if the thread failed (nothing of the batch was stored).
    async fn run_batch(
        &mut self,
        snapshot: &Arc<Snapshot>,
        batch: Vec<OwnedMessage>,
    ) -> Option<Pass> {
        let mut instances = std::mem::take(&mut self.instances);
        let (runtime, snapshot, token) = (
            self.pipeline.runtime.clone(),
            snapshot.clone(),
            self.token.clone(),
        );
        let task = tokio::task::spawn_blocking(move || {
            let ran = dispatch::run_batch(&runtime, &snapshot, &token, batch, &mut instances);
            (ran, instances)
        });
        match task.await {
            Ok((ran, instances)) => {
                self.instances = instances;
                Some(ran)
            }
            Err(e) => {
                tracing::error!(
                    topic = self.topic,
                    partition = self.partition,
                    "the thread running a batch of handlers failed: {e}"
                );
                None
            }
        }
    }

    /// Takes a record from its first pass on: produces what it published,
    /// or goes the slow way.
    async fn finish(&mut self, ran: Ran, snapshot: &Snapshot) -> Result<(), Cancelled> {
        if let Some(transactions) = self.pipeline.transactions.clone() {
            return self
                .finish_in_transaction(&transactions, ran, snapshot)
                .await;
        }
        let offset = ran.record.offset();
        if ran.finished() {
            let mut sent = Vec::new();
            let mut refused = None;
            for (plugin, follow_ups) in ran.handled {
                let producer = &self.pipeline.producer;
                let cause = &ran.record;
                match produce::produce(
                    producer,
                    &self.token,
                    cause,
                    &plugin.id,
                    follow_ups,
                    &mut sent,
                )
                .await
                {
                    Ok(()) => {}
                    Err(NotTaken::Cancelled) => return Err(Cancelled),
                    Err(NotTaken::Broken(reason)) => return Err(self.broken(&reason)),
                    Err(NotTaken::Refused(first)) => {
                        refused.get_or_insert(first);
                    }
                }
            }
            let record = ran.record;
            match refused {
                None if sent.is_empty() => {
                    self.complete(offset);
                }
                None => self.in_flight.push_back(InFlight { record, sent }),
                Some(refused) => {
                    // What came before is settled first, as on the slow way.
                    self.settle_all().await?;
                    let (pipeline, token) = (&self.pipeline, &self.token);
                    retry::dead_letter_refused(pipeline, token, &record, snapshot, refused, 1)
                        .await?;
                    self.complete(offset);
                }
            }
            return Ok(());
        }
        self.settle_all().await?;
        retry::finish(&self.pipeline, &self.token, ran, snapshot, &mut None).await?;
        self.complete(offset);
        Ok(())
    }

    /// The record at `offset` is finished: what it cost is released.
    fn complete(&mut self, offset: i64) {
        self.ledger.complete(offset);
        self.share.release(self.ledger.take_released());
    }

    /// The worker cannot go on: the producer takes nothing more. It ends,
    /// and so does eddy (a restart reads the unfinished records again).
    fn broken(&self, reason: &str) -> Cancelled {
        tracing::error!(
            topic = self.topic,
            partition = self.partition,
            "cannot produce follow-ups: {reason}"
        );
        Cancelled
    }

    /// [`Worker::finish`] with exactly-once delivery: what the record's
    /// plugins published, or its dead letters, are written into the open
    /// transaction together with the partition's offset after it, all at
    /// once. A retry waits outside the transaction; nothing is written until
    /// the record's fate is settled. If a write fails, the transaction is
    /// doomed: it is aborted and eddy rewinds (this worker ends).
    async fn finish_in_transaction(
        &mut self,
        transactions: &Transactions,
        ran: Ran,
        snapshot: &Snapshot,
    ) -> Result<(), Cancelled> {
        let (record, mut effects) = if ran.finished() {
            let effects = ran
                .handled
                .into_iter()
                .map(|(plugin, follow_ups)| Effect::FollowUps {
                    plugin,
                    follow_ups,
                    attempts: 1,
                })
                .collect();
            (ran.record, effects)
        } else {
            let record = ran.record.clone();
            let mut deferred = Some(Vec::new());
            retry::finish(&self.pipeline, &self.token, ran, snapshot, &mut deferred).await?;
            (record, deferred.unwrap_or_default())
        };
        // What an aborted transaction showed about this record.
        let poison = transactions.poison(&self.topic, self.partition, record.offset());
        let mut omit = 0;
        if let Some(poison) = poison {
            if let Some(refused) = poison.refused {
                dead_letter_instead(&mut effects, &record, snapshot, refused);
            }
            // Only a size refusal makes the dead letter smaller.
            omit = poison.dead_letter_too_large;
            let failures = poison.dead_letter_failures;
            if failures > 0 {
                tracing::warn!(
                    topic = self.topic,
                    partition = self.partition,
                    offset = record.offset(),
                    "the record's dead letter was not written last time; trying again{} in {:?}",
                    if omit > 0 { ", smaller," } else { "" },
                    policy::backoff(failures)
                );
                super::pause(&self.token, policy::backoff(failures)).await?;
            }
        }
        let held = transactions.enter(&self.token, &self.lease).await?;
        let mut written = Written::new(Position {
            topic: self.shared_topic.clone(),
            partition: self.partition,
            offset: record.offset(),
        });
        if let Err(spoilt) =
            write_effects(&held, &record, effects, omit, &mut written, snapshot).await
        {
            if !held.token().is_cancelled() {
                held.doom(
                    format!("partition {} of {}: {spoilt}", self.partition, self.topic),
                    spoilt.poison(written.at),
                );
            }
            return Err(Cancelled);
        }
        self.complete(record.offset());
        if let Some(next) = self.ledger.next_to_store() {
            held.stage(&self.topic, self.partition, next, 1, written);
        }
        Ok(())
    }

    async fn settle_all(&mut self) -> Result<(), Cancelled> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits until the oldest in-flight record's follow-ups are all
    /// acknowledged (producing again any Kafka failed), or dead-letters it
    /// if Kafka refused one for good, and completes it.
    async fn settle_oldest(&mut self) -> Result<(), Cancelled> {
        let Some(oldest) = self.in_flight.front_mut() else {
            return Ok(());
        };
        let (pipeline, token) = (&self.pipeline, &self.token);
        match produce::settle(&pipeline.producer, token, &mut oldest.sent).await {
            Ok(()) => {}
            Err(NotTaken::Cancelled) => return Err(Cancelled),
            Err(NotTaken::Broken(reason)) => return Err(self.broken(&reason)),
            Err(NotTaken::Refused(refused)) => {
                let snapshot = pipeline.state.load_full();
                let record = &oldest.record;
                retry::dead_letter_refused(pipeline, token, record, &snapshot, refused, 1).await?;
            }
        }
        if let Some(done) = self.in_flight.pop_front() {
            self.complete(done.record.offset());
        }
        Ok(())
    }

    /// Completes the oldest records whose follow-ups are all acknowledged,
    /// without waiting, and stores the offset the ledger allows. `true` if
    /// the oldest left had a follow-up refused for good: it is to be
    /// settled (dead-lettered) now.
    fn reap(&mut self) -> bool {
        let mut refused = false;
        while let Some(oldest) = self.in_flight.front_mut() {
            match produce::acknowledged_now(&mut oldest.sent) {
                Acks::Done => {}
                Acks::Waiting => break,
                Acks::Refused => {
                    refused = true;
                    break;
                }
            }
            if let Some(done) = self.in_flight.pop_front() {
                self.complete(done.record.offset());
            }
        }
        self.store();
        refused
    }

    /// The worker is ending: waits, at most [`DRAIN_WAIT`], for the
    /// acknowledgements of what it produced, and stores what finished.
    async fn wind_down(&mut self) {
        let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
        while let Some(oldest) = self.in_flight.front_mut() {
            if !produce::acknowledged_by(&mut oldest.sent, deadline).await {
                break;
            }
            if let Some(done) = self.in_flight.pop_front() {
                self.complete(done.record.offset());
            }
        }
        self.store();
        if self.ledger.open() > 0 {
            tracing::debug!(
                topic = self.topic,
                partition = self.partition,
                unfinished = self.ledger.open(),
                "records left for the partition's next owner"
            );
        }
    }

    /// Stores the offset the ledger allows, while the worker holds the lease.
    /// With exactly-once delivery offsets are staged in the transaction
    /// instead, as records finish.
    fn store(&mut self) {
        if self.pipeline.transactions.is_some() {
            return;
        }
        let Some(offset) = self.ledger.next_to_store() else {
            return;
        };
        let (topic, partition) = (self.topic.as_str(), self.partition);
        self.lease.store(|| {
            let mut finished = TopicPartitionList::new();
            let stored = finished
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .and_then(|()| self.pipeline.consumer.store_offsets(&finished));
            if let Err(e) = stored {
                // The partition was revoked meanwhile; its new owner handles
                // the records again (at-least-once).
                tracing::warn!(topic, partition, offset, "cannot store offset: {e}");
            }
        });
    }
}
