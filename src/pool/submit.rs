//! [`Submitter`]: sending through the gate.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use crossbeam_utils::CachePadded;

use super::room::Phase;
use super::{Envelope, Shared};
use crate::error::SubmitError;
use crate::stats::{GateSlot, Stats, bump};

/// A cheap, cloneable handle for submitting jobs from any thread.
///
/// Hand one to each HTTP handler or producer thread. A live `Submitter` does
/// not keep the pool open: once shutdown begins, every submission returns
/// [`SubmitError::Closed`] with the job.
///
/// # Examples
///
/// ```
/// use std::thread;
/// use hookpool::Pool;
///
/// let pool = Pool::builder().workers(2).build(|_: u64| Ok::<(), String>(()))?;
/// let producers: Vec<_> = (0..2)
///     .map(|p| {
///         let submitter = pool.submitter();
///         thread::spawn(move || {
///             for i in 0..10 {
///                 submitter.submit_timeout(p * 100 + i, std::time::Duration::from_secs(5)).unwrap();
///             }
///         })
///     })
///     .collect();
/// for p in producers {
///     p.join().unwrap();
/// }
/// assert_eq!(pool.shutdown().stats.succeeded, 20);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
pub struct Submitter<J> {
    pub(super) tx: Sender<Envelope<J>>,
    pub(super) gate: Arc<CachePadded<GateSlot>>,
    pub(super) shared: Arc<Shared>,
    /// Crate-internal handles (the dispatcher's retry scheduler) may still
    /// send after intake closes; their owner stops them before the workers.
    pub(super) internal: bool,
}

impl<J> Submitter<J> {
    pub(super) fn register(tx: Sender<Envelope<J>>, shared: Arc<Shared>) -> Self {
        let gate = Arc::new(CachePadded::new(GateSlot::new(shared.sample_every)));
        shared.gates.lock().live.push(Arc::clone(&gate));
        Submitter {
            tx,
            gate,
            shared,
            internal: false,
        }
    }

    /// Submits a job without blocking.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job when the queue is at capacity,
    /// [`SubmitError::Closed`] with the job once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Pool, SubmitError};
    ///
    /// let (release, gate) = std::sync::mpsc::channel::<()>();
    /// let gate = std::sync::Mutex::new(gate);
    /// let pool = Pool::builder().workers(1).queue_capacity(1).build(move |_: u32| {
    ///     gate.lock().unwrap().recv().ok(); // hold the only worker
    ///     Ok::<(), String>(())
    /// })?;
    /// let submitter = pool.submitter();
    /// // Fill the worker and the one queue slot, then the next job comes back.
    /// let mut refused = None;
    /// for n in 0..100 {
    ///     if let Err(e) = submitter.try_submit(n) {
    ///         refused = Some(e);
    ///         break;
    ///     }
    /// }
    /// let err = refused.expect("a one-slot queue fills up");
    /// assert!(err.is_full());
    /// release.send(()).unwrap();
    /// release.send(()).unwrap();
    /// drop(release);
    /// drop(pool);
    /// assert!(submitter.try_submit(9).unwrap_err().is_closed());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    #[inline]
    pub fn try_submit(&self, job: J) -> Result<(), SubmitError<J>> {
        if self.gate.stamp_this_one() {
            return self.try_submit_stamped(job);
        }
        self.send_once(Envelope {
            job,
            enqueued: None,
        })
        .map_err(|e| self.refused_job(e))
    }

    /// `try_submit` for the sampled submission, whose queue wait is
    /// measured. Out of line, so that the common path stays small.
    #[cold]
    #[inline(never)]
    fn try_submit_stamped(&self, job: J) -> Result<(), SubmitError<J>> {
        let now = self.shared.monitor.stamp(Instant::now());
        self.send_once(Envelope {
            job,
            enqueued: Some(now),
        })
        .map(|()| {
            self.shared.note_depth(self.tx.len());
            self.tick(now);
        })
        .map_err(|e| self.refused_job(e))
    }

