//! Running eddy as a service: metrics, readiness, JSON logs, scaffolding,
//! and the container files.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    Eddy, PluginFile, config_head, create_topics, dead_letters, env_path, follow_ups_of, http_get,
    producer, seed_event, unique,
};

/// `/metrics` as a map from `name{label="value",…}` (labels sorted) to value.
fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_string(),
            };
            Some((key, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_count_exactly_what_happened() {
    let (topic, out) = (unique("ops.in"), unique("ops.out"));
    create_topics(&[&topic, &out], 1);
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\ntimeout_ms = 300\nmax_retries = 1\n\
         config = {{ out_topic = \"{out}\" }}\n",
        config_head(&unique("g"))
    );
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);
    let producer = producer();
    let mut ok_ids = Vec::new();
    for n in 0..3 {
        let id = unique(&format!("ok-{n}"));
        producer.send_json(&topic, "k", &seed_event(&id, "chaos.ok", "k", json!({})));
        ok_ids.push(id);
    }
    producer.send_json(
        &topic,
        "k",
        &seed_event(&unique("trap"), "chaos.trap", "k", json!({})),
    );
    producer.send_json(
        &topic,
        "k",
        &seed_event(&unique("forbidden"), "chaos.forbidden", "k", json!({})),
    );
    producer.send_json(
        &topic,
        "k",
        &seed_event(&unique("other"), "other.thing", "k", json!({})),
    );
    producer.send(&topic, Some("k"), Some(b"not an event"), &[]);
    producer.flush();

    assert_eq!(
        follow_ups_of(&[&out], &ok_ids, 3).len(),
        3,
        "log:\n{}",
        eddy.log()
    );
    assert_eq!(dead_letters(&topic, 3).len(), 3);

    let addr = eddy.http_addr();
    let version = eddy
        .log()
        .split("chaos@")
        .nth(1)
        .map(|rest| rest.chars().take(12).collect::<String>())
        .expect("the start-up summary names the chaos version");
    let t = format!("topic=\"{topic}\"");
    let expected: Vec<(String, f64)> = vec![
        (format!("eddy_events_consumed_total{{{t}}}"), 7.0),
        (format!("eddy_events_skipped_total{{{t}}}"), 1.0),
        (
            format!("eddy_events_handled_total{{plugin=\"chaos\",{t},version=\"{version}\"}}"),
            3.0,
        ),
        (
            format!("eddy_follow_ups_published_total{{plugin=\"chaos\",topic=\"{out}\"}}"),
            3.0,
        ),
        (
            format!("eddy_events_retried_total{{plugin=\"chaos\",reason=\"trap\",{t}}}"),
            1.0,
        ),
        (
            format!("eddy_events_dead_lettered_total{{plugin=\"chaos\",reason=\"trap\",{t}}}"),
            1.0,
        ),
        (
            format!("eddy_events_dead_lettered_total{{plugin=\"chaos\",reason=\"reject\",{t}}}"),
            1.0,
        ),
        (
            format!("eddy_events_dead_lettered_total{{plugin=\"\",reason=\"undecodable\",{t}}}"),
            1.0,
        ),
        (
            format!(
                "eddy_handler_failures_total{{kind=\"trap\",plugin=\"chaos\",version=\"{version}\"}}"
            ),
            2.0,
        ),
        (
            format!(
                "eddy_handler_failures_total{{kind=\"reject\",plugin=\"chaos\",version=\"{version}\"}}"
            ),
            1.0,
        ),
        (
            format!(
                "eddy_handler_duration_seconds_count{{plugin=\"chaos\",version=\"{version}\"}}"
            ),
            6.0,
        ),
        (
            format!(
                "eddy_instantiation_duration_seconds_count{{plugin=\"chaos\",version=\"{version}\"}}"
            ),
            6.0,
        ),
        (
            "eddy_plugin_reloads_total{outcome=\"ok\",plugin=\"chaos\"}".to_string(),
            1.0,
        ),
        ("eddy_plugins_loaded".to_string(), 1.0),
    ];
    // Counters move just after the Kafka writes the test waited for.
    let started = Instant::now();
    let mut metrics = scrape(&addr);
    while started.elapsed() < Duration::from_secs(10)
        && expected.iter().any(|(k, v)| metrics.get(k) != Some(v))
    {
        std::thread::sleep(Duration::from_millis(200));
        metrics = scrape(&addr);
    }
    for (key, value) in &expected {
        assert_eq!(
            metrics.get(key),
            Some(value),
            "{key}; all metrics: {metrics:#?}"
        );
    }
    let buckets = metrics
        .keys()
        .filter(|k| k.starts_with("eddy_handler_duration_seconds_bucket{"))
        .count();
    assert!(
        buckets > 10,
        "the handler duration is a histogram with buckets"
    );
    eddy.stop();
}

#[test]
fn readyz_turns_ready_once_partitions_are_assigned_and_plugins_loaded() {
    let topic = unique("ops.ready");
    create_topics(&[&topic], 1);
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
         [plugin.tagger]\npublish_to = []\n",
        config_head(&unique("g"))
    );
    let mut eddy = Eddy::start(&config, &[]);
    let addr = eddy.http_addr();
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("routed plugin tagger is not loaded"),
        "{body}"
    );

    let health = Command::new(env_path("EDDY_BIN"))
        .args(["health", "--ready", "--addr", &addr])
        .output()
        .expect("eddy health");
    assert!(
        !health.status.success(),
        "eddy health --ready fails while not ready"
    );

    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger.wasm"),
        eddy.plugin_dir().join("tagger.wasm"),
    )
    .expect("copy plugin");
    let started = Instant::now();
    let mut last = http_get(&addr, "/readyz");
    while last.0 != 200 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
        last = http_get(&addr, "/readyz");
    }
    assert_eq!(last.0, 200, "never ready: {}; log:\n{}", last.1, eddy.log());
    let health = Command::new(env_path("EDDY_BIN"))
        .args(["health", "--ready", "--addr", &addr])
        .output()
        .expect("eddy health");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    eddy.stop();
}

