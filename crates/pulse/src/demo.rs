//! `pulse run`'s lifecycle, `pulse demo` (the whole pipeline on librdkafka's in-process mock
//! cluster, fed by the simulator at an accelerated clock) and `pulse simulate`.
//!
//! The demo's output is a chosen stream: stdout carries only alerts (one readable line each,
//! a churn warning merged with the stage change it comes with, at most `--lines-per-second`;
//! or with `--json` every alert of the shown kinds as a JSON line), stderr everything else —
//! a live status line when it is a terminal, a progress line every 10 s otherwise, and the
//! summary, which says how many alerts were not printed and why.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{IsTerminal, Write};
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
use crate::tail::{alert_line, Kind};
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
    /// Print each alert of the shown kinds as one JSON line on stdout (no line limit); all
    /// else goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Alert kinds to print (comma-separated); the others are counted, not printed.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Churn, Kind::Lifecycle])]
    pub show: Vec<Kind>,
    /// At most this many alert lines per second (readable output only; 0: no limit). The rest
    /// are counted, not printed.
    #[arg(long, default_value_t = 5.0)]
    pub lines_per_second: f64,
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
    eprintln!(
        "demo: {} customers, {} simulated days at {} days/s, broker {} (in-process), http://{}",
        args.customers,
        args.days,
        args.days_per_second,
        mock.bootstrap_servers(),
        running.http_addr
    );

    let fed = Arc::new(AtomicU64::new(0));
    let view = Arc::new(Mutex::new(View::new(
        &args,
        std::io::stderr().is_terminal(),
    )));
    let viewer = tokio::spawn(view_alerts(
        config.clone(),
        view.clone(),
        Progress {
            fold: running.shared.clone(),
            fed: fed.clone(),
        },
    ));
    let sim = SimConfig {
        customers: args.customers,
        seed: args.seed,
        duration_ms: i64::from(args.days) * pulse_core::DAY,
        ..SimConfig::default()
    };
    let feeder = tokio::spawn(feed(config.clone(), sim, args.days_per_second, fed));
    let stop_feeder = feeder.abort_handle();
    let shared = running.shared.clone();
    let finished = async {
        let n = feeder.await??;
        view.lock().expect("lock").note(&format!(
            "demo: simulation finished ({n} records); letting fold catch up"
        ));
        // Fold lags the feeder by as much as the machine is busy: it has caught up once the
        // partition clocks (watermark ticks stop at the last event time) and the alerts read
        // back have not moved for two seconds.
        let since = Instant::now();
        let mut last = (None, 0);
        let mut still = Instant::now();
        while still.elapsed() < Duration::from_secs(2) && since.elapsed() < Duration::from_secs(120)
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = (
                fold_clock(&shared),
                view.lock().expect("lock").alerts.values().sum::<u64>(),
            );
            if now != last {
                last = now;
                still = Instant::now();
            }
        }
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
        r = finished => r?,
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
    let mut view = view.lock().expect("lock");
    view.flush_all();
    view.clear_status();
    eprintln!("summary: customers per stage {}", fmt_counts(&stages));
    eprintln!("summary: alerts per type {}", fmt_counts(&view.alerts));
    eprintln!("summary: {}", view.printed_summary());
    eprintln!(
        "summary: dead letters per reason {}",
        fmt_counts(&view.dead_letters)
    );
    drop(mock);
    Ok(())
}

