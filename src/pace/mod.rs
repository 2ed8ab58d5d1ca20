//! Per-endpoint lanes: every webhook that waits for its endpoint waits here,
//! in acceptance order, holding no worker.
//!
//! A lane lets a webhook go when its endpoint has a free in-flight slot, its
//! send rate allows one more, and no `Retry-After` pause is running (see
//! [`Pacer`] for how those adapt). A webhook that may go is *granted*: it
//! takes a slot and a send time, and waits in the delay queue until then. At
//! most one grant per lane waits for a future time; the next is granted when
//! it starts, so a rate cut or a pause applies to everything not yet sent.
//!
//! The in-flight ceiling is the bulkhead: without a fixed
//! `max_in_flight_per_endpoint`, an endpoint may use every worker until a
//! second endpoint is seen, and half of them (at least one) from then on, so
//! an endpoint that accepts connections and never answers cannot take every
//! worker. Once an endpoint has `max_parked` (the queue's capacity) parked,
//! new webhooks for it are refused at submission ([`Lanes::has_room`]);
//! webhooks already accepted (queued, or due again after a retry) park
//! whatever the count, since refusing them would lose them.
//!
//! Lanes that remember nothing (nothing parked or in flight, and a pace
//! learned more than [`pacer::FORGET_AFTER`] ago or never) are dropped once
//! about a thousand endpoints are known, as breakers are (`crate::bounded`).

mod estimate;
pub(crate) mod pacer;
#[cfg(test)]
mod tests;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bounded::PrunedMap;
use crate::breaker::Endpoint;
pub(crate) use pacer::{Outcome, Pacer, PushBackEffect};

/// A webhook allowed to go: it holds a slot, and is sent at `at`.
#[derive(Debug)]
pub(crate) struct Grant<T> {
    pub(crate) item: T,
    pub(crate) at: Instant,
    /// When it was parked, for the time it spent waiting on its endpoint.
    pub(crate) parked_at: Instant,
}

/// What [`Lanes::enter`] did with an item.
#[derive(Debug)]
pub(crate) enum Enter<T> {
    /// A slot was free and the pace allows it now: send it.
    Go(T),
    /// Parked. The grants (this item may be among them) are to be sent on
    /// at their times.
    Wait(Vec<Grant<T>>),
    /// Closed for shutdown: the item is handed back.
    Closed(T),
}

/// Configured send rates: a default for every endpoint, and per endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimits {
    pub(crate) default: Option<f64>,
    pub(crate) per_endpoint: HashMap<Endpoint, f64>,
}

impl RateLimits {
    fn for_endpoint(&self, ep: &Endpoint) -> Option<f64> {
        self.per_endpoint.get(ep).copied().or(self.default)
    }
}

/// One endpoint's pace as [`Lanes::snapshot`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LaneStats {
    pub(crate) in_flight: usize,
    pub(crate) in_flight_limit: usize,
    pub(crate) rate: Option<f64>,
    pub(crate) paused_for: Duration,
    pub(crate) push_backs: u64,
    pub(crate) paused_total: Duration,
}

struct Lane<T> {
    pacer: Pacer,
    /// Items holding a slot: granted (waiting for their time) or sending.
    in_flight: usize,
    /// The grant that waits for a future time and has not started yet, by
    /// its item's sequence number: only its start grants the next.
    pending: Option<u64>,
    /// By acceptance sequence number: `(parked at, item)`.
    parked: BTreeMap<u64, (Instant, T)>,
}

impl<T> Lane<T> {
    fn is_fresh(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.parked.is_empty() && self.pacer.is_forgettable(now)
    }

    /// The grant of item `seq` no longer waits for its time. Another
    /// grant's start ends nothing: one due at once, sent on through the
    /// delay queue, may start while the pending one still waits.
    fn end_wait(&mut self, seq: u64) {
        if self.pending == Some(seq) {
            self.pending = None;
        }
    }
}

struct State<T> {
    lanes: PrunedMap<Endpoint, Lane<T>>,
    first: Option<Endpoint>,
    /// A second endpoint has been seen: the shared ceiling applies from now on.
    shared: bool,
    closed: bool,
}

/// Every endpoint's lane behind one lock; nothing but counting, pacing
/// arithmetic and moving items happens under it.
pub(crate) struct Lanes<T> {
    workers: usize,
    fixed: Option<usize>,
    max_parked: usize,
    rates: RateLimits,
    /// Items parked over every lane, kept under the lock and read without
    /// it: while it is below `max_parked`, no lane can be full, so
    /// `has_room` takes no lock.
    parked_total: AtomicUsize,
    state: Mutex<State<T>>,
}

