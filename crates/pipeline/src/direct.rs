//! A record handled directly, without a consumer or a partition worker:
//! its first pass through `dispatch` as `eddy run` makes it, then retries
//! by `eddy_core::policy::next` and dead letters, as `retry::finish` does. What Kafka
//! is to be sent comes back as records: `eddy test` prints them, `eddy
//! replay` produces them. Only time is the caller's: a retry's backoff is
//! slept, or passed on a virtual clock.

use eddy_kafka::trace_headers;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::{OwnedHeaders, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{self, RecordError};
use crate::dispatch::{self, Instances};
use crate::retry;
use crate::snapshot::{Handler, Snapshot};
use eddy_core::config::dead_letter_topic_for;
use eddy_core::event::Event;
use eddy_core::outcome::{Failure, FollowUp, Outcome};
use eddy_core::policy::{self, Next};
use eddy_core::trace;
use eddy_kafka::produce;
use eddy_sandbox::{Plugin, Runtime, Trigger};
use eddy_schema::Unavailable;

/// How long a record waits, at most, for a schema registry that does not
/// answer, and how long between tries: the clock is real whatever the
/// backoff, since nothing else can stand in for the registry.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(10);
const REGISTRY_WAIT: Duration = Duration::from_millis(500);

/// How a retry's backoff passes.
pub enum Backoff {
    /// Not at all: added up, not slept (`eddy test`).
    Virtual,
    /// Slept, unless the flag is raised meanwhile (`eddy replay`).
    Sleep(Arc<AtomicBool>),
}

/// What a record sends to Kafka.
pub enum Kind {
    FollowUp,
    DeadLetter,
}

/// One record to send.
pub struct Out {
    pub kind: Kind,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub headers: OwnedHeaders,
    pub payload: Option<Vec<u8>>,
}

/// What handling one record came to.
pub struct Handled {
    pub record: OwnedMessage,
    /// In the order `eddy run` sends them.
    pub out: Vec<Out>,
    /// No route takes the event; its type.
    pub skipped: Option<String>,
    /// Every routed plugin handled it (none dead-lettered it).
    pub handled: bool,
    /// Stopped during a backoff: what it would send is incomplete.
    pub interrupted: bool,
}

/// Handles records one by one, keeping warm instances per partition as each
/// partition's worker does.
pub struct Runner<'a> {
    runtime: &'a Runtime,
    backoff: Backoff,
    /// Never cancelled: a run stops between records.
    token: CancellationToken,
    instances: HashMap<(String, i32), Instances>,
    /// Retries made, and the backoff they took (or would have).
    pub retries: usize,
    pub backed_off: Duration,
}

