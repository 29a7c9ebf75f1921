//! The transaction calls that wait for the coordinator, made on a thread
//! of their own so the committer can stop waiting for one that never
//! returns (see the parent module), and the fault injection that makes one
//! never return.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;

/// A thread making the transaction calls that wait for the coordinator, so
/// the committer can stop waiting for one (see the module's doc).
pub(super) struct Caller {
    calls: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

/// A call that did not return in time, or whose thread is gone.
pub(super) struct Stuck {
    pub(super) what: &'static str,
}

impl Caller {
    pub(super) fn spawn() -> anyhow::Result<Caller> {
        let (calls, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("eddy-transaction".into())
            .spawn(move || {
                for call in queue {
                    call();
                }
            })
            .context("cannot start the thread for transaction calls")?;
        Ok(Caller { calls })
    }

    /// Makes `call` on the caller's thread; `Stuck` if it has not returned
    /// after `within` (it is left to return, or not, on its own).
    pub(super) fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        within: Duration,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stuck> {
        let (answer, answered) = mpsc::sync_channel(1);
        let call = Box::new(move || {
            let _ = answer.send(call());
        });
        self.calls.send(call).map_err(|_| Stuck { what })?;
        answered.recv_timeout(within).map_err(|_| Stuck { what })
    }
}

/// Fault injection, for the test of a stuck call: when the file named by
/// `EDDY_FAULT_STUCK_COMMIT` exists, the next `send_offsets_to_transaction`
/// removes it and never returns, as librdkafka's does. Once per file;
/// without the variable, nothing. Compiled only with the `fault-injection`
/// feature (the tests' build), never into the binary a user runs.
#[cfg(feature = "fault-injection")]
pub(super) fn stuck_on_demand(what: &str) {
    static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("EDDY_FAULT_STUCK_COMMIT").map(Into::into));
    if what == "send_offsets_to_transaction"
        && let Some(file) = file
        && std::fs::remove_file(file).is_ok()
    {
        tracing::warn!("fault injection: this {what} never returns");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
pub(super) fn stuck_on_demand(_: &str) {}
