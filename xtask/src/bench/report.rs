//! The figures of a run: a table, `results.json`, and the bars of the
//! performance issues as this run measured them.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::Scenario;

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
    println!(
        "{:<34} {:>8.3} {:>10} {:>10}",
        "schema-checked / not (no-op)",
        rate("eddy-noop-validated") / rate("eddy-noop"),
        "–",
        "–"
    );
    println!(
        "{:<34} {:>8.3} {:>10} {:>10}",
        "spans exported / not (follow-up)",
        rate("eddy-followup-traced") / rate("eddy-followup"),
        "–",
        "–"
    );
    ratio(
        "eddy no-op / python bus no-op",
        "eddy-noop",
        "python-bus-noop",
        ">= 1 / 2",
    );
    ratio(
        "eddy follow-up / python pipelined",
        "eddy-followup",
        "python-bus-followup-pipelined",
        ">= 3",
    );
    println!(
        "{:<34} {:>8.3} {:>10.3} {:>10}",
        "native no-op / eddy no-op",
        rate("native") / rate("eddy-noop"),
        rate("native") / rate("eddy-noop-reuse"),
        "<= 2"
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

pub fn report(dir: &Path, results: &[Scenario]) -> anyhow::Result<()> {
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
        "{:<30} {:>9} {:>10} {:>8} {:>12} {:>9} {:>6} {:>24}",
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
            "{:<30} {:>9} {:>10} {:>8} {:>12} {:>9} {:>6} {:>24}",
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
    print_baselines(&scenarios);
    println!("\nxtask: wrote {}", path.display());
    Ok(())
}

/// Each scenario run again with `--baseline`'s binary, beside this one's.
fn print_baselines(scenarios: &[Value]) {
    let pairs: Vec<(&Value, &Value)> = scenarios
        .iter()
        .filter_map(|old| {
            let name = old["name"].as_str()?.strip_suffix("@baseline")?;
            let new = scenarios.iter().find(|s| s["name"] == name)?;
            Some((new, old))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!("\nthis build / baseline                 events/s   CPU per event   peak RSS");
    for (new, old) in pairs {
        let ratio = |pointer: &str| {
            let figure = |s: &Value| s.pointer(pointer).and_then(Value::as_f64);
            match (figure(new), figure(old)) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
                _ => "–".to_string(),
            }
        };
        println!(
            "{:<34} {:>11} {:>14} {:>10}",
            new["name"].as_str().unwrap_or_default(),
            ratio("/events_per_s"),
            ratio("/cpu_s_per_million"),
            ratio("/peak_rss_mb")
        );
    }
}
