//! The seed's own services read what eddy writes, with the client they
//! install as the seed does (plain `pip install aiokafka`: no lz4 or zstd
//! codec), through eddy's default settings.

use std::collections::HashSet;
use std::process::Command;

use serde_json::{Value, json};

use crate::clusters::codecs_on_disk;
use crate::failures::tagger_config;
use crate::harness::{
    Eddy, PluginFile, bootstrap, create_topics, dead_letters, env_path, follow_ups_of,
    producer_for, seed_event, unique,
};

const EVENTS: usize = 300;

#[test]
fn plain_aiokafka_reads_follow_ups_and_dead_letters_made_with_the_defaults() {
    let (topic, out, group) = (
        unique("seed.client"),
        unique("seed.client.out"),
        unique("g"),
    );
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &out, &dlq], 2);
    let mut eddy = Eddy::start(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let producer = producer_for(&bootstrap());
    let ids: Vec<String> = (0..EVENTS).map(|n| format!("seed-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let key = format!("user-{}", n % 8);
        // Repetitive JSON, which any codec would shrink.
        let data = json!({"seq": n, "filler": "abcdefgh".repeat(20)});
        producer.send_json(&topic, &key, &seed_event(id, "user.created", &key, data));
    }
    // A record no plugin can read, whose header name is not UTF-8: its
    // dead letter must not make the dead-letter topic unreadable.
    producer.send_raw(
        &topic,
        Some(b"junk"),
        Some(b"{oops"),
        &[(b"bad\xffname", b"v")],
    );
    producer.flush();
    assert_eq!(
        follow_ups_of(&[&out], &ids, EVENTS).len(),
        EVENTS,
        "log:\n{}",
        eddy.log()
    );
    assert_eq!(dead_letters(&topic, 1).len(), 1, "log:\n{}", eddy.log());

    let output = Command::new(env_path("EDDY_SEED_PYTHON"))
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/seed_clients/read_all.py"))
        .args([&bootstrap(), &out, &dlq])
        .output()
        .expect("python");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "aiokafka could not read eddy's output: {stderr}"
    );
    let read: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON");
    let answered: HashSet<&str> = read[&out]
        .as_array()
        .expect("the follow-ups")
        .iter()
        .filter_map(|record| record["value"]["causation_id"].as_str())
        .collect();
    assert_eq!(answered.len(), EVENTS, "aiokafka read {answered:?}");
    let letters = read[&dlq].as_array().expect("the dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let names = letters[0]["headers"].as_array().expect("header names");
    assert!(
        names.iter().any(|n| n == "bad\\xffname"),
        "the header name, escaped: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "eddy-header-names-escaped"),
        "{names:?}"
    );
    // What the default settings wrote: uncompressed batches.
    assert_eq!(codecs_on_disk(&out, 2), vec!["none"]);
    eddy.stop();
}
