//! Nothing lost: crashes, clean stops, broker outages and a second host, with
//! the loss checker as the oracle; and every bad plugin behaviour and bad
//! record ends in the dead-letter topic with its reason.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checker::{Sent, Verdict, check};
use crate::harness::{
    Eddy, PluginFile, TestBroker, bootstrap, committed, config_head, create_topics,
    create_topics_with, dead_letters, follow_ups_of, http_get, producer_for, producer_with, read,
    read_to_end, read_until, seed_event, unique,
};

const EVENTS: usize = 20_000;
const KEYS: usize = 64;

pub fn tagger_config(group: &str, topic: &str, out: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
         [plugin.tagger]\npublish_to = [\"{out}\"]\nconfig = {{ out_topic = \"{out}\" }}\n",
        config_head(group)
    )
}

/// Produces events `range` (of one numbering: event n has key n % KEYS
/// and is that key's event n / KEYS) to `topic` on `brokers`, in a thread,
/// spread over about `over`.
pub fn stream(
    brokers: String,
    topic: String,
    range: std::ops::Range<usize>,
    over: Duration,
) -> thread::JoinHandle<Vec<Sent>> {
    thread::spawn(move || {
        let producer = producer_for(&brokers);
        let mut sent = Vec::with_capacity(range.len());
        let started = Instant::now();
        let total = range.len();
        for (i, n) in range.enumerate() {
            let key = format!("key-{}", n % KEYS);
            let id = format!("{topic}-{n}");
            let seq = (n / KEYS) as u64;
            producer.send_json(
                &topic,
                &key,
                &seed_event(&id, "load.event", &key, json!({"seq": seq})),
            );
            sent.push(Sent { id, key, seq });
            if i % 500 == 499 {
                producer.flush();
                let due = over.mul_f64((i + 1) as f64 / total as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    thread::sleep(wait);
                }
            }
        }
        producer.flush();
        sent
    })
}

/// The checker's verdict on what reached `out`: read until every event sent
/// has a follow-up (duplicates do not count towards that), then to the end.
pub fn verdict_of(brokers: &str, out: &str, sent: &[Sent]) -> Verdict {
    let mut causes = std::collections::HashSet::new();
    let records = read_until(
        brokers,
        &[out],
        Duration::from_secs(300),
        |_| true,
        |kept| {
            if let Some(cause) = kept
                .last()
                .and_then(|r| r.json()["causation_id"].as_str().map(str::to_string))
            {
                causes.insert(cause);
            }
            causes.len() >= sent.len()
        },
    );
    check(sent, &records)
}

