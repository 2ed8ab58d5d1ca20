//! [`PoolBuilder`]: configuration, and starting the workers.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::thread;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use super::room::{self, Room};
use super::worker::Worker;
use super::{Envelope, GateRegistry, Inner, MAX_QUEUE_CAPACITY, Never, Pool, Shared, Submitter};
use crate::error::BuildError;
use crate::saturation::Monitor;
use crate::stats::{DEFAULT_SAMPLE_EVERY, WorkerSlot};

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
    pub(super) worker: usize,
    pub(super) thread_name: &'a str,
    pub(super) message: &'a str,
    pub(super) payload: &'a (dyn Any + Send),
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

pub(super) type PanicHandler = Arc<dyn Fn(&PanicEvent<'_>) + Send + Sync>;

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
    pub(super) workers: Option<usize>,
    pub(super) queue_capacity: usize,
    pub(super) name: String,
    pub(super) stack_size: Option<usize>,
    pub(super) panic_handler: Option<PanicHandler>,
    pub(super) warn_interval: Duration,
    pub(super) sample_every: u32,
    /// `room::BATCH_WAIT`; tests stretch it.
    pub(super) batch_wait: Duration,
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
            sample_every: DEFAULT_SAMPLE_EVERY,
            batch_wait: room::BATCH_WAIT,
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
            .field("queue_wait_sampling", &self.sample_every)
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
    pub(crate) fn queue_capacity_ref(&self) -> usize {
        self.queue_capacity
    }

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

    /// How often the time a job waits in the queue is measured: the first
    /// submission through each handle, then one in `one_in`. `1` measures
    /// every job and `0` none. Defaults to 256.
    ///
    /// Measuring a job means one clock read in `try_submit`, which costs
    /// several times the channel send on most machines; at the default the
    /// cost is lost in the noise (docs/BENCHMARKS.md). The sample feeds
    /// [`Stats::queue_wait`](crate::Stats::queue_wait) and the
    /// `hookpool_job_queue_wait_seconds` histogram; run times are measured
    /// for every job regardless.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().queue_wait_sampling(1).build(|_: u8| Ok::<(), String>(()))?;
    /// for n in 0..10 {
    ///     pool.submit_timeout(n, std::time::Duration::from_secs(5)).unwrap();
    /// }
    /// assert_eq!(pool.shutdown().stats.queue_wait.count, 10);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn queue_wait_sampling(mut self, one_in: u32) -> Self {
        self.sample_every = one_in;
        self
    }

    /// Called on the worker thread after a job panics, once the panic has
    /// been logged. The job counts in `Stats::panicked` once the handler
    /// returns, so a job that the counters show has been fully reported.
    /// Defaults to none. A panic inside the handler
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
            sample_every: self.sample_every,
            high_water: AtomicUsize::new(0),
            room: Room::default(),
            low_water: room::low_water(self.queue_capacity),
            batch_wait: self.batch_wait,
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

        let submitter = Submitter::register(tx, Arc::clone(&shared));
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
