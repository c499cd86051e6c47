//! `pulse bench`: throughput figures printed as ratios to a baseline measured in the same run.
//!
//! 1. The pure core: `decide` over simulated events in memory (events/s on one core).
//! 2. Fold over a canonical log on a real Kafka-protocol broker vs a plain rdkafka consumer
//!    reading the same topic (the ceiling anything fed from Kafka can reach here).
//! 3. The overhead of metrics on fold: fold twice with no recorder installed, then with the
//!    Prometheus recorder (installed once per process, so it comes last).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pulse_codec::{decode_input, encode_canonical, Canonical, Encoding, Family, Source};
use pulse_core::{decide, CustomerState, Event, Input, ScoringConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::sync::watch;

use crate::config::Config;
use crate::producer::Outstanding;
use crate::simulate::{SimConfig, SimTopic, Simulator};
use crate::{fold, kafka};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Canonical events to fold (the mock cluster keeps ~5 MiB per partition: stay small).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Canonical-log partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Use this broker (e.g. a tansu started by scripts/tansu.sh) instead of the mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
}

/// Simulated, validated events (malformed records left out), in time order.
pub fn simulated_events(n: usize, customers: u32) -> Vec<Event> {
    let sim = SimConfig {
        customers,
        malformed_per_mille: 0,
        ..SimConfig::default()
    };
    Simulator::new(sim)
        .filter_map(|r| {
            let family = match r.topic {
                SimTopic::Orders => Family::Orders,
                SimTopic::Clickstream => Family::Clickstream,
                SimTopic::Support => Family::Support,
            };
            decode_input(family, Encoding::Json, &r.value, 1 << 20).ok()
        })
        .take(n)
        .collect()
}

