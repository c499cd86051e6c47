//! What fold shares with the HTTP API and the scrape: the stores and committed clocks of the
//! partitions this instance folds, and per partition the customers in each announced stage and
//! segment and the timers pending, kept by fold as state changes and persisted with each
//! commit (never scanned: invariant 11).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use pulse_core::{CustomerState, Segment, Stage};
use pulse_store::{PartitionStore, StoreError};

use crate::telemetry;

/// What the HTTP API may read: the stores of the partitions this instance folds and their
/// committed clocks, and per partition the customers in each announced stage and segment.
#[derive(Default)]
pub struct Shared {
    pub partitions: RwLock<BTreeMap<i32, (PartitionStore, Arc<AtomicI64>)>>,
    pub canonical_partitions: AtomicI64,
    pub counts: RwLock<BTreeMap<i32, Arc<Counts>>>,
    /// What readiness is judged on: whether the group assigned this instance its
    /// partitions, and per partition held whether it is restoring or how far it has folded.
    pub progress: RwLock<Progress>,
    /// Partitions this instance restored from a changelog checkpoint since it started.
    pub restored: AtomicI64,
}

/// Fold's progress as `/readyz` judges it (see [`Shared::fold_readiness`]).
#[derive(Default)]
pub struct Progress {
    /// Set once the group has handed this instance an assignment (possibly empty).
    pub assigned: bool,
    pub partitions: BTreeMap<i32, PartitionProgress>,
    /// The end of each held canonical partition (its last stable offset, which is the high
    /// watermark unless a transaction is open), from the fold consumer's statistics
    /// (`statistics.interval.ms`); absent until the first statistics after the assignment.
    pub ends: BTreeMap<i32, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionProgress {
    /// Assigned, its state not yet restored (from the changelog, or found current locally).
    Restoring,
    /// Folding; the next offset to fold (as of the fold loop's last commit tick).
    Folding { next_offset: i64 },
}

impl Shared {
    /// Whether fold holds its partitions and has caught up: `Ok(why)` when the group has
    /// assigned this instance its partitions (none is fine: more instances than partitions),
    /// none of them is restoring and each is at most `max_lag` records behind the end of its
    /// canonical partition (`max_lag` 0: no lag bound); `Err(why)` otherwise.
    pub fn fold_readiness(&self, max_lag: u64) -> Result<String, String> {
        let progress = self.progress.read().expect("lock");
        if !progress.assigned {
            return Err("fold waits for its partition assignment from the group".into());
        }
        let mut restoring = Vec::new();
        let mut behind = Vec::new();
        for (p, state) in &progress.partitions {
            match *state {
                PartitionProgress::Restoring => restoring.push(p.to_string()),
                PartitionProgress::Folding { .. } if max_lag == 0 => {}
                PartitionProgress::Folding { next_offset } => match progress.ends.get(p) {
                    None => behind.push(format!("partition {p}: end of the log not known yet")),
                    Some(end) => {
                        let lag = end.saturating_sub(next_offset).max(0);
                        if lag as u64 > max_lag {
                            behind.push(format!("partition {p}: {lag} records behind"));
                        }
                    }
                },
            }
        }
        let mut why = Vec::new();
        if !restoring.is_empty() {
            why.push(format!("restoring partitions {}", restoring.join(", ")));
        }
        if !behind.is_empty() {
            why.push(format!(
                "{} (bound: http.ready_max_lag_records = {max_lag})",
                behind.join("; ")
            ));
        }
        if !why.is_empty() {
            return Err(why.join("; "));
        }
        Ok(match progress.partitions.len() {
            0 => "ready: no partitions assigned (more instances than partitions)".into(),
            n => format!("ready: {n} partitions held and caught up"),
        })
    }

    /// The canonical partitions' ends from the fold consumer's statistics (held partitions
    /// only).
    pub(super) fn statistics(&self, canonical: &str, stats: &rdkafka::Statistics) {
        let Some(topic) = stats.topics.get(canonical) else {
            return;
        };
        let mut progress = self.progress.write().expect("lock");
        for (p, part) in &topic.partitions {
            let end = crate::kafka::partition_end(part);
            if end >= 0 && progress.partitions.contains_key(p) {
                progress.ends.insert(*p, end);
            }
        }
    }

    pub(super) fn set_progress(&self, partition: i32, state: PartitionProgress) {
        (self.progress.write().expect("lock").partitions).insert(partition, state);
    }

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

    /// The partition's counts as its last commit kept them (moving the gauges by them). A
    /// store from before counts were kept (schema 2, upgraded at open) is counted once.
    pub(super) fn load(store: &PartitionStore) -> Result<Counts, StoreError> {
        let mut kept = store.counts()?;
        if !kept.keys().any(|k| k.starts_with("stage.")) && kept.get("customers") > Some(&0) {
            let mut states = Vec::new();
            for entry in store.customers() {
                states.push(entry?.1);
            }
            kept.extend(tally(states.iter()));
        }
        let counts = Counts::default();
        for s in Stage::ALL {
            counts.stage(s.as_str(), kept.get(&stage_key(&s)).copied().unwrap_or(0));
        }
        for s in Segment::ALL {
            counts.segment(s.as_str(), kept.get(&segment_key(&s)).copied().unwrap_or(0));
        }
        counts
            .timers
            .store(kept.get("timers").copied().unwrap_or(0), Ordering::Relaxed);
        Ok(counts)
    }

    /// What the commit keeps: every stage's and segment's count, zeros included.
    pub(super) fn snapshot(&self) -> Vec<(String, i64)> {
        let stages = self.stages().map(|(s, n)| (format!("stage.{s}"), n));
        stages
            .chain(self.segments().map(|(s, n)| (format!("segment.{s}"), n)))
            .collect()
    }

    /// Takes this partition's counts back out of the process-wide gauges (revoked, closed).
    pub(super) fn forget(&self) {
        for (s, n) in self.stages().collect::<Vec<_>>() {
            self.stage(s, -n);
        }
        for (s, n) in self.segments().collect::<Vec<_>>() {
            self.segment(s, -n);
        }
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

fn stage_key(s: &Stage) -> String {
    format!("stage.{}", s.as_str())
}

fn segment_key(s: &Segment) -> String {
    format!("segment.{}", s.as_str())
}

/// The kept counts of a set of states, computed without touching any gauge (a restore's
/// commit; a store from before counts were kept): customers, timers, per stage and segment.
pub(super) fn tally<'a>(states: impl Iterator<Item = &'a CustomerState>) -> Vec<(String, i64)> {
    let mut n: BTreeMap<String, i64> = Stage::ALL
        .iter()
        .map(stage_key)
        .chain(Segment::ALL.iter().map(segment_key))
        .chain(["customers".to_string(), "timers".to_string()])
        .map(|k| (k, 0))
        .collect();
    for s in states {
        for k in [
            format!("stage.{}", s.announced.stage.as_str()),
            format!("segment.{}", s.announced.segment.as_str()),
            "customers".to_string(),
        ] {
            *n.entry(k).or_default() += 1;
        }
        if s.next_timer.is_some() {
            *n.entry("timers".into()).or_default() += 1;
        }
    }
    n.into_iter().collect()
}
