//! Exactly-once mode (`fold.guarantee = "exactly-once"`): fold's outbox drains inside Kafka
//! transactions that also commit the input offsets (`send_offsets_to_transaction`).
//!
//! One transactional producer per instance, `transactional.id` = `<group>-fold-<instance_id>`;
//! `init_transactions` at start fences (aborts) whatever the previous incarnation of the same
//! instance left open. Per commit round: each partition's sled write (state, checkpoint,
//! outbox; the outbox tagged with the checkpoint offset) -> begin -> produce the outboxes ->
//! offsets (the checkpoints, with the consumer's group metadata: KIP-447 fencing of a zombie
//! owner after a rebalance) -> commit -> clear the outboxes in sled. One transaction per round
//! rather than per partition: its round trips are the mode's main cost. On assignment, the group's committed
//! offset (written atomically with the records) tells which outbox records are already in
//! Kafka: those are cleared without re-sending, and refolded records below it emit nothing.
//! The argument is in ARCHITECTURE.md (invariant 18). This module does no folding.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pulse_store::OutboxRecord;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::{self, headers};
use crate::producer::Outstanding;
use crate::{telemetry, PipelineError};

/// How long a blocking transactional call may take before fold gives up on it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Fault injection for the end-to-end tests: each makes the real client do the real thing
/// against the real broker (abort a transaction, stop between the Kafka commit and the sled
/// clear); nothing of pulse's I/O is replaced. Counters are read by the tests.
#[derive(Clone, Default)]
pub struct TxnHooks {
    /// While set, every transaction is aborted once its records are acknowledged and its
    /// offsets sent.
    pub abort: Arc<AtomicBool>,
    /// Once set, fold stops with an error right after the next committed transaction that
    /// held an alert, before the outbox is cleared in sled (then the flag is cleared).
    pub crash_after_commit: Arc<AtomicBool>,
    pub committed: Arc<AtomicU64>,
    pub aborted: Arc<AtomicU64>,
}

/// What became of one drain.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records and offsets are in Kafka: clear the outbox.
    Committed,
    /// Nothing of it is committed: keep the outbox, retry at the next commit.
    Aborted,
}

pub fn transactional_id(config: &Config) -> String {
    format!(
        "{}-{}",
        kafka::group_id(config, "fold"),
        config.fold.instance_id
    )
}

/// The instance's transactional producer and what it has checked about the broker.
pub struct Txn {
    producer: FutureProducer,
    hooks: TxnHooks,
    /// Whether the broker was seen to store offsets committed with a transaction.
    verified: bool,
}

