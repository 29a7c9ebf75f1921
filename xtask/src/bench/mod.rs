//! `cargo xtask bench [--quick]`: eddy against the fastest reader of the same
//! stream (a bare librdkafka consumer) and against the Python aiokafka bus
//! its users run today, one after another in one run, on the local broker.
//!
//! Each scenario reads the whole corpus with a fresh consumer group, as its
//! own processes, and every one is timed the same way (`measure`): from
//! starting them until their effect is durable, with their CPU time and
//! peak RSS from /proc and the machine's idle share meanwhile. Latency is
//! measured apart (`latency`), at a fixed offered rate: produce → follow-up
//! visible to a consumer.
//!
//! - `eddy`: an eddy scenario's config and processes;
//! - `measure`: the clock, durability, CPU and memory;
//! - `latency`: the latency runs;
//! - `report`: the table, `results.json` and the bars.

mod eddy;
mod latency;
mod measure;
mod report;
mod sink;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;

use crate::{
    build_plugin_workspace, build_plugins, cargo, cargo_target_dir, kafka, root, run_command,
};
use eddy::{EddySetup, eddy_config, eddy_scenario, get, start_eddy};
use latency::{latency_eddy, latency_python, latency_topic, measure_latency};
use measure::{Durable, cpu_ticks, measure};
use report::report;

const PARTITIONS: i32 = 6;
const KEYS: usize = 10_000;
const LATENCY_RATE: usize = 5_000;
/// Clients asking /readyz without pause in the `-probed` scenario.
const PROBERS: usize = 4;

struct Scenario {
    name: &'static str,
    events: usize,
    seconds: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
    latency_ms: Option<[f64; 3]>,
    /// Bytes of follow-ups the broker stored, for the scenarios that
    /// publish.
    out_bytes: Option<u64>,
    /// How much of the machine was idle meanwhile (eddy scenarios).
    idle: Option<f64>,
}

/// What `cargo xtask bench` was asked for.
pub struct Options {
    /// 20,000 events instead of 1,000,000.
    quick: bool,
    /// Only these scenarios (and the raw floor); no criterion run.
    only: Option<Vec<String>>,
    /// An earlier `eddy` binary: each eddy scenario is run again with it,
    /// right after, as `<scenario>@baseline`, for a before/after in one run.
    baseline: Option<PathBuf>,
}

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == scenario))
    }
}

