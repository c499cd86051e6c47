//! Ranged `pulse replay` against a live run over one canonical log:
//! - from the beginning to an end offset or an end event time: exactly the live alerts caused
//!   in that range, byte for byte (`--verify` passes, and the test compares on its own too),
//!   and the checkpoints stop at the bound;
//! - from offsets or from an event time: starts where asked (the test finds the start by
//!   reading the log itself), folds nothing before it (state holds exactly the customers of
//!   the window, their first/last event times from the window alone; alert causes inside
//!   it), and `--verify` is refused with a usage error.
//!
//! Event times are found by reading the log on both brokers (their offsets-for-times answers
//! are about the records' timestamps, which are ingest's produce time: see replay.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pulse::replay::{replay, Range, ReplayArgs, ReplayRange, UsageError};
use pulse_codec::{decode_canonical, Canonical, Encoding};
use pulse_core::{Body, Millis};
use pulse_e2e::{config, consume_all, read_state, run_to_end, simulated_canonical_log, Broker};

/// One canonical record as the test reads it.
struct Record {
    offset: i64,
    time: Option<Millis>,
    /// (customer, erased) for an event.
    customer: Option<(String, bool)>,
}

/// The canonical log per partition, in offset order, read by the test itself.
fn read_log(broker: &Broker, topic: &str) -> anyhow::Result<BTreeMap<i32, Vec<Record>>> {
    let mut log: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for r in consume_all(&broker.bootstrap(), &[topic], Duration::from_secs(2))? {
        let (time, customer) = match decode_canonical(&r.value, Encoding::Json)? {
            Canonical::Event(e, _) => (
                Some(e.occurred_at),
                Some((e.customer_id.clone(), e.body == Body::Erased)),
            ),
            Canonical::Tick { time, .. } => (Some(time), None),
        };
        log.entry(r.partition).or_default().push(Record {
            offset: r.offset,
            time,
            customer,
        });
    }
    for recs in log.values_mut() {
        recs.sort_by_key(|r| r.offset);
    }
    Ok(log)
}

/// First offset of `p` whose time is ≥ `t` (the end of the log when none).
fn first_at_or_after(log: &BTreeMap<i32, Vec<Record>>, p: i32, t: Millis, end: i64) -> i64 {
    log[&p]
        .iter()
        .find(|r| r.time.is_some_and(|x| x >= t))
        .map_or(end, |r| r.offset)
}

/// Customers a fold of exactly `[start, end)` of each partition must hold, with the first and
/// last event time of each (from the window alone; an erasure forgets a customer).
fn expected_window(
    log: &BTreeMap<i32, Vec<Record>>,
    ranges: &BTreeMap<i32, Range>,
) -> BTreeMap<String, (Millis, Millis)> {
    let mut out: BTreeMap<String, (Millis, Millis)> = BTreeMap::new();
    for (p, recs) in log {
        let r = ranges[p];
        for rec in recs
            .iter()
            .filter(|x| x.offset >= r.start && x.offset < r.end)
        {
            let (Some((id, erased)), Some(t)) = (&rec.customer, rec.time) else {
                continue;
            };
            if *erased {
                out.remove(id);
            } else {
                let e = out.entry(id.clone()).or_insert((t, t));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t);
            }
        }
    }
    out
}

/// Replayed alerts from a `file:` sink: `ce_id → (cause partition, cause offset, value)`.
fn file_alerts(path: &Path) -> anyhow::Result<BTreeMap<String, (i32, i64, String)>> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (p, o) = v["headers"]["pulse.cause"]
            .as_str()
            .and_then(|c| c.split_once('/'))
            .expect("cause header");
        out.insert(
            v["headers"]["ce_id"].as_str().expect("ce_id").to_string(),
            (
                p.parse()?,
                o.parse()?,
                v["value"].as_str().unwrap_or_default().to_string(),
            ),
        );
    }
    Ok(out)
}

/// Live alerts caused at offsets below `ends`: `ce_id → every copy's value`.
fn live_alerts_before(
    broker: &Broker,
    cfg: &pulse::Config,
    ends: &BTreeMap<i32, i64>,
) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let t = &cfg.topics;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in consume_all(
        &broker.bootstrap(),
        &[&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes],
        Duration::from_secs(2),
    )? {
        let (p, o) = r.headers["pulse.cause"].split_once('/').expect("cause");
        if o.parse::<i64>()? < ends[&p.parse::<i32>()?] {
            out.entry(r.headers["ce_id"].clone())
                .or_default()
                .push(String::from_utf8(r.value)?);
        }
    }
    Ok(out)
}

