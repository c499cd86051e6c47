//! Scoring and lifecycle configuration: versioned, validated without I/O.
//!
//! Every alert carries `rule_version`, so a change to any value here must change it too. The
//! defaults live here and are mirrored, one commented line each, in the `[scoring]` section of
//! `crates/pulse/pulse.default.toml` (a test in the `pulse` crate asserts they agree).
//!
//! Lifecycle thresholds sit at the top of `[scoring]`; each model or signal family has its own
//! table (`[scoring.model]`, `[scoring.gamma_gamma]`, `[scoring.clv]`, `[scoring.value_tier]`,
//! `[scoring.engagement]`, `[scoring.support]`, `[scoring.scorecard.risk]`,
//! `[scoring.scorecard.health]`).

use serde::{Deserialize, Serialize};

use crate::event::{Millis, DAY, HOUR, MINUTE};
use crate::models::{BgNbd, GammaGamma, MbgNbd, ParetoNbd, MAX_CLV_PERIODS};

/// The rules of the engine. Durations named `_days` are whole days of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Stamped on every alert; change it whenever a rule changes.
    pub rule_version: String,

    // ----- lifecycle -----
    /// A customer is `new` for this many days after the first order.
    pub new_customer_days: i64,
    /// A reactivated customer shows as `reactivated` for this many days, then `active`/`loyal`.
    pub reactivated_days: i64,
    /// `loyal` needs at least this many orders ...
    pub loyal_min_orders: u32,
    /// ... and a churn risk below this.
    pub loyal_max_risk: f64,
    /// `at_risk` when the churn risk reaches this ...
    pub at_risk_risk: f64,
    /// ... or, once there are two purchase days, when the silence reaches this multiple of the
    /// customer's mean gap between purchase days ...
    pub at_risk_gap_multiple: f64,
    /// ... but never before this many silent days (a daily buyer is not at risk after 2 days).
    pub at_risk_gap_min_days: i64,
    /// Hysteresis: `at_risk` is left without an order only once the risk is below this.
    pub at_risk_exit_risk: f64,
    /// `churned` when the churn risk reaches this ...
    pub churned_risk: f64,
    /// ... or after this many silent days.
    pub churned_days: i64,

    // ----- RFM -----
    /// Recency score cut points, days since the last order, ascending: `≤ c[0]` scores 5 … `> c[3]` scores 1.
    pub recency_cuts_days: [i64; 4],
    /// Frequency score cut points, order counts, ascending: `≥ c[3]` scores 5 … `< c[0]` scores 1.
    pub frequency_cuts: [u32; 4],
    /// Monetary score cut points, total spend in minor units, ascending.
    pub monetary_cuts_minor: [i64; 4],
    /// A segment must hold this long before a change is announced again (anti-flapping).
    pub segment_min_dwell_days: i64,

    // ----- models and signals -----
    pub model: ModelConfig,
    pub gamma_gamma: GammaGamma,
    pub clv: ClvConfig,
    pub value_tier: ValueTierConfig,
    pub engagement: EngagementConfig,
    pub support: SupportConfig,
    pub scorecard: ScorecardConfig,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            rule_version: "v3".into(),
            new_customer_days: 30,
            reactivated_days: 30,
            loyal_min_orders: 3,
            loyal_max_risk: 0.3,
            at_risk_risk: 0.65,
            at_risk_gap_multiple: 4.0,
            at_risk_gap_min_days: 60,
            at_risk_exit_risk: 0.4,
            churned_risk: 0.85,
            churned_days: 365,
            recency_cuts_days: [38, 127, 225, 285],
            frequency_cuts: [2, 4, 6, 10],
            monetary_cuts_minor: [4_401, 10_046, 18_979, 38_078],
            segment_min_dwell_days: 7,
            model: ModelConfig::default(),
            gamma_gamma: GammaGamma::default(),
            clv: ClvConfig::default(),
            value_tier: ValueTierConfig::default(),
            engagement: EngagementConfig::default(),
            support: SupportConfig::default(),
            scorecard: ScorecardConfig::default(),
        }
    }
}

