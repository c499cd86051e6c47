//! pulse-store: the durable state of one canonical-log partition, in its own sled database.
//!
//! It owns the key layout and the stored encodings. Everything fold must not lose — customer
//! state, the partition checkpoint (next offset and clock), dedupe entries and the outbox of
//! records still to be produced — lives in **one sled tree**, so a [`Commit`] is a single
//! `apply_batch`: atomic, all or nothing. It must not know about Kafka or the rules.
//!
//! Key layout (one tree, one-byte prefix, big-endian fixed-width numbers so order is numeric):
//! - `b'c' ++ customer_id`          → customer state (u16 schema version ++ JSON)
//! - `b'd' ++ u128 event-id hash`   → i64 clock at which it was seen
//! - `b'o' ++ u64 sequence`         → outbox record
//! - `b't' ++ u64 sequence`         → i64 tag: the checkpoint offset of the commit whose
//!   outbox starts at that sequence (exactly-once mode compares it with the group's
//!   transactionally committed offset)
//! - `b'm' ++ name`                 → metadata (`schema`, `checkpoint`)

use std::path::Path;

use pulse_core::state::STATE_SCHEMA_VERSION;
use pulse_core::{CustomerState, Millis};

/// Version of the key layout and metadata encoding of this crate.
pub const STORE_SCHEMA_VERSION: u16 = 1;

const CUSTOMER: u8 = b'c';
const DEDUPE: u8 = b'd';
const OUTBOX: u8 = b'o';
const OUTBOX_TAG: u8 = b't';
const META_SCHEMA: &[u8] = b"mschema";
const META_CHECKPOINT: &[u8] = b"mcheckpoint";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled")]
    Sled(#[from] sled::Error),
    #[error("state was written with store schema {found}; this binary reads schema {supported} — use a binary of that version or rebuild the state by replay")]
    SchemaVersion { found: u16, supported: u16 },
    #[error(
        "customer state was written with schema {found}; this binary reads schema {supported}"
    )]
    StateVersion { found: u16, supported: u16 },
    #[error("corrupt {what} record")]
    Corrupt {
        what: &'static str,
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// Where fold stands in its partition: the first offset not yet folded and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub next_offset: i64,
    pub clock: Millis,
}

/// A record to produce after the commit: an alert, a dead letter or a changelog record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxRecord {
    pub topic: String,
    pub key: String,
    /// `None` is a tombstone (a changelog record for an erased customer).
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// An explicit partition (changelog records go to the canonical partition's number);
    /// `None` lets the producer's partitioner pick it from the key.
    pub partition: Option<i32>,
}

/// Everything one fold batch changed, written atomically.
#[derive(Debug, Default)]
pub struct Commit {
    pub checkpoint: Checkpoint,
    /// `None` deletes the customer (erasure).
    pub customers: Vec<(String, Option<CustomerState>)>,
    /// Dedupe inserts (`Some(seen at)`) and evictions (`None`), applied in order.
    pub dedupe: Vec<(u128, Option<Millis>)>,
    pub outbox: Vec<(u64, OutboxRecord)>,
}

/// The state of one partition.
#[derive(Clone)]
pub struct PartitionStore {
    db: sled::Db,
    fsync: bool,
}

