//! Memory and time to ready against the size of the customer base, with fold's storage:
//! `Partition<CachedStates>` (customers and timers in sled, a cache of `STATE_BENCH_CACHE_BYTES`,
//! default 64 MiB = `fold.cache_bytes`' default). `cargo bench -p pulse-store --bench state`
//! (`STATE_BENCH_SIZES`, default `100000,200000,1000000` customers; add 5000000 on a machine
//! with the time and ~6 GB of disk). Each size runs in its own process (so one's peak is not
//! another's): two orders per customer, 30 days apart, through `Partition::step`, a commit
//! every 10 000 events; then the database is closed and reopened as an assignment does.
//! Prints per size the events/s, RSS and peak RSS, the store's bytes, and the time to ready
//! (open the store, the states and the counts; no customer read); then the RSS ratio of the
//! largest to the smallest size and of the time to ready.

use std::time::Instant;

use pulse_core::event::{Body, Order, OrderKind, DAY};
use pulse_core::{Event, Millis, Partition, ScoringConfig};
use pulse_store::{CachedStates, Checkpoint, Commit, PartitionStore};

const T0: Millis = 1_735_689_600_000;

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .map_or(0, |kib: u64| kib * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn cache_bytes() -> usize {
    std::env::var("STATE_BENCH_CACHE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20)
}

/// One size, in this process: prints one `result` line the parent reads.
fn child(n: u64) {
    let cfg = ScoringConfig::default();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("p");
    let store = PartitionStore::open(&path, false).expect("open store");
    let states = CachedStates::open(store.clone(), cache_bytes()).expect("states");
    let mut p = Partition::with_states(Partition::START, states);
    let mut event = Event {
        event_id: String::new(),
        customer_id: String::new(),
        occurred_at: 0,
        body: Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: String::new(),
            amount_minor: 4_200,
            currency: "EUR".into(),
            item_count: 1,
            channel: None,
        }),
    };
    let started = Instant::now();
    let mut events = 0u64;
    let commit = |p: &mut Partition<CachedStates>, offset: u64| {
        let mut c = Commit {
            checkpoint: Checkpoint {
                next_offset: offset as i64,
                clock: p.clock(),
            },
            ..Commit::default()
        };
        p.states_mut().write_back(&mut c);
        store.commit(&c).expect("commit");
    };
    for pass in 0..2u64 {
        for c in 0..n {
            event.customer_id = format!("customer-{c:09}");
            event.event_id = format!("e-{pass}-{c}");
            event.occurred_at = T0 + (pass * 30 * DAY as u64 + c * (30 * DAY as u64) / n) as Millis;
            p.step(&event, &cfg);
            events += 1;
            if events.is_multiple_of(10_000) {
                commit(&mut p, events);
            }
        }
    }
    commit(&mut p, events);
    assert!(p.states_mut().take_error().is_none());
    let secs = started.elapsed().as_secs_f64();
    let (rss, peak) = (status("VmRSS:"), status("VmHWM:"));
    let (customers, timers) = (p.len(), p.pending_timers());
    drop(p);
    store.flush().expect("flush");
    let disk = store.size_on_disk();
    drop(store);
    let ready = Instant::now();
    let store = PartitionStore::open(&path, false).expect("reopen");
    let checkpoint = store.checkpoint().expect("checkpoint").expect("committed");
    let states = CachedStates::open(store.clone(), cache_bytes()).expect("states");
    let counts = store.counts().expect("counts");
    let p = Partition::with_states(checkpoint.clock, states);
    let ready = ready.elapsed().as_secs_f64();
    assert_eq!((p.len(), counts["customers"]), (customers, n as i64));
    println!("result {n} {events} {secs} {rss} {peak} {disk} {ready} {customers} {timers}");
}

fn main() {
    if let Ok(n) = std::env::var("STATE_BENCH_CHILD") {
        return child(n.parse().expect("size"));
    }
    let sizes: Vec<u64> = std::env::var("STATE_BENCH_SIZES")
        .unwrap_or_else(|_| "100000,200000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("STATE_BENCH_SIZES: numbers"))
        .collect();
    println!(
        "cache {:.0} MiB per partition; two orders per customer, a commit every 10 000 events",
        mib(cache_bytes() as u64)
    );
    println!(
        "{:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>8} {:>14}",
        "customers", "events/s", "RSS MiB", "peak MiB", "disk MiB", "timers", "B/cust", "ready ms"
    );
    let mut rows = Vec::new();
    for n in sizes {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("STATE_BENCH_CHILD", n.to_string())
            .output()
            .expect("run a size");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.starts_with("result ")) else {
            panic!("size {n} failed: {}", String::from_utf8_lossy(&out.stderr));
        };
        let f: Vec<f64> = line[7..]
            .split_whitespace()
            .map(|v| v.parse().expect("number"))
            .collect();
        let (events, secs, rss, peak, disk, ready, timers) =
            (f[1], f[2], f[3], f[4], f[5], f[6], f[8]);
        println!(
            "{:>10} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>8.0} {:>14.2}",
            n,
            events / secs,
            mib(rss as u64),
            mib(peak as u64),
            mib(disk as u64),
            timers,
            disk / n as f64,
            ready * 1e3
        );
        rows.push((n, peak, ready));
    }
    if let (Some(small), Some(large)) = (rows.first(), rows.last()) {
        println!(
            "ratio peak RSS {} to {} customers: {:.3}",
            large.0,
            small.0,
            large.1 / small.1
        );
        println!(
            "ratio time to ready {} to {} customers: {:.2}",
            large.0,
            small.0,
            large.2 / small.2
        );
    }
}
