//! Property tests of the engine, driven through [`Partition`] exactly as fold drives it (the
//! clock is the largest event time seen, and every timer it passes fires at its due instant,
//! in (due, customer) order, before the event that moved it is applied), with the engine's
//! properties checked at every timer and every event.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use pulse_core::config::ModelKind;
use pulse_core::event::{Click, ClickKind, Order, OrderKind, Support, SupportKind, HOUR, MINUTE};
use pulse_core::{
    evaluate, Alert, Body, CustomerState, Event, Millis, Partition, ScoringConfig, Signal, DAY,
};

const T0: Millis = 1_735_689_600_000;

/// A [`Partition`] and what its steps produced, each step checked.
struct Checked {
    cfg: ScoringConfig,
    p: Partition,
    /// Each customer's state after its last step: what a timer finds when it fires.
    last: HashMap<String, CustomerState>,
    alerts: Vec<Alert>,
    fired: usize,
    applied: usize,
}

impl Checked {
    fn new(cfg: ScoringConfig) -> Self {
        Checked {
            cfg,
            p: Partition::new(),
            last: HashMap::new(),
            alerts: Vec::new(),
            fired: 0,
            applied: 0,
        }
    }

    fn advance(&mut self, t: Millis) -> Result<(), TestCaseError> {
        let clock = self.p.clock();
        let Checked {
            cfg,
            p,
            last,
            alerts,
            fired,
            ..
        } = self;
        let mut result = Ok(());
        let mut previous: Option<(Millis, String)> = None;
        p.advance(t, cfg, |id, due, state, a| {
            *fired += 1;
            if result.is_ok() {
                result = check_timer(cfg, (clock, t), &previous, last.get(id), id, due, state, &a);
            }
            previous = Some((due, id.to_string()));
            last.insert(id.to_string(), state.clone());
            alerts.extend(a);
        });
        result?;
        prop_assert_eq!(self.p.clock(), clock.max(t));
        Ok(())
    }

    fn apply(&mut self, e: &Event) -> Result<(), TestCaseError> {
        self.advance(e.occurred_at)?;
        let clock = self.p.clock();
        let alerts = self.p.apply(e, &self.cfg);
        let state = self
            .p
            .customer(&e.customer_id)
            .expect("created by its event");
        if let Some(t) = state.next_timer {
            prop_assert!(t > clock, "timer {} not after now {}", t, clock);
        }
        check_nothing_changes_before(state, clock, state.next_timer, &self.cfg)?;
        check_ranges(state, clock, &self.cfg)?;
        self.last.insert(e.customer_id.clone(), state.clone());
        let scheduled = self.p.customers().filter(|(_, s)| s.next_timer.is_some());
        prop_assert_eq!(self.p.pending_timers(), scheduled.count());
        self.alerts.extend(alerts);
        self.applied += 1;
        Ok(())
    }

    fn state(&self, id: &str) -> &CustomerState {
        self.p.customer(id).expect("a known customer")
    }

    fn alerts_of(&self, id: &str) -> Vec<Alert> {
        self.alerts
            .iter()
            .filter(|a| a.customer_id == id)
            .cloned()
            .collect()
    }
}

/// One timer fired by an advance from `clock` to `to`: in (due, customer) order after the
/// previous one, between the clock and the new time, for the timer its customer's last step
/// set. No busy loop: the next timer is later, and this one changed something at the very
/// instant it was due (the evaluation a millisecond earlier did not show it), nothing before.
#[allow(clippy::too_many_arguments)]
fn check_timer(
    cfg: &ScoringConfig,
    (clock, to): (Millis, Millis),
    previous: &Option<(Millis, String)>,
    before: Option<&CustomerState>,
    id: &str,
    due: Millis,
    state: &CustomerState,
    alerts: &[Alert],
) -> Result<(), TestCaseError> {
    prop_assert!(
        due > clock && due <= to,
        "timer {} fired moving {} to {}",
        due,
        clock,
        to
    );
    if let Some((t, other)) = previous {
        prop_assert!(
            (*t, other.as_str()) < (due, id),
            "{} {} fired after {} {}",
            due,
            id,
            t,
            other
        );
    }
    let before = before.expect("a timer of a customer already stepped");
    prop_assert_eq!(before.next_timer, Some(due));
    if let Some(next) = state.next_timer {
        prop_assert!(next > due, "timer {} not after {}", next, due);
    }
    check_nothing_changes_before(state, due, state.next_timer, cfg)?;
    let (was, is) = (evaluate(before, due - 1, cfg), evaluate(state, due, cfg));
    let changed = !alerts.is_empty()
        || before.announced != state.announced
        || before.clicks != state.clicks
        || was.stage != is.stage
        || was.segment != is.segment;
    prop_assert!(changed, "timer at {} for {} changed nothing", due, id);
    Ok(())
}

