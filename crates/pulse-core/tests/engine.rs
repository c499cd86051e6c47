//! Given/when/then tests of every rule of the engine, driven through a `Partition` as fold
//! drives it (see `common::Customer`: timers fire at their due instant as the clock passes).

mod common;

use common::*;
use pulse_core::config::{ModelKind, Weights};
use pulse_core::event::{ClickKind, SupportKind, HOUR, MINUTE};
use pulse_core::models::BgNbd;
use pulse_core::{
    engine, evaluate, AlertKind, NpsClass, ScoringConfig, Segment, Signal, Stage, ValueTier, DAY,
};

fn only(weights: &[(&str, f64)]) -> Weights {
    let mut w = Weights {
        p_dead: 0.0,
        engagement_low: 0.0,
        engagement_falling: 0.0,
        cart_abandonment: 0.0,
        open_tickets: 0.0,
        slow_first_response: 0.0,
        slow_resolution: 0.0,
        csat_low: 0.0,
        nps: 0.0,
        negative_sentiment: 0.0,
        negative_streak: 0.0,
        low_frequency: 0.0,
        low_monetary: 0.0,
    };
    for (k, v) in weights {
        match *k {
            "p_dead" => w.p_dead = *v,
            "nps" => w.nps = *v,
            "cart_abandonment" => w.cart_abandonment = *v,
            "engagement_low" => w.engagement_low = *v,
            _ => panic!("{k}"),
        }
    }
    w
}

fn weekly_buyer() -> Customer {
    let mut c = Customer::new();
    for w in 0..6 {
        c.order(day(7.0 * f64::from(w)), 3000);
    }
    c
}

// ----- lifecycle ----------------------------------------------------------------------------

#[test]
fn given_a_weekly_buyer_when_they_go_silent_then_loyal_active_at_risk_churned_by_timers() {
    let mut c = weekly_buyer();
    let before = c.timers_fired;
    c.advance(day(400.0));
    let stages: Vec<_> = c
        .stages()
        .into_iter()
        .map(|(f, t, at)| (f, t, at - T0))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("prospect", "new", 0),
            ("new", "loyal", 30 * DAY),
            ("loyal", "active", 53 * DAY + 20_824_981),
            ("active", "at_risk", 65 * DAY),
            ("at_risk", "churned", 110 * DAY + 63_860_618),
        ]
    );
    // Silence is handled by timers alone, and only a handful fire.
    assert!(c.timers_fired - before <= 8, "{}", c.timers_fired - before);
    let warnings = c.transitions(AlertKind::ChurnWarning);
    assert_eq!(warnings.len(), 1, "at_risk → churned is not a new warning");
    assert_eq!(warnings[0].1, "at_risk");
    assert_eq!(c.state().announced.stage, Stage::Churned);
}

#[test]
fn given_a_first_order_when_30_days_pass_then_new_ends_exactly_then() {
    let mut c = Customer::new();
    c.order(day(0.0), 2500);
    assert_eq!(c.state().announced.stage, Stage::New);
    assert_eq!(c.state().next_timer.map(|t| t <= day(30.0)), Some(true));
    c.advance(day(30.0) - 1);
    assert_eq!(c.state().announced.stage, Stage::New);
    c.advance(day(30.0));
    assert_eq!(
        c.state().announced.stage,
        Stage::Active,
        "one order is not loyal"
    );
}

#[test]
fn given_a_one_time_buyer_under_mbg_when_silent_then_at_risk_by_p_dead() {
    let mut c = Customer::new();
    c.order(day(0.0), 2500);
    c.advance(day(400.0));
    let (_, _, at) = c
        .stages()
        .into_iter()
        .find(|(_, to, _)| *to == "at_risk")
        .expect("at_risk");
    // MBG/NBD at x = 0: odds = a/b ((α+T)/α)^r reaches 1 at T = α((b/a)^(1/r) − 1) weeks.
    let p = rules().model.mbg_nbd;
    let weeks = p.alpha * ((p.b / p.a).powf(1.0 / p.r) - 1.0);
    let expected = T0 + (weeks * 7.0 * DAY as f64).ceil() as i64;
    assert!((at - expected).abs() <= 1, "{at} vs {expected}");
    assert!(
        c.eval(at - 1).churn_risk < 0.5 && c.eval(at).churn_risk >= 0.5,
        "exact to the millisecond"
    );
    // One purchase day: no gap rule; churned after 365 silent days at the latest.
    let churned = c.stages().into_iter().find(|(_, to, _)| *to == "churned");
    assert_eq!(churned.map(|(_, _, at)| at), Some(day(365.0)));
}

