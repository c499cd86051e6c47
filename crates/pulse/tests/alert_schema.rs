//! The published alert schema, `docs/schemas/alert.schema.json`, held against what pulse
//! really sends: every alert the engine raises over a simulated year (the `Partition` fold of
//! `pulse::whatif::replay`, as `credible_defaults` uses it, with the shipped `[scoring]`),
//! turned into a record the way fold does (`alert_to_wire`, `encode_alert`, `alert_headers`,
//! the `pulse.cause` header), is validated by a JSON Schema 2020-12 validator against the
//! schema of its topic; its headers against the headers' schema; its protobuf encoding must
//! carry the same alert. The lists the schema documents (reason signals, stages, segments,
//! alert types) are compared with the code's own lists, never with a copy in this test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use jsonschema::{Draft, Validator};
use pulse::history::{Loaded, PartitionLog, Record};
use pulse::simulate::{SimConfig, Simulator};
use pulse::Config;
use pulse_codec::{
    alert_headers, alert_to_wire, decode_alert, encode_alert, headers, Encoding, ALERT_SCHEMA,
};
use pulse_core::alert::{AlertKind, ReasonSignal};
use pulse_core::state::{Segment, Stage};
use serde_json::{json, Value};

const SCHEMA: &str = include_str!("../../../docs/schemas/alert.schema.json");
const README: &str = include_str!("../../../README.md");
const DAY: i64 = 86_400_000;

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("the schema file is JSON")
}

/// A validator for the whole schema (`None`: any alert) or for one of its `$defs` (a topic's
/// alerts, the headers): the same document with that definition as its root.
fn validator(def: Option<&str>) -> Validator {
    let mut s = schema();
    if let Some(def) = def {
        let root = s.as_object_mut().unwrap();
        root.remove("oneOf");
        root.insert("$ref".into(), json!(format!("#/$defs/{def}")));
    }
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&s)
        .expect("the schema compiles")
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// One alert as fold sends it: the JSON value, the protobuf value and the headers.
struct Sent {
    kind: AlertKind,
    json: Vec<u8>,
    protobuf: Vec<u8>,
    headers: BTreeMap<String, String>,
}

const CURRENCY: &str = "EUR";

/// Every alert the shipped rules raise over a simulated year of 600 customers (computed once
/// for the tests of this file).
fn simulated_year() -> &'static [Sent] {
    static YEAR: OnceLock<Vec<Sent>> = OnceLock::new();
    YEAR.get_or_init(raise_a_year)
}

fn raise_a_year() -> Vec<Sent> {
    let cfg = SimConfig {
        customers: 600,
        seed: 7,
        duration_ms: 365 * DAY,
        malformed_per_mille: 0,
        currency: CURRENCY.into(),
        ..SimConfig::default()
    };
    let config = Config::load(None).unwrap();
    let max = config.ingest.max_record_bytes;
    let records: Vec<Record> = Simulator::new(cfg)
        .map(|r| Record::Event(r.decode(max).expect("a well-formed simulated record")))
        .collect();
    let loaded = Loaded {
        partitions: vec![PartitionLog {
            partition: 0,
            records,
        }],
        rejected: Vec::new(),
        description: "a simulated year".into(),
    };
    let run = pulse::whatif::replay(&loaded, &config.scoring);
    run.alerts
        .iter()
        .map(|c| {
            let wire = alert_to_wire(&c.alert, &c.alert.id(c.cause.offset, c.index));
            let mut headers: BTreeMap<String, String> =
                alert_headers(&wire, "pulse", Encoding::Json)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
            let cause = format!("{}/{}", c.cause.partition, c.cause.offset);
            headers.insert(headers::CAUSE.to_string(), cause);
            Sent {
                kind: c.alert.kind,
                json: encode_alert(&wire, Encoding::Json),
                protobuf: encode_alert(&wire, Encoding::Protobuf),
                headers,
            }
        })
        .collect()
}

#[test]
fn every_alert_of_a_simulated_year_validates_against_its_topics_schema() {
    // Given the published schema, itself a valid JSON Schema 2020-12 document for the version
    // the alerts' schema header names
    let doc = schema();
    if let Err(e) = jsonschema::meta::validate(&doc) {
        panic!("the schema is not valid JSON Schema: {e}");
    }
    assert!(doc["$id"].as_str().unwrap().ends_with(ALERT_SCHEMA));
    let any = validator(None);
    let topic: BTreeMap<AlertKind, Validator> = AlertKind::ALL
        .into_iter()
        .map(|k| (k, validator(Some(k.as_str()))))
        .collect();
    let header_schema = validator(Some("headers"));

    // When the engine raises a year of alerts
    let year = simulated_year();

    // Then each one, of every type, is valid against its topic's schema and the whole one,
    // and no other topic's schema takes it
    let mut per_kind: BTreeMap<AlertKind, usize> = BTreeMap::new();
    for sent in year {
        let value: Value = serde_json::from_slice(&sent.json).unwrap();
        let bad = errors(&topic[&sent.kind], &value);
        assert!(bad.is_empty(), "{value}\n{}", bad.join("\n"));
        assert!(any.is_valid(&value), "{value}");
        for (k, v) in &topic {
            if *k != sent.kind {
                assert!(!v.is_valid(&value), "{value} is also a {}", k.as_str());
            }
        }
        // And its headers are the documented ones
        let h = serde_json::to_value(&sent.headers).unwrap();
        let bad = errors(&header_schema, &h);
        assert!(bad.is_empty(), "{h}\n{}", bad.join("\n"));
        // And its protobuf encoding carries the same alert, field for field
        let from_json = decode_alert(&sent.json, Encoding::Json).unwrap();
        let from_protobuf = decode_alert(&sent.protobuf, Encoding::Protobuf).unwrap();
        assert_eq!(from_json, from_protobuf);
        *per_kind.entry(sent.kind).or_default() += 1;
    }
    println!("alerts validated per type: {per_kind:?}");
    for k in AlertKind::ALL {
        assert!(per_kind.get(&k).copied().unwrap_or(0) > 10, "{per_kind:?}");
    }
}

