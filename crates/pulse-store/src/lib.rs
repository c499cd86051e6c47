//! pulse-store: the durable state of one canonical-log partition, in its own sled database.
//!
//! It owns the key layout and the stored encodings. Everything fold must not lose — customer
//! state, the partition checkpoint (next offset and clock), dedupe entries and the outbox of
//! records still to be produced — lives in **one sled tree**, so a [`Commit`] is a single
//! `apply_batch`: atomic, all or nothing. It must not know about Kafka or the rules.
//!
//! Key layout (one tree, one-byte prefix, big-endian fixed-width numbers so order is numeric):
//! - `b'c' ++ customer_id`          → customer state (u16 schema version ++ JSON; the
//!   changelog carries the two parts apart, see [`encode_state_parts`])
//! - `b'd' ++ u128 event-id hash`   → i64 clock at which it was seen ++ u128 customer key
//! - `b's' ++ u128 customer key`    → i64 clock at which the customer was erased (suppression)
//! - `b'o' ++ u64 sequence`         → outbox record
//! - `b't' ++ u64 sequence`         → i64 tag: the checkpoint offset of the commit whose
//!   outbox starts at that sequence (exactly-once mode compares it with the group's
//!   transactionally committed offset)
//! - `b'T' ++ u64 due ++ customer_id` → nothing: the timer index, one entry per customer with
//!   a `next_timer`, in firing order (due as i64 with its sign bit flipped, so a range scan
//!   from the start finds the first timer)
//! - `b'n' ++ name`                 → i64 count kept by the writer (`customers`, `timers`, and
//!   fold's per stage and segment), so nothing is counted by a scan
//! - `b'm' ++ name`                 → metadata (`schema`, `checkpoint`, `rewrite`)
//!
//! Fold does not hold a partition's customers in memory: [`CachedStates`] (in `cache.rs`)
//! reads them in on demand and keeps the recently used ones within a byte budget.
//!
//! Physical erasure: sled is log-structured, so a removed value stays in old segments until
//! sled happens to rewrite them. A commit that erases a customer therefore also sets the
//! `rewrite` mark, and [`PartitionStore::rewrite`] copies the live records into a fresh
//! directory that replaces the old one, which is deleted. It is crash-safe: `open` finishes or
//! discards an interrupted rewrite, and the mark survives until a rewrite completed.

mod cache;
pub use cache::CachedStates;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use pulse_core::state::STATE_SCHEMA_VERSION;
use pulse_core::{CustomerState, Millis};

/// Version of the key layout and metadata encoding of this crate.
/// 2: dedupe entries name their customer's key; suppression entries; the rewrite mark.
/// 3: the timer index and the kept counts (a schema-2 store is upgraded in place at open).
pub const STORE_SCHEMA_VERSION: u16 = 3;

/// sled's own page cache per partition database (sled's default is 1 GiB each).
pub const SLED_CACHE_BYTES: u64 = 16 << 20;

const CUSTOMER: u8 = b'c';
const DEDUPE: u8 = b'd';
const SUPPRESSED: u8 = b's';
const OUTBOX: u8 = b'o';
const OUTBOX_TAG: u8 = b't';
const TIMER: u8 = b'T';
const COUNT: u8 = b'n';
const META_SCHEMA: &[u8] = b"mschema";
const META_CHECKPOINT: &[u8] = b"mcheckpoint";
const META_REWRITE: &[u8] = b"mrewrite";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("rewriting {path}")]
    Rewrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state was written with store schema {found}; this binary reads schema {supported} — use a binary of that version or rebuild the state by replay")]
    SchemaVersion { found: u16, supported: u16 },
    #[error(
        "customer state was written with schema {found}; this binary reads schemas 1 to {supported}"
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
    /// Dedupe inserts (`Some((seen at, customer key))`) and removals (`None`), in order.
    pub dedupe: Vec<(u128, Option<(Millis, u128)>)>,
    pub outbox: Vec<(u64, OutboxRecord)>,
    /// Customers erased by this commit: (customer key, clock), kept for good.
    pub suppressed: Vec<(u128, Millis)>,
    /// Committed outbox records withdrawn by this commit (an erased customer's).
    pub outbox_purged: Vec<u64>,
    /// Timer index changes `(due, customer id, set)`, applied in order (a later one for the
    /// same entry wins).
    pub timers: Vec<(Millis, String, bool)>,
    /// Counts as of this commit, by name (absolute values).
    pub counts: Vec<(String, i64)>,
}

