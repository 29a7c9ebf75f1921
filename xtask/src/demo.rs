//! `cargo xtask demo`: builds the plugins and eddy, starts Kafka and eddy
//! with `eddy.toml`, produces a few events as the Python services write them
//! and prints the follow-ups they caused.

use std::collections::HashSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::{Value, json};

use crate::{build_host, build_plugins, kafka, root};

const TOPICS: &[&str] = &[
    "user.events",
    "order.events",
    "notification.commands",
    "order.alerts",
    "user.events.dlq",
    "order.events.dlq",
];

pub fn run() -> anyhow::Result<()> {
    build_plugins()?;
    let eddy = build_host(&[])?;
    kafka::start()?;
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(kafka::create_topics(TOPICS, 3))?;

    println!("\nxtask: starting eddy with eddy.toml\n");
    let mut host = Command::new(&eddy)
        .current_dir(root())
        .args(["run", "--config", "eddy.toml"])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .spawn()
        .context("cannot start eddy")?;
    let result = tokio.block_on(produce_and_show());
    stop(&mut host);
    result?;
    println!(
        "\nxtask: Kafka keeps running on {}; stop it with `cargo xtask kafka stop`.",
        kafka::BOOTSTRAP
    );
    Ok(())
}

fn stop(host: &mut Child) {
    let _ = Command::new("kill").arg(host.id().to_string()).status();
    let _ = host.wait();
}

/// Seed-style events as the Python services publish them.
fn seed_events(run: &str) -> Vec<(&'static str, String, Value)> {
    let event =
        |n: u32, event_type: &str, service: &str, aggregate: &str, key: &str, data: Value| {
            json!({
                "event_id": format!("demo-{run}-{n}"),
                "event_type": event_type,
                "timestamp": "2026-11-26T12:00:00Z",
                "service_name": service,
                "version": "1.0",
                "data": data,
                "metadata": {"source": "xtask-demo"},
                "aggregate_id": key,
                "aggregate_type": aggregate,
            })
        };
    let user = |n: u32, name: &str| {
        let id = format!("user-{run}-{n}");
        let data = json!({"user_id": id, "email": format!("{}@example.com", name.to_lowercase()), "name": name});
        (
            "user.events",
            id.clone(),
            event(n, "user.created", "user-service", "User", &id, data),
        )
    };
    vec![
        user(1, "Ada"),
        user(2, "Grace"),
        user(3, "Linus"),
        {
            let id = format!("user-{run}-3");
            (
                "user.events",
                id.clone(),
                event(
                    4,
                    "user.deleted",
                    "user-service",
                    "User",
                    &id,
                    json!({"user_id": id}),
                ),
            )
        },
        {
            let id = format!("user-{run}-2");
            (
                "user.events",
                id.clone(),
                event(
                    5,
                    "user.updated",
                    "user-service",
                    "User",
                    &id,
                    json!({"user_id": id, "name": "Grace H."}),
                ),
            )
        },
        (
            "order.events",
            format!("order-{run}-1"),
            event(
                6,
                "order.placed",
                "order-service",
                "Order",
                &format!("order-{run}-1"),
                json!({"order_id": format!("order-{run}-1"), "user_id": format!("user-{run}-1"), "amount": 1250.0, "currency": "EUR"}),
            ),
        ),
        (
            "order.events",
            format!("order-{run}-2"),
            event(
                7,
                "order.placed",
                "order-service",
                "Order",
                &format!("order-{run}-2"),
                json!({"order_id": format!("order-{run}-2"), "user_id": format!("user-{run}-2"), "amount": -3.0, "currency": "EUR"}),
            ),
        ),
    ]
}

async fn produce_and_show() -> anyhow::Result<()> {
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_millis()
        .to_string();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .create()?;
    let events = seed_events(&run);
    let mut ids = HashSet::new();
    println!("xtask: producing {} seed-style events:", events.len());
    for (topic, key, value) in &events {
        ids.insert(value["event_id"].as_str().unwrap_or_default().to_string());
        let payload = value.to_string();
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(&payload),
                Timeout::Never,
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("cannot produce to {topic}"))?;
        println!(
            "  -> {topic:<14} {:<14} key={key}",
            value["event_type"].as_str().unwrap_or("")
        );
    }

    // Expected: three welcome commands, one data_purged, one order.flagged,
    // and the order with a negative amount dead-lettered. user.updated has
    // no route and is passed over.
    let expected = 6;
    let viewer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .set("group.id", format!("eddy-demo-viewer-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    viewer.subscribe(&[
        "notification.commands",
        "user.events",
        "order.alerts",
        "order.events.dlq",
    ])?;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    println!("\nxtask: follow-ups caused by them:");
    while seen < expected && Instant::now() < deadline {
        let Some(message) = viewer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let value: Value = message
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or(Value::Null);
        let key = message
            .key()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if message.topic().ends_with(".dlq") {
            if !ids.contains(value["event_id"].as_str().unwrap_or_default()) {
                continue;
            }
            let reason = message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "eddy-error"))
                .and_then(|h| h.value)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            println!(
                "  <- {:<22} dead letter of {}: {reason}",
                message.topic(),
                value["event_id"]
            );
        } else {
            if !ids.contains(value["causation_id"].as_str().unwrap_or_default()) {
                continue;
            }
            println!("  <- {:<22} key={key}\n     {value}", message.topic());
        }
        seen += 1;
    }
    if seen < expected {
        anyhow::bail!("saw {seen} of {expected} follow-ups within 60 s; see eddy's log above");
    }
    Ok(())
}
