//! A real schema registry for development and tests: Apicurio Registry
//! (Apache-2.0), whose Confluent-compatible API is under `/apis/ccompat/v7`,
//! run from its Maven Central archive with Java 17, in memory, on
//! 127.0.0.1:18081.
//!
//! The archive is fetched once with Maven (cached in `~/.m2`) and unpacked
//! into `target/registry`. Tests that need a registry start their own from
//! there (`EDDY_REGISTRY_HOME`), so they can stop it mid-stream; `start`
//! here is for trying things by hand.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{root, run_command};

const VERSION: &str = "3.0.9";
pub const ADDRESS: &str = "127.0.0.1:18081";
/// The Confluent-compatible API of the registry `start` runs.
pub const CCOMPAT_URL: &str = "http://127.0.0.1:18081/apis/ccompat/v7";

/// The unpacked archive: the runner jar and its `lib/`.
pub fn home() -> PathBuf {
    root().join("target/registry")
}

fn jar() -> PathBuf {
    home().join(format!("apicurio-registry-app-{VERSION}-runner.jar"))
}

fn pid_file() -> PathBuf {
    home().join("registry.pid")
}

fn log_file() -> PathBuf {
    home().join("registry.log")
}

/// Fetches and unpacks the registry unless it is there; its folder.
pub fn ensure() -> anyhow::Result<PathBuf> {
    if jar().is_file() && home().join("lib").is_dir() {
        return Ok(home());
    }
    println!("xtask: fetching Apicurio Registry {VERSION} from Maven Central (cached in ~/.m2)");
    fs::create_dir_all(home())?;
    run_command(
        crate::maven()
            .arg("dependency:copy")
            .arg(format!(
                "-Dartifact=io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
            ))
            .arg(format!("-DoutputDirectory={}", home().display())),
    )
    .context("cannot fetch Apicurio Registry with Maven (is `mvn` installed?)")?;
    let archive = home().join(format!("apicurio-registry-app-{VERSION}-all.tar.gz"));
    run_command(
        Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(home()),
    )
    .context("cannot unpack Apicurio Registry")?;
    // Maven keeps the archive in ~/.m2: the copy here is not needed twice.
    fs::remove_file(&archive)?;
    if !jar().is_file() {
        bail!("the Apicurio archive has no {}", jar().display());
    }
    Ok(home())
}

/// A Python with Confluent's client and its JSON Schema serializer, for
/// the test that reads what they write (a venv in `target/registry`).
pub fn python_client() -> anyhow::Result<PathBuf> {
    crate::python::venv(
        &home().join("venv"),
        "confluent-kafka[json,schemaregistry]==2.16.1",
    )
}

/// The registry's pid, if the one started from here is alive.
fn running_pid() -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file()).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("apicurio-registry-app")
        .then_some(pid)
}

/// The status of `GET path` at `address`, if anything answers.
pub fn http_status(address: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(
        &address.parse().expect("a socket address"),
        Duration::from_millis(500),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0; 32];
    let read = stream.read(&mut head).ok()?;
    String::from_utf8_lossy(&head[..read])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn ready() -> bool {
    http_status(ADDRESS, "/health/ready") == Some(200)
}

/// Starts the registry unless it runs, and waits until it is ready.
pub fn start() -> anyhow::Result<()> {
    let home = ensure()?;
    if ready() {
        println!("xtask: the schema registry is running: {CCOMPAT_URL}");
        return Ok(());
    }
    let log = fs::File::create(log_file())?;
    let (host, port) = ADDRESS.split_once(':').expect("host:port");
    let child = Command::new("java")
        .args(["-Xmx512m", "-jar"])
        .arg(jar())
        .current_dir(&home)
        .env("QUARKUS_HTTP_HOST", host)
        .env("QUARKUS_HTTP_PORT", port)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start java; install Java 17 or newer")?;
    fs::write(pid_file(), child.id().to_string())?;
    println!(
        "xtask: starting Apicurio Registry (pid {}, log {})",
        child.id(),
        log_file().display()
    );
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > Duration::from_secs(90) {
            bail!(
                "the schema registry was not ready within 90 s; see {}",
                log_file().display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "xtask: the schema registry is ready in {:.1} s: {CCOMPAT_URL}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn stop() -> anyhow::Result<()> {
    crate::stop_started(
        "the schema registry",
        running_pid,
        &pid_file(),
        Duration::from_secs(20),
    )
}

pub fn status() -> anyhow::Result<()> {
    match running_pid() {
        Some(pid) if ready() => {
            println!("xtask: the schema registry is running (pid {pid}): {CCOMPAT_URL}")
        }
        Some(pid) => {
            println!("xtask: the schema registry (pid {pid}) is starting or not answering")
        }
        None if ready() => println!("xtask: a registry not started from here answers on {ADDRESS}"),
        None => println!(
            "xtask: the schema registry is not running; start it with `cargo xtask registry start`"
        ),
    }
    Ok(())
}
