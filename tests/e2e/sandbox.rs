//! A misbehaving plugin costs only its own event: traps, endless loops,
//! memory hogs and publishes outside the allow-list.

use std::collections::BTreeMap;

use serde_json::json;

use crate::harness::{
    Eddy, PluginFile, config_head, create_topics, dead_letters, follow_ups_of, producer,
    seed_event, unique,
};

fn chaos_config(group: &str, topic: &str, out: &str, extra_route: &str) -> String {
    format!(
        "{head}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"chaos.*\"]\nplugin = \"chaos\"\n\n{extra_route}\
         [plugin.chaos]\npublish_to = [\"{out}\"]\ntimeout_ms = 300\nmemory_mb = 16\nmax_retries = 1\n\
         config = {{ out_topic = \"{out}\", forbidden_topic = \"{out}.forbidden\" }}\n",
        head = config_head(group)
    )
}

#[test]
fn a_publish_outside_the_allow_list_is_refused_and_nothing_is_published() {
    let (topic, out) = (unique("chaos.in"), unique("chaos.out"));
    let forbidden = format!("{out}.forbidden");
    create_topics(&[&topic, &out, &forbidden], 1);
    let mut eddy = Eddy::start(
        &chaos_config(&unique("g"), &topic, &out, ""),
        &[PluginFile::Test("chaos")],
    );

    let (bad, good) = (unique("forbidden"), unique("ok"));
    let producer = producer();
    producer.send_json(
        &topic,
        "k",
        &seed_event(&bad, "chaos.forbidden", "k", json!({})),
    );
    producer.send_json(&topic, "k", &seed_event(&good, "chaos.ok", "k", json!({})));
    producer.flush();

    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    assert!(
        dead[0].header("eddy-error").contains("not in publish_to"),
        "{:?}",
        dead[0].headers
    );
    assert_eq!(dead[0].header("eddy-plugin"), "chaos");
    assert_eq!(
        dead[0].header("eddy-attempts"),
        "1",
        "a refused publish is not retried"
    );

    // The allowed publish of the failed attempt never reached Kafka either.
    let out_records = follow_ups_of(&[&out, &forbidden], &[bad.clone(), good.clone()], 1);
    assert_eq!(out_records.len(), 1, "log:\n{}", eddy.log());
    assert_eq!(out_records[0].json()["causation_id"], good.as_str());
    assert_eq!(out_records[0].topic, out);
    eddy.stop();
}

#[test]
fn traps_loops_and_memory_hogs_cost_only_their_own_event() {
    let (topic, out) = (unique("chaos.in"), unique("chaos.out"));
    let users = unique("user.events");
    create_topics(&[&topic, &out, &users, "notification.commands"], 2);
    let welcome_route = format!(
        "[[routes]]\ntopic = \"{users}\"\nevent_types = [\"user.created\"]\nplugin = \"welcome-email\"\n\n\
         [plugin.welcome-email]\npublish_to = [\"notification.commands\"]\n\n"
    );
    let mut eddy = Eddy::start(
        &chaos_config(&unique("g"), &topic, &out, &welcome_route),
        &[
            PluginFile::Test("chaos"),
            PluginFile::Example("welcome-email"),
        ],
    );

    let producer = producer();
    let mut bad = BTreeMap::new();
    for kind in ["trap", "loop", "memory"] {
        let id = unique(kind);
        producer.send_json(
            &topic,
            "same-key",
            &seed_event(&id, &format!("chaos.{kind}"), "same-key", json!({})),
        );
        bad.insert(id, kind);
    }
    let good: Vec<String> = (0..5).map(|n| unique(&format!("ok-{n}"))).collect();
    for id in &good {
        producer.send_json(
            &topic,
            "same-key",
            &seed_event(id, "chaos.ok", "same-key", json!({})),
        );
    }
    let welcome = unique("welcome");
    producer.send_json(
        &users,
        "u-1",
        &seed_event(
            &welcome,
            "user.created",
            "u-1",
            json!({"user_id": "u-1", "email": "a@b.c", "name": "A"}),
        ),
    );
    producer.flush();

    // Another plugin on another topic is not held up.
    let welcomed = follow_ups_of(
        &["notification.commands"],
        std::slice::from_ref(&welcome),
        1,
    );
    assert_eq!(welcomed.len(), 1, "log:\n{}", eddy.log());

    // The good events behind the bad ones, in the same partition, are handled.
    let handled = follow_ups_of(&[&out], &good, good.len());
    assert_eq!(handled.len(), good.len(), "log:\n{}", eddy.log());

    let dead = dead_letters(&topic, 3);
    assert_eq!(dead.len(), 3, "log:\n{}", eddy.log());
    for record in &dead {
        let id = record.json()["event_id"].as_str().unwrap_or("").to_string();
        let kind = bad[&id];
        let reason = record.header("eddy-error");
        let expected = match kind {
            "trap" => "trap:",
            "loop" => "timeout:",
            _ => "memory-limit:",
        };
        assert!(reason.starts_with(expected), "{kind}: {reason}");
        assert_eq!(
            record.header("eddy-attempts"),
            "2",
            "{kind}: one try and max_retries = 1"
        );
    }
    assert!(eddy.is_running(), "the host survived; log:\n{}", eddy.log());
    assert!(
        eddy.log().contains("chaos: asked to trap"),
        "the guest's panic message reaches the log"
    );
    eddy.stop();
}

/// `events_per_instance` keeps an instance for that many events, and drops
/// it after a trap; by default every event gets a fresh one.
#[test]
fn instances_are_fresh_per_event_unless_reuse_is_asked_and_a_trap_ends_reuse() {
    for (reuse, expected) in [
        ("", [1, 1, 1, 1, 1, 1, 1, 1]),
        ("events_per_instance = 3\n", [1, 2, 3, 1, 1, 2, 3, 1]),
    ] {
        let (topic, out) = (unique("chaos.in"), unique("chaos.out"));
        create_topics(&[&topic, &out], 1);
        let config = chaos_config(&unique("g"), &topic, &out, "") + reuse;
        let mut eddy = Eddy::start(&config, &[PluginFile::Test("chaos")]);

        let producer = producer();
        let mut counted = Vec::new();
        for n in 0..9 {
            // The fifth event traps, on the instance that served the fourth.
            let (id, kind) = if n == 4 {
                (unique("trap"), "chaos.trap")
            } else {
                (unique("count"), "chaos.count")
            };
            producer.send_json(&topic, "k", &seed_event(&id, kind, "k", json!({})));
            if n != 4 {
                counted.push(id);
            }
        }
        producer.flush();

        let answers = follow_ups_of(&[&out], &counted, counted.len());
        let served: Vec<u64> = answers
            .iter()
            .map(|r| r.json()["data"]["served"].as_u64().expect("served"))
            .collect();
        assert_eq!(served, expected, "{reuse:?}; log:\n{}", eddy.log());
        let dead = dead_letters(&topic, 1);
        assert!(
            dead[0].header("eddy-error").starts_with("trap"),
            "{:?}",
            dead[0].headers
        );
        eddy.stop();
    }
}
