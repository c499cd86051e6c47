//! The cost of rewriting a partition's database after erasures (`PartitionStore::rewrite`):
//! `cargo bench -p pulse-store --bench rewrite` (PULSE_REWRITE_CUSTOMERS, default 100 000
//! customers of a realistic size, plus as many dedupe entries). Prints its figures.

use pulse_core::CustomerState;
use pulse_store::{encode_state, Commit, PartitionStore};

fn main() {
    let n: u32 = std::env::var("PULSE_REWRITE_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = PartitionStore::open(&dir.path().join("p"), false).expect("open store");
    let mut s = CustomerState::default();
    s.orders.count = 3;
    s.orders.currency = Some("EUR".into());
    s.next_timer = Some(1_735_689_600_000);
    let value_bytes = encode_state(&s).len();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        store
            .commit(&Commit {
                customers: chunk
                    .iter()
                    .map(|i| (format!("customer-{i:08}"), Some(s.clone())))
                    .collect(),
                dedupe: chunk
                    .iter()
                    .map(|i| (u128::from(*i), Some((0, u128::from(*i)))))
                    .collect(),
                ..Commit::default()
            })
            .expect("commit");
    }
    store.flush().expect("flush");
    let started = std::time::Instant::now();
    let r = store.rewrite().expect("rewrite");
    let took = started.elapsed();
    println!(
        "rewrite: {n} customers ({value_bytes} B state each) + {n} dedupe entries = {} records, {} -> {} bytes on disk, {:.0} ms ({:.0} records/s)",
        r.records,
        r.bytes_before,
        r.bytes_after,
        took.as_secs_f64() * 1e3,
        r.records as f64 / took.as_secs_f64()
    );
}
