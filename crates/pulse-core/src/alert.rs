//! Alerts as domain values. Wire shapes (JSON, protobuf, CloudEvents headers) are pulse-codec's.

use crate::engine::Signal;
use crate::event::Millis;
use crate::hash::StableHasher;
use crate::state::ValueTier;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    ChurnWarning,
    SegmentChanged,
    LifecycleStageChanged,
}

impl AlertKind {
    pub const ALL: [AlertKind; 3] = [
        AlertKind::ChurnWarning,
        AlertKind::SegmentChanged,
        AlertKind::LifecycleStageChanged,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ChurnWarning => "churn_warning",
            AlertKind::SegmentChanged => "segment_changed",
            AlertKind::LifecycleStageChanged => "lifecycle_stage_changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub name: &'static str,
    pub value: f64,
}

impl Score {
    pub fn new(name: &'static str, value: f64) -> Self {
        Score { name, value }
    }
}

/// The rule behind a stage or segment (not part of the scorecard, so its contribution is 0,
/// except `churn_risk`, whose contribution is the whole risk). The first reason of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleSignal {
    /// The risk scorecard (0..1).
    ChurnRisk,
    /// Days since the last order.
    DaysSinceLastOrder,
    /// Number of orders: 0 for a customer who never ordered.
    Orders,
    /// RFM recency score (1..5).
    RecencyScore,
    /// RFM frequency score (1..5).
    FrequencyScore,
}

impl RuleSignal {
    pub const ALL: [RuleSignal; 5] = [
        RuleSignal::ChurnRisk,
        RuleSignal::DaysSinceLastOrder,
        RuleSignal::Orders,
        RuleSignal::RecencyScore,
        RuleSignal::FrequencyScore,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RuleSignal::ChurnRisk => "churn_risk",
            RuleSignal::DaysSinceLastOrder => "days_since_last_order",
            RuleSignal::Orders => "orders",
            RuleSignal::RecencyScore => "recency_score",
            RuleSignal::FrequencyScore => "frequency_score",
        }
    }
}

/// Every signal a reason can name: a rule, or a scorecard [`Signal`]. The one list of them
/// (`docs/schemas/alert.schema.json` documents each; a test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonSignal {
    Rule(RuleSignal),
    Scorecard(Signal),
}

impl ReasonSignal {
    /// Every reason signal, rules first.
    pub fn all() -> impl Iterator<Item = ReasonSignal> {
        let rules = RuleSignal::ALL.into_iter().map(ReasonSignal::Rule);
        rules.chain(Signal::ALL.into_iter().map(ReasonSignal::Scorecard))
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonSignal::Rule(r) => r.as_str(),
            ReasonSignal::Scorecard(s) => s.as_str(),
        }
    }
}

/// One signal behind an alert: its value, how much it contributed, and a sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub signal: ReasonSignal,
    pub value: f64,
    pub contribution: f64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    pub customer_id: String,
    /// The instant the engine evaluated the customer at (partition clock, or the timer's due time).
    pub occurred_at: Millis,
    pub rule_version: String,
    /// The stage or segment before and after.
    pub from: &'static str,
    pub to: &'static str,
    pub scores: Vec<Score>,
    pub reasons: Vec<Reason>,
    /// The value tier of the customer's expected CLV; `None` while there is no CLV.
    pub value_tier: Option<ValueTier>,
    /// Every monetary figure of the alert with its currency; empty before the first order.
    pub money: Vec<Money>,
}

/// A monetary figure: whole minor units (cents for EUR) of an ISO-4217 currency.
#[derive(Debug, Clone, PartialEq)]
pub struct Money {
    /// `clv`, `expected_spend` or `net_spend`.
    pub name: &'static str,
    pub amount_minor: i64,
    pub currency: String,
}

impl Alert {
    /// The deterministic id consumers dedupe on: customer, rule, rule version, the canonical-log
    /// offset that caused the alert, and its index among the alerts of that offset.
    pub fn id(&self, cause_offset: i64, index: u32) -> String {
        let h = StableHasher::default()
            .field(self.customer_id.as_bytes())
            .field(self.kind.as_str().as_bytes())
            .field(self.rule_version.as_bytes())
            .num(cause_offset as u64)
            .num(u64::from(index))
            .finish();
        format!("{h:032x}")
    }
}
