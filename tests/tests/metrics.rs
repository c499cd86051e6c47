//! The end-to-end and process metrics, scraped from a live service over real HTTP (mock broker):
//! ingest decode time, timers pending and fired, the end-to-end alert histograms (staleness by
//! cause, consumed → acknowledged latency), state bytes per partition and the process series.
//! Each must exist and move between two scrapes while the service works.

use std::time::Duration;

use pulse_e2e::{
    config, day, http_get, produce, producer, wait_for, weekly_buyer_and_driver, Broker,
};

/// Sum of every sample of `series`: a metric name, optionally with the start of its labels
/// (`name{cause="timer"`); `None` if there is none.
fn total(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let matches = if series.contains('{') {
            name.starts_with(series)
        } else {
            name == series || name.starts_with(&format!("{series}{{"))
        };
        if matches {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

fn get(text: &str, series: &str) -> f64 {
    total(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_metrics_exist_and_move_mock() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "metrics", "");
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let addr = running.http_addr;
    let p = producer(&broker.bootstrap());

    // A weekly buyer (a timer is scheduled for their silence), then a driver on the other
    // partition whose events move time on: the buyer's timers fire from ticks alone.
    let buyer = "c-weekly";
    let driver = weekly_buyer_and_driver(&p, &cfg, addr, buyer).await?;
    // The pending-timer gauge is as of the last commit: wait for one.
    wait_for("a pending timer", Duration::from_secs(10), || {
        http_get(addr, "/metrics")
            .is_ok_and(|(_, m)| total(&m, "pulse_fold_pending_timers").unwrap_or(0.0) >= 1.0)
    })
    .await?;
    let (status, first) = http_get(addr, "/metrics")?;
    assert_eq!(status, 200);

    assert!(
        get(
            &first,
            r#"pulse_ingest_decode_duration_seconds_count{family="orders""#
        ) >= 6.0
    );
    assert!(get(&first, "pulse_ingest_decode_duration_seconds_sum") > 0.0);
    assert!(first.contains("# TYPE pulse_ingest_decode_duration_seconds histogram"));
    assert!(
        first.contains(
            r#"pulse_ingest_decode_duration_seconds_bucket{family="orders",le="0.000001"}"#
        ),
        "decode buckets are per-metric (microseconds)"
    );
    assert!(get(&first, "pulse_fold_state_bytes") > 0.0);
    for partition in 0..2 {
        assert!(first.contains(&format!(
            "pulse_fold_state_bytes{{partition=\"{partition}\"}}"
        )));
    }
    assert!(get(&first, "pulse_fold_pending_timers") >= 1.0);
    assert!(get(&first, "process_resident_memory_bytes") > 1e6);
    assert!(get(&first, "process_open_fds") >= 3.0);
    assert!(get(&first, "process_max_fds") >= get(&first, "process_open_fds"));
    assert!(first.contains("# TYPE process_cpu_seconds_total counter"));
    let cpu_first = get(&first, "process_cpu_seconds_total");
    let start = get(&first, "process_start_time_seconds");
    let now = pulse::wall_clock_ms() as f64 / 1000.0;
    assert!(
        start <= now + 1.0 && start > now - 86_400.0 * 365.0,
        "start {start}, now {now}"
    );
    let fired_first = get(&first, "pulse_fold_timers_fired_total");

    for d in 36..=240 {
        let view = format!(
            r#"{{"event_id":"v-{d}","customer_id":"{driver}","occurred_at":{},"type":"page_view"}}"#,
            day(d)
        );
        produce(
            &p,
            &cfg.topics.clickstream,
            Some(&driver),
            view.as_bytes(),
            &[],
        )
        .await?;
    }
    wait_for(
        "a timer-fired alert to be acknowledged",
        Duration::from_secs(60),
        || {
            http_get(addr, "/metrics").is_ok_and(|(_, m)| {
                total(&m, r#"pulse_alert_staleness_seconds_count{cause="timer""#).unwrap_or(0.0)
                    > 0.0
            })
        },
    )
    .await?;
    let (_, second) = http_get(addr, "/metrics")?;

    // Moved: more records decoded, timers fired, CPU spent.
    assert!(
        get(
            &second,
            r#"pulse_ingest_decode_duration_seconds_count{family="clickstream""#
        ) >= 1.0
    );
    assert!(get(&second, "pulse_fold_timers_fired_total") > fired_first);
    assert!(get(&second, "process_cpu_seconds_total") >= cpu_first);
    // Consumed → acknowledged: every alert acknowledged so far, each well under a minute here.
    let alerts = get(&second, "pulse_alerts_total");
    let latency_n = get(&second, "pulse_alert_latency_seconds_count");
    assert!(
        latency_n >= 1.0 && latency_n <= alerts,
        "{latency_n} latencies, {alerts} alerts"
    );
    let latency_mean = get(&second, "pulse_alert_latency_seconds_sum") / latency_n;
    assert!(
        latency_mean > 0.0 && latency_mean < 30.0,
        "mean latency {latency_mean}"
    );
    // Staleness is measured from the timer's due time, not from when fold read the record:
    // every timer here was due between the first order and the last page view (ticks never
    // run ahead of event time), both long ago.
    let timer_n = get(
        &second,
        r#"pulse_alert_staleness_seconds_count{cause="timer""#,
    );
    let timer_mean = get(
        &second,
        r#"pulse_alert_staleness_seconds_sum{cause="timer""#,
    ) / timer_n;
    let now = pulse::wall_clock_ms() as f64 / 1000.0;
    let (oldest, newest) = (day(0) as f64 / 1000.0, day(240) as f64 / 1000.0);
    assert!(
        timer_mean <= now - oldest && timer_mean >= now - newest - 60.0,
        "timer staleness {timer_mean}, want within [{}, {}]",
        now - newest,
        now - oldest
    );
    let staleness_n = get(&second, "pulse_alert_staleness_seconds_count");
    assert_eq!(
        staleness_n, latency_n,
        "each acknowledged alert is timed once per histogram"
    );

    running.stop().await?;
    Ok(())
}