impl<T> Lanes<T> {
    /// `fixed` is a ceiling set by the user; without one, an endpoint may
    /// use every worker until a second endpoint is seen, and half of them
    /// (at least one) from then on.
    pub(crate) fn new(
        workers: usize,
        fixed: Option<usize>,
        max_parked: usize,
        rates: RateLimits,
    ) -> Self {
        Lanes {
            workers: workers.max(1),
            fixed: fixed.map(|n| n.max(1)),
            max_parked,
            rates,
            parked_total: AtomicUsize::new(0),
            state: Mutex::new(State {
                lanes: PrunedMap::new(),
                first: None,
                shared: false,
                closed: false,
            }),
        }
    }

    fn cap(&self, shared: bool) -> usize {
        match self.fixed {
            Some(n) => n,
            None if shared => (self.workers / 2).max(1),
            None => self.workers,
        }
    }

    /// Takes a slot for `ep` and sends `item` now, or parks it by `seq`.
    pub(crate) fn enter(&self, ep: &Endpoint, seq: u64, item: T, now: Instant) -> Enter<T> {
        let mut state = self.state.lock();
        if state.closed {
            return Enter::Closed(item);
        }
        match &state.first {
            None => state.first = Some(ep.clone()),
            Some(first) if first != ep => state.shared = true,
            Some(_) => {}
        }
        let cap = self.cap(state.shared);
        let lane = match state.lanes.get_mut(ep) {
            Some(lane) => lane,
            None => {
                let configured = self.rates.for_endpoint(ep);
                state.lanes.get_or_insert_with(
                    ep.clone(),
                    || Lane {
                        pacer: Pacer::new(configured),
                        in_flight: 0,
                        pending: None,
                        parked: BTreeMap::new(),
                    },
                    |lane| lane.is_fresh(now),
                )
            }
        };
        let open = lane.parked.is_empty()
            && lane.pending.is_none()
            && lane.in_flight < lane.pacer.in_flight_limit(cap)
            && lane.pacer.paused_until(now).is_none();
        if open && lane.pacer.rate().is_none() {
            lane.pacer.went(now);
            lane.in_flight += 1;
            return Enter::Go(item);
        }
        lane.parked.insert(seq, (now, item));
        self.parked_total.fetch_add(1, Ordering::Relaxed);
        Enter::Wait(self.grant(lane, cap, now))
    }

    /// Grants what may go now from `lane`: up to its in-flight limit, and
    /// at most one waiting for a future time (see the module docs).
    fn grant(&self, lane: &mut Lane<T>, cap: usize, now: Instant) -> Vec<Grant<T>> {
        let mut grants = Vec::new();
        while lane.pending.is_none() {
            if lane.in_flight >= lane.pacer.in_flight_limit(cap) {
                break;
            }
            // During a pause, one webhook waits for its end; the rest wait
            // for it to come back, as slow start's first request.
            if lane.in_flight > 0 && lane.pacer.paused_until(now).is_some() {
                break;
            }
            let Some((seq, (parked_at, item))) = lane.parked.pop_first() else {
                break;
            };
            self.parked_total.fetch_sub(1, Ordering::Relaxed);
            let at = lane.pacer.reserve(now);
            lane.in_flight += 1;
            if at > now {
                lane.pending = Some(seq);
            }
            grants.push(Grant {
                item,
                at,
                parked_at,
            });
        }
        grants
    }

    /// Runs `f` on `ep`'s lane, if it has one, then grants what may go.
    fn with_lane(
        &self,
        ep: &Endpoint,
        now: Instant,
        f: impl FnOnce(&mut Lane<T>, usize) -> Option<PushBackEffect>,
    ) -> (Option<PushBackEffect>, Vec<Grant<T>>) {
        let mut state = self.state.lock();
        let cap = self.cap(state.shared);
        let closed = state.closed;
        let Some(lane) = state.lanes.get_mut(ep) else {
            return (None, Vec::new());
        };
        let effect = f(lane, cap);
        // Once closed, parked items belong to shutdown, not to a worker.
        let grants = if closed {
            Vec::new()
        } else {
            self.grant(lane, cap, now)
        };
        (effect, grants)
    }

