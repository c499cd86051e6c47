//! Per-customer folded state: facts accumulated from events, plus what was last announced.
//!
//! Holds ids and derived values only: no free text, no names, no addresses.

use serde::{Deserialize, Serialize};

use crate::event::{day_of, Millis};

/// Version of the stored encoding of [`CustomerState`]. Bump it on any incompatible change and
/// teach the store to read the older one (or refuse it by name). 2 added
/// [`OrderFacts::recent_days`]; a schema-1 state reads with
/// [`OrderFacts::seed_recent_days`].
pub const STATE_SCHEMA_VERSION: u16 = 2;

/// Bound on [`OrderFacts::recent_days`].
pub const RECENT_PURCHASE_DAYS: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerState {
    pub first_seen_at: Millis,
    pub last_event_at: Millis,
    pub orders: OrderFacts,
    pub clicks: ClickFacts,
    pub support: SupportFacts,
    pub announced: Announced,
    /// The next instant at which this customer's outcome can change with no new event.
    pub next_timer: Option<Millis>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderFacts {
    /// Orders placed less orders cancelled.
    pub count: u32,
    /// Distinct UTC days with an order: the purchase count of the BTYD models (x = this − 1).
    pub purchase_days: u32,
    pub first_at: Option<Millis>,
    pub last_at: Option<Millis>,
    /// The latest distinct purchase days (UTC day numbers, ascending), at most
    /// [`RECENT_PURCHASE_DAYS`], so that a late order on a day between known purchase days
    /// is counted exactly when that day is new. Trusted only while it holds the latest
    /// `min(purchase_days, RECENT_PURCHASE_DAYS)` days (see [`Self::knows_recent_days`]).
    #[serde(default)]
    pub recent_days: Vec<i64>,
    /// Net spend in minor units of `currency` (the customer's first currency).
    pub total_minor: i64,
    /// Spend on the first purchase day, so Gamma-Gamma can average repeat purchases only.
    pub first_day_minor: i64,
    pub currency: Option<String>,
    /// Orders in another currency than `currency`: counted, not summed (no FX rates here).
    pub other_currency_orders: u32,
    pub cancelled: u32,
    pub refunded: u32,
}

impl OrderFacts {
    /// `true` while [`Self::recent_days`] holds every purchase day from its oldest on, so
    /// a day at or after that oldest one and not in it is a new purchase day.
    pub fn knows_recent_days(&self) -> bool {
        self.recent_days.len() == (self.purchase_days as usize).min(RECENT_PURCHASE_DAYS)
    }

    /// Records `day` as a purchase day in [`Self::recent_days`] (sorted, distinct, the
    /// latest [`RECENT_PURCHASE_DAYS`]).
    pub fn record_purchase_day(&mut self, day: i64) {
        if let Err(at) = self.recent_days.binary_search(&day) {
            self.recent_days.insert(at, day);
            if self.recent_days.len() > RECENT_PURCHASE_DAYS {
                self.recent_days.remove(0);
            }
        }
    }

    /// A schema-1 state has no [`Self::recent_days`]. Up to two purchase days they are the
    /// first and the last; with more, only the last is known, and the list stays untrusted
    /// (late orders between known days are not counted, as in schema 1) until it has grown
    /// at the top to [`RECENT_PURCHASE_DAYS`] days.
    pub fn seed_recent_days(&mut self) {
        if self.purchase_days <= 2 {
            for at in [self.first_at, self.last_at].into_iter().flatten() {
                self.record_purchase_day(day_of(at));
            }
        } else if let Some(last) = self.last_at {
            self.record_purchase_day(day_of(last));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickFacts {
    pub events: u32,
    pub sessions: u32,
    pub first_at: Option<Millis>,
    pub last_at: Option<Millis>,
    /// page_view and product_view.
    pub views: u32,
    pub searches: u32,
    pub cart_adds: u32,
    /// Exponentially decayed weighted clicks (the engagement score), valued at `engagement_at`.
    pub engagement: f64,
    /// The same with the baseline half-life (the long side of the trend).
    pub baseline: f64,
    pub engagement_at: Millis,
    /// Items in the open cart (adds less removes); the cart closes when it reaches 0.
    pub cart_items: u32,
    /// The last add to the open cart; it is abandoned once the window after it passes.
    pub cart_last_add: Option<Millis>,
    pub carts_abandoned: u32,
    pub carts_converted: u32,
}

/// A ticket opened and not yet resolved (at most [`MAX_OPEN_TICKETS`] are tracked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenTicket {
    pub ticket_id: Option<String>,
    pub opened_at: Millis,
    pub responded: bool,
}

/// Bound on tracked open tickets: beyond it the oldest is forgotten (still counted as opened).
pub const MAX_OPEN_TICKETS: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportFacts {
    pub tickets_opened: u32,
    pub tickets_resolved: u32,
    pub open: Vec<OpenTicket>,
    /// Tickets with a measured time to first response, and the sum of those times.
    pub first_responses: u32,
    pub first_response_ms: i64,
    /// Tickets with a measured time to resolution, and the sum of those times.
    pub resolutions: u32,
    pub resolution_ms: i64,
    pub csat_answers: u32,
    pub csat_positive: u32,
    pub nps_answers: u32,
    pub nps_promoters: u32,
    pub nps_detractors: u32,
    pub last_nps: Option<u8>,
    /// Feedback with a sentiment (given, or scored at the edge from text that is not kept).
    pub feedback: u32,
    pub sentiment_total: f64,
    pub last_sentiment: Option<f32>,
    /// Consecutive negative contacts (CSAT ≤ 2, NPS ≤ 6, sentiment ≤ −0.05), reset by a
    /// positive one (CSAT ≥ 4, NPS ≥ 9, sentiment ≥ 0.05); neutral ones leave it alone.
    pub negative_streak: u32,
    pub last_at: Option<Millis>,
}

/// What the customer was last announced as, so alerts fire on change only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announced {
    pub stage: Stage,
    pub stage_since: Millis,
    pub segment: Segment,
    pub segment_since: Millis,
    /// The partition clock when an order arrived while the customer was announced at_risk or
    /// churned: the order releases the hysteresis and starts the `reactivated` window.
    pub reactivated_at: Option<Millis>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Prospect,
    New,
    Active,
    Loyal,
    AtRisk,
    Churned,
    Reactivated,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Prospect,
        Stage::New,
        Stage::Active,
        Stage::Loyal,
        Stage::AtRisk,
        Stage::Churned,
        Stage::Reactivated,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prospect => "prospect",
            Stage::New => "new",
            Stage::Active => "active",
            Stage::Loyal => "loyal",
            Stage::AtRisk => "at_risk",
            Stage::Churned => "churned",
            Stage::Reactivated => "reactivated",
        }
    }
    pub fn is_risk(self) -> bool {
        matches!(self, Stage::AtRisk | Stage::Churned)
    }
}

