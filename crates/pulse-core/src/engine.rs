//! The rules: [`evolve`] folds an event into facts (no rules), [`evaluate`] turns facts into
//! signals, scores, stage and segment at an instant, and [`decide`] compares that with what
//! was announced and returns the alerts and the next timer. All functions are pure: time is a
//! parameter.
//!
//! # Signals and the scorecard
//!
//! Each signal is normalised to 0 (good) … 1 (bad) and is either measured or absent:
//!
//! | signal | value | measured when |
//! |---|---|---|
//! | `p_dead` | 1 − P(alive) of the configured BTYD model at `now` | an order exists |
//! | `engagement_low` | `ref / (e + ref)`, `e` the decayed weighted clicks | a click exists |
//! | `engagement_falling` | `1 − trend`, trend = short-half-life rate / baseline rate, clamped | a click exists |
//! | `cart_abandonment` | abandoned carts / closed carts | a cart closed |
//! | `open_tickets` | `n / (n + 1)` | a ticket was opened |
//! | `slow_first_response`, `slow_resolution` | `m / (m + ref)` of the mean hours | measured once |
//! | `csat_low` | 1 − share of 4–5 answers | a CSAT answer |
//! | `nps` | latest answer: detractor 1, passive 0.5, promoter 0 | an NPS answer |
//! | `negative_sentiment` | `max(0, −mean sentiment)` | a feedback |
//! | `negative_streak` | `min(streak, sat) / sat` | a CSAT, NPS or feedback |
//! | `low_frequency`, `low_monetary` | `(5 − score) / 4` of RFM | an order exists |
//!
//! A scorecard is `Σ wᵢ sᵢ / Σ wᵢ` over the *measured* signals (so a customer who never
//! clicked is neither punished nor rewarded for it); each term `wᵢ sᵢ / Σ wᵢ` is that signal's
//! contribution, and the contributions sum to the score. `churn_risk` uses the
//! `[scoring.scorecard.risk]` weights, `health` is `100 × (1 − score)` under the
//! `[scoring.scorecard.health]` weights.
//!
//! # Time
//!
//! **Only `p_dead` depends on the evaluation instant.** Every other signal is measured as of
//! the customer's last event of its kind (engagement is the decayed score *at the last click*,
//! not decayed further to `now`), with one exception: an open cart counts as abandoned from
//! the instant its window ends. Silence is therefore judged by the model alone, and between
//! two events `risk(t) = k · p_dead(t) + c` with `k ≥ 0` and `c` constant, which is
//! non-decreasing in `t`. The instant it reaches a threshold has a closed form for MBG/NBD and
//! BG/NBD, whose P(alive) `1 / (1 + A ((α+T)/(α+t_x))^(r+x))` inverts analytically in `T`;
//! Pareto/NBD uses a bracketed bisection on whole milliseconds (it is rarely the default).
//!
//! # Timers
//!
//! `decide` returns the next instant at which the customer's outcome (stage, segment, cart
//! state) can change with no new event: the earliest of the next relevant risk crossing, the
//! gap and silence rules, the end of the `new` or `reactivated` window, the next recency cut
//! that changes the R/F segment, the open cart's deadline and the end of a segment's dwell.
//! Each instant is rounded *up* to a whole millisecond and checked with the same `≥`
//! comparisons the evaluation uses, so evaluating at the due instant sees the change; a timer
//! is always later than `now`, so a shell that fires it can never loop.
//!
//! # Hysteresis
//!
//! `at_risk` is left without an order only once the risk is below `at_risk_exit_risk` (and
//! the gap rule no longer holds); `churned` is left only by an order. An order while at_risk
//! or churned starts `reactivated`. A changed segment is announced only after the previous
//! one held `segment_min_dwell_days`. The announced stage shapes the evaluation only from the
//! instant it was announced on, so evaluating a past instant (the profile API's `?at=`) is
//! not distorted by a later announcement.

use crate::alert::{Alert, AlertKind, Money, Reason, ReasonSignal, RuleSignal, Score};
use crate::config::{ModelKind, ScoringConfig, Weights};
use crate::event::{day_of, Body, ClickKind, Event, Millis, OrderKind, SupportKind, DAY, HOUR};
use crate::models::{discounted_clv, BgNbd, ClvSchedule, ExpectedPurchases, MbgNbd, ParetoNbd};
use crate::state::{
    ClickFacts, CustomerState, NpsClass, OpenTicket, Segment, Stage, SupportFacts, ValueTier,
    MAX_OPEN_TICKETS,
};

/// Why the engine is asked to look at a customer.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Event(&'a Event),
    /// The customer's timer (`state.next_timer`) is due.
    Timer,
}

/// What `decide` returns besides the updated state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub alerts: Vec<Alert>,
    /// When to look at this customer again if nothing happens (also stored in the state).
    pub next_timer: Option<Millis>,
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// The normalised scorecard signals, in a fixed order (the order of [`Weights::entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    PDead,
    EngagementLow,
    EngagementFalling,
    CartAbandonment,
    OpenTickets,
    SlowFirstResponse,
    SlowResolution,
    CsatLow,
    Nps,
    NegativeSentiment,
    NegativeStreak,
    LowFrequency,
    LowMonetary,
}

const SIGNALS: usize = 13;

impl Signal {
    pub const ALL: [Signal; SIGNALS] = [
        Signal::PDead,
        Signal::EngagementLow,
        Signal::EngagementFalling,
        Signal::CartAbandonment,
        Signal::OpenTickets,
        Signal::SlowFirstResponse,
        Signal::SlowResolution,
        Signal::CsatLow,
        Signal::Nps,
        Signal::NegativeSentiment,
        Signal::NegativeStreak,
        Signal::LowFrequency,
        Signal::LowMonetary,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::PDead => "p_dead",
            Signal::EngagementLow => "engagement_low",
            Signal::EngagementFalling => "engagement_falling",
            Signal::CartAbandonment => "cart_abandonment",
            Signal::OpenTickets => "open_tickets",
            Signal::SlowFirstResponse => "slow_first_response",
            Signal::SlowResolution => "slow_resolution",
            Signal::CsatLow => "csat_low",
            Signal::Nps => "nps",
            Signal::NegativeSentiment => "negative_sentiment",
            Signal::NegativeStreak => "negative_streak",
            Signal::LowFrequency => "low_frequency",
            Signal::LowMonetary => "low_monetary",
        }
    }
    pub fn weight(self, w: &Weights) -> f64 {
        match self {
            Signal::PDead => w.p_dead,
            Signal::EngagementLow => w.engagement_low,
            Signal::EngagementFalling => w.engagement_falling,
            Signal::CartAbandonment => w.cart_abandonment,
            Signal::OpenTickets => w.open_tickets,
            Signal::SlowFirstResponse => w.slow_first_response,
            Signal::SlowResolution => w.slow_resolution,
            Signal::CsatLow => w.csat_low,
            Signal::Nps => w.nps,
            Signal::NegativeSentiment => w.negative_sentiment,
            Signal::NegativeStreak => w.negative_streak,
            Signal::LowFrequency => w.low_frequency,
            Signal::LowMonetary => w.low_monetary,
        }
    }
}

/// One value per [`Signal`], `None` where the signal is not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals(pub [Option<f64>; SIGNALS]);

impl Signals {
    pub fn get(&self, s: Signal) -> Option<f64> {
        self.0[s as usize]
    }
    fn set(&mut self, s: Signal, v: f64) {
        // A value the arithmetic could not produce is not measured rather than poison.
        if v.is_finite() {
            self.0[s as usize] = Some(v.clamp(0.0, 1.0));
        }
    }
    /// `(signal, value)` for the measured ones, in signal order.
    pub fn measured(&self) -> impl Iterator<Item = (Signal, f64)> + '_ {
        Signal::ALL
            .iter()
            .filter_map(|s| self.get(*s).map(|v| (*s, v)))
    }
}

