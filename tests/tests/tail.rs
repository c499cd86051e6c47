//! `pulse tail` against tansu, a real broker process: after pulse folded simulated customers,
//! `--from-beginning --until-caught-up` prints every alert the alert topics hold, each once
//! (as JSON lines: the same alert ids, as many as the topics hold; readable: one line per
//! alert), `--kind` reads one topic, `--max-records` stops after N; and from the end it prints
//! nothing that was there before it started (on the mock cluster: see the test).

use std::collections::BTreeMap;
use std::time::Duration;

use pulse::tail::{tail, Kind, TailArgs};
use pulse_e2e::{config, consume_all, produce, producer, Broker};

fn args(brokers: &str) -> TailArgs {
    TailArgs {
        config: None,
        brokers: Some(brokers.to_string()),
        kind: Vec::new(),
        from_beginning: true,
        json: false,
        max_records: None,
        until_caught_up: true,
    }
}

/// Runs `pulse tail` (the function the binary calls) off the runtime; its stdout as lines.
async fn run(args: TailArgs) -> anyhow::Result<Vec<String>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let outcome = tail(&args, &mut out)?;
        assert_eq!(outcome.undecodable, 0, "every record is an alert");
        let lines: Vec<String> = String::from_utf8(out)?
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(outcome.printed, lines.len() as u64);
        anyhow::Ok(lines)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_every_alert_pulse_produced() -> anyhow::Result<()> {
    let broker = Broker::tansu()?;
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "tail", "");
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&bootstrap);
    let sim = pulse::simulate::SimConfig {
        customers: 60,
        duration_ms: 150 * pulse_core::DAY,
        malformed_per_mille: 0,
        ..pulse::simulate::SimConfig::default()
    };
    for r in pulse::simulate::Simulator::new(sim) {
        produce(
            &p,
            pulse::demo::input_topic(&cfg, r.topic),
            r.key.as_deref(),
            &r.value,
            &[],
        )
        .await?;
    }
    let t = &cfg.topics;
    let alert_topics = [
        t.churn_warnings.as_str(),
        t.lifecycle_changes.as_str(),
        t.segment_changes.as_str(),
    ];
    // Some alerts first, then stop pulse: what the topics hold is then final.
    consume_all(&bootstrap, &alert_topics, Duration::from_secs(3))?;
    running.stop().await?;
    let held = consume_all(&bootstrap, &alert_topics, Duration::from_secs(3))?;
    let mut held_ids: Vec<String> = held.iter().map(|r| r.headers["ce_id"].clone()).collect();
    held_ids.sort();
    let per_topic: BTreeMap<&str, usize> = alert_topics
        .iter()
        .map(|t| (*t, held.iter().filter(|r| r.topic == *t).count()))
        .collect();
    eprintln!("the alert topics hold {} alerts: {per_topic:?}", held.len());
    assert!(
        per_topic.values().all(|n| *n > 0),
        "alerts of every kind to tail: {per_topic:?}"
    );

    // JSON lines: every alert the topics hold, once.
    let json = run(TailArgs {
        json: true,
        ..args(&bootstrap)
    })
    .await?;
    let mut ids: Vec<String> = json
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["alert_id"].as_str().expect("alert_id").to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids.len(), held.len(), "as many alerts as the topics hold");
    assert_eq!(ids, held_ids, "the alerts the topics hold");

    // Readable: one line per alert, naming its customer and kind.
    let lines = run(args(&bootstrap)).await?;
    assert_eq!(lines.len(), held.len());
    for r in &held {
        let v: serde_json::Value = serde_json::from_slice(&r.value)?;
        let customer = v["customer_id"].as_str().expect("customer");
        let change = format!(
            "{} → {}",
            v["from"].as_str().unwrap(),
            v["to"].as_str().unwrap()
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(customer) && l.contains(&change)),
            "a line for {customer} {change}"
        );
    }
    let churn_lines = lines.iter().filter(|l| l.contains("churn warning")).count();
    assert_eq!(churn_lines, per_topic[t.churn_warnings.as_str()]);

    // One kind: its topic only.
    let churn = run(TailArgs {
        kind: vec![Kind::Churn],
        json: true,
        ..args(&bootstrap)
    })
    .await?;
    assert_eq!(churn.len(), per_topic[t.churn_warnings.as_str()]);
    assert!(churn
        .iter()
        .all(|l| l.contains(r#""type":"churn_warning""#)));

    // At most N.
    let three = run(TailArgs {
        max_records: Some(3),
        until_caught_up: false,
        ..args(&bootstrap)
    })
    .await?;
    assert_eq!(three.len(), 3);

    // From the end: nothing that was already there. On librdkafka's mock cluster, because
    // tansu's end offsets (ListOffsets latest) were measured below the records it serves, so
    // "the end" there starts among the old alerts. The records are the alerts pulse produced
    // above, bytes and headers as they were.
    let mock = Broker::mock();
    mock.create_topics(&cfg, &alert_topics, 2).await?;
    let mp = producer(&mock.bootstrap());
    for r in &held {
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        produce(&mp, &r.topic, r.key.as_deref(), &r.value, &headers).await?;
    }
    let all = run(args(&mock.bootstrap())).await?;
    assert_eq!(all.len(), held.len(), "the mock cluster holds them all");
    let from_end = run(TailArgs {
        from_beginning: false,
        ..args(&mock.bootstrap())
    })
    .await?;
    assert_eq!(from_end, Vec::<String>::new());
    Ok(())
}
