//! Running eddy as a service: metrics, readiness, JSON logs, scaffolding,
//! and the container files.

use std::collections::BTreeMap;
use std::path::Path;
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
        .args(["new", "demo", "--dir"])
        .arg(&dir)
        .output()
        .expect("eddy new");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crate_dir = dir.join("demo");
    for file in ["Cargo.toml", "src/lib.rs", "README.md"] {
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

    let wasm = env_path("EDDY_SCAFFOLD_TARGET_DIR").join("wasm32-wasip2/release/demo.wasm");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::copy(&wasm, plugins.join("demo.wasm")).expect("copy the built plugin");
    std::fs::write(
        dir.join("eddy.toml"),
        format!(
            "{}[[routes]]\ntopic = \"things\"\nevent_types = [\"*\"]\nplugin = \"demo\"\n\n\
             [plugin.demo]\npublish_to = [\"demo.out\"]\n",
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

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_compose_file_has_kafka_kraft_kafka_ui_and_eddy() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("docker-compose.kafka.yml")).expect("valid YAML");
    let services = &compose["services"];
    let kafka = &services["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("apache/kafka:"))
    );
    let service_map = services.as_mapping().expect("services");
    for (name, service) in service_map {
        let text = format!("{name:?} {:?}", service["image"]).to_lowercase();
        assert!(
            !text.contains("zookeeper"),
            "KRaft needs no ZooKeeper: {text}"
        );
    }
    assert!(kafka["environment"]["KAFKA_ZOOKEEPER_CONNECT"].is_null());
    let env = &kafka["environment"];
    assert_eq!(
        env["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    let listeners = env["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .expect("advertised listeners");
    assert!(
        listeners.contains("localhost:9092") && listeners.contains("kafka:29092"),
        "{listeners}"
    );
    assert!(ports(kafka).contains(&"9092:9092".to_string()));

    let ui = &services["kafka-ui"];
    assert!(
        ui["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("kafbat/kafka-ui"))
    );
    assert!(ports(ui).contains(&"8080:8080".to_string()));
    assert_eq!(
        ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"].as_str(),
        Some("kafka:29092")
    );

    let eddy = &services["eddy"];
    assert!(eddy["build"].as_str().is_some());
    assert!(ports(eddy).contains(&"9464:9464".to_string()));
    let volumes: Vec<&str> = eddy["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.iter().any(|v| v.contains(":/plugins")),
        "{volumes:?}"
    );
    let config_mount = volumes
        .iter()
        .find(|v| v.contains(":/config/eddy.toml"))
        .expect("config mount");
    let config_path = config_mount
        .split(':')
        .next()
        .unwrap_or_default()
        .trim_start_matches("./");
    let config =
        eddy_host::Config::parse(&repo_file(config_path)).expect("the mounted config parses");
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    assert_eq!(eddy["env_file"].as_str(), Some(".env"));

    let dotenv = repo_file(".env");
    for var in [
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CONSUMER_GROUP",
        "KAFKA_AUTO_OFFSET_RESET",
    ] {
        assert!(
            dotenv.lines().any(|l| l.starts_with(&format!("{var}="))),
            ".env sets {var}"
        );
        assert_eq!(
            eddy["environment"][var].as_str(),
            Some(format!("${{{var}}}").as_str())
        );
    }
    // The topics the examples use are created.
    let init = serde_yaml::to_string(&services["kafka-init"]).expect("kafka-init");
    for topic in [
        "user.events",
        "order.events",
        "notification.commands",
        "order.alerts",
    ] {
        assert!(init.contains(topic), "kafka-init creates {topic}");
    }
}

fn ports(service: &serde_yaml::Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .map(|p| {
            p.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_checks_health_without_curl() {
    const KNOWN: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let text = repo_file("Dockerfile");
    // Join continuation lines, drop comments: one instruction per entry.
    let mut instructions: Vec<(String, String)> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        pending.push_str(trimmed.trim_end_matches('\\'));
        pending.push(' ');
        if !trimmed.ends_with('\\') {
            let (keyword, rest) = pending
                .trim()
                .split_once(' ')
                .expect("instruction with arguments");
            instructions.push((keyword.to_string(), rest.to_string()));
            pending.clear();
        }
    }
    assert!(pending.is_empty(), "a continuation line ends the file");
    for (keyword, _) in &instructions {
        assert!(
            KNOWN.contains(&keyword.as_str()),
            "unknown instruction {keyword}"
        );
        assert_eq!(keyword, &keyword.to_uppercase());
    }
    assert_eq!(instructions[0].0, "FROM");
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let last_stage = &instructions[*stages.last().expect("a stage")..];
    let find = |k: &str| {
        last_stage
            .iter()
            .find(|(kw, _)| kw == k)
            .map(|(_, a)| a.clone())
    };
    let user = find("USER").expect("the runtime stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    let health = find("HEALTHCHECK").expect("HEALTHCHECK");
    assert!(
        health.contains("eddy") && health.contains("health") && !health.contains("curl"),
        "{health}"
    );
    assert!(find("EXPOSE").is_some_and(|p| p.contains("9464")));
    let volumes = find("VOLUME").expect("VOLUME");
    assert!(
        volumes.contains("/plugins") && volumes.contains("/config"),
        "{volumes}"
    );
    assert!(
        last_stage
            .iter()
            .any(|(k, a)| k == "COPY" && a.contains("--from=") && a.contains("eddy"))
    );
}
