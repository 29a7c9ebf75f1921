//! `eddy.toml`: what to consume, where the plugins are, how events are routed
//! and what each plugin may do.
//!
//! Parsing is strict (unknown keys are errors). [`Config::load`] applies the
//! environment overrides the Python services already use, then
//! [`Config::problems`] lists everything that is wrong in words a user can
//! act on; `eddy check` prints that list and `eddy run` refuses to start on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

mod problems;
pub mod security;
pub mod telemetry;

pub use security::SecurityConfig;
pub use telemetry::TelemetryConfig;

/// Largest `memory_mb` a plugin may ask for; also the pooling allocator's slot size.
pub const MAX_MEMORY_MB: u64 = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub plugins: PluginsConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Per-plugin settings, keyed by plugin name (the `.wasm` file stem).
    #[serde(default)]
    pub plugin: BTreeMap<String, PluginSettings>,
    /// Span export; off unless an endpoint is named here or in the
    /// environment.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Event schemas, checked at both doors.
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// The file this was read from, if any; `eddy run` watches it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// What was wrong with the environment overrides.
    #[serde(skip)]
    pub env_problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Env `KAFKA_BOOTSTRAP_SERVERS` overrides it.
    pub bootstrap_servers: String,
    /// Env `KAFKA_CONSUMER_GROUP` overrides it.
    pub group_id: String,
    /// `earliest` or `latest`; env `KAFKA_AUTO_OFFSET_RESET` overrides it. Default `earliest`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    /// Any other librdkafka consumer property.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// Any other librdkafka producer property.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// `at-least-once` (the default) or `exactly-once`; env `EDDY_DELIVERY`
    /// overrides it.
    #[serde(default)]
    pub delivery: DeliveryMode,
    /// Exactly-once: the producer's `transactional.id`, one per running
    /// eddy and the same across its restarts. Default
    /// `eddy-<group_id>-<host name>`; env `EDDY_TRANSACTIONAL_ID` overrides it.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// Exactly-once: how often the open transaction is committed, in
    /// milliseconds (sooner once 10,000 records are in it). Default 100.
    #[serde(default = "default_transaction_ms")]
    pub transaction_ms: u64,
    /// Static group membership (KIP-345): the consumer's
    /// `group.instance.id`. A host restarted with the same id (after a
    /// crash too) takes its partitions back at once, without a rebalance;
    /// without one, a crashed host's partitions wait for its session to
    /// expire (45 s). Give it only where the name outlives a restart and
    /// is one host's alone (a StatefulSet's pod name, a systemd unit's
    /// host): two eddys with one id fence each other, and a host that
    /// stops for good keeps its partitions until its session expires.
    /// Unset by default; env `EDDY_GROUP_INSTANCE_ID` sets it.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// TLS and SASL, for every Kafka client eddy makes.
    #[serde(default)]
    pub security: SecurityConfig,
}

/// What a consumer of eddy's output may count on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    /// Every event's effects are written at least once; a crash can repeat
    /// some.
    #[default]
    AtLeastOnce,
    /// Effects and consumed offsets are committed in Kafka transactions: a
    /// `read_committed` consumer sees each event's effects exactly once.
    ExactlyOnce,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::AtLeastOnce => "at-least-once",
            DeliveryMode::ExactlyOnce => "exactly-once",
        }
    }
}

impl KafkaConfig {
    /// The `transactional.id` of exactly-once delivery.
    pub fn transactional_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_string());
            format!("eddy-{}-{host}", self.group_id)
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder of `<plugin-name>.wasm` files; relative to the config file.
    pub dir: PathBuf,
    /// Records with a larger value are dead-lettered (`too-large`) without
    /// reaching a plugin. Default 1 MiB.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Follow-ups of follow-ups an event may be (its `eddy-hops` header);
    /// one that has come further is dead-lettered (`loop`): a plugin that
    /// publishes to a topic it reads cannot multiply an event without end.
    /// Default 16.
    #[serde(default = "default_max_hops")]
    pub max_hops: u32,
    /// Plugin files larger than this are refused unread. Default 32 MiB.
    #[serde(default = "default_max_plugin_bytes")]
    pub max_plugin_bytes: u64,
    /// Where compiled plugins are cached (see `compiled`); relative to the
    /// config file; `""` caches nothing. Default
    /// `$XDG_CACHE_HOME/eddy/compiled`, else `$HOME/.cache/eddy/compiled`.
    pub compiled_cache: Option<PathBuf>,
}

