//! Starting eddy, producing records and reading what came out.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

pub fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run the tests with `cargo xtask test`"))
}

pub fn bootstrap() -> String {
    std::env::var("EDDY_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn create_topics(topics: &[&str], partitions: i32) {
    create_topics_on(&bootstrap(), topics, partitions)
}

pub fn create_topics_on(brokers: &str, topics: &[&str], partitions: i32) {
    create_topics_with(brokers, topics, partitions, &[]);
}

/// Creates `topics` with topic-level settings such as `max.message.bytes`.
pub fn create_topics_with(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    settings: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(t, partitions, TopicReplication::Fixed(1)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let results = block_on(admin.create_topics(&new, &AdminOptions::new())).expect("create topics");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create {topic}: {code}"),
        }
    }
}

/// Deletes the records of `topic` partition `partition` before `offset`,
/// as retention would.
pub fn delete_records_before(topic: &str, partition: i32, offset: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client");
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .expect("partition");
    block_on(admin.delete_records(&before, &AdminOptions::new())).expect("delete records");
}

/// Drives one future to completion on this thread (the admin API is async).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct TestProducer {
    producer: BaseProducer,
}

pub fn producer() -> TestProducer {
    producer_for(&bootstrap())
}

pub fn producer_for(brokers: &str) -> TestProducer {
    producer_with(brokers, &[])
}

/// A producer with extra librdkafka settings.
pub fn producer_with(brokers: &str, settings: &[(&str, &str)]) -> TestProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    TestProducer {
        producer: config.create().expect("producer"),
    }
}

impl TestProducer {
    pub fn send(
        &self,
        topic: &str,
        key: Option<&str>,
        value: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
            .collect();
        self.send_raw(topic, key.map(str::as_bytes), value, &headers);
    }

