//! Fold's [`States`]: customers and the timer index live in the partition's sled database;
//! the recently used customers are kept in memory within a byte budget, the way Kafka
//! Streams' record cache sits in front of RocksDB. Changes are held until the next commit and
//! written back in its one batch ([`CachedStates::write_back`]); only then may a customer be
//! evicted, so the database and the cache never disagree about a committed state.
//!
//! Timers: the committed index is read from sled by range, merged with this commit's
//! additions and removals held in memory. Assigning a partition reads two counts, no
//! customer.

use std::collections::{BTreeSet, HashMap, HashSet};

use pulse_core::{CustomerState, Millis, States};

use crate::{
    decode_state, decode_timer_key, prefixed, Commit, PartitionStore, StoreError, CUSTOMER, TIMER,
};

struct Slot {
    state: CustomerState,
    /// The cache's tick when last used (least recently used goes first).
    used: u64,
    dirty: bool,
    bytes: usize,
}

/// A partition's customers and timers in sled, behind a bounded cache. A read that fails is
/// kept ([`CachedStates::take_error`]): the rules see the customer as unknown, and the owner
/// must stop before committing anything decided after it.
pub struct CachedStates {
    store: PartitionStore,
    budget: usize,
    bytes: usize,
    tick: u64,
    /// Boxed, so the map's table (sized for its largest population) holds pointers only.
    cache: HashMap<String, Box<Slot>>,
    /// Removed since the last commit: not to be read back from sled.
    gone: HashSet<String>,
    /// Timer index entries added and removed since the last commit.
    added: BTreeSet<(Millis, String)>,
    removed: HashSet<(Millis, String)>,
    /// Every committed index key below it is in `removed` (fired since the commit), so the
    /// search for the first timer starts here instead of at the start of the index.
    cursor: Vec<u8>,
    customers: i64,
    timers: i64,
    error: Option<StoreError>,
}

impl CachedStates {
    /// The partition's states as last committed, with a cache of `budget` bytes. Reads the
    /// kept counts only.
    pub fn open(store: PartitionStore, budget: usize) -> Result<Self, StoreError> {
        let counts = store.counts()?;
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        Ok(CachedStates {
            customers: count("customers"),
            timers: count("timers"),
            store,
            budget,
            bytes: 0,
            tick: 0,
            cache: HashMap::new(),
            gone: HashSet::new(),
            added: BTreeSet::new(),
            removed: HashSet::new(),
            cursor: vec![TIMER],
            error: None,
        })
    }

    /// The first read error since the last call, if any.
    pub fn take_error(&mut self) -> Option<StoreError> {
        self.error.take()
    }

    /// Bytes the cache holds, by its estimate.
    pub fn cached_bytes(&self) -> usize {
        self.bytes
    }

    /// Customers in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Adds the changes since the last commit to `commit` (the changed customers, the removed
    /// ones as `None`, the timer index changes, the `customers` and `timers` counts), then evicts the least recently
    /// used customers beyond the budget. The caller writes `commit` before anything else
    /// reads these states.
    pub fn write_back(&mut self, commit: &mut Commit) {
        for (id, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            slot.dirty = false;
            commit
                .customers
                .push((id.clone(), Some(slot.state.clone())));
        }
        // Removals first: a removed entry added again is set by the later write.
        commit.timers.extend(
            self.removed
                .drain()
                .map(|(due, id)| (due, id, false))
                .chain(
                    std::mem::take(&mut self.added)
                        .into_iter()
                        .map(|(due, id)| (due, id, true)),
                ),
        );
        commit.counts.push(("customers".into(), self.customers));
        commit.counts.push(("timers".into(), self.timers));
        commit
            .customers
            .extend(self.gone.drain().map(|id| (id, None)));
        self.cursor = vec![TIMER];
        if self.bytes > self.budget {
            // Down to 3/4 of the budget, so that the sort is paid once per many commits.
            let mut by_age: Vec<(u64, &String)> =
                self.cache.iter().map(|(id, s)| (s.used, id)).collect();
            by_age.sort_unstable();
            let target = self.budget / 4 * 3;
            let mut freed = 0;
            let mut evict = Vec::new();
            for (_, id) in by_age {
                if self.bytes - freed <= target {
                    break;
                }
                freed += self.cache[id].bytes;
                evict.push(id.clone());
            }
            for id in evict {
                self.cache.remove(&id);
            }
            self.bytes -= freed;
            // The table keeps the size of its largest population otherwise.
            self.cache.shrink_to_fit();
        }
    }

