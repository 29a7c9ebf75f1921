//! A fleet: three eddy processes in one group under a 60,000-event stream,
//! each stopped and started again in turn, as a rolling restart does; the
//! loss checker is the oracle.

use std::thread;
use std::time::Duration;

use crate::checker::Verdict;
use crate::failures::{stream, tagger_config, verdict_of};
use crate::harness::{Eddy, PluginFile, bootstrap, create_topics, read_to_end, unique};

const EVENTS: usize = 60_000;
const HOSTS: usize = 3;
/// How long the stream runs.
const STREAM: Duration = Duration::from_secs(24);

/// Streams `EVENTS` events over 24 s through three eddys; 4 s in, and every
/// 5 s after, one of them is `interrupt`ed and started again. With
/// `static_ids`, each host has its own `group.instance.id`, kept across
/// its restart (a StatefulSet's pod names); else they are dynamic members
/// (a Deployment's).
fn rolling(name: &str, interrupt: fn(&mut Eddy), static_ids: bool) -> Verdict {
    let (topic, out) = (unique(name), unique(&format!("{name}.out")));
    create_topics(&[&topic, &out], 6);
    let config = tagger_config(&unique("g"), &topic, &out);
    let mut fleet: Vec<Eddy> = (0..HOSTS)
        .map(|host| {
            let id = format!("{name}-host-{host}");
            let env: &[(&str, &str)] = if static_ids {
                &[("EDDY_GROUP_INSTANCE_ID", &id)]
            } else {
                &[]
            };
            Eddy::start_with_env(&config, &[PluginFile::Test("tagger")], env)
        })
        .collect();
    for eddy in &fleet {
        assert!(
            eddy.wait_for_log("partitions assigned", 1, Duration::from_secs(60)),
            "{}",
            eddy.log()
        );
    }
    let producing = stream(bootstrap(), topic.clone(), 0..EVENTS, STREAM);
    thread::sleep(Duration::from_secs(4));
    for eddy in fleet.iter_mut() {
        interrupt(eddy);
        let handled = read_to_end(&[&out], |_| true).len();
        assert!(
            handled > 0 && handled < EVENTS,
            "the restart came mid-stream: {handled} of {EVENTS} events were handled by then"
        );
        eddy.launch();
        thread::sleep(Duration::from_secs(5));
    }
    let sent = producing.join().expect("producer");
    let verdict = verdict_of(&bootstrap(), &out, &sent);
    for eddy in fleet.iter_mut() {
        assert!(eddy.is_running(), "{}", eddy.log());
        eddy.stop();
    }
    verdict
}

#[test]
fn a_rolling_restart_with_sigterm_loses_repeats_and_reorders_nothing() {
    let verdict = rolling("fleet.term", Eddy::stop, false);
    println!("rolling restart of {HOSTS} hosts, SIGTERM: {verdict}");
    assert!(verdict.lost.is_empty(), "{verdict}");
    assert!(verdict.duplicated.is_empty(), "{verdict}");
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
}

#[test]
fn a_rolling_restart_with_kill_9_loses_nothing() {
    let verdict = rolling("fleet.kill", Eddy::kill, true);
    // What a killed host had handled but not committed is handled again by
    // the partition's next owner: duplicates, counted, of in-flight records.
    println!(
        "rolling restart of {HOSTS} hosts, kill -9: {verdict}; {} duplicates",
        verdict.duplicates()
    );
    assert!(verdict.lost.is_empty(), "{verdict}");
    // A killed host repeats only what it finished since its last offset
    // commit (auto-commit, every second): at most a second of the whole
    // stream per kill. Without static membership each kill stalled the
    // group until the dead member's session expired, and 10,000 to 17,000
    // events were repeated.
    let per_second = EVENTS / STREAM.as_secs() as usize;
    assert!(
        verdict.duplicates() <= HOSTS * per_second,
        "{verdict}: more repeats than {HOSTS} kills of a second's work each"
    );
    // Repeats come after the key's first answers: each key's first
    // follow-ups are in the order its events were produced.
    assert!(verdict.out_of_order.is_empty(), "{verdict}");
}