struct Fixture {
    broker: Broker,
    tmp: tempfile::TempDir,
    live_cfg: pulse::Config,
    ends: BTreeMap<i32, i64>,
    log: BTreeMap<i32, Vec<Record>>,
    n: usize,
}

impl Fixture {
    fn args(&mut self, name: &str) -> anyhow::Result<(ReplayArgs, PathBuf, PathBuf)> {
        self.n += 1;
        let dir = self.tmp.path().join(format!("{}-{name}", self.n));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("replay.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"live\"\n",
                self.broker.bootstrap()
            ),
        )?;
        let file = dir.join("alerts.ndjson");
        let state = dir.join("state");
        Ok((
            ReplayArgs {
                config: Some(config),
                state_dir: state.clone(),
                alerts: format!("file:{}", file.display()),
                ..ReplayArgs::default()
            },
            state,
            file,
        ))
    }
}

async fn fixture(broker: Broker) -> anyhow::Result<Fixture> {
    let tmp = tempfile::tempdir()?;
    let ends = simulated_canonical_log(&broker, &tmp.path().join("ingest"), 40, 160, 3).await?;
    let live_cfg = config(
        &broker,
        &tmp.path().join("live"),
        "live",
        "[ingest]\nenabled = false\n",
    );
    run_to_end(live_cfg.clone(), &ends).await?;
    let log = read_log(&broker, &live_cfg.topics.canonical)?;
    assert_eq!(
        log.iter()
            .map(|(p, r)| (*p, r.last().map_or(0, |x| x.offset + 1)))
            .collect::<BTreeMap<_, _>>(),
        ends,
        "the test read the whole log"
    );
    Ok(Fixture {
        broker,
        tmp,
        live_cfg,
        ends,
        log,
        n: 0,
    })
}

/// A replay from the beginning to `to` (end offset per partition) verified against the live
/// run, and compared by the test alert by alert.
async fn check_bounded_end(
    f: &mut Fixture,
    args: ReplayArgs,
    state: &Path,
    file: &Path,
    to: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let summary = replay(ReplayArgs {
        verify: true,
        ..args
    })
    .await?;
    let ends: BTreeMap<i32, i64> = summary.ranges.iter().map(|(p, r)| (*p, r.end)).collect();
    assert_eq!(&ends, to, "the replay ends where asked");
    assert!(summary.ranges.values().all(|r| r.start == 0));
    let (_, checkpoints) = read_state(state)?;
    for (p, end) in to.iter().filter(|(_, e)| **e > 0) {
        assert_eq!(
            checkpoints[&format!("partition-{p:04}")].next_offset,
            *end,
            "partition {p} folded exactly up to its end"
        );
    }
    let replayed = file_alerts(file)?;
    let live = live_alerts_before(&f.broker, &f.live_cfg, to)?;
    assert!(!replayed.is_empty(), "the range caused alerts");
    assert!(
        replayed.len() < live_alerts_before(&f.broker, &f.live_cfg, &f.ends)?.len(),
        "the range is a strict part of the log"
    );
    assert_eq!(
        replayed.keys().collect::<Vec<_>>(),
        live.keys().collect::<Vec<_>>(),
        "the live alerts caused in the range, no more, no fewer"
    );
    for (id, (_, _, value)) in &replayed {
        assert!(live[id].iter().all(|v| v == value), "{id} byte-identical");
    }
    eprintln!(
        "[{}] bounded end {to:?}: {} alerts verified",
        f.broker.name(),
        replayed.len()
    );
    Ok(())
}

/// A replay from `start` (per partition) to the end: starts there, nothing earlier folded.
async fn check_late_start(
    f: &mut Fixture,
    summary: pulse::replay::Summary,
    state: &Path,
    file: &Path,
    start: &BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    let starts: BTreeMap<i32, i64> = summary.ranges.iter().map(|(p, r)| (*p, r.start)).collect();
    assert_eq!(&starts, start, "the replay starts where asked");
    let (customers, checkpoints) = read_state(state)?;
    for (p, r) in &summary.ranges {
        assert_eq!(r.end, f.ends[p]);
        assert_eq!(
            checkpoints[&format!("partition-{p:04}")].next_offset,
            r.end,
            "partition {p} folded to the end"
        );
    }
    let expected = expected_window(&f.log, &summary.ranges);
    assert!(!expected.is_empty());
    let got: BTreeMap<String, (Millis, Millis)> = customers
        .iter()
        .map(|(id, s)| (id.clone(), (s.first_seen_at, s.last_event_at)))
        .collect();
    assert_eq!(
        got, expected,
        "exactly the window's customers, first/last event times from the window alone"
    );
    let alerts = file_alerts(file)?;
    assert!(!alerts.is_empty());
    for (id, (p, o, _)) in &alerts {
        assert!(
            *o >= start[p] && *o < f.ends[p],
            "alert {id} caused at {p}/{o}, inside the range"
        );
    }
    eprintln!(
        "[{}] late start {start:?}: {} customers, {} alerts",
        f.broker.name(),
        got.len(),
        alerts.len()
    );
    Ok(())
}

