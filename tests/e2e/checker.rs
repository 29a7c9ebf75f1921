//! A loss checker in the spirit of Jepsen's Kafka checks: given what was
//! produced and the follow-ups that came out, which events were lost, which
//! were handled more than once, and which keys saw their events out of order.

use std::collections::BTreeMap;
use std::fmt;

use crate::harness::Record;

/// One produced event: its id, key and position among its key's events.
#[derive(Debug, Clone)]
pub struct Sent {
    pub id: String,
    pub key: String,
    pub seq: u64,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub produced: usize,
    pub lost: Vec<String>,
    /// Event id → how many follow-ups it caused (only those above one).
    pub duplicated: BTreeMap<String, usize>,
    /// Keys whose first follow-ups did not come in the order produced.
    pub out_of_order: Vec<String>,
}

impl Verdict {
    pub fn duplicates(&self) -> usize {
        self.duplicated.values().map(|n| n - 1).sum()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "produced {}, lost {}, duplicated {} (extra follow-ups {}), keys out of order {}",
            self.produced,
            self.lost.len(),
            self.duplicated.len(),
            self.duplicates(),
            self.out_of_order.len()
        )
    }
}

/// Follow-ups name their event in `causation_id`; they are read in topic
/// order, so per key (one partition) in write order. A replay after a crash
/// repeats events, so order is judged on each event's first follow-up.
pub fn check(sent: &[Sent], follow_ups: &[Record]) -> Verdict {
    let by_id: BTreeMap<&str, &Sent> = sent.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_seq: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out_of_order: Vec<String> = Vec::new();
    for record in follow_ups {
        let cause = record.json()["causation_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let first = !count.contains_key(&cause);
        *count.entry(cause.clone()).or_default() += 1;
        let Some(event) = by_id.get(cause.as_str()).filter(|_| first) else {
            continue;
        };
        if let Some(previous) = last_seq.insert(&event.key, event.seq)
            && event.seq <= previous
            && !out_of_order.contains(&event.key)
        {
            out_of_order.push(event.key.clone());
        }
    }
    Verdict {
        produced: sent.len(),
        lost: sent
            .iter()
            .filter(|s| !count.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect(),
        duplicated: count.into_iter().filter(|(_, n)| *n > 1).collect(),
        out_of_order,
    }
}