#[test]
fn given_bg_nbd_when_a_one_time_buyer_is_silent_then_p_dead_stays_zero_and_silence_churns() {
    let mut cfg = rules();
    cfg.model.kind = ModelKind::BgNbd;
    let mut c = Customer::with(cfg);
    c.order(day(0.0), 2500);
    assert_eq!(c.eval(day(200.0)).p_alive, Some(1.0));
    c.advance(day(400.0));
    let stages: Vec<_> = c.stages().into_iter().map(|(_, to, at)| (to, at)).collect();
    assert_eq!(
        stages,
        vec![
            ("new", day(0.0)),
            ("active", day(30.0)),
            ("churned", day(365.0)),
        ]
    );
    assert_eq!(c.transitions(AlertKind::ChurnWarning).len(), 1);
}

#[test]
fn given_pareto_nbd_when_silent_then_the_bisected_timers_are_exact() {
    let mut cfg = rules();
    cfg.model.kind = ModelKind::ParetoNbd;
    let mut c = Customer::with(cfg);
    for d in [0.0, 10.0, 20.0, 30.0] {
        c.order(day(d), 4000);
    }
    c.advance(day(500.0));
    let risky: Vec<_> = c
        .stages()
        .into_iter()
        .filter(|(_, to, _)| ["at_risk", "churned", "active"].contains(to))
        .collect();
    assert!(!risky.is_empty());
    for (_, to, at) in risky {
        let before = c.eval(at - 1).churn_risk;
        let after = c.eval(at).churn_risk;
        let theta = match to {
            "active" => 0.3,
            "at_risk" => 0.5,
            _ => 0.85,
        };
        if after >= theta {
            assert!(before < theta, "{to} at {at}: {before} already ≥ {theta}");
        }
    }
}

#[test]
fn given_at_risk_when_the_risk_falls_between_exit_and_entry_then_it_stays_at_risk() {
    // Risk = (p_dead + nps) / 2, so an NPS answer moves it at once.
    let mut cfg = rules();
    cfg.scorecard.risk = only(&[("p_dead", 1.0), ("nps", 1.0)]);
    let mut c = Customer::with(cfg);
    c.order(day(0.0), 2500);
    c.nps(day(40.0), 3);
    assert_eq!(
        c.state().announced.stage,
        Stage::AtRisk,
        "detractor: risk ≥ 0.5"
    );
    let p = 1.0 - c.eval(day(41.0)).p_alive.unwrap();
    assert!((0.3..0.5).contains(&p), "{p}");
    c.nps(day(41.0), 8);
    let e = c.eval(day(41.0));
    assert!(
        (0.4..0.5).contains(&e.churn_risk),
        "passive: {}",
        e.churn_risk
    );
    assert_eq!(c.state().announced.stage, Stage::AtRisk, "hysteresis holds");
    assert_eq!(e.cause, pulse_core::StageCause::StillAtRisk);
    c.nps(day(42.0), 10);
    assert!(c.eval(day(42.0)).churn_risk < 0.4);
    assert_eq!(
        c.state().announced.stage,
        Stage::Active,
        "promoter: below exit"
    );
    assert_eq!(
        c.stages().last().map(|(f, t, _)| (*f, *t)),
        Some(("at_risk", "active"))
    );
}

#[test]
fn given_at_risk_when_an_order_arrives_then_reactivated_and_active_after_the_window() {
    let mut c = weekly_buyer();
    c.advance(day(70.0));
    assert_eq!(c.state().announced.stage, Stage::AtRisk);
    c.order(day(70.0), 3000);
    assert_eq!(c.state().announced.stage, Stage::Reactivated);
    assert_eq!(
        c.stages().last(),
        Some(&("at_risk", "reactivated", day(70.0)))
    );
    // Keep ordering weekly: after 30 days the window closes, by timer, to loyal (risk is low).
    for w in 1..=4 {
        c.order(day(70.0 + 7.0 * f64::from(w)), 3000);
    }
    assert_eq!(c.state().announced.stage, Stage::Reactivated);
    c.advance(day(100.0));
    assert_eq!(c.state().announced.stage, Stage::Loyal);
    assert_eq!(c.stages().last().unwrap().2, day(100.0));
}

