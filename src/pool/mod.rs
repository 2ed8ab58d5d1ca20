//! The worker pool: a fixed set of OS threads fed by a bounded channel.
//!
//! # How shutdown stays lossless
//!
//! Every submitter handle owns a cloned `Sender`, so dropping the pool's own
//! sender would not disconnect the channel while handles live. Instead:
//!
//! 1. Each send goes through a *gate*: the handle marks itself in flight
//!    (`SeqCst`), checks `closed` (`SeqCst`), sends, and unmarks itself.
//! 2. Shutdown sets `closed` (`SeqCst`) and then waits until every gate is
//!    idle. By the sequential-consistency order, a send either saw `closed`
//!    and handed the job back, or was marked before `closed` was set and so
//!    finished before shutdown moved on. After this point the queue's
//!    contents are final.
//! 3. Shutdown then drops the `stop` sender. Workers drain the queue and exit
//!    once it is empty, and shutdown joins them.
//!
//! Gates are per handle and cache-padded, so the hot path adds two
//! uncontended atomic operations to crossbeam's `try_send` and takes no lock.
//!
//! With a deadline, shutdown marks every worker aborted. A worker that is
//! mid-job finishes it and exits (until then it still counts as active); one
//! that is between jobs hands the job it holds back; shutdown drains what is
//! still queued. Together that is `ShutdownReport::unstarted`.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::error::SubmitError;
use crate::saturation::{Load, Monitor};
use crate::stats::{GateSlot, Stats, WorkerSlot, state};

mod builder;
mod report;
mod room;
mod submit;
mod worker;

use builder::PanicHandler;
pub use builder::{PanicEvent, PoolBuilder};
pub use report::ShutdownReport;
use room::Room;
pub use submit::Submitter;
pub(crate) use worker::panic_message;

/// The largest queue capacity `build` accepts. The queue's slots are
/// allocated up front, so a mistaken huge capacity would exhaust memory.
///
/// # Examples
///
/// ```
/// use hookpool::{BuildError, MAX_QUEUE_CAPACITY, Pool};
///
/// let err = Pool::builder().queue_capacity(MAX_QUEUE_CAPACITY + 1).build(|_: ()| Ok::<(), String>(())).unwrap_err();
/// assert!(matches!(err, BuildError::Invalid(_)));
/// assert_eq!(err.to_string(), format!("queue capacity must be at most {MAX_QUEUE_CAPACITY}"));
/// ```
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// The message that travels through the queue.
struct Envelope<J> {
    job: J,
    /// When it was submitted, in nanoseconds since the saturation
    /// monitor's epoch (see `Monitor::stamp`), for the queue-wait
    /// histogram; only a sample of jobs carry it (see
    /// `PoolBuilder::queue_wait_sampling`). Eight bytes rather than an
    /// `Option<Instant>`'s sixteen: every queue slot carries this field,
    /// and a smaller slot is fewer cache lines for each send to claim.
    enqueued: Option<NonZeroU64>,
}

/// An uninhabited type: the stop channel never carries a value, it is only
/// ever disconnected.
enum Never {}

/// State shared by the pool, its workers and its submitters.
struct Shared {
    name: String,
    capacity: usize,
    closed: AtomicBool,
    gates: Mutex<GateRegistry>,
    workers: Box<[CachePadded<WorkerSlot>]>,
    panic_handler: Option<PanicHandler>,
    monitor: Monitor,
    /// The deepest the queue has been as submitters saw it: the capacity
    /// once a submission found the queue full (refused, or waiting in
    /// `submit_timeout`), the depth after each sampled submission, and the
    /// jobs taken back at a shutdown deadline. Workers keep their own marks.
    high_water: AtomicUsize,
    /// Each handle measures the queue wait of one submission in this many
    /// (0: none).
    sample_every: u32,
    /// Where callers of `submit_timeout` wait for room, and are woken by
    /// the workers or by `close`.
    room: Room,
    /// A caller waiting for room is woken once at most this many jobs are
    /// queued (`room::low_water`)...
    low_water: usize,
    /// ...or, after this long, as soon as any slot frees
    /// (`room::BATCH_WAIT`).
    batch_wait: Duration,
}

/// Live submitter gates, plus the totals of handles already dropped so that
/// `stats()` never goes backwards.
#[derive(Default)]
struct GateRegistry {
    live: Vec<Arc<CachePadded<GateSlot>>>,
    retired_submitted: u64,
    retired_rejected: u64,
}

