//! A backlog (a first deployment, an outage) gives the same alerts however it is fetched
//! (issue 16 §5), against librdkafka's mock cluster.
//!
//! Four months of simulated traffic wait in the three input topics (three partitions each)
//! before pulse starts. Two services with their own groups, canonical logs and alert topics
//! read that one backlog: one with librdkafka's usual fetch sizes (a fetch brings a partition's
//! megabyte, so a topic's weeks arrive before another's first day), one with 1 KiB fetches
//! (records of all partitions interleaved). Ingest relays in event-time order across its input
//! partitions (`ingest/merge.rs`), and fold decides each event at its customer's own time, so:
//! - both give the same alerts (everything but the alert id, which names the canonical offset
//!   of its cause: where ingest's wall-clock-driven ticks fall differs between runs);
//! - an alert an event caused is stamped with that event's time, not the partition clock;
//! - no first order is judged as months of silence (no prospect → at_risk).

use std::collections::BTreeMap;
use std::time::Duration;

use pulse_codec::{decode_canonical, Canonical, Encoding};
use pulse_e2e::{config, consume_all, produce, producer, wait_for, Broker, Rec};

const CUSTOMERS: u32 = 150;
const DAYS: i64 = 120;
const INPUT_PARTITIONS: i32 = 3;

/// What one service made of the backlog: its alerts (JSON, `alert_id` removed, sorted) and,
/// for each alert caused by an event, (alert time, event time).
struct Outcome {
    alerts: Vec<String>,
    event_caused: Vec<(i64, i64)>,
    forced: u64,
}

