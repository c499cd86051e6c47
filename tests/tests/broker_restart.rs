//! The broker restarts mid-stream. tansu runs as a separate process on persistent storage
//! (`s3://tansu/` in moto's S3 stand-in, both installed by scripts/test.sh); pulse (ingest and
//! fold) runs over a simulated stream; halfway, the broker process is stopped and started
//! again on the same port and storage while the input producer keeps sending. At the end:
//! - every valid input event is in the canonical log (no acknowledged input lost);
//! - fold's state and checkpoints equal a clean `pulse replay` of the canonical log;
//! - the live alert ids are exactly the replay's (no expected alert missing, none extra) and
//!   every copy, re-sent ones included, is byte-identical.
//!
//! The broker is stopped with SIGTERM: tansu's own shutdown (measured ~5 s on S3 storage)
//! keeps what it acknowledged, so any loss would be pulse's. A SIGKILL is not tested: a
//! record tansu acknowledged and then lost at a kill (README, "Test brokers": acknowledged records lost in
//! 4 of 7 kills with an idempotent producer) would fail the test for the broker's sake, and
//! from here that cannot be told apart from a loss in pulse. Before the harness
//! could show any of this, a broker restart stopped pulse: librdkafka's `AllBrokersDown`
//! was a fatal consumer error (`kafka::transient` now lets ingest and fold wait it out).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulse::replay::{replay, ReplayArgs, ReplayRange};
use pulse::simulate::{SimConfig, Simulator};
use pulse_e2e::{
    alerts_by_id, assert_same_alerts, caught_up, config, consume_all, consume_until, produce,
    producer, read_state, wait_for, AlertsById, Broker, Signal,
};

const PARTITIONS: i32 = 3;

/// The event_id of an input record (JSON).
fn event_id(value: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v["event_id"].as_str().map(str::to_string)
}

/// The event_id of a canonical record (none for a tick).
fn canonical_event_id(value: &[u8]) -> Option<String> {
    match pulse_codec::decode_canonical(value, pulse_codec::Encoding::Json).ok()? {
        pulse_codec::Canonical::Event(e, _) => Some(e.event_id),
        pulse_codec::Canonical::Tick { .. } => None,
    }
}

