//! Fold: the projection of the canonical log into per-customer state, one sled database per
//! assigned partition.
//!
//! For each record: advance the partition clock (events and ticks carry time), firing the
//! timers it passes, dedupe by event_id, and apply the event: the clock, timers and decisions
//! are pulse-core's `Partition`; dedupe, suppression, erasure and the outbox are fold's. Every
//! `commit_max_events` records or `commit_interval_ms`, one atomic sled write holds the
//! touched customers, the dedupe changes, the alerts (as an outbox) and the next offset +
//! clock; only then are the alerts produced, and removed from the outbox once acknowledged. sled, not the group's committed
//! offset, says where a partition resumes: the rebalance callback assigns each partition at
//! the offset its sled checkpoint names.
//!
//! Every commit also writes, through the same outbox, a snapshot of each touched customer (a
//! tombstone for an erased one), each dedupe entry it added (a tombstone for each it removed)
//! and the partition's checkpoint to the compacted changelog, on the partition of the same
//! number. A partition assigned with no local checkpoint (a fresh
//! state dir: a new instance after scale-out), or with one the changelog's latest checkpoint
//! is ahead of (the partition was folded further elsewhere since), is first restored from its
//! changelog partition, in the fold loop, before any of its records is folded or served.
//! How far each held partition has folded goes to `Shared::progress`, which `/readyz` judges.
//!
//! Erasure (`customer_erased`, see `PartitionTask::erase`) removes everything held for the
//! customer in one commit and suppresses the customer's later events for good; the partition's
//! database is then rewritten so that sled's log keeps no copy of the id.
//!
//! This file owns the loop over the canonical log and the rebalances (the callback only sends
//! `Rebalance` over a channel; assignment, restore and revocation happen in the loop). The
//! rest, each depending only on the ones after it: `commit.rs` (commit and drain per delivery
//! mode and sink), `task.rs` (one partition's working set: dedupe, suppression, erasure,
//! emit), `changelog.rs` (the changelog writer and restore), `counts.rs` (what the API reads).

mod changelog;
mod commit;
mod counts;
mod task;

pub use commit::AlertSink;
pub use counts::{Counts, PartitionProgress, Progress, Shared};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pulse_codec::headers as hdr;
use pulse_codec::Canonical;
use pulse_store::{Checkpoint, OutboxRecord, PartitionStore};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Offset;
use tokio::sync::watch;

use crate::config::Config;
use crate::kafka;
use crate::txn::{self, TxnHooks};
use crate::{telemetry, PipelineError};
use commit::{settle_outbox, Delivery};
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
    canonical: String,
    /// Where the statistics put each held partition's end, for readiness.
    shared: Arc<Shared>,
    tx: mpsc::Sender<Rebalance>,
    state_dir: PathBuf,
    fsync: bool,
}

impl ClientContext for FoldContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        telemetry::consumer_lag(&self.group, &statistics);
        self.shared.statistics(&self.canonical, &statistics);
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
    /// `FoldOptions::stop_at` and `without_changelog`; the rest went to `delivery`.
    stop_at: Option<BTreeMap<i32, i64>>,
    without_changelog: bool,
    delivery: Delivery,
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
        canonical: config.topics.canonical.clone(),
        shared: shared.clone(),
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
    let FoldOptions {
        sink,
        stop_at,
        without_changelog,
        unguarded,
        txn_hooks,
    } = options;
    let delivery = Delivery::start(
        config.clone(),
        sink,
        without_changelog,
        unguarded,
        txn_hooks,
    )
    .await?;
    let mut fold = Fold {
        delivery,
        tasks: BTreeMap::new(),
        shared,
        config: config.clone(),
        stop_at,
        without_changelog,
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
                fold.report_progress();
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
                if fold.stop_at.as_ref().is_some_and(|ends| ends.get(&p) == Some(&(msg.offset() + 1)))
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
    fold.delivery.flush();
    for task in fold.tasks.values() {
        let _ = task.store.flush();
    }
    fold.close_all();
    tracing::info!("fold stopped");
    result
}