/// Value tier from the expected CLV (cut points in `[scoring.value_tier]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueTier {
    Low,
    Mid,
    High,
}

impl ValueTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueTier::Low => "low",
            ValueTier::Mid => "mid",
            ValueTier::High => "high",
        }
    }
    /// 1 (low) … 3 (high), for numeric score maps.
    pub fn rank(self) -> u8 {
        match self {
            ValueTier::Low => 1,
            ValueTier::Mid => 2,
            ValueTier::High => 3,
        }
    }
}

/// NPS class of a 0–10 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpsClass {
    Detractor,
    Passive,
    Promoter,
}

impl NpsClass {
    /// Promoter 9–10, passive 7–8, detractor 0–6.
    pub fn of(score: u8) -> NpsClass {
        match score {
            9.. => NpsClass::Promoter,
            7 | 8 => NpsClass::Passive,
            _ => NpsClass::Detractor,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            NpsClass::Detractor => "detractor",
            NpsClass::Passive => "passive",
            NpsClass::Promoter => "promoter",
        }
    }
}

/// The RFM segment: the classic 5×5 recency/frequency grid, plus `prospect` before any order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    #[default]
    Prospect,
    New,
    Potential,
    Promising,
    Champions,
    Loyal,
    AboutToSleep,
    NeedAttention,
    Hibernating,
    AtRisk,
    CantLose,
}

impl Segment {
    pub const ALL: [Segment; 11] = [
        Segment::Prospect,
        Segment::New,
        Segment::Potential,
        Segment::Promising,
        Segment::Champions,
        Segment::Loyal,
        Segment::AboutToSleep,
        Segment::NeedAttention,
        Segment::Hibernating,
        Segment::AtRisk,
        Segment::CantLose,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Prospect => "prospect",
            Segment::New => "new",
            Segment::Potential => "potential",
            Segment::Promising => "promising",
            Segment::Champions => "champions",
            Segment::Loyal => "loyal",
            Segment::AboutToSleep => "about_to_sleep",
            Segment::NeedAttention => "need_attention",
            Segment::Hibernating => "hibernating",
            Segment::AtRisk => "at_risk",
            Segment::CantLose => "cant_lose",
        }
    }

    /// The R/F grid (rows R5..R1, columns F1..F5).
    pub fn from_rf(r: u8, f: u8) -> Segment {
        use Segment::*;
        const R5: [Segment; 5] = [New, Potential, Potential, Champions, Champions];
        const R4: [Segment; 5] = [Promising, Potential, Potential, Loyal, Loyal];
        const R3: [Segment; 5] = [AboutToSleep, AboutToSleep, NeedAttention, Loyal, Loyal];
        const R12: [Segment; 5] = [Hibernating, Hibernating, AtRisk, AtRisk, CantLose];
        let col = usize::from(f.clamp(1, 5) - 1);
        match r {
            5.. => R5[col],
            4 => R4[col],
            3 => R3[col],
            _ => R12[col],
        }
    }
}
