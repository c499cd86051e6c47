//! Telemetry: every metric pulse exports is named and described here, and pipeline code reports
//! through the small `emit` functions below (one per internal event), never through `counter!`
//! directly. Names follow `pulse_<what>_<unit>[_total]`; labels are bounded (no customer ids).
//!
//! Three kinds of series:
//! - recorded through the `metrics` facade (the global Prometheus recorder), by the `emit`
//!   functions and by [`FoldMetrics`] / [`IngestMetrics`], which register their handles once
//!   (per partition task / per ingest run) so the per-record path does no registry lookup;
//! - sampled at scrape time by [`render`] and appended to the recorder's output: the bytes of
//!   each partition's sled store, timers pending per partition, and the process (RSS, CPU,
//!   fds from `/proc/self`). Sampling at scrape time costs nothing between scrapes and
//!   shows exactly the partitions held now (a revoked partition's series disappears instead
//!   of going stale).
//!
//! Wall-clock reads here are for metrics only: nothing they produce reaches fold's state or
//! alerts.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pulse_core::{AlertKind, Millis};

pub const INGEST_RECORDS: &str = "pulse_ingest_records_total";
pub const INGEST_DEAD_LETTERS: &str = "pulse_ingest_dead_letters_total";
pub const INGEST_TICKS: &str = "pulse_ingest_ticks_total";
pub const INGEST_WATERMARK: &str = "pulse_ingest_watermark_seconds";
pub const INGEST_MERGE_FORCED: &str = "pulse_ingest_merge_forced_total";
pub const FOLD_EVENTS: &str = "pulse_fold_events_total";
pub const FOLD_DUPLICATES: &str = "pulse_fold_duplicate_events_total";
pub const FOLD_TIMERS_FIRED: &str = "pulse_fold_timers_fired_total";
pub const FOLD_COMMIT_SECONDS: &str = "pulse_fold_commit_duration_seconds";
pub const FOLD_COMMIT_RECORDS: &str = "pulse_fold_commit_records";
pub const FOLD_OUTBOX_DEPTH: &str = "pulse_fold_outbox_records";
pub const FOLD_CLOCK: &str = "pulse_fold_partition_clock_seconds";
pub const FOLD_CORRUPT: &str = "pulse_fold_corrupt_records_total";
pub const FOLD_LATE: &str = "pulse_fold_late_events_total";
pub const ALERTS: &str = "pulse_alerts_total";
pub const CUSTOMERS: &str = "pulse_customers";
pub const CUSTOMERS_BY_SEGMENT: &str = "pulse_customers_by_segment";
pub const PARTITIONS: &str = "pulse_fold_partitions_assigned";
pub const CONSUMER_LAG: &str = "pulse_consumer_lag_records";
pub const RESTORE_RECORDS: &str = "pulse_restore_records_total";
pub const RESTORE_IN_PROGRESS: &str = "pulse_restore_partitions_in_progress";
pub const RESTORES: &str = "pulse_restores_total";
pub const ERASURES: &str = "pulse_fold_erasures_total";
pub const SUPPRESSED_EVENTS: &str = "pulse_fold_suppressed_events_total";
pub const STATE_REWRITES: &str = "pulse_fold_state_rewrites_total";
pub const STATE_REWRITE_SECONDS: &str = "pulse_fold_state_rewrite_duration_seconds";
pub const INGEST_DECODE_SECONDS: &str = "pulse_ingest_decode_duration_seconds";
pub const ALERT_STALENESS: &str = "pulse_alert_staleness_seconds";
pub const ALERT_LATENCY: &str = "pulse_alert_latency_seconds";
/// Sampled at scrape time (see [`render`]).
pub const FOLD_STATE_BYTES: &str = "pulse_fold_state_bytes";
pub const FOLD_TIMERS_PENDING: &str = "pulse_fold_pending_timers";
/// Process metrics keep the names every Prometheus client library exports (client_golang,
/// client_java, prometheus_client for Python: `process_*`, no `pulse_` prefix) so existing
/// dashboards and rules (`process_open_fds / process_max_fds`, RSS panels) work unchanged; the
/// `job` label tells pulse apart. The one deliberate exception to the `pulse_` prefix.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_VSZ: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START: &str = "process_start_time_seconds";

