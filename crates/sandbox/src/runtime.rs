//! The sandbox: compiling plugins, and running one event through one plugin.
//!
//! One [`Engine`] with the pooling allocator and epoch interruption serves
//! every plugin. A [`Plugin`] keeps its pre-linked [`HandlerPre`], so an event
//! costs one instantiation into a new [`Store`]: by default nothing a guest
//! does survives its event. A plugin that opts in with `events_per_instance
//! = N` has an instance serve up to N events of one partition ([`Warm`]):
//! its globals and memory carry over between them, and any failed attempt
//! drops it. Limits (deadline, memory, instance and table counts) are per
//! store, from the plugin's settings.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use eddy_core::config::{MAX_MEMORY_MB, PluginSettings};
use eddy_core::metrics;
use eddy_core::outcome::{Failure, FailureKind, Outcome, PluginId};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};
use wasmtime_wasi::WasiCtxBuilder;

use crate::bindings::{self, HandlerError, HandlerPre};
use crate::clock::{self, SleptPastDeadline};
use crate::compiled::{CompiledCache, Source};
use crate::host::{HostState, RecordId, Trigger};
use crate::limits::{Limits, PastMemoryLimit};
use crate::output::GuestOutput;
use crate::swap::Swap;

/// How often the epoch advances; deadlines are rounded up to it.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Longest `retry`/`reject` reason kept from a handler.
const MAX_REASON_BYTES: usize = 1024;
/// Bytes of guest stdout/stderr kept per event; the rest is dropped.
const GUEST_OUTPUT_CAPACITY: usize = 64 * 1024;
/// Instances (each several core instances and memories) alive at once.
const POOL_INSTANCES: u32 = 512;
/// Bytes of each memory and table slot reset in place rather than returned
/// to the kernel, when only the written pages are reset.
const KEEP_RESIDENT: usize = 4 << 20;
/// The same, when the start of every slot is reset whatever was written.
const KEEP_RESIDENT_WHOLE: usize = 64 << 10;

/// A loaded, checked plugin version.
pub struct Plugin {
    /// Its name and version.
    pub id: Arc<PluginId>,
    /// Whether its compiled code came from the cache on disk.
    pub from_cache: bool,
    pre: HandlerPre<HostState>,
    /// Whether an instance passed [`bindings::Handler::check_views`].
    views_checked: AtomicBool,
    instantiation_seconds: metrics::Histogram,
    handler_seconds: metrics::Histogram,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// Its version: the first 12 hex digits of the file's SHA-256.
    pub fn hash(&self) -> &str {
        &self.id.hash
    }
}

/// How a pool slot is made fresh for the next instance, so that no event
/// reads what another left in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotReset {
    /// Rewrite only the pages the last instance wrote, found with
    /// `PAGEMAP_SCAN` (Linux 6.7+), instead of an madvise per memory and
    /// table (each flushes the other cores' TLBs). The scan misses written
    /// pages that are swapped out, so this holds only where none can be.
    WrittenPages,
    /// Rewrite the first [`KEEP_RESIDENT_WHOLE`] bytes of each memory and
    /// table and return the rest to the kernel: right whatever the kernel
    /// did with the pages.
    Whole,
}

impl SlotReset {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotReset::WrittenPages => "written pages",
            SlotReset::Whole => "whole",
        }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
    slot_reset: SlotReset,
    /// Why slots are reset the way they are.
    slot_reset_reason: String,
    /// Where compiled plugins are kept between runs, if anywhere.
    compiled: Option<CompiledCache>,
}

impl Runtime {
    /// The runtime `eddy run` uses: slots reset by their written pages where
    /// no page can be swapped out and the kernel has `PAGEMAP_SCAN`, whole
    /// elsewhere.
    pub fn new() -> wasmtime::Result<Runtime> {
        let swap = Swap::detect();
        if swap.is_possible() {
            return Runtime::with_slot_reset(SlotReset::Whole, swap.reason());
        }
        Runtime::with_slot_reset(SlotReset::WrittenPages, swap.reason()).or_else(|e| {
            let reason = format!(
                "{}, but PAGEMAP_SCAN is not available: {e:#}",
                swap.reason()
            );
            Runtime::with_slot_reset(SlotReset::Whole, &reason)
        })
    }