#[test]
fn given_churned_when_engagement_improves_then_it_stays_churned_until_an_order() {
    let mut c = weekly_buyer();
    c.advance(day(150.0));
    assert_eq!(c.state().announced.stage, Stage::Churned);
    for i in 0..50 {
        c.click(day(150.0) + i * MINUTE, ClickKind::ProductView);
    }
    c.nps(day(151.0), 10);
    assert_eq!(c.state().announced.stage, Stage::Churned);
    c.order(day(152.0), 3000);
    assert_eq!(c.state().announced.stage, Stage::Reactivated);
}

#[test]
fn given_a_later_announcement_when_evaluating_the_past_then_it_is_ignored() {
    let mut c = weekly_buyer();
    c.advance(day(240.0));
    assert_eq!(c.state().announced.stage, Stage::Churned);
    assert_eq!(c.eval(day(40.0)).stage, Stage::Loyal);
    assert_eq!(c.eval(day(240.0)).stage, Stage::Churned);
}

#[test]
fn given_a_daily_buyer_when_silent_for_a_few_days_then_not_at_risk_before_the_floor() {
    // Only the gap rule can make this customer at risk.
    let cfg = ScoringConfig {
        at_risk_risk: 0.95,
        churned_risk: 0.99,
        ..rules()
    };
    let mut c = Customer::with(cfg);
    for d in 0..5 {
        c.order(day(f64::from(d)), 2000);
    }
    c.advance(day(10.0));
    assert!(!c.state().announced.stage.is_risk());
    let at_risk = |c: &Customer| c.stages().into_iter().find(|(_, to, _)| *to == "at_risk");
    c.advance(day(200.0));
    let (_, _, at) = at_risk(&c).expect("at_risk eventually");
    assert_eq!(
        at,
        day(4.0 + 30.0),
        "2 × 1-day gap, but not before the 30-day floor"
    );
    assert_eq!(c.eval(at).cause, pulse_core::StageCause::Gap);
}

// ----- segments -----------------------------------------------------------------------------

#[test]
fn given_a_frequent_buyer_when_silent_then_the_segment_walks_down_the_grid_by_timers() {
    let mut c = Customer::new();
    for d in [0.0, 3.0, 6.0, 9.0, 12.0] {
        c.order(day(d), 5000);
    }
    assert_eq!(c.eval(day(12.0)).segment, Segment::Champions, "R5 F4");
    // `potential` was announced on day 7 (after the dwell of `new`), so champions waits for
    // the dwell of `potential`.
    assert_eq!(c.state().announced.segment, Segment::Potential);
    c.advance(day(14.0));
    assert_eq!(c.state().announced.segment, Segment::Champions);
    c.advance(day(400.0));
    let segments: Vec<_> = c
        .transitions(AlertKind::SegmentChanged)
        .into_iter()
        .filter(|(_, _, at)| *at > day(14.0))
        .map(|(_, to, at)| (to, (at - day(12.0)) / DAY))
        .collect();
    // R4F4 loyal after 15 days, R3F4 still loyal, R2F4 at_risk after 61.
    assert_eq!(segments, vec![("loyal", 15), ("at_risk", 61)]);
}

#[test]
fn given_a_recent_segment_change_when_it_changes_again_within_the_dwell_then_announced_after_it() {
    let mut c = Customer::new();
    c.order(day(0.0), 1000);
    assert_eq!(c.state().announced.segment, Segment::New);
    c.order(day(2.0), 1000);
    // R5 F2: potential, but `new` was announced 2 days ago: held until day 7.
    assert_eq!(c.state().announced.segment, Segment::New);
    assert_eq!(c.eval(day(2.0)).segment, Segment::Potential);
    assert_eq!(c.state().next_timer, Some(day(7.0)));
    c.advance(day(7.0));
    assert_eq!(c.state().announced.segment, Segment::Potential);
    assert_eq!(
        c.transitions(AlertKind::SegmentChanged).last().unwrap().2,
        day(7.0)
    );
}