/// `[--quick] [--only a,b]`.
pub fn options(args: &[&str]) -> anyhow::Result<Options> {
    let mut options = Options {
        quick: false,
        only: None,
        baseline: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--quick" => options.quick = true,
            "--only" => {
                let list = args.next().context("--only needs a list of scenarios")?;
                options.only = Some(list.split(',').map(str::to_string).collect());
            }
            "--baseline" => {
                let path = args.next().context("--baseline needs an eddy binary")?;
                let path = PathBuf::from(path);
                anyhow::ensure!(
                    path.is_file(),
                    "--baseline {} is not a file",
                    path.display()
                );
                options.baseline = Some(path);
            }
            other => bail!("unknown bench option {other:?}"),
        }
    }
    Ok(options)
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let quick = options.quick;
    let events = if quick { 20_000 } else { 1_000_000 };
    let latency_for = Duration::from_secs(if quick { 3 } else { 10 });
    let dir = root().join("target/bench");
    fs::create_dir_all(&dir)?;
    build_plugins()?;
    let plugins = dir.join("plugins");
    build_plugin_workspace(&root().join("tests/plugins"), &plugins)?;
    let native = build_eddy(&["--features", "bench-native"])?;
    let native_copy = dir.join("eddy-native");
    fs::copy(&native, &native_copy)?;
    let eddy = build_eddy(&[])?;
    let python = crate::python::aiokafka()?;
    kafka::start()?;
    delete_run_topics()?;
    let corpus = format!("bench.corpus.{events}");
    ensure_corpus(&corpus, events)?;

    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let out = format!("bench.out.{run_id}");
    let tokio = tokio::runtime::Runtime::new()?;
    tokio.block_on(kafka::create_topics(&[&out], PARTITIONS))?;
    let group = |name: &str| format!("bench-{name}-{run_id}");

    let observer = measure::observer("bench-observer")?;
    let span_sink = sink::Sink::start()?;
    // Every scenario is timed alike: from starting its processes until its
    // effect is durable (Durable).
    let mut results = Vec::new();
    println!("xtask: bench: raw consumer");
    let raw_group = group("raw");
    let cpu_before = cpu_ticks();
    let started = Instant::now();
    let reader = Command::new(std::env::current_exe()?)
        .args(["bench-raw", kafka::BOOTSTRAP, &corpus, &raw_group])
        .spawn()?;
    let durable = Durable::Committed {
        group: &raw_group,
        topic: &corpus,
    };
    let mut raw = measure("raw", events, started, &cpu_before, vec![reader], &durable)?;
    // The floor under every latency: produce → visible to a consumer, with
    // nothing in between, through the same broker.
    let input = latency_topic("raw", &out)?;
    raw.latency_ms = Some(measure_latency(&input, &input, latency_for)?);
    results.push(raw);
    // `-reuse`: the plugin opts in to serving up to REUSE events per instance.
    for (name, binary, plugin) in [
        ("eddy-noop", &eddy, "noop"),
        ("eddy-noop-reuse", &eddy, "noop"),
        ("eddy-noop-probed", &eddy, "noop"),
        // Every event's data checked against a schema file first.
        ("eddy-noop-validated", &eddy, "noop"),
        // Scaling out: the same group in 2 and 3 processes.
        ("eddy-noop-x2", &eddy, "noop"),
        ("eddy-noop-x3", &eddy, "noop"),
        ("eddy-followup", &eddy, "tagger"),
        ("eddy-followup-reuse", &eddy, "tagger"),
        // Spans exported (to a sink that takes and drops them): the cost of
        // tracing switched on, beside eddy-followup with it off.
        ("eddy-followup-traced", &eddy, "tagger"),
        ("eddy-followup-eos", &eddy, "tagger"),
        ("eddy-followup-eos-reuse", &eddy, "tagger"),
        // The follow-up producer's codecs, with reused instances so that
        // their cost is not lost in instantiation.
        ("eddy-followup-reuse-none", &eddy, "tagger"),
        ("eddy-followup-reuse-gzip", &eddy, "tagger"),
        ("eddy-followup-reuse-lz4", &eddy, "tagger"),
        ("eddy-followup-reuse-zstd", &eddy, "tagger"),
        ("native", &native_copy, "native-noop"),
    ]
    .into_iter()
    .filter(|(name, _, _)| options.wants(name))
    .flat_map(|(name, binary, plugin)| {
        let baseline = options
            .baseline
            .as_ref()
            .filter(|_| name != "native")
            .map(|old| {
                // Leaked: a scenario's name is 'static, and xtask ends soon.
                let name: &'static str = Box::leak(format!("{name}@baseline").into_boxed_str());
                (name, old, plugin)
            });
        std::iter::once((name, binary, plugin)).chain(baseline)
    }) {
        println!("xtask: bench: {name}");
        let setup = EddySetup {
            plugin,
            plugins: &plugins,
            out: &out,
            reuse: name.contains("-reuse"),
            exactly_once: name.contains("-eos"),
            compression: ["none", "gzip", "lz4", "zstd"]
                .into_iter()
                .find(|c| name.ends_with(c)),
            traced: name
                .ends_with("-traced")
                .then_some(span_sink.endpoint.as_str()),
            validated: name.ends_with("-validated"),
        };
        let group = group(name);
        let config = eddy_config(&dir, name, &group, &corpus, &setup)?;
        let before = kafka::topic_bytes(&out);
        let hosts = name
            .strip_prefix("eddy-noop-x")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let from = measure::high_water_sum(&observer, &out).context("the output topic")?;
        // Exactly-once: the offsets commit with the follow-ups, and the
        // output topic holds transaction markers besides them.
        let durable = if name.starts_with("eddy-followup") && !setup.exactly_once {
            Durable::Written {
                topic: &out,
                from,
                count: events as i64,
            }
        } else {
            Durable::Committed {
                group: &group,
                topic: &corpus,
            }
        };
        let taken_before = span_sink.taken();
        let mut scenario = eddy_scenario(name, binary, &config, events, hosts, &durable)?;
        if setup.traced.is_some() {
            let (exports, bytes) = span_sink.taken();
            println!(
                "xtask: bench: {name}: the sink took {} exports, {} MB of spans",
                exports - taken_before.0,
                (bytes - taken_before.1) / 1_000_000
            );
        }
        if name.starts_with("eddy-followup") {
            scenario.out_bytes = Some(kafka::topic_bytes(&out).saturating_sub(before));
        }
        if name.starts_with("eddy-followup") {
            scenario.latency_ms = Some(latency_eddy(name, binary, &dir, &setup, latency_for)?);
        }
        results.push(scenario);
    }
    for (name, mode) in [
        ("python-bus-noop", "noop"),
        ("python-bus-followup", "followup"),
        // Sends without waiting, and awaits the batch's sends before its
        // commit: still at-least-once.
        ("python-bus-followup-pipelined", "followup-pipelined"),
    ] {
        if !options.wants(name) {
            continue;
        }
        println!("xtask: bench: {name}");
        let script = root().join("xtask/bench/python_bus.py");
        let group = group(name);
        let from = measure::high_water_sum(&observer, &out).context("the output topic")?;
        let durable = if mode == "noop" {
            Durable::Committed {
                group: &group,
                topic: &corpus,
            }
        } else {
            Durable::Written {
                topic: &out,
                from,
                count: events as i64,
            }
        };
        let cpu_before = cpu_ticks();
        let started = Instant::now();
        let bus = Command::new(&python)
            .arg(&script)
            .args([kafka::BOOTSTRAP, &corpus, &group, mode, &out])
            .stdout(Stdio::null())
            .spawn()?;
        let mut scenario = measure(name, events, started, &cpu_before, vec![bus], &durable)?;
        if mode != "noop" {
            scenario.latency_ms = Some(latency_python(&python, &script, mode, &out, latency_for)?);
        }
        results.push(scenario);
    }
    report(&dir, &results)?;
    delete_run_topics()?;
    if options.only.is_some() {
        return Ok(());
    }

    println!("\nxtask: bench: one event through decode → instantiate → call → collect (criterion)");
    fs::copy(
        root().join("target/plugins/welcome-email.wasm"),
        plugins.join("welcome-email.wasm"),
    )?;
    run_command(
        cargo()
            .current_dir(root())
            .args(["bench", "--package", "eddy-pipeline", "--bench", "dispatch"])
            .env("EDDY_BENCH_PLUGINS", &plugins),
    )
}

