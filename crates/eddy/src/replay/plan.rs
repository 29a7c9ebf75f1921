//! The plan: each partition's range, resumed where the progress group
//! stopped, read once to count what it holds and to find what stands in
//! the way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::options::{Options, Source, TIMEOUT, Target};
use super::range::{self, Bound, Span};
use super::records::{self, Filters, Seen};
use eddy_core::text::OneLine;
use eddy_kafka::client::{self as kafka, ProducerContext};

/// The range of each partition of `topic` the options name, and the time
/// it starts at, if it was given as one.
pub fn plan_spans(
    consumer: &BaseConsumer<ProducerContext>,
    options: &Options,
    topic: &str,
) -> anyhow::Result<(Vec<Span>, Option<i64>)> {
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka::redacted)
        .context("cannot reach the brokers")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!(
            "there is no topic {topic:?} at {}; name an existing topic",
            consumer
                .client()
                .fetch_metadata(None, TIMEOUT)
                .map(|m| format!("{} brokers", m.brokers().len()))
                .unwrap_or_else(|_| "the brokers".into())
        );
    }
    let from = match (&options.from, &options.since) {
        (Some(_), Some(_)) => bail!("give --from or --since, not both"),
        (Some(from), None) => Some(Bound::parse(from).context("--from")?),
        (None, Some(since)) => Some(Bound::since(since, now_ms())?),
        (None, None) => None,
    };
    let to = options
        .to
        .as_deref()
        .map(Bound::parse)
        .transpose()
        .context("--to")?;
    let spans = range::resolve(consumer, topic, &partitions, from.as_ref(), to.as_ref())?;
    if let (Some(Bound::Time(from)), Some(Bound::Time(to))) = (&from, &to)
        && from >= to
    {
        bail!(
            "--from {} is not before --to {}: the range is empty",
            range::time_text(*from),
            range::time_text(*to)
        );
    }
    let from_time = match from {
        Some(Bound::Time(ms)) => Some(ms),
        _ => None,
    };
    Ok((spans, from_time))
}

/// Partitions whose range starts at `from_time` but whose first record kept
/// is later, with records before it deleted by retention: some of the
/// range may be gone.
pub fn deleted_before(
    consumer: &BaseConsumer<ProducerContext>,
    topic: &str,
    spans: &[Span],
    from_time: i64,
) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for span in spans
        .iter()
        .filter(|s| s.low > 0 && s.start == s.low && s.high > s.low)
    {
        let first = Span {
            end: span.low + 1,
            ..*span
        };
        let mut kept_from = None;
        let read = records::read(
            consumer,
            topic,
            &[first],
            &AtomicBool::new(false),
            |record| {
                kept_from = record.timestamp().to_millis();
                Ok(false)
            },
        );
        if let Err(gone) = read {
            problems.push(format!(
                "{topic} partition {}: the records before offset {} were deleted by retention, \
                 and the first one kept cannot be read ({gone:#})",
                span.partition, span.low
            ));
            continue;
        }
        if let Some(kept_from) = kept_from.filter(|&t| t > from_time) {
            problems.push(format!(
                "{topic} partition {} keeps records from {} on (offset {}); those before may \
                 have been deleted by retention: replay from --from {}",
                span.partition,
                range::time_text(kept_from),
                span.low,
                range::time_text(kept_from)
            ));
        }
    }
    Ok(problems)
}

/// Refuses a progress group that is not the replay's own: the config's
/// live group, or any group a consumer has joined (its offsets are that
/// consumer's position, and a replay's commits would move it). A replay's
/// group only ever commits, so Kafka knows no members or protocol for it.
pub fn check_group(
    consumer: &BaseConsumer<ProducerContext>,
    live_group: &str,
    group: &str,
) -> anyhow::Result<()> {
    if group == live_group {
        bail!(
            "--group {group} is this config's live consumer group (kafka.group_id): a replay \
             must not move its offsets; name a group of the replay's own, or leave --group out"
        );
    }
    let groups = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(kafka::redacted)
        .with_context(|| format!("cannot describe group {group}"))?;
    if let Some(joined) = groups
        .groups()
        .iter()
        .find(|g| g.name() == group && (!g.members().is_empty() || !g.protocol_type().is_empty()))
    {
        bail!(
            "group {group} is a consumer group ({} member(s) now, protocol type {:?}): its \
             offsets are a consumer's position, not a replay's progress; name another --group, \
             or leave --group out",
            joined.members().len(),
            joined.protocol_type()
        );
    }
    Ok(())
}

