//! The changelog, both directions side by side: what each commit writes to the compacted
//! changelog through the outbox (`commit_records`: erasure markers, customer snapshots and
//! tombstones, dedupe entries, the checkpoint; invariant 14) and how a partition with no local
//! checkpoint, or one whose changelog is ahead of it, is restored from it (`restore`:
//! invariants 15 and 16). Keys and records are
//! pulse-codec's, a customer's state bytes pulse-store's.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use pulse_codec::headers as hdr;
use pulse_codec::{
    changelog_schema, changelog_schema_version, customer_changelog_key, decode_changelog,
    dedupe_changelog_key, encode_changelog, erasure_changelog_key, parse_dedupe_changelog_key,
    Changelog, Encoding, CHANGELOG_SCHEMA_VERSION, CHECKPOINT_KEY,
};
use pulse_core::hash::customer_key;
use pulse_core::Millis;
use pulse_store::{Checkpoint, Commit, OutboxRecord, PartitionStore};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;

use crate::config::Config;
use crate::kafka;
use crate::{telemetry, PipelineError};

/// The changelog records of a commit (queued in its outbox after its alerts), all to the
/// changelog partition of the canonical partition's number: an erasure marker per customer
/// erased, a snapshot per touched customer (a tombstone per erased one), the final change of
/// each dedupe entry the commit changed (the entry, or a tombstone once it left the window or
/// its customer was erased) and, last, the checkpoint.
pub(super) fn commit_records(
    topic: &str,
    encoding: Encoding,
    partition: i32,
    commit: &Commit,
) -> Vec<OutboxRecord> {
    let record = |key: &str, value: Option<Vec<u8>>| OutboxRecord {
        topic: topic.to_string(),
        key: key.to_string(),
        value,
        headers: vec![
            (
                hdr::CONTENT_TYPE.to_string(),
                encoding.content_type().to_string(),
            ),
            (hdr::SCHEMA.to_string(), changelog_schema()),
        ],
        partition: Some(partition),
    };
    let mut records = Vec::with_capacity(commit.customers.len() + 1);
    // Keyed by the customer key: a tombstone's key outlives compaction.
    for (customer, at) in &commit.suppressed {
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
    for (id, state) in &commit.customers {
        let value = state.as_ref().map(|s| {
            let (version, state) = pulse_store::encode_state_parts(s);
            encode_changelog(
                &Changelog::Customer {
                    customer_id: id.clone(),
                    schema_version: u32::from(version),
                    state,
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
    for (k, change) in &commit.dedupe {
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
                partition,
                next_offset: commit.checkpoint.next_offset,
                clock_ms: commit.checkpoint.clock,
            },
            encoding,
        )),
    ));
    records
}

/// Restores a partition's store from its changelog partition when the store has no
/// checkpoint, or when the changelog's latest checkpoint is ahead of the store's (another
/// owner folded further since this instance last held the partition: resuming from the
/// stale local checkpoint would re-send every alert since and answer HTTP from old state).
/// What is restored: the latest snapshot of each customer (a tombstone deletes), the erasure
/// markers, the latest state of each dedupe entry (a tombstone deletes: the window is rebuilt
/// exactly as the previous owner had it at the checkpoint) and the latest checkpoint, written
/// in one commit that replaces whatever the store held (its stale outbox included: the later
/// owner refolded those records and sent their alerts). Returns the offset fold resumes at,
/// or `None` when nothing was restored (the changelog holds no checkpoint for the partition,
/// or none ahead of the local one): fold goes on from the local checkpoint or the beginning.
///
/// The end of the partition is its high watermark or librdkafka's partition-EOF event,
/// whichever comes first. Stopping early is safe by construction: snapshots are applied only
/// once a checkpoint record follows them (each commit writes its snapshots, then its
/// checkpoint), so what is restored is always the state as of the checkpoint restored, and
/// fold refolds deterministically from there.
pub(super) fn restore(
    config: &Config,
    partition: i32,
    store: &PartitionStore,
) -> Result<Option<i64>, PipelineError> {
    let started = Instant::now();
    let topic = &config.topics.changelog;
    let consumer = changelog_consumer(config)?;
    let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let local = store.checkpoint()?;
    if let Some(local) = local {
        // Cheap first: the changelog's latest checkpoint is among its last records (each
        // commit ends with one), so only its tail is read to compare.
        match latest_checkpoint(config, &consumer, partition, low, high)? {
            Some(latest) if latest > local.next_offset => tracing::info!(
                partition,
                local = local.next_offset,
                changelog = latest,
                "changelog ahead of the local checkpoint: restoring from it"
            ),
            _ => return Ok(None),
        }
    }
    telemetry::restore_started(partition);
    // By changelog key: (customer id, state schema version, stored state), or `None` for a
    // tombstone.
    type Snapshot = Option<(String, u16, Vec<u8>)>;
    let mut customers: HashMap<String, Snapshot> = HashMap::new();
    let mut pending: Vec<(String, Snapshot)> = Vec::new();
    let mut suppressed: HashMap<u128, Millis> = HashMap::new();
    let mut pending_suppressed: Vec<(u128, Millis)> = Vec::new();
    // By event key: (seen at, customer key), or `None` for a tombstone.
    let mut dedupe: BTreeMap<u128, Option<(Millis, u128)>> = BTreeMap::new();
    let mut pending_dedupe: Vec<(u128, Option<(Millis, u128)>)> = Vec::new();
    let mut checkpoint: Option<Checkpoint> = None;
    let records = read_range(config, &consumer, partition, low, high, |key, m| {
        let payload = match m.payload() {
            None => {
                match parse_dedupe_changelog_key(&key) {
                    Some(event_key) => pending_dedupe.push((event_key, None)),
                    None => pending.push((key, None)),
                }
                return Ok(());
            }
            Some(bytes) => bytes,
        };
        match decode(config, partition, m, payload)? {
            Changelog::Customer {
                customer_id,
                schema_version,
                state,
            } => {
                let version =
                    u16::try_from(schema_version).map_err(|e| corrupt(partition, m, &e))?;
                pending.push((key, Some((customer_id, version, state))));
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
                    return Err(corrupt(
                        partition,
                        m,
                        &format!("dedupe entry {event_key:032x} under key {key:?}"),
                    ));
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
        Ok(())
    })?;
    // A read that ended early (a high watermark too low) may find an older checkpoint than
    // the tail did: never replace local state by an older one.
    let Some(checkpoint) =
        checkpoint.filter(|c| local.is_none_or(|l| c.next_offset > l.next_offset))
    else {
        telemetry::restore_finished(partition, records, 0, None, started.elapsed());
        return Ok(None);
    };
    let mut commit = Commit {
        checkpoint,
        ..Commit::default()
    };
    for (id, version, state) in customers.into_values().flatten() {
        let state = pulse_store::decode_state_parts(version, &state)?;
        if let Some(due) = state.next_timer {
            commit.timers.push((due, id.clone(), true));
        }
        commit.customers.push((id, Some(state)));
    }
    // `replace` drops every customer, timer and count the store held: these are all of them.
    commit.counts = super::counts::tally(commit.customers.iter().filter_map(|(_, s)| s.as_ref()));
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
    store.replace(&commit)?;
    telemetry::restore_finished(
        partition,
        records,
        n,
        Some(checkpoint.next_offset),
        started.elapsed(),
    );
    Ok(Some(checkpoint.next_offset))
}

fn changelog_consumer(config: &Config) -> Result<BaseConsumer, PipelineError> {
    Ok(kafka::client_config(config)
        .set("group.id", kafka::group_id(config, "restore"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?)
}

/// The `next_offset` of the changelog partition's latest checkpoint, found by reading its
/// tail: the last 1,024 records, then 8 times more, up to the whole partition, until one holds
/// a checkpoint.
fn latest_checkpoint(
    config: &Config,
    consumer: &BaseConsumer,
    partition: i32,
    low: i64,
    high: i64,
) -> Result<Option<i64>, PipelineError> {
    let mut window = 1024i64;
    loop {
        let from = high.saturating_sub(window).max(low);
        let mut latest = None;
        read_range(config, consumer, partition, from, high, |key, m| {
            if let (CHECKPOINT_KEY, Some(bytes)) = (key.as_str(), m.payload()) {
                if let Changelog::Checkpoint { next_offset, .. } =
                    decode(config, partition, m, bytes)?
                {
                    latest = Some(next_offset);
                }
            }
            Ok(())
        })?;
        if latest.is_some() || from <= low {
            return Ok(latest);
        }
        window = window.saturating_mul(8);
    }
}

/// Reads the changelog partition from `from` to its end (the high watermark `high` or the
/// partition-EOF event, whichever comes first), handing each record and its key to `each`;
/// refuses a record of another schema version by name. Returns the records read.
fn read_range(
    config: &Config,
    consumer: &BaseConsumer,
    partition: i32,
    from: i64,
    high: i64,
    mut each: impl FnMut(String, &BorrowedMessage<'_>) -> Result<(), PipelineError>,
) -> Result<u64, PipelineError> {
    let topic = &config.topics.changelog;
    let mut records = 0u64;
    if high <= from {
        return Ok(0);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
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
        let version = changelog_schema_version(kafka::header(m.headers(), hdr::SCHEMA));
        if version != Some(CHANGELOG_SCHEMA_VERSION) {
            return Err(PipelineError::Restore(format!(
                "partition {partition}: changelog offset {} has schema version {}; this binary reads version {CHANGELOG_SCHEMA_VERSION} (version 1 was keyed by raw customer ids, version 2 had no dedupe entries): recreate the changelog topic and let fold rewrite it, or restore by replay",
                m.offset(),
                version.map_or("1 (no schema header)".to_string(), |v| v.to_string()),
            )));
        }
        each(key, &m)?;
        telemetry::restore_records(1);
        if m.offset() + 1 >= high {
            break;
        }
    }
    Ok(records)
}

fn decode(
    config: &Config,
    partition: i32,
    m: &BorrowedMessage<'_>,
    bytes: &[u8],
) -> Result<Changelog, PipelineError> {
    let encoding = kafka::header(m.headers(), hdr::CONTENT_TYPE)
        .and_then(Encoding::from_content_type)
        .unwrap_or(config.encoding.canonical);
    decode_changelog(bytes, encoding).map_err(|e| corrupt(partition, m, &e))
}

fn corrupt(partition: i32, m: &BorrowedMessage<'_>, e: &dyn std::fmt::Display) -> PipelineError {
    PipelineError::Restore(format!(
        "partition {partition}: changelog offset {}: {e}",
        m.offset()
    ))
}