/// Buckets per unit. Decode: one record, microseconds. Latency: consumed → acknowledged,
/// which includes waiting for the commit (`fold.commit_interval_ms`) and the broker's ack.
/// Staleness: event time → acknowledged, from milliseconds (live) to a month (late data,
/// replayed history, timers due long ago).
const DECODE_BUCKETS: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1,
];
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const STALENESS_BUCKETS: [f64; 18] = [
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    21_600.0,
    86_400.0,
    2_592_000.0,
];
pub const FOLD_TRANSACTIONS: &str = "pulse_fold_transactions_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle. Services started
/// in the same process (tests) share it.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("static buckets")
                .set_buckets_for_metric(
                    Matcher::Full(FOLD_COMMIT_RECORDS.to_string()),
                    &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
                )
                .expect("static buckets")
                .set_buckets_for_metric(
                    Matcher::Full(INGEST_DECODE_SECONDS.to_string()),
                    &DECODE_BUCKETS,
                )
                .expect("static buckets")
                .set_buckets_for_metric(Matcher::Full(ALERT_LATENCY.to_string()), &LATENCY_BUCKETS)
                .expect("static buckets")
                .set_buckets_for_metric(
                    Matcher::Full(ALERT_STALENESS.to_string()),
                    &STALENESS_BUCKETS,
                )
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Histogram samples queue up until drained into buckets, which `render` does; with
            // per-record histograms and no scraper that queue would grow without bound. Drain
            // it every few seconds (what the exporter's own `install()` does).
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        INGEST_RECORDS,
        "Input records read by ingest, by family and outcome (accepted, dead_lettered)."
    );
    describe_counter!(
        INGEST_DEAD_LETTERS,
        "Input records sent to the dead-letter topic, by reason class."
    );
    describe_counter!(
        INGEST_TICKS,
        "Tick records appended to idle canonical-log partitions."
    );
    describe_counter!(
        INGEST_MERGE_FORCED,
        "Times ingest's event-time merge went on without an input partition that still had records in the broker (it held the others back for ingest.merge_max_idle_ms, or the merge buffer was full): there, arrival order decided."
    );
    describe_gauge!(
        INGEST_WATERMARK,
        Unit::Seconds,
        "Ingest's event-time watermark (Unix seconds)."
    );
    describe_counter!(
        FOLD_EVENTS,
        "Canonical events folded into customer state, by kind."
    );
    describe_counter!(
        FOLD_DUPLICATES,
        "Events skipped because their event_id was already folded."
    );
    describe_counter!(
        FOLD_TIMERS_FIRED,
        "Customer timers fired by the partition clock."
    );
    describe_histogram!(
        FOLD_COMMIT_SECONDS,
        Unit::Seconds,
        "Duration of one atomic sled commit (state, offsets, outbox)."
    );
    describe_histogram!(
        FOLD_COMMIT_RECORDS,
        Unit::Count,
        "Canonical-log records covered by one commit."
    );
    describe_gauge!(
        FOLD_OUTBOX_DEPTH,
        Unit::Count,
        "Outbox records committed but not yet acknowledged by Kafka."
    );
    describe_gauge!(
        FOLD_CLOCK,
        Unit::Seconds,
        "Partition clock (largest event time folded, Unix seconds), by partition."
    );
    describe_counter!(
        FOLD_CORRUPT,
        "Canonical-log records fold could not decode (sent to the dead-letter topic)."
    );
    describe_counter!(
        FOLD_LATE,
        "Canonical events older than their partition's clock when fold read them (decided at their customer's own time). Counted each time a record is folded, so a refold after a restart counts again."
    );
    describe_counter!(ALERTS, "Alerts committed to the outbox, by type.");
    describe_gauge!(
        CUSTOMERS,
        Unit::Count,
        "Customers held in state, by announced lifecycle stage (kept incrementally by fold)."
    );
    describe_gauge!(
        CUSTOMERS_BY_SEGMENT,
        Unit::Count,
        "Customers held in state, by announced RFM segment (kept incrementally by fold)."
    );
    describe_gauge!(
        PARTITIONS,
        Unit::Count,
        "Canonical-log partitions this instance folds."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records between a partition's high watermark and the group's committed offset (librdkafka statistics), by group, topic and partition."
    );
    describe_counter!(
        RESTORE_RECORDS,
        "Changelog records read while restoring partitions (no local state, or a local checkpoint the changelog is ahead of), the tail read that compares the two included."
    );
    describe_gauge!(
        RESTORE_IN_PROGRESS,
        Unit::Count,
        "Partitions being restored from the changelog (readiness is false while above 0)."
    );
    describe_counter!(RESTORES, "Partition restores from the changelog, finished.");
    describe_histogram!(
        INGEST_DECODE_SECONDS,
        Unit::Seconds,
        "Time to decode and validate one input record (JSON or protobuf), by family."
    );
    describe_histogram!(
        ALERT_STALENESS,
        Unit::Seconds,
        "How stale an alert's signal is: wall time when the broker acknowledged the alert minus, for cause=event, the event time (occurred_at) of the event that caused it, or, for cause=timer, the due time of the timer that fired it. Negative values (event time ahead of this host's clock) count as 0."
    );
    describe_histogram!(
        ALERT_LATENCY,
        Unit::Seconds,
        "Processing latency of an alert: from fold reading the canonical record that caused it to the broker acknowledging the alert (after the sled commit and the outbox drain). Alerts re-sent from the outbox after a restart are not counted."
    );
    describe_counter!(
        FOLD_TRANSACTIONS,
        "Exactly-once mode: fold's Kafka transactions, by outcome (committed, aborted)."
    );
    // Counters that may stay at zero for a long time are exported from the start, so rules and
    // dashboards see a series (rate() of a missing series is no data, not 0).
    counter!(FOLD_DUPLICATES).absolute(0);
    counter!(FOLD_CORRUPT).absolute(0);
    counter!(FOLD_LATE).absolute(0);
    counter!(FOLD_TIMERS_FIRED).absolute(0);
    counter!(RESTORE_RECORDS).absolute(0);
    counter!(RESTORES).absolute(0);
    gauge!(RESTORE_IN_PROGRESS).set(0.0);
    describe_erasure();
}

