//! The engine's hot paths on one core: folding ordinary events through `decide`, and one
//! evaluation. Run with `cargo bench -p pulse-core --bench engine`.
//!
//! The population: 10,000 customers with a few months of history (70% buyers with 1–12
//! orders, clicks, some support), then a day of new events spread over all of them. States
//! live in a `Vec` indexed by customer, so the figures are the engine's, not a map's.
//!
//! The yardstick is `json_decode`: serde_json decoding a typical input event (an order, a
//! click) into borrowed fields, the first step ingest takes with every record. pulse-codec
//! depends on pulse-core, so its private `Fields` is mirrored here rather than imported;
//! the figure leaves out the codec's validation (time and money parsing), so it is a lower
//! bound on what ingest pays per event.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pulse_core::event::{Click, ClickKind, Order, OrderKind, Support, SupportKind, MINUTE};
use pulse_core::{decide, evaluate, Body, CustomerState, Event, Input, Millis, ScoringConfig, DAY};
use serde::Deserialize;

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

/// pulse-codec's `input::Fields` (every field any input family may carry, borrowed where
/// possible), field for field.
#[derive(Debug, Default, Deserialize)]
#[allow(dead_code)] // decoded, never read: the decode is what is measured
struct Fields<'a> {
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    occurred_at: Option<When<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    order_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    amount: Option<Amount<'a>>,
    #[serde(borrow)]
    currency: Option<Cow<'a, str>>,
    items: Option<Vec<Item>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ticket_id: Option<Cow<'a, str>>,
    score: Option<f64>,
    sentiment: Option<f64>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum When<'a> {
    Millis(i64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Amount<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    Number(serde_json::Number),
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Item {
    #[serde(default)]
    quantity: Option<u32>,
}

/// An order and a click as producers send them (the shapes of pulse-codec's input tests).
const ORDER_JSON: &str = r#"{"event_id":"3f1c2a9e-7b1d-4c55-9a0e-2d6f8b1e4c71","customer_id":"c-004217","occurred_at":"2026-03-01T12:00:00.123Z","type":"order_placed","order_id":"o-88412","amount":"23.50","currency":"EUR","items":[{"sku":"sku-1","quantity":2,"unit_price":"11.75"}],"channel":"web"}"#;
const CLICK_JSON: &str = r#"{"event_id":"9d2e41b0-5c3a-4f7e-8b61-0a4c7d9e2f13","customer_id":"c-004217","occurred_at":1772366400123,"type":"product_view","session_id":"s-5521","sku":"sku-1","url":"/p/sku-1","channel":"web"}"#;

fn json_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_decode");
    for (name, json) in [("order", ORDER_JSON), ("click", CLICK_JSON)] {
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let fields: Fields<'_> =
                    serde_json::from_slice(black_box(json.as_bytes())).expect("valid event");
                black_box(fields)
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    fold,
    evaluation,
    population_evaluation,
    json_decode
);
criterion_main!(benches);
