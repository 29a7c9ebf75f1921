//! `eddy:plugin/publisher`: a follow-up is checked (allow-list, caps,
//! schema), filled in and buffered; it reaches Kafka only if the handler
//! returns `ok`.

use eddy_core::config::WireFormat;
use eddy_core::envelope;
use eddy_core::outcome::FollowUp;
use eddy_core::text::OneLine;

use crate::bindings::{self, PublishError};
use crate::host::HostState;

impl bindings::eddy::plugin::publisher::Host for HostState {
    fn publish(
        &mut self,
        topic: String,
        key: Option<String>,
        event: bindings::Event,
    ) -> Result<(), PublishError> {
        let mut event = eddy_core::Event::from(event);
        if !self.settings.publish_to_any && !self.settings.publish_to.contains(&topic) {
            tracing::warn!(plugin = %self.plugin, topic, "publish refused: topic not in publish_to");
            return Err(PublishError::NotAllowed(format!(
                "topic {topic:?} is not in publish_to of plugin {}",
                self.plugin
            )));
        }
        if self.follow_ups.len() >= self.settings.max_follow_ups {
            return Err(PublishError::LimitExceeded(format!(
                "at most {} follow-ups per event (max_follow_ups)",
                self.settings.max_follow_ups
            )));
        }
        if event.event_type.is_empty() {
            return Err(PublishError::Invalid("event_type is empty".into()));
        }
        if event.event_id.is_empty() {
            event.event_id = uuid::Uuid::now_v7().to_string();
        }
        if event.timestamp.is_empty() {
            event.timestamp = now_rfc3339();
        }
        if event.service_name.is_empty() {
            event.service_name = self.plugin.clone();
        }
        if event.causation_id.is_none() {
            event.causation_id = Some(self.record.event_id.clone());
        }
        if event.correlation_id.is_none() {
            event.correlation_id = Some(self.trigger_correlation.clone());
        }
        let frame = self.check_schema(&topic, &event)?;
        let mut payload = envelope::encode_plain(&event).map_err(PublishError::Invalid)?;
        if let Some(id) = frame {
            payload = eddy_schema::framed(id, &payload);
        }
        let key = key.or_else(|| event.aggregate_id.clone());
        // The key counts too: it is held in the host and written to Kafka.
        let size = payload.len() + key.as_ref().map_or(0, String::len);
        if self.follow_up_bytes + size > self.settings.max_follow_up_bytes {
            return Err(PublishError::LimitExceeded(format!(
                "follow-ups of one event may total {} bytes, keys included (max_follow_up_bytes)",
                self.settings.max_follow_up_bytes
            )));
        }
        self.follow_up_bytes += size;
        let handling = self.handling.as_ref().ok_or_else(|| {
            PublishError::Invalid("publish outside the handling of an event".into())
        })?;
        let trace = handling.follow_up(|| {
            let causation = event.causation_id.clone().unwrap_or_default();
            (causation, event.correlation_id.clone().unwrap_or_default())
        });
        self.follow_ups.push(FollowUp {
            topic,
            key,
            payload,
            event_id: event.event_id,
            trace,
        });
        Ok(())
    }
}

impl HostState {
    /// Checks a follow-up against its schema, if eddy has schemas: the id
    /// to frame it with when the plugin's follow-ups are written in the
    /// Confluent wire format.
    fn check_schema(
        &mut self,
        topic: &str,
        event: &eddy_core::Event,
    ) -> Result<Option<u32>, PublishError> {
        let Some(schemas) = &self.schemas else {
            return Ok(None);
        };
        let want_id = self.settings.wire_format == WireFormat::Confluent;
        let (event_type, version) = (&event.event_type, &event.version);
        // Only the time spent waiting on the registry itself counts.
        let waited = eddy_schema::registry_time_waited();
        let checked = schemas.check_out(topic, event_type, version, &event.data, want_id);
        self.schema_fetching += eddy_schema::registry_time_waited() - waited;
        match checked {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(why)) => {
                tracing::debug!(plugin = %self.plugin, topic, "publish refused: {}", OneLine(&why));
                Err(PublishError::Invalid(format!(
                    "{} {}: {why}",
                    OneLine(event_type),
                    OneLine(version)
                )))
            }
            Err(unavailable) => {
                let why = unavailable.to_string();
                self.schemas_unavailable = Some(why.clone());
                Err(PublishError::Invalid(format!(
                    "{why}; the event is handled again when it answers"
                )))
            }
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
