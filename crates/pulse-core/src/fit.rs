//! Fitting the rules to a history: maximum-likelihood BG/NBD, MBG/NBD and Pareto/NBD on the
//! customers' [`Summary`]s, Gamma-Gamma on the repeat customers, RFM cut points from the
//! population's quintiles and value-tier thresholds from the fitted CLV distribution. Pure
//! math: the shell computes the summaries (with [`crate::engine::summary`], the engine's own
//! history) and writes the result.
//!
//! # Method
//!
//! * Log-likelihoods are the published ones, in the same algebraic form as the `lifetimes`
//!   package (Fader, Hardie & Lee 2005 for BG/NBD; Batislam et al. 2007 for MBG/NBD; the
//!   Fader & Hardie 2005 note for Pareto/NBD's `A0`; Fader, Hardie & Lee 2005 "RFM and CLV"
//!   for Gamma-Gamma), summed over customers.
//! * Customers with identical `(x, t_x, T)` (or `(x, m)` for Gamma-Gamma) are one weighted
//!   row, and rows are sorted by `x` so that the `ln Γ` terms, which depend on `x` only, are
//!   computed once per distinct `x`.
//! * Parameters are optimised on their logarithms (so they stay positive) by Nelder–Mead from
//!   several fixed starts on a subsample of the rows (every k-th row, weights kept; all rows
//!   when they are few), loosely, then tightly from the best of them, restarted until a
//!   restart no longer improves; then Newton steps on all rows with a central-difference
//!   Hessian take it to the optimum (a few steps of a fixed number of evaluations each, where
//!   Nelder–Mead on a million rows would take hundreds). The same Hessian, times the customer
//!   count, gives the standard errors (inverse observed information in log-parameters, mapped
//!   to the natural parameters by the delta method: `se(θ) = θ · se(ln θ)`).
//! * RFM cut points are nearest-rank quintiles (the value at rank `⌈p n⌉`) at `p` = 0.2, 0.4,
//!   0.6, 0.8 of the customers with an order, made strictly ascending (each cut at least one
//!   above the previous one) because the engine's scores need 4 distinct cuts. A customer at
//!   a quintile belongs to the group below it: recency scores 5 at or below its first cut, so
//!   its cuts are the quintiles; frequency and monetary score 1 *below* their first cut, so
//!   theirs are the quintiles plus one (with the quintiles themselves, where most customers
//!   ordered once the 20 % quintile is 1 and frequency score 1 would go to nobody).
//! * Value tiers: every customer's CLV at `T` by the engine's own CLV code under the fitted
//!   parameters (the best model by BIC); `high_from` is the CLV above which the top
//!   `high_share` of customers lie, `mid_from` the one above which the top
//!   `high_share + mid_share` lie.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{ModelKind, ScoringConfig, TimeUnit, ValueTierConfig};
use crate::engine::{clv_of, Summary};
use crate::models::{ln_gamma, ln_hyp2f1, BgNbd, GammaGamma, MbgNbd, ParetoNbd};

/// How to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Nelder–Mead starts per model (at most [`MAX_STARTS`]).
    pub starts: usize,
    /// The starts run on at most this many distinct rows (a systematic subsample); the best
    /// start is then refined on all rows.
    pub start_sample_rows: usize,
    /// Objective evaluations allowed per Nelder–Mead run.
    pub max_evaluations: usize,
    /// Share of customers in the high value tier ...
    pub high_share: f64,
    /// ... and in the mid tier (the rest are low).
    pub mid_share: f64,
    /// The rules the summaries were computed with: their time unit is the summaries' unit, and
    /// their CLV schedule values the customers for the tiers.
    pub scoring: ScoringConfig,
}

/// At most this many starts (the fixed start points).
pub const MAX_STARTS: usize = 6;

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            starts: 4,
            start_sample_rows: 5_000,
            max_evaluations: 20_000,
            high_share: 0.2,
            mid_share: 0.3,
            scoring: ScoringConfig::default(),
        }
    }
}

/// A fit that cannot be made, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError(pub String);

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FitError {}

/// How the optimiser ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Convergence {
    /// Nelder–Mead starts run (on the subsample).
    pub starts: usize,
    /// Starts that ended within 1e-6 (relative) of the best start's log-likelihood.
    pub starts_at_best: usize,
    /// Nelder–Mead iterations from the best start (over its restarts) plus Newton steps.
    pub iterations: usize,
    /// Objective evaluations, all phases.
    pub evaluations: usize,
    /// The Newton steps on all rows ended at the optimum (the last step below 1e-6 in every
    /// log-parameter, or a gradient at rounding level) and the Hessian there is positive
    /// definite (a strict local maximum).
    pub converged: bool,
    /// Euclidean norm of the gradient of the total log-likelihood with respect to the
    /// log-parameters at the optimum (central differences).
    pub gradient_norm: f64,
    /// The last Nelder–Mead simplex's size (largest vertex distance, log-parameters), on
    /// the start sample.
    pub simplex_size: f64,
}

/// One model's maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelFit {
    /// `bg_nbd`, `mbg_nbd`, `pareto_nbd` or `gamma_gamma`.
    pub model: &'static str,
    /// `(name, value)` in the model's parameter order (natural scale).
    pub params: Vec<(&'static str, f64)>,
    /// Standard errors in the same order; `None` where the Hessian is not positive definite.
    pub std_errors: Vec<Option<f64>>,
    pub log_likelihood: f64,
    pub aic: f64,
    pub bic: f64,
    /// Customers the likelihood sums over.
    pub customers: u64,
    pub convergence: Convergence,
}

