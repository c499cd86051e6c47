//! `CachedStates` (customers and timers in sled behind a byte-bounded cache) against the
//! in-memory `Memory`: the same events give the same alerts, states, timers and counts,
//! through commits, evictions, erasures and a reopen of the database.

use pulse_core::event::{Body, Order, OrderKind, DAY};
use pulse_core::{Alert, Event, Millis, Partition, ScoringConfig, States};
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

/// Asserts that the store holds exactly `mem`'s customer states and their timer index;
/// returns the timers, `(due, customer)` in order.
fn assert_store_holds(store: &PartitionStore, mem: &Partition) -> Vec<(Millis, String)> {
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
    assert_eq!(store.timers().unwrap(), timers);
    timers
}

/// The tests' cache: room for a few dozen of their 300 customers, so most reads come from sled.
const BUDGET: usize = 8 * 1024;

/// A store in `dir`, an empty partition on it behind a [`BUDGET`] cache, and an empty
/// in-memory partition.
fn sled_and_memory(dir: &std::path::Path) -> (PartitionStore, Partition<CachedStates>, Partition) {
    let store = PartitionStore::open(dir, false).unwrap();
    let sled = Partition::with_states(
        Partition::START,
        CachedStates::open(store.clone(), BUDGET).unwrap(),
    );
    (store, sled, Partition::new())
}

#[test]
fn sled_backed_states_with_a_small_cache_fold_exactly_as_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ScoringConfig::default();
    let (store, mut sled, mut mem) = sled_and_memory(dir.path());
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
                sled.states().cached_bytes() <= BUDGET,
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
    let timers = assert_store_holds(&store, &mem);
    assert!(!timers.is_empty());
    let counts = store.counts().unwrap();
    assert_eq!(counts["customers"], mem.len() as i64);
    assert_eq!(counts["timers"], mem.pending_timers() as i64);

    // Reopened: nothing read at open, and the timers fire as memory's do.
    let clock = sled.clock();
    drop(sled);
    drop(store);
    let store = PartitionStore::open(dir.path(), false).unwrap();
    let mut sled =
        Partition::with_states(clock, CachedStates::open(store.clone(), BUDGET).unwrap());
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

/// Customers whose events all arrive late (behind the partition clock, in their own order)
/// are decided at their own time, their overdue timers firing before their next event: in
/// sled, across commits and evictions, exactly as in memory.
#[test]
fn late_customers_fold_in_sled_as_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ScoringConfig::default();
    let (store, mut sled, mut mem) = sled_and_memory(dir.path());
    // The events of customers whose number ends in 0, 3, 6 or 9 arrive 200 days late.
    let mut events: Vec<(Millis, Event)> = history()
        .into_iter()
        .map(|e| {
            let late = e.customer_id.ends_with(['0', '3', '6', '9']);
            (e.occurred_at + if late { 200 * DAY } else { 0 }, e)
        })
        .collect();
    events.sort_by(|x, y| (x.0, &x.1.customer_id).cmp(&(y.0, &y.1.customer_id)));
    let (mut a, mut b): (Vec<Alert>, Vec<Alert>) = (Vec::new(), Vec::new());
    let (mut late, mut overdue) = (0, 0);
    for (i, (_, e)) in events.iter().enumerate() {
        late += usize::from(e.occurred_at < mem.clock());
        a.extend(mem.step(e, &cfg));
        b.extend(sled.step(e, &cfg));
        // A late customer's timer left at or before the clock, for its next event or the
        // clock's next move to fire.
        overdue += usize::from(mem.next_timer().is_some_and(|(t, _)| t <= mem.clock()));
        if i % 50 == 49 {
            commit(&mut sled, &store, i as i64 + 1);
        }
        assert!(sled.states_mut().take_error().is_none());
    }
    assert!(late > 100, "{late} late events");
    assert!(overdue > 0);
    assert!(!a.is_empty());
    assert_eq!(a, b);
    commit(&mut sled, &store, 1_000_000);
    assert_store_holds(&store, &mem);
    let end = mem.clock() + 1_500 * DAY;
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    mem.advance(end, &cfg, |id, at, _, al| fa.push((id.to_string(), at, al)));
    sled.advance(end, &cfg, |id, at, _, al| fb.push((id.to_string(), at, al)));
    assert!(!fa.is_empty());
    assert_eq!(fa, fb);
}

/// A partition restored over stale local state (`PartitionStore::replace`): the cache opened
/// after it sees only the restored customers, their timers and counts, none of the old ones.
#[test]
fn states_opened_after_a_replace_hold_only_the_restored_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ScoringConfig::default();
    let store = PartitionStore::open(dir.path(), false).unwrap();
    let mut old = Partition::with_states(
        Partition::START,
        CachedStates::open(store.clone(), 1 << 20).unwrap(),
    );
    let mut mem = Partition::new();
    for e in history() {
        old.step(&e, &cfg);
        // What the changelog holds: customers 0 to 9 only, folded elsewhere.
        if e.customer_id.as_str() < "c0010" {
            mem.step(&e, &cfg);
        }
    }
    commit(&mut old, &store, 500);
    assert_eq!(store.customers().count(), 300);
    drop(old);
    let mut restored = Commit {
        checkpoint: Checkpoint {
            next_offset: 900,
            clock: mem.clock(),
        },
        ..Commit::default()
    };
    for (id, s) in mem.customers() {
        restored.customers.push((id.clone(), Some(s.clone())));
        if let Some(due) = s.next_timer {
            restored.timers.push((due, id.clone(), true));
        }
    }
    restored.counts = vec![
        ("customers".into(), mem.len() as i64),
        ("timers".into(), mem.pending_timers() as i64),
    ];
    store.replace(&restored).unwrap();

    let mut states = CachedStates::open(store.clone(), 1 << 20).unwrap();
    assert_eq!(
        (states.len(), states.pending_timers()),
        (10, mem.pending_timers())
    );
    assert!(states.get("c0200").is_none(), "a stale customer survived");
    assert_eq!(
        states
            .first_timer()
            .as_ref()
            .map(|(t, id)| (*t, id.as_str())),
        mem.next_timer()
    );
    let mut p = Partition::with_states(mem.clock(), states);
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    let end = mem.clock() + 1_500 * DAY;
    mem.advance(end, &cfg, |id, at, _, al| fa.push((id.to_string(), at, al)));
    p.advance(end, &cfg, |id, at, _, al| fb.push((id.to_string(), at, al)));
    assert!(!fa.is_empty());
    assert_eq!(fa, fb);
}