/// Streams `EVENTS` events through one eddy, does `interrupt` to it half
/// way, and returns eddy (running again) with the checker's verdict.
fn interrupted_stream(name: &str, interrupt: impl FnOnce(&mut Eddy)) -> (Eddy, Verdict) {
    let (topic, out) = (unique(name), unique(&format!("{name}.out")));
    create_topics(&[&topic, &out], 6);
    let mut eddy = Eddy::start(
        &tagger_config(&unique("g"), &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let producing = stream(bootstrap(), topic, 0..EVENTS, Duration::from_secs(8));
    thread::sleep(Duration::from_secs(4));
    interrupt(&mut eddy);
    // eddy is not running now: what it had handled is all there is.
    let handled = read_to_end(&[&out], |_| true).len();
    assert!(
        handled > 0 && handled < EVENTS,
        "the interruption came mid-stream: {handled} of {EVENTS} events were handled by then"
    );
    eddy.launch();
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    (eddy, verdict)
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let (mut eddy, verdict) = interrupted_stream("fail.kill", |eddy| {
        eddy.kill();
        thread::sleep(Duration::from_secs(1));
    });
    println!("kill -9 mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    eddy.stop();
}

#[test]
fn sigterm_mid_stream_loses_and_repeats_nothing() {
    let (mut eddy, verdict) = interrupted_stream("fail.term", Eddy::stop);
    println!("SIGTERM mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    assert!(verdict.duplicated.is_empty(), "{verdict}");
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    eddy.stop();
}

#[test]
fn a_host_joining_and_one_killed_mid_stream_lose_nothing() {
    let (topic, out) = (unique("fail.pair"), unique("fail.pair.out"));
    create_topics(&[&topic, &out], 6);
    let config = tagger_config(&unique("g"), &topic, &out);
    let mut first = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(first.wait_for_log("partitions assigned", 1, Duration::from_secs(30)));
    let producing = stream(
        bootstrap(),
        topic.clone(),
        0..EVENTS,
        Duration::from_secs(8),
    );
    // A second host joins: the first gives up some partitions, committing
    // their finished work first.
    thread::sleep(Duration::from_secs(2));
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
    // Then the first dies without a word.
    thread::sleep(Duration::from_secs(2));
    first.kill();
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    println!("a host joining, then one killed, mid-stream: {verdict}");
    assert!(
        verdict.lost.is_empty(),
        "{verdict}; log of the survivor:\n{}",
        second.log()
    );
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    assert!(second.is_running());
    second.stop();
}

#[test]
fn a_broker_outage_mid_stream_loses_nothing() {
    let mut broker = TestBroker::start();
    let brokers = broker.bootstrap();
    let (topic, out) = (unique("fail.broker"), unique("fail.broker.out"));
    crate::harness::create_topics_on(&brokers, &[&topic, &out], 3);
    let config = tagger_config(&unique("g"), &topic, &out);
    // eddy starts while the broker is away, and waits for it.
    broker.stop();
    let mut eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Test("tagger")],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    thread::sleep(Duration::from_secs(3));
    assert!(
        eddy.is_running(),
        "eddy waits for an unreachable broker; log:\n{}",
        eddy.log()
    );
    broker.restart();
    // Half the stream, then the broker goes away for a while, then the rest.
    let mut sent = stream(
        brokers.clone(),
        topic.clone(),
        0..EVENTS / 2,
        Duration::from_secs(3),
    )
    .join()
    .expect("producer");
    thread::sleep(Duration::from_secs(1));
    broker.stop();
    thread::sleep(Duration::from_secs(5));
    assert!(eddy.is_running(), "eddy survives the broker going away");
    broker.restart();
    sent.extend(
        stream(
            brokers.clone(),
            topic.clone(),
            EVENTS / 2..EVENTS,
            Duration::from_secs(3),
        )
        .join()
        .expect("producer"),
    );
    let verdict = verdict_of(&brokers, &out, &sent);
    println!("broker stopped for 5 s mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    let log = eddy.log();
    assert!(
        ["Connection refused", "Disconnected", "transport failure"]
            .iter()
            .any(|m| log.contains(m)),
        "the outage was logged:\n{log}"
    );
    eddy.stop();
}

/// A record that is not an event: key, value, headers, expected reason.
type BadRecord<'a> = (&'a str, Option<&'a [u8]>, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn every_bad_behaviour_and_record_is_dead_lettered_with_its_reason() {
    let (topic, out) = (unique("fail.bad"), unique("fail.bad.out"));
    create_topics(&[&topic, &out], 1);
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\ntimeout_ms = 300\nmemory_mb = 16\nmax_retries = 2\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(&unique("g"))
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    let producer = producer_for(&bootstrap());
    // (key, event type or raw record, expected reason prefix, expected attempts)
    let behaviours = [
        ("trap", "trap:", "3"),
        ("loop", "timeout:", "3"),
        ("sleep", "timeout: the handler asked to sleep past", "3"),
        (
            "sleep-forever",
            "timeout: the handler asked to sleep past",
            "3",
        ),
        ("memory", "memory-limit:", "3"),
        ("stack", "trap:", "3"),
        ("retry", "retry:", "3"),
        ("burst", "reject: follow-up limit exceeded", "1"),
        (
            "hugekey",
            "reject: follow-up limit exceeded: follow-ups of one event may total 524288 bytes, keys included",
            "1",
        ),
        ("forbidden", "reject: publish not allowed", "1"),
    ];
    for (kind, _, _) in &behaviours {
        let event = seed_event(&unique(kind), &format!("chaos.{kind}"), kind, json!({}));
        producer.send_json(&topic, kind, &event);
        // After a sleeper, one that naps within its deadline: short sleeps work.
        let good = if kind.starts_with("sleep") {
            "chaos.nap"
        } else {
            "chaos.ok"
        };
        producer.send_json(
            &topic,
            "good",
            &seed_event(&unique("ok"), good, "good", json!({})),
        );
    }
    // A plugin flooding its log and stdout is cut short there, and its
    // event is handled.
    let flood = unique("flood");
    producer.send_json(
        &topic,
        "good",
        &seed_event(&flood, "chaos.logflood", "good", json!({})),
    );
    let records: [BadRecord; 6] = [
        (
            "not-json",
            Some(b"{oops"),
            &[],
            "undecodable: value is not JSON",
        ),
        (
            "not-envelope",
            Some(br#"{"hello": "world"}"#),
            &[],
            "undecodable: value is not an event envelope",
        ),
        (
            "bad-utf8",
            Some(b"{\"event_id\": \"\xff\"}"),
            &[],
            "undecodable: value is not UTF-8",
        ),
        ("null", None, &[], "undecodable: record has no value"),
        (
            "ce-structured",
            Some(br#"{"specversion": "1.0", "type": "chaos.ok", "source": "x"}"#),
            &[("content-type", "application/cloudevents+json")],
            "undecodable: CloudEvents structured event lacks the required attribute \"id\"",
        ),
        (
            "ce-binary",
            Some(b"{}"),
            &[
                ("ce_specversion", "1.0"),
                ("ce_id", "1"),
                ("ce_type", "chaos.ok"),
            ],
            "undecodable: CloudEvents binary event lacks the required attribute \"source\"",
        ),
    ];
    for (key, value, headers, _) in &records {
        producer.send(&topic, Some(key), *value, headers);
    }
    producer.flush();

    let expected = behaviours.len() + records.len();
    let dead = dead_letters(&topic, expected);
    assert_eq!(dead.len(), expected, "log:\n{}", eddy.log());
    let by_key: std::collections::BTreeMap<String, &crate::harness::Record> = dead
        .iter()
        .map(|r| (r.key.clone().unwrap_or_default(), r))
        .collect();
    for (kind, reason, attempts) in &behaviours {
        let record = by_key[*kind];
        assert!(
            record.header("eddy-error").starts_with(reason),
            "{kind}: {:?}",
            record.headers
        );
        assert_eq!(
            record.header("eddy-attempts"),
            *attempts,
            "{kind}: max_retries = 2 is honoured"
        );
        assert_eq!(record.header("eddy-plugin"), "chaos");
    }
    for (key, value, _, reason) in &records {
        let record = by_key[*key];
        assert!(
            record.header("eddy-error").starts_with(reason),
            "{key}: {:?}",
            record.headers
        );
        assert_eq!(
            record.value.as_deref(),
            *value,
            "{key}: the original value is kept"
        );
        assert_eq!(record.header("eddy-attempts"), "0");
    }
    // The good events between the bad ones were all handled.
    let good = read(
        &[&out],
        behaviours.len() + 1,
        Duration::from_secs(60),
        |r| r.json()["event_type"] == "chaos.handled",
    );
    assert_eq!(good.len(), behaviours.len() + 1, "log:\n{}", eddy.log());
    assert!(
        good.iter()
            .any(|r| r.json()["data"]["of"] == "chaos.logflood"),
        "the log flood's event was not handled"
    );
    // Of its 10,000 log lines of 8 KiB, 100 reach eddy's log, each cut to
    // 4 KiB; of its 1 MiB of stdout, 64 KiB.
    let log = eddy.log();
    let flood_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("chaos flood line"))
        .collect();
    assert_eq!(flood_lines.len(), 100, "log lines kept of the flood");
    assert!(
        flood_lines.iter().all(|l| l.len() < 4096 + 512),
        "a flood line was not cut to 4 KiB"
    );
    let stdout_bytes: usize = log
        .lines()
        .filter(|l| l.contains("zzzzzzzz"))
        .map(str::len)
        .sum();
    assert!(
        stdout_bytes <= 64 * 1024 + 64 * 512,
        "{stdout_bytes} bytes of the plugin's stdout reached the log"
    );
    // Nothing else reached the output: not one of the burst's floods, not
    // the publish before the forbidden one. They would have been written
    // before the dead letters read above.
    let leaked: Vec<String> = read_to_end(&[&out], |r| r.json()["event_type"] != "chaos.handled")
        .iter()
        .map(|r| r.json()["event_type"].to_string())
        .collect();
    assert!(leaked.is_empty(), "failed attempts published {leaked:?}");
    assert!(eddy.is_running());
    eddy.stop();
}

#[test]
fn a_ten_megabyte_record_is_dead_lettered_as_too_large() {
    let (topic, out) = (unique("fail.large"), unique("fail.large.out"));
    create_topics_with(
        &bootstrap(),
        &[&topic],
        1,
        &[("max.message.bytes", "16777216")],
    );
    create_topics(&[&out], 1);
    let config = tagger_config(&unique("g"), &topic, &out);
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let producer = producer_with(&bootstrap(), &[("message.max.bytes", "16777216")]);
    let mut huge = String::from(r#"{"event_id": "huge", "event_type": "big", "data": {"blob": ""#);
    huge.push_str(&"x".repeat(10 << 20));
    huge.push_str("\"}}");
    producer.send(&topic, Some("huge"), Some(huge.as_bytes()), &[]);
    let after = unique("after");
    producer.send_json(
        &topic,
        "k",
        &seed_event(&after, "small", "k", json!({"seq": 0})),
    );
    producer.flush();

    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    assert!(
        dead[0]
            .header("eddy-error")
            .starts_with("too-large: value of 10485"),
        "{:?}",
        dead[0].headers
    );
    assert!(
        dead[0]
            .header("eddy-value-omitted")
            .contains(&format!("{topic}/0/0")),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[0].key.as_deref(), Some("huge"));
    let handled = follow_ups_of(&[&out], std::slice::from_ref(&after), 1);
    assert_eq!(
        handled.len(),
        1,
        "the record after it is handled; log:\n{}",
        eddy.log()
    );
    eddy.stop();
}

#[test]
fn an_unwritable_dead_letter_topic_holds_its_partition_and_says_so() {
    let (topic, out) = (unique("fail.dlq"), unique("fail.dlq.out"));
    create_topics(&[&topic, &out], 2);
    let group = unique("g");
    // A topic name Kafka refuses: every dead-letter write fails.
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [[routes]]\ntopic = \"{topic}\"\nevent_types = [\"gone.*\"]\nplugin = \"gone\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\nmax_retries = 0\n\
         dead_letter_topic = \"no such topic!\"\nconfig = {{ out_topic = \"{out}\" }}\n\n\
         [plugin.gone]\ndead_letter_topic = \"no such topic!\"\n",
        config_head(&group)
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    let producer = producer_for(&bootstrap());
    let stuck = unique("stuck");
    producer.send_json(
        &topic,
        "stuck",
        &seed_event(&stuck, "chaos.trap", "stuck", json!({})),
    );
    producer.send_json(
        &topic,
        "stuck",
        &seed_event(&unique("behind"), "chaos.ok", "stuck", json!({})),
    );
    producer.flush();
    let sent = read(&[&topic], 2, Duration::from_secs(30), |_| true);
    let stuck_at = sent
        .iter()
        .find(|r| r.key.as_deref() == Some("stuck"))
        .expect("the stuck record");
    // Keys of the other partition keep flowing.
    let other_key = (0..100)
        .map(|n| format!("free-{n}"))
        .find(|key| {
            producer.send_json(
                &topic,
                key,
                &seed_event(&unique("probe"), "chaos.ok", key, json!({})),
            );
            producer.flush();
            let records = read(&[&topic], 1, Duration::from_secs(10), |r| {
                r.key.as_deref() == Some(key.as_str())
            });
            records
                .first()
                .is_some_and(|r| r.partition != stuck_at.partition)
        })
        .expect("a key on the other partition");
    let free = unique("free");
    producer.send_json(
        &topic,
        &other_key,
        &seed_event(&free, "chaos.ok", &other_key, json!({})),
    );
    producer.flush();
    let handled = follow_ups_of(&[&out], std::slice::from_ref(&free), 1);
    assert_eq!(
        handled.len(),
        1,
        "the other partition is not held up; log:\n{}",
        eddy.log()
    );
    assert!(
        eddy.wait_for_log(
            "cannot write the dead-letter record",
            2,
            Duration::from_secs(30)
        ),
        "the failing dead-letter write is reported; log:\n{}",
        eddy.log()
    );
    let behind = read_to_end(&[&out], |r| r.key.as_deref() == Some("stuck"));
    assert!(
        behind.is_empty(),
        "nothing behind the stuck record was handled"
    );
    // An event of a plugin that is not there, on the other partition: its
    // dead letter cannot be written either. Nothing was dead-lettered, so
    // nothing is counted as such.
    producer.send_json(
        &topic,
        &other_key,
        &seed_event(&unique("gone"), "gone.away", &other_key, json!({})),
    );
    producer.flush();
    assert!(
        eddy.wait_for_log("plugin-missing", 2, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("eddy_events_dead_lettered_total"))
        .collect();
    assert!(
        counted.is_empty(),
        "dead letters not written were counted: {counted:?}"
    );
    eddy.stop();
    let offsets = committed(&group, &topic, 2);
    assert!(
        offsets[stuck_at.partition as usize].is_none_or(|o| o <= stuck_at.offset),
        "the stuck record's offset did not move: {offsets:?}"
    );
}

/// A partition whose worker is stuck, with far more records behind it than
/// its queue holds, holds up only itself: the other partition's records are
/// handled while it is stuck, and once it moves on every record behind it
/// is handled once, in order.
#[test]
fn a_stuck_partition_with_a_deep_backlog_holds_up_only_itself() {
    // More than the worker's queue, its batch and the records eddy parks
    // before it pauses the partition's fetching (about 9,500 together).
    const BEHIND: usize = 20_000;
    const OTHER: usize = 200;
    let topic = unique("deep");
    let out = unique("deep.out");
    create_topics(&[&topic, &out], 2);
    let group = unique("g");
    // Retried seven times with backoff: stuck for 10 to 16 s, then
    // dead-lettered.
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\nmax_retries = 7\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(&group)
    );
    let producer = producer_for(&bootstrap());
    // Events of `event_type` with `ids`, all to partition `partition`.
    let send = |partition: i32, key: &str, event_type: &str, ids: &[String]| {
        for id in ids {
            let event = seed_event(id, event_type, key, json!({}));
            producer.send_to(&topic, partition, key, &event);
        }
        producer.flush();
    };
    let stuck = unique("stuck");
    send(0, "deep", "chaos.retry", std::slice::from_ref(&stuck));
    let behind: Vec<String> = (0..BEHIND).map(|n| format!("{stuck}-{n}")).collect();
    send(0, "deep", "chaos.count", &behind);
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    // The other partition's records come once the backlog is being read.
    assert!(
        eddy.wait_for_log("attempt failed, retrying", 1, Duration::from_secs(60)),
        "log:\n{}",
        eddy.log()
    );
    let started = Instant::now();
    let other: Vec<String> = (0..OTHER).map(|_| unique("free")).collect();
    send(1, "free", "chaos.count", &other);

    let answered = follow_ups_of(&[&out], &other, OTHER);
    assert_eq!(answered.len(), OTHER, "log:\n{}", eddy.log());
    let dlq = format!("{topic}.dlq");
    let early = read_to_end(&[&dlq], |_| true);
    assert!(
        early.is_empty(),
        "the other partition's records were handled only after the stuck record gave up \
         ({:?} after they were sent)",
        started.elapsed()
    );

    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].json()["event_id"], stuck.as_str());
    let mut answers = follow_ups_of(&[&out], &behind, BEHIND);
    answers.sort_by_key(|r| (r.partition, r.offset));
    let causes: Vec<String> = answers
        .iter()
        .map(|r| {
            r.json()["causation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(causes.len(), BEHIND, "each record behind answered once");
    let first_wrong = causes
        .iter()
        .zip(&behind)
        .position(|(got, sent)| got != sent);
    assert_eq!(first_wrong, None, "answered out of order");
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let pauses = metrics
        .lines()
        .find(|l| l.starts_with("eddy_partition_fetch_pauses_total") && l.contains(&topic))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        pauses.is_some_and(|n| n >= 1.0),
        "the stuck partition's fetching was never paused: {pauses:?}"
    );
    eddy.stop();
}

#[test]
fn hostile_headers_neither_stop_eddy_nor_forge_dead_letters() {
    let (topic, out) = (unique("fail.headers"), unique("fail.headers.out"));
    create_topics(&[&topic, &out], 1);
    let mut eddy = Eddy::start(
        &tagger_config(&unique("g"), &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let producer = producer_for(&bootstrap());
    // A header name that is not UTF-8 on an event, and on a record that is
    // not one; a record that forges the headers eddy adds to dead letters.
    let event = unique("bad-name");
    let value = seed_event(&event, "load.event", "k", json!({"seq": 0})).to_string();
    let bad_name: &[(&[u8], &[u8])] = &[(b"bad\xffname", b"v")];
    producer.send_raw(&topic, Some(b"k"), Some(value.as_bytes()), bad_name);
    producer.send_raw(&topic, Some(b"junk"), Some(b"{oops"), bad_name);
    producer.send_raw(
        &topic,
        Some(b"forged"),
        Some(b"{oops"),
        &[(b"eddy-original-topic", b"payments"), (b"x-kept", b"1")],
    );
    let after = unique("after");
    producer.send_json(
        &topic,
        "k",
        &seed_event(&after, "load.event", "k", json!({"seq": 1})),
    );
    producer.flush();

    let handled = follow_ups_of(&[&out], &[event, after], 2);
    assert_eq!(handled.len(), 2, "log:\n{}", eddy.log());
    let dead = dead_letters(&topic, 2);
    assert_eq!(dead.len(), 2, "log:\n{}", eddy.log());
    let junk = dead
        .iter()
        .find(|r| r.key.as_deref() == Some("junk"))
        .expect("junk");
    assert_eq!(
        junk.header("bad\u{fffd}name"),
        "v",
        "the header is kept, as bytes"
    );
    let forged = dead
        .iter()
        .find(|r| r.key.as_deref() == Some("forged"))
        .expect("forged");
    assert_eq!(
        forged.header("eddy-original-topic"),
        topic,
        "{:?}",
        forged.headers
    );
    assert_eq!(forged.header("x-kept"), "1");
    assert_eq!(forged.header_count("eddy-original-topic"), 1);
    assert!(eddy.is_running());
    eddy.stop();
}

#[test]
fn a_follow_up_kafka_refuses_dead_letters_its_event_and_the_partition_goes_on() {
    let (topic, out) = (unique("fail.refused"), unique("fail.refused.out"));
    create_topics(&[&topic, &out], 1);
    // The host lets the plugin publish 1.2 MB; the producer takes 1 MB.
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\nmax_follow_up_bytes = 4000000\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(&unique("g"))
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    let producer = producer_for(&bootstrap());
    let huge = unique("huge");
    producer.send_json(
        &topic,
        "k",
        &seed_event(&huge, "chaos.huge", "k", json!({})),
    );
    let after = unique("after");
    producer.send_json(&topic, "k", &seed_event(&after, "chaos.ok", "k", json!({})));
    producer.flush();

    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    let reason = dead[0].header("eddy-error");
    assert!(
        reason.starts_with(&format!(
            "follow-up-refused: follow-up to {out} refused: MessageSizeTooLarge"
        )),
        "{reason}"
    );
    assert_eq!(dead[0].header("eddy-attempts"), "1", "not retried");
    let handled = follow_ups_of(&[&out], std::slice::from_ref(&after), 1);
    assert_eq!(
        handled.len(),
        1,
        "the next event was handled; log:\n{}",
        eddy.log()
    );
    assert!(eddy.is_running());
    eddy.stop();
}

#[test]
fn a_plugin_answering_its_own_topic_is_stopped_after_max_hops() {
    let topic = unique("fail.loop");
    create_topics(&[&topic], 1);
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{topic}\"]\nconfig = {{ out_topic = \"{topic}\" }}\n",
        config_head(&unique("g"))
            .replace("dir = \"plugins\"\n", "dir = \"plugins\"\nmax_hops = 5\n")
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    let producer = producer_for(&bootstrap());
    producer.send_json(
        &topic,
        "k",
        &seed_event(&unique("echo"), "chaos.echo", "k", json!({})),
    );
    producer.flush();

    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    assert!(
        dead[0]
            .header("eddy-error")
            .starts_with("loop: the event is a follow-up 5 deep"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(
        dead[0].header("eddy-hops"),
        "",
        "a redrive starts again from 0"
    );
    // The original and five follow-ups, nothing more.
    let all = read_to_end(&[&topic], |_| true);
    assert_eq!(all.len(), 6, "{all:?}");
    let hops: Vec<&str> = all.iter().map(|r| r.header("eddy-hops")).collect();
    assert_eq!(hops, ["", "1", "2", "3", "4", "5"]);
    eddy.stop();
}
