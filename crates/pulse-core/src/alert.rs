//! Alerts as domain values. Wire shapes (JSON, protobuf, CloudEvents headers) are pulse-codec's.

use crate::event::Millis;
use crate::hash::StableHasher;

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

/// One signal behind an alert: its value, how much it contributed, and a sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub signal: &'static str,
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
