//! `cargo xtask bench [--quick]`: eddy against the fastest reader of the same
//! stream (a bare librdkafka consumer) and against the Python aiokafka bus
//! its users run today, one after another in one run, on the local broker.
//!
//! Each scenario reads the whole corpus with a fresh consumer group, as its
//! own process, whose CPU time and peak RSS come from /proc (or from the
//! process itself where it exits on its own). Latency is measured apart, at
//! a fixed offered rate: produce → follow-up visible to a consumer.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};

use crate::{
    build_plugin_workspace, build_plugins, cargo, cargo_target_dir, kafka, root, run_command,
};

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
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--quick" => options.quick = true,
            "--only" => {
                let list = args.next().context("--only needs a list of scenarios")?;
                options.only = Some(list.split(',').map(str::to_string).collect());
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
    let python = python_env(&dir)?;
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

    let mut results = Vec::new();
    println!("xtask: bench: raw consumer");
    let mut raw = self_measured(
        "raw",
        events,
        Command::new(std::env::current_exe()?).args([
            "bench-raw",
            kafka::BOOTSTRAP,
            &corpus,
            &group("raw"),
            &events.to_string(),
        ]),
    )?;
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
        // Scaling out: the same group in 2 and 3 processes.
        ("eddy-noop-x2", &eddy, "noop"),
        ("eddy-noop-x3", &eddy, "noop"),
        ("eddy-followup", &eddy, "tagger"),
        ("eddy-followup-reuse", &eddy, "tagger"),
        ("eddy-followup-eos", &eddy, "tagger"),
        ("eddy-followup-eos-reuse", &eddy, "tagger"),
        // The follow-up producer's compression (lz4 by default) off and
        // zstd, with reused instances so that its cost is not lost in
        // instantiation.
        ("eddy-followup-reuse-none", &eddy, "tagger"),
        ("eddy-followup-reuse-zstd", &eddy, "tagger"),
        ("native", &native_copy, "native-noop"),
    ] {
        if !options.wants(name) {
            continue;
        }
        println!("xtask: bench: {name}");
        let setup = EddySetup {
            plugin,
            plugins: &plugins,
            out: &out,
            reuse: name.contains("-reuse"),
            exactly_once: name.contains("-eos"),
            compression: ["none", "zstd"].into_iter().find(|c| name.ends_with(c)),
        };
        let config = eddy_config(&dir, name, &group(name), &corpus, &setup)?;
        let before = kafka::topic_bytes(&out);
        let hosts = name
            .strip_prefix("eddy-noop-x")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let mut scenario = eddy_scenario(name, binary, &config, events, hosts)?;
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
    ] {
        if !options.wants(name) {
            continue;
        }
        println!("xtask: bench: {name}");
        let script = root().join("xtask/bench/python_bus.py");
        let mut scenario = self_measured(
            name,
            events,
            Command::new(&python).arg(&script).args([
                kafka::BOOTSTRAP,
                &corpus,
                &group(name),
                &events.to_string(),
                mode,
                &out,
            ]),
        )?;
        if mode == "followup" {
            scenario.latency_ms = Some(latency_python(&python, &script, &out, latency_for)?);
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
            .args(["bench", "--package", "eddy-host", "--bench", "dispatch"])
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
            .args([
                "build",
                "--release",
                "--package",
                "eddy-host",
                "--bin",
                "eddy",
            ])
            .args(features),
    )?;
    Ok(cargo_target_dir().join("release/eddy"))
}

/// A virtual environment with aiokafka from PyPI, made once.
fn python_env(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run_command(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let has = Command::new(&python)
        .args(["-c", "import aiokafka"])
        .status()?
        .success();
    if !has {
        run_command(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "aiokafka==0.14.0",
        ]))?;
    }
    Ok(python)
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

/// `xtask bench-raw BROKERS TOPIC GROUP COUNT`: reads COUNT records and
/// prints the figures as one JSON line.
pub fn raw(args: &[&str]) -> anyhow::Result<()> {
    let [brokers, topic, group, count] = args else {
        bail!("usage: bench-raw BROKERS TOPIC GROUP COUNT");
    };
    let count: usize = count.parse()?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", *brokers)
        .set("group.id", *group)
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < count {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message?;
            std::hint::black_box(message.payload());
            seen += 1;
        }
    }
    let (cpu_s, peak_rss_mb) = usage(std::process::id())?;
    println!(
        "{}",
        json!({"events": seen, "seconds": started.elapsed().as_secs_f64(), "cpu_s": cpu_s, "peak_rss_mb": peak_rss_mb})
    );
    Ok(())
}

/// CPU seconds (user + system) and peak RSS in MiB of process `pid`.
fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    // Linux counts CPU time in clock ticks of 1/100 s (USER_HZ).
    Ok((ticks / 100.0, hwm_kb / 1024.0))
}