#[test]
fn given_rfm_cut_points_then_scores_follow_them() {
    let mut c = Customer::new();
    c.order(day(0.0), 30_000);
    c.order(day(1.0), 20_000);
    let e = c.eval(day(1.0) + 20 * DAY);
    assert_eq!(
        (e.recency_score, e.frequency_score, e.monetary_score),
        (4, 2, 4)
    );
    assert_eq!(e.segment, Segment::from_rf(4, 2));
    let e = c.eval(day(1.0) + 200 * DAY);
    assert_eq!(e.recency_score, 1);
}

#[test]
fn given_a_late_order_between_known_purchase_days_then_it_counts_once_if_its_day_is_new() {
    let mut c = Customer::new();
    c.order(day(0.0), 1_000);
    c.order(day(20.0), 1_000);
    // Arrives after day 20 was folded, on a day between: a new purchase day.
    c.order(day(10.0), 1_000);
    assert_eq!(c.state().orders.purchase_days, 3);
    // Again on day 10, and on day 20 (late, but known): no new purchase day.
    c.order(day(10.0) + 3 * HOUR, 1_000);
    c.order(day(20.0) + HOUR, 1_000);
    assert_eq!(c.state().orders.purchase_days, 3);
    assert_eq!(c.state().orders.count, 5);
    // The recency t_x is still the last purchase: day 20.
    assert_eq!(c.state().orders.last_at, Some(day(20.0) + HOUR));
}

#[test]
fn given_more_purchase_days_than_are_kept_then_a_late_order_older_than_them_is_not_counted() {
    use pulse_core::state::RECENT_PURCHASE_DAYS;
    let mut c = Customer::new();
    // 40 purchase days, every other day: 0, 2, …, 78; the latest 32 kept are 16 … 78.
    for d in 0..40 {
        c.order(day(f64::from(2 * d)), 1_000);
    }
    assert_eq!(c.state().orders.recent_days.len(), RECENT_PURCHASE_DAYS);
    // Day 77 lies among the kept days and is new; day 1 is older than all of them: whether
    // it is new cannot be known, and it is not counted (x can only undercount).
    c.order(day(77.0), 1_000);
    assert_eq!(c.state().orders.purchase_days, 41);
    c.order(day(1.0), 1_000);
    assert_eq!(c.state().orders.purchase_days, 41);
}

// ----- models, CLV and value tiers -----------------------------------------------------------

#[test]
fn given_orders_then_the_btyd_conventions_hold() {
    let mut c = Customer::new();
    c.order(day(0.0), 10_000);
    c.order(day(0.0) + 2 * HOUR, 5_000); // same day: one purchase day
    c.order(day(14.0), 2_000);
    c.order(day(28.0), 4_000);
    assert_eq!(c.state().orders.purchase_days, 3);
    assert_eq!(c.state().orders.first_day_minor, 15_000);
    let at = day(49.0);
    let e = c.eval(at);
    // x = 2, t_x = 4 weeks, T = 7 weeks.
    let m = rules().model.mbg_nbd;
    assert_eq!(e.p_alive, Some(m.p_alive(2.0, 4.0, 7.0)));
    // Gamma-Gamma averages the repeat purchases only: (2000 + 4000) / 2.
    let gg = rules().gamma_gamma;
    let clv = e.clv.expect("clv");
    assert_eq!(
        clv.expected_spend_minor,
        gg.conditional_expected_average_value(2.0, 3000.0)
    );
    // Over the horizon: the last of the 12 period ends (12 × (365/7)/12, equal up to rounding).
    let over_horizon = m.expected_purchases(2.0, 4.0, 7.0, 365.0 / 7.0);
    assert!((clv.expected_purchases - over_horizon).abs() <= 1e-12 * over_horizon);
    assert!(
        clv.clv_minor > 0.0 && clv.clv_minor < clv.expected_purchases * clv.expected_spend_minor
    );
    // p_dead is the risk for a customer with orders only.
    assert!((e.churn_risk - (1.0 - e.p_alive.unwrap())).abs() < 1e-12);
}

