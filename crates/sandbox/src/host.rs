//! The state of one store: WASI, limits, the event in hand and what its
//! handler published; the WIT imports are implemented on it, one file per
//! interface (`publish`, `log`, `config`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_core::config::PluginSettings;
use eddy_core::event::{Delivery, Event};
use eddy_core::outcome::FollowUp;
use eddy_core::text::OneLine;
use eddy_core::trace::Handling;
use eddy_schema::Schemas;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings;
use crate::clock::DeadlineClock;
use crate::limits::Limits;
use crate::output::GuestOutput;

/// Where an event came from, for filling follow-ups and tagging log lines.
pub struct Trigger<'a> {
    pub event: &'a Event,
    pub delivery: &'a Delivery,
    /// The plugin's handling span of the record.
    pub handling: &'a Handling,
    /// The schemas its follow-ups are checked against, if eddy has any.
    pub schemas: Option<&'a Arc<Schemas>>,
}

/// Everything one store holds: WASI, limits, and what the event published.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limits,
    pub(crate) plugin: String,
    pub(crate) settings: Arc<PluginSettings>,
    pub(crate) stdout: GuestOutput,
    pub(crate) stderr: GuestOutput,
    /// The event in hand.
    pub(crate) record: RecordId,
    /// When the attempt in hand runs out of its `timeout_ms`: the guest's
    /// clock cannot sleep past it.
    pub(crate) deadline: Instant,
    pub(crate) trigger_correlation: String,
    /// The handling span of the event in hand: its follow-ups' parent.
    pub(crate) handling: Option<Handling>,
    pub(crate) follow_ups: Vec<FollowUp>,
    pub(crate) follow_up_bytes: usize,
    /// `log` calls of the event in hand.
    pub(crate) log_lines: u32,
    /// Why a follow-up of the event in hand could not be checked: the
    /// schema registry did not answer.
    pub(crate) schemas_unavailable: Option<String>,
    /// Time the event in hand's `publish` calls spent waiting for the
    /// schema registry, inside the attempt's `timeout_ms`.
    pub(crate) schema_fetching: Duration,
    /// The schemas the event in hand's follow-ups are checked against.
    pub(crate) schemas: Option<Arc<Schemas>>,
}

/// Where the event in hand came from, for the guest's log lines.
#[derive(Default)]
pub(crate) struct RecordId {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) event_id: String,
}

impl HostState {
    /// Readies the store for the next event.
    pub(crate) fn begin(&mut self, trigger: &Trigger<'_>, settings: &PluginSettings) {
        self.deadline = Instant::now() + Duration::from_millis(settings.timeout_ms);
        // `clone_from`: a reused store's strings keep their buffers.
        let (event, delivery) = (trigger.event, trigger.delivery);
        self.record.topic.clone_from(&delivery.topic);
        self.record.partition = delivery.partition;
        self.record.offset = delivery.offset;
        self.record.event_id.clone_from(&event.event_id);
        self.trigger_correlation
            .clone_from(event.correlation_id.as_ref().unwrap_or(&event.event_id));
        self.handling = Some(trigger.handling.clone());
        self.follow_ups.clear();
        self.follow_up_bytes = 0;
        self.log_lines = 0;
        self.schemas_unavailable = None;
        self.schema_fetching = Duration::ZERO;
        self.schemas = trigger.schemas.cloned();
    }

    /// Runs `f` inside the spans the pipeline's own lines carry, so a guest's
    /// line says which record it was about. Made only when there is a line:
    /// most events log nothing.
    pub(crate) fn in_record_spans(&self, f: impl FnOnce()) {
        let r = &self.record;
        let record = tracing::info_span!(
            "record",
            topic = %r.topic,
            partition = r.partition,
            offset = r.offset
        );
        record.in_scope(|| {
            let event_id = OneLine(&r.event_id);
            tracing::info_span!("plugin", plugin = %self.plugin, %event_id).in_scope(f)
        });
    }

    /// Forwards what the guest wrote to stdout and stderr to the log.
    pub(crate) fn forward_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.take();
            if bytes.is_empty() {
                continue;
            }
            let plugin = self.plugin.as_str();
            self.in_record_spans(|| {
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let line = OneLine(line);
                    if stream == "stderr" {
                        tracing::warn!(target: "eddy::guest", plugin, stream, "{line}");
                    } else {
                        tracing::info!(target: "eddy::guest", plugin, stream, "{line}");
                    }
                }
            });
        }
    }
}

impl HostState {
    /// What the guest's clock sees of the store.
    pub(crate) fn clock(&mut self) -> DeadlineClock<'_> {
        DeadlineClock {
            deadline: self.deadline,
            wasi: self.clocks(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::eddy::plugin::types::Host for HostState {}