/// The other half of a timer's exactness (the partition checks that it changes something at
/// its due instant): nothing it stands for changes before it. The stage and segment at
/// `now` still hold a millisecond before the timer and halfway there (or, with no timer,
/// long after).
fn check_nothing_changes_before(
    s: &CustomerState,
    now: Millis,
    next: Option<Millis>,
    cfg: &ScoringConfig,
) -> Result<(), TestCaseError> {
    let at_now = evaluate(s, now, cfg);
    let last = next.map_or(now + 400 * DAY, |t| t - 1);
    for t in [now + (last - now) / 2, last] {
        let e = evaluate(s, t, cfg);
        prop_assert_eq!(
            (e.stage, e.segment),
            (at_now.stage, at_now.segment),
            "changed by {} (now {}, timer {:?}, risk {} then {})",
            t,
            now,
            next,
            at_now.churn_risk,
            e.churn_risk
        );
    }
    Ok(())
}

fn check_ranges(s: &CustomerState, at: Millis, cfg: &ScoringConfig) -> Result<(), TestCaseError> {
    let e = evaluate(s, at, cfg);
    prop_assert!((0.0..=1.0).contains(&e.churn_risk), "risk {}", e.churn_risk);
    prop_assert!((0.0..=100.0).contains(&e.health), "health {}", e.health);
    for (sig, v) in e.signals.measured() {
        prop_assert!((0.0..=1.0).contains(&v), "{:?} = {}", sig, v);
    }
    let sum: f64 = e.contributions.0.iter().flatten().sum();
    prop_assert!(
        (sum - e.churn_risk).abs() < 1e-9,
        "contributions {} vs risk {}",
        sum,
        e.churn_risk
    );
    if let Some(p) = e.p_alive {
        prop_assert!((0.0..=1.0).contains(&p));
    }
    for score in [e.recency_score, e.frequency_score, e.monetary_score] {
        prop_assert!((1..=5).contains(&score));
    }
    if let Some(clv) = e.clv {
        prop_assert!(
            clv.clv_minor.is_finite() && clv.clv_minor >= 0.0,
            "{:?}",
            clv
        );
    }
    if let Some(next) = e.next_change {
        prop_assert!(next > at);
    }
    for s in pulse_core::engine::scores(&e) {
        prop_assert!(s.value.is_finite(), "{}", s.name);
    }
    Ok(())
}

fn body() -> impl Strategy<Value = Body> {
    let order = (0..10u8, 0..20_000i64).prop_map(|(k, amount)| {
        Body::Order(Order {
            kind: match k {
                0 => OrderKind::Cancelled,
                1 => OrderKind::Refunded,
                _ => OrderKind::Placed,
            },
            order_id: "o".into(),
            amount_minor: amount,
            currency: "EUR".into(),
            item_count: 1,
            channel: None,
        })
    });
    let click = (0..6u8).prop_map(|k| {
        Body::Click(Click {
            kind: [
                ClickKind::PageView,
                ClickKind::ProductView,
                ClickKind::Search,
                ClickKind::AddToCart,
                ClickKind::RemoveFromCart,
                ClickKind::CheckoutStarted,
            ][usize::from(k)],
            session_id: None,
        })
    });
    let support =
        (0..6u8, 0..3u8, 0..=10u8, -1.0f32..=1.0).prop_map(|(k, ticket, score, sentiment)| {
            let kind = [
                SupportKind::TicketOpened,
                SupportKind::TicketFirstResponse,
                SupportKind::TicketResolved,
                SupportKind::CsatSubmitted,
                SupportKind::NpsSubmitted,
                SupportKind::FeedbackSubmitted,
            ][usize::from(k)];
            Body::Support(Support {
                kind,
                ticket_id: Some(format!("t{ticket}")),
                score: match kind {
                    SupportKind::CsatSubmitted => Some(1 + score % 5),
                    SupportKind::NpsSubmitted => Some(score),
                    _ => None,
                },
                sentiment: (kind == SupportKind::FeedbackSubmitted).then_some(sentiment),
            })
        });
    prop_oneof![3 => order, 5 => click, 2 => support]
}