impl ModelFit {
    /// The parameter named `name`.
    pub fn param(&self, name: &str) -> f64 {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

/// Everything a fit found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitReport {
    /// Customers with at least one order.
    pub customers: u64,
    /// Distinct `(x, t_x, T)` rows the transaction models were fitted on.
    pub distinct_summaries: usize,
    pub time_unit: TimeUnit,
    pub bg_nbd: ModelFit,
    pub mbg_nbd: ModelFit,
    pub pareto_nbd: ModelFit,
    /// `None` when there is no repeat customer with a positive mean repeat value.
    pub gamma_gamma: Option<ModelFit>,
    /// Repeat customers left out of Gamma-Gamma because their mean repeat value is 0
    /// (refunded or free repeat orders): its likelihood needs `m > 0`.
    pub gamma_gamma_excluded: u64,
    /// The transaction model with the lowest BIC.
    pub best: ModelKind,
    pub recency_cuts_days: [i64; 4],
    pub frequency_cuts: [u32; 4],
    pub monetary_cuts_minor: [i64; 4],
    pub value_tier: ValueTierConfig,
    /// The tier shares asked for.
    pub high_share: f64,
    pub mid_share: f64,
}

impl FitReport {
    /// The fit of a transaction model.
    pub fn model(&self, kind: ModelKind) -> &ModelFit {
        match kind {
            ModelKind::BgNbd => &self.bg_nbd,
            ModelKind::MbgNbd => &self.mbg_nbd,
            ModelKind::ParetoNbd => &self.pareto_nbd,
        }
    }

    /// `base` with the fitted values: all three transaction models' parameters and the best
    /// one as `model.kind`, the time unit, Gamma-Gamma (kept from `base` when it could not be
    /// fitted), the RFM cuts and the value tiers. `rule_version` becomes
    /// `<base's>-fit` (every alert names the rules that made it; the CLI names the calibration
    /// end instead).
    pub fn apply(&self, base: &ScoringConfig) -> ScoringConfig {
        let mut cfg = base.clone();
        cfg.rule_version = format!("{}-fit", base.rule_version);
        let m = &mut cfg.model;
        m.kind = self.best;
        m.time_unit = self.time_unit;
        let f = &self.bg_nbd;
        m.bg_nbd = BgNbd {
            r: f.param("r"),
            alpha: f.param("alpha"),
            a: f.param("a"),
            b: f.param("b"),
        };
        let f = &self.mbg_nbd;
        m.mbg_nbd = MbgNbd {
            r: f.param("r"),
            alpha: f.param("alpha"),
            a: f.param("a"),
            b: f.param("b"),
        };
        let f = &self.pareto_nbd;
        m.pareto_nbd = ParetoNbd {
            r: f.param("r"),
            alpha: f.param("alpha"),
            s: f.param("s"),
            beta: f.param("beta"),
        };
        if let Some(g) = &self.gamma_gamma {
            cfg.gamma_gamma = GammaGamma {
                p: g.param("p"),
                q: g.param("q"),
                v: g.param("v"),
            };
        }
        cfg.recency_cuts_days = self.recency_cuts_days;
        cfg.frequency_cuts = self.frequency_cuts;
        cfg.monetary_cuts_minor = self.monetary_cuts_minor;
        cfg.value_tier = self.value_tier;
        cfg
    }
}

// ---------------------------------------------------------------------------------------------
// Data: weighted rows, sorted by x, with their groups of equal x
// ---------------------------------------------------------------------------------------------

/// Transaction-model rows: `(x, t_x, T)` with a weight, sorted by `x`; `groups` are the
/// `[start, end)` ranges of equal `x`.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    x: Vec<f64>,
    t_x: Vec<f64>,
    age: Vec<f64>,
    w: Vec<f64>,
    groups: Vec<(usize, usize)>,
}

impl Rows {
    /// Aggregates customers with identical `(x, t_x, T)`.
    pub fn of(summaries: &[Summary]) -> Rows {
        let mut keys: Vec<(f64, f64, f64)> =
            summaries.iter().map(|s| (s.x, s.t_x, s.age)).collect();
        keys.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let mut rows = Rows::default();
        for k in keys {
            let n = rows.x.len();
            if n > 0 && (rows.x[n - 1], rows.t_x[n - 1], rows.age[n - 1]) == k {
                rows.w[n - 1] += 1.0;
            } else {
                rows.x.push(k.0);
                rows.t_x.push(k.1);
                rows.age.push(k.2);
                rows.w.push(1.0);
            }
        }
        rows.group();
        rows
    }

    fn group(&mut self) {
        self.groups.clear();
        let mut start = 0;
        for i in 1..=self.x.len() {
            if i == self.x.len() || self.x[i] != self.x[start] {
                self.groups.push((start, i));
                start = i;
            }
        }
    }

    /// Distinct rows.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    fn customers(&self) -> f64 {
        self.w.iter().sum()
    }

    /// Every k-th row (weights kept), at most about `max` rows; the rows themselves when fewer.
    fn sample(&self, max: usize) -> Rows {
        if self.len() <= max.max(1) {
            return self.clone();
        }
        let k = self.len().div_ceil(max.max(1));
        let mut out = Rows::default();
        for i in (0..self.len()).step_by(k) {
            out.x.push(self.x[i]);
            out.t_x.push(self.t_x[i]);
            out.age.push(self.age[i]);
            out.w.push(self.w[i]);
        }
        out.group();
        out
    }
}

