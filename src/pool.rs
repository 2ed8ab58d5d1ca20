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
//! With a deadline, shutdown marks every worker `ABORTED`. A worker that is
//! mid-job finishes it and exits; one that is between jobs hands the job it
//! holds back; shutdown drains what is still queued. Together that is
//! `ShutdownReport::unstarted`.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, TrySendError};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::error::{BuildError, SubmitError};
use crate::saturation::{Load, Monitor};
use crate::stats::{GateSlot, Stats, WorkerSlot, bump, bump_owned, state};

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
    enqueued: Instant,
}

/// An uninhabited type: the stop channel never carries a value, it is only
/// ever disconnected.
enum Never {}

/// What a panic handler is told. The job itself is gone: it was moved into
/// the handler that panicked.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use hookpool::Pool;
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let pool = Pool::builder()
///     .workers(1)
///     .name("jobs")
///     .panic_handler(move |p| sink.lock().unwrap().push((p.thread_name().to_owned(), p.message().to_owned())))
///     .build(|n: u32| -> Result<(), String> { if n == 3 { panic!("bad input {n}") } Ok(()) })?;
/// pool.try_submit(3).unwrap();
/// let report = pool.shutdown();
/// assert_eq!(report.stats.panicked, 1);
/// assert_eq!(seen.lock().unwrap()[0], ("jobs-0".to_owned(), "bad input 3".to_owned()));
/// # Ok::<(), hookpool::BuildError>(())
/// ```
pub struct PanicEvent<'a> {
    worker: usize,
    thread_name: &'a str,
    message: &'a str,
    payload: &'a (dyn Any + Send),
}

impl PanicEvent<'_> {
    /// Index of the worker that caught the panic (`0..workers`).
    ///
    /// # Examples
    ///
    /// See [`PanicEvent`].
    ///
    /// ```
    /// # let _ = hookpool::Pool::builder().panic_handler(|p| assert!(p.worker() < 64));
    /// ```
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The worker thread's name, such as `webhooks-0`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let _ = hookpool::Pool::builder().panic_handler(|p| assert!(!p.thread_name().is_empty()));
    /// ```
    pub fn thread_name(&self) -> &str {
        self.thread_name
    }

    /// The panic message, when the payload was a string; otherwise
    /// `"non-string panic payload"`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let _ = hookpool::Pool::builder().panic_handler(|p| println!("{}", p.message()));
    /// ```
    pub fn message(&self) -> &str {
        self.message
    }

    /// The raw panic payload, for downcasting.
    ///
    /// # Examples
    ///
    /// ```
    /// # let _ = hookpool::Pool::builder().panic_handler(|p| { let _ = p.payload().downcast_ref::<u32>(); });
    /// ```
    pub fn payload(&self) -> &(dyn Any + Send) {
        self.payload
    }
}

impl fmt::Debug for PanicEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicEvent")
            .field("worker", &self.worker)
            .field("thread_name", &self.thread_name)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

type PanicHandler = Arc<dyn Fn(&PanicEvent<'_>) + Send + Sync>;

/// Configures and starts a [`Pool`].
///
/// # Examples
///
/// ```
/// use hookpool::Pool;
///
/// let pool = Pool::builder()
///     .workers(2)
///     .queue_capacity(16)
///     .name("mailer")
///     .build(|address: String| -> Result<(), std::io::Error> {
///         assert!(address.contains('@'));
///         Ok(())
///     })?;
/// pool.try_submit("ada@example.com".to_owned()).unwrap();
/// assert_eq!(pool.shutdown().stats.succeeded, 1);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Clone)]
pub struct PoolBuilder {
    workers: Option<usize>,
    queue_capacity: usize,
    name: String,
    stack_size: Option<usize>,
    panic_handler: Option<PanicHandler>,
    warn_interval: Duration,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: None,
            queue_capacity: 1024,
            name: "hookpool".to_owned(),
            stack_size: None,
            panic_handler: None,
            warn_interval: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .field("panic_handler", &self.panic_handler.is_some())
            .field("warn_interval", &self.warn_interval)
            .finish()
    }
}

