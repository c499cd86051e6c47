//! `pulse replay`: rebuilds fold's state from the canonical log into a fresh state directory,
//! with the configured (possibly new) scoring rules, and sends the alerts nowhere, to a file,
//! or — only when told to — to topics of the user's choice. `--verify` compares the replayed
//! alerts with the live alert topics, alert by alert, for the replayed range.
//!
//! A replay is fold itself, run with its own consumer group over a range of each canonical
//! partition, `[start, end)`:
//! - start: the beginning (default), `--from-offsets P:O,...` (unlisted partitions start at
//!   the beginning), or `--from-time T`: the first record whose time (an event's
//!   `occurred_at`, a tick's time) is ≥ T, i.e. where the partition clock reaches T. Later
//!   records with earlier times (late events) are inside the range, as they are in the log.
//!   A start after the beginning builds state from that point only: earlier history is absent
//!   (for trying rules on a window, not for reproducing the live state).
//! - end (exclusive): the high watermark when the replay starts (default), `--to-offsets`
//!   (unlisted partitions: the high watermark), or `--to-time T`: the first record whose time
//!   is ≥ T, so `--from-time A --to-time B` and `--from-time B` split the log without overlap.
//!
//! Event times are found by reading the records, never by the broker's `offsets_for_times`:
//! the canonical log's record timestamps are the time ingest produced each record (CreateTime
//! set by the client, or the broker's append time), not its event time, so a broker's answer
//! is about ingest time on every broker (and the mock answers -1, tansu its store time). The
//! scan only decodes each record's time, which costs far less than folding it.
//!
//! `--verify` needs a replay that starts at the beginning of every partition: after a later
//! start, every alert may differ (scores and announcements lack the earlier history, timers
//! of earlier customers are missing, and an alert's id includes its index among the alerts of
//! its cause), so there is nothing honest to compare; it is refused with exit code 2.
//! The live alert topics are never written unless named.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pulse_codec::headers as hdr;
use pulse_codec::Canonical;
use pulse_core::Millis;
use pulse_store::{Checkpoint, Commit, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use tokio::sync::watch;

use crate::config::Config;
use crate::fold::{self, AlertSink, FoldOptions};
use crate::kafka;

#[derive(clap::Args, Debug)]
#[command(after_long_help = RANGE_HELP)]
pub struct ReplayArgs {
    /// The configuration to replay with (a new `[scoring]` is how a rule change is tried on
    /// history).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to build the state; must not exist or be empty.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// `none` (default), `file:PATH` (NDJSON) or `topics:PREFIX` (alerts go to
    /// PREFIX.churn-warnings, PREFIX.segment-changes, PREFIX.lifecycle-changes, and erasure
    /// confirmations to PREFIX.erasures, which must exist).
    #[arg(long, default_value = "none")]
    pub alerts: String,
    /// Compare the replayed alerts with the live alert topics and fail on any difference
    /// (alerts caused inside the range). Only for a replay from the beginning of the log.
    #[arg(long)]
    pub verify: bool,
    /// The range of each canonical partition to replay.
    #[command(flatten)]
    pub range: ReplayRange,
}

/// Which part of each canonical partition to read: `[start, end)` from event times or offsets.
/// `pulse replay` and `pulse fit` take it alike (see [`RANGE_HELP`]).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplayRange {
    /// Start each partition at the first record whose event time is at or after this instant
    /// (RFC 3339 or epoch ms). Earlier history is absent from the rebuilt state.
    #[arg(long, value_parser = parse_time, conflicts_with = "from_offsets")]
    pub from_time: Option<Millis>,
    /// Start at these offsets, `PARTITION:OFFSET,...`; unlisted partitions start at the
    /// beginning. Earlier history is absent from the rebuilt state.
    #[arg(long, value_parser = parse_offsets)]
    pub from_offsets: Option<BTreeMap<i32, i64>>,
    /// End each partition before the first record whose event time is at or after this
    /// instant (RFC 3339 or epoch ms).
    #[arg(long, value_parser = parse_time, conflicts_with = "to_offsets")]
    pub to_time: Option<Millis>,
    /// End before these offsets (exclusive), `PARTITION:OFFSET,...`; unlisted partitions end
    /// at the end of the log when the replay starts.
    #[arg(long, value_parser = parse_offsets)]
    pub to_offsets: Option<BTreeMap<i32, i64>>,
}