/// A scorecard with every signal but `p_dead` folded into a constant, so the score can be
/// re-evaluated cheaply (and identically) at any `p_dead`: `(w_dead p + other) / total`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Card {
    w_dead: f64,
    other: f64,
    total: f64,
}

impl Card {
    fn new(signals: &Signals, w: &Weights) -> Card {
        let mut card = Card {
            w_dead: 0.0,
            other: 0.0,
            total: 0.0,
        };
        for (s, v) in signals.measured() {
            let weight = s.weight(w);
            card.total += weight;
            if s == Signal::PDead {
                card.w_dead = weight;
            } else {
                card.other += weight * v;
            }
        }
        card
    }

    fn score(&self, p_dead: Option<f64>) -> f64 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let dead = p_dead.map_or(0.0, |p| self.w_dead * p);
        ((dead + self.other) / self.total).clamp(0.0, 1.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// The configured transaction model.
#[derive(Debug, Clone, Copy)]
enum Model {
    Mbg(MbgNbd),
    Bg(BgNbd),
    Pareto(ParetoNbd),
}

impl Model {
    fn of(cfg: &ScoringConfig) -> Model {
        let m = &cfg.model;
        match m.kind {
            ModelKind::MbgNbd => Model::Mbg(m.mbg_nbd),
            ModelKind::BgNbd => Model::Bg(m.bg_nbd),
            ModelKind::ParetoNbd => Model::Pareto(m.pareto_nbd),
        }
    }

    fn p_alive(&self, x: f64, t_x: f64, age: f64) -> f64 {
        match self {
            Model::Mbg(m) => m.p_alive(x, t_x, age),
            Model::Bg(m) => m.p_alive(x, t_x, age),
            Model::Pareto(m) => m.p_alive(x, t_x, age),
        }
    }

    /// The age `T` at which `p_dead` reaches `p` (0 < p < 1), in closed form:
    /// `odds(T) = A ((α+T)/(α+t_x))^(r+x)` with `A = a/(b+x)` (MBG/NBD) or `a/(b+x−1)`
    /// (BG/NBD, `x > 0`; at `x = 0` a BG/NBD customer is alive for sure and `p_dead` stays 0).
    /// `Err(())` for Pareto/NBD, which has no closed form; `Ok(None)` for "never".
    fn age_at_p_dead(&self, x: f64, t_x: f64, p: f64) -> Result<Option<f64>, ()> {
        let (r, alpha, big_a) = match self {
            Model::Mbg(m) => (m.r, m.alpha, m.a / (m.b + x)),
            Model::Bg(m) if x > 0.0 => (m.r, m.alpha, m.a / (m.b + x - 1.0)),
            Model::Bg(_) => return Ok(None),
            Model::Pareto(_) => return Err(()),
        };
        let odds = p / (1.0 - p);
        let age = (alpha + t_x) * ((odds / big_a).ln() / (r + x)).exp() - alpha;
        Ok(age.is_finite().then_some(age))
    }
}

impl ExpectedPurchases for Model {
    fn expected_purchases(&self, x: f64, t_x: f64, age: f64, horizon: f64) -> f64 {
        match self {
            Model::Mbg(m) => m.expected_purchases(x, t_x, age, horizon),
            Model::Bg(m) => m.expected_purchases(x, t_x, age, horizon),
            Model::Pareto(m) => m.expected_purchases(x, t_x, age, horizon),
        }
    }

    fn expected_purchases_at(&self, x: f64, t_x: f64, age: f64, horizons: &[f64], out: &mut [f64]) {
        match self {
            Model::Mbg(m) => m.expected_purchases_at(x, t_x, age, horizons, out),
            Model::Bg(m) => m.expected_purchases_at(x, t_x, age, horizons, out),
            Model::Pareto(m) => m.expected_purchases_at(x, t_x, age, horizons, out),
        }
    }
}

/// A purchase history in the BTYD conventions: `x` = distinct purchase days − 1, `t_x` = last
/// purchase − first purchase, `T` = now − first purchase, all in the model's time unit.
#[derive(Debug, Clone, Copy)]
struct History {
    first: Millis,
    last: Millis,
    x: f64,
    t_x: f64,
    unit: f64,
}

impl History {
    fn of(state: &CustomerState, cfg: &ScoringConfig) -> Option<History> {
        let o = &state.orders;
        let (first, last) = (o.first_at?, o.last_at?);
        let unit = cfg.model.time_unit.millis() as f64;
        let x = f64::from(o.purchase_days.max(1) - 1);
        Some(History {
            first,
            last,
            x,
            t_x: if x > 0.0 {
                (last - first) as f64 / unit
            } else {
                0.0
            },
            unit,
        })
    }

    fn age(&self, now: Millis) -> f64 {
        (now.max(self.last) - self.first) as f64 / self.unit
    }

    /// `1 − P(alive)` at `now`; `None` if the model cannot say (non-finite).
    fn p_dead(&self, model: &Model, now: Millis) -> Option<f64> {
        let p = model.p_alive(self.x, self.t_x, self.age(now));
        p.is_finite().then(|| (1.0 - p).clamp(0.0, 1.0))
    }

    fn silence(&self, now: Millis) -> Millis {
        (now - self.last).max(0)
    }
}

/// A customer's purchase history at an instant, as the engine scores it: the BTYD summary
/// (from the same [`History`] that gives P(alive) and the CLV) and the RFM quantities. This is
/// what `pulse fit` fits on, so a fit and the live scores read one history one way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Repeat purchases: distinct purchase days − 1.
    pub x: f64,
    /// Last purchase − first purchase (0 when `x` is 0), in the model's time unit.
    pub t_x: f64,
    /// The papers' `T`: the instant − first purchase, in the model's time unit.
    pub age: f64,
    /// Mean value of the repeat purchase days, minor units (net spend less the first day's,
    /// over `x`; 0 when `x` is 0): the Gamma-Gamma model's `m`.
    pub mean_repeat_minor: f64,
    /// Orders placed less cancelled: the frequency the RFM score cuts.
    pub orders: u32,
    /// Net spend, minor units: the monetary value the RFM score cuts.
    pub net_minor: i64,
    /// Whole days since the last order: the recency the RFM score cuts.
    pub silence_days: i64,
}

/// The customer's [`Summary`] at `now`, in `cfg.model.time_unit`; `None` before a first order.
pub fn summary(state: &CustomerState, now: Millis, cfg: &ScoringConfig) -> Option<Summary> {
    let h = History::of(state, cfg)?;
    Some(Summary {
        x: h.x,
        t_x: h.t_x,
        age: h.age(now),
        mean_repeat_minor: mean_repeat_minor(state, h.x),
        orders: state.orders.count,
        net_minor: state.orders.total_minor,
        silence_days: silence_days(h.silence(now)),
    })
}

/// The CLV the engine gives a customer with this summary under `cfg` (whose time unit the
/// summary is in): the same computation as [`evaluate`]'s.
pub fn clv_of(s: &Summary, cfg: &ScoringConfig) -> Option<Clv> {
    let unit = cfg.model.time_unit.millis() as f64;
    clv_at(
        &Model::of(cfg),
        s.x,
        s.t_x,
        s.age,
        s.mean_repeat_minor,
        unit,
        cfg,
    )
}

/// Gamma-Gamma's `m`: the mean value of the repeat purchase days.
fn mean_repeat_minor(state: &CustomerState, x: f64) -> f64 {
    let o = &state.orders;
    let repeat_minor = (o.total_minor - o.first_day_minor).max(0) as f64;
    if x > 0.0 {
        repeat_minor / x
    } else {
        0.0
    }
}

/// Whole silent days, as the recency score counts them.
fn silence_days(silence: Millis) -> i64 {
    silence / DAY
}

/// Mean time between purchase days, once there are two.
fn mean_gap(state: &CustomerState) -> Option<f64> {
    let o = &state.orders;
    match (o.first_at, o.last_at) {
        (Some(first), Some(last)) if o.purchase_days >= 2 && last > first => {
            Some((last - first) as f64 / f64::from(o.purchase_days - 1))
        }
        _ => None,
    }
}

/// The instant the gap rule fires: the last order plus `max(multiple × mean gap, floor)`.
fn gap_due(state: &CustomerState, cfg: &ScoringConfig) -> Option<Millis> {
    let gap = mean_gap(state)?;
    let floor = cfg.at_risk_gap_min_days * DAY;
    let after = ((gap * cfg.at_risk_gap_multiple).ceil() as Millis).max(floor);
    Some(state.orders.last_at? + after)
}

// ---------------------------------------------------------------------------------------------
// Evolve: facts only
// ---------------------------------------------------------------------------------------------

/// `2^(-elapsed / half_life)`, 1 for no elapsed time.
fn decay(elapsed: Millis, half_life: f64) -> f64 {
    if elapsed <= 0 {
        1.0
    } else {
        (-(elapsed as f64) / half_life).exp2()
    }
}

/// Closes the open cart as abandoned if its window has passed at `at`.
fn settle_cart(f: &mut ClickFacts, at: Millis, window: Millis) {
    if let Some(last_add) = f.cart_last_add {
        if at >= last_add + window {
            f.carts_abandoned += 1;
            f.cart_items = 0;
            f.cart_last_add = None;
        }
    }
}

/// Folds one event into the customer's facts. Holds no rules: classification is `evaluate`'s.
pub fn evolve(state: &mut CustomerState, event: &Event, cfg: &ScoringConfig) {
    let t = event.occurred_at;
    // 0 in a fresh state means "no event yet"; but 0 is also a valid event time (the Unix
    // epoch: ingest accepts any time from 1970 on), so only a state still at its default is
    // fresh, not one whose first event was at the epoch itself.
    let fresh = state.first_seen_at == 0 && *state == CustomerState::default();
    if fresh || t < state.first_seen_at {
        state.first_seen_at = t;
    }
    state.last_event_at = state.last_event_at.max(t);
    match &event.body {
        Body::Order(o) => {
            let f = &mut state.orders;
            let same_currency = f.currency.as_deref().is_none_or(|c| c == o.currency);
            match o.kind {
                OrderKind::Placed => {
                    let day = day_of(t);
                    let amount = if same_currency { o.amount_minor } else { 0 };
                    let trusted = f.knows_recent_days();
                    let known = match (f.first_at, f.last_at) {
                        (Some(first), Some(last)) => {
                            if day < day_of(first) {
                                // An earlier first day: the old one becomes a repeat purchase.
                                f.purchase_days += 1;
                                f.first_day_minor = amount;
                                true
                            } else if day == day_of(first) {
                                f.first_day_minor += amount;
                                true
                            } else if day > day_of(last) {
                                f.purchase_days += 1;
                                true
                            } else if f.recent_days.binary_search(&day).is_ok() {
                                true
                            } else if trusted
                                && f.recent_days.first().is_some_and(|oldest| day > *oldest)
                            {
                                // A late order on a day between known purchase days, new.
                                f.purchase_days += 1;
                                true
                            } else {
                                // Older than the days kept: it may or may not be a new day,
                                // and it is not counted (x can only undercount).
                                false
                            }
                        }
                        _ => {
                            f.purchase_days = 1;
                            f.first_day_minor = amount;
                            true
                        }
                    };
                    // An untrusted list (a schema-1 state) only grows at the top, so that
                    // it becomes trusted once it holds the latest days.
                    if known && (trusted || f.recent_days.last().is_none_or(|l| day > *l)) {
                        f.record_purchase_day(day);
                    }
                    f.count += 1;
                    f.first_at = Some(f.first_at.map_or(t, |first| first.min(t)));
                    f.last_at = Some(f.last_at.map_or(t, |last| last.max(t)));
                    if f.currency.is_none() {
                        f.currency = Some(o.currency.clone());
                    }
                    if same_currency {
                        f.total_minor = f.total_minor.saturating_add(o.amount_minor);
                    } else {
                        f.other_currency_orders += 1;
                    }
                    let c = &mut state.clicks;
                    settle_cart(c, t, cfg.engagement.cart_window());
                    if c.cart_last_add.is_some() {
                        c.carts_converted += 1;
                        c.cart_items = 0;
                        c.cart_last_add = None;
                    }
                }
                OrderKind::Cancelled => {
                    f.cancelled += 1;
                    f.count = f.count.saturating_sub(1);
                    if same_currency {
                        f.total_minor = (f.total_minor - o.amount_minor).max(0);
                    }
                }
                OrderKind::Refunded => {
                    f.refunded += 1;
                    if same_currency {
                        f.total_minor = (f.total_minor - o.amount_minor).max(0);
                    }
                }
            }
        }
        Body::Click(c) => evolve_click(&mut state.clicks, c.kind, t, cfg),
        Body::Support(s) => evolve_support(&mut state.support, s, t),
        Body::Erased => {}
    }
}

fn evolve_click(f: &mut ClickFacts, kind: ClickKind, t: Millis, cfg: &ScoringConfig) {
    let e = &cfg.engagement;
    if f.last_at.is_none_or(|last| t - last > e.session_gap()) {
        f.sessions += 1;
    }
    f.events += 1;
    f.first_at = Some(f.first_at.map_or(t, |first| first.min(t)));
    f.last_at = Some(f.last_at.map_or(t, |last| last.max(t)));
    settle_cart(f, t, e.cart_window());
    let weight = match kind {
        ClickKind::PageView => {
            f.views += 1;
            1.0
        }
        ClickKind::ProductView => {
            f.views += 1;
            2.0
        }
        ClickKind::Search => {
            f.searches += 1;
            2.0
        }
        ClickKind::AddToCart => {
            f.cart_adds += 1;
            f.cart_items += 1;
            f.cart_last_add = Some(f.cart_last_add.map_or(t, |last| last.max(t)));
            3.0
        }
        ClickKind::RemoveFromCart => {
            if f.cart_items > 0 {
                f.cart_items -= 1;
                if f.cart_items == 0 {
                    f.cart_last_add = None;
                }
            }
            3.0
        }
        ClickKind::CheckoutStarted => 5.0,
    };
    let short = e.half_life_days * DAY as f64;
    let long = e.baseline_half_life_days * DAY as f64;
    let at = f.engagement_at.max(t);
    let (old, new) = (at - f.engagement_at, at - t);
    f.engagement = f.engagement * decay(old, short) + weight * decay(new, short);
    f.baseline = f.baseline * decay(old, long) + weight * decay(new, long);
    f.engagement_at = at;
}

fn evolve_support(f: &mut SupportFacts, s: &crate::event::Support, t: Millis) {
    f.last_at = Some(f.last_at.map_or(t, |last| last.max(t)));
    let find = |f: &SupportFacts, pred: &dyn Fn(&OpenTicket) -> bool| match &s.ticket_id {
        Some(id) => f
            .open
            .iter()
            .position(|o| o.ticket_id.as_deref() == Some(id.as_str())),
        None => f.open.iter().position(pred),
    };
    // Some(true) negative contact, Some(false) positive, None neutral or no contact.
    let negative = match s.kind {
        SupportKind::TicketOpened => {
            f.tickets_opened += 1;
            if find(f, &|_| false).is_none() {
                if f.open.len() >= MAX_OPEN_TICKETS {
                    f.open.remove(0);
                }
                f.open.push(OpenTicket {
                    ticket_id: s.ticket_id.clone(),
                    opened_at: t,
                    responded: false,
                });
            }
            None
        }
        SupportKind::TicketFirstResponse => {
            if let Some(i) = find(f, &|o| !o.responded) {
                if !f.open[i].responded {
                    f.open[i].responded = true;
                    f.first_responses += 1;
                    f.first_response_ms += (t - f.open[i].opened_at).max(0);
                }
            }
            None
        }
        SupportKind::TicketResolved => {
            f.tickets_resolved += 1;
            if let Some(i) = find(f, &|_| true) {
                let ticket = f.open.remove(i);
                let took = (t - ticket.opened_at).max(0);
                if !ticket.responded {
                    // Resolving is the first response too.
                    f.first_responses += 1;
                    f.first_response_ms += took;
                }
                f.resolutions += 1;
                f.resolution_ms += took;
            }
            None
        }
        SupportKind::CsatSubmitted => s.score.and_then(|score| {
            f.csat_answers += 1;
            if score >= 4 {
                f.csat_positive += 1;
            }
            match score {
                0..=2 => Some(true),
                3 => None,
                _ => Some(false),
            }
        }),
        SupportKind::NpsSubmitted => s.score.and_then(|score| {
            f.nps_answers += 1;
            f.last_nps = Some(score);
            match NpsClass::of(score) {
                NpsClass::Promoter => {
                    f.nps_promoters += 1;
                    Some(false)
                }
                NpsClass::Passive => None,
                NpsClass::Detractor => {
                    f.nps_detractors += 1;
                    Some(true)
                }
            }
        }),
        SupportKind::FeedbackSubmitted => s.sentiment.filter(|v| v.is_finite()).and_then(|v| {
            let v = v.clamp(-1.0, 1.0);
            f.feedback += 1;
            f.sentiment_total += f64::from(v);
            f.last_sentiment = Some(v);
            if v <= -0.05 {
                Some(true)
            } else if v >= 0.05 {
                Some(false)
            } else {
                None
            }
        }),
    };
    match negative {
        Some(true) => f.negative_streak += 1,
        Some(false) => f.negative_streak = 0,
        None => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Assess: the cheap part of an evaluation, done for every event and timer
// ---------------------------------------------------------------------------------------------

/// The rule that put a customer in their stage (used for the alert's first reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageCause {
    NoOrder,
    ChurnRisk,
    Silence,
    StillChurned,
    Gap,
    StillAtRisk,
    Reactivated,
    NewCustomer,
    LoyalRule,
    Active,
}

#[derive(Debug, Clone)]
struct Assessment {
    stage: Stage,
    cause: StageCause,
    segment: Segment,
    r: u8,
    f: u8,
    m: u8,
    history: Option<History>,
    model: Model,
    p_dead: Option<f64>,
    signals: Signals,
    /// The engagement trend, as of the last click.
    trend: Option<f64>,
    risk_card: Card,
    risk: f64,
    gap_due: Option<Millis>,
    /// The open cart's deadline if it is still in the future.
    cart_deadline: Option<Millis>,
}

/// `1 + #(value ≥ cᵢ)`: 1..=5.
fn score_ascending<T: PartialOrd>(value: T, cuts: &[T; 4]) -> u8 {
    1 + cuts.iter().filter(|c| value >= **c).count() as u8
}

/// Recency score after `silence`: 5 while the silent days are ≤ c[0], … 1 past c[3].
fn recency_score(silence: Millis, cfg: &ScoringConfig) -> u8 {
    let days = silence_days(silence);
    5 - cfg.recency_cuts_days.iter().filter(|c| days > **c).count() as u8
}

fn signals(
    state: &CustomerState,
    now: Millis,
    (f_score, m_score): (u8, u8),
    trend: Option<f64>,
    cfg: &ScoringConfig,
) -> Signals {
    let mut s = Signals::default();
    let c = &state.clicks;
    let e = &cfg.engagement;
    if c.events > 0 {
        s.set(
            Signal::EngagementLow,
            e.reference / (c.engagement + e.reference),
        );
        if let Some(trend) = trend {
            s.set(Signal::EngagementFalling, 1.0 - trend);
        }
    }
    let due = c.cart_last_add.is_some_and(|t| now >= t + e.cart_window());
    let abandoned = c.carts_abandoned + u32::from(due);
    let closed = abandoned + c.carts_converted;
    if closed > 0 {
        s.set(
            Signal::CartAbandonment,
            f64::from(abandoned) / f64::from(closed),
        );
    }
    let sup = &state.support;
    let sc = &cfg.support;
    if sup.tickets_opened > 0 {
        let n = sup.open.len() as f64;
        s.set(Signal::OpenTickets, n / (n + 1.0));
    }
    if let Some(h) = mean_hours(sup.first_response_ms, sup.first_responses) {
        s.set(
            Signal::SlowFirstResponse,
            h / (h + sc.first_response_reference_hours),
        );
    }
    if let Some(h) = mean_hours(sup.resolution_ms, sup.resolutions) {
        s.set(
            Signal::SlowResolution,
            h / (h + sc.resolution_reference_hours),
        );
    }
    if sup.csat_answers > 0 {
        s.set(
            Signal::CsatLow,
            1.0 - f64::from(sup.csat_positive) / f64::from(sup.csat_answers),
        );
    }
    if let Some(nps) = sup.last_nps {
        s.set(
            Signal::Nps,
            match NpsClass::of(nps) {
                NpsClass::Promoter => 0.0,
                NpsClass::Passive => 0.5,
                NpsClass::Detractor => 1.0,
            },
        );
    }
    if sup.feedback > 0 {
        s.set(
            Signal::NegativeSentiment,
            -(sup.sentiment_total / f64::from(sup.feedback)),
        );
    }
    if sup.csat_answers + sup.nps_answers + sup.feedback > 0 {
        let sat = sc.negative_streak_saturation;
        s.set(
            Signal::NegativeStreak,
            f64::from(sup.negative_streak.min(sat)) / f64::from(sat),
        );
    }
    if state.orders.first_at.is_some() {
        s.set(Signal::LowFrequency, f64::from(5 - f_score) / 4.0);
        s.set(Signal::LowMonetary, f64::from(5 - m_score) / 4.0);
    }
    s
}

/// Click rate over the last `half_life` relative to the baseline rate, as of the last click
/// (1 = steady, < 1 falling). Each decayed sum is divided by its own window since the first
/// click, `∫₀ᴬ 2^(−u/h) du ∝ h (1 − 2^(−A/h))`, so a steady customer scores 1 however short
/// their history (undivided, a young history would look like a rise).
fn trend(c: &ClickFacts, cfg: &ScoringConfig) -> Option<f64> {
    let span = (c.engagement_at - c.first_at?) as f64 / DAY as f64;
    if span <= 0.0 || c.baseline <= 0.0 {
        return None;
    }
    let window = |h: f64| -h * (-span * std::f64::consts::LN_2 / h).exp_m1();
    let t = (c.engagement / window(cfg.engagement.half_life_days))
        / (c.baseline / window(cfg.engagement.baseline_half_life_days));
    t.is_finite().then_some(t)
}

fn mean_hours(total_ms: i64, n: u32) -> Option<f64> {
    (n > 0).then(|| total_ms as f64 / f64::from(n) / HOUR as f64)
}

fn assess(state: &CustomerState, now: Millis, cfg: &ScoringConfig) -> Assessment {
    let o = &state.orders;
    let model = Model::of(cfg);
    let history = History::of(state, cfg);
    let f = score_ascending(o.count, &cfg.frequency_cuts);
    let m = score_ascending(o.total_minor, &cfg.monetary_cuts_minor);
    let r = history.map_or(1, |h| recency_score(h.silence(now), cfg));
    let trend = trend(&state.clicks, cfg);
    let mut signals = signals(state, now, (f, m), trend, cfg);
    let p_dead = history.and_then(|h| h.p_dead(&model, now));
    if let Some(p) = p_dead {
        signals.set(Signal::PDead, p);
    }
    let risk_card = Card::new(&signals, &cfg.scorecard.risk);
    let risk = risk_card.score(p_dead);
    let gap_due = gap_due(state, cfg);
    let (stage, cause) = stage_at(state, history.as_ref(), risk, gap_due, now, cfg);
    let window = cfg.engagement.cart_window();
    Assessment {
        stage,
        cause,
        segment: if history.is_some() {
            Segment::from_rf(r, f)
        } else {
            Segment::Prospect
        },
        r,
        f,
        m,
        history,
        model,
        p_dead,
        signals,
        trend,
        risk_card,
        risk,
        gap_due,
        cart_deadline: state
            .clicks
            .cart_last_add
            .map(|t| t + window)
            .filter(|d| *d > now),
    }
}

/// The lifecycle rules (see the module docs for hysteresis).
fn stage_at(
    state: &CustomerState,
    history: Option<&History>,
    risk: f64,
    gap_due: Option<Millis>,
    now: Millis,
    cfg: &ScoringConfig,
) -> (Stage, StageCause) {
    use StageCause as C;
    let Some(h) = history else {
        return (Stage::Prospect, C::NoOrder);
    };
    let a = &state.announced;
    // What was announced shapes the evaluation only from the instant it was announced on.
    let prev = (now >= a.stage_since).then_some(a.stage);
    let reactivated_at = a.reactivated_at.filter(|r| *r <= now);
    let released =
        prev.is_some_and(Stage::is_risk) && reactivated_at.is_some_and(|r| r >= a.stage_since);

    let silent_churn = h.silence(now) >= cfg.churned_days * DAY;
    let risk_churn = risk >= cfg.churned_risk;
    if risk_churn {
        return (Stage::Churned, C::ChurnRisk);
    }
    if silent_churn {
        return (Stage::Churned, C::Silence);
    }
    if prev == Some(Stage::Churned) && !released {
        return (Stage::Churned, C::StillChurned);
    }
    let risk_at = risk >= cfg.at_risk_risk;
    let gap = gap_due.is_some_and(|d| now >= d);
    if risk_at {
        return (Stage::AtRisk, C::ChurnRisk);
    }
    if gap {
        return (Stage::AtRisk, C::Gap);
    }
    if prev == Some(Stage::AtRisk) && !released && risk >= cfg.at_risk_exit_risk {
        return (Stage::AtRisk, C::StillAtRisk);
    }
    let in_window = reactivated_at.is_some_and(|r| now < r + cfg.reactivated_days * DAY);
    if in_window && (released || prev == Some(Stage::Reactivated) || prev.is_none()) {
        return (Stage::Reactivated, C::Reactivated);
    }
    if now < h.first + cfg.new_customer_days * DAY {
        return (Stage::New, C::NewCustomer);
    }
    if state.orders.count >= cfg.loyal_min_orders && risk < cfg.loyal_max_risk {
        return (Stage::Loyal, C::LoyalRule);
    }
    (Stage::Active, C::Active)
}

// ---------------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------------

/// Far enough: a crossing later than this is treated as never.
const HORIZON: Millis = 200 * 365 * DAY;

/// Below this distance (ms) above a whole millisecond, the closed-form crossing is re-checked
/// one millisecond earlier: the formula is accurate to ~1e-5 ms, so farther from a boundary
/// its ceiling is the exact first millisecond.
const ROUNDING_MARGIN: f64 = 0.01;

/// The first whole millisecond after `now` at which the risk reaches `theta`, or `None`.
/// `None` too when it cannot come before `bound` (another candidate that is earlier anyway),
/// which saves the verification on most events.
fn risk_crossing(a: &Assessment, theta: f64, now: Millis, bound: Option<Millis>) -> Option<Millis> {
    let h = a.history?;
    let card = a.risk_card;
    if card.w_dead <= 0.0 || a.risk >= theta {
        return None;
    }
    let risk_at = |t: Millis| card.score(h.p_dead(&a.model, t));
    let reached = |t: Millis| risk_at(t) >= theta;
    let target = (theta * card.total - card.other) / card.w_dead;
    if target > 1.0 {
        return None;
    }
    // Close to p_dead = 1 the inverse is ill-conditioned: verify both sides there.
    let sensitive = target > 0.999;
    let limit = now.saturating_add(HORIZON);
    let guess = match a
        .model
        .age_at_p_dead(h.x, h.t_x, target.max(f64::MIN_POSITIVE))
    {
        Ok(None) => return None,
        Ok(Some(age)) => {
            let offset = age * h.unit;
            if offset >= (limit - h.first) as f64 {
                return None;
            }
            let ceil = offset.ceil();
            let guess = h.first + ceil as Millis;
            if guess <= now {
                (now + 1, true)
            } else {
                if !sensitive && bound.is_some_and(|b| guess - 1 > b) {
                    return None;
                }
                (guess, sensitive || offset - (ceil - 1.0) <= ROUNDING_MARGIN)
            }
        }
        Err(()) => (now + 1, true),
    };
    let (guess, check_earlier) = guess;
    if reached(guess) {
        if guess - 1 <= now || !check_earlier || !reached(guess - 1) {
            return Some(guess);
        }
        return Some(bisect(now, guess, &reached));
    }
    // Gallop up to a bracket, then bisect.
    let (mut lo, mut step) = (guess, DAY.min(HOUR.max(guess - now)));
    loop {
        let hi = lo.saturating_add(step).min(limit);
        if reached(hi) {
            return Some(bisect(lo, hi, &reached));
        }
        if hi >= limit || bound.is_some_and(|b| hi > b) {
            return None;
        }
        lo = hi;
        step = step.saturating_mul(2);
    }
}

/// The smallest `t` in `(lo, hi]` with `reached(t)`, given `!reached(lo)` and `reached(hi)`.
fn bisect(mut lo: Millis, mut hi: Millis, reached: &dyn Fn(Millis) -> bool) -> Millis {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The earliest instant after `now` at which the assessment can differ with no new event.
fn next_change(
    state: &CustomerState,
    a: &Assessment,
    now: Millis,
    cfg: &ScoringConfig,
) -> Option<Millis> {
    let mut next: Option<Millis> = None;
    let mut consider = |t: Option<Millis>| {
        if let Some(t) = t.filter(|t| *t > now) {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    };
    consider(a.cart_deadline);
    let Some(h) = a.history else {
        return consider(None);
    };
    // The next recency cut that changes the R/F segment.
    consider(
        cfg.recency_cuts_days
            .iter()
            .map(|c| h.last + (c + 1) * DAY)
            .find(|t| {
                *t > now && Segment::from_rf(recency_score(h.silence(*t), cfg), a.f) != a.segment
            }),
    );
    let theta = match a.stage {
        Stage::Churned | Stage::Prospect => return consider(None),
        Stage::AtRisk => cfg.churned_risk,
        Stage::Loyal => cfg.loyal_max_risk,
        _ => cfg.at_risk_risk,
    };
    consider(Some(h.last + cfg.churned_days * DAY));
    let window_end = match a.stage {
        Stage::New => Some(h.first + cfg.new_customer_days * DAY),
        Stage::Reactivated => state
            .announced
            .reactivated_at
            .map(|r| r + cfg.reactivated_days * DAY),
        _ => None,
    };
    consider(window_end);
    if a.stage != Stage::AtRisk {
        consider(a.gap_due);
    }
    // Only the lowest threshold above the current risk matters: the risk only grows with
    // time, and once it is crossed the next timer is computed from there.
    let theta = if a.risk >= theta {
        cfg.churned_risk
    } else {
        theta
    };
    let bound = consider(None);
    consider(risk_crossing(a, theta, now, bound))
}

// ---------------------------------------------------------------------------------------------
// Evaluate: everything, for the profile API and for alerts
// ---------------------------------------------------------------------------------------------

/// Expected value of a customer over the CLV horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clv {
    /// Expected purchases (purchase days) over the horizon.
    pub expected_purchases: f64,
    /// Gamma-Gamma expected spend per purchase, minor units.
    pub expected_spend_minor: f64,
    /// Discounted CLV over the horizon, minor units.
    pub clv_minor: f64,
    pub tier: ValueTier,
}

/// Support health, as facts (the scorecard uses the normalised signals).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SupportHealth {
    pub open_tickets: u32,
    pub oldest_open_ticket_days: Option<f64>,
    pub mean_first_response_hours: Option<f64>,
    pub mean_resolution_hours: Option<f64>,
    /// Share of CSAT answers that were 4 or 5.
    pub csat_share: Option<f64>,
    pub nps_latest: Option<u8>,
    pub nps_class: Option<NpsClass>,
    /// Mean feedback sentiment, -1..1.
    pub sentiment: Option<f64>,
    pub negative_streak: u32,
}

/// Scores and classification of a customer at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub at: Millis,
    pub stage: Stage,
    /// The rule behind `stage`.
    pub cause: StageCause,
    pub segment: Segment,
    pub recency_score: u8,
    pub frequency_score: u8,
    pub monetary_score: u8,
    pub days_since_last_order: Option<f64>,
    pub mean_gap_days: Option<f64>,
    pub p_alive: Option<f64>,
    /// 0..1, the risk scorecard.
    pub churn_risk: f64,
    /// 0..100, the health scorecard.
    pub health: f64,
    pub signals: Signals,
    /// Each signal's part of `churn_risk`; they sum to it.
    pub contributions: Signals,
    pub clv: Option<Clv>,
    /// The engagement score as of the last click.
    pub engagement: Option<f64>,
    /// Short-half-life click rate over the baseline rate, as of the last click (1 = steady).
    pub engagement_trend: Option<f64>,
    pub support: SupportHealth,
    /// The earliest instant after `at` at which this evaluation can differ with no new event.
    pub next_change: Option<Millis>,
}

/// Evaluates the customer at `now` (which should not precede the events folded so far).
pub fn evaluate(state: &CustomerState, now: Millis, cfg: &ScoringConfig) -> Evaluation {
    let a = assess(state, now, cfg);
    let next_change = next_change(state, &a, now, cfg);
    finish(state, &a, now, next_change, cfg)
}

fn finish(
    state: &CustomerState,
    a: &Assessment,
    now: Millis,
    next_change: Option<Millis>,
    cfg: &ScoringConfig,
) -> Evaluation {
    let card = a.risk_card;
    let mut contributions = Signals::default();
    if card.total > 0.0 {
        for (s, v) in a.signals.measured() {
            contributions.0[s as usize] = Some(s.weight(&cfg.scorecard.risk) * v / card.total);
        }
    }
    let health_card = Card::new(&a.signals, &cfg.scorecard.health);
    let c = &state.clicks;
    let sup = &state.support;
    Evaluation {
        at: now,
        stage: a.stage,
        cause: a.cause,
        segment: a.segment,
        recency_score: a.r,
        frequency_score: a.f,
        monetary_score: a.m,
        days_since_last_order: a.history.map(|h| h.silence(now) as f64 / DAY as f64),
        mean_gap_days: mean_gap(state).map(|g| g / DAY as f64),
        p_alive: a.p_dead.map(|p| 1.0 - p),
        churn_risk: a.risk,
        health: 100.0 * (1.0 - health_card.score(a.p_dead)),
        signals: a.signals,
        contributions,
        clv: a.history.and_then(|h| clv(state, &h, &a.model, now, cfg)),
        engagement: (c.events > 0).then_some(c.engagement),
        engagement_trend: a.trend,
        support: SupportHealth {
            open_tickets: sup.open.len() as u32,
            oldest_open_ticket_days: sup
                .open
                .iter()
                .map(|t| t.opened_at)
                .min()
                .map(|t| (now - t).max(0) as f64 / DAY as f64),
            mean_first_response_hours: mean_hours(sup.first_response_ms, sup.first_responses),
            mean_resolution_hours: mean_hours(sup.resolution_ms, sup.resolutions),
            csat_share: (sup.csat_answers > 0)
                .then(|| f64::from(sup.csat_positive) / f64::from(sup.csat_answers)),
            nps_latest: sup.last_nps,
            nps_class: sup.last_nps.map(NpsClass::of),
            sentiment: (sup.feedback > 0).then(|| sup.sentiment_total / f64::from(sup.feedback)),
            negative_streak: sup.negative_streak,
        },
        next_change,
    }
}

/// A customer's purchase history in the model's terms at `now`, with the configured model's
/// conditional expected purchases (purchase days) in `(now, now + h]` for each `h` of
/// `horizons` (milliseconds): the same history and model `evaluate` uses for P(alive) and CLV,
/// for the backtest's forecasts. `None` before the first order.
pub fn expected_purchases(
    state: &CustomerState,
    now: Millis,
    horizons: &[Millis],
    cfg: &ScoringConfig,
) -> Option<PurchaseForecast> {
    let h = History::of(state, cfg)?;
    let model = Model::of(cfg);
    let units: Vec<f64> = horizons.iter().map(|m| *m as f64 / h.unit).collect();
    let mut expected = vec![0.0; units.len()];
    let age = h.age(now);
    model.expected_purchases_at(h.x, h.t_x, age, &units, &mut expected);
    Some(PurchaseForecast {
        x: h.x,
        t_x: h.t_x,
        age,
        expected,
    })
}

/// What [`expected_purchases`] returns: the BTYD summary `(x, t_x, T)` in the model's time
/// unit and one expectation per horizon asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseForecast {
    /// Repeat purchase days.
    pub x: f64,
    pub t_x: f64,
    /// `T`: now − first purchase.
    pub age: f64,
    pub expected: Vec<f64>,
}