#[test]
fn given_customers_of_different_value_then_value_tiers_follow_the_cut_points() {
    let tier = |c: &Customer, t| c.eval(t).clv.map(|v| v.tier);
    let mut small = Customer::new();
    small.order(day(0.0), 1500);
    assert_eq!(tier(&small, day(1.0)), Some(ValueTier::Low));
    let big = weekly_buyer();
    assert_eq!(tier(&big, day(36.0)), Some(ValueTier::High));
    let clv = big.eval(day(36.0)).clv.unwrap().clv_minor;
    let mut cfg = rules();
    cfg.value_tier.mid_from_minor = clv - 1.0;
    cfg.value_tier.high_from_minor = clv + 1.0;
    assert_eq!(
        evaluate(big.state(), day(36.0), &cfg).clv.map(|v| v.tier),
        Some(ValueTier::Mid)
    );
    // Value decays with silence.
    assert!(big.eval(day(200.0)).clv.unwrap().clv_minor < clv);
    let mut prospect = Customer::new();
    prospect.click(day(0.0), ClickKind::PageView);
    assert_eq!(tier(&prospect, day(1.0)), None);
}

#[test]
fn given_the_published_bg_nbd_example_then_the_engine_model_agrees() {
    // FHL (2005): x = 26, t_x = 30.857, T = 31 weeks → P(alive) 0.9688523.
    let bg = BgNbd {
        r: 0.2425982,
        alpha: 4.4136842,
        a: 0.7929899,
        b: 2.4261667,
    };
    let p = bg.p_alive(26.0, 30.857, 31.0);
    assert!(((p - 0.9688523) / 0.9688523).abs() < 1e-5, "{p}");
    assert_eq!(rules().model.bg_nbd, bg);
}

// ----- engagement ---------------------------------------------------------------------------

#[test]
fn given_clicks_then_sessions_views_searches_and_cart_adds_are_counted() {
    let mut c = Customer::new();
    let t = day(0.0);
    c.click(t, ClickKind::PageView)
        .click(t + 10 * MINUTE, ClickKind::ProductView)
        .click(t + 40 * MINUTE, ClickKind::Search) // 30 min gap exceeded? 30 min exactly is not
        .click(t + 71 * MINUTE, ClickKind::Search)
        .click(t + 72 * MINUTE, ClickKind::AddToCart);
    let f = &c.state().clicks;
    assert_eq!(
        (f.events, f.sessions, f.views, f.searches, f.cart_adds),
        (5, 2, 2, 2, 1)
    );
    assert_eq!(c.eval(t).stage, Stage::Prospect);
    assert_eq!(c.eval(t).segment, Segment::Prospect);
}

#[test]
fn given_an_add_to_cart_when_no_order_follows_then_a_timer_counts_the_abandonment() {
    let mut c = Customer::new();
    let t = day(0.0) + 5 * HOUR;
    c.click(t, ClickKind::AddToCart);
    assert_eq!(c.state().next_timer, Some(t + 24 * HOUR));
    assert_eq!(c.eval(t).signals.get(Signal::CartAbandonment), None);
    assert_eq!(
        c.eval(t + 24 * HOUR).signals.get(Signal::CartAbandonment),
        Some(1.0)
    );
    c.advance(t + 24 * HOUR);
    assert_eq!(c.timers_fired, 1);
    assert_eq!(c.state().clicks.carts_abandoned, 1);
    assert_eq!(c.state().clicks.cart_last_add, None);
    assert_eq!(c.state().next_timer, None);
}

#[test]
fn given_an_add_to_cart_when_an_order_follows_within_the_window_then_converted() {
    let mut c = Customer::new();
    let t = day(0.0);
    c.click(t, ClickKind::AddToCart);
    c.order(t + 23 * HOUR, 2000);
    assert_eq!(
        (
            c.state().clicks.carts_converted,
            c.state().clicks.carts_abandoned
        ),
        (1, 0)
    );
    assert_eq!(
        c.eval(t + 2 * DAY).signals.get(Signal::CartAbandonment),
        Some(0.0)
    );
}