/// The state of one partition. Clones share one database handle, which
/// [`PartitionStore::rewrite`] swaps for the rewritten one.
#[derive(Clone)]
pub struct PartitionStore {
    db: Arc<RwLock<sled::Db>>,
    dir: PathBuf,
    fsync: bool,
}

/// What a rewrite did, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub records: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl PartitionStore {
    /// Opens (or creates) the partition's database. Refuses state of another schema version.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self, StoreError> {
        recover_rewrite(dir)?;
        let db = open_db(dir)?;
        match db.get(META_SCHEMA)? {
            Some(v) => {
                let found = read_u16(&v).ok_or(StoreError::Corrupt {
                    what: "schema",
                    source: None,
                })?;
                if found == 2 {
                    upgrade_from_2(&db)?;
                } else if found != STORE_SCHEMA_VERSION {
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
        Ok(PartitionStore {
            db: Arc::new(RwLock::new(db)),
            dir: dir.to_path_buf(),
            fsync,
        })
    }

    /// The current database handle (a rewrite swaps it; a handle taken before keeps reading
    /// the old, already unlinked, files until dropped).
    fn db(&self) -> sled::Db {
        self.db.read().expect("store lock").clone()
    }

    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.db()
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
        self.db()
            .get(prefixed(CUSTOMER, id.as_bytes()))?
            .map(|v| decode_state(&v))
            .transpose()
    }

    /// Every customer of the partition, in key order.
    pub fn customers(&self) -> impl Iterator<Item = Result<(String, CustomerState), StoreError>> {
        self.db().scan_prefix([CUSTOMER]).map(|kv| {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            Ok((id, decode_state(&v)?))
        })
    }

    /// The counts kept by [`Commit::counts`], by name.
    pub fn counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        self.db()
            .scan_prefix([COUNT])
            .map(|kv| {
                let (k, v) = kv?;
                let n =
                    i64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                        what: "count",
                        source: None,
                    })?);
                Ok((String::from_utf8_lossy(&k[1..]).into_owned(), n))
            })
            .collect()
    }

    /// Every pending timer `(due, customer id)` in firing order (for checks and tests; fold
    /// reads the index through [`CachedStates`]).
    pub fn timers(&self) -> Result<Vec<(Millis, String)>, StoreError> {
        self.db()
            .scan_prefix([TIMER])
            .map(|kv| decode_timer_key(&kv?.0))
            .collect()
    }

    /// `(event-id hash, seen at, customer key)` of every dedupe entry.
    pub fn dedupe_entries(&self) -> Result<Vec<(u128, Millis, u128)>, StoreError> {
        self.db()
            .scan_prefix([DEDUPE])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || StoreError::Corrupt {
                    what: "dedupe",
                    source: None,
                };
                let key = u128::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
                if v.len() != 24 {
                    return Err(corrupt());
                }
                let at = i64::from_be_bytes(v[..8].try_into().map_err(|_| corrupt())?);
                let customer = u128::from_be_bytes(v[8..].try_into().map_err(|_| corrupt())?);
                Ok((key, at, customer))
            })
            .collect()
    }

    /// `(customer key, erased at)` of every erased customer.
    pub fn suppressed(&self) -> Result<Vec<(u128, Millis)>, StoreError> {
        self.db()
            .scan_prefix([SUPPRESSED])
            .map(|kv| {
                let (k, v) = kv?;
                let corrupt = || StoreError::Corrupt {
                    what: "suppression",
                    source: None,
                };
                let key = u128::from_be_bytes(k[1..].try_into().map_err(|_| corrupt())?);
                let at = i64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt())?);
                Ok((key, at))
            })
            .collect()
    }

    /// Whether an erasure was committed since the last completed rewrite.
    pub fn rewrite_pending(&self) -> Result<bool, StoreError> {
        Ok(self.db().contains_key(META_REWRITE)?)
    }

    /// Outbox records not yet acknowledged, in the order they were committed.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        self.db()
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
        self.db()
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

    /// Writes the commit in place of everything the store held (customers, dedupe and
    /// suppression entries, outbox; the schema and a pending rewrite mark stay), in one
    /// atomic batch: a
    /// partition whose local state is older than the changelog's is replaced by the
    /// changelog's, never merged with it.
    pub fn replace(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.db().iter().keys() {
            let key = key?;
            // The rewrite mark stays: an erasure's bytes still wait in sled's log.
            if key.as_ref() != META_SCHEMA && key.as_ref() != META_REWRITE {
                batch.remove(key);
            }
        }
        self.write_on(batch, commit, false)
    }

    fn write(&self, commit: &Commit, tag: bool) -> Result<(), StoreError> {
        self.write_on(sled::Batch::default(), commit, tag)
    }

    /// Adds the commit to `batch` (a later write of a key in a batch wins) and applies it.
    fn write_on(
        &self,
        mut batch: sled::Batch,
        commit: &Commit,
        tag: bool,
    ) -> Result<(), StoreError> {
        for (id, state) in &commit.customers {
            let key = prefixed(CUSTOMER, id.as_bytes());
            match state {
                Some(s) => batch.insert(key, encode_state(s)),
                None => batch.remove(key),
            }
        }
        for (due, id, set) in &commit.timers {
            let key = timer_key(*due, id);
            if *set {
                batch.insert(key, &[][..]);
            } else {
                batch.remove(key);
            }
        }
        for (name, n) in &commit.counts {
            batch.insert(prefixed(COUNT, name.as_bytes()), &n.to_be_bytes());
        }
        for (k, entry) in &commit.dedupe {
            let key = prefixed(DEDUPE, &k.to_be_bytes());
            match entry {
                Some((at, customer)) => {
                    let mut v = at.to_be_bytes().to_vec();
                    v.extend_from_slice(&customer.to_be_bytes());
                    batch.insert(key, v)
                }
                None => batch.remove(key),
            }
        }
        for (customer, at) in &commit.suppressed {
            batch.insert(
                prefixed(SUPPRESSED, &customer.to_be_bytes()),
                &at.to_be_bytes(),
            );
        }
        if !commit.suppressed.is_empty() {
            batch.insert(META_REWRITE, &[1u8][..]);
        }
        for seq in &commit.outbox_purged {
            batch.remove(prefixed(OUTBOX, &seq.to_be_bytes()));
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
        let db = self.db();
        db.apply_batch(batch)?;
        if self.fsync {
            db.flush()?;
        }
        Ok(())
    }

    /// Copies every live record (less the rewrite mark) into a fresh database that replaces
    /// this one, and deletes the old directory with whatever sled still kept of removed
    /// values. Call it at a commit boundary, with no write in flight (fold is the only writer).
    /// Crash-safe: see `recover_rewrite`.
    pub fn rewrite(&self) -> Result<Rewritten, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Rewrite { path, source }
        };
        let (fresh, old) = (sibling(&self.dir, "rewrite"), sibling(&self.dir, "old"));
        let mut guard = self.db.write().expect("store lock");
        guard.flush()?;
        let bytes_before = guard.size_on_disk().unwrap_or(0);
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        }
        let mut records = 0u64;
        {
            let new = open_db(&fresh)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for kv in guard.iter() {
                let (k, v) = kv?;
                if k.as_ref() == META_REWRITE {
                    continue;
                }
                batch.insert(k, v);
                records += 1;
                in_batch += 1;
                if in_batch == 10_000 {
                    new.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            new.apply_batch(batch)?;
            new.flush()?;
        }
        // The copy is complete and durable: from here on `open` completes the swap.
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&self.dir, &old).map_err(io(&self.dir))?;
        std::fs::rename(&fresh, &self.dir).map_err(io(&fresh))?;
        let new = open_db(&self.dir)?;
        let bytes_after = new.size_on_disk().unwrap_or(0);
        *guard = new;
        drop(guard);
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
        Ok(Rewritten {
            records,
            bytes_before,
            bytes_after,
        })
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
                .db()
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
        self.db().apply_batch(batch)?;
        Ok(())
    }

    /// Bytes on disk, for metrics.
    pub fn size_on_disk(&self) -> u64 {
        self.db().size_on_disk().unwrap_or(0)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db().flush()?;
        Ok(())
    }
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Finishes or discards a rewrite a crash interrupted. `<dir>.rewrite` beside a `<dir>` is an
/// unfinished copy (the old database is intact and still marked): removed. `<dir>.rewrite`
/// without `<dir>` is a complete copy whose swap was cut short: moved into place. A leftover
/// `<dir>.old` is removed (it holds what the rewrite was meant to destroy).
fn recover_rewrite(dir: &Path) -> Result<(), StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Rewrite { path, source }
    };
    let (fresh, old) = (sibling(dir, "rewrite"), sibling(dir, "old"));
    if fresh.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&fresh).map_err(io(&fresh))?;
        } else {
            std::fs::rename(&fresh, dir).map_err(io(&fresh))?;
        }
    }
    if old.exists() && dir.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// sled's background flusher holds the directory lock for a moment after the last handle is
