//! Schemas at both doors: events checked against schema files by type and
//! version, a schema file replaced mid-stream, follow-ups refused at
//! `publish`, and a real schema registry (Apicurio): the Confluent wire
//! format, an unknown id, a record written by Confluent's Python serializer,
//! and the registry stopped mid-stream.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::failures::{stream, tagger_config};
use crate::harness::{
    Eddy, PluginFile, check, config_head, create_topics, dead_letters, env_path, follow_ups_of,
    http_get, producer, read, read_to_end, seed_event, unique,
};
use crate::registry::Registry;

const DRAFT_07: &str = "http://json-schema.org/draft-07/schema#";

/// `user.created` 1.0: who the user is.
fn user_v1() -> Value {
    json!({
        "$schema": DRAFT_07,
        "type": "object",
        "required": ["user_id", "email", "name"],
        "properties": {
            "user_id": {"type": "string"},
            "email": {"type": "string"},
            "name": {"type": "string"}
        }
    })
}

/// `user.created` 2.0: and their plan.
fn user_v2() -> Value {
    let mut schema = user_v1();
    schema["required"] = json!(["user_id", "email", "name", "plan"]);
    schema["properties"]["plan"] = json!({"enum": ["free", "pro"]});
    schema
}

/// A folder of schema files (path → schema) for `[schemas] dir`.
fn schema_dir(files: &[(&str, &Value)]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("eddy-schemas"));
    for (name, schema) in files {
        write_schema(&dir, name, schema);
    }
    std::fs::create_dir_all(&dir).expect("schema folder");
    dir
}

/// Writes a schema file whole (written beside it, then renamed).
fn write_schema(dir: &std::path::Path, name: &str, schema: &Value) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).expect("schema folder");
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, serde_json::to_string_pretty(schema).unwrap()).expect("write");
    std::fs::rename(&partial, &path).expect("rename");
}

fn welcome_email_config(group: &str, topic: &str, schemas: &str) -> String {
    format!(
        "{}[schemas]\n{schemas}\n\n[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.created\"]\n\
         plugin = \"welcome-email\"\n\n[plugin.welcome-email]\n\
         publish_to = [\"notification.commands\"]\nmax_retries = 0\n",
        config_head(group)
    )
}

fn user(event_id: &str, version: &str, data: Value) -> Value {
    let mut event = seed_event(event_id, "user.created", event_id, data);
    event["version"] = json!(version);
    event
}

