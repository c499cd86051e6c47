//! Loading a customer history for the batch commands (`pulse fit`, `pulse backtest`): an
//! NDJSON file of input events, or a range of the canonical log, as validated core events in
//! log order per partition. An NDJSON file is an export, not a log: exports come sorted by
//! customer, by order id or not at all, so its events are put in event-time order (file order
//! among equal times), the order in which they happened and would have reached ingest.
//!
//! Nothing here holds a rule: an NDJSON line is decoded by pulse-codec's `decode_input`
//! exactly as ingest decodes a record (so the same events are accepted and refused, with the
//! same reasons), and the canonical log is read with the range resolution and the record
//! reader of `pulse replay`. What cannot be accepted is returned in [`Loaded::rejected`] with
//! its line or offset and reason, never skipped silently.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pulse_codec::{decode_input, Canonical, Encoding, Family};
use pulse_core::event::{ClickKind, SupportKind};
use pulse_core::Millis;
use rdkafka::Message;
use serde::Deserialize;

use crate::config::Config;
use crate::replay::{self, Progress, ReplayRange};

/// One partition's records in log order (an NDJSON file is one partition, in event-time order).
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLog {
    pub partition: i32,
    pub records: Vec<Record>,
}

/// A record of the canonical log as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(pulse_core::Event),
    /// A tick: the partition clock moves to this instant.
    Tick(Millis),
}

/// A loaded history.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub partitions: Vec<PartitionLog>,
    /// `(line, reason)` for an NDJSON file (lines count from 1); `(offset, "partition P: reason")`
    /// for the canonical log.
    pub rejected: Vec<(u64, String)>,
    /// Provenance, for reports and the comments of a fitted config: the file and its lines, or
    /// the topic and each partition's offsets.
    pub description: String,
}

impl Loaded {
    /// Every event, partition by partition, in log order.
    pub fn events(&self) -> impl Iterator<Item = &pulse_core::Event> {
        self.partitions.iter().flat_map(|p| {
            p.records.iter().filter_map(|r| match r {
                Record::Event(e) => Some(e),
                Record::Tick(_) => None,
            })
        })
    }
}

/// The first fields of a line, to route it: an input event (`type`), or a line of
/// `pulse simulate --ndjson` (`{"topic","key","value"}`, the value an input record's text).
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    value: Option<String>,
}

/// The input family whose topic carries events of this `type`. A type no family knows (and
/// `customer_erased`, valid on every input topic) goes to orders, whose decode then accepts it
/// or names the unknown type as ingest would.
fn family_of(kind: &str) -> Family {
    if ClickKind::parse(kind).is_some() {
        Family::Clickstream
    } else if SupportKind::parse(kind).is_some() {
        Family::Support
    } else {
        Family::Orders
    }
}

/// Decodes one NDJSON line into an event, or the reason it is refused.
fn decode_line(line: &[u8], cfg: &Config) -> Result<pulse_core::Event, String> {
    let max = cfg.ingest.max_record_bytes;
    let reject = |r: pulse_codec::Rejection| format!("{}: {}", r.reason, r.detail);
    let peek: Option<Peek<'_>> = serde_json::from_slice(line).ok();
    match peek {
        Some(Peek {
            topic: Some(topic),
            value: Some(value),
            ..
        }) => {
            let t = &cfg.topics;
            let family = if topic == t.orders.as_str() {
                Family::Orders
            } else if topic == t.clickstream.as_str() {
                Family::Clickstream
            } else if topic == t.support.as_str() {
                Family::Support
            } else {
                return Err(format!(
                    "unknown_topic: `{topic}` is none of the configured input topics"
                ));
            };
            decode_input(family, Encoding::Json, value.as_bytes(), max).map_err(reject)
        }
        // Anything else is an input event; a line that is not JSON at all is refused by the
        // decoder with ingest's reason.
        other => {
            let family = other
                .and_then(|p| p.kind)
                .map_or(Family::Orders, |k| family_of(&k));
            decode_input(family, Encoding::Json, line, max).map_err(reject)
        }
    }
}

/// Reads an NDJSON file of input events: one JSON object per line, either an event in the
/// input topics' format (the topic family from its `type`) or a line written by
/// `pulse simulate --ndjson`. Blank lines are not records. The file is one partition, in
/// event-time order (a stable sort: file order among equal times), so a file sorted by customer
/// folds as the same events arriving as they happened would. A progress bar goes to stderr for
/// files that take more than a moment.
pub fn load_ndjson(path: &Path, cfg: &Config) -> anyhow::Result<Loaded> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let started = Instant::now();
    let mut progress = Progress::new("load", "bytes", size as i64);
    let mut shown = started;
    let (mut records, mut rejected) = (Vec::new(), Vec::new());
    let (mut line_no, mut read, mut blank) = (0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        read += n as u64;
        let line = buf.trim_ascii();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        match decode_line(line, cfg) {
            Ok(e) => records.push(Record::Event(e)),
            Err(why) => rejected.push((line_no, why)),
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            progress.show(read as i64, started.elapsed());
        }
    }
    if started.elapsed() >= Duration::from_secs(1) {
        progress.show(read as i64, started.elapsed());
        progress.finish();
    }
    records.sort_by_key(|r| match r {
        Record::Event(e) => e.occurred_at,
        Record::Tick(t) => *t,
    });
    let description = format!(
        "{}: {line_no} lines, {} events, {} rejected{}",
        path.display(),
        records.len(),
        rejected.len(),
        if blank > 0 {
            format!(", {blank} blank")
        } else {
            String::new()
        }
    );
    Ok(Loaded {
        partitions: vec![PartitionLog {
            partition: 0,
            records,
        }],
        rejected,
        description,
    })
}

