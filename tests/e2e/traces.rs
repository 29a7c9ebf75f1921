//! Trace context and span export: a record's `traceparent` continued
//! through two plugins, the spans an in-process OTLP/HTTP receiver gets
//! (decoded with `opentelemetry-proto`), CloudEvents binary trace context,
//! a malformed `traceparent`, and a collector that is not there.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use eddy_tests::read_request_body;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::json;

use crate::failures::{stream, tagger_config, verdict_of};
use crate::harness::{
    Eddy, PluginFile, bootstrap, config_head, create_topics, dead_letters, env_path, http_get,
    producer, read, seed_event, unique,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: keeps the spans of every export posted to it.
struct Collector {
    address: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if let Some(body) = read_request_body(&mut stream) {
                    let request = ExportTraceServiceRequest::decode(body.as_slice())
                        .expect("an OTLP trace export");
                    let mut kept = kept.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            kept.extend(scope.spans);
                        }
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Collector { address, spans }
    }

    /// Waits until `enough` holds for the spans received.
    fn wait_for(&self, what: &str, enough: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let started = Instant::now();
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if enough(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: the collector got {} spans: {:#?}",
                spans.len(),
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// `traceparent` → trace id and parent span id.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent:?}");
    (fields[1].to_string(), fields[2].to_string())
}

fn two_hop_config(group: &str, a: &str, b: &str, c: &str) -> String {
    format!(
        "{}[[routes]]\ntopic = \"{a}\"\nevent_types = [\"*\"]\nplugin = \"tagger\"\n\n\
         [[routes]]\ntopic = \"{b}\"\nevent_types = [\"*\"]\nplugin = \"tagger-v2\"\n\n\
         [plugin.tagger]\npublish_to = [\"{b}\"]\nconfig = {{ out_topic = \"{b}\" }}\n\n\
         [plugin.tagger-v2]\npublish_to = [\"{c}\"]\nconfig = {{ out_topic = \"{c}\" }}\n",
        config_head(group)
    )
}

#[test]
fn a_trace_runs_through_two_plugins_and_their_spans_are_exported() {
    let (a, b, c, group) = (
        unique("trace.a"),
        unique("trace.b"),
        unique("trace.c"),
        unique("g"),
    );
    create_topics(&[&a, &b, &c], 1);
    let collector = Collector::start();
    let eddy = Eddy::start_with_env(
        &two_hop_config(&group, &a, &b, &c),
        &[PluginFile::Test("tagger"), PluginFile::Test("tagger-v2")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.address),
            ("OTEL_SERVICE_NAME", "eddy-under-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // Asked to fail its first attempt: the span shows the retry.
    let event = seed_event(
        "trace-1",
        "order.placed",
        "k-1",
        json!({"seq": 1, "fail_attempts": 1}),
    );
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let sending = producer();
    sending.send(
        &a,
        Some("k-1"),
        Some(event.to_string().as_bytes()),
        &[("traceparent", &traceparent)],
    );
    sending.flush();
    let first = read(&[&b], 1, Duration::from_secs(60), |_| true);
    let last = read(&[&c], 1, Duration::from_secs(60), |_| true);
    assert!(first.len() == 1 && last.len() == 1, "log:\n{}", eddy.log());
    let (first, last) = (&first[0], &last[0]);
    let (first_trace, first_parent) = parts(first.header("traceparent"));
    let (last_trace, last_parent) = parts(last.header("traceparent"));
    assert_eq!(
        first_trace, TRACE,
        "the follow-up continues the record's trace"
    );
    assert_eq!(last_trace, TRACE, "and so does its follow-up");

    let spans = collector.wait_for("four spans of the chain", |spans| spans.len() >= 4);
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    for span in &spans {
        assert_eq!(
            hex(&span.trace_id),
            TRACE,
            "one trace throughout: {span:#?}"
        );
    }
    // The record's producer → tagger's CONSUMER span.
    let handled_a = spans
        .iter()
        .find(|s| s.kind() == SpanKind::Consumer && hex(&s.parent_span_id) == PARENT)
        .expect("the first handling span is a child of the record's writer");
    assert_eq!(handled_a.name, format!("process {a}"));
    let attrs = attributes(handled_a);
    for (key, value) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", a.as_str()),
        ("messaging.destination.partition.id", "0"),
        ("messaging.kafka.offset", "0"),
        ("messaging.kafka.message.key", "k-1"),
        ("messaging.consumer.group.name", group.as_str()),
        ("eddy.plugin", "tagger"),
        ("eddy.event_id", "trace-1"),
        ("eddy.correlation_id", "trace-1"),
        ("eddy.attempts", "2"),
        ("eddy.outcome", "handled"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(value),
            "{key}: {attrs:?}"
        );
    }
    assert_eq!(attrs["eddy.plugin.version"].len(), 12, "{attrs:?}");
    let retry = handled_a
        .events
        .iter()
        .find(|e| e.name == "retry")
        .expect("the failed first attempt is an event on the span");
    assert!(format!("{:?}", retry.attributes).contains("asked to fail attempt 1"));
    // tagger's follow-up: a PRODUCER span under it, whose id the record carries.
    let sent_b = by_id
        .get(&first_parent)
        .expect("the follow-up's traceparent names an exported span");
    assert_eq!(sent_b.kind(), SpanKind::Producer);
    assert_eq!(sent_b.name, format!("send {b}"));
    assert_eq!(hex(&sent_b.parent_span_id), hex(&handled_a.span_id));
    let attrs = attributes(sent_b);
    assert_eq!(attrs["messaging.operation.type"], "send");
    assert_eq!(attrs["messaging.destination.name"], b);
    assert_eq!(
        attrs["eddy.event_id"],
        first.json()["event_id"].as_str().unwrap()
    );
    assert_eq!(attrs["eddy.causation_id"], "trace-1");
    // tagger-v2 handles the follow-up under that PRODUCER span.
    let handled_b = spans
        .iter()
        .find(|s| s.kind() == SpanKind::Consumer && hex(&s.parent_span_id) == first_parent)
        .expect("the second handling span is a child of the first follow-up's");
    assert_eq!(attributes(handled_b)["eddy.plugin"], "tagger-v2");
    assert_eq!(attributes(handled_b)["eddy.causation_id"], "trace-1");
    let sent_c = by_id.get(&last_parent).expect("the last follow-up's span");
    assert_eq!(sent_c.kind(), SpanKind::Producer);
    assert_eq!(hex(&sent_c.parent_span_id), hex(&handled_b.span_id));
    for span in &spans {
        assert_ne!(
            span.status.as_ref().map(|s| s.code()),
            Some(StatusCode::Error),
            "{span:#?}"
        );
    }
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    assert!(metrics.contains("eddy_spans_exported_total 4"), "{metrics}");
}

#[test]
fn a_dead_letter_carries_the_trace_and_its_span_the_error() {
    let (topic, out, group) = (unique("trace.dl"), unique("trace.dl.out"), unique("g"));
    create_topics(&[&topic, &out], 1);
    let collector = Collector::start();
    let config = tagger_config(&group, &topic, &out)
        .replace("[plugin.tagger]\n", "[plugin.tagger]\nmax_retries = 1\n");
    let eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Test("tagger")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.address),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // Fails more attempts than it has.
    let event = seed_event("trace-dl", "order.placed", "k", json!({"fail_attempts": 5}));
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let sending = producer();
    sending.send(
        &topic,
        Some("k"),
        Some(event.to_string().as_bytes()),
        &[("traceparent", &traceparent)],
    );
    sending.flush();
    let dead = dead_letters(&topic, 1);
    assert_eq!(dead.len(), 1, "log:\n{}", eddy.log());
    assert_eq!(
        dead[0].header_count("traceparent"),
        1,
        "{:?}",
        dead[0].headers
    );
    let (trace, parent) = parts(dead[0].header("traceparent"));
    assert_eq!(trace, TRACE);
    let spans = collector.wait_for("the handling span", |spans| !spans.is_empty());
    let span = &spans[0];
    assert_eq!(
        hex(&span.span_id),
        parent,
        "the dead letter is under its span"
    );
    let status = span.status.as_ref().expect("a status");
    assert_eq!(status.code(), StatusCode::Error);
    assert!(status.message.contains("asked to fail"), "{status:?}");
    let attrs = attributes(span);
    assert_eq!(attrs["eddy.outcome"], "dead-lettered");
    assert_eq!(attrs["error.type"], "retry");
    assert_eq!(span.events.iter().filter(|e| e.name == "retry").count(), 1);
}

#[test]
fn cloudevents_trace_context_is_continued_and_a_malformed_one_starts_a_new_trace() {
    let (topic, out, group) = (unique("trace.ce"), unique("trace.ce.out"), unique("g"));
    create_topics(&[&topic, &out], 1);
    // No export: propagation works without it.
    let eddy = Eddy::start(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let data = json!({"seq": 1}).to_string();
    let sending = producer();
    let binary = |id: &str, traceparent: &str| {
        sending.send(
            &topic,
            Some(id),
            Some(data.as_bytes()),
            &[
                ("ce_specversion", "1.0"),
                ("ce_id", id),
                ("ce_type", "order.placed"),
                ("ce_source", "shop"),
                ("ce_traceparent", traceparent),
                ("content-type", "application/json"),
            ],
        );
    };
    binary("ce-good", &traceparent);
    binary("ce-bad", "00-not-a-trace-01");
    let structured = json!({
        "specversion": "1.0", "id": "ce-structured", "type": "order.placed",
        "source": "shop", "data": {"seq": 2}, "traceparent": traceparent,
    });
    sending.send(
        &topic,
        Some("ce-structured"),
        Some(structured.to_string().as_bytes()),
        &[("content-type", "application/cloudevents+json")],
    );
    sending.flush();
    let answers = read(&[&out], 3, Duration::from_secs(60), |_| true);
    assert_eq!(answers.len(), 3, "log:\n{}", eddy.log());
    let by_cause: HashMap<String, String> = answers
        .iter()
        .map(|r| {
            let cause = r.json()["causation_id"].as_str().unwrap_or("").to_string();
            (cause, r.header("traceparent").to_string())
        })
        .collect();
    assert_eq!(
        parts(&by_cause["ce-good"]).0,
        TRACE,
        "binary mode continues"
    );
    assert_eq!(parts(&by_cause["ce-structured"]).0, TRACE, "structured too");
    // The malformed one: handled, in a trace of its own, said once.
    let (fresh, _) = parts(&by_cause["ce-bad"]);
    assert_ne!(fresh, TRACE);
    assert_eq!(fresh.len(), 32);
    assert_eq!(
        eddy.log()
            .matches("\"00-not-a-trace-01\" is not W3C's")
            .count(),
        1,
        "log:\n{}",
        eddy.log()
    );
}

#[test]
fn with_the_collector_away_events_flow_and_spans_are_dropped_and_counted() {
    const EVENTS: usize = 20_000;
    let (topic, out, group) = (unique("trace.away"), unique("trace.away.out"), unique("g"));
    create_topics(&[&topic, &out], 3);
    // A port nothing listens on.
    let away = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let mut eddy = Eddy::start_with_env(
        &tagger_config(&group, &topic, &out),
        &[PluginFile::Test("tagger")],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &away)],
    );
    let producing = stream(
        bootstrap(),
        topic.clone(),
        0..EVENTS,
        Duration::from_secs(8),
    );
    // Resident memory once a quarter is through, and at the end.
    read(&[&out], EVENTS / 4, Duration::from_secs(120), |_| true);
    let early = eddy.resident_kib();
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    let late = eddy.resident_kib();
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    let (_, metrics) = http_get(&eddy.http_addr(), "/metrics");
    let dropped: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("eddy_spans_dropped_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "collector away, {EVENTS} events: {verdict}; {dropped} spans dropped; resident \
         {early} KiB after a quarter, {late} KiB at the end"
    );
    // Two spans per event (handling, follow-up): all dropped, one way or
    // the other, and counted.
    assert!(dropped >= (EVENTS as f64), "{metrics}");
    assert!(eddy.log().contains("cannot send"), "log:\n{}", eddy.log());
    // What may grow: the span queue filling (2,048 spans of well under a
    // KiB each here) and the batch in hand, besides the allocator's
    // slack: 8 MiB. Measured: 2 MiB (43,432 to 45,492 KiB). A leak of a
    // span per event would be tens of MiB over 20,000 events.
    assert!(
        late < early + 8 * 1024,
        "resident memory grew from {early} KiB to {late} KiB"
    );
    eddy.stop();
}

#[test]
fn a_plugins_log_lines_are_events_on_its_span_and_bounded() {
    let (topic, out, group) = (unique("trace.log"), unique("trace.log.out"), unique("g"));
    create_topics(&[&topic, &out], 1);
    let collector = Collector::start();
    let config = format!(
        "{}[[routes]]\ntopic = \"{topic}\"\nevent_types = [\"*\"]\nplugin = \"chaos\"\n\n\
         [plugin.chaos]\npublish_to = [\"{out}\"]\nconfig = {{ out_topic = \"{out}\" }}\n",
        config_head(&group)
    );
    let eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Test("chaos")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.address),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    // 10,000 lines of 8 KiB: the span keeps what eddy's log keeps, 100.
    let sending = producer();
    sending.send_json(
        &topic,
        "k",
        &seed_event("flood-1", "chaos.logflood", "k", json!({})),
    );
    sending.flush();
    let answers = read(&[&out], 1, Duration::from_secs(60), |_| true);
    assert_eq!(answers.len(), 1, "log:\n{}", eddy.log());
    let spans = collector.wait_for("the handling and follow-up spans", |spans| spans.len() >= 2);
    let handled = spans
        .iter()
        .find(|s| s.kind() == SpanKind::Consumer)
        .expect("the handling span");
    let logs: Vec<_> = handled
        .events
        .iter()
        .filter(|e| e.name == "guest.log")
        .collect();
    assert_eq!(logs.len(), 100, "{:?}", handled.events.len());
    let first = format!("{:?}", logs[0].attributes);
    assert!(first.contains("chaos flood line 0"), "{first}");
    // Each line cut to 1 KiB in the span (the log has 4 KiB of it).
    assert!(first.len() < 1300 && first.contains('…'), "{first}");
    assert!(first.contains("warn"), "{first}");
}

#[test]
fn a_replayed_event_starts_a_new_trace_linked_to_the_original() {
    let (topic, out, again) = (
        unique("trace.replay"),
        unique("trace.replay.out"),
        unique("trace.replay.again"),
    );
    create_topics(&[&topic, &out, &again], 1);
    let collector = Collector::start();
    let dir = std::env::temp_dir().join(unique("eddy-trace-replay"));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    std::fs::copy(
        env_path("EDDY_TEST_PLUGIN_DIR").join("tagger.wasm"),
        dir.join("plugins/tagger.wasm"),
    )
    .expect("copy tagger");
    let config = dir.join("eddy.toml");
    std::fs::write(&config, tagger_config(&unique("g"), &topic, &out)).expect("config");
    let sending = producer();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    sending.send(
        &topic,
        Some("k"),
        Some(
            seed_event("replayed-1", "order.placed", "k", json!({"seq": 1}))
                .to_string()
                .as_bytes(),
        ),
        &[("traceparent", &traceparent)],
    );
    sending.flush();
    let replay = |args: &[&str]| {
        let output = Command::new(env_path("EDDY_BIN"))
            .arg("replay")
            .arg("--config")
            .arg(&config)
            .args(["--topic", &topic])
            .args(args)
            .arg("--execute")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.address)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdin(Stdio::null())
            .output()
            .expect("run eddy replay");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{said}");
    };
    // Through the plugin: its span is in a new trace, linked to the
    // original's context, and so is its follow-up.
    replay(&["--into-plugin", "tagger"]);
    let answers = read(&[&out], 1, Duration::from_secs(30), |_| true);
    assert_eq!(answers.len(), 1);
    let (answer_trace, _) = parts(answers[0].header("traceparent"));
    assert_ne!(answer_trace, TRACE, "a replay starts a new trace");
    let spans = collector.wait_for("the replay's spans", |spans| spans.len() >= 2);
    let handled = spans
        .iter()
        .find(|s| s.kind() == SpanKind::Consumer)
        .expect("the handling span");
    assert_eq!(hex(&handled.trace_id), answer_trace);
    assert!(handled.parent_span_id.is_empty(), "a root: {handled:#?}");
    let links: Vec<(String, String)> = handled
        .links
        .iter()
        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
        .collect();
    assert_eq!(links, [(TRACE.to_string(), PARENT.to_string())]);
    // Republished: the record carries a new traceparent, once, whose
    // PRODUCER span links to the original.
    replay(&["--to-topic", &again]);
    let republished = read(&[&again], 1, Duration::from_secs(30), |_| true);
    assert_eq!(republished.len(), 1);
    assert_eq!(republished[0].header_count("traceparent"), 1);
    let (new_trace, new_span) = parts(republished[0].header("traceparent"));
    assert_ne!(new_trace, TRACE);
    let spans = collector.wait_for("the republish span", |spans| {
        spans.iter().any(|s| hex(&s.span_id) == new_span)
    });
    let sent = spans
        .iter()
        .find(|s| hex(&s.span_id) == new_span)
        .expect("the republish span");
    assert_eq!(sent.kind(), SpanKind::Producer);
    assert_eq!(sent.name, format!("send {again}"));
    assert_eq!(hex(&sent.links[0].trace_id), TRACE);
    std::fs::remove_dir_all(dir).ok();
}
