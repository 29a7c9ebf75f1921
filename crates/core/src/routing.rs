//! Which plugins an event goes to: by topic, then by event type (exact or a
//! glob with `*`). An event matching several routes goes to each plugin once,
//! in the order the routes are written.

use crate::config::Route;

#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        Router {
            routes: routes.to_vec(),
        }
    }

    /// The plugins routed for `event_type` on `topic`, without repeats.
    pub fn plugins_for(&self, topic: &str, event_type: &str) -> Vec<&str> {
        let mut plugins: Vec<&str> = Vec::new();
        for route in &self.routes {
            if route.topic == topic
                && route.event_types.iter().any(|p| glob_match(p, event_type))
                && !plugins.contains(&route.plugin.as_str())
            {
                plugins.push(&route.plugin);
            }
        }
        plugins
    }
}

/// `*` matches any run of characters (dots included); everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(topic: &str, types: &[&str], plugin: &str) -> Route {
        Route {
            topic: topic.into(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            plugin: plugin.into(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("user.created", "user.created"));
        assert!(!glob_match("user.created", "user.created2"));
        assert!(glob_match("user.*", "user.created"));
        assert!(!glob_match("user.*", "order.created"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*.created", "user.created"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn fans_out_by_topic_and_type_without_repeats() {
        let router = Router::new(&[
            route("user.events", &["user.created"], "welcome-email"),
            route("user.events", &["user.*"], "audit"),
            route("user.events", &["user.created", "*"], "audit"),
            route("order.events", &["user.created"], "elsewhere"),
        ]);
        assert_eq!(
            router.plugins_for("user.events", "user.created"),
            ["welcome-email", "audit"]
        );
        assert_eq!(router.plugins_for("user.events", "user.deleted"), ["audit"]);
        assert!(router.plugins_for("other", "user.created").is_empty());
    }
}