#[test]
fn given_a_late_add_to_cart_window_when_the_next_event_is_after_it_then_abandoned_without_a_timer()
{
    let mut cfg = rules();
    cfg.scorecard.risk = only(&[("cart_abandonment", 1.0)]);
    let mut state = pulse_core::CustomerState::default();
    let click = |t, kind| pulse_core::Event {
        event_id: format!("{t}"),
        customer_id: "c".into(),
        occurred_at: t,
        body: pulse_core::Body::Click(pulse_core::event::Click {
            kind,
            session_id: None,
        }),
    };
    let t = day(0.0);
    let e = click(t, ClickKind::AddToCart);
    pulse_core::decide(&mut state, "c", pulse_core::Input::Event(&e), t, &cfg);
    let e = click(t + 3 * DAY, ClickKind::PageView);
    pulse_core::decide(
        &mut state,
        "c",
        pulse_core::Input::Event(&e),
        t + 3 * DAY,
        &cfg,
    );
    assert_eq!(state.clicks.carts_abandoned, 1);
}

#[test]
fn given_removing_every_item_then_the_cart_closes_without_abandonment() {
    let mut c = Customer::new();
    let t = day(0.0);
    c.click(t, ClickKind::AddToCart)
        .click(t + MINUTE, ClickKind::RemoveFromCart);
    assert_eq!(c.state().next_timer, None);
    c.advance(t + 3 * DAY);
    assert_eq!(c.state().clicks.carts_abandoned, 0);
}

#[test]
fn given_engagement_then_it_halves_over_the_half_life_and_a_falling_rate_is_a_signal() {
    let mut c = Customer::new();
    c.click(day(0.0), ClickKind::PageView);
    c.click(day(14.0), ClickKind::PageView);
    let e = c.eval(day(14.0)).engagement.unwrap();
    assert!((e - 1.5).abs() < 1e-12, "1 halved plus 1: {e}");
    // Steady daily browsing, then one visit a month later.
    let mut c = Customer::new();
    for d in 0..60 {
        c.click(day(f64::from(d)), ClickKind::ProductView);
    }
    let steady = c.eval(day(59.0));
    assert!(steady.signals.get(Signal::EngagementFalling).unwrap() < 0.5);
    c.click(day(90.0), ClickKind::PageView);
    let fallen = c.eval(day(90.0));
    assert!(
        fallen.engagement_trend.unwrap() < 0.5,
        "{:?}",
        fallen.engagement_trend
    );
    assert!(fallen.signals.get(Signal::EngagementFalling).unwrap() > 0.5);
    // Measured as of the last click: no decay between events.
    assert_eq!(c.eval(day(300.0)).engagement, fallen.engagement);
}

// ----- support ------------------------------------------------------------------------------

#[test]
fn given_tickets_then_open_count_age_and_mean_response_and_resolution_times() {
    let mut c = Customer::new();
    let t = day(0.0);
    c.support(t, SupportKind::TicketOpened, Some("t1"), None, None)
        .support(t + HOUR, SupportKind::TicketOpened, Some("t2"), None, None)
        .support(
            t + 4 * HOUR,
            SupportKind::TicketFirstResponse,
            Some("t1"),
            None,
            None,
        )
        .support(
            t + 10 * HOUR,
            SupportKind::TicketResolved,
            Some("t1"),
            None,
            None,
        );
    let e = c.eval(t + 2 * DAY);
    let s = e.support;
    assert_eq!(s.open_tickets, 1);
    assert!((s.oldest_open_ticket_days.unwrap() - (2.0 - 1.0 / 24.0)).abs() < 1e-9);
    assert_eq!(s.mean_first_response_hours, Some(4.0));
    assert_eq!(s.mean_resolution_hours, Some(10.0));
    assert_eq!(e.signals.get(Signal::OpenTickets), Some(0.5));
    assert_eq!(e.signals.get(Signal::SlowFirstResponse), Some(4.0 / 28.0));
    // Resolving an unanswered ticket is its first response too.
    c.support(
        t + 2 * DAY,
        SupportKind::TicketResolved,
        Some("t2"),
        None,
        None,
    );
    let s = c.eval(t + 2 * DAY).support;
    assert_eq!(s.open_tickets, 0);
    assert_eq!(s.mean_first_response_hours, Some((4.0 + 47.0) / 2.0));
}

