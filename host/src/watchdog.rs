//! A watchdog for client calls that may never return.
//!
//! librdkafka's `send_offsets_to_transaction` ignores its timeout when the
//! group coordinator goes away during the call (confluentinc/librdkafka
//! #5456, #5511): after a broker restart eddy's committer was seen blocked
//! in it for good, holding every partition. The call cannot be cancelled,
//! and the producer cannot be used while it is in progress. So eddy takes
//! the crash-only way out: if an armed call has not returned by its
//! deadline, eddy says why and exits. A restart (a supervisor's, or
//! Kubernetes') begins a new transactional session, which aborts the open
//! transaction: nothing is lost, nothing repeated.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The exit status of a stuck call.
pub const EXIT_STUCK: i32 = 75;

/// Milliseconds since [`epoch`] by which the armed call must return; 0 when
/// none is armed.
static DEADLINE_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// An armed watchdog; disarmed when dropped.
pub struct Armed {
    _private: (),
}

impl Drop for Armed {
    fn drop(&mut self) {
        DEADLINE_MS.store(0, Ordering::Relaxed);
    }
}

/// Arms the watchdog for a call `what` that must return within `within`.
/// One call at a time (the committer's).
pub fn arm(what: &'static str, within: Duration) -> Armed {
    static THREAD: OnceLock<()> = OnceLock::new();
    static WHAT: OnceLock<std::sync::Mutex<&'static str>> = OnceLock::new();
    let named = WHAT.get_or_init(|| std::sync::Mutex::new(""));
    *named.lock().unwrap_or_else(|p| p.into_inner()) = what;
    let deadline = (epoch().elapsed() + within).as_millis() as u64;
    DEADLINE_MS.store(deadline.max(1), Ordering::Relaxed);
    THREAD.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("eddy-watchdog".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let deadline = DEADLINE_MS.load(Ordering::Relaxed);
                    if deadline != 0 && epoch().elapsed().as_millis() as u64 > deadline {
                        let what = *named.lock().unwrap_or_else(|p| p.into_inner());
                        tracing::error!(
                            "{what} has not returned in {within:?}: the Kafka client is stuck \
                             (librdkafka ignores this call's timeout when the group coordinator \
                             goes away, confluentinc/librdkafka#5456); eddy exits so that a \
                             restart recovers: the open transaction is aborted, nothing is lost \
                             or repeated"
                        );
                        std::process::exit(EXIT_STUCK);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the watchdog thread: {e}");
        }
    });
    Armed { _private: () }
}

/// Fault injection, for the test of the way out: when the file named by
/// `EDDY_FAULT_STUCK_COMMIT` exists, the armed call removes it and never
/// returns, as librdkafka's does. Once per file; without the variable,
/// nothing.
pub fn stuck_on_demand() {
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("EDDY_FAULT_STUCK_COMMIT").map(Into::into));
    if let Some(file) = file
        && std::fs::remove_file(file).is_ok()
    {
        tracing::warn!("fault injection: this call never returns");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
