//! `eddy replay`: dead letters redriven into a fixed plugin or back onto
//! their topic, a time window re-run through a plugin, an interrupted
//! replay resumed, and the live group's offsets left alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::harness::{
    Eddy, PluginFile, Record, committed, config_head, create_topics, delete_records_before,
    end_offsets, env_path, producer, read, read_to_end, unique,
};

const PARTITIONS: i32 = 3;

fn tagger_config(group: &str, topic: &str, out: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
         [plugin.tagger]\npublish_to = [\"{out}\"]\nmax_retries = 0\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(group)
    )
}

/// Runs `eddy replay --config CONFIG ARGS`, without a terminal.
fn replay(config: &Path, args: &[&str]) -> Output {
    Command::new(env_path("EDDY_BIN"))
        .arg("replay")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run eddy replay")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A config file of its own in a fresh folder, with `plugins` holding the
/// given tagger build as `tagger.wasm`.
fn workspace(config: &str, tagger: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("eddy-replay"));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join(tagger),
        dir.join("plugins/tagger.wasm"),
    )
    .expect("copy tagger");
    std::fs::write(dir.join("eddy.toml"), config).expect("config");
    dir
}

fn seqs(records: &[Record]) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for record in records {
        let seq = record.json()["data"]["seq"].as_u64().expect("seq");
        *seen.entry(seq).or_default() += 1;
    }
    seen
}

/// Produces `total` events; those `bugged` says get `v1_bug`.
fn produce_events(topic: &str, total: u64, bugged: impl Fn(u64) -> bool) {
    let producer = producer();
    for n in 0..total {
        let event = json!({
            "event_id": format!("{topic}-{n}"), "event_type": "load.steady",
            "timestamp": "2026-11-30T09:00:00Z", "service_name": "tests", "version": "1.0",
            "data": {"seq": n, "v1_bug": bugged(n)},
        });
        producer.send_json(topic, &format!("k{}", n % 16), &event);
    }
    producer.flush();
}

#[test]
fn dead_letters_redriven_into_the_fixed_plugin_answer_once_and_only_once() {
    let (topic, out, group) = (unique("replay.dlq"), unique("replay.dlq.out"), unique("g"));
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &out, &dlq], PARTITIONS);
    let config = tagger_config(&group, &topic, &out);
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    // 400 events, every other one hits v1's bug.
    produce_events(&topic, 400, |n| n % 2 == 1);
    let dead = read(&[&dlq], 200, Duration::from_secs(120), |_| true);
    assert_eq!(dead.len(), 200, "{}", eddy.log());
    let answered = read(&[&out], 200, Duration::from_secs(60), |_| true);
    assert_eq!(answered.len(), 200);

    // The fix is dropped in; the live eddy reloads it.
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger-v2.wasm"),
        eddy.plugin_dir().join("tagger.wasm"),
    )
    .expect("drop in v2");
    assert!(
        eddy.wait_for_log("plugin reloaded", 1, Duration::from_secs(30)),
        "{}",
        eddy.log()
    );
    eddy.stop();
    let live_before = committed(&group, &topic, PARTITIONS);
    let config_file = eddy.dir.join("eddy.toml");

    // The plan names what will happen, and writes nothing.
    let plan = replay(&config_file, &["--dead-letters", &dlq, "--into-plugin"]);
    let said = text(&plan);
    assert!(plan.status.success(), "{said}");
    for part in [
        "200 records to read, 200 match",
        "by event type: load.steady 200",
        "by dead-letter reason: reject 200",
        "into: plugin tagger 200",
        "dry run: nothing written",
    ] {
        assert!(said.contains(part), "{part:?} not in:\n{said}");
    }
    assert_eq!(read_to_end(&[&out], |_| true).len(), 200, "a dry run wrote");

    let done = replay(
        &config_file,
        &["--dead-letters", &dlq, "--into-plugin", "--execute"],
    );
    let said = text(&done);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("200 handled (200 follow-ups)"), "{said}");
    let answers = read_to_end(&[&out], |_| true);
    let v2: Vec<Record> = answers
        .iter()
        .filter(|r| r.json()["data"]["tag"] == "v2")
        .cloned()
        .collect();
    let by_seq = seqs(&v2);
    assert_eq!(by_seq.len(), 200, "every dead letter answered");
    assert!(
        by_seq.keys().all(|seq| seq % 2 == 1),
        "only the bugged ones"
    );
    assert!(by_seq.values().all(|n| *n == 1), "none answered twice");

    // Again: nothing is left to replay, nothing is written.
    let again = replay(
        &config_file,
        &["--dead-letters", &dlq, "--into-plugin", "--execute"],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already replayed"),
        "{}",
        text(&again)
    );
    assert_eq!(read_to_end(&[&out], |_| true).len(), answers.len());
    // The live group's offsets did not move.
    assert_eq!(committed(&group, &topic, PARTITIONS), live_before);
}

