//! The partition task: the in-memory working set of one assigned partition between commits,
//! around pulse-core's `Partition` (clock, customers, timers, decisions). It owns what fold
//! adds to the rules: dedupe by event id within the window, suppression of erased customers,
//! erasure itself, and emitting alerts, confirmations and dead letters into the outbox with
//! their alert ids and lineage; `take_commit` hands everything since the last commit over as
//! one `Commit` (with the changelog records, `changelog::commit_records`). Customers and
//! timers live in the partition's store behind pulse-store's bounded `CachedStates`, so
//! loading a partition reads its counts, dedupe window and outbox, never its customers.
//! No I/O except those reads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse_codec::headers as hdr;
use pulse_codec::{
    alert_headers, alert_to_wire, customer_changelog_key, encode_alert, encode_erasure,
    erasure_confirmation, erasure_headers, Encoding,
};
use pulse_core::hash::{customer_key, event_key};
use pulse_core::{Alert, AlertKind, Body, CustomerState, Millis, Partition, DAY};
use pulse_store::{CachedStates, Checkpoint, Commit, OutboxRecord, PartitionStore};

use super::changelog;
use super::counts::Counts;
use crate::config::Config;
use crate::{telemetry, PipelineError};

/// The in-memory working set of one partition between commits.
pub(super) struct PartitionTask {
    pub(super) partition: i32,
    pub(super) store: PartitionStore,
    /// The rules' side: clock, customers, timers. Dedupe, suppression, erasure, the outbox
    /// and the counts below are the service's, applied around its advance and apply steps.
    pub(super) core: Partition<CachedStates>,
    /// event-id hash → (seen at, customer key): an erasure removes its customer's entries.
    dedupe: HashMap<u128, (Millis, u128)>,
    dedupe_order: VecDeque<(Millis, u128)>,
    /// Keys of erased customers: their later events are dropped (erasure is permanent).
    suppressed: HashSet<u128>,
    pub(super) next_offset: i64,
    pub(super) committed_clock: Arc<AtomicI64>,
    pub(super) counts: Arc<Counts>,
    /// Since the last commit (the changed customers are `CachedStates`' to track):
    erased: HashSet<String>,
    /// Dedupe inserts (`Some((seen at, customer key))`) and removals (`None`), in order.
    dedupe_changes: Vec<(u128, Option<(Millis, u128)>)>,
    /// Customers erased (customer key, clock) and committed outbox records withdrawn.
    new_suppressed: Vec<(u128, Millis)>,
    outbox_purged: Vec<u64>,
    /// An erasure is committed but the database not yet rewritten; the last rewrite.
    pub(super) rewrite_pending: bool,
    pub(super) last_rewrite: Option<Instant>,
    outbox: Vec<(u64, OutboxRecord)>,
    pub(super) records: usize,
    /// Index of the next alert caused by the record being folded (part of its alert_id).
    pub(super) alert_index: u32,
    next_outbox_seq: u64,
    /// Committed but not yet acknowledged.
    pub(super) unacked: Vec<(u64, OutboxRecord)>,
    /// Metric handles and wall-clock instants, for metrics only (never read by decisions).
    pub(super) metrics: telemetry::FoldMetrics,
    /// The next offset of the last sled checkpoint.
    pub(super) committed_offset: i64,
    /// Exactly-once: the group's committed offset at assignment. Records below it are
    /// already published (with that offset, in a transaction): refolding them emits nothing.
    pub(super) published_upto: i64,
}

impl PartitionTask {
    pub(super) fn load(
        partition: i32,
        store: PartitionStore,
        cache_bytes: usize,
    ) -> Result<Self, PipelineError> {
        // No checkpoint: a partition that has folded nothing, at `Partition::START`.
        let checkpoint = store.checkpoint()?.unwrap_or(Checkpoint {
            next_offset: 0,
            clock: Partition::START,
        });
        let core = Partition::with_states(
            checkpoint.clock,
            CachedStates::open(store.clone(), cache_bytes)?,
        );
        let counts = Arc::new(Counts::load(&store)?);
        let entries = store.dedupe_entries()?;
        let dedupe = entries.iter().map(|(k, t, c)| (*k, (*t, *c))).collect();
        let mut order: Vec<(Millis, u128)> = entries.iter().map(|(k, t, _)| (*t, *k)).collect();
        order.sort_unstable();
        counts
            .timers
            .store(core.pending_timers() as i64, Ordering::Relaxed);
        let suppressed = store.suppressed()?.into_iter().map(|(c, _)| c).collect();
        let rewrite_pending = store.rewrite_pending()?;
        let unacked = store.outbox()?;
        let next_outbox_seq = unacked.last().map_or(0, |(s, _)| s + 1);
        Ok(PartitionTask {
            partition,
            core,
            dedupe,
            dedupe_order: order.into(),
            suppressed,
            new_suppressed: Vec::new(),
            outbox_purged: Vec::new(),
            rewrite_pending,
            last_rewrite: None,
            next_offset: checkpoint.next_offset,
            committed_clock: Arc::new(AtomicI64::new(checkpoint.clock)),
            counts,
            erased: HashSet::new(),
            dedupe_changes: Vec::new(),
            outbox: Vec::new(),
            records: 0,
            alert_index: 0,
            next_outbox_seq,
            unacked,
            committed_offset: checkpoint.next_offset,
            published_upto: 0,
            store,
            metrics: telemetry::FoldMetrics::register(),
        })
    }