/// dropped, so a reopen in the same process (a restart, a rebalance back) retries briefly.
fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    let mut attempts = 0;
    loop {
        match sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES)
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

/// Schema 2 had no timer index and no kept counts: both are built from the customers, in
/// one batch with the new version, so a crash leaves either store whole.
fn upgrade_from_2(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let (mut customers, mut timers) = (0i64, 0i64);
    for kv in db.scan_prefix([CUSTOMER]) {
        let (k, v) = kv?;
        customers += 1;
        if let Some(due) = decode_state(&v)?.next_timer {
            timers += 1;
            batch.insert(timer_key(due, &String::from_utf8_lossy(&k[1..])), &[][..]);
        }
    }
    batch.insert(prefixed(COUNT, b"customers"), &customers.to_be_bytes());
    batch.insert(prefixed(COUNT, b"timers"), &timers.to_be_bytes());
    batch.insert(META_SCHEMA, &STORE_SCHEMA_VERSION.to_be_bytes());
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// `b'T' ++ due (sign bit flipped, big-endian) ++ customer id`: byte order is (due, id) order.
fn timer_key(due: Millis, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + id.len());
    k.push(TIMER);
    k.extend_from_slice(&((due as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn decode_timer_key(k: &[u8]) -> Result<(Millis, String), StoreError> {
    let due = k
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as Millis)
        .ok_or(StoreError::Corrupt {
            what: "timer",
            source: None,
        })?;
    Ok((due, String::from_utf8_lossy(&k[9..]).into_owned()))
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
    decode_state_parts(found, &bytes[2..])
}

/// A customer's stored encoding in its two parts, as the changelog carries them (so no other
/// crate splits or joins the bytes): the state's schema version and the encoding proper
/// ([`encode_state`] is the version, big-endian, followed by these bytes).
pub fn encode_state_parts(state: &CustomerState) -> (u16, Vec<u8>) {
    let body = serde_json::to_vec(state).expect("plain struct");
    (STATE_SCHEMA_VERSION, body)
}

/// Reads a state from the two parts of [`encode_state_parts`]; refuses another version by
/// name as [`decode_state`] does.
pub fn decode_state_parts(found: u16, body: &[u8]) -> Result<CustomerState, StoreError> {
    // Schema 1 lacks `orders.recent_days` (serde's default, then seeded from what it knows).
    if found != STATE_SCHEMA_VERSION && found != 1 {
        return Err(StoreError::StateVersion {
            found,
            supported: STATE_SCHEMA_VERSION,
        });
    }
    let mut state: CustomerState =
        serde_json::from_slice(body).map_err(|e| StoreError::Corrupt {
            what: "customer",
            source: Some(e),
        })?;
    if found == 1 {
        state.orders.seed_recent_days();
    }
    Ok(state)
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
    fn a_schema_2_store_gets_its_timer_index_and_counts_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_db(dir.path()).unwrap();
            db.insert(META_SCHEMA, &2u16.to_be_bytes()).unwrap();
            let mut timed = state(3);
            timed.next_timer = Some(-5);
            db.insert(prefixed(CUSTOMER, b"a"), encode_state(&timed))
                .unwrap();
            db.insert(prefixed(CUSTOMER, b"b"), encode_state(&state(1)))
                .unwrap();
            let mut later = state(2);
            later.next_timer = Some(1_735_689_600_000);
            db.insert(prefixed(CUSTOMER, b"c"), encode_state(&later))
                .unwrap();
            db.flush().unwrap();
        }
        let store = PartitionStore::open(dir.path(), false).unwrap();
        assert_eq!(
            store.timers().unwrap(),
            vec![(-5, "a".to_string()), (1_735_689_600_000, "c".to_string())]
        );
        let counts = store.counts().unwrap();
        assert_eq!((counts["customers"], counts["timers"]), (3, 2));
        drop(store);
        // Upgraded for good: opened again, it is schema 3 and nothing is rebuilt twice.
        let store = PartitionStore::open(dir.path(), false).unwrap();
        assert_eq!(store.timers().unwrap().len(), 2);
        let version = store.db().get(META_SCHEMA).unwrap().unwrap();
        assert_eq!(read_u16(&version), Some(STORE_SCHEMA_VERSION));
    }

    #[test]
    fn replace_keeps_only_the_new_commit() {
        let dir = tempfile::tempdir().unwrap();
        let rec = OutboxRecord {
            topic: "t".into(),
            key: "c1".into(),
            value: Some(b"{}".to_vec()),
            headers: vec![],
            partition: None,
        };
        let store = PartitionStore::open(dir.path(), true).unwrap();
        store
            .commit_tagged(&Commit {
                checkpoint: Checkpoint {
                    next_offset: 10,
                    clock: 99,
                },
                customers: vec![
                    ("old".into(), Some(state(1))),
                    ("both".into(), Some(state(1))),
                ],
                dedupe: vec![(7, Some((99, 5)))],
                suppressed: vec![(3, 90)],
                outbox: vec![(1, rec)],
                timers: vec![(120, "old".into(), true), (130, "both".into(), true)],
                counts: vec![
                    ("customers".into(), 2),
                    ("timers".into(), 2),
                    ("stale".into(), 1),
                ],
                ..Commit::default()
            })
            .unwrap();
        let newer = Checkpoint {
            next_offset: 50,
            clock: 500,
        };
        store
            .replace(&Commit {
                checkpoint: newer,
                customers: vec![
                    ("both".into(), Some(state(4))),
                    ("new".into(), Some(state(2))),
                ],
                dedupe: vec![(8, Some((400, 6)))],
                timers: vec![(600, "new".into(), true)],
                counts: vec![("customers".into(), 2), ("timers".into(), 1)],
                ..Commit::default()
            })
            .unwrap();
        drop(store);
        let store = PartitionStore::open(dir.path(), true).unwrap();
        assert_eq!(store.checkpoint().unwrap(), Some(newer));
        let customers: Vec<_> = store.customers().map(Result::unwrap).collect();
        assert_eq!(
            customers,
            vec![("both".into(), state(4)), ("new".into(), state(2))]
        );
        assert_eq!(store.dedupe_entries().unwrap(), vec![(8, 400, 6)]);
        assert_eq!(store.timers().unwrap(), vec![(600, "new".to_string())]);
        let counts = store.counts().unwrap();
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![("customers".into(), 2), ("timers".into(), 1)]
        );
        assert_eq!(store.suppressed().unwrap(), vec![]);
        assert_eq!(store.outbox().unwrap(), vec![], "the stale outbox is gone");
        assert_eq!(store.outbox_tags().unwrap(), vec![]);
        assert!(
            store.rewrite_pending().unwrap(),
            "the old erasure's rewrite is still due"
        );
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
                    dedupe: vec![(7, Some((99, 5))), (8, Some((99, 6))), (8, None)],
                    outbox: vec![(1, rec.clone()), (2, rec.clone())],
                    ..Commit::default()
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
        assert_eq!(store.dedupe_entries().unwrap(), vec![(7, 99, 5)]);
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

    /// Every file below `dir`, read whole.
    fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                out.extend(files(&path));
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn found(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        files(dir)
            .into_iter()
            .filter(|(_, b)| b.windows(needle.len()).any(|w| w == needle))
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn erasure_commit_suppresses_purges_and_rewrite_destroys_the_bytes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("partition-0000");
        let secret = "erase-me-4f1c9a";
        let alert = |key: &str| OutboxRecord {
            topic: "alerts".into(),
            key: key.into(),
            value: Some(format!("{{\"customer_id\":\"{key}\"}}").into_bytes()),
            ..OutboxRecord::default()
        };
        let store = PartitionStore::open(&dir, true).unwrap();
        // Many versions of the customer, so sled's log holds several copies of the id.
        for i in 0..50 {
            store
                .commit(&Commit {
                    checkpoint: Checkpoint {
                        next_offset: i,
                        clock: i,
                    },
                    customers: vec![
                        (secret.into(), Some(state(i as u32))),
                        ("keep-7d2e".into(), Some(state(1))),
                    ],
                    dedupe: vec![(i as u128, Some((i, 42)))],
                    outbox: vec![(i as u64, alert(secret))],
                    ..Commit::default()
                })
                .unwrap();
        }
        store.ack_outbox(0..49).unwrap();
        assert!(!found(&dir, secret.as_bytes()).is_empty(), "control");
        store
            .commit(&Commit {
                checkpoint: Checkpoint {
                    next_offset: 50,
                    clock: 50,
                },
                customers: vec![(secret.into(), None)],
                dedupe: (0..50).map(|i| (i as u128, None)).collect(),
                suppressed: vec![(42, 50)],
                outbox_purged: vec![49],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.customer(secret).unwrap(), None);
        assert_eq!(store.dedupe_entries().unwrap(), vec![]);
        assert_eq!(store.outbox().unwrap(), vec![]);
        assert_eq!(store.suppressed().unwrap(), vec![(42, 50)]);
        assert!(store.rewrite_pending().unwrap());
        // Deleted, yet still on disk: sled is log-structured.
        assert!(
            !found(&dir, secret.as_bytes()).is_empty(),
            "sled kept the removed values (if this fails, sled changed; the rewrite stays)"
        );
        let reader = store.clone();
        let r = store.rewrite().unwrap();
        assert!(r.records >= 4, "{r:?}");
        assert_eq!(found(root.path(), secret.as_bytes()), Vec::<PathBuf>::new());
        assert!(!found(root.path(), b"keep-7d2e").is_empty(), "control");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            1,
            "no leftover directory"
        );
        // Clones see the rewritten database; the mark is gone; state survives a reopen.
        assert!(!reader.rewrite_pending().unwrap());
        assert_eq!(reader.customer("keep-7d2e").unwrap(), Some(state(1)));
        drop((store, reader));
        let store = PartitionStore::open(&dir, true).unwrap();
        assert_eq!(store.suppressed().unwrap(), vec![(42, 50)]);
        assert_eq!(store.checkpoint().unwrap().unwrap().next_offset, 50);
        assert_eq!(store.customers().count(), 1);
    }

    #[test]
    fn open_recovers_an_interrupted_rewrite() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("p");
        let fresh = sibling(&dir, "rewrite");
        let old = sibling(&dir, "old");
        let put = |d: &Path, n: u32| {
            let s = PartitionStore::open(d, true).unwrap();
            s.commit(&Commit {
                customers: vec![("c".into(), Some(state(n)))],
                ..Commit::default()
            })
            .unwrap();
        };
        // An unfinished copy beside the database: discarded.
        put(&dir, 1);
        put(&fresh, 2);
        let s = PartitionStore::open(&dir, true).unwrap();
        assert_eq!(s.customer("c").unwrap(), Some(state(1)));
        assert!(!fresh.exists());
        drop(s);
        // A complete copy whose swap was cut short: moved into place, the old one removed.
        std::fs::rename(&dir, &old).unwrap();
        put(&fresh, 3);
        let s = PartitionStore::open(&dir, true).unwrap();
        assert_eq!(s.customer("c").unwrap(), Some(state(3)));
        assert!(!fresh.exists() && !old.exists());
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

    #[test]
    fn reads_schema_1_state_and_seeds_the_purchase_days_it_knows() {
        // A schema-1 record: version 1, then the JSON of a state without `recent_days`.
        let schema_1 = |s: &CustomerState| {
            let mut json = serde_json::to_value(s).unwrap();
            json["orders"]
                .as_object_mut()
                .unwrap()
                .remove("recent_days");
            let mut v = 1u16.to_be_bytes().to_vec();
            v.extend(serde_json::to_vec(&json).unwrap());
            v
        };
        let day = pulse_core::DAY;
        let mut s = CustomerState::default();
        s.orders.first_at = Some(3 * day + 5);
        s.orders.last_at = Some(9 * day + 7);
        s.orders.purchase_days = 2;
        let read = decode_state(&schema_1(&s)).unwrap();
        assert_eq!(read.orders.recent_days, vec![3, 9]);
        assert!(read.orders.knows_recent_days());
        // With more purchase days than first and last, only the last is known: untrusted.
        s.orders.purchase_days = 5;
        let read = decode_state(&schema_1(&s)).unwrap();
        assert_eq!(read.orders.recent_days, vec![9]);
        assert!(!read.orders.knows_recent_days());
        // Written back, it is schema 2 and reads unchanged.
        assert_eq!(decode_state(&encode_state(&read)).unwrap(), read);
    }

    #[test]
    fn state_parts_are_the_stored_encoding_split_at_the_version() {
        let s = state(3);
        let (version, body) = encode_state_parts(&s);
        let stored = encode_state(&s);
        assert_eq!(version, STATE_SCHEMA_VERSION);
        assert_eq!(stored[..2], version.to_be_bytes());
        assert_eq!(stored[2..], body[..]);
        assert_eq!(decode_state_parts(version, &body).unwrap(), s);
        let err = decode_state_parts(42, &body).unwrap_err();
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
