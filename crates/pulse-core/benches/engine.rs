//! The engine's hot paths on one core: folding ordinary events through a [`Partition`] as
//! fold drives it, and one evaluation. Run with `cargo bench -p pulse-core --bench engine`.
//!
//! The population: 10,000 customers with a few months of history (70% buyers with 1–12
//! orders, clicks, some support) folded into one partition, then a day of new events spread
//! over all of them. The fold figures are the partition's: its customer map and timer set
//! included, and the timers falling inside the measured day fired, as in fold.
//!
//! The yardstick, the real decode of an input event against one evaluation in the same run,
//! is pulse-codec's bench: `cargo bench -p pulse-codec --bench decode_vs_evaluate`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pulse_core::event::{Click, ClickKind, Order, OrderKind, Support, SupportKind, MINUTE};
use pulse_core::{decide, evaluate, Body, CustomerState, Event, Input, Millis, Partition};
use pulse_core::{ScoringConfig, DAY};

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

/// A partition after ~120 days of history, and the day that follows as events.
fn population(mixed: bool) -> (Partition, Vec<Event>) {
    let cfg = ScoringConfig::default();
    let mut rng = Rng(7);
    let mut history = Vec::new();
    for i in 0..CUSTOMERS {
        let orders = if rng.below(10) < 7 {
            1 + rng.below(12)
        } else {
            0
        };
        for _ in 0..orders {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push(ev(i, t, order(1_000 + rng.below(9_000) as i64)));
        }
        for _ in 0..rng.below(40) {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push(ev(i, t, random_click(&mut rng)));
        }
        if rng.below(5) == 0 {
            let t = T0 + rng.below(120 * DAY as u64) as Millis;
            history.push(ev(
                i,
                t,
                support(SupportKind::CsatSubmitted, Some(1 + rng.below(5) as u8)),
            ));
        }
    }
    // A stable sort: one customer's events at the same instant keep their order.
    history.sort_by_key(|e| e.occurred_at);
    let mut partition = Partition::new();
    for e in &history {
        partition.step(e, &cfg);
    }
    // Fire the timers the clock passed before the measured day, so that the day announces
    // only what its own events and timers change.
    partition.advance(T0 + 120 * DAY, &cfg, |_, _, _, _| {});
    let start = T0 + 120 * DAY;
    let mut events: Vec<Event> = (0..EVENTS)
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
            ev(i, t + rng.below(MINUTE as u64) as Millis, body)
        })
        .collect();
    events.sort_by_key(|e| e.occurred_at);
    (partition, events)
}

fn fold(c: &mut Criterion) {
    let cfg = ScoringConfig::default();
    let mut group = c.benchmark_group("fold");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    for (name, mixed) in [("clicks", false), ("mixed", true)] {
        let (partition, events) = population(mixed);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || partition.clone(),
                |partition| {
                    let mut alerts = 0;
                    for e in &events {
                        alerts += partition.step(e, &cfg).len();
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
    let (partition, _) = population(true);
    // A buyer with repeat purchases, clicks and a support answer (the least id of them, so
    // that every run measures the same one whatever the map's order).
    let (_, s) = partition
        .customers()
        .filter(|(_, s)| {
            s.orders.purchase_days >= 4 && s.clicks.events > 10 && s.support.csat_answers > 0
        })
        .min_by_key(|(id, _)| id.as_str())
        .expect("a rich customer");
    let s = s.clone();
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
/// at all), every customer with a history (a few of the 10,000 have none). Time per
/// element = the mean cost of one full evaluation.
fn population_evaluation(c: &mut Criterion) {
    let cfg = ScoringConfig::default();
    let (partition, _) = population(true);
    let states: Vec<&CustomerState> = partition.customers().map(|(_, s)| s).collect();
    let at = T0 + 121 * DAY;
    let mut group = c.benchmark_group("evaluate_population");
    group.throughput(Throughput::Elements(states.len() as u64));
    group.sample_size(20);
    group.bench_function("all", |b| {
        b.iter(|| {
            for s in &states {
                black_box(evaluate(black_box(*s), black_box(at), &cfg));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fold, evaluation, population_evaluation);
criterion_main!(benches);
