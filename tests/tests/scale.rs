//! Scale-out and the changelog. (a) One instance, then three (fresh state dirs: the
//! partitions that move to them are restored from the compacted changelog), then one again
//! (the partitions move back; the first instance's local checkpoints are behind the
//! changelog by then, so they are restored from it: invariant 15), all in
//! one consumer group over one canonical log: the final state and the set of alerts equal a
//! single uninterrupted run's, and every re-sent alert is byte-identical. (b) The changelog
//! holds, per customer key, the state in the store (a tombstone and an erasure marker after
//! erasure), per event key the live dedupe entries of the store (exactly those: evicted and
//! erased entries are tombstoned) and, per partition, the store's checkpoint. (c) A changelog with another partition count is refused at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pulse_codec::{
    decode_changelog, parse_dedupe_changelog_key, Changelog, Encoding, CHECKPOINT_KEY,
};
use pulse_e2e::{
    alerts_by_id, assert_same_alerts, caught_up, consume_all, create_run_topics, fold_run_config,
    folded, produce, producer, read_state, run_to_end, simulated_canonical_log, wait_for, Broker,
    Rec,
};

const PARTITIONS: i32 = 3;

/// Fold-only config of one instance of run `run` (its alert topics and changelog are
/// `<run>.*`), in consumer group `run`.
fn fold_config(broker: &Broker, dir: &Path, run: &str) -> pulse::Config {
    fold_run_config(broker, dir, run, "commit_max_events = 200")
}

