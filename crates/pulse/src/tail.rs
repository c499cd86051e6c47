//! `pulse tail`: pulse's alert topics read back as one readable line per alert or as JSON
//! lines, the console-consumer step for pulse's output; and the one formatting of an alert as
//! a line, which `pulse demo` uses too.
//!
//! It reads with `isolation.level=read_committed` (what every reader of pulse's topics should
//! use: in exactly-once mode that hides aborted transactions) and by assignment, not in a
//! consumer group: it commits nothing and never takes partitions from anyone.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka;

/// One of pulse's alert kinds, and so one of its alert topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    /// `churn_warning` on `topics.churn_warnings`.
    Churn,
    /// `lifecycle_stage_changed` on `topics.lifecycle_changes`.
    Lifecycle,
    /// `segment_changed` on `topics.segment_changes`.
    Segment,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Churn, Kind::Lifecycle, Kind::Segment];

    pub fn topic(self, config: &Config) -> &str {
        match self {
            Kind::Churn => &config.topics.churn_warnings,
            Kind::Lifecycle => &config.topics.lifecycle_changes,
            Kind::Segment => &config.topics.segment_changes,
        }
    }

    /// The alert's `type` field.
    pub fn alert_type(self) -> &'static str {
        match self {
            Kind::Churn => "churn_warning",
            Kind::Lifecycle => "lifecycle_stage_changed",
            Kind::Segment => "segment_changed",
        }
    }

    pub fn of(alert_type: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.alert_type() == alert_type)
    }

    /// How a line names the kind.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Churn => "churn warning",
            Kind::Lifecycle => "stage change",
            Kind::Segment => "segment change",
        }
    }
}