/// `ln(e^a + e^b)` without overflow.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The transaction models the fit knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bg,
    Mbg,
    Pareto,
}

impl Kind {
    fn names(self) -> [&'static str; 4] {
        match self {
            Kind::Bg | Kind::Mbg => ["r", "alpha", "a", "b"],
            Kind::Pareto => ["r", "alpha", "s", "beta"],
        }
    }
    fn id(self) -> &'static str {
        match self {
            Kind::Bg => "bg_nbd",
            Kind::Mbg => "mbg_nbd",
            Kind::Pareto => "pareto_nbd",
        }
    }
}

/// BG/NBD log-likelihood of `rows` (FHL 2005, eq. 6; as `lifetimes.BetaGeoFitter`).
pub fn bg_nbd_log_likelihood(m: &BgNbd, rows: &Rows) -> f64 {
    let (r, alpha, a, b) = (m.r, m.alpha, m.a, m.b);
    let (ln_a, ln_alpha) = (a.ln(), alpha.ln());
    let fixed = -ln_gamma(r) + r * ln_alpha + ln_gamma(a + b) - ln_gamma(b);
    let mut total = 0.0;
    for &(s, e) in &rows.groups {
        let x = rows.x[s];
        let c = fixed + ln_gamma(r + x) + ln_gamma(b + x) - ln_gamma(a + b + x);
        let d = ln_a - (b + x - 1.0).ln();
        let mut sum = 0.0;
        for i in s..e {
            let a3 = -(r + x) * (alpha + rows.age[i]).ln();
            let ll = if x > 0.0 {
                log_add_exp(a3, d - (r + x) * (alpha + rows.t_x[i]).ln())
            } else {
                a3
            };
            sum += rows.w[i] * ll;
        }
        total += sum + c * rows.w[s..e].iter().sum::<f64>();
    }
    total
}

/// MBG/NBD log-likelihood of `rows` (Batislam et al. 2007; as
/// `lifetimes.ModifiedBetaGeoFitter`).
pub fn mbg_nbd_log_likelihood(m: &MbgNbd, rows: &Rows) -> f64 {
    let (r, alpha, a, b) = (m.r, m.alpha, m.a, m.b);
    let (ln_a, ln_alpha) = (a.ln(), alpha.ln());
    let fixed = -ln_gamma(r) + r * ln_alpha + ln_gamma(a + b) - ln_gamma(b);
    let mut total = 0.0;
    for &(s, e) in &rows.groups {
        let x = rows.x[s];
        let c = fixed + ln_gamma(r + x) + ln_gamma(b + x + 1.0) - ln_gamma(a + b + x + 1.0);
        let d = ln_a - (b + x).ln();
        let mut sum = 0.0;
        for i in s..e {
            let ln_t = (alpha + rows.age[i]).ln();
            let a3 = -(r + x) * ln_t;
            let a4 = d + (r + x) * (ln_t - (alpha + rows.t_x[i]).ln());
            sum += rows.w[i] * (a3 + log_add_exp(a4, 0.0));
        }
        total += sum + c * rows.w[s..e].iter().sum::<f64>();
    }
    total
}

/// Pareto/NBD log-likelihood of `rows` (Fader & Hardie 2005 note, eq. 19, with `A0` in the
/// branch that keeps the 2F1 argument in `[0, 1)`; as `lifetimes.ParetoNBDFitter`).
pub fn pareto_nbd_log_likelihood(m: &ParetoNbd, rows: &Rows) -> f64 {
    let (r, alpha, s, beta) = (m.r, m.alpha, m.s, m.beta);
    let fixed = -ln_gamma(r) + r * alpha.ln() + s * beta.ln();
    let ln_s = s.ln();
    let mut total = 0.0;
    for &(g0, g1) in &rows.groups {
        let x = rows.x[g0];
        let c = fixed + ln_gamma(r + x);
        let rsx = r + s + x;
        let (big, second, gap) = if alpha < beta {
            (beta, r + x, beta - alpha)
        } else {
            (alpha, s + 1.0, alpha - beta)
        };
        let ln_f = |y: f64| {
            let q = big + y;
            ln_hyp2f1(rsx, second, rsx + 1.0, gap / q, (big - gap + y) / q).0
        };
        // The 2F1 is the costly part and depends on one time only: memoised within the group
        // (rows are sorted by t_x, so equal t_x are consecutive; T repeats across them, e.g.
        // for day-dated orders, or one-time buyers, whose t_x is 0).
        let mut at_t_x = (f64::NAN, 0.0);
        let mut at_age: HashMap<u64, f64> = HashMap::new();
        let mut sum = 0.0;
        for i in g0..g1 {
            let (t_x, age) = (rows.t_x[i], rows.age[i]);
            let q2 = big + age;
            // ln A0 = ln(F1 / q1^rsx − F2 / q2^rsx), the second term relative to the first
            // (≤ 1; clamped so that rounding at t_x ≈ T cannot make the log NaN).
            if at_t_x.0 != t_x {
                at_t_x = (t_x, ln_f(t_x) - rsx * (big + t_x).ln());
            }
            let first = at_t_x.1;
            let f_age = *at_age.entry(age.to_bits()).or_insert_with(|| ln_f(age));
            let ratio = (f_age - rsx * q2.ln() - first).min(0.0);
            let ln_a0 = first + (-ratio.exp_m1()).ln();
            let a2 = log_add_exp(
                -(r + x) * (alpha + age).ln() - s * (beta + age).ln(),
                ln_s + ln_a0 - rsx.ln(),
            );
            sum += rows.w[i] * a2;
        }
        total += sum + c * rows.w[g0..g1].iter().sum::<f64>();
    }
    total
}