/// Events per second of the pure core over `events`, one thread, no I/O.
pub fn core_events_per_second(events: &[Event]) -> f64 {
    let cfg = ScoringConfig::default();
    let mut states: HashMap<&str, CustomerState> = HashMap::new();
    let started = Instant::now();
    let mut alerts = 0usize;
    for e in events {
        let s = states.entry(e.customer_id.as_str()).or_default();
        alerts += decide(s, &e.customer_id, Input::Event(e), e.occurred_at, &cfg)
            .alerts
            .len();
    }
    let secs = started.elapsed().as_secs_f64();
    std::hint::black_box(alerts);
    events.len() as f64 / secs
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    eprintln!("bench: simulating {} events", args.events);
    let events = simulated_events(args.events, (args.events / 50).max(100) as u32);
    let core = core_events_per_second(&events);
    println!(
        "core: {:.0} events/s (decide over {} events, one thread, in memory)",
        core,
        events.len()
    );

    let mock = match &args.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1).context("start mock cluster")?),
    };
    let brokers = args
        .brokers
        .clone()
        .unwrap_or_else(|| mock.as_ref().expect("mock").bootstrap_servers());
    let tmp = tempfile::tempdir()?;
    let run = crate::wall_clock_ms();
    // The runs below use their own state dirs; this one is only a valid default.
    let mut config = Config::with_overrides(&format!(
        "[kafka]\nbootstrap_servers = \"{brokers}\"\ngroup_id = \"bench-{run}\"\n[topics]\ncanonical = \"bench-{run}.canonical\"\n\
         [ingest]\nenabled = false\n[fold]\nstate_dir = \"{}\"\nfsync = true\n[http]\naddr = \"127.0.0.1:0\"\n",
        tmp.path().display()
    ))?;
    match &mock {
        Some(m) => crate::demo::create_mock_topics(m, &config, 1, args.partitions)?,
        None => {
            // The canonical topic first: create_topics leaves existing topics as they are.
            kafka::create_topic(&config, &config.topics.canonical, args.partitions).await?;
            kafka::create_topic(&config, &config.topics.changelog, args.partitions).await?;
            kafka::create_topics(&config, 1).await?;
        }
    }
    let n = kafka::partition_count(&config, &config.topics.canonical)?;
    let producer: FutureProducer = kafka::producer_config(&config).create()?;
    let mut out = Outstanding::default();
    let mut bytes = 0usize;
    for (i, e) in events.iter().enumerate() {
        let src = Source {
            topic: "bench".into(),
            partition: 0,
            offset: i as i64,
        };
        let value = encode_canonical(&Canonical::Event(e.clone(), src), Encoding::Json);
        bytes += value.len();
        let p = kafka::partition_for(e.customer_id.as_bytes(), n);
        out.send(
            &producer,
            FutureRecord::to(&config.topics.canonical)
                .key(&e.customer_id)
                .partition(p)
                .payload(&value),
        )
        .await?;
    }
    out.wait().await?;
    let total = events.len() as i64;
    eprintln!(
        "bench: {} canonical records ({} bytes avg) on {n} partitions",
        total,
        bytes / events.len().max(1)
    );

    // Baseline: a bare consumer reading the same records.
    let consumer: BaseConsumer = kafka::client_config(&config)
        .set("group.id", format!("bench-{run}-baseline"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&config.topics.canonical])?;
    let mut seen = 0i64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < total && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            std::hint::black_box(m.payload());
            seen += 1;
        }
    }
    anyhow::ensure!(
        seen == total,
        "baseline consumer read {seen} of {total} records"
    );
    let baseline = total as f64 / first.expect("records").elapsed().as_secs_f64();
    drop(consumer);
    println!("baseline: {baseline:.0} records/s (rdkafka BaseConsumer, same topic)");

    // Fold, three times over the same log, each with a fresh state dir, group and changelog:
    // twice with no metrics recorder installed (the `metrics` macros are no-ops; two runs show
    // the run-to-run spread), then with the Prometheus recorder the service installs. The
    // global recorder can be installed once per process and never removed: hence this order.
    config.fold.commit_max_events = 10_000;
    let mut without = Vec::new();
    for label in ["norec1", "norec2"] {
        let rate = fold_events_per_second(&config, mock.as_ref(), label, n, total).await?;
        println!("fold without recorder ({label}): {rate:.0} events/s");
        without.push(rate);
    }
    let _handle = crate::telemetry::prometheus();
    let fold = fold_events_per_second(&config, mock.as_ref(), "prom", n, total).await?;
    println!("fold: {fold:.0} events/s (state + offsets + outbox committed to sled, fsync on, Prometheus recorder installed)");
    let mean = without.iter().sum::<f64>() / without.len() as f64;
    println!(
        "ratio fold with/without recorder: {:.3} (without: mean of {:.0} and {:.0})",
        fold / mean,
        without[0],
        without[1]
    );
    println!("ratio fold/baseline: {:.3}", fold / baseline);
    println!("ratio core/baseline: {:.1}", core / baseline);
    Ok(())
}

/// Events/s of one fold run over the canonical topic (`total` records on `n` partitions): from
/// the moment its partitions are assigned until every partition has committed the end of the
/// log. Fold runs alone (no HTTP server, no ingest), with its own state dir, consumer group and
/// changelog topic, so no run restores from or resumes after another.
async fn fold_events_per_second(
    config: &Config,
    mock: Option<&MockCluster<'_, rdkafka::producer::DefaultProducerContext>>,
    label: &str,
    n: i32,
    total: i64,
) -> anyhow::Result<f64> {
    let tmp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.fold.state_dir = tmp.path().to_path_buf();
    config.kafka.group_id = format!("{}-{label}", config.kafka.group_id);
    config.topics.changelog = format!("{}-{label}", config.topics.changelog);
    match mock {
        Some(m) => m
            .create_topic(&config.topics.changelog, n, 1)
            .context("create changelog topic")?,
        None => kafka::create_topic(&config, &config.topics.changelog, n).await?,
    }
    let shared = Arc::new(fold::Shared::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(fold::run(
        Arc::new(config),
        stopped,
        shared.clone(),
        fold::FoldOptions::default(),
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    while shared.partitions.read().expect("lock").len() < n as usize {
        anyhow::ensure!(
            Instant::now() < deadline && !task.is_finished(),
            "fold was never assigned its partitions"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    loop {
        let done: i64 = shared
            .partitions
            .read()
            .expect("lock")
            .values()
            .map(|(s, _)| s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset))
            .sum();
        if done >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline && !task.is_finished(),
            "fold reached {done} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    task.await??;
    Ok(rate)
}
