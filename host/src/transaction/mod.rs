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
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{DeliveryFuture, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tokio_util::sync::CancellationToken;

use crate::kafka::{EddyProducer, Retired};
use crate::metrics;
use crate::partition::{Cancelled, Lease};
use crate::produce::{self, Answer, Refused, Sent};

mod caller;

use caller::{Caller, Stuck, stuck_on_demand};

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

/// The transactional producer, and the thread that makes its calls.
struct Client {
    producer: EddyProducer,
    retired: Retired,
    caller: Caller,
}

/// A record's place: topic, partition, offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// What an aborted transaction showed about one record's effects, so its
/// next pass writes something Kafka takes.
#[derive(Clone, Debug, Default)]
pub struct Poison {
    /// A follow-up the broker refused for good: the record is dead-lettered
    /// for its plugin instead, as in at-least-once mode.
    pub refused: Option<Refused>,
    /// Times its dead letter could not be written: the next is written
    /// with that many parts left out, after a pause.
    pub dead_letter_failures: u32,
}

/// What one record wrote into the open transaction, kept until it ends:
/// if it is aborted, the answers say whether the record was the cause.
pub struct Written {
    pub at: Position,
    pub follow_ups: Vec<Sent>,
    /// The answers for its dead letters not answered yet.
    pub dead_letters: Vec<DeliveryFuture>,
    /// Its dead letters the broker refused.
    pub dead_letters_refused: u32,
}

impl Written {
    pub fn new(at: Position) -> Written {
        Written {
            at,
            follow_ups: Vec::new(),
            dead_letters: Vec::new(),
            dead_letters_refused: 0,
        }
    }

    /// What Kafka's answers say about the record, waiting (blocking the
    /// thread) for them until `deadline`.
    fn poison(&mut self, deadline: Instant) -> Poison {
        let refused = produce::refused_in_transaction(&mut self.follow_ups, deadline);
        let mut failures = 0;
        self.dead_letters
            .retain_mut(|ack| match produce::answer(ack, deadline) {
                Answer::Waiting => true,
                Answer::Answered => false,
                Answer::Refused(_) => {
                    failures += 1;
                    false
                }
            });
        self.dead_letters_refused += failures;
        Poison {
            refused,
            dead_letter_failures: self.dead_letters_refused,
        }
    }
}

impl Poison {
    fn is_known(&self) -> bool {
        self.refused.is_some() || self.dead_letter_failures > 0
    }

    /// Why the transaction holding the record cannot commit.
    fn reason(&self) -> String {
        match &self.refused {
            Some(refused) => refused.reason(),
            None => "a dead letter was refused".to_string(),
        }
    }
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

/// The right to write into the open transaction, while held.
pub struct InTransaction<'a> {
    _gate: RwLockReadGuard<'a, ()>,
    transactions: &'a Transactions,
}

impl InTransaction<'_> {
    /// The token for the waits of a write into the transaction. Once a
    /// record's first effect is in, a revoke or shutdown must not cut its
    /// write short: its offset would be missing from a transaction holding
    /// part of its effects. So only failed transactions stop it.
    pub fn token(&self) -> &CancellationToken {
        &self.transactions.broken
    }

    /// The producer to write into the transaction with.
    pub fn producer(&self) -> EddyProducer {
        self.transactions.producer()
    }

    /// Stages `next` as the offset of `topic`/`partition` to read next,
    /// `records` more records having finished, and what the last of them
    /// wrote: they commit together with what was written meanwhile.
    pub fn stage(&self, topic: &str, partition: i32, next: i64, records: usize, written: Written) {
        let mut staged = locked(&self.transactions.staged);
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
        if !written.follow_ups.is_empty() || !written.dead_letters.is_empty() {
            staged.written.push(written);
        }
        if staged.records >= MAX_RECORDS {
            self.transactions.full.notify_one();
        }
    }

    /// The open transaction cannot be committed (`reason`): the committer
    /// aborts it and eddy rewinds. `poison`, if given, is what the next pass
    /// of the record at its position is to know.
    pub fn doom(&self, reason: String, poison: Option<(Position, Poison)>) {
        let transactions = self.transactions;
        if let Some(poison) = poison {
            transactions.learn(poison);
        }
        locked(&transactions.doomed).get_or_insert(reason);
        transactions.full.notify_one();
    }
}

