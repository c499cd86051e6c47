//! `fit_all` against lifetimes on the CDNOW sample, and against known parameters on simulated
//! customers. Customers are built by the engine's own `evolve` and summarised by `summary`, so
//! these tests cover the path `pulse fit` takes.

use std::collections::BTreeMap;

use pulse_core::config::ModelKind;
use pulse_core::engine::evolve;
use pulse_core::event::{Order, OrderKind};
use pulse_core::fit::{fit_all, FitOptions, FitReport, ModelFit};
use pulse_core::{summary, Body, CustomerState, Event, Millis, ScoringConfig, Summary, DAY};

/// Days since the epoch of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn at(y: i64, m: i64, d: i64) -> Millis {
    days_from_civil(y, m, d) * DAY
}

fn order(customer: &str, n: usize, t: Millis, cents: i64) -> Event {
    Event {
        event_id: format!("{customer}-{n}"),
        customer_id: customer.into(),
        occurred_at: t,
        body: Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: format!("{customer}-{n}"),
            amount_minor: cents,
            currency: "USD".into(),
            item_count: 1,
            channel: None,
        }),
    }
}

/// Folds the events (in the given order) per customer and summarises everyone at `end`,
/// counting only events before it, as `pulse fit --until` does.
fn summaries(events: &[Event], end: Millis, cfg: &ScoringConfig) -> Vec<Summary> {
    let mut states: BTreeMap<&str, CustomerState> = BTreeMap::new();
    for e in events.iter().filter(|e| e.occurred_at < end) {
        evolve(states.entry(&e.customer_id).or_default(), e, cfg);
    }
    states
        .values()
        .filter_map(|s| summary(s, end, cfg))
        .collect()
}

fn cdnow() -> Vec<Event> {
    let text = include_str!("fixtures/cdnow/CDNOW_sample.txt");
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let date = f[2];
            let (y, m, d) = (
                date[..4].parse().unwrap(),
                date[4..6].parse().unwrap(),
                date[6..].parse().unwrap(),
            );
            let dollars: f64 = f[4].parse().unwrap();
            order(f[0], n, at(y, m, d), (dollars * 100.0).round() as i64)
        })
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn assert_fit(fit: &ModelFit, expected: &[(&str, f64)], ll: f64) {
    let worst = expected
        .iter()
        .map(|(name, want)| rel(fit.param(name), *want))
        .fold(0.0, f64::max);
    eprintln!(
        "{}: largest relative parameter difference {worst:.1e}, log-likelihood {:.1e}",
        fit.model,
        rel(fit.log_likelihood, ll)
    );
    for (name, want) in expected {
        let got = fit.param(name);
        assert!(
            rel(got, *want) < 1e-4,
            "{} {name}: {got} vs lifetimes {want}",
            fit.model
        );
    }
    assert!(
        rel(fit.log_likelihood, ll) < 1e-4,
        "{} log-likelihood {} vs lifetimes {ll}",
        fit.model,
        fit.log_likelihood
    );
    assert!(fit.convergence.converged, "{fit:?}");
}

