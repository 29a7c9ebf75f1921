//! What is wrong with a configuration, in words a user can act on:
//! what `eddy check` prints and `eddy run` refuses to start on.

use std::collections::BTreeMap;

use super::*;

impl Config {
    /// Everything wrong with this configuration that does not need a plugin
    /// file or Kafka to find out. Empty when it is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = telemetry::settings(&self.telemetry) {
            problems.push(format!("[telemetry]: {problem}"));
        }
        problems.extend(schemas_problems(&self.schemas));
        let kafka = &self.kafka;
        if kafka.bootstrap_servers.trim().is_empty() {
            problems.push("[kafka] bootstrap_servers is empty".to_string());
        }
        if kafka.group_id.trim().is_empty() {
            problems.push("[kafka] group_id is empty".to_string());
        }
        if !matches!(kafka.auto_offset_reset.as_str(), "earliest" | "latest") {
            problems.push(format!(
                "[kafka] auto_offset_reset is {:?}; use \"earliest\" or \"latest\"",
                kafka.auto_offset_reset
            ));
        }
        if let Some(id) = &kafka.group_instance_id {
            if id.trim().is_empty() {
                problems.push(
                    "[kafka] group_instance_id is empty; remove it or name this host".to_string(),
                );
            }
            if kafka.consumer.contains_key("group.instance.id") {
                problems.push(
                    "[kafka] group_instance_id and [kafka.consumer] group.instance.id are both set; \
                     keep group_instance_id"
                        .to_string(),
                );
            }
        }
        problems.extend(self.env_problems.iter().cloned());
        if let Err(security) = kafka.security.resolve() {
            problems.extend(security);
        }
        if kafka.delivery == DeliveryMode::ExactlyOnce {
            problems.extend(exactly_once_problems(kafka));
        }
        if self.plugins.max_hops == 0 {
            problems.push(
                "[plugins] max_hops is 0: every event would be dead-lettered as a loop; \
                 use 1 or more (default 16)"
                    .to_string(),
            );
        }
        if self.routes.is_empty() {
            problems.push("no [[routes]]: eddy would consume nothing".to_string());
        }
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!(
                "route #{} (topic {:?}, plugin {:?})",
                i + 1,
                route.topic,
                route.plugin
            );
            if route.topic.trim().is_empty() {
                problems.push(format!("{at}: topic is empty"));
            }
            if !is_plugin_name(&route.plugin) {
                problems.push(format!(
                    "{at}: plugin name must be letters, digits, '-' or '_' (it is the .wasm file stem)"
                ));
            }
            if route.event_types.is_empty() {
                problems.push(format!(
                    "{at}: event_types is empty; list event types or use [\"*\"] for all"
                ));
            }
            if route.event_types.iter().any(|t| t.trim().is_empty()) {
                problems.push(format!("{at}: an event type is empty"));
            }
        }
        for (name, settings) in &self.plugin {
            let at = format!("[plugin.{name}]");
            if !self.routes.iter().any(|r| &r.plugin == name) {
                problems.push(format!("{at}: no route sends events to this plugin"));
            }
            if settings.timeout_ms == 0 {
                problems.push(format!("{at}: timeout_ms must be at least 1"));
            }
            if settings.events_per_instance == 0 {
                problems.push(format!(
                    "{at}: events_per_instance must be at least 1 (1: a fresh instance per event)"
                ));
            }
            if settings.memory_mb == 0 || settings.memory_mb > MAX_MEMORY_MB {
                problems.push(format!(
                    "{at}: memory_mb is {}; it must be between 1 and {MAX_MEMORY_MB}",
                    settings.memory_mb
                ));
            }
            if settings.max_follow_ups == 0 && !settings.publish_to.is_empty() {
                problems.push(format!(
                    "{at}: publish_to lists topics but max_follow_ups is 0"
                ));
            }
            if settings.publish_to.iter().any(|t| t.trim().is_empty()) {
                problems.push(format!("{at}: publish_to has an empty topic"));
            }
            if settings.wire_format == WireFormat::Confluent && self.schemas.registry.is_none() {
                problems.push(format!(
                    "{at}: wire_format = \"confluent\" writes a registry schema id, \
                     but [schemas] names no registry"
                ));
            }
        }
        problems
    }
}

