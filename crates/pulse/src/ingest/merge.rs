//! Ingest's input partitions merged in event-time order: Kafka Streams' timestamp
//! synchronisation (`max.task.idle.ms`) for a stateless relay.
//!
//! Ingest reads three input topics of many partitions each, and how their records interleave
//! on arrival is the fetcher's business: after an outage or at a first deployment one topic's
//! year can arrive before another's January. Relayed as they arrive, such records would move
//! the canonical partitions' clocks months ahead of the events still to come (every timer of
//! every customer fired early, every late first order judged as months of silence) and make
//! the alerts depend on fetch timing. So ingest holds what it received in one queue per input
//! partition and always relays the record with the smallest `(event time, input family,
//! partition, offset)` among the queue heads, as long as every partition that still has records in the
//! broker (it is *behind*) has one in its queue. An empty partition that is behind holds the
//! merge back for at most `max_idle`; then it is *idle* and holds nothing back until it
//! delivers again. A partition that is not behind (caught up, or empty) never holds anything
//! back, so live traffic pays no wait. In a backlog every partition is behind until its end,
//! so the relayed order is the same however the records were fetched: the same input gives
//! the same canonical log, hence the same alerts.
//!
//! Pure: the caller passes the instant and says which partitions are behind.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use pulse_codec::Family;
use pulse_core::Millis;

/// An input partition: (the input topic's family, partition). Copy: no allocation per record.
pub type Tp = (Family, i32);

#[derive(Debug)]
struct Queue<T> {
    /// (event time, offset, item) in offset order.
    items: VecDeque<(Millis, i64, T)>,
    /// When this queue, empty and behind, first held the merge back.
    waiting_since: Option<Instant>,
    /// Waited out `max_idle`: holds nothing back until it delivers again.
    idle: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: VecDeque::new(),
            waiting_since: None,
            idle: false,
        }
    }
}

/// What [`Merge::pop`] gives.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// The next record to relay, with its input partition and offset.
    Record(T, Tp, i64),
    /// Nothing may be relayed before this much time has passed or a record arrives.
    Wait(Duration),
    /// Nothing buffered.
    Empty,
}

/// One queue per input partition; see the module documentation.
#[derive(Debug)]
pub struct Merge<T> {
    queues: BTreeMap<Tp, Queue<T>>,
    buffered: usize,
    max_idle: Duration,
    max_buffered: usize,
    /// Records relayed before a partition that was behind delivered (it waited out
    /// `max_idle`, or the buffer was full): where arrival order, not event time, decided.
    pub forced: u64,
}

impl<T> Merge<T> {
    /// `max_idle` zero relays in arrival order; `max_buffered` bounds what is held back.
    pub fn new(max_idle: Duration, max_buffered: usize) -> Self {
        Merge {
            queues: BTreeMap::new(),
            buffered: 0,
            max_idle,
            max_buffered: max_buffered.max(1),
            forced: 0,
        }
    }

    /// Keeps exactly the partitions of the consumer's assignment: a new one gets an empty
    /// queue (so it can hold the merge back until it delivers), a revoked one's records are
    /// dropped (their offsets were not committed; the new owner reads them again). Returns
    /// the records dropped.
    pub fn assign(&mut self, assigned: impl IntoIterator<Item = Tp>) -> usize {
        let assigned: BTreeMap<Tp, ()> = assigned.into_iter().map(|tp| (tp, ())).collect();
        let mut dropped = 0;
        self.queues.retain(|tp, q| {
            let keep = assigned.contains_key(tp);
            if !keep {
                dropped += q.items.len();
            }
            keep
        });
        for tp in assigned.into_keys() {
            self.queues.entry(tp).or_default();
        }
        self.buffered -= dropped;
        dropped
    }

    /// Whether `tp` has a queue (is in the last assignment, or delivered since).
    pub fn knows(&self, tp: &Tp) -> bool {
        self.queues.contains_key(tp)
    }

    /// A record received from `tp` at `offset`, to be ordered by `time`.
    pub fn push(&mut self, tp: Tp, offset: i64, time: Millis, item: T) {
        let q = self.queues.entry(tp).or_default();
        q.items.push_back((time, offset, item));
        q.waiting_since = None;
        q.idle = false;
        self.buffered += 1;
    }

