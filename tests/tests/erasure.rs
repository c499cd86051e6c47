//! Erasure end to end, on the mock cluster: a `customer_erased` request in the middle of the
//! canonical log removes the customer's state, timer, dedupe entries and pending outbox
//! records; later events of the customer are dropped and counted; a confirmation naming the
//! customer only by its key is emitted; and, once fold has rewritten the partition databases,
//! no file under the state dir and no live record of the (computed) compacted changelog holds
//! the customer id in any encoding we store. A replay of the same log erases identically, and
//! a new owner restored from the changelog keeps the customer suppressed.
//! (The timer lives in the customer's state, so no state means no timer.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pulse::replay::{replay, ReplayArgs};
use pulse_codec::{decode_erasure, Encoding};
use pulse_core::hash::{customer_key, customer_key_hex};
use pulse_core::{Body, Event};
use pulse_e2e::{
    append_events, caught_up, config, consume_all, consume_until, day, http_get, placed_order,
    producer, read_state, wait_for, Broker, Rec,
};

const SECRET: &str = "erase-me-5b7c1e9d";
const OTHERS: [&str; 5] = [
    "keep-a1f0",
    "keep-b2e1",
    "keep-c3d2",
    "keep-d4c3",
    "keep-e5b4",
];
const PARTITIONS: i32 = 2;

fn order(customer: &str, event_id: &str, at: i64) -> Event {
    placed_order(customer, event_id, at, 4_200)
}

fn erasure(customer: &str, event_id: &str, at: i64) -> Event {
    Event {
        event_id: event_id.into(),
        customer_id: customer.into(),
        occurred_at: at,
        body: Body::Erased,
    }
}

/// The byte strings under which an id could be stored: raw (also its JSON form: the id needs
/// no escaping), UTF-16LE, hex, and base64 at each of the three alignments (the changelog's
/// JSON carries state as base64), less the characters that depend on neighbouring bytes.
fn encodings(id: &str) -> Vec<Vec<u8>> {
    let raw = id.as_bytes();
    assert_eq!(serde_json::to_string(id).unwrap(), format!("\"{id}\""));
    let mut out = vec![
        raw.to_vec(),
        id.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        raw.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    ];
    for pad in 0..3 {
        let mut b = vec![0u8; pad];
        b.extend_from_slice(raw);
        let enc = STANDARD.encode(&b);
        let start = if pad == 0 { 0 } else { 4 };
        out.push(enc.as_bytes()[start..enc.len() - 4].to_vec());
    }
    out
}

