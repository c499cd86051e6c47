//! Readiness means "fold holds its partitions and has caught up" (issue 16 §6): started on a
//! canonical log with a backlog, `/readyz`, polled from the moment the service is up, must
//! not answer 200 before the group has assigned fold every partition and each is within
//! `http.ready_max_lag_records` of its end; it answers 200 after, and every 503 says why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pulse_e2e::{create_run_topics, fold_run_config, http_get, simulated_canonical_log, Broker};

const PARTITIONS: i32 = 3;
const MAX_LAG: i64 = 100;
const COMMIT_MAX_EVENTS: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_once_partitions_held_and_caught_up_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    let ends =
        simulated_canonical_log(&broker, &tmp.path().join("ingest"), 200, 150, PARTITIONS).await?;
    let total: i64 = ends.values().sum();
    let cfg = fold_run_config(
        &broker,
        &tmp.path().join("r"),
        "r",
        &format!(
            "commit_max_events = {COMMIT_MAX_EVENTS}\n[http]\nready_max_lag_records = {MAX_LAG}"
        ),
    );
    create_run_topics(&broker, &cfg, PARTITIONS).await?;

    let started = Instant::now();
    let running = pulse::start(cfg).await?;
    let addr = running.http_addr;
    let mut not_ready: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let first_ready = loop {
        assert!(
            Instant::now() < deadline,
            "never ready; answers so far: {not_ready:?}"
        );
        let (code, body) = tokio::task::spawn_blocking(move || http_get(addr, "/readyz")).await??;
        if code == 200 {
            // What fold has committed by now (checkpoints only grow, so reading them after the
            // answer can only overstate progress at the answer, never understate it): a
            // partition ready is at most MAX_LAG behind its end as of the last commit tick,
            // and fold commits at the latest every COMMIT_MAX_EVENTS records past that.
            let parts = running.shared.partitions.read().expect("lock");
            let held: Vec<i32> = parts.keys().copied().collect();
            let folded: BTreeMap<i32, i64> = parts
                .iter()
                .map(|(p, (s, _))| {
                    (
                        *p,
                        s.checkpoint().ok().flatten().map_or(0, |c| c.next_offset),
                    )
                })
                .collect();
            break (body, held, folded, started.elapsed());
        }
        assert_eq!(code, 503, "{body}");
        let reason = body
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        assert!(!reason.is_empty(), "a 503 says why");
        *not_ready.entry(reason).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (body, held, folded, after) = first_ready;
    eprintln!(
        "readyz: {total} records backlog; first 200 after {:.2}s ({body:?}); \
         503 answers before it by reason: {not_ready:?}; committed at the 200: {folded:?} of {ends:?}",
        after.as_secs_f64()
    );
    assert_eq!(
        held,
        (0..PARTITIONS).collect::<Vec<_>>(),
        "200 before fold held every partition ({body})"
    );
    for (p, end) in &ends {
        assert!(
            folded[p] >= end - MAX_LAG - COMMIT_MAX_EVENTS,
            "200 while partition {p} had folded {} of {end} records ({body})",
            folded[p]
        );
    }
    assert!(
        !not_ready.is_empty(),
        "the backlog kept /readyz at 503 for a while"
    );
    // Liveness is unchanged: the process runs.
    assert_eq!(http_get(addr, "/healthz")?.0, 200);
    running.stop().await?;
    Ok(())
}