/// The value of the counter `name` whose labels include `labels`.
fn counter(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `eddy-error` header of each dead letter, by the event id of the
/// record it carries.
fn errors_by_event(dead: &[crate::harness::Record]) -> BTreeMap<String, String> {
    dead.iter()
        .map(|r| {
            let value = r.value.as_deref().unwrap_or_default();
            // A framed record's JSON starts after its five frame bytes.
            let json = value
                .iter()
                .position(|b| *b == b'{')
                .map_or(Value::Null, |at| {
                    serde_json::from_slice(&value[at..]).unwrap_or(Value::Null)
                });
            let id = json["event_id"].as_str().unwrap_or_default().to_string();
            (id, r.header("eddy-error").to_string())
        })
        .collect()
}

#[test]
fn events_are_checked_against_the_schema_file_of_their_type_and_version() {
    let topic = unique("schemas-files");
    create_topics(
        &[&topic, &format!("{topic}.dlq"), "notification.commands"],
        1,
    );
    let dir = schema_dir(&[
        ("user.created/1.0.json", &user_v1()),
        ("user.created/2.0.json", &user_v2()),
    ]);
    let config = welcome_email_config(
        &unique("schemas-files"),
        &topic,
        &format!("dir = {:?}", dir.display().to_string()),
    );
    let eddy = Eddy::start(&config, &[PluginFile::Example("welcome-email")]);
    let id = |name: &str| format!("{topic}-{name}");
    let ada = json!({"user_id": "u-1", "email": "ada@example.com", "name": "Ada"});
    let events = [
        user(&id("valid-1.0"), "1.0", ada.clone()),
        user(
            &id("no-email"),
            "1.0",
            json!({"user_id": "u-2", "name": "Bo"}),
        ),
        user(
            &id("email-number"),
            "1.0",
            json!({"user_id": "u-3", "email": 42, "name": "Cy"}),
        ),
        // Valid under 1.0, not under 2.0, which asks for a plan.
        user(&id("no-plan-2.0"), "2.0", ada.clone()),
        user(
            &id("valid-2.0"),
            "2.0",
            json!({"user_id": "u-5", "email": "e@x.io", "name": "Ed", "plan": "pro"}),
        ),
        // No file for 3.0 and none for every version: `unknown` is "allow".
        user(&id("no-schema-3.0"), "3.0", ada),
    ];
    let p = producer();
    for event in &events {
        p.send_json(&topic, event["event_id"].as_str().unwrap(), event);
    }
    p.flush();

    let dead = dead_letters(&topic, 3);
    let errors = errors_by_event(&dead);
    assert_eq!(
        errors.keys().cloned().collect::<Vec<_>>(),
        [id("email-number"), id("no-email"), id("no-plan-2.0")],
        "{errors:#?}"
    );
    let no_email = &errors[&id("no-email")];
    assert!(
        no_email.starts_with("schema-invalid: user.created 1.0 against ")
            && no_email.contains("1.0.json: /data: \"email\" is a required property"),
        "{no_email}"
    );
    let email_number = &errors[&id("email-number")];
    assert!(
        email_number.contains("/data/email: 42 is not of type \"string\""),
        "{email_number}"
    );
    let no_plan = &errors[&id("no-plan-2.0")];
    assert!(
        no_plan.contains("2.0.json: /data: \"plan\" is a required property"),
        "{no_plan}"
    );
    let handled = [id("valid-1.0"), id("valid-2.0"), id("no-schema-3.0")];
    let follow_ups = follow_ups_of(&["notification.commands"], &handled, 3);
    assert_eq!(follow_ups.len(), 3, "{follow_ups:#?}");
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let checks = |labels: &[(&str, &str)]| counter(&metrics, "eddy_schema_checks_total", labels);
    assert_eq!(
        checks(&[
            ("door", "in"),
            ("event_type", "user.created"),
            ("outcome", "invalid")
        ]),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        checks(&[
            ("door", "in"),
            ("event_type", "user.created"),
            ("outcome", "valid")
        ]),
        2.0
    );
    assert_eq!(checks(&[("door", "in"), ("outcome", "no-schema")]), 1.0);
    let dead_lettered = counter(
        &metrics,
        "eddy_events_dead_lettered_total",
        &[("reason", "schema-invalid")],
    );
    assert_eq!(dead_lettered, 3.0, "{metrics}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_schema_file_replaced_while_events_flow_applies_from_the_next_event_on_and_loses_none() {
    const EVENTS: usize = 3000;
    let (topic, out) = (unique("schemas-swap"), unique("schemas-swap.out"));
    create_topics(&[&topic, &format!("{topic}.dlq"), &out], 1);
    let lenient = json!({
        "$schema": DRAFT_07,
        "type": "object",
        "required": ["seq"],
        "properties": {"seq": {"type": "integer"}}
    });
    // The stream's events carry no `approved`: after the swap, every one
    // is refused.
    let mut strict = lenient.clone();
    strict["required"] = json!(["seq", "approved"]);
    let dir = schema_dir(&[("load.event.json", &lenient)]);
    let config = format!(
        "{}\n[schemas]\ndir = {:?}\n",
        tagger_config(&unique("schemas-swap"), &topic, &out),
        dir.display().to_string()
    );
    let eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(
        eddy.wait_for_log("schema files loaded", 1, Duration::from_secs(30)),
        "{}",
        eddy.log()
    );
    let producing = stream(
        crate::harness::bootstrap(),
        topic.clone(),
        0..EVENTS,
        Duration::from_secs(6),
    );
    // Swapped once some events were handled under the first schema.
    read(&[&out], 200, Duration::from_secs(60), |_| true);
    write_schema(&dir, "load.event.json", &strict);
    assert!(
        eddy.wait_for_log("schema files loaded", 2, Duration::from_secs(30)),
        "the new schema was not loaded: {}",
        eddy.log()
    );
    let sent = producing.join().expect("producer");

    // Every event is either followed up or dead-lettered, and in the
    // partition's order all that passed come before all that did not.
    let dlq = format!("{topic}.dlq");
    let both = crate::harness::read_until(
        &crate::harness::bootstrap(),
        &[&out, &dlq],
        Duration::from_secs(120),
        |_| true,
        |kept| kept.len() >= EVENTS,
    );
    let mut fate: HashMap<String, &str> = HashMap::new();
    for record in &both {
        if record.topic == out {
            let cause = record.json()["causation_id"].as_str().unwrap().to_string();
            assert!(fate.insert(cause, "handled").is_none(), "a duplicate");
            continue;
        }
        let id = record.json()["event_id"].as_str().unwrap().to_string();
        assert!(
            record
                .header("eddy-error")
                .contains("/data: \"approved\" is a required property"),
            "{}",
            record.header("eddy-error")
        );
        assert!(
            fate.insert(id, "dead").is_none(),
            "handled and dead-lettered"
        );
    }
    let order: Vec<&str> = sent
        .iter()
        .map(|s| fate.get(&s.id).copied().unwrap_or("lost"))
        .collect();
    let lost = order.iter().filter(|f| **f == "lost").count();
    assert_eq!(lost, 0, "events neither handled nor dead-lettered");
    let switch = order
        .iter()
        .position(|f| *f == "dead")
        .expect("none refused");
    assert!(switch > 0, "the swap came before the first event");
    assert!(
        order[switch..].iter().all(|f| *f == "dead"),
        "an event after the swap passed under the old schema"
    );
    println!(
        "schema swap: {switch} events passed the first schema, {} were refused by the second",
        EVENTS - switch
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_follow_up_that_breaks_its_schema_is_refused_at_publish_and_never_written() {
    let (topic, out) = (unique("schemas-out"), unique("schemas-out.out"));
    create_topics(&[&topic, &format!("{topic}.dlq"), &out], 1);
    // tagger passes the event's `seq` on in its `tagged` follow-up.
    let tagged = json!({
        "$schema": DRAFT_07,
        "type": "object",
        "required": ["seq", "tag"],
        "properties": {"seq": {"type": "integer"}, "tag": {"type": "string"}}
    });
    let dir = schema_dir(&[("tagged.json", &tagged)]);
    let config = format!(
        "{}max_retries = 0\n\n[schemas]\ndir = {:?}\n",
        tagger_config(&unique("schemas-out"), &topic, &out),
        dir.display().to_string()
    );
    let eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let p = producer();
    for (n, seq) in [json!(1), json!("two"), json!(3)].into_iter().enumerate() {
        let id = format!("{topic}-{n}");
        p.send_json(
            &topic,
            &id,
            &seed_event(&id, "probe", &id, json!({"seq": seq})),
        );
    }
    p.flush();
    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1);
    let error = dead[0].header("eddy-error");
    assert!(
        error.starts_with(
            "reject: invalid follow-up: tagged 1.0: /data/seq: \"two\" is not of type \"integer\""
        ),
        "{error}"
    );
    let written = read(&[&out], 2, Duration::from_secs(60), |_| true);
    let seqs: Vec<Value> = written
        .iter()
        .map(|r| r.json()["data"]["seq"].clone())
        .collect();
    assert_eq!(
        seqs,
        [json!(1), json!(3)],
        "only valid follow-ups are written"
    );
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let checks = |outcome| {
        counter(
            &metrics,
            "eddy_schema_checks_total",
            &[
                ("door", "out"),
                ("event_type", "tagged"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (checks("valid"), checks("invalid")),
        (2.0, 1.0),
        "{metrics}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_names_a_broken_schema_file_and_a_routed_type_without_a_schema() {
    let dir = schema_dir(&[("user.created/1.0.json", &user_v1())]);
    std::fs::write(dir.join("user.deleted.json"), r#"{"type": "objekt"}"#).unwrap();
    let config = format!(
        "{}[schemas]\ndir = {:?}\nunknown = \"dead-letter\"\n\n\
         [[routes]]\ntopic = \"users\"\nevent_types = [\"user.created\", \"user.updated\"]\n\
         plugin = \"welcome-email\"\n\n[plugin.welcome-email]\npublish_to = [\"notification.commands\"]\n",
        config_head("check-schemas"),
        dir.display().to_string()
    );
    let (code, output) = check(&config, &[PluginFile::Example("welcome-email")], &[]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("user.deleted.json refused: not a valid JSON Schema"),
        "{output}"
    );
    assert!(output.contains("ok: schema user.created (1.0)"), "{output}");
    assert!(
        output.contains(
            "error: route users [user.updated] -> welcome-email: event type \"user.updated\" \
             version \"any\" has no schema file, and [schemas] unknown is \"dead-letter\""
        ),
        "{output}"
    );
    assert!(!output.contains("[user.created] ->"), "{output}");
    std::fs::remove_dir_all(dir).unwrap();
}

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
