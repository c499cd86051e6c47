//! A partition that comes back to an instance whose local checkpoint is stale (issue 16 §7):
//! instance A folds a third of the canonical log and stops; instance B (fresh state dir, same
//! group) restores from the changelog and folds to the end, so the changelog is ahead of A's
//! local checkpoint; A starts again on its old state dir and gets every partition back. A must
//! restore from the changelog rather than resume from its stale checkpoint: it re-sends none
//! of the alerts B sent (every alert id on the topics exactly once: both stops were clean, so
//! no outbox was left to re-send) and its HTTP API never answers from the old state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pulse_e2e::{
    alerts_by_id, caught_up, create_run_topics, fold_run_config, folded, http_get, read_state,
    run_to_end, simulated_canonical_log, wait_for, Broker,
};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_back_restores_from_changelog_ahead_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let ends =
        simulated_canonical_log(&broker, &tmp.path().join("ingest"), 60, 150, PARTITIONS).await?;
    let total: i64 = ends.values().sum();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let cfg_a = fold_run_config(&broker, &dir_a, "s", "commit_max_events = 200");
    let cfg_b = fold_run_config(&broker, &dir_b, "s", "commit_max_events = 200");
    create_run_topics(&broker, &cfg_a, PARTITIONS).await?;

    // A folds a third and stops cleanly (its outbox drained).
    let a = pulse::start(cfg_a.clone()).await?;
    wait_for(
        "A to fold a third of the log",
        Duration::from_secs(60),
        || folded(&a) > total / 3,
    )
    .await?;
    a.stop().await?;
    let (stale, stale_cp) = read_state(&dir_a)?;
    let stale_folded: i64 = stale_cp.values().map(|c| c.next_offset).sum();
    assert!(stale_folded < total, "A stopped before the end");

    // B takes every partition, restores A's checkpoint from the changelog and goes on.
    let alerts_before_b = alerts_by_id(&broker, &cfg_a)?.len();
    run_to_end(cfg_b, &ends).await?;
    let alerts_by_b = alerts_by_id(&broker, &cfg_a)?.len() - alerts_before_b;
    assert!(alerts_by_b > 0, "B sent alerts past A's checkpoint");
    let (newer, _) = read_state(&tmp.path().join("b"))?;
    // One probe customer per partition whose state moved on after A's checkpoint.
    let mut probes: BTreeMap<i32, String> = BTreeMap::new();
    for (id, state) in &newer {
        if stale.get(id) != Some(state) {
            probes
                .entry(pulse::kafka::partition_for(id.as_bytes(), PARTITIONS))
                .or_insert_with(|| id.clone());
        }
    }
    assert!(!probes.is_empty(), "B changed customers A had folded");

    // A again, on its stale state dir: every answer about a probe, from start to caught up.
    let a = pulse::start(cfg_a.clone()).await?;
    let addr = a.http_addr;
    let mut answers: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(caught_up(&a, &ends) && http_get(addr, "/readyz")?.0 == 200) {
        assert!(Instant::now() < deadline, "A never caught up again");
        for id in probes.values() {
            let (code, body) = http_get(addr, &format!("/v1/customers/{id}"))?;
            if code == 200 {
                answers.push((id.clone(), body));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let restored = a.shared.restored.load(Ordering::Relaxed);
    let mut latest = BTreeMap::new();
    for id in probes.values() {
        let (code, body) = http_get(addr, &format!("/v1/customers/{id}"))?;
        assert_eq!(code, 200, "{body}");
        latest.insert(id.clone(), body);
    }
    a.stop().await?;

    let alerts = alerts_by_id(&broker, &cfg_a)?;
    let duplicated: BTreeSet<&String> = alerts
        .iter()
        .filter(|(_, copies)| copies.len() > 1)
        .map(|(id, _)| id)
        .collect();
    let old_answers = answers
        .iter()
        .filter(|(id, body)| latest[id] != *body)
        .count();
    eprintln!(
        "stale checkpoint: {total} records; A stopped at {stale_folded}, B sent {alerts_by_b} \
         alerts to the end; A back: {restored} partitions restored from the changelog, \
         {} of {} alert ids sent twice, {old_answers} of {} HTTP answers from older state",
        duplicated.len(),
        alerts.len(),
        answers.len()
    );
    assert_eq!(
        restored, PARTITIONS as i64,
        "every partition back on A was restored from the changelog ahead of its checkpoint"
    );
    assert!(duplicated.is_empty(), "alerts re-sent by A: {duplicated:?}");
    assert_eq!(old_answers, 0, "A answered HTTP from its stale state");
    Ok(())
}