/// `cargo xtask bench-latency [--reuse]`: only eddy's follow-up latency at
/// [`LATENCY_RATE`], for 10 s, against the raw floor measured just before.
pub fn latency_only(reuse: bool) -> anyhow::Result<()> {
    let dir = root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let plugins = dir.join("plugins");
    build_plugin_workspace(&root().join("tests/plugins"), &plugins)?;
    let eddy = build_eddy(&[])?;
    kafka::start()?;
    delete_run_topics()?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let out = format!("bench.out.{run_id}");
    tokio::runtime::Runtime::new()?.block_on(kafka::create_topics(&[&out], PARTITIONS))?;
    let over = Duration::from_secs(10);
    let input = latency_topic("raw", &out)?;
    let [p50, p99, p999] = measure_latency(&input, &input, over)?;
    println!("raw floor: p50 {p50:.1} ms, p99 {p99:.1} ms, p999 {p999:.1} ms");
    let name = if reuse {
        "eddy-followup-reuse"
    } else {
        "eddy-followup"
    };
    let setup = EddySetup {
        plugin: "tagger",
        plugins: &plugins,
        out: &out,
        reuse,
        exactly_once: false,
        compression: None,
        traced: None,
        validated: false,
    };
    let [p50, p99, p999] = latency_eddy(name, &eddy, &dir, &setup, over)?;
    println!("{name}: p50 {p50:.1} ms, p99 {p99:.1} ms, p999 {p999:.1} ms");
    delete_run_topics()
}