/// Why a commit failed, and whether it may be tried again from the last one.
struct Failed {
    error: anyhow::Error,
    kind: FailedKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FailedKind {
    /// Aborted, the transaction's records are handled again.
    Abortable,
    /// The producer can do nothing more (fenced): eddy stops.
    Fatal,
    /// A call never returned: the producer is replaced, which aborts.
    Stuck,
}

impl Failed {
    fn abortable(error: anyhow::Error) -> Failed {
        Failed {
            error,
            kind: FailedKind::Abortable,
        }
    }
}

impl From<Stuck> for Failed {
    fn from(stuck: Stuck) -> Failed {
        Failed {
            error: anyhow::anyhow!(
                "{} has not returned in {STUCK_AFTER:?}: the Kafka client is stuck (librdkafka \
                 ignores this call's timeout when the group coordinator goes away, \
                 confluentinc/librdkafka#5456)",
                stuck.what
            ),
            kind: FailedKind::Stuck,
        }
    }
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

    /// Commits, or aborts; gives back what the transaction held.
    fn commit_held(&self, metadata: Option<ConsumerGroupMetadata>, when: &str) -> Staged {
        if self.failure().is_some() || self.is_rewinding() {
            return Staged::default();
        }
        let doomed = locked(&self.doomed).clone();
        let mut staged = std::mem::take(&mut *locked(&self.staged));
        if doomed.is_none() && staged.offsets.is_empty() {
            return staged;
        }
        let started = Instant::now();
        let committed = match doomed {
            Some(reason) => Err(Failed::abortable(anyhow::anyhow!(reason))),
            None => self.try_commit(&mut staged, metadata),
        };
        match committed {
            Ok(()) => {
                metrics::transaction("committed", started.elapsed());
                tracing::debug!(
                    records = staged.records,
                    partitions = staged.offsets.values().map(HashMap::len).sum::<usize>(),
                    "transaction committed {when}"
                );
                locked(&self.poisoned).retain(|(at, _)| {
                    let next = staged
                        .offsets
                        .get(&*at.topic)
                        .and_then(|partitions| partitions.get(&at.partition));
                    next.is_none_or(|next| at.offset >= *next)
                });
                let mut known = locked(&self.committed);
                for (topic, partitions) in &staged.offsets {
                    match known.get_mut(topic.as_str()) {
                        Some(known) => known.extend(partitions),
                        None => {
                            known.insert(topic.clone(), partitions.clone());
                        }
                    }
                }
                staged
            }
            Err(failed) => self.abort(staged, failed, when, started),
        }
    }

    /// Aborts the open transaction after `failed`, learns what its answers
    /// say about its records, and asks the fetch loop to rewind; or, if
    /// the producer can do nothing more, stops transactions. A producer
    /// stuck in a call (or in the abort) is replaced instead: the new one
    /// aborts what the stuck one left open.
    fn abort(&self, mut staged: Staged, failed: Failed, when: &str, started: Instant) -> Staged {
        let mut stuck = failed.kind == FailedKind::Stuck;
        let mut aborted = match failed.kind {
            FailedKind::Stuck => Ok(()),
            FailedKind::Abortable | FailedKind::Fatal => match self.abort_transaction() {
                Ok(aborted) => aborted.map_err(|e| format!("aborting it failed too ({e})")),
                Err(in_abort) => {
                    tracing::error!("{:#}", Failed::from(in_abort).error);
                    stuck = true;
                    Ok(())
                }
            },
        };
        if stuck && aborted.is_ok() {
            aborted = self
                .replace_producer()
                .map_err(|e| format!("the stuck producer could not be replaced ({e:#})"));
        }
        metrics::transaction("aborted", started.elapsed());
        let what = format!(
            "the transaction of {} records was aborted ({when}): {:#}",
            staged.records, failed.error
        );
        match aborted {
            Ok(()) if failed.kind != FailedKind::Fatal => {
                // A stuck producer's answers may never come.
                if !stuck {
                    let deadline = Instant::now() + ANSWERS_WAIT;
                    for written in &mut staged.written {
                        let poison = written.poison(deadline);
                        if poison.is_known() {
                            self.learn((written.at.clone(), poison));
                        }
                    }
                }
                self.rewinding.store(true, Ordering::Release);
                self.rewind.notify_one();
                let replaced = if stuck {
                    "; a new producer took the transactional.id, fencing the stuck one"
                } else {
                    ""
                };
                tracing::warn!(
                    "{what}{replaced}; nothing of it is visible, and its records are handled \
                     again from the last commit"
                );
            }
            Ok(()) => self.fail(format!(
                "{what}; eddy stops, and a restart handles those records again from the \
                 committed offsets"
            )),
            Err(e) => self.fail(format!(
                "{what}; {e}; eddy stops, and a restart handles those records again from \
                 the committed offsets"
            )),
        }
        staged
    }