impl PoolBuilder {
    /// Creates a builder with the defaults. Same as [`Pool::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::PoolBuilder::new().build(|_: ()| Ok::<(), String>(()))?;
    /// assert_eq!(pool.stats().queue_capacity, 1024);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of worker threads. Defaults to the machine's available
    /// parallelism (1 if that cannot be read). Zero is refused by `build`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(3).build(|_: ()| Ok::<(), String>(()))?;
    /// assert_eq!(pool.stats().workers, 3);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Capacity of the bounded queue. Defaults to 1024. Zero, and anything
    /// above [`MAX_QUEUE_CAPACITY`], is refused by `build`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().queue_capacity(10).build(|_: ()| Ok::<(), String>(()))?;
    /// assert_eq!(pool.stats().queue_capacity, 10);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }

    /// Name used for thread names (`name-0`, `name-1`, ...), log lines and
    /// metrics labels. Defaults to `"hookpool"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().name("webhooks").build(|_: ()| Ok::<(), String>(()))?;
    /// assert_eq!(pool.name(), "webhooks");
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn name_ref(&self) -> &str {
        &self.name
    }

    /// The worker count `build` will use.
    pub(crate) fn workers_ref(&self) -> usize {
        self.workers
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Stack size of each worker thread, in bytes. Defaults to the standard
    /// library's default (2 MiB unless `RUST_MIN_STACK` says otherwise).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().stack_size(256 * 1024).build(|_: ()| Ok::<(), String>(()))?;
    /// assert!(pool.try_submit(()).is_ok());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// The least time between two saturation warnings of the same kind
    /// (queue at 80% of capacity; every worker busy while jobs wait).
    /// Defaults to 30 s. Warnings go to the `log` facade at warn level.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().warn_interval(std::time::Duration::from_secs(60)).build(|_: ()| Ok::<(), String>(()))?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self
    }

    /// Called on the worker thread after a job panics, once the panic has
    /// been counted and logged. Defaults to none. A panic inside the handler
    /// itself is caught and logged too; the worker survives either way.
    ///
    /// # Examples
    ///
    /// See [`PanicEvent`].
    ///
    /// ```
    /// let builder = hookpool::Pool::builder().panic_handler(|p| eprintln!("{}", p.message()));
    /// # drop(builder);
    /// ```
    pub fn panic_handler<H>(mut self, handler: H) -> Self
    where
        H: Fn(&PanicEvent<'_>) + Send + Sync + 'static,
    {
        self.panic_handler = Some(Arc::new(handler));
        self
    }

    /// Starts the workers. Each accepted job is passed to `handler` on one
    /// of them. `Ok` counts as succeeded; `Err` counts as failed and is
    /// logged at warn level; a panic counts as panicked, is logged at error
    /// level and goes to the panic handler.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] or [`BuildError::ZeroCapacity`] for those
    /// settings, [`BuildError::Spawn`] if a thread cannot be started (the
    /// threads already started are stopped and joined first).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{BuildError, Pool};
    ///
    /// let err = Pool::builder().queue_capacity(0).build(|_: ()| Ok::<(), String>(())).unwrap_err();
    /// assert!(matches!(err, BuildError::ZeroCapacity));
    /// ```
    pub fn build<J, F, E>(self, handler: F) -> Result<Pool<J>, BuildError>
    where
        J: Send + 'static,
        F: Fn(J) -> Result<(), E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let workers = match self.workers {
            Some(0) => return Err(BuildError::ZeroWorkers),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if self.queue_capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(BuildError::Invalid(format!(
                "queue capacity must be at most {MAX_QUEUE_CAPACITY}"
            )));
        }

        let (tx, rx) = crossbeam_channel::bounded::<Envelope<J>>(self.queue_capacity);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<Never>(0);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded::<Never>(0);
        let shared = Arc::new(Shared {
            name: self.name,
            capacity: self.queue_capacity,
            closed: AtomicBool::new(false),
            gates: Mutex::new(GateRegistry::default()),
            workers: (0..workers)
                .map(|_| CachePadded::new(WorkerSlot::default()))
                .collect(),
            panic_handler: self.panic_handler,
            monitor: Monitor::new(self.warn_interval),
            closed_signal: Mutex::new(None),
        });
        let returned = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);