fn transaction_ll(kind: Kind, p: [f64; 4], rows: &Rows) -> f64 {
    let [p0, p1, p2, p3] = p;
    match kind {
        Kind::Bg => bg_nbd_log_likelihood(
            &BgNbd {
                r: p0,
                alpha: p1,
                a: p2,
                b: p3,
            },
            rows,
        ),
        Kind::Mbg => mbg_nbd_log_likelihood(
            &MbgNbd {
                r: p0,
                alpha: p1,
                a: p2,
                b: p3,
            },
            rows,
        ),
        Kind::Pareto => pareto_nbd_log_likelihood(
            &ParetoNbd {
                r: p0,
                alpha: p1,
                s: p2,
                beta: p3,
            },
            rows,
        ),
    }
}

/// Gamma-Gamma rows: `(x, m)` of repeat customers with `m > 0`, weighted.
#[derive(Debug, Clone, Default)]
pub struct SpendRows {
    x: Vec<f64>,
    m: Vec<f64>,
    w: Vec<f64>,
}

impl SpendRows {
    /// The repeat customers' `(x, mean repeat value)`, aggregated; also the count left out
    /// for `m = 0`.
    pub fn of(summaries: &[Summary]) -> (SpendRows, u64) {
        let mut excluded = 0;
        let mut keys: Vec<(f64, f64)> = Vec::new();
        for s in summaries.iter().filter(|s| s.x > 0.0) {
            if s.mean_repeat_minor > 0.0 && s.mean_repeat_minor.is_finite() {
                keys.push((s.x, s.mean_repeat_minor));
            } else {
                excluded += 1;
            }
        }
        keys.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let mut rows = SpendRows::default();
        for k in keys {
            let n = rows.x.len();
            if n > 0 && (rows.x[n - 1], rows.m[n - 1]) == k {
                rows.w[n - 1] += 1.0;
            } else {
                rows.x.push(k.0);
                rows.m.push(k.1);
                rows.w.push(1.0);
            }
        }
        (rows, excluded)
    }

    /// Every k-th row (weights kept), at most about `max` rows; the rows themselves when fewer.
    fn sample(&self, max: usize) -> SpendRows {
        if self.x.len() <= max.max(1) {
            return self.clone();
        }
        let k = self.x.len().div_ceil(max.max(1));
        let mut out = SpendRows::default();
        for i in (0..self.x.len()).step_by(k) {
            out.x.push(self.x[i]);
            out.m.push(self.m[i]);
            out.w.push(self.w[i]);
        }
        out
    }
}