/// Produces the simulator's records, paced so `days_per_second` simulated days pass per second.
/// `fed` counts the records produced (the demo's events/s).
async fn feed(
    config: Config,
    sim: SimConfig,
    days_per_second: f64,
    fed: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
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
        fed.store(n, Ordering::Relaxed);
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

/// What the status line reads: fold's shared state (clocks, customers per stage) and the
/// feeder's count.
struct Progress {
    fold: Arc<crate::fold::Shared>,
    fed: Arc<AtomicU64>,
}

/// How long an alert waits for its partner (a churn warning for its stage change or the
/// reverse): the two leave in the same commit but on different topics, so either may arrive
/// first. Long enough for the same batch on the in-process broker, short enough to read live.
const MERGE_WAIT: Duration = Duration::from_millis(500);

/// Dead letters printed one by one; the rest are counted (status line and summary).
const DEAD_LETTERS_SHOWN: u64 = 3;

/// An alert waiting to be printed, in arrival order.
struct Queued {
    alert: pulse_codec::wire::Alert,
    kind: Kind,
    /// For a churn warning or stage change: its partner arrived and is merged into this line.
    merged: bool,
    since: Instant,
}

/// The demo's output: which alerts are printed, how they are merged and limited, what was
/// left out and why, and the status line.
struct View {
    json: bool,
    show: BTreeSet<Kind>,
    /// A churn warning and its stage change become one line (readable output, both shown).
    merge: bool,
    lines_per_second: f64,
    tokens: f64,
    refilled: Instant,
    status_line: bool,
    status_drawn: bool,
    queue: VecDeque<Queued>,
    alerts: BTreeMap<String, u64>,
    dead_letters: BTreeMap<String, u64>,
    dead_letters_printed: u64,
    printed: u64,
    not_shown: BTreeMap<Kind, u64>,
    /// Alerts not printed for `--lines-per-second`, per kind (a churn warning merged with its
    /// stage change counts once for each).
    over_limit: BTreeMap<Kind, u64>,
    /// Printed lines that are a churn warning merged with its stage change.
    printed_merged: u64,
    /// (when, records fed then) at the last events/s sample, and the rate it gave.
    rate_sample: (Instant, u64),
    events_per_second: f64,
    last_progress: Instant,
    /// The simulated date and customers per stage last shown.
    date: String,
    stages: String,
}

impl View {
    fn new(args: &DemoArgs, status_line: bool) -> View {
        let show: BTreeSet<Kind> = args.show.iter().copied().collect();
        let now = Instant::now();
        View {
            json: args.json,
            merge: !args.json && show.contains(&Kind::Churn) && show.contains(&Kind::Lifecycle),
            show,
            lines_per_second: if args.json {
                0.0
            } else {
                args.lines_per_second
            },
            tokens: args.lines_per_second.max(1.0),
            refilled: now,
            status_line,
            status_drawn: false,
            queue: VecDeque::new(),
            alerts: BTreeMap::new(),
            dead_letters: BTreeMap::new(),
            dead_letters_printed: 0,
            printed: 0,
            not_shown: BTreeMap::new(),
            over_limit: BTreeMap::new(),
            printed_merged: 0,
            rate_sample: (now, 0),
            events_per_second: 0.0,
            last_progress: now,
            date: "----------".into(),
            stages: String::new(),
        }
    }

    /// An alert read from an alert topic.
    fn alert(&mut self, alert: pulse_codec::wire::Alert) {
        *self.alerts.entry(alert.r#type.clone()).or_insert(0) += 1;
        let Some(kind) = Kind::of(&alert.r#type) else {
            return;
        };
        if !self.show.contains(&kind) {
            *self.not_shown.entry(kind).or_insert(0) += 1;
            return;
        }
        if self.merge && matches!(kind, Kind::Churn | Kind::Lifecycle) {
            // The engine emits a churn warning only together with the stage change it names:
            // same customer, instant, from and to.
            let partner = self.queue.iter_mut().find(|q| {
                !q.merged
                    && q.kind != kind
                    && matches!(q.kind, Kind::Churn | Kind::Lifecycle)
                    && q.alert.customer_id == alert.customer_id
                    && q.alert.occurred_at == alert.occurred_at
                    && q.alert.from == alert.from
                    && q.alert.to == alert.to
            });
            if let Some(q) = partner {
                q.merged = true;
                if kind == Kind::Churn {
                    q.kind = Kind::Churn;
                    q.alert = alert;
                }
                self.drain(false);
                return;
            }
        }
        self.queue.push_back(Queued {
            alert,
            kind,
            merged: false,
            since: Instant::now(),
        });
        self.drain(false);
    }

    /// Prints queued alerts from the front while they are complete: merged, not waiting for a
    /// partner, or waited long enough (`all`: everything, at the end).
    fn drain(&mut self, all: bool) {
        while let Some(front) = self.queue.front() {
            let waits = self.merge
                && !front.merged
                && matches!(front.kind, Kind::Churn | Kind::Lifecycle)
                && front.since.elapsed() < MERGE_WAIT;
            if waits && !all {
                break;
            }
            let q = self.queue.pop_front().expect("front");
            self.print(&q);
        }
    }

    fn flush_all(&mut self) {
        self.drain(true);
    }

    fn print(&mut self, q: &Queued) {
        if self.json {
            let json = serde_json::to_string(&q.alert).expect("wire types always serialize");
            self.out(&json);
            self.printed += 1;
            return;
        }
        if self.lines_per_second > 0.0 {
            let now = Instant::now();
            let burst = self.lines_per_second.max(1.0);
            self.tokens = (self.tokens
                + now.duration_since(self.refilled).as_secs_f64() * self.lines_per_second)
                .min(burst);
            self.refilled = now;
            // Churn warnings first: another kind takes a line only while half the second's
            // budget is left, so a burst of routine changes cannot crowd the warnings out.
            let reserve = if q.kind == Kind::Churn {
                0.0
            } else {
                burst / 2.0
            };
            if self.tokens < 1.0 + reserve {
                *self.over_limit.entry(q.kind).or_insert(0) += 1;
                if q.merged {
                    *self.over_limit.entry(Kind::Lifecycle).or_insert(0) += 1;
                }
                return;
            }
            self.tokens -= 1.0;
        }
        let line = alert_line(&q.alert, q.kind.label(), 1, true);
        self.out(&line);
        self.printed += 1;
        self.printed_merged += u64::from(q.merged);
    }

    /// One line on stdout, under the status line.
    fn out(&mut self, line: &str) {
        self.clear_status();
        let mut out = std::io::stdout().lock();
        // A closed stdout (`pulse demo | head`) stops the output, not the demo.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    /// One line on stderr, under the status line.
    fn note(&mut self, line: &str) {
        self.clear_status();
        eprintln!("{line}");
    }

    fn dead_letter(&mut self, reason: &str, from: &str) {
        let class = reason.split(':').next().unwrap_or(reason).to_string();
        *self.dead_letters.entry(class).or_insert(0) += 1;
        if !self.json && self.dead_letters_printed < DEAD_LETTERS_SHOWN {
            self.dead_letters_printed += 1;
            let more = if self.dead_letters_printed == DEAD_LETTERS_SHOWN {
                " (further dead letters are counted in the summary)"
            } else {
                ""
            };
            self.note(&format!("dead letter: {reason} (from {from}){more}"));
        }
    }

    fn clear_status(&mut self) {
        if self.status_drawn {
            eprint!("\r\x1b[2K");
            self.status_drawn = false;
        }
    }

    /// Redraws the status line (a terminal) or, every 10 s, prints a progress line.
    fn tick(&mut self, progress: &Progress) {
        self.drain(false);
        let now = Instant::now();
        let (at, n) = self.rate_sample;
        if now.duration_since(at) >= Duration::from_secs(1) {
            let fed = progress.fed.load(Ordering::Relaxed);
            self.events_per_second =
                (fed - n) as f64 / now.duration_since(at).as_secs_f64().max(1e-3);
            self.rate_sample = (now, fed);
        }
        if self.status_line {
            let line = self.status(progress);
            let width = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(80)
                .saturating_sub(1);
            let shown: String = if line.chars().count() > width {
                line.chars()
                    .take(width.saturating_sub(1))
                    .chain(['…'])
                    .collect()
            } else {
                line
            };
            eprint!("\r\x1b[2K{shown}");
            let _ = std::io::stderr().flush();
            self.status_drawn = true;
        } else if now.duration_since(self.last_progress) >= Duration::from_secs(10) {
            self.last_progress = now;
            let line = format!("demo: {}", self.status(progress));
            self.note(&line);
        }
    }

    /// Simulated date (the earliest partition clock fold has committed), events/s fed,
    /// customers per stage, alerts so far.
    fn status(&mut self, progress: &Progress) -> String {
        // While fold stops, its partitions are released: keep the last date and counts seen.
        if let Some(c) = fold_clock(&progress.fold) {
            self.date = pulse_codec::time::format_rfc3339(c)[..10].to_string();
        }
        let mut stages: BTreeMap<&str, i64> = BTreeMap::new();
        for counts in progress.fold.counts.read().expect("lock").values() {
            for (stage, n) in counts.stages() {
                *stages.entry(stage).or_insert(0) += n;
            }
        }
        let stages: Vec<String> = pulse_core::Stage::ALL
            .iter()
            .filter_map(|s| {
                let n = stages.get(s.as_str()).copied().unwrap_or(0);
                (n > 0).then(|| format!("{} {n}", s.as_str()))
            })
            .collect();
        if !stages.is_empty() {
            self.stages = stages.join(" ");
        }
        format!(
            "{}  {:.0} events/s  alerts {} ({} printed)  {}",
            self.date,
            self.events_per_second,
            self.alerts.values().sum::<u64>(),
            self.printed,
            self.stages
        )
    }

    /// How many alerts were printed and how many were not, and why.
    fn printed_summary(&self) -> String {
        let what = if self.json {
            "alert JSON lines"
        } else {
            "alert lines"
        };
        let mut s = format!("printed {} {what}", self.printed);
        if self.printed_merged > 0 {
            s.push_str(&format!(
                " for {} alerts ({} lines a churn warning with its stage change)",
                self.printed + self.printed_merged,
                self.printed_merged
            ));
        }
        let mut not = Vec::new();
        for (kind, n) in &self.not_shown {
            not.push(format!("{n} {}s (not in --show)", kind.label()));
        }
        if !self.over_limit.is_empty() {
            let kinds: Vec<String> = self
                .over_limit
                .iter()
                .map(|(kind, n)| format!("{n} {}s", kind.label()))
                .collect();
            not.push(format!(
                "{} over {} lines/s (--lines-per-second; churn warnings first, each with its \
                 stage change)",
                kinds.join(" and "),
                self.lines_per_second
            ));
        }
        if !not.is_empty() {
            s.push_str("; not printed: ");
            s.push_str(&not.join(", "));
        }
        s
    }
}

/// The earliest committed clock of the partitions fold holds (none before the first commit).
fn fold_clock(shared: &crate::fold::Shared) -> Option<i64> {
    shared
        .partitions
        .read()
        .expect("lock")
        .values()
        .map(|(_, c)| c.load(Ordering::Relaxed))
        .filter(|c| *c > 0)
        .min()
}

/// Reads the alert topics and dead letters into the view, and ticks its status.
async fn view_alerts(
    config: Config,
    view: Arc<Mutex<View>>,
    progress: Progress,
) -> anyhow::Result<()> {
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
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let msg = tokio::select! {
            m = consumer.recv() => m?,
            _ = tick.tick() => {
                view.lock().expect("lock").tick(&progress);
                continue;
            }
        };
        let payload = msg.payload().unwrap_or_default();
        let mut view = view.lock().expect("lock");
        if msg.topic() == config.topics.dead_letters {
            let reason =
                kafka::header(msg.headers(), pulse_codec::headers::DLQ_REASON).unwrap_or("?");
            let from = kafka::header(msg.headers(), pulse_codec::headers::DLQ_TOPIC).unwrap_or("?");
            view.dead_letter(reason, from);
            continue;
        }
        if let Ok(alert) = pulse_codec::decode_alert(payload, config.encoding.alerts) {
            view.alert(alert);
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
            let n = feed(config, sim, f64::INFINITY, Arc::default()).await?;
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
