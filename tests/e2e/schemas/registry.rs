//! A real schema registry (Apicurio): the Confluent wire format, an unknown
//! id, a record written by Confluent's Python serializer, and the registry
//! stopped while events and follow-ups wait for it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{DRAFT_07, counter, errors_by_event, user, user_v1, welcome_email_config};
use crate::failures::tagger_config;
use crate::harness::{
    Eddy, PluginFile, create_topics, dead_letters, env_path, follow_ups_of, http_get, producer,
    read, read_to_end, seed_event, unique,
};
use crate::registry::Registry;

/// Writes, with Confluent's Python client and its JSON Schema serializer,
/// a CloudEvents binary record of `user.created` whose value is the data in
/// the Confluent wire format; returns the frame's first five bytes in hex.
fn python_confluent_record(registry: &Registry, topic: &str, event_id: &str) -> String {
    let script = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry, topic, event_id, schema = sys.argv[1:6]
serializer = JSONSerializer(
    schema,
    SchemaRegistryClient({"url": registry}),
    conf={"subject.name.strategy": lambda ctx, record_name: "user.created"},
)
data = {"user_id": "u-py", "email": "py@example.com", "name": "Py"}
value = serializer(data, SerializationContext(topic, MessageField.VALUE))
producer = Producer({"bootstrap.servers": bootstrap})
producer.produce(topic, key="u-py", value=value, headers=[
    ("ce_specversion", "1.0"), ("ce_id", event_id), ("ce_type", "user.created"),
    ("ce_source", "python-test"), ("content-type", "application/json"),
])
assert producer.flush(30) == 0
print(value[:5].hex())
"#;
    let output = Command::new(env_path("EDDY_PYTHON"))
        .arg("-c")
        .arg(script)
        .arg(crate::harness::bootstrap())
        .arg(registry.url())
        .arg(topic)
        .arg(event_id)
        .arg(user_v1().to_string())
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn framed(id: u32, event: &Value) -> Vec<u8> {
    let mut value = vec![0];
    value.extend_from_slice(&id.to_be_bytes());
    value.extend_from_slice(event.to_string().as_bytes());
    value
}

#[test]
fn records_in_the_confluent_wire_format_are_checked_against_the_registry_schema_they_name() {
    let registry = Registry::start();
    let schema_id = registry.register("user.created", &user_v1());
    let topic = unique("schemas-registry");
    create_topics(
        &[&topic, &format!("{topic}.dlq"), "notification.commands"],
        1,
    );
    let config = welcome_email_config(
        &unique("schemas-registry"),
        &topic,
        &format!("registry = {:?}", registry.url()),
    );
    let eddy = Eddy::start(&config, &[PluginFile::Example("welcome-email")]);
    let id = |name: &str| format!("{topic}-{name}");
    let ada = json!({"user_id": "u-1", "email": "ada@example.com", "name": "Ada"});
    let p = producer();
    let send = |name: &str, value: &[u8]| p.send_bytes_to(&topic, 0, name, value);
    send(
        "framed",
        &framed(schema_id, &user(&id("framed"), "1.0", ada.clone())),
    );
    send(
        "framed-invalid",
        &framed(
            schema_id,
            &user(&id("framed-invalid"), "1.0", json!({"user_id": "u-2"})),
        ),
    );
    send(
        "unknown-id",
        &framed(9999, &user(&id("unknown-id"), "1.0", ada.clone())),
    );
    // Not framed: checked against its subject's latest version.
    send(
        "plain",
        user(&id("plain"), "1.0", ada).to_string().as_bytes(),
    );
    send(
        "plain-invalid",
        user(&id("plain-invalid"), "1.0", json!({"email": []}))
            .to_string()
            .as_bytes(),
    );
    p.flush();
    let frame = python_confluent_record(&registry, &topic, &id("python"));
    assert!(
        frame.starts_with("00"),
        "not the Confluent wire format: {frame}"
    );

    let dead = dead_letters(&topic, 3);
    let errors = errors_by_event(&dead);
    assert_eq!(
        errors.keys().cloned().collect::<Vec<_>>(),
        [id("framed-invalid"), id("plain-invalid"), id("unknown-id")],
        "{errors:#?}"
    );
    assert!(
        errors[&id("framed-invalid")].starts_with(&format!(
            "schema-invalid: user.created 1.0 against schema id {schema_id} of the registry"
        )) && errors[&id("framed-invalid")].contains("\"email\" is a required property"),
        "{errors:#?}"
    );
    assert!(
        errors[&id("plain-invalid")].contains("against subject \"user.created\"")
            && errors[&id("plain-invalid")].contains("/data/email: [] is not of type \"string\""),
        "{errors:#?}"
    );
    assert!(
        errors[&id("unknown-id")].starts_with(
            "schema-unknown: the record's frame names schema id 9999, which the registry at"
        ),
        "{errors:#?}"
    );
    let handled = [id("framed"), id("plain"), id("python")];
    let follow_ups = follow_ups_of(&["notification.commands"], &handled, 3);
    assert_eq!(follow_ups.len(), 3, "{follow_ups:#?}");
    let python = follow_ups
        .iter()
        .find(|r| r.json()["causation_id"] == json!(id("python")))
        .expect("the Python record's follow-up");
    assert_eq!(python.json()["data"]["email"], json!("py@example.com"));
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let fetches = |outcome| {
        counter(
            &metrics,
            "eddy_schema_registry_fetches_total",
            &[("outcome", outcome)],
        )
    };
    // The id once, the subject once, and the Python serializer's id once
    // more if it is not the same schema's; missing: 9999, and the subject
    // of welcome-email's follow-ups, which has no schema (again, should the
    // test outlast the 30 s a miss is remembered).
    assert!(
        (2.0..=3.0).contains(&fetches("ok")) && fetches("missing") >= 2.0,
        "{metrics}"
    );
}

#[test]
fn a_registry_that_stops_answering_holds_only_the_partitions_that_need_it() {
    const EACH: usize = 100;
    let mut registry = Registry::start();
    let cached = registry.register(
        "load.event",
        &json!({
            "$schema": DRAFT_07, "type": "object", "properties": {"seq": {"type": "integer"}}
        }),
    );
    let unseen = registry.register(
        "load.other",
        &json!({
            "$schema": DRAFT_07, "type": "object", "properties": {"seq": {"type": "number"}}
        }),
    );
    let (topic, out) = (unique("schemas-outage"), unique("schemas-outage.out"));
    create_topics(&[&topic, &format!("{topic}.dlq"), &out], 2);
    let config = format!(
        "{}\n[schemas]\nregistry = {:?}\n",
        tagger_config(&unique("schemas-outage"), &topic, &out),
        registry.url()
    );
    let eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let p = producer();
    let send = |phase: &str, partition: i32, schema: u32| {
        let mut ids = Vec::new();
        for n in 0..EACH {
            let id = format!("{topic}-{phase}-{partition}-{n}");
            let event = seed_event(&id, "load.event", &id, json!({"seq": n}));
            p.send_bytes_to(&topic, partition, &id, &framed(schema, &event));
            ids.push(id);
        }
        p.flush();
        ids
    };
    let mut before = send("before", 0, cached);
    before.extend(send("before", 1, cached));
    assert_eq!(follow_ups_of(&[&out], &before, 2 * EACH).len(), 2 * EACH);

    registry.stop();
    let waiting = send("during", 0, unseen);
    let going_on = send("during", 1, cached);
    assert_eq!(
        follow_ups_of(&[&out], &going_on, EACH).len(),
        EACH,
        "partition 1 needs nothing new from the registry and goes on"
    );
    let started = Instant::now();
    let mut readiness = (0, String::new());
    while started.elapsed() < Duration::from_secs(30) {
        readiness = http_get(&eddy.http_addr(), "/readyz");
        if readiness.0 == 503 && readiness.1.contains("does not answer") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(readiness.0, 503, "{}", readiness.1);
    assert!(
        readiness.1.contains("schema registry") && readiness.1.contains("wait"),
        "{}",
        readiness.1
    );
    assert!(
        eddy.wait_for_log(
            "the partition waits for the schema registry",
            1,
            Duration::from_secs(30)
        ),
        "{}",
        eddy.log()
    );
    assert!(
        follow_ups_of(&[&out], &waiting, 0).is_empty(),
        "partition 0 went on without the schema its records name"
    );
    assert!(read_to_end(&[&format!("{topic}.dlq")], |_| true).is_empty());

    registry.start_again();
    assert_eq!(
        follow_ups_of(&[&out], &waiting, EACH).len(),
        EACH,
        "partition 0 resumed: {}",
        eddy.log()
    );
    assert!(
        read_to_end(&[&format!("{topic}.dlq")], |_| true).is_empty(),
        "nothing was dead-lettered for the registry's absence"
    );
    let started = Instant::now();
    while http_get(&eddy.http_addr(), "/readyz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never ready again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_follow_up_whose_schema_the_registry_cannot_give_waits_uncounted_and_is_written_framed() {
    const EACH: usize = 20;
    let mut registry = Registry::start();
    let event_schema = registry.register(
        "load.event",
        &json!({"$schema": DRAFT_07, "type": "object", "properties": {"seq": {"type": "integer"}}}),
    );
    // Registered, never yet asked for by eddy.
    let tagged_schema = registry.register(
        "tagged",
        &json!({"$schema": DRAFT_07, "type": "object", "required": ["seq", "tag"]}),
    );
    let (topic, out) = (unique("schemas-out-wait"), unique("schemas-out-wait.out"));
    create_topics(&[&topic, &format!("{topic}.dlq"), &out], 1);
    // No retries: an attempt that counted would dead-letter its event.
    let config = format!(
        "{}max_retries = 0\nwire_format = \"confluent\"\n\n[schemas]\nregistry = {:?}\n",
        tagger_config(&unique("schemas-out-wait"), &topic, &out),
        registry.url()
    );
    let eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let p = producer();
    // tagger (v1) rejects this one without publishing: the event's schema
    // is fetched, the follow-up's is not.
    let first = format!("{topic}-first");
    let event = seed_event(
        &first,
        "load.event",
        &first,
        json!({"seq": 0, "v1_bug": true}),
    );
    p.send_bytes_to(&topic, 0, &first, &framed(event_schema, &event));
    p.flush();
    assert_eq!(dead_letters(&topic, 1).len(), 1);

    registry.stop();
    let mut ids = Vec::new();
    for n in 1..=EACH {
        let id = format!("{topic}-{n}");
        let event = seed_event(&id, "load.event", &id, json!({"seq": n}));
        p.send_bytes_to(&topic, 0, &id, &framed(event_schema, &event));
        ids.push(id);
    }
    p.flush();
    assert!(
        eddy.wait_for_log(
            "a follow-up's schema is not to be had",
            2,
            Duration::from_secs(30)
        ),
        "{}",
        eddy.log()
    );
    assert!(read_to_end(&[&out], |_| true).is_empty());
    assert_eq!(read_to_end(&[&format!("{topic}.dlq")], |_| true).len(), 1);

    registry.start_again();
    let written = read(&[&out], EACH, Duration::from_secs(60), |_| true);
    assert_eq!(written.len(), EACH, "{}", eddy.log());
    for record in &written {
        let value = record.value.as_deref().unwrap();
        assert_eq!(value[0], 0, "not framed");
        assert_eq!(
            u32::from_be_bytes(value[1..5].try_into().unwrap()),
            tagged_schema,
            "framed with the id of the follow-up's schema"
        );
        let follow_up: Value = serde_json::from_slice(&value[5..]).expect("JSON after the frame");
        assert_eq!(follow_up["event_type"], json!("tagged"));
    }
    let causes: Vec<Value> = written
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.value.as_deref().unwrap()[5..]).unwrap())
        .map(|v| v["causation_id"].clone())
        .collect();
    let expected: Vec<Value> = ids.iter().map(|id| json!(id)).collect();
    assert_eq!(causes, expected, "every event once, in order");
    assert_eq!(
        read_to_end(&[&format!("{topic}.dlq")], |_| true).len(),
        1,
        "nothing dead-lettered for the registry's absence"
    );
}

/// The registry's user and password come from variables (or the URL), are
/// sent as HTTP Basic auth, and show nowhere: not in the log, `/readyz`,
/// `/metrics`, a dead letter or `eddy check`.
#[test]
fn the_registry_password_is_sent_and_never_shown() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    const PASSWORD: &str = "pa55-w0rd-never-shown";
    // base64 of "eddy:pa55-w0rd-never-shown".
    const BASIC: &str = "Basic ZWRkeTpwYTU1LXcwcmQtbmV2ZXItc2hvd24=";
    // A registry that has no schema at all, keeping what it was sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let requests = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let requests = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 8192];
                let read = stream.read(&mut request).unwrap_or(0);
                requests
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&request[..read]).into_owned());
                let body = r#"{"error_code":40403,"message":"Schema not found"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
    let (topic, out) = (unique("schemas.secret"), unique("schemas.secret.out"));
    create_topics(&[&topic, &out, &format!("{topic}.dlq")], 1);
    let config = format!(
        "{}\n[schemas]\nregistry = \"http://127.0.0.1:{port}\"\n\
         registry_username_env = \"EDDY_TEST_REGISTRY_USER\"\n\
         registry_password_env = \"EDDY_TEST_REGISTRY_PASSWORD\"\n",
        tagger_config(&unique("g"), &topic, &out)
    );
    let mut eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Test("tagger")],
        &[
            ("EDDY_TEST_REGISTRY_USER", "eddy"),
            ("EDDY_TEST_REGISTRY_PASSWORD", PASSWORD),
        ],
    );
    let event = user("secret-1", "1.0", json!({"user_id": "u1"}));
    let p = producer();
    p.send_bytes_to(&topic, 0, "k", &framed(4242, &event));
    p.flush();
    // Asked again for 10 s, then given up.
    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    let sent = requests.lock().unwrap().clone();
    assert!(
        !sent.is_empty() && sent.iter().all(|r| r.contains(BASIC)),
        "{sent:?}"
    );
    let mut shown = vec![
        ("the log", eddy.log()),
        ("/readyz", http_get(&eddy.http_addr(), "/readyz").1),
        ("/metrics", http_get(&eddy.http_addr(), "/metrics").1),
        ("the dead letter", format!("{:?}", dead[0])),
    ];
    eddy.stop();
    shown.push(("the log after stopping", eddy.log()));
    // The same login in the URL, for `eddy check`.
    let in_url = config
        .replace(
            &format!("http://127.0.0.1:{port}"),
            &format!("http://eddy:{PASSWORD}@127.0.0.1:{port}"),
        )
        .replace("registry_username_env = \"EDDY_TEST_REGISTRY_USER\"\n", "")
        .replace(
            "registry_password_env = \"EDDY_TEST_REGISTRY_PASSWORD\"\n",
            "",
        );
    shown.push(("eddy check", crate::harness::check(&in_url, &[], &[]).1));
    let https = in_url.replace("http://eddy:", "https://eddy:");
    shown.push((
        "eddy check's problem",
        crate::harness::check(&https, &[], &[]).1,
    ));
    for (surface, text) in &shown {
        assert!(
            !text.contains(PASSWORD),
            "the password shows in {surface}:\n{text}"
        );
    }
    assert!(
        shown
            .last()
            .is_some_and(|(_, text)| text.contains("https://127.0.0.1")),
        "{shown:?}"
    );
}
