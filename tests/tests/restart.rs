//! (c) Stop fold mid-stream — cleanly, and separately by aborting its tasks with no final
//! commit — and restart it on the same state dir: the final state must equal that of one
//! uninterrupted run over the same canonical log, with and without the event_id dedupe (so
//! dedupe cannot be what hides an event applied twice). Alerts: the same set of alert_ids,
//! and every re-sent alert byte-identical to its first copy.

use std::path::Path;
use std::time::Duration;

use pulse_e2e::{
    alerts_by_id, assert_same_alerts, create_run_topics, fold_run_config, folded, read_state,
    run_to_end, simulated_canonical_log, wait_for, Broker,
};

#[derive(Clone, Copy, Debug)]
enum Interruption {
    Stop,
    Abort,
}

const PARTITIONS: i32 = 3;

/// Fold-only config writing alerts and the changelog to topics of `run`, topics created.
async fn fold_config(
    broker: &Broker,
    dir: &Path,
    run: &str,
    dedupe: bool,
) -> anyhow::Result<pulse::Config> {
    let window = if dedupe { 7 } else { 0 };
    let cfg = fold_run_config(
        broker,
        dir,
        run,
        &format!("dedupe_window_days = {window}\ncommit_max_events = 500"),
    );
    create_run_topics(broker, &cfg, PARTITIONS).await?;
    Ok(cfg)
}

async fn restart_gives_the_same_state(
    broker: Broker,
    dedupe: bool,
    how: Interruption,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let ends =
        simulated_canonical_log(&broker, &tmp.path().join("ingest"), 60, 150, PARTITIONS).await?;
    let total: i64 = ends.values().sum();

    // A: one uninterrupted run.
    let dir_a = tmp.path().join("a");
    let cfg_a = fold_config(&broker, &dir_a, "a", dedupe).await?;
    run_to_end(cfg_a.clone(), &ends).await?;

    // B: interrupted about halfway, then restarted on the same state dir and group.
    let dir_b = tmp.path().join("b");
    let cfg_b = fold_config(&broker, &dir_b, "b", dedupe).await?;
    let running = pulse::start(cfg_b.clone()).await?;
    wait_for(
        "fold to pass half the log",
        Duration::from_secs(120),
        || folded(&running) > total / 2,
    )
    .await?;
    let at = folded(&running);
    match how {
        Interruption::Stop => running.stop().await?,
        Interruption::Abort => running.abort().await,
    }
    assert!(at < total, "interrupted before the end ({at} of {total})");
    run_to_end(cfg_b.clone(), &ends).await?;

    let (state_a, cp_a) = read_state(&dir_a)?;
    let (state_b, cp_b) = read_state(&dir_b)?;
    assert!(!state_a.is_empty());
    assert_eq!(
        cp_a,
        cp_b,
        "[{} {how:?} dedupe={dedupe}] checkpoints",
        broker.name()
    );
    for (id, a) in &state_a {
        assert_eq!(
            Some(a),
            state_b.get(id),
            "[{} {how:?} dedupe={dedupe}] state of {id}",
            broker.name()
        );
    }
    assert_eq!(state_a.len(), state_b.len());

    let (alerts_a, alerts_b) = (
        alerts_by_id(&broker, &cfg_a)?,
        alerts_by_id(&broker, &cfg_b)?,
    );
    let duplicates = assert_same_alerts(&alerts_a, &alerts_b);
    eprintln!("[{} {how:?} dedupe={dedupe}] {} alerts, {duplicates} re-sent duplicates, interrupted at {at}/{total}", broker.name(), alerts_a.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_mock() -> anyhow::Result<()> {
    restart_gives_the_same_state(Broker::mock(), true, Interruption::Stop).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_restart_without_dedupe_mock() -> anyhow::Result<()> {
    restart_gives_the_same_state(Broker::mock(), false, Interruption::Abort).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_restart_without_dedupe_tansu() -> anyhow::Result<()> {
    restart_gives_the_same_state(Broker::tansu()?, false, Interruption::Abort).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_without_dedupe_tansu() -> anyhow::Result<()> {
    restart_gives_the_same_state(Broker::tansu()?, false, Interruption::Stop).await
}