/// The topics a bench run writes besides the corpus: its follow-ups and its
/// latency inputs, a gigabyte or more per full run. Deleted before a run
/// (what a failed run left) and after it.
const RUN_TOPICS: &[&str] = &["bench.out.", "bench.latency."];

fn delete_run_topics() -> anyhow::Result<()> {
    let deleted =
        tokio::runtime::Runtime::new()?.block_on(kafka::delete_topics_named(RUN_TOPICS))?;
    if deleted > 0 {
        println!("xtask: bench: deleted {deleted} topics of bench runs");
    }
    Ok(())
}

/// Builds eddy in release with `features`; its path.
pub fn build_eddy(features: &[&str]) -> anyhow::Result<PathBuf> {
    run_command(
        cargo()
            .current_dir(root())
            .args(["build", "--release", "--package", "eddy", "--bin", "eddy"])
            .args(features),
    )?;
    Ok(cargo_target_dir().join("release/eddy"))
}

/// A seed-style `user.created`, about 300 bytes.
fn corpus_event(n: usize, sent_us: u128) -> (String, String) {
    let user = format!("user-{:05}", n % KEYS);
    let value = json!({
        "event_id": format!("bench-{n:08}"),
        "event_type": "user.created",
        "timestamp": "2026-11-26T12:00:00.000000Z",
        "service_name": "user-service",
        "version": "1.0",
        "data": {"user_id": user, "email": format!("{user}@example.com"), "name": "Ada Lovelace",
                 "plan": "pro", "sent_us": sent_us, "seq": n / KEYS},
        "metadata": {"source": "bench"},
        "aggregate_id": user,
        "aggregate_type": "User",
    });
    (user, value.to_string())
}

fn producer() -> anyhow::Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces the corpus once; a later run finds it and reuses it.
fn ensure_corpus(topic: &str, events: usize) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .create()?;
    let mut present = 0i64;
    for p in 0..PARTITIONS {
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
            present += high - low;
        }
    }
    if present == events as i64 {
        println!("xtask: bench: reusing the corpus {topic} ({events} events)");
        return Ok(());
    }
    if present != 0 {
        bail!(
            "topic {topic} holds {present} records, not {events}; delete target/kafka/data or the topic"
        );
    }
    tokio::runtime::Runtime::new()?.block_on(kafka::create_topics(&[topic], PARTITIONS))?;
    println!("xtask: bench: producing the corpus {topic} ({events} events)");
    let producer = producer()?;
    for n in 0..events {
        let (key, value) = corpus_event(n, 0);
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(())
}

/// `xtask bench-raw BROKERS TOPIC GROUP`: reads the topic in its group
/// until it is stopped, committing what it read every second as eddy does:
/// the floor under any reader of the stream.
pub fn raw(args: &[&str]) -> anyhow::Result<()> {
    let [brokers, topic, group] = args else {
        bail!("usage: bench-raw BROKERS TOPIC GROUP");
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", *brokers)
        .set("group.id", *group)
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "1000")
        .create()?;
    consumer.subscribe(&[topic])?;
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            std::hint::black_box(message?.payload());
        }
    }
}
