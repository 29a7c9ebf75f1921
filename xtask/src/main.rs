//! `cargo xtask …`: everything around the code — a local Kafka broker,
//! building plugins, the demo and the full test run.
//!
//! # Layout
//! - `kafka`: a real Apache Kafka broker (KRaft, single node) from Maven
//!   Central jars, started with Java; topics;
//! - `demo`: the newcomer's walk-through;
//! - `bench`: throughput, CPU, memory and latency against a bare consumer
//!   and the Python bus;
//! - `image`: eddy's container image, built with podman;
//! - `registry`: a real schema registry (Apicurio, from Maven Central);
//! - `python`: venvs with Python clients from PyPI;
//! - `needs`: the machine's packages the tests need, checked first;
//! - this file: commands, building plugins and the host, running tests.

mod bench;
mod demo;
mod image;
mod kafka;
mod needs;
mod python;
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  kafka start|stop|status   a local Apache Kafka broker on 127.0.0.1:9092
  registry start|stop|status
                            a local schema registry (Apicurio) on 127.0.0.1:18081
  plugins                   build the example plugins to target/plugins/*.wasm
  demo                      build everything, start Kafka and eddy, show follow-ups
  image                     build eddy's container image with podman (localhost/eddy:dev)
  test                      build everything, start Kafka, run every test
  bench [--quick] [--only SCENARIO,…] [--baseline EDDY]
                            eddy against a bare consumer and the Python bus
                            (--only: those scenarios, after the raw floor)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["kafka", "start"] => kafka::start().map(|_| ()),
        ["kafka", "stop"] => kafka::stop(),
        ["kafka", "status"] => kafka::status(),
        ["registry", "start"] => registry::start(),
        ["registry", "stop"] => registry::stop(),
        ["registry", "status"] => registry::status(),
        ["plugins"] => build_plugins().map(|_| ()),
        ["demo"] => demo::run(),
        ["image"] => image::build(),
        ["test"] => test(),
        ["bench", rest @ ..] => bench::options(rest).and_then(bench::run),
        ["bench-raw", rest @ ..] => bench::raw(rest),
        ["bench-latency", rest @ ..] => bench::latency_only(rest.contains(&"--reuse")),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// Stops the process this xtask started whose pid `running_pid` reads from
/// `pid_file`: SIGTERM, then SIGKILL once `patience` has passed; `what`
/// names it in what is printed.
fn stop_started(
    what: &str,
    running_pid: impl Fn() -> Option<u32>,
    pid_file: &Path,
    patience: std::time::Duration,
) -> anyhow::Result<()> {
    let Some(pid) = running_pid() else {
        println!("xtask: {what} is not running (none started from here)");
        return Ok(());
    };
    run_command(Command::new("kill").arg(pid.to_string()))?;
    let started = std::time::Instant::now();
    while running_pid().is_some() {
        if started.elapsed() > patience {
            run_command(Command::new("kill").args(["-9", &pid.to_string()]))?;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(pid_file);
    println!("xtask: {what} stopped");
    Ok(())
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn cargo_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// Runs `command`, failing with its description if it does not succeed.
pub fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Maven, quiet and plain: no progress, no colour codes (`-B` alone
/// leaves them on in some versions), whether or not output is a terminal.
pub fn maven() -> Command {
    let mut mvn = Command::new("mvn");
    mvn.args(["-q", "-B", "-Dstyle.color=never"]);
    mvn
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("cannot run rustup; install Rust with rustup")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    println!("xtask: adding the wasm32-wasip2 target");
    run_command(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
        .context("cannot add the wasm32-wasip2 target: plugins cannot be built without it")
}

/// Runs `cargo build --release --target wasm32-wasip2` on the plugin
/// workspace at `workspace` with `extra` arguments.
fn cargo_build_wasm(workspace: &Path, extra: &[&str]) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    run_command(
        cargo()
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(cargo_target_dir().join("wasm"))
            .args(extra),
    )
}

/// Copies the built `.wasm` of crate `name` to `dest`, through a temporary
/// name, so a watching host never sees a half-written file.
fn install_wasm(name: &str, dest: &Path) -> anyhow::Result<()> {
    let artifact = cargo_target_dir()
        .join("wasm/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    let partial = dest.with_file_name(format!(".{name}.wasm.partial"));
    std::fs::copy(&artifact, &partial)
        .with_context(|| format!("cannot copy {}", artifact.display()))?;
    std::fs::rename(&partial, dest)?;
    Ok(())
}

/// Builds every crate of the plugin workspace at `workspace` to
/// wasm32-wasip2 and puts each at `out/<name>.wasm`.
fn build_plugin_workspace(workspace: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    cargo_build_wasm(workspace, &[])?;
    std::fs::create_dir_all(out)?;
    let mut built = Vec::new();
    for entry in std::fs::read_dir(workspace)? {
        let crate_dir = entry?.path();
        if !crate_dir.join("Cargo.toml").is_file() {
            continue;
        }
        let name = crate_dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("plugin folder name is not UTF-8")?;
        let dest = out.join(format!("{name}.wasm"));
        install_wasm(name, &dest)?;
        built.push(dest);
    }
    built.sort();
    Ok(built)
}

/// Builds crate `name` of `workspace` with `feature` on, to `out`.
fn build_plugin_variant(
    workspace: &Path,
    name: &str,
    feature: &str,
    out: &Path,
) -> anyhow::Result<()> {
    cargo_build_wasm(workspace, &["--package", name, "--features", feature])?;
    install_wasm(name, out)
}

/// `cargo xtask plugins`: the example plugins, at `target/plugins/<name>.wasm`.
pub fn build_plugins() -> anyhow::Result<Vec<PathBuf>> {
    let built = build_plugin_workspace(&root().join("plugins"), &root().join("target/plugins"))?;
    for path in &built {
        println!("xtask: built {}", path.display());
    }
    Ok(built)
}

/// Builds the `eddy` binary (debug) with `features` and returns its path.
pub fn build_host(features: &[&str]) -> anyhow::Result<PathBuf> {
    run_command(
        cargo()
            .current_dir(root())
            .args(["build", "--package", "eddy", "--bin", "eddy"])
            .args(features.iter().flat_map(|f| ["--features", f])),
    )?;
    Ok(cargo_target_dir().join("debug/eddy"))
}

/// The `eddy` binary the end-to-end tests run: with the fault-injection
/// hooks a user's build never has, copied aside so that a later build of
/// the workspace without them does not replace it.
fn build_host_for_tests() -> anyhow::Result<PathBuf> {
    let built = build_host(&["fault-injection"])?;
    let dir = cargo_target_dir().join("test-bin");
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("eddy");
    std::fs::copy(&built, &copy)
        .with_context(|| format!("cannot copy {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

/// Each example plugin on its `tests/events.jsonl`, with `eddy test` and
/// the demo's `eddy.toml`, against its `tests/expected.jsonl`.
fn test_example_plugins(eddy: &Path) -> anyhow::Result<()> {
    let plugins = root().join("plugins");
    let mut names: Vec<String> = std::fs::read_dir(&plugins)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("tests/events.jsonl").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    anyhow::ensure!(
        !names.is_empty(),
        "no example plugin has tests/events.jsonl"
    );
    for name in names {
        let tests = plugins.join(&name).join("tests");
        run_command(
            Command::new(eddy)
                .arg("test")
                .arg(root().join("target/plugins").join(format!("{name}.wasm")))
                .arg("--events")
                .arg(tests.join("events.jsonl"))
                .arg("--expect")
                .arg(tests.join("expected.jsonl"))
                .arg("--config")
                .arg(root().join("eddy.toml")),
        )?;
    }
    Ok(())
}

/// `cargo xtask test`: plugins and host, the broker-free tests, then the
/// broker, the end-to-end tests and the plugins' native tests.
fn test() -> anyhow::Result<()> {
    needs::ensure()?;
    build_plugins()?;
    let test_plugins = root().join("target/test-plugins");
    let workspace = root().join("tests/plugins");
    build_plugin_workspace(&workspace, &test_plugins)?;
    build_plugin_variant(
        &workspace,
        "tagger",
        "v2",
        &test_plugins.join("tagger-v2.wasm"),
    )?;
    let eddy = build_host_for_tests()?;
    test_example_plugins(&eddy)?;
    // What needs no broker runs before there is one, so it cannot lean on
    // it: unit and property tests, doc tests, the container files. Every
    // run selects the whole workspace, so the dependencies are built once,
    // with one set of features.
    run_command(cargo().current_dir(root()).args([
        "test",
        "--workspace",
        "--lib",
        "--bins",
        "--test",
        "packaging",
        "--test",
        "docs",
        "--test",
        "layering",
        "--test",
        "recorder",
    ]))?;
    run_command(
        cargo()
            .current_dir(root())
            .args(["test", "--workspace", "--doc"]),
    )?;
    // The container tests run the image.
    image::build()?;
    // Tests that need a schema registry start their own from here.
    let registry = registry::ensure()?;
    let python = registry::python_client()?;
    kafka::start()?;
    let topics_before = kafka::topic_names()?;
    let tested = run_command(
        cargo()
            .current_dir(root())
            // --show-output: the figures tests print (reload latency) are
            // part of the run's record. Four at once on any machine: the
            // tests mostly wait on the broker and on eddy processes, so on
            // 2 cores four halve the phase (534 s at two, 288 s at four).
            .args([
                "test",
                "--workspace",
                "--test",
                "e2e",
                "--",
                "--show-output",
                "--test-threads",
                "4",
            ])
            .env("EDDY_BIN", &eddy)
            .env("EDDY_PLUGIN_DIR", root().join("target/plugins"))
            .env("EDDY_TEST_PLUGIN_DIR", &test_plugins)
            .env("EDDY_KAFKA", kafka::BOOTSTRAP)
            .env("EDDY_KAFKA_HOME", root().join("target/kafka"))
            .env("EDDY_KAFKA_SASL_SSL", kafka::SASL_SSL)
            .env("EDDY_KAFKA_SSL", kafka::SSL)
            .env("EDDY_KAFKA_TLS", kafka::tls_dir())
            .env("EDDY_REGISTRY_HOME", &registry)
            .env("EDDY_PYTHON", &python)
            .env("EDDY_SEED_PYTHON", python::aiokafka()?)
            .env("EDDY_SCAFFOLD_TARGET_DIR", cargo_target_dir().join("wasm"))
            .env("EDDY_IMAGE", image::IMAGE)
            .env("EDDY_PODMAN_COMPOSE", image::podman_compose()?)
            .env("CONTAINERS_CONF", image::containers_conf()?),
    );
    // The tests' topics (thousands of records each) go, whether they
    // passed or not; what was there before stays.
    let deleted = tokio::runtime::Runtime::new()?.block_on(kafka::delete_topics_where(|name| {
        !topics_before.contains(name)
    }))?;
    println!("xtask: deleted the {deleted} topics the tests made");
    tested?;
    run_command(
        cargo()
            .args(["test", "--manifest-path"])
            .arg(root().join("plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(cargo_target_dir().join("wasm")),
    )?;
    println!("xtask: all tests passed");
    Ok(())
}