/// One alert as one line: time, customer, kind, from → to, and the first `reasons` reasons
/// (the engine puts the rule that decided first, then the signals by contribution). `date_only`
/// shortens the time to its day (the demo, where a day passes in a fraction of a
/// second). `label` names the kind (`pulse demo` names a churn warning merged with its stage
/// change as the warning).
pub fn alert_line(
    alert: &pulse_codec::wire::Alert,
    label: &str,
    reasons: usize,
    date_only: bool,
) -> String {
    let time = if date_only {
        alert.occurred_at.get(..10).unwrap_or(&alert.occurred_at)
    } else {
        &alert.occurred_at
    };
    let why: Vec<&str> = alert
        .reasons
        .iter()
        .take(reasons)
        .map(|r| r.text.as_str())
        .collect();
    let change = format!("{} → {}", alert.from, alert.to);
    format!(
        "{time}  {:<10} {label:<14} {change:<24} ({})",
        alert.customer_id,
        why.join("; ")
    )
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Config file (topics, encodings, `[kafka]` settings); default: the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (overrides `kafka.bootstrap_servers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Only this kind's topic; repeat for several (default: all three alert topics).
    #[arg(long, value_enum)]
    pub kind: Vec<Kind>,
    /// Start at the beginning of each topic (default: the end, i.e. only new alerts).
    #[arg(long)]
    pub from_beginning: bool,
    /// Print each alert as one JSON line (its `alert.proto` JSON form).
    #[arg(long)]
    pub json: bool,
    /// Exit after printing this many alerts.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Exit once every partition has been read to its end (for scripts and tests).
    #[arg(long)]
    pub until_caught_up: bool,
}

/// What a `pulse tail` run printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TailOutcome {
    pub printed: u64,
    /// Records that were not an alert pulse can decode (named on stderr).
    pub undecodable: u64,
}

/// `pulse tail`: prints alerts to `out` until Ctrl-C, `--max-records` or `--until-caught-up`.
/// Blocking: call off the async runtime.
pub fn tail(args: &TailArgs, out: &mut dyn Write) -> anyhow::Result<TailOutcome> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(b) = &args.brokers {
        config.kafka.bootstrap_servers = b.clone();
    }
    let kinds: BTreeSet<Kind> = if args.kind.is_empty() {
        Kind::ALL.into_iter().collect()
    } else {
        args.kind.iter().copied().collect()
    };
    let start = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    // One consumer per topic: rust-rdkafka's EOF event names the partition number but not the
    // topic, and `--until-caught-up` must know which topic's partition reached its end.
    let mut readers = Vec::new();
    for kind in &kinds {
        let topic = kind.topic(&config).to_string();
        let consumer = assigned_consumer(&config, &topic, start)?;
        let open: BTreeSet<i32> = consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        readers.push((consumer, open));
    }

    let mut outcome = TailOutcome::default();
    'read: loop {
        let mut idle = true;
        for (consumer, open) in &mut readers {
            if args.max_records.is_some_and(|n| outcome.printed >= n)
                || (args.until_caught_up && open.is_empty())
            {
                continue;
            }
            let Some(m) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            idle = false;
            let m = match m {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    open.remove(&p);
                    continue;
                }
                Err(e) => return Err(e).context("read the alert topics"),
            };
            let encoding = kafka::header(m.headers(), "content-type")
                .and_then(pulse_codec::Encoding::from_content_type)
                .unwrap_or(config.encoding.alerts);
            let alert = match pulse_codec::decode_alert(m.payload().unwrap_or_default(), encoding) {
                Ok(a) => a,
                Err(e) => {
                    outcome.undecodable += 1;
                    eprintln!(
                        "tail: {}/{} offset {}: not an alert ({e})",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    );
                    continue;
                }
            };
            let line = if args.json {
                serde_json::to_string(&alert).expect("wire types always serialize")
            } else {
                let label = match Kind::of(&alert.r#type) {
                    Some(k) => k.label(),
                    None => &alert.r#type,
                };
                alert_line(&alert, label, 2, false)
            };
            match writeln!(out, "{line}").and_then(|()| out.flush()) {
                Ok(()) => outcome.printed += 1,
                // `pulse tail | head`: the reader is gone, which ends the tail, not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break 'read,
                Err(e) => return Err(e).context("write to stdout"),
            }
        }
        let done = args.max_records.is_some_and(|n| outcome.printed >= n)
            || (args.until_caught_up && readers.iter().all(|(_, open)| open.is_empty()));
        if done {
            break;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(outcome)
}

/// librdkafka also reports each partition's end through the client's error callback, which
/// rdkafka logs as an error by default; here the end is expected (`poll` returns it too).
struct TailContext;

impl ClientContext for TailContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for TailContext {}

/// A read_committed consumer assigned every partition of `topic` at `start`, reporting each
/// partition's end as an EOF event. Fails naming the topic when the broker does not know it.
fn assigned_consumer(
    config: &Config,
    topic: &str,
    start: Offset,
) -> anyhow::Result<BaseConsumer<TailContext>> {
    let consumer: BaseConsumer<TailContext> = kafka::client_config(config)
        // librdkafka wants a group id for a consumer; this one never joins: it is assigned.
        .set("group.id", format!("{}-tail", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        // The end of a partition is librdkafka's EOF event, not a high watermark: tansu's
        // ListOffsets watermark on alert topics was measured below the records it serves.
        .set("enable.partition.eof", "true")
        .create_with_context(TailContext)
        .context("create the Kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| {
            format!(
                "metadata of topic {topic} from {}",
                config.kafka.bootstrap_servers
            )
        })?;
    let t = md
        .topics()
        .first()
        .with_context(|| format!("topic {topic}: no metadata"))?;
    if let Some(e) = t.error() {
        anyhow::bail!("topic {topic}: {}", RDKafkaErrorCode::from(e));
    }
    anyhow::ensure!(
        !t.partitions().is_empty(),
        "topic {topic} has no partitions"
    );
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), start)?;
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("assign topic {topic}"))?;
    Ok(consumer)
}
