//! The `eddy` command: parses arguments, sets up logging, calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eddy_host::{Config, http, plugins, runtime::Runtime, scaffold};

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
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::New { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(scaffold::default_sdk_path);
            scaffold::new_plugin(&dir, &name, &sdk).map(|root| {
                println!("created plugin crate {}", root.display());
                println!("  cd {} && cargo test", root.display());
                println!("  cargo build --target wasm32-wasip2 --release");
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
