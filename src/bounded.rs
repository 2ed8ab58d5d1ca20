//! Per-endpoint and per-URL state that stays bounded however many distinct
//! endpoints a dispatcher sends to.
//!
//! A multi-tenant service may deliver to a new URL for every customer. What
//! the dispatcher remembers about each (its circuit breaker, its rate-limited
//! warning, whether it answered 410 Gone) must not grow with that number:
//!
//! - [`PrunedMap`] drops entries that a fresh one would equal (a closed
//!   breaker with no failures, a warning limiter whose interval is over) once
//!   the map reaches a size: [`PRUNE_FROM`] entries, or twice what the
//!   last prune kept if that is more. So it holds at most the larger of
//!   [`PRUNE_FROM`] and twice the entries that carried information at the
//!   last prune (they may since have turned fresh: the size a burst of
//!   failing endpoints set stays until the map next reaches it).
//! - [`RecentSet`] keeps the last [`MAX_GONE_URLS`] gone URLs. Forgetting one
//!   costs one more request, which answers 410 again and is remembered again.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

/// Below this size a [`PrunedMap`] never prunes.
pub(crate) const PRUNE_FROM: usize = 1024;

/// Gone URLs remembered at most.
pub(crate) const MAX_GONE_URLS: usize = 4096;

/// A map that, on inserting into it at its pruning size, first drops the
/// entries a fresh value would equal. Pruning costs one pass over the map
/// and then waits until the map has doubled, so inserts stay O(1)
/// amortized.
#[derive(Debug)]
pub(crate) struct PrunedMap<K, V> {
    map: HashMap<K, V>,
    prune_at: usize,
}

impl<K: Eq + Hash, V> PrunedMap<K, V> {
    pub(crate) fn new() -> Self {
        PrunedMap {
            map: HashMap::new(),
            prune_at: PRUNE_FROM,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut()
    }

    /// The value for `key`, made with `make` if missing. Making one may
    /// first prune the entries for which `fresh` says they carry nothing.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        make: impl FnOnce() -> V,
        fresh: impl FnMut(&V) -> bool,
    ) -> &mut V {
        if !self.map.contains_key(&key) {
            self.prune_if_large(fresh);
        }
        match self.map.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(make()),
        }
    }

    fn prune_if_large(&mut self, mut fresh: impl FnMut(&V) -> bool) {
        if self.map.len() < self.prune_at {
            return;
        }
        self.map.retain(|_, v| !fresh(v));
        self.prune_at = PRUNE_FROM.max(self.map.len().saturating_mul(2));
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The most recently added strings, at most `cap` of them; the oldest goes
/// first.
#[derive(Debug)]
pub(crate) struct RecentSet {
    members: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    cap: usize,
}

impl RecentSet {
    pub(crate) fn new(cap: usize) -> Self {
        RecentSet {
            members: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        self.members.contains(s)
    }

    /// Adds `s`, forgetting the oldest member if the set is full.
    pub(crate) fn insert(&mut self, s: &str) {
        if self.members.contains(s) {
            return;
        }
        if self.order.len() == self.cap {
            if let Some(oldest) = self.order.pop_front() {
                self.members.remove(&oldest);
            }
        }
        let s: Arc<str> = s.into();
        self.members.insert(Arc::clone(&s));
        self.order.push_back(s);
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pruned_map_drops_only_fresh_entries_and_only_when_large() {
        let mut map = PrunedMap::new();
        // Even keys carry information (`true`); odd ones equal a fresh entry.
        let informative = |k: usize| k % 2 == 0;
        for k in 0..PRUNE_FROM {
            map.get_or_insert_with(k, || informative(k), |v| !*v);
        }
        assert_eq!(map.len(), PRUNE_FROM, "nothing pruned below the size");
        // The next new key prunes the odd half first.
        map.get_or_insert_with(PRUNE_FROM, || true, |v| !*v);
        assert_eq!(map.len(), PRUNE_FROM / 2 + 1);
        assert!(map.iter().all(|(k, v)| *v && informative(*k)));
        // Looking up a key already present never prunes.
        let mut calls = 0;
        map.get_or_insert_with(
            0,
            || false,
            |_| {
                calls += 1;
                true
            },
        );
        assert_eq!((calls, map.get_mut(&0)), (0, Some(&mut true)));
    }

    #[test]
    fn a_pruned_map_stays_near_twice_its_informative_entries() {
        let mut map = PrunedMap::new();
        // 100,000 distinct keys, one in ten informative.
        for k in 0..100_000usize {
            map.get_or_insert_with(k, || k % 10 == 0, |informative| !informative);
        }
        let informative = map.iter().filter(|(_, v)| **v).count();
        assert_eq!(informative, 10_000, "informative entries are never dropped");
        assert!(map.len() <= 2 * informative + 1, "{}", map.len());
    }

    #[test]
    fn a_pruned_map_of_informative_entries_prunes_rarely() {
        let mut map = PrunedMap::new();
        let mut scans = 0;
        for k in 0..20_000usize {
            map.get_or_insert_with(
                k,
                || (),
                |()| {
                    scans += 1;
                    false
                },
            );
        }
        // Each pass scans the whole map, and passes come at 1024, 2048,
        // 4096, ...: fewer than twice the entries in all.
        assert!(scans < 2 * 20_000, "{scans}");
        assert_eq!(map.len(), 20_000);
    }

    #[test]
    fn a_recent_set_forgets_the_oldest() {
        let mut set = RecentSet::new(3);
        for s in ["a", "b", "c", "a"] {
            set.insert(s);
        }
        assert_eq!(set.len(), 3);
        set.insert("d");
        assert_eq!(set.len(), 3);
        assert!(!set.contains("a"), "the oldest went first");
        assert!(["b", "c", "d"].iter().all(|s| set.contains(s)));
    }
}
