//! The backtest's forecasts against lifetimes, and the what-if's diff against an expectation
//! computed from the engine's evaluations alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{day, rules, Customer};
use pulse_core::backtest::forecast;
use pulse_core::config::ModelKind;
use pulse_core::engine::evolve;
use pulse_core::event::{Order, OrderKind};
use pulse_core::whatif::{compare, Cause, Replayer, Run, Step};
use pulse_core::{evaluate, AlertKind, Body, CustomerState, Event, Millis, ScoringConfig, DAY};

/// lifetimes 0.11.3's `conditional_expected_number_of_purchases_up_to_time` at t = 1, 13 and
/// 39 weeks for purchase days `days` (day 0 the first) and a split on day `split`, with the
/// CDNOW `[scoring.model]` parameters of `common::rules()`. Made by
/// `crates/pulse-core/tests/lifetimes/conditional_expectations.py` (its docstring has the
/// command); pasted from its output.
#[rustfmt::skip]
const LIFETIMES: &[(&str, &[i64], i64, [f64; 3])] = &[
    ("bg_nbd", &[0], 70, [0.016656211006283173, 0.1949173024878101, 0.49868742084197926]),
    ("bg_nbd", &[0, 14], 100, [0.029398245842760136, 0.3409165393399596, 0.856116762803258]),
    ("bg_nbd", &[0, 7, 21, 35, 70], 140, [0.07257134570652582, 0.8356795894303806, 2.0695498004490602]),
    ("bg_nbd", &[0, 3, 5, 200, 210, 250, 300], 365, [0.0827154878439864, 1.0113807623051425, 2.714215312810238]),
    ("bg_nbd", &[0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77], 84, [0.5942598091026381, 6.350078364218734, 14.50629534996613]),
    ("mbg_nbd", &[0], 70, [0.01674340243781848, 0.193137026941455, 0.48275059815976673]),
    ("mbg_nbd", &[0, 14], 100, [0.030933180944902806, 0.35510175569167257, 0.8765890668024985]),
    ("mbg_nbd", &[0, 7, 21, 35, 70], 140, [0.0711213219096136, 0.8123117821840048, 1.982857723507543]),
    ("mbg_nbd", &[0, 3, 5, 200, 210, 250, 300], 365, [0.08159777708784131, 0.9917272818946342, 2.632435220126803]),
    ("mbg_nbd", &[0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77], 84, [0.5467012648061244, 5.804570677393428, 13.071316456993088]),
    ("pareto_nbd", &[0], 70, [0.01704631077079491, 0.1933391402584744, 0.4754655976788757]),
    ("pareto_nbd", &[0, 14], 100, [0.03302462621179928, 0.3817868767627589, 0.9580851522599293]),
    ("pareto_nbd", &[0, 7, 21, 35, 70], 140, [0.0843268591692884, 0.9929833601271995, 2.5451059805908565]),
    ("pareto_nbd", &[0, 3, 5, 200, 210, 250, 300], 365, [0.0882534687893429, 1.0884192534266492, 2.968943238587154]),
    ("pareto_nbd", &[0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77], 84, [0.4882811473872542, 5.5917225480805, 13.889637933366021]),
];

