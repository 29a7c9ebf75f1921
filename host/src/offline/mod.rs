//! `eddy test`: one plugin run on a file of events, without Kafka.
//!
//! Each event takes the path `eddy run` gives a record once the consumer
//! has it: decoding (plain JSON, CloudEvents structured and binary), routing
//! (by the config's routes to this plugin; without a config every event goes
//! to it), the sandbox with the plugin's limits and allow-list, retries and
//! dead letters. What Kafka would have been sent is printed, one JSON line
//! per effect, or compared with an expected file.
//!
//! The parts are the host's own: `dispatch` runs the first attempt, the
//! retry rule is `retry::retries`, follow-up and dead-letter headers come
//! from `produce` and `dead_letter`. Only time is not: a retry's backoff
//! passes on a virtual clock, without sleeping. A follow-up that Kafka would
//! refuse (too large for its topic) cannot be known here.
//!
//! - `input`: the events file;
//! - `expect`: comparing with the expected file.

mod expect;
mod input;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedHeaders, OwnedMessage};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::bindings::Event;
use crate::config::{Config, PluginSettings, Route};
use crate::dead_letter::{self, RecordError};
use crate::dispatch::{self, Instances};
use crate::reload::{Handler, Snapshot};
use crate::runtime::{FollowUp, Outcome, Plugin, Runtime, Trigger, plugin_name};
use crate::{plugins, produce, retry};

/// What `eddy test` was asked to do.
pub struct Options {
    /// The plugin's `.wasm` file, the one to deploy.
    pub plugin: PathBuf,
    /// Its name in `eddy.toml`; default the file's stem.
    pub name: Option<String>,
    pub events: PathBuf,
    pub config: Option<PathBuf>,
    /// Where records without a topic, and bare envelopes, are from.
    pub topic: Option<String>,
    pub expect: Option<PathBuf>,
    /// Rewrite the expected file with what the plugin did.
    pub update: bool,
}

/// One thing Kafka would have been sent for an event, or that it was
/// skipped: a line of the output and of an expected file.
#[derive(Serialize)]
#[serde(tag = "effect", rename_all = "kebab-case")]
pub enum Effect {
    FollowUp {
        /// The event's line in the events file.
        line: usize,
        topic: String,
        key: Option<String>,
        headers: BTreeMap<String, Option<String>>,
        value: Value,
    },
    DeadLetter {
        line: usize,
        topic: String,
        key: Option<String>,
        headers: BTreeMap<String, Option<String>>,
        value: Value,
    },
    Skipped {
        line: usize,
        topic: String,
        event_type: String,
        reason: String,
    },
}

/// What a run came to.
pub struct Report {
    pub effects: Vec<Effect>,
    pub summary: String,
    /// With an expected file: what differs from it (empty: it matches).
    pub differences: Vec<String>,
}

/// Runs the plugin on every event of the file, in order.
pub fn run(options: &Options) -> anyhow::Result<Report> {
    if options.update && options.expect.is_none() {
        bail!("--update rewrites the file named by --expect; give --expect FILE");
    }
    let name = match &options.name {
        Some(name) => name.clone(),
        None => plugin_name(&options.plugin)
            .with_context(|| format!("{} is not a .wasm file", options.plugin.display()))?
            .to_string(),
    };
    let config = match &options.config {
        Some(path) => Some(load_config(path, &name)?),
        None => None,
    };
    let default_topic = match (&options.topic, &config) {
        (Some(topic), _) => topic.clone(),
        (None, Some(config)) => config.routes[0].topic.clone(),
        (None, None) => "events".to_string(),
    };
    let inputs = input::read(&options.events, &default_topic)?;
    let config = match config {
        Some(config) => config,
        None => open_config(&name, &inputs)?,
    };
    let runtime = Runtime::new()?;
    let max_bytes = config.plugins.max_plugin_bytes;
    let bytes = plugins::read(&options.plugin, max_bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.plugin.display()))?;
    let plugin = runtime
        .load_as(&name, &options.plugin, &bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let plugin = Arc::new(plugin);
    let snapshot = Snapshot::new(
        Arc::new(config),
        BTreeMap::from([(name.clone(), plugin.clone())]),
    );

    let started = Instant::now();
    let mut session = Session {
        runtime: &runtime,
        snapshot: &snapshot,
        token: CancellationToken::new(),
        instances: HashMap::new(),
        effects: Vec::new(),
        tally: Tally::default(),
    };
    for input in inputs {
        session.handle(input);
    }
    let Session { effects, tally, .. } = session;
    let summary = tally.summary(&plugin, started.elapsed());

    let mut differences = Vec::new();
    if let Some(path) = &options.expect {
        if options.update {
            write_effects(path, &effects)?;
        } else {
            let expected = expect::read(path)?;
            let actual: Vec<Value> = effects
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            differences = expect::differences(&path.display().to_string(), &expected, &actual);
        }
    }
    Ok(Report {
        effects,
        summary,
        differences,
    })
}