/// What in `[kafka]` stands in the way of exactly-once delivery.
fn exactly_once_problems(kafka: &KafkaConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let setting = |map: &BTreeMap<String, String>, name: &str| {
        map.get(name).map(|v| v.trim().to_ascii_lowercase())
    };
    let at = "[kafka] delivery = \"exactly-once\"";
    if setting(&kafka.producer, "enable.idempotence").as_deref() == Some("false") {
        problems.push(format!(
            "{at} needs the idempotent producer: remove enable.idempotence = \"false\" \
             from [kafka.producer]"
        ));
    }
    if setting(&kafka.consumer, "enable.auto.commit").as_deref() == Some("true") {
        problems.push(format!(
            "{at} commits offsets in transactions: remove enable.auto.commit from [kafka.consumer]"
        ));
    }
    if setting(&kafka.consumer, "isolation.level").as_deref() == Some("read_uncommitted") {
        problems.push(format!(
            "{at} reads only committed records: remove isolation.level = \"read_uncommitted\" \
             from [kafka.consumer]"
        ));
    }
    if kafka.producer.contains_key("transactional.id") {
        problems.push(format!(
            "{at}: set the id with [kafka] transactional_id, not [kafka.producer] transactional.id"
        ));
    }
    if kafka.transaction_ms == 0 {
        problems.push("[kafka] transaction_ms must be at least 1".to_string());
    }
    if kafka
        .transactional_id
        .as_ref()
        .is_some_and(|id| id.trim().is_empty())
    {
        problems.push("[kafka] transactional_id is empty".to_string());
    }
    problems
}

fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What is wrong with `[schemas]`, before anything is read.
fn schemas_problems(config: &SchemasConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(configured) = &config.registry {
        // Said without its user and password, if it has them.
        let (url, _) = crate::text::split_userinfo(configured);
        if url.starts_with("https://") {
            problems.push(format!(
                "[schemas] registry {url:?}: eddy reads the registry over plain HTTP only; \
                 reach it through a local proxy that speaks TLS to it"
            ));
        } else if !url.starts_with("http://") || url.len() <= "http://".len() {
            problems.push(format!("[schemas] registry {url:?} is not an http:// URL"));
        }
    }
    if let Err(problem) = config.registry_login() {
        problems.push(problem);
    }
    if config.registry.is_none()
        && (config.registry_username_env.is_some()
            || config.registry_password_env.is_some()
            || config.registry_password_file.is_some())
    {
        problems.push("[schemas]: a registry login is given, but no registry".to_string());
    }
    if let Some(dir) = &config.dir
        && !dir.is_dir()
    {
        problems.push(format!("[schemas] dir {} is not a folder", dir.display()));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::tests::EXAMPLE;
    use super::*;

    #[test]
    fn problems_name_what_to_fix() {
        let text = EXAMPLE
            .replace(
                "event_types = [\"user.created\", \"user.*\"]",
                "event_types = []",
            )
            .replace(
                "[plugin.welcome-email]",
                "[plugin.welcome-email]\nmemory_mb = 0",
            );
        let problems = Config::parse(&text).unwrap().problems();
        assert!(
            problems.iter().any(|p| p.contains("event_types is empty")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("memory_mb is 0")),
            "{problems:?}"
        );
        let exactly = EXAMPLE.replace(
            "[plugins]\n",
            "[kafka.producer]\n\"enable.idempotence\" = \"false\"\n\n[plugins]\n",
        );
        let mut config = Config::parse(&exactly).unwrap();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        config.apply_env(|name| (name == "EDDY_DELIVERY").then(|| "exactly-once".into()));
        let problems = config.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("needs the idempotent producer")),
            "{problems:?}"
        );
        config.apply_env(|name| (name == "EDDY_DELIVERY").then(|| "exactly_once".into()));
        assert!(
            config
                .problems()
                .iter()
                .any(|p| p.contains("EDDY_DELIVERY is")),
            "{:?}",
            config.problems()
        );
        let mut fixed = Config::parse(EXAMPLE).unwrap();
        fixed.apply_env(|name| (name == "EDDY_GROUP_INSTANCE_ID").then(|| "orders-0".into()));
        assert_eq!(fixed.kafka.group_instance_id.as_deref(), Some("orders-0"));
        assert!(fixed.problems().is_empty(), "{:?}", fixed.problems());
        let empty = EXAMPLE.replace("[kafka]\n", "[kafka]\ngroup_instance_id = \" \"\n");
        let problems = Config::parse(&empty).unwrap().problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("group_instance_id is empty")),
            "{problems:?}"
        );
        let looping = EXAMPLE.replace("[plugins]\n", "[plugins]\nmax_hops = 0\n");
        let problems = Config::parse(&looping).unwrap().problems();
        assert!(
            problems.iter().any(|p| p.contains("max_hops is 0")),
            "{problems:?}"
        );
    }
}