    /// The granted item `seq` comes to start, under one lock: if its
    /// endpoint was paused after it was granted, it gives its slot back and
    /// parks again (`Err`: nothing goes to a paused endpoint); else it
    /// starts, and if it was the one waiting for a future time, the next
    /// may be granted.
    pub(crate) fn start(
        &self,
        ep: &Endpoint,
        seq: u64,
        item: T,
        now: Instant,
    ) -> Result<(T, Vec<Grant<T>>), Enter<T>> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Enter::Closed(item));
        }
        let cap = self.cap(state.shared);
        let Some(lane) = state.lanes.get_mut(ep) else {
            drop(state);
            return Err(self.enter(ep, seq, item, now));
        };
        lane.end_wait(seq);
        if lane.pacer.paused_until(now).is_some() {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.parked.insert(seq, (now, item));
            self.parked_total.fetch_add(1, Ordering::Relaxed);
            return Err(Enter::Wait(self.grant(lane, cap, now)));
        }
        Ok((item, self.grant(lane, cap, now)))
    }

    /// The granted item `seq` will not start (its worker unwound first):
    /// gives its slot back, and grants what may go.
    pub(crate) fn abandon(&self, ep: &Endpoint, seq: u64, now: Instant) -> Vec<Grant<T>> {
        self.with_lane(ep, now, |lane, _| {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.end_wait(seq);
            None
        })
        .1
    }

    /// A request sent at `sent_at` ended with `outcome`: records it, gives
    /// its slot back, and grants what may go.
    pub(crate) fn finish(
        &self,
        ep: &Endpoint,
        sent_at: Instant,
        now: Instant,
        outcome: Outcome,
    ) -> Vec<Grant<T>> {
        self.finish_with(ep, sent_at, now, outcome).1
    }

    /// [`finish`](Self::finish), with what a push-back did.
    pub(crate) fn finish_with(
        &self,
        ep: &Endpoint,
        sent_at: Instant,
        now: Instant,
        outcome: Outcome,
    ) -> (Option<PushBackEffect>, Vec<Grant<T>>) {
        self.with_lane(ep, now, |lane, cap| {
            let in_flight = lane.in_flight;
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.pacer.record(outcome, sent_at, now, in_flight, cap)
        })
    }

    /// A request sent at `sent_at` was pushed back: records it (a `pause`
    /// holds the whole endpoint), gives its slot back and parks `item`
    /// again by its `seq`, ahead of everything accepted after it. Hands
    /// `item` back once closed.
    pub(crate) fn push_back(
        &self,
        ep: &Endpoint,
        seq: u64,
        item: T,
        sent_at: Instant,
        now: Instant,
        pause: Duration,
    ) -> Result<(PushBackEffect, Vec<Grant<T>>), T> {
        let mut state = self.state.lock();
        let cap = self.cap(state.shared);
        if state.closed {
            return Err(item);
        }
        let Some(lane) = state.lanes.get_mut(ep) else {
            return Err(item);
        };
        let in_flight = lane.in_flight;
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let effect = lane
            .pacer
            .record(Outcome::PushBack { pause }, sent_at, now, in_flight, cap)
            .unwrap_or(NO_EFFECT);
        lane.parked.insert(seq, (now, item));
        self.parked_total.fetch_add(1, Ordering::Relaxed);
        Ok((effect, self.grant(lane, cap, now)))
    }

    /// Until when `ep` is paused, if it is at `now`.
    #[cfg(test)]
    pub(crate) fn paused_until(&self, ep: &Endpoint, now: Instant) -> Option<Instant> {
        let state = self.state.lock();
        state.lanes.get(ep)?.pacer.paused_until(now)
    }

    /// Slow start for `ep`: its breaker just opened, and what it held back
    /// must not come back at one instant.
    pub(crate) fn restart(&self, ep: &Endpoint, now: Instant) {
        if let Some(lane) = self.state.lock().lanes.get_mut(ep) {
            lane.pacer.restart_at(now);
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
            .lanes
            .get(ep)
            .is_none_or(|lane| lane.parked.len() < self.max_parked)
    }

    /// Items parked now.
    pub(crate) fn parked(&self) -> usize {
        self.parked_total.load(Ordering::Relaxed)
    }

    /// Every lane's pace, sorted by endpoint.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<(Endpoint, LaneStats)> {
        let mut all: Vec<_> = {
            let state = self.state.lock();
            let cap = self.cap(state.shared);
            state
                .lanes
                .iter()
                .map(|(ep, lane)| {
                    let stats = LaneStats {
                        in_flight: lane.in_flight,
                        in_flight_limit: lane.pacer.in_flight_limit(cap),
                        rate: lane.pacer.rate(),
                        paused_for: lane
                            .pacer
                            .paused_until(now)
                            .map_or(Duration::ZERO, |p| p - now),
                        push_backs: lane.pacer.push_backs,
                        paused_total: lane.pacer.paused_total,
                    };
                    (ep.clone(), stats)
                })
                .collect()
        };
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Refuses every later `enter` and returns everything parked, in
    /// acceptance order within each endpoint.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut state = self.state.lock();
        state.closed = true;
        let mut all = Vec::new();
        for lane in state.lanes.values_mut() {
            all.extend(
                std::mem::take(&mut lane.parked)
                    .into_values()
                    .map(|(_, t)| t),
            );
        }
        self.parked_total.store(0, Ordering::Relaxed);
        all
    }
}

const NO_EFFECT: PushBackEffect = PushBackEffect {
    new_pause: false,
    added: Duration::ZERO,
};
