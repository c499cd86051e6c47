//! Fold: the projection of the canonical log into per-customer state, one sled database per
//! assigned partition.
//!
//! For each record: advance the partition clock (events and ticks carry time), firing the
//! timers it passes, dedupe by event_id, and apply the event: the clock, timers and decisions
//! are pulse-core's `Partition`; dedupe, suppression, erasure and the outbox are fold's. Every `commit_max_events` records
//! or `commit_interval_ms`, one atomic sled write holds the touched customers, the dedupe
//! changes, the alerts (as an outbox) and the next offset + clock; only then are the alerts
//! produced, and removed from the outbox once acknowledged. sled, not the group's committed
//! offset, says where a partition resumes: the rebalance callback assigns each partition at
//! the offset its sled checkpoint names.
//!
//! Every commit also writes, through the same outbox, a snapshot of each touched customer (a
//! tombstone for an erased one), each dedupe entry it added (a tombstone for each it removed)
//! and the partition's checkpoint to the compacted changelog, on the partition of the same
//! number. A partition assigned with no local checkpoint (a fresh
//! state dir: a new instance after scale-out) is first restored from its changelog partition,
//! in the fold loop, before any of its records is folded.
//!
//! Erasure (`customer_erased`, see `PartitionTask::erase`) removes everything held for the
//! customer in one commit and suppresses the customer's later events for good; the partition's
//! database is then rewritten so that sled's log keeps no copy of the id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use pulse_codec::{
    alert_headers, alert_to_wire, changelog_schema, changelog_schema_version,
    customer_changelog_key, decode_changelog, dedupe_changelog_key, encode_alert, encode_changelog,
    encode_erasure, erasure_changelog_key, erasure_confirmation, erasure_headers,
    parse_dedupe_changelog_key, Canonical, Changelog, Encoding, CHANGELOG_SCHEMA_VERSION,
    CHECKPOINT_KEY, SCHEMA_HEADER,
};
use pulse_core::hash::{customer_key, event_key};
use pulse_core::{Alert, AlertKind, Body, CustomerState, Millis, Partition, Segment, Stage, DAY};
use pulse_store::{Checkpoint, Commit, OutboxRecord, PartitionStore};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;
use tokio::sync::watch;

use crate::config::Config;
use crate::kafka;
use crate::producer::Outstanding;
use crate::txn::{self, Outcome, Txn, TxnHooks};
use crate::{telemetry, PipelineError};

/// What the rebalance callback tells the fold loop. The callback only opens the partition's
/// store to read where it resumes; all folding happens in the loop.
enum Rebalance {
    Assigned(Vec<(i32, PartitionStore)>),
    Revoked(Vec<i32>),
    Failed(String),
}

struct FoldContext {
    group: String,
    tx: mpsc::Sender<Rebalance>,
    state_dir: PathBuf,
    fsync: bool,
}

impl ClientContext for FoldContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        telemetry::consumer_lag(&self.group, &statistics);
    }
}

impl ConsumerContext for FoldContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut opened = Vec::new();
                for (topic, p) in &partitions {
                    match open_partition(&self.state_dir, *p, self.fsync) {
                        Ok((store, checkpoint)) => {
                            let offset = checkpoint
                                .map_or(Offset::Beginning, |c| Offset::Offset(c.next_offset));
                            let _ = tpl.set_partition_offset(topic, *p, offset);
                            opened.push((*p, store));
                        }
                        Err(e) => {
                            let _ = self
                                .tx
                                .send(Rebalance::Failed(format!("partition {p}: {e}")));
                        }
                    }
                }
                let _ = self.tx.send(Rebalance::Assigned(opened));
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = self.tx.send(Rebalance::Revoked(
                    partitions.iter().map(|(_, p)| *p).collect(),
                ));
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                Ok(())
            }
        };
        if let Err(e) = result {
            let _ = self.tx.send(Rebalance::Failed(format!("assignment: {e}")));
        }
    }
}

pub fn partition_dir(state_dir: &Path, partition: i32) -> PathBuf {
    state_dir.join(format!("partition-{partition:04}"))
}

fn open_partition(
    state_dir: &Path,
    partition: i32,
    fsync: bool,
) -> Result<(PartitionStore, Option<Checkpoint>), pulse_store::StoreError> {
    let store = PartitionStore::open(&partition_dir(state_dir, partition), fsync)?;
    let checkpoint = store.checkpoint()?;
    Ok((store, checkpoint))
}

/// Header on every alert: `<canonical partition>/<offset>` of the record that caused it.
pub const CAUSE_HEADER: &str = "pulse.cause";

/// Where the outbox drains to.
#[derive(Default)]
pub enum AlertSink {
    /// The configured topics: the live service.
    #[default]
    Kafka,
    /// One JSON line per record (`topic`, `key`, `headers`, `value`): replays.
    File(std::sync::Mutex<std::io::BufWriter<std::fs::File>>),
    /// Nothing leaves: a replay that only rebuilds state.
    Discard,
}