impl PluginsConfig {
    /// The folder compiled plugins are cached in, if any.
    pub fn compiled_cache_dir(&self) -> Option<PathBuf> {
        match &self.compiled_cache {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => {
                let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
                var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache")))
                    .map(|cache| cache.join("eddy/compiled"))
            }
        }
    }
}

/// `[schemas]`: where the schemas of events' `data` come from, and what
/// an event without one meets (see `schema`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// JSON Schema files: `<dir>/<event_type>/<version>.json`, or
    /// `<dir>/<event_type>.json` for every version. Watched and reloaded.
    pub dir: Option<PathBuf>,
    /// A Confluent-compatible schema registry's base URL, e.g.
    /// `http://registry:8081` (Apicurio: `…/apis/ccompat/v7`).
    pub registry: Option<String>,
    /// The registry subject of an event type.
    #[serde(default)]
    pub subject: SubjectStrategy,
    /// What an event with no schema meets, in and out.
    #[serde(default)]
    pub unknown: UnknownSchema,
    /// The variable holding the registry's user name (HTTP Basic auth).
    #[serde(default)]
    pub registry_username_env: Option<String>,
    /// The variable, or the file, holding the registry's password.
    #[serde(default)]
    pub registry_password_env: Option<String>,
    #[serde(default)]
    pub registry_password_file: Option<PathBuf>,
}

impl SchemasConfig {
    /// The registry's user name and password, from `registry_username_env`
    /// and `registry_password_env` or `registry_password_file`; `None` if
    /// none of them is set (a user and password in the URL serve too).
    pub fn registry_login(&self) -> Result<Option<(String, String)>, String> {
        let table = "[schemas]";
        let user = security::secret_of(
            table,
            "registry_username",
            &self.registry_username_env,
            &None,
        )?;
        let password = security::secret_of(
            table,
            "registry_password",
            &self.registry_password_env,
            &self.registry_password_file,
        )?;
        let in_url = self
            .registry
            .as_deref()
            .is_some_and(|url| crate::text::split_userinfo(url).1.is_some());
        match (user, password) {
            (None, None) => Ok(None),
            _ if in_url => Err(format!(
                "{table}: the registry URL has a user and password, and registry_*_env / \
                 registry_password_file give them too; keep one"
            )),
            (Some(user), Some(password)) => Ok(Some((user, password))),
            (None, Some(_)) => Err(format!(
                "{table}: registry_password_env or _file is set, but no registry_username_env"
            )),
            (Some(_), None) => Err(format!(
                "{table}: registry_username_env is set, but neither registry_password_env nor \
                 registry_password_file"
            )),
        }
    }
}

/// How an event's registry subject is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// The event type, e.g. `user.created`.
    #[default]
    EventType,
    /// `<topic>-value`, Confluent's default (`TopicNameStrategy`).
    TopicValue,
}

/// What an event whose type has no schema meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownSchema {
    /// Handled (in) or published (out) unchecked.
    #[default]
    Allow,
    /// Dead-lettered `schema-unknown` (in); `publish` returns `invalid` (out).
    DeadLetter,
}

/// How a plugin's follow-ups are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireFormat {
    /// The plain JSON envelope.
    #[default]
    Json,
    /// The plain JSON envelope after the Confluent frame: a zero byte and
    /// the 4-byte big-endian id of the registry schema of its `data`.
    Confluent,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Default `0.0.0.0:9464`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub topic: String,
    /// Exact names or globs with `*` (`user.*`, `*`).
    pub event_types: Vec<String>,
    pub plugin: String,
}