/// Discounted CLV (model × Gamma-Gamma) and the value tier it falls in.
fn clv(
    state: &CustomerState,
    h: &History,
    model: &Model,
    now: Millis,
    cfg: &ScoringConfig,
) -> Option<Clv> {
    let mean_repeat = mean_repeat_minor(state, h.x);
    clv_at(model, h.x, h.t_x, h.age(now), mean_repeat, h.unit, cfg)
}

/// [`clv`] from the summary's numbers (`unit`: the model's time unit in ms).
fn clv_at(
    model: &Model,
    x: f64,
    t_x: f64,
    age: f64,
    mean_repeat: f64,
    unit: f64,
    cfg: &ScoringConfig,
) -> Option<Clv> {
    let spend = cfg.gamma_gamma;
    let expected_spend_minor = spend.conditional_expected_average_value(x, mean_repeat);
    let c = &cfg.clv;
    let horizon = (c.horizon_days * DAY) as f64 / unit;
    let period_days = c.horizon_days as f64 / f64::from(c.periods);
    let schedule = ClvSchedule {
        periods: c.periods,
        period_length: horizon / f64::from(c.periods),
        discount_rate: (1.0 + c.annual_discount_rate).powf(period_days / 365.0) - 1.0,
    };
    let forecast = discounted_clv(model, x, t_x, age, expected_spend_minor, &schedule);
    let (expected_purchases, clv_minor) = (forecast.expected_purchases, forecast.value);
    if !(clv_minor.is_finite()
        && expected_purchases.is_finite()
        && expected_spend_minor.is_finite())
    {
        return None;
    }
    let t = &cfg.value_tier;
    Some(Clv {
        expected_purchases,
        expected_spend_minor,
        clv_minor,
        tier: value_tier(clv_minor, t.mid_from_minor, t.high_from_minor),
    })
}