fn contains_any(hay: &[u8], needles: &[Vec<u8>]) -> bool {
    needles
        .iter()
        .any(|n| hay.windows(n.len()).any(|w| w == n.as_slice()))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under `dir` (sled's db, conf, blobs, snapshots: all of it) holding any needle.
fn files_holding(dir: &Path, needles: &[Vec<u8>]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(dir, &mut all);
    assert!(!all.is_empty(), "no files under {}", dir.display());
    all.into_iter()
        .filter(|p| contains_any(&std::fs::read(p).expect("read file"), needles))
        .collect()
}

/// Neither broker here applies compaction (README, "Test brokers"), so the test computes the compacted
/// view itself: the latest record per (partition, key), tombstones included (Kafka keeps a
/// tombstone, key and all, for `delete.retention.ms`).
fn compacted(recs: Vec<Rec>) -> BTreeMap<(i32, String), Rec> {
    recs.into_iter()
        .map(|r| ((r.partition, r.key.clone().unwrap_or_default()), r))
        .collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

fn check_stores(dir: &Path) -> anyhow::Result<()> {
    let key = customer_key(SECRET);
    let (state, _) = read_state(dir)?;
    assert!(!state.contains_key(SECRET), "erased customer's state");
    for c in OTHERS {
        assert!(state.contains_key(c), "{c} kept (control)");
    }
    let mut suppressions = 0;
    let mut dedupe_of_others = 0;
    for entry in std::fs::read_dir(dir)? {
        let store = pulse_store::PartitionStore::open(&entry?.path(), false)?;
        let dedupe = store.dedupe_entries()?;
        assert!(
            dedupe.iter().all(|(_, _, c)| *c != key),
            "dedupe entries of the erased customer"
        );
        dedupe_of_others += dedupe.len();
        assert!(
            store.outbox()?.iter().all(|(_, r)| r.key != SECRET),
            "outbox records about the erased customer"
        );
        suppressions += store
            .suppressed()?
            .iter()
            .filter(|(k, _)| *k == key)
            .count();
        assert!(!store.rewrite_pending()?, "rewritten after the erasure");
    }
    assert!(
        dedupe_of_others > 0,
        "others' dedupe entries kept (control)"
    );
    assert_eq!(suppressions, 1, "one suppression entry, by customer key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_trace_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("live");
    let cfg = config(
        &broker,
        &dir,
        "erasure",
        "[ingest]\nenabled = false\n[fold]\ncommit_max_events = 7\nerasure_rewrite_interval_ms = 0\n",
    );
    broker.create_all(&cfg, PARTITIONS).await?;
    let p = producer(&broker.bootstrap());
    let canonical = cfg.topics.canonical.clone();
    let mut ends = BTreeMap::new();

    // Before: 20 days of orders for everyone, the secret customer included.
    let mut before = Vec::new();
    for d in 0..20 {
        for (i, c) in std::iter::once(&SECRET).chain(&OTHERS).enumerate() {
            if (d + i as i64) % 3 == 0 {
                before.push(order(c, &format!("{c}-{d}"), day(d) + i as i64));
            }
        }
    }
    append_events(&p, &canonical, &before, &mut ends).await?;
    let running = pulse::start(cfg.clone()).await?;
    wait_for(
        "fold to fold the first part",
        Duration::from_secs(60),
        || caught_up(&running, &ends),
    )
    .await?;
    let (_, m) = http_get(running.http_addr, "/metrics")?;
    let suppressed_before = metric(&m, "pulse_fold_suppressed_events_total");

    // Mid-stream: the erasure, then the customer's later events (one of them a re-sent old
    // event), a second request, and everyone else carrying on.
    let mut after = vec![erasure(SECRET, "erasure-request-1", day(21))];
    for d in 22..30 {
        for (i, c) in OTHERS.iter().enumerate() {
            if (d + i as i64) % 2 == 0 {
                after.push(order(c, &format!("{c}-{d}"), day(d) + i as i64));
            }
        }
        if d % 3 == 0 {
            after.push(order(SECRET, &format!("{SECRET}-{d}"), day(d)));
        }
    }
    after.push(order(SECRET, &format!("{SECRET}-0"), day(0))); // re-sent
    after.push(erasure(SECRET, "erasure-request-2", day(30)));
    let later_events = after
        .iter()
        .filter(|e| e.customer_id == SECRET && e.body != Body::Erased)
        .count();
    append_events(&p, &canonical, &after, &mut ends).await?;
    wait_for("fold to reach the end", Duration::from_secs(60), || {
        caught_up(&running, &ends)
    })
    .await?;
    // The rewrite follows the commit; the stores are checked once the service stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, m) = http_get(running.http_addr, "/metrics")?;
    assert_eq!(
        metric(&m, "pulse_fold_suppressed_events_total") - suppressed_before,
        later_events as f64,
        "later events dropped and counted"
    );
    assert!(metric(&m, "pulse_fold_state_rewrites_total") >= 1.0);
    running.stop().await?;

    check_stores(&dir)?;

    // The confirmations: one per request, by customer key, never the raw id.
    let confirmations = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.erasures],
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )?;
    let needles = encodings(SECRET);
    let mut requests = Vec::new();
    for r in &confirmations {
        assert_eq!(r.key.as_deref(), Some(customer_key_hex(SECRET).as_str()));
        assert_eq!(r.headers["ce_type"], "pulse.customer_erased");
        let c = decode_erasure(&r.value, Encoding::Json)?;
        assert_eq!(c.customer_key, customer_key_hex(SECRET));
        assert_eq!(r.headers["ce_id"], c.confirmation_id);
        requests.push((c.request_event_id, c.already_erased));
        assert!(
            !contains_any(&r.value, &needles),
            "raw id in a confirmation"
        );
        assert!(r
            .headers
            .values()
            .all(|v| !contains_any(v.as_bytes(), &needles)));
    }
    assert_eq!(
        requests,
        vec![
            ("erasure-request-1".to_string(), false),
            ("erasure-request-2".to_string(), true)
        ]
    );

    // Every byte of the state dir (sled flushed, rewritten and closed by the stop).
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
    assert!(
        !files_holding(&dir, &encodings(OTHERS[0])).is_empty(),
        "the scan finds a kept customer's id (control)"
    );

    // The changelog's live records after compaction, computed.
    let view = compacted(consume_all(
        &broker.bootstrap(),
        &[&cfg.topics.changelog],
        Duration::from_secs(2),
    )?);
    for ((_, key), r) in &view {
        assert!(
            !contains_any(key.as_bytes(), &needles) && !contains_any(&r.value, &needles),
            "raw id in the compacted changelog at key {key}"
        );
    }
    // The dedupe window's live records: none of the erased customer's (tombstoned by the
    // erasure's commit), others' kept (control).
    let live_dedupe: Vec<pulse_codec::Changelog> = view
        .iter()
        .filter(|((_, k), r)| k.starts_with(pulse_codec::DEDUPE_KEY_PREFIX) && !r.value.is_empty())
        .map(|(_, r)| pulse_codec::decode_changelog(&r.value, Encoding::Json))
        .collect::<Result<_, _>>()?;
    assert!(!live_dedupe.is_empty(), "others' dedupe entries (control)");
    for d in &live_dedupe {
        assert!(
            matches!(d, pulse_codec::Changelog::Dedupe { customer_key: c, .. } if *c != customer_key(SECRET)),
            "a live dedupe record of the erased customer: {d:?}"
        );
    }
    let secret_key = customer_key_hex(SECRET);
    assert!(
        view.iter()
            .any(|((_, k), r)| *k == secret_key && r.value.is_empty()),
        "the tombstone, keyed by customer key"
    );
    assert!(
        view.keys()
            .any(|(_, k)| *k == format!("erased.{secret_key}")),
        "the erasure marker"
    );
    assert!(
        view.values()
            .any(|r| contains_any(&r.value, &encodings(OTHERS[0]))),
        "the scan finds a kept customer's id in its snapshot (control)"
    );

    // A replay of the same log erases identically, and verifies against the live alerts
    // (alerts about erased customers left out).
    let replay_dir = tmp.path().join("replay");
    let config_file = tmp.path().join("replay.toml");
    std::fs::write(
        &config_file,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"erasure\"\n\
             [fold]\nerasure_rewrite_interval_ms = 0\n",
            broker.bootstrap()
        ),
    )?;
    let alerts_file = tmp.path().join("replayed.ndjson");
    replay(ReplayArgs {
        config: Some(config_file),
        state_dir: replay_dir.clone(),
        alerts: format!("file:{}", alerts_file.display()),
        verify: true,
        ..ReplayArgs::default()
    })
    .await?;
    check_stores(&replay_dir)?;
    assert_eq!(read_state(&dir)?, read_state(&replay_dir)?, "same state");
    assert_eq!(files_holding(&replay_dir, &needles), Vec::<PathBuf>::new());
    let replayed = std::fs::read_to_string(&alerts_file)?;
    assert_eq!(
        replayed
            .lines()
            .filter(|l| l.contains("pulse.customer_erased"))
            .count(),
        2,
        "the replay confirms both requests"
    );
    // Alerts that left before the erasure was folded name the customer (they are the
    // consumers' now); nothing the replay sent from the erasure's commit on does.
    let first_confirmation = replayed
        .lines()
        .position(|l| l.contains("pulse.customer_erased"))
        .expect("confirmation");
    assert!(
        replayed
            .lines()
            .skip(first_confirmation)
            .all(|l| !contains_any(l.as_bytes(), &needles)),
        "a record naming the erased customer left after its erasure"
    );

    // A new owner with no local state restores from the changelog: the erasure markers keep
    // the customer suppressed there too, and its rewritten store holds no trace either.
    let restored_dir = tmp.path().join("restored");
    let cfg = config(
        &broker,
        &restored_dir,
        "erasure-restored",
        "[ingest]\nenabled = false\n[fold]\nerasure_rewrite_interval_ms = 0\n",
    );
    let running = pulse::start(cfg.clone()).await?;
    wait_for("the restore", Duration::from_secs(60), || {
        running
            .shared
            .restored
            .load(std::sync::atomic::Ordering::Relaxed)
            == i64::from(PARTITIONS)
    })
    .await?;
    let (_, m) = http_get(running.http_addr, "/metrics")?;
    let suppressed_before = metric(&m, "pulse_fold_suppressed_events_total");
    let late = [
        order(SECRET, "after-restore-1", day(31)),
        order(OTHERS[0], "after-restore-2", day(31)),
    ];
    append_events(&p, &canonical, &late, &mut ends).await?;
    wait_for(
        "the restored fold to reach the end",
        Duration::from_secs(60),
        || caught_up(&running, &ends),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, m) = http_get(running.http_addr, "/metrics")?;
    assert_eq!(
        metric(&m, "pulse_fold_suppressed_events_total") - suppressed_before,
        1.0,
        "suppressed after a restore"
    );
    running.stop().await?;
    check_stores(&restored_dir)?;
    assert_eq!(
        files_holding(&restored_dir, &needles),
        Vec::<PathBuf>::new()
    );
    Ok(())
}

/// Outbox records about the customer that were committed but not yet acknowledged when the
/// erasure is folded (a crash between a commit and its drain) are withdrawn in the erasure's
/// commit: they never leave. The store is seeded as such a crash leaves it; the commit timer
/// is set far out so that the erasure (one record per commit) is folded before any drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_withdraws_pending_outbox_records_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    let cfg = config(
        &broker,
        &dir,
        "erasure-pending",
        "[ingest]\nenabled = false\n[fold]\ncommit_max_events = 1\ncommit_interval_ms = 20000\n\
         erasure_rewrite_interval_ms = 0\n",
    );
    broker.create_all(&cfg, 1).await?;
    let p = producer(&broker.bootstrap());
    let mut ends = BTreeMap::new();
    append_events(
        &p,
        &cfg.topics.canonical,
        &[
            order(SECRET, "before", day(0)),
            erasure(SECRET, "erasure-request-1", day(1)),
        ],
        &mut ends,
    )
    .await?;
    let record = |topic: &str, key: &str, partition| pulse_store::OutboxRecord {
        topic: topic.into(),
        key: key.into(),
        value: Some(format!("{{\"customer_id\":\"{key}\"}}").into_bytes()),
        headers: vec![("ce_id".into(), format!("pending-{key}"))],
        partition,
    };
    {
        let store = pulse_store::PartitionStore::open(&pulse::fold::partition_dir(&dir, 0), true)?;
        store.commit(&pulse_store::Commit {
            checkpoint: pulse_store::Checkpoint {
                next_offset: 1,
                clock: day(0),
            },
            customers: vec![(SECRET.into(), Some(Default::default()))],
            outbox: vec![
                (0, record(&cfg.topics.churn_warnings, SECRET, None)),
                (
                    1,
                    record(&cfg.topics.changelog, &customer_key_hex(SECRET), Some(0)),
                ),
                (2, record(&cfg.topics.churn_warnings, OTHERS[0], None)),
            ],
            ..Default::default()
        })?;
    }
    let running = pulse::start(cfg.clone()).await?;
    wait_for("the erasure to be folded", Duration::from_secs(60), || {
        caught_up(&running, &ends)
    })
    .await?;
    running.stop().await?;

    let needles = encodings(SECRET);
    let sent = consume_all(
        &broker.bootstrap(),
        &[&cfg.topics.churn_warnings, &cfg.topics.changelog],
        Duration::from_secs(2),
    )?;
    assert!(
        sent.iter().any(|r| r.key.as_deref() == Some(OTHERS[0])),
        "another customer's pending alert still leaves (control)"
    );
    for r in &sent {
        assert!(
            !contains_any(&r.value, &needles) && r.key.as_deref() != Some(SECRET),
            "a pending record about the erased customer left: {r:?}"
        );
    }
    let store = pulse_store::PartitionStore::open(&pulse::fold::partition_dir(&dir, 0), false)?;
    assert_eq!(store.outbox()?, vec![]);
    assert_eq!(store.customer(SECRET)?, None);
    drop(store);
    assert_eq!(files_holding(&dir, &needles), Vec::<PathBuf>::new());
    Ok(())
}