/// Which transaction model gives P(alive) (and so `p_dead`) and expected purchases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// MBG/NBD: one-time buyers can be dead too, so churn risk means something for them.
    #[default]
    MbgNbd,
    /// BG/NBD: P(alive) = 1 for every one-time buyer (only the silence rules then apply).
    BgNbd,
    /// Pareto/NBD: its P(alive) has no closed-form inverse, so timers need a bisection.
    ParetoNbd,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::MbgNbd => "MBG/NBD",
            ModelKind::BgNbd => "BG/NBD",
            ModelKind::ParetoNbd => "Pareto/NBD",
        }
    }
}

/// The time unit the model parameters were fitted in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Day,
    #[default]
    Week,
}

impl TimeUnit {
    pub fn millis(self) -> Millis {
        match self {
            TimeUnit::Day => DAY,
            TimeUnit::Week => 7 * DAY,
        }
    }
}

/// Transaction-model choice and parameters. The defaults are `pulse fit` on a year of the
/// simulator's history, in weeks (pulse.default.toml gives the commands): a prior until
/// `pulse fit` derives them from the shop's own history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub kind: ModelKind,
    pub time_unit: TimeUnit,
    /// All four parameters or none (a fit gives them together), as for the other two.
    pub mbg_nbd: MbgNbd,
    pub bg_nbd: BgNbd,
    pub pareto_nbd: ParetoNbd,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::MbgNbd,
            time_unit: TimeUnit::Week,
            // `pulse fit` on the simulator's year: pulse.default.toml says how.
            mbg_nbd: MbgNbd {
                r: 0.8466,
                alpha: 2.7211,
                a: 1.0796,
                b: 6.2983,
            },
            bg_nbd: BgNbd {
                r: 0.5171,
                alpha: 1.9217,
                a: 1.0709,
                b: 7.4969,
            },
            pareto_nbd: ParetoNbd {
                r: 0.8884,
                alpha: 3.7289,
                s: 1.4201,
                beta: 38.7299,
            },
        }
    }
}

/// The Gamma-Gamma spend model's default, which a `[scoring.gamma_gamma]` table overrides
/// field by field. Amounts are minor units of the customer's currency, so `v` is too: the fit
/// on the simulator's year (pulse.default.toml says how).
impl Default for GammaGamma {
    fn default() -> Self {
        GammaGamma {
            p: 1.4438,
            q: 138.88,
            v: 400_093.0,
        }
    }
}

/// Discounted CLV: `periods` equal periods over `horizon_days`, discounted at
/// `annual_discount_rate` (converted to the period's rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClvConfig {
    pub horizon_days: i64,
    pub periods: u32,
    pub annual_discount_rate: f64,
}

impl Default for ClvConfig {
    fn default() -> Self {
        ClvConfig {
            horizon_days: 365,
            periods: 12,
            annual_discount_rate: 0.10,
        }
    }
}

/// Value tier cut points on the expected CLV, minor units: below `mid_from_minor` is low.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueTierConfig {
    pub mid_from_minor: f64,
    pub high_from_minor: f64,
}

impl Default for ValueTierConfig {
    fn default() -> Self {
        ValueTierConfig {
            mid_from_minor: 2_205.0,
            high_from_minor: 15_076.0,
        }
    }
}

/// Clickstream engagement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngagementConfig {
    /// The engagement score (weighted clicks) decays by half over this many days; it is also
    /// the short side of the trend.
    pub half_life_days: f64,
    /// The baseline (long side of the trend) decays by half over this many days.
    pub baseline_half_life_days: f64,
    /// A click after this long without one starts a new session.
    pub session_gap_minutes: i64,
    /// A cart not followed by an order within this many hours of its last add is abandoned.
    pub cart_abandonment_hours: i64,
    /// The engagement score at which the `engagement_low` signal is 0.5.
    pub reference: f64,
}

impl Default for EngagementConfig {
    fn default() -> Self {
        EngagementConfig {
            half_life_days: 14.0,
            baseline_half_life_days: 90.0,
            session_gap_minutes: 30,
            cart_abandonment_hours: 24,
            reference: 10.0,
        }
    }
}

impl EngagementConfig {
    pub fn session_gap(&self) -> Millis {
        self.session_gap_minutes * MINUTE
    }
    pub fn cart_window(&self) -> Millis {
        self.cart_abandonment_hours * HOUR
    }
}

/// Support health.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// Mean time to first response at which `slow_first_response` is 0.5.
    pub first_response_reference_hours: f64,
    /// Mean time to resolution at which `slow_resolution` is 0.5.
    pub resolution_reference_hours: f64,
    /// Negative contacts in a row at which `negative_streak` reaches 1.
    pub negative_streak_saturation: u32,
}

