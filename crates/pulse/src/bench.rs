//! `pulse bench`: throughput figures printed as ratios to a baseline measured in the same run.
//!
//! 1. The pure core: a `Partition` over simulated events and their timers in memory, as fold
//!    drives it (events/s on one core).
//! 2. Fold over a canonical log on a real Kafka-protocol broker vs a plain rdkafka consumer
//!    reading the same topic (the ceiling anything fed from Kafka can reach here).
//! 3. The cost of the delivery guarantees: fold over the same canonical log in four modes,
//!    each run in its own group and state dir: no guarantees (no fsync; alerts and changelog
//!    records produced fire-and-forget, never stored in sled, acks never awaited),
//!    effectively-once (the default), effectively-once without fsync (the outbox's own cost)
//!    and exactly-once (a Kafka transaction per commit round; needs a broker that stores
//!    transactional offsets: the mock cluster is refused, tansu works).
//! 4. The overhead of metrics: the runs above have no recorder installed (the `metrics` macros
//!    are no-ops); then the Prometheus recorder the service uses is installed (once per
//!    process, never removed: hence last) and effectively-once runs again.

use std::time::{Duration, Instant};

use anyhow::Context;
use pulse_codec::{encode_canonical, Canonical, Encoding, Source};
use pulse_core::{Event, Partition, ScoringConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, Guarantee};
use crate::fold::{FoldOptions, Shared};
use crate::kafka;
use crate::producer::Outstanding;
use crate::simulate::{SimConfig, Simulator};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Canonical events to fold (the mock cluster keeps ~5 MiB per partition: stay small).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Canonical-log partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Use this broker (e.g. tansu: README, "Test brokers") instead of the mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Rounds of the guarantee modes (each round in a rotated order); the figures are
    /// the medians, so one disturbed run on a shared machine does not decide a ratio.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Simulated, validated events (malformed records left out), in time order.
pub fn simulated_events(n: usize, customers: u32, max_record_bytes: usize) -> Vec<Event> {
    let sim = SimConfig {
        customers,
        malformed_per_mille: 0,
        ..SimConfig::default()
    };
    Simulator::new(sim)
        .filter_map(|r| r.decode(max_record_bytes).ok())
        .take(n)
        .collect()
}

/// What one pass of the pure core did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorePass {
    pub elapsed: Duration,
    pub timers: usize,
    pub alerts: usize,
}

