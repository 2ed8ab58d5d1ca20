//! Waking producers blocked at a full queue in batches, not one job at a time.
//!
//! crossbeam wakes a producer blocked on a full channel as soon as one slot
//! frees. It sends one job, finds the queue full again and sleeps: on a busy
//! pool that is a wake-up per job, and on a machine with as many workers as
//! cores the producer takes its CPU time from the workers. So a producer
//! waiting in `submit_timeout` sleeps in two phases:
//!
//! 1. *Batch:* until the queue has drained to its low-water mark, half the
//!    capacity, and then refills that half in one go. The half still queued
//!    keeps the workers busy while the producer is being scheduled.
//! 2. *Any room:* if the batch has not drained within [`BATCH_WAIT`] (slow
//!    jobs), the first free slot wakes it, as before. So batching never adds
//!    more than `BATCH_WAIT` to a wait for room.
//!
//! Workers load the waiter count once per job (a line nobody writes while
//! no one waits) and read the queue's depth only while a producer waits in
//! phase 1, spaced out by how far the depth is from the mark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long a waiting producer holds out for the batch (phase 1) before any
/// free slot will do.
pub(super) const BATCH_WAIT: Duration = Duration::from_millis(1);

/// The low-water mark for a queue of `capacity` slots: a producer waiting
/// for a batch is woken once at most this many jobs are queued.
pub(super) fn low_water(capacity: usize) -> usize {
    capacity / 2
}

/// One phase-1 waiter in `Room::waiters`.
const BATCH: u64 = 1;
/// One phase-2 waiter in `Room::waiters`.
const ANY: u64 = 1 << 32;

/// What a worker that has just taken a job does for waiting producers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// Wake them now.
    Now,
    /// Take this many more jobs before looking again (0: at the next job).
    After(usize),
}

/// The decision behind `Wake`, given the waiter count, the jobs left to
/// take before looking at the queue again, the queue's depth (read only if
/// needed), the low-water mark and the number of workers draining the queue.
#[inline]
pub(super) fn wake(
    waiters: u64,
    countdown: usize,
    queued: impl FnOnce() -> usize,
    low_water: usize,
    workers: usize,
) -> Wake {
    if waiters == 0 {
        return Wake::After(0);
    }
    if waiters >= ANY {
        // A job was just taken, so there is a free slot.
        return Wake::Now;
    }
    if countdown > 0 {
        return Wake::After(countdown - 1);
    }
    match queued() {
        q if q <= low_water => Wake::Now,
        // Every worker drains, so this one looks again when it has taken
        // its share of the distance.
        q => Wake::After(((q - low_water) / workers.max(1)).saturating_sub(1)),
    }
}

/// Which room a producer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Down to the low-water mark.
    Batch,
    /// Any free slot.
    Any,
}

/// Producers waiting for room, and the condition variable they sleep on.
#[derive(Default)]
pub(super) struct Room {
    /// Phase-1 waiters in the low 32 bits, phase-2 waiters in the high 32;
    /// written only under `lock`.
    waiters: AtomicU64,
    lock: Mutex<()>,
    ready: Condvar,
}

impl Room {
    /// The waiter count, for `wake`. `SeqCst`, paired with the waiter's
    /// increment: a worker that takes a job and then sees no waiter took it
    /// before the waiter's first look at the queue, which so sees the room.
    #[inline]
    pub(super) fn waiters(&self) -> u64 {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Sleeps in `phase` until `ready()` or `deadline`; returns whether
    /// `ready()` held. `ready` is checked under the lock, so a `notify` after
    /// the state it reads changed is never missed.
    pub(super) fn wait_until(
        &self,
        phase: Phase,
        deadline: Instant,
        ready: impl Fn() -> bool,
    ) -> bool {
        let one = match phase {
            Phase::Batch => BATCH,
            Phase::Any => ANY,
        };
        let mut guard = self.lock.lock();
        self.waiters.fetch_add(one, Ordering::SeqCst);
        let ready = loop {
            if ready() {
                break true;
            }
            if self.ready.wait_until(&mut guard, deadline).timed_out() {
                break ready();
            }
        };
        self.waiters.fetch_sub(one, Ordering::SeqCst);
        ready
    }

    /// Wakes every waiting producer to look again.
    pub(super) fn notify(&self) {
        let _guard = self.lock.lock();
        self.ready.notify_all();
    }

    /// The lock, for the test that sends while holding every lock.
    #[cfg(test)]
    pub(super) fn lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.lock.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::{ANY, BATCH, Wake, low_water, wake};

    #[test]
    fn the_low_water_mark_is_half_the_capacity() {
        assert_eq!(low_water(1), 0);
        assert_eq!(low_water(2), 1);
        assert_eq!(low_water(9), 4);
        assert_eq!(low_water(1024), 512);
    }

    #[test]
    fn workers_wake_a_batch_at_the_mark_and_any_room_at_once() {
        let never = || -> usize { panic!("the depth was read when it did not matter") };
        // Nobody waiting: nothing to do, and the countdown starts over.
        assert_eq!(wake(0, 7, never, 512, 2), Wake::After(0));
        // Waiting for a batch: not before the mark, with each of two
        // workers taking half the way there first, and the depth read only
        // when the countdown has run out.
        assert_eq!(wake(BATCH, 0, || 1000, 512, 2), Wake::After(243));
        assert_eq!(wake(BATCH, 243, never, 512, 2), Wake::After(242));
        assert_eq!(wake(BATCH, 0, || 515, 512, 1), Wake::After(2));
        assert_eq!(wake(BATCH, 0, || 513, 512, 2), Wake::After(0));
        assert_eq!(wake(BATCH, 0, || 512, 512, 2), Wake::Now);
        assert_eq!(wake(2 * BATCH, 0, || 0, 512, 2), Wake::Now);
        // Anyone waiting for any room: the slot just freed will do, even
        // in the middle of a batch countdown.
        assert_eq!(wake(ANY, 0, never, 512, 2), Wake::Now);
        assert_eq!(wake(ANY + BATCH, 100, never, 512, 1), Wake::Now);
    }
}