    /// Sends `value` with `key` to partition `partition` of `topic`.
    pub fn send_to(&self, topic: &str, partition: i32, key: &str, value: &Value) {
        let payload = value.to_string();
        let record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(&payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends the bytes `value` with `key` to partition `partition` of `topic`.
    pub fn send_bytes_to(&self, topic: &str, partition: i32, key: &str, value: &[u8]) {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends a record whose header names are any bytes (rdkafka's own
    /// header API takes names as text only).
    pub fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], &[u8])],
    ) {
        let owned = OwnedHeaders::new();
        let native = owned.as_borrowed() as *const rdkafka::message::BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        for (name, value) in headers {
            // SAFETY: `as_borrowed` is the native headers' address (rdkafka
            // casts it the same way); they are ours and writable, and
            // librdkafka copies the name and value.
            unsafe {
                rdkafka::bindings::rd_kafka_header_add(
                    native,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast_mut().cast(),
                    value.len() as isize,
                );
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    /// Sends `value` with `key` to `topic`, stamped `timestamp_ms`.
    pub fn send_at(&self, topic: &str, key: &str, value: &Value, timestamp_ms: i64) {
        let payload = value.to_string();
        let record: BaseRecord<'_, str, str> = BaseRecord::to(topic)
            .key(key)
            .payload(payload.as_str())
            .timestamp(timestamp_ms);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("enqueue record");
    }

    pub fn send_json(&self, topic: &str, key: &str, value: &Value) {
        self.send(topic, Some(key), Some(value.to_string().as_bytes()), &[]);
    }

    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

/// A seed-style event as the Python services write it.
pub fn seed_event(event_id: &str, event_type: &str, aggregate_id: &str, data: Value) -> Value {
    serde_json::json!({
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": "2026-11-26T12:00:00Z",
        "service_name": "user-service",
        "version": "1.0",
        "data": data,
        "metadata": {},
        "aggregate_id": aggregate_id,
        "aggregate_type": "User",
    })
}

/// A record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    /// (name, value), in order, both read lossily as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn json(&self) -> Value {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// How many headers are called `name`.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }
}

/// Reads `topics` from the beginning, keeping the records `keep` accepts,
/// until `expected` are kept and then on to each partition's high-water
/// mark as it is at that moment (so a test sees duplicates, or that nothing
/// came: what is not there by then was not written before), or until
/// `limit`.
pub fn read(
    topics: &[&str],
    expected: usize,
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    read_from(&bootstrap(), topics, expected, limit, keep)
}

/// Everything on `topics` up to their high-water marks now that `keep`
/// accepts: for checks that something did not arrive.
pub fn read_to_end(topics: &[&str], keep: impl Fn(&Record) -> bool) -> Vec<Record> {
    read(topics, 0, Duration::from_secs(60), keep)
}

/// [`read`] from the broker at `brokers`.
pub fn read_from(
    brokers: &str,
    topics: &[&str],
    expected: usize,
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    read_until(brokers, topics, limit, keep, |kept| kept.len() >= expected)
}

/// Reads `topics` from the beginning, keeping the records `keep` accepts,
/// until `enough` says they are enough (it is shown what is kept, at the
/// start and after each record kept) and then on to each partition's
/// high-water mark as it is at that moment, or until `limit`.
pub fn read_until(
    brokers: &str,
    topics: &[&str],
    limit: Duration,
    keep: impl Fn(&Record) -> bool,
    mut enough: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        // librdkafka's default, said: records of aborted transactions (an
        // exactly-once eddy killed mid-transaction) are not read.
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assigned: Vec<(String, i32)> = Vec::new();
    let mut ends: Option<Vec<(String, i32, i64, i64)>> = None;
    let mut kept = Vec::new();
    let mut satisfied = enough(&kept);
    let started = Instant::now();
    let mut looked = None::<Instant>;
    while started.elapsed() < limit {
        // Partitions are assigned directly (no group to join); a topic that
        // does not exist yet is looked for again every half second.
        if looked.is_none_or(|at| at.elapsed() > Duration::from_millis(500)) {
            assign_new_partitions(&consumer, topics, &mut assigned);
            looked = Some(Instant::now());
        }
        if satisfied {
            let ends = ends.get_or_insert_with(|| high_water_marks(&consumer, &assigned));
            if caught_up(&consumer, ends) {
                break;
            }
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(message) = message else { continue };
        let record = Record {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message.headers().map(headers_of).unwrap_or_default(),
        };
        if keep(&record) {
            kept.push(record);
            satisfied |= enough(&kept);
        }
    }
    kept
}

/// Every header, names and values read lossily as text: rdkafka's own
/// iterator panics on a name that is not UTF-8, which eddy's dead letters
/// keep as they came.
fn headers_of(headers: &rdkafka::message::BorrowedHeaders) -> Vec<(String, String)> {
    let native = headers as *const rdkafka::message::BorrowedHeaders
        as *const rdkafka::bindings::rd_kafka_headers_t;
    (0..headers.count())
        .filter_map(|index| {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: the borrowed headers' address is the native headers
            // (rdkafka casts it the same way); librdkafka points into them.
            let error = unsafe {
                rdkafka::bindings::rd_kafka_header_get_all(
                    native, index, &mut name, &mut value, &mut size,
                )
            };
            if error != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            // SAFETY: a NUL-terminated name and `size` bytes of value, owned
            // by the message.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
            let value = if value.is_null() {
                String::new()
            } else {
                let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) };
                String::from_utf8_lossy(bytes).into_owned()
            };
            Some((name, value))
        })
        .collect()
}

/// Assigns, from the beginning, the partitions of `topics` not yet in
/// `assigned`.
fn assign_new_partitions(
    consumer: &BaseConsumer,
    topics: &[&str],
    assigned: &mut Vec<(String, i32)>,
) {
    let mut new = TopicPartitionList::new();
    for topic in topics {
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
            continue;
        };
        for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
            for p in t.partitions() {
                let at = (t.name().to_string(), p.id());
                if !assigned.contains(&at) {
                    new.add_partition_offset(&at.0, at.1, Offset::Beginning)
                        .expect("partition offset");
                    assigned.push(at);
                }
            }
        }
    }
    if new.count() > 0 {
        consumer
            .incremental_assign(&new)
            .expect("assign partitions");
    }
}

/// (topic, partition, low, high) of each assigned partition, now.
fn high_water_marks(
    consumer: &BaseConsumer,
    assigned: &[(String, i32)],
) -> Vec<(String, i32, i64, i64)> {
    assigned
        .iter()
        .map(|(topic, partition)| {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .expect("watermarks");
            (topic.clone(), *partition, low, high)
        })
        .collect()
}

