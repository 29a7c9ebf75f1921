//! `eddy test`: one plugin run on a file of events, without Kafka.
//!
//! Each event takes the path `eddy run` gives a record once the consumer
//! has it: decoding (plain JSON, CloudEvents structured and binary), routing
//! (by the config's routes to this plugin; without a config every event goes
//! to it), the sandbox with the plugin's limits and allow-list, retries and
//! dead letters. What Kafka would have been sent is printed, one JSON line
//! per effect, or compared with an expected file.
//!
//! The parts are the host's own (`direct` puts them together). Only time is
//! not: a retry's backoff passes on a virtual clock, without sleeping. A
//! follow-up that Kafka would refuse (too large for its topic) cannot be
//! known here.
//!
//! - `input`: the events file;
//! - `expect`: comparing with the expected file.

mod expect;
mod input;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::Message;
use rdkafka::message::{Headers, OwnedHeaders};
use serde::Serialize;
use serde_json::Value;

use eddy_core::config::{Config, PluginSettings, Route};
use eddy_pipeline::direct::{Backoff, Handled, Kind, Runner};
use eddy_pipeline::snapshot::Snapshot;
use eddy_sandbox::plugins;
use eddy_sandbox::runtime::{Plugin, Runtime, plugin_name};

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
    let schemas = eddy_schema::load_once(&config.schemas)
        .map_err(|refused| anyhow::anyhow!("{}", refused.join("; ")))?;
    let snapshot = Snapshot::new(
        Arc::new(config),
        BTreeMap::from([(name.clone(), plugin.clone())]),
        schemas,
    );

    let started = Instant::now();
    let mut runner = Runner::new(&runtime, Backoff::Virtual);
    let (mut tally, mut effects) = (Tally::default(), Vec::new());
    for input in inputs {
        let handled = runner
            .handle(&snapshot, input.record)
            .map_err(|e| anyhow::anyhow!("event on line {}: {e}", input.line))?;
        effects_of(input.line, handled, &mut tally, &mut effects);
    }
    tally.retries = runner.retries;
    tally.backoff = runner.backed_off;
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
        .map(|topic| Route::everything(topic, name))
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

/// What one event's handling shows, as effect lines; counted in `tally`.
fn effects_of(line: usize, handled: Handled, tally: &mut Tally, effects: &mut Vec<Effect>) {
    tally.events += 1;
    if let Some(event_type) = handled.skipped {
        tally.skipped += 1;
        effects.push(Effect::Skipped {
            line,
            topic: handled.record.topic().to_string(),
            event_type,
            reason: "no route sends this event type on this topic to the plugin".into(),
        });
        return;
    }
    if handled.handled {
        tally.handled += 1;
    }
    for out in handled.out {
        let (topic, headers) = (out.topic, header_map(&out.headers));
        let key = out.key.map(|k| String::from_utf8_lossy(&k).into_owned());
        let value = value_of(out.payload.as_deref());
        effects.push(match out.kind {
            Kind::FollowUp => {
                tally.follow_ups += 1;
                Effect::FollowUp {
                    line,
                    topic,
                    key,
                    headers,
                    value,
                }
            }
            Kind::DeadLetter => {
                tally.dead_letters += 1;
                Effect::DeadLetter {
                    line,
                    topic,
                    key,
                    headers,
                    value,
                }
            }
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
            plugin.name(),
            plugin.hash(),
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
