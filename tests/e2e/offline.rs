//! `eddy test`: a plugin run on a file of events without Kafka. All but the
//! last test need no broker; the last shows that `eddy run` on a real one
//! sends what `eddy test` says it would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Eddy, PluginFile, Record, bootstrap, config_head, create_topics, env_path, read, unique,
};

/// A fresh folder for one test's files.
fn folder() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("eddy-offline"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `lines` as a JSON-lines file.
fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).expect("write events");
}

/// Runs `eddy test ARGS`; returns the exit code, stdout and stderr.
fn eddy_test(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let output = Command::new(env_path("EDDY_BIN"))
        .arg("test")
        .args(args)
        .output()
        .expect("run eddy test");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn example(name: &str) -> PathBuf {
    env_path("EDDY_PLUGIN_DIR").join(format!("{name}.wasm"))
}

fn chaos() -> PathBuf {
    env_path("EDDY_TEST_PLUGIN_DIR").join("chaos.wasm")
}

/// The example plugin's own events and expected files, and the demo config.
fn welcome_email_files() -> (PathBuf, PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tests = root.join("plugins/welcome-email/tests");
    (
        tests.join("events.jsonl"),
        tests.join("expected.jsonl"),
        root.join("eddy.toml"),
    )
}

fn effects_of(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

#[test]
fn a_wrong_expected_file_fails_with_a_diff_naming_the_line_and_the_field() {
    let (events, expected, config) = welcome_email_files();
    let (code, stdout, stderr) = eddy_test(&[
        example("welcome-email").as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--expect".as_ref(),
        expected.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(
        code, 0,
        "the plugin's own expected file passes:\n{stdout}\n{stderr}"
    );

    let dir = folder();
    let wrong = dir.join("expected.jsonl");
    let text = std::fs::read_to_string(&expected).expect("expected file");
    assert!(text.contains("ada@example.com"), "{text}");
    std::fs::write(&wrong, text.replace("ada@example.com", "ada@example.org")).unwrap();
    let run = |update: bool| {
        let mut args = vec![
            example("welcome-email").into_os_string(),
            "--events".into(),
            events.clone().into_os_string(),
            "--expect".into(),
            wrong.clone().into_os_string(),
            "--config".into(),
            config.clone().into_os_string(),
        ];
        if update {
            args.push("--update".into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        eddy_test(&args)
    };
    let (code, stdout, stderr) = run(false);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "{} line 1 (event on line 1, follow-up to notification.commands): \
             value.data.email: expected \"ada@example.org\", got \"ada@example.com\"",
            wrong.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("1 differences"), "{stdout}");

    // --update accepts what the plugin does now.
    let (code, stdout, stderr) = run(true);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let (code, stdout, stderr) = run(false);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("all 6 effects match"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn what_a_failing_handler_published_is_never_sent_and_retries_do_not_sleep() {
    let dir = folder();
    let events = dir.join("events.jsonl");
    write_lines(
        &events,
        &[
            json!({"event_id": "e-1", "event_type": "chaos.regret", "data": {}}),
            json!({"event_id": "e-2", "event_type": "chaos.forbidden", "data": {}}),
            json!({"event_id": "e-3", "event_type": "chaos.ok", "data": {}}),
        ],
    );
    let config = dir.join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "{}[[routes]]\ntopic = \"chaos.in\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
             [plugin.chaos]\npublish_to = [\"chaos.out\"]\nmax_retries = 6\n",
            config_head("offline")
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = eddy_test(&[
        chaos().as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let effects = effects_of(&stdout);
    let kinds: Vec<(&str, u64)> = effects
        .iter()
        .map(|e| (e["effect"].as_str().unwrap(), e["line"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("dead-letter", 1), ("dead-letter", 2), ("follow-up", 3)],
        "{stdout}"
    );
    let regret = &effects[0]["headers"];
    assert_eq!(regret["eddy-attempts"], "7", "{stdout}");
    assert!(
        regret["eddy-error"]
            .as_str()
            .unwrap()
            .starts_with("retry: chaos: regrets"),
        "{stdout}"
    );
    assert!(
        effects[1]["headers"]["eddy-error"]
            .as_str()
            .unwrap()
            .contains("\"not.allowed\" is not in publish_to"),
        "{stdout}"
    );
    assert_eq!(effects[2]["value"]["event_type"], "chaos.handled");
    // Six retries back off at least 0.75 × (0.1 + 0.2 + … + 3.2 s) = 4.7 s
    // on eddy run's clock; eddy test's is virtual.
    assert!(stderr.contains("6 retries"), "{stderr}");
    assert!(took < Duration::from_secs(4), "took {took:?}: {stderr}");

    // Without a config every topic is allowed, so both publishes of
    // chaos.forbidden go out.
    let (code, stdout, stderr) =
        eddy_test(&[chaos().as_os_str(), "--events".as_ref(), events.as_os_str()]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let topics: Vec<String> = effects_of(&stdout)
        .iter()
        .filter(|e| e["line"] == 2)
        .map(|e| format!("{} {}", e["effect"], e["topic"]))
        .collect();
    assert_eq!(
        topics,
        [
            "\"follow-up\" \"chaos.out\"",
            "\"follow-up\" \"not.allowed\""
        ],
        "{stdout}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_is_named() {
    let dir = folder();
    let events = dir.join("events.jsonl");
    std::fs::write(
        &events,
        "{\"event_id\": \"1\", \"event_type\": \"user.created\", \"data\": {}}\n\n{not json\n",
    )
    .unwrap();
    let (code, _, stderr) = eddy_test(&[
        example("welcome-email").as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{} line 3 is not JSON", events.display())),
        "{stderr}"
    );

    // A file that is not a plugin: the reason reload gives.
    let not_a_plugin = dir.join("welcome-email.wasm");
    std::fs::write(&not_a_plugin, b"\0asm\x01\0\0\0").unwrap();
    let good_events = dir.join("good.jsonl");
    write_lines(
        &good_events,
        &[json!({"event_id": "1", "event_type": "x", "data": {}})],
    );
    let (code, _, stderr) = eddy_test(&[
        not_a_plugin.as_os_str(),
        "--events".as_ref(),
        good_events.as_os_str(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "plugin welcome-email ({}) refused: not a WebAssembly component",
            not_a_plugin.display()
        )),
        "{stderr}"
    );

    // An unknown config key: the error eddy check gives.
    let config = dir.join("eddy.toml");
    std::fs::write(
        &config,
        format!(
            "{}[[routes]]\ntopic = \"t\"\nevent_types = [\"*\"]\nplugin = \"welcome-email\"\n\n\
             [plugin.welcome-email]\npublish_to = [\"x\"]\ntimeout_msec = 5\n",
            config_head("offline")
        ),
    )
    .unwrap();
    let (code, _, stderr) = eddy_test(&[
        example("welcome-email").as_os_str(),
        "--events".as_ref(),
        good_events.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    let checked = Command::new(env_path("EDDY_BIN"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("eddy check");
    let check_error = String::from_utf8_lossy(&checked.stderr);
    assert!(check_error.contains("timeout_msec"), "{check_error}");
    assert_eq!(stderr.trim(), check_error.trim());
    std::fs::remove_dir_all(dir).ok();
}

/// The effect line `eddy test` would print for a record `eddy run` sent,
/// given the events-file line of the record that caused it.
fn as_effect(kind: &str, line: usize, record: &Record) -> Value {
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let value = match &record.value {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    };
    json!({
        "effect": kind, "line": line, "topic": record.topic, "key": record.key,
        "headers": headers, "value": value,
    })
}

#[test]
fn eddy_test_says_what_eddy_run_sends() {
    let topic = unique("offline-in");
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &dlq], 1);
    let id = |n: u32| format!("{topic}-{n}");
    let user = |n: u32, data: Value| {
        json!({"event_id": id(n), "event_type": "user.created", "timestamp": "2026-11-30T09:00:00Z",
               "service_name": "user-service", "version": "1.0", "data": data})
    };
    // One line per record, all in the record form so both runs see the same
    // records at the same offsets.
    let lines = [
        json!({"topic": topic, "key": "u-1", "value": user(1, json!({"user_id": "u-1", "email": "a@x", "name": "A"}))}),
        json!({"topic": topic, "key": "u-2", "headers": {
            "ce_specversion": "1.0", "ce_id": id(2), "ce_type": "user.created",
            "ce_source": "/users", "content-type": "application/json", "trace": "t-2"},
            "value": {"user_id": "u-2", "email": "b@x", "name": "B"}}),
        json!({"topic": topic, "key": "u-3", "headers": {"origin": "import"},
               "value": user(3, json!({"user_id": "u-3"}))}),
        json!({"topic": topic, "value": {"event_id": id(4), "event_type": "user.updated", "data": {}}}),
        json!({"topic": topic, "key": "u-5", "value": "{\"event_id\": broken"}),
        json!({"topic": topic, "key": "u-6", "value": user(6, json!({"user_id": "u-6", "email": "f@x", "name": "F"}))}),
    ];
    let dir = folder();
    let events = dir.join("events.jsonl");
    write_lines(&events, &lines);

    let producer = crate::harness::producer();
    for line in &lines {
        let headers: Vec<(&str, &str)> = line["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let value = match &line["value"] {
            Value::String(raw) => raw.clone(),
            json => json.to_string(),
        };
        producer.send(
            &topic,
            line["key"].as_str(),
            Some(value.as_bytes()),
            &headers,
        );
    }
    producer.flush();

    let group = unique("offline");
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.created\"]\nplugin = \"welcome-email\"\n\n\
         [plugin.welcome-email]\npublish_to = [\"notification.commands\"]\n",
        config_head(&group)
    );
    // The dispatcher's debug lines say which records no route took.
    let mut eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Example("welcome-email")],
        &[("RUST_LOG", "info,eddy=debug,eddy_pipeline::dispatch=debug")],
    );
    let ids: Vec<String> = (1..=6).map(id).collect();
    let follow_ups = read(
        &["notification.commands"],
        3,
        Duration::from_secs(60),
        |r| {
            r.json()["causation_id"]
                .as_str()
                .is_some_and(|c| ids.iter().any(|id| id == c))
        },
    );
    let dead_letters = read(&[&dlq], 2, Duration::from_secs(60), |_| true);
    eddy.stop();
    assert_eq!(follow_ups.len(), 3, "{follow_ups:?}\n{}", eddy.log());
    assert_eq!(dead_letters.len(), 2, "{dead_letters:?}\n{}", eddy.log());

    // What Kafka holds, as eddy test's effects, in the order of the events.
    let mut sent: Vec<(usize, Value)> = Vec::new();
    for record in &follow_ups {
        let cause = record.json()["causation_id"].as_str().unwrap().to_string();
        let line = ids.iter().position(|id| *id == cause).unwrap() + 1;
        sent.push((line, as_effect("follow-up", line, record)));
    }
    for record in &dead_letters {
        let offset: usize = record.header("eddy-original-offset").parse().unwrap();
        sent.push((offset + 1, as_effect("dead-letter", offset + 1, record)));
    }
    // A skipped event leaves nothing in Kafka (the reads above went to the
    // high-water marks): which one eddy run skipped is in its log. The
    // reason is eddy test's wording.
    let log = eddy.log();
    let skipped: Vec<(usize, String)> = log
        .lines()
        .filter(|line| line.contains("no route; skipped") && line.contains(&topic))
        .map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|word| word.strip_prefix(&format!("{name}=")))
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                    .to_string()
            };
            let offset: usize = field("offset").parse().expect("an offset");
            (offset + 1, field("event_type"))
        })
        .collect();
    assert_eq!(skipped.len(), 1, "records eddy run skipped:\n{log}");
    for (line, event_type) in skipped {
        sent.push((
            line,
            json!({"effect": "skipped", "line": line, "topic": topic, "event_type": event_type,
                   "reason": "no route sends this event type on this topic to the plugin"}),
        ));
    }
    sent.sort_by_key(|(line, _)| *line);
    let from_kafka = dir.join("from-kafka.jsonl");
    write_lines(
        &from_kafka,
        &sent
            .into_iter()
            .map(|(_, effect)| effect)
            .collect::<Vec<_>>(),
    );

    let config_file = eddy.dir.join("eddy.toml");
    let plugin = eddy.plugin_dir().join("welcome-email.wasm");
    let (code, stdout, stderr) = eddy_test(&[
        plugin.as_os_str(),
        "--events".as_ref(),
        events.as_os_str(),
        "--config".as_ref(),
        config_file.as_os_str(),
        "--expect".as_ref(),
        from_kafka.as_os_str(),
    ]);
    assert_eq!(
        code,
        0,
        "eddy test differs from what eddy run sent to {} at {}:\n{stdout}\n{stderr}",
        topic,
        bootstrap()
    );
    assert!(stdout.contains("all 6 effects match"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}
