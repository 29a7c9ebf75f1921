//! Events in, follow-ups out: the envelope formats, routing, offsets and
//! restarts.

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::{
    Eddy, PluginFile, committed, config_head, create_topics, dead_letters, follow_ups_of, producer,
    read_to_end, seed_event, unique,
};

fn welcome_config(group: &str, topic: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.created\"]\nplugin = \"welcome-email\"\n\n\
         [plugin.welcome-email]\npublish_to = [\"notification.commands\"]\n",
        config_head(group)
    )
}

fn user_data(user_id: &str) -> serde_json::Value {
    json!({"user_id": user_id, "email": format!("{user_id}@example.com"), "name": "Ada Lovelace"})
}

#[test]
fn seed_user_created_becomes_exactly_the_welcome_command() {
    let topic = unique("user.events");
    create_topics(&[&topic, "notification.commands"], 3);
    let mut eddy = Eddy::start(
        &welcome_config(&unique("g"), &topic),
        &[PluginFile::Example("welcome-email")],
    );

    let event_id = unique("evt");
    let user_id = unique("user");
    let producer = producer();
    producer.send_json(
        &topic,
        &user_id,
        &seed_event(&event_id, "user.created", &user_id, user_data(&user_id)),
    );
    producer.flush();

    let out = follow_ups_of(
        &["notification.commands"],
        std::slice::from_ref(&event_id),
        1,
    );
    assert_eq!(
        out.len(),
        1,
        "expected one welcome command; log:\n{}",
        eddy.log()
    );
    let command = out[0].json();
    assert_eq!(out[0].key.as_deref(), Some(user_id.as_str()));
    assert_eq!(command["event_type"], "notification.send_welcome_email");
    assert_eq!(command["command_name"], "SendWelcomeEmail");
    assert_eq!(
        command["data"],
        json!({"user_id": user_id, "email": format!("{user_id}@example.com"), "name": "Ada Lovelace"})
    );
    assert_eq!(command["causation_id"], event_id.as_str());
    assert_eq!(command["correlation_id"], event_id.as_str());
    assert_eq!(command["service_name"], "welcome-email");
    assert_eq!(command["version"], "1.0");
    let new_id = command["event_id"].as_str().expect("event_id");
    assert_eq!(
        uuid::Uuid::parse_str(new_id)
            .expect("a UUID")
            .get_version_num(),
        7
    );
    assert!(
        command["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    eddy.stop();
}

#[test]
fn cloudevents_structured_and_binary_inputs_work() {
    let topic = unique("user.events");
    create_topics(&[&topic, "notification.commands"], 3);
    let mut eddy = Eddy::start(
        &welcome_config(&unique("g"), &topic),
        &[PluginFile::Example("welcome-email")],
    );

    let (structured_id, binary_id) = (unique("ce-structured"), unique("ce-binary"));
    let producer = producer();
    let structured = json!({
        "specversion": "1.0", "id": structured_id, "type": "user.created",
        "source": "user-service", "time": "2026-11-26T12:00:00Z",
        "datacontenttype": "application/json", "correlationid": "corr-structured",
        "data": user_data("u-structured"),
    });
    producer.send(
        &topic,
        Some("u-structured"),
        Some(structured.to_string().as_bytes()),
        &[("content-type", "application/cloudevents+json")],
    );
    let data = user_data("u-binary").to_string();
    producer.send(
        &topic,
        Some("u-binary"),
        Some(data.as_bytes()),
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", &binary_id),
            ("ce_type", "user.created"),
            ("ce_source", "user-service"),
            ("content-type", "application/json"),
        ],
    );
    producer.flush();

    let out = follow_ups_of(
        &["notification.commands"],
        &[structured_id.clone(), binary_id.clone()],
        2,
    );
    assert_eq!(out.len(), 2, "log:\n{}", eddy.log());
    let by_cause: BTreeMap<String, serde_json::Value> = out
        .iter()
        .map(|r| {
            (
                r.json()["causation_id"].as_str().unwrap_or("").to_string(),
                r.json(),
            )
        })
        .collect();
    assert_eq!(by_cause[&structured_id]["data"]["user_id"], "u-structured");
    assert_eq!(
        by_cause[&structured_id]["correlation_id"],
        "corr-structured"
    );
    assert_eq!(by_cause[&binary_id]["data"]["user_id"], "u-binary");
    assert_eq!(by_cause[&binary_id]["correlation_id"], binary_id.as_str());
    eddy.stop();
}

#[test]
fn an_event_type_without_route_is_passed_over_and_committed() {
    let topic = unique("user.events");
    create_topics(&[&topic, "notification.commands"], 1);
    let group = unique("g");
    let mut eddy = Eddy::start(
        &welcome_config(&group, &topic),
        &[PluginFile::Example("welcome-email")],
    );

    let producer = producer();
    let unrouted = unique("unrouted");
    let routed = unique("routed");
    producer.send_json(
        &topic,
        "u-1",
        &seed_event(&unrouted, "user.renamed", "u-1", json!({})),
    );
    producer.send_json(
        &topic,
        "u-1",
        &seed_event(&routed, "user.created", "u-1", user_data("u-1")),
    );
    producer.flush();

    // The routed event comes after the unrouted one in the same partition,
    // so its follow-up proves eddy went past it.
    let out = follow_ups_of(
        &["notification.commands"],
        &[unrouted.clone(), routed.clone()],
        1,
    );
    assert_eq!(out.len(), 1, "log:\n{}", eddy.log());
    assert_eq!(out[0].json()["causation_id"], routed.as_str());
    eddy.stop();
    assert_eq!(committed(&group, &topic, 1), [Some(2)]);
    let dead = read_to_end(&[&format!("{topic}.dlq")], |_| true);
    assert!(
        dead.is_empty(),
        "an unrouted event is not a dead letter: {dead:?}"
    );
}

#[test]
fn a_restart_neither_loses_nor_rehandles_finished_events() {
    let topic = unique("user.events");
    create_topics(&[&topic, "notification.commands"], 3);
    let producer = producer();
    let batch = |from: usize, to: usize| -> Vec<String> {
        (from..to)
            .map(|n| {
                let id = unique(&format!("restart-{n}"));
                let user = format!("user-{n}");
                producer.send_json(
                    &topic,
                    &user,
                    &seed_event(&id, "user.created", &user, user_data(&user)),
                );
                id
            })
            .collect()
    };
    let mut ids = batch(0, 60);
    producer.flush();
    let mut eddy = Eddy::start(
        &welcome_config(&unique("g"), &topic),
        &[PluginFile::Example("welcome-email")],
    );
    let first = follow_ups_of(&["notification.commands"], &ids, ids.len());
    assert_eq!(first.len(), 60, "log:\n{}", eddy.log());
    eddy.stop();

    ids.extend(batch(60, 120));
    producer.flush();
    eddy.launch();
    let all = follow_ups_of(&["notification.commands"], &ids, ids.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for record in &all {
        *seen
            .entry(
                record.json()["causation_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
            .or_default() += 1;
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "lost: {missing:?}; log:\n{}",
        eddy.log()
    );
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    assert_eq!(all.len(), 120);
    eddy.stop();
}

#[test]
fn undecodable_records_are_dead_lettered_with_the_reason() {
    let topic = unique("user.events");
    create_topics(&[&topic], 1);
    let mut eddy = Eddy::start(
        &welcome_config(&unique("g"), &topic),
        &[PluginFile::Example("welcome-email")],
    );
    let producer = producer();
    producer.send(
        &topic,
        Some("k1"),
        Some(b"this is not json"),
        &[("trace", "t-1")],
    );
    producer.send(
        &topic,
        Some("k2"),
        Some(br#"{"event_type": "user.created"}"#),
        &[],
    );
    producer.send(&topic, Some("k3"), None, &[]);
    producer.flush();

    let dead = dead_letters(&topic, 3);
    assert_eq!(dead.len(), 3, "log:\n{}", eddy.log());
    let by_key: BTreeMap<&str, _> = dead
        .iter()
        .map(|r| (r.key.as_deref().unwrap_or(""), r))
        .collect();
    assert!(by_key["k1"].header("eddy-error").contains("not JSON"));
    assert_eq!(
        by_key["k1"].value.as_deref(),
        Some(&b"this is not json"[..])
    );
    assert_eq!(
        by_key["k1"].header("trace"),
        "t-1",
        "original headers are kept"
    );
    assert_eq!(by_key["k1"].header("eddy-original-topic"), topic);
    assert_eq!(by_key["k1"].header("eddy-original-offset"), "0");
    assert!(
        by_key["k2"]
            .header("eddy-error")
            .contains("event_id is missing")
    );
    assert!(by_key["k3"].header("eddy-error").contains("no value"));
    assert_eq!(by_key["k3"].value, None);
    assert!(eddy.is_running());
    eddy.stop();
}