/// A gap before the next event: seconds to months.
fn gap() -> impl Strategy<Value = Millis> {
    prop_oneof![0..MINUTE, MINUTE..2 * HOUR, HOUR..3 * DAY, DAY..120 * DAY,]
}

/// One customer's events, in time order.
fn stream(id: &'static str) -> impl Strategy<Value = Vec<Event>> {
    (
        0..10 * DAY,
        proptest::collection::vec((gap(), body()), 1..25),
    )
        .prop_map(move |(start, evs)| {
            let mut t = T0 + start;
            evs.into_iter()
                .enumerate()
                .map(|(i, (g, body))| {
                    t += g;
                    Event {
                        event_id: format!("{id}-{i}"),
                        customer_id: id.to_string(),
                        occurred_at: t,
                        body,
                    }
                })
                .collect()
        })
}

fn config() -> impl Strategy<Value = ScoringConfig> {
    prop_oneof![
        6 => Just(ModelKind::MbgNbd),
        2 => Just(ModelKind::BgNbd),
        1 => Just(ModelKind::ParetoNbd),
    ]
    .prop_map(|kind| {
        let mut cfg = ScoringConfig::default();
        cfg.model.kind = kind;
        cfg
    })
}

/// All events in time order, ties broken by `keys` (so the same multiset interleaves
/// differently with different keys).
fn merge(streams: &[&Vec<Event>], keys: &[u32]) -> Vec<Event> {
    let mut all: Vec<(Millis, u32, Event)> = streams
        .iter()
        .flat_map(|s| s.iter())
        .enumerate()
        .map(|(i, e)| (e.occurred_at, keys[i % keys.len()], e.clone()))
        .collect();
    // Time order first; among equal times the keys decide, except within one customer,
    // whose own order the stable sort keeps.
    all.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            if a.2.customer_id == b.2.customer_id {
                std::cmp::Ordering::Equal
            } else {
                a.1.cmp(&b.1)
            }
        })
    });
    all.into_iter().map(|(_, _, e)| e).collect()
}