#[test]
fn backtest_expected_holdout_purchases_agree_with_lifetimes() {
    let horizons = [7 * DAY, 13 * 7 * DAY, 39 * 7 * DAY];
    for (model, days, split, want) in LIFETIMES {
        let mut cfg = rules();
        cfg.model.kind = match *model {
            "bg_nbd" => ModelKind::BgNbd,
            "mbg_nbd" => ModelKind::MbgNbd,
            _ => ModelKind::ParetoNbd,
        };
        // The customer's orders folded as fold folds them, then the forecast at the split.
        let mut c = Customer::with(cfg.clone());
        for d in *days {
            c.order(day(*d as f64), 2_500);
        }
        c.advance(day(*split as f64));
        let f = forecast("c-1", c.state(), day(*split as f64), &horizons, &cfg)
            .expect("a customer with orders");
        assert_eq!(f.x as usize, days.len() - 1);
        for (got, want) in f.expected.iter().zip(want) {
            let err = (got - want).abs();
            assert!(
                err <= 1e-6 * want.abs().max(1.0),
                "{model} {days:?} split {split}: {got} vs lifetimes {want} (|Δ| {err:e})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What-if
// ---------------------------------------------------------------------------------------------

fn order(id: &str, n: usize, t: Millis) -> Event {
    Event {
        event_id: format!("{id}-{n}"),
        customer_id: id.into(),
        occurred_at: t,
        body: Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: format!("{id}-o{n}"),
            amount_minor: 4_000,
            currency: "EUR".into(),
            item_count: 1,
            channel: None,
        }),
    }
}

/// Twelve customers, each ordering every `gap` days from their start, `n` orders, then silent
/// until the end (day 160): different histories, so different risks at the end.
fn events() -> Vec<Event> {
    let mut out = Vec::new();
    for k in 0..12usize {
        let id = format!("c{k:02}");
        let gap = 4 + 3 * (k % 4) as i64;
        let n = 2 + k / 3;
        for i in 0..n {
            out.push(order(&id, i, day((9 * k as i64 + i as i64 * gap) as f64)));
        }
    }
    out.sort_by(|a, b| (a.occurred_at, &a.customer_id).cmp(&(b.occurred_at, &b.customer_id)));
    out
}

const END: f64 = 160.0;

fn replay(events: &[Event], cfg: &ScoringConfig) -> Replayer {
    let mut r = Replayer::new();
    for (i, e) in events.iter().enumerate() {
        let cause = Cause {
            partition: 0,
            offset: i as i64,
        };
        r.feed(cause, Step::Event(e), cfg);
    }
    let cause = Cause {
        partition: 0,
        offset: events.len() as i64,
    };
    r.feed(cause, Step::Tick(day(END)), cfg);
    r
}

#[test]
fn raising_the_at_risk_threshold_moves_exactly_the_customers_between_the_thresholds() {
    // Only the risk thresholds put a customer at risk here: the gap rule is out of the way
    // and no silence reaches churned_days.
    let live = ScoringConfig {
        at_risk_gap_multiple: 1_000.0,
        ..rules()
    };
    let mut candidate = live.clone();
    candidate.at_risk_risk = 0.7;
    candidate.rule_version = "v2-candidate".into();
    live.validate().expect("live config");
    candidate.validate().expect("candidate config");

    let events = events();
    // Independently of the replay: each customer's facts after each order (evolve only), and
    // the churn risk at the end of each silence, where it is highest (between orders the risk
    // only grows with time).
    let mut by_customer: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in &events {
        by_customer.entry(&e.customer_id).or_default().push(e);
    }
    let (mut warned_live, mut warned_candidate) = (BTreeSet::new(), BTreeSet::new());
    let mut movers = BTreeSet::new();
    for (id, es) in &by_customer {
        let mut state = CustomerState::default();
        let mut peak: f64 = 0.0;
        for (i, e) in es.iter().enumerate() {
            evolve(&mut state, e, &live);
            let until = es.get(i + 1).map_or(day(END), |next| next.occurred_at - 1);
            peak = peak.max(evaluate(&state, until, &live).churn_risk);
        }
        let at_end = evaluate(&state, day(END), &live).churn_risk;
        assert!(at_end < live.churned_risk, "{id} would churn: {at_end}");
        if peak >= live.at_risk_risk {
            warned_live.insert(id.to_string());
        }
        if peak >= candidate.at_risk_risk {
            warned_candidate.insert(id.to_string());
        }
        if (live.at_risk_risk..candidate.at_risk_risk).contains(&at_end) {
            movers.insert(id.to_string());
        }
    }
    let dropped: BTreeSet<String> = warned_live.difference(&warned_candidate).cloned().collect();
    // The fixture means something: some customers move, some are at risk under both.
    assert!(!movers.is_empty(), "no customer between the thresholds");
    assert!(!warned_candidate.is_empty(), "no customer above both");
    assert!(
        warned_live.len() < by_customer.len(),
        "every customer warned"
    );

    let (l, c) = (replay(&events, &live), replay(&events, &candidate));
    let (lc, cc) = (l.customers(), c.customers());
    let diff = compare(
        &Run {
            config: &live,
            alerts: &l.alerts,
            customers: &lc,
        },
        &Run {
            config: &candidate,
            alerts: &c.alerts,
            customers: &cc,
        },
    );
    assert_eq!(diff.left_risk, movers.iter().cloned().collect::<Vec<_>>());
    assert!(diff.entered_risk.is_empty());
    assert_eq!(
        diff.warned_only_live,
        dropped.iter().cloned().collect::<Vec<_>>()
    );
    assert!(diff.warned_only_candidate.is_empty());
    // Migration: the movers go from at_risk to what they were before, nobody else moves.
    let at_risk = diff.stages.iter().position(|s| *s == "at_risk").unwrap();
    let moved: usize = (0..diff.stages.len())
        .filter(|j| *j != at_risk)
        .map(|j| diff.migration[at_risk][j])
        .sum();
    assert_eq!(moved, movers.len());
    let off_diagonal: usize = (0..diff.stages.len())
        .flat_map(|i| (0..diff.stages.len()).map(move |j| (i, j)))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| diff.migration[i][j])
        .sum();
    assert_eq!(off_diagonal, movers.len());

    // Alerts: every churn warning of a dropped customer is lost and none is gained; a
    // customer warned under both keeps as many warnings; nobody else has any difference.
    let warnings = |alerts: &[pulse_core::whatif::CausedAlert], id: &str| {
        alerts
            .iter()
            .filter(|a| a.alert.kind == AlertKind::ChurnWarning && a.alert.customer_id == id)
            .count()
    };
    let churn = diff
        .alerts
        .iter()
        .find(|k| k.kind == "churn_warning")
        .unwrap();
    let dropped_warnings: usize = dropped.iter().map(|id| warnings(&l.alerts, id)).sum();
    assert!(dropped_warnings > 0);
    assert_eq!(churn.live - churn.candidate, dropped_warnings);
    for d in &diff.diffs {
        let id = d.customer_id.as_str();
        assert!(
            warned_live.contains(id),
            "{id} differs but was never at risk"
        );
        if dropped.contains(id) {
            let lost = d.lost.iter().filter(|a| a.kind == "churn_warning").count();
            assert_eq!(lost, warnings(&l.alerts, id), "{id}");
            assert!(d.gained.iter().all(|a| a.kind != "churn_warning"), "{id}");
            assert_eq!(warnings(&c.alerts, id), 0, "{id}");
        } else {
            assert_eq!(warnings(&l.alerts, id), warnings(&c.alerts, id), "{id}");
        }
    }
    // Each dropped customer appears with their explanation under both configs.
    for id in &dropped {
        let d = diff
            .diffs
            .iter()
            .find(|d| &d.customer_id == id)
            .expect("a diff");
        let (ls, cs) = (d.live.as_ref().unwrap(), d.candidate.as_ref().unwrap());
        assert_eq!(ls.churn_risk, cs.churn_risk, "same rules but the threshold");
        assert!(!ls.reasons.is_empty() && !cs.reasons.is_empty());
    }
    // Deterministic: the same again.
    let (l2, c2) = (replay(&events, &live), replay(&events, &candidate));
    assert_eq!(l2.alerts, l.alerts);
    assert_eq!(c2.alerts, c.alerts);
}
