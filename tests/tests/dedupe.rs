//! The event-id dedupe window survives a move of its partition (mock cluster). Instance A folds
//! a stream and stops; instance B, in the same group with a fresh state dir, restores every
//! partition from the compacted changelog. B's dedupe entries must equal A's sled entries at
//! the checkpoint, the live `d.` records of the (computed) compacted changelog must be exactly
//! that window, and a duplicate of an event A folded, re-sent into the canonical log (ingest is
//! at-least-once), must be dropped by B: counted in `pulse_fold_duplicate_events_total`, state
//! unchanged. A fresh event after it is folded (control). Also measures the changelog volume
//! the window costs, in records per folded event.
//!
//! A file of its own, so that no other test in the process moves the duplicate counter.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pulse_codec::{decode_changelog, parse_dedupe_changelog_key, Changelog, Encoding};
use pulse_core::hash::{customer_key, event_key};
use pulse_core::Event;
use pulse_e2e::{
    append_events, caught_up, config, consume_all, day, http_get, placed_order, producer,
    read_state, wait_for, Broker, Rec,
};
use pulse_store::PartitionStore;

const PARTITIONS: i32 = 3;
const DAYS: i64 = 20;

fn order(customer: &str, event_id: &str, at: i64) -> Event {
    placed_order(customer, event_id, at, 1_999)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// By partition: dedupe entries `(event key, seen at, customer key)`.
type Window = BTreeMap<i32, BTreeSet<(u128, i64, u128)>>;

/// The dedupe window of the stores under `dir` (the service stopped).
fn dedupe_on_disk(dir: &Path) -> anyhow::Result<Window> {
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let path = pulse::fold::partition_dir(dir, p);
        if path.exists() {
            let store = PartitionStore::open(&path, false)?;
            out.insert(p, store.dedupe_entries()?.into_iter().collect());
        }
    }
    Ok(out)
}