    /// Counts a refusal, checks saturation right away if the queue is full,
    /// and hands the job back.
    #[cold]
    #[inline(never)]
    fn refused_job(&self, e: SubmitError<Envelope<J>>) -> SubmitError<J> {
        bump(&self.gate.rejected);
        if e.is_full() {
            let shared = &self.shared;
            shared.note_depth(shared.capacity);
            shared
                .monitor
                .check_now(&shared.name, shared.load(self.tx.len()));
        }
        e.map(|env| env.job)
    }

    /// A saturation check, at most every few milliseconds, at the time of
    /// the stamp just sent.
    fn tick(&self, now: NonZeroU64) {
        let shared = &self.shared;
        shared
            .monitor
            .tick_nanos(&shared.name, now.get(), || shared.load(self.tx.len()));
    }

    /// One pass through the gate. Does not count rejections.
    #[inline]
    pub(super) fn send_once(&self, env: Envelope<J>) -> Result<(), SubmitError<Envelope<J>>> {
        self.gate.enter();
        if self.shared.closed.load(Ordering::SeqCst) && !self.internal {
            self.gate.leave_refused();
            return Err(SubmitError::Closed(env));
        }
        match self.tx.try_send(env) {
            Ok(()) => {
                self.gate.leave_sent();
                Ok(())
            }
            Err(TrySendError::Full(env)) => {
                self.gate.leave_refused();
                Err(SubmitError::Full(env))
            }
            Err(TrySendError::Disconnected(env)) => {
                self.gate.leave_refused();
                Err(SubmitError::Closed(env))
            }
        }
    }

