//! The parked records' bounds, pauses and resumes, with a stand-in that
//! records what the fetch loop asks of librdkafka.

use std::cell::RefCell;

use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::partition::held::{PARTITION_BYTES, size};

/// What the fetch loop asked of librdkafka, in order.
#[derive(Default)]
struct Calls(RefCell<Vec<String>>);

impl Fetching for Calls {
    fn pause(&self, topic: &str, partition: i32) -> bool {
        self.0
            .borrow_mut()
            .push(format!("pause {topic}/{partition}"));
        true
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
fn worker(workers: &Workers, partition: i32, room: usize) -> (Queue, mpsc::Receiver<OwnedMessage>) {
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
    sender: &Queue,
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
async fn a_new_worker_of_the_partition_takes_its_records_and_the_old_parked_ones_are_forgotten() {
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
    assert!(parked.has_room(), "22 bytes parked (value and topic name)");
    parked.hand(&fetching, &sender, record(0, 3)).expect("live");
    assert!(!parked.has_room(), "33 bytes parked");
}

#[tokio::test]
async fn headers_count_towards_the_parked_bytes() {
    let workers = Workers::new(CancellationToken::new());
    let fetching = Calls::default();
    let mut parked = parked();
    parked.bounds.room_bytes = 1000;
    let (sender, _queue) = worker(&workers, 0, 1);
    parked.hand(&fetching, &sender, record(0, 0)).expect("live");
    let headers = OwnedHeaders::new().insert(Header {
        key: "x-heavy",
        value: Some(&[b'h'; 2000][..]),
    });
    let heavy = OwnedMessage::new(
        Some(vec![b'x'; 10]),
        None,
        "t".into(),
        Timestamp::NotAvailable,
        0,
        1,
        Some(headers),
    );
    parked.hand(&fetching, &sender, heavy).expect("live");
    assert!(!parked.has_room(), "a small value, a 2,000-byte header");
    assert!(parked.bytes() > 2000);
}

#[tokio::test]
async fn a_partition_holding_its_share_of_bytes_has_its_records_parked() {
    let workers = Workers::new(CancellationToken::new());
    let fetching = Calls::default();
    let mut parked = parked();
    let (queue, mut receiver) = worker(&workers, 0, 100);
    let big = OwnedMessage::new(
        Some(vec![b'x'; PARTITION_BYTES]),
        None,
        "t".into(),
        Timestamp::NotAvailable,
        0,
        0,
        None,
    );
    parked.hand(&fetching, &queue, big).expect("live");
    assert_eq!(
        parked.len(),
        0,
        "the first goes to the worker, whatever its size"
    );
    assert!(workers.held().bytes() > PARTITION_BYTES);
    parked.hand(&fetching, &queue, record(0, 1)).expect("live");
    assert_eq!(
        parked.len(),
        1,
        "the queue has room, the partition's share has not"
    );
    let taken = receiver.try_recv().expect("queued");
    queue.share.release(size(&taken));
    assert_eq!(workers.held().bytes(), 0);
    parked
        .hand_on(&fetching, &workers, Instant::now())
        .expect("live");
    assert_eq!(offsets(&mut receiver), [1], "handed on once released");
    assert_eq!(workers.held().bytes(), size(&record(0, 1)));
}

/// librdkafka refusing to pause a partition.
struct Unpausable;

impl Fetching for Unpausable {
    fn pause(&self, _: &str, _: i32) -> bool {
        false
    }
    fn resume(&self, _: &str, _: i32) {
        panic!("resumed a partition never paused");
    }
}

#[tokio::test]
async fn a_partition_that_could_not_be_paused_is_not_taken_for_paused() {
    let workers = Workers::new(CancellationToken::new());
    let mut parked = parked();
    let (queue, _receiver) = worker(&workers, 0, 1);
    let now = Instant::now();
    for offset in 0..6 {
        parked
            .hand(&Unpausable, &queue, record(0, offset))
            .expect("live");
    }
    parked.hand_on(&Unpausable, &workers, now).expect("live");
    parked
        .hand_on(&Unpausable, &workers, now + Duration::from_secs(1))
        .expect("live");
    assert!(
        !parked.has_room(),
        "its parked records still count: the fetch loop waits for its worker"
    );
}
