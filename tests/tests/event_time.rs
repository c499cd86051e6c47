//! Event-time safety, against librdkafka's mock cluster: an event dated 2199
//! among normal traffic is dead-lettered as `future_event` and changes no customer's stage or
//! alerts (compared with the same traffic without it); with the check off the partition clock
//! follows the log, as README "Event time" documents, and the outlier churns every customer
//! on every partition; an event from 1997 is accepted into the canonical log and counted late.
//!
//! The traffic goes through one input partition in time order, so ingest's watermark never
//! passes an event still to come and no run has a late event (the late-event count of the last
//! test, which shares this process's metrics recorder, is then exactly its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pulse_codec::time::parse_rfc3339;
use pulse_codec::{decode_alert, decode_canonical, Canonical, Encoding};
use pulse_e2e::{
    config, consume_all, consume_until, day, http_get, produce, producer, read_state, wait_for,
    Broker, Rec,
};

const CUSTOMERS: i64 = 6;
const WEEKS: i64 = 8;
/// Whose name the poisoned event carries.
const POISONED: &str = "c-2";

fn order(customer: &str, event_id: &str, occurred_at: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","customer_id":"{customer}","occurred_at":{occurred_at},"type":"order_placed","order_id":"o-{event_id}","amount":"30.00","currency":"EUR"}}"#
    )
}

/// Customer `c-i` orders weekly from day `i`, for `WEEKS` weeks: (time, customer, record), in
/// time order. The last order is on day 54, so nobody has been silent long enough to be at
/// risk (30 days at least): only a clock moved far ahead can put anyone there.
fn traffic() -> Vec<(i64, String, String)> {
    let mut v: Vec<_> = (0..CUSTOMERS)
        .flat_map(|i| {
            (0..WEEKS).map(move |w| {
                let (c, t) = (format!("c-{i}"), day(i + 7 * w));
                let rec = order(&c, &format!("{c}-w{w}"), &t.to_string());
                (t, c, rec)
            })
        })
        .collect();
    v.sort();
    v
}

fn in_2199() -> i64 {
    parse_rfc3339("2199-06-01T00:00:00Z").expect("a date")
}