#[test]
fn a_time_window_replayed_into_a_plugin_answers_exactly_the_events_in_it() {
    let (topic, out) = (unique("replay.window"), unique("replay.window.out"));
    create_topics(&[&topic, &out], PARTITIONS);
    let dir = workspace(&tagger_config(&unique("g"), &topic, &out), "tagger-v2.wasm");
    let config = dir.join("eddy.toml");
    // 60 events a second apart, an hour ago.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let base = (now_ms - 3_600_000) / 1000 * 1000;
    let producer = producer();
    for n in 0..60i64 {
        let event = json!({"event_id": format!("{topic}-{n}"), "event_type": "order.placed",
                           "data": {"seq": n}});
        producer.send_at(&topic, &format!("k{}", n % 7), &event, base + n * 1000);
    }
    producer.flush();
    let at = |n: i64| {
        time::OffsetDateTime::from_unix_timestamp(base / 1000 + n)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let (from, to) = (at(20), at(35));
    let output = replay(
        &config,
        &[
            "--topic",
            &topic,
            "--from",
            &from,
            "--to",
            &to,
            "--into-plugin",
            "tagger",
            "--execute",
        ],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("15 records to read, 15 match"), "{said}");
    let answers = read_to_end(&[&out], |_| true);
    let by_seq = seqs(&answers);
    let expected: Vec<u64> = (20..35).collect();
    let mut got: Vec<u64> = by_seq.keys().copied().collect();
    got.sort_unstable();
    assert_eq!(got, expected, "{said}");
    assert!(by_seq.values().all(|n| *n == 1));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn dead_letters_republished_to_their_topic_are_handled_by_the_live_eddy() {
    let (topic, out, group) = (
        unique("replay.back"),
        unique("replay.back.out"),
        unique("g"),
    );
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &out, &dlq], PARTITIONS);
    let mut eddy = Eddy::start(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let producer = producer();
    for n in 0..40u64 {
        let event = json!({"event_id": format!("{topic}-{n}"), "event_type": "load.steady",
                           "data": {"seq": n, "v1_bug": n % 4 == 0}});
        producer.send(
            &topic,
            Some(&format!("k{n}")),
            Some(event.to_string().as_bytes()),
            &[("origin", "import"), ("secret-token", "s3cr3t")],
        );
    }
    producer.flush();
    assert_eq!(
        read(&[&dlq], 10, Duration::from_secs(60), |_| true).len(),
        10
    );
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger-v2.wasm"),
        eddy.plugin_dir().join("tagger.wasm"),
    )
    .expect("drop in v2");
    assert!(eddy.wait_for_log("plugin reloaded", 1, Duration::from_secs(30)));

    let output = replay(
        &eddy.dir.join("eddy.toml"),
        &[
            "--dead-letters",
            &dlq,
            "--to-topic",
            "--drop-header",
            "secret-token",
            "--execute",
        ],
    );
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains(&format!("into: topic {topic} 10")), "{said}");
    assert!(said.contains("10 republished"), "{said}");

    let v2 = read(&[&out], 10, Duration::from_secs(60), |r| {
        r.json()["data"]["tag"] == "v2"
    });
    let by_seq = seqs(&v2);
    assert_eq!(by_seq.len(), 10, "{}", eddy.log());
    assert!(by_seq.keys().all(|seq| seq % 4 == 0));
    assert!(by_seq.values().all(|n| *n == 1));
    let back = read_to_end(&[&topic], |r| !r.header("eddy-replayed-from").is_empty());
    assert_eq!(back.len(), 10);
    for record in &back {
        assert!(
            record
                .header("eddy-replayed-from")
                .starts_with(&format!("{dlq}/")),
            "{record:?}"
        );
        let eddy_headers: Vec<&String> = record
            .headers
            .iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("eddy-") && *name != "eddy-replayed-from")
            .collect();
        assert!(eddy_headers.is_empty(), "{record:?}");
        assert_eq!(record.header("origin"), "import");
        assert_eq!(record.header_count("secret-token"), 0);
    }
    eddy.stop();
}

