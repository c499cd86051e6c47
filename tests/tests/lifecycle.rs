//! (a) A customer's fate, controlled by the test: weekly orders, then silence. at_risk and
//! churned must fire at the configured thresholds, from ticks alone (their partition of the
//! canonical log receives no event after the last order), on both brokers. Every alert read
//! back from the broker, value and headers, is valid against the published schema of its
//! topic (docs/schemas/alert.schema.json).

use std::time::Duration;

use pulse_e2e::{
    config, consume_all, consume_until, day, http_get, produce, producer, weekly_buyer_and_driver,
    Broker, SCORING_V2,
};

/// The published alert schema with one of its `$defs` (a topic's alerts, the headers) as root.
fn schema_of(def: &str) -> jsonschema::Validator {
    let mut s: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/schemas/alert.schema.json")).unwrap();
    let root = s.as_object_mut().unwrap();
    root.remove("oneOf");
    root.insert("$ref".into(), format!("#/$defs/{def}").into());
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&s)
        .expect("the schema compiles")
}

async fn weekly_buyer_goes_silent(broker: Broker) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(&broker, dir.path(), "lifecycle", SCORING_V2);
    broker.create_all(&cfg, 2).await?;
    let running = pulse::start(cfg.clone()).await?;
    let p = producer(&broker.bootstrap());

    let buyer = "c-weekly";
    let buyer_partition = pulse::kafka::partition_for(buyer.as_bytes(), 2);
    let addr = running.http_addr;
    let driver = weekly_buyer_and_driver(&p, &cfg, addr, buyer).await?;
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

    let lifecycle = consume_until(
        &broker.bootstrap(),
        &[&cfg.topics.lifecycle_changes, &cfg.topics.churn_warnings],
        Duration::from_secs(60),
        |recs| {
            let mine = |topic: &str, text: &str| {
                recs.iter().any(|r| {
                    r.topic == topic
                        && r.key.as_deref() == Some(buyer)
                        && String::from_utf8_lossy(&r.value).contains(text)
                })
            };
            mine(&cfg.topics.lifecycle_changes, r#""to":"churned""#)
                && mine(&cfg.topics.churn_warnings, r#""to":"at_risk""#)
        },
    )?;
    let mine: Vec<serde_json::Value> = lifecycle
        .iter()
        .filter(|r| r.key.as_deref() == Some(buyer))
        .map(|r| serde_json::from_slice(&r.value).expect("alert json"))
        .collect();
    let transitions: Vec<(String, String, String, String)> = mine
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("from"), s("to"), s("occurred_at"))
        })
        .collect();
    let at = |d: i64| pulse_codec::time::format_rfc3339(day(d));
    // The v2 rules (SCORING_V2), MBG/NBD with CDNOW parameters: x = 5 repeat purchase
    // days, t_x = 5 weeks. Risk = p_dead for a customer with orders only.
    // - day 30: the `new` window ends; 6 orders and risk 0.15 < 0.3 → loyal;
    // - day 53 + 20,824,981 ms: p_dead reaches 0.3 (18.2 silent days) → no longer loyal;
    // - day 65: 30 silent days, the floor of the gap rule (2 × 7-day gap = 14 days) → at_risk;
    // - day 110 + 63,860,618 ms: p_dead reaches 0.85 (75.7 silent days) → churned.
    let expected = [
        ("lifecycle_stage_changed", "prospect", "new", at(0)),
        ("lifecycle_stage_changed", "new", "loyal", at(30)),
        (
            "lifecycle_stage_changed",
            "loyal",
            "active",
            pulse_codec::time::format_rfc3339(day(53) + 20_824_981),
        ),
        ("churn_warning", "active", "at_risk", at(35 + 30)),
        ("lifecycle_stage_changed", "active", "at_risk", at(35 + 30)),
        (
            "lifecycle_stage_changed",
            "at_risk",
            "churned",
            pulse_codec::time::format_rfc3339(day(110) + 63_860_618),
        ),
    ];
    for (kind, from, to, when) in &expected {
        assert!(
            transitions
                .iter()
                .any(|t| (t.0.as_str(), t.1.as_str(), t.2.as_str(), &t.3)
                    == (*kind, *from, *to, when)),
            "[{}] missing {kind} {from}->{to} at {when}; got {transitions:#?}",
            broker.name()
        );
    }
    for a in &mine {
        assert!(
            !a["reasons"].as_array().expect("reasons").is_empty(),
            "every alert has a reason: {a}"
        );
        assert_eq!(a["alert_id"].as_str().map(str::len), Some(32));
    }
    // Every alert on the broker, its headers included, is what the published schema of its
    // topic describes
    let headers = schema_of("headers");
    for r in &lifecycle {
        let def = if r.topic == cfg.topics.churn_warnings {
            "churn_warning"
        } else {
            "lifecycle_stage_changed"
        };
        let value: serde_json::Value = serde_json::from_slice(&r.value)?;
        if let Err(e) = schema_of(def).validate(&value) {
            panic!("[{}] {value} is not a valid {def}: {e}", broker.name());
        }
        let h = serde_json::to_value(&r.headers)?;
        if let Err(e) = headers.validate(&h) {
            panic!("[{}] headers {h}: {e}", broker.name());
        }
    }
    // Churn warnings carry the CloudEvents binary-mode headers.
    let warning = lifecycle
        .iter()
        .find(|r| r.topic == cfg.topics.churn_warnings && r.key.as_deref() == Some(buyer))
        .expect("churn warning");
    assert_eq!(
        warning.headers.get("ce_specversion").map(String::as_str),
        Some("1.0")
    );
    assert_eq!(
        warning.headers.get("ce_type").map(String::as_str),
        Some("pulse.churn_warning")
    );
    assert_eq!(
        warning.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );

    // After the last order, the buyer's canonical partition holds ticks only.
    let canonical = consume_all(
        &broker.bootstrap(),
        &[&cfg.topics.canonical],
        Duration::from_secs(2),
    )?;
    let last_order = canonical
        .iter()
        .filter(|r| r.partition == buyer_partition && r.key.as_deref() == Some(buyer))
        .map(|r| r.offset)
        .max()
        .expect("orders in the canonical log");
    let later: Vec<_> = canonical
        .iter()
        .filter(|r| r.partition == buyer_partition && r.offset > last_order)
        .collect();
    assert!(!later.is_empty(), "ticks after the last order");
    assert!(
        later
            .iter()
            .all(|r| String::from_utf8_lossy(&r.value).contains(r#""tick""#)),
        "only ticks after the last order"
    );

    // The profile API agrees.
    let (code, body) = http_get(addr, &format!("/v1/customers/{buyer}"))?;
    assert_eq!(code, 200, "{body}");
    let profile: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(profile["stage"], "churned", "{profile}");
    let (code, body) = http_get(addr, &format!("/v1/customers/{buyer}?at={}", day(40)))?;
    assert_eq!(code, 200);
    assert!(body.contains(r#""stage":"loyal""#), "{body}");
    // Before its first event pulse has not seen the customer; between its first and last
    // event the state would score later events as already happened, so both are refused.
    let (code, body) = http_get(addr, &format!("/v1/customers/{buyer}?at=946684800000"))?;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""error":"not_seen_yet""#), "{body}");
    let (code, body) = http_get(addr, &format!("/v1/customers/{buyer}?at={}", day(3)))?;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(r#""error":"at_before_last_event""#), "{body}");
    assert_eq!(http_get(addr, "/v1/customers/nobody")?.0, 404);
    assert_eq!(http_get(addr, "/readyz")?.0, 200);
    let (_, metrics) = http_get(addr, "/metrics")?;
    assert!(
        metrics.contains("pulse_fold_timers_fired_total"),
        "{metrics}"
    );

    running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_buyer_goes_silent_mock() -> anyhow::Result<()> {
    weekly_buyer_goes_silent(Broker::mock()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_buyer_goes_silent_tansu() -> anyhow::Result<()> {
    weekly_buyer_goes_silent(Broker::tansu()?).await
}