/// How a fold run differs from the live service's.
#[derive(Default)]
pub struct FoldOptions {
    pub sink: AlertSink,
    /// Stop, cleanly, once every listed partition has folded up to (excluding) its offset.
    pub stop_at: Option<BTreeMap<i32, i64>>,
    /// Neither restore from nor write to the changelog (a replay into a fresh dir must not).
    pub without_changelog: bool,
    /// No guarantees, for `pulse bench`'s baseline only: the outbox is not stored in sled and
    /// is produced fire-and-forget after the state write (acks never awaited).
    pub unguarded: bool,
    /// Exactly-once mode's fault injection (tests).
    pub txn_hooks: TxnHooks,
}

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

/// Customers of one partition per announced lifecycle stage and RFM segment, kept up to date
/// by fold as customers appear, change and are erased (never by a scan). Each change also
/// moves the process-wide `pulse_customers` / `pulse_customers_by_segment` gauges. Counts
/// cover the working set, which runs ahead of the last commit by at most one batch.
#[derive(Default)]
pub struct Counts {
    stages: [AtomicI64; Stage::ALL.len()],
    segments: [AtomicI64; Segment::ALL.len()],
    /// Timers scheduled, as of the last commit (`pulse_fold_pending_timers`).
    timers: AtomicI64,
}

impl Counts {
    fn stage(&self, name: &str, delta: i64) {
        if let Some(i) = Stage::ALL.iter().position(|s| s.as_str() == name) {
            self.stages[i].fetch_add(delta, Ordering::Relaxed);
            telemetry::customers_in_stage(Stage::ALL[i].as_str(), delta as f64);
        }
    }

    fn segment(&self, name: &str, delta: i64) {
        if let Some(i) = Segment::ALL.iter().position(|s| s.as_str() == name) {
            self.segments[i].fetch_add(delta, Ordering::Relaxed);
            telemetry::customers_in_segment(Segment::ALL[i].as_str(), delta as f64);
        }
    }