/// Whether the consumer has read every partition up to its mark in `ends`.
fn caught_up(consumer: &BaseConsumer, ends: &[(String, i32, i64, i64)]) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    ends.iter().all(|(topic, partition, low, high)| {
        let at = match positions
            .find_partition(topic, *partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(at)) => at,
            _ => *low,
        };
        at >= *high
    })
}

/// What reached `<topic>.dlq`: waits for `expected` records (two minutes at
/// most), then reads to the end for any extra.
pub fn dead_letters(topic: &str, expected: usize) -> Vec<Record> {
    let dlq = format!("{topic}.dlq");
    read(&[&dlq], expected, Duration::from_secs(120), |_| true)
}

/// Records on `topics` caused by one of `ids` (their `causation_id`).
pub fn follow_ups_of(topics: &[&str], ids: &[String], expected: usize) -> Vec<Record> {
    read(topics, expected, Duration::from_secs(60), |r| {
        r.json()["causation_id"]
            .as_str()
            .is_some_and(|c| ids.iter().any(|id| id == c))
    })
}

/// The committed offset of `group` for each partition of `topic`.
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        // A read_committed consumer asks for stable offsets only, and the
        // broker makes it wait while a transaction of the group is open:
        // after a kill -9 of an exactly-once eddy, until the transaction
        // times out (60 s). What was committed is what the tests ask.
        .set("isolation.level", "read_uncommitted")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    // A loaded machine can miss one 10 s answer; three in a row is a fault.
    let committed = (1..=3)
        .find_map(|attempt| {
            match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
                Ok(committed) => Some(committed),
                Err(e) if attempt < 3 => {
                    eprintln!("committed offsets, attempt {attempt}: {e}; again");
                    None
                }
                Err(e) => panic!("committed offsets: {e}"),
            }
        })
        .expect("an answer or a panic");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// The end (high-water mark) of each partition of `topic`.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

