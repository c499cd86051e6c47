//! `pulse run`'s lifecycle, `pulse demo` (the whole pipeline on librdkafka's in-process mock
//! cluster, fed by the simulator at an accelerated clock) and `pulse simulate`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::producer::Outstanding;
use crate::simulate::{SimConfig, SimTopic, Simulator};
use crate::{kafka, Running};

/// `90s`, `5m`, `1h`, `250ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Waits for SIGTERM, Ctrl-C, the optional deadline, or a pipeline failure.
async fn wait_for_stop(running: &mut Running, run_for: Option<Duration>) -> anyhow::Result<()> {
    let deadline = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = deadline => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = running.failed() => return r.context("pipeline failed"),
    }
    Ok(())
}

/// `pulse run`: start, wait for a stop signal or `--for`, stop cleanly, print a summary.
pub async fn run_service(config: Config, run_for: Option<Duration>) -> anyhow::Result<()> {
    let mut running = crate::start(config).await?;
    println!("http: http://{}", running.http_addr);
    wait_for_stop(&mut running, run_for).await?;
    let stages = stage_counts(&running);
    running.stop().await?;
    println!("summary: customers per stage {}", fmt_counts(&stages));
    Ok(())
}

/// Customers per announced stage in the partitions this instance holds (a scan: summary only).
fn stage_counts(running: &Running) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (store, _) in running.shared.partitions.read().expect("lock").values() {
        for (_, s) in store.customers().flatten() {
            *counts
                .entry(s.announced.stage.as_str().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

fn fmt_counts(c: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(" ")
    }
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Simulated customers.
    #[arg(long, default_value_t = 2000)]
    pub customers: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after this long (default: when the simulated year has been folded).
    #[arg(long = "for", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// Print each alert as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Simulated days per wall-clock second.
    #[arg(long, default_value_t = 7.0)]
    pub days_per_second: f64,
    /// Simulated days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Keep state here instead of a temporary directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Default)]
struct Seen {
    alerts: Mutex<BTreeMap<String, u64>>,
    dead_letters: Mutex<BTreeMap<String, u64>>,
    printed: AtomicU64,
}

pub const DEMO_PARTITIONS: i32 = 4;

/// Creates every topic of `config` on the mock cluster: the canonical log with
/// `canonical_partitions`, the others with `partitions`.
pub fn create_mock_topics(
    mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    config: &Config,
    partitions: i32,
    canonical_partitions: i32,
) -> anyhow::Result<()> {
    for (key, topic) in config.topics.named() {
        let n = if key == "topics.canonical" || key == "topics.changelog" {
            canonical_partitions
        } else {
            partitions
        };
        mock.create_topic(topic, n, 1)
            .with_context(|| format!("create topic {topic}"))?;
    }
    Ok(())
}

/// `pulse demo`.
pub async fn demo(args: DemoArgs, http_addr: Option<SocketAddr>) -> anyhow::Result<()> {
    let mock = MockCluster::new(1).context("start the in-process Kafka mock cluster")?;
    let tmp = tempfile::tempdir()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("state"));
    let mut config = Config::with_overrides(&format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"pulse-demo\"\n[fold]\nstate_dir = \"{}\"\ncommit_interval_ms = 200\nfsync = false\n",
        mock.bootstrap_servers(),
        state_dir.display()
    ))?;
    if let Some(addr) = http_addr {
        config.http.addr = addr;
    }
    create_mock_topics(&mock, &config, DEMO_PARTITIONS, DEMO_PARTITIONS)?;
    let mut running = crate::start(config.clone()).await?;
    println!("http: http://{}", running.http_addr);
    eprintln!(
        "demo: {} customers, {} simulated days at {} days/s, broker {} (in-process)",
        args.customers,
        args.days,
        args.days_per_second,
        mock.bootstrap_servers()
    );

    let seen = Arc::new(Seen::default());
    let viewer = tokio::spawn(view_alerts(config.clone(), seen.clone(), args.json));
    let sim = SimConfig {
        customers: args.customers,
        seed: args.seed,
        duration_ms: i64::from(args.days) * pulse_core::DAY,
        ..SimConfig::default()
    };
    let feeder = tokio::spawn(feed(config.clone(), sim, args.days_per_second));
    let stop_feeder = feeder.abort_handle();
    let fed = async {
        let n = feeder.await??;
        eprintln!("demo: simulation finished ({n} records); letting fold catch up");
        tokio::time::sleep(Duration::from_secs(5)).await;
        anyhow::Ok(())
    };
    let deadline = async {
        match args.run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = fed => r?,
        _ = deadline => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = running.failed() => return r.context("pipeline failed"),
    }
    let stages = stage_counts(&running);
    running.stop().await?;
    // Every client must be gone before the in-process broker is: a consumer closing against a
    // vanished coordinator waits for it.
    stop_feeder.abort();
    viewer.abort();
    let _ = viewer.await;
    println!("summary: customers per stage {}", fmt_counts(&stages));
    println!(
        "summary: alerts per type {}",
        fmt_counts(&seen.alerts.lock().expect("lock"))
    );
    println!(
        "summary: dead letters per reason {}",
        fmt_counts(&seen.dead_letters.lock().expect("lock"))
    );
    drop(mock);
    Ok(())
}

/// Produces the simulator's records, paced so `days_per_second` simulated days pass per second.
async fn feed(config: Config, sim: SimConfig, days_per_second: f64) -> anyhow::Result<u64> {
    let producer: FutureProducer = kafka::producer_config(&config).create()?;
    let start_sim = sim.start_ms;
    let started = Instant::now();
    let mut out = Outstanding::default();
    let mut n = 0u64;
    for rec in Simulator::new(sim) {
        let due = Duration::from_secs_f64(
            (rec.occurred_at - start_sim).max(0) as f64 / pulse_core::DAY as f64 / days_per_second,
        );
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            out.wait().await?;
            out = Outstanding::default();
            tokio::time::sleep(wait).await;
        }
        let topic = input_topic(&config, rec.topic);
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(&rec.value);
        if let Some(k) = rec.key.as_deref() {
            r = r.key(k);
        }
        out.send(&producer, r).await?;
        n += 1;
        if out.len() >= 10_000 {
            out.wait().await?;
            out = Outstanding::default();
        }
    }
    out.wait().await?;
    Ok(n)
}

