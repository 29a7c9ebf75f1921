//! Schema files (`[schemas] dir`): events checked by type and version, a
//! file replaced mid-stream, follow-ups refused at `publish`, and what
//! `eddy check` says of a broken file or a routed type without one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DRAFT_07, counter, errors_by_event, user, user_v1, user_v2, welcome_email_config};
use crate::failures::{stream, tagger_config};
use crate::harness::{
    Eddy, PluginFile, check, config_head, create_topics, dead_letters, follow_ups_of, http_get,
    producer, read, seed_event, unique,
};

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
