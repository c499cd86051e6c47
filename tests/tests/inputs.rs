//! Nothing a producer sends stops pulse or makes it drop another customer's event (issue 16),
//! against librdkafka's mock cluster, through ingest and fold:
//! - event-id dedupe is per customer: customer A's order and customer B's NPS answer with the
//!   same `event_id` on the same canonical partition are both folded; A's order re-sent is
//!   dropped as a duplicate.
//!
//! One file for these, so the duplicate counter this process's metrics recorder holds is only
//! moved by the test that expects it.

use std::time::Duration;

use pulse_e2e::{config, day, http_get, produce, producer, sum_partitions, wait_for, Broker};

/// A counter's value on `/metrics` (absent until first moved: 0).
fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_of_two_customers_is_not_a_duplicate() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "dedupe-across-customers", "");
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());

    // Two customers on the same canonical partition: dedupe is per partition, so only there
    // could one's event be taken for the other's.
    let a = "cust-a";
    let b = (0..)
        .map(|i| format!("cust-b-{i}"))
        .find(|c| {
            pulse::kafka::partition_for(c.as_bytes(), 2)
                == pulse::kafka::partition_for(a.as_bytes(), 2)
        })
        .expect("a customer on A's partition");
    let order = format!(
        r#"{{"event_id":"1001","customer_id":"{a}","occurred_at":{},"type":"order_placed","order_id":"o-1","amount":"30.00","currency":"EUR"}}"#,
        day(1)
    );
    let nps = format!(
        r#"{{"event_id":"1001","customer_id":"{b}","occurred_at":{},"type":"nps_submitted","score":9}}"#,
        day(1)
    );
    produce(&p, &cfg.topics.orders, Some(a), order.as_bytes(), &[]).await?;
    produce(&p, &cfg.topics.support, Some(&b), nps.as_bytes(), &[]).await?;
    // Ingest is at-least-once: the same order of A again is a duplicate (control).
    produce(&p, &cfg.topics.orders, Some(a), order.as_bytes(), &[]).await?;

    // Three events reached fold: each is either a dedupe entry (folded) or a duplicate.
    let entries = || {
        sum_partitions(&running, |s| {
            s.dedupe_entries().map_or(0, |d| d.len() as i64)
        })
    };
    let duplicates = || -> f64 {
        let (_, m) = http_get(running.http_addr, "/metrics").expect("metrics");
        counter(&m, "pulse_fold_duplicate_events_total")
    };
    wait_for(
        "fold to account for the three events",
        Duration::from_secs(60),
        || entries() as f64 + duplicates() >= 3.0,
    )
    .await?;
    assert_eq!(
        (entries(), duplicates()),
        (2, 1.0),
        "A's order and B's NPS answer folded, A's re-sent order dropped"
    );
    let (code, body) = http_get(running.http_addr, &format!("/v1/customers/{a}"))?;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""count":1"#), "A has one order: {body}");
    let (code, body) = http_get(running.http_addr, &format!("/v1/customers/{b}"))?;
    assert_eq!(code, 200, "B's NPS answer was folded: {body}");
    running.stop().await?;
    Ok(())
}