fn poison() -> String {
    order(POISONED, "poison", r#""2199-06-01T00:00:00Z""#)
}

/// What a run left: every alert as (customer, type, from, to, occurred_at), each customer's
/// announced stage, the dead letters, and the value of `/metrics` before the stop.
struct Outcome {
    alerts: BTreeSet<(String, String, String, String, String)>,
    stages: BTreeMap<String, String>,
    dead: Vec<Rec>,
    metrics: String,
    /// Where the poisoned record was produced on the orders topic.
    poison_at: Option<(i32, i64)>,
}

/// Runs ingest and fold over [`traffic`] with the poisoned record at `poison_at` (an index
/// into the traffic) if any, and `max_future_skew_ms`; waits until both canonical partitions'
/// committed clocks reach `final_clock`, stops (draining the outbox) and collects.
async fn run(
    name: &str,
    max_future_skew_ms: i64,
    poison_at: Option<usize>,
    final_clock: i64,
) -> anyhow::Result<Outcome> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(
        &broker,
        dir.path(),
        name,
        &format!("[ingest]\nmax_future_skew_ms = {max_future_skew_ms}\n"),
    );
    // One input partition: ingest reads the traffic in the order it was produced.
    for (key, topic) in cfg.topics.named() {
        let n = if key == "topics.canonical" || key == "topics.changelog" {
            2
        } else {
            1
        };
        broker.create_topics(&cfg, &[topic], n).await?;
    }
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());
    let mut records: Vec<(String, String)> =
        traffic().into_iter().map(|(_, c, r)| (c, r)).collect();
    if let Some(i) = poison_at {
        records.insert(i, (POISONED.to_string(), poison()));
    }
    let mut poison_coords = None;
    for (customer, rec) in &records {
        let at = produce(&p, &cfg.topics.orders, Some(customer), rec.as_bytes(), &[]).await?;
        if *rec == poison() {
            poison_coords = Some(at);
        }
    }
    let shared = running.shared.clone();
    let clocks = || -> Vec<i64> {
        let parts = shared.partitions.read().expect("lock");
        parts
            .values()
            .map(|(_, c)| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    };
    let reached = wait_for(
        "both partitions' committed clocks to reach the last event time",
        Duration::from_secs(90),
        || {
            let c = clocks();
            c.len() == 2 && c.iter().all(|t| *t == final_clock)
        },
    )
    .await;
    assert!(
        reached.is_ok(),
        "{name}: clocks {:?}, expected {final_clock}",
        clocks()
    );
    let (_, metrics) = http_get(running.http_addr, "/metrics")?;
    running.stop().await?;

    let t = &cfg.topics;
    let mut alerts = BTreeSet::new();
    for r in consume_all(
        &broker.bootstrap(),
        &[&t.churn_warnings, &t.segment_changes, &t.lifecycle_changes],
        Duration::from_secs(2),
    )? {
        let a = decode_alert(&r.value, Encoding::Json)?;
        alerts.insert((a.customer_id, a.r#type, a.from, a.to, a.occurred_at));
    }
    let (customers, _) = read_state(dir.path())?;
    let stages = customers
        .into_iter()
        .map(|(id, s)| (id, s.announced.stage.as_str().to_string()))
        .collect();
    let dead = if poison_at.is_some() && max_future_skew_ms > 0 {
        consume_all(
            &broker.bootstrap(),
            &[&t.dead_letters],
            Duration::from_secs(2),
        )?
    } else {
        Vec::new()
    };
    Ok(Outcome {
        alerts,
        stages,
        dead,
        metrics,
        poison_at: poison_coords,
    })
}

fn last_normal_time() -> i64 {
    traffic().last().expect("traffic").0
}

/// Both canonical partitions hold customers, so a clock moved on one partition reaching the
/// other (through ingest's watermark ticks) is observable.
fn customers_on_both_partitions() {
    let parts: BTreeSet<i32> = (0..CUSTOMERS)
        .map(|i| pulse::kafka::partition_for(format!("c-{i}").as_bytes(), 2))
        .collect();
    assert_eq!(parts.len(), 2, "customers on both canonical partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_dated_2199_is_dead_lettered_and_changes_no_stage() -> anyhow::Result<()> {
    customers_on_both_partitions();
    let n = traffic().len();
    // The default check (an hour ahead of ingest's clock), the 2199 event in the middle.
    let default_skew = pulse::Config::with_overrides("")?.ingest.max_future_skew_ms;
    let poisoned = run("poisoned", default_skew, Some(n / 2), last_normal_time()).await?;
    let clean = run("clean", default_skew, None, last_normal_time()).await?;

    // The same alerts and stages as without the poisoned event: it changed nobody's, not
    // even its own customer's (its other events are folded as usual).
    assert!(!clean.alerts.is_empty(), "the traffic causes alerts");
    assert_eq!(
        poisoned.alerts, clean.alerts,
        "same alerts with and without"
    );
    assert_eq!(
        poisoned.stages, clean.stages,
        "same stages with and without"
    );
    assert_eq!(poisoned.stages.len(), CUSTOMERS as usize);
    assert!(
        clean
            .stages
            .values()
            .all(|s| s != "at_risk" && s != "churned"),
        "nobody is at risk in this traffic: {:?}",
        clean.stages
    );

    // It is in the dead-letter topic, untouched, with its reason and where it came from.
    assert_eq!(
        poisoned.dead.len(),
        1,
        "one dead letter: the poisoned event"
    );
    let d = &poisoned.dead[0];
    let h = |k: &str| d.headers.get(k).cloned().unwrap_or_default();
    assert_eq!(h("pulse.dlq.reason"), "future_event");
    assert!(
        h("pulse.dlq.detail").contains("2199-06-01T00:00:00.000Z")
            && h("pulse.dlq.detail").contains("ingest.max_future_skew_ms"),
        "{}",
        h("pulse.dlq.detail")
    );
    assert_eq!(d.value, poison().into_bytes(), "the original bytes");
    assert_eq!(d.key.as_deref(), Some(POISONED));
    let (partition, offset) = poisoned.poison_at.expect("produced");
    assert_eq!(
        (
            h("pulse.dlq.source.partition"),
            h("pulse.dlq.source.offset")
        ),
        (partition.to_string(), offset.to_string())
    );
    assert!(
        poisoned
            .metrics
            .lines()
            .any(|l| l.starts_with(r#"pulse_ingest_dead_letters_total{reason="future_event"}"#)),
        "future_event counted by reason"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_check_off_the_clock_follows_the_log_to_2199() -> anyhow::Result<()> {
    customers_on_both_partitions();
    // Last, so that no normal event arrives after it (none is late: see the module header).
    let n = traffic().len();
    let off = run("unchecked", 0, Some(n), in_2199()).await?;
    // Every other customer, on both partitions (the other through watermark ticks), was
    // announced churned by timers the outlier's clock passed.
    for i in 0..CUSTOMERS {
        let c = format!("c-{i}");
        if c == POISONED {
            continue;
        }
        assert!(
            off.alerts.iter().any(|(who, kind, _, to, _)| *who == c
                && kind == "lifecycle_stage_changed"
                && to == "churned"),
            "{c} churned"
        );
        assert_eq!(off.stages[&c], "churned", "{c}");
    }
    // Its own customer was churned by the same timers, then the 2199 order reactivated it.
    assert_eq!(off.stages[POISONED], "reactivated");
    Ok(())
}

fn late_events(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("pulse_fold_late_events_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pulse_fold_late_events_total in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_1997_is_accepted_and_counted_late() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "backfill", "");
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let addr = running.http_addr;
    let p = producer(&broker.bootstrap());
    let who = "c-old";
    let count_is = |n: u32| {
        move || {
            http_get(addr, &format!("/v1/customers/{who}")).is_ok_and(|(code, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                code == 200 && v["state"]["orders"]["count"] == n
            })
        }
    };
    let recent = order(who, "recent", &day(0).to_string());
    produce(&p, &cfg.topics.orders, Some(who), recent.as_bytes(), &[]).await?;
    wait_for("the 2025 order", Duration::from_secs(60), count_is(1)).await?;
    let before = late_events(&http_get(addr, "/metrics")?.1);

    // Its partition's clock is at 2025-01-01 now: the 1997 order is accepted, and late.
    let old = order(who, "old", r#""1997-05-01T09:30:00Z""#);
    produce(&p, &cfg.topics.orders, Some(who), old.as_bytes(), &[]).await?;
    let canonical = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.canonical],
        Duration::from_secs(60),
        |r| r.iter().filter(|r| r.key.is_some()).count() >= 2,
    )?;
    let times: Vec<i64> = canonical
        .iter()
        .filter(|r| r.key.is_some())
        .map(|r| match decode_canonical(&r.value, Encoding::Json) {
            Ok(Canonical::Event(e, _)) => e.occurred_at,
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    let t1997 = 862_479_000_000; // 1997-05-01T09:30:00Z
    assert_eq!(
        times,
        [day(0), t1997],
        "both in the canonical log, in order"
    );

    wait_for("the 1997 order", Duration::from_secs(60), count_is(2)).await?;
    let (_, body) = http_get(addr, &format!("/v1/customers/{who}"))?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(v["state"]["first_seen_at"], t1997, "{body}");
    // The other tests here have no late event, so the count moved by exactly this one.
    let after = late_events(&http_get(addr, "/metrics")?.1);
    assert_eq!(after - before, 1.0, "one late event");
    running.stop().await?;
    Ok(())
}
