//! Backtest metrics: what pulse said at a split instant `T` against what happened after it.
//! Pure: the shell replays the history through a [`crate::Partition`], snapshots every
//! customer at `T` into a [`Forecast`] (with the engine's own [`evaluate`] and
//! [`expected_purchases`], never a second copy of a model), collects the placed orders and
//! the churn warnings of the whole replay, and hands them to [`compute`].
//!
//! # Definitions
//!
//! - **Cohort**: customers with an order at or before `T` (a customer whose first order comes
//!   later has no forecast). `x` is their repeat purchase days at `T`.
//! - **Holdout purchases**: distinct purchase days (UTC days, as the engine counts them) with
//!   a placed order in `(T, T + D]`, after the customer's last purchase day at `T` (an order
//!   later on that same day is not a new purchase day for the engine either). Holdout spend
//!   is the amount of those days' placed orders; cancellations and refunds are not netted.
//! - **Tracking curve** (Fader, Hardie & Lee 2005): at the end of every week of the horizon
//!   (the last point is `T + D`), cumulative expected repeat purchases of the cohort (the sum
//!   of each customer's `E[X(T, T + t) | x, t_x, T]`) against the cumulative actual ones.
//! - **Conditional expectations**: mean expected and actual holdout purchases by `x` at `T`
//!   (0, 1, …, 6, 7+).
//! - **P(alive) calibration**: 10 equal-width bins of P(alive) at `T` against the share of
//!   the bin that **bought in the holdout**, and the Brier score against that outcome. Alive
//!   is not observable; buying is the observable proxy, and it is biased low: an alive
//!   customer may still not buy within `D`, so even a well calibrated P(alive) has its points
//!   (P(alive), share that bought) below the diagonal, the more so the shorter `D` is against
//!   the usual gap between orders.
//! - **Churn warnings** (the replay's `churn_warning` alerts, and the baseline rule "no order
//!   for N days" with N the median over the cohort of the engine's mean gap between purchase
//!   days at `T`, which warns once per silence at the instant it reaches N):
//!   - *precision*: of the warnings issued at `w ∈ [T, E − D]` (`E` the end of the input, so
//!     that the `D` after each warning is fully observed; later warnings are counted as
//!     unobserved and left out), the share after which the customer placed no order in
//!     `(w, w + D]`;
//!   - *lapse*: an order at `o` followed by no order in `(o, o + D]`; it is complete at
//!     `L = o + D`. Lapses with `T < L ≤ E` are the positives (the customer was active, then
//!     went `D` without buying, and that became true after the split);
//!   - *recall*: the share of lapses with a warning at `w ∈ (o, L)`, strictly before the
//!     silence reached `D` (a warning at `L` itself or after tells nothing new);
//!   - *lead time*: for each caught lapse, `L − w` of the earliest such warning: how long
//!     before the silence reached `D` the warning came. The median is reported, in days.
//!     Warnings before `T` may catch a lapse (the replay runs the same rules throughout).
//! - **CLV deciles**: customers with a CLV at `T` sorted by it (ties by id), cut into ten
//!   groups of equal size (decile 1 lowest); per decile the mean predicted CLV (discounted,
//!   over `[scoring.clv] horizon_days`), the mean predicted holdout spend (expected holdout
//!   purchase days × Gamma-Gamma expected spend per purchase day, undiscounted, over `D`: the
//!   comparable figure) and the mean realised holdout spend.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::ScoringConfig;
use crate::engine::{evaluate, expected_purchases};
use crate::event::{day_of, Millis, DAY};
use crate::state::{CustomerState, Stage};

/// What pulse said about one customer at the split.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub customer_id: String,
    /// Repeat purchase days at `T`.
    pub x: u32,
    pub p_alive: Option<f64>,
    pub stage: Stage,
    pub churn_risk: f64,
    /// Discounted CLV over the configured CLV horizon, minor units.
    pub clv_minor: Option<f64>,
    /// Gamma-Gamma expected spend per purchase day, minor units.
    pub expected_spend_minor: Option<f64>,
    /// Mean time between purchase days (two or more of them), as the engine measures it.
    pub mean_gap: Option<Millis>,
    /// The customer's last purchase day at `T` (a day number, see [`day_of`]).
    pub last_purchase_day: i64,
    /// Cumulative expected purchase days in `(T, T + c]` for each checkpoint `c` of
    /// [`checkpoints`].
    pub expected: Vec<f64>,
}