fn value_tier(clv_minor: f64, mid_from: f64, high_from: f64) -> ValueTier {
    if clv_minor >= high_from {
        ValueTier::High
    } else if clv_minor >= mid_from {
        ValueTier::Mid
    } else {
        ValueTier::Low
    }
}

// ---------------------------------------------------------------------------------------------
// Decide
// ---------------------------------------------------------------------------------------------

/// Applies `input` to the customer at `now` and returns the alerts it causes and the next timer.
///
/// `now` is the partition clock (event time); for a timer it is the instant the timer was due.
pub fn decide(
    state: &mut CustomerState,
    customer_id: &str,
    input: Input<'_>,
    now: Millis,
    cfg: &ScoringConfig,
) -> Decision {
    settle_cart(&mut state.clicks, now, cfg.engagement.cart_window());
    if let Input::Event(event) = input {
        let before = state.announced.stage;
        evolve(state, event, cfg);
        if let Body::Order(o) = &event.body {
            if o.kind == OrderKind::Placed && before.is_risk() {
                state.announced.reactivated_at = Some(now.max(state.announced.stage_since));
            }
        }
    }
    let a = assess(state, now, cfg);
    let mut next = next_change(state, &a, now, cfg);

    let announced = &state.announced;
    let stage_changed = a.stage != announced.stage;
    let dwell = cfg.segment_min_dwell_days * DAY;
    let segment_changed = a.segment != announced.segment;
    let dwell_over =
        announced.segment == Segment::Prospect || now - announced.segment_since >= dwell;
    if segment_changed && !dwell_over {
        let due = announced.segment_since + dwell;
        next = Some(next.map_or(due, |n| n.min(due)));
    }
    let announce_segment = segment_changed && dwell_over;

    let mut alerts = Vec::new();
    if stage_changed || announce_segment {
        let eval = finish(state, &a, now, next, cfg);
        let scores = scores(&eval);
        let money = money(state, &eval);
        let value_tier = eval.clv.map(|c| c.tier);
        let from_stage = announced.stage;
        let from_segment = announced.segment;
        let alert = |kind, from, to, reasons| Alert {
            kind,
            customer_id: customer_id.to_string(),
            occurred_at: eval.at,
            rule_version: cfg.rule_version.clone(),
            from,
            to,
            scores: scores.clone(),
            reasons,
            value_tier,
            money: money.clone(),
        };
        if stage_changed {
            // A churn warning and the stage change it comes with share their reasons.
            let why = reasons(&eval, AlertKind::LifecycleStageChanged, cfg);
            let (from, to) = (from_stage.as_str(), a.stage.as_str());
            if a.stage.is_risk() && !from_stage.is_risk() {
                alerts.push(alert(AlertKind::ChurnWarning, from, to, why.clone()));
            }
            alerts.push(alert(AlertKind::LifecycleStageChanged, from, to, why));
        }
        if announce_segment {
            let why = reasons(&eval, AlertKind::SegmentChanged, cfg);
            let (from, to) = (from_segment.as_str(), a.segment.as_str());
            alerts.push(alert(AlertKind::SegmentChanged, from, to, why));
        }
    }
    let announced = &mut state.announced;
    if stage_changed {
        announced.stage = a.stage;
        announced.stage_since = now;
    }
    if announce_segment {
        announced.segment = a.segment;
        announced.segment_since = now;
    }
    state.next_timer = next;
    Decision {
        alerts,
        next_timer: next,
    }
}

