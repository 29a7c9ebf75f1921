//! The Kafka clients: their settings, the errors they report (said once,
//! then once a minute, and kept for `/readyz`), and the producer's context.
//! The consumer's context acts on the pipeline, so it lives there.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy_core::config::security::TokenSource;
use eddy_core::config::{DeliveryMode, KafkaConfig, may_be_secret};
use eddy_core::metrics;
use rdkafka::ClientConfig;
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaConfRes;

pub fn consumer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", &kafka.group_id)
        .set("auto.offset.reset", &kafka.auto_offset_reset)
        // Offsets are stored by the workers once an event is finished; the
        // auto-commit only sends what was stored.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // librdkafka stops fetching a partition whose local queue is full,
        // for a second by default: long enough for eddy to drain it and sit
        // idle. Look again soon instead.
        .set("fetch.queue.backoff.ms", "10")
        .set("statistics.interval.ms", "5000");
    // Partitions move one at a time on a rebalance; the others keep
    // flowing. The new protocol (KIP-848, `group.protocol = "consumer"` in
    // [kafka.consumer]) is incremental by itself, and the broker assigns.
    let protocol = kafka.consumer.get("group.protocol").map(|p| p.trim());
    if protocol != Some("consumer") {
        config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    if let Some(id) = &kafka.group_instance_id {
        config.set("group.instance.id", id.trim());
    }
    secure(&mut config, kafka);
    if kafka.delivery == DeliveryMode::ExactlyOnce {
        // Offsets are committed in the transactions; follow-ups of aborted
        // transactions (eddy's or anyone's) are never read.
        config
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    for (name, value) in &kafka.consumer {
        config.set(name, value);
    }
    config
}

pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // Workers produce a batch's follow-ups together and await the
        // acknowledgements after: lingering would only add latency.
        .set("linger.ms", "0")
        // Uncompressed: every Kafka client reads it (plain `pip install
        // aiokafka` reads neither lz4 nor zstd), for no CPU time; gzip,
        // which all read too, cost 21 % more CPU per follow-up. lz4 or zstd
        // are one setting away (docs/performance.md).
        .set("compression.type", "none");
    secure(&mut config, kafka);
    if kafka.delivery == DeliveryMode::ExactlyOnce {
        config.set("transactional.id", kafka.transactional_id());
    }
    for (name, value) in &kafka.producer {
        config.set(name, value);
    }
    config
}

/// Applies `[kafka.security]`. What cannot be resolved was refused before
/// any client is made ([`eddy_core::config::Config::problems`]); if it went
/// wrong since (a variable unset meanwhile), the client connects without
/// it and the brokers refuse it, which `/readyz` shows.
pub fn secure(config: &mut ClientConfig, kafka: &KafkaConfig) {
    match kafka.security.resolve() {
        Ok(settings) => {
            for (name, value) in settings {
                config.set(name, value);
            }
        }
        Err(problems) => tracing::error!("[kafka.security]: {}", problems.join("; ")),
    }
}

/// `error`, with the value of a setting that may be a secret left out:
/// librdkafka's configuration errors quote the value.
pub fn redacted(error: KafkaError) -> anyhow::Error {
    match error {
        // A name librdkafka does not know may be a misspelt secret one; the
        // description may quote the value too.
        KafkaError::ClientConfig(result, _, key, _)
            if result == RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN || may_be_secret(&key) =>
        {
            anyhow::anyhow!(
                "Kafka setting {key:?} refused; its value is not shown, it may be a secret \
             (is the name spelt right? the names are librdkafka's)"
            )
        }
        other => other.into(),
    }
}

/// Commits the stored offsets; having nothing to commit is fine.
pub fn commit<C: ConsumerContext>(consumer: &impl Consumer<C>, when: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::error!("offset commit {when} failed: {e}"),
    }
}

/// How often an error the consumer keeps handing back is logged again.
const ERROR_REPEAT_LOG: Duration = Duration::from_secs(60);
/// How long after the last of an error `/readyz` still shows it.
const ERROR_RECENT: Duration = Duration::from_secs(30);

/// Errors of eddy's Kafka clients: what the consumer hands back instead of
/// records (a batch it cannot decode) and what the clients report (brokers
/// they cannot reach, credentials or certificates refused). Reported without a flood: each
/// kind of error is logged when it first comes, then at most once a minute
/// with how often it came; counted by code; and shown by `/readyz` while it
/// keeps coming.
#[derive(Default)]
pub struct KafkaErrors {
    /// By error code (the text of one kind varies: timings, brokers).
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    text: String,
    /// Whether `text` has librdkafka's reason, which says more than the
    /// error code a consumed record carries.
    detailed: bool,
    /// Whether eddy cannot do its work while this keeps coming (a batch it
    /// cannot decode, credentials refused), rather than a passing trouble
    /// the brokers' own check in `/readyz` covers.
    blocking: bool,
    last: Instant,
    logged: Instant,
    since_logged: u64,
}