/// Gamma-Gamma log-likelihood of the mean repeat values (FHL 2005 "RFM and CLV"; as
/// `lifetimes.GammaGammaFitter`).
pub fn gamma_gamma_log_likelihood(g: &GammaGamma, rows: &SpendRows) -> f64 {
    let (p, q, v) = (g.p, g.q, g.v);
    let fixed = -ln_gamma(q) + q * v.ln();
    let mut total = 0.0;
    for i in 0..rows.x.len() {
        let (x, m) = (rows.x[i], rows.m[i]);
        let px = p * x;
        let ll = ln_gamma(px + q) - ln_gamma(px) + fixed + (px - 1.0) * m.ln() + px * x.ln()
            - (px + q) * (x * m + v).ln();
        total += rows.w[i] * ll;
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Optimiser
// ---------------------------------------------------------------------------------------------

/// Nelder–Mead's outcome.
struct Simplex {
    best: Vec<f64>,
    value: f64,
    iterations: usize,
    evaluations: usize,
    size: f64,
}

/// Nelder–Mead's stopping rule: the objective's spread across the simplex (relative) and the
/// simplex's size (absolute, log-parameters) both below these.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    f: f64,
    x: f64,
}

/// The starts only choose a basin: loose.
const START_TOL: Tolerance = Tolerance { f: 1e-7, x: 1e-3 };
/// On all rows; the Newton steps that follow take the optimum the rest of the way.
const FULL_TOL: Tolerance = Tolerance { f: 1e-11, x: 1e-6 };

/// Minimises `f` from `start` (standard coefficients 1, 2, ½, ½; initial steps 0.5 in each
/// coordinate, which are log-parameters here). Non-finite values count as +∞.
fn nelder_mead(
    f: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    tol: Tolerance,
    max_evals: usize,
) -> Simplex {
    let n = start.len();
    let eval = |p: &[f64]| {
        let v = f(p);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut pts: Vec<Vec<f64>> = vec![start.to_vec()];
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += 0.5;
        pts.push(p);
    }
    let mut vals: Vec<f64> = pts.iter().map(|p| eval(p)).collect();
    let mut evals = n + 1;
    let mut iterations = 0;
    let size = |pts: &[Vec<f64>]| {
        pts[1..]
            .iter()
            .map(|p| {
                p.iter()
                    .zip(&pts[0])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    };
    while evals < max_evals {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|a, b| vals[*a].total_cmp(&vals[*b]));
        pts = order.iter().map(|i| pts[*i].clone()).collect();
        vals = order.iter().map(|i| vals[*i]).collect();
        let spread = vals[n] - vals[0];
        if spread <= tol.f * (vals[0].abs() + 1e-30) && size(&pts) <= tol.x {
            break;
        }
        iterations += 1;
        let centroid: Vec<f64> = (0..n)
            .map(|j| pts[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (pts[n][j] - centroid[j]))
                .collect()
        };
        let reflected = along(-1.0);
        let fr = eval(&reflected);
        evals += 1;
        if fr < vals[0] {
            let expanded = along(-2.0);
            let fe = eval(&expanded);
            evals += 1;
            if fe < fr {
                pts[n] = expanded;
                vals[n] = fe;
            } else {
                pts[n] = reflected;
                vals[n] = fr;
            }
        } else if fr < vals[n - 1] {
            pts[n] = reflected;
            vals[n] = fr;
        } else {
            let (contracted, fc) = if fr < vals[n] {
                let c = along(-0.5);
                let v = eval(&c);
                (c, v)
            } else {
                let c = along(0.5);
                let v = eval(&c);
                (c, v)
            };
            evals += 1;
            if fc < vals[n].min(fr) {
                pts[n] = contracted;
                vals[n] = fc;
            } else {
                for i in 1..=n {
                    pts[i] = (0..n)
                        .map(|j| pts[0][j] + 0.5 * (pts[i][j] - pts[0][j]))
                        .collect();
                    vals[i] = eval(&pts[i]);
                }
                evals += n;
            }
        }
    }
    let best = (0..=n)
        .min_by(|a, b| vals[*a].total_cmp(&vals[*b]))
        .unwrap_or(0);
    Simplex {
        best: pts[best].clone(),
        value: vals[best],
        iterations,
        evaluations: evals,
        size: size(&pts),
    }
}

/// Central-difference gradient and Hessian of `f` at `p` (step `h` in every coordinate).
#[allow(clippy::needless_range_loop)] // matrix indices read as the formulas do
fn derivatives(f: &dyn Fn(&[f64]) -> f64, p: &[f64], h: f64) -> (Vec<f64>, Vec<Vec<f64>>, usize) {
    let n = p.len();
    let at = |d: &[(usize, f64)]| {
        let mut q = p.to_vec();
        for (i, s) in d {
            q[*i] += s;
        }
        f(&q)
    };
    let f0 = f(p);
    let mut evals = 1;
    let mut g = vec![0.0; n];
    let mut hess = vec![vec![0.0; n]; n];
    for i in 0..n {
        let (fp, fm) = (at(&[(i, h)]), at(&[(i, -h)]));
        evals += 2;
        g[i] = (fp - fm) / (2.0 * h);
        hess[i][i] = (fp - 2.0 * f0 + fm) / (h * h);
        for j in 0..i {
            let v = (at(&[(i, h), (j, h)]) - at(&[(i, h), (j, -h)]) - at(&[(i, -h), (j, h)])
                + at(&[(i, -h), (j, -h)]))
                / (4.0 * h * h);
            evals += 4;
            hess[i][j] = v;
            hess[j][i] = v;
        }
    }
    (g, hess, evals)
}

/// The inverse of a symmetric positive-definite matrix (Cholesky), or `None`.
#[allow(clippy::needless_range_loop)] // matrix indices read as the formulas do
fn spd_inverse(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    // Columns of A⁻¹ by forward and back substitution.
    let mut inv = vec![vec![0.0; n]; n];
    for c in 0..n {
        let mut y = vec![0.0; n];
        for i in 0..n {
            let e = if i == c { 1.0 } else { 0.0 };
            y[i] = (e - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
        }
        let mut x = vec![0.0; n];
        for i in (0..n).rev() {
            x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
        }
        for i in 0..n {
            inv[i][c] = x[i];
        }
    }
    Some(inv)
}

/// Step for the numeric derivatives in log-parameters: small against every parameter's
/// relative change that matters, large against rounding of the objective.
const HESSIAN_STEP: f64 = 1e-4;

/// A maximum-likelihood fit: `ll(natural params, rows)` on `full`, starts on `sample`.
struct Optimum {
    params: Vec<f64>,
    ll: f64,
    std_errors: Vec<Option<f64>>,
    convergence: Convergence,
}

fn maximise<R>(
    ll: &dyn Fn(&[f64], &R) -> f64,
    full: &R,
    sample: &R,
    customers: f64,
    starts: &[Vec<f64>],
    max_evals: usize,
) -> Option<Optimum> {
    // The objective is the mean negative log-likelihood in log-parameters: its scale does not
    // grow with the data, so the tolerances mean the same for 2 000 and 1 000 000 customers.
    fn objective<'a, R>(
        ll: &'a dyn Fn(&[f64], &R) -> f64,
        rows: &'a R,
        customers: f64,
    ) -> impl Fn(&[f64]) -> f64 + 'a {
        move |lp: &[f64]| {
            let p: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
            -ll(&p, rows) / customers
        }
    }
    // On the sample the scale is off by the sampling ratio; only its argmin is used.
    let on_sample = objective(ll, sample, customers);
    let mut evaluations = 0;
    let mut ends: Vec<Simplex> = starts
        .iter()
        .map(|s| nelder_mead(&on_sample, s, START_TOL, max_evals))
        .collect();
    evaluations += ends.iter().map(|e| e.evaluations).sum::<usize>();
    ends.sort_by(|a, b| a.value.total_cmp(&b.value));
    let best_start = ends.first()?;
    if !best_start.value.is_finite() {
        return None;
    }
    let starts_at_best = ends
        .iter()
        .filter(|e| (e.value - best_start.value).abs() <= 1e-6 * best_start.value.abs().max(1e-12))
        .count();
    // Tight on the sample, restarted from its own best until a restart no longer moves it.
    let mut run = nelder_mead(&on_sample, &best_start.best, FULL_TOL, max_evals);
    let mut iterations = run.iterations;
    evaluations += run.evaluations;
    for _ in 0..5 {
        let again = nelder_mead(&on_sample, &run.best, FULL_TOL, max_evals);
        evaluations += again.evaluations;
        iterations += again.iterations;
        let improved = again.value < run.value - FULL_TOL.f * run.value.abs();
        run = again;
        if !improved {
            break;
        }
    }
    let on_full = objective(ll, full, customers);
    let (x, fx) = (run.best.clone(), on_full(&run.best));
    evaluations += 1;
    // Newton steps on all rows, on the central-difference Hessian: from the sample's optimum
    // they converge in a few steps, each a fixed number of evaluations (where Nelder–Mead on
    // all rows would take hundreds), and the gradient is what says the maximum was reached.
    let (mut x, mut fx) = (x, fx);
    let (mut g, mut h, e) = derivatives(&on_full, &x, HESSIAN_STEP);
    evaluations += e;
    // The last Newton step's largest change of a log-parameter.
    let mut last_step = f64::INFINITY;
    for _ in 0..8 {
        let Some(inv) = spd_inverse(&h) else { break };
        let step: Vec<f64> = (0..x.len())
            .map(|i| -(0..x.len()).map(|j| inv[i][j] * g[j]).sum::<f64>())
            .collect();
        last_step = step.iter().fold(0.0, |m, v| v.abs().max(m));
        if last_step < 1e-10 {
            break; // at the optimum: g and h are current
        }
        let mut t = 1.0;
        let mut moved = false;
        for _ in 0..20 {
            let y: Vec<f64> = x.iter().zip(&step).map(|(a, s)| a + t * s).collect();
            let fy = on_full(&y);
            evaluations += 1;
            if fy.is_finite() && fy <= fx {
                moved = fy < fx;
                x = y;
                fx = fy;
                break;
            }
            t /= 2.0;
        }
        iterations += 1;
        if !moved {
            break; // rounding level: g and h are current
        }
        let (g2, h2, e) = derivatives(&on_full, &x, HESSIAN_STEP);
        evaluations += e;
        (g, h) = (g2, h2);
    }
    // Total log-likelihood's information in log-parameters: customers × the mean's Hessian.
    let info: Vec<Vec<f64>> = h
        .iter()
        .map(|row| row.iter().map(|v| v * customers).collect())
        .collect();
    let cov = spd_inverse(&info);
    let params: Vec<f64> = x.iter().map(|v| v.exp()).collect();
    let std_errors = (0..x.len())
        .map(|i| {
            cov.as_ref()
                .map(|c| params[i] * c[i][i].sqrt())
                .filter(|v| v.is_finite())
        })
        .collect();
    let gradient_norm = g
        .iter()
        .map(|v| (v * customers).powi(2))
        .sum::<f64>()
        .sqrt();
    Some(Optimum {
        ll: ll(&params, full),
        params,
        std_errors,
        convergence: Convergence {
            starts: starts.len(),
            starts_at_best,
            iterations,
            evaluations,
            converged: cov.is_some()
                && (last_step < 1e-6 || g.iter().all(|v| v.abs() < 1e-7 * fx.abs().max(1.0))),
            gradient_norm,
            simplex_size: run.size,
        },
    })
}

fn model_fit(model: &'static str, names: &[&'static str], o: Optimum, customers: f64) -> ModelFit {
    let k = names.len() as f64;
    ModelFit {
        model,
        params: names
            .iter()
            .copied()
            .zip(o.params.iter().copied())
            .collect(),
        std_errors: o.std_errors,
        log_likelihood: o.ll,
        aic: 2.0 * k - 2.0 * o.ll,
        bic: k * customers.ln() - 2.0 * o.ll,
        customers: customers as u64,
        convergence: o.convergence,
    }
}