fn describe_erasure() {
    describe_counter!(
        ERASURES,
        "customer_erased requests applied by fold, by outcome (erased, already_erased)."
    );
    describe_counter!(
        SUPPRESSED_EVENTS,
        "Events of erased customers dropped by fold (counted, never stored)."
    );
    describe_counter!(
        STATE_REWRITES,
        "Partition databases rewritten into a fresh directory after erasures."
    );
    describe_histogram!(
        STATE_REWRITE_SECONDS,
        Unit::Seconds,
        "Time to rewrite a partition's database after erasures."
    );
    counter!(ERASURES, "outcome" => "erased").absolute(0);
    counter!(SUPPRESSED_EVENTS).absolute(0);
    counter!(STATE_REWRITES).absolute(0);
}

pub fn restore_started(partition: i32) {
    gauge!(RESTORE_IN_PROGRESS).increment(1.0);
    tracing::info!(partition, "restore from the changelog started");
}

pub fn restore_records(n: u64) {
    counter!(RESTORE_RECORDS).increment(n);
}

pub fn restore_in_progress(n: i64) {
    gauge!(RESTORE_IN_PROGRESS).set(n as f64);
}

pub fn restore_finished(
    partition: i32,
    records: u64,
    customers: usize,
    next_offset: Option<i64>,
    took: std::time::Duration,
) {
    counter!(RESTORES).increment(1);
    let secs = took.as_secs_f64();
    tracing::info!(
        partition,
        records,
        customers,
        next_offset,
        seconds = secs,
        customers_per_second = customers as f64 / secs.max(1e-9),
        "restore from the changelog finished"
    );
}

