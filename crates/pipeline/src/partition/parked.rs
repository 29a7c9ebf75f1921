//! Records whose worker's queue was full, and the partitions not fetched
//! meanwhile.
//!
//! The fetch loop reads every assigned partition from one librdkafka queue.
//! When a partition's worker is behind (a slow handler, a retry's backoff,
//! the schema registry away) its queue fills; waiting there for room would
//! hold up every partition queued behind it. Instead the fetch loop parks
//! the record here and goes on with the others; the partition's next
//! records are parked behind it, in order, and go to the worker as room
//! appears.
//!
//! Parked records are bounded. Past [`ROOM_RECORDS`] or [`ROOM_BYTES`] the
//! fetch loop stops reading, and librdkafka's own queue fills and stops
//! fetching, as it does when nothing reads it. That is the usual state of a
//! backlog, and it ends as soon as a worker takes some. If it lasts
//! [`STALL`] (no worker took enough to make room), the partition with the
//! most parked records is paused: librdkafka stops fetching it, its parked
//! records no longer count, and the fetch loop reads the others again. Once
//! its worker has taken all but [`RESUME_RECORDS`] / [`RESUME_BYTES`] of
//! them it is fetched again. A pause drops what librdkafka had fetched of
//! the partition beyond the last record it handed out, and fetching resumes
//! just after that record, so nothing is skipped or read twice.
//!
//! Parked records are forgotten only when they will be read again: their
//! partition's worker is no longer the partition's (revoked: the next owner
//! reads from the committed offset, which is before them), or a rewind seeks
//! the partition back before them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc::error::TrySendError;

use super::Workers;
use super::held::{Queue, size};
use eddy_core::metrics;

/// Parked records (of partitions still fetched) past which the fetch loop
/// stops reading.
const ROOM_RECORDS: usize = 8192;
const ROOM_BYTES: usize = 8 << 20;
/// How long the fetch loop may be kept from reading before the partition
/// with the most parked records is paused.
const STALL: Duration = Duration::from_millis(500);
/// Parked records of a paused partition under which it is fetched again.
const RESUME_RECORDS: usize = 1024;
const RESUME_BYTES: usize = 1 << 20;

/// The bounds above (smaller in tests).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    room_records: usize,
    room_bytes: usize,
    stall: Duration,
    resume_records: usize,
    resume_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            room_records: ROOM_RECORDS,
            room_bytes: ROOM_BYTES,
            stall: STALL,
            resume_records: RESUME_RECORDS,
            resume_bytes: RESUME_BYTES,
        }
    }
}

/// Where a partition's fetching is paused and resumed: the consumer.
pub trait Fetching {
    /// `false` if the partition could not be paused.
    fn pause(&self, topic: &str, partition: i32) -> bool;
    fn resume(&self, topic: &str, partition: i32);
}

impl<C: ConsumerContext + 'static> Fetching for StreamConsumer<C> {
    fn pause(&self, topic: &str, partition: i32) -> bool {
        match Consumer::pause(self, &one(topic, partition)) {
            Ok(()) => true,
            Err(e) => {
                // Not marked paused: its parked records go on counting
                // against the fetch loop's room, which then stays shut
                // until the worker takes them.
                tracing::warn!(topic, partition, "cannot pause fetching the partition: {e}");
                false
            }
        }
    }

    fn resume(&self, topic: &str, partition: i32) {
        if let Err(e) = Consumer::resume(self, &one(topic, partition)) {
            tracing::warn!(
                topic,
                partition,
                "cannot resume fetching the partition: {e}"
            );
        }
    }
}

fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

/// The worker of a partition with parked records has ended on its own.
#[derive(Debug)]
pub struct WorkerGone;

/// The parked records of each partition whose worker's queue was full.
#[derive(Default)]
pub struct Parked {
    partitions: Vec<Waiting>,
    bounds: Bounds,
    /// Since when the fetch loop has had no room to read.
    full_since: Option<Instant>,
}

struct Waiting {
    topic: String,
    partition: i32,
    /// The queue of the worker the records are for.
    queue: Queue,
    records: VecDeque<OwnedMessage>,
    /// What `records` cost (see `held`): headers included.
    bytes: usize,
    /// librdkafka was asked not to fetch the partition.
    paused: bool,
}

impl Waiting {
    fn push_back(&mut self, record: OwnedMessage) {
        self.bytes += size(&record);
        self.records.push_back(record);
    }

    fn pop_front(&mut self) -> Option<OwnedMessage> {
        let record = self.records.pop_front()?;
        self.bytes -= size(&record);
        Some(record)
    }

    fn push_front(&mut self, record: OwnedMessage) {
        self.bytes += size(&record);
        self.records.push_front(record);
    }

    fn pause(&mut self, fetching: &impl Fetching) {
        if !fetching.pause(&self.topic, self.partition) {
            return;
        }
        self.paused = true;
        metrics::partition_fetch_paused(&self.topic);
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            parked = self.records.len(),
            "the partition's worker is far behind: its fetching pauses"
        );
    }

    /// Resumes the partition's fetching if it was paused and the worker
    /// has nearly caught up (or `anyway`).
    fn unbound(&mut self, fetching: &impl Fetching, bounds: &Bounds, anyway: bool) {
        let low = self.records.len() <= bounds.resume_records && self.bytes <= bounds.resume_bytes;
        if self.paused && (anyway || low) {
            fetching.resume(&self.topic, self.partition);
            self.paused = false;
            tracing::debug!(
                topic = self.topic,
                partition = self.partition,
                parked = self.records.len(),
                "the partition is fetched again"
            );
        }
    }
}