/// The pure core over `events` (in time order) from empty states, as fold drives it, one
/// thread, no I/O: all customers in one [`Partition`], each event advancing the clock (firing
/// the timers it passes, in (due, customer) order at their due instants) and then applied at
/// the clock. The figure includes the partition's map and timer set, as fold's does.
pub fn core_pass(events: &[Event], cfg: &ScoringConfig) -> CorePass {
    let mut partition = Partition::new();
    let (mut fired, mut alerts) = (0, 0);
    let started = Instant::now();
    for e in events {
        partition.advance(e.occurred_at, cfg, |_, _, _, a| {
            fired += 1;
            alerts += a.len();
        });
        alerts += partition.apply(e, cfg).len();
    }
    CorePass {
        elapsed: started.elapsed(),
        timers: fired,
        alerts,
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    eprintln!("bench: simulating {} events", args.events);
    let limit = Config::with_overrides("")?.ingest.max_record_bytes;
    let events = simulated_events(args.events, (args.events / 50).max(100) as u32, limit);
    let pass = core_pass(&events, &ScoringConfig::default());
    let core = events.len() as f64 / pass.elapsed.as_secs_f64();
    println!(
        "core: {:.0} events/s (one Partition over {} events and the {} timers they set, one \
         thread, in memory)",
        core,
        events.len(),
        pass.timers
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
    // Each mode its own changelog: a fresh state dir restores from its changelog, and one
    // mode must not start from another's state.
    let rounds = args.rounds.max(1);
    for round in 0..rounds {
        for name in MODES.map(Mode::name).into_iter().chain(["metrics"]) {
            let topic = format!("bench-{run}-{round}-{name}.changelog");
            match &mock {
                Some(m) => m.create_topic(&topic, args.partitions, 1)?,
                None => kafka::create_topic(&config, &topic, args.partitions).await?,
            }
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

    config.fold.commit_max_events = 10_000;
    let mut samples: [Vec<f64>; MODES.len()] = Default::default();
    let mut eos_refused = false;
    for round in 0..rounds {
        for i in 0..MODES.len() {
            let m = (i + round) % MODES.len();
            let mode = MODES[m];
            if mode == Mode::ExactlyOnce && eos_refused {
                continue;
            }
            let name = format!("bench-{run}-{round}-{}", mode.name());
            let mut c = config.clone();
            c.kafka.group_id = name.clone();
            c.topics.changelog = format!("{name}.changelog");
            c.fold.state_dir = tmp.path().join(&name);
            c.fold.fsync = !matches!(mode, Mode::None | Mode::EffectivelyOnceNoFsync);
            if mode == Mode::ExactlyOnce {
                c.fold.guarantee = Guarantee::ExactlyOnce;
                c.fold.instance_id = "bench".into();
            }
            match fold_rate(c, mode, n, total).await {
                Ok(rate) => {
                    eprintln!("bench: round {round}, {}: {rate:.0} events/s", mode.name());
                    samples[m].push(rate);
                }
                Err(e) if mode == Mode::ExactlyOnce => {
                    println!("fold, exactly-once: not measured ({e:#})");
                    eos_refused = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let _handle = crate::telemetry::prometheus();
    let mut with_metrics = Vec::new();
    for round in 0..rounds {
        let name = format!("bench-{run}-{round}-metrics");
        let mut c = config.clone();
        c.kafka.group_id = name.clone();
        c.topics.changelog = format!("{name}.changelog");
        c.fold.state_dir = tmp.path().join(&name);
        let rate = fold_rate(c, Mode::EffectivelyOnce, n, total).await?;
        eprintln!("bench: round {round}, effectively-once with the recorder: {rate:.0} events/s");
        with_metrics.push(rate);
    }
    let with_metrics = median(&mut with_metrics);
    let rates: Vec<f64> = samples
        .iter_mut()
        .filter(|v| !v.is_empty())
        .map(|v| median(v))
        .collect();
    for (mode, rate) in MODES.iter().zip(&rates) {
        println!(
            "fold, {}: {rate:.0} events/s, median of {rounds} ({})",
            mode.name(),
            mode.what()
        );
    }
    println!(
        "fold, effectively-once with the Prometheus recorder: {with_metrics:.0} events/s, median of {rounds}"
    );
    let none = rates[0];
    println!("ratio fold/baseline: {:.3}", rates[1] / baseline);
    println!("ratio core/baseline: {:.1}", core / baseline);
    println!(
        "ratio effectively-once/no-guarantees: {:.3}; without fsync: {:.3} (the outbox alone)",
        rates[1] / none,
        rates[2] / none
    );
    println!(
        "ratio with/without the metrics recorder (effectively-once): {:.3}",
        with_metrics / rates[1]
    );
    if let Some(eos) = rates.get(3) {
        println!(
            "ratio exactly-once/no-guarantees: {:.3}, exactly-once/effectively-once: {:.3}",
            eos / none,
            eos / rates[1]
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const MODES: [Mode; 4] = [
    Mode::None,
    Mode::EffectivelyOnce,
    Mode::EffectivelyOnceNoFsync,
    Mode::ExactlyOnce,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    EffectivelyOnce,
    /// The outbox's cost without fsync's: `fold.fsync = false`.
    EffectivelyOnceNoFsync,
    ExactlyOnce,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::None => "no-guarantees",
            Mode::EffectivelyOnce => "effectively-once",
            Mode::EffectivelyOnceNoFsync => "effectively-once-no-fsync",
            Mode::ExactlyOnce => "exactly-once",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Mode::None => "state + offsets in sled without fsync; alerts and changelog produced fire-and-forget",
            Mode::EffectivelyOnce => "state + offsets + outbox in one fsynced sled write; outbox drained, acks awaited",
            Mode::EffectivelyOnceNoFsync => "as effectively-once with fold.fsync = false",
            Mode::ExactlyOnce => "as effectively-once, the outbox and offsets in one Kafka transaction per commit",
        }
    }
}

/// Fold's events/s over the canonical log: from the moment its partitions are assigned until
/// every partition has committed the end of the log to sled.
async fn fold_rate(config: Config, mode: Mode, n: i32, total: i64) -> anyhow::Result<f64> {
    let shared = Arc::new(Shared::default());
    let (stop, shutdown) = watch::channel(false);
    let options = FoldOptions {
        unguarded: mode == Mode::None,
        ..FoldOptions::default()
    };
    let mut task = tokio::spawn(crate::fold::run(
        Arc::new(config),
        shutdown,
        shared.clone(),
        options,
    ));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut started = None;
    loop {
        let (assigned, done) = {
            let parts = shared.partitions.read().expect("lock");
            let done: i64 = parts
                .values()
                .map(|(s, _)| s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset))
                .sum();
            (parts.len(), done)
        };
        if started.is_none() && assigned >= n as usize {
            started = Some(Instant::now());
        }
        if done >= total {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "fold reached {done} of {total}");
        tokio::select! {
            r = &mut task => {
                r??;
                anyhow::bail!("fold stopped at {done} of {total}");
            }
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    }
    let secs = started
        .context("fold was never assigned its partitions")?
        .elapsed()
        .as_secs_f64();
    let _ = stop.send(true);
    task.await??;
    Ok(total as f64 / secs)
}
