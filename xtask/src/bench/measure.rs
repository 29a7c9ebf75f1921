//! Timing a scenario the same way whatever runs it: from the start of its
//! processes until its effect is durable (whole-process figures), with the
//! CPU time and peak memory of its processes and the machine's idle share
//! meanwhile, all read from outside the processes.

use std::fs;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::bail;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{PARTITIONS, Scenario};
use crate::kafka;

/// When a scenario's work is done for good.
pub enum Durable<'a> {
    /// The group's committed offsets reach the end of `topic`: every event
    /// was handled and will not be read again (no-op; exactly-once, whose
    /// offsets commit with the follow-ups).
    Committed { group: &'a str, topic: &'a str },
    /// `topic` holds `count` more records than it did at `from` (the sum of
    /// its partitions' high-water marks): every follow-up is written.
    Written {
        topic: &'a str,
        from: i64,
        count: i64,
    },
}

impl Durable<'_> {
    fn reached(&self, consumer: &BaseConsumer) -> bool {
        match self {
            Durable::Committed { topic, .. } => {
                let mut asked = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    asked.add_partition(topic, p);
                }
                let Ok(committed) = consumer.committed_offsets(asked, Duration::from_secs(5))
                else {
                    return false;
                };
                (0..PARTITIONS).all(|p| {
                    let done = match committed.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => return false,
                    };
                    consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(5))
                        .is_ok_and(|(_, high)| done >= high)
                })
            }
            Durable::Written { topic, from, count } => {
                high_water_sum(consumer, topic).is_some_and(|sum| sum - from >= *count)
            }
        }
    }

    fn group(&self) -> &str {
        match self {
            Durable::Committed { group, .. } => group,
            Durable::Written { .. } => "bench-observer",
        }
    }
}

/// The sum of `topic`'s high-water marks.
pub fn high_water_sum(consumer: &BaseConsumer, topic: &str) -> Option<i64> {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .ok()
                .map(|(_, high)| high)
        })
        .sum()
}

/// An observer client (it joins no group; for committed offsets it names
/// the scenario's).
pub fn observer(group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", kafka::BOOTSTRAP)
        .set("group.id", group)
        // Committed offsets as they are, without waiting for open
        // transactions.
        .set("isolation.level", "read_uncommitted")
        .create()?)
}

/// Waits until `durable`, timed from `started` (just before `processes`
/// were spawned); then takes the processes' CPU and memory and stops them.
pub fn measure(
    name: &'static str,
    events: usize,
    started: Instant,
    cpu_before: &[u64],
    mut processes: Vec<Child>,
    durable: &Durable<'_>,
) -> anyhow::Result<Scenario> {
    let consumer = observer(durable.group())?;
    while !durable.reached(&consumer) {
        if let Some(exited) = processes
            .iter_mut()
            .find_map(|p| p.try_wait().ok().flatten())
        {
            bail!("{name} exited ({exited}) before its work was done");
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("{name} did not finish within an hour");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let idle = idle_share(cpu_before);
    let (mut cpu_s, mut peak_rss_mb) = (0.0, 0.0);
    for process in &processes {
        let (cpu, rss) = usage(process.id())?;
        cpu_s += cpu;
        peak_rss_mb += rss;
    }
    for process in &mut processes {
        stop(process);
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

/// SIGTERM, and waits.
pub fn stop(process: &mut Child) {
    let _ = Command::new("kill").arg(process.id().to_string()).status();
    let _ = process.wait();
}

/// The kernel's clock ticks per second, for /proc's CPU times (USER_HZ).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) and peak RSS in MiB of process `pid`.
pub fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
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
    Ok((ticks / clock_ticks(), hwm_kb / 1024.0))
}

/// The machine's CPU ticks (user, nice, system, idle, iowait, …).
pub fn cpu_ticks() -> Vec<u64> {
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
pub fn idle_share(before: &[u64]) -> f64 {
    let busy: Vec<u64> = cpu_ticks()
        .iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let ticks: u64 = busy.iter().sum();
    let idle = busy.get(3).copied().unwrap_or(0) + busy.get(4).copied().unwrap_or(0);
    idle as f64 / ticks.max(1) as f64
}