pub fn ingest_dead_lettered(family: &'static str, reason_class: &str) {
    counter!(INGEST_RECORDS, "family" => family, "outcome" => "dead_lettered").increment(1);
    counter!(INGEST_DEAD_LETTERS, "reason" => bounded_reason(reason_class)).increment(1);
    tracing::debug!(family, reason = reason_class, "record dead-lettered");
}

/// A dead letter that had to be cut to fit the producer's `message.max.bytes` (it is counted
/// by reason with the others): logged, with where the whole record is, never its content.
pub fn ingest_dead_letter_truncated(topic: &str, partition: i32, offset: i64) {
    tracing::warn!(
        topic,
        partition,
        offset,
        "dead letter cut to the producer's message.max.bytes (pulse.dlq.truncated)"
    );
}

/// Reason classes are a closed set; anything else is counted as `other` so labels stay bounded.
fn bounded_reason(class: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "bad_json",
        "not_an_object",
        "bad_field",
        "bad_protobuf",
        "missing_field",
        "unknown_type",
        "bad_amount",
        "bad_currency",
        "bad_timestamp",
        "bad_score",
        "bad_sentiment",
        "too_large",
        "tombstone",
        "future_event",
    ];
    KNOWN
        .iter()
        .find(|k| **k == class)
        .copied()
        .unwrap_or("other")
}

pub fn ingest_merge_forced(n: u64) {
    counter!(INGEST_MERGE_FORCED).increment(n);
}

pub fn ingest_ticks(n: u64, watermark_ms: i64) {
    counter!(INGEST_TICKS).increment(n);
    gauge!(INGEST_WATERMARK).set(watermark_ms as f64 / 1000.0);
}

pub fn fold_corrupt(partition: i32, offset: i64, error: &dyn std::fmt::Display) {
    counter!(FOLD_CORRUPT).increment(1);
    tracing::error!(partition, offset, %error, "undecodable canonical record sent to the dead-letter topic");
}

pub fn fold_committed(partition: i32, records: usize, seconds: f64, clock_ms: i64) {
    histogram!(FOLD_COMMIT_SECONDS).record(seconds);
    histogram!(FOLD_COMMIT_RECORDS).record(records as f64);
    gauge!(FOLD_CLOCK, "partition" => partition.to_string()).set(clock_ms as f64 / 1000.0);
}

pub fn outbox_depth(depth: usize) {
    gauge!(FOLD_OUTBOX_DEPTH).set(depth as f64);
}

pub fn customers_in_stage(stage: &'static str, delta: f64) {
    gauge!(CUSTOMERS, "stage" => stage).increment(delta);
}

pub fn customers_in_segment(segment: &'static str, delta: f64) {
    gauge!(CUSTOMERS_BY_SEGMENT, "segment" => segment).increment(delta);
}

pub fn partitions_assigned(n: usize) {
    gauge!(PARTITIONS).set(n as f64);
}

/// Consumer lag per assigned partition, from librdkafka's statistics (emitted every
/// `statistics.interval.ms`). Partitions and topics are few and fixed: the labels stay bounded.
pub fn consumer_lag(group: &str, stats: &rdkafka::Statistics) {
    for (topic, t) in &stats.topics {
        for (p, part) in &t.partitions {
            // -1 is librdkafka's internal UA partition; a negative lag means "unknown yet".
            if *p >= 0 && part.consumer_lag >= 0 {
                gauge!(CONSUMER_LAG, "group" => group.to_string(), "topic" => topic.clone(), "partition" => p.to_string())
                    .set(part.consumer_lag as f64);
            }
        }
    }
}