impl Route {
    /// Every event of `topic` to `plugin`: what `eddy test` and `eddy
    /// replay` route by when told which plugin to run.
    pub fn everything(topic: &str, plugin: &str) -> Route {
        Route {
            topic: topic.to_string(),
            event_types: vec!["*".to_string()],
            plugin: plugin.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Topics the plugin may publish to; anything else is refused. Default none.
    #[serde(default)]
    pub publish_to: Vec<String>,
    /// Wall-clock budget of one attempt, in milliseconds. Default 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear memory limit of one instance, in MiB. Default 64.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Attempts after the first before the event is dead-lettered. Default 3.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Default `<topic>.dlq`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Follow-ups one event may publish. Default 100.
    #[serde(default = "default_max_follow_ups")]
    pub max_follow_ups: usize,
    /// Total bytes of the follow-ups of one event, keys included. Default
    /// 512 KiB.
    #[serde(default = "default_max_follow_up_bytes")]
    pub max_follow_up_bytes: usize,
    /// Events one instance may serve before it is replaced by a fresh one.
    /// Default 1: a fresh instance per event, nothing kept between events.
    /// Above 1, the plugin's globals and memory carry over between the
    /// events an instance serves (faster, less isolated); an instance that
    /// fails in any way is dropped.
    #[serde(default = "default_events_per_instance")]
    pub events_per_instance: u32,
    /// Values the plugin reads with `config.get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// How its follow-ups are written. Default `json`.
    #[serde(default)]
    pub wire_format: WireFormat,
    /// Any topic may be published to, whatever `publish_to` says: only
    /// `eddy test` without a config sets it; no file can.
    #[serde(skip)]
    pub publish_to_any: bool,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            publish_to: Vec::new(),
            timeout_ms: default_timeout_ms(),
            memory_mb: default_memory_mb(),
            max_retries: default_max_retries(),
            dead_letter_topic: None,
            max_follow_ups: default_max_follow_ups(),
            max_follow_up_bytes: default_max_follow_up_bytes(),
            events_per_instance: default_events_per_instance(),
            config: BTreeMap::new(),
            wire_format: WireFormat::Json,
            publish_to_any: false,
        }
    }
}

impl PluginSettings {
    /// Where this plugin's failed events from `topic` go.
    pub fn dead_letter_topic_for(&self, topic: &str) -> String {
        dead_letter_topic_for(self.dead_letter_topic.as_deref(), topic)
    }
}

/// The dead-letter topic of records from `topic`: the plugin's
/// `dead_letter_topic` when it sets one, else `<topic>.dlq`.
pub fn dead_letter_topic_for(configured: Option<&str>, topic: &str) -> String {
    match configured {
        Some(configured) => configured.to_string(),
        None => format!("{topic}.dlq"),
    }
}

fn default_offset_reset() -> String {
    "earliest".to_string()
}
fn default_transaction_ms() -> u64 {
    100
}
fn default_listen() -> String {
    "0.0.0.0:9464".to_string()
}
fn default_timeout_ms() -> u64 {
    1000
}
fn default_memory_mb() -> u64 {
    64
}
fn default_max_retries() -> u32 {
    3
}
fn default_max_plugin_bytes() -> u64 {
    32 << 20
}
fn default_max_hops() -> u32 {
    16
}
fn default_max_event_bytes() -> usize {
    1 << 20
}
fn default_max_follow_ups() -> usize {
    100
}
/// Below what the producer takes in one record (`message.max.bytes`,
/// 1,000,000 by default), headers and framing included.
fn default_max_follow_up_bytes() -> usize {
    512 << 10
}
fn default_events_per_instance() -> u32 {
    1
}