/// Start points in log-parameters for a transaction model: fixed shapes, and a purchase-rate
/// scale `alpha` from the data (`r / alpha` ≈ repeat purchases per unit of time).
fn transaction_starts(kind: Kind, rows: &Rows, n: usize) -> Vec<Vec<f64>> {
    let w = rows.customers();
    let mean_x: f64 = rows.x.iter().zip(&rows.w).map(|(x, w)| x * w).sum::<f64>() / w;
    let mean_t: f64 = rows
        .age
        .iter()
        .zip(&rows.w)
        .map(|(t, w)| t * w)
        .sum::<f64>()
        / w;
    let rate = (mean_x / mean_t.max(1e-9)).max(1e-6);
    let alpha = |r: f64| r / rate;
    let natural: [[f64; 4]; MAX_STARTS] = match kind {
        Kind::Bg | Kind::Mbg => [
            [1.0, alpha(1.0), 1.0, 1.0],
            [0.5, alpha(0.5), 0.5, 2.0],
            [0.25, alpha(0.25), 1.0, 3.0],
            [2.0, alpha(2.0), 2.0, 5.0],
            [1.0, 1.0, 1.0, 1.0],
            [0.1, alpha(0.1), 0.1, 0.5],
        ],
        Kind::Pareto => [
            [1.0, alpha(1.0), 1.0, alpha(1.0)],
            [0.5, alpha(0.5), 0.5, 2.0 * alpha(0.5)],
            [0.25, alpha(0.25), 1.0, 10.0 * alpha(1.0)],
            [2.0, alpha(2.0), 2.0, alpha(2.0)],
            [1.0, 1.0, 1.0, 1.0],
            [0.5, alpha(0.5), 0.25, 0.5 * alpha(0.5)],
        ],
    };
    natural
        .iter()
        .take(n.clamp(1, MAX_STARTS))
        .map(|p| p.iter().map(|v| v.ln()).collect())
        .collect()
}