pub const RANGE_HELP: &str = "\
Range: each canonical partition is replayed over [start, end).
  start: the beginning of the log, or --from-offsets, or --from-time T: the first record
         whose time (an event's occurred_at, a tick's time) is >= T, where the partition clock
         reaches T. Late records after it (with earlier times) are included, as in the log.
  end:   the end of the log when the replay starts, or --to-offsets (exclusive), or
         --to-time T: the first record whose time is >= T (excluded).
Event times are found by reading the records: the log's record timestamps are ingest's
produce time, so a broker's offsets-for-times lookup cannot answer an event-time question.
A start after the beginning builds state without the earlier history: for trying rules on a
window. --verify is refused then (exit 2): no alert after such a start is comparable to the
live ones. A replay from the beginning to --to-offsets/--to-time verifies against the live
alerts caused inside the range.";

impl Default for ReplayArgs {
    fn default() -> Self {
        ReplayArgs {
            config: None,
            state_dir: PathBuf::new(),
            alerts: "none".into(),
            verify: false,
            range: ReplayRange::default(),
        }
    }
}

/// A replay refused before it started because of how it was asked for (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

pub(crate) fn parse_time(s: &str) -> Result<Millis, String> {
    s.parse::<Millis>()
        .ok()
        .or_else(|| pulse_codec::time::parse_rfc3339(s))
        .ok_or_else(|| format!("{s:?} is neither RFC 3339 nor epoch milliseconds"))
}

fn parse_offsets(s: &str) -> Result<BTreeMap<i32, i64>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (p, o) = part
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not PARTITION:OFFSET"))?;
        let p: i32 = p
            .parse()
            .map_err(|_| format!("bad partition in {part:?}"))?;
        let o: i64 = o.parse().map_err(|_| format!("bad offset in {part:?}"))?;
        if p < 0 || o < 0 {
            return Err(format!("{part:?}: partition and offset must be >= 0"));
        }
        if out.insert(p, o).is_some() {
            return Err(format!("partition {p} named twice"));
        }
    }
    Ok(out)
}

/// What one partition's replay covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The log's first offset when the replay started.
    pub low: i64,
    /// First offset folded.
    pub start: i64,
    /// First offset not folded.
    pub end: i64,
}