impl Shared {
    fn stats(&self, queued: usize) -> Stats {
        let mut s = Stats {
            queue_capacity: self.capacity,
            queued,
            ..Stats::default()
        };
        for slot in self.workers.iter() {
            match slot.state.load(Ordering::Relaxed) {
                state::RUNNING | state::ABORTED_RUNNING => {
                    s.workers += 1;
                    s.active += 1;
                }
                state::EXITED => {}
                _ => s.workers += 1,
            }
            s.succeeded += slot.succeeded.load(Ordering::Relaxed);
            s.failed += slot.failed.load(Ordering::Relaxed);
            s.panicked += slot.panicked.load(Ordering::Relaxed);
            s.queue_high_water = s
                .queue_high_water
                .max(slot.high_water.load(Ordering::Relaxed));
            slot.queue_wait.add_to(&mut s.queue_wait);
            slot.run_time.add_to(&mut s.run_time);
        }
        s.queue_high_water = s
            .queue_high_water
            .max(self.high_water.load(Ordering::Relaxed))
            .max(queued);
        let gates = self.gates.lock();
        s.submitted = gates.retired_submitted;
        s.rejected = gates.retired_rejected;
        for gate in &gates.live {
            s.submitted += gate.submitted();
            s.rejected += gate.rejected.load(Ordering::Relaxed);
        }
        s
    }

    /// Raises the submitters' high-water mark to `depth`. Called on cold
    /// paths only: a full queue, sampled submissions, and jobs taken back
    /// at a shutdown deadline.
    fn note_depth(&self, depth: usize) {
        // A plain load first keeps the line shared once the mark is reached
        // (a full queue seen by every blocked `submit_timeout`).
        if self.high_water.load(Ordering::Relaxed) < depth {
            self.high_water.fetch_max(depth, Ordering::Relaxed);
        }
    }

    /// The load right now, for saturation checks.
    fn load(&self, queued: usize) -> Load {
        let busy = self
            .workers
            .iter()
            .filter(|w| {
                matches!(
                    w.state.load(Ordering::Relaxed),
                    state::RUNNING | state::ABORTED_RUNNING
                )
            })
            .count();
        Load {
            queued,
            capacity: self.capacity,
            busy,
            workers: self.workers.len(),
        }
    }

    /// Stops intake: after this returns, no send can succeed and the queue's
    /// contents are final (see the module docs for the argument).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Wake waiters in `submit_timeout`; they find `closed` set.
        self.room.notify();
        let gates: Vec<_> = self.gates.lock().live.clone();
        for gate in gates {
            let mut spins = 0u32;
            // Bounded by the other thread's progress: it is inside a
            // non-blocking `try_send`.
            while gate.busy() {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
        }
    }
}

/// A fixed set of worker threads fed by a bounded queue.
///
/// Jobs are submitted without blocking ([`try_submit`](Pool::try_submit));
/// when the queue is full the job comes back in [`SubmitError::Full`], so the
/// caller decides: answer 429, spill it somewhere, or wait with
/// [`submit_timeout`](Pool::submit_timeout).
///
/// # Shutdown and `Drop`
///
/// [`shutdown`](Pool::shutdown) stops intake, runs every queued job and joins
/// every thread. [`shutdown_timeout`](Pool::shutdown_timeout) does the same
/// until a deadline and then hands back the jobs that never started.
/// Dropping a `Pool` without calling either behaves like `shutdown()`: it
/// blocks until the queue is drained and every worker has been joined. No
/// thread is ever detached by `Drop`.
///
/// # Examples
///
/// ```
/// use hookpool::Pool;
///
/// let pool = Pool::builder().workers(2).queue_capacity(64).build(|n: u64| {
///     if n > 1_000 { return Err("too big"); }
///     Ok(())
/// })?;
/// for n in [1, 2, 5_000] {
///     pool.try_submit(n).expect("room in the queue");
/// }
/// let report = pool.shutdown();
/// assert!(report.unstarted.is_empty());
/// assert_eq!((report.stats.succeeded, report.stats.failed), (2, 1));
/// # Ok::<(), hookpool::BuildError>(())
/// ```
pub struct Pool<J> {
    inner: Option<Inner<J>>,
}

struct Inner<J> {
    submitter: Submitter<J>,
    rx: Receiver<Envelope<J>>,
    stop: Sender<Never>,
    handles: Vec<JoinHandle<()>>,
    returned: Arc<Mutex<Vec<J>>>,
}

impl Pool<()> {
    /// Starts configuring a pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|s: &'static str| {
    ///     assert!(!s.is_empty());
    ///     Ok::<(), String>(())
    /// })?;
    /// pool.try_submit("hello").unwrap();
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }
}

