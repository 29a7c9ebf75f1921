//! One eddy scenario: its folder and `eddy.toml`, its processes started
//! and timed until their effect is durable, and the /readyz probes of the
//! `-probed` scenario.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::measure::{Durable, cpu_ticks, measure};
use super::{PROBERS, Scenario};
use crate::kafka;

/// Events per instance in the `-reuse` scenarios.
const REUSE: u32 = 1_000;

/// What an eddy scenario runs: which plugin, from where, publishing where.
pub struct EddySetup<'a> {
    pub plugin: &'a str,
    pub plugins: &'a Path,
    pub out: &'a str,
    /// Whether the plugin opts in to instance reuse ([`REUSE`]).
    pub reuse: bool,
    /// `[kafka] delivery = "exactly-once"`.
    pub exactly_once: bool,
    /// The follow-up producer's `compression.type`, if any.
    pub compression: Option<&'a str>,
    /// Where spans are exported, if they are.
    pub traced: Option<&'a str>,
    /// `[schemas]`: the corpus's events checked against [`USER_CREATED`].
    pub validated: bool,
}

/// The schema of the corpus's `user.created` data, as a service would
/// write it.
const USER_CREATED: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "type": "object",
  "required": ["user_id", "email", "name", "plan"],
  "properties": {
    "user_id": {"type": "string", "pattern": "^user-[0-9]+$"},
    "email": {"type": "string", "maxLength": 254},
    "name": {"type": "string", "minLength": 1},
    "plan": {"enum": ["free", "pro"]},
    "sent_us": {"type": "integer", "minimum": 0},
    "seq": {"type": "integer", "minimum": 0}
  }
}"#;

pub fn eddy_config(
    dir: &Path,
    name: &str,
    group: &str,
    topic: &str,
    setup: &EddySetup<'_>,
) -> anyhow::Result<PathBuf> {
    let EddySetup {
        plugin,
        plugins,
        out,
        reuse,
        exactly_once,
        compression,
        traced,
        validated,
    } = *setup;
    let telemetry = match traced {
        Some(endpoint) => format!("[telemetry]\nendpoint = \"{endpoint}\"\n\n"),
        None => String::new(),
    };
    let producer = match compression {
        Some(codec) => format!("[kafka.producer]\n\"compression.type\" = \"{codec}\"\n\n"),
        None => String::new(),
    };
    let delivery = if exactly_once {
        format!("delivery = \"exactly-once\"\ntransactional_id = \"{group}\"\n")
    } else {
        String::new()
    };
    let reuse = if reuse { REUSE } else { 1 };
    let scenario = dir.join(name);
    let plugin_dir = scenario.join("plugins");
    let _ = fs::remove_dir_all(&scenario);
    fs::create_dir_all(&plugin_dir)?;
    if plugin != "native-noop" {
        fs::copy(
            plugins.join(format!("{plugin}.wasm")),
            plugin_dir.join(format!("{plugin}.wasm")),
        )?;
    }
    let schemas = if validated {
        let dir = scenario.join("schemas/user.created");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("1.0.json"), USER_CREATED)?;
        "[schemas]\ndir = \"schemas\"\n\n"
    } else {
        ""
    };
    let config = scenario.join("eddy.toml");
    fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\n{delivery}\n\
             {producer}{telemetry}{schemas}[plugins]\ndir = \"plugins\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\ntopic = \"{topic}\"\nevent_types = [\"user.created\"]\nplugin = \"{plugin}\"\n\n\
             [plugin.{plugin}]\npublish_to = [\"{out}\"]\nevents_per_instance = {reuse}\n\
             config = {{ out_topic = \"{out}\" }}\n",
            kafka::BOOTSTRAP
        ),
    )?;
    Ok(config)
}

pub struct Running {
    pub child: Child,
    pub log: PathBuf,
    pub http: String,
}

pub fn start_eddy(binary: &Path, config: &Path, log: &str) -> anyhow::Result<Running> {
    let log = config.with_file_name(log);
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(config)
        // `eddy_host::app` is where binaries before the crate split log
        // their start line (`--baseline`).
        .env("RUST_LOG", "warn,eddy::app=info,eddy_host::app=info")
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("cannot start eddy")?;
    let started = Instant::now();
    let marker = "/readyz on http://";
    loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find(marker) {
            let http: String = text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return Ok(Running { child, log, http });
        }
        if started.elapsed() > Duration::from_secs(60) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            bail!("eddy did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn get(addr: &str, path: &str) -> String {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Runs `hosts` eddy processes in one group on the corpus until `durable`.
pub fn eddy_scenario(
    name: &'static str,
    binary: &Path,
    config: &Path,
    events: usize,
    hosts: usize,
    durable: &Durable<'_>,
) -> anyhow::Result<Scenario> {
    let cpu_before = cpu_ticks();
    let started = Instant::now();
    let fleet = (0..hosts)
        .map(|i| start_eddy(binary, config, &format!("eddy-{i}.log")))
        .collect::<anyhow::Result<Vec<Running>>>()?;
    // `-probed`: /readyz asked without pause by PROBERS clients meanwhile.
    let probing = Arc::new(std::sync::atomic::AtomicBool::new(
        name.ends_with("-probed"),
    ));
    let probers: Vec<_> = (0..PROBERS)
        .filter(|_| probing.load(Ordering::Relaxed))
        .map(|_| {
            let (probing, http) = (probing.clone(), fleet[0].http.clone());
            std::thread::spawn(move || {
                let mut asked = 0u64;
                while probing.load(Ordering::Relaxed) {
                    get(&http, "/readyz");
                    asked += 1;
                }
                asked
            })
        })
        .collect();
    let log = fleet[0].log.clone();
    let children = fleet.into_iter().map(|r| r.child).collect();
    let measured = measure(name, events, started, &cpu_before, children, durable)
        .with_context(|| format!("see {}", log.display()));
    probing.store(false, Ordering::Relaxed);
    if !probers.is_empty() {
        let asked: u64 = probers.into_iter().map(|p| p.join().unwrap_or(0)).sum();
        println!("xtask: bench: {name}: {asked} /readyz requests from {PROBERS} clients");
    }
    measured
}
