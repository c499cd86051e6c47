//! Telemetry: every metric pulse exports is named and described here, and pipeline code reports
//! through the small `emit` functions below (one per internal event), never through `counter!`
//! directly. Names follow `pulse_<what>_<unit>[_total]`; labels are bounded (no customer ids).

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const INGEST_RECORDS: &str = "pulse_ingest_records_total";
pub const INGEST_DEAD_LETTERS: &str = "pulse_ingest_dead_letters_total";
pub const INGEST_TICKS: &str = "pulse_ingest_ticks_total";
pub const INGEST_WATERMARK: &str = "pulse_ingest_watermark_seconds";
pub const FOLD_EVENTS: &str = "pulse_fold_events_total";
pub const FOLD_DUPLICATES: &str = "pulse_fold_duplicate_events_total";
pub const FOLD_TIMERS_FIRED: &str = "pulse_fold_timers_fired_total";
pub const FOLD_COMMIT_SECONDS: &str = "pulse_fold_commit_duration_seconds";
pub const FOLD_COMMIT_RECORDS: &str = "pulse_fold_commit_records";
pub const FOLD_OUTBOX_DEPTH: &str = "pulse_fold_outbox_records";
pub const FOLD_CLOCK: &str = "pulse_fold_partition_clock_seconds";
pub const FOLD_CORRUPT: &str = "pulse_fold_corrupt_records_total";
pub const ALERTS: &str = "pulse_alerts_total";
pub const CUSTOMERS: &str = "pulse_customers";
pub const CUSTOMERS_BY_SEGMENT: &str = "pulse_customers_by_segment";
pub const PARTITIONS: &str = "pulse_fold_partitions_assigned";
pub const CONSUMER_LAG: &str = "pulse_consumer_lag_records";
pub const RESTORE_RECORDS: &str = "pulse_restore_records_total";
pub const RESTORE_IN_PROGRESS: &str = "pulse_restore_partitions_in_progress";
pub const RESTORES: &str = "pulse_restores_total";
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
                    metrics_exporter_prometheus::Matcher::Full(FOLD_COMMIT_RECORDS.to_string()),
                    &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0],
                )
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
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
        "Changelog records read while restoring partitions with no local state."
    );
    describe_gauge!(
        RESTORE_IN_PROGRESS,
        Unit::Count,
        "Partitions being restored from the changelog (readiness is false while above 0)."
    );
    describe_counter!(RESTORES, "Partition restores from the changelog, finished.");
    describe_counter!(
        FOLD_TRANSACTIONS,
        "Exactly-once mode: fold's Kafka transactions, by outcome (committed, aborted)."
    );
    // Counters that may stay at zero for a long time are exported from the start, so rules and
    // dashboards see a series (rate() of a missing series is no data, not 0).
    counter!(FOLD_DUPLICATES).absolute(0);
    counter!(FOLD_CORRUPT).absolute(0);
    counter!(FOLD_TIMERS_FIRED).absolute(0);
    counter!(RESTORE_RECORDS).absolute(0);
    counter!(RESTORES).absolute(0);
    gauge!(RESTORE_IN_PROGRESS).set(0.0);
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

pub fn ingest_accepted(family: &'static str) {
    counter!(INGEST_RECORDS, "family" => family, "outcome" => "accepted").increment(1);
}

pub fn ingest_dead_lettered(family: &'static str, reason_class: &str) {
    counter!(INGEST_RECORDS, "family" => family, "outcome" => "dead_lettered").increment(1);
    counter!(INGEST_DEAD_LETTERS, "reason" => bounded_reason(reason_class)).increment(1);
    tracing::debug!(family, reason = reason_class, "record dead-lettered");
}

/// Reason classes are a closed set; anything else is counted as `other` so labels stay bounded.
fn bounded_reason(class: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "bad_json",
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
        "no_value",
    ];
    KNOWN
        .iter()
        .find(|k| **k == class)
        .copied()
        .unwrap_or("other")
}

pub fn ingest_ticks(n: u64, watermark_ms: i64) {
    counter!(INGEST_TICKS).increment(n);
    gauge!(INGEST_WATERMARK).set(watermark_ms as f64 / 1000.0);
}

pub fn fold_event(kind: &'static str) {
    counter!(FOLD_EVENTS, "kind" => kind).increment(1);
}

pub fn fold_duplicate() {
    counter!(FOLD_DUPLICATES).increment(1);
}

pub fn fold_timer_fired() {
    counter!(FOLD_TIMERS_FIRED).increment(1);
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

pub fn alert(kind: &'static str) {
    counter!(ALERTS, "type" => kind).increment(1);
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

/// Exactly-once mode: one of fold's transactions ended (`committed` or `aborted`).
pub fn fold_transaction(outcome: &'static str) {
    counter!(FOLD_TRANSACTIONS, "outcome" => outcome).increment(1);
}