fn held(running: &pulse::Running) -> usize {
    running.shared.partitions.read().expect("lock").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_1_to_3_to_1_mock() -> anyhow::Result<()> {
    let started = Instant::now();
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let ends =
        simulated_canonical_log(&broker, &tmp.path().join("ingest"), 60, 150, PARTITIONS).await?;
    let total: i64 = ends.values().sum();

    // A: one instance, uninterrupted.
    let dir_a = tmp.path().join("a");
    let cfg_a = fold_config(&broker, &dir_a, "a");
    create_run_topics(&broker, &cfg_a, PARTITIONS).await?;
    run_to_end(cfg_a.clone(), &ends).await?;

    // S: 1 → 3 → 1 instances in one group, each with its own state dir.
    let cfg: Vec<pulse::Config> = (1..=3)
        .map(|i| fold_config(&broker, &tmp.path().join(format!("s{i}")), "s"))
        .collect();
    create_run_topics(&broker, &cfg[0], PARTITIONS).await?;
    let r1 = pulse::start(cfg[0].clone()).await?;
    wait_for(
        "instance 1 to fold a third of the log",
        Duration::from_secs(60),
        || folded(&r1) > total / 3,
    )
    .await?;
    let at_scale_out = folded(&r1);
    let r2 = pulse::start(cfg[1].clone()).await?;
    let r3 = pulse::start(cfg[2].clone()).await?;
    wait_for(
        "partitions to move to instances 2 and 3",
        Duration::from_secs(30),
        || {
            held(&r2) >= 1
                && held(&r3) >= 1
                && held(&r1) + held(&r2) + held(&r3) == PARTITIONS as usize
        },
    )
    .await?;
    let restored =
        r2.shared.restored.load(Ordering::Relaxed) + r3.shared.restored.load(Ordering::Relaxed);
    wait_for(
        "two thirds of the log folded across the three",
        Duration::from_secs(60),
        || folded(&r1) + folded(&r2) + folded(&r3) > 2 * total / 3,
    )
    .await?;
    let at_scale_in = folded(&r1) + folded(&r2) + folded(&r3);
    r2.stop().await?;
    r3.stop().await?;
    wait_for(
        "instance 1 to take every partition back and reach the end",
        Duration::from_secs(60),
        || held(&r1) == PARTITIONS as usize && caught_up(&r1, &ends),
    )
    .await?;
    r1.stop().await?;
    assert!(
        restored >= 1,
        "a partition that moved to a fresh instance was restored from the changelog"
    );

    let (state_a, cp_a) = read_state(&dir_a)?;
    let (state_s, cp_s) = read_state(&cfg[0].fold.state_dir)?;
    assert!(!state_a.is_empty());
    assert_eq!(cp_a, cp_s, "checkpoints of the final owner");
    assert_eq!(state_a.len(), state_s.len(), "customers");
    for (id, a) in &state_a {
        assert_eq!(Some(a), state_s.get(id), "state of {id}");
    }

    let (alerts_a, alerts_s) = (
        alerts_by_id(&broker, &cfg_a)?,
        alerts_by_id(&broker, &cfg[0])?,
    );
    let duplicates = assert_same_alerts(&alerts_a, &alerts_s);
    eprintln!(
        "scale 1→3→1: {total} records, scale-out at {at_scale_out}, scale-in at {at_scale_in}, \
         {restored} partitions restored from the changelog, {} customers, {} alerts, \
         {duplicates} re-sent duplicates, {:.1}s",
        state_a.len(),
        alerts_a.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Last record per (partition, key) of a topic.
fn latest(recs: Vec<Rec>) -> BTreeMap<(i32, String), Rec> {
    let mut m = BTreeMap::new();
    for r in recs {
        let k = (r.partition, r.key.clone().unwrap_or_default());
        m.insert(k, r);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_holds_the_latest_state_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let mut ends =
        simulated_canonical_log(&broker, &tmp.path().join("ingest"), 30, 60, PARTITIONS).await?;
    let dir = tmp.path().join("c");
    let cfg = fold_config(&broker, &dir, "c");
    create_run_topics(&broker, &cfg, PARTITIONS).await?;

    // Erase one customer through the canonical log: its changelog record must be a tombstone.
    let p = producer(&broker.bootstrap());
    {
        let first = consume_all(
            &broker.bootstrap(),
            &[&cfg.topics.canonical],
            Duration::from_secs(2),
        )?
        .into_iter()
        .find(|r| r.key.is_some())
        .expect("a keyed canonical record");
        let id = first.key.clone().expect("key");
        let erase = pulse_codec::encode_canonical(
            &pulse_codec::Canonical::Event(
                pulse_core::Event {
                    event_id: "erase-probe".into(),
                    customer_id: id.clone(),
                    occurred_at: pulse_e2e::day(1),
                    body: pulse_core::Body::Erased,
                },
                pulse_codec::Source {
                    topic: "test".into(),
                    partition: 0,
                    offset: 0,
                },
            ),
            Encoding::Json,
        );
        let at = produce(&p, &cfg.topics.canonical, Some(&id), &erase, &[]).await?;
        assert_eq!(
            at.0, first.partition,
            "murmur2 puts the erasure on the customer's partition"
        );
        *ends.get_mut(&at.0).expect("partition") = at.1 + 1;
    }
    run_to_end(cfg.clone(), &ends).await?;

    let (state, checkpoints) = read_state(&dir)?;
    let log = latest(consume_all(
        &broker.bootstrap(),
        &[&cfg.topics.changelog],
        Duration::from_secs(2),
    )?);
    let mut snapshots = 0;
    let mut tombstones = 0;
    let mut markers = 0;
    let mut window_log = std::collections::BTreeSet::new();
    for ((partition, key), rec) in &log {
        if let Some(k) = parse_dedupe_changelog_key(key) {
            if !rec.value.is_empty() {
                let Changelog::Dedupe {
                    event_key,
                    seen_at_ms,
                    customer_key,
                } = decode_changelog(&rec.value, Encoding::Json)?
                else {
                    panic!("dedupe key with another record");
                };
                assert_eq!(event_key, k);
                window_log.insert((*partition, event_key, seen_at_ms, customer_key));
            }
            continue;
        }
        if key == CHECKPOINT_KEY {
            let Changelog::Checkpoint {
                partition: p,
                next_offset,
                clock_ms,
            } = decode_changelog(&rec.value, Encoding::Json)?
            else {
                panic!("checkpoint key with a customer record");
            };
            assert_eq!(p, *partition, "checkpoint on its own partition");
            let stored = checkpoints[&format!("partition-{p:04}")];
            assert_eq!((next_offset, clock_ms), (stored.next_offset, stored.clock));
            continue;
        }
        if rec.value.is_empty() {
            tombstones += 1;
            assert!(
                state
                    .keys()
                    .all(|id| pulse_core::hash::customer_key_hex(id) != *key),
                "{key} erased but still in the store"
            );
            continue;
        }
        if let Some(erased) = key.strip_prefix("erased.") {
            let Changelog::Erased { customer_key, .. } =
                decode_changelog(&rec.value, Encoding::Json)?
            else {
                panic!("erasure key with another record");
            };
            assert_eq!(format!("{customer_key:032x}"), erased);
            markers += 1;
            continue;
        }
        let Changelog::Customer {
            customer_id,
            schema_version,
            state: bytes,
        } = decode_changelog(&rec.value, Encoding::Json)?
        else {
            panic!("customer key with a checkpoint record");
        };
        assert_eq!(
            &pulse_core::hash::customer_key_hex(&customer_id),
            key,
            "keyed by customer key, never the raw id"
        );
        assert_eq!(
            pulse::kafka::partition_for(customer_id.as_bytes(), PARTITIONS),
            *partition,
            "a customer's changelog partition is its canonical partition"
        );
        assert_eq!(
            rec.headers.get("schema").map(String::as_str),
            Some("pulse.v1.ChangelogRecord/3")
        );
        assert_eq!(
            Some(&pulse_store::decode_state_parts(
                u16::try_from(schema_version)?,
                &bytes
            )?),
            state.get(&customer_id),
            "latest snapshot of {key}"
        );
        snapshots += 1;
    }
    assert_eq!(
        snapshots,
        state.len(),
        "a snapshot per customer in the store"
    );
    assert_eq!(tombstones, 1, "the erased customer's tombstone");
    let mut window_store = std::collections::BTreeSet::new();
    for p in 0..PARTITIONS {
        let store = pulse_store::PartitionStore::open(&pulse::fold::partition_dir(&dir, p), false)?;
        for (k, at, c) in store.dedupe_entries()? {
            window_store.insert((p, k, at, c));
        }
    }
    assert!(!window_store.is_empty());
    assert_eq!(
        window_log, window_store,
        "the live dedupe records are exactly the stores' dedupe windows"
    );
    assert_eq!(markers, 1, "the erased customer's erasure marker");
    assert_eq!(
        log.keys().filter(|(_, k)| k == CHECKPOINT_KEY).count(),
        PARTITIONS as usize
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_with_other_partition_count_is_refused_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let cfg = fold_config(&broker, tmp.path(), "m");
    broker
        .create_topics(&cfg, &[&cfg.topics.canonical], PARTITIONS)
        .await?;
    broker
        .create_topics(&cfg, &[&cfg.topics.changelog], 2)
        .await?;
    let mut running = pulse::start(cfg.clone()).await?;
    let err = tokio::time::timeout(Duration::from_secs(30), running.failed())
        .await?
        .expect_err("a partition-count mismatch stops fold");
    let msg = pulse::error_chain(&err);
    assert!(
        msg.contains(&cfg.topics.changelog) && msg.contains(&cfg.topics.canonical),
        "{msg}"
    );
    Ok(())
}