        let mut handles = Vec::with_capacity(workers);
        for index in 0..workers {
            let mut spawner = thread::Builder::new().name(format!("{}-{index}", shared.name));
            if let Some(bytes) = self.stack_size {
                spawner = spawner.stack_size(bytes);
            }
            let worker = Worker {
                index,
                rx: rx.clone(),
                stop: stop_rx.clone(),
                shared: Arc::clone(&shared),
                returned: Arc::clone(&returned),
                handler: Arc::clone(&handler),
            };
            match spawner.spawn(move || worker.run()) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // Nothing was submitted yet: stopping is just disconnect + join.
                    drop(stop_tx);
                    for handle in handles {
                        let _ = handle.join();
                    }
                    return Err(BuildError::Spawn(e));
                }
            }
        }

        *shared.closed_signal.lock() = Some(closed_tx);
        let submitter = Submitter::register(tx, closed_rx, Arc::clone(&shared));
        Ok(Pool {
            inner: Some(Inner {
                submitter,
                rx,
                stop: stop_tx,
                handles,
                returned,
            }),
        })
    }
}

/// State shared by the pool, its workers and its submitters.
struct Shared {
    name: String,
    capacity: usize,
    closed: AtomicBool,
    gates: Mutex<GateRegistry>,
    workers: Box<[CachePadded<WorkerSlot>]>,
    panic_handler: Option<PanicHandler>,
    monitor: Monitor,
    /// Dropped by `close`, which disconnects every submitter's `closed`
    /// receiver and so wakes callers waiting in `submit_timeout`.
    closed_signal: Mutex<Option<Sender<Never>>>,
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
                state::RUNNING => {
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
        s.queue_high_water = s.queue_high_water.max(queued);
        let gates = self.gates.lock();
        s.submitted = gates.retired_submitted;
        s.rejected = gates.retired_rejected;
        for gate in &gates.live {
            s.submitted += gate.submitted.load(Ordering::Relaxed);
            s.rejected += gate.rejected.load(Ordering::Relaxed);
        }
        s
    }

