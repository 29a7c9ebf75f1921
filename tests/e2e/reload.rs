//! Hot reload under live traffic: plugin versions swapped, a corrupt file, a
//! route change, a plugin removed and put back — nothing lost, nothing
//! handled twice, nothing handled by a half-loaded plugin.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::harness::{
    Eddy, PluginFile, Record, config_head, create_topics, dead_letters, env_path, producer, read,
    read_to_end, seed_event, unique,
};

fn tagger_config(group: &str, topic: &str, out: &str, event_types: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [{event_types}]\nplugin = \"tagger\"\n\n\
         [plugin.tagger]\npublish_to = [\"{out}\"]\nconfig = {{ out_topic = \"{out}\" }}\n",
        config_head(group)
    )
}

fn tagger_file(version: &str) -> std::path::PathBuf {
    let dir = env_path("EDDY_TEST_PLUGIN_DIR");
    match version {
        "v1" => dir.join("tagger.wasm"),
        _ => dir.join("tagger-v2.wasm"),
    }
}

/// Puts `from` at `to` as `cp` does (in place) or as an editor does (a
/// temporary file renamed over it).
fn land(from: &Path, to: &Path, atomically: bool) {
    if atomically {
        let partial = to.with_file_name(".tagger.wasm.tmp");
        std::fs::copy(from, &partial).expect("copy plugin");
        std::fs::rename(&partial, to).expect("rename plugin");
    } else {
        std::fs::copy(from, to).expect("copy plugin");
    }
}

fn timestamp(record: &Record) -> SystemTime {
    let text = record.json()["timestamp"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("follow-up timestamp {text:?}: {e}"));
    SystemTime::UNIX_EPOCH + Duration::from_nanos(parsed.unix_timestamp_nanos() as u64)
}

