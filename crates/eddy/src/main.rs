//! The `eddy` command: parses arguments, sets up logging, calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eddy::{Config, check, http, offline, replay, scaffold};
use eddy_sandbox::Runtime;

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
    /// Run events again: a range of a topic, or dead letters, into a
    /// plugin or back onto a topic. Prints the plan; --execute carries it
    /// out.
    Replay(Box<ReplayArgs>),
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

#[derive(clap::Args)]
struct ReplayArgs {
    #[arg(long, default_value = "eddy.toml")]
    config: PathBuf,
    /// Replay records of this topic.
    #[arg(
        long,
        required_unless_present = "dead_letters",
        conflicts_with = "dead_letters"
    )]
    topic: Option<String>,
    /// Replay the dead letters in this topic.
    #[arg(long)]
    dead_letters: Option<String>,
    /// Start: an offset (1200), offsets per partition (0:1200,1:900) or
    /// an RFC 3339 time. Default: the oldest record.
    #[arg(long)]
    from: Option<String>,
    /// End, not included, as --from. Default: the newest record now.
    #[arg(long)]
    to: Option<String>,
    /// Start this long ago: 90s, 30m, 2h, 1d.
    #[arg(long)]
    since: Option<String>,
    /// Only events of this type (a glob with *).
    #[arg(long)]
    event_type: Option<String>,
    /// Only records with this key.
    #[arg(long)]
    key: Option<String>,
    /// Only dead letters of this reason (trap, reject, timeout, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only dead letters of this plugin.
    #[arg(long)]
    plugin: Option<String>,
    /// Run the events through this plugin; for dead letters without a
    /// name, the plugin each names.
    #[arg(long, num_args = 0..=1, default_missing_value = "", conflicts_with = "to_topic")]
    into_plugin: Option<String>,
    /// Republish the records to this topic; for dead letters without a
    /// name, the topic each came from.
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    to_topic: Option<String>,
    /// A header not to carry over with --to-topic (eddy-* never are).
    #[arg(long = "drop-header")]
    drop_headers: Vec<String>,
    /// The group that keeps the replay's progress (default: named for
    /// the arguments).
    #[arg(long)]
    group: Option<String>,
    /// At most this many events per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Carry the plan out; without it only the plan is printed.
    #[arg(long, conflicts_with = "dry_run")]
    execute: bool,
    /// Only print the plan (the default).
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `eddy test` prints effects on stdout; its stderr carries the
    // plugin's own log lines and what went wrong, not the host's chatter.
    init_logging(match cli.command {
        Command::Test { .. } | Command::Replay(_) => "warn,eddy::guest=info",
        _ => "info",
    });
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Check { config } => check(config),
        Command::Replay(args) => replay_options(*args).and_then(replay),
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
    runtime.block_on(eddy::run(config, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let config = Config::load(&path)?;
    let report = check::check(&config, &Runtime::new()?);
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

/// What `eddy replay`'s arguments ask for.
fn replay_options(args: ReplayArgs) -> anyhow::Result<replay::Options> {
    let named = |name: String| Some(name).filter(|n| !n.is_empty());
    let target = match (args.into_plugin, args.to_topic) {
        (Some(plugin), _) => replay::Target::Plugin(named(plugin)),
        (None, Some(topic)) => replay::Target::Topic(named(topic)),
        (None, None) => {
            anyhow::bail!("say where the events go: --into-plugin [NAME] or --to-topic [TOPIC]")
        }
    };
    let source = match (args.topic, args.dead_letters) {
        (Some(topic), _) => replay::Source::Topic(topic),
        (None, Some(dead_letters)) => replay::Source::DeadLetters(dead_letters),
        (None, None) => anyhow::bail!("say what to replay: --topic T or --dead-letters T.dlq"),
    };
    Ok(replay::Options {
        config: args.config,
        source,
        from: args.from,
        to: args.to,
        since: args.since,
        event_type: args.event_type,
        key: args.key,
        reason: args.reason,
        plugin: args.plugin,
        target,
        drop_headers: args.drop_headers,
        group: args.group,
        rate: args.rate,
        execute: args.execute,
    })
}

fn replay(options: replay::Options) -> anyhow::Result<ExitCode> {
    // SIGTERM or Ctrl-C: the replay ends after the record in hand, with its
    // progress committed.
    let stop = Arc::new(AtomicBool::new(false));
    let raised = stop.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(shutdown_signal());
        raised.store(true, Ordering::Relaxed);
    });
    replay::run(&options, stop)?;
    Ok(ExitCode::SUCCESS)
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
    // Colour for a person at a terminal only: not in a container's or a
    // service's captured log, nor when NO_COLOR is set.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