    /// The load right now, for saturation checks.
    fn load(&self, queued: usize) -> Load {
        let busy = self
            .workers
            .iter()
            .filter(|w| w.state.load(Ordering::Relaxed) == state::RUNNING)
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
        drop(self.closed_signal.lock().take());
        let gates: Vec<_> = self.gates.lock().live.clone();
        for gate in gates {
            let mut spins = 0u32;
            // Bounded by the other thread's progress: it is inside a
            // non-blocking `try_send`.
            while gate.inflight.load(Ordering::SeqCst) != 0 {
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
    tx: Sender<Envelope<J>>,
    /// Disconnected once intake closes.
    closed: Receiver<Never>,
    gate: Arc<CachePadded<GateSlot>>,
    shared: Arc<Shared>,
    /// Crate-internal handles (the dispatcher's retry scheduler) may still
    /// send after intake closes; their owner stops them before the workers.
    internal: bool,
}

impl<J> Submitter<J> {
    fn register(tx: Sender<Envelope<J>>, closed: Receiver<Never>, shared: Arc<Shared>) -> Self {
        let gate = Arc::new(CachePadded::new(GateSlot::default()));
        shared.gates.lock().live.push(Arc::clone(&gate));
        Submitter {
            tx,
            closed,
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
        let now = Instant::now();
        let env = Envelope { job, enqueued: now };
        match self.send_once(env) {
            Ok(()) => {
                let shared = &self.shared;
                shared
                    .monitor
                    .tick(&shared.name, now, || shared.load(self.tx.len()));
                Ok(())
            }
            Err(e) => {
                bump(&self.gate.rejected);
                self.refused(&e);
                Err(e.map(|env| env.job))
            }
        }
    }

    /// A refusal is a cold path: check saturation right away.
    #[cold]
    fn refused(&self, e: &SubmitError<Envelope<J>>) {
        if e.is_full() {
            let shared = &self.shared;
            shared
                .monitor
                .check_now(&shared.name, shared.load(self.tx.len()));
        }
    }

    /// One pass through the gate. Does not count rejections.
    #[inline]
    fn send_once(&self, env: Envelope<J>) -> Result<(), SubmitError<Envelope<J>>> {
        self.gate.inflight.fetch_add(1, Ordering::SeqCst);
        if self.shared.closed.load(Ordering::SeqCst) && !self.internal {
            self.gate.inflight.fetch_sub(1, Ordering::Release);
            return Err(SubmitError::Closed(env));
        }
        let sent = self.tx.try_send(env);
        self.gate.inflight.fetch_sub(1, Ordering::Release);
        match sent {
            Ok(()) => {
                bump(&self.gate.submitted);
                Ok(())
            }
            Err(TrySendError::Full(env)) => Err(SubmitError::Full(env)),
            Err(TrySendError::Disconnected(env)) => Err(SubmitError::Closed(env)),
        }
    }

    /// Submits a job, waiting at most `timeout` for room in the queue.
    ///
    /// The wait happens outside the gate, so a blocked caller never delays
    /// shutdown; it wakes as soon as shutdown begins and gets the job back.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the job if there was no room before the
    /// timeout, [`SubmitError::Closed`] with the job once shutdown has begun.
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
        let deadline = Instant::now().checked_add(timeout);
        let mut env = Envelope {
            job,
            enqueued: Instant::now(),
        };
        loop {
            match self.send_once(env) {
                Ok(()) => return Ok(()),
                Err(SubmitError::Full(back)) => env = back,
                Err(closed) => {
                    bump(&self.gate.rejected);
                    return Err(closed.map(|env| env.job));
                }
            }
            // Wake when there may be room, or when shutdown disconnects `stop`.
            let mut select = Select::new();
            select.send(&self.tx);
            select.recv(&self.closed);
            let ready = match deadline {
                Some(deadline) => select.ready_deadline(deadline).is_ok(),
                None => {
                    select.ready();
                    true
                }
            };
            if !ready {
                bump(&self.gate.rejected);
                let refused = SubmitError::Full(env);
                self.refused(&refused);
                return Err(refused.map(|env| env.job));
            }
            env.enqueued = Instant::now();
        }
    }

    /// A snapshot of the pool's counters. Same as [`Pool::stats`].
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
        let mut clone = Submitter::register(
            self.tx.clone(),
            self.closed.clone(),
            Arc::clone(&self.shared),
        );
        clone.internal = self.internal;
        clone
    }
}

impl<J> Drop for Submitter<J> {
    fn drop(&mut self) {
        let mut gates = self.shared.gates.lock();
        gates.retired_submitted += self.gate.submitted.load(Ordering::Relaxed);
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
        // Only a live worker becomes ABORTED; an exited one stays EXITED so
        // that stats never count it.
        let previous = slot
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s == state::IDLE || s == state::RUNNING).then_some(state::ABORTED)
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
    unstarted.extend(rx.try_iter().map(|env| env.job));
    if running > 0 {
        log::warn!(
            target: "hookpool",
            "{}: shutdown deadline passed with {running} job(s) still running",
            shared.name
        );
    }
    running
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

/// What shutdown did: the jobs that never ran, and the workers that were
/// still busy when the deadline passed.
///
/// # Examples
///
/// ```
/// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
/// pool.try_submit(1).unwrap();
/// let report = pool.shutdown();
/// assert!(report.is_complete());
/// assert_eq!(report.stats.succeeded, 1);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[must_use = "the report holds jobs that never ran; dropping it drops them"]
#[non_exhaustive]
pub struct ShutdownReport<J> {
    /// Accepted jobs that never started, in no particular order. Empty after
    /// [`Pool::shutdown`].
    pub unstarted: Vec<J>,
    /// Workers that were still inside a job at the deadline. Each finishes
    /// that job and then exits. Always 0 after [`Pool::shutdown`].
    pub still_running: usize,
    /// The counters when shutdown returned, refreshed by
    /// [`wait_running`](ShutdownReport::wait_running).
    pub stats: Stats,
    /// How long shutdown took.
    pub elapsed: Duration,
    running: Vec<JoinHandle<()>>,
    shared: Option<Arc<Shared>>,
}

impl<J> ShutdownReport<J> {
    fn empty() -> Self {
        ShutdownReport {
            unstarted: Vec::new(),
            still_running: 0,
            stats: Stats::default(),
            elapsed: Duration::ZERO,
            running: Vec::new(),
            shared: None,
        }
    }

    /// Returns `true` if every accepted job ran and every worker was joined.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// assert!(pool.shutdown().is_complete());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn is_complete(&self) -> bool {
        self.unstarted.is_empty() && self.running.is_empty()
    }

    /// Waits up to `timeout` for the workers that were still running at the
    /// deadline, joining those that finish. Returns how many are still
    /// running. If the report is dropped first, those threads finish their
    /// job and exit on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// let mut report = pool.shutdown_timeout(Duration::from_secs(1));
    /// assert_eq!(report.wait_running(Duration::from_millis(10)), 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn wait_running(&mut self, timeout: Duration) -> usize {
        let handles: Vec<_> = self.running.drain(..).map(Some).collect();
        wait_finished(
            &handles,
            crate::clock::deadline_after(Instant::now(), timeout),
        );
        for handle in handles.into_iter().flatten() {
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                self.running.push(handle);
            }
        }
        self.still_running = self.running.len();
        if let Some(shared) = &self.shared {
            self.stats = shared.stats(0);
        }
        self.still_running
    }
}

