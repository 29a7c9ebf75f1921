//! Exactly-once delivery (`[kafka] delivery = "exactly-once"`): a record's
//! follow-ups and dead letters and its consumed offset are written in one
//! Kafka transaction, KIP-447's consume-transform-produce loop.
//!
//! One transactional producer serves the process. A worker writes all of a
//! record's effects and stages its partition's next offset while it holds
//! the gate for reading ([`Transactions::enter`]). The committer takes the
//! gate for writing every `transaction_ms`, or sooner once [`MAX_RECORDS`]
//! records are staged, so no record is ever half in one transaction: it
//! sends the staged offsets with the consumer's group metadata, commits, and
//! begins the next transaction. A revoke commits before the partitions move;
//! shutdown commits last.
//!
//! A transaction that fails is aborted and eddy stops: nothing of it is
//! visible to `read_committed` consumers, and a restarted eddy reads its
//! records again from the committed offsets. A fenced producer (another
//! instance with the same `transactional.id`, or the group moved on without
//! this one) stops eddy too: the work is someone else's now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::partition::{Cancelled, Lease};

/// Records staged after which the committer commits without waiting for
/// `transaction_ms`.
pub const MAX_RECORDS: usize = 10_000;
/// Longest a transaction call (init, offsets, commit, abort) may block.
const CALL_WAIT: Duration = Duration::from_secs(30);
/// Commits tried again after a retriable error (a timeout, say).
const COMMIT_TRIES: u32 = 3;

pub struct Transactions {
    producer: FutureProducer,
    id: String,
    gate: RwLock<()>,
    staged: Mutex<Staged>,
    /// Woken once [`MAX_RECORDS`] records are staged.
    full: Notify,
    /// Why transactions stopped, once one failed: nothing more is written.
    failed: Mutex<Option<String>>,
    /// A child of the process's token, cancelled too when a transaction
    /// fails: the parent of every worker's token, so a failure stops them.
    stopped: CancellationToken,
    /// Cancelled only when a transaction fails: what a write into the
    /// transaction stops for (see [`InTransaction::token`]).
    broken: CancellationToken,
}

/// What the open transaction will commit.
#[derive(Default)]
struct Staged {
    /// The next offset to read, by topic, then partition: looked up with
    /// the worker's borrowed topic name, so staging allocates nothing once
    /// the topic is there.
    offsets: HashMap<String, HashMap<i32, i64>>,
    records: usize,
}

/// The right to write into the open transaction, while held.
pub struct InTransaction<'a> {
    _gate: RwLockReadGuard<'a, ()>,
    transactions: &'a Transactions,
}

impl InTransaction<'_> {
    /// The token for the waits of a write into the transaction. Once a
    /// record's first effect is in, a revoke or shutdown must not cut its
    /// write short: its offset would be missing from a transaction holding
    /// part of its effects. So only a failed transaction stops it.
    pub fn token(&self) -> &CancellationToken {
        &self.transactions.broken
    }

    /// Stages `next` as the offset of `topic`/`partition` to read next,
    /// `records` more records having finished: they commit together with
    /// what was written meanwhile.
    pub fn stage(&self, topic: &str, partition: i32, next: i64, records: usize) {
        let mut staged = self.transactions.staged();
        match staged.offsets.get_mut(topic) {
            Some(partitions) => {
                partitions.insert(partition, next);
            }
            None => {
                staged
                    .offsets
                    .insert(topic.to_string(), HashMap::from([(partition, next)]));
            }
        }
        staged.records += records;
        if staged.records >= MAX_RECORDS {
            self.transactions.full.notify_one();
        }
    }
}

impl Transactions {
    /// Takes the producer's `transactional.id` (fencing any earlier producer
    /// with it) and begins the first transaction. Blocks. `process` is the
    /// process's token.
    pub fn start(
        producer: FutureProducer,
        id: &str,
        process: &CancellationToken,
    ) -> anyhow::Result<Transactions> {
        producer.init_transactions(CALL_WAIT).with_context(|| {
            format!(
                "cannot start transactions as {id:?} ([kafka] delivery = \"exactly-once\"): \
                 the brokers must support them (Kafka 2.5 or later, with at least \
                 transaction.state.log.min.isr brokers up)"
            )
        })?;
        producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
        tracing::info!(transactional_id = id, "exactly-once: transactions started");
        Ok(Transactions {
            producer,
            id: id.to_string(),
            gate: RwLock::new(()),
            staged: Mutex::default(),
            full: Notify::new(),
            failed: Mutex::new(None),
            stopped: process.child_token(),
            broken: CancellationToken::new(),
        })
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the right to write into the open transaction. `Cancelled`
    /// if the worker is told to stop meanwhile, has lost its lease (its
    /// partition moved on), or transactions have failed.
    pub async fn enter(
        &self,
        token: &CancellationToken,
        lease: &Lease,
    ) -> Result<InTransaction<'_>, Cancelled> {
        let gate = tokio::select! {
            _ = token.cancelled() => return Err(Cancelled),
            _ = self.stopped.cancelled() => return Err(Cancelled),
            gate = self.gate.read() => gate,
        };
        if !lease.is_held() || self.stopped.is_cancelled() {
            return Err(Cancelled);
        }
        Ok(InTransaction {
            _gate: gate,
            transactions: self,
        })
    }

