//! `pulse replay`: rebuilds fold's state from the canonical log into a fresh state directory,
//! with the configured (possibly new) scoring rules, and sends the alerts nowhere, to a file,
//! or — only when told to — to topics of the user's choice. `--verify` compares the replayed
//! alerts with the live alert topics, alert by alert, for the replayed range.
//!
//! A replay is fold itself, run with its own consumer group from the beginning of the log up
//! to the end offsets seen at start; the live alert topics are never written unless named.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use tokio::sync::watch;

use crate::config::Config;
use crate::fold::{self, AlertSink, FoldOptions, CAUSE_HEADER};
use crate::kafka;

#[derive(clap::Args, Debug)]
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
    /// Compare the replayed alerts with the live alert topics and fail on any difference.
    #[arg(long)]
    pub verify: bool,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    let live = config.clone();
    if args.state_dir.exists() && std::fs::read_dir(&args.state_dir)?.next().is_some() {
        bail!(
            "--state-dir {} is not empty: a replay builds state from scratch",
            args.state_dir.display()
        );
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
                bail!("--alerts topics:{prefix} would write to the live alert topics");
            }
            (AlertSink::Kafka, None)
        }
        _ => bail!("--alerts must be none, file:PATH or topics:PREFIX (topics cannot be verified)"),
    };

    let ends = end_offsets(&config)?;
    let total: i64 = ends.values().sum();
    eprintln!(
        "replay: {total} records in {} partitions of {}",
        ends.len(),
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => {
                let done: i64 = shared.partitions.read().expect("lock").values()
                    .map(|(s, _)| s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset)).sum();
                let secs = started.elapsed().as_secs_f64();
                let rate = done as f64 / secs.max(1e-9);
                let eta = if rate > 0.0 { (total - done).max(0) as f64 / rate } else { f64::NAN };
                eprintln!("replay: {done}/{total} records committed, {rate:.0} records/s, ETA {eta:.0}s");
            }
        }
    };
    result.context("replay task")??;
    let partitions = shared.canonical_partitions.load(Ordering::Relaxed);
    eprintln!(
        "replay: done in {:.1}s ({partitions} partitions)",
        started.elapsed().as_secs_f64()
    );

    if args.verify {
        let file = file.expect("verify always writes a file");
        verify(&live, &file, &ends, &erased_customers(&args.state_dir)?)?;
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

/// The high watermark of every canonical partition, now: the replay's end.
fn end_offsets(config: &Config) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = kafka::client_config(config).create()?;
    let n = kafka::partition_count(config, &config.topics.canonical)?;
    let mut ends = BTreeMap::new();
    for p in 0..n {
        let (_, high) =
            consumer.fetch_watermarks(&config.topics.canonical, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    Ok(ends)
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
        let alert = v["headers"]["ce_type"]
            .as_str()
            .is_some_and(|t| t != "pulse.customer_erased")
            && !about_erased(v["headers"]["ce_subject"].as_str(), erased);
        if let (true, Some(id)) = (alert, v["headers"]["ce_id"].as_str()) {
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
fn live_alerts(
    config: &Config,
    ends: &BTreeMap<i32, i64>,
    erased: &HashSet<u128>,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
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
        .set("isolation.level", "read_committed")
        .create()?;
    let t = &config.topics;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut remaining = BTreeMap::new();
    for topic in [&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes] {
        for p in 0..kafka::partition_count(config, topic)? {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
                remaining.insert((topic.to_string(), p), high);
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading the live alert topics timed out"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        let key = (m.topic().to_string(), m.partition());
        if remaining
            .get(&key)
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            remaining.remove(&key);
        }
        let header = |k: &str| kafka::header(m.headers(), k).map(str::to_string);
        let in_range = header(CAUSE_HEADER)
            .and_then(|c| {
                let (p, o) = c.split_once('/')?;
                Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?))
            })
            .is_some_and(|(p, o)| ends.get(&p).is_some_and(|end| o < *end))
            && !about_erased(header("ce_subject").as_deref(), erased);
        if let (true, Some(id)) = (in_range, header("ce_id")) {
            out.entry(id)
                .or_default()
                .push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
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