impl<J> Pool<J> {
    fn inner(&self) -> &Inner<J> {
        self.inner
            .as_ref()
            .expect("pool is live until shutdown or drop")
    }

    /// Submits a job without blocking. See [`Submitter::try_submit`].
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], carrying the job.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// assert!(pool.try_submit(1).is_ok());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    #[inline]
    pub fn try_submit(&self, job: J) -> Result<(), SubmitError<J>> {
        self.inner().submitter.try_submit(job)
    }

    /// Submits a job, waiting at most `timeout` for room. See
    /// [`Submitter::submit_timeout`].
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], carrying the job.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// assert!(pool.submit_timeout(1, Duration::from_millis(100)).is_ok());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn submit_timeout(&self, job: J, timeout: Duration) -> Result<(), SubmitError<J>> {
        self.inner().submitter.submit_timeout(job, timeout)
    }

    /// A new handle for submitting from other threads.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// let s = pool.submitter();
    /// std::thread::spawn(move || s.try_submit(7).unwrap()).join().unwrap();
    /// assert_eq!(pool.shutdown().stats.submitted, 1);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn submitter(&self) -> Submitter<J> {
        self.inner().submitter.clone()
    }

    /// A handle that keeps sending after [`close_intake`](Pool::close_intake).
    /// Its owner must stop using it before the pool is shut down: a job it
    /// sends after the workers have drained would get `Closed` back.
    pub(crate) fn internal_submitter(&self) -> Submitter<J> {
        let mut s = self.submitter();
        s.internal = true;
        s
    }

    /// Stops intake from every ordinary handle, leaving the workers running.
    /// After this returns, ordinary submissions get `Closed`.
    pub(crate) fn close_intake(&self) {
        self.inner().submitter.shared.close();
    }

    /// A snapshot of the counters and gauges.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(2).queue_capacity(4).build(|_: u8| Ok::<(), String>(()))?;
    /// let stats = pool.stats();
    /// assert_eq!((stats.workers, stats.queue_capacity, stats.submitted), (2, 4, 0));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner().submitter.stats()
    }

    /// The metrics in Prometheus text format 0.0.4, labelled
    /// `pool="<name>"`. Serve them with
    /// [`prometheus::CONTENT_TYPE`](crate::prometheus::CONTENT_TYPE).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().name("emails").build(|_: u8| Ok::<(), String>(()))?;
    /// pool.try_submit(1).unwrap();
    /// let text = pool.render_prometheus();
    /// assert!(text.contains("# TYPE hookpool_jobs_submitted_total counter"));
    /// assert!(text.contains("hookpool_jobs_submitted_total{pool=\"emails\"} 1"));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn render_prometheus(&self) -> String {
        crate::prometheus::Exposition::new()
            .pool(self.name(), &self.stats())
            .render()
    }

    /// The name given to the builder.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().build(|_: u8| Ok::<(), String>(()))?;
    /// assert_eq!(pool.name(), "hookpool");
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.inner().submitter.shared.name
    }

    /// Stops intake, runs every queued job, and joins every worker.
    ///
    /// Submitters get [`SubmitError::Closed`] from the moment this is called.
    /// Blocks until the queue is empty and all workers have exited, however
    /// long the remaining jobs take.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(2).build(|_: u8| Ok::<(), String>(()))?;
    /// for n in 0..10 {
    ///     pool.try_submit(n).unwrap();
    /// }
    /// let report = pool.shutdown();
    /// assert_eq!(report.stats.succeeded, 10);
    /// assert_eq!((report.unstarted.len(), report.still_running), (0, 0));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn shutdown(mut self) -> ShutdownReport<J> {
        self.stop(None)
    }

    /// Like [`shutdown`](Pool::shutdown), but gives up waiting at `timeout`.
    ///
    /// At the deadline, jobs that never started are taken out of the queue
    /// and returned in [`ShutdownReport::unstarted`]. Workers still inside a
    /// job are counted in [`ShutdownReport::still_running`]; each finishes
    /// its current job and exits without taking another. Their threads can
    /// be awaited with [`ShutdownReport::wait_running`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (release, gate) = std::sync::mpsc::channel::<()>();
    /// let gate = std::sync::Mutex::new(gate);
    /// let pool = hookpool::Pool::builder().workers(1).queue_capacity(8).build(move |_: u8| {
    ///     gate.lock().unwrap().recv().ok(); // blocks until released
    ///     Ok::<(), String>(())
    /// })?;
    /// for n in 0..4 {
    ///     pool.try_submit(n).unwrap();
    /// }
    /// let mut report = pool.shutdown_timeout(Duration::from_millis(50));
    /// // One job was started by the worker (or, rarely, none yet); the rest come back.
    /// assert_eq!(report.unstarted.len() + report.still_running, 4);
    /// drop(release); // lets the blocked job return
    /// assert_eq!(report.wait_running(Duration::from_secs(5)), 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> ShutdownReport<J> {
        self.stop(Some(crate::clock::deadline_after(Instant::now(), timeout)))
    }

    fn stop(&mut self, deadline: Option<Instant>) -> ShutdownReport<J> {
        let started = Instant::now();
        let Some(inner) = self.inner.take() else {
            return ShutdownReport::empty();
        };
        let Inner {
            submitter,
            rx,
            stop,
            handles,
            returned,
        } = inner;
        let shared = Arc::clone(&submitter.shared);
        shared.close();
        drop(submitter);
        // The queue's contents are final: let workers drain it and exit.
        drop(stop);

        let mut report = ShutdownReport::empty();
        let mut handles: Vec<Option<JoinHandle<()>>> = handles.into_iter().map(Some).collect();
        if let Some(deadline) = deadline {
            wait_finished(&handles, deadline);
            if handles.iter().flatten().any(|h| !h.is_finished()) {
                report.still_running = abort(&shared, &rx, &mut handles, &mut report.unstarted);
            }
        }
        for handle in handles.iter_mut() {
            let done = handle.as_ref().is_some_and(|h| h.is_finished()) || deadline.is_none();
            // Worker bodies catch every job panic, so a join error would be our bug.
            if done && handle.take().is_some_and(|h| h.join().is_err()) {
                log::error!(target: "hookpool", "{}: worker thread panicked outside a job", shared.name);
            }
        }
        report.unstarted.append(&mut returned.lock());
        // Normally empty by now. Jobs are left only if every worker thread
        // died outside a job (a bug, logged above): hand them back rather
        // than drop them with the queue.
        unstarted_from_queue(&shared, &rx, &mut report.unstarted);
        report.running = handles.into_iter().flatten().collect();
        report.stats = shared.stats(0);
        report.elapsed = started.elapsed();
        if !report.running.is_empty() {
            report.shared = Some(Arc::clone(&shared));
        }
        log::debug!(
            target: "hookpool",
            "{}: shut down in {:?}: {} unstarted, {} still running",
            shared.name,
            report.elapsed,
            report.unstarted.len(),
            report.still_running
        );
        report
    }
}