    /// Aborts the open transaction, again after a retriable error.
    fn abort_transaction(&self) -> Result<KafkaResult<()>, Stuck> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call("abort_transaction", |p| p.abort_transaction(CALL_WAIT))? {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < COMMIT_TRIES => {
                    tracing::warn!("aborting the transaction, again: {e}");
                }
                aborted => return Ok(aborted),
            }
        }
    }

    fn try_commit(
        &self,
        staged: &mut Staged,
        metadata: Option<ConsumerGroupMetadata>,
    ) -> Result<(), Failed> {
        self.flush(staged)?;
        let metadata = metadata.ok_or_else(|| {
            Failed::abortable(anyhow::anyhow!("the consumer has no group metadata yet"))
        })?;
        let mut offsets = TopicPartitionList::new();
        for (topic, partitions) in &staged.offsets {
            for (partition, next) in partitions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| self.explained(e))?;
            }
        }
        let sent = self.call("send_offsets_to_transaction", move |p| {
            p.send_offsets_to_transaction(&offsets, &metadata, CALL_WAIT)
        })?;
        sent.map_err(|e| self.explained(e))?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call("commit_transaction", |p| p.commit_transaction(CALL_WAIT))? {
                Ok(()) => break,
                Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < COMMIT_TRIES => {
                    tracing::warn!("committing the transaction, again: {e}");
                }
                Err(e) => return Err(self.explained(e)),
            }
        }
        self.producer()
            .begin_transaction()
            .map_err(|e| self.explained(e))?;
        Ok(())
    }

    /// Waits until Kafka has answered for every record of the transaction:
    /// what committing does first. A record the broker refused meanwhile
    /// spoils the transaction, and librdkafka would then wait the whole
    /// [`CALL_WAIT`] for records it holds back: so it is looked for while
    /// waiting, and ends the wait.
    fn flush(&self, staged: &mut Staged) -> Result<(), Failed> {
        let started = Instant::now();
        let deadline = started + CALL_WAIT;
        let mut say = started + GATE_SAY;
        let producer = self.producer();
        loop {
            if Instant::now() >= say {
                say += GATE_SAY;
                tracing::warn!(
                    "a commit has waited {:?} for the brokers to take the transaction's records",
                    started.elapsed()
                );
            }
            match producer.flush(FLUSH_STEP) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(self.explained(e)),
                Err(_) => {}
            }
            let now = Instant::now();
            if let Some(poison) = staged
                .written
                .iter_mut()
                .map(|written| written.poison(now))
                .find(Poison::is_known)
            {
                return Err(Failed::abortable(anyhow::anyhow!("{}", poison.reason())));
            }
        }
    }

    /// `error`, said in the words of what it means for eddy.
    fn explained(&self, error: KafkaError) -> Failed {
        match &error {
            KafkaError::Transaction(e) if e.is_fatal() => Failed {
                error: anyhow::anyhow!(
                    "{error}: this producer was fenced: another eddy took over \
                     transactional.id {:?}; its work is theirs now",
                    self.id
                ),
                kind: FailedKind::Fatal,
            },
            _ => Failed::abortable(error.into()),
        }
    }
}
