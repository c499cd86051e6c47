//! Commit and drain, for each delivery mode and alert sink. A commit is one atomic sled write
//! per partition (`PartitionTask::take_commit`: state, dedupe, outbox, checkpoint); then the
//! outbox leaves. Effectively-once: each partition's outbox is produced after its write and
//! removed once acknowledged (or written to a file, or discarded, for replays), and the group
//! offset is committed for monitoring and owner lookup. Exactly-once: one Kafka transaction
//! carries every due partition's outbox and checkpoint offset (`txn.rs`). Unguarded (bench
//! baseline): fire and forget. After a commit that erased, the partition's database is
//! rewritten when due. Works on the tasks the fold loop hands it; knows nothing of rebalances.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use super::task::PartitionTask;
use crate::config::{Config, Guarantee};
use crate::kafka;
use crate::producer::Outstanding;
use crate::txn::{self, Outcome, Txn, TxnHooks};
use crate::{telemetry, PipelineError};

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

/// Where and how committed outboxes leave: the producer, the transaction in exactly-once
/// mode, the sink, and whether commits write the changelog.
pub(super) struct Delivery {
    config: Arc<Config>,
    producer: FutureProducer,
    /// Exactly-once mode's transactional producer (then also `producer`).
    txn: Option<Txn>,
    sink: AlertSink,
    without_changelog: bool,
    unguarded: bool,
}

impl Delivery {
    /// Exactly-once mode (a transactional producer) when configured and the sink is Kafka.
    pub(super) async fn start(
        config: Arc<Config>,
        sink: AlertSink,
        without_changelog: bool,
        unguarded: bool,
        txn_hooks: TxnHooks,
    ) -> Result<Self, PipelineError> {
        let txn = if config.fold.guarantee == Guarantee::ExactlyOnce
            && matches!(sink, AlertSink::Kafka)
        {
            Some(Txn::start(&config, txn_hooks).await?)
        } else {
            None
        };
        Ok(Delivery {
            producer: match &txn {
                Some(t) => t.producer().clone(),
                None => kafka::producer_config(&config).create()?,
            },
            txn,
            config,
            sink,
            without_changelog,
            unguarded,
        })
    }

    pub(super) fn exactly_once(&self) -> bool {
        self.txn.is_some()
    }

    pub(super) fn flush(&self) {
        crate::producer::flush(&self.producer);
    }

    /// Per partition one atomic sled write, then the outbox drain. Effectively-once: each
    /// partition's outbox is drained after its write and the group offset committed for
    /// monitoring. Exactly-once: after all the writes, one transaction carries every listed
    /// partition's outbox and checkpoint offset.
    pub(super) async fn commit_partitions<C: ConsumerContext + 'static>(
        &mut self,
        tasks: &mut BTreeMap<i32, PartitionTask>,
        consumer: &StreamConsumer<C>,
        ps: &[i32],
    ) -> Result<(), PipelineError> {
        if self.txn.is_none() {
            for &p in ps {
                self.write(tasks, consumer, p).await?;
                self.drain(tasks, p).await?;
                self.rewrite_if_due(tasks, p).await?;
            }
            return Ok(());
        }
        let mut due = Vec::new();
        for &p in ps {
            let written = self.write(tasks, consumer, p).await?;
            if written || tasks.get(&p).is_some_and(|t| !t.unacked.is_empty()) {
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
            if let Some(t) = tasks.get_mut(&p) {
                batches.push((p, t.committed_offset, std::mem::take(&mut t.unacked)));
            }
        }
        telemetry::outbox_depth(batches.iter().map(|b| b.2.len()).sum());
        let txn = self.txn.as_mut().expect("exactly-once");
        let outcome = txn.drain(&self.config, group, &batches).await?;
        for (p, _, unacked) in batches {
            let Some(task) = tasks.get_mut(&p) else {
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
            self.rewrite_if_due(tasks, p).await?;
        }
        Ok(())
    }

    /// The partition's atomic sled write, if it folded records since the last one; returns
    /// whether it wrote.
    async fn write<C: ConsumerContext + 'static>(
        &mut self,
        tasks: &mut BTreeMap<i32, PartitionTask>,
        consumer: &StreamConsumer<C>,
        p: i32,
    ) -> Result<bool, PipelineError> {
        let Some(task) = tasks.get_mut(&p) else {
            return Ok(false);
        };
        let mut committed_now = false;
        if task.records > 0 {
            let started = Instant::now();
            let changelog = (!self.without_changelog).then(|| {
                (
                    self.config.topics.changelog.as_str(),
                    self.config.encoding.canonical,
                )
            });
            let mut commit = task.take_commit(changelog);
            let unguarded = if self.unguarded {
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
    async fn drain(
        &mut self,
        tasks: &mut BTreeMap<i32, PartitionTask>,
        p: i32,
    ) -> Result<(), PipelineError> {
        let Some(task) = tasks.get_mut(&p) else {
            return Ok(());
        };
        if !task.unacked.is_empty() {
            let unacked = std::mem::take(&mut task.unacked);
            telemetry::outbox_depth(unacked.len());
            match &self.sink {
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
    async fn rewrite_if_due(
        &self,
        tasks: &mut BTreeMap<i32, PartitionTask>,
        p: i32,
    ) -> Result<(), PipelineError> {
        let Some(task) = tasks.get_mut(&p) else {
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
pub(super) fn settle_outbox(
    task: &mut PartitionTask,
    committed: Option<i64>,
) -> Result<(), PipelineError> {
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