/// Polls until every worker has exited or the deadline passes.
fn wait_finished(handles: &[Option<JoinHandle<()>>], deadline: Instant) {
    let mut pause = Duration::from_micros(50);
    while handles.iter().flatten().any(|h| !h.is_finished()) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// The deadline passed: stop workers from starting jobs, collect everything
/// that never started, and join every worker that is not inside a job.
/// Returns how many workers are still running a job.
fn abort<J>(
    shared: &Shared,
    rx: &Receiver<Envelope<J>>,
    handles: &mut [Option<JoinHandle<()>>],
    unstarted: &mut Vec<J>,
) -> usize {
    let mut running = 0;
    for (slot, handle) in shared.workers.iter().zip(handles.iter_mut()) {
        // Only a live worker is aborted, and one inside a job stays counted
        // as active until it ends; an exited one stays EXITED so that stats
        // never count it.
        let previous = slot
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| match s {
                state::IDLE => Some(state::ABORTED),
                state::RUNNING => Some(state::ABORTED_RUNNING),
                _ => None,
            })
            .unwrap_or(state::EXITED);
        if previous == state::RUNNING {
            running += 1;
        } else if let Some(h) = handle.take() {
            // Not inside a job, so it exits promptly: it is draining, and any
            // job it takes now goes to `returned` instead of being run.
            let _ = h.join();
        }
    }
    unstarted_from_queue(shared, rx, unstarted);
    if running > 0 {
        log::warn!(
            target: "hookpool",
            "{}: shutdown deadline passed with {running} job(s) still running",
            shared.name
        );
    }
    running
}

/// Takes every job still queued into `unstarted`.
fn unstarted_from_queue<J>(shared: &Shared, rx: &Receiver<Envelope<J>>, unstarted: &mut Vec<J>) {
    // These jobs leave the queue without a worker reading its depth.
    shared.note_depth(rx.len());
    unstarted.extend(rx.try_iter().map(|env| env.job));
}