#[test]
fn cdnow_fits_agree_with_lifetimes() {
    // Given the CDNOW sample folded by the engine and summarised at 1998-07-01 in weeks
    let cfg = ScoringConfig::default();
    let s = summaries(&cdnow(), at(1998, 7, 1), &cfg);
    // Then the summaries are those lifetimes was given (sums printed by
    // tests/fixtures/cdnow/lifetimes_reference.py)
    assert_eq!(s.len(), 2357);
    assert_eq!(s.iter().map(|s| s.x).sum::<f64>(), 4339.0);
    assert!(rel(s.iter().map(|s| s.t_x).sum(), 43_923.428_571_428_6) < 1e-12);
    assert!(rel(s.iter().map(|s| s.age).sum(), 169_371.0) < 1e-12);
    assert!(
        rel(
            s.iter().map(|s| s.mean_repeat_minor).sum(),
            4_075_844.137_790
        ) < 1e-12
    );

    // When fitted
    let report = fit_all(&s, &FitOptions::default()).unwrap();

    // Then every model agrees with lifetimes 0.11.3 to 1e-4 (numbers from
    // `.tools/venv-lifetimes/bin/python crates/pulse-core/tests/fixtures/cdnow/lifetimes_reference.py`)
    assert_fit(
        &report.bg_nbd,
        &[
            ("r", 0.2532952969),
            ("alpha", 5.440850354),
            ("a", 0.6169398069),
            ("b", 2.687400446),
        ],
        -17144.3553146879,
    );
    assert_fit(
        &report.mbg_nbd,
        &[
            ("r", 0.6181283551),
            ("alpha", 8.655566074),
            ("a", 0.5557235127),
            ("b", 1.015610237),
        ],
        -17133.4099828953,
    );
    assert_fit(
        &report.pareto_nbd,
        &[
            ("r", 0.5619178143),
            ("alpha", 12.55994283),
            ("s", 0.416952378),
            ("beta", 10.95167623),
        ],
        -17142.0181903381,
    );
    let gg = report.gamma_gamma.as_ref().expect("repeat customers");
    assert_eq!(gg.customers, 1139);
    assert_fit(
        gg,
        &[("p", 4.683453293), ("q", 4.189783287), ("v", 2439.055391)],
        -10129.8551625740,
    );
    // And the best by BIC is MBG/NBD (highest likelihood, same parameter count)
    assert_eq!(report.best, ModelKind::MbgNbd);
    assert!(
        report.mbg_nbd.bic < report.pareto_nbd.bic && report.pareto_nbd.bic < report.bg_nbd.bic
    );
    let k4 = 4.0 * 2357f64.ln();
    assert!((report.bg_nbd.bic - (k4 - 2.0 * report.bg_nbd.log_likelihood)).abs() < 1e-9);
    assert!((report.bg_nbd.aic - (8.0 - 2.0 * report.bg_nbd.log_likelihood)).abs() < 1e-9);
    check_cuts_and_tiers(&report, &s);
}

/// RFM cuts are quintiles of the population, and the tiers hold the shares asked for.
fn check_cuts_and_tiers(report: &FitReport, s: &[Summary]) {
    let n = s.len() as f64;
    let share = |pred: &dyn Fn(&Summary) -> bool| s.iter().filter(|x| pred(x)).count() as f64 / n;
    let r = report.recency_cuts_days;
    // Nearest-rank quintiles: at least 20 % at or below the first cut, 80 % at or below the last
    assert!(share(&|x| x.silence_days <= r[0]) >= 0.2);
    assert!(share(&|x| x.silence_days < r[0]) < 0.2);
    assert!(share(&|x| x.silence_days <= r[3]) >= 0.8);
    assert!(r.windows(2).all(|w| w[0] < w[1]), "{r:?}");
    // Monetary scores 1 below its first cut: the cut is one above the quintile, so the
    // customers at the 40 % quintile score 2, with those below them
    let q = report.monetary_cuts_minor[1] - 1;
    assert!(share(&|x| x.net_minor <= q) >= 0.4 && share(&|x| x.net_minor < q) < 0.4);
    assert!(report.frequency_cuts.windows(2).all(|w| w[0] < w[1]));
    // The fitted config is valid, and the engine puts the shares asked for in each tier
    let base = ScoringConfig::default();
    let cfg = report.apply(&base);
    cfg.validate().unwrap();
    let clv: Vec<f64> = s
        .iter()
        .map(|x| pulse_core::clv_of(x, &cfg).unwrap().clv_minor)
        .collect();
    let t = report.value_tier;
    let high = clv.iter().filter(|c| **c >= t.high_from_minor).count() as f64 / n;
    let mid_up = clv.iter().filter(|c| **c >= t.mid_from_minor).count() as f64 / n;
    assert!((high - 0.2).abs() < 0.01, "high share {high}");
    assert!((mid_up - 0.5).abs() < 0.01, "high + mid share {mid_up}");
}

