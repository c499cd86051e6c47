//! The `pulse` binary: parses the command line and hands over to the library. Exit codes:
//! 0 ok, 2 bad usage or configuration (the message names the key), 1 runtime failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pulse::config::{Config, ConfigError};

#[derive(Parser)]
#[command(
    name = "pulse",
    version,
    about = "Timely, explainable customer signals from Kafka"
)]
struct Cli {
    /// HTTP address for /metrics, /healthz, /readyz and /v1 (port 0 picks one). Default: the
    /// config's `http.addr` (127.0.0.1:9464).
    #[arg(long, global = true)]
    http_addr: Option<SocketAddr>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Only {
    Ingest,
    Fold,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against a Kafka cluster.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run only one pipeline (default: both).
        #[arg(long, value_enum)]
        only: Option<Only>,
        /// Stop cleanly after this long (e.g. 90s, 5m) and print a summary.
        #[arg(long = "for", value_parser = pulse::demo::parse_duration)]
        run_for: Option<Duration>,
    },
    /// Create pulse's topics, or check an existing cluster's (partition counts, compaction,
    /// retention), naming each problem and its fix.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Run the whole pipeline on an in-process Kafka-protocol broker with simulated customers.
    Demo(pulse::demo::DemoArgs),
    /// Write simulated customer events to a Kafka cluster or an NDJSON file.
    Simulate(pulse::demo::SimulateArgs),
    /// Rebuild state from the canonical log, or a range of it, into a fresh directory (and try
    /// new rules on history).
    Replay(pulse::replay::ReplayArgs),
    /// Measure fold throughput against a plain consumer reading the same topic.
    Bench(pulse::bench::BenchArgs),
    /// Fit the rules to a history and write them as a `[scoring]` TOML fragment.
    Fit(pulse::fit::FitArgs),
    /// Score what pulse said at a split against what happened after it (in memory).
    Backtest(pulse::backtest::BacktestArgs),
    /// Replay the same input with the live and a candidate `[scoring]` and show the difference.
    Whatif(pulse::whatif::WhatIfArgs),
    /// Print pulse's alerts (read_committed) as readable lines or JSON lines.
    Tail(pulse::tail::TailArgs),
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create every missing topic the config names (existing ones are left as they are), then
    /// check them all. Exit 1 if a problem remains.
    Create {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Partitions of each new topic (the changelog gets the canonical log's count). The
        /// canonical log's count is fixed for life: customers are placed by murmur2(id) % count.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        /// Replicas of each new topic; -1 takes the broker's default.replication.factor.
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
    },
    /// Check the topics of an existing cluster. Exit 1 if any problem is found (with --strict,
    /// also if the broker could not answer a question).
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Treat "cannot verify" (a broker without DescribeConfigs) as a failure.
        #[arg(long)]
        strict: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's stderr is its status line and summary: service logs only when they matter.
    let default_filter = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info,rdkafka=warn"
    };
    init_logging(cli.log_format, default_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                config,
                only,
                run_for,
            } => {
                let mut config = match Config::load(config.as_deref()) {
                    Ok(c) => c,
                    Err(e) => return Err(config_error(e)),
                };
                if let Some(addr) = cli.http_addr {
                    config.http.addr = addr;
                }
                match only {
                    Some(Only::Ingest) => config.fold.enabled = false,
                    Some(Only::Fold) => config.ingest.enabled = false,
                    None => {}
                }
                // The first contact with the cluster: an unreachable one is reported here,
                // once, within seconds; a missing or misconfigured topic stops the start,
                // named with its fix, before any pipeline runs.
                if let Err(e) = pulse::topics::preflight(&config).await {
                    return Err(runtime_error(e.into()));
                }
                pulse::demo::run_service(config, run_for)
                    .await
                    .map_err(runtime_error)
            }
            Command::Demo(args) => pulse::demo::demo(args, cli.http_addr)
                .await
                .map_err(runtime_error),
            Command::Topics { action } => topics(action).await,
            Command::Simulate(args) => pulse::demo::simulate(args).await.map_err(usage_or_runtime),
            Command::Replay(args) => match pulse::replay::replay(args).await {
                Ok(_) => Ok(()),
                Err(e) if e.is::<pulse::replay::UsageError>() => {
                    eprintln!("error: {e}");
                    Err(ExitCode::from(2))
                }
                Err(e) => Err(runtime_error(e)),
            },
            Command::Bench(args) => pulse::bench::bench(args).await.map_err(runtime_error),
            Command::Fit(args) => pulse::fit::fit(args)
                .await
                .map(|_| ())
                .map_err(usage_or_runtime),
            Command::Backtest(args) => pulse::backtest::backtest(args)
                .await
                .map(|_| ())
                .map_err(usage_or_runtime),
            Command::Whatif(args) => pulse::whatif::whatif(args)
                .await
                .map(|_| ())
                .map_err(usage_or_runtime),
            Command::Tail(args) => tokio::task::spawn_blocking(move || {
                pulse::tail::tail(&args, &mut std::io::stdout().lock())
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r)
            .map(|_| ())
            .map_err(|e| match e.downcast::<ConfigError>() {
                Ok(e) => config_error(e),
                Err(e) => runtime_error(e),
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn topics(action: TopicsAction) -> Result<(), ExitCode> {
    let (path, create, strict) = match &action {
        TopicsAction::Create {
            config,
            partitions,
            replication_factor,
        } => (config, Some((*partitions, *replication_factor)), false),
        TopicsAction::Check { config, strict } => (config, None, *strict),
    };
    let config = Config::load(path.as_deref()).map_err(config_error)?;
    let report = match create {
        Some((partitions, replication)) => {
            let (created, report) = pulse::topics::create(&config, partitions, replication)
                .await
                .map_err(|e| runtime_error(e.into()))?;
            for name in created {
                println!("created {name}");
            }
            report
        }
        None => pulse::topics::check(&config)
            .await
            .map_err(|e| runtime_error(e.into()))?,
    };
    print!("{}", report.render());
    let failed = report.problems().count() > 0 || (strict && report.unverified().count() > 0);
    if failed {
        Err(ExitCode::from(1))
    } else {
        Ok(())
    }
}

fn config_error(e: ConfigError) -> ExitCode {
    eprintln!("error: {}", pulse::error_chain(&e));
    ExitCode::from(2)
}

/// Exit 2 for a [`pulse::replay::UsageError`] or a [`ConfigError`] (a bad flag or config), 1
/// for anything else.
fn usage_or_runtime(e: anyhow::Error) -> ExitCode {
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        eprintln!("error: {}", pulse::error_chain(c));
        ExitCode::from(2)
    } else if e.is::<pulse::replay::UsageError>() {
        eprintln!("error: {e}");
        ExitCode::from(2)
    } else {
        runtime_error(e)
    }
}

fn runtime_error(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(1)
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