pub fn input_topic(config: &Config, topic: SimTopic) -> &str {
    match topic {
        SimTopic::Orders => &config.topics.orders,
        SimTopic::Clickstream => &config.topics.clickstream,
        SimTopic::Support => &config.topics.support,
    }
}

/// Prints alerts (and dead letters) as they appear on the output topics.
async fn view_alerts(config: Config, seen: Arc<Seen>, json: bool) -> anyhow::Result<()> {
    let consumer: StreamConsumer = kafka::client_config(&config)
        .set("group.id", "pulse-demo-viewer")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    let t = &config.topics;
    consumer.subscribe(&[
        &t.churn_warnings,
        &t.segment_changes,
        &t.lifecycle_changes,
        &t.dead_letters,
    ])?;
    let stdout = std::io::stdout();
    loop {
        let msg = consumer.recv().await?;
        let payload = msg.payload().unwrap_or_default();
        if msg.topic() == config.topics.dead_letters {
            let reason = kafka::header(msg.headers(), crate::ingest::DLQ_REASON).unwrap_or("?");
            let class = reason.split(':').next().unwrap_or(reason).to_string();
            *seen
                .dead_letters
                .lock()
                .expect("lock")
                .entry(class)
                .or_insert(0) += 1;
            if !json {
                eprintln!(
                    "dead letter: {reason} (from {})",
                    kafka::header(msg.headers(), crate::ingest::DLQ_TOPIC).unwrap_or("?")
                );
            }
            continue;
        }
        let Ok(alert) = pulse_codec::decode_alert(payload, config.encoding.alerts) else {
            continue;
        };
        *seen
            .alerts
            .lock()
            .expect("lock")
            .entry(alert.r#type.clone())
            .or_insert(0) += 1;
        seen.printed.fetch_add(1, Ordering::Relaxed);
        let mut out = stdout.lock();
        if json {
            let _ = out.write_all(payload);
            let _ = out.write_all(b"\n");
        } else if alert.r#type != "segment_changed"
            || seen.printed.load(Ordering::Relaxed).is_multiple_of(20)
        {
            let why = alert
                .reasons
                .first()
                .map_or(String::new(), |r| r.text.clone());
            let _ = writeln!(
                out,
                "{} {:<24} {} {} -> {}  ({why})",
                &alert.occurred_at[..10],
                alert.r#type,
                alert.customer_id,
                alert.from,
                alert.to
            );
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["brokers", "ndjson"])))]
pub struct SimulateArgs {
    /// Kafka bootstrap servers to write to (topics from --config, or the defaults).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Write NDJSON lines `{"topic","key","value"}` to this file instead ("-" for stdout).
    #[arg(long)]
    pub ndjson: Option<PathBuf>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    pub customers: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Malformed records per thousand.
    #[arg(long, default_value_t = 2)]
    pub malformed_per_mille: u32,
}

/// `pulse simulate`: the simulator's records to a cluster (as fast as it takes them) or NDJSON.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    let sim = SimConfig {
        customers: args.customers,
        seed: args.seed,
        duration_ms: i64::from(args.days) * pulse_core::DAY,
        malformed_per_mille: args.malformed_per_mille,
        ..SimConfig::default()
    };
    match (&args.brokers, &args.ndjson) {
        (Some(brokers), _) => {
            config.kafka.bootstrap_servers = brokers.clone();
            // An unreachable cluster is reported once, within seconds, naming the address,
            // instead of by a producer retrying forever.
            let c = config.clone();
            tokio::task::spawn_blocking(move || crate::kafka::cluster_metadata(&c)).await??;
            let n = feed(config, sim, f64::INFINITY).await?;
            eprintln!("simulate: wrote {n} records");
        }
        (None, Some(path)) => {
            let mut out: Box<dyn Write> = if path.as_os_str() == "-" {
                Box::new(std::io::BufWriter::new(std::io::stdout()))
            } else {
                Box::new(std::io::BufWriter::new(std::fs::File::create(path)?))
            };
            for rec in Simulator::new(sim) {
                let line = serde_json::json!({
                    "topic": input_topic(&config, rec.topic),
                    "key": rec.key,
                    "value": String::from_utf8_lossy(&rec.value),
                });
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
        (None, None) => unreachable!("clap requires --brokers or --ndjson"),
    }
    Ok(())
}
