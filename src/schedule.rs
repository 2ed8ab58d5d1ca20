//! The delay queue: items wait here, holding no worker, until they are due.
//!
//! One thread keeps a min-heap under a `parking_lot` mutex and sleeps on a
//! condvar until the earliest item is due. Due items are handed to `on_due`
//! outside the lock. Time comes from the injected [`Clock`]; waits are capped
//! so that a manual clock advanced by a test is noticed promptly.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::clock::Clock;

/// Longest single wait, so a [`ManualClock`](crate::ManualClock) moved by a
/// test is seen within this long.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// How long to hold an item that `on_due` could not take (queue full).
const REFUSED_PAUSE: Duration = Duration::from_millis(5);

struct Entry<T> {
    due: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so the `BinaryHeap` (a max-heap) pops the earliest first;
    /// `seq` keeps equal deadlines in insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

struct State<T> {
    heap: BinaryHeap<Entry<T>>,
    seq: u64,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    clock: Arc<dyn Clock>,
}

impl<T> Shared<T> {
    fn push(&self, state: &mut State<T>, due: Instant, item: T) {
        state.seq += 1;
        let seq = state.seq;
        state.heap.push(Entry { due, seq, item });
    }
}

/// A delay queue served by one thread.
pub(crate) struct DelayQueue<T> {
    shared: Arc<Shared<T>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<T: Send + 'static> DelayQueue<T> {
    /// Starts the thread. `on_due` gets each item once it is due; if it hands
    /// the item back (`Err`), the item is tried again a little later.
    pub(crate) fn start<F>(
        name: String,
        clock: Arc<dyn Clock>,
        mut on_due: F,
    ) -> std::io::Result<Self>
    where
        F: FnMut(T) -> Result<(), T> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                seq: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            clock,
        });
        let worker = Arc::clone(&shared);
        let thread = thread::Builder::new().name(name).spawn(move || {
            let mut batch = Vec::new();
            loop {
                {
                    let mut state = worker.state.lock();
                    loop {
                        if state.closed {
                            return;
                        }
                        let now = worker.clock.now();
                        match state.heap.peek() {
                            Some(first) if first.due <= now => break,
                            Some(first) => {
                                let wait = (first.due - now).min(MAX_WAIT);
                                worker.wake.wait_for(&mut state, wait);
                            }
                            None => {
                                worker.wake.wait_for(&mut state, MAX_WAIT);
                            }
                        }
                    }
                    let now = worker.clock.now();
                    while state.heap.peek().is_some_and(|e| e.due <= now) {
                        batch.extend(state.heap.pop().map(|e| e.item));
                    }
                }
                // Outside the lock: `on_due` sends into the pool's queue.
                let mut refused = Vec::new();
                for item in batch.drain(..) {
                    if let Err(item) = on_due(item) {
                        refused.push(item);
                    }
                }
                if !refused.is_empty() {
                    let due = worker.clock.now() + REFUSED_PAUSE;
                    let mut state = worker.state.lock();
                    for item in refused {
                        worker.push(&mut state, due, item);
                    }
                }
            }
        })?;
        Ok(DelayQueue {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Adds an item that becomes due at `due`. Hands it back once closed.
    pub(crate) fn schedule(&self, due: Instant, item: T) -> Result<(), T> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(item);
        }
        let earliest = state.heap.peek().is_none_or(|first| due < first.due);
        self.shared.push(&mut state, due, item);
        drop(state);
        if earliest {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Items waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.state.lock().heap.len()
    }

    /// Items waiting, as (those for which `pred` holds, the others), counted
    /// in one pass under the lock, so that no item is in both or neither.
    pub(crate) fn count_split(&self, pred: impl Fn(&T) -> bool) -> (usize, usize) {
        let state = self.shared.state.lock();
        let matching = state.heap.iter().filter(|e| pred(&e.item)).count();
        (matching, state.heap.len() - matching)
    }

    /// Stops the thread, joins it, and returns every item still waiting.
    /// Items scheduled afterwards are handed back by `schedule`.
    pub(crate) fn close(&self) -> Vec<T> {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!(target: "hookpool", "delay queue thread panicked");
            }
        }
        // The thread has exited, so the heap is final.
        let heap = std::mem::take(&mut self.shared.state.lock().heap);
        heap.into_vec().into_iter().map(|e| e.item).collect()
    }
}

impl<T> Drop for DelayQueue<T> {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.get_mut().take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::test_util::eventually;

    #[test]
    fn items_come_out_in_due_order_when_the_clock_reaches_them() {
        let clock = ManualClock::new();
        let (tx, rx) = crossbeam_channel::unbounded();
        let q = DelayQueue::start("dq-test".into(), Arc::new(clock.clone()), move |n: u32| {
            tx.send(n).unwrap();
            Ok(())
        })
        .unwrap();
        let t0 = clock.now();
        q.schedule(t0 + Duration::from_secs(30), 3).unwrap();
        q.schedule(t0 + Duration::from_secs(10), 1).unwrap();
        q.schedule(t0 + Duration::from_secs(20), 2).unwrap();
        q.schedule(t0 + Duration::from_secs(20), 22).unwrap();
        assert_eq!(q.len(), 4);
        assert_eq!(q.count_split(|n| *n >= 3), (2, 2));

        clock.advance(Duration::from_secs(20));
        let got: Vec<u32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [1, 2, 22]);
        assert!(eventually(|| q.len() == 1));
        assert!(rx.try_recv().is_err(), "an item came out before its time");

        let rest = q.close();
        assert_eq!(rest, [3]);
        assert_eq!(q.schedule(t0, 9), Err(9));
    }

    #[test]
    fn refused_items_are_kept_and_retried() {
        let clock = ManualClock::new();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&attempts);
        let q = DelayQueue::start(
            "dq-refuse".into(),
            Arc::new(clock.clone()),
            move |n: u32| {
                let mut seen = seen.lock();
                seen.push(n);
                if seen.len() < 3 { Err(n) } else { Ok(()) }
            },
        )
        .unwrap();
        q.schedule(clock.now(), 7).unwrap();
        for _ in 0..4 {
            clock.advance(REFUSED_PAUSE);
            thread::sleep(Duration::from_millis(2));
        }
        assert!(eventually(|| {
            clock.advance(REFUSED_PAUSE);
            attempts.lock().len() == 3
        }));
        assert!(q.close().is_empty());
        assert_eq!(*attempts.lock(), [7, 7, 7]);
    }
}