impl PartitionStore {
    /// Opens (or creates) the partition's database. Refuses state of another schema version.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        let db = open_db(dir)?;
        match db.get(META_SCHEMA)? {
            Some(v) => {
                let found = read_u16(&v).ok_or(StoreError::Corrupt {
                    what: "schema",
                    source: None,
                })?;
                if found != STORE_SCHEMA_VERSION {
                    return Err(StoreError::SchemaVersion {
                        found,
                        supported: STORE_SCHEMA_VERSION,
                    });
                }
            }
            None => {
                db.insert(META_SCHEMA, &STORE_SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        Ok(PartitionStore { db, fsync })
    }

    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.db
            .get(META_CHECKPOINT)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: "checkpoint",
                    source: Some(e),
                })
            })
            .transpose()
    }

    pub fn customer(&self, id: &str) -> Result<Option<CustomerState>, StoreError> {
        self.db
            .get(prefixed(CUSTOMER, id.as_bytes()))?
            .map(|v| decode_state(&v))
            .transpose()
    }

    /// Every customer of the partition, in key order.
    pub fn customers(
        &self,
    ) -> impl Iterator<Item = Result<(String, CustomerState), StoreError>> + '_ {
        self.db.scan_prefix([CUSTOMER]).map(|kv| {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            Ok((id, decode_state(&v)?))
        })
    }

    pub fn dedupe_entries(&self) -> Result<Vec<(u128, Millis)>, StoreError> {
        self.db
            .scan_prefix([DEDUPE])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || StoreError::Corrupt {
                    what: "dedupe",
                    source: None,
                };
                let key = u128::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
                let at = i64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt())?);
                Ok((key, at))
            })
            .collect()
    }

    /// Outbox records not yet acknowledged, in the order they were committed.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        self.db
            .scan_prefix([OUTBOX])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || StoreError::Corrupt {
                    what: "outbox",
                    source: None,
                };
                let seq = u64::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
                Ok((seq, decode_outbox(&v).ok_or_else(corrupt)?))
            })
            .collect()
    }

    /// The outbox's tags, `(first sequence, checkpoint offset)` per commit still in the outbox,
    /// in sequence order: record `s` was made by the commit of the last tag at or before `s`.
    /// Records written before tags existed have none.
    pub fn outbox_tags(&self) -> Result<Vec<(u64, i64)>, StoreError> {
        self.db
            .scan_prefix([OUTBOX_TAG])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || StoreError::Corrupt {
                    what: "outbox tag",
                    source: None,
                };
                let seq = u64::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
                let offset = i64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt())?);
                Ok((seq, offset))
            })
            .collect()
    }

    /// Writes the commit in one atomic batch, then (if configured) waits for it to be durable.
    pub fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write(commit, false)
    }

    /// As [`commit`](Self::commit), and tags the commit's outbox with its checkpoint offset
    /// (exactly-once mode; see [`outbox_tags`](Self::outbox_tags)). Only that mode tags, so
    /// an outbox left by the other mode is never mistaken for one already published.
    pub fn commit_tagged(&self, commit: &Commit) -> Result<(), StoreError> {
        self.write(commit, true)
    }

    fn write(&self, commit: &Commit, tag: bool) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (id, state) in &commit.customers {
            let key = prefixed(CUSTOMER, id.as_bytes());
            match state {
                Some(s) => batch.insert(key, encode_state(s)),
                None => batch.remove(key),
            }
        }
        for (k, at) in &commit.dedupe {
            let key = prefixed(DEDUPE, &k.to_be_bytes());
            match at {
                Some(at) => batch.insert(key, &at.to_be_bytes()),
                None => batch.remove(key),
            }
        }
        for (seq, rec) in &commit.outbox {
            batch.insert(prefixed(OUTBOX, &seq.to_be_bytes()), encode_outbox(rec));
        }
        if let Some((first, _)) = commit.outbox.first().filter(|_| tag) {
            batch.insert(
                prefixed(OUTBOX_TAG, &first.to_be_bytes()),
                &commit.checkpoint.next_offset.to_be_bytes(),
            );
        }
        let checkpoint = serde_json::to_vec(&commit.checkpoint).expect("plain struct");
        batch.insert(META_CHECKPOINT, checkpoint);
        self.db.apply_batch(batch)?;
        if self.fsync {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Removes acknowledged outbox records. Not flushed: losing this write only re-sends
    /// byte-identical records.
    /// Records are acknowledged in sequence order, so a tag goes with the last acknowledged
    /// record unless its commit still has the next record in the outbox.
    pub fn ack_outbox(&self, seqs: impl IntoIterator<Item = u64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for seq in seqs {
            batch.remove(prefixed(OUTBOX, &seq.to_be_bytes()));
            last = last.max(Some(seq));
        }
        if let Some(last) = last {
            let tags = self.outbox_tags()?;
            let next = last + 1;
            let kept = if self
                .db
                .contains_key(prefixed(OUTBOX, &next.to_be_bytes()))?
            {
                tags.iter().rev().find(|(t, _)| *t <= next).map(|(t, _)| *t)
            } else {
                None
            };
            for (t, _) in tags {
                if t <= last && Some(t) != kept {
                    batch.remove(prefixed(OUTBOX_TAG, &t.to_be_bytes()));
                }
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Bytes on disk, for metrics.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// sled's background flusher holds the directory lock for a moment after the last handle is
/// dropped, so a reopen in the same process (a restart, a rebalance back) retries briefly.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    loop {
        match sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && attempts < 500 =>
            {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn read_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// The stored encoding of a customer: schema version, then JSON (readable with `pulse inspect`).
pub fn encode_state(state: &CustomerState) -> Vec<u8> {
    let mut v = STATE_SCHEMA_VERSION.to_be_bytes().to_vec();
    serde_json::to_writer(&mut v, state).expect("plain struct");
    v
}

pub fn decode_state(bytes: &[u8]) -> Result<CustomerState, StoreError> {
    let found = read_u16(bytes).ok_or(StoreError::Corrupt {
        what: "customer",
        source: None,
    })?;
    if found != STATE_SCHEMA_VERSION {
        return Err(StoreError::StateVersion {
            found,
            supported: STATE_SCHEMA_VERSION,
        });
    }
    serde_json::from_slice(&bytes[2..]).map_err(|e| StoreError::Corrupt {
        what: "customer",
        source: Some(e),
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Length marker of a tombstone's value (no real value is 4 GiB long).
const NO_VALUE: u32 = u32::MAX;

/// topic, key, value (or the tombstone marker), headers, then an optional explicit partition
/// (records written before partitions existed simply end after the headers).
fn encode_outbox(r: &OutboxRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.value.as_ref().map_or(0, Vec::len) + 64);
    put_bytes(&mut out, r.topic.as_bytes());
    put_bytes(&mut out, r.key.as_bytes());
    match &r.value {
        Some(v) => put_bytes(&mut out, v),
        None => out.extend_from_slice(&NO_VALUE.to_be_bytes()),
    }
    out.extend_from_slice(&(r.headers.len() as u32).to_be_bytes());
    for (k, v) in &r.headers {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    if let Some(p) = r.partition {
        out.extend_from_slice(&p.to_be_bytes());
    }
    out
}

fn decode_outbox(mut b: &[u8]) -> Option<OutboxRecord> {
    fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let v = b.get(4..4 + len)?;
        *b = &b[4 + len..];
        Some(v)
    }
    let s = |v: &[u8]| String::from_utf8(v.to_vec()).ok();
    let topic = s(take(&mut b)?)?;
    let key = s(take(&mut b)?)?;
    let value = if b.get(..4)? == NO_VALUE.to_be_bytes() {
        b = &b[4..];
        None
    } else {
        Some(take(&mut b)?.to_vec())
    };
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    b = &b[4..];
    let mut headers = Vec::new();
    for _ in 0..n {
        headers.push((s(take(&mut b)?)?, s(take(&mut b)?)?));
    }
    let partition = match b.len() {
        0 => None,
        4 => Some(i32::from_be_bytes(b.try_into().ok()?)),
        _ => return None,
    };
    Some(OutboxRecord {
        topic,
        key,
        value,
        headers,
        partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(orders: u32) -> CustomerState {
        let mut s = CustomerState::default();
        s.orders.count = orders;
        s
    }

    #[test]
    fn commit_is_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rec = OutboxRecord {
            topic: "t".into(),
            key: "c1".into(),
            value: Some(b"{}".to_vec()),
            headers: vec![("ce_id".into(), "x".into())],
            partition: None,
        };
        {
            let store = PartitionStore::open(dir.path(), true).unwrap();
            assert_eq!(store.checkpoint().unwrap(), None);
            store
                .commit(&Commit {
                    checkpoint: Checkpoint {
                        next_offset: 10,
                        clock: 99,
                    },
                    customers: vec![("c1".into(), Some(state(2))), ("c2".into(), Some(state(1)))],
                    dedupe: vec![(7, Some(99)), (8, Some(99)), (8, None)],
                    outbox: vec![(1, rec.clone()), (2, rec.clone())],
                })
                .unwrap();
            assert_eq!(store.outbox_tags().unwrap(), vec![], "untagged commit");
            store
                .commit_tagged(&Commit {
                    checkpoint: Checkpoint {
                        next_offset: 10,
                        clock: 99,
                    },
                    outbox: vec![(1, rec.clone()), (2, rec.clone())],
                    ..Commit::default()
                })
                .unwrap();
            store.ack_outbox([1]).unwrap();
            store.flush().unwrap();
        }
        let store = PartitionStore::open(dir.path(), true).unwrap();
        assert_eq!(
            store.checkpoint().unwrap(),
            Some(Checkpoint {
                next_offset: 10,
                clock: 99
            })
        );
        assert_eq!(store.customer("c1").unwrap(), Some(state(2)));
        assert_eq!(store.customers().count(), 2);
        assert_eq!(store.dedupe_entries().unwrap(), vec![(7, 99)]);
        assert_eq!(store.outbox().unwrap(), vec![(2, rec.clone())]);
        // The commit's tag (its checkpoint offset, at its first sequence) stays until the
        // commit's last record is acknowledged.
        assert_eq!(store.outbox_tags().unwrap(), vec![(1, 10)]);
        store.ack_outbox([2]).unwrap();
        assert_eq!(store.outbox_tags().unwrap(), vec![]);
        store
            .commit_tagged(&Commit {
                checkpoint: Checkpoint {
                    next_offset: 10,
                    clock: 99,
                },
                outbox: vec![(2, rec.clone())],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.outbox().unwrap(), vec![(2, rec)]);
        // Erasure deletes.
        store
            .commit(&Commit {
                checkpoint: Checkpoint {
                    next_offset: 11,
                    clock: 99,
                },
                customers: vec![("c1".into(), None)],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.customer("c1").unwrap(), None);
    }

    #[test]
    fn refuses_other_schema_versions_by_name() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(META_SCHEMA, &99u16.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let err = PartitionStore::open(dir.path(), true).err().unwrap();
        assert!(err.to_string().contains("schema 99"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("schema {STORE_SCHEMA_VERSION}")),
            "{err}"
        );
        let mut bytes = encode_state(&state(1));
        bytes[1] = 42;
        let err = decode_state(&bytes).unwrap_err();
        assert!(err.to_string().contains("schema 42"), "{err}");
    }

    proptest! {
        #[test]
        fn outbox_records_round_trip(topic in ".{0,20}", key in ".{0,20}", value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                                     headers in proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4), partition in proptest::option::of(any::<i32>())) {
            let r = OutboxRecord { topic, key, value, headers, partition };
            prop_assert_eq!(decode_outbox(&encode_outbox(&r)), Some(r));
        }

        #[test]
        fn dedupe_keys_sort_numerically(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(prefixed(DEDUPE, &a.to_be_bytes()).cmp(&prefixed(DEDUPE, &b.to_be_bytes())), a.cmp(&b));
        }
    }
}
