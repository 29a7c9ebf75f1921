//! A real schema registry for the tests that need one: Apicurio Registry,
//! unpacked by `cargo xtask test` into `EDDY_REGISTRY_HOME`, run with Java
//! on a free port, its schemas in an H2 file of its own (so a restart keeps
//! them, as a production registry's would). Each test runs its own, so it
//! may stop it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::env_path;

pub struct Registry {
    child: Option<Child>,
    port: u16,
    /// Its log and its database.
    dir: std::path::PathBuf,
}

impl Registry {
    pub fn start() -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("eddy-registry-{port}"));
        // What a crashed earlier run left there is not this registry's.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("registry folder");
        let mut registry = Registry {
            child: None,
            port,
            dir,
        };
        registry.launch();
        registry
    }

    fn launch(&mut self) {
        let home = env_path("EDDY_REGISTRY_HOME");
        let jar = std::fs::read_dir(&home)
            .expect("EDDY_REGISTRY_HOME (run `cargo xtask test`)")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-runner.jar"))
            .expect("the Apicurio runner jar");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))
            .expect("registry log");
        let child = Command::new("java")
            .args(["-Xmx384m", "-jar"])
            .arg(jar)
            .current_dir(&home)
            .env("QUARKUS_HTTP_HOST", "127.0.0.1")
            .env("QUARKUS_HTTP_PORT", self.port.to_string())
            .env(
                "APICURIO_DATASOURCE_URL",
                format!("jdbc:h2:file:{}", self.dir.join("db").display()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the registry with java");
        self.child = Some(child);
        let started = Instant::now();
        while !self.ready() {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the registry was not ready in 90 s: {}",
                std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET /health/ready` answers 200.
    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(self.address()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "GET /health/ready HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address()
        );
        let mut head = [0; 16];
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read(&mut head).is_ok()
            && head.starts_with(b"HTTP/1.1 200")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Confluent-compatible API's base URL, as eddy is given it.
    pub fn url(&self) -> String {
        format!("http://{}/apis/ccompat/v7", self.address())
    }

    /// Registers `schema` (JSON Schema) under `subject`; its id.
    pub fn register(&self, subject: &str, schema: &Value) -> u32 {
        let body = json!({"schemaType": "JSON", "schema": schema.to_string()}).to_string();
        let output = Command::new("curl")
            .args(["-sS", "-X", "POST", "-H"])
            .arg("Content-Type: application/vnd.schemaregistry.v1+json")
            .arg("--data")
            .arg(&body)
            .arg(format!("{}/subjects/{subject}/versions", self.url()))
            .output()
            .expect("run curl");
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "the registry's answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        answer["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id in {answer}")) as u32
    }

    /// Stops the registry (SIGTERM, then SIGKILL after 20 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same port, with the schemas it had.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the registry is running");
        self.launch();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
