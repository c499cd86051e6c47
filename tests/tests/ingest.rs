//! (b) Malformed input among valid input: every malformed record lands on the dead-letter
//! topic, untouched, with its source coordinates and the right reason; every valid one is
//! folded. (d) JSON and protobuf inputs, per-topic setting and content-type override, with
//! protobuf on the canonical log and the alert topics too.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use pulse::simulate::{SimConfig, Simulator};
use pulse_codec::wire;
use pulse_e2e::{
    config, consume_until, day, http_get, produce, producer, sum_partitions, wait_for, Broker,
};

fn dedupe_entries(running: &pulse::Running) -> i64 {
    sum_partitions(running, |s| {
        s.dedupe_entries().map_or(0, |d| d.len() as i64)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_with_their_reason() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    // A dedupe window longer than the simulation: its entries then count the folded events.
    let cfg = config(
        &broker,
        dir.path(),
        "malformed",
        "[fold]\ndedupe_window_days = 100000\n[ingest]\nmax_record_bytes = 4096\n",
    );
    broker.create_all(&cfg, 4).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());

    let sim = SimConfig {
        customers: 75,
        duration_ms: 120 * pulse_core::DAY,
        malformed_per_mille: 250,
        ..SimConfig::default()
    };
    // (source topic, partition, offset) → expected reason.
    let mut expected: BTreeMap<(String, i32, i64), (String, Vec<u8>)> = BTreeMap::new();
    let mut valid = 0usize;
    for r in Simulator::new(sim) {
        let topic = pulse::demo::input_topic(&cfg, r.topic);
        let (part, off) = produce(&p, topic, r.key.as_deref(), &r.value, &[]).await?;
        match r.malformed {
            Some(reason) => {
                expected.insert(
                    (topic.to_string(), part, off),
                    (reason.to_string(), r.value.clone()),
                );
            }
            None => valid += 1,
        }
    }
    let ok = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c-x","occurred_at":{},"type":"csat_submitted","score":4}}"#,
            day(1)
        )
    };
    type Handmade<'a> = (&'a str, Vec<u8>, &'a [(&'a str, &'a str)]);
    let handmade: Vec<Handmade<'_>> = vec![
        (
            "too_large",
            format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000)).into_bytes(),
            &[],
        ),
        (
            "bad_score",
            ok("h1")
                .replace(r#""score":4"#, r#""score":7"#)
                .into_bytes(),
            &[],
        ),
        (
            "bad_protobuf",
            vec![0xff, 0xff, 0xff, 0x01],
            &[("content-type", "application/x-protobuf")],
        ),
        (
            "missing_field:ticket_id",
            ok("h2")
                .replace("csat_submitted", "ticket_opened")
                .into_bytes(),
            &[],
        ),
    ];
    for (reason, bytes, headers) in &handmade {
        let (part, off) = produce(&p, &cfg.topics.support, Some("c-x"), bytes, headers).await?;
        expected.insert(
            (cfg.topics.support.clone(), part, off),
            (reason.to_string(), bytes.clone()),
        );
    }
    assert!(
        expected.len() >= 1000,
        "at least 1000 malformed records (got {})",
        expected.len()
    );

    let dead = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.dead_letters],
        Duration::from_secs(90),
        |r| r.len() >= expected.len(),
    )?;
    assert_eq!(
        dead.len(),
        expected.len(),
        "one dead letter per malformed record"
    );
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for d in &dead {
        let h = |k: &str| d.headers.get(k).cloned().unwrap_or_default();
        let source = (
            h("pulse.dlq.source.topic"),
            h("pulse.dlq.source.partition").parse()?,
            h("pulse.dlq.source.offset").parse()?,
        );
        let (want, original) = expected
            .get(&source)
            .unwrap_or_else(|| panic!("dead letter for a valid record {source:?}"));
        let got = h("pulse.dlq.reason");
        assert!(
            got == *want || got.starts_with(&format!("{want}:")),
            "{source:?}: reason {got}, expected {want}"
        );
        assert!(!h("pulse.dlq.detail").is_empty());
        assert_eq!(&d.value, original, "dead letter keeps the original bytes");
        *by_reason
            .entry(got.split(':').next().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    eprintln!("dead letters by reason: {by_reason:?}; valid records: {valid}");

    wait_for(
        "every valid event to be folded",
        Duration::from_secs(60),
        || dedupe_entries(&running) == valid as i64,
    )
    .await?;
    running.stop().await?;
    Ok(())
}

fn ts(ms: i64) -> Option<wire::Timestamp> {
    Some(wire::Timestamp {
        value: Some(wire::timestamp::Value::EpochMs(ms)),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_protobuf_inputs_both_fold() -> anyhow::Result<()> {
    let broker = Broker::mock();
    let dir = tempfile::tempdir()?;
    let cfg = config(
        &broker,
        dir.path(),
        "encodings",
        "[encoding]\norders = \"protobuf\"\ncanonical = \"protobuf\"\nalerts = \"protobuf\"\n",
    );
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());
    let who = "c-proto";

    // Protobuf on the orders topic (its configured encoding).
    let order = wire::OrderEvent {
        event_id: "p-1".into(),
        customer_id: who.into(),
        occurred_at: ts(day(0)),
        r#type: "order_placed".into(),
        order_id: "o-1".into(),
        amount: "19.99".into(),
        currency: "EUR".into(),
        ..Default::default()
    };
    produce(
        &p,
        &cfg.topics.orders,
        Some(who),
        &order.encode_to_vec(),
        &[],
    )
    .await?;
    // JSON on the same topic, announced by its content-type header.
    let json_order = format!(
        r#"{{"event_id":"j-1","customer_id":"{who}","occurred_at":"2025-01-03T10:00:00Z","type":"order_placed","order_id":"o-2","amount":"5.01","currency":"EUR"}}"#
    );
    produce(
        &p,
        &cfg.topics.orders,
        Some(who),
        json_order.as_bytes(),
        &[("content-type", "application/json")],
    )
    .await?;
    // Protobuf on a JSON topic, announced by its content-type header.
    let csat = wire::SupportEvent {
        event_id: "p-2".into(),
        customer_id: who.into(),
        occurred_at: ts(day(4)),
        r#type: "csat_submitted".into(),
        score: Some(5),
        ..Default::default()
    };
    produce(
        &p,
        &cfg.topics.support,
        Some(who),
        &csat.encode_to_vec(),
        &[("content-type", "application/x-protobuf")],
    )
    .await?;
    // Plain JSON on a JSON topic.
    let view = format!(
        r#"{{"event_id":"j-2","customer_id":"{who}","occurred_at":{},"type":"page_view"}}"#,
        day(5)
    );
    produce(&p, &cfg.topics.clickstream, Some(who), view.as_bytes(), &[]).await?;

    let addr = running.http_addr;
    let mut last = String::new();
    let folded = wait_for(
        "all four events to be folded",
        Duration::from_secs(60),
        || {
            let Ok((200, body)) = http_get(addr, &format!("/v1/customers/{who}")) else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            last = body;
            v["state"]["orders"]["count"] == 2
                && v["state"]["orders"]["total_minor"] == 2500
                && v["state"]["support"]["csat_positive"] == 1
                && v["state"]["clicks"]["events"] == 1
        },
    )
    .await;
    assert!(folded.is_ok(), "{folded:?}: last profile {last}");

    let alerts = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.lifecycle_changes],
        Duration::from_secs(30),
        |r| !r.is_empty(),
    )?;
    let a = &alerts[0];
    assert_eq!(
        a.headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    let alert = pulse_codec::decode_alert(&a.value, pulse_codec::Encoding::Protobuf)?;
    assert_eq!(
        (
            alert.customer_id.as_str(),
            alert.from.as_str(),
            alert.to.as_str()
        ),
        (who, "prospect", "new")
    );
    assert_eq!(a.headers.get("ce_id"), Some(&alert.alert_id));
    running.stop().await?;
    Ok(())
}
