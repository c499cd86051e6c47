//! `pulse fit` as a user runs it: the binary on an NDJSON file made by `pulse simulate
//! --ndjson`; the fragment it writes must load through `Config::load` (as `pulse run
//! --config` loads it) with exactly the fitted values, and the JSON must carry every model.

use std::path::Path;
use std::process::Command;

use pulse::config::Config;
use pulse_core::config::ModelKind;

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

fn param(v: &serde_json::Value, name: &str) -> f64 {
    v["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))[1]
        .as_f64()
        .unwrap()
}

#[test]
fn fit_writes_a_fragment_pulse_run_loads_with_the_fitted_values_and_a_json_report() {
    // Given a simulated history
    let dir = tempfile::tempdir().unwrap();
    let events = simulate(dir.path());
    let (toml_path, json_path) = (dir.path().join("fit.toml"), dir.path().join("fit.json"));
    // When fitted up to 2025-12-01
    let out = pulse(&[
        "fit",
        "--ndjson",
        &events,
        "--until",
        "2025-12-01T00:00:00Z",
        "--starts",
        "2",
        "--out",
        toml_path.to_str().unwrap(),
        "--json",
        json_path.to_str().unwrap(),
    ]);
    assert!(out.stdout.is_empty(), "the fragment went to --out");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("best by BIC"), "{stderr}");

    // Then the JSON has the three transaction models, fitted, and the best of them
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let customers = v["customers"].as_u64().unwrap();
    assert!(customers > 50, "{customers} customers");
    let mut bics = Vec::new();
    for m in ["bg_nbd", "mbg_nbd", "pareto_nbd"] {
        let ll = v[m]["log_likelihood"].as_f64().unwrap();
        assert!(ll.is_finite() && ll < 0.0, "{m}: {ll}");
        assert_eq!(v[m]["customers"], customers);
        bics.push((m, v[m]["bic"].as_f64().unwrap()));
    }
    let best = v["best"].as_str().unwrap();
    let lowest = bics.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    assert_eq!(best, lowest);

    // And the fragment is commented with its provenance and loads as a config as it is
    let text = std::fs::read_to_string(&toml_path).unwrap();
    assert!(text.starts_with("# Fitted by `pulse fit`:"), "{text}");
    assert!(text.contains("events.ndjson"), "{text}");
    let cfg = Config::load(Some(&toml_path)).unwrap().scoring;
    // With the JSON's values (f64 survive TOML and JSON exactly)
    assert_eq!(cfg.rule_version, "v3-fit-2025-12-01");
    let kind = match best {
        "bg_nbd" => ModelKind::BgNbd,
        "mbg_nbd" => ModelKind::MbgNbd,
        "pareto_nbd" => ModelKind::ParetoNbd,
        other => panic!("best {other}"),
    };
    assert_eq!(cfg.model.kind, kind);
    let m = &cfg.model;
    assert_eq!(m.bg_nbd.r, param(&v["bg_nbd"], "r"));
    assert_eq!(m.bg_nbd.b, param(&v["bg_nbd"], "b"));
    assert_eq!(m.mbg_nbd.alpha, param(&v["mbg_nbd"], "alpha"));
    assert_eq!(m.mbg_nbd.a, param(&v["mbg_nbd"], "a"));
    assert_eq!(m.pareto_nbd.s, param(&v["pareto_nbd"], "s"));
    assert_eq!(m.pareto_nbd.beta, param(&v["pareto_nbd"], "beta"));
    assert_eq!(cfg.gamma_gamma.q, param(&v["gamma_gamma"], "q"));
    let ints = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    assert_eq!(cfg.recency_cuts_days.to_vec(), ints("recency_cuts_days"));
    let freq: Vec<i64> = cfg.frequency_cuts.iter().map(|&c| c as i64).collect();
    assert_eq!(freq, ints("frequency_cuts"));
    assert_eq!(
        cfg.monetary_cuts_minor.to_vec(),
        ints("monetary_cuts_minor")
    );
    assert_eq!(
        cfg.value_tier.high_from_minor,
        v["value_tier"]["high_from_minor"].as_f64().unwrap()
    );
    assert_eq!(
        cfg.value_tier.mid_from_minor,
        v["value_tier"]["mid_from_minor"].as_f64().unwrap()
    );
}

#[test]
fn the_fragment_loads_back_to_the_whole_fitted_scoring_section() {
    // Given a simulated history fitted in process (the function `pulse fit` runs)
    let dir = tempfile::tempdir().unwrap();
    let events = simulate(dir.path());
    let base = Config::load(None).unwrap();
    let loaded = pulse::history::load_ndjson(Path::new(&events), &base).unwrap();
    let until = pulse::fit::end_of_input(&loaded).unwrap();
    let params = pulse::fit::FitParams {
        starts: 2,
        ..Default::default()
    };
    let fitted = pulse::fit::fit_loaded(&loaded, until, &base.scoring, params).unwrap();
    // When its fragment is written and loaded as a config file
    let text = pulse::fit::fragment(&fitted, &loaded.description, "pulse fit (test)").unwrap();
    let path = dir.path().join("fit.toml");
    std::fs::write(&path, &text).unwrap();
    let loaded_cfg = Config::load(Some(&path)).unwrap();
    // Then its `[scoring]` is the fitted one, every key, and the report's values are in it
    assert_eq!(loaded_cfg.scoring, fitted.scoring);
    let mut expected = fitted.report.apply(&base.scoring);
    expected.rule_version = fitted.scoring.rule_version.clone();
    assert_eq!(loaded_cfg.scoring, expected);
    assert_ne!(loaded_cfg.scoring, base.scoring);
}
