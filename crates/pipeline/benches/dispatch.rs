//! One event through decode → instantiate → call → collect, per plugin (and
//! so per plugin size). Run by `cargo xtask bench`; the plugin files come
//! from `EDDY_BENCH_PLUGINS` (a folder of `.wasm` files).
//!
//! Modes: `fresh` (an instance per event, slots reset as `eddy run` would
//! reset them on this host), `fresh-whole-reset` (the same with the reset
//! used where pages can be swapped out) and `reused` (an instance serves up
//! to 1,000 events).

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use eddy_core::config::PluginSettings;
use eddy_core::envelope;
use eddy_core::outcome::Outcome;
use eddy_core::{Delivery, Event, trace};
use eddy_kafka::trace_headers;
use eddy_sandbox::{Runtime, SlotReset, Trigger};
use rdkafka::Timestamp;
use rdkafka::message::OwnedMessage;

const EVENT: &str = r#"{"event_id": "bench-00000001", "event_type": "user.created",
    "timestamp": "2026-11-26T12:00:00.000000Z", "service_name": "user-service", "version": "1.0",
    "data": {"user_id": "user-00001", "email": "user-00001@example.com", "name": "Ada Lovelace",
             "plan": "pro", "seq": 1},
    "metadata": {"source": "bench"}, "aggregate_id": "user-00001", "aggregate_type": "User"}"#;

fn dispatch(c: &mut Criterion) {
    let Some(dir) = std::env::var_os("EDDY_BENCH_PLUGINS").map(PathBuf::from) else {
        eprintln!("EDDY_BENCH_PLUGINS is not set: run `cargo xtask bench`");
        return;
    };
    let runtime = Runtime::new().expect("the wasm engine");
    let whole = Runtime::with_slot_reset(SlotReset::Whole, "the bench asks for it")
        .expect("the wasm engine");
    let (reset, why) = runtime.slot_reset();
    eprintln!("fresh: slots reset by {} ({why})", reset.as_str());
    let settings = Arc::new(PluginSettings {
        publish_to: vec!["bench.out".into(), "notification.commands".into()],
        config: [("out_topic".to_string(), "bench.out".to_string())].into(),
        ..PluginSettings::default()
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the plugin folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    // The default (a fresh instance per event) and the opt-in reuse of an
    // instance for up to 1,000 events.
    let reused = Arc::new(PluginSettings {
        events_per_instance: 1_000,
        ..(*settings).clone()
    });
    let mut group = c.benchmark_group("decode-instantiate-call-collect");
    for path in files {
        let bytes = std::fs::read(&path).expect("plugin file");
        let (Ok(plugin), Ok(whole_plugin)) = (
            runtime.load_file(&path, &bytes),
            whole.load_file(&path, &bytes),
        ) else {
            continue;
        };
        let (plugin, whole_plugin) = (Arc::new(plugin), Arc::new(whole_plugin));
        let size = format!("{} KiB", bytes.len() / 1024);
        let modes = [
            ("fresh", &runtime, &plugin, &settings),
            ("fresh-whole-reset", &whole, &whole_plugin, &settings),
            ("reused", &runtime, &plugin, &reused),
        ];
        for (mode, runtime, plugin, settings) in modes {
            let id = BenchmarkId::new(format!("{}/{mode}", plugin.name()), &size);
            let mut warm = None;
            group.bench_function(id, |b| {
                b.iter(|| {
                    let event: Event =
                        envelope::decode(Some(EVENT.as_bytes()), []).expect("an event");
                    let delivery = Delivery {
                        topic: "user.events".into(),
                        partition: 0,
                        offset: 1,
                        key: Some(b"user-00001".to_vec()),
                        attempt: 1,
                    };
                    // What the host does per record: read its trace context
                    // and derive the handling span.
                    let record = OwnedMessage::new(
                        None,
                        delivery.key.clone(),
                        delivery.topic.clone(),
                        Timestamp::NotAvailable,
                        delivery.partition,
                        delivery.offset,
                        None,
                    );
                    let (record_trace, _) = trace_headers::of_record(&record, None);
                    let handling = trace::Handling::new(record_trace, plugin.name());
                    let trigger = Trigger {
                        event: &event,
                        delivery: &delivery,
                        handling: &handling,
                        schemas: None,
                    };
                    let outcome = runtime.invoke(plugin, settings, trigger, Some(&mut warm));
                    assert!(matches!(outcome, Outcome::Handled(_)), "{outcome:?}");
                })
            });
        }
    }
    group.finish();
}

/// What trace propagation costs per record with export off: reading the
/// record's `traceparent`, deriving its handling span, and one follow-up's
/// header.
fn trace_context(c: &mut Criterion) {
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: "traceparent",
        value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    });
    let record = OwnedMessage::new(
        Some(EVENT.as_bytes().to_vec()),
        Some(b"user-00001".to_vec()),
        "user.events".into(),
        Timestamp::NotAvailable,
        0,
        1,
        Some(headers),
    );
    c.bench_function("trace-context/record-and-follow-up", |b| {
        b.iter(|| {
            let (record_trace, _) = trace_headers::of_record(&record, None);
            let handling = trace::Handling::new(record_trace, "welcome-email");
            let follow_up = handling.follow_up(|| unreachable!("export is off"));
            std::hint::black_box(follow_up.header())
        })
    });
}

/// What checking an event's data against its schema file costs: the
/// corpus's `user.created` against a schema of the kind a service writes.
fn schema_check(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("eddy-bench-schemas-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("user.created")).expect("schema folder");
    std::fs::write(
        dir.join("user.created/1.0.json"),
        r#"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
            "required": ["user_id", "email", "name", "plan"],
            "properties": {"user_id": {"type": "string", "pattern": "^user-[0-9]+$"},
                           "email": {"type": "string", "maxLength": 254},
                           "name": {"type": "string", "minLength": 1},
                           "plan": {"enum": ["free", "pro"]},
                           "seq": {"type": "integer", "minimum": 0}}}"#,
    )
    .expect("schema file");
    let config = eddy_core::config::SchemasConfig {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let schemas = eddy_schema::load_once(&config).expect("the schema loads");
    let event: Event = envelope::decode(Some(EVENT.as_bytes()), []).expect("an event");
    c.bench_function("schema-check/user.created", |b| {
        b.iter(|| {
            let checked = schemas.check_in(
                "user.events",
                &event.event_type,
                &event.version,
                &event.data,
                None,
            );
            assert_eq!(checked, Ok(Ok(())));
        })
    });
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = dispatch, trace_context, schema_check
}
criterion_main!(benches);
