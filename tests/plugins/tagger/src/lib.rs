//! Answers every event with one `tagged` follow-up on the `out_topic` config
//! value, saying which build of the plugin handled it and passing on the
//! event's `data.seq`. An event with `data.fail_attempts = n` is asked to be
//! retried on its first n attempts (a slow record, for revocation tests);
//! one with `data.pad = n` gets n bytes of padding in its follow-up (one
//! larger than a topic takes); v1 rejects one with `data.v1_bug = true`,
//! which v2 handles.

use eddy_sdk::{Delivery, Event, HandlerError, Value, json};

#[cfg(not(feature = "v2"))]
const TAG: &str = "v1";
#[cfg(feature = "v2")]
const TAG: &str = "v2";

#[eddy_sdk::handler]
fn handle(event: Event, delivery: Delivery) -> Result<(), HandlerError> {
    let out = eddy_sdk::config("out_topic")
        .ok_or_else(|| HandlerError::reject("tagger needs config out_topic"))?;
    let data: Value = event.data()?;
    if data["fail_attempts"]
        .as_u64()
        .is_some_and(|n| u64::from(delivery.attempt) <= n)
    {
        return Err(HandlerError::retry(format!(
            "asked to fail attempt {}",
            delivery.attempt
        )));
    }
    // The bug v2 fixes, for redrive tests.
    if cfg!(not(feature = "v2")) && data["v1_bug"] == json!(true) {
        return Err(HandlerError::reject("v1 cannot handle this event"));
    }
    let pad = data["pad"].as_u64().unwrap_or(0) as usize;
    let tagged = Event::new("tagged").with_json(json!({
        "tag": TAG,
        "seq": data["seq"],
        "of": event.event_type,
        "pad": "p".repeat(pad),
    }));
    eddy_sdk::publish(&out, event.aggregate_id.as_deref(), &tagged)?;
    Ok(())
}
