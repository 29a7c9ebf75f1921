//! On `order.placed`, flags orders above a configured amount and rejects
//! orders that make no sense. Shows `config`, `log` and `reject`.
//!
//! Config (`[plugin.fraud-check] config = { … }` in eddy.toml):
//! - `max_amount`: orders above it are flagged (default 1000);
//! - `alert_topic`: where `order.flagged` goes (default `order.alerts`).

use eddy_sdk::{Event, HandlerError, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
struct Order {
    order_id: String,
    user_id: String,
    amount: f64,
    #[serde(default = "default_currency")]
    currency: String,
}

fn default_currency() -> String {
    "EUR".to_string()
}

#[eddy_sdk::handler]
fn handle(event: Event) -> Result<(), HandlerError> {
    let order: Order = event.data()?;
    if !order.amount.is_finite() || order.amount < 0.0 {
        return Err(HandlerError::reject(format!(
            "order {} has an impossible amount {}",
            order.order_id, order.amount
        )));
    }
    let max_amount = match eddy_sdk::config("max_amount") {
        Some(text) => text.parse::<f64>().map_err(|_| {
            HandlerError::reject(format!("config max_amount {text:?} is not a number"))
        })?,
        None => 1000.0,
    };
    if order.amount <= max_amount {
        log::debug(format!("order {} is fine", order.order_id));
        return Ok(());
    }
    log::warn(format!(
        "order {} of {} {} is above {max_amount}",
        order.order_id, order.amount, order.currency
    ));
    let topic = eddy_sdk::config("alert_topic").unwrap_or_else(|| "order.alerts".to_string());
    let flagged = Event::integration("order.flagged").with_data(&order)?;
    eddy_sdk::publish(&topic, Some(&order.order_id), &flagged)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::{Level, json, testing};

    fn order(amount: f64) -> Event {
        Event::new("order.placed").with_json(json!({
            "order_id": "o-1", "user_id": "u-1", "amount": amount, "currency": "EUR"
        }))
    }

    #[test]
    fn large_orders_are_flagged() {
        testing::set_config("max_amount", "500");
        handle(order(750.0)).unwrap();

        let published = testing::published();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].topic, "order.alerts");
        assert_eq!(published[0].key.as_deref(), Some("o-1"));
        assert_eq!(published[0].event.event_type, "order.flagged");
        assert!(
            testing::logs()
                .iter()
                .any(|(level, _)| *level == Level::Warn)
        );
    }

    #[test]
    fn small_orders_pass_quietly() {
        testing::set_config("max_amount", "500");
        handle(order(20.0)).unwrap();
        assert!(testing::published().is_empty());
    }

    #[test]
    fn negative_amounts_are_rejected() {
        let result = handle(order(-5.0));
        assert!(matches!(result, Err(HandlerError::Reject(m)) if m.contains("impossible amount")));
    }

    #[test]
    fn a_bad_max_amount_is_rejected() {
        testing::set_config("max_amount", "lots");
        assert!(matches!(handle(order(5.0)), Err(HandlerError::Reject(_))));
    }

    #[test]
    fn alerts_go_where_config_says() {
        testing::set_config("alert_topic", "fraud.alerts");
        testing::allow_publish_to(&["fraud.alerts"]);
        handle(order(5000.0)).unwrap();
        assert_eq!(testing::published()[0].topic, "fraud.alerts");
    }
}