async fn ranged_replays(broker: Broker) -> anyhow::Result<()> {
    let mut f = fixture(broker).await?;
    let mid: BTreeMap<i32, i64> = f.ends.iter().map(|(p, e)| (*p, e / 2)).collect();
    let mut times: Vec<Millis> = f.log.values().flatten().filter_map(|r| r.time).collect();
    times.sort_unstable();
    let (t1, t2) = (times[times.len() / 3], times[2 * times.len() / 3]);
    let at = |f: &Fixture, t: Millis| -> BTreeMap<i32, i64> {
        f.ends
            .iter()
            .map(|(p, e)| (*p, first_at_or_after(&f.log, *p, t, *e)))
            .collect()
    };

    // 1. From the beginning to end offsets.
    let (args, state, file) = f.args("to-offsets")?;
    check_bounded_end(
        &mut f,
        ReplayArgs {
            range: ReplayRange {
                to_offsets: Some(mid.clone()),
                ..ReplayRange::default()
            },
            ..args
        },
        &state,
        &file,
        &mid.clone(),
    )
    .await?;

    // 2. From the beginning to an event time.
    let (args, state, file) = f.args("to-time")?;
    let to = at(&f, t2);
    check_bounded_end(
        &mut f,
        ReplayArgs {
            range: ReplayRange {
                to_time: Some(t2),
                ..ReplayRange::default()
            },
            ..args
        },
        &state,
        &file,
        &to,
    )
    .await?;

    // 3. A late start refuses --verify, before touching anything.
    let (args, state, _) = f.args("refused")?;
    let refused = replay(ReplayArgs {
        range: ReplayRange {
            from_offsets: Some(mid.clone()),
            ..ReplayRange::default()
        },
        verify: true,
        ..args
    })
    .await
    .expect_err("--verify after a late start");
    assert!(refused.is::<UsageError>(), "a usage error: {refused:#}");
    assert!(refused
        .to_string()
        .contains("--verify needs a replay from the beginning"));
    assert!(!state.exists() || std::fs::read_dir(&state)?.next().is_none());

    // 4. From offsets to the end.
    let (args, state, file) = f.args("from-offsets")?;
    let summary = replay(ReplayArgs {
        range: ReplayRange {
            from_offsets: Some(mid.clone()),
            ..ReplayRange::default()
        },
        ..args
    })
    .await?;
    check_late_start(&mut f, summary, &state, &file, &mid).await?;

    // 5. From an event time to the end (the start found by reading the log).
    let (args, state, file) = f.args("from-time")?;
    let summary = replay(ReplayArgs {
        range: ReplayRange {
            from_time: Some(t1),
            ..ReplayRange::default()
        },
        ..args
    })
    .await?;
    let start = at(&f, t1);
    assert!(start.values().any(|s| *s > 0), "a start inside the log");
    check_late_start(&mut f, summary, &state, &file, &start).await?;

    // 6. A window in event time: [t1, t2).
    let (args, state, _) = f.args("window")?;
    let summary = replay(ReplayArgs {
        range: ReplayRange {
            from_time: Some(t1),
            to_time: Some(t2),
            ..ReplayRange::default()
        },
        alerts: "none".into(),
        ..args
    })
    .await?;
    let (start, end) = (at(&f, t1), at(&f, t2));
    for (p, r) in &summary.ranges {
        assert_eq!(
            (r.start, r.end),
            (start[p], end[p]),
            "partition {p}: [t1, t2)"
        );
    }
    let (customers, _) = read_state(&state)?;
    let got: BTreeMap<String, (Millis, Millis)> = customers
        .iter()
        .map(|(id, s)| (id.clone(), (s.first_seen_at, s.last_event_at)))
        .collect();
    assert_eq!(got, expected_window(&f.log, &summary.ranges));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_replay_mock() -> anyhow::Result<()> {
    ranged_replays(Broker::mock()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_replay_tansu() -> anyhow::Result<()> {
    ranged_replays(Broker::tansu()?).await
}