impl<J> Drop for Pool<J> {
    /// Same as [`Pool::shutdown`]: stops intake, drains the queue, and joins
    /// every worker.
    fn drop(&mut self) {
        if self.inner.is_some() {
            let _ = self.stop(None);
        }
    }
}

impl<J> fmt::Debug for Pool<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => f
                .debug_struct("Pool")
                .field("name", &inner.submitter.shared.name)
                .field("stats", &inner.submitter.stats())
                .finish(),
            None => f.write_str("Pool(shut down)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::eventually;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Pool<String>>();
        assert_send_sync::<Submitter<String>>();
        assert_send_sync::<ShutdownReport<String>>();
        assert_send_sync::<PoolBuilder>();
    }

    #[test]
    fn panic_message_reads_both_string_kinds() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u8), "non-string panic payload");
    }

    /// Issue 2, point 6: no lock is held across a send. With every lock the
    /// pool owns held by this thread, sends from another still go through.
    #[test]
    fn submissions_take_no_lock() {
        let pool = Pool::builder()
            .workers(1)
            .queue_capacity(64)
            .build(|_: u32| Ok::<(), String>(()))
            .unwrap();
        let submitter = pool.submitter();
        let inner = pool.inner();
        let shared = &inner.submitter.shared;
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let (submitter_tx, submitter_back) = crossbeam_channel::bounded(1);
        let (finished, sender) = {
            let _gates = shared.gates.lock();
            let _room = shared.room.lock();
            let _returned = inner.returned.lock();
            let sender = thread::spawn(move || {
                // Sampled and unsampled sends, both entry points.
                for n in 0..20 {
                    submitter.try_submit(n).unwrap();
                    submitter
                        .submit_timeout(100 + n, Duration::from_secs(5))
                        .unwrap();
                }
                done_tx.send(()).unwrap();
                // Dropping a handle does take the registry lock: hand it back.
                submitter_tx.send(submitter).unwrap();
            });
            (done.recv_timeout(Duration::from_secs(20)), sender)
        };
        sender.join().unwrap();
        drop(submitter_back.recv().unwrap());
        assert!(finished.is_ok(), "a send waited for a lock the pool owns");
    }

    /// With the batch wait stretched to an hour, a producer blocked at a
    /// full queue sleeps while jobs free slots one by one, and refills the
    /// queue in one go once it has drained to half (`room`).
    #[test]
    fn a_waiting_submission_refills_the_queue_in_a_batch() {
        const BOUND: Duration = Duration::from_secs(20);
        let (tokens, token) = crossbeam_channel::unbounded::<()>();
        let mut builder = Pool::builder().workers(1).queue_capacity(8);
        builder.batch_wait = Duration::from_secs(3600);
        let pool = builder
            .build(move |_: u32| token.recv_timeout(BOUND).map_err(|e| e.to_string()))
            .unwrap();
        // Dropped before the pool if an assertion fails, so the jobs end.
        let tokens = tokens;
        let queued = |n| eventually(|| pool.stats().queued == n);
        pool.try_submit(0).unwrap();
        assert!(eventually(|| pool.stats().active == 1));
        for n in 1..=8 {
            pool.try_submit(n).unwrap();
        }
        let submitter = pool.submitter();
        let producer = thread::spawn(move || {
            for n in 9..13 {
                submitter
                    .submit_timeout(n, Duration::from_secs(600))
                    .unwrap();
            }
        });
        let room = &pool.inner().submitter.shared.room;
        assert!(eventually(|| room.waiters() != 0));
        // Three jobs end, one at a time: the queue drains to 5, above the
        // mark of 4, and the producer sleeps on.
        for left in (5..8).rev() {
            tokens.send(()).unwrap();
            assert!(queued(left));
        }
        // Time for a producer woken too early to send.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(pool.stats().queued, 5);
        // The fourth reaches the mark: the producer sends its four jobs.
        tokens.send(()).unwrap();
        assert!(queued(8));
        producer.join().unwrap();
        for _ in 0..9 {
            tokens.send(()).unwrap();
        }
        assert_eq!(pool.shutdown().stats.succeeded, 13);
    }

    #[test]
    fn dropped_submitters_keep_their_counts() {
        let pool = Pool::builder()
            .workers(1)
            .build(|_: u8| Ok::<(), String>(()))
            .unwrap();
        let s = pool.submitter();
        s.try_submit(1).unwrap();
        drop(s);
        assert_eq!(pool.stats().submitted, 1);
        assert_eq!(pool.inner().submitter.shared.gates.lock().live.len(), 1);
    }
}