impl Txn {
    /// Creates the producer and fences the previous incarnation (`init_transactions`).
    pub async fn start(config: &Config, hooks: TxnHooks) -> Result<Txn, PipelineError> {
        let id = transactional_id(config);
        let producer: FutureProducer = kafka::producer_config(config)
            .set("transactional.id", &id)
            .create()?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(TIMEOUT))
            .await
            .expect("init_transactions task")?;
        tracing::info!(transactional_id = %id, "transactional producer ready (previous incarnation fenced)");
        Ok(Txn {
            producer,
            hooks,
            verified: false,
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Produces the outboxes and commits the offsets (the sled checkpoints they belong to) of
    /// `batches`, `(canonical partition, offset, outbox)`, in one transaction. Abortable failures (a rebalance fenced the
    /// group generation, a timeout) abort and report `Aborted`; fatal ones (fenced by a newer
    /// incarnation) are errors: fold stops and a restart resumes from sled.
    pub async fn drain(
        &mut self,
        config: &Config,
        group: ConsumerGroupMetadata,
        batches: &[(i32, i64, Outbox)],
    ) -> Result<Outcome, PipelineError> {
        let topic = &config.topics.canonical;
        let mut tpl = TopicPartitionList::new();
        for (partition, offset, _) in batches {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            if let Some(mut e) = tpl.find_partition(topic, *partition) {
                // Owner lookup reads this metadata (invariant 12), as in effectively-once mode.
                e.set_metadata(&config.http.advertised_addr);
            }
        }
        let records = || batches.iter().flat_map(|(_, _, outbox)| outbox);
        self.producer.begin_transaction().map_err(fatal)?;
        let mut out = Outstanding::default();
        let mut failed = None;
        for (_, r) in records() {
            if let Err(e) = out.send(&self.producer, future_record(r)).await {
                failed = Some(e);
                break;
            }
        }
        let abort = self.hooks.abort.load(Ordering::Relaxed);
        if abort && failed.is_none() {
            // An injected abort comes after the records are acknowledged. Aborting records
            // still in flight purges them, and librdkafka then closes the sequence gap with an
            // epoch bump (KIP-360), which tansu refuses (README, "Tests"): the test would fail
            // for the broker's sake.
            failed = std::mem::take(&mut out).wait().await.err();
        }
        let p = self.producer.clone();
        let result = tokio::task::spawn_blocking(move || {
            if let Some(e) = failed {
                return Err(Step::Produce(e));
            }
            retrying(|| p.send_offsets_to_transaction(&tpl, &group, TIMEOUT))
                .map_err(Step::Kafka)?;
            if abort {
                return Err(Step::Injected);
            }
            retrying(|| p.commit_transaction(TIMEOUT)).map_err(Step::Kafka)
        })
        .await
        .expect("transaction task");
        drop(out); // resolved by the commit or the abort; their outcome is the transaction's
        match result {
            Ok(()) => {
                telemetry::fold_transaction("committed");
                self.hooks.committed.fetch_add(1, Ordering::Relaxed);
                if !self.verified {
                    self.verify(config, batches).await?;
                }
                if records().any(|(_, r)| r.partition.is_none())
                    && self.hooks.crash_after_commit.swap(false, Ordering::Relaxed)
                {
                    return Err(PipelineError::Transaction(
                        "injected crash after the transaction committed, before the outbox was cleared".into(),
                    ));
                }
                Ok(Outcome::Committed)
            }
            Err(step) => {
                if let Step::Kafka(KafkaError::Transaction(e)) = &step {
                    if e.is_fatal() {
                        return Err(PipelineError::Transaction(format!(
                            "fatal transaction error (fenced by a newer incarnation of {}?): {e}",
                            transactional_id(config)
                        )));
                    }
                }
                let partitions: Vec<i32> = batches.iter().map(|b| b.0).collect();
                tracing::warn!(?partitions, reason = %step, "aborting the transaction; the outboxes are re-sent in the next one");
                let p = self.producer.clone();
                tokio::task::spawn_blocking(move || p.abort_transaction(TIMEOUT))
                    .await
                    .expect("abort task")
                    .map_err(fatal)?;
                telemetry::fold_transaction("aborted");
                self.hooks.aborted.fetch_add(1, Ordering::Relaxed);
                Ok(Outcome::Aborted)
            }
        }
    }

    /// Reads the group's committed offset back once: a broker that accepts transactional
    /// offset commits without storing them (librdkafka's mock cluster) would make the
    /// exactly-once argument void, so fold refuses to go on there.
    async fn verify(
        &mut self,
        config: &Config,
        batches: &[(i32, i64, Outbox)],
    ) -> Result<(), PipelineError> {
        let c = config.clone();
        let committed = tokio::task::spawn_blocking(move || committed_offsets(&c))
            .await
            .expect("offset fetch task")?;
        for (partition, offset, _) in batches {
            let stored = committed.get(partition).copied();
            if stored.is_none_or(|s| s < *offset) {
                return Err(PipelineError::Transaction(format!(
                    "the broker did not store the offset committed with the transaction (partition {partition}: sent {offset}, group has {stored:?}); \
                     fold.guarantee = \"exactly-once\" needs a broker with full transaction support (librdkafka's mock cluster has none)"
                )));
            }
        }
        self.verified = true;
        Ok(())
    }
}

/// Why a transaction did not commit.
enum Step {
    Produce(PipelineError),
    Kafka(KafkaError),
    Injected,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Produce(e) => write!(f, "produce: {}", crate::error_chain(e)),
            Step::Kafka(e) => write!(f, "{e}"),
            Step::Injected => write!(f, "abort injected by a test"),
        }
    }
}