/// Reads a range of the canonical log (resolved as `pulse replay` resolves it), each partition
/// in log order. A record fold could not decode is returned in `rejected` (fold dead-letters
/// it and folds nothing).
pub async fn load_log(cfg: &Config, range: &ReplayRange) -> anyhow::Result<Loaded> {
    let (cfg, range) = (cfg.clone(), range.clone());
    tokio::task::spawn_blocking(move || load_log_blocking(&cfg, &range))
        .await
        .context("load task")?
}

fn load_log_blocking(cfg: &Config, range: &ReplayRange) -> anyhow::Result<Loaded> {
    let ranges = replay::resolve(cfg, range)?;
    let spans: BTreeMap<i32, (i64, i64)> =
        ranges.iter().map(|(p, r)| (*p, (r.start, r.end))).collect();
    let total: i64 = spans.values().map(|(s, e)| e - s).sum();
    let mut parts: BTreeMap<i32, Vec<Record>> = spans.keys().map(|p| (*p, Vec::new())).collect();
    let mut rejected = Vec::new();
    let started = Instant::now();
    let mut progress = Progress::new("load", "records", total);
    let (mut shown, mut done) = (started, 0i64);
    // A whole log can take a while to arrive; the timeout is for a broker that lost records.
    let timeout = Duration::from_secs(600).max(Duration::from_millis(total.max(0) as u64));
    crate::replay::read_spans(cfg, &spans, timeout, |m| {
        done += 1;
        match crate::kafka::decode_canonical_message(m, cfg) {
            Ok(Canonical::Event(e, _)) => parts
                .get_mut(&m.partition())
                .expect("read partitions are spans")
                .push(Record::Event(e)),
            Ok(Canonical::Tick { time, .. }) => parts
                .get_mut(&m.partition())
                .expect("read partitions are spans")
                .push(Record::Tick(time)),
            Err(e) => rejected.push((
                m.offset() as u64,
                format!("partition {}: corrupt_canonical: {e}", m.partition()),
            )),
        }
        if shown.elapsed() >= Duration::from_secs(1) {
            shown = Instant::now();
            progress.show(done, started.elapsed());
        }
        true
    })?;
    if started.elapsed() >= Duration::from_secs(1) {
        progress.show(done, started.elapsed());
        progress.finish();
    }
    let spans_text: Vec<String> = spans
        .iter()
        .map(|(p, (s, e))| format!("{p}:[{s},{e})"))
        .collect();
    let description = format!(
        "{} offsets {}: {done} records, {} rejected",
        cfg.topics.canonical,
        spans_text.join(" "),
        rejected.len()
    );
    Ok(Loaded {
        partitions: parts
            .into_iter()
            .map(|(partition, records)| PartitionLog { partition, records })
            .collect(),
        rejected,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_core::Body;

    fn write(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            std::io::Write::write_all(&mut f, format!("{l}\n").as_bytes()).unwrap();
        }
        f
    }

    #[test]
    fn ndjson_events_of_every_family_load_in_event_time_order_and_bad_lines_are_reported() {
        // Given an order, a click, a support event, a simulator line and four bad lines, the
        // simulator line dated before the support event and as late as the click before it
        let sim_value = r#"{"event_id":"e5","customer_id":"c2","occurred_at":1704103200000,"type":"page_view"}"#;
        let sim_line =
            serde_json::json!({"topic": "customer.clickstream", "key": "c2", "value": sim_value})
                .to_string();
        let f = write(&[
            r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2024-01-01T10:00:00Z","type":"order_placed","order_id":"o1","amount":"12.50","currency":"EUR"}"#,
            r#"{"event_id":"e2","customer_id":"c1","occurred_at":1704103200000,"type":"add_to_cart"}"#,
            "",
            r#"{"event_id":"e3","customer_id":"c1","occurred_at":"2024-01-02T00:00:00Z","type":"csat_submitted","score":5}"#,
            "not json",
            r#"{"event_id":"e4","occurred_at":"2024-01-02T00:00:00Z","type":"order_placed"}"#,
            r#"{"event_id":"e6","customer_id":"c1","occurred_at":"2024-01-02T00:00:00Z","type":"teleport"}"#,
            &sim_line,
            r#"{"topic":"elsewhere","value":"{}"}"#,
        ]);
        let cfg = Config::with_overrides("").unwrap();
        // When loaded
        let loaded = load_ndjson(f.path(), &cfg).unwrap();
        // Then the good events are one partition in event-time order, file order among equal
        // times, each of its family
        assert_eq!(loaded.partitions.len(), 1);
        let ids: Vec<&str> = loaded.events().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e5", "e3"]);
        let kinds: Vec<&str> = loaded
            .events()
            .map(|e| match &e.body {
                Body::Order(_) => "order",
                Body::Click(_) => "click",
                Body::Support(_) => "support",
                Body::Erased => "erased",
            })
            .collect();
        assert_eq!(kinds, ["order", "click", "click", "support"]);
        // And every bad line is reported with its number and ingest's reason
        let reasons: Vec<(u64, &str)> = loaded
            .rejected
            .iter()
            .map(|(l, r)| (*l, r.split(':').next().unwrap()))
            .collect();
        assert_eq!(
            reasons,
            [
                (5, "bad_json"),
                (6, "missing_field"),
                (7, "unknown_type"),
                (9, "unknown_topic")
            ]
        );
        assert!(loaded.rejected[1]
            .1
            .starts_with("missing_field:customer_id"));
        assert!(
            loaded
                .description
                .ends_with("9 lines, 4 events, 4 rejected, 1 blank"),
            "{}",
            loaded.description
        );
    }
}
