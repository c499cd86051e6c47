//! What fold shares with the HTTP API and the scrape: the stores and committed clocks of the
//! partitions this instance folds, and per partition the customers in each announced stage and
//! segment and the timers pending, kept by fold as state changes (never scanned: invariant 11).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use pulse_core::{CustomerState, Segment, Stage};
use pulse_store::PartitionStore;

use crate::telemetry;

/// What the HTTP API may read: the stores of the partitions this instance folds and their
/// committed clocks, and per partition the customers in each announced stage and segment.
#[derive(Default)]
pub struct Shared {
    pub partitions: RwLock<BTreeMap<i32, (PartitionStore, Arc<AtomicI64>)>>,
    pub canonical_partitions: AtomicI64,
    pub counts: RwLock<BTreeMap<i32, Arc<Counts>>>,
    /// Partitions being restored from the changelog (readiness is false while any is).
    pub restoring: AtomicI64,
    /// Partitions this instance restored from a changelog checkpoint since it started.
    pub restored: AtomicI64,
}

impl Shared {
    /// Bytes on disk of each held partition's store, for the scrape-time sample.
    pub fn state_bytes(&self) -> Vec<(i32, u64)> {
        self.partitions
            .read()
            .expect("lock")
            .iter()
            .map(|(p, (store, _))| (*p, store.size_on_disk()))
            .collect()
    }

    /// Timers pending of each held partition (as of its last commit), for the scrape-time
    /// sample.
    pub fn timers_pending(&self) -> Vec<(i32, i64)> {
        self.counts
            .read()
            .expect("lock")
            .iter()
            .map(|(p, c)| (*p, c.timers_pending()))
            .collect()
    }
}

/// Customers of one partition per announced lifecycle stage and RFM segment, kept up to date
/// by fold as customers appear, change and are erased (never by a scan). Each change also
/// moves the process-wide `pulse_customers` / `pulse_customers_by_segment` gauges. Counts
/// cover the working set, which runs ahead of the last commit by at most one batch.
#[derive(Default)]
pub struct Counts {
    stages: [AtomicI64; Stage::ALL.len()],
    segments: [AtomicI64; Segment::ALL.len()],
    /// Timers scheduled, as of the last commit (`pulse_fold_pending_timers`).
    pub(super) timers: AtomicI64,
}

impl Counts {
    pub(super) fn stage(&self, name: &str, delta: i64) {
        if let Some(i) = Stage::ALL.iter().position(|s| s.as_str() == name) {
            self.stages[i].fetch_add(delta, Ordering::Relaxed);
            telemetry::customers_in_stage(Stage::ALL[i].as_str(), delta as f64);
        }
    }

    pub(super) fn segment(&self, name: &str, delta: i64) {
        if let Some(i) = Segment::ALL.iter().position(|s| s.as_str() == name) {
            self.segments[i].fetch_add(delta, Ordering::Relaxed);
            telemetry::customers_in_segment(Segment::ALL[i].as_str(), delta as f64);
        }
    }

    pub(super) fn customer(&self, state: &CustomerState, delta: i64) {
        self.stage(state.announced.stage.as_str(), delta);
        self.segment(state.announced.segment.as_str(), delta);
    }

    pub fn timers_pending(&self) -> i64 {
        self.timers.load(Ordering::Relaxed)
    }

    /// `(stage, customers)` for every stage, zeros included.
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        Stage::ALL
            .iter()
            .zip(&self.stages)
            .map(|(s, n)| (s.as_str(), n.load(Ordering::Relaxed)))
    }

    /// `(segment, customers)` for every segment, zeros included.
    pub fn segments(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        Segment::ALL
            .iter()
            .zip(&self.segments)
            .map(|(s, n)| (s.as_str(), n.load(Ordering::Relaxed)))
    }
}
