//! The recorder keeps the host's rules, so a handler's native test sees what
//! eddy would do with the same handler.

use eddy_sdk::{Event, HandlerError, PublishError, json, testing};

/// Publishes to `out`, then fails as the event's data asks.
#[eddy_sdk::handler]
fn regretful(event: Event) -> Result<(), HandlerError> {
    eddy_sdk::publish("out", None, &Event::new("first").with_json(json!({})))?;
    match event.event_type.as_str() {
        "fail" => Err(HandlerError::reject("changed my mind")),
        "forbidden" => {
            eddy_sdk::publish("elsewhere", None, &Event::new("second"))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn what_a_failed_event_published_is_dropped() {
    regretful(Event::new("fine")).unwrap();
    assert!(regretful(Event::new("fail")).is_err());
    let published = testing::published();
    assert_eq!(
        published.len(),
        1,
        "only the event that succeeded: {published:?}"
    );
    assert_eq!(published[0].event.event_type, "first");
}

#[test]
fn a_refused_publish_passed_on_with_question_mark_drops_the_event() {
    testing::allow_publish_to(&["out"]);
    let result = regretful(Event::new("forbidden"));
    assert!(
        matches!(result, Err(HandlerError::Reject(ref m)) if m.contains("\"elsewhere\" is not in publish_to")),
        "{result:?}"
    );
    assert!(testing::published().is_empty());
}

#[test]
fn the_follow_up_count_is_per_event() {
    testing::set_limits(2, 1 << 20);
    let ok = Event::new("a").with_json(json!({}));
    eddy_sdk::testing::__begin_event();
    eddy_sdk::publish("out", None, &ok).unwrap();
    eddy_sdk::publish("out", None, &ok).unwrap();
    let third = eddy_sdk::publish("out", None, &ok);
    assert!(
        matches!(third, Err(PublishError::LimitExceeded(_))),
        "{third:?}"
    );
    eddy_sdk::testing::__end_event(false);
    // The next event starts its own count.
    regretful(Event::new("fine")).unwrap();
    assert_eq!(testing::published().len(), 3);
}

#[test]
fn the_byte_limit_counts_keys_and_the_envelope() {
    let big = Event::new("big").with_json(json!({ "blob": "x".repeat(400) }));
    testing::set_limits(100, 1000);
    eddy_sdk::publish("out", Some("k"), &big).unwrap();
    let second = eddy_sdk::publish("out", Some("k"), &big);
    assert!(
        matches!(second, Err(PublishError::LimitExceeded(ref m)) if m.contains("max_follow_up_bytes")),
        "{second:?}"
    );
}

#[test]
fn data_that_is_not_json_and_an_empty_type_are_invalid() {
    let mut not_json = Event::new("x");
    not_json.data = "{oops".to_string();
    let result = eddy_sdk::publish("out", None, &not_json);
    assert!(
        matches!(result, Err(PublishError::Invalid(ref m)) if m.starts_with("data of x is not JSON")),
        "{result:?}"
    );
    let result = eddy_sdk::publish("out", None, &Event::new(""));
    assert!(
        matches!(result, Err(PublishError::Invalid(_))),
        "{result:?}"
    );
    assert!(testing::published().is_empty());
}
