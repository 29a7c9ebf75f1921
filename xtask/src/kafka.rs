//! A real Apache Kafka broker for development and tests: KRaft, one node
//! that is both broker and controller, on 127.0.0.1:9092 (PLAINTEXT), with
//! two more listeners for clusters that want security: SASL_SSL on
//! 127.0.0.1:9094 (SCRAM-SHA-512 user `eddy`, PLAIN user `apikey`, and
//! OAUTHBEARER with Kafka's unsecured-token validator) and SSL with client
//! certificates required on 127.0.0.1:9095.
//!
//! The jars come from Maven Central through `xtask/kafka/pom.xml` (cached in
//! `~/.m2` and copied to `target/kafka/libs`); the data lives in
//! `target/kafka/data`, formatted once (with the SCRAM user). The
//! certificates and the users' passwords are made once with `openssl` in
//! `target/kafka/tls`: `ca.pem`, `client.pem`/`client.key`,
//! `expired-client.pem`/`.key` (for tests), `other-ca.pem` (a CA that signed
//! nothing here), `scram-password`, `plain-password`. `start` is idempotent.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::{root, run_command};

pub const BOOTSTRAP: &str = "127.0.0.1:9092";
const CONTROLLER: &str = "127.0.0.1:9093";
/// The SASL_SSL listener (SCRAM-SHA-512 and PLAIN).
pub const SASL_SSL: &str = "127.0.0.1:9094";
/// The SSL listener, client certificates required.
pub const SSL: &str = "127.0.0.1:9095";

/// Where the certificates and passwords are.
pub fn tls_dir() -> PathBuf {
    home().join("tls")
}

fn home() -> PathBuf {
    root().join("target/kafka")
}

/// Bytes the local broker holds for `topic`: the sizes of its partitions'
/// log segments, which are the record batches as they came over the wire.
pub fn topic_bytes(topic: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(home().join("data")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(topic))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|partition| partition.parse::<u32>().is_ok())
        })
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn pid_file() -> PathBuf {
    home().join("broker.pid")
}

fn log_file() -> PathBuf {
    home().join("broker.log")
}

/// The broker's pid, if the one we started is still alive.
fn running_pid() -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file()).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("kafka.Kafka")
        .then_some(pid)
}

fn port_open() -> bool {
    TcpStream::connect_timeout(
        &BOOTSTRAP.parse().expect("valid address"),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Whether the SASL_SSL listener accepts connections.
fn secured_port_open() -> bool {
    TcpStream::connect_timeout(
        &SASL_SSL.parse().expect("valid address"),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// A metadata request answered by a broker.
fn broker_answers() -> bool {
    let consumer: Result<BaseConsumer, _> = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("log_level", "0")
        .create();
    consumer
        .ok()
        .and_then(|c| c.fetch_metadata(None, Duration::from_secs(3)).ok())
        .is_some_and(|m| !m.brokers().is_empty())
}

fn ensure_jars() -> anyhow::Result<PathBuf> {
    let libs = home().join("libs");
    let pom_path = root().join("xtask/kafka/pom.xml");
    let pom = fs::read_to_string(&pom_path)?;
    // The folder is a copy of what the pom resolves to; a changed pom replaces it.
    let stamp = libs.join("pom.xml.copied");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(pom.as_str()) {
        println!("xtask: fetching the Apache Kafka jars from Maven Central (cached in ~/.m2)");
        let _ = fs::remove_dir_all(&libs);
        run_command(
            crate::maven()
                .arg("-f")
                .arg(&pom_path)
                .arg("dependency:copy-dependencies")
                .arg(format!("-DoutputDirectory={}", libs.display())),
        )
        .context("cannot fetch the Kafka jars with Maven (is `mvn` installed?)")?;
        fs::write(&stamp, pom)?;
    }
    Ok(libs)
}

/// Makes, once, the CA, the certificates and the passwords of the
/// broker's secured listeners, with `openssl`.
fn ensure_tls() -> anyhow::Result<PathBuf> {
    let dir = tls_dir();
    let done = dir.join("plain-password");
    if done.exists() {
        return Ok(dir);
    }
    println!("xtask: making test certificates in {}", dir.display());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .context("cannot run openssl (Debian package openssl)")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            &format!("/CN=eddy-test-{ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ])?;
    }
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    // The expired one's validity ended the day before it was made.
    for (name, days) in [
        ("broker", "3650"),
        ("client", "3650"),
        ("expired-client", "-1"),
    ] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            "san.ext",
            "-out",
            &format!("{name}.pem"),
        ])?;
    }
    let keystore =
        fs::read_to_string(dir.join("broker.key"))? + &fs::read_to_string(dir.join("broker.pem"))?;
    fs::write(dir.join("broker-keystore.pem"), keystore)?;
    fs::write(dir.join("scram-password"), "eddy-scram-secret\n")?;
    fs::write(dir.join("plain-password"), "eddy-plain-secret\n")?;
    Ok(dir)
}

fn write_config() -> anyhow::Result<(PathBuf, PathBuf)> {
    let home = home();
    let data = home.join("data");
    fs::create_dir_all(&data)?;
    let tls = ensure_tls()?;
    let plain_password = fs::read_to_string(tls.join("plain-password"))?;
    let properties = home.join("server.properties");
    fs::write(
        &properties,
        format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={CONTROLLER}
listeners=PLAINTEXT://{BOOTSTRAP},SASL_SSL://{SASL_SSL},SSL://{SSL},CONTROLLER://{CONTROLLER}
advertised.listeners=PLAINTEXT://{BOOTSTRAP},SASL_SSL://{SASL_SSL},SSL://{SSL}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_apikey=\"{plain}\";
listener.name.ssl.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
log.dirs={data}
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
            data = data.display(),
            plain = plain_password.trim_end(),
            keystore = tls.join("broker-keystore.pem").display(),
            ca = tls.join("ca.pem").display(),
        ),
    )?;
    let log4j = home.join("log4j2.properties");
    fs::write(
        &log4j,
        "status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.raft.name = org.apache.kafka
logger.raft.level = warn
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
",
    )?;
    Ok((properties, log4j))
}

