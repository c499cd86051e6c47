//! One canonical partition's side of the rules: its clock, its customers' states and their
//! timers, and the one order in which events and timers meet `decide` (invariant 1).
//!
//! The clock is the largest event or tick time the partition has seen. Moving it fires every
//! timer it passes at the timer's due instant, in (due, customer id) order, before the record
//! that moved it is applied. An event is decided at its customer's own time: its
//! `occurred_at`, or the last instant that customer was decided at if that is later (see
//! [`own_time`]), never at the partition clock. So a late event (one behind the clock: a
//! slow producer, a backlog read out of order) gets the alerts it would have got in order,
//! stamped with its own time, and a customer's alerts never go back in time. Such a
//! customer's timers the clock has passed fire, at their due instants, just before its next
//! event they precede, or when the clock next moves: a customer whose events all arrive late,
//! in their own order, gets the alerts and state of an on-time fold. Fold, replay, the
//! backtest, `pulse bench`, the benches and the core's tests all drive this type, so "as fold
//! drives it" holds by construction.
//!
//! What is the service's, not the rules', stays out: event-id dedupe, erasure suppression,
//! the outbox, counts and metrics sit around [`Partition::advance`] and [`Partition::apply`]
//! (which is why they are two steps). Where states and timers live is a [`States`]: [`Memory`]
//! (a map and an ordered set) for replay, the backtest, the benches and tests; fold's is
//! pulse-store's sled-backed one with a bounded cache. The rules never see the difference.

use std::collections::{BTreeSet, HashMap};

use crate::alert::Alert;
use crate::config::ScoringConfig;
use crate::engine::{decide, Input};
use crate::event::{Event, Millis};
use crate::state::CustomerState;

/// Where a partition's customer states and their timers live. The timer index holds exactly
/// one `(due, customer id)` per customer with a `next_timer`, and its order is the firing
/// order. Implementations do no rule work; one backed by storage may fail to read, which it
/// keeps for its owner to check (so the rules stay free of I/O errors).
pub trait States {
    /// The customer's state, if known, for reading.
    fn get(&mut self, id: &str) -> Option<&CustomerState>;
    /// The customer's state, if known, to change.
    fn get_mut(&mut self, id: &str) -> Option<&mut CustomerState>;
    /// The customer's state, created at its default if new.
    fn get_or_insert(&mut self, id: &str) -> &mut CustomerState;
    /// Forgets a customer; its timer must be unset by the caller.
    fn remove(&mut self, id: &str) -> Option<CustomerState>;
    /// The first pending timer in (due, customer id) order.
    fn first_timer(&mut self) -> Option<(Millis, String)>;
    /// Moves the customer's index entry from `from` to `to` (either may be `None`).
    fn set_timer(&mut self, id: &str, from: Option<Millis>, to: Option<Millis>);
    /// Customers held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Timers pending.
    fn pending_timers(&self) -> usize;
}

/// States in memory: a map and the timer index as an ordered set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    customers: HashMap<String, CustomerState>,
    timers: BTreeSet<(Millis, String)>,
}

impl States for Memory {
    fn get(&mut self, id: &str) -> Option<&CustomerState> {
        self.customers.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut CustomerState> {
        self.customers.get_mut(id)
    }

    fn get_or_insert(&mut self, id: &str) -> &mut CustomerState {
        // Looked up before inserting so that a known customer's id is not copied per event.
        if !self.customers.contains_key(id) {
            self.customers
                .insert(id.to_string(), CustomerState::default());
        }
        self.customers.get_mut(id).expect("just inserted")
    }

    fn remove(&mut self, id: &str) -> Option<CustomerState> {
        self.customers.remove(id)
    }

    fn first_timer(&mut self) -> Option<(Millis, String)> {
        self.timers.first().cloned()
    }

    fn set_timer(&mut self, id: &str, from: Option<Millis>, to: Option<Millis>) {
        if from == to {
            return;
        }
        // The id leaves the set with the old timer and enters it with the new one.
        let key = from.and_then(|t| self.timers.take(&(t, id.to_string())));
        if let Some(t) = to {
            let id = key.map_or_else(|| id.to_string(), |(_, id)| id);
            self.timers.insert((t, id));
        }
    }

    fn len(&self) -> usize {
        self.customers.len()
    }

    fn pending_timers(&self) -> usize {
        self.timers.len()
    }
}

/// A partition's clock and its customers' states and timers. Pure: time only moves when a
/// caller passes it in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Partition<S = Memory> {
    clock: Millis,
    states: S,
}

