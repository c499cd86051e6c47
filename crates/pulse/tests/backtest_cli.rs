//! `pulse backtest` and `pulse whatif` as a user runs them: the binary on an NDJSON file made
//! by `pulse simulate --ndjson`, checking the JSON, the HTML's self-containment and the diff.

use std::path::Path;
use std::process::Command;

fn pulse(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pulse"))
        .args(args)
        .output()
        .expect("run pulse");
    assert!(
        out.status.success(),
        "pulse {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn simulate(dir: &Path) -> String {
    let events = dir.join("events.ndjson");
    let e = events.to_str().unwrap().to_string();
    pulse(&[
        "simulate",
        "--ndjson",
        &e,
        "--customers",
        "150",
        "--days",
        "400",
        "--seed",
        "7",
    ]);
    e
}

#[test]
fn backtest_writes_a_consistent_json_and_a_self_contained_html() {
    let dir = tempfile::tempdir().unwrap();
    let events = simulate(dir.path());
    let (json, html) = (dir.path().join("bt.json"), dir.path().join("bt.html"));
    let out = pulse(&[
        "backtest",
        "--ndjson",
        &events,
        "--split",
        "2025-09-01T00:00:00Z",
        "--horizon",
        "8w",
        "--rounds",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("no order for"), "{stdout}");
    assert!(stdout.contains("plain replay"), "{stdout}");

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &v["report"];
    assert_eq!(r["horizon_days"], 56.0);
    assert_eq!(r["split"], 1_756_684_800_000i64);
    let customers = r["customers"].as_array().unwrap();
    assert!(customers.len() > 50, "cohort {}", customers.len());
    assert_eq!(r["summary"]["customers"], customers.len());
    // The summary and the last tracking point are sums over the per-customer rows.
    let actual: u64 = customers
        .iter()
        .map(|c| c["actual"].as_u64().unwrap())
        .sum();
    let expected: f64 = customers
        .iter()
        .map(|c| c["expected"].as_f64().unwrap())
        .sum();
    assert!(actual > 0);
    assert_eq!(r["summary"]["actual_purchases"], actual);
    let tracking = r["tracking"].as_array().unwrap();
    assert_eq!(tracking.len(), 8);
    assert_eq!(tracking[7]["day"], 56.0);
    assert_eq!(tracking[7]["actual_cumulative"], actual);
    let last = tracking[7]["expected_cumulative"].as_f64().unwrap();
    assert!(
        (last - expected).abs() < 1e-6 * expected,
        "{last} vs {expected}"
    );
    assert_eq!(r["calibration"]["bins"].as_array().unwrap().len(), 10);
    let deciles = r["clv_deciles"].as_array().unwrap();
    assert_eq!(deciles.len(), 10);
    let in_deciles: u64 = deciles
        .iter()
        .map(|d| d["customers"].as_u64().unwrap())
        .sum();
    assert_eq!(in_deciles as usize, customers.len());
    for rule in ["model", "baseline"] {
        let m = &r["warnings"][rule];
        assert!(m["lapses"].as_u64().unwrap() > 0, "{rule}: {m}");
        assert!(m["caught"].as_u64() <= m["lapses"].as_u64());
    }
    assert!(v["timing"]["ratio"].as_f64().unwrap() > 0.0);
    assert!(v["timing"]["records"].as_u64().unwrap() > 1_000);

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<svg").count(), 3, "three plots");
    let lower = page.to_lowercase();
    for external in [
        "http://", "https://", "src=", "href=", "<script", "@import", "url(",
    ] {
        assert!(
            !lower.contains(external),
            "external reference {external:?} in the report"
        );
    }
}

#[test]
fn whatif_with_the_same_rules_finds_no_difference_and_a_stricter_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let events = simulate(dir.path());
    let same = dir.path().join("same.toml");
    std::fs::write(&same, "[scoring]\nrule_version = \"v2-copy\"\n").unwrap();
    let diff = dir.path().join("diff.ndjson");
    let out = pulse(&[
        "whatif",
        "--candidate",
        same.to_str().unwrap(),
        "--ndjson",
        &events,
        "--diff",
        diff.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("customers with any difference: 0"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&diff).unwrap(), "");

    let stricter = dir.path().join("stricter.toml");
    std::fs::write(
        &stricter,
        "[scoring]\nrule_version = \"v2-late\"\nat_risk_risk = 0.7\n",
    )
    .unwrap();
    let json = dir.path().join("whatif.json");
    pulse(&[
        "whatif",
        "--candidate",
        stricter.to_str().unwrap(),
        "--ndjson",
        &events,
        "--diff",
        diff.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&diff)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    assert_eq!(lines.len(), v["diffs"].as_array().unwrap().len());
    // A higher threshold only removes risk: nobody enters it, nobody is warned only by it.
    assert_eq!(v["entered_risk"].as_array().unwrap().len(), 0);
    assert_eq!(v["warned_only_candidate"].as_array().unwrap().len(), 0);
    let churn = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "churn_warning")
        .unwrap();
    assert!(
        churn["candidate"].as_u64() < churn["live"].as_u64(),
        "{churn}"
    );
}
