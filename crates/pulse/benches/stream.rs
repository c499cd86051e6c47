//! What the engine costs per event against what decoding the event costs, over a realistic
//! stream: `cargo bench -p pulse --bench stream`.
//!
//! The stream is `pulse simulate`'s: a year of clickstream, order and support records of
//! 1,000 customers, every record well formed, in time order. Two passes over it, in
//! interleaved rounds so that a busy machine slows both alike (the minimum of each):
//!
//! - `decode`: [`decode_input`] of every record (JSON parse and validation), as ingest does;
//! - `engine`: everything pulse-core does for the same events as fold drives it, from empty
//!   states: every customer's timer fired when the partition clock passes it, then `decide`
//!   of the event (fold of the event, scores, stage, segment, exact next timer, and for every
//!   alert a full evaluation with the discounted CLV, its reasons and scores).
//!
//! It prints both per-event costs, their ratio, and how many timers and alerts the engine
//! pass produced. Under `cargo test --benches` (or `-- --test`) it runs one round over a
//! short stream and prints no figure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use pulse::simulate::{SimConfig, SimRecord, SimTopic, Simulator};
use pulse_codec::{decode_input, Encoding, Family};
use pulse_core::{decide, CustomerState, Event, Input, Millis, ScoringConfig};

/// The service's default `ingest.max_record_bytes`.
const MAX_RECORD_BYTES: usize = 1 << 20;

fn family(topic: SimTopic) -> Family {
    match topic {
        SimTopic::Orders => Family::Orders,
        SimTopic::Clickstream => Family::Clickstream,
        SimTopic::Support => Family::Support,
    }
}

fn decode(r: &SimRecord) -> Event {
    decode_input(family(r.topic), Encoding::Json, &r.value, MAX_RECORD_BYTES)
        .unwrap_or_else(|e| panic!("well-formed record rejected: {} ({})", e.reason, e.detail))
}

/// Wall time of decoding every record.
fn decode_pass(records: &[SimRecord]) -> Duration {
    let start = Instant::now();
    for r in records {
        black_box(decode_input(
            family(r.topic),
            Encoding::Json,
            black_box(&r.value),
            MAX_RECORD_BYTES,
        ))
        .ok();
    }
    start.elapsed()
}

/// What the engine pass did besides taking time.
#[derive(Debug, Default, PartialEq)]
struct Work {
    timers: usize,
    alerts: usize,
}

/// Wall time of the engine over `events` (each with its customer's index) from empty states,
/// timers fired as fold fires them: a customer's timer is due once the partition clock (the
/// latest event time) reaches it, and it fires before the event that moved the clock.
fn engine_pass(events: &[(usize, Event)], ids: &[String], cfg: &ScoringConfig) -> (Duration, Work) {
    let mut states = vec![CustomerState::default(); ids.len()];
    let mut timers: BinaryHeap<Reverse<(Millis, usize)>> = BinaryHeap::new();
    let mut work = Work::default();
    let start = Instant::now();
    for (c, e) in events {
        while let Some(&Reverse((due, t))) = timers.peek() {
            if due > e.occurred_at {
                break;
            }
            timers.pop();
            let s = &mut states[t];
            // A timer replaced by a later decision is stale.
            if s.next_timer == Some(due) {
                let d = decide(s, &ids[t], Input::Timer, due, cfg);
                work.timers += 1;
                work.alerts += d.alerts.len();
                if let Some(next) = d.next_timer {
                    timers.push(Reverse((next, t)));
                }
            }
        }
        let s = &mut states[*c];
        let before = s.next_timer;
        let d = decide(s, &e.customer_id, Input::Event(e), e.occurred_at, cfg);
        work.alerts += d.alerts.len();
        if let Some(next) = d.next_timer.filter(|n| Some(*n) != before) {
            timers.push(Reverse((next, *c)));
        }
    }
    (start.elapsed(), work)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Measure only under `cargo bench` (which passes `--bench`), not `--test` or `--list`.
    if has("--list") {
        return;
    }
    let measuring = has("--bench") && !has("--test");
    let customers = if measuring { 1_000 } else { 20 };
    let records: Vec<SimRecord> = Simulator::new(SimConfig {
        customers,
        malformed_per_mille: 0,
        ..SimConfig::default()
    })
    .collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    let events: Vec<(usize, Event)> = records
        .iter()
        .map(|r| {
            let e = decode(r);
            let next = index.len();
            (*index.entry(e.customer_id.clone()).or_insert(next), e)
        })
        .collect();
    let mut ids = vec![String::new(); index.len()];
    for (id, i) in index {
        ids[i] = id;
    }
    let cfg = ScoringConfig::default();

    let rounds = if measuring { 15 } else { 1 };
    let (mut decode_t, mut engine_t) = (Duration::MAX, Duration::MAX);
    let mut work = Work::default();
    for _ in 0..rounds {
        decode_t = decode_t.min(decode_pass(&records));
        let (t, w) = engine_pass(&events, &ids, &cfg);
        engine_t = engine_t.min(t);
        work = w;
    }
    if !measuring {
        println!("Testing stream\nSuccess");
        return;
    }
    let n = events.len() as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e9 / n;
    let orders = records
        .iter()
        .filter(|r| r.topic == SimTopic::Orders)
        .count();
    let clicks = records
        .iter()
        .filter(|r| r.topic == SimTopic::Clickstream)
        .count();
    println!(
        "stream: {} events of {} customers ({orders} orders, {clicks} clicks, {} support); \
         the engine fired {} timers and emitted {} alerts",
        events.len(),
        ids.len(),
        events.len() - orders - clicks,
        work.timers,
        work.alerts,
    );
    println!(
        "ratio engine to decode per event: {:.2} (engine {:.0} ns, decode {:.0} ns per event, \
         minimum of {rounds} interleaved rounds)",
        per(engine_t) / per(decode_t),
        per(engine_t),
        per(decode_t),
    );
}
