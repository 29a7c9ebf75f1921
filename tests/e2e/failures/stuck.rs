//! A partition that cannot move on (its dead letters cannot be written, or
//! its record is retried for seconds) holds up only itself.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{
    Eddy, PluginFile, bootstrap, committed, config_head, create_topics, dead_letters, end_offsets,
    follow_ups_of, http_get, producer_for, read, read_to_end, seed_event, unique,
};

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

/// A partition held up by a slow handler while records with 900 KB headers
/// pile up behind it: what eddy holds of them (parked, queued, running) is
/// bounded in bytes, headers included, so its memory stays bounded too;
/// and once the handler moves on every record is handled.
#[test]
fn records_with_big_headers_behind_a_slow_handler_stay_within_the_memory_budget() {
    const SLOW: usize = 3;
    const BEHIND: usize = 1_500;
    let (topic, out) = (unique("fail.heavy"), unique("fail.heavy.out"));
    create_topics(&[&topic, &out], 1);
    let group = unique("g");
    // Each spinning handler holds the partition for its 4 s deadline, then is
    // dead-lettered.
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\nmax_retries = 0\ntimeout_ms = 4000\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(&group)
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    assert!(
        eddy.wait_for_log("partitions assigned", 1, Duration::from_secs(60)),
        "{}",
        eddy.log()
    );
    let producer = producer_for(&bootstrap());
    for n in 0..SLOW {
        let event = seed_event(&format!("{topic}-slow-{n}"), "chaos.loop", "k", json!({}));
        producer.send_json(&topic, "k", &event);
    }
    producer.flush();
    let heavy = "h".repeat(900 << 10);
    let ids: Vec<String> = (0..BEHIND).map(|n| format!("{topic}-{n}")).collect();
    for id in &ids {
        let event = seed_event(id, "chaos.ok", "k", json!({})).to_string();
        producer.send(
            &topic,
            Some("k"),
            Some(event.as_bytes()),
            &[("x-heavy", &heavy)],
        );
    }
    producer.flush();
    let answered = read(&[&out], BEHIND, Duration::from_secs(240), |_| true);
    let peak_mib = eddy.peak_resident_kib() >> 10;
    println!(
        "{BEHIND} records with 900 KB headers behind {SLOW} slow events: eddy's peak memory \
         {peak_mib} MiB"
    );
    assert_eq!(answered.len(), BEHIND, "log:\n{}", eddy.log());
    assert!(
        peak_mib < 512,
        "eddy's memory peaked at {peak_mib} MiB holding records behind a slow handler"
    );
    let ends = end_offsets(&topic, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&group, &topic, 1) != [Some(ends[0])] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        committed(&group, &topic, 1),
        [Some(ends[0])],
        "every record committed"
    );
    eddy.stop();
}