async fn restart_mid_stream(signal: Signal) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut broker = Broker::tansu_s3()?;
    let tmp = tempfile::tempdir()?;
    let live_dir = tmp.path().join("live");
    let ingest_cfg = config(&broker, &live_dir, "live", "[fold]\nenabled = false\n");
    let fold_cfg = config(&broker, &live_dir, "live", "[ingest]\nenabled = false\n");
    broker.create_all(&ingest_cfg, PARTITIONS).await?;

    let records: Arc<Vec<_>> = Arc::new(
        Simulator::new(SimConfig {
            customers: 15,
            duration_ms: 90 * pulse_core::DAY,
            malformed_per_mille: 0,
            ..SimConfig::default()
        })
        .collect(),
    );
    let expected: BTreeSet<String> = records.iter().filter_map(|r| event_id(&r.value)).collect();
    let ingest = pulse::start(ingest_cfg.clone()).await?;
    let fold = pulse::start(fold_cfg.clone()).await?;

    // Traffic in the background, acknowledged one by one, across the restart.
    let (bootstrap, cfg) = (broker.bootstrap(), ingest_cfg.clone());
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traffic = {
        let (records, sent) = (records.clone(), sent.clone());
        tokio::spawn(async move {
            let p = producer(&bootstrap);
            for r in records.iter() {
                let topic = pulse::demo::input_topic(&cfg, r.topic);
                produce(&p, topic, r.key.as_deref(), &r.value, &[]).await?;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };
    wait_for(
        "half the input sent and some folded",
        Duration::from_secs(60),
        || {
            sent.load(std::sync::atomic::Ordering::Relaxed) >= records.len() / 2
                && pulse_e2e::folded(&fold) > 0
        },
    )
    .await?;
    let at = sent.load(std::sync::atomic::Ordering::Relaxed);
    let tansu = broker.tansu_process().expect("tansu");
    let down = Instant::now();
    tokio::task::block_in_place(|| tansu.stop(signal))?;
    let stopped_in = down.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| tansu.start_again())?;
    eprintln!(
        "broker stopped ({signal:?}, {:.1}s) after {at}/{} inputs acknowledged, down {:.1}s",
        stopped_in.as_secs_f64(),
        records.len(),
        down.elapsed().as_secs_f64()
    );
    traffic.await??;

    // Every acknowledged input reaches the canonical log (ingest is at-least-once).
    let canonical = tokio::task::block_in_place(|| {
        consume_until(
            &broker.bootstrap(),
            &[&ingest_cfg.topics.canonical],
            Duration::from_secs(60),
            |recs| {
                let got: BTreeSet<String> = recs
                    .iter()
                    .filter_map(|r| canonical_event_id(&r.value))
                    .collect();
                expected.is_subset(&got)
            },
        )
    });
    if let Err(e) = &canonical {
        // Tell a broker that lost acknowledged input from a pipeline that dropped some.
        let t = &ingest_cfg.topics;
        let inputs = tokio::task::block_in_place(|| {
            consume_all(
                &broker.bootstrap(),
                &[&t.orders, &t.clickstream, &t.support],
                Duration::from_secs(2),
            )
        })?;
        let kept: BTreeSet<String> = inputs.iter().filter_map(|r| event_id(&r.value)).collect();
        eprintln!(
            "not every acknowledged input reached the canonical log ({e:#}); \
             {} of {} acknowledged inputs are still on the input topics",
            expected.intersection(&kept).count(),
            expected.len()
        );
    }
    let canonical = canonical?;
    let dupes = canonical.iter().filter(|r| r.key.is_some()).count() - expected.len();
    ingest.stop().await?;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for r in tokio::task::block_in_place(|| {
        consume_all(
            &broker.bootstrap(),
            &[&ingest_cfg.topics.canonical],
            Duration::from_secs(2),
        )
    })? {
        let e = ends.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    wait_for("fold to reach the end", Duration::from_secs(60), || {
        caught_up(&fold, &ends)
    })
    .await?;
    fold.stop().await?;

    // A clean replay of the same canonical log is the reference.
    let replay_dir = tmp.path().join("replay");
    let file = tmp.path().join("replay.ndjson");
    let replay_cfg = tmp.path().join("replay.toml");
    std::fs::write(
        &replay_cfg,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"live\"\n",
            broker.bootstrap()
        ),
    )?;
    // Up to the ends the test read, not the broker's high watermark: tansu's ListOffsets
    // answer was measured below the last records after a restart on S3 storage (577 for a
    // partition holding 583), which would end the replay short of what fold folded.
    let summary = replay(ReplayArgs {
        config: Some(replay_cfg),
        state_dir: replay_dir.clone(),
        alerts: format!("file:{}", file.display()),
        range: ReplayRange {
            to_offsets: Some(ends.clone()),
            ..ReplayRange::default()
        },
        ..ReplayArgs::default()
    })
    .await?;
    eprintln!("replay ranges {:?} for log ends {ends:?}", summary.ranges);
    let (live_state, live_cp) = read_state(&live_dir)?;
    let (replay_state, replay_cp) = read_state(&replay_dir)?;
    assert!(!live_state.is_empty());
    assert_eq!(live_cp, replay_cp, "checkpoints equal the replay's");
    assert_eq!(live_state.len(), replay_state.len(), "same customers");
    for (id, s) in &live_state {
        assert_eq!(Some(s), replay_state.get(id), "customer {id}");
    }
    let mut reference = AlertsById::new();
    for line in std::fs::read_to_string(&file)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        reference
            .entry(v["headers"]["ce_id"].as_str().expect("ce_id").to_string())
            .or_default()
            .push(v["value"].as_str().unwrap_or_default().as_bytes().to_vec());
    }
    let live = tokio::task::block_in_place(|| alerts_by_id(&broker, &fold_cfg))?;
    let duplicates = assert_same_alerts(&reference, &live);
    eprintln!(
        "[{signal:?}] {} inputs, {dupes} re-sent canonical events, {} customers, {} alerts, \
         {duplicates} byte-identical re-sent alerts, {:.1}s",
        expected.len(),
        live_state.len(),
        reference.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_mid_stream_tansu_s3() -> anyhow::Result<()> {
    restart_mid_stream(Signal::Term).await
}