/// Runs a process that reads the corpus and prints its own figures.
fn self_measured(
    name: &'static str,
    events: usize,
    command: &mut Command,
) -> anyhow::Result<Scenario> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {name}"))?;
    if !output.status.success() {
        bail!("{name} failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    let figures: Value =
        serde_json::from_str(line).with_context(|| format!("{name} printed {line:?}"))?;
    Ok(Scenario {
        name,
        events,
        seconds: figures["seconds"].as_f64().unwrap_or_default(),
        cpu_s: figures["cpu_s"].as_f64().unwrap_or_default(),
        peak_rss_mb: figures["peak_rss_mb"].as_f64().unwrap_or_default(),
        latency_ms: None,
        out_bytes: None,
        idle: None,
    })
}

/// Events per instance in the `-reuse` scenarios.
const REUSE: u32 = 1_000;

/// What an eddy scenario runs: which plugin, from where, publishing where.
struct EddySetup<'a> {
    plugin: &'a str,
    plugins: &'a Path,
    out: &'a str,
    /// Whether the plugin opts in to instance reuse ([`REUSE`]).
    reuse: bool,
    /// `[kafka] delivery = "exactly-once"`.
    exactly_once: bool,
    /// The follow-up producer's `compression.type`, if any.
    compression: Option<&'a str>,
}

fn eddy_config(
    dir: &Path,
    name: &str,
    group: &str,
    topic: &str,
    setup: &EddySetup<'_>,
) -> anyhow::Result<PathBuf> {
    let EddySetup {
        plugin,
        plugins,
        out,
        reuse,
        exactly_once,
        compression,
    } = *setup;
    let producer = match compression {
        Some(codec) => format!("[kafka.producer]\n\"compression.type\" = \"{codec}\"\n\n"),
        None => String::new(),
    };
    let delivery = if exactly_once {
        format!("delivery = \"exactly-once\"\ntransactional_id = \"{group}\"\n")
    } else {
        String::new()
    };
    let reuse = if reuse { REUSE } else { 1 };
    let scenario = dir.join(name);
    let plugin_dir = scenario.join("plugins");
    let _ = fs::remove_dir_all(&scenario);
    fs::create_dir_all(&plugin_dir)?;
    if plugin != "native-noop" {
        fs::copy(
            plugins.join(format!("{plugin}.wasm")),
            plugin_dir.join(format!("{plugin}.wasm")),
        )?;
    }
    let config = scenario.join("eddy.toml");
    fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\n{delivery}\n\
             {producer}[plugins]\ndir = \"plugins\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.created\"]\nplugin = \"{plugin}\"\n\n\
             [plugin.{plugin}]\npublish_to = [\"{out}\"]\nevents_per_instance = {reuse}\n\
             config = {{ out_topic = \"{out}\" }}\n",
            kafka::BOOTSTRAP
        ),
    )?;
    Ok(config)
}

struct Running {
    child: Child,
    log: PathBuf,
    http: String,
}