impl Partition {
    /// The clock of a partition that has folded nothing: the epoch, before every event time
    /// ingest accepts (years 2000 to 2200), and what a store with no checkpoint resumes at.
    pub const START: Millis = 0;

    /// An empty partition at [`Partition::START`], in memory.
    pub fn new() -> Self {
        Partition::default()
    }

    /// A partition as it was committed: its clock and its customers; the timers are rebuilt
    /// from each state's `next_timer`.
    pub fn restore(
        clock: Millis,
        customers: impl IntoIterator<Item = (String, CustomerState)>,
    ) -> Self {
        let customers: HashMap<String, CustomerState> = customers.into_iter().collect();
        let timers = customers
            .iter()
            .filter_map(|(id, s)| Some((s.next_timer?, id.clone())))
            .collect();
        Partition {
            clock,
            states: Memory { customers, timers },
        }
    }

    pub fn customer(&self, customer_id: &str) -> Option<&CustomerState> {
        self.states.customers.get(customer_id)
    }

    /// Every customer, in no particular order.
    pub fn customers(&self) -> impl Iterator<Item = (&String, &CustomerState)> {
        self.states.customers.iter()
    }

    /// The next timer to fire: `(due, customer id)`.
    pub fn next_timer(&self) -> Option<(Millis, &str)> {
        self.states.timers.first().map(|(t, id)| (*t, id.as_str()))
    }
}

impl<S: States> Partition<S> {
    /// A partition at `clock` over `states` as they were committed (fold's sled-backed ones).
    pub fn with_states(clock: Millis, states: S) -> Self {
        Partition { clock, states }
    }

    pub fn states(&self) -> &S {
        &self.states
    }

    pub fn states_mut(&mut self) -> &mut S {
        &mut self.states
    }

    /// The largest event or tick time folded (or the clock restored).
    pub fn clock(&self) -> Millis {
        self.clock
    }

    /// Moves the clock to `time` if that is later, firing every timer due at or before it in
    /// (due, customer id) order, each decided with [`Input::Timer`] at its due instant. For
    /// every timer fired, `on(customer id, due, state after, alerts)` is called, also when it
    /// raised no alert (the state changed: fold writes it). An earlier or equal `time` does
    /// nothing, so no timer fires twice and none fires at or before a clock already passed.
    pub fn advance(
        &mut self,
        time: Millis,
        cfg: &ScoringConfig,
        mut on: impl FnMut(&str, Millis, &CustomerState, Vec<Alert>),
    ) {
        if time <= self.clock {
            return;
        }
        self.clock = time;
        while let Some((due, id)) = self.states.first_timer() {
            if due > self.clock {
                break;
            }
            let Some(state) = self.states.get_mut(&id) else {
                debug_assert!(false, "timer of an unknown customer {id}");
                self.states.set_timer(&id, Some(due), None);
                continue;
            };
            debug_assert_eq!(state.next_timer, Some(due), "stale timer of {id}");
            let decision = decide(state, &id, Input::Timer, due, cfg);
            // Invariant 10: a timer is later than the instant that set it, so this loop ends.
            debug_assert!(decision.next_timer.is_none_or(|t| t > due));
            on(&id, due, state, decision.alerts);
            self.states.set_timer(&id, Some(due), decision.next_timer);
        }
    }

