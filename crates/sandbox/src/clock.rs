//! The guest's monotonic clock, held to the attempt's deadline.
//!
//! A guest sleeps by subscribing to the clock and blocking on the pollable
//! (`std::thread::sleep` on wasip2 does). WASI's own clock would sleep in
//! real time inside that host call, where epoch interruption cannot reach:
//! a handler could hold its partition far past `timeout_ms`, or forever.
//! This clock replaces WASI's `subscribe-duration` and `subscribe-instant`:
//! a wake-up before the deadline is WASI's own; one after it traps at once
//! with [`SleptPastDeadline`], which the runtime counts as a timeout.
//!
//! Clock pollables are the only ones a handler can wait on for long: it has
//! no files, no sockets, no stdin, and its stdout and stderr are in memory.

use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::clocks::WasiClocksCtxView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Host};

/// The trap of a guest that asked to sleep past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the handler asked to sleep past its timeout_ms ({0:?} more)")]
pub struct SleptPastDeadline(pub Duration);

/// WASI's clock view, with the deadline of the call in progress.
pub struct DeadlineClock<'a> {
    pub wasi: WasiClocksCtxView<'a>,
    pub deadline: Instant,
}

/// Names [`DeadlineClock`] as what the linker hands the clock functions.
pub struct DeadlineClocks;

impl HasData for DeadlineClocks {
    type Data<'a> = DeadlineClock<'a>;
}

/// Registers the clock over WASI's in `linker`; `view` gives it the store's
/// WASI clocks and deadline.
pub fn add_to_linker<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> DeadlineClock<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = monotonic_clock::add_to_linker::<T, DeadlineClocks>(linker, view);
    linker.allow_shadowing(false);
    added
}

impl DeadlineClock<'_> {
    fn check(&self, sleep: Duration) -> wasmtime::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if sleep > left {
            return Err(wasmtime::Error::new(SleptPastDeadline(sleep - left)));
        }
        Ok(())
    }
}

impl Host for DeadlineClock<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Host::now(&mut self.wasi)
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Host::resolution(&mut self.wasi)
    }

    fn subscribe_duration(&mut self, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.check(Duration::from_nanos(nanos))?;
        Host::subscribe_duration(&mut self.wasi, nanos)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let now = Host::now(&mut self.wasi)?;
        self.check(Duration::from_nanos(when.saturating_sub(now)))?;
        Host::subscribe_instant(&mut self.wasi, when)
    }
}