impl Fold {
    fn reached_stop(&self) -> bool {
        self.stop_at.as_ref().is_some_and(|ends| {
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
                    {
                        let mut progress = self.shared.progress.write().expect("lock");
                        progress.assigned = true;
                        for (p, _) in &stores {
                            progress.partitions.insert(*p, PartitionProgress::Restoring);
                            progress.ends.remove(p);
                        }
                    }
                    // Exactly-once: the group's offsets, once per assignment.
                    let mut group_offsets = None;
                    for (p, store) in stores {
                        // Restore from the changelog, before any record of the partition is
                        // folded, when there is no local checkpoint or the changelog's is
                        // ahead of it (another owner folded further: invariant 15). The
                        // callback assigned it at the local checkpoint (or the beginning);
                        // `handle` skips what a restored checkpoint covers, and the seek
                        // below spares reading it.
                        if !self.without_changelog {
                            telemetry::restore_in_progress(1);
                            let (c, st) = (self.config.clone(), store.clone());
                            let restored =
                                tokio::task::spawn_blocking(move || changelog::restore(&c, p, &st))
                                    .await
                                    .expect("restore task");
                            telemetry::restore_in_progress(0);
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
                        let mut task = PartitionTask::load(p, store, self.config.fold.cache_bytes)?;
                        if self.delivery.exactly_once() {
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
                        self.shared.set_progress(
                            p,
                            PartitionProgress::Folding {
                                next_offset: task.next_offset,
                            },
                        );
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
                        let mut progress = self.shared.progress.write().expect("lock");
                        progress.partitions.remove(&p);
                        progress.ends.remove(&p);
                    }
                }
                Rebalance::Failed(why) => return Err(PipelineError::Rebalance(why)),
            }
            telemetry::partitions_assigned(self.tasks.len());
        }
        Ok(())
    }

    /// Tells readiness how far each partition has folded (the ends come from the consumer's
    /// statistics, `FoldContext::stats`).
    fn report_progress(&self) {
        for (p, task) in &self.tasks {
            self.shared.set_progress(
                *p,
                PartitionProgress::Folding {
                    next_offset: task.next_offset,
                },
            );
        }
    }

    fn close_all(&mut self) {
        for (p, task) in std::mem::take(&mut self.tasks) {
            task.forget_stage_counts();
            self.shared.partitions.write().expect("lock").remove(&p);
            self.shared.counts.write().expect("lock").remove(&p);
        }
        *self.shared.progress.write().expect("lock") = Progress::default();
        telemetry::partitions_assigned(0);
    }

    fn handle(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), PipelineError> {
        let Some(task) = self.tasks.get_mut(&msg.partition()) else {
            return Ok(()); // a partition revoked while its records were in flight
        };
        if msg.offset() < task.next_offset {
            return Ok(()); // already folded (the group offset lags sled's checkpoint)
        }
        if (self.stop_at.as_ref()).is_some_and(|ends| {
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
                // Late: the partition already moved past it (it is decided at its customer's own
                // time, `Partition::apply`). Measured here, not at ingest, because this is where
                // lateness has a consequence, and it is a function of the log alone.
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
        task.read_error()?;
        task.next_offset = msg.offset() + 1;
        task.records += 1;
        Ok(())
    }

    async fn commit_all(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
    ) -> Result<(), PipelineError> {
        let ps: Vec<i32> = self.tasks.keys().copied().collect();
        self.delivery
            .commit_partitions(&mut self.tasks, consumer, &ps)
            .await
    }

    async fn commit(
        &mut self,
        consumer: &StreamConsumer<FoldContext>,
        p: i32,
    ) -> Result<(), PipelineError> {
        self.delivery
            .commit_partitions(&mut self.tasks, consumer, &[p])
            .await
    }
}