impl Default for SupportConfig {
    fn default() -> Self {
        SupportConfig {
            first_response_reference_hours: 24.0,
            resolution_reference_hours: 72.0,
            negative_streak_saturation: 3,
        }
    }
}

/// Weights of the normalised signals (each 0 = good … 1 = bad). Only measured signals take
/// part: the score is `Σ wᵢ sᵢ / Σ wᵢ` over the signals a customer has, so weights need not
/// sum to 1 and a customer without clicks is not punished for it.
///
/// A weights table is all or nothing (no per-key defaults: the risk and health tables have
/// different ones, and a silently filled-in weight would be worse than an error). The service
/// merges the documented default TOML under your file, so a file may still change one key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub p_dead: f64,
    pub engagement_low: f64,
    pub engagement_falling: f64,
    pub cart_abandonment: f64,
    pub open_tickets: f64,
    pub slow_first_response: f64,
    pub slow_resolution: f64,
    pub csat_low: f64,
    pub nps: f64,
    pub negative_sentiment: f64,
    pub negative_streak: f64,
    pub low_frequency: f64,
    pub low_monetary: f64,
}

impl Weights {
    /// Churn risk: dominated by the model's `p_dead`, nudged by behaviour and support.
    pub const RISK: Weights = Weights {
        p_dead: 0.6,
        engagement_low: 0.05,
        engagement_falling: 0.05,
        cart_abandonment: 0.05,
        open_tickets: 0.05,
        slow_first_response: 0.025,
        slow_resolution: 0.025,
        csat_low: 0.05,
        nps: 0.05,
        negative_sentiment: 0.025,
        negative_streak: 0.025,
        low_frequency: 0.0,
        low_monetary: 0.0,
    };
    /// Health: the relationship as a whole, so value (frequency, spend) counts too.
    pub const HEALTH: Weights = Weights {
        p_dead: 0.35,
        engagement_low: 0.1,
        engagement_falling: 0.05,
        cart_abandonment: 0.05,
        open_tickets: 0.05,
        slow_first_response: 0.025,
        slow_resolution: 0.025,
        csat_low: 0.05,
        nps: 0.05,
        negative_sentiment: 0.025,
        negative_streak: 0.025,
        low_frequency: 0.1,
        low_monetary: 0.1,
    };

    /// `(key, weight)` in signal order.
    pub fn entries(&self) -> [(&'static str, f64); 13] {
        [
            ("p_dead", self.p_dead),
            ("engagement_low", self.engagement_low),
            ("engagement_falling", self.engagement_falling),
            ("cart_abandonment", self.cart_abandonment),
            ("open_tickets", self.open_tickets),
            ("slow_first_response", self.slow_first_response),
            ("slow_resolution", self.slow_resolution),
            ("csat_low", self.csat_low),
            ("nps", self.nps),
            ("negative_sentiment", self.negative_sentiment),
            ("negative_streak", self.negative_streak),
            ("low_frequency", self.low_frequency),
            ("low_monetary", self.low_monetary),
        ]
    }
}

/// The two weighted scorecards over the same signals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorecardConfig {
    /// Churn risk 0..1. Only `p_dead` may depend on time (see the engine's docs).
    pub risk: Weights,
    /// Health 0..100 = 100 × (1 − weighted badness).
    pub health: Weights,
}

impl Default for ScorecardConfig {
    fn default() -> Self {
        ScorecardConfig {
            risk: Weights::RISK,
            health: Weights::HEALTH,
        }
    }
}

/// A rule value that cannot work, with the key that holds it (relative to `[scoring]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

fn bad(key: impl Into<String>, reason: &str) -> Result<(), InvalidConfig> {
    Err(InvalidConfig {
        key: key.into(),
        reason: reason.to_string(),
    })
}

fn positive(key: &str, v: f64) -> Result<(), InvalidConfig> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        bad(key, "must be a positive number")
    }
}

fn probability(key: &str, v: f64) -> Result<(), InvalidConfig> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        bad(key, "must be a number in (0, 1]")
    }
}