/// The outcome of a replay: the range of every canonical partition.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub ranges: BTreeMap<i32, Range>,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<Summary> {
    let mut config = Config::load(args.config.as_deref())?;
    let live = config.clone();
    if args.state_dir.exists() && std::fs::read_dir(&args.state_dir)?.next().is_some() {
        return Err(usage(format!(
            "--state-dir {} is not empty: a replay builds state from scratch",
            args.state_dir.display()
        )));
    }
    config.ingest.enabled = false;
    config.fold.state_dir = args.state_dir.clone();
    config.fold.fsync = false; // a replay that dies is simply run again
    config.kafka.group_id = format!(
        "{}-replay-{}",
        config.kafka.group_id,
        crate::wall_clock_ms()
    );

    let tmp = tempfile::NamedTempFile::new()?;
    let (sink, file) = match args.alerts.split_once(':') {
        None if args.alerts == "none" && !args.verify => (AlertSink::Discard, None),
        None if args.alerts == "none" => (file_sink(tmp.path())?, Some(tmp.path().to_path_buf())),
        Some(("file", path)) => (file_sink(path.as_ref())?, Some(PathBuf::from(path))),
        Some(("topics", prefix)) if !args.verify => {
            let t = &mut config.topics;
            t.churn_warnings = format!("{prefix}.churn-warnings");
            t.segment_changes = format!("{prefix}.segment-changes");
            t.lifecycle_changes = format!("{prefix}.lifecycle-changes");
            // Erasure confirmations of a replay must not reach the live audit topic either.
            t.erasures = format!("{prefix}.erasures");
            if [&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes]
                .iter()
                .any(|n| {
                    [
                        &live.topics.churn_warnings,
                        &live.topics.segment_changes,
                        &live.topics.lifecycle_changes,
                    ]
                    .contains(n)
                })
            {
                return Err(usage(format!(
                    "--alerts topics:{prefix} would write to the live alert topics"
                )));
            }
            (AlertSink::Kafka, None)
        }
        _ => {
            return Err(usage(
                "--alerts must be none, file:PATH or topics:PREFIX (topics cannot be verified)",
            ))
        }
    };

    let ranges = {
        let (c, range) = (config.clone(), args.range.clone());
        tokio::task::spawn_blocking(move || resolve(&c, &range))
            .await
            .context("range task")??
    };
    if args.verify {
        let late: Vec<String> = ranges
            .iter()
            .filter(|(_, r)| r.start > r.low)
            .map(|(p, r)| {
                format!(
                    "partition {p} starts at {} (log starts at {})",
                    r.start, r.low
                )
            })
            .collect();
        if !late.is_empty() {
            return Err(usage(format!(
                "--verify needs a replay from the beginning of the log, but {}: without the \
                 earlier history no alert is comparable to the live ones. Drop --verify, or \
                 bound only the end (--to-offsets, --to-time)",
                late.join(", ")
            )));
        }
    }
    for (p, r) in &ranges {
        eprintln!("replay: partition {p}: offsets [{}, {})", r.start, r.end);
    }
    seed_starts(&config, &ranges)?;
    let ends: BTreeMap<i32, i64> = ranges.iter().map(|(p, r)| (*p, r.end)).collect();
    let total: i64 = ranges.values().map(|r| r.end - r.start).sum();
    eprintln!(
        "replay: {total} records in {} partitions of {}",
        ranges.len(),
        config.topics.canonical
    );
    let shared = Arc::new(fold::Shared::default());
    let (_stop, shutdown) = watch::channel(false);
    let options = FoldOptions {
        sink,
        stop_at: Some(ends.clone()),
        // A replay rebuilds from the canonical log alone and must not write the live changelog.
        without_changelog: true,
        ..FoldOptions::default()
    };
    let config = Arc::new(config);
    let mut run = tokio::spawn(fold::run(config.clone(), shutdown, shared.clone(), options));
    let started = Instant::now();
    let mut progress = Progress::new("replay", "records", total);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => {
                let done: i64 = shared.partitions.read().expect("lock").iter()
                    .map(|(p, (s, _))| {
                        let next = s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset);
                        ranges.get(p).map_or(0, |r| (next - r.start).clamp(0, r.end - r.start))
                    }).sum();
                progress.show(done, started.elapsed());
            }
        }
    };
    result.context("replay task")??;
    progress.show(total, started.elapsed());
    progress.finish();
    let partitions = shared.canonical_partitions.load(Ordering::Relaxed);
    eprintln!(
        "replay: done in {:.1}s ({partitions} partitions)",
        started.elapsed().as_secs_f64()
    );

    if args.verify {
        let file = file.expect("verify always writes a file");
        verify(&live, &file, &ends, &erased_customers(&args.state_dir)?)?;
    }
    Ok(Summary { ranges })
}

/// A progress bar on a terminal (redrawn in place), a line per call otherwise (logs): callers
/// show it about once a second.
pub(crate) struct Progress {
    /// The command, prefixed to each line.
    label: &'static str,
    /// What is counted (records, bytes).
    unit: &'static str,
    total: i64,
    tty: bool,
}

