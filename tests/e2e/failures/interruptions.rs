//! eddy killed (-9) or stopped (SIGTERM) mid-stream, a second host joining
//! and the first killed, the broker stopped: the checker finds nothing lost.

use std::thread;
use std::time::{Duration, Instant};

use super::{stream, tagger_config, verdict_of};
use crate::checker::Verdict;
use crate::harness::{
    Eddy, PluginFile, TestBroker, bootstrap, create_topics, read, read_to_end, unique,
};

const EVENTS: usize = 20_000;

/// Streams `EVENTS` events through one eddy, does `interrupt` to it half
/// way, and returns eddy (running again) with the checker's verdict.
fn interrupted_stream(name: &str, interrupt: impl FnOnce(&mut Eddy)) -> (Eddy, Verdict) {
    let (topic, out) = (unique(name), unique(&format!("{name}.out")));
    create_topics(&[&topic, &out], 6);
    let mut eddy = Eddy::start(
        &tagger_config(&unique("g"), &topic, &out),
        &[PluginFile::Test("tagger")],
    );
    let producing = stream(bootstrap(), topic, 0..EVENTS, Duration::from_secs(8));
    thread::sleep(Duration::from_secs(4));
    interrupt(&mut eddy);
    // eddy is not running now: what it had handled is all there is.
    let handled = read_to_end(&[&out], |_| true).len();
    assert!(
        handled > 0 && handled < EVENTS,
        "the interruption came mid-stream: {handled} of {EVENTS} events were handled by then"
    );
    eddy.launch();
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    (eddy, verdict)
}

#[test]
fn kill_9_mid_stream_loses_nothing() {
    let (mut eddy, verdict) = interrupted_stream("fail.kill", |eddy| {
        eddy.kill();
        thread::sleep(Duration::from_secs(1));
    });
    println!("kill -9 mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    eddy.stop();
}

/// Static membership (KIP-345): a host killed and started again at once
/// with its `group.instance.id` takes its partitions back at once, instead
/// of waiting for the dead member's session to expire (45 s).
#[test]
fn a_host_killed_and_restarted_with_its_instance_id_answers_within_seconds() {
    let (topic, out) = (unique("fail.static"), unique("fail.static.out"));
    create_topics(&[&topic, &out], 3);
    let instance = unique("host");
    let mut eddy = Eddy::start_with_env(
        &tagger_config(&unique("g"), &topic, &out),
        &[PluginFile::Test("tagger")],
        &[("EDDY_GROUP_INSTANCE_ID", &instance)],
    );
    let caused_by = |range: std::ops::Range<usize>| {
        let ids: Vec<String> = range.map(|n| format!("{topic}-{n}")).collect();
        move |r: &crate::harness::Record| {
            r.json()["causation_id"]
                .as_str()
                .is_some_and(|cause| ids.iter().any(|id| id == cause))
        }
    };
    stream(bootstrap(), topic.clone(), 0..30, Duration::ZERO)
        .join()
        .expect("producer");
    let before = read(&[&out], 30, Duration::from_secs(60), caused_by(0..30));
    assert!(
        before.len() >= 30,
        "handled before the kill; log:\n{}",
        eddy.log()
    );
    eddy.kill();
    eddy.launch();
    let restarted = Instant::now();
    stream(bootstrap(), topic.clone(), 30..36, Duration::ZERO)
        .join()
        .expect("producer");
    let after = read(&[&out], 6, Duration::from_secs(60), caused_by(30..36));
    let took = restarted.elapsed();
    println!("killed and restarted with its instance id: answered in {took:?}");
    assert_eq!(after.len(), 6, "log:\n{}", eddy.log());
    assert!(
        took < Duration::from_secs(5),
        "6 events produced right after the restart took {took:?} to answer; log:\n{}",
        eddy.log()
    );
    eddy.stop();
}

#[test]
fn sigterm_mid_stream_loses_and_repeats_nothing() {
    let (mut eddy, verdict) = interrupted_stream("fail.term", Eddy::stop);
    println!("SIGTERM mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    assert!(verdict.duplicated.is_empty(), "{verdict}");
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    eddy.stop();
}

#[test]
fn a_host_joining_and_one_killed_mid_stream_lose_nothing() {
    let (topic, out) = (unique("fail.pair"), unique("fail.pair.out"));
    create_topics(&[&topic, &out], 6);
    let config = tagger_config(&unique("g"), &topic, &out);
    let mut first = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(first.wait_for_log("partitions assigned", 1, Duration::from_secs(30)));
    let producing = stream(
        bootstrap(),
        topic.clone(),
        0..EVENTS,
        Duration::from_secs(8),
    );
    // A second host joins: the first gives up some partitions, committing
    // their finished work first.
    thread::sleep(Duration::from_secs(2));
    let mut second = Eddy::start(&config, &[PluginFile::Test("tagger")]);
    assert!(
        first.wait_for_log(
            "partitions revoked; finished work committed",
            1,
            Duration::from_secs(60)
        ),
        "log of the first:\n{}",
        first.log()
    );
    // Then the first dies without a word.
    thread::sleep(Duration::from_secs(2));
    first.kill();
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    println!("a host joining, then one killed, mid-stream: {verdict}");
    assert!(
        verdict.lost.is_empty(),
        "{verdict}; log of the survivor:\n{}",
        second.log()
    );
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
    assert!(second.is_running());
    second.stop();
}

#[test]
fn a_broker_outage_mid_stream_loses_nothing() {
    let mut broker = TestBroker::start();
    let brokers = broker.bootstrap();
    let (topic, out) = (unique("fail.broker"), unique("fail.broker.out"));
    crate::harness::create_topics_on(&brokers, &[&topic, &out], 3);
    let config = tagger_config(&unique("g"), &topic, &out);
    // eddy starts while the broker is away, and waits for it.
    broker.stop();
    let mut eddy = Eddy::start_with_env(
        &config,
        &[PluginFile::Test("tagger")],
        &[("KAFKA_BOOTSTRAP_SERVERS", &brokers)],
    );
    thread::sleep(Duration::from_secs(3));
    assert!(
        eddy.is_running(),
        "eddy waits for an unreachable broker; log:\n{}",
        eddy.log()
    );
    broker.restart();
    // Half the stream, then the broker goes away for a while, then the rest.
    let mut sent = stream(
        brokers.clone(),
        topic.clone(),
        0..EVENTS / 2,
        Duration::from_secs(3),
    )
    .join()
    .expect("producer");
    thread::sleep(Duration::from_secs(1));
    broker.stop();
    thread::sleep(Duration::from_secs(5));
    assert!(eddy.is_running(), "eddy survives the broker going away");
    broker.restart();
    sent.extend(
        stream(
            brokers.clone(),
            topic.clone(),
            EVENTS / 2..EVENTS,
            Duration::from_secs(3),
        )
        .join()
        .expect("producer"),
    );
    let verdict = verdict_of(&brokers, &out, &sent);
    println!("broker stopped for 5 s mid-stream: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}; log:\n{}", eddy.log());
    let log = eddy.log();
    assert!(
        ["Connection refused", "Disconnected", "transport failure"]
            .iter()
            .any(|m| log.contains(m)),
        "the outage was logged:\n{log}"
    );
    eddy.stop();
}
