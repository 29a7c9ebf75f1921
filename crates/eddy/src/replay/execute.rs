//! Carrying a plan out: each record through its plugin or onto its topic,
//! at the pace `--rate` allows; progress committed once what a record
//! produced is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::options::{Options, Target};
use super::plan::Plan;
use super::records::{self, Filters, Seen};
use eddy_core::config::{Config, Route};
use eddy_kafka::client::{EddyProducer, ProducerContext};
use eddy_pipeline::direct::{Kind, Runner};
use eddy_pipeline::snapshot::Snapshot;
use eddy_sandbox::plugins;
use eddy_sandbox::runtime::Runtime;

/// Records between two commits of the replay's progress.
const COMMIT_EVERY: usize = 500;
const COMMIT_AFTER: Duration = Duration::from_secs(1);
/// How often progress is said when stderr is not a terminal.
const SAY_EVERY: Duration = Duration::from_secs(5);

/// The plugins the plan names, loaded from the config's plugin folder; one
/// snapshot each, routing every topic the records come from to it.
pub fn load_plugins(
    runtime: &Runtime,
    config: &Config,
    plan: &Plan,
) -> anyhow::Result<HashMap<String, Snapshot>> {
    let mut snapshots = HashMap::new();
    if plan.plugins.is_empty() {
        return Ok(snapshots);
    }
    let dir = &config.plugins.dir;
    let loaded = plugins::load_dir(runtime, dir, config.plugins.max_plugin_bytes)?;
    let schemas = eddy_schema::load_once(&config.schemas)
        .map_err(|refused| anyhow::anyhow!("{}; nothing was written", refused.join("; ")))?;
    for name in &plan.plugins {
        let Some(plugin) = loaded.plugins.get(name) else {
            let refused = loaded
                .refused
                .iter()
                .find(|(path, _)| eddy_sandbox::runtime::plugin_name(path) == Some(name))
                .map(|(_, reason)| format!(": {reason}"))
                .unwrap_or_default();
            bail!(
                "plugin {name} is not loaded: no usable {name}.wasm in {}{refused}; \
                 nothing was written",
                dir.display()
            );
        };
        let mut routed = config.clone();
        routed.routes = plan
            .topics
            .iter()
            .map(|topic| Route::everything(topic, name))
            .collect();
        let plugins = BTreeMap::from([(name.clone(), plugin.clone())]);
        snapshots.insert(
            name.clone(),
            Snapshot::new(Arc::new(routed), plugins, schemas.clone()),
        );
    }
    Ok(snapshots)
}

/// A replay being carried out.
pub struct Replay<'a> {
    options: &'a Options,
    filters: &'a Filters,
    consumer: &'a BaseConsumer<ProducerContext>,
    producer: &'a EddyProducer,
    runner: Runner<'a>,
    plugins: HashMap<String, Snapshot>,
    /// Acknowledgements of what was produced since the last commit.
    pending: Vec<(String, DeliveryFuture)>,
    /// Per partition, the offset after the last record taken.
    next: BTreeMap<i32, i64>,
    tally: Tally,
    progress: Progress,
    last_commit: Instant,
    started: Instant,
}