#[test]
fn given_csat_answers_then_the_share_of_4_and_5_is_measured() {
    let mut c = Customer::new();
    for (i, score) in [5u8, 4, 3, 1].into_iter().enumerate() {
        c.csat(day(i as f64), score);
    }
    assert_eq!(c.state().support.csat_positive, 2);
    let e = c.eval(day(4.0));
    assert_eq!(e.support.csat_share, Some(0.5));
    assert_eq!(e.signals.get(Signal::CsatLow), Some(0.5));
}

#[test]
fn given_nps_answers_then_classes_and_the_latest_one_count() {
    for (score, class, signal) in [
        (0u8, NpsClass::Detractor, 1.0),
        (6, NpsClass::Detractor, 1.0),
        (7, NpsClass::Passive, 0.5),
        (8, NpsClass::Passive, 0.5),
        (9, NpsClass::Promoter, 0.0),
        (10, NpsClass::Promoter, 0.0),
    ] {
        assert_eq!(NpsClass::of(score), class);
        let mut c = Customer::new();
        c.nps(day(0.0), 3).nps(day(1.0), score);
        let e = c.eval(day(1.0));
        assert_eq!(e.support.nps_latest, Some(score));
        assert_eq!(e.support.nps_class, Some(class));
        assert_eq!(e.signals.get(Signal::Nps), Some(signal), "{score}");
    }
}

#[test]
fn given_negative_contacts_then_a_streak_builds_and_a_positive_one_resets_it() {
    let mut c = Customer::new();
    let fb = |v: f32| (SupportKind::FeedbackSubmitted, None, None, Some(v));
    c.csat(day(0.0), 1).nps(day(1.0), 4);
    let (k, t, s, v) = fb(-0.6);
    c.support(day(2.0), k, t, s, v);
    assert_eq!(c.state().support.negative_streak, 3);
    assert_eq!(
        c.eval(day(2.0)).signals.get(Signal::NegativeStreak),
        Some(1.0)
    );
    c.csat(day(3.0), 3); // neutral: unchanged
    assert_eq!(c.state().support.negative_streak, 3);
    let (k, t, s, v) = fb(0.8);
    c.support(day(4.0), k, t, s, v);
    assert_eq!(c.state().support.negative_streak, 0);
    let e = c.eval(day(4.0));
    assert!((e.support.sentiment.unwrap() - 0.1).abs() < 1e-6);
    assert_eq!(e.signals.get(Signal::NegativeSentiment), Some(0.0));
}

// ----- scorecard ----------------------------------------------------------------------------

#[test]
fn given_many_signals_then_contributions_sum_to_the_risk_and_reasons_explain_it() {
    let mut c = weekly_buyer();
    c.click(day(36.0), ClickKind::AddToCart)
        .csat(day(37.0), 2)
        .nps(day(38.0), 5)
        .support(day(39.0), SupportKind::TicketOpened, Some("t"), None, None);
    c.advance(day(40.0));
    let e = c.eval(day(40.0));
    let sum: f64 = e.contributions.0.iter().flatten().sum();
    assert!(
        (sum - e.churn_risk).abs() < 1e-12,
        "{sum} vs {}",
        e.churn_risk
    );
    assert!((0.0..=100.0).contains(&e.health));
    // Only measured signals take part: no feedback → no sentiment signal.
    assert_eq!(e.signals.get(Signal::NegativeSentiment), None);
    let reasons = engine::reasons(&e, AlertKind::ChurnWarning, &c.cfg);
    assert!(reasons[1..]
        .windows(2)
        .all(|w| w[0].contribution >= w[1].contribution));
    let signal_sum: f64 = reasons[1..].iter().map(|r| r.contribution).sum();
    assert!((signal_sum - e.churn_risk).abs() < 1e-12);
    assert!(reasons.iter().all(|r| !r.text.is_empty()));
}

#[test]
fn given_a_stage_alert_then_it_carries_version_before_after_scores_and_reasons() {
    let mut c = weekly_buyer();
    c.nps(day(36.0), 2);
    c.advance(day(120.0));
    let warning = c
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::ChurnWarning)
        .expect("a churn warning");
    assert_eq!(warning.rule_version, "v2");
    assert_eq!(warning.to, "at_risk");
    assert!(!warning.from.is_empty());
    let names: Vec<_> = warning.scores.iter().map(|s| s.name).collect();
    for n in [
        "churn_risk",
        "health",
        "p_alive",
        "clv_minor",
        "value_tier",
        "nps_latest",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(warning.reasons.len() >= 3);
    assert!(warning
        .reasons
        .iter()
        .any(|r| r.signal.as_str() == "nps" && r.contribution > 0.0));
}

