//! What ingest pays to decode an input event against what the engine pays to evaluate a
//! customer: `cargo bench -p pulse-codec --bench decode_vs_evaluate`.
//!
//! - `decode_vs_evaluate/decode_order`, `…/decode_click`: the real [`decode_input`] (serde_json into the codec's
//!   borrowed view, then validation: ids, RFC 3339 or epoch-millisecond time, type, currency
//!   and money parsing) of an order placed and a clickstream product view, in the shapes
//!   producers send them (the bytes pulse-core's bench used to decode into a mirror of the
//!   codec's fields, which left out validation).
//! - `decode_vs_evaluate/evaluate_full`: [`evaluate`] of a rich customer (orders on five distinct days, so four
//!   repeat purchases for the BTYD models, a dozen clicks, a CSAT answer) whose history was
//!   decoded with `decode_input` and folded through a `Partition` as fold does, a day after
//!   its last event.
//!
//! After criterion's figures it prints the ratio of evaluation to each decode, measured in
//! the same run by an interleaved loop (rounds of N decodes of the order, N decodes of the
//! click and N evaluations, the minimum per-op time of each over the rounds), so that a busy
//! shared machine slows both sides alike. Under `cargo test --benches` or `-- --test` the loop
//! runs one round of one op each and prints no figure; with `--list` it does not run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pulse_codec::time::format_rfc3339;
use pulse_codec::{decode_input, Encoding, Family};
use pulse_core::{evaluate, CustomerState, Event, Millis, Partition, ScoringConfig, DAY};

/// The service's default `ingest.max_record_bytes`.
const MAX_RECORD_BYTES: usize = 983_616;

/// An order placed, with an RFC 3339 time and a decimal-string amount (money parsing).
const ORDER_JSON: &str = r#"{"event_id":"3f1c2a9e-7b1d-4c55-9a0e-2d6f8b1e4c71","customer_id":"c-004217","occurred_at":"2026-03-01T12:00:00.123Z","type":"order_placed","order_id":"o-88412","amount":"23.50","currency":"EUR","items":[{"sku":"sku-1","quantity":2,"unit_price":"11.75"}],"channel":"web"}"#;
/// A product view with an epoch-millisecond time (as nine in ten simulated records carry it).
const CLICK_JSON: &str = r#"{"event_id":"9d2e41b0-5c3a-4f7e-8b61-0a4c7d9e2f13","customer_id":"c-004217","occurred_at":1772366400123,"type":"product_view","session_id":"s-5521","sku":"sku-1","url":"/p/sku-1","channel":"web"}"#;

const CUSTOMER: &str = "c-004217";
/// 2026-01-05T00:00:00Z.
const T0: Millis = 1_767_571_200_000;
const HOUR: Millis = 3_600_000;
const MINUTE: Millis = 60_000;

fn decode(family: Family, json: &str) -> Event {
    decode_input(family, Encoding::Json, json.as_bytes(), MAX_RECORD_BYTES)
        .unwrap_or_else(|r| panic!("{json} rejected: {} ({})", r.reason, r.detail))
}

/// An order line: sku, quantity, unit price.
type Item = (&'static str, u32, &'static str);

