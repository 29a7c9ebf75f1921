//! Nothing lost: crashes, clean stops, broker outages and a second host, with
//! the loss checker as the oracle; and every bad plugin behaviour and bad
//! record ends in the dead-letter topic with its reason.
//!
//! - `interruptions`: eddy killed or stopped, a host joining, the broker away;
//! - `dead_letters`: bad behaviours and bad records, each with its reason;
//! - `stuck`: a partition that cannot move on holds up only itself.

mod dead_letters;
mod interruptions;
mod stuck;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::checker::{Sent, Verdict, check};
use crate::harness::{config_head, producer_for, read_until, seed_event};

const KEYS: usize = 64;

pub fn tagger_config(group: &str, topic: &str, out: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
         [plugin.tagger]\npublish_to = [\"{out}\"]\nconfig = {{ out_topic = \"{out}\" }}\n",
        config_head(group)
    )
}

/// Produces events `range` (of one numbering: event n has key n % KEYS
/// and is that key's event n / KEYS) to `topic` on `brokers`, in a thread,
/// spread over about `over`.
pub fn stream(
    brokers: String,
    topic: String,
    range: std::ops::Range<usize>,
    over: Duration,
) -> thread::JoinHandle<Vec<Sent>> {
    thread::spawn(move || {
        let producer = producer_for(&brokers);
        let mut sent = Vec::with_capacity(range.len());
        let started = Instant::now();
        let total = range.len();
        for (i, n) in range.enumerate() {
            let key = format!("key-{}", n % KEYS);
            let id = format!("{topic}-{n}");
            let seq = (n / KEYS) as u64;
            producer.send_json(
                &topic,
                &key,
                &seed_event(&id, "load.event", &key, json!({"seq": seq})),
            );
            sent.push(Sent { id, key, seq });
            if i % 500 == 499 {
                producer.flush();
                let due = over.mul_f64((i + 1) as f64 / total as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    thread::sleep(wait);
                }
            }
        }
        producer.flush();
        sent
    })
}

/// The checker's verdict on what reached `out`: read until every event sent
/// has a follow-up (duplicates do not count towards that), then to the end.
pub fn verdict_of(brokers: &str, out: &str, sent: &[Sent]) -> Verdict {
    let mut causes = std::collections::HashSet::new();
    let records = read_until(
        brokers,
        &[out],
        Duration::from_secs(300),
        |_| true,
        |kept| {
            if let Some(cause) = kept
                .last()
                .and_then(|r| r.json()["causation_id"].as_str().map(str::to_string))
            {
                causes.insert(cause);
            }
            causes.len() >= sent.len()
        },
    );
    check(sent, &records)
}