/// `spans` from where the progress group stopped.
pub fn resume(
    consumer: &BaseConsumer<ProducerContext>,
    topic: &str,
    group: &str,
    spans: &[Span],
) -> anyhow::Result<Vec<Span>> {
    let mut asked = TopicPartitionList::new();
    for span in spans {
        asked.add_partition(topic, span.partition);
    }
    let committed = consumer
        .committed_offsets(asked, TIMEOUT)
        .with_context(|| format!("cannot read the progress of group {group}"))?;
    Ok(spans
        .iter()
        .map(|span| {
            let done = match committed
                .find_partition(topic, span.partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(offset)) => offset,
                _ => 0,
            };
            Span {
                start: span.start.max(done).min(span.end),
                ..*span
            }
        })
        .collect())
}

/// What the range holds, as the plan says it.
#[derive(Default)]
pub struct Plan {
    pub records: usize,
    pub matching: usize,
    pub by_event_type: BTreeMap<String, usize>,
    pub by_reason: BTreeMap<String, usize>,
    /// Dead letters an earlier replay wrote.
    pub failed_again: usize,
    /// Where the matching records go: a plugin or a topic, with counts.
    pub by_target: BTreeMap<String, usize>,
    /// Plugins the matching records go to.
    pub plugins: BTreeSet<String>,
    /// Topics of the records the plugins are given (a dead letter's
    /// original topic).
    pub topics: BTreeSet<String>,
    /// Why some records cannot be replayed.
    pub problems: Vec<String>,
}

/// Where a dead letter may send its record by its own headers alone: the
/// topics the config's routes read and the plugins they route to. A
/// dead letter is a record anyone who may write the dead-letter topic can
/// forge; a target outside these is taken only when named with
/// `--to-topic NAME` or `--into-plugin NAME`.
#[derive(Debug, Default)]
pub struct Allowed {
    pub topics: BTreeSet<String>,
    pub plugins: BTreeSet<String>,
}

impl Allowed {
    pub fn of(config: &eddy_core::Config) -> Allowed {
        Allowed {
            topics: config.topics().into_iter().collect(),
            plugins: config.routes.iter().map(|r| r.plugin.clone()).collect(),
        }
    }
}

/// Reads the range once and counts it; finds what stands in the way.
pub fn scan(
    consumer: &BaseConsumer<ProducerContext>,
    topic: &str,
    spans: &[Span],
    options: &Options,
    filters: &Filters,
    allowed: &Allowed,
    stop: &AtomicBool,
) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let read_all = records::read(consumer, topic, spans, stop, |record| {
        plan.records += 1;
        let seen = Seen::of(&record);
        if !filters.pass(&record, &seen) {
            return Ok(true);
        }
        plan.matching += 1;
        let event_type = match &seen.event_type {
            Ok(event_type) => event_type.clone(),
            Err(_) => "(not an event)".to_string(),
        };
        *plan.by_event_type.entry(event_type).or_default() += 1;
        if options.dead_letters() {
            let reason = seen.reason.clone().unwrap_or_else(|| "(none)".into());
            *plan.by_reason.entry(reason).or_default() += 1;
            plan.failed_again += usize::from(seen.replayed);
        }
        match plan_target(&record, &seen, options, allowed) {
            Ok(target) => *plan.by_target.entry(target).or_default() += 1,
            Err(problem) => {
                // Not loaded either: a forged name must not pick a file.
                plan.problems.push(problem);
                return Ok(true);
            }
        }
        if let Target::Plugin(named) = &options.target
            && let Some(plugin) = named.clone().or(seen.plugin.clone())
        {
            plan.plugins.insert(plugin);
            let original = match options.source {
                Source::DeadLetters(_) => records::original_place(&record).map(|(t, _, _)| t),
                Source::Topic(_) => Ok(record.topic().to_string()),
            };
            if let Ok(original) = original {
                plan.topics.insert(original);
            }
        }
        Ok(true)
    })?;
    if !read_all {
        bail!("stopped while planning; nothing was written");
    }
    Ok(plan)
}

