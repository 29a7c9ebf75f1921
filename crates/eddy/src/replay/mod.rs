//! `eddy replay`: events run again, from a topic's range or a dead-letter
//! topic, into a plugin or back onto a topic, while a live eddy runs.
//!
//! A replay always plans first: it resolves the range per partition, reads
//! it once, counts what it holds and checks that every record can be
//! replayed (a dead letter names its original and its plugin, the plugins
//! are loaded). A plan that cannot be carried out whole writes nothing.
//! Without `--execute` the plan is all it does.
//!
//! It reads by assignment, never through the live consumer group, so the
//! live eddy's offsets do not move. Progress is committed in a group of its
//! own once what a record produced is acknowledged: an interrupted replay
//! resumes where it stopped, and a finished one replays nothing again
//! (at-least-once: a kill -9 can repeat the records since the last commit).
//!
//! - `range`: `--from`, `--to`, `--since` per partition;
//! - `plan`: the range resumed, read once and counted;
//! - `records`: reading the range, filters, a dead letter's original;
//! - `execute`: the plan carried out.

mod execute;
mod options;
mod plan;
mod range;
mod records;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use eddy_core::config::{Config, DeliveryMode};
use eddy_kafka::client::{self as kafka, EddyProducer, KafkaErrors, ProducerContext, Retired};
use eddy_pipeline::direct::{Backoff, Runner};
use eddy_sandbox::runtime::Runtime;
use execute::{Replay, load_plugins};
pub use options::{Options, Source, Target};
use plan::{check_group, deleted_before, plan_spans, resume, scan};
use range::Span;
use records::Filters;

/// Plans the replay, prints the plan, and carries it out with `--execute`.
/// `stop` (SIGTERM, Ctrl-C) ends it after the record in hand, its progress
/// committed.
pub fn run(options: &Options, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let config = Config::load(&options.config)?;
    let problems = config.problems();
    if !problems.is_empty() {
        bail!(
            "{} has errors:\n  {}",
            options.config.display(),
            problems.join("\n  ")
        );
    }
    check_target(options)?;
    let filters = Filters {
        event_type: options.event_type.clone(),
        key: options.key.clone(),
        reason: options.reason.clone(),
        plugin: options.plugin.clone(),
    };
    let group = options.group();
    let errors = Arc::new(KafkaErrors::default());
    let consumer = reader(&config, &group, &errors)?;
    check_group(&consumer, &config.kafka.group_id, &group)?;
    let topic = options.topic();
    let (spans, from_time) = plan_spans(&consumer, options, topic)?;
    let resumed = resume(&consumer, topic, &group, &spans)?;

    let allowed = plan::Allowed::of(&config);
    let mut plan = scan(
        &consumer, topic, &resumed, options, &filters, &allowed, &stop,
    )?;
    if let Some(from_time) = from_time {
        plan.problems
            .extend(deleted_before(&consumer, topic, &spans, from_time)?);
    }
    let runtime = Runtime::new()?;
    // A replayed event starts a new trace, linked to the original's.
    eddy_core::trace::link_instead_of_continuing();
    eddy_trace::start(&config.telemetry, &group)?;
    let plugins = load_plugins(&runtime, &config, &plan)?;
    println!("{}", plan.describe(options, &spans, &resumed, &group));
    if let Some(problem) = plan.problems.first() {
        bail!(
            "{problem}{}; nothing was written",
            match plan.problems.len() {
                1 => String::new(),
                n => format!(" (and {} more like it)", n - 1),
            }
        );
    }
    let left: i64 = resumed.iter().map(Span::len).sum();
    if left == 0 && resumed != spans {
        println!("already replayed: progress group {group} is at the end of the range");
        return Ok(());
    }
    if plan.records == 0 {
        bail!("nothing to replay: the range holds no records");
    }
    if !options.execute {
        println!("dry run: nothing written; add --execute to replay");
        return Ok(());
    }
    let producer = producer(&config, &errors)?;
    let runner = Runner::new(&runtime, Backoff::Sleep(stop.clone()));
    let mut replay = Replay::new(
        options,
        &filters,
        &consumer,
        &producer,
        runner,
        plugins,
        plan.matching,
    );
    let finished = records::read(&consumer, topic, &resumed, &stop, |record| {
        replay.one(record)?;
        Ok(true)
    })?;
    let summary = replay.finish()?;
    eddy_trace::flush(std::time::Duration::from_secs(5));
    if !finished {
        bail!("interrupted after {summary}; run the same command again to resume");
    }
    println!("replayed: {summary}");
    Ok(())
}

/// What a target needs of its source, said before anything is read.
fn check_target(options: &Options) -> anyhow::Result<()> {
    match (&options.source, &options.target) {
        (Source::Topic(_), Target::Plugin(None)) => {
            bail!("--into-plugin needs a plugin name when replaying a topic")
        }
        (Source::Topic(_), Target::Topic(None)) => {
            bail!("--to-topic needs a topic name when replaying a topic")
        }
        _ => {}
    }
    if !options.dead_letters() && (options.reason.is_some() || options.plugin.is_some()) {
        bail!("--reason and --plugin filter dead letters: use them with --dead-letters");
    }
    if !matches!(options.target, Target::Topic(_)) && !options.drop_headers.is_empty() {
        bail!("--drop-header applies to --to-topic");
    }
    Ok(())
}

/// The consumer that reads the range and keeps the replay's progress.
fn reader(
    config: &Config,
    group: &str,
    errors: &Arc<KafkaErrors>,
) -> anyhow::Result<BaseConsumer<ProducerContext>> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    kafka::secure(&mut client, &config.kafka);
    for (name, value) in &config.kafka.consumer {
        client.set(name, value);
    }
    client
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // A record of the range that is gone is an error, never a skip.
        .set("auto.offset.reset", "error")
        // Follow-ups of aborted transactions are not events to replay.
        .set("isolation.level", "read_committed");
    client.remove("group.instance.id");
    client
        .create_with_context(context(config, errors))
        .map_err(kafka::redacted)
        .context("cannot create the replay's consumer")
}

/// The producer of follow-ups, dead letters and republished records: eddy
/// run's, without a transaction.
fn producer(config: &Config, errors: &Arc<KafkaErrors>) -> anyhow::Result<EddyProducer> {
    let mut kafka_config = config.kafka.clone();
    kafka_config.delivery = DeliveryMode::AtLeastOnce;
    kafka::producer_config(&kafka_config)
        .create_with_context(context(config, errors))
        .map_err(kafka::redacted)
        .context("cannot create the replay's producer")
}

fn context(config: &Config, errors: &Arc<KafkaErrors>) -> ProducerContext {
    let token = config.kafka.security.token_source();
    ProducerContext::new(errors.clone(), token, Retired::default())
}
