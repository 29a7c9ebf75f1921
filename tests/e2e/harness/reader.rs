//! Reading records back: from the beginning of a topic up to its
//! high-water mark as it is once the test has what it waited for, so a
//! test sees duplicates and what should not have arrived.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::{bootstrap, unique};

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    /// (name, value), in order, both read lossily as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn json(&self) -> Value {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// How many headers are called `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

/// Reads `topics` from the beginning, keeping the records `keep` accepts,
/// until `expected` are kept and then on to each partition's high-water
/// mark as it is at that moment (so a test sees duplicates, or that nothing
/// came: what is not there by then was not written before), or until
/// `limit`.
pub fn read(
    topics: &[&str],
    expected: usize,
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    read_from(&bootstrap(), topics, expected, limit, keep)
}

/// Everything on `topics` up to their high-water marks now that `keep`
/// accepts: for checks that something did not arrive.
pub fn read_to_end(topics: &[&str], keep: impl Fn(&Record) -> bool) -> Vec<Record> {
    read(topics, 0, Duration::from_secs(60), keep)
}

/// [`read`] from the broker at `brokers`.
pub fn read_from(
    brokers: &str,
    topics: &[&str],
    expected: usize,
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    read_until(brokers, topics, limit, keep, |kept| kept.len() >= expected)
}

/// Reads `topics` from the beginning, keeping the records `keep` accepts,
/// until `enough` says they are enough (it is shown what is kept, at the
/// start and after each record kept) and then on to each partition's
/// high-water mark as it is at that moment, or until `limit`.
pub fn read_until(
    brokers: &str,
    topics: &[&str],
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
    mut enough: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        // librdkafka's default, said: records of aborted transactions (an
        // exactly-once eddy killed mid-transaction) are not read.
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assigned: Vec<(String, i32)> = Vec::new();
    let mut ends: Option<Vec<(String, i32, i64, i64)>> = None;
    let mut kept = Vec::new();
    let mut satisfied = enough(&kept);
    let started = Instant::now();
    let mut looked = None::<Instant>;
    while started.elapsed() < limit {
        // Partitions are assigned directly (no group to join); a topic that
        // does not exist yet is looked for again every half second.
        if looked.is_none_or(|at| at.elapsed() > Duration::from_millis(500)) {
            assign_new_partitions(&consumer, topics, &mut assigned);
            looked = Some(Instant::now());
        }
        if satisfied {
            let ends = ends.get_or_insert_with(|| high_water_marks(&consumer, &assigned));
            if caught_up(&consumer, ends) {
                break;
            }
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(message) = message else { continue };
        let record = Record {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message.headers().map(headers_of).unwrap_or_default(),
        };
        if keep(&record) {
            kept.push(record);
            satisfied |= enough(&kept);
        }
    }
    kept
}

/// Every header, names and values read lossily as text: rdkafka's own
/// iterator panics on a name that is not UTF-8, which eddy's dead letters
/// keep as they came.
fn headers_of(headers: &rdkafka::message::BorrowedHeaders) -> Vec<(String, String)> {
    let native = headers as *const rdkafka::message::BorrowedHeaders
        as *const rdkafka::bindings::rd_kafka_headers_t;
    (0..headers.count())
        .filter_map(|index| {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: the borrowed headers' address is the native headers
            // (rdkafka casts it the same way); librdkafka points into them.
            let error = unsafe {
                rdkafka::bindings::rd_kafka_header_get_all(
                    native, index, &mut name, &mut value, &mut size,
                )
            };
            if error != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            // SAFETY: a NUL-terminated name and `size` bytes of value, owned
            // by the message.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            let value = if value.is_null() {
                String::new()
            } else {
                let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) };
                String::from_utf8_lossy(bytes).into_owned()
            };
            Some((name, value))
        })
        .collect()
}

/// Assigns, from the beginning, the partitions of `topics` not yet in
/// `assigned`.
fn assign_new_partitions(
    consumer: &BaseConsumer,
    topics: &[&str],
    assigned: &mut Vec<(String, i32)>,
) {
    let mut new = TopicPartitionList::new();
    for topic in topics {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            continue;
        };
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                let at = (t.name().to_string(), p.id());
                if !assigned.contains(&at) {
                    new.add_partition_offset(&at.0, at.1, Offset::Beginning)
                        .expect("partition offset");
                    assigned.push(at);
                }
            }
        }
    }
    if new.count() > 0 {
        consumer
            .incremental_assign(&new)
            .expect("assign partitions");
    }
}

/// (topic, partition, low, high) of each assigned partition, now.
fn high_water_marks(
    consumer: &BaseConsumer,
    assigned: &[(String, i32)],
) -> Vec<(String, i32, i64, i64)> {
    assigned
        .iter()
        .map(|(topic, partition)| {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .expect("watermarks");
            (topic.clone(), *partition, low, high)
        })
        .collect()
}

/// Whether the consumer has read every partition up to its mark in `ends`.
fn caught_up(consumer: &BaseConsumer, ends: &[(String, i32, i64, i64)]) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(topic, partition, low, high)| {
        let at = match positions
            .find_partition(topic, *partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(at)) => at,
            _ => *low,
        };
        at >= *high
    })
}

/// What reached `<topic>.dlq`: waits for `expected` records (two minutes at
/// most), then reads to the end for any extra.
pub fn dead_letters(topic: &str, expected: usize) -> Vec<Record> {
    let dlq = format!("{topic}.dlq");
    read(&[&dlq], expected, Duration::from_secs(120), |_| true)
}

/// Records on `topics` caused by one of `ids` (their `causation_id`).
pub fn follow_ups_of(topics: &[&str], ids: &[String], expected: usize) -> Vec<Record> {
    read(topics, expected, Duration::from_secs(60), |r| {
        r.json()["causation_id"]
            .as_str()
            .is_some_and(|c| ids.iter().any(|id| id == c))
    })
}
