//! On `user.deleted`, records that the user's data was purged, as a domain
//! event on the `User` aggregate.

use eddy_sdk::{Event, HandlerError};
use serde::Deserialize;

#[derive(Deserialize)]
struct UserDeleted {
    user_id: Option<String>,
}

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    if event.event_type != "user.deleted" {
        return Ok(());
    }
    let deleted: UserDeleted = event.data()?;
    let user_id = deleted
        .user_id
        .or_else(|| event.aggregate_id.clone())
        .ok_or_else(|| HandlerError::reject("user.deleted names no user_id"))?;
    let purged = Event::domain("user.data_purged", "User", &user_id)
        .with_json(eddy_sdk::json!({ "user_id": user_id }));
    eddy_sdk::log::info(format!("purged data of user {user_id}"));
    // No key: the host keys domain events by aggregate_id.
    eddy_sdk::publish("user.events", None, &purged)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::{EventKind, json, testing};

    #[test]
    fn user_deleted_publishes_data_purged() {
        let event =
            Event::domain("user.deleted", "User", "u-7").with_json(json!({"user_id": "u-7"}));
        handle(event).unwrap();

        let published = testing::published();
        assert_eq!(published.len(), 1);
        let purged = &published[0];
        assert_eq!(purged.topic, "user.events");
        assert_eq!(purged.key, None);
        assert_eq!(purged.event.kind(), EventKind::Domain);
        assert_eq!(purged.event.event_type, "user.data_purged");
        assert_eq!(purged.event.aggregate_type.as_deref(), Some("User"));
        assert_eq!(purged.event.aggregate_id.as_deref(), Some("u-7"));
    }

    #[test]
    fn falls_back_to_the_aggregate_id() {
        handle(Event::domain("user.deleted", "User", "u-8")).unwrap();
        assert_eq!(
            testing::published()[0].event.aggregate_id.as_deref(),
            Some("u-8")
        );
    }

    #[test]
    fn no_user_id_anywhere_is_rejected() {
        let result = handle(Event::new("user.deleted"));
        assert!(matches!(result, Err(HandlerError::Reject(_))));
    }
}