/// `(key, handle)` registered on first use of `key`; a handful of keys, so a linear scan
/// (pointer comparison first: keys are `&'static str` from `as_str()`) beats hashing.
fn slot<'a, T>(
    v: &'a mut Vec<(&'static str, T)>,
    key: &'static str,
    make: impl FnOnce() -> T,
) -> &'a T {
    let i = match v
        .iter()
        .position(|(k, _)| std::ptr::eq(*k, key) || *k == key)
    {
        Some(i) => i,
        None => {
            v.push((key, make()));
            v.len() - 1
        }
    };
    &v[i].1
}

/// Ingest's per-record metrics, with handles registered once per ingest run (with whatever
/// recorder is installed then).
#[derive(Default)]
pub struct IngestMetrics {
    families: Vec<(&'static str, (Counter, Histogram))>,
}

impl IngestMetrics {
    fn family(&mut self, family: &'static str) -> &(Counter, Histogram) {
        slot(&mut self.families, family, || {
            (
                counter!(INGEST_RECORDS, "family" => family, "outcome" => "accepted"),
                histogram!(INGEST_DECODE_SECONDS, "family" => family),
            )
        })
    }

    /// One record decoded (accepted or not), `started` when decoding began.
    pub fn decoded(&mut self, family: &'static str, started: Instant) {
        self.family(family)
            .1
            .record(started.elapsed().as_secs_f64());
    }

    pub fn accepted(&mut self, family: &'static str) {
        self.family(family).0.increment(1);
    }
}

/// What caused the alerts fold is about to emit.
#[derive(Clone, Copy)]
enum Cause {
    Event(Millis),
    Timer(Millis),
}

/// An alert waiting for its broker acknowledgement, for the end-to-end histograms.
struct Noted {
    seq: u64,
    consumed: Option<Instant>,
    cause: Cause,
}

/// At most this many alerts wait for their acknowledgement in [`FoldMetrics`]; beyond, the
/// oldest are forgotten (a sample lost, never memory without bound).
const MAX_NOTED: usize = 100_000;

/// Fold's per-record metrics for one partition task: handles registered once, when the task
/// is created, plus the wall-clock instants the end-to-end histograms need. Fold tells it what
/// it does (`consumed`, `event`, `timer_fired`, `alert`, `acked`); none of what is kept here
/// flows back into fold's state or alerts.
pub struct FoldMetrics {
    events: Vec<(&'static str, Counter)>,
    duplicates: Counter,
    late: Counter,
    timers_fired: Counter,
    alerts: [Counter; AlertKind::ALL.len()],
    staleness_event: Histogram,
    staleness_timer: Histogram,
    latency: Histogram,
    consumed: Option<Instant>,
    cause: Cause,
    noted: VecDeque<Noted>,
}

impl FoldMetrics {
    /// Registers the handles with the recorder installed now (a no-op recorder if none is).
    pub fn register() -> FoldMetrics {
        FoldMetrics {
            events: Vec::new(),
            duplicates: counter!(FOLD_DUPLICATES),
            late: counter!(FOLD_LATE),
            timers_fired: counter!(FOLD_TIMERS_FIRED),
            alerts: AlertKind::ALL.map(|k| counter!(ALERTS, "type" => k.as_str())),
            staleness_event: histogram!(ALERT_STALENESS, "cause" => "event"),
            staleness_timer: histogram!(ALERT_STALENESS, "cause" => "timer"),
            latency: histogram!(ALERT_LATENCY),
            consumed: None,
            cause: Cause::Event(0),
            noted: VecDeque::new(),
        }
    }

    /// Fold read a canonical record (the wall-clock instant alerts it causes are timed from).
    pub fn consumed(&mut self) {
        self.consumed = Some(Instant::now());
    }