/// The horizons the tracking curve is drawn at: the end of every week of `horizon`, the last
/// being `horizon` itself (a part week if it is not a whole number of weeks).
pub fn checkpoints(horizon: Millis) -> Vec<Millis> {
    let week = 7 * DAY;
    let mut out: Vec<Millis> = (1..)
        .map(|k| k * week)
        .take_while(|c| *c < horizon)
        .collect();
    out.push(horizon);
    out
}

/// The forecast of a customer at `at` (the split), `None` for one without an order.
pub fn forecast(
    customer_id: &str,
    state: &CustomerState,
    at: Millis,
    checkpoints: &[Millis],
    cfg: &ScoringConfig,
) -> Option<Forecast> {
    let purchases = expected_purchases(state, at, checkpoints, cfg)?;
    let last = state.orders.last_at?;
    let eval = evaluate(state, at, cfg);
    Some(Forecast {
        customer_id: customer_id.to_string(),
        x: purchases.x as u32,
        p_alive: eval.p_alive,
        stage: eval.stage,
        churn_risk: eval.churn_risk,
        clv_minor: eval.clv.map(|c| c.clv_minor),
        expected_spend_minor: eval.clv.map(|c| c.expected_spend_minor),
        mean_gap: eval
            .mean_gap_days
            .map(|d| (d * DAY as f64).round() as Millis),
        last_purchase_day: day_of(last),
        expected: purchases.expected,
    })
}

/// A placed order: when, and its amount in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlacedOrder {
    pub at: Millis,
    pub amount_minor: i64,
}