impl Progress {
    pub(crate) fn new(label: &'static str, unit: &'static str, total: i64) -> Self {
        Progress {
            label,
            unit,
            total,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(crate) fn show(&mut self, done: i64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 {
            format!("{:.0}s", (self.total - done).max(0) as f64 / rate)
        } else {
            "?".into()
        };
        let share = if self.total > 0 {
            done as f64 / self.total as f64
        } else {
            1.0
        };
        const WIDTH: usize = 30;
        let filled = ((share * WIDTH as f64) as usize).min(WIDTH);
        let (label, unit) = (self.label, self.unit);
        let line = format!(
            "{label}: [{}{}] {:>3.0}% {done}/{} {unit}, {rate:.0} {unit}/s, ETA {eta}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            share * 100.0,
            self.total
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    pub(crate) fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Each partition's `[start, end)`, from the watermarks now and the bounds asked for. Blocking
/// (it talks to the brokers and may read the log for event times).
pub fn resolve(config: &Config, range: &ReplayRange) -> anyhow::Result<BTreeMap<i32, Range>> {
    let ReplayRange {
        from_time,
        from_offsets,
        to_time,
        to_offsets,
    } = range.clone();
    let topic = &config.topics.canonical;
    let consumer: BaseConsumer = kafka::client_config(config).create()?;
    let n = kafka::partition_count(config, topic)?;
    let mut ranges = BTreeMap::new();
    for p in 0..n {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ranges.insert(
            p,
            Range {
                low,
                start: low,
                end: high,
            },
        );
    }
    let high: BTreeMap<i32, i64> = ranges.iter().map(|(p, r)| (*p, r.end)).collect();
    let mut set = |given: &BTreeMap<i32, i64>, flag: &str, start: bool| -> anyhow::Result<()> {
        for (p, o) in given {
            let Some(r) = ranges.get_mut(p) else {
                return Err(usage(format!(
                    "{flag}: {topic} has no partition {p} (it has {n})"
                )));
            };
            if *o < r.low {
                return Err(usage(format!(
                    "{flag}: offset {o} of partition {p} is before the log's start ({})",
                    r.low
                )));
            }
            if *o > high[p] {
                // Not refused: a broker's high watermark can be too low (measured on tansu
                // after a restart on S3 storage); fold waits for the records up to `o`.
                eprintln!(
                    "replay: warning: {flag}: offset {o} of partition {p} is past the high \
                     watermark the broker reports ({}); waiting for those records",
                    high[p]
                );
            }
            if start {
                r.start = *o;
            } else {
                r.end = *o;
            }
        }
        Ok(())
    };
    if let Some(given) = &from_offsets {
        set(given, "--from-offsets", true)?;
    }
    if let Some(given) = &to_offsets {
        set(given, "--to-offsets", false)?;
    }
    if from_time.is_some() || to_time.is_some() {
        let found = scan_times(config, &ranges, from_time, to_time)?;
        for (p, (from, to)) in found {
            let r = ranges.get_mut(&p).expect("scanned partitions exist");
            if from_time.is_some() {
                r.start = from;
            }
            if to_time.is_some() {
                r.end = to;
            }
        }
    }
    for (p, r) in &ranges {
        if r.start > r.end {
            return Err(usage(format!(
                "partition {p}: the start ({}) is after the end ({})",
                r.start, r.end
            )));
        }
    }
    Ok(ranges)
}

/// The time a canonical record moves its partition clock to; `None` for one fold cannot
/// decode (it moves nothing).
fn record_time(m: &rdkafka::message::BorrowedMessage<'_>, config: &Config) -> Option<Millis> {
    match kafka::decode_canonical_message(m, config).ok()? {
        Canonical::Event(e, _) => Some(e.occurred_at),
        Canonical::Tick { time, .. } => Some(time),
    }
}

/// Reads each partition of the canonical log over `[start, end)` (`spans`: partition →
/// (start, end)) and hands every record to `on_record`, in log order within a partition;
/// `on_record` returns `false` to stop reading that partition early. Blocking. Empty spans are
/// not read. Fails after `timeout` without the records (a broker that lost them).
pub(crate) fn read_spans(
    config: &Config,
    spans: &BTreeMap<i32, (i64, i64)>,
    timeout: Duration,
    mut on_record: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<u64> {
    let topic = &config.topics.canonical;
    let consumer: BaseConsumer = kafka::client_config(config)
        .set("group.id", format!("{}-scan", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut reading = BTreeMap::new();
    for (p, (start, end)) in spans {
        if end > start {
            tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*start))?;
            reading.insert(*p, *end);
        }
    }
    let mut records = 0u64;
    if !reading.is_empty() {
        consumer.assign(&tpl)?;
    }
    let deadline = Instant::now() + timeout;
    while !reading.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let p = m.partition();
        let Some(&end) = reading.get(&p) else {
            continue;
        };
        if m.offset() >= end {
            continue;
        }
        records += 1;
        let more = on_record(&m);
        if !more || m.offset() + 1 >= end {
            reading.remove(&p);
            let mut one = rdkafka::TopicPartitionList::new();
            one.add_partition(topic, p);
            let _ = consumer.pause(&one);
        }
    }
    Ok(records)
}

/// For each partition, the first offset whose record time is ≥ `from` and ≥ `to` (the end of
/// the range when there is none), read from the log up to the range's end.
fn scan_times(
    config: &Config,
    ranges: &BTreeMap<i32, Range>,
    from: Option<Millis>,
    to: Option<Millis>,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    // Per partition: (first offset with time ≥ from, first with time ≥ to), None = not yet.
    // A bound not asked for counts as found (its value is not used).
    let mut found: BTreeMap<i32, (Option<i64>, Option<i64>)> = ranges
        .iter()
        .map(|(p, r)| {
            let f = (
                from.is_none().then_some(r.low),
                to.is_none().then_some(r.end),
            );
            (*p, f)
        })
        .collect();
    // Up to the range's end as known now: the log's end seen at start or --to-offsets.
    let spans = ranges.iter().map(|(p, r)| (*p, (r.low, r.end))).collect();
    let started = Instant::now();
    let records = read_spans(config, &spans, Duration::from_secs(600), |m| {
        let entry = found
            .get_mut(&m.partition())
            .expect("read partitions are in found");
        if let Some(t) = record_time(m, config) {
            if entry.0.is_none() && from.is_some_and(|f| t >= f) {
                entry.0 = Some(m.offset());
            }
            if entry.1.is_none() && to.is_some_and(|f| t >= f) {
                entry.1 = Some(m.offset());
            }
        }
        !(entry.0.is_some() && entry.1.is_some())
    })
    .context("scanning the log for event times")?;
    eprintln!(
        "replay: found the time bounds by reading {records} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(found
        .into_iter()
        .map(|(p, (a, b))| {
            let end = ranges[&p].end;
            (p, (a.unwrap_or(end), b.unwrap_or(end)))
        })
        .collect())
}

/// A partition starting after offset 0 gets a checkpoint at its start in the fresh state dir,
/// so that fold (which assigns each partition at its checkpoint) begins there, with an empty
/// store and clock, exactly as if the log began at that offset.
fn seed_starts(config: &Config, ranges: &BTreeMap<i32, Range>) -> anyhow::Result<()> {
    for (p, r) in ranges {
        if r.start > 0 {
            let store =
                PartitionStore::open(&fold::partition_dir(&config.fold.state_dir, *p), false)?;
            store.commit(&Commit {
                checkpoint: Checkpoint {
                    next_offset: r.start,
                    ..Checkpoint::default()
                },
                ..Commit::default()
            })?;
            store.flush()?;
        }
    }
    Ok(())
}

/// Keys of the customers the replay erased. Their alerts are left out of `--verify`: an
/// erasure withdraws the alerts about the customer that have not left yet, which depends on
/// where commits fell in each run.
fn erased_customers(state_dir: &std::path::Path) -> anyhow::Result<HashSet<u128>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(state_dir)? {
        let store = pulse_store::PartitionStore::open(&entry?.path(), false)?;
        out.extend(store.suppressed()?.into_iter().map(|(k, _)| k));
    }
    Ok(out)
}

/// Whether an alert (by its `ce_subject`, the customer id) is about an erased customer.
fn about_erased(subject: Option<&str>, erased: &HashSet<u128>) -> bool {
    subject.is_some_and(|id| erased.contains(&pulse_core::hash::customer_key(id)))
}

fn file_sink(path: &std::path::Path) -> anyhow::Result<AlertSink> {
    let f = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    Ok(AlertSink::File(std::sync::Mutex::new(
        std::io::BufWriter::new(f),
    )))
}

/// Alerts as `alert_id → value`, from the replay file.
fn replayed(
    file: &std::path::Path,
    erased: &HashSet<u128>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(file)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        // Alerts only: erasure confirmations are CloudEvents too but not alerts.
        let alert = v["headers"][hdr::CE_TYPE]
            .as_str()
            .is_some_and(|t| t != "pulse.customer_erased")
            && !about_erased(v["headers"][hdr::CE_SUBJECT].as_str(), erased);
        if let (true, Some(id)) = (alert, v["headers"][hdr::CE_ID].as_str()) {
            out.insert(
                id.to_string(),
                v["value"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    Ok(out)
}

/// Reads the live alert topics to their current end and keeps the alerts caused by records
/// inside the replayed range.
///
/// A partition's end is librdkafka's partition-EOF event, not the high watermark from
/// ListOffsets: tansu (memory storage) was measured answering ListOffsets with a high
/// watermark below the records it serves (churn-warnings/0: 11, while offsets 0..=14 were
/// read), which made verify miss live alerts. One consumer per topic, because the EOF event
/// names only the partition.
fn live_alerts(
    config: &Config,
    ends: &BTreeMap<i32, i64>,
    erased: &HashSet<u128>,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let t = &config.topics;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    for topic in [&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes] {
        let consumer: BaseConsumer = kafka::client_config(config)
            .set(
                "group.id",
                format!(
                    "{}-verify-{}",
                    config.kafka.group_id,
                    crate::wall_clock_ms()
                ),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut remaining = BTreeSet::new();
        for p in 0..kafka::partition_count(config, topic)? {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
            remaining.insert(p);
        }
        consumer.assign(&tpl)?;
        while !remaining.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "reading the live alert topics timed out"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                    remaining.remove(&p);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let header = |k: &str| kafka::header(m.headers(), k).map(str::to_string);
            let in_range = header(hdr::CAUSE)
                .and_then(|c| {
                    let (p, o) = c.split_once('/')?;
                    Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?))
                })
                .is_some_and(|(p, o)| ends.get(&p).is_some_and(|end| o < *end))
                && !about_erased(header(hdr::CE_SUBJECT).as_deref(), erased);
            if let (true, Some(id)) = (in_range, header(hdr::CE_ID)) {
                out.entry(id)
                    .or_default()
                    .push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
        }
    }
    Ok(out)
}

fn verify(
    live_config: &Config,
    file: &std::path::Path,
    ends: &BTreeMap<i32, i64>,
    erased: &HashSet<u128>,
) -> anyhow::Result<()> {
    let replay = replayed(file, erased)?;
    let live = live_alerts(live_config, ends, erased)?;
    if !erased.is_empty() {
        println!(
            "verify: alerts about {} erased customers left out",
            erased.len()
        );
    }
    let ids: BTreeSet<&String> = replay.keys().chain(live.keys()).collect();
    let (mut same, mut only_replay, mut only_live, mut differ, mut live_dupes) = (0, 0, 0, 0, 0);
    for id in ids {
        match (replay.get(id), live.get(id)) {
            (Some(r), Some(l)) => {
                live_dupes += l.len() - 1;
                if l.iter().all(|v| v == r) {
                    same += 1;
                } else {
                    differ += 1;
                    eprintln!("verify: {id} differs\n  replay: {r}\n  live:   {}", l[0]);
                }
            }
            (Some(_), None) => {
                only_replay += 1;
                eprintln!("verify: {id} only in the replay");
            }
            (None, Some(_)) => {
                only_live += 1;
                eprintln!("verify: {id} only in the live topics");
            }
            (None, None) => unreachable!(),
        }
    }
    println!(
        "verify: {same} identical, {differ} different, {only_replay} only in the replay, {only_live} only live ({live_dupes} byte-identical live duplicates)"
    );
    if differ + only_replay + only_live > 0 {
        bail!("the replay does not reproduce the live alerts");
    }
    Ok(())
}