/// Where `record` goes, as the plan says it, or why it cannot.
fn plan_target(
    record: &OwnedMessage,
    seen: &Seen,
    options: &Options,
    allowed: &Allowed,
) -> Result<String, String> {
    if options.dead_letters() {
        records::original_place(record)?;
    }
    let place = records::place_of(record);
    match &options.target {
        Target::Plugin(Some(plugin)) => Ok(format!("plugin {plugin}")),
        Target::Plugin(None) => match &seen.plugin {
            Some(plugin) if allowed.plugins.contains(plugin) => Ok(format!("plugin {plugin}")),
            Some(plugin) => Err(format!(
                "the dead letter {place} names plugin {plugin:?}, to which no route of the config \
                 sends events: pass --into-plugin {} to give it that plugin anyway, or leave \
                 it out with --plugin or --reason",
                OneLine(plugin)
            )),
            None => Err(format!(
                "the dead letter {place} names no plugin (reason {}): pass --into-plugin NAME, \
                 or leave it out with --reason",
                OneLine(seen.reason.as_deref().unwrap_or("none"))
            )),
        },
        Target::Topic(Some(topic)) => Ok(format!("topic {topic}")),
        Target::Topic(None) => {
            let (topic, _, _) = records::original_place(record)?;
            if !allowed.topics.contains(&topic) {
                return Err(format!(
                    "the dead letter {place} names original topic {topic:?}, which no route of \
                     the config reads: pass --to-topic {} to write it there anyway, or leave it \
                     out with --plugin or --reason",
                    OneLine(&topic)
                ));
            }
            Ok(format!("topic {topic}"))
        }
    }
}

impl Plan {
    pub fn describe(
        &self,
        options: &Options,
        spans: &[Span],
        resumed: &[Span],
        group: &str,
    ) -> String {
        let mut lines = Vec::new();
        let what = match &options.source {
            Source::Topic(topic) => format!("topic {topic}"),
            Source::DeadLetters(topic) => format!("dead letters in {topic}"),
        };
        lines.push(format!("replay plan: {what}"));
        for (span, left) in spans.iter().zip(resumed) {
            let done = left.start - span.start;
            let resumed = if done > 0 {
                format!(", {done} replayed before; resuming at {}", left.start)
            } else {
                String::new()
            };
            lines.push(format!(
                "  partition {}: offsets {}..{} ({} records{resumed})",
                span.partition,
                span.start,
                span.end,
                span.len()
            ));
        }
        let mut filters: Vec<String> = Vec::new();
        let named = [
            ("--event-type", &options.event_type),
            ("--key", &options.key),
            ("--reason", &options.reason),
            ("--plugin", &options.plugin),
        ];
        for (flag, value) in named {
            if let Some(value) = value {
                filters.push(format!("{flag} {value}"));
            }
        }
        let filters = if filters.is_empty() {
            "no filter".to_string()
        } else {
            filters.join(", ")
        };
        lines.push(format!(
            "  {} records to read, {} match ({filters})",
            self.records, self.matching
        ));
        // Names come from the records: written escaped, so none can move
        // the terminal's cursor or forge a line of the plan.
        let counts = |map: &BTreeMap<String, usize>| {
            map.iter()
                .map(|(k, n)| format!("{} {n}", OneLine(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.by_event_type.is_empty() {
            lines.push(format!("  by event type: {}", counts(&self.by_event_type)));
        }
        if !self.by_reason.is_empty() {
            lines.push(format!(
                "  by dead-letter reason: {}",
                counts(&self.by_reason)
            ));
        }
        if self.failed_again > 0 {
            lines.push(format!(
                "  {} of them failed again in an earlier replay (eddy-replayed)",
                self.failed_again
            ));
        }
        if !self.by_target.is_empty() {
            lines.push(format!("  into: {}", counts(&self.by_target)));
        }
        if let Some(rate) = options.rate {
            lines.push(format!("  at most {rate} events/s"));
        }
        lines.push(format!("  progress group: {group}"));
        lines.join("\n")
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