/// Everything [`compute`] needs.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub split: Millis,
    pub horizon: Millis,
    /// The end of the input: the replay's last clock.
    pub end: Millis,
    /// One per cohort customer, each with `expected.len() == checkpoints(horizon).len()`.
    pub forecasts: Vec<Forecast>,
    /// Every customer's placed orders over the whole input (any order).
    pub orders: BTreeMap<String, Vec<PlacedOrder>>,
    /// The replay's churn warnings: (customer, instant).
    pub warnings: Vec<(String, Millis)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub split: Millis,
    pub horizon_days: f64,
    pub end: Millis,
    pub summary: Summary,
    pub tracking: Vec<TrackingPoint>,
    pub by_x: Vec<ByX>,
    pub calibration: Calibration,
    pub warnings: WarningComparison,
    pub clv_deciles: Vec<Decile>,
    pub customers: Vec<CustomerRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub customers: usize,
    pub expected_purchases: f64,
    pub actual_purchases: u64,
    /// Mean over customers of |expected − actual| holdout purchases.
    pub mean_absolute_error: f64,
    pub rmse: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackingPoint {
    /// Days after the split.
    pub day: f64,
    pub expected_cumulative: f64,
    pub actual_cumulative: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByX {
    /// "0" … "6", "7+".
    pub x: String,
    pub customers: usize,
    pub mean_expected: f64,
    pub mean_actual: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// What the predictions are scored against.
    pub outcome: &'static str,
    pub customers: usize,
    pub brier: f64,
    pub bins: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationBin {
    pub from: f64,
    pub to: f64,
    pub customers: usize,
    pub mean_p_alive: f64,
    pub bought_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarningComparison {
    /// The baseline's N, in days.
    pub baseline_days: f64,
    pub model: WarningMetrics,
    pub baseline: WarningMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarningMetrics {
    /// Warnings issued in `[T, E − D]`.
    pub warnings: usize,
    /// Those followed by no order within `D`.
    pub true_warnings: usize,
    /// Warnings at or after `T` whose `D` reaches past the input: not scored.
    pub unobserved_warnings: usize,
    pub precision: f64,
    pub lapses: usize,
    pub caught: usize,
    pub recall: f64,
    /// Median over caught lapses of (silence reached `D`) − (earliest warning), days.
    pub median_lead_days: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decile {
    /// 1 = lowest predicted CLV.
    pub decile: usize,
    pub customers: usize,
    pub mean_predicted_clv: f64,
    pub mean_predicted_spend: f64,
    pub mean_realised_spend: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerRow {
    pub customer_id: String,
    pub x: u32,
    pub stage: &'static str,
    pub p_alive: Option<f64>,
    pub churn_risk: f64,
    pub expected: f64,
    pub actual: u32,
    pub clv_minor: Option<f64>,
    pub predicted_spend_minor: Option<f64>,
    pub realised_spend_minor: i64,
}

/// Computes every metric of the module docs.
pub fn compute(input: &Input) -> Report {
    let (t, d) = (input.split, input.horizon);
    let cps = checkpoints(d);
    let none = Vec::new();
    let mut tracking_expected = vec![0.0; cps.len()];
    let mut tracking_actual = vec![0u64; cps.len()];
    let mut rows = Vec::with_capacity(input.forecasts.len());
    for f in &input.forecasts {
        assert_eq!(
            f.expected.len(),
            cps.len(),
            "one expectation per checkpoint"
        );
        let orders = input.orders.get(&f.customer_id).unwrap_or(&none);
        let (days, spend) = holdout(orders, f.last_purchase_day, t, d);
        for (k, c) in cps.iter().enumerate() {
            tracking_expected[k] += f.expected[k];
            tracking_actual[k] += days.iter().filter(|at| **at <= t + c).count() as u64;
        }
        let expected = *f.expected.last().expect("at least one checkpoint");
        rows.push(CustomerRow {
            customer_id: f.customer_id.clone(),
            x: f.x,
            stage: f.stage.as_str(),
            p_alive: f.p_alive,
            churn_risk: f.churn_risk,
            expected,
            actual: days.len() as u32,
            clv_minor: f.clv_minor,
            predicted_spend_minor: f.expected_spend_minor.map(|s| s * expected),
            realised_spend_minor: spend,
        });
    }
    let n = rows.len();
    let errors: Vec<f64> = rows
        .iter()
        .map(|r| r.expected - f64::from(r.actual))
        .collect();
    let summary = Summary {
        customers: n,
        expected_purchases: rows.iter().map(|r| r.expected).sum(),
        actual_purchases: rows.iter().map(|r| u64::from(r.actual)).sum(),
        mean_absolute_error: mean(errors.iter().map(|e| e.abs())),
        rmse: mean(errors.iter().map(|e| e * e)).sqrt(),
    };
    let tracking = cps
        .iter()
        .zip(tracking_expected.iter().zip(&tracking_actual))
        .map(|(c, (e, a))| TrackingPoint {
            day: *c as f64 / DAY as f64,
            expected_cumulative: *e,
            actual_cumulative: *a,
        })
        .collect();
    let baseline_n = median_millis(input.forecasts.iter().filter_map(|f| f.mean_gap));
    let mut baseline_warnings = Vec::new();
    if let Some(n) = baseline_n {
        for (id, orders) in &input.orders {
            for w in silence_warnings(orders, n, input.end) {
                baseline_warnings.push((id.clone(), w));
            }
        }
    }
    Report {
        split: t,
        horizon_days: d as f64 / DAY as f64,
        end: input.end,
        summary,
        tracking,
        by_x: by_x(&rows),
        calibration: calibration(&rows),
        warnings: WarningComparison {
            baseline_days: baseline_n.map_or(f64::NAN, |n| n as f64 / DAY as f64),
            model: warning_metrics(&input.warnings, &input.orders, t, d, input.end),
            baseline: warning_metrics(&baseline_warnings, &input.orders, t, d, input.end),
        },
        clv_deciles: deciles(&rows),
        customers: rows,
    }
}

/// The holdout purchase days' first instants and their spend (see the module docs).
fn holdout(orders: &[PlacedOrder], last_day: i64, t: Millis, d: Millis) -> (Vec<Millis>, i64) {
    let mut firsts: BTreeMap<i64, Millis> = BTreeMap::new();
    let mut spend = 0i64;
    for o in orders.iter().filter(|o| o.at > t && o.at <= t + d) {
        let day = day_of(o.at);
        if day > last_day {
            let first = firsts.entry(day).or_insert(o.at);
            *first = (*first).min(o.at);
            spend = spend.saturating_add(o.amount_minor);
        }
    }
    (firsts.into_values().collect(), spend)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The lower median (an element, so a whole number of milliseconds); `None` when empty.
fn median_millis(values: impl Iterator<Item = Millis>) -> Option<Millis> {
    let mut v: Vec<Millis> = values.collect();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[(v.len() - 1) / 2])
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The baseline rule: one warning per silence, at the instant it reaches `n` (if that is not
/// after `end`), unless an order comes first.
pub fn silence_warnings(orders: &[PlacedOrder], n: Millis, end: Millis) -> Vec<Millis> {
    let mut out = Vec::new();
    for (i, o) in orders.iter().enumerate() {
        let due = o.at + n;
        let next = orders[i + 1..].iter().map(|p| p.at).find(|at| *at > o.at);
        // Orders at the same instant are one silence; the last of them speaks for it.
        if orders.get(i + 1).is_some_and(|p| p.at == o.at) {
            continue;
        }
        if next.is_none_or(|at| at > due) && due <= end {
            out.push(due);
        }
    }
    out
}

fn warning_metrics(
    warnings: &[(String, Millis)],
    orders: &BTreeMap<String, Vec<PlacedOrder>>,
    t: Millis,
    d: Millis,
    end: Millis,
) -> WarningMetrics {
    let none = Vec::new();
    let mut by_customer: BTreeMap<&str, Vec<Millis>> = BTreeMap::new();
    let (mut scored, mut true_warnings, mut unobserved) = (0, 0, 0);
    for (id, w) in warnings {
        by_customer.entry(id.as_str()).or_default().push(*w);
        if *w < t {
            continue;
        }
        if *w + d > end {
            unobserved += 1;
            continue;
        }
        scored += 1;
        let os = orders.get(id).unwrap_or(&none);
        if !os.iter().any(|o| o.at > *w && o.at <= *w + d) {
            true_warnings += 1;
        }
    }
    let (mut lapses, mut leads) = (0, Vec::new());
    for (id, os) in orders {
        let ws = by_customer.get(id.as_str());
        for (i, o) in os.iter().enumerate() {
            let lapse = o.at + d;
            // Orders at the same instant start one silence.
            if os.get(i + 1).is_some_and(|p| p.at == o.at) {
                continue;
            }
            let bought = os[i + 1..].iter().any(|p| p.at > o.at && p.at <= lapse);
            if bought || lapse <= t || lapse > end {
                continue;
            }
            lapses += 1;
            let first = ws.and_then(|ws| ws.iter().filter(|w| **w > o.at && **w < lapse).min());
            if let Some(w) = first {
                leads.push((lapse - w) as f64 / DAY as f64);
            }
        }
    }
    WarningMetrics {
        warnings: scored,
        true_warnings,
        unobserved_warnings: unobserved,
        precision: ratio(true_warnings, scored),
        lapses,
        caught: leads.len(),
        recall: ratio(leads.len(), lapses),
        median_lead_days: median(leads),
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

fn by_x(rows: &[CustomerRow]) -> Vec<ByX> {
    (0..=7u32)
        .map(|x| {
            let group: Vec<&CustomerRow> = rows
                .iter()
                .filter(|r| if x == 7 { r.x >= 7 } else { r.x == x })
                .collect();
            ByX {
                x: if x == 7 { "7+".into() } else { x.to_string() },
                customers: group.len(),
                mean_expected: mean(group.iter().map(|r| r.expected)),
                mean_actual: mean(group.iter().map(|r| f64::from(r.actual))),
            }
        })
        .collect()
}

fn calibration(rows: &[CustomerRow]) -> Calibration {
    let scored: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.p_alive?, f64::from(u8::from(r.actual > 0)))))
        .collect();
    let bins = (0..10)
        .map(|k| {
            let (from, to) = (k as f64 / 10.0, (k + 1) as f64 / 10.0);
            let inside: Vec<&(f64, f64)> = scored
                .iter()
                .filter(|(p, _)| ((p * 10.0).floor() as usize).min(9) == k)
                .collect();
            CalibrationBin {
                from,
                to,
                customers: inside.len(),
                mean_p_alive: mean(inside.iter().map(|(p, _)| *p)),
                bought_share: mean(inside.iter().map(|(_, y)| *y)),
            }
        })
        .collect();
    Calibration {
        outcome: "bought in the holdout (the observable proxy for alive)",
        customers: scored.len(),
        brier: mean(scored.iter().map(|(p, y)| (p - y) * (p - y))),
        bins,
    }
}

fn deciles(rows: &[CustomerRow]) -> Vec<Decile> {
    let mut valued: Vec<(&CustomerRow, f64)> = rows
        .iter()
        .filter_map(|r| Some((r, r.clv_minor.filter(|c| c.is_finite())?)))
        .collect();
    valued.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then(a.0.customer_id.cmp(&b.0.customer_id))
    });
    let n = valued.len();
    if n == 0 {
        return Vec::new();
    }
    (0..10)
        .map(|k| {
            let group = &valued[k * n / 10..(k + 1) * n / 10];
            Decile {
                decile: k + 1,
                customers: group.len(),
                mean_predicted_clv: mean(group.iter().map(|(_, c)| *c)),
                mean_predicted_spend: mean(
                    group
                        .iter()
                        .map(|(r, _)| r.predicted_spend_minor.unwrap_or(f64::NAN)),
                ),
                mean_realised_spend: mean(group.iter().map(|(r, _)| r.realised_spend_minor as f64)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_000 * DAY;

    fn orders(days: &[f64]) -> Vec<PlacedOrder> {
        days.iter()
            .map(|d| PlacedOrder {
                at: T + (d * DAY as f64) as Millis,
                amount_minor: 1_000,
            })
            .collect()
    }

    fn at(d: f64) -> Millis {
        T + (d * DAY as f64) as Millis
    }

    #[test]
    fn checkpoints_are_week_ends_then_the_horizon() {
        assert_eq!(checkpoints(14 * DAY), vec![7 * DAY, 14 * DAY]);
        assert_eq!(checkpoints(10 * DAY), vec![7 * DAY, 10 * DAY]);
        assert_eq!(checkpoints(3 * DAY), vec![3 * DAY]);
    }

    #[test]
    fn warnings_precision_recall_and_lead_by_hand() {
        // D = 30 days; the input ends at day 100 after T, so warnings in [T, T+70] are scored.
        let d = 30 * DAY;
        let end = at(100.0);
        let mut os = BTreeMap::new();
        // a: orders at -10 and 50. Lapse -10 → 20 (in (T, E]); lapse 50 → 80.
        os.insert("a".to_string(), orders(&[-10.0, 50.0]));
        // b: orders at 0, 10, 20, 30, ..., 90: never lapses (gaps 10 < 30).
        os.insert(
            "b".to_string(),
            orders(&(0..10).map(|k| k as f64 * 10.0).collect::<Vec<_>>()),
        );
        // c: one order at -40: its lapse completed at -10, before T: not a positive.
        os.insert("c".to_string(), orders(&[-40.0]));
        let warnings = vec![
            // a warned at 5: no order in (5, 35]: true; catches lapse (-10 → 20), lead 15.
            ("a".to_string(), at(5.0)),
            // b warned at 12: b bought at 20: false.
            ("b".to_string(), at(12.0)),
            // a warned at 60: no order in (60, 90]: true; catches lapse (50 → 80), lead 20.
            ("a".to_string(), at(60.0)),
            // c warned at 75: window (75, 105] passes E: unobserved.
            ("c".to_string(), at(75.0)),
            // before T: not scored for precision.
            ("c".to_string(), at(-20.0)),
        ];
        let m = warning_metrics(&warnings, &os, T, d, end);
        assert_eq!(
            (m.warnings, m.true_warnings, m.unobserved_warnings),
            (3, 2, 1)
        );
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        // Lapses with T < L ≤ E: a's two (20, 80) and b's last (90 → 120) is past E: 2.
        assert_eq!((m.lapses, m.caught), (2, 2));
        assert_eq!(m.recall, 1.0);
        assert_eq!(m.median_lead_days, 17.5);

        // A warning at the lapse instant itself does not catch it.
        let late = vec![("a".to_string(), at(20.0))];
        let m = warning_metrics(&late, &os, T, d, end);
        assert_eq!((m.lapses, m.caught), (2, 0));
        assert_eq!(m.recall, 0.0);
        assert!(m.median_lead_days.is_nan());
        // And a false one: a bought at 50, within (20, 50].
        assert_eq!((m.warnings, m.true_warnings), (1, 0));
    }

    #[test]
    fn silence_rule_warns_once_per_silence() {
        let os = orders(&[0.0, 5.0, 5.0, 40.0]);
        // N = 20: after 5 (next at 40 > 25) warns at 25; after 40 at 60; after 0 nothing.
        assert_eq!(
            silence_warnings(&os, 20 * DAY, at(100.0)),
            vec![at(25.0), at(60.0)]
        );
        // Not past the end of the input.
        assert_eq!(silence_warnings(&os, 20 * DAY, at(59.0)), vec![at(25.0)]);
    }

    fn forecast_of(id: &str, x: u32, p: f64, clv: f64, expected: f64) -> Forecast {
        Forecast {
            customer_id: id.into(),
            x,
            p_alive: Some(p),
            stage: Stage::Active,
            churn_risk: 0.0,
            clv_minor: Some(clv),
            expected_spend_minor: Some(500.0),
            mean_gap: Some(10 * DAY),
            last_purchase_day: day_of(T) - 1,
            expected: vec![expected / 2.0, expected],
        }
    }

    #[test]
    fn calibration_brier_tracking_and_deciles_by_hand() {
        let d = 14 * DAY;
        let mut os = BTreeMap::new();
        // a: buys twice in the holdout (days 1 and 10) plus once on day 1 again (same day).
        os.insert("a".to_string(), orders(&[1.0, 1.5, 10.0]));
        // b: buys on day 20, after the horizon.
        os.insert("b".to_string(), orders(&[20.0]));
        // c: buys before T only.
        os.insert("c".to_string(), orders(&[-3.0]));
        let input = Input {
            split: T,
            horizon: d,
            end: at(30.0),
            forecasts: vec![
                forecast_of("a", 3, 0.95, 300.0, 1.5),
                forecast_of("b", 0, 0.25, 100.0, 0.2),
                forecast_of("c", 9, 0.05, 200.0, 0.1),
            ],
            orders: os,
            warnings: vec![],
        };
        let r = compute(&input);
        let actual: Vec<u32> = r.customers.iter().map(|c| c.actual).collect();
        assert_eq!(actual, vec![2, 0, 0]);
        // a's days 1 and 1.5 are the same UTC day (T is midnight): one purchase day.
        assert_eq!(r.customers[0].realised_spend_minor, 3_000);
        // Brier: (0.95-1)² + 0.25² + 0.05² over 3.
        let brier = (0.0025 + 0.0625 + 0.0025) / 3.0;
        assert!((r.calibration.brier - brier).abs() < 1e-12);
        assert_eq!(r.calibration.bins[9].customers, 1);
        assert_eq!(r.calibration.bins[9].bought_share, 1.0);
        assert_eq!(r.calibration.bins[2].customers, 1);
        assert_eq!(r.calibration.bins[2].bought_share, 0.0);
        assert_eq!(r.calibration.bins[0].customers, 1);
        assert_eq!(r.calibration.bins[5].customers, 0);
        // Tracking: week 1 (day 1 counted), week 2 (day 10 too).
        assert_eq!(r.tracking.len(), 2);
        assert_eq!(r.tracking[0].actual_cumulative, 1);
        assert_eq!(r.tracking[1].actual_cumulative, 2);
        assert!((r.tracking[1].expected_cumulative - 1.8).abs() < 1e-12);
        assert!((r.tracking[0].expected_cumulative - 0.9).abs() < 1e-12);
        // By x: x = 3 has a alone, 7+ has c.
        assert_eq!(r.by_x[3].customers, 1);
        assert_eq!(r.by_x[3].mean_actual, 2.0);
        assert_eq!(r.by_x[7].x, "7+");
        assert_eq!(r.by_x[7].customers, 1);
        // Summary errors: |1.5-2|, 0.2, 0.1.
        assert!((r.summary.mean_absolute_error - 0.8 / 3.0).abs() < 1e-12);
        // Deciles of three customers: groups [0..0), [0..0), [0..1) …: every customer once.
        assert_eq!(r.clv_deciles.iter().map(|d| d.customers).sum::<usize>(), 3);
        let top = r.clv_deciles.last().unwrap();
        assert_eq!(top.customers, 1);
        assert_eq!(top.mean_predicted_clv, 300.0);
        assert_eq!(top.mean_realised_spend, 3_000.0);
        assert_eq!(top.mean_predicted_spend, 750.0);
        // The baseline's N is the median mean gap: 10 days.
        assert_eq!(r.warnings.baseline_days, 10.0);
    }

    #[test]
    fn deciles_split_twenty_customers_two_by_two_in_clv_order() {
        let forecasts: Vec<Forecast> = (0..20)
            .map(|k| forecast_of(&format!("c{k:02}"), 1, 0.5, (20 - k) as f64, 0.1))
            .collect();
        let mut os = BTreeMap::new();
        // Only the highest-CLV customer (c00) spends in the holdout.
        os.insert("c00".to_string(), orders(&[2.0]));
        let r = compute(&Input {
            split: T,
            horizon: 14 * DAY,
            end: at(30.0),
            forecasts,
            orders: os,
            warnings: vec![],
        });
        assert_eq!(r.clv_deciles.len(), 10);
        assert!(r.clv_deciles.iter().all(|d| d.customers == 2));
        assert_eq!(r.clv_deciles[0].mean_predicted_clv, 1.5);
        assert_eq!(r.clv_deciles[9].mean_predicted_clv, 19.5);
        assert_eq!(r.clv_deciles[9].mean_realised_spend, 500.0);
        assert!(r.clv_deciles[..9]
            .iter()
            .all(|d| d.mean_realised_spend == 0.0));
    }
}
