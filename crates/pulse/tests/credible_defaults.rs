//! The shipped rules judged against the truth, on the demo's own year: the simulator knows
//! when each customer dropped out, which no real history tells, so here (and only here) a
//! churn warning can be checked against what really happened at the moment it was raised.
//!
//! The demo's population (2,000 customers, seed 42, 365 days) goes through the same
//! `Partition` fold as the service (`pulse::whatif::replay`) with the default `[scoring]`
//! from `pulse.default.toml`. The bounds below are what makes an alert stream credible to a
//! marketer; the test prints every rate, so `cargo test -p pulse --test credible_defaults --
//! --nocapture` shows them.

use std::collections::HashMap;

use pulse::history::{Loaded, PartitionLog, Record};
use pulse::simulate::{SimConfig, Simulator};
use pulse::Config;
use pulse_core::alert::AlertKind;
use pulse_core::state::Stage;

const DAY: i64 = 86_400_000;

struct Truth {
    loaded: Loaded,
    /// customer id → the instant they dropped out, `None` while alive at the end.
    dropouts: HashMap<String, Option<i64>>,
    end: i64,
}

fn demo_year() -> Truth {
    let cfg = SimConfig {
        customers: 2_000,
        seed: 42,
        duration_ms: 365 * DAY,
        malformed_per_mille: 0,
        ..SimConfig::default()
    };
    let end = cfg.start_ms + cfg.duration_ms;
    let max = Config::load(None).unwrap().ingest.max_record_bytes;
    let mut sim = Simulator::new(cfg);
    let records: Vec<Record> = sim
        .by_ref()
        .map(|r| Record::Event(r.decode(max).expect("a well-formed simulated record")))
        .collect();
    let dropouts = sim
        .dropouts()
        .map(|(id, at)| (id.to_string(), at))
        .collect();
    Truth {
        loaded: Loaded {
            partitions: vec![PartitionLog {
                partition: 0,
                records,
            }],
            rejected: Vec::new(),
            description: "the demo's simulated year".into(),
        },
        dropouts,
        end,
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

/// What a marketer reads off a year of alerts, against the truth.
struct Rates {
    buyers: usize,
    /// Churn warnings per customer with an order.
    warnings_per_buyer: f64,
    /// Share of the warnings raised after the customer had really bought for the last time.
    warnings_right: f64,
    /// Share of the customers who really left by the end that were warned at some point.
    gone_warned: f64,
    /// Share of the buyers at_risk or churned at the end.
    flagged: f64,
    /// Share of those who really had left.
    flagged_right: f64,
}

#[test]
fn the_default_rules_warn_about_customers_who_really_left() {
    let truth = demo_year();
    let shipped = Config::load(None).unwrap().scoring;
    // Given the shipped rules on the demo's year
    let r = judge(&truth, &shipped);
    // Then about one warning per two buyers a year, 2 in 3 or more of them about a customer
    // who had really left, and most of those who left warned before the year was out
    assert!(r.buyers > 1_000, "{}", r.buyers);
    assert!(r.warnings_per_buyer <= 0.6, "{}", r.warnings_per_buyer);
    assert!(r.warnings_right >= 0.67, "{}", r.warnings_right);
    assert!(r.gone_warned >= 0.6, "{}", r.gone_warned);
    // And the at_risk/churned audience at the end is mostly customers who have left
    assert!(r.flagged_right >= 0.9, "{}", r.flagged_right);
    assert!(r.flagged <= 0.45, "{}", r.flagged);

    // While the rules before the fit (v2: CDNOW's model parameters, at risk at 2x the usual
    // gap after 30 days or at a risk of 0.5) warned about more customers who had not left than
    // customers who had
    let before = Config::with_layers(&[V2]).unwrap().scoring;
    let b = judge(&truth, &before);
    assert!(b.warnings_right < 0.5, "{}", b.warnings_right);
    assert!(b.warnings_per_buyer > 1.0, "{}", b.warnings_per_buyer);
}

/// The shipped `[scoring]` before it was fitted (rule_version v2), as a config layer.
const V2: &str = include_str!("../../pulse-core/tests/fixtures/scoring-v2.toml");

fn judge(truth: &Truth, scoring: &pulse_core::ScoringConfig) -> Rates {
    let run = pulse::whatif::replay(&truth.loaded, scoring);

    let buyers: Vec<(&String, &pulse_core::state::CustomerState)> = run
        .customers
        .iter()
        .filter(|(_, (s, _))| s.orders.first_at.is_some())
        .map(|(id, (s, _))| (id, s))
        .collect();
    let dead_at = |id: &str| truth.dropouts.get(id).copied().flatten();
    let dead_by = |id: &str, t: i64| dead_at(id).is_some_and(|d| d <= t);

    // Stages at the end of the year against who had really left by then.
    let truly_dead = buyers
        .iter()
        .filter(|(id, _)| dead_by(id, truth.end))
        .count();
    let flagged: Vec<&&String> = buyers
        .iter()
        .filter(|(_, s)| matches!(s.announced.stage, Stage::AtRisk | Stage::Churned))
        .map(|(id, _)| id)
        .collect();
    let flagged_dead = flagged.iter().filter(|id| dead_by(id, truth.end)).count();

    // Each churn warning against the truth at the instant it was raised.
    let warnings: Vec<_> = run
        .alerts
        .iter()
        .map(|a| &a.alert)
        .filter(|a| a.kind == AlertKind::ChurnWarning)
        .collect();
    let right = warnings
        .iter()
        .filter(|a| dead_by(&a.customer_id, a.occurred_at))
        .count();
    let mut warned: HashMap<&str, usize> = HashMap::new();
    for a in &warnings {
        *warned.entry(a.customer_id.as_str()).or_default() += 1;
    }
    let dead_warned = buyers
        .iter()
        .filter(|(id, _)| dead_by(id, truth.end) && warned.contains_key(id.as_str()))
        .count();
    let count = |k: AlertKind| run.alerts.iter().filter(|a| a.alert.kind == k).count();
    let mut first_reason: HashMap<&str, usize> = HashMap::new();
    for a in &warnings {
        *first_reason
            .entry(a.reasons[0].signal.as_str())
            .or_default() += 1;
    }

    let n = buyers.len();
    println!("rules {}: {} customers, {n} with an order, {truly_dead} of them ({:.1}%) truly gone at the end", scoring.rule_version, run.customers.len(), pct(truly_dead, n));
    println!(
        "at_risk or churned at the end: {} ({:.1}% of buyers); {:.1}% of them truly gone; {:.1}% of the gone flagged",
        flagged.len(),
        pct(flagged.len(), n),
        pct(flagged_dead, flagged.len()),
        pct(flagged_dead, truly_dead)
    );
    println!(
        "churn warnings: {} ({:.2} per buyer, {} customers warned); {:.1}% raised after the customer had truly gone; {:.1}% of the gone warned",
        warnings.len(),
        warnings.len() as f64 / n as f64,
        warned.len(),
        pct(right, warnings.len()),
        pct(dead_warned, truly_dead)
    );
    println!(
        "per buyer and year: {:.2} lifecycle changes, {:.2} segment changes; warnings' first reason: {first_reason:?}",
        count(AlertKind::LifecycleStageChanged) as f64 / n as f64,
        count(AlertKind::SegmentChanged) as f64 / n as f64,
    );
    let share = |k: usize, of: usize| pct(k, of) / 100.0;
    Rates {
        buyers: n,
        warnings_per_buyer: warnings.len() as f64 / n as f64,
        warnings_right: share(right, warnings.len()),
        gone_warned: share(dead_warned, truly_dead),
        flagged: share(flagged.len(), n),
        flagged_right: share(flagged_dead, flagged.len()),
    }
}