fn order_json(order: usize, at: Millis, skus: &[Item], amount: &str) -> String {
    let items: Vec<String> = skus
        .iter()
        .map(|(sku, quantity, price)| {
            format!(r#"{{"sku":"{sku}","quantity":{quantity},"unit_price":"{price}"}}"#)
        })
        .collect();
    format!(
        r#"{{"event_id":"e-{CUSTOMER}-{at}","customer_id":"{CUSTOMER}","occurred_at":"{}","type":"order_placed","order_id":"o-{order}","amount":"{amount}","currency":"EUR","items":[{}],"channel":"web"}}"#,
        format_rfc3339(at),
        items.join(",")
    )
}

fn click_json(at: Millis, kind: &str, session: u32) -> String {
    format!(
        r#"{{"event_id":"e-{CUSTOMER}-{at}","customer_id":"{CUSTOMER}","occurred_at":{at},"type":"{kind}","session_id":"s-{session}","sku":"sku-7","url":"/p/sku-7","channel":"web"}}"#
    )
}

fn csat_json(at: Millis, score: u8) -> String {
    format!(
        r#"{{"event_id":"e-{CUSTOMER}-{at}","customer_id":"{CUSTOMER}","occurred_at":"{}","type":"csat_submitted","ticket_id":"t-88","score":{score},"channel":"email"}}"#,
        format_rfc3339(at)
    )
}

/// A buyer's two months as input records: orders on five distinct days, twelve clicks in four
/// sessions (three of them ending in an order), one CSAT answer. Decoded with `decode_input` and folded with `decide` in time
/// order, timers fired as the partition clock passes them, as fold does. Returns the state and
/// the instant a day after its last event.
fn rich_customer(cfg: &ScoringConfig) -> (CustomerState, Millis) {
    let session = |day: i64, session: u32, kinds: [&str; 3]| -> Vec<(Family, String)> {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let at = T0 + day * DAY + 19 * HOUR + i as Millis * 2 * MINUTE;
                (Family::Clickstream, click_json(at, kind, session))
            })
            .collect()
    };
    // Day, items, amount.
    let orders: [(i64, &[Item], &str); 5] = [
        (0, &[("sku-7", 1, "39.90")], "39.90"),
        (13, &[("sku-2", 2, "11.75"), ("sku-9", 1, "4.99")], "28.49"),
        (29, &[("sku-7", 1, "39.90"), ("sku-4", 1, "15.00")], "54.90"),
        (44, &[("sku-3", 3, "8.50")], "25.50"),
        (58, &[("sku-7", 1, "39.90")], "39.90"),
    ];
    let mut records = Vec::new();
    for (n, (day, items, amount)) in orders.into_iter().enumerate() {
        if n % 2 == 0 {
            // A browsing session that ends in this order (three of the five orders).
            let kinds = ["product_view", "add_to_cart", "checkout_started"];
            records.extend(session(day, n as u32, kinds));
        }
        let at = T0 + day * DAY + 19 * HOUR + 10 * MINUTE;
        records.push((Family::Orders, order_json(n, at, items, amount)));
        if n == 2 {
            let at = T0 + (day + 2) * DAY + 9 * HOUR;
            records.push((Family::Support, csat_json(at, 4)));
        }
    }
    // And a last look around two days after the last order.
    records.extend(session(60, 9, ["page_view", "search", "product_view"]));

    let mut partition = Partition::new();
    let mut last = T0;
    for (family, json) in &records {
        let e = decode(*family, json);
        assert!(e.occurred_at >= last, "records in time order");
        last = e.occurred_at;
        partition.step(&e, cfg);
    }
    let s = partition.customer(CUSTOMER).expect("the customer").clone();
    assert!(s.orders.purchase_days >= 4, "x >= 3 repeat purchases");
    assert_eq!((s.clicks.events, s.support.csat_answers), (12, 1));
    (s, last + DAY)
}

fn benches(c: &mut Criterion, cfg: &ScoringConfig, state: &CustomerState, at: Millis) {
    // One group named after the bench, so that criterion's saved figures do not mix with
    // pulse-core's `evaluate/full` (another customer).
    let mut group = c.benchmark_group("decode_vs_evaluate");
    for (name, family, json) in [
        ("decode_order", Family::Orders, ORDER_JSON),
        ("decode_click", Family::Clickstream, CLICK_JSON),
    ] {
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                decode_input(
                    family,
                    Encoding::Json,
                    black_box(json.as_bytes()),
                    MAX_RECORD_BYTES,
                )
            })
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("evaluate_full", |b| {
        b.iter(|| evaluate(black_box(state), black_box(at), cfg))
    });
    group.finish();
}

/// Per-op time of `n` calls of `f`.
fn per_op<T>(n: u32, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    start.elapsed() / n
}

/// Rounds of `n` decodes of the order, `n` of the click and `n` evaluations; the minimum
/// per-op time of each over the rounds: (order, click, evaluate).
fn interleaved(
    rounds: u32,
    n: u32,
    cfg: &ScoringConfig,
    state: &CustomerState,
    at: Millis,
) -> (Duration, Duration, Duration) {
    let decode_once = |family, json: &str| {
        decode_input(
            family,
            Encoding::Json,
            black_box(json.as_bytes()),
            MAX_RECORD_BYTES,
        )
    };
    let (mut order, mut click, mut eval) = (Duration::MAX, Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        order = order.min(per_op(n, || decode_once(Family::Orders, ORDER_JSON)));
        click = click.min(per_op(n, || decode_once(Family::Clickstream, CLICK_JSON)));
        eval = eval.min(per_op(n, || evaluate(black_box(state), black_box(at), cfg)));
    }
    (order, click, eval)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a.split('=').next() == Some(flag));
    // As criterion decides: measuring only when cargo passed `--bench` (`cargo bench`) and
    // neither `--test` nor `--list` nor `--profile-time` was given.
    let list = has("--list");
    let measuring = has("--bench") && !has("--test") && !has("--profile-time") && !list;

    let cfg = ScoringConfig::default();
    let (state, at) = rich_customer(&cfg);
    // Both inputs must be accepted, or the bench would time rejections.
    decode(Family::Orders, ORDER_JSON);
    decode(Family::Clickstream, CLICK_JSON);

    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &cfg, &state, at);
    c.final_summary();

    if list {
        return;
    }
    if !measuring {
        // Test mode: run the loop once, print no figure from it.
        interleaved(1, 1, &cfg, &state, at);
        println!("Testing interleaved ratio\nSuccess");
        return;
    }
    let (rounds, n) = (20, 2_000);
    let (order, click, eval) = interleaved(rounds, n, &cfg, &state, at);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, decode) in [("order", order), ("click", click)] {
        println!(
            "ratio evaluate_full to decode_{name}: {:.2} (evaluate {:.3} µs, decode {:.3} µs, \
             minimum of {rounds} interleaved rounds of {n})",
            us(eval) / us(decode),
            us(eval),
            us(decode),
        );
    }
}
