//! Latency at a fixed offered rate: produce → follow-up visible to a
//! consumer, per event, against the raw floor (produce → the event itself
//! visible). Each run has its own input topic and groups, and starts once
//! its reader and the scenario have their partitions.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use super::measure::{self, cpu_ticks, idle_share};
use super::{EddySetup, LATENCY_RATE, PARTITIONS, corpus_event, eddy_config, get, start_eddy};
use crate::kafka;

/// Offers `LATENCY_RATE` events/s to a fresh topic for `over` and measures,
/// per event, the time until its follow-up (`causation_id`) is read from `out`.
pub fn measure_latency(input: &str, out: &str, over: Duration) -> anyhow::Result<[f64; 3]> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (LATENCY_RATE as f64 * over.as_secs_f64()) as usize;
    // The reader starts where `out` ends now, by assignment: it misses no
    // follow-up, and needs no group to join first.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .set("group.id", format!("bench-latency-reader-{input}"))
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut from = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(out, p, Duration::from_secs(10))?;
        from.add_partition_offset(out, p, Offset::Offset(high))?;
    }
    let reader = {
        let sent = sent.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            consumer.assign(&from)?;
            let mut latencies = Vec::with_capacity(total);
            let deadline = Instant::now() + over + Duration::from_secs(60);
            while latencies.len() < total && Instant::now() < deadline {
                let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let now = Instant::now();
                let value: Value = message
                    .payload()
                    .and_then(|p| serde_json::from_slice(p).ok())
                    .unwrap_or(Value::Null);
                // A follow-up names its cause; read straight from the input
                // topic (the raw floor), the event itself.
                let cause = value["causation_id"]
                    .as_str()
                    .or_else(|| value["event_id"].as_str())
                    .unwrap_or_default();
                if let Some(at) = sent
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .get(cause)
                {
                    latencies.push((now - *at).as_secs_f64() * 1000.0);
                }
            }
            Ok(latencies)
        })
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .set("linger.ms", "0")
        .create()?;
    // Made up front, and sent in the bursts due each millisecond, so the
    // generator takes as little of the machine as it can.
    let events: Vec<(String, String)> = (0..total).map(|n| corpus_event(n, 0)).collect();
    let cpu_before = cpu_ticks();
    let started = Instant::now();
    for (n, (key, value)) in events.iter().enumerate() {
        let due = Duration::from_secs_f64(n as f64 / LATENCY_RATE as f64);
        if let Some(wait) = due.checked_sub(started.elapsed())
            && wait >= Duration::from_millis(1)
        {
            std::thread::sleep(wait);
        }
        let id = format!("bench-{n:08}");
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, Instant::now());
        while producer
            .send(BaseRecord::to(input).key(key).payload(value))
            .is_err()
        {
            producer.poll(Duration::from_millis(1));
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    let mut latencies = reader
        .join()
        .map_err(|_| anyhow::anyhow!("latency reader panicked"))??;
    if latencies.len() < total {
        println!(
            "xtask: bench: only {} of {total} follow-ups arrived within a minute",
            latencies.len()
        );
    }
    // On a small machine the broker, eddy and this load generator share the
    // cores: say how busy they were.
    println!(
        "xtask: bench: latency run from {input}: the machine was {:.0} % idle",
        100.0 * idle_share(&cpu_before)
    );
    if std::env::var_os("EDDY_BENCH_TRACE").is_some() {
        // Lowest and highest latency per quarter second, in arrival order.
        for chunk in latencies.chunks(LATENCY_RATE / 4) {
            let max = chunk.iter().copied().fold(0.0, f64::max);
            let min = chunk.iter().copied().fold(f64::MAX, f64::min);
            print!("[{min:.0}-{max:.0}] ");
        }
        println!();
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok([at(0.50), at(0.99), at(0.999)])
}

/// A fresh input topic for one latency measurement, named after the run.
pub fn latency_topic(who: &str, out: &str) -> anyhow::Result<String> {
    // A topic name holds no `@` (`<scenario>@baseline`).
    let input = format!(
        "bench.latency.{}.{}",
        who.replace('@', "-"),
        out.trim_start_matches("bench.out.")
    );
    tokio::runtime::Runtime::new()?.block_on(kafka::create_topics(&[&input], PARTITIONS))?;
    Ok(input)
}

/// Each latency run has its own input topic and consumer groups, so none
/// starts behind what an earlier one left.
pub fn latency_eddy(
    name: &str,
    binary: &Path,
    dir: &Path,
    setup: &EddySetup<'_>,
    over: Duration,
) -> anyhow::Result<[f64; 3]> {
    let input = latency_topic(name, setup.out)?;
    let config = eddy_config(
        dir,
        "latency-eddy",
        &format!("bench-latency-{input}"),
        &input,
        setup,
    )?;
    let running = start_eddy(binary, &config, "eddy.log")?;
    let started = Instant::now();
    while !get(&running.http, "/readyz").contains(" 200 ") {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("eddy did not get ready; see {}", running.log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = measure_latency(&input, setup.out, over);
    let mut child = running.child;
    measure::stop(&mut child);
    result
}

/// The Python bus's latency, once it has its partitions (it says
/// `assigned`).
pub fn latency_python(
    python: &Path,
    script: &Path,
    mode: &str,
    out: &str,
    over: Duration,
) -> anyhow::Result<[f64; 3]> {
    let input = latency_topic("python", out)?;
    let mut bus = Command::new(python)
        .arg(script)
        .args([
            kafka::BOOTSTRAP,
            &input,
            &format!("bench-latency-{input}"),
            mode,
            out,
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = bus.stdout.take().context("the bus's stdout")?;
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.trim() == "assigned" {
                let _ = said.send(());
            }
        }
    });
    if heard.recv_timeout(Duration::from_secs(60)).is_err() {
        measure::stop(&mut bus);
        bail!("the Python bus was given no partitions within a minute");
    }
    let result = measure_latency(&input, out, over);
    measure::stop(&mut bus);
    result
}
