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
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::Workers;
use crate::metrics;

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
    fn pause(&self, topic: &str, partition: i32);
    fn resume(&self, topic: &str, partition: i32);
}

impl<C: ConsumerContext + 'static> Fetching for StreamConsumer<C> {
    fn pause(&self, topic: &str, partition: i32) {
        if let Err(e) = Consumer::pause(self, &one(topic, partition)) {
            // Its records keep coming and are parked behind the first: the
            // queue grows by what librdkafka fetches, as it would have
            // waited in librdkafka's own queue.
            tracing::warn!(topic, partition, "cannot pause fetching the partition: {e}");
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
    sender: Sender<OwnedMessage>,
    records: VecDeque<OwnedMessage>,
    /// Key and value bytes of `records`.
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
        fetching.pause(&self.topic, self.partition);
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

fn size(record: &OwnedMessage) -> usize {
    record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len)
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

    /// Records parked now, over all partitions.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.partitions.iter().map(|w| w.records.len()).sum()
    }

    /// Gives `record` to its worker's queue `sender`, or parks it: behind
    /// the partition's records parked already or, if the queue is full, as
    /// the partition's first. Gives the record back if the worker has ended.
    pub fn hand(
        &mut self,
        fetching: &impl Fetching,
        sender: &Sender<OwnedMessage>,
        record: OwnedMessage,
    ) -> Result<(), OwnedMessage> {
        let (topic, partition) = (record.topic(), record.partition());
        if let Some(at) = self.find(topic, partition) {
            let waiting = &mut self.partitions[at];
            if waiting.sender.same_channel(sender) {
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
        match sender.try_send(record) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(record)) => {
                let mut waiting = Waiting {
                    topic: record.topic().to_string(),
                    partition: record.partition(),
                    sender: sender.clone(),
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
            if !workers.holds(&waiting.topic, waiting.partition, &waiting.sender) {
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
                match waiting.sender.try_send(record) {
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
mod tests {
    use std::cell::RefCell;

    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// What the fetch loop asked of librdkafka, in order.
    #[derive(Default)]
    struct Calls(RefCell<Vec<String>>);

    impl Fetching for Calls {
        fn pause(&self, topic: &str, partition: i32) {
            self.0
                .borrow_mut()
                .push(format!("pause {topic}/{partition}"));
        }
        fn resume(&self, topic: &str, partition: i32) {
            self.0
                .borrow_mut()
                .push(format!("resume {topic}/{partition}"));
        }
    }

    impl Calls {
        fn taken(&self) -> Vec<String> {
            std::mem::take(&mut self.0.borrow_mut())
        }
    }

    /// Room for 4 parked records; a stall of 1 s pauses the biggest
    /// partition, fetched again at 1 record or fewer.
    fn parked() -> Parked {
        Parked {
            partitions: Vec::new(),
            bounds: Bounds {
                room_records: 4,
                room_bytes: usize::MAX,
                stall: Duration::from_secs(1),
                resume_records: 1,
                resume_bytes: usize::MAX,
            },
            full_since: None,
        }
    }

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        let value = Some(vec![b'x'; 10]);
        OwnedMessage::new(
            value,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn offsets(receiver: &mut mpsc::Receiver<OwnedMessage>) -> Vec<i64> {
        let mut got = Vec::new();
        while let Ok(record) = receiver.try_recv() {
            got.push(record.offset());
        }
        got
    }

    /// A worker registered for t/`partition`, with a queue of `room`.
    fn worker(
        workers: &Workers,
        partition: i32,
        room: usize,
    ) -> (Sender<OwnedMessage>, mpsc::Receiver<OwnedMessage>) {
        workers.assign(&[("t".to_string(), partition)]);
        let mut receiver = None;
        let sender = workers
            .sender_with_room("t", partition, 0, room, |start| {
                receiver = Some(start.records)
            })
            .expect("assigned");
        (sender, receiver.expect("started"))
    }

    /// Hands t/0 records 0 to 5 to `sender` (a queue of 1: five parked,
    /// no room) and lets the fetch loop stall long enough to pause t/0.
    fn park_until_paused(
        parked: &mut Parked,
        fetching: &Calls,
        workers: &Workers,
        sender: &Sender<OwnedMessage>,
        now: Instant,
    ) {
        for offset in 0..6 {
            parked
                .hand(fetching, sender, record(0, offset))
                .expect("live");
        }
        parked.hand_on(fetching, workers, now).expect("live");
        parked
            .hand_on(fetching, workers, now + Duration::from_secs(1))
            .expect("live");
        assert_eq!(fetching.taken(), ["pause t/0"]);
    }

    #[tokio::test]
    async fn a_full_queue_parks_the_partition_in_order_and_the_others_go_on() {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        let (slow, mut slow_queue) = worker(&workers, 0, 2);
        let (fast, mut fast_queue) = worker(&workers, 1, 2);
        let now = Instant::now();

        for offset in 0..5 {
            parked
                .hand(&fetching, &slow, record(0, offset))
                .expect("live");
        }
        assert_eq!(parked.len(), 3);
        assert!(parked.has_room());
        // The other partition is not held up.
        parked.hand(&fetching, &fast, record(1, 0)).expect("live");
        assert_eq!(offsets(&mut fast_queue), [0]);

        // No room in the queue: nothing moves.
        parked.hand_on(&fetching, &workers, now).expect("live");
        assert_eq!(parked.len(), 3);
        assert_eq!(offsets(&mut slow_queue), [0, 1]);
        parked.hand_on(&fetching, &workers, now).expect("live");
        assert_eq!(offsets(&mut slow_queue), [2, 3]);
        parked.hand(&fetching, &slow, record(0, 5)).expect("live");
        parked.hand_on(&fetching, &workers, now).expect("live");
        assert_eq!(offsets(&mut slow_queue), [4, 5]);
        assert!(parked.is_empty());
        assert!(
            fetching.taken().is_empty(),
            "a queue that drains pauses nothing"
        );

        // Nothing parked: straight to the queue.
        parked.hand(&fetching, &slow, record(0, 6)).expect("live");
        assert_eq!(offsets(&mut slow_queue), [6]);
    }

    #[tokio::test]
    async fn a_stall_pauses_the_partition_with_the_most_parked_until_it_nearly_caught_up() {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        let (stuck, mut stuck_queue) = worker(&workers, 0, 1);
        let (slow, mut slow_queue) = worker(&workers, 1, 1);
        let now = Instant::now();

        // 0: queued; 1, 2, 3: parked.
        for offset in 0..4 {
            parked
                .hand(&fetching, &stuck, record(0, offset))
                .expect("live");
        }
        // 0: queued; 1: parked. Five parked: no room.
        for offset in 0..2 {
            parked
                .hand(&fetching, &slow, record(1, offset))
                .expect("live");
        }
        assert!(!parked.has_room());
        parked.hand_on(&fetching, &workers, now).expect("live");
        parked
            .hand_on(&fetching, &workers, now + Duration::from_millis(999))
            .expect("live");
        assert!(fetching.taken().is_empty(), "not stalled long enough");
        parked
            .hand_on(&fetching, &workers, now + Duration::from_secs(1))
            .expect("live");
        assert_eq!(
            fetching.taken(),
            ["pause t/0"],
            "the partition with most parked"
        );
        // Its records no longer count: the fetch loop reads again.
        assert!(parked.has_room());

        // Still parked behind (fetched before the pause took effect).
        parked.hand(&fetching, &stuck, record(0, 4)).expect("live");
        assert_eq!(offsets(&mut stuck_queue), [0]);
        let later = now + Duration::from_secs(2);
        parked.hand_on(&fetching, &workers, later).expect("live");
        assert_eq!(offsets(&mut stuck_queue), [1]);
        assert_eq!(offsets(&mut slow_queue), [0]);
        parked.hand_on(&fetching, &workers, later).expect("live");
        assert_eq!(offsets(&mut stuck_queue), [2]);
        assert_eq!(offsets(&mut slow_queue), [1]);
        assert!(fetching.taken().is_empty(), "two still parked");
        parked.hand_on(&fetching, &workers, later).expect("live");
        assert_eq!(
            fetching.taken(),
            ["resume t/0"],
            "fetched again with one parked"
        );
        assert_eq!(offsets(&mut stuck_queue), [3]);
        // Fetched after the resume: behind what is still parked.
        parked.hand(&fetching, &stuck, record(0, 5)).expect("live");
        parked.hand_on(&fetching, &workers, later).expect("live");
        assert_eq!(offsets(&mut stuck_queue), [4]);
        parked.hand_on(&fetching, &workers, later).expect("live");
        assert_eq!(offsets(&mut stuck_queue), [5]);
        assert!(parked.is_empty());
        assert!(fetching.taken().is_empty());
    }

    #[tokio::test]
    async fn records_parked_for_a_revoked_worker_are_left_to_the_next_owner() {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        let (sender, _queue) = worker(&workers, 0, 1);
        let now = Instant::now();
        park_until_paused(&mut parked, &fetching, &workers, &sender, now);
        workers.revoke(&[("t".to_string(), 0)]);
        parked
            .hand_on(&fetching, &workers, now)
            .expect("not an error");
        assert!(parked.is_empty());
        assert_eq!(
            fetching.taken(),
            ["resume t/0"],
            "a partition assigned again is fetched"
        );
    }

    #[tokio::test]
    async fn a_new_worker_of_the_partition_takes_its_records_and_the_old_parked_ones_are_forgotten()
    {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        let (old, _old_queue) = worker(&workers, 0, 1);
        for offset in 0..4 {
            parked
                .hand(&fetching, &old, record(0, offset))
                .expect("live");
        }
        workers.revoke(&[("t".to_string(), 0)]);
        // Assigned again: read from the committed offset by a new worker.
        let (new, mut new_queue) = worker(&workers, 0, 8);
        parked.hand(&fetching, &new, record(0, 0)).expect("live");
        assert!(parked.is_empty());
        assert_eq!(offsets(&mut new_queue), [0]);
    }

    #[tokio::test]
    async fn a_worker_that_ended_on_its_own_is_reported() {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        let (sender, queue) = worker(&workers, 0, 1);
        let now = Instant::now();
        park_until_paused(&mut parked, &fetching, &workers, &sender, now);
        drop(queue);
        assert!(parked.hand_on(&fetching, &workers, now).is_err());
        assert_eq!(parked.len(), 5, "kept for the rewind that follows");
        assert!(
            parked.hand(&fetching, &sender, record(0, 6)).is_ok(),
            "parked behind"
        );

        parked.forget_all(&fetching);
        assert!(parked.is_empty());
        assert_eq!(fetching.taken(), ["resume t/0"]);
    }

    #[tokio::test]
    async fn bytes_bound_the_parked_records_too() {
        let workers = Workers::new(CancellationToken::new());
        let fetching = Calls::default();
        let mut parked = parked();
        parked.bounds.room_bytes = 25;
        let (sender, _queue) = worker(&workers, 0, 1);
        for offset in 0..3 {
            parked
                .hand(&fetching, &sender, record(0, offset))
                .expect("live");
        }
        assert!(parked.has_room(), "20 bytes parked");
        parked.hand(&fetching, &sender, record(0, 3)).expect("live");
        assert!(!parked.has_room(), "30 bytes parked");
    }
}