#[test]
fn given_orders_in_two_currencies_then_alert_money_is_in_the_first_and_the_tier_is_named() {
    use pulse_core::event::{Body, Order, OrderKind};
    let order = |currency: &str, amount_minor| {
        Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: format!("o-{currency}-{amount_minor}"),
            amount_minor,
            currency: currency.into(),
            item_count: 1,
            channel: None,
        })
    };
    // Given a customer whose first orders are in USD and a later one in EUR
    let mut c = Customer::new();
    for w in 0..5 {
        c.event(day(7.0 * f64::from(w)), order("USD", 2000 + i64::from(w)));
    }
    c.event(day(35.0), order("EUR", 99_999));
    // When they go silent and are warned
    c.advance(day(150.0));
    let warning = c
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::ChurnWarning)
        .expect("a churn warning");
    // Then every monetary figure is in USD, the EUR order counted but not summed
    let money: Vec<(&str, i64, &str)> = warning
        .money
        .iter()
        .map(|m| (m.name, m.amount_minor, m.currency.as_str()))
        .collect();
    assert_eq!(money[0], ("net_spend", 10_010, "USD"), "{money:?}");
    let clv = warning.money.iter().find(|m| m.name == "clv").expect("clv");
    assert_eq!(clv.currency, "USD");
    let score = |n| warning.scores.iter().find(|s| s.name == n).unwrap().value;
    assert_eq!(clv.amount_minor, score("clv_minor").round() as i64);
    assert_eq!(money.len(), 3, "{money:?}");
    // And the value tier is the one the CLV falls in, by name
    let tier = warning.value_tier.expect("a value tier");
    assert_eq!(f64::from(tier.rank()), score("value_tier"));
    // And before any order there is no money and no tier
    let mut prospect = Customer::new();
    prospect.nps(day(0.0), 0);
    let e = prospect.eval(day(0.0));
    assert!(engine::money(prospect.state(), &e).is_empty());
    assert!(e.clv.is_none());
}

#[test]
fn given_a_customer_without_orders_then_risk_comes_from_the_other_signals_only() {
    let mut c = Customer::new();
    c.nps(day(0.0), 0);
    let e = c.eval(day(0.0));
    assert_eq!(e.p_alive, None);
    assert_eq!(e.stage, Stage::Prospect);
    // nps (1.0) and negative_streak (1/3) are measured: (0.05 + 0.025/3) / 0.075.
    assert!((e.churn_risk - (0.05 + 0.025 / 3.0) / 0.075).abs() < 1e-12);
    assert_eq!(e.next_change, None);
}

#[test]
fn given_state_then_it_round_trips_through_json() {
    let mut c = weekly_buyer();
    c.click(day(36.0), ClickKind::AddToCart)
        .support(day(37.0), SupportKind::TicketOpened, Some("t"), None, None)
        .support(
            day(38.0),
            SupportKind::FeedbackSubmitted,
            None,
            None,
            Some(-0.3),
        );
    let json = serde_json::to_string(&c.state()).unwrap();
    let back: pulse_core::CustomerState = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, c.state());
    assert!(!json.contains("text"));
}

#[test]
fn given_any_timer_when_it_fires_at_its_due_instant_then_the_outcome_changes_there() {
    let mut c = weekly_buyer();
    c.click(day(36.0), ClickKind::AddToCart);
    let mut fired = 0;
    while let Some(due) = c.state().next_timer.filter(|t| *t <= day(400.0)) {
        let before = c.eval(due - 1);
        let announced = c.state().announced.clone();
        let carts = c.state().clicks.carts_abandoned;
        c.advance(due);
        let after = c.eval(due);
        let changed = before.stage != after.stage
            || before.segment != after.segment
            || announced != c.state().announced
            || carts != c.state().clicks.carts_abandoned;
        assert!(changed, "timer at {due} changed nothing");
        fired += 1;
    }
    assert!(fired >= 6);
}