    fn customer(&self, state: &CustomerState, delta: i64) {
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

/// The in-memory working set of one partition between commits.
struct PartitionTask {
    partition: i32,
    store: PartitionStore,
    /// The rules' side: clock, customers, timers. Dedupe, suppression, erasure, the outbox
    /// and the counts below are the service's, applied around its advance and apply steps.
    core: Partition,
    /// event-id hash → (seen at, customer key): an erasure removes its customer's entries.
    dedupe: HashMap<u128, (Millis, u128)>,
    dedupe_order: VecDeque<(Millis, u128)>,
    /// Keys of erased customers: their later events are dropped (erasure is permanent).
    suppressed: HashSet<u128>,
    next_offset: i64,
    committed_clock: Arc<AtomicI64>,
    counts: Arc<Counts>,
    /// Since the last commit:
    dirty: HashSet<String>,
    erased: HashSet<String>,
    /// Dedupe inserts (`Some((seen at, customer key))`) and removals (`None`), in order.
    dedupe_changes: Vec<(u128, Option<(Millis, u128)>)>,
    /// Customers erased (customer key, clock) and committed outbox records withdrawn.
    new_suppressed: Vec<(u128, Millis)>,
    outbox_purged: Vec<u64>,
    /// An erasure is committed but the database not yet rewritten; the last rewrite.
    rewrite_pending: bool,
    last_rewrite: Option<Instant>,
    outbox: Vec<(u64, OutboxRecord)>,
    records: usize,
    /// Index of the next alert caused by the record being folded (part of its alert_id).
    alert_index: u32,
    next_outbox_seq: u64,
    /// Committed but not yet acknowledged.
    unacked: Vec<(u64, OutboxRecord)>,
    /// Metric handles and wall-clock instants, for metrics only (never read by decisions).
    metrics: telemetry::FoldMetrics,
    /// The next offset of the last sled checkpoint.
    committed_offset: i64,
    /// Exactly-once: the group's committed offset at assignment. Records below it are
    /// already published (with that offset, in a transaction): refolding them emits nothing.
    published_upto: i64,
}

struct Fold {
    config: Arc<Config>,
    options: FoldOptions,
    producer: FutureProducer,
    /// Exactly-once mode's transactional producer (then also `producer`).
    txn: Option<Txn>,
    tasks: BTreeMap<i32, PartitionTask>,
    shared: Arc<Shared>,
}

pub async fn run(
    config: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
    shared: Arc<Shared>,
    options: FoldOptions,
) -> Result<(), PipelineError> {
    let (tx, rx) = mpsc::channel();
    let context = FoldContext {
        group: kafka::group_id(&config, "fold"),
        tx,
        state_dir: config.fold.state_dir.clone(),
        fsync: config.fold.fsync,
    };
    std::fs::create_dir_all(&config.fold.state_dir)
        .map_err(|e| PipelineError::StateDir(config.fold.state_dir.clone(), e))?;
    let consumer: StreamConsumer<FoldContext> =
        kafka::consumer_config(&config, "fold").create_with_context(context)?;
    consumer.subscribe(&[&config.topics.canonical])?;
    let n = {
        let c = config.clone();
        tokio::task::spawn_blocking(move || kafka::partition_count(&c, &c.topics.canonical))
            .await
            .expect("metadata task")?
    };
    shared
        .canonical_partitions
        .store(i64::from(n), Ordering::Relaxed);
    if !options.without_changelog {
        let c = config.clone();
        let m =
            tokio::task::spawn_blocking(move || kafka::partition_count(&c, &c.topics.changelog))
                .await
                .expect("metadata task")?;
        if m != n {
            return Err(PipelineError::ChangelogPartitions {
                changelog: config.topics.changelog.clone(),
                changelog_partitions: m,
                canonical: config.topics.canonical.clone(),
                canonical_partitions: n,
            });
        }
    }
    let txn = if config.fold.guarantee == crate::config::Guarantee::ExactlyOnce
        && matches!(options.sink, AlertSink::Kafka)
    {
        Some(Txn::start(&config, options.txn_hooks.clone()).await?)
    } else {
        None
    };
    let mut fold = Fold {
        producer: match &txn {
            Some(t) => t.producer().clone(),
            None => kafka::producer_config(&config).create()?,
        },
        txn,
        tasks: BTreeMap::new(),
        shared,
        config: config.clone(),
        options,
    };
    tracing::info!("fold started");
    let mut commit_timer =
        tokio::time::interval(Duration::from_millis(config.fold.commit_interval_ms));
    commit_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            _ = commit_timer.tick() => {
                { let events: Vec<Rebalance> = rx.try_iter().collect(); fold.apply_rebalances(events, &consumer).await?; }
                if let Err(e) = fold.commit_all(&consumer).await { break Err(e) }
                if fold.reached_stop() { break Ok(()) }
            }
            msg = consumer.recv() => {
                let msg = match msg {
                    Ok(m) => m,
                    // librdkafka reconnects by itself (a broker restart); nothing was lost.
                    Err(e) if kafka::transient(&e) => { tracing::warn!(error = %e, "fold consumer: broker unreachable, waiting"); continue }
                    Err(e) => break Err(e.into()),
                };
                { let events: Vec<Rebalance> = rx.try_iter().collect(); fold.apply_rebalances(events, &consumer).await?; }
                if let Err(e) = fold.handle(&msg) { break Err(e) }
                let p = msg.partition();
                if fold.tasks.get(&p).is_some_and(|t| t.records >= config.fold.commit_max_events) {
                    if let Err(e) = fold.commit(&consumer, p).await { break Err(e) }
                }
                if fold.options.stop_at.as_ref().is_some_and(|ends| ends.get(&p) == Some(&(msg.offset() + 1)))
                    && fold.reached_stop()
                {
                    break Ok(());
                }
            }
        }
    };
    if result.is_ok() {
        // A clean stop: finish the batch, commit it and drain the outbox.
        fold.commit_all(&consumer).await?;
    }
    crate::producer::flush(&fold.producer);
    for task in fold.tasks.values() {
        let _ = task.store.flush();
    }
    fold.close_all();
    tracing::info!("fold stopped");
    result
}

impl Fold {
    fn reached_stop(&self) -> bool {
        self.options.stop_at.as_ref().is_some_and(|ends| {
            ends.iter().all(|(p, end)| {
                *end <= 0 || self.tasks.get(p).is_some_and(|t| t.next_offset >= *end)
            })
        })
    }