/// The plugin files a test needs, from the example or the test plugins.
pub enum PluginFile {
    Example(&'static str),
    Test(&'static str),
}

/// A fresh folder with `eddy.toml` and `plugins/` holding `plugins`.
fn workspace(prefix: &str, config: &str, plugins: &[PluginFile]) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(dir.join("plugins")).expect("temp dir");
    for plugin in plugins {
        let (folder, name) = match plugin {
            PluginFile::Example(name) => (env_path("EDDY_PLUGIN_DIR"), *name),
            PluginFile::Test(name) => (env_path("EDDY_TEST_PLUGIN_DIR"), *name),
        };
        let file = format!("{name}.wasm");
        std::fs::copy(folder.join(&file), dir.join("plugins").join(&file))
            .unwrap_or_else(|e| panic!("cannot copy plugin {file}: {e}"));
    }
    std::fs::write(dir.join("eddy.toml"), config).expect("write config");
    dir
}

/// A running `eddy run` process with its own config and plugin folder.
pub struct Eddy {
    child: Option<Child>,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Eddy {
    /// Writes `config` (whose `[plugins] dir` should be `"plugins"`) and the
    /// plugin files into a fresh folder and starts eddy there.
    pub fn start(config: &str, plugins: &[PluginFile]) -> Eddy {
        Eddy::start_with_env(config, plugins, &[])
    }

    /// [`Eddy::start`] with extra environment variables.
    pub fn start_with_env(config: &str, plugins: &[PluginFile], env: &[(&str, &str)]) -> Eddy {
        let dir = workspace("eddy-e2e", config, plugins);
        let mut eddy = Eddy {
            child: None,
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        eddy.launch();
        eddy
    }

    /// Starts eddy (again) on the same folder.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "eddy is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("eddy.log"))
            .expect("log file");
        let child = Command::new(env_path("EDDY_BIN"))
            .args(["run", "--config"])
            .arg(self.dir.join("eddy.toml"))
            .env("RUST_LOG", "info,eddy=debug")
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start eddy");
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    /// The running eddy's resident memory, in KiB.
    pub fn resident_kib(&self) -> u64 {
        let child = self.child.as_ref().expect("eddy is not running");
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the running eddy.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("eddy is not running");
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// SIGKILL: no chance to finish or commit anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("eddy is not running");
        child.kill().expect("kill -9");
        child.wait().expect("wait for eddy");
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("eddy is not running");
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        let status = child.wait().expect("wait for eddy");
        assert!(
            status.success(),
            "eddy exited with {status}; log:\n{}",
            self.log()
        );
    }

    /// The folder eddy watches for plugins.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// Waits until eddy's log has `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The address of eddy's HTTP endpoints, from its start-up summary.
    pub fn http_addr(&self) -> String {
        let marker = "/readyz on http://";
        assert!(
            self.wait_for_log(marker, 1, Duration::from_secs(30)),
            "eddy never said where it serves HTTP; log:\n{}",
            self.log()
        );
        let log = self.log();
        let at = log.rfind(marker).expect("marker") + marker.len();
        log[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect()
    }

    /// Every thread's stack of the running eddy, from `gdb` if there is
    /// one: for a test that finds eddy stuck.
    pub fn stacks(&self) -> String {
        let Some(child) = &self.child else {
            return "eddy is not running".to_string();
        };
        match Command::new("gdb")
            .args(["-p", &child.id().to_string(), "-batch", "-ex"])
            .arg("thread apply all bt 25")
            .output()
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("no stacks (gdb: {e})"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("eddy.log")).unwrap_or_default()
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `[kafka]` and `[plugins]` part of a test config.
pub fn config_head(group: &str) -> String {
    format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\n\n\
         [plugins]\ndir = \"plugins\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n",
        bootstrap()
    )
}

/// Runs `eddy check` on `config` with `plugins`; returns exit code and output.
pub fn check(config: &str, plugins: &[PluginFile], extra_files: &[(&str, &[u8])]) -> (i32, String) {
    let dir = workspace("eddy-check", config, plugins);
    for (name, bytes) in extra_files {
        std::fs::write(dir.join("plugins").join(name), bytes).expect("write file");
    }
    let output = Command::new(env_path("EDDY_BIN"))
        .args(["check", "--config"])
        .arg(dir.join("eddy.toml"))
        .output()
        .expect("run eddy check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// A plain HTTP GET; returns the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to eddy's HTTP address");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A Kafka broker of a test's own (KRaft, one node) on free ports, for
/// tests that stop and start it. Uses the jars `cargo xtask kafka start`
/// fetched (`EDDY_KAFKA_HOME`).
pub struct TestBroker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `java` with the Kafka jars and logging set up, running `args`.
pub fn kafka_java(args: &[&str]) -> Command {
    let home = env_path("EDDY_KAFKA_HOME");
    let mut java = Command::new("java");
    java.arg("-Xmx384m")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            home.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", home.join("libs").display()))
        .args(args);
    java
}

impl TestBroker {
    pub fn start() -> TestBroker {
        let dir = std::env::temp_dir().join(unique("eddy-broker"));
        std::fs::create_dir_all(dir.join("data")).expect("broker dir");
        let (port, controller) = (free_port(), free_port());
        std::fs::write(
            dir.join("server.properties"),
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 log.dirs={}\noffsets.topic.replication.factor=1\noffsets.topic.num.partitions=3\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n",
                dir.join("data").display()
            ),
        )
        .expect("server.properties");
        let uuid = kafka_java(&["kafka.tools.StorageTool", "random-uuid"])
            .output()
            .expect("java");
        let cluster = String::from_utf8_lossy(&uuid.stdout).trim().to_string();
        let properties = dir.join("server.properties").display().to_string();
        let format = kafka_java(&[
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            &cluster,
            "-c",
            &properties,
        ])
        .output()
        .expect("format");
        assert!(
            format.status.success(),
            "{}",
            String::from_utf8_lossy(&format.stderr)
        );
        let mut broker = TestBroker {
            child: None,
            dir,
            port,
        };
        broker.restart();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its data and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker runs already");
        let log = std::fs::File::create(self.dir.join("broker.log")).expect("broker log");
        let properties = self.dir.join("server.properties").display().to_string();
        let child = kafka_java(&["kafka.Kafka", &properties])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the test broker");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", self.bootstrap())
                .set("log_level", "0")
                .create()
                .expect("client");
            if consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the test broker did not start"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the broker (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("the broker is not running");
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        child.wait().expect("wait for the broker");
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
