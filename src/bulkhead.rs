//! Per-endpoint bulkheads: at most `limit` deliveries to one endpoint hold a
//! worker at a time. The rest are parked, in order, holding no worker, and
//! handed back one by one as slots free. Once an endpoint has `max_parked`
//! (the queue's capacity) parked, new webhooks for it are refused at
//! submission ([`Bulkheads::has_room`]), so a hanging endpoint cannot pile up
//! new webhooks in memory, and the others are not refused. Webhooks already
//! accepted (in the queue, or due again after a retry) park whatever the
//! count, since refusing them would lose them: an endpoint's parked count can
//! exceed `max_parked` by those (with a capacity of 4: 3 parked, 4 more
//! accepted into the queue while every worker was busy, then 7 parked).
//!
//! Without it, an endpoint that accepts connections and never answers takes
//! every worker until its requests time out and its breaker opens: the
//! isolation benchmark (docs/BENCHMARKS.md) saw every healthy delivery stop
//! for one full request timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::breaker::Endpoint;

/// What [`Bulkheads::enter`] did with an item.
#[derive(Debug)]
pub(crate) enum Entry<T> {
    /// A slot was free and is now held by the item.
    Go(T),
    /// No slot was free: the item is parked.
    Parked,
    /// Closed for shutdown: the item is handed back.
    Closed(T),
}

struct Slots<T> {
    in_flight: usize,
    parked: VecDeque<T>,
}

struct State<T> {
    endpoints: HashMap<Endpoint, Slots<T>>,
    first: Option<Endpoint>,
    /// A second endpoint has been seen: the shared limit applies from now on.
    shared: bool,
    closed: bool,
}

/// Every endpoint's slots behind one lock; nothing but counting and moving
/// items happens under it.
pub(crate) struct Bulkheads<T> {
    workers: usize,
    fixed: Option<usize>,
    max_parked: usize,
    /// Items parked over every endpoint, kept under the lock and read
    /// without it: while it is below `max_parked`, no endpoint can be full,
    /// so `has_room` takes no lock.
    parked_total: AtomicUsize,
    state: Mutex<State<T>>,
}

impl<T> Bulkheads<T> {
    /// `fixed` is a limit set by the user; without one, an endpoint may use
    /// every worker until a second endpoint is seen, and half of them (at
    /// least one) from then on.
    pub(crate) fn new(workers: usize, fixed: Option<usize>, max_parked: usize) -> Self {
        Bulkheads {
            workers,
            fixed: fixed.map(|n| n.max(1)),
            max_parked,
            parked_total: AtomicUsize::new(0),
            state: Mutex::new(State {
                endpoints: HashMap::new(),
                first: None,
                shared: false,
                closed: false,
            }),
        }
    }

    fn limit(&self, shared: bool) -> usize {
        match self.fixed {
            Some(n) => n,
            None if shared => (self.workers / 2).max(1),
            None => usize::MAX,
        }
    }

    /// Takes a slot for `ep`, or parks `item` until one frees.
    pub(crate) fn enter(&self, ep: &Endpoint, item: T) -> Entry<T> {
        let mut state = self.state.lock();
        if state.closed {
            return Entry::Closed(item);
        }
        match &state.first {
            None => state.first = Some(ep.clone()),
            Some(first) if first != ep => state.shared = true,
            Some(_) => {}
        }
        let limit = self.limit(state.shared);
        let slots = match state.endpoints.get_mut(ep) {
            Some(slots) => slots,
            None => state.endpoints.entry(ep.clone()).or_insert(Slots {
                in_flight: 0,
                parked: VecDeque::new(),
            }),
        };
        if slots.in_flight < limit && slots.parked.is_empty() {
            slots.in_flight += 1;
            Entry::Go(item)
        } else {
            slots.parked.push_back(item);
            self.parked_total.fetch_add(1, Ordering::Relaxed);
            Entry::Parked
        }
    }

    /// Whether a new webhook for `ep` may be accepted: fewer than
    /// `max_parked` are parked for it. Checked before the send, so
    /// concurrent senders can overshoot by their number, no more.
    pub(crate) fn has_room(&self, ep: &Endpoint) -> bool {
        if self.parked_total.load(Ordering::Relaxed) < self.max_parked {
            return true;
        }
        let state = self.state.lock();
        state
            .endpoints
            .get(ep)
            .is_none_or(|s| s.parked.len() < self.max_parked)
    }