    async fn apply_rebalances(
        &mut self,
        events: Vec<Rebalance>,
        consumer: &StreamConsumer<FoldContext>,
    ) -> Result<(), PipelineError> {
        for event in events {
            match event {
                Rebalance::Assigned(stores) => {
                    // Exactly-once: the group's offsets, once per assignment.
                    let mut group_offsets = None;
                    for (p, store) in stores {
                        // No local checkpoint: restore from the changelog before any record of
                        // the partition is folded (the callback assigned it at the beginning;
                        // `handle` skips what the restored checkpoint covers, and the seek
                        // below spares reading it).
                        if !self.options.without_changelog && store.checkpoint()?.is_none() {
                            self.shared.restoring.fetch_add(1, Ordering::Relaxed);
                            let (c, st) = (self.config.clone(), store.clone());
                            let restored = tokio::task::spawn_blocking(move || restore(&c, p, &st))
                                .await
                                .expect("restore task");
                            self.shared.restoring.fetch_sub(1, Ordering::Relaxed);
                            telemetry::restore_in_progress(
                                self.shared.restoring.load(Ordering::Relaxed),
                            );
                            if let Some(next) = restored? {
                                self.shared.restored.fetch_add(1, Ordering::Relaxed);
                                if let Err(e) = consumer.seek(
                                    &self.config.topics.canonical,
                                    p,
                                    Offset::Offset(next),
                                    Duration::from_secs(5),
                                ) {
                                    tracing::warn!(partition = p, error = %e, "seek after restore failed; skipping restored records instead");
                                }
                            }
                        }
                        let mut task = PartitionTask::load(p, store)?;
                        if self.txn.is_some() {
                            if group_offsets.is_none() {
                                let c = self.config.clone();
                                group_offsets = Some(
                                    tokio::task::spawn_blocking(move || txn::committed_offsets(&c))
                                        .await
                                        .expect("offset fetch task")?,
                                );
                            }
                            let committed = group_offsets.as_ref().and_then(|g| g.get(&p));
                            settle_outbox(&mut task, committed.copied())?;
                        }
                        tracing::info!(
                            partition = p,
                            customers = task.core.len(),
                            next_offset = task.next_offset,
                            outbox = task.unacked.len(),
                            "partition assigned"
                        );
                        self.shared
                            .partitions
                            .write()
                            .expect("lock")
                            .insert(p, (task.store.clone(), task.committed_clock.clone()));
                        self.shared
                            .counts
                            .write()
                            .expect("lock")
                            .insert(p, task.counts.clone());
                        self.tasks.insert(p, task);
                    }
                }
                Rebalance::Revoked(ps) => {
                    for p in ps {
                        // Uncommitted work is dropped: the next owner resumes from the last
                        // commit, so nothing is applied twice or lost.
                        if let Some(task) = self.tasks.remove(&p) {
                            task.forget_stage_counts();
                            tracing::info!(partition = p, "partition revoked");
                        }
                        self.shared.partitions.write().expect("lock").remove(&p);
                        self.shared.counts.write().expect("lock").remove(&p);
                    }
                }
                Rebalance::Failed(why) => return Err(PipelineError::Rebalance(why)),
            }
            telemetry::partitions_assigned(self.tasks.len());
        }
        Ok(())
    }

    fn close_all(&mut self) {
        for (p, task) in std::mem::take(&mut self.tasks) {
            task.forget_stage_counts();
            self.shared.partitions.write().expect("lock").remove(&p);
            self.shared.counts.write().expect("lock").remove(&p);
        }
        telemetry::partitions_assigned(0);
    }

    fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let Some(task) = self.tasks.get_mut(&msg.partition()) else {
            return Ok(()); // a partition revoked while its records were in flight
        };
        if msg.offset() < task.next_offset {
            return Ok(()); // already folded (the group offset lags sled's checkpoint)
        }
        if (self.options.stop_at.as_ref()).is_some_and(|ends| {
            ends.get(&msg.partition())
                .is_some_and(|end| msg.offset() >= *end)
        }) {
            return Ok(()); // past a bounded run's end (a replay's range)
        }
        task.alert_index = 0;
        task.metrics.consumed();
        match kafka::decode_canonical_message(msg, &self.config) {
            Ok(Canonical::Tick { time, .. }) => {
                task.advance_clock(time, msg.offset(), &self.config)
            }
            Ok(Canonical::Event(event, _)) => {
                // Late: the partition already moved past it, so it is folded at the clock, after
                // the timers its time precedes. Measured here, not at ingest, because this is
                // where lateness has a consequence, and it is a function of the log alone.
                if event.occurred_at < task.core.clock() {
                    task.metrics.late();
                }
                task.advance_clock(event.occurred_at, msg.offset(), &self.config);
                task.apply(&event, msg.offset(), &self.config);
            }
            Err(e) if msg.offset() < task.published_upto => {
                telemetry::fold_corrupt(msg.partition(), msg.offset(), &e);
            }
            Err(e) => {
                telemetry::fold_corrupt(msg.partition(), msg.offset(), &e);
                task.outbox_push(OutboxRecord {
                    topic: self.config.topics.dead_letters.clone(),
                    key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
                    value: Some(msg.payload().unwrap_or_default().to_vec()),
                    headers: vec![
                        (crate::ingest::DLQ_REASON.into(), "corrupt_canonical".into()),
                        (crate::ingest::DLQ_DETAIL.into(), e.to_string()),
                        (crate::ingest::DLQ_TOPIC.into(), msg.topic().into()),
                        (
                            crate::ingest::DLQ_PARTITION.into(),
                            msg.partition().to_string(),
                        ),
                        (crate::ingest::DLQ_OFFSET.into(), msg.offset().to_string()),
                    ],
                    partition: None,
                });
            }
        }
        task.next_offset = msg.offset() + 1;
        task.records += 1;
        Ok(())
    }

    async fn commit_all(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
    ) -> Result<(), PipelineError> {
        let ps: Vec<i32> = self.tasks.keys().copied().collect();
        self.commit_partitions(consumer, &ps).await
    }

    async fn commit(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
        p: i32,
    ) -> Result<(), PipelineError> {
        self.commit_partitions(consumer, &[p]).await
    }

    /// Per partition one atomic sled write, then the outbox drain. Effectively-once: each
    /// partition's outbox is drained after its write and the group offset committed for
    /// monitoring. Exactly-once: after all the writes, one transaction carries every listed
    /// partition's outbox and checkpoint offset.
    async fn commit_partitions(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
        ps: &[i32],
    ) -> Result<(), PipelineError> {
        if self.txn.is_none() {
            for &p in ps {
                self.write(consumer, p).await?;
                self.drain(p).await?;
                self.rewrite_if_due(p).await?;
            }
            return Ok(());
        }
        let mut due = Vec::new();
        for &p in ps {
            let written = self.write(consumer, p).await?;
            if written || self.tasks.get(&p).is_some_and(|t| !t.unacked.is_empty()) {
                due.push(p);
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            PipelineError::Transaction("the fold consumer has no group metadata".into())
        })?;
        let mut batches: Vec<(i32, i64, txn::Outbox)> = Vec::with_capacity(due.len());
        for p in due {
            if let Some(t) = self.tasks.get_mut(&p) {
                batches.push((p, t.committed_offset, std::mem::take(&mut t.unacked)));
            }
        }
        telemetry::outbox_depth(batches.iter().map(|b| b.2.len()).sum());
        let txn = self.txn.as_mut().expect("exactly-once");
        let outcome = txn.drain(&self.config, group, &batches).await?;
        for (p, _, unacked) in batches {
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            match outcome {
                Outcome::Committed => {
                    task.store.ack_outbox(unacked.iter().map(|(seq, _)| *seq))?;
                    if let Some((last, _)) = unacked.last() {
                        task.metrics.acked(*last);
                    }
                }
                Outcome::Aborted => task.unacked = unacked,
            }
        }
        if outcome == Outcome::Committed {
            telemetry::outbox_depth(0);
        }
        for &p in ps {
            self.rewrite_if_due(p).await?;
        }
        Ok(())
    }

    /// The partition's atomic sled write, if it folded records since the last one; returns
    /// whether it wrote.
    async fn write(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
        p: i32,
    ) -> Result<bool, PipelineError> {
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(false);
        };
        let mut committed_now = false;
        if task.records > 0 {
            let started = Instant::now();
            let changelog = (!self.options.without_changelog).then(|| {
                (
                    self.config.topics.changelog.as_str(),
                    self.config.encoding.canonical,
                )
            });
            let mut commit = task.take_commit(changelog);
            let unguarded = if self.options.unguarded {
                std::mem::take(&mut commit.outbox)
            } else {
                Vec::new()
            };
            let store = task.store.clone();
            let tagged = self.txn.is_some();
            let commit = tokio::task::spawn_blocking(move || {
                if tagged {
                    store.commit_tagged(&commit)
                } else {
                    store.commit(&commit)
                }
                .map(|_| commit)
            })
            .await
            .expect("commit task")?;
            task.unacked.extend(commit.outbox);
            task.committed_offset = task.next_offset;
            committed_now = true;
            let clock = task.core.clock();
            task.committed_clock.store(clock, Ordering::Relaxed);
            telemetry::fold_committed(p, task.records, started.elapsed().as_secs_f64(), clock);
            task.counts
                .timers
                .store(task.core.pending_timers() as i64, Ordering::Relaxed);
            task.records = 0;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &self.config.topics.canonical,
                p,
                Offset::Offset(task.next_offset),
            )?;
            // The commit metadata names this instance's HTTP address: how other instances
            // find a partition's owner (Kafka's OffsetFetch, on any broker).
            if let Some(mut e) = tpl.find_partition(&self.config.topics.canonical, p) {
                e.set_metadata(&self.config.http.advertised_addr);
            }
            // For lag monitoring and owner lookup only; sled's checkpoint is the truth. In
            // exactly-once mode the offset is committed with the outbox's transaction instead.
            if self.txn.is_none() {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(partition = p, error = %e, "group offset commit failed");
                }
            }
            // No guarantees (bench baseline): produced, never awaited, never stored.
            let mut fire_and_forget = Outstanding::default();
            for (_, r) in &unguarded {
                fire_and_forget
                    .send(&self.producer, txn::future_record(r))
                    .await?;
            }
        }
        Ok(committed_now)
    }

    /// Effectively-once: produces the partition's outbox, waits for the acks, clears it.
    async fn drain(&mut self, p: i32) -> Result<(), PipelineError> {
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        if !task.unacked.is_empty() {
            let unacked = std::mem::take(&mut task.unacked);
            telemetry::outbox_depth(unacked.len());
            match &self.options.sink {
                AlertSink::Kafka => {
                    let mut out = Outstanding::default();
                    for (_, r) in &unacked {
                        out.send(&self.producer, txn::future_record(r)).await?;
                    }
                    out.wait().await?;
                }
                AlertSink::File(file) => {
                    use std::io::Write;
                    let mut file = file.lock().expect("lock");
                    for (_, r) in &unacked {
                        let line = serde_json::json!({
                            "topic": r.topic,
                            "key": r.key,
                            "headers": r.headers.iter().cloned().collect::<BTreeMap<_, _>>(),
                            "value": r.value.as_ref().map(|v| String::from_utf8_lossy(v)),
                        });
                        writeln!(file, "{line}").map_err(PipelineError::Sink)?;
                    }
                    file.flush().map_err(PipelineError::Sink)?;
                }
                AlertSink::Discard => {}
            }
            task.store.ack_outbox(unacked.iter().map(|(seq, _)| *seq))?;
            if let Some((last, _)) = unacked.last() {
                task.metrics.acked(*last);
            }
            telemetry::outbox_depth(0);
        }
        Ok(())
    }

    /// After erasures, at a commit boundary: the partition's database rewritten into a fresh
    /// directory, so sled's log keeps no erased id (the erasure commit already withdrew the
    /// customer's pending outbox records).
    async fn rewrite_if_due(&mut self, p: i32) -> Result<(), PipelineError> {
        let Some(task) = self.tasks.get_mut(&p) else {
            return Ok(());
        };
        if task.rewrite_due(&self.config) {
            let (store, started) = (task.store.clone(), Instant::now());
            let rewritten = tokio::task::spawn_blocking(move || store.rewrite())
                .await
                .expect("rewrite task")?;
            telemetry::state_rewritten(p, &rewritten, started.elapsed());
            task.rewrite_pending = false;
            task.last_rewrite = Some(Instant::now());
        }
        Ok(())
    }
}