#[test]
fn an_interrupted_replay_resumes_and_loses_and_repeats_nothing() {
    let (topic, out) = (unique("replay.stop"), unique("replay.stop.out"));
    create_topics(&[&topic, &out], PARTITIONS);
    const TOTAL: u64 = 3000;
    produce_events(&topic, TOTAL, |_| false);
    let dir = workspace(&tagger_config(&unique("g"), &topic, &out), "tagger-v2.wasm");
    let config = dir.join("eddy.toml");
    let args = [
        "--topic",
        &topic,
        "--into-plugin",
        "tagger",
        "--rate",
        "1000",
        "--execute",
    ];
    let child = Command::new(env_path("EDDY_BIN"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eddy replay");
    // Stop it once it is under way.
    let started = Instant::now();
    while read_to_end(&[&out], |_| true).len() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replay never got going"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    let stopped = child.wait_with_output().expect("wait for eddy replay");
    let said = text(&stopped);
    assert!(!stopped.status.success(), "{said}");
    assert!(
        said.contains("run the same command again to resume"),
        "{said}"
    );
    let halfway = read_to_end(&[&out], |_| true).len() as u64;
    assert!(
        halfway > 0 && halfway < TOTAL,
        "the stop came mid-replay: {halfway} of {TOTAL} were answered by then"
    );

    let resumed = replay(&config, &args);
    let said = text(&resumed);
    assert!(resumed.status.success(), "{said}");
    assert!(said.contains("replayed before; resuming at"), "{said}");
    let by_seq = seqs(&read_to_end(&[&out], |_| true));
    let lost: Vec<u64> = (0..TOTAL).filter(|n| !by_seq.contains_key(n)).collect();
    let twice: Vec<(&u64, &usize)> = by_seq.iter().filter(|(_, n)| **n > 1).collect();
    assert!(lost.is_empty(), "lost {} events: {lost:?}", lost.len());
    assert!(twice.is_empty(), "answered twice: {twice:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_plan_that_cannot_be_carried_out_writes_nothing_and_says_why() {
    let (topic, out) = (unique("replay.bad"), unique("replay.bad.out"));
    let not_dead = unique("replay.bad.notdlq");
    create_topics(&[&topic, &out, &not_dead], 1);
    let dir = workspace(&tagger_config(&unique("g"), &topic, &out), "tagger-v2.wasm");
    let config = dir.join("eddy.toml");
    let producer = producer();
    producer.send_json(
        &not_dead,
        "k",
        &json!({"event_id": "1", "event_type": "x", "data": {}}),
    );
    producer.flush();
    // A topic whose first five records retention deleted.
    let gone = unique("replay.bad.gone");
    create_topics(&[&gone], 1);
    let base = 1_790_000_000_000i64;
    for n in 0..10i64 {
        let event = json!({"event_id": format!("{n}"), "event_type": "x", "data": {}});
        producer.send_at(&gone, "k", &event, base + n * 1000);
    }
    producer.flush();
    delete_records_before(&gone, 0, 5);
    let two_seconds_in = time::OffsetDateTime::from_unix_timestamp(base / 1000 + 2)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let cases: [(Vec<String>, &str); 7] = [
        (
            vec![
                "--topic".into(),
                gone.clone(),
                "--from".into(),
                "2".into(),
                "--into-plugin".into(),
                "tagger".into(),
            ],
            "starts at offset 5 now: the records before it were deleted by retention",
        ),
        (
            vec![
                "--topic".into(),
                gone.clone(),
                "--from".into(),
                two_seconds_in,
                "--into-plugin".into(),
                "tagger".into(),
                "--execute".into(),
            ],
            "deleted by retention",
        ),
        (
            vec![
                "--topic".into(),
                unique("no.such.topic"),
                "--into-plugin".into(),
                "tagger".into(),
            ],
            "there is no topic",
        ),
        (
            vec![
                "--topic".into(),
                topic.clone(),
                "--into-plugin".into(),
                "tagger".into(),
            ],
            "nothing to replay: the range holds no records",
        ),
        (
            vec![
                "--dead-letters".into(),
                not_dead.clone(),
                "--to-topic".into(),
                "--execute".into(),
            ],
            "has no eddy-original-topic, -partition and -offset headers",
        ),
        (
            vec![
                "--topic".into(),
                not_dead.clone(),
                "--into-plugin".into(),
                "nope".into(),
                "--execute".into(),
            ],
            "plugin nope is not loaded: no usable nope.wasm in",
        ),
        (
            vec![
                "--topic".into(),
                not_dead.clone(),
                "--from".into(),
                "yesterday".into(),
                "--into-plugin".into(),
                "tagger".into(),
            ],
            "is not an offset (1200), offsets per partition",
        ),
    ];
    for (args, wanted) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = replay(&config, &args);
        let said = text(&output);
        assert!(!output.status.success(), "{args:?} succeeded: {said}");
        assert!(
            said.contains(wanted),
            "{args:?}: {wanted:?} not in:\n{said}"
        );
    }
    assert_eq!(end_offsets(&out, 1), vec![0], "nothing was written");
    assert_eq!(end_offsets(&topic, 1), vec![0], "nothing was written");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_live_or_joined_consumer_group_is_refused_as_the_progress_group() {
    let (topic, out, group) = (
        unique("replay.group"),
        unique("replay.group.out"),
        unique("g"),
    );
    create_topics(&[&topic, &out], 1);
    let mut eddy = Eddy::start(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    produce_events(&topic, 10, |_| false);
    assert_eq!(
        read(&[&out], 10, Duration::from_secs(60), |_| true).len(),
        10,
        "{}",
        eddy.log()
    );
    let live = eddy.dir.join("eddy.toml");
    // The same plugin and topic under a config whose own group is another.
    let other = eddy.dir.join("other.toml");
    std::fs::write(&other, tagger_config(&unique("g-other"), &topic, &out)).expect("config");
    let args = |group: &str| -> Vec<String> {
        [
            "--topic",
            &topic,
            "--into-plugin",
            "tagger",
            "--group",
            group,
            "--execute",
        ]
        .map(String::from)
        .to_vec()
    };
    let refused = |config: &Path, group: &str, wanted: &str| {
        let args = args(group);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = replay(config, &args);
        let said = text(&output);
        assert!(!output.status.success(), "{args:?} succeeded: {said}");
        assert!(said.contains(wanted), "{wanted:?} not in:\n{said}");
    };
    refused(
        &live,
        &group,
        "is this config's live consumer group (kafka.group_id)",
    );
    refused(&other, &group, "is a consumer group (1 member(s) now");
    eddy.stop();
    let live_offsets = committed(&group, &topic, 1);
    assert_eq!(live_offsets, vec![Some(10)]);
    // Stopped, its members gone: the group's offsets are still its position.
    refused(
        &other,
        &group,
        "is a consumer group (0 member(s) now, protocol type \"consumer\")",
    );
    assert_eq!(
        committed(&group, &topic, 1),
        live_offsets,
        "the live group moved"
    );
    assert_eq!(end_offsets(&out, 1), vec![10], "a refused replay wrote");

    // A group of the replay's own is taken, and taken again to resume.
    let own = unique("replay-own");
    for wanted in ["10 handled", "already replayed"] {
        let args = args(&own);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = replay(&live, &args);
        let said = text(&output);
        assert!(output.status.success(), "{said}");
        assert!(said.contains(wanted), "{wanted:?} not in:\n{said}");
    }
    assert_eq!(end_offsets(&out, 1), vec![20]);
    std::fs::remove_dir_all(&eddy.dir).ok();
}

/// A dead letter is a record: whoever may write the dead-letter topic can
/// forge its `eddy-original-topic` and `eddy-plugin`. Without a name on the
/// command line, `eddy replay` follows them only to the topics the config
/// reads and the plugins it routes to; names from records are printed
/// escaped.
#[test]
fn forged_dead_letters_cannot_steer_a_replay() {
    let (topic, out) = (unique("replay.forged"), unique("replay.forged.out"));
    let (dlq, victim) = (unique("replay.forged.dlq"), unique("replay.forged.victim"));
    create_topics(&[&topic, &out, &dlq, &victim], 1);
    let dir = workspace(&tagger_config(&unique("g"), &topic, &out), "tagger-v2.wasm");
    let config = dir.join("eddy.toml");
    let producer = producer();
    let forged = |original: &str, plugin: &str| {
        let event = json!({"event_id": "1", "event_type": "x\u{1b}[2Jcleared", "data": {}});
        let value = event.to_string();
        producer.send(
            &dlq,
            Some("k"),
            Some(value.as_bytes()),
            &[
                ("eddy-error", "trap: \u{1b}[31mforged"),
                ("eddy-plugin", plugin),
                ("eddy-original-topic", original),
                ("eddy-original-partition", "0"),
                ("eddy-original-offset", "0"),
            ],
        );
    };
    forged(&victim, "tagger");
    forged(&topic, "evil");
    producer.flush();

    let to_topic = replay(
        &config,
        &["--dead-letters", &dlq, "--to-topic", "--execute"],
    );
    let said = text(&to_topic);
    assert!(!to_topic.status.success(), "{said}");
    assert!(
        said.contains(&format!("names original topic {victim:?}, which no route")),
        "{said}"
    );
    assert!(
        !said.contains('\u{1b}'),
        "a raw escape reached the terminal: {said:?}"
    );
    let into_plugin = replay(
        &config,
        &["--dead-letters", &dlq, "--into-plugin", "--execute"],
    );
    let said = text(&into_plugin);
    assert!(!into_plugin.status.success(), "{said}");
    assert!(said.contains("names plugin \"evil\""), "{said}");
    assert_eq!(end_offsets(&victim, 1), vec![0], "nothing was written");
    assert_eq!(end_offsets(&topic, 1), vec![0], "nothing was written");
    assert_eq!(end_offsets(&out, 1), vec![0], "nothing was written");

    // Named on the command line, the operator's choice: the plan lists it.
    let named = replay(&config, &["--dead-letters", &dlq, "--to-topic", &victim]);
    let said = text(&named);
    assert!(named.status.success(), "{said}");
    assert!(said.contains(&format!("into: topic {victim} 2")), "{said}");
    assert!(said.contains("x\\u{1b}[2Jcleared"), "{said}");
    std::fs::remove_dir_all(dir).ok();
}