/// Runs a service over the backlog of `ends` input events whose latest is at `last`, until
/// fold has committed the end of the canonical log and both partitions' clocks stand at
/// `last` (the quieter partition's through ingest's last watermark tick: until then a timer
/// due before `last` may still be pending there).
async fn run(
    broker: &Broker,
    name: &str,
    properties: &str,
    ends: usize,
    last: i64,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        broker,
        dir.path(),
        name,
        &format!(
            "[topics]\ncanonical = \"{name}.canonical\"\nchangelog = \"{name}.changelog\"\n\
             churn_warnings = \"{name}.churn\"\nsegment_changes = \"{name}.segments\"\n\
             lifecycle_changes = \"{name}.lifecycle\"\ndead_letters = \"{name}.dead\"\n\
             erasures = \"{name}.erasures\"\n\
             [kafka.properties]\n{properties}\n"
        ),
    );
    let t = &cfg.topics;
    broker
        .create_topics(&cfg, &[&t.canonical, &t.changelog], 2)
        .await?;
    broker
        .create_topics(
            &cfg,
            &[
                &t.churn_warnings,
                &t.segment_changes,
                &t.lifecycle_changes,
                &t.dead_letters,
                &t.erasures,
            ],
            2,
        )
        .await?;
    let running = pulse::start(cfg.clone()).await?;
    // Every input event in the canonical log, then fold at its end.
    let canonical = {
        let bootstrap = broker.bootstrap();
        let topic = t.canonical.clone();
        tokio::task::spawn_blocking(move || {
            pulse_e2e::consume_until(&bootstrap, &[&topic], Duration::from_secs(120), |recs| {
                recs.iter().filter(|r| r.key.is_some()).count() >= ends
            })
        })
        .await??
    };
    assert_eq!(
        canonical.iter().filter(|r| r.key.is_some()).count(),
        ends,
        "{name}: every input event in the canonical log once"
    );
    let mut log_ends: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &canonical {
        let e = log_ends.entry(r.partition).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    wait_for(
        "fold to reach the end of the canonical log",
        Duration::from_secs(120),
        || pulse_e2e::caught_up(&running, &log_ends),
    )
    .await?;
    let shared = running.shared.clone();
    wait_for(
        "both partitions' committed clocks at the last event time",
        Duration::from_secs(60),
        || {
            let parts = shared.partitions.read().expect("lock");
            parts.len() == 2
                && parts
                    .values()
                    .all(|(_, c)| c.load(std::sync::atomic::Ordering::Relaxed) == last)
        },
    )
    .await?;
    let (_, metrics) = pulse_e2e::http_get(running.http_addr, "/metrics")?;
    running.stop().await?;
    let forced = metrics
        .lines()
        .find(|l| l.starts_with("pulse_ingest_merge_forced_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;

    // The whole log as the run left it (ticks appended after the last event included).
    let canonical = consume_all(&broker.bootstrap(), &[&t.canonical], Duration::from_secs(2))?;
    let by_offset: BTreeMap<(i32, i64), &Rec> = canonical
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let mut alerts = Vec::new();
    let mut event_caused = Vec::new();
    for r in consume_all(
        &broker.bootstrap(),
        &[&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes],
        Duration::from_secs(2),
    )? {
        let mut v: serde_json::Value = serde_json::from_slice(&r.value)?;
        let at = pulse_codec::time::parse_rfc3339(v["occurred_at"].as_str().expect("a time"))
            .expect("an RFC 3339 time");
        let (p, o) = r.headers["pulse.cause"].split_once('/').expect("p/o");
        let cause = by_offset[&(p.parse()?, o.parse()?)];
        if let Canonical::Event(e, _) = decode_canonical(&cause.value, Encoding::Json)? {
            if e.customer_id == v["customer_id"] {
                event_caused.push((at, e.occurred_at));
            }
        }
        v.as_object_mut().expect("an object").remove("alert_id");
        alerts.push(v.to_string());
    }
    alerts.sort();
    Ok(Outcome {
        alerts,
        event_caused,
        forced,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_gives_the_same_alerts_however_it_is_fetched() -> anyhow::Result<()> {
    let broker = Broker::mock();
    // The backlog: produced before any pulse runs, into three partitions per input topic.
    let dir = tempfile::tempdir()?;
    let inputs = config(&broker, dir.path(), "inputs", "");
    let t = &inputs.topics;
    broker
        .create_topics(
            &inputs,
            &[&t.orders, &t.clickstream, &t.support],
            INPUT_PARTITIONS,
        )
        .await?;
    let sim = pulse::simulate::SimConfig {
        customers: CUSTOMERS,
        duration_ms: DAYS * pulse_core::DAY,
        malformed_per_mille: 0,
        ..pulse::simulate::SimConfig::default()
    };
    let records: Vec<_> = pulse::simulate::Simulator::new(sim).collect();
    let p = producer(&broker.bootstrap());
    for r in &records {
        let topic = pulse::demo::input_topic(&inputs, r.topic);
        produce(&p, topic, r.key.as_deref(), &r.value, &[]).await?;
    }
    let n = records.len();
    let last = records
        .iter()
        .map(|r| r.occurred_at)
        .max()
        .expect("records");

    let usual = run(&broker, "usual", "", n, last).await?;
    let small = run(
        &broker,
        "small",
        "\"fetch.message.max.bytes\" = \"1024\"",
        n,
        last,
    )
    .await?;

    eprintln!(
        "{n} input events: {} alerts (usual fetches), {} (1 KiB fetches); merge forced {} / {} times",
        usual.alerts.len(),
        small.alerts.len(),
        usual.forced,
        small.forced
    );
    assert!(usual.alerts.len() > 100, "the backlog causes alerts");
    let only = |a: &Outcome, b: &Outcome| -> Vec<String> {
        a.alerts
            .iter()
            .filter(|x| !b.alerts.contains(x))
            .cloned()
            .collect()
    };
    let (u, s) = (only(&usual, &small), only(&small, &usual));
    assert!(
        u.is_empty() && s.is_empty(),
        "the same alerts however fetched: {} only with usual fetches, {} only with 1 KiB ones; e.g. {:?}",
        u.len(),
        s.len(),
        u.iter().chain(&s).take(2).collect::<Vec<_>>()
    );
    assert_eq!(usual.alerts.len(), small.alerts.len());
    for o in [&usual, &small] {
        assert!(!o.event_caused.is_empty());
        // Stamped with the event's time, or a timer of that customer fired before it (due
        // before the event), never later than the event.
        let lagging: Vec<_> = o.event_caused.iter().filter(|(a, e)| a > e).collect();
        assert!(
            lagging.is_empty(),
            "alerts an event caused are not later than it: {} of {} are, e.g. {:?}",
            lagging.len(),
            o.event_caused.len(),
            &lagging[..lagging.len().min(5)]
        );
        let judged_silent = o
            .alerts
            .iter()
            .filter(|a| a.contains(r#""from":"prospect""#) && a.contains(r#""to":"at_risk""#))
            .count();
        assert_eq!(
            judged_silent, 0,
            "no first order judged as months of silence"
        );
    }
    Ok(())
}
