//! Scoring and lifecycle configuration: versioned, validated without I/O.
//!
//! Every alert carries `rule_version`, so a change to any value here must change it too.

use serde::{Deserialize, Serialize};

/// The rules of the engine. Durations are whole days of event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Stamped on every alert; change it whenever a rule changes.
    pub rule_version: String,
    /// A customer is `new` for this many days after the first order.
    pub new_customer_days: i64,
    /// A reactivated customer shows as `reactivated` for this many days, then `active`.
    pub reactivated_days: i64,
    /// `loyal` needs at least this many orders (and not at risk).
    pub loyal_min_orders: u32,
    /// `at_risk` after this many silent days at the least ...
    pub at_risk_min_days: i64,
    /// ... or this multiple of the customer's own mean gap between orders, whichever is longer.
    pub at_risk_gap_multiple: f64,
    /// `churned` after this many silent days.
    pub churned_days: i64,
    /// Recency score cut points, days since the last order, ascending: ≤ c[0] scores 5 … > c[3] scores 1.
    pub recency_cuts_days: [i64; 4],
    /// Frequency score cut points, order counts, ascending: ≥ c[3] scores 5 … < c[0] scores 1.
    pub frequency_cuts: [u32; 4],
    /// Monetary score cut points, total spend in minor units, ascending.
    pub monetary_cuts_minor: [i64; 4],
    /// A segment must hold this long before a change is announced again (anti-flapping).
    pub segment_min_dwell_days: i64,
    /// Engagement decays by half over this many days.
    pub engagement_half_life_days: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            rule_version: "v1".into(),
            new_customer_days: 30,
            reactivated_days: 30,
            loyal_min_orders: 3,
            at_risk_min_days: 45,
            at_risk_gap_multiple: 2.0,
            churned_days: 180,
            recency_cuts_days: [14, 30, 60, 120],
            frequency_cuts: [2, 3, 5, 10],
            monetary_cuts_minor: [5_000, 15_000, 40_000, 100_000],
            segment_min_dwell_days: 7,
            engagement_half_life_days: 14.0,
        }
    }
}

/// A rule value that cannot work, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    pub key: &'static str,
    pub reason: String,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl ScoringConfig {
    /// Checks every value; names the first bad key (relative to the `[scoring]` table).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |key, reason: &str| {
            Err(InvalidConfig {
                key,
                reason: reason.to_string(),
            })
        };
        if self.rule_version.trim().is_empty() {
            return bad("rule_version", "must not be empty");
        }
        for (key, v) in [
            ("new_customer_days", self.new_customer_days),
            ("reactivated_days", self.reactivated_days),
            ("at_risk_min_days", self.at_risk_min_days),
            ("churned_days", self.churned_days),
        ] {
            if v <= 0 {
                return bad(key, "must be a positive number of days");
            }
        }
        if self.segment_min_dwell_days < 0 {
            return bad("segment_min_dwell_days", "must not be negative");
        }
        if self.churned_days <= self.at_risk_min_days {
            return bad("churned_days", "must be longer than at_risk_min_days");
        }
        if !(self.at_risk_gap_multiple.is_finite() && self.at_risk_gap_multiple >= 1.0) {
            return bad("at_risk_gap_multiple", "must be a number ≥ 1");
        }
        if !(self.engagement_half_life_days.is_finite() && self.engagement_half_life_days > 0.0) {
            return bad("engagement_half_life_days", "must be a positive number");
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
    }
}