impl KafkaErrors {
    /// `error`, with librdkafka's `reason` if it gave one.
    pub fn record(&self, error: &KafkaError, reason: Option<&str>) {
        // The end of a partition is no error (only `eddy replay` asks to be
        // told of it).
        if matches!(error, KafkaError::PartitionEOF(_)) {
            return;
        }
        let text = match reason {
            Some(reason) => format!("{error}: {reason}"),
            None => error.to_string(),
        };
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| text.clone(), |code| format!("{code:?}"));
        metrics::consumer_error(
            error
                .rdkafka_error_code()
                .map_or_else(|| "other".to_string(), |code| format!("{code:?}")),
        );
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(&code) {
            None => {
                tracing::error!(
                    "Kafka: {text}; {}; said again at most once a minute",
                    advice(error)
                );
                seen.insert(
                    code,
                    Seen {
                        blocking: blocking(error, &text),
                        text,
                        detailed: reason.is_some(),
                        last: now,
                        logged: now,
                        since_logged: 0,
                    },
                );
            }
            Some(known) => {
                if reason.is_some() || !known.detailed {
                    known.text = text;
                    known.detailed = reason.is_some();
                }
                known.last = now;
                known.since_logged += 1;
                if now.duration_since(known.logged) >= ERROR_REPEAT_LOG {
                    tracing::error!(
                        "Kafka: {}, {} times more in the last {}s",
                        known.text,
                        known.since_logged,
                        now.duration_since(known.logged).as_secs()
                    );
                    known.logged = now;
                    known.since_logged = 0;
                }
            }
        }
    }

    /// The blocking errors that came in the last [`ERROR_RECENT`], for
    /// `/readyz`.
    pub fn recent(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut recent: Vec<String> = seen
            .values()
            .filter(|seen| seen.blocking && seen.last.elapsed() < ERROR_RECENT)
            .map(|seen| format!("Kafka reports: {}", seen.text))
            .collect();
        recent.sort();
        recent
    }
}

/// Whether eddy cannot do its work while `error` (said in `text`) keeps
/// coming. A TLS handshake the broker refuses comes as a transport failure
/// whose text names SSL.
fn blocking(error: &KafkaError, text: &str) -> bool {
    use RDKafkaErrorCode::*;
    let code = error.rdkafka_error_code();
    if code == Some(BrokerTransportFailure) && text.contains("SSL") {
        return true;
    }
    matches!(
        code,
        Some(
            BadCompression
                | NotImplemented
                | BadMessage
                | InvalidRecord
                | InvalidMessage
                | SSL
                | Authentication
                | SaslAuthenticationFailed
                | TopicAuthorizationFailed
                | GroupAuthorizationFailed
                | ClusterAuthorizationFailed
        )
    )
}

/// What to do about a consumer error, in a few words.
fn advice(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode::*;
    match error.rdkafka_error_code() {
        Some(BadCompression | NotImplemented | BadMessage | InvalidRecord | InvalidMessage) => {
            "a record batch cannot be decoded (a codec this build lacks, or a corrupt batch): \
             its partition does not advance; look for librdkafka's log line naming the \
             partition and offset"
        }
        Some(
            SSL
            | Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed,
        ) => "the cluster refuses eddy's credentials or certificates: check [kafka.security]",
        Some(AllBrokersDown | BrokerTransportFailure | Resolve) => {
            "eddy keeps trying; check [kafka] bootstrap_servers and [kafka.security]"
        }
        _ => "eddy keeps trying",
    }
}

/// eddy's producer: its client's errors are reported with the consumer's.
pub type EddyProducer = FutureProducer<ProducerContext>;

pub struct ProducerContext {
    errors: Arc<KafkaErrors>,
    token: Option<TokenSource>,
    retired: Retired,
}

/// Set once a producer was given up for a new one (a transactional
/// producer stuck in a call): what it still reports is no longer eddy's
/// state, and is only logged at debug.
#[derive(Clone, Default)]
pub struct Retired(Arc<AtomicBool>);

impl Retired {
    pub fn retire(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_retired(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl ProducerContext {
    pub fn new(
        errors: Arc<KafkaErrors>,
        token: Option<TokenSource>,
        retired: Retired,
    ) -> ProducerContext {
        ProducerContext {
            errors,
            token,
            retired,
        }
    }
}

impl ClientContext for ProducerContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        if self.retired.is_retired() {
            tracing::debug!("Kafka, from the producer given up: {error}: {reason}");
            return;
        }
        self.errors.record(&error, Some(reason));
    }

    fn generate_oauth_token(&self, _: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        oauth_token(self.token.as_ref())
    }
}

/// `eddy replay` reads with the producer's context: it needs no rebalance
/// callbacks, only the errors and the token.
impl ConsumerContext for ProducerContext {}

/// The OAUTHBEARER token librdkafka asks for (only with that mechanism).
pub fn oauth_token(source: Option<&TokenSource>) -> Result<OAuthToken, Box<dyn Error>> {
    let source = source.ok_or("[kafka.security] names no OAUTHBEARER token")?;
    let token = source.token().map_err(|why| {
        tracing::error!("[kafka.security]: {why}");
        why
    })?;
    Ok(OAuthToken {
        token: token.token,
        principal_name: token.principal,
        lifetime_ms: token.expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::BaseConsumer;

    use super::*;

    #[test]
    fn a_misspelt_secret_setting_is_refused_without_its_value() {
        let mut kafka = KafkaConfig {
            bootstrap_servers: "127.0.0.1:9".into(),
            group_id: "g".into(),
            auto_offset_reset: "earliest".into(),
            consumer: Default::default(),
            producer: Default::default(),
            delivery: DeliveryMode::AtLeastOnce,
            transactional_id: None,
            transaction_ms: 100,
            group_instance_id: None,
            security: Default::default(),
        };
        kafka
            .consumer
            .insert("sasl.pasword".into(), "hunter2".into());
        let error = consumer_config(&kafka)
            .create::<BaseConsumer>()
            .map_err(redacted)
            .err()
            .expect("an unknown property is refused");
        let shown = format!("{error:#}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sasl.pasword"), "{shown}");
    }
}