/// librdkafka's contract: a call that failed with a retriable error (a timeout) may be made
/// again and must be, before anything else (an abort is refused while a commit is pending).
fn retrying(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut attempts = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 3 => {
                attempts += 1;
                tracing::warn!(error = %e, attempts, "transactional call failed; retrying");
            }
            other => return other,
        }
    }
}

fn fatal(e: KafkaError) -> PipelineError {
    PipelineError::Transaction(format!("transactional producer: {e}"))
}

/// The Kafka record of an outbox entry.
pub fn future_record(r: &OutboxRecord) -> FutureRecord<'_, str, [u8]> {
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&r.topic)
        .key(r.key.as_str())
        .headers(headers(&r.headers));
    if let Some(v) = &r.value {
        rec = rec.payload(v.as_slice());
    }
    if let Some(p) = r.partition {
        rec = rec.partition(p);
    }
    rec
}

/// The fold group's committed offset of every canonical partition that has one. The reader
/// is read_committed, so librdkafka asks for stable offsets (KIP-447): the broker answers
/// only once no transaction holding an offset for the partition is pending. Blocking.
pub fn committed_offsets(config: &Config) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer = kafka::client_config(config)
        .set("group.id", kafka::group_id(config, "fold"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let topic = &config.topics.canonical;
    let mut tpl = TopicPartitionList::new();
    for p in 0..kafka::partition_count(config, topic)? {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Outbox records with their sequence numbers, in order.
pub type Outbox = Vec<(u64, OutboxRecord)>;

/// Splits an outbox loaded at assignment by the group's committed offset: records of commits
/// tagged at or below it are already in Kafka (committed atomically with that offset) and
/// are returned first, to be cleared without re-sending; the rest is still to be sent.
/// Untagged records (written before tags existed) are sent again.
pub fn settle(outbox: Outbox, tags: &[(u64, i64)], committed: Option<i64>) -> (Outbox, Outbox) {
    let Some(committed) = committed else {
        return (Vec::new(), outbox);
    };
    outbox.into_iter().partition(|(seq, _)| {
        tags.iter()
            .rev()
            .find(|(t, _)| t <= seq)
            .is_some_and(|(_, offset)| *offset <= committed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> (u64, OutboxRecord) {
        (
            n,
            OutboxRecord {
                key: n.to_string(),
                ..OutboxRecord::default()
            },
        )
    }

    #[test]
    fn settle_clears_what_the_group_offset_covers() {
        // Commit with checkpoint 10 made records 0..3, the one with checkpoint 20 made 3..5.
        let outbox: Vec<_> = (0..5).map(rec).collect();
        let tags = [(0, 10), (3, 20)];
        let seqs = |v: &[(u64, OutboxRecord)]| v.iter().map(|r| r.0).collect::<Vec<_>>();
        let (done, todo) = settle(outbox.clone(), &tags, Some(10));
        assert_eq!((seqs(&done), seqs(&todo)), (vec![0, 1, 2], vec![3, 4]));
        let (done, todo) = settle(outbox.clone(), &tags, Some(25));
        assert_eq!((seqs(&done), seqs(&todo)), (vec![0, 1, 2, 3, 4], vec![]));
        let (done, todo) = settle(outbox.clone(), &tags, Some(9));
        assert_eq!((seqs(&done), seqs(&todo)), (vec![], vec![0, 1, 2, 3, 4]));
        let (done, todo) = settle(outbox.clone(), &tags, None);
        assert_eq!((seqs(&done), seqs(&todo)), (vec![], vec![0, 1, 2, 3, 4]));
        // Untagged (older store): re-sent.
        let (done, _) = settle(outbox, &[], Some(100));
        assert!(done.is_empty());
    }
}