    /// An event was folded; alerts emitted next are caused by it.
    pub fn event(&mut self, kind: &'static str, occurred_at: Millis) {
        slot(
            &mut self.events,
            kind,
            || counter!(FOLD_EVENTS, "kind" => kind),
        )
        .increment(1);
        self.cause = Cause::Event(occurred_at);
    }

    pub fn duplicate(&self) {
        self.duplicates.increment(1);
    }

    /// An event older than its partition's clock was read (see [`FOLD_LATE`]).
    pub fn late(&self) {
        self.late.increment(1);
    }

    /// A timer due at `due` fired; alerts emitted next are caused by it.
    pub fn timer_fired(&mut self, due: Millis) {
        self.timers_fired.increment(1);
        self.cause = Cause::Timer(due);
    }

    /// An alert of `kind` goes into the outbox with sequence number `outbox_seq`.
    pub fn alert(&mut self, kind: AlertKind, outbox_seq: u64) {
        if let Some(i) = AlertKind::ALL.iter().position(|k| *k == kind) {
            self.alerts[i].increment(1);
        }
        if self.noted.len() >= MAX_NOTED {
            self.noted.pop_front();
        }
        self.noted.push_back(Noted {
            seq: outbox_seq,
            consumed: self.consumed,
            cause: self.cause,
        });
    }