/// The config at `path`, refused for what `eddy check` refuses it for
/// (security aside: no broker is met), with only the routes to `name`.
fn load_config(path: &Path, name: &str) -> anyhow::Result<Config> {
    let mut config = Config::load(path)?;
    config.kafka.security = Default::default();
    let problems = config.problems();
    if !problems.is_empty() {
        bail!(
            "{} has errors:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    config.routes.retain(|route| route.plugin == name);
    if config.routes.is_empty() {
        bail!(
            "{} routes no events to {name}; pass --name with the plugin's name in its [[routes]]",
            path.display()
        );
    }
    Ok(config)
}

/// Without a config: every event of the file goes to `name`, which has the
/// default limits and may publish to any topic.
fn open_config(name: &str, inputs: &[input::Input]) -> anyhow::Result<Config> {
    let mut config = Config::parse(
        "[kafka]\nbootstrap_servers = \"none\"\ngroup_id = \"eddy-test\"\n\
         [plugins]\ndir = \".\"\n",
    )?;
    let mut topics: Vec<&str> = inputs.iter().map(|i| i.record.topic()).collect();
    topics.sort_unstable();
    topics.dedup();
    config.routes = topics
        .into_iter()
        .map(|topic| Route {
            topic: topic.to_string(),
            event_types: vec!["*".to_string()],
            plugin: name.to_string(),
        })
        .collect();
    let settings = PluginSettings {
        publish_to_any: true,
        ..PluginSettings::default()
    };
    config.plugin.insert(name.to_string(), settings);
    Ok(config)
}

/// Writes `effects` as JSON lines to `path`.
fn write_effects(path: &Path, effects: &[Effect]) -> anyhow::Result<()> {
    let mut text = String::new();
    for effect in effects {
        text.push_str(&serde_json::to_string(effect)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The events of one run, taken one by one.
struct Session<'a> {
    runtime: &'a Runtime,
    snapshot: &'a Snapshot,
    /// Never cancelled: nothing stops a run but its end.
    token: CancellationToken,
    /// Warm instances per partition, as each partition's worker keeps them.
    instances: HashMap<(String, i32), Instances>,
    effects: Vec<Effect>,
    tally: Tally,
}

impl Session<'_> {
    /// One event: its first pass through the routed plugins as `eddy run`
    /// makes it, then, for what that did not finish, retries and dead
    /// letters as `retry::finish` makes them.
    fn handle(&mut self, input: input::Input) {
        let line = input.line;
        let place = (input.record.topic().to_string(), input.record.partition());
        let instances = self.instances.entry(place).or_default();
        let (mut ran, _) = dispatch::run_batch(
            self.runtime,
            self.snapshot,
            &self.token,
            vec![input.record],
            instances,
        );
        let Some(ran) = ran.pop() else {
            return;
        };
        self.tally.events += 1;
        let record = ran.record;
        let event = match ran.event {
            Ok(event) => event,
            Err(error) => {
                let topic = dead_letter::topic_for(None, record.topic());
                self.dead_letter(line, &record, topic, &error, 0);
                return;
            }
        };
        let routed = self
            .snapshot
            .router
            .plugins_for(record.topic(), &event.event_type);
        if routed.is_empty() {
            self.tally.skipped += 1;
            self.effects.push(Effect::Skipped {
                line,
                topic: record.topic().to_string(),
                event_type: event.event_type.clone(),
                reason: "no route sends this event type on this topic to the plugin".into(),
            });
            return;
        }
        for (plugin, follow_ups) in ran.handled {
            self.follow_ups(line, &record, &plugin, follow_ups);
        }
        let Some(stopped) = ran.stopped else {
            self.tally.handled += 1;
            return;
        };
        let mut first = stopped.failure;
        let mut all_handled = true;
        for name in &stopped.left {
            all_handled &= self.deliver(line, &record, &event, name, first.take());
        }
        if all_handled {
            self.tally.handled += 1;
        }
    }

    /// Runs `name` on the event until it is handled or dead-lettered, as
    /// `retry::deliver` does but with backoff on the virtual clock. `first`
    /// is the failure of the attempt the first pass made. Whether the event
    /// was handled.
    fn deliver(
        &mut self,
        line: usize,
        record: &OwnedMessage,
        event: &Arc<Event>,
        name: &str,
        mut first: Option<crate::runtime::Failure>,
    ) -> bool {
        let settings = self.snapshot.settings(name);
        let dead_letter_topic = settings.dead_letter_topic_for(record.topic());
        let plugin = match self.snapshot.handler(name) {
            Some(Handler::Wasm(plugin)) => plugin.clone(),
            _ => {
                let error = RecordError::PluginMissing {
                    plugin: name.to_string(),
                    dir: self.snapshot.config.plugins.dir.clone(),
                };
                self.dead_letter(line, record, dead_letter_topic, &error, 0);
                return false;
            }
        };
        let mut attempt: u32 = 1;
        loop {
            let outcome = match first.take() {
                Some(failure) => Outcome::Failed(failure),
                None => {
                    let delivery = retry::delivery(record, attempt);
                    let trigger = Trigger {
                        event,
                        delivery: &delivery,
                    };
                    self.runtime.invoke(&plugin, &settings, trigger, None)
                }
            };
            match outcome {
                Outcome::Handled(follow_ups) => {
                    self.follow_ups(line, record, &plugin, follow_ups);
                    return true;
                }
                Outcome::Failed(failure) if retry::retries(&failure, attempt, &settings) => {
                    self.tally.retries += 1;
                    self.tally.backoff += retry::backoff(attempt);
                    attempt += 1;
                }
                Outcome::Failed(failure) => {
                    let error = RecordError::Handler {
                        plugin: name.to_string(),
                        failure,
                    };
                    self.dead_letter(line, record, dead_letter_topic, &error, attempt);
                    return false;
                }
            }
        }
    }

    fn follow_ups(
        &mut self,
        line: usize,
        cause: &OwnedMessage,
        plugin: &Plugin,
        follow_ups: Vec<FollowUp>,
    ) {
        let headers = produce::follow_up_headers(plugin, produce::hops_after(cause));
        for follow_up in follow_ups {
            self.tally.follow_ups += 1;
            self.effects.push(Effect::FollowUp {
                line,
                topic: follow_up.topic,
                key: follow_up.key,
                headers: header_map(&headers),
                value: value_of(Some(&follow_up.payload)),
            });
        }
    }

    fn dead_letter(
        &mut self,
        line: usize,
        record: &OwnedMessage,
        topic: String,
        error: &RecordError,
        attempts: u32,
    ) {
        self.tally.dead_letters += 1;
        let headers = dead_letter::headers_of(record, error, attempts);
        self.effects.push(Effect::DeadLetter {
            line,
            topic,
            key: record
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            headers: header_map(&headers),
            value: value_of(record.payload()),
        });
    }
}

/// Headers as text: a name or value that is not UTF-8 is shown lossily.
fn header_map(headers: &OwnedHeaders) -> BTreeMap<String, Option<String>> {
    headers
        .iter()
        .map(|h| {
            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
            (h.key.to_string(), value)
        })
        .collect()
}

/// A record's value: its JSON when it is JSON, else its text; `null` when
/// it has none.
fn value_of(payload: Option<&[u8]>) -> Value {
    match payload {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    events: usize,
    handled: usize,
    follow_ups: usize,
    dead_letters: usize,
    skipped: usize,
    retries: usize,
    /// Backoff the retries would have waited, passed on the virtual clock.
    backoff: Duration,
}

impl Tally {
    fn summary(&self, plugin: &Plugin, took: Duration) -> String {
        let mut text = format!(
            "{} (version {}): {} events in {:.0?}: {} handled, {} follow-ups, \
             {} dead-lettered, {} skipped",
            plugin.name,
            plugin.hash,
            self.events,
            took,
            self.handled,
            self.follow_ups,
            self.dead_letters,
            self.skipped
        );
        if self.retries > 0 {
            text.push_str(&format!(
                "; {} retries ({:.1?} of backoff not slept)",
                self.retries, self.backoff
            ));
        }
        text
    }
}