    /// Cancelled once transactions have failed or eddy stops: the token
    /// the workers' tokens derive from.
    pub fn stopped(&self) -> &CancellationToken {
        &self.stopped
    }

    /// Why transactions failed, if they did.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Commits what is staged every `every`, or sooner when enough is, until
    /// `shutdown` or a failure.
    pub async fn run(
        &self,
        every: Duration,
        metadata: impl Fn() -> Option<ConsumerGroupMetadata>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.full.notified() => {}
            }
            if self.failure().is_some() {
                return;
            }
            self.commit(&metadata, "on cadence").await;
        }
    }

    /// Commits what is staged and begins the next transaction, holding the
    /// gate meanwhile; on failure, aborts and stops transactions.
    pub async fn commit(&self, metadata: impl Fn() -> Option<ConsumerGroupMetadata>, when: &str) {
        let _gate = self.gate.write().await;
        tokio::task::block_in_place(|| self.commit_held(metadata(), when));
    }

    /// [`Transactions::commit`] from a thread that may block: librdkafka's
    /// rebalance callback, which runs on a runtime thread.
    pub fn commit_blocking(&self, metadata: Option<ConsumerGroupMetadata>, when: &str) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| {
                let _gate = handle.block_on(self.gate.write());
                self.commit_held(metadata, when);
            }),
            Err(_) => {
                let _gate = self.gate.blocking_write();
                self.commit_held(metadata, when);
            }
        }
    }

    /// Records why transactions stopped, and stops the workers.
    pub fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_or_insert(reason);
        self.broken.cancel();
        self.stopped.cancel();
    }

    fn commit_held(&self, metadata: Option<ConsumerGroupMetadata>, when: &str) {
        if self.failure().is_some() {
            return;
        }
        let staged = std::mem::take(&mut *self.staged());
        if staged.offsets.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.try_commit(&staged, metadata) {
            Ok(()) => {
                metrics::transaction("committed", started.elapsed());
                tracing::debug!(
                    records = staged.records,
                    partitions = staged.offsets.values().map(HashMap::len).sum::<usize>(),
                    "transaction committed {when}"
                );
            }
            Err(e) => {
                if let Err(e) = self.producer.abort_transaction(CALL_WAIT) {
                    tracing::error!("aborting the transaction failed too: {e}");
                }
                metrics::transaction("aborted", started.elapsed());
                self.fail(format!(
                    "the transaction of {} records was aborted ({when}): {e:#}; eddy stops, \
                     and a restart handles those records again from the committed offsets",
                    staged.records
                ));
            }
        }
    }

    fn try_commit(
        &self,
        staged: &Staged,
        metadata: Option<ConsumerGroupMetadata>,
    ) -> anyhow::Result<()> {
        let metadata = metadata.context("the consumer has no group metadata yet")?;
        let mut offsets = TopicPartitionList::new();
        for (topic, partitions) in &staged.offsets {
            for (partition, next) in partitions {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
        }
        self.producer
            .send_offsets_to_transaction(&offsets, &metadata, CALL_WAIT)
            .map_err(|e| self.explained(e))?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.producer.commit_transaction(CALL_WAIT) {
                Ok(()) => break,
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < COMMIT_TRIES => {
                    tracing::warn!("committing the transaction, again: {e}");
                }
                Err(e) => return Err(self.explained(e)),
            }
        }
        self.producer
            .begin_transaction()
            .map_err(|e| self.explained(e))?;
        Ok(())
    }

    /// `error`, said in the words of what it means for eddy.
    fn explained(&self, error: KafkaError) -> anyhow::Error {
        match &error {
            KafkaError::Transaction(e) if e.is_fatal() => anyhow::anyhow!(
                "{error}: this producer was fenced: another eddy took over transactional.id \
                 {:?} or this one's partitions; its work is theirs now",
                self.id
            ),
            _ => error.into(),
        }
    }
}