    pub(super) fn forget_stage_counts(&self) {
        self.counts.forget();
    }

    /// A read of the store that failed since the last call: fold stops before committing
    /// anything decided after it (the customer was seen as unknown).
    pub(super) fn read_error(&mut self) -> Result<(), PipelineError> {
        match self.core.states_mut().take_error() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Moves the clock to `time` if later, firing the timers it passes (`Partition::advance`:
    /// (due, customer) order, so replay fires them identically), then evicts the dedupe
    /// entries the window left behind.
    pub(super) fn advance_clock(&mut self, time: Millis, offset: i64, config: &Config) {
        if time <= self.core.clock() {
            return;
        }
        // Collected, then emitted: emitting needs the whole task, which the partition's
        // advance borrows.
        let mut fired: Vec<(Millis, Vec<Alert>)> = Vec::new();
        self.core
            .advance(time, &config.scoring, |_, due, _, alerts| {
                fired.push((due, alerts));
            });
        for (due, alerts) in fired {
            self.metrics.timer_fired(due);
            for alert in alerts {
                self.emit(alert, offset, config);
            }
        }
        self.evict_dedupe(config);
    }

    fn evict_dedupe(&mut self, config: &Config) {
        let horizon = self.core.clock() - config.fold.dedupe_window_days * DAY;
        while let Some(&(t, k)) = self.dedupe_order.front() {
            if t >= horizon {
                break;
            }
            self.dedupe_order.pop_front();
            // An erasure may have removed the entry already.
            if self.dedupe.get(&k).is_some_and(|(at, _)| *at == t) {
                self.dedupe.remove(&k);
                self.dedupe_changes.push((k, None));
            }
        }
    }

    pub(super) fn apply(&mut self, event: &pulse_core::Event, offset: i64, config: &Config) {
        let customer = customer_key(&event.customer_id);
        if event.body == Body::Erased {
            // Not deduped: a repeated request is idempotent and confirmed again.
            self.metrics
                .event(event.body.kind_name(), event.occurred_at);
            return self.erase(event, customer, offset, config);
        }
        if self.suppressed.contains(&customer) {
            telemetry::fold_suppressed();
            return;
        }
        if config.fold.dedupe_window_days > 0 {
            let key = event_key(&event.customer_id, &event.event_id);
            if self.dedupe.contains_key(&key) {
                self.metrics.duplicate();
                return;
            }
            let clock = self.core.clock();
            self.dedupe.insert(key, (clock, customer));
            self.dedupe_order.push_back((clock, key));
            self.dedupe_changes.push((key, Some((clock, customer))));
        }
        self.metrics
            .event(event.body.kind_name(), event.occurred_at);
        let id = &event.customer_id;
        if self.core.lookup(id).is_none() {
            self.counts.customer(&CustomerState::default(), 1);
        }
        let alerts = self.core.apply(event, &config.scoring);
        for alert in alerts {
            self.emit(alert, offset, config);
        }
    }

    /// Forgets the customer: state, timer, dedupe entries and the outbox records about them not
    /// yet acknowledged (the batch's and, withdrawn in this commit, earlier commits'), then
    /// suppresses the customer's key for good and confirms on the erasures topic. The commit
    /// writes changelog tombstones (the snapshot's and one per dedupe entry of the customer)
    /// and an erasure marker; the database is rewritten after it.
    ///
    /// Withdrawing alerts that had not left is the one place where the alerts emitted depend
    /// on commit timing (an alert committed and sent before the erasure has left for good).
    /// Dead letters keep their original bytes by design and are not withdrawn.
    fn erase(&mut self, event: &pulse_core::Event, customer: u128, offset: i64, config: &Config) {
        let id = &event.customer_id;
        let already_erased = !self.suppressed.insert(customer);
        if let Some(state) = self.core.remove(id) {
            self.counts.customer(&state, -1);
        }
        let mine: Vec<u128> = self
            .dedupe
            .iter()
            .filter(|(_, (_, c))| *c == customer)
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            self.dedupe.remove(&k);
            self.dedupe_changes.push((k, None));
        }
        // Alerts (keyed by the id) and changelog snapshots (keyed by the customer key; the
        // tombstone of this commit supersedes them), never dead letters.
        let dead_letters = &config.topics.dead_letters;
        let snapshot_key = customer_changelog_key(customer);
        let about = |r: &OutboxRecord| {
            (r.key == *id && r.topic != *dead_letters)
                || (r.key == snapshot_key && r.topic == config.topics.changelog)
        };
        self.outbox.retain(|(_, r)| !about(r));
        let purged: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, r)| about(r))
            .map(|(seq, _)| *seq)
            .collect();
        self.unacked.retain(|(_, r)| !about(r));
        self.outbox_purged.extend(purged);
        if !already_erased {
            self.erased.insert(id.clone());
            self.new_suppressed.push((customer, self.core.clock()));
        }
        telemetry::customer_erased(self.partition, offset, already_erased);
        let encoding = config.encoding.alerts;
        let confirmation = erasure_confirmation(
            customer,
            &event.event_id,
            offset,
            self.core.clock(),
            already_erased,
        );
        let mut headers: Vec<(String, String)> = erasure_headers(&confirmation, "pulse", encoding)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        headers.push((hdr::CAUSE.into(), format!("{}/{offset}", self.partition)));
        self.outbox_push(OutboxRecord {
            topic: config.topics.erasures.clone(),
            key: confirmation.customer_key.clone(),
            value: Some(encode_erasure(&confirmation, encoding)),
            headers,
            partition: None,
        });
    }

    /// Whether the partition's database is to be rewritten now: an erasure was committed
    /// since the last rewrite, and the last one is `erasure_rewrite_interval_ms` old.
    pub(super) fn rewrite_due(&self, config: &Config) -> bool {
        let interval = Duration::from_millis(config.fold.erasure_rewrite_interval_ms);
        self.rewrite_pending && self.last_rewrite.is_none_or(|t| t.elapsed() >= interval)
    }

    fn emit(&mut self, alert: Alert, offset: i64, config: &Config) {
        let id = alert.id(offset, self.alert_index);
        self.alert_index += 1;
        // The engine announces every stage and segment change with exactly one alert.
        match alert.kind {
            AlertKind::LifecycleStageChanged => {
                self.counts.stage(alert.from, -1);
                self.counts.stage(alert.to, 1);
            }
            AlertKind::SegmentChanged => {
                self.counts.segment(alert.from, -1);
                self.counts.segment(alert.to, 1);
            }
            AlertKind::ChurnWarning => {}
        }
        if offset < self.published_upto {
            return; // exactly-once: published with a committed transaction already
        }
        self.metrics.alert(alert.kind, self.next_outbox_seq);
        let wire = alert_to_wire(&alert, &id);
        let encoding = config.encoding.alerts;
        let topic = match alert.kind {
            AlertKind::ChurnWarning => &config.topics.churn_warnings,
            AlertKind::SegmentChanged => &config.topics.segment_changes,
            AlertKind::LifecycleStageChanged => &config.topics.lifecycle_changes,
        };
        let mut headers: Vec<(String, String)> = alert_headers(&wire, "pulse", encoding)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // Lineage: the canonical-log record that caused the alert (replay --verify uses it).
        headers.push((hdr::CAUSE.into(), format!("{}/{offset}", self.partition)));
        self.outbox_push(OutboxRecord {
            topic: topic.clone(),
            key: alert.customer_id.clone(),
            value: Some(encode_alert(&wire, encoding)),
            headers,
            partition: None,
        });
    }

    pub(super) fn outbox_push(&mut self, record: OutboxRecord) {
        self.outbox.push((self.next_outbox_seq, record));
        self.next_outbox_seq += 1;
    }

    /// The commit since the last one; with `changelog_topic` (topic, encoding), its outbox
    /// also holds the commit's changelog records (`changelog::commit_records`).
    pub(super) fn take_commit(&mut self, changelog_topic: Option<(&str, Encoding)>) -> Commit {
        let checkpoint = Checkpoint {
            next_offset: self.next_offset,
            clock: self.core.clock(),
        };
        if !self.new_suppressed.is_empty() {
            self.rewrite_pending = true;
        }
        let mut commit = Commit {
            checkpoint,
            dedupe: std::mem::take(&mut self.dedupe_changes),
            suppressed: std::mem::take(&mut self.new_suppressed),
            outbox_purged: std::mem::take(&mut self.outbox_purged),
            counts: self.counts.snapshot(),
            ..Commit::default()
        };
        // The changed customers, the timer index and its counts, written back in this batch.
        self.core.states_mut().write_back(&mut commit);
        commit
            .customers
            .extend(self.erased.drain().map(|id| (id, None)));
        // Key order, so that the changelog of a commit does not depend on hash order; an
        // erased customer the states also report removed is written once.
        commit.customers.sort_by(|a, b| a.0.cmp(&b.0));
        commit.customers.dedup_by(|a, b| a.0 == b.0);
        if let Some((topic, encoding)) = changelog_topic {
            for r in changelog::commit_records(topic, encoding, self.partition, &commit) {
                self.outbox_push(r);
            }
        }
        commit.outbox = std::mem::take(&mut self.outbox);
        commit
    }
}
