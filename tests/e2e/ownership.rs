//! One owner per partition: a partition revoked while its record is in a
//! long retry gets no second worker, and follow-ups keep their order when
//! the producer's queue is full.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::checker::Sent;
use crate::failures::{stream, tagger_config, verdict_of};
use crate::harness::{Eddy, PluginFile, bootstrap, create_topics, producer, seed_event, unique};

/// Lines of a log where two workers of one partition ran at once: each
/// "partition worker started" must come after the "ended" of the one
/// before it.
fn overlapping_workers(log: &str) -> (usize, Vec<String>) {
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        Some(
            line[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '"')
                .collect::<String>()
                .trim_matches('"')
                .to_string(),
        )
    };
    let mut running: HashMap<(String, String), String> = HashMap::new();
    let (mut started, mut overlaps) = (0, Vec::new());
    for line in log.lines().map(without_colours) {
        let line = line.as_str();
        let starts = line.contains("partition worker started");
        if !starts && !line.contains("partition worker ended") {
            continue;
        }
        let (Some(worker), Some(topic), Some(partition)) = (
            field(line, "worker"),
            field(line, "topic"),
            field(line, "partition"),
        ) else {
            overlaps.push(format!("unreadable: {line}"));
            continue;
        };
        let at = (topic, partition);
        if starts {
            started += 1;
            if let Some(other) = running.insert(at, worker) {
                overlaps.push(format!("{line} (worker {other} still running)"));
            }
        } else if running.get(&at) == Some(&worker) {
            running.remove(&at);
        }
    }
    (started, overlaps)
}

/// `line` without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn a_partition_revoked_during_a_long_retry_gets_no_second_worker() {
    const PARTITIONS: i32 = 4;
    const KEYS: usize = 16;
    const EVENTS: usize = 2_000;
    let (topic, out) = (unique("own.retry"), unique("own.retry.out"));
    create_topics(&[&topic, &out], PARTITIONS);
    // Retries back off 0.1, 0.2, 0.4 … 25.6 s: nine failed attempts take
    // about 50 s, far longer than a rebalance waits.
    let config = format!(
        "{}max_retries = 12\n",
        tagger_config(&unique("g"), &topic, &out)
    );
    let mut first = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(first.wait_for_log("partitions assigned", 1, Duration::from_secs(30)));

    // Key k goes to partition k % PARTITIONS; the first event of each
    // partition fails its first nine attempts, so every partition is held
    // by a record in retry.
    let producer = producer();
    let mut sent = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let k = n % KEYS;
        let (key, id, seq) = (
            format!("key-{k}"),
            format!("{topic}-{n}"),
            (n / KEYS) as u64,
        );
        let data = if n < PARTITIONS as usize {
            json!({"seq": seq, "fail_attempts": 9})
        } else {
            json!({"seq": seq})
        };
        let partition = (k % PARTITIONS as usize) as i32;
        producer.send_to(
            &topic,
            partition,
            &key,
            &seed_event(&id, "load.event", &key, data),
        );
        sent.push(Sent { id, key, seq });
    }
    producer.flush();
    assert!(
        first.wait_for_log(
            "attempt failed, retrying",
            2 * PARTITIONS as usize,
            Duration::from_secs(60)
        ),
        "log:\n{}",
        first.log()
    );

    // A second host takes some partitions while their records retry …
    let mut second = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(
        first.wait_for_log(
            "partitions revoked; finished work committed",
            1,
            Duration::from_secs(60)
        ),
        "log of the first:\n{}",
        first.log()
    );
    assert!(
        second.wait_for_log("attempt failed, retrying", 1, Duration::from_secs(60)),
        "the second host took over a retrying record; log:\n{}",
        second.log()
    );
    // … and leaves: they come back to the first, still retrying.
    second.stop();
    assert!(
        first.wait_for_log(
            "partition worker started",
            PARTITIONS as usize + 1,
            Duration::from_secs(60)
        ),
        "log of the first:\n{}",
        first.log()
    );

    let verdict = verdict_of(&bootstrap(), &out, &sent);
    println!("a partition revoked during a long retry, and back: {verdict}");
    let log = first.log();
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{log}");
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    assert!(verdict.duplicated.is_empty(), "{verdict}");
    let (started, overlaps) = overlapping_workers(&log);
    assert!(
        started > PARTITIONS as usize,
        "partitions came back and got new workers ({started} started); log:\n{log}"
    );
    assert!(
        overlaps.is_empty(),
        "two workers of one partition at once: {overlaps:#?}"
    );
    first.stop();
}

#[test]
fn follow_ups_stay_in_order_when_the_producer_queue_is_full() {
    const EVENTS: usize = 20_000;
    let (topic, out) = (unique("own.queue"), unique("own.queue.out"));
    create_topics(&[&topic, &out], 6);
    // Four follow-ups at most in the producer's queue: it is full all the
    // time, and every follow-up waits for room.
    let config = format!(
        "{}\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"4\"\n",
        tagger_config(&unique("g"), &topic, &out)
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let sent = stream(bootstrap(), topic, 0..EVENTS, Duration::from_secs(4))
        .join()
        .expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    println!("producer queue of 4 messages: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    assert!(verdict.duplicated.is_empty(), "{verdict}");
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    assert!(eddy.is_running());
    eddy.stop();
}