    /// Applies `event` at its customer's [`own_time`], creating the customer if new, and
    /// returns its alerts in emission order. The caller has advanced the clock to the event's
    /// time first (fold dedupes and suppresses in between; [`Partition::step`] does both). A
    /// late event's customer may have timers due at or before the clock: those due at or
    /// before the event fire first, at their due instants; the later ones when the clock next
    /// moves or the customer's next late event reaches them. A customer whose events arrive
    /// late but in their own order gets exactly the alerts and state of an on-time fold.
    pub fn apply(&mut self, event: &Event, cfg: &ScoringConfig) -> Vec<Alert> {
        debug_assert!(
            event.occurred_at <= self.clock,
            "event at {} applied before the clock ({}) was advanced to it",
            event.occurred_at,
            self.clock
        );
        let id = event.customer_id.as_str();
        let state = self.states.get_or_insert(id);
        let before = state.next_timer;
        let now = own_time(state, event.occurred_at);
        // A late event's customer first catches up to it: its timers due at or before the
        // event fire at their due instants, as they would have in order.
        let mut alerts = Vec::new();
        while let Some(due) = state.next_timer.filter(|due| *due <= now) {
            let fired = decide(state, id, Input::Timer, due, cfg);
            debug_assert!(fired.next_timer.is_none_or(|t| t > due));
            state.next_timer = fired.next_timer;
            alerts.extend(fired.alerts);
        }
        let decision = decide(state, id, Input::Event(event), now, cfg);
        debug_assert!(decision.next_timer.is_none_or(|t| t > now));
        alerts.extend(decision.alerts);
        // One index move for the catch-up and the event: from the timer before to the last.
        self.states.set_timer(id, before, decision.next_timer);
        alerts
    }

    /// [`Partition::advance`] to the event's time, then [`Partition::apply`]: the timers'
    /// alerts and the event's, in emission order. For drivers with no dedupe or erasure of
    /// their own between the two steps.
    pub fn step(&mut self, event: &Event, cfg: &ScoringConfig) -> Vec<Alert> {
        let mut alerts = Vec::new();
        self.advance(event.occurred_at, cfg, |_, _, _, a| alerts.extend(a));
        alerts.extend(self.apply(event, cfg));
        alerts
    }

    /// Forgets a customer (erasure): its state and its timer.
    pub fn remove(&mut self, customer_id: &str) -> Option<CustomerState> {
        let state = self.states.remove(customer_id)?;
        self.states.set_timer(customer_id, state.next_timer, None);
        Some(state)
    }

    /// The customer's state, if known (a storage-backed `States` may read it in).
    pub fn lookup(&mut self, customer_id: &str) -> Option<&CustomerState> {
        self.states.get(customer_id)
    }

    /// Customers held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Timers scheduled (one per customer at most).
    pub fn pending_timers(&self) -> usize {
        self.states.pending_timers()
    }
}

