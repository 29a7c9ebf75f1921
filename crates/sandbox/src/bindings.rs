//! Host-side bindings of the `eddy:plugin` world in `wit/`, and the
//! conversions between its types and eddy-core's plain ones: the sandbox's
//! door, the only place the two meet.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "handler",
});

use wasmtime::component::{ComponentType, Lower, TypedFunc};
use wasmtime::{AsContext, AsContextMut};

pub use eddy::plugin::log::Level;
pub use eddy::plugin::types::PublishError;

impl From<Event> for eddy_core::Event {
    fn from(event: Event) -> eddy_core::Event {
        eddy_core::Event {
            event_id: event.event_id,
            event_type: event.event_type,
            timestamp: event.timestamp,
            service_name: event.service_name,
            version: event.version,
            data: event.data,
            metadata: event.metadata,
            aggregate_id: event.aggregate_id,
            aggregate_type: event.aggregate_type,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            command_name: event.command_name,
            reply_to: event.reply_to,
            timeout_ms: event.timeout_ms,
        }
    }
}

/// The world's `event` record, borrowed from eddy-core's event: the host
/// lowers a record's decoded event into the guest without copying it first.
#[derive(ComponentType, Lower)]
#[component(record)]
struct EventView<'a> {
    #[component(name = "event-id")]
    event_id: &'a str,
    #[component(name = "event-type")]
    event_type: &'a str,
    timestamp: &'a str,
    #[component(name = "service-name")]
    service_name: &'a str,
    version: &'a str,
    data: &'a str,
    metadata: &'a [(String, String)],
    #[component(name = "aggregate-id")]
    aggregate_id: Option<&'a str>,
    #[component(name = "aggregate-type")]
    aggregate_type: Option<&'a str>,
    #[component(name = "correlation-id")]
    correlation_id: Option<&'a str>,
    #[component(name = "causation-id")]
    causation_id: Option<&'a str>,
    #[component(name = "command-name")]
    command_name: Option<&'a str>,
    #[component(name = "reply-to")]
    reply_to: Option<&'a str>,
    #[component(name = "timeout-ms")]
    timeout_ms: Option<u64>,
}

impl<'a> From<&'a eddy_core::Event> for EventView<'a> {
    fn from(event: &'a eddy_core::Event) -> EventView<'a> {
        EventView {
            event_id: &event.event_id,
            event_type: &event.event_type,
            timestamp: &event.timestamp,
            service_name: &event.service_name,
            version: &event.version,
            data: &event.data,
            metadata: &event.metadata,
            aggregate_id: event.aggregate_id.as_deref(),
            aggregate_type: event.aggregate_type.as_deref(),
            correlation_id: event.correlation_id.as_deref(),
            causation_id: event.causation_id.as_deref(),
            command_name: event.command_name.as_deref(),
            reply_to: event.reply_to.as_deref(),
            timeout_ms: event.timeout_ms,
        }
    }
}

/// The world's `delivery` record, borrowed from eddy-core's.
#[derive(ComponentType, Lower)]
#[component(record)]
struct DeliveryView<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    attempt: u32,
}

impl<'a> From<&'a eddy_core::Delivery> for DeliveryView<'a> {
    fn from(delivery: &'a eddy_core::Delivery) -> DeliveryView<'a> {
        DeliveryView {
            topic: &delivery.topic,
            partition: delivery.partition,
            offset: delivery.offset,
            key: delivery.key.as_deref(),
            attempt: delivery.attempt,
        }
    }
}

/// `handle`'s parameters and results, as the views lower them.
type HandleParams<'a> = (EventView<'a>, DeliveryView<'a>);
type HandleResults = (Result<(), HandlerError>,);

impl Handler {
    /// Checks that the guest's `handle` takes the records the views lower.
    /// [`HandlerPre::new`] checked it against the generated `Event` and
    /// `Delivery`; this checks the views against the same function, once per
    /// plugin, so [`Handler::handle_event`] may skip the check on every call.
    pub fn check_views(&self, store: impl AsContext) -> wasmtime::Result<()> {
        self.handle
            .typed::<HandleParams<'static>, HandleResults>(store)
            .map(drop)
    }

    /// Calls the guest's `handle` with eddy-core's event and delivery,
    /// lowered straight from them.
    ///
    /// The plugin's first instance must have passed [`Handler::check_views`].
    pub fn handle_event(
        &self,
        store: impl AsContextMut,
        event: &eddy_core::Event,
        delivery: &eddy_core::Delivery,
    ) -> wasmtime::Result<Result<(), HandlerError>> {
        // SAFETY: `check_views` type-checked this function with the same
        // parameter and result types; only the borrows' lifetime differs,
        // which the component model does not see. The generated
        // `call_handle` does the same with its own types.
        let typed =
            unsafe { TypedFunc::<HandleParams<'_>, HandleResults>::new_unchecked(self.handle) };
        let (result,) = typed.call(store, (event.into(), delivery.into()))?;
        Ok(result)
    }
}
