//! `pulse replay`: rebuilding state from the canonical log gives the live service's state and
//! byte-identical alerts (`--verify` compares them alert by alert); a replay with another rule
//! version is reported as different, not silently accepted.

use std::path::Path;

use pulse::replay::{replay, ReplayArgs};
use pulse_e2e::{config, read_state, run_to_end, simulated_canonical_log, Broker};

/// The overrides the live run used, as a config file for `pulse replay`.
fn config_file(dir: &Path, broker: &Broker, extra: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("replay.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"live\"\n{extra}",
            broker.bootstrap()
        ),
    )?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reproduces_live_state_and_alerts() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let tmp = tempfile::tempdir()?;
    // Live: ingest alone over simulated input, then fold alone to the end of the log.
    let ends = simulated_canonical_log(&broker, &tmp.path().join("ingest"), 50, 200, 3).await?;
    let live_dir = tmp.path().join("live");
    let fold_cfg = config(&broker, &live_dir, "live", "[ingest]\nenabled = false\n");
    run_to_end(fold_cfg, &ends).await?;

    // Replay with the same rules, verified against the live alert topics.
    let replay_dir = tmp.path().join("replay");
    let alerts_file = tmp.path().join("alerts.ndjson");
    replay(ReplayArgs {
        config: Some(config_file(tmp.path(), &broker, "")?),
        state_dir: replay_dir.clone(),
        alerts: format!("file:{}", alerts_file.display()),
        verify: true,
        ..ReplayArgs::default()
    })
    .await?;
    let (live_state, live_cp) = read_state(&live_dir)?;
    let (replay_state, replay_cp) = read_state(&replay_dir)?;
    assert!(!live_state.is_empty());
    assert_eq!(live_cp, replay_cp, "same checkpoints");
    assert_eq!(
        live_state, replay_state,
        "replay rebuilds the live state exactly"
    );
    let replayed = std::fs::read_to_string(&alerts_file)?.lines().count();
    assert!(replayed > 0);
    eprintln!("replayed {replayed} alerts identical to the live ones");

    // A rule change is visible: different rule version, different alert ids, verify fails.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other)?;
    let changed = replay(ReplayArgs {
        config: Some(config_file(
            &other,
            &broker,
            "[scoring]\nrule_version = \"v-next\"\n",
        )?),
        state_dir: other.join("state"),
        alerts: "none".into(),
        verify: true,
        ..ReplayArgs::default()
    })
    .await;
    assert!(
        changed.is_err(),
        "a replay under other rules must not verify"
    );
    // And a replay never reuses a state dir.
    let reused = replay(ReplayArgs {
        config: Some(config_file(tmp.path(), &broker, "")?),
        state_dir: replay_dir,
        alerts: "none".into(),
        verify: false,
        ..ReplayArgs::default()
    })
    .await;
    assert!(reused.is_err());
    Ok(())
}
