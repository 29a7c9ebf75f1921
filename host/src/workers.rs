//! The partition workers: one task per partition, taking its records in
//! order. The fetch loop starts them; the rebalance callback stops those
//! whose partitions are revoked, after their record in hand is finished, so
//! its offset can be committed before the partition moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records buffered per partition worker before the fetch loop waits.
const PARTITION_QUEUE: usize = 1024;
/// Longest a rebalance waits for a revoked partition's record in hand.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// What a worker and the rebalance callback share.
#[derive(Default)]
pub struct WorkerState {
    /// Set when the partition is revoked: take no further record.
    revoked: AtomicBool,
    /// Held while a record is handled.
    busy: tokio::sync::Mutex<()>,
}

impl WorkerState {
    /// The partition was revoked: finish what is in hand, take nothing new.
    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }

    /// Waits for the record in hand, then says whether to handle the next one.
    pub async fn begin(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let guard = self.busy.lock().await;
        (!self.revoked.load(Ordering::SeqCst)).then_some(guard)
    }
}

struct Worker {
    sender: mpsc::Sender<OwnedMessage>,
    task: JoinHandle<()>,
    state: Arc<WorkerState>,
}

/// The running workers, by topic, then partition: the fetch loop looks one
/// up per record with the record's borrowed topic name.
type ByPartition = HashMap<String, HashMap<i32, Worker>>;

#[derive(Default)]
pub struct Workers {
    map: Mutex<ByPartition>,
}

impl Workers {
    fn map(&self) -> MutexGuard<'_, ByPartition> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The queue of `topic`/`partition`'s worker, started with `spawn` if
    /// there is none.
    pub fn sender(
        &self,
        topic: &str,
        partition: i32,
        spawn: impl FnOnce(mpsc::Receiver<OwnedMessage>, Arc<WorkerState>) -> JoinHandle<()>,
    ) -> mpsc::Sender<OwnedMessage> {
        let mut map = self.map();
        if let Some(worker) = map.get(topic).and_then(|p| p.get(&partition)) {
            return worker.sender.clone();
        }
        let worker = map
            .entry(topic.to_string())
            .or_default()
            .entry(partition)
            .or_insert_with(|| {
                let (sender, receiver) = mpsc::channel(PARTITION_QUEUE);
                let state = Arc::new(WorkerState::default());
                let task = spawn(receiver, state.clone());
                Worker {
                    sender,
                    task,
                    state,
                }
            });
        worker.sender.clone()
    }

    /// Stops the workers of `partitions` and waits until each has finished
    /// its record in hand (and stored its offset). Their queued records are
    /// dropped: never stored, the partition's next owner reads them again.
    /// Called from librdkafka's rebalance callback, which must block.
    pub fn revoke(&self, partitions: &[(String, i32)]) {
        let revoked: Vec<Worker> = {
            let mut map = self.map();
            partitions
                .iter()
                .filter_map(|(topic, partition)| map.get_mut(topic)?.remove(partition))
                .collect()
        };
        for worker in &revoked {
            worker.state.revoked.store(true, Ordering::SeqCst);
        }
        let wait = async {
            for worker in &revoked {
                let _idle = worker.state.busy.lock().await;
            }
        };
        // The callback runs on a runtime thread (the fetch loop's): let the
        // runtime move its other tasks away while this one waits.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                let finished = tokio::task::block_in_place(|| {
                    handle.block_on(tokio::time::timeout(REVOKE_WAIT, wait))
                });
                if finished.is_err() {
                    tracing::warn!(
                        "a revoked partition's record was still running after {REVOKE_WAIT:?}; \
                         its next owner handles it again"
                    );
                }
            }
            _ => tracing::debug!("revoke outside the runtime: not waiting for workers"),
        }
    }

    /// Takes every worker's task, for shutdown (senders are dropped, so
    /// each task ends after its record in hand).
    pub fn drain(&self) -> Vec<JoinHandle<()>> {
        self.map()
            .drain()
            .flat_map(|(_, workers)| workers.into_values().map(|worker| worker.task))
            .collect()
    }
}
