//! The `eddy` command: parses arguments, sets up logging, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eddy_host::{Config, http, offline, plugins, runtime::Runtime, scaffold};

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Runs Kafka events through WebAssembly handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the routed topics and handle events until SIGTERM or Ctrl-C.
    Run {
        #[arg(long, default_value = "eddy.toml")]
        config: PathBuf,
    },
    /// Validate the config and every plugin without touching Kafka.
    Check {
        #[arg(long, default_value = "eddy.toml")]
        config: PathBuf,
    },
    /// Run a plugin on a file of events, without Kafka, and print what it
    /// would have sent (follow-ups, dead letters) as JSON lines, or compare
    /// that with an expected file.
    Test {
        /// The plugin's .wasm file.
        plugin: PathBuf,
        /// One event per line: a record {"topic", "partition", "offset",
        /// "key", "headers", "value"} or an event envelope.
        #[arg(long)]
        events: PathBuf,
        /// Route, limit and allow-list as this eddy.toml does; without it
        /// every event goes to the plugin, which may publish anywhere.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The plugin's name in eddy.toml (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Topic of bare envelopes and records without one (default: the
        /// first topic routed to the plugin, else "events").
        #[arg(long)]
        topic: Option<String>,
        /// Compare with this file of effects; exit 1 if they differ.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Write what the plugin did to the --expect file instead.
        #[arg(long)]
        update: bool,
    },
    /// Create a plugin crate NAME (Cargo.toml, a handler, a native test).
    New {
        name: String,
        /// Folder to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of eddy's `sdk` folder, for the crate's eddy-sdk dependency.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Exit 0 if a running eddy answers on its HTTP address, 1 if not
    /// (the container's HEALTHCHECK; needs no curl).
    Health {
        #[arg(long, default_value = "127.0.0.1:9464")]
        addr: String,
        /// Ask /readyz instead of /healthz.
        #[arg(long)]
        ready: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `eddy test` prints effects on stdout; its stderr carries the
    // plugin's own log lines and what went wrong, not the host's chatter.
    init_logging(match cli.command {
        Command::Test { .. } => "warn,eddy::guest=info",
        _ => "info",
    });
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Test {
            plugin,
            events,
            config,
            name,
            topic,
            expect,
            update,
        } => test(offline::Options {
            plugin,
            name,
            events,
            config,
            topic,
            expect,
            update,
        }),
        Command::New { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk_path);
            scaffold::new_plugin(&dir, &name, &sdk).map(|root| {
                println!("created plugin crate {}", root.display());
                println!("  cd {} && cargo test", root.display());
                println!("  cargo build --target wasm32-wasip2 --release");
                println!("  then test the .wasm with `eddy test` (its README says how)");
                ExitCode::SUCCESS
            })
        }
        Command::Health { addr, ready } => {
            let path = if ready { "/readyz" } else { "/healthz" };
            http::probe(&addr, path).map(|body| {
                println!("{body}");
                ExitCode::SUCCESS
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(eddy_host::run(config, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&path)?;
    let report = plugins::check(&config, &Runtime::new()?);
    for line in &report.lines {
        println!("{line}");
    }
    if report.ok {
        println!("{}: ok", path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}: has errors", path.display());
        Ok(ExitCode::FAILURE)
    }
}

fn test(options: offline::Options) -> anyhow::Result<ExitCode> {
    let report = offline::run(&options)?;
    let mut code = ExitCode::SUCCESS;
    match &options.expect {
        None => {
            for effect in &report.effects {
                println!("{}", serde_json::to_string(effect)?);
            }
        }
        Some(path) if options.update => {
            println!(
                "wrote {} effects to {}",
                report.effects.len(),
                path.display()
            );
        }
        Some(path) if report.differences.is_empty() => {
            println!(
                "{}: all {} effects match",
                path.display(),
                report.effects.len()
            );
        }
        Some(path) => {
            for difference in &report.differences {
                println!("{difference}");
            }
            println!(
                "{}: {} differences; to accept what the plugin does now, run again with --update",
                path.display(),
                report.differences.len()
            );
            code = ExitCode::FAILURE;
        }
    }
    eprintln!("{}", report.summary);
    Ok(code)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
