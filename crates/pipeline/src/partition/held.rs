//! What records cost in memory while eddy holds them, and the one budget
//! for it.
//!
//! A record is held from the moment the fetch loop takes it out of
//! librdkafka's queue until its worker has finished it (its follow-ups or
//! dead letter acknowledged) or let go of it (the worker ended): parked,
//! queued for its worker, in a batch, or awaiting acknowledgements. Its
//! cost is its key, value and headers, names included, and its topic name.
//!
//! The process holds at most [`PROCESS_BYTES`]: past that the fetch loop
//! stops reading, and librdkafka's own queue fills and stops fetching. A
//! worker's queue takes records only while its partition holds less than
//! [`PARTITION_BYTES`]; more are parked, and a partition whose parked
//! records keep the fetch loop from reading is paused (see `parked`). So
//! one partition behind (a slow handler, a retry's backoff) holds at most
//! its share and what it parked, and the others go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use eddy_kafka::headers;

/// Bytes of records the process holds past which the fetch loop stops
/// reading.
pub const PROCESS_BYTES: usize = 128 << 20;
/// Bytes of records one partition's worker holds (queued, running or
/// awaiting acknowledgements) past which its records are parked instead.
pub const PARTITION_BYTES: usize = 16 << 20;

/// What a record costs while held.
pub fn size(record: &OwnedMessage) -> usize {
    let headers = record.headers().map_or(0, |h| {
        headers::each(h)
            .map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len))
            .sum()
    });
    record.payload().map_or(0, <[u8]>::len)
        + record.key().map_or(0, <[u8]>::len)
        + record.topic().len()
        + headers
}

/// Bytes of records the whole process holds in workers' hands.
#[derive(Debug, Default)]
pub struct Held {
    bytes: AtomicUsize,
}

impl Held {
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the fetch loop may read another record, with `parked`
    /// bytes waiting for their workers besides.
    pub fn has_room(&self, parked: usize) -> bool {
        self.bytes() + parked < PROCESS_BYTES
    }
}

/// One worker's part of what the process holds.
#[derive(Debug)]
pub struct Share {
    bytes: AtomicUsize,
    process: Arc<Held>,
}

impl Share {
    pub fn new(process: Arc<Held>) -> Share {
        Share {
            bytes: AtomicUsize::new(0),
            process,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.process.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` of records the worker has finished or let go of.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.process.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// A worker's queue, bounded in records by the channel and in bytes by its
/// share.
#[derive(Debug, Clone)]
pub struct Queue {
    pub sender: mpsc::Sender<OwnedMessage>,
    pub share: Arc<Share>,
}

impl Queue {
    /// Gives `record` to the worker, unless its queue is full or its
    /// partition holds its share of bytes already (`Full`), or the worker
    /// has ended (`Closed`).
    pub fn try_send(&self, record: OwnedMessage) -> Result<(), TrySendError<OwnedMessage>> {
        if self.share.bytes() >= PARTITION_BYTES {
            return Err(TrySendError::Full(record));
        }
        // Counted before it is sent: the worker may finish it at once.
        let bytes = size(&record);
        self.share.add(bytes);
        self.sender.try_send(record).inspect_err(|_| {
            self.share.release(bytes);
        })
    }

    pub fn same_channel(&self, other: &Queue) -> bool {
        self.sender.same_channel(&other.sender)
    }
}