    /// The next record to relay at `now`, given which partitions are `behind` (have records in
    /// the broker beyond what was received).
    pub fn pop(&mut self, now: Instant, behind: impl Fn(&Tp) -> bool) -> Next<T> {
        let Some(head) = self
            .queues
            .iter()
            .filter_map(|(tp, q)| q.items.front().map(|(t, o, _)| (*t, tp, *o)))
            .min()
            .map(|(_, tp, _)| *tp)
        else {
            return Next::Empty;
        };
        let mut wait: Option<Duration> = None;
        let full = self.buffered >= self.max_buffered;
        for (tp, q) in &mut self.queues {
            if !q.items.is_empty() || q.idle || !behind(tp) {
                continue;
            }
            let since = *q.waiting_since.get_or_insert(now);
            let waited = now.saturating_duration_since(since);
            if full || waited >= self.max_idle {
                q.idle = true;
                self.forced += u64::from(!self.max_idle.is_zero());
            } else {
                let left = self.max_idle - waited;
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
        }
        if let Some(w) = wait {
            return Next::Wait(w);
        }
        let q = self.queues.get_mut(&head).expect("the head's queue");
        let (_, offset, item) = q.items.pop_front().expect("a head");
        self.buffered -= 1;
        Next::Record(item, head, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_millis(500);

    fn tp(t: &str, p: i32) -> Tp {
        let family = match t {
            "orders" => Family::Orders,
            "clicks" => Family::Clickstream,
            other => panic!("no family {other}"),
        };
        (family, p)
    }

    /// Everything relayable now, in order.
    fn drain(m: &mut Merge<&'static str>, now: Instant, behind: &[Tp]) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Next::Record(x, _, _) = m.pop(now, |tp| behind.contains(tp)) {
            out.push(x);
        }
        out
    }

    #[test]
    fn a_backlog_is_relayed_in_event_time_order_however_it_arrives() {
        // Two partitions' records (time, name), each in offset order.
        let orders = [(1, "o1"), (5, "o5"), (9, "o9")];
        let clicks = [(2, "c2"), (3, "c3"), (8, "c8"), (10, "c10")];
        let want = vec!["o1", "c2", "c3", "o5", "c8", "o9", "c10"];
        // Arrival A: all of clicks first, then orders. Arrival B: one at a time, alternating.
        for arrivals in [
            vec![(1, 0), (1, 1), (1, 2), (1, 3), (0, 0), (0, 1), (0, 2)],
            vec![(0, 0), (1, 0), (0, 1), (1, 1), (1, 2), (0, 2), (1, 3)],
        ] {
            let now = Instant::now();
            let mut m = Merge::new(IDLE, 1_000);
            m.assign([tp("orders", 0), tp("clicks", 0)]);
            let mut got = Vec::new();
            let mut left = [3, 4];
            for (which, i) in arrivals {
                let (t, x) = if which == 0 { orders[i] } else { clicks[i] };
                let name = if which == 0 { "orders" } else { "clicks" };
                m.push(tp(name, 0), i as i64, t, x);
                left[which] -= 1;
                // A partition is behind while it has records not yet received.
                let behind: Vec<Tp> = [("orders", left[0]), ("clicks", left[1])]
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, _)| tp(name, 0))
                    .collect();
                got.extend(drain(&mut m, now, &behind));
            }
            assert_eq!(got, want);
            assert_eq!(m.forced, 0);
        }
    }

    #[test]
    fn a_partition_behind_holds_the_merge_back_for_max_idle_only() {
        let t0 = Instant::now();
        let mut m = Merge::new(IDLE, 1_000);
        m.assign([tp("orders", 0), tp("clicks", 0)]);
        m.push(tp("clicks", 0), 0, 7, "c7");
        let behind = [tp("orders", 0)];
        assert_eq!(m.pop(t0, |t| behind.contains(t)), Next::Wait(IDLE));
        let later = t0 + Duration::from_millis(200);
        assert_eq!(
            m.pop(later, |t| behind.contains(t)),
            Next::Wait(Duration::from_millis(300))
        );
        // Waited out: relayed, and "orders" holds nothing back until it delivers again.
        assert_eq!(drain(&mut m, t0 + IDLE, &behind), vec!["c7"]);
        assert_eq!(m.forced, 1);
        m.push(tp("clicks", 0), 1, 8, "c8");
        assert_eq!(drain(&mut m, t0 + IDLE, &behind), vec!["c8"]);
        // It delivers: it may hold the merge back again.
        m.push(tp("orders", 0), 0, 9, "o9");
        m.push(tp("clicks", 0), 2, 10, "c10");
        assert_eq!(drain(&mut m, t0 + IDLE, &behind), vec!["o9"]);
        assert!(matches!(
            m.pop(t0 + IDLE, |t| behind.contains(t)),
            Next::Wait(_)
        ));
    }

    #[test]
    fn a_partition_not_behind_holds_nothing_back_and_a_zero_idle_keeps_arrival_order() {
        let now = Instant::now();
        let mut m = Merge::new(IDLE, 1_000);
        m.assign([tp("orders", 0), tp("clicks", 0)]);
        m.push(tp("clicks", 0), 0, 7, "c7");
        assert_eq!(drain(&mut m, now, &[]), vec!["c7"]);
        let mut m = Merge::new(Duration::ZERO, 1_000);
        m.assign([tp("orders", 0), tp("clicks", 0)]);
        let behind = [tp("orders", 0), tp("clicks", 0)];
        m.push(tp("clicks", 0), 0, 7, "c7");
        assert_eq!(drain(&mut m, now, &behind), vec!["c7"]);
        m.push(tp("orders", 0), 0, 1, "o1");
        assert_eq!(drain(&mut m, now, &behind), vec!["o1"]);
        assert_eq!(m.forced, 0);
    }

    #[test]
    fn a_full_buffer_relays_and_a_revoked_partition_is_dropped() {
        let now = Instant::now();
        let mut m = Merge::new(IDLE, 2);
        m.assign([tp("orders", 0), tp("clicks", 0)]);
        let behind = [tp("orders", 0), tp("clicks", 0)];
        m.push(tp("clicks", 0), 0, 7, "c7");
        assert!(matches!(m.pop(now, |t| behind.contains(t)), Next::Wait(_)));
        // Full: "orders" is given up on (idle until it delivers), so both go.
        m.push(tp("clicks", 0), 1, 8, "c8");
        assert_eq!(drain(&mut m, now, &behind), vec!["c7", "c8"]);
        assert_eq!(m.forced, 1);
        m.push(tp("clicks", 0), 2, 9, "c9");
        assert_eq!(m.assign([tp("orders", 0)]), 1);
        assert_eq!(m.pop(now, |t| behind.contains(t)), Next::Empty);
    }
}