    /// A runtime whose slots are reset as `slot_reset` says, for `reason`.
    pub fn with_slot_reset(slot_reset: SlotReset, reason: &str) -> wasmtime::Result<Runtime> {
        let (scan, keep_resident) = match slot_reset {
            SlotReset::WrittenPages => (Enabled::Yes, KEEP_RESIDENT),
            SlotReset::Whole => (Enabled::No, KEEP_RESIDENT_WHOLE),
        };
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 16)
            .total_memories(POOL_INSTANCES * 4)
            .total_tables(POOL_INSTANCES * 8)
            .max_memory_size((MAX_MEMORY_MB << 20) as usize)
            .pagemap_scan(scan)
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(keep_resident);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // A plugin compiles on the thread that loads it, never on every
            // core: a reload must not take the cores events run on.
            .parallel_compilation(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).context("cannot create the wasm engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .context("cannot link WASI into the plugin linker")?;
        clock::add_to_linker(&mut linker, HostState::clock)
            .context("cannot link the guest clock into the plugin linker")?;
        bindings::Handler::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .context("cannot link the eddy host functions")?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("eddy-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("cannot start the epoch thread")?;

        Ok(Runtime {
            engine,
            linker,
            ticker_stop,
            slot_reset,
            slot_reset_reason: reason.to_string(),
            compiled: None,
        })
    }

    /// How slots are reset, and why.
    pub fn slot_reset(&self) -> (SlotReset, &str) {
        (self.slot_reset, &self.slot_reset_reason)
    }

    /// Compiles `bytes` as plugin `name` and checks that it is a component of
    /// the `eddy:plugin` world whose imports the host can satisfy.
    pub fn load(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<Plugin> {
        let hash = version_of(bytes);
        let (component, source) = match &self.compiled {
            Some(cache) => cache.component(&self.engine, bytes),
            None => Component::from_binary(&self.engine, bytes).map(|c| (c, Source::Compiled)),
        }
        .context("not a WebAssembly component (build it with --target wasm32-wasip2)")?;
        let instance_pre = self.linker.instantiate_pre(&component).context(
            "it imports something eddy does not provide (only WASI and eddy:plugin@0.1.0 are)",
        )?;
        let pre = HandlerPre::new(instance_pre).context(
            "it does not export the eddy:plugin@0.1.0 handler world \
             (`handle: func(event, delivery) -> result<_, handler-error>`)",
        )?;
        let (instantiation_seconds, handler_seconds) = metrics::durations(name, &hash);
        Ok(Plugin {
            id: Arc::new(PluginId {
                name: name.to_string(),
                hash,
            }),
            from_cache: source == Source::Cache,
            pre,
            views_checked: AtomicBool::new(false),
            instantiation_seconds,
            handler_seconds,
        })
    }

    /// Keeps compiled plugins in `dir` between runs (see `compiled`); if
    /// eddy cannot have the folder to itself, it says why and compiles as
    /// before.
    pub fn cache_compiled_in(&mut self, dir: &Path) {
        self.compiled = CompiledCache::open(dir, &self.engine);
    }

    /// Loads the contents of `path`, named after the file stem.
    pub fn load_file(&self, path: &Path, bytes: &[u8]) -> wasmtime::Result<Plugin> {
        let name = plugin_name(path)
            .with_context(|| format!("{} has no usable file name", path.display()))?;
        self.load_as(name, path, bytes)
    }

    /// Loads the contents of `path` as the plugin `name`.
    pub fn load_as(&self, name: &str, path: &Path, bytes: &[u8]) -> wasmtime::Result<Plugin> {
        self.load(name, bytes)
            .with_context(|| format!("plugin {name} ({}) refused", path.display()))
    }

    /// Runs one attempt of `plugin` on the trigger. Blocks for at most about
    /// `settings.timeout_ms`.
    ///
    /// The instance is fresh, unless the plugin's `events_per_instance` is
    /// over 1: then `warm` keeps it for the plugin's next events, until it has
    /// served that many, fails in any way, or the plugin or its settings
    /// change. Pass `None` for a fresh instance whatever the settings.
    pub fn invoke(
        &self,
        plugin: &Arc<Plugin>,
        settings: &Arc<PluginSettings>,
        trigger: Trigger<'_>,
        warm: Option<&mut Option<Warm>>,
    ) -> Outcome {
        let mut slot = warm.filter(|_| settings.events_per_instance > 1);
        let kept = slot
            .as_mut()
            .and_then(|slot| slot.take())
            .filter(|w| Arc::ptr_eq(&w.plugin, plugin) && Arc::ptr_eq(&w.settings, settings));

        let mut warm = match kept {
            Some(warm) => warm,
            None => {
                // Only instantiations made are timed: a reused instance's
                // event does not count as a zero-length one.
                let started = Instant::now();
                let made = self.instantiate(plugin, settings);
                plugin
                    .instantiation_seconds
                    .record(started.elapsed().as_secs_f64());
                match made {
                    Ok(warm) => warm,
                    Err(failure) => return Outcome::Failed(failure),
                }
            }
        };
        warm.store.data_mut().begin(&trigger, settings);
        warm.store.set_epoch_deadline(deadline_ticks(settings));
        let called = Instant::now();
        let result = warm
            .handler
            .handle_event(&mut warm.store, trigger.event, trigger.delivery)
            .map_err(classify_trap);
        plugin
            .handler_seconds
            .record(called.elapsed().as_secs_f64());
        let state = warm.store.data_mut();
        state.forward_output();
        let follow_ups = std::mem::take(&mut state.follow_ups);
        warm.served += 1;

        let outcome = match result {
            Ok(Ok(())) => Outcome::Handled(follow_ups),
            Ok(Err(HandlerError::Retry(message))) => Outcome::Failed(Failure {
                kind: FailureKind::Retry,
                message: capped(message),
            }),
            Ok(Err(HandlerError::Reject(message))) => Outcome::Failed(Failure {
                kind: FailureKind::Reject,
                message: capped(message),
            }),
            Err(failure) => Outcome::Failed(failure),
        };
        // Whatever the handler made of it, an attempt that met a registry
        // not answering is made again: what it published is dropped. So is
        // one that ran out of time because the registry was slow to answer
        // (waiting on it took half its timeout_ms or more): its schemas are
        // at hand the next time. A handler that is slow itself times out.
        let state = warm.store.data_mut();
        let fetching = std::mem::take(&mut state.schema_fetching);
        let outcome = match (state.schemas_unavailable.take(), outcome) {
            (Some(why), _) => Outcome::Failed(Failure {
                kind: FailureKind::SchemaUnavailable,
                message: why,
            }),
            (None, Outcome::Failed(failure))
                if failure.kind == FailureKind::Timeout
                    && fetching * 2 >= Duration::from_millis(settings.timeout_ms) =>
            {
                Outcome::Failed(Failure {
                    kind: FailureKind::SchemaUnavailable,
                    message: format!(
                        "the schema registry took {} ms of the attempt's timeout_ms to answer",
                        fetching.as_millis()
                    ),
                })
            }
            (None, outcome) => outcome,
        };
        // Kept only after a clean return: a trap may leave the guest broken.
        if let Some(slot) = slot
            && matches!(outcome, Outcome::Handled(_))
            && warm.served < settings.events_per_instance
        {
            *slot = Some(warm);
        }
        outcome
    }

    /// A new instance of `plugin` in its own store, limited by `settings`.
    fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        settings: &Arc<PluginSettings>,
    ) -> Result<Warm, Failure> {
        let stdout = GuestOutput::new(GUEST_OUTPUT_CAPACITY);
        let stderr = GuestOutput::new(GUEST_OUTPUT_CAPACITY);
        // No preopens, no environment, no arguments, no sockets: the default
        // builder grants none of them.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits::new((settings.memory_mb << 20) as usize),
            plugin: plugin.name().to_string(),
            settings: settings.clone(),
            stdout,
            stderr,
            record: RecordId::default(),
            deadline: Instant::now() + Duration::from_millis(settings.timeout_ms),
            trigger_correlation: String::new(),
            handling: None,
            follow_ups: Vec::new(),
            follow_up_bytes: 0,
            log_lines: 0,
            schemas_unavailable: None,
            schema_fetching: Duration::ZERO,
            schemas: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs the guest's start code: it has the same budget.
        store.set_epoch_deadline(deadline_ticks(settings));
        let instantiated = plugin.pre.instantiate(&mut store).and_then(|handler| {
            if !plugin.views_checked.load(Ordering::Relaxed) {
                handler.check_views(&store)?;
                plugin.views_checked.store(true, Ordering::Relaxed);
            }
            Ok(handler)
        });
        let handler = instantiated.map_err(|e| Failure {
            kind: FailureKind::Instantiate,
            message: format!("{e:#}"),
        })?;
        Ok(Warm {
            plugin: plugin.clone(),
            settings: settings.clone(),
            store,
            handler,
            served: 0,
        })
    }
}

/// An instance with its store, kept between events when a plugin allows it
/// (`events_per_instance`).
pub struct Warm {
    plugin: Arc<Plugin>,
    settings: Arc<PluginSettings>,
    store: Store<HostState>,
    handler: bindings::Handler,
    served: u32,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A handler's `retry`/`reject` reason, cut to [`MAX_REASON_BYTES`]: it
/// becomes a log line and the dead letter's `eddy-error` header.
fn capped(message: String) -> String {
    capped_to(message, MAX_REASON_BYTES)
}

/// `message` cut to `max` bytes (at a character), saying how much was cut.
pub(crate) fn capped_to(mut message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("… ({cut} more bytes cut)"));
    message
}

/// Epoch ticks in a plugin's `timeout_ms`, rounded up, plus the tick under way.
fn deadline_ticks(settings: &PluginSettings) -> u64 {
    settings.timeout_ms.div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

/// A plugin file's version identity: the first 12 hex digits of its SHA-256.
pub fn version_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The plugin name of a `.wasm` path: its file stem.
pub fn plugin_name(path: &Path) -> Option<&str> {
    if path.extension()? != "wasm" {
        return None;
    }
    path.file_stem()?.to_str()
}

fn classify_trap(error: wasmtime::Error) -> Failure {
    let text = format!("{error:#}");
    let slept = error.downcast_ref::<SleptPastDeadline>().is_some();
    let kind = match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Timeout,
        _ if slept => FailureKind::Timeout,
        _ if error.downcast_ref::<PastMemoryLimit>().is_some() => FailureKind::Memory,
        _ => FailureKind::Trap,
    };
    let message = match kind {
        FailureKind::Timeout if slept => {
            "the handler asked to sleep past its timeout_ms and was stopped".to_string()
        }
        FailureKind::Timeout => "the handler ran past its timeout_ms and was stopped".to_string(),
        _ => text,
    };
    Failure { kind, message }
}