/// The instant an event of this customer at `occurred_at` is decided at: its own time, or
/// the latest instant the customer was already decided at (its latest event, or the last
/// stage or segment change a timer announced) if that is later. Alerts of one customer are so
/// stamped in non-decreasing time, whatever the partition's clock says.
pub fn own_time(state: &CustomerState, occurred_at: Millis) -> Millis {
    let a = &state.announced;
    occurred_at
        .max(state.last_event_at)
        .max(a.stage_since)
        .max(a.segment_since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Body, Order, OrderKind, DAY};

    const T0: Millis = 1_735_689_600_000;

    fn order(id: &str, n: usize, t: Millis) -> Event {
        Event {
            event_id: format!("{id}-{n}"),
            customer_id: id.into(),
            occurred_at: t,
            body: Body::Order(Order {
                kind: OrderKind::Placed,
                order_id: format!("o-{n}"),
                amount_minor: 3_000,
                currency: "EUR".into(),
                item_count: 1,
                channel: None,
            }),
        }
    }

    /// Six weekly orders: a repeat buyer, whose P(alive) threshold sets a timer.
    fn buyer(p: &mut Partition, id: &str, cfg: &ScoringConfig) {
        for n in 0..6 {
            p.step(&order(id, n, T0 + n as Millis * 7 * DAY), cfg);
        }
    }

    #[test]
    fn timers_due_at_the_same_instant_fire_in_customer_id_order() {
        let cfg = ScoringConfig::default();
        let mut p = Partition::new();
        // Identical histories, "b" folded first: the same timers, inserted in the other order.
        for n in 0..6 {
            let t = T0 + n as Millis * 7 * DAY;
            p.step(&order("b", n, t), &cfg);
            p.step(&order("a", n, t), &cfg);
        }
        let due = p.customer("a").unwrap().next_timer.expect("a timer");
        assert_eq!(p.customer("b").unwrap().next_timer, Some(due));
        assert_eq!(p.pending_timers(), 2);
        assert_eq!(p.next_timer(), Some((due, "a")));
        let mut fired = Vec::new();
        p.advance(due + 400 * DAY, &cfg, |id, at, s, _| {
            assert!(s.next_timer.is_none_or(|t| t > at));
            fired.push((at, id.to_string()));
        });
        assert!(fired.len() >= 2, "fired {fired:?}");
        assert_eq!(fired[0], (due, "a".to_string()));
        assert_eq!(fired[1], (due, "b".to_string()));
        // Every instant both fired at, "a" first; overall (due, id) order.
        let mut sorted = fired.clone();
        sorted.sort();
        assert_eq!(fired, sorted);
    }

    /// `(due, customer)` of every timer an advance to `t` fires.
    fn fire(p: &mut Partition, t: Millis, cfg: &ScoringConfig) -> Vec<(Millis, String)> {
        let mut fired = Vec::new();
        p.advance(t, cfg, |id, at, s, _| {
            assert_eq!(s.next_timer.filter(|next| *next <= at), None);
            fired.push((at, id.to_string()));
        });
        fired
    }

    #[test]
    fn no_timer_fires_at_or_before_a_clock_already_passed() {
        let cfg = ScoringConfig::default();
        let mut p = Partition::new();
        buyer(&mut p, "a", &cfg);
        let due = p.customer("a").unwrap().next_timer.expect("a timer");
        let clock = p.clock();
        assert!(due > clock);
        // Up to a millisecond before the due time: nothing.
        assert_eq!(fire(&mut p, due - 1, &cfg), vec![]);
        assert_eq!(p.clock(), due - 1);
        // Exactly at it: fires once, at its due instant.
        assert_eq!(fire(&mut p, due, &cfg), vec![(due, "a".to_string())]);
        // The same instant again, and an earlier one: nothing, and the clock stays.
        assert_eq!(fire(&mut p, due, &cfg), vec![]);
        assert_eq!(fire(&mut p, clock, &cfg), vec![]);
        assert_eq!(p.clock(), due);
        // Later timers fire only after the clock, each once, in time order.
        let later = fire(&mut p, due + 800 * DAY, &cfg);
        assert!(!later.is_empty());
        assert!(later[0].0 > due, "fired {later:?}");
        assert!(later.windows(2).all(|w| w[0].0 < w[1].0), "fired {later:?}");
        assert_eq!(fire(&mut p, due + 800 * DAY, &cfg), vec![]);
        // Every timer still pending is after the clock.
        assert!(p.next_timer().is_none_or(|(t, _)| t > p.clock()));
    }

    #[test]
    fn a_customer_whose_events_all_arrive_late_gets_the_alerts_of_an_on_time_fold() {
        let cfg = ScoringConfig::default();
        let clock = T0 + 400 * DAY;
        let mut p = Partition::new();
        p.step(&order("a", 0, clock), &cfg);
        // "b"'s six orders arrive a year behind the clock: the clock stays, and "b" is
        // decided at each order's own time, its passed timers fired at their due instants.
        let mut late = Vec::new();
        for n in 0..6 {
            late.extend(p.step(&order("b", n, T0 + n as Millis * 7 * DAY), &cfg));
        }
        assert_eq!(p.clock(), clock);
        // "b"'s timer is overdue; it fires when the clock next moves.
        assert!(p
            .next_timer()
            .is_some_and(|(t, id)| t <= clock && id == "b"));
        p.advance(clock + 1, &cfg, |_, _, _, a| late.extend(a));
        // The same customer folded on time, the clock then moved to where it was.
        let mut alone = Partition::new();
        let mut on_time = Vec::new();
        for n in 0..6 {
            on_time.extend(alone.step(&order("b", n, T0 + n as Millis * 7 * DAY), &cfg));
        }
        alone.advance(clock + 1, &cfg, |_, _, _, a| on_time.extend(a));
        assert_eq!(p.customer("b"), alone.customer("b"));
        assert!(!late.is_empty());
        assert_eq!(late, on_time);
        // Stamped with the events' and timers' own times, in order, none at the clock.
        assert!(late
            .windows(2)
            .all(|w| w[0].occurred_at <= w[1].occurred_at));
        assert!(late.iter().all(|a| a.occurred_at <= clock), "{late:?}");
        // The first order is a first order, not a silence a year long.
        assert_eq!(late[0].to, "new", "{:?}", late[0]);
        assert!(p.next_timer().is_none_or(|(t, _)| t > clock + 1));
    }

    #[test]
    fn a_customers_alerts_never_go_back_in_time() {
        let cfg = ScoringConfig::default();
        let mut p = Partition::new();
        buyer(&mut p, "a", &cfg);
        // Timer by timer until "a" is announced at risk.
        let mut warned = None;
        while warned.is_none() {
            let (due, _) = p.next_timer().expect("a pending timer");
            p.advance(due, &cfg, |_, _, _, a| {
                warned = warned.or(a.iter().find(|a| a.to == "at_risk").map(|a| a.occurred_at));
            });
        }
        let warned = warned.expect("a churn warning");
        // An order from a second before the warning arrives after it: decided at the
        // warning's instant (the order releases the at_risk stage), not back in time.
        let back = p.apply(&order("a", 9, warned - 1_000), &cfg);
        assert!(!back.is_empty());
        assert!(
            back.iter().all(|a| a.occurred_at == warned),
            "{back:?} vs {warned}"
        );
    }

    #[test]
    fn restore_rebuilds_the_timers_and_continues_as_if_uninterrupted() {
        let cfg = ScoringConfig::default();
        let mut p = Partition::new();
        buyer(&mut p, "a", &cfg);
        buyer(&mut p, "b", &cfg);
        let restored = Partition::restore(
            p.clock(),
            p.customers().map(|(id, s)| (id.clone(), s.clone())),
        );
        assert_eq!(restored, p);
        let (mut x, mut y) = (p, restored);
        let end = T0 + 900 * DAY;
        let (mut ax, mut ay) = (Vec::new(), Vec::new());
        x.advance(end, &cfg, |id, at, _, a| ax.push((id.to_string(), at, a)));
        y.advance(end, &cfg, |id, at, _, a| ay.push((id.to_string(), at, a)));
        assert!(!ax.is_empty());
        assert_eq!(ax, ay);
        assert_eq!(x, y);
    }

    #[test]
    fn remove_forgets_state_and_timer() {
        let cfg = ScoringConfig::default();
        let mut p = Partition::new();
        buyer(&mut p, "a", &cfg);
        buyer(&mut p, "b", &cfg);
        assert_eq!(p.pending_timers(), 2);
        let gone = p.remove("a").expect("a was there");
        assert!(gone.next_timer.is_some());
        assert_eq!((p.len(), p.pending_timers()), (1, 1));
        assert_eq!(p.remove("a"), None);
        let mut fired = Vec::new();
        p.advance(T0 + 900 * DAY, &cfg, |id, _, _, _| {
            fired.push(id.to_string())
        });
        assert!(!fired.is_empty());
        assert!(fired.iter().all(|id| id == "b"), "fired {fired:?}");
    }
}