    /// Submits a job, waiting at most `timeout` for room in the queue.
    ///
    /// The wait happens outside the gate, so a blocked caller never delays
    /// shutdown; it wakes as soon as shutdown begins and gets the job back.
    ///
    /// A caller that finds the queue full does not take slots one at a time
    /// as they free, which on a busy pool would cost a wake-up per job and
    /// CPU time the workers need. It sleeps until the queue has drained to
    /// half, or, if that takes longer than a millisecond (slow jobs), until
    /// the next slot frees. So each wait for room lasts at most about a
    /// millisecond longer than the wait for the first free slot (a caller
    /// woken for a slot that another caller takes first waits again).
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job if there was still no room at the
    /// timeout, [`SubmitError::Closed`] with the job once shutdown has
    /// begun.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookpool::Pool;
    ///
    /// let pool = Pool::builder().workers(1).queue_capacity(1).build(|_: u32| Ok::<(), String>(()))?;
    /// for n in 0..50 {
    ///     pool.submit_timeout(n, Duration::from_secs(5)).expect("the worker frees room");
    /// }
    /// assert_eq!(pool.shutdown().stats.succeeded, 50);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn submit_timeout(&self, job: J, timeout: Duration) -> Result<(), SubmitError<J>> {
        let stamped = self.gate.stamp_this_one();
        let mut env = Envelope {
            job,
            enqueued: stamped.then(|| self.shared.monitor.stamp(Instant::now())),
        };
        // The clock is read for the deadline only once the queue is full.
        let mut deadline = None;
        let mut found_full = false;
        let mut timed_out = false;
        loop {
            let stamp = env.enqueued;
            match self.send_once(env) {
                Ok(()) => {
                    if let Some(now) = stamp {
                        self.shared.note_depth(self.tx.len());
                        self.tick(now);
                    }
                    return Ok(());
                }
                Err(SubmitError::Full(back)) => {
                    env = back;
                    // The queue filled: the high-water mark is its capacity,
                    // whether or not room frees before the deadline.
                    if !found_full {
                        found_full = true;
                        self.shared.note_depth(self.shared.capacity);
                        log::trace!(target: "hookpool", "{}: queue full, waiting for room", self.shared.name);
                    }
                }
                Err(closed) => return Err(self.refused_job(closed)),
            }
            if timed_out {
                return Err(self.refused_job(SubmitError::Full(env)));
            }
            // No spinning for the next free slot: a producer that takes
            // slots one at a time as they free competes with the workers
            // for the CPU on every job. It sleeps instead until the queue
            // has drained to half, or for at most `BATCH_WAIT` until any
            // slot frees, or intake closes (see `room`). At the deadline it
            // tries once more.
            let now = Instant::now();
            let deadline =
                *deadline.get_or_insert_with(|| crate::clock::deadline_after(now, timeout));
            timed_out = !self.wait_for_room(now, deadline);
            // The wait for room is not queue time.
            if stamped {
                env.enqueued = Some(self.shared.monitor.stamp(Instant::now()));
            }
        }
    }

    /// Sleeps until there is room for a batch, or any room after
    /// `BATCH_WAIT`, or intake closes; returns `false` at `deadline`.
    #[cold]
    fn wait_for_room(&self, now: Instant, deadline: Instant) -> bool {
        let shared = &self.shared;
        let closed = || shared.closed.load(Ordering::Acquire);
        let batch_until = crate::clock::deadline_after(now, shared.batch_wait).min(deadline);
        if shared.room.wait_until(Phase::Batch, batch_until, || {
            closed() || self.tx.len() <= shared.low_water
        }) {
            return true;
        }
        // Tests wait for this line to know the caller is past the batch wait.
        log::trace!(target: "hookpool", "{}: no batch of room, waiting for any free slot", shared.name);
        shared.room.wait_until(Phase::Any, deadline, || {
            closed() || self.tx.len() < shared.capacity
        })
    }

    /// Sleeps until the queue has drained to its low-water mark, `stop()`
    /// holds, or `deadline`; returns whether one of the first two did.
    ///
    /// For the shared queue's fetcher: it waits where callers of
    /// `submit_timeout` wait for a batch of room, and the workers wake it
    /// the same way, so the worker loop gains nothing (it already loads
    /// the waiter count once per job). `stop` is checked under the room's
    /// lock: set it, then call `wake_room_waiters`, and the wake is not lost.
    pub(crate) fn wait_for_batch_room(&self, deadline: Instant, stop: impl Fn() -> bool) -> bool {
        let shared = &self.shared;
        shared.room.wait_until(Phase::Batch, deadline, || {
            stop() || self.tx.len() <= shared.low_water
        })
    }

    /// Wakes everyone waiting for room to look again.
    pub(crate) fn wake_room_waiters(&self) {
        self.shared.room.notify();
    }

    /// The low-water mark: `wait_for_batch_room` returns once at most this
    /// many jobs are queued.
    pub(crate) fn low_water(&self) -> usize {
        self.shared.low_water
    }

    /// A snapshot of the pool's counters. Same as [`Pool::stats`](crate::Pool::stats).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: ()| Ok::<(), String>(()))?;
    /// assert_eq!(pool.submitter().stats().workers, 1);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats(self.tx.len())
    }

    /// Jobs waiting in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Free slots in the queue now.
    pub(crate) fn room(&self) -> usize {
        self.shared.capacity.saturating_sub(self.tx.len())
    }

    /// Returns `true` once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: ()| Ok::<(), String>(()))?;
    /// let submitter = pool.submitter();
    /// assert!(!submitter.is_closed());
    /// drop(pool);
    /// assert!(submitter.is_closed());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl<J> Clone for Submitter<J> {
    fn clone(&self) -> Self {
        let mut clone = Submitter::register(self.tx.clone(), Arc::clone(&self.shared));
        clone.internal = self.internal;
        clone
    }
}

impl<J> Drop for Submitter<J> {
    fn drop(&mut self) {
        let mut gates = self.shared.gates.lock();
        gates.retired_submitted += self.gate.submitted();
        gates.retired_rejected += self.gate.rejected.load(Ordering::Relaxed);
        if let Some(i) = gates.live.iter().position(|g| Arc::ptr_eq(g, &self.gate)) {
            gates.live.swap_remove(i);
        }
    }
}

impl<J> fmt::Debug for Submitter<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitter")
            .field("pool", &self.shared.name)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