// ---------------------------------------------------------------------------------------------
// Alerts, reasons, scores
// ---------------------------------------------------------------------------------------------

/// Why `eval` is what it is, for an alert of `kind`: first the rule that fired (for a risk
/// threshold its contribution is the whole risk; for the silence, gap, window and RFM rules it
/// is 0, as they are not part of the scorecard), then every measured, weighted signal with its
/// contribution to the churn risk, largest first. The signal contributions sum to the risk.
pub fn reasons(eval: &Evaluation, kind: AlertKind, cfg: &ScoringConfig) -> Vec<Reason> {
    let mut out = Vec::with_capacity(SIGNALS + 2);
    match kind {
        AlertKind::SegmentChanged => {
            let days = eval.days_since_last_order.unwrap_or(0.0);
            out.push(Reason {
                signal: ReasonSignal::Rule(RuleSignal::RecencyScore),
                value: f64::from(eval.recency_score),
                contribution: 0.0,
                text: format!(
                    "recency score {} of 5: last order {} days ago",
                    eval.recency_score,
                    fixed(days, 0)
                ),
            });
            out.push(Reason {
                signal: ReasonSignal::Rule(RuleSignal::FrequencyScore),
                value: f64::from(eval.frequency_score),
                contribution: 0.0,
                text: format!("frequency score {} of 5", eval.frequency_score),
            });
        }
        _ => out.push(stage_reason(eval, cfg)),
    }
    let rules = out.len();
    for (s, v) in eval.signals.measured() {
        let contribution = eval.contributions.get(s).unwrap_or(0.0);
        if s.weight(&cfg.scorecard.risk) > 0.0 {
            out.push(Reason {
                signal: ReasonSignal::Scorecard(s),
                value: v,
                contribution,
                text: signal_text(s, v, eval, cfg),
            });
        }
    }
    out[rules..].sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
    out
}