impl<'a> Replay<'a> {
    pub fn new(
        options: &'a Options,
        filters: &'a Filters,
        consumer: &'a BaseConsumer<ProducerContext>,
        producer: &'a EddyProducer,
        runner: Runner<'a>,
        plugins: HashMap<String, Snapshot>,
        matching: usize,
    ) -> Replay<'a> {
        Replay {
            options,
            filters,
            consumer,
            producer,
            runner,
            plugins,
            pending: Vec::new(),
            next: BTreeMap::new(),
            tally: Tally::default(),
            progress: Progress::new(matching),
            last_commit: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Commits what is done; the summary of the replay.
    pub fn finish(&mut self) -> anyhow::Result<String> {
        self.commit()?;
        self.progress.finish();
        Ok(self.tally.summary(self.started.elapsed()))
    }

    pub fn one(&mut self, record: OwnedMessage) -> anyhow::Result<()> {
        let (partition, offset) = (record.partition(), record.offset());
        let seen = Seen::of(&record);
        if self.filters.pass(&record, &seen) {
            self.pace();
            let from = records::place_of(&record);
            match &self.options.target {
                Target::Topic(named) => self.republish(&record, named.clone(), &from)?,
                Target::Plugin(named) => {
                    let name = named.clone().or(seen.plugin).unwrap_or_default();
                    self.through_plugin(&name, record, &from)?;
                }
            }
            self.progress.advance();
        } else {
            self.tally.filtered += 1;
        }
        self.next.insert(partition, offset + 1);
        if self.pending.len() >= COMMIT_EVERY || self.last_commit.elapsed() >= COMMIT_AFTER {
            self.commit()?;
        }
        Ok(())
    }

    /// Waits as long as `--rate` asks before the next event.
    fn pace(&self) {
        let Some(rate) = self.options.rate.filter(|r| *r > 0.0) else {
            return;
        };
        let done = self.tally.replayed() as f64;
        let due = self.started + Duration::from_secs_f64(done / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }

    /// `record` to `topic` (a dead letter's original topic when `None`):
    /// key, value and headers, without eddy's own.
    fn republish(
        &mut self,
        record: &OwnedMessage,
        topic: Option<String>,
        from: &str,
    ) -> anyhow::Result<()> {
        let original = records::original_place(record).ok();
        let topic = match (topic, &original) {
            (Some(topic), _) => topic,
            (None, Some((topic, _, _))) => topic.clone(),
            (None, None) => bail!("{from} names no original topic"),
        };
        // A new trace, linked to the record's own: its `traceparent` is
        // replaced.
        let traceparent = eddy_kafka::trace_headers::republished(record, &topic);
        let mut drop = self.options.drop_headers.clone();
        drop.push(eddy_core::trace::TRACEPARENT.to_string());
        let headers = records::carried_headers(record, &drop)
            .insert(Header {
                key: "eddy-replayed-from",
                value: Some(from),
            })
            .insert(Header {
                key: eddy_core::trace::TRACEPARENT,
                value: Some(&traceparent),
            });
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        // Back to its own partition, so it stays in order with its key
        // whatever partitioner wrote it first.
        if let Some((original_topic, partition, _)) = &original
            && *original_topic == topic
        {
            out = out.partition(*partition);
        }
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.payload() {
            out = out.payload(value);
        }
        self.send(out)?;
        self.tally.republished += 1;
        Ok(())
    }

    /// Runs the event through `name` with eddy run's rules; produces what
    /// it sends.
    fn through_plugin(
        &mut self,
        name: &str,
        record: OwnedMessage,
        from: &str,
    ) -> anyhow::Result<()> {
        let record = if self.options.dead_letters() {
            records::original_of(&record).map_err(anyhow::Error::msg)?
        } else {
            record
        };
        let snapshot = self
            .plugins
            .get(name)
            .with_context(|| format!("plugin {name} was not loaded"))?;
        let handled = self.runner.handle(snapshot, record)?;
        if handled.interrupted {
            bail!(
                "interrupted while {} waited to be retried",
                records::place_of(&handled.record)
            );
        }
        for out in handled.out {
            let mut headers = out.headers;
            if matches!(out.kind, Kind::DeadLetter) {
                headers = headers.insert(Header {
                    key: "eddy-replayed",
                    value: Some(from),
                });
                self.tally.dead_lettered += 1;
            } else {
                self.tally.follow_ups += 1;
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&out.topic).headers(headers);
            if let Some(key) = &out.key {
                record = record.key(key);
            }
            if let Some(value) = &out.payload {
                record = record.payload(value);
            }
            self.send(record)?;
        }
        if handled.skipped.is_none() && handled.handled {
            self.tally.handled += 1;
        }
        Ok(())
    }

    /// Hands `record` to the producer, waiting while its queue is full.
    fn send(&mut self, mut record: FutureRecord<'_, [u8], [u8]>) -> anyhow::Result<()> {
        let topic = record.topic.to_string();
        loop {
            match self.producer.send_result(record) {
                Ok(ack) => {
                    self.pending.push((topic, ack));
                    return Ok(());
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
            }
        }
    }

    /// Waits for every acknowledgement, then commits the progress: each
    /// partition's offset after its last record taken.
    fn commit(&mut self) -> anyhow::Result<()> {
        for (topic, ack) in self.pending.drain(..) {
            let answer = futures::executor::block_on(ack.map(|a| a.ok()));
            match answer {
                Some(Ok(_)) => {}
                Some(Err((e, _))) => bail!(
                    "Kafka did not take a record for {topic}: {e}; what was replayed since the \
                     last progress commit will be replayed again when you run the command again"
                ),
                None => bail!("the producer dropped a record for {topic}"),
            }
        }
        self.last_commit = Instant::now();
        if self.next.is_empty() {
            return Ok(());
        }
        let mut done = TopicPartitionList::new();
        for (&partition, &offset) in &self.next {
            done.add_partition_offset(self.options.topic(), partition, Offset::Offset(offset))?;
        }
        self.consumer
            .commit(&done, CommitMode::Sync)
            .context("cannot commit the replay's progress")?;
        Ok(())
    }
}

/// Counts for the summary.
#[derive(Default)]
pub struct Tally {
    handled: usize,
    follow_ups: usize,
    dead_lettered: usize,
    republished: usize,
    filtered: usize,
}

impl Tally {
    fn replayed(&self) -> usize {
        self.handled + self.dead_lettered + self.republished
    }

    fn summary(&self, took: Duration) -> String {
        format!(
            "{} records in {:.1?}: {} handled ({} follow-ups), {} dead-lettered again, \
             {} republished, {} passed over by the filters",
            self.replayed() + self.filtered,
            took,
            self.handled,
            self.follow_ups,
            self.dead_lettered,
            self.republished,
            self.filtered
        )
    }
}

/// Progress: a bar on a terminal, a line every few seconds otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    said: Instant,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} events, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
            said: Instant::now(),
            started: Instant::now(),
        }
    }

    fn advance(&mut self) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if self.said.elapsed() >= SAY_EVERY {
            self.said = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let left = self.total.saturating_sub(self.done) as f64 / rate.max(0.001);
            eprintln!(
                "replayed {} of {} events, {rate:.0}/s, about {left:.0} s left",
                self.done, self.total
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
