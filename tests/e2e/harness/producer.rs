//! Sending records as the services do, including ones no well-behaved
//! client would write (header names that are not UTF-8).

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

use super::bootstrap;

pub struct TestProducer {
    producer: BaseProducer,
}

pub fn producer() -> TestProducer {
    producer_for(&bootstrap())
}

pub fn producer_for(brokers: &str) -> TestProducer {
    producer_with(brokers, &[])
}

/// A producer with extra librdkafka settings.
pub fn producer_with(brokers: &str, settings: &[(&str, &str)]) -> TestProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    TestProducer {
        producer: config.create().expect("producer"),
    }
}

impl TestProducer {
    pub fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        value: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
            .collect();
        self.send_raw(topic, key.map(str::as_bytes), value, &headers);
    }

    /// Sends `value` with `key` to partition `partition` of `topic`.
    pub fn send_to(&self, topic: &str, partition: i32, key: &str, value: &Value) {
        let payload = value.to_string();
        let record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(&payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends the bytes `value` with `key` to partition `partition` of `topic`.
    pub fn send_bytes_to(&self, topic: &str, partition: i32, key: &str, value: &[u8]) {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends a record whose header names are any bytes (rdkafka's own
    /// header API takes names as text only).
    pub fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) {
        let owned = OwnedHeaders::new();
        let native = owned.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        for (name, value) in headers {
            // SAFETY: `as_borrowed` is the native headers' address (rdkafka
            // casts it the same way); they are ours and writable, and
            // librdkafka copies the name and value.
            unsafe {
                rdkafka::bindings::rd_kafka_header_add(
                    native,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast_mut().cast(),
                    value.len() as isize,
                );
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends `value` with `key` to `topic`, stamped `timestamp_ms`.
    pub fn send_at(&self, topic: &str, key: &str, value: &Value, timestamp_ms: i64) {
        let payload = value.to_string();
        let record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .key(key)
            .payload(payload.as_str())
            .timestamp(timestamp_ms);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    pub fn send_json(&self, topic: &str, key: &str, value: &Value) {
        self.send(topic, Some(key), Some(value.to_string().as_bytes()), &[]);
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

/// A seed-style event as the Python services write it.
pub fn seed_event(event_id: &str, event_type: &str, aggregate_id: &str, data: Value) -> Value {
    serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": "2026-11-26T12:00:00Z",
        "service_name": "user-service",
        "version": "1.0",
        "data": data,
        "metadata": {},
        "aggregate_id": aggregate_id,
        "aggregate_type": "User",
    })
}