#[test]
fn cdnow_39_week_calibration_is_near_the_published_bg_nbd_fit() {
    // Given the sample's first 39 weeks (Fader, Hardie & Lee 2005 calibrate on them)
    let cfg = ScoringConfig::default();
    let s = summaries(&cdnow(), at(1997, 10, 1), &cfg);
    // When fitted
    let report = fit_all(&s, &FitOptions::default()).unwrap();
    // Then BG/NBD is close to the published r 0.2426, alpha 4.4137, a 0.7930, b 2.4262,
    // LL -9582.4 (their summary is not this one to the day; close, not equal)
    let f = &report.bg_nbd;
    for (name, want) in [
        ("r", 0.2426),
        ("alpha", 4.4137),
        ("a", 0.7930),
        ("b", 2.4262),
    ] {
        assert!(rel(f.param(name), want) < 0.05, "{name} {}", f.param(name));
    }
    eprintln!("39 weeks: {:?}, LL {}", f.params, f.log_likelihood);
    assert!(
        rel(f.log_likelihood, -9582.4) < 0.002,
        "{}",
        f.log_likelihood
    );
}

// ---------------------------------------------------------------------------------------------
// Simulated customers with known parameters
// ---------------------------------------------------------------------------------------------

#[path = "sim/rng.rs"]
mod rng;
use rng::Rng;

#[test]
fn simulated_bg_nbd_and_gamma_gamma_parameters_are_recovered_within_their_standard_errors() {
    // Given 4 000 customers drawn from BG/NBD (r 0.6, alpha 6 weeks, a 0.9, b 2.5) and
    // Gamma-Gamma (p 5, q 4, v 3 000 cents), first purchases over 12 weeks, a 60-week window
    let (r, alpha, a, b) = (0.6, 6.0, 0.9, 2.5);
    let (p, q, v) = (5.0, 4.0, 3000.0);
    let week = (7 * DAY) as f64;
    let start = at(2024, 1, 1);
    let end = start + (60.0 * week) as Millis;
    let mut rng = Rng(20_240_101);
    let mut events = Vec::new();
    for c in 0..4_000 {
        let id = format!("c{c}");
        let lambda = rng.gamma(r, alpha);
        let drop = rng.beta(a, b);
        let nu = rng.gamma(q, v);
        let mut t = rng.next() * 12.0 * week;
        let spend = |rng: &mut Rng| rng.gamma(p, nu).round().max(1.0) as i64;
        // Orders dated by day, as in CDNOW (and most exports)
        let dated = |t: f64| start + (t as Millis).div_euclid(DAY) * DAY;
        events.push(order(&id, 0, dated(t), spend(&mut rng)));
        // BG/NBD: purchases at exponential waits; after each repeat purchase the customer
        // drops out with probability `drop`
        for n in 1.. {
            t += -rng.next().ln() / lambda * week;
            if start + t as Millis >= end {
                break;
            }
            events.push(order(&id, n, dated(t), spend(&mut rng)));
            if rng.next() < drop {
                break;
            }
        }
    }
    let cfg = ScoringConfig::default();
    let s = summaries(&events, end, &cfg);
    assert_eq!(s.len(), 4_000);
    // When fitted
    let report = fit_all(&s, &FitOptions::default()).unwrap();
    // Then each parameter is within 3 reported standard errors of the truth
    let check = |fit: &ModelFit, truth: &[(&str, f64)]| {
        assert!(fit.convergence.converged, "{fit:?}");
        for (i, (name, want)) in truth.iter().enumerate() {
            let got = fit.param(name);
            let se = fit.std_errors[i].expect("a standard error");
            assert!(
                (got - want).abs() <= 3.0 * se,
                "{} {name}: {got} ± {se}, truth {want}",
                fit.model
            );
            // and the standard error is informative (well below the value)
            assert!(se < 0.5 * want, "{} {name}: se {se}", fit.model);
        }
    };
    check(
        &report.bg_nbd,
        &[("r", r), ("alpha", alpha), ("a", a), ("b", b)],
    );
    check(
        report.gamma_gamma.as_ref().unwrap(),
        &[("p", p), ("q", q), ("v", v)],
    );
}
