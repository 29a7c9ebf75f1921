//! A Kafka broker of a test's own, for tests that stop and start it.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::{env_path, unique};

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
