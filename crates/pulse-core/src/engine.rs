//! The rules: `evolve` folds an event into facts (no rules), `evaluate` turns facts into scores,
//! stage and segment at an instant, and `decide` compares that with what was announced and
//! returns the alerts and the next timer. All functions are pure: time is a parameter.

use crate::alert::{Alert, AlertKind, Reason, Score};
use crate::config::ScoringConfig;
use crate::event::{Body, ClickKind, Event, Millis, OrderKind, SupportKind, DAY};
use crate::state::{CustomerState, Segment, Stage};

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

/// Scores and classification of a customer at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub at: Millis,
    pub stage: Stage,
    pub segment: Segment,
    pub days_since_last_order: Option<f64>,
    pub mean_gap_days: Option<f64>,
    pub recency_score: u8,
    pub frequency_score: u8,
    pub monetary_score: u8,
    pub churn_risk: f64,
    pub engagement: f64,
    /// The earliest instant after `at` at which this evaluation can differ with no new event.
    pub next_change: Option<Millis>,
}

/// Folds one event into the customer's facts. Holds no rules: classification is `evaluate`'s.
pub fn evolve(state: &mut CustomerState, event: &Event, cfg: &ScoringConfig) {
    let t = event.occurred_at;
    if state.first_seen_at == 0 || t < state.first_seen_at {
        state.first_seen_at = t;
    }
    state.last_event_at = state.last_event_at.max(t);
    match &event.body {
        Body::Order(o) => {
            let f = &mut state.orders;
            let same_currency = f.currency.as_deref().is_none_or(|c| c == o.currency);
            match o.kind {
                OrderKind::Placed => {
                    let new_day = f.last_at.is_none_or(|last| day_of(last) != day_of(t));
                    f.count += 1;
                    if new_day && f.last_at.is_none_or(|last| t > last) {
                        f.purchase_days += 1;
                    }
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
        Body::Click(c) => {
            let f = &mut state.clicks;
            // A new session after 30 minutes without a click.
            if f.last_at
                .is_none_or(|last| t - last > 30 * crate::event::MINUTE)
            {
                f.sessions += 1;
            }
            f.events += 1;
            f.last_at = Some(f.last_at.map_or(t, |last| last.max(t)));
            if c.kind == ClickKind::AddToCart {
                f.cart_adds += 1;
            }
            let weight = match c.kind {
                ClickKind::PageView => 1.0,
                ClickKind::ProductView | ClickKind::Search => 2.0,
                ClickKind::AddToCart | ClickKind::RemoveFromCart => 3.0,
                ClickKind::CheckoutStarted => 5.0,
            };
            let at = f.engagement_at.max(t);
            f.engagement = decay(f.engagement, at - f.engagement_at, cfg) + weight;
            f.engagement_at = at;
        }
        Body::Support(s) => {
            let f = &mut state.support;
            let negative = match s.kind {
                SupportKind::TicketOpened => {
                    f.tickets_opened += 1;
                    None
                }
                SupportKind::TicketResolved => {
                    f.tickets_resolved += 1;
                    None
                }
                SupportKind::TicketFirstResponse => None,
                SupportKind::CsatSubmitted => s.score.map(|score| {
                    f.csat_answers += 1;
                    if score >= 4 {
                        f.csat_positive += 1;
                    }
                    score <= 2
                }),
                SupportKind::NpsSubmitted => s.score.map(|score| {
                    f.last_nps = Some(score);
                    score <= 6
                }),
                SupportKind::FeedbackSubmitted => s.sentiment.map(|v| v < 0.0),
            };
            match negative {
                Some(true) => f.negative_streak += 1,
                Some(false) => f.negative_streak = 0,
                None => {}
            }
        }
        Body::Erased => {}
    }
}

fn day_of(t: Millis) -> i64 {
    t.div_euclid(DAY)
}

fn decay(value: f64, elapsed: Millis, cfg: &ScoringConfig) -> f64 {
    let half_lives = elapsed.max(0) as f64 / (cfg.engagement_half_life_days * DAY as f64);
    value * 0.5f64.powf(half_lives)
}

/// How long a customer may stay silent before counting as at risk.
fn at_risk_after(state: &CustomerState, cfg: &ScoringConfig) -> Millis {
    let floor = cfg.at_risk_min_days * DAY;
    match mean_gap(state) {
        Some(gap) => floor.max((gap as f64 * cfg.at_risk_gap_multiple).ceil() as Millis),
        None => floor,
    }
}

/// Mean time between orders, once there are two.
fn mean_gap(state: &CustomerState) -> Option<Millis> {
    let o = &state.orders;
    match (o.first_at, o.last_at) {
        (Some(first), Some(last)) if o.count >= 2 => {
            Some((last - first) / Millis::from(o.count - 1))
        }
        _ => None,
    }
}

/// Scores `value` against ascending cut points: at or below c[0] scores `low_is_good ? 5 : 1`.
fn score_ascending<T: PartialOrd>(value: T, cuts: &[T; 4]) -> u8 {
    1 + cuts.iter().filter(|c| value >= **c).count() as u8
}

/// Evaluates the customer at `now` (which must not precede the events folded so far).
pub fn evaluate(state: &CustomerState, now: Millis, cfg: &ScoringConfig) -> Evaluation {
    let o = &state.orders;
    let engagement = decay(
        state.clicks.engagement,
        now - state.clicks.engagement_at,
        cfg,
    );
    let (Some(first), Some(last)) = (o.first_at, o.last_at) else {
        return Evaluation {
            at: now,
            stage: Stage::Prospect,
            segment: Segment::Prospect,
            days_since_last_order: None,
            mean_gap_days: None,
            recency_score: 1,
            frequency_score: 1,
            monetary_score: 1,
            churn_risk: 0.0,
            engagement,
            next_change: None,
        };
    };
    let silence = (now - last).max(0);
    let silent_days = silence / DAY;
    let recency_score = 6 - score_ascending(silent_days, &cfg.recency_cuts_days.map(|c| c + 1));
    let frequency_score = score_ascending(o.count, &cfg.frequency_cuts);
    let monetary_score = score_ascending(o.total_minor, &cfg.monetary_cuts_minor);
    let risk_after = at_risk_after(state, cfg);
    let churn_after = cfg.churned_days * DAY;
    let reactivated_until = state
        .announced
        .reactivated_at
        .map(|t| t + cfg.reactivated_days * DAY);
    let new_until = first + cfg.new_customer_days * DAY;

    let stage = if silence >= churn_after {
        Stage::Churned
    } else if silence >= risk_after {
        Stage::AtRisk
    } else if reactivated_until.is_some_and(|until| now < until) {
        Stage::Reactivated
    } else if now < new_until {
        Stage::New
    } else if o.count >= cfg.loyal_min_orders {
        Stage::Loyal
    } else {
        Stage::Active
    };
    // Linear in silence between 0 and the churn threshold; the full engine replaces this with
    // 1 − P(alive) of a BTYD model.
    let churn_risk = (silence as f64 / churn_after as f64).clamp(0.0, 1.0);

    let mut candidates = vec![last + risk_after, last + churn_after, new_until];
    candidates.extend(reactivated_until);
    candidates.extend(cfg.recency_cuts_days.iter().map(|c| last + (c + 1) * DAY));
    let next_change = candidates.into_iter().filter(|t| *t > now).min();

    Evaluation {
        at: now,
        stage,
        segment: Segment::from_rf(recency_score, frequency_score),
        days_since_last_order: Some(silence as f64 / DAY as f64),
        mean_gap_days: mean_gap(state).map(|g| g as f64 / DAY as f64),
        recency_score,
        frequency_score,
        monetary_score,
        churn_risk,
        engagement,
        next_change,
    }
}

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
    if let Input::Event(event) = input {
        let before = state.announced.stage;
        evolve(state, event, cfg);
        if let Body::Order(o) = &event.body {
            if o.kind == OrderKind::Placed && before.is_risk() {
                state.announced.reactivated_at = Some(event.occurred_at);
            }
        }
    }
    let eval = evaluate(state, now, cfg);
    let mut alerts = Vec::new();
    let announced = &mut state.announced;

    if eval.stage != announced.stage {
        let from = announced.stage;
        if eval.stage.is_risk() && !from.is_risk() {
            alerts.push(alert(
                AlertKind::ChurnWarning,
                customer_id,
                from.as_str(),
                eval.stage.as_str(),
                &eval,
                state_ref_reasons(&eval),
                cfg,
            ));
        }
        alerts.push(alert(
            AlertKind::LifecycleStageChanged,
            customer_id,
            from.as_str(),
            eval.stage.as_str(),
            &eval,
            state_ref_reasons(&eval),
            cfg,
        ));
        announced.stage = eval.stage;
        announced.stage_since = now;
    }

    let dwell_over = now - announced.segment_since >= cfg.segment_min_dwell_days * DAY
        || announced.segment == Segment::Prospect;
    let mut next = eval.next_change;
    if eval.segment != announced.segment {
        if dwell_over {
            alerts.push(alert(
                AlertKind::SegmentChanged,
                customer_id,
                announced.segment.as_str(),
                eval.segment.as_str(),
                &eval,
                state_ref_reasons(&eval),
                cfg,
            ));
            announced.segment = eval.segment;
            announced.segment_since = now;
        } else {
            let due = announced.segment_since + cfg.segment_min_dwell_days * DAY;
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    state.next_timer = next;
    Decision {
        alerts,
        next_timer: next,
    }
}

fn state_ref_reasons(eval: &Evaluation) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if let Some(days) = eval.days_since_last_order {
        let text = match eval.mean_gap_days {
            Some(gap) => format!("no order for {days:.0} days; usually orders every {gap:.0} days"),
            None => format!("no order for {days:.0} days since the first one"),
        };
        reasons.push(Reason {
            signal: "days_since_last_order",
            value: days,
            contribution: eval.churn_risk,
            text,
        });
    }
    reasons.push(Reason {
        signal: "recency_score",
        value: f64::from(eval.recency_score),
        contribution: 0.0,
        text: format!(
            "RFM {}{}{}",
            eval.recency_score, eval.frequency_score, eval.monetary_score
        ),
    });
    reasons
}

fn alert(
    kind: AlertKind,
    customer_id: &str,
    from: &str,
    to: &str,
    eval: &Evaluation,
    reasons: Vec<Reason>,
    cfg: &ScoringConfig,
) -> Alert {
    Alert {
        kind,
        customer_id: customer_id.to_string(),
        occurred_at: eval.at,
        rule_version: cfg.rule_version.clone(),
        from: from.to_string(),
        to: to.to_string(),
        scores: scores(eval),
        reasons,
    }
}

/// The scores that go on every alert, in a fixed order.
pub fn scores(eval: &Evaluation) -> Vec<Score> {
    let mut s = vec![
        Score::new("churn_risk", eval.churn_risk),
        Score::new("engagement", eval.engagement),
        Score::new("recency_score", f64::from(eval.recency_score)),
        Score::new("frequency_score", f64::from(eval.frequency_score)),
        Score::new("monetary_score", f64::from(eval.monetary_score)),
    ];
    if let Some(days) = eval.days_since_last_order {
        s.push(Score::new("days_since_last_order", days));
    }
    s
}