fn start_eddy(binary: &Path, config: &Path, log: &str) -> anyhow::Result<Running> {
    let log = config.with_file_name(log);
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,eddy_host::app=info")
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("cannot start eddy")?;
    let started = Instant::now();
    let marker = "/readyz on http://";
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find(marker) {
            let http: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return Ok(Running { child, log, http });
        }
        if started.elapsed() > Duration::from_secs(60) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            bail!("eddy did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The sum of `eddy_events_handled_total` over its series.
fn handled(addr: &str) -> f64 {
    get(addr, "/metrics")
        .lines()
        .filter(|l| l.starts_with("eddy_events_handled_total"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn stop(mut running: Running) {
    let _ = Command::new("kill")
        .arg(running.child.id().to_string())
        .status();
    let _ = running.child.wait();
}

/// Runs `hosts` eddy processes in one group on the corpus until together
/// they have handled `events`.
fn eddy_scenario(
    name: &'static str,
    binary: &Path,
    config: &Path,
    events: usize,
    hosts: usize,
) -> anyhow::Result<Scenario> {
    let cpu_before = cpu_ticks();
    let started = Instant::now();
    let fleet = (0..hosts)
        .map(|i| start_eddy(binary, config, &format!("eddy-{i}.log")))
        .collect::<anyhow::Result<Vec<Running>>>()?;
    // `-probed`: /readyz asked without pause by PROBERS clients meanwhile.
    let probing = Arc::new(std::sync::atomic::AtomicBool::new(
        name.ends_with("-probed"),
    ));
    let probers: Vec<_> = (0..PROBERS)
        .filter(|_| probing.load(Ordering::Relaxed))
        .map(|_| {
            let (probing, http) = (probing.clone(), fleet[0].http.clone());
            std::thread::spawn(move || {
                let mut asked = 0u64;
                while probing.load(Ordering::Relaxed) {
                    get(&http, "/readyz");
                    asked += 1;
                }
                asked
            })
        })
        .collect();
    while fleet.iter().map(|r| handled(&r.http)).sum::<f64>() < events as f64 {
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "{name} did not finish within an hour; see {}",
                fleet[0].log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let idle = idle_share(&cpu_before);
    let (mut cpu_s, mut peak_rss_mb) = (0.0, 0.0);
    for running in &fleet {
        let (cpu, rss) = usage(running.child.id())?;
        cpu_s += cpu;
        peak_rss_mb += rss;
    }
    probing.store(false, Ordering::Relaxed);
    if !probers.is_empty() {
        let asked: u64 = probers.into_iter().map(|p| p.join().unwrap_or(0)).sum();
        println!(
            "xtask: bench: {name}: {asked} /readyz requests in {seconds:.1} s from {PROBERS} clients"
        );
    }
    for running in fleet {
        stop(running);
    }
    Ok(Scenario {
        name,
        events,
        seconds,
        cpu_s,
        peak_rss_mb,
        latency_ms: None,
        out_bytes: None,
        idle: Some(idle),
    })
}

/// The machine's CPU ticks (user, nice, system, idle, iowait, …).
fn cpu_ticks() -> Vec<u64> {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// The share of the machine's CPU time (idle and I/O wait) since `before`.
fn idle_share(before: &[u64]) -> f64 {
    let busy: Vec<u64> = cpu_ticks()
        .iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let ticks: u64 = busy.iter().sum();
    let idle = busy.get(3).copied().unwrap_or(0) + busy.get(4).copied().unwrap_or(0);
    idle as f64 / ticks.max(1) as f64
}

/// Offers `LATENCY_RATE` events/s to a fresh topic for `over` and measures,
/// per event, the time until its follow-up (`causation_id`) is read from `out`.
fn measure_latency(input: &str, out: &str, over: Duration) -> anyhow::Result<[f64; 3]> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (LATENCY_RATE as f64 * over.as_secs_f64()) as usize;
    let reader = {
        let (sent, out, input) = (sent.clone(), out.to_string(), input.to_string());
        std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", kafka::BOOTSTRAP)
                .set("group.id", format!("bench-latency-reader-{input}"))
                .set("auto.offset.reset", "latest")
                .set("fetch.wait.max.ms", "5")
                .create()?;
            consumer.subscribe(&[&out])?;
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
    // Let the reader join its group before the first event.
    std::thread::sleep(Duration::from_secs(3));
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
fn latency_topic(who: &str, out: &str) -> anyhow::Result<String> {
    let input = format!(
        "bench.latency.{who}.{}",
        out.trim_start_matches("bench.out.")
    );
    tokio::runtime::Runtime::new()?.block_on(kafka::create_topics(&[&input], PARTITIONS))?;
    Ok(input)
}

/// Each latency run has its own input topic and consumer groups, so none
/// starts behind what an earlier one left.
fn latency_eddy(
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
    stop(running);
    result
}

fn latency_python(
    python: &Path,
    script: &Path,
    out: &str,
    over: Duration,
) -> anyhow::Result<[f64; 3]> {
    let input = latency_topic("python", out)?;
    let total = (LATENCY_RATE as f64 * over.as_secs_f64()) as usize;
    let mut bus = Command::new(python)
        .arg(script)
        .args([
            kafka::BOOTSTRAP,
            &input,
            &format!("bench-latency-{input}"),
            &total.to_string(),
            "followup",
            out,
        ])
        .stdout(Stdio::null())
        .spawn()?;
    let result = measure_latency(&input, out, over);
    let _ = bus.kill();
    let _ = bus.wait();
    result
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map(|kb| (kb / 1024.0 / 1024.0).round())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": memory_gib,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

/// The bars, each as measured in this run.
fn print_bars(scenarios: &[Value]) {
    // A figure of a scenario, by JSON pointer; NaN if the run lacks it.
    let figure = |name: &str, pointer: &str| {
        scenarios
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s.pointer(pointer)?.as_f64())
            .unwrap_or(f64::NAN)
    };
    let rate = |name: &str| figure(name, "/events_per_s");
    let p99 = |name: &str| figure(name, "/latency_ms/p99");
    println!("\nbar                                   fresh      reuse     needed");
    let ratio = |what: &str, a: &str, b: &str, needed: &str| {
        println!(
            "{what:<34} {:>8.3} {:>10.3} {needed:>10}",
            rate(a) / rate(b),
            rate(&format!("{a}-reuse")) / rate(b)
        );
    };
    ratio("eddy no-op / raw", "eddy-noop", "raw", ">= 0.8");
    ratio("eddy follow-up / raw", "eddy-followup", "raw", ">= 0.5");
    println!(
        "{:<34} {:>8.3} {:>10.3} {:>10}",
        "exactly-once / at-least-once fu.",
        rate("eddy-followup-eos") / rate("eddy-followup"),
        rate("eddy-followup-eos-reuse") / rate("eddy-followup-reuse"),
        ">= 0.7"
    );
    ratio(
        "eddy no-op / python bus no-op",
        "eddy-noop",
        "python-bus-noop",
        ">= 10",
    );
    println!(
        "{:<34} {:>8.3} {:>10.3} {:>10}",
        "native no-op / eddy no-op",
        rate("native") / rate("eddy-noop"),
        rate("native") / rate("eddy-noop-reuse"),
        "<= 1.25"
    );
    println!(
        "{:<34} {:>8.3} {:>10} {:>10}",
        "no-op under a /readyz flood / no-op",
        rate("eddy-noop-probed") / rate("eddy-noop"),
        "",
        ">= 0.95"
    );
    println!(
        "{:<34} {:>8.1} {:>10.1} {:>10}",
        "follow-up p99 ms at 5,000/s",
        p99("eddy-followup"),
        p99("eddy-followup-reuse"),
        "< 5"
    );
    println!(
        "{:<34} {:>8.1} {:>10.1} {:>10}",
        "  exactly-once p99 ms at 5,000/s",
        p99("eddy-followup-eos"),
        p99("eddy-followup-eos-reuse"),
        ""
    );
    println!(
        "{:<34} {:>8.1} {:>10} {:>10}",
        "  (raw produce → consume p99 ms)",
        p99("raw"),
        "",
        ""
    );
}

fn report(dir: &Path, results: &[Scenario]) -> anyhow::Result<()> {
    let raw_rate = results
        .iter()
        .find(|s| s.name == "raw")
        .map_or(f64::NAN, |s| s.events as f64 / s.seconds);
    let machine = machine();
    let scenarios: Vec<Value> = results
        .iter()
        .map(|s| {
            let rate = s.events as f64 / s.seconds;
            json!({
                "name": s.name,
                "events": s.events,
                "events_per_s": rate.round(),
                "ratio_to_raw": (rate / raw_rate * 1000.0).round() / 1000.0,
                "cpu_s_per_million": (s.cpu_s / s.events as f64 * 1e6 * 10.0).round() / 10.0,
                "peak_rss_mb": (s.peak_rss_mb * 10.0).round() / 10.0,
                "latency_ms": s.latency_ms.map(|[p50, p99, p999]| json!({"p50": p50, "p99": p99, "p999": p999})),
                "follow_up_bytes_per_event": s.out_bytes.map(|b| (b as f64 / s.events as f64 * 10.0).round() / 10.0),
                "machine_idle_percent": s.idle.map(|i| (i * 100.0).round()),
            })
        })
        .collect();
    let document = json!({"machine": machine, "scenarios": scenarios});
    let path = dir.join("results.json");
    fs::write(&path, serde_json::to_string_pretty(&document)?)?;
    println!(
        "\nmachine: {} ({} cores, {} GiB)",
        machine["cpu"], machine["cores"], machine["memory_gib"]
    );
    println!(
        "{:<20} {:>9} {:>10} {:>8} {:>12} {:>9} {:>6} {:>24}",
        "scenario",
        "events",
        "events/s",
        "vs raw",
        "cpu s / 1M",
        "peak MB",
        "idle %",
        "latency p50/p99/p999 ms"
    );
    for s in &scenarios {
        let latency = match &s["latency_ms"] {
            Value::Null => "-".to_string(),
            l => format!(
                "{:.1} / {:.1} / {:.1}",
                l["p50"].as_f64().unwrap_or(f64::NAN),
                l["p99"].as_f64().unwrap_or(f64::NAN),
                l["p999"].as_f64().unwrap_or(f64::NAN)
            ),
        };
        let idle = match &s["machine_idle_percent"] {
            Value::Null => "-".to_string(),
            idle => idle.to_string(),
        };
        println!(
            "{:<20} {:>9} {:>10} {:>8} {:>12} {:>9} {:>6} {:>24}",
            s["name"].as_str().unwrap_or_default(),
            s["events"],
            s["events_per_s"],
            s["ratio_to_raw"],
            s["cpu_s_per_million"],
            s["peak_rss_mb"],
            idle,
            latency
        );
    }
    let stored: Vec<&Value> = scenarios
        .iter()
        .filter(|s| !s["follow_up_bytes_per_event"].is_null())
        .collect();
    if !stored.is_empty() {
        println!("\nfollow-ups stored by the broker (record batches as sent), bytes per event:");
        for s in stored {
            println!(
                "  {:<26} {:>8}",
                s["name"].as_str().unwrap_or_default(),
                s["follow_up_bytes_per_event"]
            );
        }
    }
    print_bars(&scenarios);
    println!("\nxtask: wrote {}", path.display());
    Ok(())
}