#[test]
fn plugins_and_routes_reload_under_live_traffic_with_nothing_lost() {
    const EVENTS: usize = 20_000;
    const KEYS: usize = 48;
    const STEPS: usize = 40;
    const STEP: Duration = Duration::from_millis(400);
    const CORRUPT_AT: usize = 10;
    const ROUTE_CHANGE_AT: usize = 20;

    let (topic, out) = (unique("reload.in"), unique("reload.out"));
    create_topics(&[&topic, &out], 6);
    let group = unique("g");
    let mut eddy = Eddy::start(&tagger_config(&group, &topic, &out, "\"load.steady\""), &[]);
    let target = eddy.plugin_dir().join("tagger.wasm");
    land(&tagger_file("v1"), &target, true);
    assert!(
        eddy.wait_for_log("plugin loaded", 1, Duration::from_secs(30)),
        "the first version never loaded; log:\n{}",
        eddy.log()
    );

    // A steady stream for the whole run, so there is always an event for a
    // new version to take; `load.late` events only once their route is live.
    let late_route = Arc::new(AtomicBool::new(false));
    let producing = {
        let (topic, late_route) = (topic.clone(), late_route.clone());
        std::thread::spawn(move || {
            let producer = producer();
            let over = STEP * STEPS as u32;
            let started = Instant::now();
            let mut expected = Vec::with_capacity(EVENTS);
            for n in 0..EVENTS {
                let key = format!("key-{}", n % KEYS);
                let late = late_route.load(Ordering::SeqCst) && n % 5 == 0;
                let event_type = if late { "load.late" } else { "load.steady" };
                let id = format!("{topic}-{n}");
                let seq = n / KEYS;
                producer.send_json(
                    &topic,
                    &key,
                    &seed_event(&id, event_type, &key, json!({"seq": seq})),
                );
                expected.push(id);
                if n % 100 == 99 {
                    producer.flush();
                    let due = over.mul_f64((n + 1) as f64 / EVENTS as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            producer.flush();
            expected
        })
    };

    let mut swaps: Vec<(SystemTime, &str)> = Vec::new();
    let mut version = "v1";
    for step in 0..STEPS {
        std::thread::sleep(STEP);
        if step == CORRUPT_AT {
            std::fs::write(&target, b"\0asm\x0d\0\x01\0 this is not a whole component")
                .expect("corrupt");
        } else if step == ROUTE_CHANGE_AT {
            let config = tagger_config(&group, &topic, &out, "\"load.steady\", \"load.late\"");
            std::fs::write(eddy.dir.join("eddy.toml"), config).expect("write config");
            assert!(
                eddy.wait_for_log("config reloaded", 1, Duration::from_secs(30)),
                "the route change was not applied; log:\n{}",
                eddy.log()
            );
            late_route.store(true, Ordering::SeqCst);
        } else {
            version = if version == "v1" { "v2" } else { "v1" };
            land(&tagger_file(version), &target, step % 2 == 0);
            swaps.push((SystemTime::now(), version));
        }
    }
    let mut expected = producing.join().expect("producer");

    // The last swap takes effect and stays: events sent one at a time until
    // one is handled by the last version, then a tail of one per key, all
    // of which it must handle.
    let last = swaps.last().map(|(_, tag)| *tag).expect("swaps");
    let producer = producer();
    let send = |n: usize, expected: &mut Vec<String>| {
        let key = format!("key-{}", n % KEYS);
        let id = format!("{topic}-{n}");
        let event = seed_event(&id, "load.steady", &key, json!({"seq": n / KEYS}));
        producer.send_json(&topic, &key, &event);
        producer.flush();
        expected.push(id.clone());
        id
    };
    let mut n = EVENTS;
    let settled = Instant::now();
    loop {
        let probe = send(n, &mut expected);
        n += 1;
        let answer = read(&[&out], 1, Duration::from_secs(30), |r| {
            r.json()["causation_id"] == probe.as_str()
        });
        if answer.iter().any(|r| r.json()["data"]["tag"] == last) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "the last swap ({last}) never took effect; log:\n{}",
            eddy.log()
        );
    }
    let tail: Vec<String> = (n..n + KEYS).map(|n| send(n, &mut expected)).collect();

    let records = read(&[&out], expected.len(), Duration::from_secs(240), |_| true);
    let wrong: Vec<&Record> = records
        .iter()
        .filter(|r| {
            tail.iter()
                .any(|id| r.json()["causation_id"] == id.as_str())
        })
        .filter(|r| r.json()["data"]["tag"] != last)
        .collect();
    assert!(wrong.is_empty(), "after the last swap ({last}), {wrong:?}");
    let log = eddy.log();
    assert!(eddy.is_running());
    eddy.stop();

    // Every event: exactly one follow-up.
    let mut by_cause: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        let cause = record.json()["causation_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *by_cause.entry(cause).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !by_cause.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &usize)> = by_cause.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        missing.is_empty(),
        "{} events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "{} events handled more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(records.len(), expected.len());

    // Follow-ups per key in order.
    let mut last_seq: BTreeMap<String, i64> = BTreeMap::new();
    for record in &records {
        let seq = record.json()["data"]["seq"].as_i64().expect("seq");
        let key = record.key.clone().unwrap_or_default();
        if let Some(previous) = last_seq.insert(key.clone(), seq) {
            assert!(seq > previous, "key {key}: seq {seq} after {previous}");
        }
    }

    // Each follow-up came from one of the two whole versions, and the
    // version header matches the tag the code put in.
    let mut versions: BTreeMap<String, String> = BTreeMap::new();
    for record in &records {
        let tag = record.json()["data"]["tag"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let hash = record.header("eddy-plugin-version").to_string();
        assert!(tag == "v1" || tag == "v2", "unknown tag {tag:?}");
        let known = versions.entry(tag.clone()).or_insert_with(|| hash.clone());
        assert_eq!(*known, hash, "{tag} came from two different files");
    }
    assert_eq!(
        versions.len(),
        2,
        "both versions handled events: {versions:?}"
    );
    assert!(
        log.contains("keeps serving"),
        "the corrupt file was refused; log:\n{log}"
    );

    // A swap is seen when its version handled events after it landed and
    // before the next swap landed; the latency is from the file landing to
    // the first of those. When a load takes longer than the 400 ms between
    // swaps (a busy machine), the next file is there before it is done and
    // the watcher takes that one: intermediate versions may be skipped, but
    // both versions are seen taking over from the other.
    let windows = swaps.iter().enumerate().map(|(i, (landed, tag))| {
        let until = swaps.get(i + 1).map(|(next, _)| *next);
        (*landed, until, *tag)
    });
    let mut latencies = Vec::new();
    let mut unobserved = Vec::new();
    // A latency counts only when the swap before was seen: else the version
    // landing may still be serving from the swap before that.
    let mut previous_seen = true;
    for (landed, until, tag) in windows {
        let first = records
            .iter()
            .filter(|r| r.json()["data"]["tag"] == tag)
            .map(timestamp)
            .filter(|t| *t >= landed && until.is_none_or(|until| *t < until))
            .min();
        match first.and_then(|first| first.duration_since(landed).ok()) {
            Some(latency) => {
                if previous_seen {
                    latencies.push(latency);
                }
                previous_seen = true;
            }
            None => {
                unobserved.push(tag);
                previous_seen = false;
            }
        }
    }
    for tag in ["v1", "v2"] {
        assert!(
            swaps.iter().filter(|(_, t)| *t == tag).count()
                > unobserved.iter().filter(|t| **t == tag).count(),
            "no swap to {tag} was seen taking over"
        );
    }
    latencies.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reload latency over {} swaps (of {}; {} not seen): min {:.0} ms, median {:.0} ms, max {:.0} ms ({} events, {} follow-ups by v1, {} by v2)",
        latencies.len(),
        swaps.len(),
        unobserved.len(),
        latencies.first().map(ms).unwrap_or_default(),
        latencies
            .get(latencies.len() / 2)
            .map(ms)
            .unwrap_or_default(),
        latencies.last().map(ms).unwrap_or_default(),
        expected.len(),
        records
            .iter()
            .filter(|r| r.json()["data"]["tag"] == "v1")
            .count(),
        records
            .iter()
            .filter(|r| r.json()["data"]["tag"] == "v2")
            .count(),
    );
}

#[test]
fn a_removed_plugin_dead_letters_its_events_until_it_is_back() {
    let (topic, out) = (unique("reload.in"), unique("reload.out"));
    create_topics(&[&topic, &out], 1);
    let config = tagger_config(&unique("g"), &topic, &out, "\"*\"");
    let mut eddy = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    let producer = producer();
    let send = |phase: &str| -> Vec<String> {
        let ids: Vec<String> = (0..5).map(|n| format!("{topic}-{phase}-{n}")).collect();
        for (n, id) in ids.iter().enumerate() {
            producer.send_json(
                &topic,
                "k",
                &seed_event(id, "any.thing", "k", json!({"seq": n})),
            );
        }
        producer.flush();
        ids
    };
    let caused_by = |ids: &[String]| {
        read(&[&out], ids.len(), Duration::from_secs(60), |r| {
            ids.iter().any(|id| r.json()["causation_id"] == id.as_str())
        })
    };

    assert_eq!(caused_by(&send("before")).len(), 5, "log:\n{}", eddy.log());

    let plugin = eddy.plugin_dir().join("tagger.wasm");
    std::fs::remove_file(&plugin).expect("remove plugin");
    assert!(
        eddy.wait_for_log("plugin file removed", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let gone = send("gone");
    let dead = dead_letters(&topic, 5);
    assert_eq!(dead.len(), 5, "log:\n{}", eddy.log());
    for record in &dead {
        assert!(
            record.header("eddy-error").starts_with("plugin-missing"),
            "{:?}",
            record.headers
        );
        assert!(
            gone.iter()
                .any(|id| record.json()["event_id"] == id.as_str())
        );
    }

    // A broken config edit is refused and the running config keeps going.
    std::fs::write(eddy.dir.join("eddy.toml"), "[kafka\nthis is not toml").expect("write config");
    assert!(
        eddy.wait_for_log("config change refused", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );

    std::fs::copy(tagger_file("v1"), &plugin).expect("put plugin back");
    assert!(
        eddy.wait_for_log("plugin loaded", 2, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    assert_eq!(caused_by(&send("back")).len(), 5, "log:\n{}", eddy.log());
    let also_handled = read_to_end(&[&out], |r| {
        gone.iter()
            .any(|id| r.json()["causation_id"] == id.as_str())
    });
    assert!(
        also_handled.is_empty(),
        "dead-lettered events were not also handled"
    );
    eddy.stop();
}

/// The "N plugins loaded in X ms (M from the compiled cache)" line of
/// eddy's `start`-th start, as (X, M).
fn load_line(log: &str, start: usize) -> (u64, usize) {
    let line = log
        .lines()
        .filter(|l| l.contains("plugins loaded in"))
        .nth(start - 1)
        .unwrap_or_else(|| panic!("no load line for start {start}; log:\n{log}"));
    let after = |marker: &str| -> String {
        let at = line.find(marker).expect(marker) + marker.len();
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect()
    };
    let ms = after("loaded in ").parse().expect("ms");
    let cached = after("ms (").parse().expect("cached");
    (ms, cached)
}

#[test]
fn a_restart_loads_unchanged_plugins_from_the_compiled_cache_and_never_trusts_a_damaged_entry() {
    let (topic, out, group) = (unique("cache"), unique("cache.out"), unique("g"));
    create_topics(&[&topic, &out], 1);
    let config = tagger_config(&group, &topic, &out, "\"*\"").replace(
        "dir = \"plugins\"\n",
        "dir = \"plugins\"\ncompiled_cache = \"compiled\"\n",
    );
    let mut eddy = Eddy::start(
        &config,
        &[PluginFile::Test("tagger"), PluginFile::Test("chaos")],
    );
    let answered = |n: usize| {
        let event = seed_event(
            &format!("cache-{n}"),
            "order.placed",
            "k",
            json!({"seq": n}),
        );
        let sending = producer();
        sending.send_json(&topic, "k", &event);
        sending.flush();
        read(&[&out], n, Duration::from_secs(60), |_| true).len() >= n
    };
    assert!(answered(1), "log:\n{}", eddy.log());
    eddy.stop();
    eddy.launch();
    assert!(answered(2), "log:\n{}", eddy.log());
    // One entry damaged: it is deleted and its plugin compiled again.
    let entries: Vec<_> = std::fs::read_dir(eddy.dir.join("compiled"))
        .expect("the cache folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let mut contents = std::fs::read(&entries[0]).expect("an entry");
    let middle = contents.len() / 2;
    contents[middle] ^= 0xff;
    std::fs::write(&entries[0], &contents).expect("damage it");
    eddy.stop();
    eddy.launch();
    assert!(answered(3), "log:\n{}", eddy.log());
    let log = eddy.log();
    let (compiled, cached, damaged) = (load_line(&log, 1), load_line(&log, 2), load_line(&log, 3));
    println!(
        "two plugins loaded: compiled {} ms, from the cache {} ms, one entry damaged {} ms",
        compiled.0, cached.0, damaged.0
    );
    assert_eq!((compiled.1, cached.1, damaged.1), (0, 2, 1), "log:\n{log}");
    assert_eq!(
        log.matches("its checksum does not match its contents")
            .count(),
        1,
        "log:\n{log}"
    );
    eddy.stop();
}

#[test]
fn a_plugin_file_written_slowly_is_loaded_once_complete_and_never_before() {
    let (topic, out, group) = (unique("slow"), unique("slow.out"), unique("g"));
    create_topics(&[&topic, &out], 1);
    let eddy = Eddy::start(
        &tagger_config(&group, &topic, &out, "\"*\""),
        &[PluginFile::Test("tagger")],
    );
    assert!(
        eddy.wait_for_log("plugin loaded", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    // v2 written in place in five parts, each once eddy has refused the
    // partial file before it: eddy sees every partial file.
    let v2 = std::fs::read(env_path("EDDY_TEST_PLUGIN_DIR").join("tagger-v2.wasm")).expect("v2");
    let mut file = std::fs::File::create(eddy.plugin_dir().join("tagger.wasm")).expect("open");
    let parts: Vec<&[u8]> = v2.chunks(v2.len().div_ceil(5)).collect();
    for (written, part) in parts.iter().enumerate() {
        std::io::Write::write_all(&mut file, part).expect("write");
        std::io::Write::flush(&mut file).expect("flush");
        if written + 1 < parts.len() {
            assert!(
                eddy.wait_for_log(
                    "a file still being written is tried again",
                    written + 1,
                    Duration::from_secs(30)
                ),
                "partial file {} not refused; log:\n{}",
                written + 1,
                eddy.log()
            );
        }
    }
    drop(file);
    assert!(
        eddy.wait_for_log("plugin reloaded", 1, Duration::from_secs(30)),
        "log:\n{}",
        eddy.log()
    );
    let sending = producer();
    sending.send_json(
        &topic,
        "k",
        &seed_event("slow-1", "order.placed", "k", json!({"seq": 1})),
    );
    sending.flush();
    let answers = read(&[&out], 1, Duration::from_secs(60), |_| true);
    assert_eq!(answers.len(), 1, "log:\n{}", eddy.log());
    assert_eq!(answers[0].json()["data"]["tag"], "v2");
    let log = eddy.log();
    // Partial files were refused, v1 serving meanwhile; the whole one
    // loaded once.
    assert!(
        log.matches("a file still being written is tried again")
            .count()
            >= 2,
        "log:\n{log}"
    );
    assert_eq!(log.matches("plugin reloaded").count(), 1, "log:\n{log}");
}
