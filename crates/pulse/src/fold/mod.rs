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

mod changelog;
mod counts;
mod task;

pub use counts::{Counts, Shared};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use pulse_codec::headers as hdr;
use pulse_codec::Canonical;
use pulse_store::{Checkpoint, OutboxRecord, PartitionStore};
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
use task::PartitionTask;

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
                            let restored =
                                tokio::task::spawn_blocking(move || changelog::restore(&c, p, &st))
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
                        (hdr::DLQ_REASON.into(), "corrupt_canonical".into()),
                        (hdr::DLQ_DETAIL.into(), e.to_string()),
                        (hdr::DLQ_TOPIC.into(), msg.topic().into()),
                        (hdr::DLQ_PARTITION.into(), msg.partition().to_string()),
                        (hdr::DLQ_OFFSET.into(), msg.offset().to_string()),
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
