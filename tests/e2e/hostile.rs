//! Thousands of hostile records among valid events: eddy stays up, every
//! partition's committed offset reaches its end, every event is answered
//! exactly once and every other record is dead-lettered once, unchanged,
//! with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::failures::tagger_config;
use crate::harness::{
    Eddy, PluginFile, Record, bootstrap, committed, create_topics, end_offsets, http_get, producer,
    read_until, seed_event, unique,
};

const RECORDS: usize = 4_000;
const PARTITIONS: i32 = 3;

/// What should become of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Answered,
    DeadLettered,
    /// A mutated event: it may still parse.
    Either,
}

/// One record as sent.
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    fate: Fate,
}

/// xorshift64*: the same records every run, no dependency.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn valid(i: usize, id: &str) -> Vec<u8> {
    seed_event(id, "load.event", &format!("h-{i}"), json!({"seq": i}))
        .to_string()
        .into_bytes()
}

/// Record `i` of the corpus: its class is `i % 16`.
fn record(i: usize, dice: &mut Dice) -> Sent {
    let key = format!("h-{i}-").into_bytes();
    let id = format!("h-{i}");
    let plain = |value: Vec<u8>, fate| Sent {
        key: Some(key.clone()),
        value: Some(value),
        headers: Vec::new(),
        fate,
    };
    match i % 16 {
        0 => plain(valid(i, &id), Fate::Answered),
        // Control characters, ANSI escapes and newlines in the text.
        1 => plain(
            valid(i, &format!("{id}-\u{1b}[31mred\nline\u{0}\r")),
            Fate::Answered,
        ),
        // Bytes changed before `"event_id"` (keys are sorted): it may still
        // parse, but its id stays what it was.
        2 => {
            let mut value = valid(i, &id);
            let end = String::from_utf8_lossy(&value)
                .find("\"event_id\"")
                .unwrap_or(2);
            for _ in 0..3 {
                let at = 1 + (dice.next() as usize) % (end - 1);
                let noise = b"{}[]\":,\\x0 \x00\xff";
                value[at] = noise[(dice.next() as usize) % noise.len()];
            }
            plain(value, Fate::Either)
        }
        3 => {
            let size = 1 + (dice.next() % 300) as usize;
            plain(dice.bytes(size), Fate::DeadLettered)
        }
        4 => {
            let depth = 5_000;
            let value = format!(
                r#"{{"event_id": "{id}", "event_type": "deep", "data": {}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            plain(value.into_bytes(), Fate::DeadLettered)
        }
        5 => plain(
            format!(r#"{{"event_id": {i}, "event_type": {{"a": 1}}}}"#).into_bytes(),
            Fate::DeadLettered,
        ),
        6 => Sent {
            key: Some(key),
            value: None,
            headers: Vec::new(),
            fate: Fate::DeadLettered,
        },
        7 => plain(Vec::new(), Fate::DeadLettered),
        8 => Sent {
            key: Some(key),
            value: Some(br#"{"specversion": "1.0", "type": 7}"#.to_vec()),
            headers: vec![(
                b"content-type".to_vec(),
                b"application/cloudevents+json; charset=\xff".to_vec(),
            )],
            fate: Fate::DeadLettered,
        },
        9 => Sent {
            key: Some(key),
            value: Some(dice.bytes(64).into_iter().map(|b| b | 0x80).collect()),
            headers: vec![
                (b"ce_specversion".to_vec(), b"1.0".to_vec()),
                (b"ce_id".to_vec(), id.clone().into_bytes()),
                (b"ce_type".to_vec(), b"load.event".to_vec()),
                (b"ce_source".to_vec(), b"\xff\xfe".to_vec()),
            ],
            fate: Fate::DeadLettered,
        },
        10 => Sent {
            key: Some(key),
            value: Some(valid(i, &id)),
            headers: vec![
                (b"bad\xffname".to_vec(), b"v".to_vec()),
                (Vec::new(), Vec::new()),
            ],
            fate: Fate::Answered,
        },
        11 => Sent {
            key: Some([key.as_slice(), b"\xff\xfe"].concat()),
            value: Some(valid(i, &id)),
            headers: Vec::new(),
            fate: Fate::Answered,
        },
        12 => Sent {
            key: Some([key.as_slice(), &vec![b'k'; 100_000]].concat()),
            value: Some(valid(i, &id)),
            headers: Vec::new(),
            fate: Fate::Answered,
        },
        13 if i % 400 == 13 => {
            let value = seed_event(
                &id,
                "load.event",
                "big",
                json!({"blob": "x".repeat(600_000)}),
            );
            plain(value.to_string().into_bytes(), Fate::Answered)
        }
        14 => Sent {
            key: Some(key),
            value: Some(br#"{"seq": 1}"#.to_vec()),
            headers: vec![
                (b"ce_specversion".to_vec(), b"1.0".to_vec()),
                (b"ce_id".to_vec(), id.clone().into_bytes()),
                (b"ce_type".to_vec(), b"load.event".to_vec()),
                (b"ce_source".to_vec(), b"/hostile".to_vec()),
                (b"content-type".to_vec(), b"application/json".to_vec()),
            ],
            fate: Fate::Answered,
        },
        _ => plain(b"[1, 2, 3]".to_vec(), Fate::DeadLettered),
    }
}

/// The record number a key or an event id starts with (`h-<n>`).
fn index_of(text: &str) -> Option<usize> {
    text.strip_prefix("h-")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn hostile_records_cost_only_themselves() {
    let (topic, out) = (unique("hostile"), unique("hostile.out"));
    let dlq = format!("{topic}.dlq");
    create_topics(&[&topic, &out, &dlq], PARTITIONS);
    let group = unique("g");
    let mut eddy = Eddy::start(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let sent: Vec<Sent> = (0..RECORDS).map(|i| record(i, &mut dice)).collect();
    let producer = producer();
    for one in &sent {
        let headers: Vec<(&[u8], &[u8])> = one
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        producer.send_raw(&topic, one.key.as_deref(), one.value.as_deref(), &headers);
    }
    producer.flush();

    let must = |fate: Fate| -> BTreeSet<usize> {
        (0..RECORDS).filter(|&i| sent[i].fate == fate).collect()
    };
    let (to_answer, to_dead_letter) = (must(Fate::Answered), must(Fate::DeadLettered));
    let cause = |r: &Record| r.json()["causation_id"].as_str().and_then(index_of);
    let mut answered_seen = BTreeSet::new();
    let answers = read_until(
        &bootstrap(),
        &[&out],
        Duration::from_secs(300),
        |_| true,
        |kept| {
            answered_seen.extend(kept.last().and_then(cause));
            to_answer.is_subset(&answered_seen)
        },
    );
    let key_index = |r: &Record| r.key.as_deref().and_then(index_of);
    let mut dead_seen = BTreeSet::new();
    let dead = read_until(
        &bootstrap(),
        &[&dlq],
        Duration::from_secs(300),
        |_| true,
        |kept| {
            dead_seen.extend(kept.last().and_then(key_index));
            to_dead_letter.is_subset(&dead_seen)
        },
    );
    let log = eddy.log();
    assert!(eddy.is_running(), "eddy stopped; log:\n{log}");
    assert_eq!(http_get(&eddy.http_addr(), "/healthz").0, 200);

    // Every record ends in exactly one place, once.
    let mut answers_of: BTreeMap<usize, usize> = BTreeMap::new();
    for record in &answers {
        let index = cause(record).unwrap_or_else(|| panic!("a follow-up of what? {record:?}"));
        *answers_of.entry(index).or_default() += 1;
    }
    let mut dead_of: BTreeMap<usize, &Record> = BTreeMap::new();
    for record in &dead {
        let index =
            key_index(record).unwrap_or_else(|| panic!("a dead letter of what? {record:?}"));
        assert!(
            dead_of.insert(index, record).is_none(),
            "record {index} dead-lettered twice"
        );
    }
    for (i, one) in sent.iter().enumerate() {
        let (answered, dead) = (answers_of.get(&i).copied().unwrap_or(0), dead_of.get(&i));
        match one.fate {
            Fate::Answered => assert!(
                answered == 1 && dead.is_none(),
                "record {i}: {answered} answers, dead {dead:?}; log:\n{log}"
            ),
            Fate::DeadLettered => assert!(
                answered == 0 && dead.is_some(),
                "record {i}: {answered} answers, dead {dead:?}"
            ),
            Fate::Either => assert!(
                answered + usize::from(dead.is_some()) == 1,
                "record {i}: {answered} answers, dead {dead:?}"
            ),
        }
        if let Some(dead) = dead {
            assert!(
                !dead.header("eddy-error").is_empty(),
                "record {i} has a reason"
            );
            assert_eq!(dead.value, one.value, "record {i} keeps its value");
            assert_eq!(
                dead.key.as_deref().map(str::as_bytes),
                one.key
                    .as_deref()
                    .filter(|k| std::str::from_utf8(k).is_ok()),
                "record {i} keeps its key"
            );
        }
    }
    println!(
        "hostile records: {} sent, {} answered, {} dead-lettered",
        RECORDS,
        answers.len(),
        dead.len()
    );

    eddy.stop();
    assert_eq!(
        committed(&group, &topic, PARTITIONS),
        end_offsets(&topic, PARTITIONS)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>(),
        "the committed offsets reach the end of every partition"
    );
}