    /// Gives `ep`'s slot back. Returns the next parked item, which now holds
    /// the slot, if one may go.
    pub(crate) fn leave(&self, ep: &Endpoint) -> Option<T> {
        let mut state = self.state.lock();
        let limit = self.limit(state.shared);
        let slots = state.endpoints.get_mut(ep)?;
        slots.in_flight = slots.in_flight.saturating_sub(1);
        if slots.in_flight < limit {
            if let Some(next) = slots.parked.pop_front() {
                self.parked_total.fetch_sub(1, Ordering::Relaxed);
                slots.in_flight += 1;
                return Some(next);
            }
        }
        if slots.in_flight == 0 && slots.parked.is_empty() {
            state.endpoints.remove(ep);
        }
        None
    }

    /// Items parked now.
    pub(crate) fn parked(&self) -> usize {
        self.parked_total.load(Ordering::Relaxed)
    }

    /// Refuses every later `enter` and returns everything parked.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        let endpoints = std::mem::take(&mut state.endpoints);
        self.parked_total.store(0, Ordering::Relaxed);
        drop(state);
        endpoints.into_values().flat_map(|s| s.parked).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str) -> Endpoint {
        Endpoint::new("http", host, 80)
    }

    fn go<T: std::fmt::Debug>(e: Entry<T>) -> T {
        match e {
            Entry::Go(t) => t,
            other => panic!("expected Go, got {other:?}"),
        }
    }

    #[test]
    fn one_endpoint_alone_may_use_every_worker() {
        let b = Bulkheads::new(4, None, 100);
        for i in 0..100 {
            go(b.enter(&ep("a"), i));
        }
        assert_eq!(b.parked(), 0);
    }

    #[test]
    fn with_two_endpoints_each_gets_half_and_the_rest_wait_in_order() {
        let b = Bulkheads::new(4, None, 100);
        go(b.enter(&ep("a"), 0));
        go(b.enter(&ep("hang"), 1));
        go(b.enter(&ep("hang"), 2));
        assert!(matches!(b.enter(&ep("hang"), 3), Entry::Parked));
        assert!(matches!(b.enter(&ep("hang"), 4), Entry::Parked));
        // The other endpoint is not held up.
        go(b.enter(&ep("a"), 5));
        assert_eq!(b.parked(), 2);
        assert_eq!(b.leave(&ep("hang")), Some(3));
        assert_eq!(b.leave(&ep("hang")), Some(4));
        assert_eq!(b.leave(&ep("hang")), None);
        assert_eq!(b.leave(&ep("hang")), None);
        assert_eq!(b.parked(), 0);
    }

    #[test]
    fn a_fixed_limit_applies_from_the_start() {
        let b = Bulkheads::new(8, Some(1), 100);
        go(b.enter(&ep("a"), 0));
        assert!(matches!(b.enter(&ep("a"), 1), Entry::Parked));
        assert_eq!(b.leave(&ep("a")), Some(1));
        assert_eq!(Bulkheads::<u8>::new(8, Some(0), 100).limit(false), 1);
        assert_eq!(Bulkheads::<u8>::new(1, None, 100).limit(true), 1);
    }

    #[test]
    fn each_endpoint_parks_at_most_max_parked() {
        let b = Bulkheads::new(2, Some(1), 2);
        go(b.enter(&ep("hang"), 0));
        assert!(b.has_room(&ep("hang")));
        assert!(matches!(b.enter(&ep("hang"), 1), Entry::Parked));
        assert!(matches!(b.enter(&ep("hang"), 2), Entry::Parked));
        assert!(!b.has_room(&ep("hang")), "two parked: full");
        assert!(b.has_room(&ep("ok")), "other endpoints are not refused");
        assert_eq!(b.leave(&ep("hang")), Some(1));
        assert!(b.has_room(&ep("hang")));
    }

    #[test]
    fn idle_endpoints_are_forgotten() {
        let b = Bulkheads::new(4, None, 100);
        go(b.enter(&ep("a"), 0));
        assert_eq!(b.leave(&ep("a")), None);
        assert!(b.state.lock().endpoints.is_empty());
    }

    #[test]
    fn close_hands_back_the_parked_and_refuses_the_rest() {
        let b = Bulkheads::new(2, Some(1), 100);
        go(b.enter(&ep("a"), 0));
        assert!(matches!(b.enter(&ep("a"), 1), Entry::Parked));
        assert!(matches!(b.enter(&ep("b"), 2), Entry::Go(2)));
        assert!(matches!(b.enter(&ep("b"), 3), Entry::Parked));
        let mut back = b.close();
        back.sort_unstable();
        assert_eq!(back, vec![1, 3]);
        assert!(matches!(b.enter(&ep("a"), 4), Entry::Closed(4)));
        assert_eq!(b.leave(&ep("a")), None);
    }
}
