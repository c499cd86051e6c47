//! A small builder that drives one customer through a [`Partition`], as fold does: the clock
//! only moves forward, and every timer the clock passes fires at its due instant, in order,
//! before the event that moved the clock is applied.

#![allow(dead_code)]

use pulse_core::event::{Click, ClickKind, Order, OrderKind, Support, SupportKind, HOUR};
use pulse_core::{
    evaluate, Alert, AlertKind, Body, CustomerState, Evaluation, Event, Millis, Partition,
    ScoringConfig, DAY,
};

/// Day 0 of the tests' calendar (2025-01-01), epoch milliseconds.
pub const T0: Millis = 1_735_689_600_000;

pub fn day(d: f64) -> Millis {
    T0 + (d * DAY as f64).round() as Millis
}

pub struct Customer {
    pub id: String,
    pub cfg: ScoringConfig,
    pub partition: Partition,
    pub alerts: Vec<Alert>,
    pub timers_fired: u32,
    seq: u64,
}

/// The rules these tests' hand-worked expectations were computed with: the shipped rules
/// before they were fitted to the simulator (rule_version v2, the published CDNOW fits), read
/// from the one copy the service's tests load too, so refitting the shipped defaults does not
/// change what a test checks.
pub fn rules() -> ScoringConfig {
    #[derive(serde::Deserialize)]
    struct Layer {
        scoring: ScoringConfig,
    }
    let layer: Layer = toml::from_str(include_str!("../fixtures/scoring-v2.toml"))
        .expect("tests/fixtures/scoring-v2.toml");
    layer.scoring
}

impl Customer {
    pub fn new() -> Self {
        Customer::with(rules())
    }

    pub fn with(cfg: ScoringConfig) -> Self {
        Customer {
            id: "c-1".into(),
            cfg,
            partition: Partition::new(),
            alerts: Vec::new(),
            timers_fired: 0,
            seq: 0,
        }
    }

    /// The customer's state (after its first event).
    pub fn state(&self) -> &CustomerState {
        self.partition
            .customer(&self.id)
            .expect("the customer has had an event")
    }

    pub fn clock(&self) -> Millis {
        self.partition.clock()
    }

    /// Moves the clock to `t`, firing every timer it passes.
    pub fn advance(&mut self, t: Millis) -> &mut Self {
        let (fired, alerts) = (&mut self.timers_fired, &mut self.alerts);
        self.partition.advance(t, &self.cfg, |_, due, state, a| {
            *fired += 1;
            assert!(*fired < 10_000, "busy timer loop");
            if let Some(next) = state.next_timer {
                assert!(next > due, "timer {next} not after {due}");
            }
            alerts.extend(a);
        });
        self
    }

    pub fn event(&mut self, t: Millis, body: Body) -> &mut Self {
        self.advance(t);
        self.seq += 1;
        let e = Event {
            event_id: format!("e-{}", self.seq),
            customer_id: self.id.clone(),
            occurred_at: t,
            body,
        };
        let alerts = self.partition.apply(&e, &self.cfg);
        let clock = self.clock();
        if let Some(next) = self.state().next_timer {
            assert!(next > clock, "timer {next} not after {clock}");
        }
        self.alerts.extend(alerts);
        self
    }

    pub fn order(&mut self, t: Millis, amount_minor: i64) -> &mut Self {
        self.event(
            t,
            Body::Order(Order {
                kind: OrderKind::Placed,
                order_id: format!("o-{t}"),
                amount_minor,
                currency: "EUR".into(),
                item_count: 1,
                channel: None,
            }),
        )
    }

    pub fn click(&mut self, t: Millis, kind: ClickKind) -> &mut Self {
        self.event(
            t,
            Body::Click(Click {
                kind,
                session_id: None,
            }),
        )
    }

    pub fn support(
        &mut self,
        t: Millis,
        kind: SupportKind,
        ticket: Option<&str>,
        score: Option<u8>,
        sentiment: Option<f32>,
    ) -> &mut Self {
        self.event(
            t,
            Body::Support(Support {
                kind,
                ticket_id: ticket.map(str::to_string),
                score,
                sentiment,
            }),
        )
    }

    pub fn nps(&mut self, t: Millis, score: u8) -> &mut Self {
        self.support(t, SupportKind::NpsSubmitted, None, Some(score), None)
    }

    pub fn csat(&mut self, t: Millis, score: u8) -> &mut Self {
        self.support(t, SupportKind::CsatSubmitted, None, Some(score), None)
    }

    pub fn eval(&self, t: Millis) -> Evaluation {
        evaluate(self.state(), t, &self.cfg)
    }

    /// `(kind, from, to, at)` of every alert so far.
    pub fn transitions(&self, kind: AlertKind) -> Vec<(&'static str, &'static str, Millis)> {
        self.alerts
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| (a.from, a.to, a.occurred_at))
            .collect()
    }

    pub fn stages(&self) -> Vec<(&'static str, &'static str, Millis)> {
        self.transitions(AlertKind::LifecycleStageChanged)
    }
}

pub fn hours(h: f64) -> Millis {
    (h * HOUR as f64).round() as Millis
}
