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
//! A transaction that fails (a follow-up the broker refused, the broker
//! gone for longer than a commit waits, a worker that could not write into
//! it) is aborted: nothing of it is visible to `read_committed` consumers.
//! Then eddy rewinds: the fetch loop stops every worker, seeks their
//! partitions back to the last commit, and [`Transactions::resume`]s; the
//! records are handled again. What the aborted transaction showed about a
//! record is kept for its next pass ([`Poison`]): a follow-up the broker
//! refused for good makes it a dead letter, a dead letter that could not be
//! written is written smaller, after a pause. A fenced producer (another
//! instance with the same `transactional.id`) or an abort that fails stops
//! eddy: a restart reads the records again from the committed offsets.
//!
//! The calls that wait for the transaction coordinator are made on a
//! thread of their own ([`Caller`]), and waited for at most
//! [`STUCK_AFTER`]: librdkafka's `send_offsets_to_transaction` ignores its
//! timeout when the group coordinator goes away during it
//! (confluentinc/librdkafka#5456, #5511), and cannot be cancelled. A call
//! that has not returned by then is given up with its producer: a new
//! producer takes the same `transactional.id`, which fences the stuck one
//! and aborts its open transaction, and eddy rewinds as after any abort.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;

use eddy_core::cancel::Cancelled;
use eddy_core::metrics;

use crate::client::{EddyProducer, Retired};
use crate::lease::Lease;

mod caller;
mod commit;
mod written;

use caller::{Caller, Stuck, stuck_on_demand};
pub use written::{InTransaction, Poison, Position, Written};

/// Records staged after which the committer commits without waiting for
/// `transaction_ms`.
pub const MAX_RECORDS: usize = 10_000;
/// Longest a transaction call (init, offsets, commit, abort) may block.
const CALL_WAIT: Duration = Duration::from_secs(30);
/// Commits and aborts tried again after a retriable error (a timeout, say).
const COMMIT_TRIES: u32 = 3;
/// When a call given [`CALL_WAIT`] has not returned by then, its producer
/// is stuck, and is replaced.
const STUCK_AFTER: Duration = Duration::from_secs(60);
/// How often a commit waiting for the transaction's records looks whether
/// one was refused.
const FLUSH_STEP: Duration = Duration::from_millis(50);
/// Longest one try to take the `transactional.id` waits for the brokers.
const INIT_WAIT: Duration = Duration::from_secs(5);
/// How often a commit that waits for the gate, or for the brokers, says so.
const GATE_SAY: Duration = Duration::from_secs(10);
/// Longest an abort waits for the answers about what the transaction held.
const ANSWERS_WAIT: Duration = Duration::from_secs(5);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes a producer for transactions, and the switch that retires it.
pub type MakeProducer = Box<dyn Fn() -> anyhow::Result<(EddyProducer, Retired)> + Send + Sync>;

pub struct Transactions {
    /// The producer transactions are written with, replaced when stuck.
    client: ArcSwap<Client>,
    make_producer: MakeProducer,
    id: String,
    gate: RwLock<()>,
    staged: Mutex<Staged>,
    /// Woken once [`MAX_RECORDS`] records are staged, or a worker spoilt
    /// the transaction.
    full: Notify,
    /// Why the open transaction must be aborted, once a worker found it
    /// cannot be committed; until the rewind after the abort.
    doomed: Mutex<Option<String>>,
    /// Set from an abort until [`Transactions::resume`]: no transaction is
    /// open, nothing may be written.
    rewinding: AtomicBool,
    /// Woken when an abort wants the fetch loop to rewind.
    rewind: Notify,
    /// The next offset of each partition as last committed here.
    committed: Mutex<HashMap<String, HashMap<i32, i64>>>,
    /// What aborted transactions showed about records, for their next pass.
    poisoned: Mutex<Vec<(Position, Poison)>>,
    /// Why transactions stopped, once one failed: nothing more is written.
    failed: Mutex<Option<String>>,
    /// A child of the process's token, cancelled too when transactions
    /// fail: the parent of every worker's token, so a failure stops them.
    stopped: CancellationToken,
    /// Cancelled only when transactions fail: what a write into the
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
    written: Vec<Written>,
}