fn stage_reason(eval: &Evaluation, cfg: &ScoringConfig) -> Reason {
    let days = eval.days_since_last_order.unwrap_or(0.0);
    let (d, risk_2) = (fixed(days, 0), fixed(eval.churn_risk, 2));
    let risk = |text: String| Reason {
        signal: ReasonSignal::Rule(RuleSignal::ChurnRisk),
        value: eval.churn_risk,
        contribution: eval.churn_risk,
        text,
    };
    let silence = |text: String| Reason {
        signal: ReasonSignal::Rule(RuleSignal::DaysSinceLastOrder),
        value: days,
        contribution: 0.0,
        text,
    };
    match eval.cause {
        StageCause::ChurnRisk if eval.stage == Stage::Churned => risk(format!(
            "churn risk {risk_2} reached the churned threshold {}",
            fixed(cfg.churned_risk, 2)
        )),
        StageCause::ChurnRisk => risk(format!(
            "churn risk {risk_2} reached the at_risk threshold {}",
            fixed(cfg.at_risk_risk, 2)
        )),
        StageCause::StillAtRisk => risk(format!(
            "churn risk {risk_2} has not fallen below {} since the customer became at risk",
            fixed(cfg.at_risk_exit_risk, 2)
        )),
        StageCause::Silence => silence(format!(
            "no order for {d} days (churned after {} silent days)",
            cfg.churned_days
        )),
        StageCause::StillChurned => silence(format!(
            "no order for {d} days; churned until the next order"
        )),
        StageCause::Gap => {
            let gap = eval.mean_gap_days.unwrap_or(0.0);
            silence(format!(
                "no order for {d} days, {}× the usual {} days between orders",
                fixed(if gap > 0.0 { days / gap } else { 0.0 }, 1),
                fixed(gap, 1)
            ))
        }
        StageCause::Reactivated => silence(format!(
            "ordered again after being at risk or churned; last order {d} days ago"
        )),
        StageCause::NewCustomer => silence(format!(
            "first order within the last {} days",
            cfg.new_customer_days
        )),
        StageCause::LoyalRule => risk(format!(
            "{} or more orders and churn risk {risk_2} below {}",
            cfg.loyal_min_orders,
            fixed(cfg.loyal_max_risk, 2)
        )),
        StageCause::Active => risk(format!("churn risk {risk_2}; last order {d} days ago")),
        StageCause::NoOrder => Reason {
            signal: ReasonSignal::Rule(RuleSignal::Orders),
            value: 0.0,
            contribution: 0.0,
            text: "no order yet".to_string(),
        },
    }
}