    /// Reads the customer into the cache if it is not there; whether it is known.
    fn load(&mut self, id: &str) -> bool {
        self.tick += 1;
        if let Some(slot) = self.cache.get_mut(id) {
            slot.used = self.tick;
            return true;
        }
        if self.gone.contains(id) {
            return false;
        }
        let read = self
            .store
            .db()
            .get(prefixed(CUSTOMER, id.as_bytes()))
            .map_err(StoreError::from)
            .and_then(|v| v.map(|v| decode_state(&v)).transpose());
        match read {
            Ok(Some(state)) => {
                self.insert(id, state, false);
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.error.get_or_insert(e);
                false
            }
        }
    }

    fn insert(&mut self, id: &str, state: CustomerState, dirty: bool) {
        let bytes = slot_bytes(id, &state);
        self.bytes += bytes;
        self.cache.insert(
            id.to_string(),
            Box::new(Slot {
                state,
                used: self.tick,
                dirty,
                bytes,
            }),
        );
    }

    /// The first committed index entry not removed since, from the cursor on.
    fn first_committed(&mut self) -> Option<(Millis, String)> {
        let db = self.store.db();
        let mut range = db.range(self.cursor.clone()..);
        loop {
            let (k, _) = match range.next()? {
                Ok(kv) => kv,
                Err(e) => {
                    self.error.get_or_insert(e.into());
                    return None;
                }
            };
            if k.first() != Some(&TIMER) {
                return None;
            }
            let entry = match decode_timer_key(&k) {
                Ok(entry) => entry,
                Err(e) => {
                    self.error.get_or_insert(e);
                    return None;
                }
            };
            if !self.removed.contains(&entry) {
                self.cursor = k.to_vec();
                return Some(entry);
            }
        }
    }
}

/// The cache's estimate of what a customer costs in memory: the slot, its growable parts,
/// the id, the map's table at its worst load (twice an entry) and the allocator's overhead
/// of each allocation (slot, id, purchase days, currency).
fn slot_bytes(id: &str, state: &CustomerState) -> usize {
    std::mem::size_of::<Slot>()
        + id.len()
        + state.orders.recent_days.capacity() * std::mem::size_of::<i64>()
        + state.orders.currency.as_ref().map_or(0, String::len)
        + 2 * (std::mem::size_of::<(String, Box<Slot>)>() + 1)
        + 4 * 16
}

impl States for CachedStates {
    fn get(&mut self, id: &str) -> Option<&CustomerState> {
        if !self.load(id) {
            return None;
        }
        self.cache.get(id).map(|s| &s.state)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut CustomerState> {
        if !self.load(id) {
            return None;
        }
        let slot = self.cache.get_mut(id)?;
        slot.dirty = true;
        Some(&mut slot.state)
    }

    fn get_or_insert(&mut self, id: &str) -> &mut CustomerState {
        if !self.load(id) {
            self.gone.remove(id);
            self.customers += 1;
            self.insert(id, CustomerState::default(), true);
        }
        let slot = self.cache.get_mut(id).expect("loaded or inserted");
        slot.dirty = true;
        &mut slot.state
    }

    fn remove(&mut self, id: &str) -> Option<CustomerState> {
        if !self.load(id) {
            return None;
        }
        let slot = self.cache.remove(id)?;
        self.bytes -= slot.bytes;
        self.customers -= 1;
        self.gone.insert(id.to_string());
        Some(slot.state)
    }

    fn first_timer(&mut self) -> Option<(Millis, String)> {
        let committed = self.first_committed();
        match (committed, self.added.first()) {
            (Some(c), Some(a)) if *a < c => Some(a.clone()),
            (Some(c), _) => Some(c),
            (None, a) => a.cloned(),
        }
    }

    fn set_timer(&mut self, id: &str, from: Option<Millis>, to: Option<Millis>) {
        if from == to {
            return;
        }
        if let Some(due) = from {
            let entry = (due, id.to_string());
            if !self.added.remove(&entry) {
                self.removed.insert(entry);
            }
            self.timers -= 1;
        }
        if let Some(due) = to {
            self.added.insert((due, id.to_string()));
            self.timers += 1;
        }
    }

    fn len(&self) -> usize {
        self.customers.max(0) as usize
    }

    fn pending_timers(&self) -> usize {
        self.timers.max(0) as usize
    }
}