/// The transactional producer, and the thread that makes its calls.
struct Client {
    producer: EddyProducer,
    retired: Retired,
    caller: Caller,
}

/// Takes `id` with `producer`, fencing any earlier producer with it and
/// aborting what that left open. Waits for the brokers while they do not
/// answer, until `process` is cancelled. Blocks.
fn take_id(producer: &EddyProducer, id: &str, process: &CancellationToken) -> anyhow::Result<()> {
    let mut waited = Duration::ZERO;
    loop {
        let started = Instant::now();
        match producer.init_transactions(INIT_WAIT) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && !process.is_cancelled() => {
                waited += started.elapsed();
                tracing::warn!(
                    transactional_id = id,
                    "exactly-once: the brokers do not answer yet ({e}); still waiting \
                     after {}s (transactions need Kafka 2.5 or later, with at least \
                     transaction.state.log.min.isr brokers up)",
                    waited.as_secs()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot start transactions as {id:?} ([kafka] delivery = \
                         \"exactly-once\"): the brokers must support them (Kafka 2.5 or \
                         later, with at least transaction.state.log.min.isr brokers up)"
                    )
                });
            }
        }
    }
}

impl Transactions {
    /// Takes the producer's `transactional.id` (fencing any earlier producer
    /// with it) and begins the first transaction. Waits for the brokers
    /// while they do not answer, until `process` (the process's token) is
    /// cancelled. `make_producer` makes the producers that replace a stuck
    /// one. Blocks.
    pub fn start(
        (producer, retired): (EddyProducer, Retired),
        make_producer: MakeProducer,
        id: &str,
        process: &CancellationToken,
    ) -> anyhow::Result<Transactions> {
        take_id(&producer, id, process)?;
        producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
        tracing::info!(transactional_id = id, "exactly-once: transactions started");
        let client = Client {
            producer,
            retired,
            caller: Caller::spawn()?,
        };
        Ok(Transactions {
            client: ArcSwap::from_pointee(client),
            make_producer,
            id: id.to_string(),
            gate: RwLock::new(()),
            staged: Mutex::default(),
            full: Notify::new(),
            doomed: Mutex::default(),
            rewinding: AtomicBool::new(false),
            rewind: Notify::new(),
            committed: Mutex::default(),
            poisoned: Mutex::default(),
            failed: Mutex::default(),
            stopped: process.child_token(),
            broken: CancellationToken::new(),
        })
    }

    /// The producer transactions are written with now.
    fn producer(&self) -> EddyProducer {
        self.client.load().producer.clone()
    }