impl ScoringConfig {
    /// Checks every value; names the first bad key (relative to the `[scoring]` table).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.rule_version.trim().is_empty() {
            return bad("rule_version", "must not be empty");
        }
        for (key, v) in [
            ("new_customer_days", self.new_customer_days),
            ("reactivated_days", self.reactivated_days),
            ("at_risk_gap_min_days", self.at_risk_gap_min_days),
            ("churned_days", self.churned_days),
        ] {
            if v <= 0 {
                return bad(key, "must be a positive number of days");
            }
        }
        if self.churned_days <= self.at_risk_gap_min_days {
            return bad("churned_days", "must be longer than at_risk_gap_min_days");
        }
        if !(self.at_risk_gap_multiple.is_finite() && self.at_risk_gap_multiple >= 1.0) {
            return bad("at_risk_gap_multiple", "must be a number ≥ 1");
        }
        probability("loyal_max_risk", self.loyal_max_risk)?;
        probability("at_risk_exit_risk", self.at_risk_exit_risk)?;
        probability("at_risk_risk", self.at_risk_risk)?;
        probability("churned_risk", self.churned_risk)?;
        if self.at_risk_exit_risk > self.at_risk_risk {
            return bad("at_risk_exit_risk", "must not exceed at_risk_risk");
        }
        if self.loyal_max_risk > self.at_risk_risk {
            return bad("loyal_max_risk", "must not exceed at_risk_risk");
        }
        if self.churned_risk <= self.at_risk_risk {
            return bad("churned_risk", "must exceed at_risk_risk");
        }
        if self.segment_min_dwell_days < 0 {
            return bad("segment_min_dwell_days", "must not be negative");
        }
        if !ascending(&self.recency_cuts_days) || self.recency_cuts_days[0] < 0 {
            return bad(
                "recency_cuts_days",
                "must be 4 ascending non-negative values",
            );
        }
        if !ascending(&self.frequency_cuts) {
            return bad("frequency_cuts", "must be 4 ascending values");
        }
        if !ascending(&self.monetary_cuts_minor) {
            return bad("monetary_cuts_minor", "must be 4 ascending values");
        }
        self.validate_models()?;
        self.validate_signals()
    }

    fn validate_models(&self) -> Result<(), InvalidConfig> {
        let (m, b) = (&self.model.mbg_nbd, &self.model.bg_nbd);
        for (name, p) in [
            ("mbg_nbd", [m.r, m.alpha, m.a, m.b]),
            ("bg_nbd", [b.r, b.alpha, b.a, b.b]),
        ] {
            for (k, v) in ["r", "alpha", "a", "b"].into_iter().zip(p) {
                positive(&format!("model.{name}.{k}"), v)?;
            }
        }
        let p = &self.model.pareto_nbd;
        for (k, v) in [("r", p.r), ("alpha", p.alpha), ("s", p.s), ("beta", p.beta)] {
            positive(&format!("model.pareto_nbd.{k}"), v)?;
        }
        let g = &self.gamma_gamma;
        positive("gamma_gamma.p", g.p)?;
        positive("gamma_gamma.v", g.v)?;
        if !(g.q.is_finite() && g.q > 1.0) {
            return bad(
                "gamma_gamma.q",
                "must be a number > 1 (else mean spend is infinite)",
            );
        }
        if self.clv.horizon_days <= 0 {
            return bad("clv.horizon_days", "must be a positive number of days");
        }
        if self.clv.periods == 0 || self.clv.periods > MAX_CLV_PERIODS {
            return bad(
                "clv.periods",
                &format!("must be between 1 and {MAX_CLV_PERIODS}"),
            );
        }
        let d = self.clv.annual_discount_rate;
        if !(d.is_finite() && (0.0..10.0).contains(&d)) {
            return bad("clv.annual_discount_rate", "must be a number in [0, 10)");
        }
        let t = &self.value_tier;
        if !(t.mid_from_minor.is_finite() && t.mid_from_minor >= 0.0) {
            return bad("value_tier.mid_from_minor", "must be a non-negative number");
        }
        if !(t.high_from_minor.is_finite() && t.high_from_minor > t.mid_from_minor) {
            return bad("value_tier.high_from_minor", "must exceed mid_from_minor");
        }
        Ok(())
    }

    fn validate_signals(&self) -> Result<(), InvalidConfig> {
        let e = &self.engagement;
        positive("engagement.half_life_days", e.half_life_days)?;
        positive(
            "engagement.baseline_half_life_days",
            e.baseline_half_life_days,
        )?;
        if e.baseline_half_life_days <= e.half_life_days {
            return bad(
                "engagement.baseline_half_life_days",
                "must be longer than engagement.half_life_days",
            );
        }
        if e.session_gap_minutes <= 0 {
            return bad(
                "engagement.session_gap_minutes",
                "must be a positive number",
            );
        }
        if e.cart_abandonment_hours <= 0 {
            return bad(
                "engagement.cart_abandonment_hours",
                "must be a positive number",
            );
        }
        positive("engagement.reference", e.reference)?;
        let s = &self.support;
        positive(
            "support.first_response_reference_hours",
            s.first_response_reference_hours,
        )?;
        positive(
            "support.resolution_reference_hours",
            s.resolution_reference_hours,
        )?;
        if s.negative_streak_saturation == 0 {
            return bad("support.negative_streak_saturation", "must be at least 1");
        }
        for (table, w) in [
            ("risk", &self.scorecard.risk),
            ("health", &self.scorecard.health),
        ] {
            let mut total = 0.0;
            for (k, v) in w.entries() {
                if !(v.is_finite() && (0.0..=1000.0).contains(&v)) {
                    return bad(
                        format!("scorecard.{table}.{k}"),
                        "must be a non-negative number",
                    );
                }
                total += v;
            }
            if total <= 0.0 {
                return bad(format!("scorecard.{table}"), "needs a positive weight");
            }
        }
        Ok(())
    }
}