    /// The broker acknowledged every outbox record up to `last_seq`.
    pub fn acked(&mut self, last_seq: u64) {
        let now = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        while self.noted.front().is_some_and(|n| n.seq <= last_seq) {
            let n = self.noted.pop_front().expect("front");
            if let Some(consumed) = n.consumed {
                self.latency
                    .record(now.saturating_duration_since(consumed).as_secs_f64());
            }
            let (h, at) = match n.cause {
                Cause::Event(t) => (&self.staleness_event, t),
                Cause::Timer(t) => (&self.staleness_timer, t),
            };
            h.record(((now_ms - at as f64) / 1000.0).max(0.0));
        }
    }
}

/// The recorder's exposition followed by the series sampled now: per held partition its sled
/// store's bytes on disk and its timers pending (sampled by the caller, fold's `Shared`, so
/// this module needs nothing of fold), then the process from `/proc/self`.
pub fn render(
    handle: &PrometheusHandle,
    state_bytes: &[(i32, u64)],
    timers_pending: &[(i32, i64)],
) -> String {
    let mut out = handle.render();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    family(
        &mut out,
        FOLD_STATE_BYTES,
        "gauge",
        "Bytes on disk of a partition's sled store (state, dedupe, outbox), by partition; sampled at scrape time.",
        state_bytes.iter().map(|(p, b)| (Some(*p), *b as f64)),
    );
    family(
        &mut out,
        FOLD_TIMERS_PENDING,
        "gauge",
        "Customer timers scheduled and not yet fired, by partition (as of the partition's last commit); sampled at scrape time.",
        timers_pending.iter().map(|(p, n)| (Some(*p), *n as f64)),
    );
    if let Some(s) = ProcSample::read() {
        let one = |v: f64| std::iter::once((None, v));
        family(
            &mut out,
            PROCESS_CPU,
            "counter",
            "User and system CPU time spent by the process, in seconds (/proc/self/stat).",
            one(s.cpu_seconds),
        );
        family(
            &mut out,
            PROCESS_RSS,
            "gauge",
            "Resident memory of the process in bytes (VmRSS, /proc/self/status).",
            one(s.rss_bytes),
        );
        family(
            &mut out,
            PROCESS_VSZ,
            "gauge",
            "Virtual memory size of the process in bytes (/proc/self/stat).",
            one(s.vsize_bytes),
        );
        family(
            &mut out,
            PROCESS_OPEN_FDS,
            "gauge",
            "Open file descriptors of the process (/proc/self/fd).",
            one(s.open_fds),
        );
        if let Some(max) = s.max_fds {
            family(
                &mut out,
                PROCESS_MAX_FDS,
                "gauge",
                "Soft limit on open file descriptors (/proc/self/limits).",
                one(max),
            );
        }
        if let Some(start) = s.start_time {
            family(
                &mut out,
                PROCESS_START,
                "gauge",
                "Start time of the process since the Unix epoch, in seconds.",
                one(start),
            );
        }
    }
    out
}

/// One metric family in the text exposition format; nothing when it has no samples.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (Option<i32>, f64)>,
) {
    let mut samples = samples.peekable();
    if samples.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (partition, v) in samples {
        match partition {
            Some(p) => writeln!(out, "{name}{{partition=\"{p}\"}} {v}"),
            None => writeln!(out, "{name} {v}"),
        }
        .expect("write to a String");
    }
}

/// The process, from Linux's /proc/self (None elsewhere).
struct ProcSample {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    start_time: Option<f64>,
}

/// Clock ticks per second in /proc/*/stat: USER_HZ, 100 on every Linux architecture's ABI
/// (sysconf would need libc and unsafe code; Prometheus' Go procfs library assumes 100 too).
const USER_HZ: f64 = 100.0;

impl ProcSample {
    fn read() -> Option<ProcSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        let (utime, stime, start_ticks, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find_map(|l| l.strip_prefix("Max open files"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            });
        Some(ProcSample {
            cpu_seconds: (utime + stime) / USER_HZ,
            rss_bytes: rss_kib * 1024.0,
            vsize_bytes: vsize,
            open_fds,
            max_fds,
            start_time: boot_time().map(|b| b + start_ticks / USER_HZ),
        })
    }
}

/// System boot time (Unix seconds, /proc/stat `btime`), read once.
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

/// A customer_erased request applied. Logged without the customer id or its key.
pub fn customer_erased(partition: i32, offset: i64, already_erased: bool) {
    let outcome = if already_erased {
        "already_erased"
    } else {
        "erased"
    };
    counter!(ERASURES, "outcome" => outcome).increment(1);
    tracing::info!(partition, offset, outcome, "customer erasure applied");
}

/// An event of an erased customer, dropped.
pub fn fold_suppressed() {
    counter!(SUPPRESSED_EVENTS).increment(1);
}

pub fn state_rewritten(partition: i32, r: &pulse_store::Rewritten, took: std::time::Duration) {
    counter!(STATE_REWRITES).increment(1);
    histogram!(STATE_REWRITE_SECONDS).record(took.as_secs_f64());
    tracing::info!(
        partition,
        records = r.records,
        bytes_before = r.bytes_before,
        bytes_after = r.bytes_after,
        ms = took.as_millis() as u64,
        "partition database rewritten after erasure"
    );
}

/// Exactly-once mode: one of fold's transactions ended (`committed` or `aborted`).
pub fn fold_transaction(outcome: &'static str) {
    counter!(FOLD_TRANSACTIONS, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_read_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let s = ProcSample::read().expect("/proc/self");
        assert!(s.rss_bytes > 1e6, "rss {}", s.rss_bytes);
        assert!(s.vsize_bytes >= s.rss_bytes);
        assert!(s.open_fds >= 3.0);
        assert!(s.cpu_seconds >= 0.0);
        let now = crate::wall_clock_ms() as f64 / 1000.0;
        let start = s.start_time.expect("btime");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    #[test]
    fn families_without_samples_are_left_out() {
        let mut out = String::new();
        family(&mut out, "x_bytes", "gauge", "h", std::iter::empty());
        assert!(out.is_empty());
        family(
            &mut out,
            "x_bytes",
            "gauge",
            "h",
            [(Some(3), 1.5)].into_iter(),
        );
        assert_eq!(
            out,
            "# HELP x_bytes h\n# TYPE x_bytes gauge\nx_bytes{partition=\"3\"} 1.5\n"
        );
    }
}