    /// Makes `call` with the producer on the caller's thread, giving up on
    /// it after [`STUCK_AFTER`].
    fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        call: impl FnOnce(&EddyProducer) -> T + Send + 'static,
    ) -> Result<T, Stuck> {
        let client = self.client.load_full();
        let producer = client.producer.clone();
        client.caller.call(what, STUCK_AFTER, move || {
            stuck_on_demand(what);
            call(&producer)
        })
    }

    /// Gives up the stuck producer for a new one that takes the same
    /// `transactional.id`: that fences the stuck one and aborts its open
    /// transaction. Blocks until the brokers let the new one in.
    fn replace_producer(&self) -> anyhow::Result<()> {
        let stuck = self.client.load_full();
        stuck.retired.retire();
        let (producer, retired) = (self.make_producer)()?;
        take_id(&producer, &self.id, &self.stopped)?;
        let caller = Caller::spawn()?;
        self.client.store(Arc::new(Client {
            producer,
            retired,
            caller,
        }));
        metrics::transaction_producer_replaced();
        Ok(())
    }

    /// Waits for the right to write into the open transaction. `Cancelled`
    /// if the worker is told to stop meanwhile, has lost its lease (its
    /// partition moved on), transactions have failed, or there is no open
    /// transaction (a rewind is under way: the worker is to end).
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
        if !lease.is_held() || self.stopped.is_cancelled() || self.is_spoilt() {
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
        locked(&self.failed).clone()
    }

    /// Whether a transaction was aborted and the fetch loop has yet to
    /// rewind.
    pub fn is_rewinding(&self) -> bool {
        self.rewinding.load(Ordering::Acquire)
    }

    /// Whether the open transaction is to be aborted, or was and the fetch
    /// loop has yet to rewind: workers end rather than write into it.
    pub fn is_spoilt(&self) -> bool {
        self.is_rewinding() || locked(&self.doomed).is_some()
    }

    /// Resolves when a transaction was aborted: the fetch loop is to
    /// rewind (it may resolve once more after it has).
    pub async fn rewind_wanted(&self) {
        self.rewind.notified().await;
    }

    /// Where the partition is to be read from again after an abort, as far
    /// as commits from here know: the offset last committed for it.
    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        locked(&self.committed)
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
            .copied()
    }

    /// Begins the next transaction once the fetch loop has rewound.
    pub fn resume(&self) {
        match self.producer().begin_transaction() {
            Ok(()) => {
                *locked(&self.doomed) = None;
                self.rewinding.store(false, Ordering::Release);
                tracing::info!("exactly-once: rewound; the next transaction is open");
            }
            Err(e) => self.fail(format!(
                "cannot begin a transaction after an abort: {e}; eddy stops, and a restart \
                 handles the records again from the committed offsets"
            )),
        }
    }

    /// What aborted transactions showed about the record at this place, if
    /// anything. Kept until a commit takes the record past it: the
    /// transaction of its next pass may be aborted for another's sake.
    pub fn poison(&self, topic: &str, partition: i32, offset: i64) -> Option<Poison> {
        let poisoned = locked(&self.poisoned);
        if poisoned.is_empty() {
            return None;
        }
        poisoned
            .iter()
            .find(|(at, _)| at.offset == offset && at.partition == partition && &*at.topic == topic)
            .map(|(_, poison)| poison.clone())
    }

    /// Adds `poison` to what is known about the record at its position.
    fn learn(&self, (at, poison): (Position, Poison)) {
        let mut poisoned = locked(&self.poisoned);
        match poisoned.iter_mut().find(|(known, _)| *known == at) {
            Some((_, known)) => {
                if poison.refused.is_some() {
                    known.refused = poison.refused;
                }
                known.dead_letter_failures += poison.dead_letter_failures;
                known.dead_letter_too_large += poison.dead_letter_too_large;
            }
            None => poisoned.push((at, poison)),
        }
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
    /// gate meanwhile; on failure, aborts.
    pub async fn commit(&self, metadata: impl Fn() -> Option<ConsumerGroupMetadata>, when: &str) {
        let done = {
            let _gate = self.gate_for_commit().await;
            tokio::task::block_in_place(|| self.commit_held(metadata(), when))
        };
        // What the transaction held is let go of outside the gate.
        drop(done);
    }

    /// The gate for writing, saying so every [`GATE_SAY`] while workers
    /// keep writing into the transaction: a commit that cannot begin holds
    /// every partition back.
    async fn gate_for_commit(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        let started = Instant::now();
        let mut wait = std::pin::pin!(self.gate.write());
        loop {
            match tokio::time::timeout(GATE_SAY, &mut wait).await {
                Ok(gate) => return gate,
                Err(_) => tracing::warn!(
                    "a commit has waited {:?} for records being written into the transaction",
                    started.elapsed()
                ),
            }
        }
    }

    /// [`Transactions::commit`] from a thread that may block: librdkafka's
    /// rebalance callback, which runs on a runtime thread.
    pub fn commit_blocking(&self, metadata: Option<ConsumerGroupMetadata>, when: &str) {
        let done = match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| {
                let _gate = handle.block_on(self.gate.write());
                self.commit_held(metadata, when)
            }),
            Err(_) => {
                let _gate = self.gate.blocking_write();
                self.commit_held(metadata, when)
            }
        };
        drop(done);
    }

    /// Records why transactions stopped, and stops the workers.
    pub fn fail(&self, reason: String) {
        tracing::error!("{reason}");
        locked(&self.failed).get_or_insert(reason);
        self.broken.cancel();
        self.stopped.cancel();
    }
}
