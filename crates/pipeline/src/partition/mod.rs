//! One owner per partition: the registry of partition workers, and how a
//! worker is told to stop.
//!
//! Each partition being handled has exactly one worker task (`worker`),
//! which takes its records in order. Stopping is cancellation: the process
//! has a [`CancellationToken`] and each worker a child of it. A revoke or
//! shutdown cancels the worker's token, and every wait on the record path
//! (retry backoff, dead-letter writes, waiting for the producer or for
//! acknowledgements) selects on it; the blocking batch of handlers looks at
//! it between records. So a worker ends soon after it is told to: at most
//! the handler in hand (bounded by its `timeout_ms`) and a bounded wait for
//! the acknowledgements of what it already produced.
//!
//! Invariants:
//! - at most one worker per partition runs in the process: a worker for a
//!   partition starts only once the previous one for that partition ended;
//! - a worker stores offsets only while it holds its [`Lease`]; a revoke
//!   that stops waiting for a worker (after [`REVOKE_WAIT`]) takes the lease
//!   away before the partition's offsets are committed and it moves on;
//! - records of a partition not assigned to this process start no worker.

mod held;
mod in_transaction;
mod ledger;
mod parked;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use eddy_core::cancel::{Cancelled, pause};
pub use eddy_kafka::lease::Lease;
pub use held::{Held, Queue, Share};
pub use ledger::Ledger;
pub use parked::Parked;
pub use worker::Worker;

/// Records buffered per partition worker; more are parked (see `parked`).
const PARTITION_QUEUE: usize = 1024;
/// Longest a rebalance waits for a revoked partition's worker to end.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// What a new worker is started with.
pub struct Start {
    pub topic: String,
    pub partition: i32,
    /// The worker's number in this process, for the log.
    pub id: u64,
    pub records: mpsc::Receiver<OwnedMessage>,
    /// What the worker's records cost: released as it finishes them.
    pub share: Arc<Share>,
    /// Cancelled when the partition is revoked or eddy stops.
    pub cancel: CancellationToken,
    /// Cancelled by the worker when it has ended (a drop guard, so a panic
    /// counts too).
    pub ended: CancellationToken,
    pub lease: Lease,
    /// The previous worker of the partition, if it had not ended when the
    /// partition was revoked: this one starts only once it has.
    pub previous: Option<CancellationToken>,
}

struct Slot {
    /// The offset of the first record the worker was given.
    first: i64,
    queue: Queue,
    cancel: CancellationToken,
    ended: CancellationToken,
    lease: Lease,
}

/// The workers by topic, then partition: the fetch loop looks one up per
/// record with the record's borrowed topic name.
#[derive(Default)]
struct Registry {
    live: HashMap<String, HashMap<i32, Slot>>,
    assigned: HashMap<String, HashSet<i32>>,
    /// Revoked workers that had not ended when the revoke stopped waiting.
    retiring: HashMap<(String, i32), CancellationToken>,
}

pub struct Workers {
    /// The process's token; each worker's is a child of it.
    shutdown: CancellationToken,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    revoke_wait: Duration,
    /// What the workers' records cost, together.
    held: Arc<Held>,
}

impl Workers {
    pub fn new(shutdown: CancellationToken) -> Workers {
        Workers {
            shutdown,
            registry: Mutex::default(),
            next_id: AtomicU64::new(1),
            revoke_wait: REVOKE_WAIT,
            held: Arc::default(),
        }
    }