/// The dedupe window of the stores a running service holds.
fn dedupe_held(running: &pulse::Running) -> Window {
    running
        .shared
        .partitions
        .read()
        .expect("lock")
        .iter()
        .map(|(p, (s, _))| {
            (
                *p,
                s.dedupe_entries().expect("dedupe").into_iter().collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_window_survives_a_restore_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let fold_config = |dir: &Path| {
        config(
            &broker,
            dir,
            "dedupe",
            "[ingest]\nenabled = false\n[fold]\ncommit_max_events = 1\ndedupe_window_days = 7\n",
        )
    };
    let cfg_a = fold_config(&tmp.path().join("a"));
    broker.create_all(&cfg_a, PARTITIONS).await?;
    let canonical = cfg_a.topics.canonical.clone();
    let p = producer(&broker.bootstrap());

    // 20 days of orders from 12 customers: with a 7-day window, most entries are evicted
    // (tombstoned) before the end, the last week's are live.
    let customers: Vec<String> = (0..12).map(|i| format!("cust-{i:02}")).collect();
    let mut events = Vec::new();
    for d in 0..DAYS {
        for (i, c) in customers.iter().enumerate() {
            if (d + i as i64) % 2 == 0 {
                events.push(order(c, &format!("{c}-{d}"), day(d) + i as i64));
            }
        }
    }
    let mut ends = BTreeMap::new();
    append_events(&p, &canonical, &events, &mut ends).await?;
    assert_eq!(
        ends.len(),
        PARTITIONS as usize,
        "every partition has events"
    );

    // A folds everything and stops (its partitions are revoked).
    let a = pulse::start(cfg_a.clone()).await?;
    wait_for("A to fold the stream", Duration::from_secs(60), || {
        caught_up(&a, &ends)
    })
    .await?;
    a.stop().await?;
    let window_a = dedupe_on_disk(&cfg_a.fold.state_dir)?;
    let (state_a, checkpoints_a) = read_state(&cfg_a.fold.state_dir)?;
    let live: usize = window_a.values().map(BTreeSet::len).sum();
    assert!(live > 0, "a live window to restore");
    assert!(live < events.len(), "entries were evicted too");

    // The changelog A wrote: its volume, and its compacted view (latest per key).
    let changelog = consume_all(
        &broker.bootstrap(),
        &[&cfg_a.topics.changelog],
        Duration::from_secs(2),
    )?;
    let dedupe_records: Vec<&Rec> = changelog
        .iter()
        .filter(|r| {
            r.key
                .as_deref()
                .and_then(parse_dedupe_changelog_key)
                .is_some()
        })
        .collect();
    let (entries, tombstones) =
        dedupe_records
            .iter()
            .fold((0, 0), |(e, t), r| match r.value.is_empty() {
                false => (e + 1, t),
                true => (e, t + 1),
            });
    // One event per commit: no entry is added and evicted within one commit (which would
    // write neither record).
    assert_eq!(entries, events.len(), "one entry record per folded event");
    assert_eq!(
        tombstones,
        events.len() - live,
        "one tombstone per entry evicted from the window"
    );
    let entry_bytes: usize = dedupe_records
        .iter()
        .filter(|r| !r.value.is_empty())
        .map(|r| r.key.as_deref().map_or(0, str::len) + r.value.len())
        .sum();
    eprintln!(
        "changelog volume: {} events folded -> {} records in all ({} dedupe entries + {} dedupe \
         tombstones = {:.2} dedupe records per event; {} live after compaction; an entry is \
         {} bytes of key + JSON value, before headers)",
        events.len(),
        changelog.len(),
        entries,
        tombstones,
        dedupe_records.len() as f64 / events.len() as f64,
        live,
        entry_bytes / entries.max(1),
    );
    let mut compacted: BTreeMap<(i32, u128), &Rec> = BTreeMap::new();
    for r in dedupe_records {
        let k = parse_dedupe_changelog_key(r.key.as_deref().expect("key")).expect("dedupe key");
        compacted.insert((r.partition, k), r);
    }
    let mut window_log = Window::new();
    for ((partition, k), r) in compacted {
        if r.value.is_empty() {
            continue;
        }
        let Changelog::Dedupe {
            event_key,
            seen_at_ms,
            customer_key,
        } = decode_changelog(&r.value, Encoding::Json)?
        else {
            panic!("a dedupe key with another record");
        };
        assert_eq!(event_key, k);
        assert_eq!(
            r.headers.get("schema").map(String::as_str),
            Some("pulse.v1.ChangelogRecord/3")
        );
        window_log
            .entry(partition)
            .or_default()
            .insert((event_key, seen_at_ms, customer_key));
    }
    assert_eq!(
        window_log, window_a,
        "the live dedupe records of the compacted changelog are exactly A's window"
    );

    // B: the same group, a fresh state dir. Every partition moves to it and is restored.
    let cfg_b = fold_config(&tmp.path().join("b"));
    let b = pulse::start(cfg_b.clone()).await?;
    wait_for(
        "B to restore every partition",
        Duration::from_secs(60),
        || {
            b.shared.restored.load(Ordering::Relaxed) == i64::from(PARTITIONS)
                && b.shared.partitions.read().expect("lock").len() == PARTITIONS as usize
        },
    )
    .await?;
    assert_eq!(
        dedupe_held(&b),
        window_a,
        "B's restored dedupe entries equal A's at the checkpoint"
    );

    // Ingest re-sends an event A folded (the latest of cust-00, inside the window).
    let original = events
        .iter()
        .rev()
        .find(|e| e.customer_id == customers[0])
        .expect("an event of cust-00")
        .clone();
    let ck = customer_key(&original.customer_id);
    assert!(
        window_a.values().flatten().any(|(k, _, c)| *k
            == event_key(&original.customer_id, &original.event_id)
            && *c == ck),
        "the re-sent event is in A's window"
    );
    let (_, m) = http_get(b.http_addr, "/metrics")?;
    let duplicates_before = metric(&m, "pulse_fold_duplicate_events_total");
    append_events(&p, &canonical, std::slice::from_ref(&original), &mut ends).await?;
    wait_for("B to fold the duplicate", Duration::from_secs(60), || {
        caught_up(&b, &ends)
    })
    .await?;
    let (_, m) = http_get(b.http_addr, "/metrics")?;
    assert_eq!(
        metric(&m, "pulse_fold_duplicate_events_total") - duplicates_before,
        1.0,
        "the re-sent event is dropped as a duplicate"
    );
    let state_b = |id: &str| {
        b.shared
            .partitions
            .read()
            .expect("lock")
            .values()
            .find_map(|(s, _)| s.customer(id).expect("customer"))
    };
    assert_eq!(
        state_b(&original.customer_id).as_ref(),
        state_a.get(&original.customer_id),
        "state unchanged by the duplicate"
    );
    assert_eq!(
        dedupe_held(&b),
        window_a,
        "window unchanged by the duplicate"
    );

    // Control: a fresh event id of the same customer at the same instant is folded.
    let fresh = order(
        &original.customer_id,
        "fresh-after-restore",
        original.occurred_at,
    );
    append_events(&p, &canonical, std::slice::from_ref(&fresh), &mut ends).await?;
    wait_for("B to fold the fresh event", Duration::from_secs(60), || {
        caught_up(&b, &ends)
    })
    .await?;
    assert_eq!(
        state_b(&original.customer_id).map(|s| s.orders.count),
        state_a
            .get(&original.customer_id)
            .map(|s| s.orders.count + 1),
        "the fresh event is folded (control)"
    );
    b.stop().await?;
    assert!(!checkpoints_a.is_empty());
    Ok(())
}