fn fit_transaction(kind: Kind, rows: &Rows, opts: &FitOptions) -> Result<ModelFit, FitError> {
    let sample = rows.sample(opts.start_sample_rows);
    let customers = rows.customers();
    let ll = |p: &[f64], r: &Rows| transaction_ll(kind, [p[0], p[1], p[2], p[3]], r);
    let starts = transaction_starts(kind, rows, opts.starts);
    let o = maximise(&ll, rows, &sample, customers, &starts, opts.max_evaluations)
        .ok_or_else(|| FitError(format!("{}: no start gives a finite likelihood", kind.id())))?;
    Ok(model_fit(kind.id(), &kind.names(), o, customers))
}

fn fit_gamma_gamma(rows: &SpendRows, opts: &FitOptions) -> Option<ModelFit> {
    let customers: f64 = rows.w.iter().sum();
    if customers == 0.0 {
        return None;
    }
    let mean_m = rows.m.iter().zip(&rows.w).map(|(m, w)| m * w).sum::<f64>() / customers;
    // Population mean p v / (q − 1) equal to the observed mean at every start.
    let natural: [[f64; 3]; MAX_STARTS] = [
        [2.0, 3.0, 2.0 * mean_m / 2.0],
        [1.0, 2.0, mean_m],
        [6.0, 4.0, 3.0 * mean_m / 6.0],
        [0.5, 1.5, 0.5 * mean_m / 0.5],
        [10.0, 10.0, 9.0 * mean_m / 10.0],
        [3.0, 1.2, 0.2 * mean_m / 3.0],
    ];
    let starts: Vec<Vec<f64>> = natural
        .iter()
        .take(opts.starts.clamp(1, MAX_STARTS))
        .map(|p| p.iter().map(|v| v.ln()).collect())
        .collect();
    let ll = |p: &[f64], r: &SpendRows| {
        gamma_gamma_log_likelihood(
            &GammaGamma {
                p: p[0],
                q: p[1],
                v: p[2],
            },
            r,
        )
    };
    let sample = rows.sample(opts.start_sample_rows);
    let o = maximise(&ll, rows, &sample, customers, &starts, opts.max_evaluations)?;
    Some(model_fit("gamma_gamma", &["p", "q", "v"], o, customers))
}

// ---------------------------------------------------------------------------------------------
// RFM cuts and value tiers
// ---------------------------------------------------------------------------------------------

/// The nearest-rank quantile of sorted `v` at `p` (0 < p ≤ 1).
fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Quintile cut points, each at least `step` above the previous. `rising`: the score rises
/// with the value and a value at a cut already scores above it (frequency, monetary), so the
/// cuts are the quintiles + `step`; otherwise a value at a cut scores with the group below
/// the cut (recency), so the cuts are the quintiles.
fn quintile_cuts<T: Copy + PartialOrd + std::ops::Add<Output = T>>(
    mut values: Vec<T>,
    step: T,
    rising: bool,
) -> [T; 4] {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut cuts = [values[0]; 4];
    for (i, cut) in cuts.iter_mut().enumerate() {
        *cut = nearest_rank(&values, (i + 1) as f64 / 5.0);
        if rising {
            *cut = *cut + step;
        }
    }
    for i in 1..4 {
        if cuts[i].partial_cmp(&cuts[i - 1]) != Some(std::cmp::Ordering::Greater) {
            cuts[i] = cuts[i - 1] + step;
        }
    }
    cuts
}

/// The CLV at or above which the top `share` of `sorted` (ascending) lies.
fn top_share_threshold(sorted: &[f64], share: f64) -> f64 {
    nearest_rank(sorted, (1.0 - share).max(f64::MIN_POSITIVE))
}

// ---------------------------------------------------------------------------------------------
// The whole fit
// ---------------------------------------------------------------------------------------------

