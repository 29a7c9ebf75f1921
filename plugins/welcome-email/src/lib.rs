//! On `user.created`, asks the notification service to send a welcome email.

use eddy_sdk::{Event, HandlerError};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct UserCreated {
    user_id: String,
    email: String,
    name: String,
}

#[derive(Serialize)]
struct SendWelcomeEmail<'a> {
    user_id: &'a str,
    email: &'a str,
    name: &'a str,
}

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    if event.event_type != "user.created" {
        return Ok(());
    }
    let user: UserCreated = event.data()?;
    let command = Event::command("notification.send_welcome_email", "SendWelcomeEmail").with_data(
        &SendWelcomeEmail {
            user_id: &user.user_id,
            email: &user.email,
            name: &user.name,
        },
    )?;
    eddy_sdk::publish("notification.commands", Some(&user.user_id), &command)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::{EventKind, json, testing};

    #[test]
    fn user_created_asks_for_a_welcome_email() {
        let event = Event::domain("user.created", "User", "u-1").with_json(json!({
            "user_id": "u-1", "email": "ada@example.com", "name": "Ada", "plan": "free"
        }));
        handle(event).unwrap();

        let published = testing::published();
        assert_eq!(published.len(), 1);
        let sent = &published[0];
        assert_eq!(sent.topic, "notification.commands");
        assert_eq!(sent.key.as_deref(), Some("u-1"));
        assert_eq!(sent.event.kind(), EventKind::Command);
        assert_eq!(sent.event.event_type, "notification.send_welcome_email");
        assert_eq!(sent.event.command_name.as_deref(), Some("SendWelcomeEmail"));
        assert_eq!(
            sent.event.data::<eddy_sdk::Value>().unwrap(),
            json!({"user_id": "u-1", "email": "ada@example.com", "name": "Ada"})
        );
    }

    #[test]
    fn a_user_without_email_is_rejected() {
        let event = Event::new("user.created").with_json(json!({"user_id": "u-2"}));
        assert!(matches!(handle(event), Err(HandlerError::Reject(_))));
        assert!(testing::published().is_empty());
    }

    #[test]
    fn other_events_are_ignored() {
        handle(Event::new("user.updated")).unwrap();
        assert!(testing::published().is_empty());
    }
}
