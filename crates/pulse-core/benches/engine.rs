//! The engine's hot paths on one core: folding ordinary events through `decide`, and one
//! evaluation. Run with `cargo bench -p pulse-core --bench engine`.
//!
//! The population: 10,000 customers with a few months of history (70% buyers with 1–12
//! orders, clicks, some support), then a day of new events spread over all of them. States
//! live in a `Vec` indexed by customer, so the figures are the engine's, not a map's.
//!
//! The yardstick, the real decode of an input event against one evaluation in the same run,
//! is pulse-codec's bench: `cargo bench -p pulse-codec --bench decode_vs_evaluate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pulse_core::event::{Click, ClickKind, Order, OrderKind, Support, SupportKind, MINUTE};
use pulse_core::{decide, evaluate, Body, CustomerState, Event, Input, Millis, ScoringConfig, DAY};

const T0: Millis = 1_735_689_600_000;
const CUSTOMERS: usize = 10_000;
const EVENTS: usize = 100_000;

/// A tiny deterministic generator (SplitMix64), so the bench needs no extra crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn click(kind: ClickKind) -> Body {
    Body::Click(Click {
        kind,
        session_id: None,
    })
}

fn order(amount: i64) -> Body {
    Body::Order(Order {
        kind: OrderKind::Placed,
        order_id: "o".into(),
        amount_minor: amount,
        currency: "EUR".into(),
        item_count: 1,
        channel: None,
    })
}

fn support(kind: SupportKind, score: Option<u8>) -> Body {
    Body::Support(Support {
        kind,
        ticket_id: Some("t".into()),
        score,
        sentiment: None,
    })
}

fn random_click(rng: &mut Rng) -> Body {
    click(match rng.below(10) {
        0..=3 => ClickKind::PageView,
        4..=6 => ClickKind::ProductView,
        7 => ClickKind::Search,
        8 => ClickKind::AddToCart,
        _ => ClickKind::CheckoutStarted,
    })
}

fn ev(i: usize, t: Millis, body: Body) -> Event {
    Event {
        event_id: String::new(),
        customer_id: format!("c-{i}"),
        occurred_at: t,
        body,
    }
}

/// States after ~120 days of history, and the day that follows as events.
fn population(mixed: bool) -> (Vec<CustomerState>, Vec<(usize, Event)>) {
    let cfg = ScoringConfig::default();
    let mut rng = Rng(7);
    let mut states = vec![CustomerState::default(); CUSTOMERS];
    for (i, s) in states.iter_mut().enumerate() {
        let id = format!("c-{i}");
        let mut history = Vec::new();
        let orders = if rng.below(10) < 7 {
            1 + rng.below(12)
        } else {
            0
        };
        for _ in 0..orders {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push((t, order(1_000 + rng.below(9_000) as i64)));
        }
        for _ in 0..rng.below(40) {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push((t, random_click(&mut rng)));
        }
        if rng.below(5) == 0 {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push((
                t,
                support(SupportKind::CsatSubmitted, Some(1 + rng.below(5) as u8)),
            ));
        }
        history.sort_by_key(|(t, _)| *t);
        let start = T0 + 120 * DAY;
        for (t, body) in history {
            let e = ev(i, t, body);
            decide(s, &id, Input::Event(&e), t, &cfg);
        }
        // Fire the timers the partition clock passed, as fold does, so the measured day
        // announces only what its own events change.
        while let Some(due) = s.next_timer.filter(|due| *due <= start) {
            decide(s, &id, Input::Timer, due, &cfg);
        }
    }
    let start = T0 + 120 * DAY;
    let mut events: Vec<(usize, Event)> = (0..EVENTS)
        .map(|n| {
            let t = start + (n as Millis) * DAY / EVENTS as Millis;
            let i = rng.below(CUSTOMERS as u64) as usize;
            let body = if !mixed {
                random_click(&mut rng)
            } else {
                match rng.below(100) {
                    0..=79 => random_click(&mut rng),
                    80..=94 => order(1_000 + rng.below(9_000) as i64),
                    95..=97 => support(SupportKind::TicketOpened, None),
                    _ => support(SupportKind::NpsSubmitted, Some(rng.below(11) as u8)),
                }
            };
            (i, ev(i, t + rng.below(MINUTE as u64) as Millis, body))
        })
        .collect();
    events.sort_by_key(|(_, e)| e.occurred_at);
    (states, events)
}

fn fold(c: &mut Criterion) {
    let cfg = ScoringConfig::default();
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    for (name, mixed) in [("clicks", false), ("mixed", true)] {
        let (states, events) = population(mixed);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || states.clone(),
                |states| {
                    // Timers falling inside the measured day are not fired: the figure is
                    // the event path's (a timer costs about one `evaluate/per_event`).
                    let mut alerts = 0;
                    for (i, e) in &events {
                        let d = decide(
                            &mut states[*i],
                            &e.customer_id,
                            Input::Event(e),
                            e.occurred_at,
                            &cfg,
                        );
                        alerts += d.alerts.len();
                    }
                    black_box(alerts)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn evaluation(c: &mut Criterion) {
    let cfg = ScoringConfig::default();
    let (states, _) = population(true);
    // A buyer with repeat purchases, clicks and a support answer.
    let s = states
        .iter()
        .find(|s| s.orders.purchase_days >= 4 && s.clicks.events > 10 && s.support.csat_answers > 0)
        .expect("a rich customer")
        .clone();
    let at = T0 + 121 * DAY;
    let mut group = c.benchmark_group("evaluate");
    group.bench_function("full", |b| {
        b.iter(|| evaluate(black_box(&s), black_box(at), &cfg))
    });
    // What every event pays besides folding the fact: scorecard, stage, segment, next timer.
    group.bench_function("per_event", |b| {
        b.iter_batched_ref(
            || s.clone(),
            |s| decide(s, "c", Input::Timer, black_box(at), &cfg),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Every customer of the population evaluated once per iteration: buyers of every history
/// (one-time buyers have the slowest CLV series), prospects and click-only customers (no CLV
/// at all). Time per iteration / 10,000 = the mean cost of one full evaluation.
fn population_evaluation(c: &mut Criterion) {
    let cfg = ScoringConfig::default();
    let (states, _) = population(true);
    let at = T0 + 121 * DAY;
    let mut group = c.benchmark_group("evaluate_population");
    group.throughput(Throughput::Elements(CUSTOMERS as u64));
    group.sample_size(20);
    group.bench_function("all", |b| {
        b.iter(|| {
            for s in &states {
                black_box(evaluate(black_box(s), black_box(at), &cfg));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fold, evaluation, population_evaluation);
criterion_main!(benches);