fn signal_text(s: Signal, v: f64, eval: &Evaluation, cfg: &ScoringConfig) -> String {
    let sup = &eval.support;
    match s {
        Signal::PDead => format!(
            "{} P(alive) {} after {} days without an order",
            cfg.model.kind.as_str(),
            fixed(1.0 - v, 2),
            fixed(eval.days_since_last_order.unwrap_or(0.0), 0)
        ),
        Signal::EngagementLow => format!(
            "engagement {} at the last click (reference {})",
            fixed(eval.engagement.unwrap_or(0.0), 1),
            fixed(cfg.engagement.reference, 0)
        ),
        Signal::EngagementFalling => format!(
            "click rate at {}% of its baseline",
            fixed(100.0 * eval.engagement_trend.unwrap_or(1.0), 0)
        ),
        Signal::CartAbandonment => format!("{}% of carts abandoned", fixed(100.0 * v, 0)),
        Signal::OpenTickets => format!("{} support tickets open", sup.open_tickets),
        Signal::SlowFirstResponse => format!(
            "first response after {} hours on average",
            fixed(sup.mean_first_response_hours.unwrap_or(0.0), 0)
        ),
        Signal::SlowResolution => format!(
            "tickets resolved after {} hours on average",
            fixed(sup.mean_resolution_hours.unwrap_or(0.0), 0)
        ),
        Signal::CsatLow => format!(
            "{}% of CSAT answers were 4 or 5",
            fixed(100.0 * sup.csat_share.unwrap_or(0.0), 0)
        ),
        Signal::Nps => match (sup.nps_latest, sup.nps_class) {
            (Some(n), Some(c)) => format!("latest NPS {n} ({})", c.as_str()),
            _ => "no NPS answer".to_string(),
        },
        Signal::NegativeSentiment => format!(
            "feedback sentiment {} on average",
            fixed(sup.sentiment.unwrap_or(0.0), 2)
        ),
        Signal::NegativeStreak => format!("{} negative contacts in a row", sup.negative_streak),
        Signal::LowFrequency => format!("frequency score {} of 5", eval.frequency_score),
        Signal::LowMonetary => format!("monetary score {} of 5", eval.monetary_score),
    }
}

