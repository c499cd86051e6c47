//! `CachedStates` (customers and timers in sled behind a byte-bounded cache) against the
//! in-memory `Memory`: the same events give the same alerts, states, timers and counts,
//! through commits, evictions, erasures and a reopen of the database.

use pulse_core::event::{Body, Order, OrderKind, DAY};
use pulse_core::{Alert, Event, Millis, Partition, ScoringConfig};
use pulse_store::{CachedStates, Checkpoint, Commit, PartitionStore};

const T0: Millis = 1_735_689_600_000;

fn order(customer: usize, n: usize, t: Millis) -> Event {
    Event {
        event_id: format!("{customer}-{n}"),
        customer_id: format!("c{customer:04}"),
        occurred_at: t,
        body: Body::Order(Order {
            kind: OrderKind::Placed,
            order_id: format!("o-{customer}-{n}"),
            amount_minor: 1_000 + (customer as i64 % 7) * 900,
            currency: "EUR".into(),
            item_count: 1,
            channel: None,
        }),
    }
}

/// 300 customers, each buying on its own rhythm for a while, interleaved in time order.
fn history() -> Vec<Event> {
    let mut events = Vec::new();
    for c in 0..300 {
        let every = 3 + (c % 11) as Millis * 4;
        let orders = 2 + c % 9;
        for n in 0..orders {
            events.push(order(
                c,
                n,
                T0 + (c as Millis % 13) * DAY + n as Millis * every * DAY,
            ));
        }
    }
    events.sort_by_key(|e| (e.occurred_at, e.customer_id.clone()));
    events
}

fn commit(p: &mut Partition<CachedStates>, store: &PartitionStore, next_offset: i64) {
    let mut c = Commit {
        checkpoint: Checkpoint {
            next_offset,
            clock: p.clock(),
        },
        ..Commit::default()
    };
    p.states_mut().write_back(&mut c);
    store.commit(&c).unwrap();
}

#[test]
fn sled_backed_states_with_a_small_cache_fold_exactly_as_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ScoringConfig::default();
    let store = PartitionStore::open(dir.path(), false).unwrap();
    // Room for a few dozen customers of 300: most reads come from sled.
    let budget = 8 * 1024;
    let mut sled = Partition::with_states(
        Partition::START,
        CachedStates::open(store.clone(), budget).unwrap(),
    );
    let mut mem = Partition::new();
    let (mut a, mut b): (Vec<Alert>, Vec<Alert>) = (Vec::new(), Vec::new());
    for (i, e) in history().iter().enumerate() {
        a.extend(mem.step(e, &cfg));
        b.extend(sled.step(e, &cfg));
        if i % 97 == 0 {
            // An erasure now and then, of a customer that may be in sled only.
            let id = format!("c{:04}", (i * 7) % 300);
            assert_eq!(mem.remove(&id), sled.remove(&id));
        }
        if i % 50 == 49 {
            commit(&mut sled, &store, i as i64 + 1);
            assert!(
                sled.states().cached_bytes() <= budget,
                "{}",
                sled.states().cached_bytes()
            );
        }
        assert!(sled.states_mut().take_error().is_none());
    }
    assert!(!a.is_empty());
    let brief = |x: &Alert| (x.kind, x.customer_id.clone(), x.occurred_at, x.from, x.to);
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(
        (a.len(), first.map(|i| (brief(&a[i]), brief(&b[i])))),
        (b.len(), None)
    );
    commit(&mut sled, &store, 1_000_000);
    assert!(
        sled.states().cached() < 100,
        "{} cached",
        sled.states().cached()
    );

    // What sled holds is what memory holds: states, the timer index, the counts.
    let mut stored: Vec<_> = store.customers().map(|r| r.unwrap()).collect();
    stored.sort_by(|x, y| x.0.cmp(&y.0));
    let mut held: Vec<_> = mem
        .customers()
        .map(|(id, s)| (id.clone(), s.clone()))
        .collect();
    held.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(stored, held);
    let mut timers: Vec<_> = held
        .iter()
        .filter_map(|(id, s)| Some((s.next_timer?, id.clone())))
        .collect();
    timers.sort();
    assert!(!timers.is_empty());
    assert_eq!(store.timers().unwrap(), timers);
    let counts = store.counts().unwrap();
    assert_eq!(counts["customers"], mem.len() as i64);
    assert_eq!(counts["timers"], mem.pending_timers() as i64);

    // Reopened: nothing read at open, and the timers fire as memory's do.
    let clock = sled.clock();
    drop(sled);
    drop(store);
    let store = PartitionStore::open(dir.path(), false).unwrap();
    let mut sled =
        Partition::with_states(clock, CachedStates::open(store.clone(), budget).unwrap());
    assert_eq!(sled.states().cached(), 0);
    assert_eq!(
        (sled.len(), sled.pending_timers()),
        (mem.len(), mem.pending_timers())
    );
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    let end = clock + 1_500 * DAY;
    mem.advance(end, &cfg, |id, at, s, al| {
        fa.push((id.to_string(), at, s.clone(), al))
    });
    sled.advance(end, &cfg, |id, at, s, al| {
        fb.push((id.to_string(), at, s.clone(), al))
    });
    assert!(fa.len() > 100, "{} fired", fa.len());
    assert_eq!(fa, fb);
    assert_eq!(sled.pending_timers(), mem.pending_timers());
}