    /// What the workers' records cost, together.
    pub fn held(&self) -> &Held {
        &self.held
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Partitions given to this process (a rebalance's assign).
    pub fn assign(&self, partitions: &[(String, i32)]) {
        let mut registry = self.registry();
        for (topic, partition) in partitions {
            registry
                .assigned
                .entry(topic.clone())
                .or_default()
                .insert(*partition);
        }
    }

    /// The queue of `topic`/`partition`'s worker, started with `spawn` if
    /// there is none (`offset` is then its first record's); `None` if the
    /// partition is not assigned here (a record fetched before a revoke: its
    /// owner reads it again).
    pub fn sender(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        spawn: impl FnOnce(Start),
    ) -> Option<Queue> {
        self.sender_with_room(topic, partition, offset, PARTITION_QUEUE, spawn)
    }

    /// Whether `queue` is the queue of `topic`/`partition`'s worker: the
    /// partition was not revoked (or assigned again) since it was handed out.
    pub fn holds(&self, topic: &str, partition: i32, queue: &Queue) -> bool {
        self.registry()
            .live
            .get(topic)
            .and_then(|p| p.get(&partition))
            .is_some_and(|slot| slot.queue.same_channel(queue))
    }

    /// [`Workers::sender`], a new worker's queue holding `room` records.
    fn sender_with_room(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        room: usize,
        spawn: impl FnOnce(Start),
    ) -> Option<Queue> {
        let mut registry = self.registry();
        if let Some(slot) = registry.live.get(topic).and_then(|p| p.get(&partition)) {
            return Some(slot.queue.clone());
        }
        if !registry
            .assigned
            .get(topic)
            .is_some_and(|p| p.contains(&partition))
        {
            return None;
        }
        let previous = registry
            .retiring
            .remove(&(topic.to_string(), partition))
            .filter(|ended| !ended.is_cancelled());
        let (sender, records) = mpsc::channel(room);
        let queue = Queue {
            sender,
            share: Arc::new(Share::new(self.held.clone())),
        };
        let slot = Slot {
            first: offset,
            queue: queue.clone(),
            cancel: self.shutdown.child_token(),
            ended: CancellationToken::new(),
            lease: Lease::new(),
        };
        spawn(Start {
            topic: topic.to_string(),
            partition,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            records,
            share: queue.share.clone(),
            cancel: slot.cancel.clone(),
            ended: slot.ended.clone(),
            lease: slot.lease.clone(),
            previous,
        });
        registry
            .live
            .entry(topic.to_string())
            .or_default()
            .insert(partition, slot);
        Some(queue)
    }

    /// Stops the workers of `partitions` and waits (at most [`REVOKE_WAIT`])
    /// until each has ended, having stored the offsets of what it finished.
    /// A worker still running then loses its lease, so it stores nothing
    /// more, and the partition's next worker here waits for it to end.
    /// Queued records are dropped: never stored, the partition's next owner
    /// reads them again. Called from librdkafka's rebalance callback, which
    /// must block.
    pub fn revoke(&self, partitions: &[(String, i32)]) {
        let revoked: Vec<((String, i32), Slot)> = {
            let mut registry = self.registry();
            partitions
                .iter()
                .filter_map(|(topic, partition)| {
                    if let Some(assigned) = registry.assigned.get_mut(topic) {
                        assigned.remove(partition);
                    }
                    let slot = registry.live.get_mut(topic)?.remove(partition)?;
                    Some(((topic.clone(), *partition), slot))
                })
                .collect()
        };
        for (_, slot) in &revoked {
            slot.cancel.cancel();
        }
        self.wait_for_ends(&revoked);
        let mut registry = self.registry();
        for (at, slot) in revoked {
            if !slot.ended.is_cancelled() {
                slot.lease.expire();
                registry.retiring.insert(at, slot.ended);
            }
        }
    }

    /// Stops every worker, for a rewind: waits (at most [`REVOKE_WAIT`])
    /// until each has ended; one still running then loses its lease, and
    /// the partition's next worker waits for it. The partitions stay
    /// assigned. Gives back each partition that had a worker, with the
    /// offset of the worker's first record: nothing before it was read here
    /// since the last commit, or since the partition came.
    pub async fn stop_all(&self) -> Vec<(String, i32, i64)> {
        let stopped: Vec<((String, i32), Slot)> = self
            .registry()
            .live
            .drain()
            .flat_map(|(topic, slots)| {
                slots
                    .into_iter()
                    .map(move |(partition, slot)| ((topic.clone(), partition), slot))
            })
            .collect();
        for (_, slot) in &stopped {
            slot.cancel.cancel();
        }
        let ends = async {
            for (_, slot) in &stopped {
                slot.ended.cancelled().await;
            }
        };
        if tokio::time::timeout(self.revoke_wait, ends).await.is_err() {
            tracing::warn!(
                "a partition's worker was still running {:?} after the rewind began; it \
                 writes nothing from now on",
                self.revoke_wait
            );
        }
        let mut registry = self.registry();
        stopped
            .into_iter()
            .map(|((topic, partition), slot)| {
                slot.lease.expire();
                if !slot.ended.is_cancelled() {
                    registry
                        .retiring
                        .insert((topic.clone(), partition), slot.ended);
                }
                (topic, partition, slot.first)
            })
            .collect()
    }

    /// Waits, at most `revoke_wait`, until every revoked worker has ended.
    fn wait_for_ends(&self, revoked: &[((String, i32), Slot)]) {
        let wait = async {
            for (_, slot) in revoked {
                slot.ended.cancelled().await;
            }
        };
        // The callback runs on a runtime thread (the fetch loop's): let the
        // runtime move its other tasks away while this one waits.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                let finished = tokio::task::block_in_place(|| {
                    handle.block_on(tokio::time::timeout(self.revoke_wait, wait))
                });
                if finished.is_err() {
                    tracing::warn!(
                        "a revoked partition's worker was still running after {:?}; \
                         it stores no offset from now on and the partition's next owner \
                         handles its records again",
                        self.revoke_wait
                    );
                }
            }
            _ => tracing::debug!("revoke outside the runtime: not waiting for workers"),
        }
    }

    /// Every worker's end, for shutdown: the process's token is cancelled,
    /// so each ends after the handler in hand.
    pub fn drain(&self) -> Vec<CancellationToken> {
        let mut registry = self.registry();
        let live: Vec<CancellationToken> = registry
            .live
            .drain()
            .flat_map(|(_, slots)| slots.into_values().map(|slot| slot.ended))
            .collect();
        live.into_iter()
            .chain(registry.retiring.drain().map(|(_, ended)| ended))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    type Started = Arc<Mutex<Vec<Start>>>;

    /// Workers whose `spawn` only keeps what a worker would start with.
    fn workers(revoke_wait: Duration) -> (Arc<Workers>, Started) {
        let mut workers = Workers::new(CancellationToken::new());
        workers.revoke_wait = revoke_wait;
        (Arc::new(workers), Started::default())
    }

    fn start(workers: &Workers, started: &Started, topic: &str, partition: i32) -> bool {
        workers
            .sender(topic, partition, 0, |start| {
                started.lock().unwrap().push(start)
            })
            .is_some()
    }

    /// Revokes on a runtime thread, as librdkafka's callback does.
    async fn revoke(workers: &Arc<Workers>, partitions: Vec<(String, i32)>) {
        let workers = workers.clone();
        tokio::spawn(async move { workers.revoke(&partitions) })
            .await
            .unwrap();
    }

    #[test]
    fn records_of_unassigned_partitions_start_no_worker() {
        let (workers, started) = workers(REVOKE_WAIT);
        assert!(!start(&workers, &started, "t", 0));
        workers.assign(&[("t".into(), 0)]);
        assert!(start(&workers, &started, "t", 0));
        assert!(start(&workers, &started, "t", 0));
        assert_eq!(started.lock().unwrap().len(), 1, "one worker, reused");
        assert!(!start(&workers, &started, "t", 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revoke_cancels_the_worker_and_waits_for_its_end() {
        let (workers, started) = workers(Duration::from_secs(10));
        let at = vec![("t".to_string(), 3)];
        workers.assign(&at);
        start(&workers, &started, "t", 3);
        let first = started.lock().unwrap().remove(0);
        // The worker ends a little after it is told to stop.
        let (cancel, ended) = (first.cancel.clone(), first.ended.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            ended.cancel();
        });
        revoke(&workers, at.clone()).await;
        assert!(first.ended.is_cancelled(), "the revoke waited for its end");
        assert!(first.lease.is_held(), "it ended in time: its lease stood");
        assert!(!start(&workers, &started, "t", 3), "no longer assigned");
        workers.assign(&at);
        assert!(start(&workers, &started, "t", 3));
        let second = started.lock().unwrap().remove(0);
        assert!(second.previous.is_none(), "nothing to wait for");
        assert_ne!(first.id, second.id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_outlives_the_revoke_loses_its_lease_and_holds_back_the_next() {
        let (workers, started) = workers(Duration::from_millis(100));
        let at = vec![("t".to_string(), 1)];
        workers.assign(&at);
        start(&workers, &started, "t", 1);
        let first = started.lock().unwrap().remove(0);
        revoke(&workers, at.clone()).await;
        assert!(first.cancel.is_cancelled(), "told to stop");
        let mut stored = false;
        first.lease.store(|| stored = true);
        assert!(!stored, "no offset stored without the lease");

        workers.assign(&at);
        start(&workers, &started, "t", 1);
        let second = started.lock().unwrap().remove(0);
        let previous = second
            .previous
            .expect("the new worker waits for the old one");
        assert!(!previous.is_cancelled());
        first.ended.cancel();
        assert!(previous.is_cancelled(), "and starts once it has ended");
        assert_eq!(workers.drain().len(), 1, "the second worker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewind_stops_every_worker_and_keeps_the_partitions() {
        let (workers, started) = workers(Duration::from_millis(100));
        let at = vec![("t".to_string(), 0), ("t".to_string(), 1)];
        workers.assign(&at);
        let record = |partition, offset| {
            workers.sender("t", partition, offset, |start| {
                started.lock().unwrap().push(start)
            })
        };
        assert!(record(0, 40).is_some());
        assert!(record(0, 41).is_some(), "the same worker");
        assert!(record(1, 7).is_some());
        let (first, second) = {
            let mut started = started.lock().unwrap();
            (started.remove(0), started.remove(0))
        };
        // The first ends when told to; the second keeps running.
        let (cancel, ended) = (first.cancel.clone(), first.ended.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            ended.cancel();
        });
        let mut stopped = workers.stop_all().await;
        stopped.sort();
        assert_eq!(
            stopped,
            vec![("t".to_string(), 0, 40), ("t".to_string(), 1, 7)],
            "each partition with the offset its worker began at"
        );
        assert!(first.cancel.is_cancelled() && second.cancel.is_cancelled());
        assert!(!first.lease.is_held() && !second.lease.is_held());
        // Still assigned: the next record starts a new worker, which waits
        // for the one still running.
        assert!(record(1, 7).is_some());
        let third = started.lock().unwrap().remove(0);
        assert!(third.previous.is_some_and(|p| !p.is_cancelled()));
        assert!(record(0, 40).is_some());
        let fourth = started.lock().unwrap().remove(0);
        assert!(fourth.previous.is_none(), "the first had ended");
    }

    #[tokio::test]
    async fn shutdown_cancels_every_worker() {
        let shutdown = CancellationToken::new();
        let workers = Workers::new(shutdown.clone());
        let started = Started::default();
        workers.assign(&[("a".into(), 0), ("b".into(), 2)]);
        start(&workers, &started, "a", 0);
        start(&workers, &started, "b", 2);
        shutdown.cancel();
        assert!(
            started
                .lock()
                .unwrap()
                .iter()
                .all(|s| s.cancel.is_cancelled())
        );
        assert_eq!(workers.drain().len(), 2);
    }
}