#[test]
fn the_schema_refuses_what_it_must_not_take() {
    // Given a real alert with a CLV from the simulated year
    let year = simulated_year();
    let sent = year
        .iter()
        .find(|s| s.kind == AlertKind::ChurnWarning && s.json.windows(5).any(|w| w == b"\"clv\""))
        .expect("a churn warning with a CLV");
    let good: Value = serde_json::from_slice(&sent.json).unwrap();
    let v = validator(Some("churn_warning"));
    assert!(v.is_valid(&good));
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut bad = good.clone();
        change(&mut bad);
        !v.is_valid(&bad)
    };
    // Then the schema refuses a value tier as a number, money without its currency or with
    // a currency that is not ISO-4217's form, a reason signal it does not document, an
    // undocumented score or field, and a churn warning into a stage that is not a risk
    assert!(refused(&|a| a["value_tier"] = json!(2)));
    assert!(refused(&|a| {
        a["money"]["clv"]
            .as_object_mut()
            .unwrap()
            .remove("currency");
    }));
    assert!(refused(&|a| a["money"]["clv"]["currency"] = json!("euro")));
    assert!(refused(&|a| a["money"]["clv"] = json!(12.5)));
    assert!(refused(&|a| a["reasons"][0]["signal"] = json!("mood")));
    assert!(refused(&|a| a["scores"]["mood"] = json!(1.0)));
    assert!(refused(&|a| a["mood"] = json!(1.0)));
    assert!(refused(&|a| a["to"] = json!("loyal")));
}

#[test]
fn every_monetary_figure_says_its_currency_and_the_tier_is_a_name() {
    let year = simulated_year();
    let (mut with_clv, mut with_money) = (0, 0);
    for sent in year {
        let a: Value = serde_json::from_slice(&sent.json).unwrap();
        let scores = a["scores"].as_object().unwrap();
        let money = a["money"].as_object().unwrap();
        // Every amount in the scores (`*_minor`) has its figure, with the customer's
        // currency, in `money`
        for (name, v) in scores {
            if let Some(figure) = name.strip_suffix("_minor") {
                let m = &money[figure];
                assert_eq!(m["currency"], CURRENCY, "{a}");
                let minor = v.as_f64().unwrap().round() as i64;
                assert_eq!(m["amount_minor"].as_i64(), Some(minor), "{a}");
            }
        }
        for m in money.values() {
            assert_eq!(m["currency"], CURRENCY, "{a}");
        }
        with_money += usize::from(!money.is_empty());
        // And the value tier is named, the name agreeing with the old numeric score
        match scores.get("value_tier").and_then(Value::as_f64) {
            Some(rank) => {
                let name = ["low", "mid", "high"][rank as usize - 1];
                assert_eq!(a["value_tier"], name, "{a}");
                assert!(money.contains_key("clv"), "{a}");
                with_clv += 1;
            }
            None => assert!(a["value_tier"].is_null(), "{a}"),
        }
    }
    println!(
        "{} alerts, {with_money} with money, {with_clv} with a CLV",
        year.len()
    );
    assert!(
        with_clv > 100 && with_money >= with_clv,
        "{with_clv} {with_money}"
    );
}

/// The names a `oneOf` of `const`s (or an `enum`) lists under `$defs/<def>`.
fn documented(def: &str) -> BTreeSet<String> {
    let d = &schema()["$defs"][def];
    let names: Vec<&Value> = match d.get("oneOf") {
        Some(one_of) => one_of
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let text = c["description"].as_str().unwrap_or("");
                assert!(text.len() > 20, "{def}: {c} has no description");
                &c["const"]
            })
            .collect(),
        None => d["enum"].as_array().unwrap().iter().collect(),
    };
    names
        .into_iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_reason_signal_the_engine_can_emit_is_documented_in_the_schema_and_readme() {
    // Given the engine's one list of reason signals (a reason's signal is of that type)
    let code: BTreeSet<String> = ReasonSignal::all()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(code.len(), 18);
    // Then the schema documents each, with a description, and nothing else
    assert_eq!(documented("signal"), code);
    // And the README's table of reason signals has a row for each
    for s in &code {
        assert!(
            README.contains(&format!("| `{s}` |")),
            "README has no row for the reason signal {s}"
        );
    }
    // And the stages, segments and alert types the schema lists are the code's
    let names = |it: &mut dyn Iterator<Item = &'static str>| -> BTreeSet<String> {
        it.map(str::to_string).collect()
    };
    assert_eq!(
        documented("stage"),
        names(&mut Stage::ALL.iter().map(|s| s.as_str()))
    );
    assert_eq!(
        documented("segment"),
        names(&mut Segment::ALL.iter().map(|s| s.as_str()))
    );
    let types: BTreeSet<String> = schema()["$defs"]["alert"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, names(&mut AlertKind::ALL.iter().map(|k| k.as_str())));
}