impl Config {
    /// Reads and parses `path`, applies the environment overrides and makes
    /// the plugin folder absolute.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| unreadable("config file", path, e))?;
        Config::from_file_text(&text, path)
    }

    /// [`Config::load`] for text already read from `path`.
    pub fn from_file_text(text: &str, path: &Path) -> anyhow::Result<Config> {
        let mut config = Config::parse(text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        config.apply_env(|name| std::env::var(name).ok());
        let base = path.parent().unwrap_or(Path::new("."));
        if config.plugins.dir.is_relative() {
            config.plugins.dir = base.join(&config.plugins.dir);
        }
        if let Some(cache) = &mut config.plugins.compiled_cache
            && cache.is_relative()
            && !cache.as_os_str().is_empty()
        {
            *cache = base.join(&*cache);
        }
        if let Some(dir) = &mut config.schemas.dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
        if let Some(file) = &mut config.schemas.registry_password_file
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!(parse_error(text, &e)))
    }

    /// Overrides Kafka settings from `KAFKA_BOOTSTRAP_SERVERS`,
    /// `KAFKA_CONSUMER_GROUP` and `KAFKA_AUTO_OFFSET_RESET` (and eddy's own
    /// from `EDDY_DELIVERY`, `EDDY_TRANSACTIONAL_ID`,
    /// `EDDY_GROUP_INSTANCE_ID` and `EDDY_SCHEMA_REGISTRY`).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("KAFKA_BOOTSTRAP_SERVERS") {
            self.kafka.bootstrap_servers = v;
        }
        if let Some(v) = var("KAFKA_CONSUMER_GROUP") {
            self.kafka.group_id = v;
        }
        if let Some(v) = var("KAFKA_AUTO_OFFSET_RESET") {
            self.kafka.auto_offset_reset = v;
        }
        if let Some(v) = var("EDDY_DELIVERY") {
            match v.trim() {
                "exactly-once" => self.kafka.delivery = DeliveryMode::ExactlyOnce,
                "at-least-once" => self.kafka.delivery = DeliveryMode::AtLeastOnce,
                _ => self.env_problems.push(format!(
                    "EDDY_DELIVERY is {v:?}; use \"at-least-once\" or \"exactly-once\""
                )),
            }
        }
        if let Some(v) = var("EDDY_TRANSACTIONAL_ID") {
            self.kafka.transactional_id = Some(v);
        }
        if let Some(v) = var("EDDY_GROUP_INSTANCE_ID") {
            self.kafka.group_instance_id = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("EDDY_SCHEMA_REGISTRY") {
            self.schemas.registry = Some(v).filter(|v| !v.trim().is_empty());
        }
    }

    /// Settings of `plugin`, or the defaults when it has no `[plugin.NAME]` table.
    pub fn settings(&self, plugin: &str) -> PluginSettings {
        self.plugin.get(plugin).cloned().unwrap_or_default()
    }

    /// The distinct topics the routes consume, in order of first mention.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for route in &self.routes {
            if !topics.contains(&route.topic) {
                topics.push(route.topic.clone());
            }
        }
        topics
    }
}

/// Why `path` (a `what`) cannot be read; when it is not eddy's to read,
/// the user eddy runs as, which a container's volume must let in.
pub fn unreadable(what: &str, path: &Path, error: std::io::Error) -> anyhow::Error {
    let whom = as_whom(error.kind());
    anyhow::anyhow!("cannot read {what} {}: {error}{whom}", path.display())
}

/// `; eddy runs as uid N (gid M)` after an error of `kind` that says eddy
/// was denied access, else nothing.
pub fn as_whom(kind: std::io::ErrorKind) -> String {
    if kind != std::io::ErrorKind::PermissionDenied {
        return String::new();
    }
    // The owner of /proc/self is the process's effective user.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| format!("; eddy runs as uid {} (gid {})", m.uid(), m.gid()))
        .unwrap_or_default()
}