/// `v` rounded to `decimals` places (half away from zero) for a reason's text. Integer
/// arithmetic instead of `{:.N}`, whose exact decimal expansion (Grisu with a bignum fallback)
/// was the largest single cost of an alert; values beyond ±1e15 and non-finite ones use `{:.N}`.
fn fixed(v: f64, decimals: u8) -> Fixed {
    Fixed { v, decimals }
}

#[derive(Clone, Copy)]
struct Fixed {
    v: f64,
    decimals: u8,
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = usize::from(self.decimals.min(6));
        let unit = 10u64.pow(d as u32);
        let scaled = (self.v * unit as f64).round();
        if scaled.is_nan() || scaled.abs() >= 1e15 {
            return write!(f, "{:.*}", d, self.v);
        }
        let n = scaled.abs() as u64;
        let sign = if scaled < 0.0 { "-" } else { "" };
        if d == 0 {
            write!(f, "{sign}{n}")
        } else {
            write!(f, "{sign}{}.{:0d$}", n / unit, n % unit)
        }
    }
}

/// The monetary figures of an alert, each with the customer's currency (that of their first
/// order; orders in another currency are counted, not summed): net spend so far and, when
/// there is a CLV, the expected CLV and spend per purchase, rounded to whole minor units.
/// None before the first order.
pub fn money(state: &CustomerState, eval: &Evaluation) -> Vec<Money> {
    let Some(currency) = &state.orders.currency else {
        return Vec::new();
    };
    let figure = |name, amount_minor| Money {
        name,
        amount_minor,
        currency: currency.clone(),
    };
    let mut out = vec![figure("net_spend", state.orders.total_minor)];
    if let Some(c) = eval.clv {
        // Finite by construction (`clv_at`); `as` saturates at the i64 bounds.
        out.push(figure("clv", c.clv_minor.round() as i64));
        out.push(figure(
            "expected_spend",
            c.expected_spend_minor.round() as i64,
        ));
    }
    out
}

/// The scores that go on every alert (and the profile API), in a fixed order; absent values
/// are left out. Money is in minor units of the customer's currency ([`money`] names it);
/// `value_tier` is 1 (low), 2 (mid) or 3 (high) (alerts also carry its name).
pub fn scores(eval: &Evaluation) -> Vec<Score> {
    let mut s = vec![
        Score::new("churn_risk", eval.churn_risk),
        Score::new("health", eval.health),
        Score::new("recency_score", f64::from(eval.recency_score)),
        Score::new("frequency_score", f64::from(eval.frequency_score)),
        Score::new("monetary_score", f64::from(eval.monetary_score)),
    ];
    let mut opt = |name, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            s.push(Score::new(name, v));
        }
    };
    opt("p_alive", eval.p_alive);
    opt("days_since_last_order", eval.days_since_last_order);
    opt("mean_gap_days", eval.mean_gap_days);
    opt("expected_purchases", eval.clv.map(|c| c.expected_purchases));
    opt(
        "expected_spend_minor",
        eval.clv.map(|c| c.expected_spend_minor),
    );
    opt("clv_minor", eval.clv.map(|c| c.clv_minor));
    opt("value_tier", eval.clv.map(|c| f64::from(c.tier.rank())));
    opt("engagement", eval.engagement);
    opt("engagement_trend", eval.engagement_trend);
    opt(
        "cart_abandonment",
        eval.signals.get(Signal::CartAbandonment),
    );
    let sup = &eval.support;
    opt("open_tickets", Some(f64::from(sup.open_tickets)));
    opt("oldest_open_ticket_days", sup.oldest_open_ticket_days);
    opt("mean_first_response_hours", sup.mean_first_response_hours);
    opt("mean_resolution_hours", sup.mean_resolution_hours);
    opt("csat_share", sup.csat_share);
    opt("nps_latest", sup.nps_latest.map(f64::from));
    opt("sentiment", sup.sentiment);
    opt("negative_streak", Some(f64::from(sup.negative_streak)));
    s
}

#[cfg(test)]
mod tests {
    use super::fixed;

    #[test]
    fn an_event_at_the_unix_epoch_is_a_first_event_like_any_other() {
        use crate::event::{Body, Click, ClickKind, Event};
        use crate::{CustomerState, ScoringConfig};
        let click = |t| Event {
            event_id: format!("e{t}"),
            customer_id: "c".into(),
            occurred_at: t,
            body: Body::Click(Click {
                kind: ClickKind::PageView,
                session_id: None,
            }),
        };
        let cfg = ScoringConfig::default();
        // Given a customer whose first event is at 1970-01-01T00:00:00Z (0 ms)
        let mut s = CustomerState::default();
        super::evolve(&mut s, &click(0), &cfg);
        // When a later event arrives
        super::evolve(&mut s, &click(5_000), &cfg);
        // Then the first event's time is kept: 0 is a time here, not "never seen"
        assert_eq!((s.first_seen_at, s.last_event_at), (0, 5_000));
        // And a fresh customer still takes its first event's time, whatever it is
        let mut fresh = CustomerState::default();
        super::evolve(&mut fresh, &click(5_000), &cfg);
        assert_eq!(fresh.first_seen_at, 5_000);
    }

    #[test]
    fn fixed_reads_as_the_standard_rounding_away_from_ties() {
        // Given values across signs and magnitudes, none on a rounding tie
        let values = [
            0.0,
            0.004,
            0.126,
            0.5001,
            0.849_999,
            1.0,
            2.675_01,
            9.995_01,
            12.345_67,
            99.96,
            365.2,
            1234.5678,
            1e9 + 0.37,
            -0.126,
            -3.333,
            -99.96,
        ];
        for v in values {
            for d in 0..=3u8 {
                // When formatted, then it reads as `{:.N}` does, but never as "-0"
                let std = format!("{:.*}", usize::from(d), v);
                let zero = std
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c == '0' || c == '.');
                let want = if zero {
                    std.trim_start_matches('-').to_string()
                } else {
                    std
                };
                assert_eq!(fixed(v, d).to_string(), want, "{v} to {d} places");
            }
        }
        // Beyond ±1e15, and for what is not a number, the standard formatting
        assert_eq!(fixed(2e17, 1).to_string(), format!("{:.1}", 2e17));
        assert_eq!(fixed(f64::NAN, 2).to_string(), "NaN");
        assert_eq!(fixed(f64::INFINITY, 0).to_string(), "inf");
        // A negative value that rounds to zero reads as zero
        assert_eq!(fixed(-0.001, 2).to_string(), "0.00");
    }
}