fn fold(cfg: &ScoringConfig, events: &[Event], end: Millis) -> Result<Checked, TestCaseError> {
    let mut p = Checked::new(cfg.clone());
    for e in events {
        p.apply(e)?;
    }
    p.advance(end)?;
    prop_assert!(
        p.fired <= 12 * p.applied + 12,
        "{} timers for {} events",
        p.fired,
        p.applied
    );
    Ok(p)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A customer's alerts and state depend neither on other customers' events nor on how the
    /// streams interleave; the same events in the same order give the same alerts.
    #[test]
    fn outcomes_are_per_customer_and_deterministic(
        cfg in config(),
        a in stream("a"),
        b in stream("b"),
        c in stream("c"),
        keys in proptest::collection::vec(any::<u32>(), 1..8),
        keys2 in proptest::collection::vec(any::<u32>(), 1..8),
    ) {
        let end = [&a, &b, &c].iter().filter_map(|s| s.last()).map(|e| e.occurred_at).max().unwrap() + 400 * DAY;
        let alone = fold(&cfg, &a, end)?;
        let merged = merge(&[&a, &b, &c], &keys);
        let together = fold(&cfg, &merged, end)?;
        let other = fold(&cfg, &merge(&[&c, &b, &a], &keys2), end)?;
        prop_assert_eq!(alone.state("a"), together.state("a"));
        prop_assert_eq!(alone.alerts_of("a"), together.alerts_of("a"));
        prop_assert_eq!(together.state("a"), other.state("a"));
        prop_assert_eq!(together.alerts_of("b"), other.alerts_of("b"));
        let again = fold(&cfg, &merged, end)?;
        prop_assert_eq!(&together.alerts, &again.alerts);
        for (_, s) in together.p.customers() {
            // State JSON round-trips exactly (serde_json float_roundtrip).
            let json = serde_json::to_string(s).unwrap();
            let back: CustomerState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, s);
        }
    }

    /// Independent customers get the same alerts and states however they are split over
    /// partitions (each partition with its own clock), as with all of them in one.
    #[test]
    fn outcomes_do_not_depend_on_the_partition_split(
        cfg in config(),
        a in stream("a"),
        b in stream("b"),
        c in stream("c"),
        d in stream("d"),
        split in proptest::collection::vec(0..3usize, 4),
        keys in proptest::collection::vec(any::<u32>(), 1..8),
    ) {
        let streams = [&a, &b, &c, &d];
        let ids = ["a", "b", "c", "d"];
        let end = streams.iter().filter_map(|s| s.last()).map(|e| e.occurred_at).max().unwrap() + 400 * DAY;
        let one = fold(&cfg, &merge(&streams, &keys), end)?;
        let mut alerts = 0;
        for part in 0..3 {
            let mine: Vec<usize> = (0..4).filter(|i| split[*i] == part).collect();
            if mine.is_empty() {
                continue;
            }
            let events = merge(&mine.iter().map(|i| streams[*i]).collect::<Vec<_>>(), &keys);
            let p = fold(&cfg, &events, end)?;
            prop_assert_eq!(p.p.len(), mine.len());
            for i in mine {
                prop_assert_eq!(p.state(ids[i]), one.state(ids[i]));
                prop_assert_eq!(p.alerts_of(ids[i]), one.alerts_of(ids[i]));
            }
            alerts += p.alerts.len();
        }
        prop_assert_eq!(alerts, one.alerts.len());
    }

    /// Between events, P(alive) never increases and the risk never decreases as silence grows
    /// (for x > 0; for x = 0 too under MBG/NBD), and scores stay in range at any instant.
    #[test]
    fn silence_only_lowers_p_alive(
        cfg in config(),
        events in stream("a"),
        offsets in proptest::collection::vec(0..500 * DAY, 2..12),
    ) {
        let last = events.last().unwrap().occurred_at;
        let p = fold(&cfg, &events, last)?;
        let state = p.state("a");
        let mut ts: Vec<Millis> = offsets.iter().map(|o| last + o).collect();
        ts.sort_unstable();
        let evals: Vec<_> = ts.iter().map(|t| evaluate(state, *t, &cfg)).collect();
        for (e, t) in evals.iter().zip(&ts) {
            check_ranges(state, *t, &cfg)?;
            prop_assert_eq!(e.signals.get(Signal::PDead).is_some(), state.orders.first_at.is_some());
        }
        for w in evals.windows(2) {
            if let (Some(p0), Some(p1)) = (w[0].p_alive, w[1].p_alive) {
                prop_assert!(p1 <= p0, "P(alive) rose from {} to {}", p0, p1);
            }
            prop_assert!(w[1].churn_risk >= w[0].churn_risk, "risk fell from {} to {}", w[0].churn_risk, w[1].churn_risk);
        }
    }
    /// While a customer has no more purchase days than are kept, the purchase-day count (the
    /// BTYD models' x + 1) does not depend on the order in which late orders arrive.
    #[test]
    fn purchase_days_do_not_depend_on_arrival_order(
        times in proptest::collection::vec(0..120 * DAY, 1..40),
        shuffle in proptest::collection::vec(any::<u32>(), 40),
    ) {
        let cfg = ScoringConfig::default();
        let distinct: BTreeSet<Millis> = times.iter().map(|t| t / DAY).collect();
        prop_assume!(distinct.len() <= pulse_core::state::RECENT_PURCHASE_DAYS);
        let order = |t: Millis| Event {
            event_id: format!("e-{t}"),
            customer_id: "a".into(),
            occurred_at: T0 + t,
            body: Body::Order(Order {
                kind: OrderKind::Placed,
                order_id: format!("o-{t}"),
                amount_minor: 1_000,
                currency: "EUR".into(),
                item_count: 1,
                channel: None,
            }),
        };
        let mut arrival: Vec<(u32, Millis)> = times.iter().zip(&shuffle).map(|(t, k)| (*k, *t)).collect();
        arrival.sort_unstable();
        let mut state = CustomerState::default();
        for (_, t) in arrival {
            pulse_core::engine::evolve(&mut state, &order(t), &cfg);
        }
        prop_assert_eq!(state.orders.purchase_days as usize, distinct.len());
        prop_assert!(state.orders.knows_recent_days());
    }
}