/// Fits everything on the customers' summaries (one per customer with an order, at the
/// calibration end, in `opts.scoring.model.time_unit`).
pub fn fit_all(summaries: &[Summary], opts: &FitOptions) -> Result<FitReport, FitError> {
    if summaries.is_empty() {
        return Err(FitError("no customer with an order to fit on".into()));
    }
    let shares = opts.high_share + opts.mid_share;
    if !(opts.high_share > 0.0 && opts.mid_share > 0.0 && shares < 1.0) {
        return Err(FitError(format!(
            "tier shares must be positive and sum below 1 (high {}, mid {})",
            opts.high_share, opts.mid_share
        )));
    }
    let rows = Rows::of(summaries);
    let bg_nbd = fit_transaction(Kind::Bg, &rows, opts)?;
    let mbg_nbd = fit_transaction(Kind::Mbg, &rows, opts)?;
    let pareto_nbd = fit_transaction(Kind::Pareto, &rows, opts)?;
    let (spend, gamma_gamma_excluded) = SpendRows::of(summaries);
    let gamma_gamma = fit_gamma_gamma(&spend, opts);
    let best = [
        (ModelKind::MbgNbd, &mbg_nbd),
        (ModelKind::BgNbd, &bg_nbd),
        (ModelKind::ParetoNbd, &pareto_nbd),
    ]
    .into_iter()
    .filter(|(_, f)| f.bic.is_finite())
    .min_by(|a, b| a.1.bic.total_cmp(&b.1.bic))
    .map_or(ModelKind::MbgNbd, |(k, _)| k);

    let silences = summaries.iter().map(|s| s.silence_days).collect();
    let recency_cuts_days = quintile_cuts(silences, 1, false);
    let frequency_cuts = quintile_cuts(summaries.iter().map(|s| s.orders).collect(), 1, true);
    let spends = summaries.iter().map(|s| s.net_minor).collect();
    let monetary_cuts_minor = quintile_cuts(spends, 1, true);

    let mut report = FitReport {
        customers: summaries.len() as u64,
        distinct_summaries: rows.len(),
        time_unit: opts.scoring.model.time_unit,
        bg_nbd,
        mbg_nbd,
        pareto_nbd,
        gamma_gamma,
        gamma_gamma_excluded,
        best,
        recency_cuts_days,
        frequency_cuts,
        monetary_cuts_minor,
        value_tier: opts.scoring.value_tier,
        high_share: opts.high_share,
        mid_share: opts.mid_share,
    };
    // Each customer's CLV by the engine under the fitted rules.
    let fitted = report.apply(&opts.scoring);
    let mut clvs: Vec<f64> = summaries
        .iter()
        .filter_map(|s| clv_of(s, &fitted).map(|c| c.clv_minor))
        .collect();
    if clvs.is_empty() {
        return Err(FitError(
            "no customer has a finite CLV under the fit".into(),
        ));
    }
    clvs.sort_by(f64::total_cmp);
    let mid = top_share_threshold(&clvs, shares).max(0.0);
    let high = top_share_threshold(&clvs, opts.high_share);
    report.value_tier = ValueTierConfig {
        mid_from_minor: mid,
        // The engine needs high above mid: a flat CLV distribution gets one minor unit more.
        high_from_minor: if high > mid { high } else { mid + 1.0 },
    };
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_the_minimum_of_a_quadratic_and_the_hessian_inverts() {
        // Given a convex quadratic with a known minimum and Hessian
        let f = |p: &[f64]| {
            (p[0] - 1.0).powi(2) + 3.0 * (p[1] + 2.0).powi(2) + (p[0] - 1.0) * (p[1] + 2.0)
        };
        // When minimised
        let tol = Tolerance { f: 1e-14, x: 1e-9 };
        let s = nelder_mead(&f, &[0.0, 0.0], tol, 10_000);
        // Then the minimum is found and the derivatives there are right
        assert!(s.size <= 1e-9 && s.evaluations < 10_000);
        assert!((s.best[0] - 1.0).abs() < 1e-6 && (s.best[1] + 2.0).abs() < 1e-6);
        let (g, h, _) = derivatives(&f, &s.best, 1e-4);
        assert!(g.iter().all(|v| v.abs() < 1e-5), "{g:?}");
        let expected = [[2.0, 1.0], [1.0, 6.0]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((h[i][j] - expected[i][j]).abs() < 1e-6, "{h:?}");
            }
        }
        let inv = spd_inverse(&h).unwrap();
        // [[2,1],[1,6]]⁻¹ = [[6,−1],[−1,2]] / 11
        assert!((inv[0][0] - 6.0 / 11.0).abs() < 1e-6);
        assert!((inv[0][1] + 1.0 / 11.0).abs() < 1e-6);
        assert!(spd_inverse(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
    }

    #[test]
    fn quintile_cuts_put_a_customer_at_a_quintile_in_the_group_below_it() {
        let values: Vec<i64> = (1..=10).collect();
        // Recency (5 at or below the first cut): 1, 2 score 5 ... 9, 10 score 1
        assert_eq!(quintile_cuts(values.clone(), 1, false), [2, 4, 6, 8]);
        // Frequency (1 below the first cut): 1, 2 score 1 ... 9, 10 score 5
        assert_eq!(quintile_cuts(values, 1, true), [3, 5, 7, 9]);
        // Mostly one-order customers: ties pushed up one by one, and the one-order customers
        // score 1 (with a cut of 1, nobody would)
        let orders: Vec<u32> = [1; 70].into_iter().chain([2; 20]).chain([5; 10]).collect();
        assert_eq!(quintile_cuts(orders.clone(), 1, false), [1, 2, 3, 4]);
        assert_eq!(quintile_cuts(orders, 1, true), [2, 3, 4, 5]);
    }
}
