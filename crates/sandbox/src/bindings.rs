//! Host-side bindings of the `eddy:plugin` world in `wit/`, and the
//! conversions between its types and eddy-core's plain ones: the sandbox's
//! door, the only place the two meet.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "handler",
});

pub use eddy::plugin::log::Level;
pub use eddy::plugin::types::PublishError;

impl From<&eddy_core::Event> for Event {
    fn from(event: &eddy_core::Event) -> Event {
        Event {
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            timestamp: event.timestamp.clone(),
            service_name: event.service_name.clone(),
            version: event.version.clone(),
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            aggregate_id: event.aggregate_id.clone(),
            aggregate_type: event.aggregate_type.clone(),
            correlation_id: event.correlation_id.clone(),
            causation_id: event.causation_id.clone(),
            command_name: event.command_name.clone(),
            reply_to: event.reply_to.clone(),
            timeout_ms: event.timeout_ms,
        }
    }
}

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

impl From<&eddy_core::Delivery> for Delivery {
    fn from(delivery: &eddy_core::Delivery) -> Delivery {
        Delivery {
            topic: delivery.topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
            key: delivery.key.clone(),
            attempt: delivery.attempt,
        }
    }
}