impl Parked {
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Whether the fetch loop may read another record: the records parked
    /// for partitions still fetched are within the bounds.
    pub fn has_room(&self) -> bool {
        let (records, bytes) = self
            .partitions
            .iter()
            .filter(|w| !w.paused)
            .fold((0, 0), |(r, b), w| (r + w.records.len(), b + w.bytes));
        records < self.bounds.room_records && bytes < self.bounds.room_bytes
    }

    /// What every parked record costs, paused partitions' included: they
    /// are in memory all the same.
    pub fn bytes(&self) -> usize {
        self.partitions.iter().map(|w| w.bytes).sum()
    }

    /// Records parked now, over all partitions.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.partitions.iter().map(|w| w.records.len()).sum()
    }

    /// Gives `record` to its worker's `queue`, or parks it: behind the
    /// partition's records parked already or, if the queue is full (in
    /// records or bytes), as the partition's first. Gives the record back
    /// if the worker has ended.
    pub fn hand(
        &mut self,
        fetching: &impl Fetching,
        queue: &Queue,
        record: OwnedMessage,
    ) -> Result<(), OwnedMessage> {
        let (topic, partition) = (record.topic(), record.partition());
        if let Some(at) = self.find(topic, partition) {
            let waiting = &mut self.partitions[at];
            if waiting.queue.same_channel(queue) {
                waiting.push_back(record);
                return Ok(());
            }
            // A new worker has the partition (revoked, then assigned again):
            // what was parked for the old one is read again from the
            // committed offset, and this record is from that reading.
            self.partitions
                .swap_remove(at)
                .unbound(fetching, &self.bounds, true);
        }
        match queue.try_send(record) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(record)) => {
                let mut waiting = Waiting {
                    topic: record.topic().to_string(),
                    partition: record.partition(),
                    queue: queue.clone(),
                    records: VecDeque::new(),
                    bytes: 0,
                    paused: false,
                };
                waiting.push_back(record);
                self.partitions.push(waiting);
                Ok(())
            }
            Err(TrySendError::Closed(record)) => Err(record),
        }
    }

    /// Moves parked records into their workers' queues as far as there is
    /// room; a paused partition with few left is fetched again. Forgets the
    /// records of a partition whose worker is no longer the partition's.
    /// If the fetch loop has had no room to read for [`STALL`] by `now`,
    /// pauses the partition with the most parked records. Fails if a worker
    /// with parked records ended on its own.
    pub fn hand_on(
        &mut self,
        fetching: &impl Fetching,
        workers: &Workers,
        now: Instant,
    ) -> Result<(), WorkerGone> {
        let (mut gone, bounds) = (false, self.bounds);
        self.partitions.retain_mut(|waiting| {
            if !workers.holds(&waiting.topic, waiting.partition, &waiting.queue) {
                tracing::debug!(
                    topic = waiting.topic,
                    partition = waiting.partition,
                    parked = waiting.records.len(),
                    "parked records of a partition no longer this worker's: its next owner reads them"
                );
                waiting.unbound(fetching, &bounds, true);
                return false;
            }
            while let Some(record) = waiting.pop_front() {
                match waiting.queue.try_send(record) {
                    Ok(()) => {}
                    Err(TrySendError::Full(record)) => {
                        waiting.push_front(record);
                        waiting.unbound(fetching, &bounds, false);
                        return true;
                    }
                    Err(TrySendError::Closed(record)) => {
                        waiting.push_front(record);
                        gone = true;
                        return true;
                    }
                }
            }
            waiting.unbound(fetching, &bounds, true);
            false
        });
        self.relieve(fetching, now);
        if gone { Err(WorkerGone) } else { Ok(()) }
    }

    /// Pauses the partition with the most parked records if the fetch loop
    /// has had no room to read for [`STALL`].
    fn relieve(&mut self, fetching: &impl Fetching, now: Instant) {
        if self.has_room() {
            self.full_since = None;
            return;
        }
        let since = *self.full_since.get_or_insert(now);
        if now.duration_since(since) < self.bounds.stall {
            return;
        }
        let hog = self
            .partitions
            .iter_mut()
            .filter(|w| !w.paused)
            .max_by_key(|w| w.records.len());
        if let Some(hog) = hog {
            hog.pause(fetching);
        }
        self.full_since = None;
    }

    /// Forgets every parked record and resumes fetching the partitions
    /// paused: for a rewind, which then seeks each partition back before
    /// them.
    pub fn forget_all(&mut self, fetching: &impl Fetching) {
        for mut waiting in self.partitions.drain(..) {
            waiting.unbound(fetching, &self.bounds, true);
        }
    }

    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.partitions
            .iter()
            .position(|w| w.partition == partition && w.topic == topic)
    }
}

#[cfg(test)]
#[path = "parked_tests.rs"]
mod tests;