/// Exactly-once: what the group's committed offset for the partition (written atomically with
/// the records of the transactions) says about the outbox loaded from sled.
fn settle_outbox(task: &mut PartitionTask, committed: Option<i64>) -> Result<(), PipelineError> {
    task.published_upto = committed.unwrap_or(0);
    let tags = task.store.outbox_tags()?;
    let (published, todo) = txn::settle(std::mem::take(&mut task.unacked), &tags, committed);
    if !published.is_empty() {
        task.store
            .ack_outbox(published.iter().map(|(seq, _)| *seq))?;
    }
    tracing::info!(
        partition = task.partition,
        committed = ?committed,
        cleared = published.len(),
        resend = todo.len(),
        "outbox settled against the group's transactionally committed offset"
    );
    task.unacked = todo;
    Ok(())
}

impl PartitionTask {
    fn load(partition: i32, store: PartitionStore) -> Result<Self, PipelineError> {
        // No checkpoint: a partition that has folded nothing, at `Partition::START`.
        let checkpoint = store.checkpoint()?.unwrap_or(Checkpoint {
            next_offset: 0,
            clock: Partition::START,
        });
        let mut failed = None;
        let core = Partition::restore(
            checkpoint.clock,
            store
                .customers()
                .map_while(|entry| entry.map_err(|e| failed = Some(e)).ok()),
        );
        if let Some(e) = failed {
            return Err(e.into());
        }
        let counts = Arc::new(Counts::default());
        for (_, state) in core.customers() {
            counts.customer(state, 1);
        }
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
            dirty: HashSet::new(),
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

    fn forget_stage_counts(&self) {
        for (_, s) in self.core.customers() {
            self.counts.customer(s, -1);
        }
    }

    /// Moves the clock to `time` if later, firing the timers it passes (`Partition::advance`:
    /// (due, customer) order, so replay fires them identically), then evicts the dedupe
    /// entries the window left behind.
    fn advance_clock(&mut self, time: Millis, offset: i64, config: &Config) {
        if time <= self.core.clock() {
            return;
        }
        // Collected, then emitted: emitting needs the whole task, which the partition's
        // advance borrows.
        let mut fired: Vec<(String, Millis, Vec<Alert>)> = Vec::new();
        self.core
            .advance(time, &config.scoring, |id, due, _, alerts| {
                fired.push((id.to_string(), due, alerts));
            });
        for (id, due, alerts) in fired {
            self.metrics.timer_fired(due);
            self.dirty.insert(id);
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

    fn apply(&mut self, event: &pulse_core::Event, offset: i64, config: &Config) {
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
        if self.core.customer(id).is_none() {
            self.counts.customer(&CustomerState::default(), 1);
        }
        let alerts = self.core.apply(event, &config.scoring);
        self.dirty.insert(id.clone());
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
        self.dirty.remove(id);
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
        headers.push((CAUSE_HEADER.into(), format!("{}/{offset}", self.partition)));
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
    fn rewrite_due(&self, config: &Config) -> bool {
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
        headers.push((CAUSE_HEADER.into(), format!("{}/{offset}", self.partition)));
        self.outbox_push(OutboxRecord {
            topic: topic.clone(),
            key: alert.customer_id.clone(),
            value: Some(encode_alert(&wire, encoding)),
            headers,
            partition: None,
        });
    }

    fn outbox_push(&mut self, record: OutboxRecord) {
        self.outbox.push((self.next_outbox_seq, record));
        self.next_outbox_seq += 1;
    }

    /// The commit since the last one; with `changelog` (topic, encoding), its outbox also
    /// holds a snapshot per touched customer, a tombstone per erased one, the final change of
    /// each dedupe entry the commit changed (the entry, or a tombstone once it left the window
    /// or its customer was erased) and, last, the checkpoint, all to the changelog partition
    /// of this partition's number.
    fn take_commit(&mut self, changelog: Option<(&str, Encoding)>) -> Commit {
        let mut customers: Vec<(String, Option<CustomerState>)> = self
            .dirty
            .drain()
            .filter_map(|id| {
                let state = self.core.customer(&id)?.clone();
                Some((id, Some(state)))
            })
            .collect();
        customers.extend(self.erased.drain().map(|id| (id, None)));
        // Key order, so that the changelog of a commit does not depend on hash order.
        customers.sort_by(|a, b| a.0.cmp(&b.0));
        let checkpoint = Checkpoint {
            next_offset: self.next_offset,
            clock: self.core.clock(),
        };
        if let Some((topic, encoding)) = changelog {
            let record = |key: &str, value: Option<Vec<u8>>| OutboxRecord {
                topic: topic.to_string(),
                key: key.to_string(),
                value,
                headers: vec![
                    (
                        "content-type".to_string(),
                        encoding.content_type().to_string(),
                    ),
                    (SCHEMA_HEADER.to_string(), changelog_schema()),
                ],
                partition: Some(self.partition),
            };
            let mut records = Vec::with_capacity(customers.len() + 1);
            // Keyed by the customer key: a tombstone's key outlives compaction.
            for (customer, at) in &self.new_suppressed {
                records.push(record(
                    &erasure_changelog_key(*customer),
                    Some(encode_changelog(
                        &Changelog::Erased {
                            customer_key: *customer,
                            erased_at_ms: *at,
                        },
                        encoding,
                    )),
                ));
            }
            for (id, state) in &customers {
                let value = state.as_ref().map(|s| {
                    let stored = pulse_store::encode_state(s);
                    encode_changelog(
                        &Changelog::Customer {
                            customer_id: id.clone(),
                            schema_version: u32::from(u16::from_be_bytes([stored[0], stored[1]])),
                            state: stored[2..].to_vec(),
                        },
                        encoding,
                    )
                });
                records.push(record(&customer_changelog_key(customer_key(id)), value));
            }
            // The dedupe window: per entry changed, its state at the end of the commit, in key
            // order; nothing for an entry added and removed within the commit (an entry is
            // only added when absent, so a first change that adds means it was not in the
            // changelog). Keyed and valued by hashes only: no raw id.
            let mut dedupe: BTreeMap<u128, (bool, Option<(Millis, u128)>)> = BTreeMap::new();
            for (k, change) in &self.dedupe_changes {
                dedupe
                    .entry(*k)
                    .and_modify(|(_, last)| *last = *change)
                    .or_insert((change.is_some(), *change));
            }
            for (k, (added, entry)) in dedupe {
                if added && entry.is_none() {
                    continue;
                }
                let value = entry.map(|(at, customer)| {
                    encode_changelog(
                        &Changelog::Dedupe {
                            event_key: k,
                            seen_at_ms: at,
                            customer_key: customer,
                        },
                        encoding,
                    )
                });
                records.push(record(&dedupe_changelog_key(k), value));
            }
            records.push(record(
                CHECKPOINT_KEY,
                Some(encode_changelog(
                    &Changelog::Checkpoint {
                        partition: self.partition,
                        next_offset: checkpoint.next_offset,
                        clock_ms: checkpoint.clock,
                    },
                    encoding,
                )),
            ));
            for r in records {
                self.outbox_push(r);
            }
        }
        if !self.new_suppressed.is_empty() {
            self.rewrite_pending = true;
        }
        Commit {
            checkpoint,
            customers,
            dedupe: std::mem::take(&mut self.dedupe_changes),
            outbox: std::mem::take(&mut self.outbox),
            suppressed: std::mem::take(&mut self.new_suppressed),
            outbox_purged: std::mem::take(&mut self.outbox_purged),
        }
    }
}

/// Restores a partition's store (which has no checkpoint) from its changelog partition: the
/// latest snapshot of each customer (a tombstone deletes), the erasure markers, the latest
/// state of each dedupe entry (a tombstone deletes: the window is rebuilt exactly as the
/// previous owner had it at the checkpoint) and the latest checkpoint, written in one commit. Returns the offset fold resumes at, or `None` when the changelog holds no
/// checkpoint for the partition (fold starts from the beginning).
///
/// The end of the partition is its high watermark or librdkafka's partition-EOF event,
/// whichever comes first. Stopping early is safe by construction: snapshots are applied only
/// once a checkpoint record follows them (each commit writes its snapshots, then its
/// checkpoint), so what is restored is always the state as of the checkpoint restored, and
/// fold refolds deterministically from there.
fn restore(
    config: &Config,
    partition: i32,
    store: &PartitionStore,
) -> Result<Option<i64>, PipelineError> {
    use rdkafka::consumer::BaseConsumer;
    let started = Instant::now();
    let topic = &config.topics.changelog;
    telemetry::restore_started(partition);
    let consumer: BaseConsumer = kafka::client_config(config)
        .set("group.id", kafka::group_id(config, "restore"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    // By changelog key: (customer id, stored state), or `None` for a tombstone.
    type Snapshot = Option<(String, Vec<u8>)>;
    let mut customers: HashMap<String, Snapshot> = HashMap::new();
    let mut pending: Vec<(String, Snapshot)> = Vec::new();
    let mut suppressed: HashMap<u128, Millis> = HashMap::new();
    let mut pending_suppressed: Vec<(u128, Millis)> = Vec::new();
    // By event key: (seen at, customer key), or `None` for a tombstone.
    let mut dedupe: BTreeMap<u128, Option<(Millis, u128)>> = BTreeMap::new();
    let mut pending_dedupe: Vec<(u128, Option<(Millis, u128)>)> = Vec::new();
    let mut checkpoint: Option<Checkpoint> = None;
    let mut records = 0u64;
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if Instant::now() > deadline {
                return Err(PipelineError::Restore(format!(
                    "partition {partition}: changelog not read to its end ({high}) in 600 s"
                )));
            }
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => break,
                Err(e) => return Err(e.into()),
            };
            records += 1;
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let version = changelog_schema_version(kafka::header(m.headers(), SCHEMA_HEADER));
            if version != Some(CHANGELOG_SCHEMA_VERSION) {
                return Err(PipelineError::Restore(format!(
                    "partition {partition}: changelog offset {} has schema version {}; this binary reads version {CHANGELOG_SCHEMA_VERSION} (version 1 was keyed by raw customer ids, version 2 had no dedupe entries): recreate the changelog topic and let fold rewrite it, or restore by replay",
                    m.offset(),
                    version.map_or("1 (no schema header)".to_string(), |v| v.to_string()),
                )));
            }
            match m.payload() {
                None => match parse_dedupe_changelog_key(&key) {
                    Some(event_key) => pending_dedupe.push((event_key, None)),
                    None => pending.push((key, None)),
                },
                Some(bytes) => {
                    let encoding = kafka::header(m.headers(), "content-type")
                        .and_then(Encoding::from_content_type)
                        .unwrap_or(config.encoding.canonical);
                    let corrupt = |e: &dyn std::fmt::Display| {
                        PipelineError::Restore(format!(
                            "partition {partition}: changelog offset {}: {e}",
                            m.offset()
                        ))
                    };
                    match decode_changelog(bytes, encoding).map_err(|e| corrupt(&e))? {
                        Changelog::Customer {
                            customer_id,
                            schema_version,
                            state,
                        } => {
                            let mut stored = u16::try_from(schema_version)
                                .map_err(|e| corrupt(&e))?
                                .to_be_bytes()
                                .to_vec();
                            stored.extend_from_slice(&state);
                            pending.push((key, Some((customer_id, stored))));
                        }
                        Changelog::Erased {
                            customer_key,
                            erased_at_ms,
                        } => pending_suppressed.push((customer_key, erased_at_ms)),
                        Changelog::Dedupe {
                            event_key,
                            seen_at_ms,
                            customer_key,
                        } => {
                            if parse_dedupe_changelog_key(&key) != Some(event_key) {
                                return Err(corrupt(&format!(
                                    "dedupe entry {event_key:032x} under key {key:?}"
                                )));
                            }
                            pending_dedupe.push((event_key, Some((seen_at_ms, customer_key))));
                        }
                        Changelog::Checkpoint {
                            next_offset,
                            clock_ms,
                            ..
                        } => {
                            customers.extend(pending.drain(..));
                            suppressed.extend(pending_suppressed.drain(..));
                            dedupe.extend(pending_dedupe.drain(..));
                            checkpoint = Some(Checkpoint {
                                next_offset,
                                clock: clock_ms,
                            });
                        }
                    }
                }
            }
            telemetry::restore_records(1);
            if m.offset() + 1 >= high {
                break;
            }
        }
    }
    let Some(checkpoint) = checkpoint else {
        telemetry::restore_finished(partition, records, 0, None, started.elapsed());
        return Ok(None);
    };
    let mut commit = Commit {
        checkpoint,
        ..Commit::default()
    };
    for (id, bytes) in customers.into_values().flatten() {
        commit
            .customers
            .push((id, Some(pulse_store::decode_state(&bytes)?)));
    }
    // Erasures stay in force on the new owner (and its restored store is rewritten once).
    commit.suppressed = suppressed.into_iter().collect();
    // The dedupe window as of the checkpoint: `PartitionTask::load` rebuilds fold's map and
    // eviction order from these sled entries.
    commit.dedupe = dedupe
        .into_iter()
        .filter_map(|(k, entry)| Some((k, Some(entry?))))
        .collect();
    tracing::info!(
        partition,
        dedupe_entries = commit.dedupe.len(),
        "dedupe window restored from the changelog"
    );
    let n = commit.customers.len();
    store.commit(&commit)?;
    telemetry::restore_finished(
        partition,
        records,
        n,
        Some(checkpoint.next_offset),
        started.elapsed(),
    );
    Ok(Some(checkpoint.next_offset))
}