impl<'a> Runner<'a> {
    pub fn new(runtime: &'a Runtime, backoff: Backoff) -> Runner<'a> {
        Runner {
            runtime,
            backoff,
            token: CancellationToken::new(),
            instances: HashMap::new(),
            retries: 0,
            backed_off: Duration::ZERO,
        }
    }

    /// Runs `record` through the plugins `snapshot` routes it to. An error
    /// if its schema check needs the schema registry, and it has not
    /// answered for [`REGISTRY_PATIENCE`].
    pub fn handle(
        &mut self,
        snapshot: &Snapshot,
        record: OwnedMessage,
    ) -> Result<Handled, Unavailable> {
        let place = (record.topic().to_string(), record.partition());
        let mut record = record;
        let mut waited = Duration::ZERO;
        let mut pass = loop {
            let instances = self.instances.entry(place.clone()).or_default();
            let mut pass =
                dispatch::run_batch(self.runtime, snapshot, &self.token, vec![record], instances);
            match pass.waiting.take() {
                None => break pass,
                Some(unavailable) if waited >= REGISTRY_PATIENCE => return Err(unavailable),
                Some(_) => {
                    waited += REGISTRY_WAIT;
                    std::thread::sleep(REGISTRY_WAIT);
                    record = pass.rest.pop().expect("the record that waits is returned");
                }
            }
        };
        // A batch runs at least its first record, whatever the token says.
        let ran = pass.ran.pop().expect("a batch of one runs its record");
        let mut handled = Handled::empty(ran.record);
        let event = match ran.event {
            Ok(event) => event,
            Err(error) => {
                let topic = dead_letter_topic_for(None, handled.record.topic());
                handled.dead_letter(topic, &error, 0);
                return Ok(handled);
            }
        };
        let routed = snapshot
            .router
            .plugins_for(handled.record.topic(), &event.event_type);
        if routed.is_empty() {
            handled.skipped = Some(event.event_type.clone());
            return Ok(handled);
        }
        for (plugin, follow_ups) in ran.handled {
            handled.follow_ups(&plugin, follow_ups);
        }
        handled.handled = true;
        let Some(stopped) = ran.stopped else {
            return Ok(handled);
        };
        let mut first = stopped.failure;
        for name in &stopped.left {
            if !self.deliver(snapshot, &mut handled, &event, name, first.take())? {
                handled.handled = false;
            }
            if handled.interrupted {
                break;
            }
        }
        Ok(handled)
    }

    /// Runs `name` on the event until it is handled or dead-lettered.
    /// `first` is the failure of the attempt the first pass made. Whether
    /// the event was handled.
    fn deliver(
        &mut self,
        snapshot: &Snapshot,
        handled: &mut Handled,
        event: &Arc<Event>,
        name: &str,
        mut first: Option<Failure>,
    ) -> Result<bool, Unavailable> {
        let settings = snapshot.settings(name);
        let dead_letter_topic = settings.dead_letter_topic_for(handled.record.topic());
        let plugin = match snapshot.handler(name) {
            Some(Handler::Wasm(plugin)) => plugin.clone(),
            _ => {
                let error = RecordError::PluginMissing {
                    plugin: name.to_string(),
                    dir: snapshot.config.plugins.dir.clone(),
                };
                handled.dead_letter(dead_letter_topic, &error, 0);
                return Ok(false);
            }
        };
        let mut attempt: u32 = 1;
        let mut waited = Duration::ZERO;
        loop {
            let outcome = match first.take() {
                Some(failure) => Outcome::Failed(failure),
                None => {
                    let delivery = retry::delivery(&handled.record, attempt);
                    let (record_trace, _) = trace_headers::of_record(&handled.record, None);
                    let trigger = Trigger {
                        event,
                        delivery: &delivery,
                        handling: &trace::Handling::new(record_trace, name),
                        schemas: snapshot.follow_up_schemas(),
                    };
                    self.runtime.invoke(&plugin, &settings, trigger, None)
                }
            };
            match outcome {
                Outcome::Handled(follow_ups) => {
                    handled.follow_ups(&plugin, follow_ups);
                    return Ok(true);
                }
                Outcome::Failed(failure) => {
                    match policy::next(&failure, attempt, settings.max_retries, 0) {
                        Next::WaitForRegistry(_) => {
                            // `eddy test` and `eddy replay` wait for the
                            // registry a bounded time, in steps of their own.
                            if waited >= REGISTRY_PATIENCE {
                                return Err(Unavailable(failure.message));
                            }
                            waited += REGISTRY_WAIT;
                            std::thread::sleep(REGISTRY_WAIT);
                        }
                        Next::Retry(delay) => {
                            self.retries += 1;
                            if !self.back_off(delay) {
                                handled.interrupted = true;
                                return Ok(false);
                            }
                            attempt += 1;
                        }
                        Next::DeadLetter => {
                            let error = RecordError::Handler {
                                plugin: name.to_string(),
                                failure,
                            };
                            handled.dead_letter(dead_letter_topic, &error, attempt);
                            return Ok(false);
                        }
                    }
                }
            }
        }
    }

    /// Lets `delay` pass; `false` if told to stop meanwhile.
    fn back_off(&mut self, delay: Duration) -> bool {
        self.backed_off += delay;
        let Backoff::Sleep(stop) = &self.backoff else {
            return true;
        };
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        !stop.load(Ordering::Relaxed)
    }
}

impl Handled {
    fn empty(record: OwnedMessage) -> Handled {
        Handled {
            record,
            out: Vec::new(),
            skipped: None,
            handled: false,
            interrupted: false,
        }
    }

    fn follow_ups(&mut self, plugin: &Plugin, follow_ups: Vec<FollowUp>) {
        let hops = produce::hops_after(&self.record);
        for follow_up in follow_ups {
            eddy_trace::produced(&follow_up.trace, &follow_up.topic, &follow_up.event_id);
            self.out.push(Out {
                kind: Kind::FollowUp,
                topic: follow_up.topic,
                key: follow_up.key.map(String::into_bytes),
                headers: produce::follow_up_headers(&plugin.id, hops, &follow_up.trace),
                payload: Some(follow_up.payload),
            });
        }
    }

    fn dead_letter(&mut self, topic: String, error: &RecordError, attempts: u32) {
        self.out.push(Out {
            kind: Kind::DeadLetter,
            topic,
            key: self.record.key().map(<[u8]>::to_vec),
            headers: dead_letter::headers_of(&self.record, error, attempts),
            payload: self.record.payload().map(<[u8]>::to_vec),
        });
    }
}