fn ascending<T: PartialOrd>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(ScoringConfig::default().validate(), Ok(()));
    }

    #[test]
    fn a_partial_weights_table_is_refused_rather_than_filled_with_the_wrong_defaults() {
        let err = serde_json::from_value::<ScoringConfig>(serde_json::json!({
            "scorecard": {"health": {"p_dead": 0.5}}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
        let ok: ScoringConfig =
            serde_json::from_value(serde_json::json!({"model": {"kind": "pareto_nbd"}})).unwrap();
        assert_eq!(ok.model.kind, ModelKind::ParetoNbd);
        assert_eq!(ok.scorecard, ScorecardConfig::default());
    }

    #[test]
    fn default_weights_sum_to_one() {
        for w in [Weights::RISK, Weights::HEALTH] {
            let total: f64 = w.entries().iter().map(|(_, v)| v).sum();
            assert!((total - 1.0).abs() < 1e-12, "{total}");
        }
    }

    #[test]
    fn bad_value_names_its_key() {
        let cfg = ScoringConfig {
            recency_cuts_days: [30, 14, 60, 120],
            ..ScoringConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "recency_cuts_days");
        let cfg = ScoringConfig {
            churned_days: 10,
            ..ScoringConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "churned_days");
        let mut cfg = ScoringConfig::default();
        cfg.model.mbg_nbd.alpha = -1.0;
        assert_eq!(cfg.validate().unwrap_err().key, "model.mbg_nbd.alpha");
        let mut cfg = ScoringConfig::default();
        cfg.scorecard.risk.nps = f64::NAN;
        assert_eq!(cfg.validate().unwrap_err().key, "scorecard.risk.nps");
        let cfg = ScoringConfig {
            at_risk_exit_risk: 0.7,
            ..ScoringConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "at_risk_exit_risk");
        let mut cfg = ScoringConfig::default();
        cfg.gamma_gamma.q = 1.0;
        assert_eq!(cfg.validate().unwrap_err().key, "gamma_gamma.q");
    }

    #[test]
    fn model_tables_are_the_models_own_parameters_strictly() {
        // A Gamma-Gamma table overrides field by field; a transaction model takes all four.
        let cfg: ScoringConfig = serde_json::from_str(r#"{"gamma_gamma": {"q": 4.0}}"#).unwrap();
        assert_eq!(
            cfg.gamma_gamma,
            GammaGamma {
                q: 4.0,
                ..GammaGamma::default()
            }
        );
        let partial = r#"{"model": {"mbg_nbd": {"r": 1.0}}}"#;
        assert!(serde_json::from_str::<ScoringConfig>(partial).is_err());
        let unknown = r#"{"model": {"bg_nbd": {"r": 1, "alpha": 1, "a": 1, "b": 1, "c": 1}}}"#;
        let err = serde_json::from_str::<ScoringConfig>(unknown).unwrap_err();
        assert!(err.to_string().contains("unknown field `c`"), "{err}");
    }
}