impl<J> fmt::Debug for ShutdownReport<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownReport")
            .field("unstarted", &self.unstarted.len())
            .field("still_running", &self.still_running)
            .field("stats", &self.stats)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// One worker thread's view of the pool.
struct Worker<J, F> {
    index: usize,
    rx: Receiver<Envelope<J>>,
    stop: Receiver<Never>,
    shared: Arc<Shared>,
    returned: Arc<Mutex<Vec<J>>>,
    handler: Arc<F>,
}

impl<J, F, E> Worker<J, F>
where
    F: Fn(J) -> Result<(), E>,
    E: fmt::Display,
{
    fn run(self) {
        let slot = &self.shared.workers[self.index];
        let mut stopping = false;
        loop {
            let env = match self.rx.try_recv() {
                Ok(env) => env,
                Err(TryRecvError::Disconnected) => break,
                // `stop` is only disconnected once intake is closed, so an
                // empty queue now stays empty.
                Err(TryRecvError::Empty) if stopping => break,
                Err(TryRecvError::Empty) => {
                    crossbeam_channel::select! {
                        recv(self.rx) -> msg => match msg {
                            Ok(env) => env,
                            Err(_) => break,
                        },
                        recv(self.stop) -> _ => {
                            stopping = true;
                            continue;
                        }
                    }
                }
            };
            if slot
                .state
                .compare_exchange(
                    state::IDLE,
                    state::RUNNING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                self.returned.lock().push(env.job);
                break;
            }
            // The queue was at least this deep just before this job left it.
            let depth = self.rx.len() + 1;
            if depth > slot.high_water.load(Ordering::Relaxed) {
                slot.high_water.store(depth, Ordering::Relaxed);
            }
            self.run_job(slot, env, depth);
            if slot
                .state
                .compare_exchange(
                    state::RUNNING,
                    state::IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                break;
            }
        }
        slot.state.store(state::EXITED, Ordering::Release);
    }

    #[inline]
    fn run_job(&self, slot: &WorkerSlot, env: Envelope<J>, depth: usize) {
        let started = Instant::now();
        slot.queue_wait
            .record_owned(started.saturating_duration_since(env.enqueued));
        let shared = &self.shared;
        shared
            .monitor
            .tick(&shared.name, started, || shared.load(depth - 1));
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.handler)(env.job)));
        slot.run_time.record_owned(started.elapsed());
        match outcome {
            Ok(Ok(())) => bump_owned(&slot.succeeded, 1),
            Ok(Err(e)) => {
                bump_owned(&slot.failed, 1);
                log::warn!(target: "hookpool", "{}: job failed: {e}", self.shared.name);
            }
            Err(payload) => {
                bump_owned(&slot.panicked, 1);
                self.report_panic(payload);
            }
        }
    }

    #[cold]
    fn report_panic(&self, payload: Box<dyn Any + Send>) {
        let message = panic_message(&*payload);
        let thread_name = format!("{}-{}", self.shared.name, self.index);
        log::error!(target: "hookpool", "{thread_name}: job panicked: {message}");
        if let Some(handler) = &self.shared.panic_handler {
            let event = PanicEvent {
                worker: self.index,
                thread_name: &thread_name,
                message,
                payload: &*payload,
            };
            if catch_unwind(AssertUnwindSafe(|| handler(&event))).is_err() {
                log::error!(target: "hookpool", "{thread_name}: panic handler panicked");
            }
        }
    }
}

/// The text of a panic payload, for logs.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
