//! Topics on a broker: creating them, deleting their records as retention
//! would, and reading their committed and end offsets.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::bootstrap;

pub fn create_topics(topics: &[&str], partitions: i32) {
    create_topics_on(&bootstrap(), topics, partitions)
}

pub fn create_topics_on(brokers: &str, topics: &[&str], partitions: i32) {
    create_topics_with(brokers, topics, partitions, &[]);
}

/// Creates `topics` with topic-level settings such as `max.message.bytes`.
pub fn create_topics_with(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    settings: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new())).expect("create topics");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create {topic}: {code}"),
        }
    }
}

/// Sets topic-level settings of an existing `topic` (the others go back to
/// the broker's defaults), as `kafka-configs --alter` would.
pub fn alter_topic(topic: &str, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let change = settings.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |change, (k, v)| change.set(k, v),
    );
    let results =
        block_on(admin.alter_configs(&[change], &AdminOptions::new())).expect("alter configs");
    for result in results {
        if let Err((_, code)) = result {
            panic!("cannot alter {topic}: {code}");
        }
    }
}

/// Deletes the records of `topic` partition `partition` before `offset`,
/// as retention would.
pub fn delete_records_before(topic: &str, partition: i32, offset: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("partition");
    block_on(admin.delete_records(&before, &AdminOptions::new())).expect("delete records");
}

/// Drives one future to completion on this thread (the admin API is async).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The committed offset of `group` for each partition of `topic`.
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        // A read_committed consumer asks for stable offsets only, and the
        // broker makes it wait while a transaction of the group is open:
        // after a kill -9 of an exactly-once eddy, until the transaction
        // times out (60 s). What was committed is what the tests ask.
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    // A loaded machine can miss one 10 s answer; three in a row is a fault.
    let committed = (1..=3)
        .find_map(|attempt| {
            match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
                Ok(committed) => Some(committed),
                Err(e) if attempt < 3 => {
                    eprintln!("committed offsets, attempt {attempt}: {e}; again");
                    None
                }
                Err(e) => panic!("committed offsets: {e}"),
            }
        })
        .expect("an answer or a panic");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// The end (high-water mark) of each partition of `topic`.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}
