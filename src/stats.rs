//! Counters and the [`Stats`] snapshot.
//!
//! Every hot-path counter lives in a cache-padded slot owned by one worker or
//! one submitter handle, so recording is an uncontended atomic add. A snapshot
//! sums the slots; it is cheap but not instantaneous across slots.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// A point-in-time view of a pool's counters and gauges.
///
/// Counters only grow. Gauges (`queued`, `active`, `workers`) are read at the
/// moment of the snapshot. Slots are summed one after another, so under load
/// two counters may be a few jobs apart from each other.
///
/// # Examples
///
/// ```
/// use hookpool::Pool;
///
/// let pool = Pool::builder().workers(2).queue_capacity(8).build(|n: u32| {
///     if n % 2 == 0 { Ok(()) } else { Err(format!("odd job {n}")) }
/// })?;
/// for n in 0..4 {
///     pool.try_submit(n).expect("queue has room");
/// }
/// let report = pool.shutdown();
/// let stats = report.stats;
/// assert_eq!(stats.submitted, 4);
/// assert_eq!(stats.succeeded, 2);
/// assert_eq!(stats.failed, 2);
/// assert_eq!(stats.queue_capacity, 8);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Worker threads currently alive (the configured count while running).
    pub workers: usize,
    /// The bounded queue's capacity.
    pub queue_capacity: usize,
    /// Jobs waiting in the queue.
    pub queued: usize,
    /// Jobs being run right now.
    pub active: usize,
    /// Jobs accepted by `try_submit` or `submit_timeout`.
    pub submitted: u64,
    /// Submissions refused, because the queue was full or the pool closed.
    pub rejected: u64,
    /// Jobs whose handler returned `Ok`.
    pub succeeded: u64,
    /// Jobs whose handler returned `Err`.
    pub failed: u64,
    /// Jobs whose handler panicked.
    pub panicked: u64,
}

impl Stats {
    /// Jobs that finished, whatever the outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut stats = hookpool::Stats::default();
    /// stats.succeeded = 3;
    /// stats.failed = 1;
    /// stats.panicked = 1;
    /// assert_eq!(stats.completed(), 5);
    /// ```
    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed + self.panicked
    }
}

/// Worker lifecycle, stored in [`WorkerSlot::state`].
pub(crate) mod state {
    /// Waiting for or between jobs.
    pub(crate) const IDLE: u8 = 0;
    /// Inside the handler.
    pub(crate) const RUNNING: u8 = 1;
    /// Shutdown's deadline passed: take no new job, hand back any in hand.
    pub(crate) const ABORTED: u8 = 2;
    /// The thread has left its loop.
    pub(crate) const EXITED: u8 = 3;
}

/// One worker's own counters and state, written only by that worker (and by
/// shutdown's abort, which swaps `state`).
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    pub(crate) state: AtomicU8,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
}

/// One submitter handle's counters and its in-flight marker (see `pool.rs`).
#[derive(Debug, Default)]
pub(crate) struct GateSlot {
    /// Non-zero while a send through this handle is between its "is the pool
    /// open" check and the end of the send.
    pub(crate) inflight: AtomicUsize,
    pub(crate) submitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// Adds one to a counter that only its owner writes.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
