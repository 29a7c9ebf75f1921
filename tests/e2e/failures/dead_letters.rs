//! Every bad plugin behaviour and bad record ends in the dead-letter topic
//! with its reason, and the partition goes on past it.

use std::time::Duration;

use serde_json::json;

use super::tagger_config;
use crate::exactly_once::exactly_once_config;
use crate::harness::{
    Eddy, PluginFile, alter_topic, bootstrap, config_head, create_topics, create_topics_with,
    dead_letters, follow_ups_of, producer_for, producer_with, read, read_to_end, seed_event,
    unique,
};

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
    let records: [BadRecord; 7] = [
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
        // eddy's own mark of a value it left unread, forged: not believed.
        (
            "forged-unread",
            None,
            &[("eddy-value-not-read", "999999999")],
            "undecodable: record has no value",
        ),
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

/// A gzip batch of a few hundred KB can unpack to a value of hundreds of
/// MB; librdkafka unpacks it (it caps only zstd). eddy leaves a value over
/// `max_event_bytes` in the client unread and dead-letters the record
/// without it: its memory grows by the value once (librdkafka's copy),
/// not twice.
#[test]
fn a_200_mb_value_in_a_gzip_batch_is_dead_lettered_unread() {
    const VALUE: usize = 200 << 20;
    let (topic, out) = (unique("fail.gzip"), unique("fail.gzip.out"));
    create_topics(&[&topic, &out], 1);
    let config = tagger_config(&unique("g"), &topic, &out);
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(
        eddy.wait_for_log("partitions assigned", 1, Duration::from_secs(60)),
        "{}",
        eddy.log()
    );
    let before = eddy.peak_resident_kib();
    let producer = producer_with(
        &bootstrap(),
        &[
            ("compression.type", "gzip"),
            ("message.max.bytes", "1000000000"),
        ],
    );
    producer.send(&topic, Some("huge"), Some(&vec![b'x'; VALUE]), &[]);
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
            .starts_with(&format!("too-large: value of {VALUE} bytes")),
        "{:?}",
        dead[0].headers
    );
    assert!(
        dead[0].header("eddy-value-omitted").contains("not read"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[0].value, None);
    assert_eq!(dead[0].key.as_deref(), Some("huge"));
    let handled = follow_ups_of(&[&out], std::slice::from_ref(&after), 1);
    assert_eq!(handled.len(), 1, "log:\n{}", eddy.log());
    let grown = eddy.peak_resident_kib().saturating_sub(before);
    println!(
        "a {} MiB value unpacked from gzip: eddy's peak memory grew by {} MiB",
        VALUE >> 20,
        grown >> 10
    );
    assert!(
        grown < (VALUE as u64 >> 10) * 3 / 2,
        "eddy's peak memory grew by {grown} KiB for a value of {VALUE} bytes: copied twice?"
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
    // Its name is escaped (a client that decodes header names as text
    // would fail on the batch), and the dead letter says so.
    assert_eq!(
        junk.header("bad\\xffname"),
        "v",
        "the header is kept, its name escaped: {:?}",
        junk.headers
    );
    assert!(
        junk.header("eddy-header-names-escaped")
            .starts_with("1 header names")
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
    // The dead letter keeps the count: a redrive does not start it again.
    assert_eq!(dead[0].header("eddy-hops"), "5", "{:?}", dead[0].headers);
    // The original and five follow-ups, nothing more.
    let all = read_to_end(&[&topic], |_| true);
    assert_eq!(all.len(), 6, "{all:?}");
    let hops: Vec<&str> = all.iter().map(|r| r.header("eddy-hops")).collect();
    assert_eq!(hops, ["", "1", "2", "3", "4", "5"]);

    // Redriven to its topic, it is the same loop: dead-lettered again at
    // once, with no follow-up.
    let dlq = format!("{topic}.dlq");
    let redrive = std::process::Command::new(crate::harness::env_path("EDDY_BIN"))
        .args(["replay", "--config"])
        .arg(eddy.dir.join("eddy.toml"))
        .args(["--dead-letters", &dlq, "--to-topic", "--execute"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("eddy replay");
    assert!(
        redrive.status.success(),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    let dead = dead_letters(&topic, 2);
    assert_eq!(dead.len(), 2, "log:\n{}", eddy.log());
    assert!(
        dead[1]
            .header("eddy-error")
            .starts_with("loop: the event is a follow-up 5 deep"),
        "{:?}",
        dead[1].headers
    );
    let all = read_to_end(&[&topic], |_| true);
    let hops: Vec<&str> = all.iter().map(|r| r.header("eddy-hops")).collect();
    assert_eq!(
        hops,
        ["", "1", "2", "3", "4", "5", "5"],
        "the redriven record is last"
    );
    eddy.stop();
}

#[test]
fn an_exactly_once_dead_letter_refused_for_another_reason_than_size_is_later_written_whole() {
    let (topic, out, group) = (
        unique("eos.dlq.policy"),
        unique("eos.dlq.policy.out"),
        unique("g"),
    );
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &out], 1);
    // A compacted topic refuses a record without a key (INVALID_RECORD): the
    // dead letter of a keyless record is refused, and not for its size.
    create_topics_with(&bootstrap(), &[&dlq], 1, &[("cleanup.policy", "compact")]);
    let config = exactly_once_config(&group, &topic, &out)
        .replace("[plugin.tagger]\n", "[plugin.tagger]\nmax_retries = 0\n");
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let event = seed_event(
        "refused-whole",
        "load.event",
        "k",
        json!({"seq": 0, "fail_attempts": 99}),
    )
    .to_string();
    let producer = producer_for(&bootstrap());
    producer.send_raw(&topic, None, Some(event.as_bytes()), &[(b"x-kept", b"1")]);
    producer.flush();
    assert!(
        eddy.wait_for_log("was not written last time", 1, Duration::from_secs(60)),
        "log:\n{}",
        eddy.log()
    );
    // The operator fixes the topic; the next pass writes the dead letter,
    // with all of the record.
    alter_topic(&dlq, &[("cleanup.policy", "delete")]);
    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    let letter = &dead[0];
    assert_eq!(letter.json()["event_id"], "refused-whole", "{letter:?}");
    assert_eq!(letter.header("x-kept"), "1", "{:?}", letter.headers);
    assert_eq!(letter.header_count("eddy-value-omitted"), 0);
    assert_eq!(letter.header_count("eddy-headers-omitted"), 0);
    assert!(
        letter.header("eddy-error").starts_with("retry"),
        "{:?}",
        letter.headers
    );
    assert!(eddy.is_running());
    eddy.stop();
}