fn java(libs: &Path, log4j: &Path) -> Command {
    let mut java = Command::new("java");
    java.arg("-Xmx768m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    java
}

/// Starts the broker unless it runs already, and waits until it answers.
pub fn start() -> anyhow::Result<()> {
    // Fetched and written even when a broker runs already (another
    // checkout's, say): tests that run brokers of their own need them here.
    let libs = ensure_jars()?;
    let (properties, log4j) = write_config()?;
    if running_pid().is_some() && !secured_port_open() {
        println!("xtask: the running broker has no secured listeners yet; restarting it");
        stop()?;
    }
    if running_pid().is_some() || port_open() {
        if wait_until_ready(Duration::from_secs(60)) {
            println!("xtask: Kafka is running on {BOOTSTRAP}");
            return Ok(());
        }
        bail!("something listens on {BOOTSTRAP} but does not answer as a Kafka broker");
    }
    // The SCRAM user is made when the data folder is formatted: a folder
    // formatted before it existed is formatted again (it holds test data
    // only).
    let scram_marker = home().join("data/scram-users");
    if home().join("data/meta.properties").exists() && !scram_marker.exists() {
        println!("xtask: formatting the broker's data folder again, with the SCRAM user");
        fs::remove_dir_all(home().join("data"))?;
        fs::create_dir_all(home().join("data"))?;
    }
    if !home().join("data/meta.properties").exists() {
        let output = java(&libs, &log4j)
            .args(["kafka.tools.StorageTool", "random-uuid"])
            .output()
            .context("cannot run java; install Java 17 or newer")?;
        let cluster_id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !output.status.success() || cluster_id.is_empty() {
            bail!(
                "kafka StorageTool random-uuid failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let scram_password = fs::read_to_string(tls_dir().join("scram-password"))?;
        run_command(
            java(&libs, &log4j)
                .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
                .arg(&cluster_id)
                .arg("-c")
                .arg(&properties)
                .arg("--add-scram")
                .arg(format!(
                    "SCRAM-SHA-512=[name=eddy,password={}]",
                    scram_password.trim_end()
                ))
                .stdout(Stdio::null()),
        )
        .context("cannot format the Kafka data folder")?;
        fs::write(&scram_marker, "eddy (SCRAM-SHA-512)\n")?;
    }
    let log = fs::File::create(log_file())?;
    let child = java(&libs, &log4j)
        .arg("kafka.Kafka")
        .arg(&properties)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in the terminal that started it
        // does not stop the broker.
        .process_group(0)
        .spawn()
        .context("cannot start java; install Java 17 or newer")?;
    fs::write(pid_file(), child.id().to_string())?;
    println!(
        "xtask: starting Kafka (pid {}, log {})",
        child.id(),
        log_file().display()
    );
    if !wait_until_ready(Duration::from_secs(120)) {
        let log = fs::read_to_string(log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        bail!(
            "Kafka did not become ready within 120 s; last lines of {}:\n{}",
            log_file().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    println!("xtask: Kafka is ready on {BOOTSTRAP}");
    Ok(())
}

fn wait_until_ready(limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if port_open() && broker_answers() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

pub fn stop() -> anyhow::Result<()> {
    crate::stop_started("Kafka", running_pid, &pid_file(), Duration::from_secs(30))
}

pub fn status() -> anyhow::Result<()> {
    match running_pid() {
        Some(pid) if broker_answers() => {
            println!("xtask: Kafka is running (pid {pid}) on {BOOTSTRAP}")
        }
        Some(pid) => println!("xtask: Kafka (pid {pid}) is starting or not answering"),
        None if port_open() => {
            println!("xtask: a broker not started from here listens on {BOOTSTRAP}")
        }
        None => println!("xtask: Kafka is not running; start it with `cargo xtask kafka start`"),
    }
    Ok(())
}

/// Creates `topics` with `partitions` partitions; existing ones are kept.
pub async fn create_topics(topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .create()
        .context("cannot create a Kafka admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Deletes every topic whose name starts with one of `prefixes`; says how
/// many it deleted.
pub async fn delete_topics_named(prefixes: &[&str]) -> anyhow::Result<usize> {
    delete_topics_where(|name| prefixes.iter().any(|p| name.starts_with(p))).await
}

/// The names of the broker's topics, its own (`__consumer_offsets`, …)
/// left out.
pub fn topic_names() -> anyhow::Result<BTreeSet<String>> {
    let metadata = admin()?
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .context("cannot list the broker's topics")?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| !name.starts_with("__"))
        .collect())
}

/// Deletes every topic (the broker's own left out) whose name `doomed`
/// accepts; says how many it deleted.
pub async fn delete_topics_where(doomed: impl Fn(&str) -> bool) -> anyhow::Result<usize> {
    let names: Vec<String> = topic_names()?.into_iter().filter(|n| doomed(n)).collect();
    if names.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for result in admin()?.delete_topics(&names, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => bail!("cannot delete topic {topic}: {code}"),
        }
    }
    Ok(names.len())
}

fn admin() -> anyhow::Result<AdminClient<DefaultClientContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .create()
        .context("cannot create a Kafka admin client")
}
