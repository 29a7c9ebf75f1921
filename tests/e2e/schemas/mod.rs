//! Schemas at both doors: events checked against schema files by type and
//! version, a schema file replaced mid-stream, follow-ups refused at
//! `publish`, and a real schema registry (Apicurio): the Confluent wire
//! format, an unknown id, a record written by Confluent's Python serializer,
//! and the registry stopped mid-stream.
//!
//! - `files`: schema files (`[schemas] dir`), and `eddy check` on them;
//! - `registry`: a schema registry (`[schemas] registry`).

mod files;
mod registry;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::{config_head, seed_event};

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
