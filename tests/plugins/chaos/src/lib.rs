//! Misbehaves as the event type asks, so tests can show that a bad plugin
//! costs only its own event. Config: `out_topic` (where `chaos.ok` answers go)
//! and `forbidden_topic` (a topic outside its allow-list). `chaos.count`
//! answers with how many events its instance has served; `chaos.sleep` and
//! `chaos.sleep-forever` sleep past any deadline, `chaos.nap` for 20 ms;
//! `chaos.huge` publishes a follow-up of 1.2 MB, `chaos.hugekey` one with a
//! 600 KB key; `chaos.echo` another `chaos.echo`; `chaos.logflood` writes
//! 10,000 log lines of 8 KiB and 1 MiB to stdout, then answers;
//! `chaos.regret` publishes, then asks to be retried, every time.

use std::sync::atomic::{AtomicU64, Ordering};

use eddy_sdk::{Event, HandlerError, json};

/// Events this instance has served with `chaos.count`: 1 every time, unless
/// the host reuses instances (`events_per_instance`).
static SERVED: AtomicU64 = AtomicU64::new(0);

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    let out = eddy_sdk::config("out_topic").unwrap_or_else(|| "chaos.out".into());
    match event.event_type.as_str() {
        "chaos.trap" => panic!("chaos: asked to trap on {}", event.event_id),
        "chaos.loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "chaos.memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        "chaos.forbidden" => {
            let forbidden =
                eddy_sdk::config("forbidden_topic").unwrap_or_else(|| "not.allowed".into());
            // The first publish is allowed, but the attempt fails as a
            // whole: neither may reach Kafka.
            eddy_sdk::publish(&out, None, &Event::new("chaos.before_forbidden"))?;
            eddy_sdk::publish(&forbidden, None, &Event::new("chaos.forbidden_publish"))?;
            Ok(())
        }
        "chaos.count" => {
            let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
            let answer = Event::new("chaos.counted").with_json(json!({ "served": served }));
            eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &answer)?;
            Ok(())
        }
        "chaos.retry" => Err(HandlerError::retry("chaos: asked to fail transiently")),
        // Publishes, then fails transiently every time: what it published
        // must never be seen.
        "chaos.regret" => {
            let answer = Event::new("chaos.regretted").with_json(json!({"of": event.event_id}));
            eddy_sdk::publish(&out, None, &answer)?;
            Err(HandlerError::retry("chaos: regrets what it published"))
        }
        // Sleeps block inside a host call, where the epoch deadline cannot
        // reach: an hour, and for ever.
        "chaos.sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            Ok(())
        }
        "chaos.sleep-forever" => loop {
            std::thread::sleep(std::time::Duration::from_secs(u64::MAX / 4));
        },
        // Answers with another of itself: to its own topic, without end.
        "chaos.echo" => {
            eddy_sdk::publish(
                &out,
                event.aggregate_id.as_deref(),
                &Event::new("chaos.echo"),
            )?;
            Ok(())
        }
        // A follow-up over what the producer takes (`message.max.bytes`).
        "chaos.huge" => {
            let blob = "x".repeat(1_200_000);
            let huge = Event::new("chaos.huge").with_json(json!({ "blob": blob }));
            eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &huge)?;
            Ok(())
        }
        // A key over `max_follow_up_bytes` on a small follow-up.
        "chaos.hugekey" => {
            let key = "k".repeat(600_000);
            eddy_sdk::publish(&out, Some(&key), &Event::new("chaos.hugekey"))?;
            Ok(())
        }
        "chaos.logflood" => {
            let filler = "y".repeat(8192);
            for n in 0..10_000 {
                eddy_sdk::log::warn(format!("chaos flood line {n}: {filler}"));
            }
            for _ in 0..1024 {
                println!("{}", "z".repeat(1023));
            }
            let answer = Event::new("chaos.handled").with_json(json!({"of": event.event_type}));
            eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &answer)?;
            Ok(())
        }
        // A short sleep within the deadline is fine.
        "chaos.nap" => {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let answer = Event::new("chaos.handled").with_json(json!({"of": event.event_type}));
            eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &answer)?;
            Ok(())
        }
        "chaos.stack" => {
            let depth = recurse(std::hint::black_box(0));
            Err(HandlerError::reject(format!("recursion ended at {depth}")))
        }
        "chaos.burst" => {
            for n in 0..100_000 {
                let flood = Event::new("chaos.flood").with_json(json!({ "n": n }));
                eddy_sdk::publish(&out, None, &flood)?;
            }
            Ok(())
        }
        _ => {
            let answer = Event::new("chaos.handled").with_json(json!({"of": event.event_type}));
            eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &answer)?;
            Ok(())
        }
    }
}

/// Recurses until the stack runs out: on purpose.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1) + frame[0]
}