/// Whether a setting called `name` may hold a secret: its value is never
/// shown. Loose on purpose, so a misspelt `sasl.pasword` counts.
pub fn may_be_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secr", "key", "token", "cred"]
        .iter()
        .any(|word| name.contains(word))
}

/// A TOML error with its line number and the line, unless the line may
/// hold a secret (the parser's own message quotes the line).
fn parse_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error.message().to_string();
    };
    let number = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(number - 1).unwrap_or("");
    let shown = if may_be_secret(line) {
        "(the line is not shown: it may hold a secret)"
    } else {
        line
    };
    format!("line {number}: {}\n  | {shown}", error.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The design's example config.
    pub(crate) const EXAMPLE: &str = r#"
        [kafka]
        bootstrap_servers = "localhost:9092"
        group_id = "core-consumer-group"

        [plugins]
        dir = "./plugins"

        [[routes]]
        topic = "user.events"
        event_types = ["user.created", "user.*"]
        plugin = "welcome-email"

        [plugin.welcome-email]
        publish_to = ["notification.commands"]
        config = { sender = "noreply@example.com" }
    "#;

    #[test]
    fn the_design_example_parses_with_defaults() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.kafka.auto_offset_reset, "earliest");
        let settings = config.settings("welcome-email");
        assert_eq!(settings.timeout_ms, 1000);
        assert_eq!(settings.memory_mb, 64);
        assert_eq!(settings.max_retries, 3);
        assert_eq!(
            settings.dead_letter_topic_for("user.events"),
            "user.events.dlq"
        );
        assert_eq!(settings.config["sender"], "noreply@example.com");
        assert!(config.problems().is_empty(), "{:?}", config.problems());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = EXAMPLE.replace("publish_to", "publish_too");
        let err = format!("{:#}", Config::parse(&text).unwrap_err());
        assert!(err.contains("publish_too"), "{err}");
    }

    #[test]
    fn a_broken_line_that_may_hold_a_secret_is_not_quoted() {
        let text = "[kafka.consumer]\n\"sasl.password\" = \"hunter2\" oops\n";
        let err = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn environment_overrides_kafka_settings() {
        let mut config = Config::parse(EXAMPLE).unwrap();
        config.apply_env(|name| match name {
            "KAFKA_BOOTSTRAP_SERVERS" => Some("kafka:29092".into()),
            "KAFKA_CONSUMER_GROUP" => Some("other".into()),
            "KAFKA_AUTO_OFFSET_RESET" => Some("latest".into()),
            _ => None,
        });
        assert_eq!(config.kafka.bootstrap_servers, "kafka:29092");
        assert_eq!(config.kafka.group_id, "other");
        assert_eq!(config.kafka.auto_offset_reset, "latest");
    }

    #[test]
    fn schemas_are_configured_strictly_and_the_registry_from_the_environment() {
        let text =
            format!("{EXAMPLE}\n[schemas]\nsubject = \"topic-value\"\nunknown = \"dead-letter\"\n");
        let mut config = Config::parse(&text).unwrap();
        assert_eq!(config.schemas.subject, SubjectStrategy::TopicValue);
        assert_eq!(config.schemas.unknown, UnknownSchema::DeadLetter);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        config.apply_env(|name| {
            (name == "EDDY_SCHEMA_REGISTRY").then(|| "https://registry:8081".to_string())
        });
        let problems = config.problems();
        assert!(
            problems.iter().any(|p| p.contains("plain HTTP only")),
            "{problems:?}"
        );
        let wrong = text.replace("\"dead-letter\"", "\"drop\"");
        let err = format!("{:#}", Config::parse(&wrong).unwrap_err());
        assert!(err.contains("unknown variant `drop`"), "{err}");
        let confluent = text.replace(
            "[plugin.welcome-email]",
            "[plugin.welcome-email]\nwire_format = \"confluent\"",
        );
        let problems = Config::parse(&confluent).unwrap().problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("[schemas] names no registry")),
            "{problems:?}"
        );
    }
}
