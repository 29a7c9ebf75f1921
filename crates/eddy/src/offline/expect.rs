//! Comparing what `eddy test` produced with an expected file, field by
//! field. Effects are matched per event (the `line` each names), in order,
//! so an event that gains a follow-up shows as one difference, not as every
//! line after it shifted.
//!
//! A few fields differ on every run or every build: the id and time a
//! plugin left to the host, and the plugin's version. They are compared by
//! shape (a UUID against a UUID, a time against a time), not by value.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Fields compared by shape only, as paths into an effect.
const BY_SHAPE: [&str; 4] = [
    "value.event_id",
    "value.timestamp",
    "headers.eddy-plugin-version",
    "headers.traceparent",
];

/// The effects in an expected file, as JSON values.
pub fn read(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the expected file {}", path.display()))?;
    let mut effects = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let effect = serde_json::from_str(line)
            .with_context(|| format!("{} line {} is not JSON", path.display(), index + 1))?;
        effects.push(effect);
    }
    Ok(effects)
}

/// What differs between `expected` (from the file called `name`) and
/// `actual`, one readable line per difference; empty when they match.
pub fn differences(name: &str, expected: &[Value], actual: &[Value]) -> Vec<String> {
    let expected_by_event = by_event(expected);
    let actual_by_event = by_event(actual);
    let mut events: Vec<u64> = expected_by_event
        .keys()
        .chain(actual_by_event.keys())
        .copied()
        .collect();
    events.sort_unstable();
    events.dedup();
    let mut out = Vec::new();
    for event in events {
        let wanted = expected_by_event.get(&event).map_or(&[][..], Vec::as_slice);
        let got = actual_by_event.get(&event).map_or(&[][..], Vec::as_slice);
        for i in 0..wanted.len().max(got.len()) {
            match (wanted.get(i), got.get(i)) {
                (Some((at, e)), Some((_, a))) => {
                    let mut fields = Vec::new();
                    compare("", e, a, &mut fields);
                    for field in fields {
                        out.push(format!("{name} line {at} ({}): {field}", describe(e)));
                    }
                }
                (Some((at, e)), None) => out.push(format!(
                    "{name} line {at} ({}): missing from the output: {e}",
                    describe(e)
                )),
                (None, Some((_, a))) => out.push(format!("not in {name} ({}): {a}", describe(a))),
                (None, None) => {}
            }
        }
    }
    out
}

/// Effects by the events-file line they came from, each with its place
/// (1-based) in the list.
fn by_event(effects: &[Value]) -> BTreeMap<u64, Vec<(usize, &Value)>> {
    let mut grouped: BTreeMap<u64, Vec<(usize, &Value)>> = BTreeMap::new();
    for (index, effect) in effects.iter().enumerate() {
        let line = effect.get("line").and_then(Value::as_u64).unwrap_or(0);
        grouped.entry(line).or_default().push((index + 1, effect));
    }
    grouped
}

/// `event on line 3, follow-up to emails`.
fn describe(effect: &Value) -> String {
    let text = |field: &str| effect.get(field).and_then(Value::as_str).unwrap_or("?");
    let line = effect.get("line").and_then(Value::as_u64).unwrap_or(0);
    match text("effect") {
        "skipped" => format!("event on line {line}, skipped"),
        kind => format!("event on line {line}, {kind} to {}", text("topic")),
    }
}

/// Appends to `out` what differs between `expected` and `actual` at `path`.
fn compare(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    if BY_SHAPE.contains(&path) {
        let (e, a) = (shape(expected), shape(actual));
        if e != a {
            out.push(format!(
                "{path}: expected {e} (compared by shape), got {actual}"
            ));
        }
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, wanted) in e {
                let at = join(path, key);
                match a.get(key) {
                    Some(got) => compare(&at, wanted, got, out),
                    None => out.push(format!("{at}: expected {wanted}, missing")),
                }
            }
            for (key, got) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                out.push(format!("{}: not expected, got {got}", join(path, key)));
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (wanted, got)) in e.iter().zip(a).enumerate() {
                compare(&format!("{path}[{i}]"), wanted, got, out);
            }
        }
        _ if expected != actual => {
            out.push(format!("{path}: expected {expected}, got {actual}"));
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// What kind of value a varying field holds.
fn shape(value: &Value) -> &'static str {
    let Some(text) = value.as_str() else {
        return if value.is_null() {
            "null"
        } else {
            "a non-string"
        };
    };
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = text.split('-').collect();
    let uuid = parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| hex(p));
    if uuid {
        "a UUID"
    } else if eddy_core::trace::TraceParent::parse(text).is_ok() {
        "a W3C traceparent"
    } else if time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .is_ok()
    {
        "an RFC 3339 time"
    } else if hex(text) {
        "a hex string"
    } else if text.is_empty() {
        "an empty string"
    } else {
        "a string"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn follow_up(line: u64, email: &str, id: &str, time: &str) -> Value {
        json!({
            "line": line, "effect": "follow-up", "topic": "emails", "key": "u1",
            "headers": {"eddy-plugin-version": "0123456789ab"},
            "value": {"event_id": id, "timestamp": time, "data": {"email": email}},
        })
    }

    #[test]
    fn ids_times_and_versions_match_by_shape() {
        let expected = [follow_up(
            1,
            "a@x",
            "0192f0c4-1111-7000-8000-000000000001",
            "2026-11-30T10:00:00Z",
        )];
        let mut actual = follow_up(
            1,
            "a@x",
            "0193aaaa-2222-7000-8000-00000000000f",
            "2026-12-01T11:12:13.5+00:00",
        );
        actual["headers"]["eddy-plugin-version"] = json!("fedcba987654");
        assert!(differences("expected.jsonl", &expected, &[actual.clone()]).is_empty());
        actual["value"]["event_id"] = json!("not-an-id");
        let found = differences("expected.jsonl", &expected, &[actual]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("value.event_id: expected a UUID"),
            "{found:?}"
        );
    }

    #[test]
    fn a_difference_names_the_line_and_the_field() {
        let id = "0192f0c4-1111-7000-8000-000000000001";
        let time = "2026-11-30T10:00:00Z";
        let expected = [follow_up(1, "a@x", id, time), follow_up(2, "b@x", id, time)];
        let actual = [
            follow_up(1, "a@x", id, time),
            follow_up(2, "c@x", id, time),
            follow_up(2, "d@x", id, time),
        ];
        let found = differences("expected.jsonl", &expected, &actual);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            found[0],
            "expected.jsonl line 2 (event on line 2, follow-up to emails): \
             value.data.email: expected \"b@x\", got \"c@x\""
        );
        assert!(found[1].starts_with("not in expected.jsonl (event on line 2, follow-up"));
    }

    #[test]
    fn a_missing_effect_and_a_missing_field_are_named() {
        let id = "0192f0c4-1111-7000-8000-000000000001";
        let time = "2026-11-30T10:00:00Z";
        let mut without_key = follow_up(1, "a@x", id, time);
        without_key.as_object_mut().unwrap().remove("key");
        let expected = [follow_up(1, "a@x", id, time), follow_up(3, "b@x", id, time)];
        let found = differences("e", &expected, &[without_key]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].ends_with("key: expected \"u1\", missing"),
            "{found:?}"
        );
        assert!(found[1].starts_with("e line 2 (event on line 3, follow-up to emails): missing"));
    }
}
