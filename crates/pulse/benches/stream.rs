//! What the engine costs per event against what decoding the event costs, over a realistic
//! stream: `cargo bench -p pulse --bench stream`.
//!
//! The stream is `pulse simulate`'s: a year of clickstream, order and support records of
//! 1,000 customers, every record well formed, in time order. Two passes over it, in
//! interleaved rounds so that a busy machine slows both alike (the minimum of each):
//!
//! - `decode`: [`SimRecord::decode`] of every record (`decode_input`: JSON parse and
//!   validation), as ingest does;
//! - `engine`: [`core_pass`], everything pulse-core does for the same events as fold drives
//!   it, from empty states, through one `Partition`: every timer fired when the partition
//!   clock passes it, then the event decided at its customer's own time (fold of the event,
//!   scores, stage, segment, exact next timer, and for every alert a full evaluation with the
//!   discounted CLV, its reasons and scores), the partition's customer map and timer set
//!   included.
//!
//! It prints both per-event costs, their ratio, and how many timers and alerts the engine
//! pass produced. Under `cargo test --benches` (or `-- --test`) it runs one round over a
//! short stream and prints no figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pulse::bench::core_pass;
use pulse::simulate::{SimConfig, SimRecord, SimTopic, Simulator};
use pulse_core::{Event, ScoringConfig};

/// Wall time of decoding every record.
fn decode_pass(records: &[SimRecord], limit: usize) -> Duration {
    let start = Instant::now();
    for r in records {
        black_box(black_box(r).decode(limit)).ok();
    }
    start.elapsed()
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
    let limit = pulse::Config::with_overrides("")
        .expect("the default config")
        .ingest
        .max_record_bytes;
    let events: Vec<Event> = records
        .iter()
        .map(|r| {
            r.decode(limit).unwrap_or_else(|e| {
                panic!("well-formed record rejected: {} ({})", e.reason, e.detail)
            })
        })
        .collect();
    let customers = records
        .iter()
        .filter_map(|r| r.key.as_deref())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let cfg = ScoringConfig::default();

    let rounds = if measuring { 15 } else { 1 };
    let (mut decode_t, mut engine_t) = (Duration::MAX, Duration::MAX);
    let mut work = None;
    for _ in 0..rounds {
        decode_t = decode_t.min(decode_pass(&records, limit));
        let pass = core_pass(&events, &cfg);
        engine_t = engine_t.min(pass.elapsed);
        work = Some(pass);
    }
    let work = work.expect("at least one round");
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
        customers,
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