#[test]
fn json_logs_parse_line_by_line_and_name_the_event() {
    let topic = unique("ops.json");
    create_topics(&[&topic], 1);
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.deleted\"]\nplugin = \"user-cleanup\"\n\n\
         [plugin.user-cleanup]\npublish_to = [\"user.events\"]\n",
        config_head(&unique("g"))
    );
    let mut eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Example("user-cleanup")],
        &[("LOG_FORMAT", "json")],
    );
    let id = unique("deleted");
    let producer = producer();
    producer.send_json(
        &topic,
        "u-9",
        &seed_event(&id, "user.deleted", "u-9", json!({"user_id": "u-9"})),
    );
    producer.flush();
    assert!(
        eddy.wait_for_log("purged data of user u-9", 1, Duration::from_secs(60)),
        "log:\n{}",
        eddy.log()
    );
    eddy.stop();

    let log = eddy.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() > 5);
    let guest = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("purged data of user u-9"))
        })
        .expect("the guest's log line");
    assert_eq!(guest["fields"]["plugin"], "user-cleanup", "{guest}");
    let spans: Vec<&Value> = guest["spans"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let field = |name: &str| {
        spans
            .iter()
            .find_map(|s| s.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(field("topic"), json!(topic), "{guest}");
    assert_eq!(field("partition"), json!(0), "{guest}");
    assert_eq!(field("offset"), json!(0), "{guest}");
    assert_eq!(field("event_id"), json!(id), "{guest}");
}

#[test]
fn eddy_new_scaffolds_a_plugin_that_builds_and_passes_its_test() {
    let dir = std::env::temp_dir().join(unique("eddy-new"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let output = Command::new(env_path("EDDY_BIN"))
        .args(["new", "demo-plugin", "--dir"])
        .arg(&dir)
        .output()
        .expect("eddy new");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crate_dir = dir.join("demo-plugin");
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "README.md",
        "tests/events.jsonl",
        "tests/expected.jsonl",
    ] {
        assert!(crate_dir.join(file).is_file(), "{file} was not created");
    }
    let cargo = || {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", env_path("EDDY_SCAFFOLD_TARGET_DIR"));
        cargo
    };
    let test = cargo().arg("test").output().expect("cargo test");
    assert!(
        test.status.success(),
        "{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(String::from_utf8_lossy(&test.stdout).contains("2 passed"));
    let build = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .output()
        .expect("cargo build");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let wasm = env_path("EDDY_SCAFFOLD_TARGET_DIR").join("wasm32-wasip2/release/demo_plugin.wasm");

    // The README's `eddy test` line passes as generated.
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("README");
    assert!(
        readme
            .contains("eddy test target/wasm32-wasip2/release/demo_plugin.wasm --name demo-plugin"),
        "{readme}"
    );
    let tested = Command::new(env_path("EDDY_BIN"))
        .current_dir(&crate_dir)
        .arg("test")
        .arg(&wasm)
        .args(["--name", "demo-plugin", "--events", "tests/events.jsonl"])
        .args(["--expect", "tests/expected.jsonl"])
        .output()
        .expect("eddy test");
    assert!(
        tested.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(
        String::from_utf8_lossy(&tested.stdout).contains("all 2 effects match"),
        "{}",
        String::from_utf8_lossy(&tested.stdout)
    );

    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::copy(&wasm, plugins.join("demo-plugin.wasm")).expect("copy the built plugin");
    std::fs::write(
        dir.join("eddy.toml"),
        format!(
            "{}[[routes]]\ntopic = \"things\"\nevent_types = [\"*\"]\nplugin = \"demo-plugin\"\n\n\
             [plugin.demo-plugin]\npublish_to = [\"demo-plugin.out\"]\n",
            config_head("g")
        ),
    )
    .expect("config");
    let check = Command::new(env_path("EDDY_BIN"))
        .args(["check", "--config"])
        .arg(dir.join("eddy.toml"))
        .output()
        .expect("eddy check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
