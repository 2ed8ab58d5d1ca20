//! The [`Dispatcher`]: a [`Pool`] of delivery workers, a delay queue for
//! retries, per-endpoint circuit breakers and a dead-letter sink.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::breaker::{BreakerConfig, BreakerState, Breakers};
use crate::clock::{Clock, SystemClock};
use crate::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink, MemoryDeadLetters};
use crate::error::{BuildError, SubmitError};
use crate::pool::{Pool, PoolBuilder, Submitter};
use crate::retry::RetryPolicy;
use crate::schedule::DelayQueue;
use crate::stats::Histogram;
use crate::stats::Stats;
use crate::webhook::Webhook;
use crate::webhook::deliver::{Counters, Delivery, Engine, GuardedResolver};
use crate::webhook::events::{BreakerChange, Delivered, Hooks};
use crate::webhook::send::{DeliveryError, HttpSender, SendConfig};
use crate::webhook::sign::{SecretError, SigningSecret};

/// Configures and starts a [`Dispatcher`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookpool::{BreakerConfig, Dispatcher, MemoryDeadLetters, RetryPolicy};
///
/// let hooks = Dispatcher::builder()
///     .workers(8)
///     .queue_capacity(10_000)
///     .retry(RetryPolicy::exponential(Duration::from_millis(500)).max_attempts(4))
///     .breaker(BreakerConfig::default())
///     .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?
///     .dead_letters(MemoryDeadLetters::new())
///     .build()?;
/// assert_eq!(hooks.stats().pool.workers, 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct DispatcherBuilder {
    pool: PoolBuilder,
    retry: RetryPolicy,
    breaker: BreakerConfig,
    secrets: Vec<SigningSecret>,
    sink: Option<Arc<dyn DeadLetterSink>>,
    connect_timeout: Duration,
    timeout: Duration,
    max_response_body: u64,
    deny_private_networks: bool,
    drop_timeout: Duration,
    warn_interval: Duration,
    clock: Arc<dyn Clock>,
    hooks: Hooks,
}

impl Default for DispatcherBuilder {
    fn default() -> Self {
        DispatcherBuilder {
            // Delivery waits on the network, not the CPU, so more threads than cores.
            pool: PoolBuilder::new()
                .workers(8)
                .queue_capacity(1024)
                .name("hookpool"),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            secrets: Vec::new(),
            sink: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_response_body: 64 * 1024,
            deny_private_networks: false,
            drop_timeout: Duration::from_secs(30),
            warn_interval: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            hooks: Hooks::default(),
        }
    }
}

impl fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("pool", &self.pool)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker)
            .field("secrets", &self.secrets.len())
            .field("dead_letters", &self.sink.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_response_body", &self.max_response_body)
            .field("deny_private_networks", &self.deny_private_networks)
            .field("drop_timeout", &self.drop_timeout)
            .field("warn_interval", &self.warn_interval)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl DispatcherBuilder {
    /// Delivery worker threads. Defaults to 8.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().workers(2).build()?;
    /// assert_eq!(hooks.stats().pool.workers, 2);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.pool = self.pool.workers(n);
        self
    }

    /// Webhooks that can wait for a worker. Defaults to 1024.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().queue_capacity(10).build()?;
    /// assert_eq!(hooks.stats().pool.queue_capacity, 10);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.pool = self.pool.queue_capacity(n);
        self
    }

    /// Name for threads, logs and metrics. Defaults to `"hookpool"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().name("billing-hooks").build()?;
    /// assert_eq!(hooks.name(), "billing-hooks");
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.pool = self.pool.name(name);
        self
    }

    /// The retry policy. Defaults to [`RetryPolicy::default`]: exponential
    /// from 500 ms with full jitter, 5 attempts, 60 s cap.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// // The seeds' schedule: first attempt, then 500 ms, 1 s, 2 s.
    /// let policy = hookpool::RetryPolicy::exponential(Duration::from_millis(500)).jitter(false).max_attempts(4);
    /// let hooks = hookpool::Dispatcher::builder().retry(policy).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The circuit breaker settings, applied to each endpoint (scheme, host,
    /// port) separately. Defaults to [`BreakerConfig::default`]: open after
    /// 5 consecutive retryable failures, probe after 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().breaker(hookpool::BreakerConfig::disabled()).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Adds a Standard Webhooks signing secret (`whsec_...`). Call it again
    /// to sign with several secrets during a rotation; each request then
    /// carries one signature per secret. Defaults to none (unsigned).
    ///
    /// # Errors
    ///
    /// [`SecretError`] if the secret is empty or not base64. The message
    /// never contains the secret.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = hookpool::Dispatcher::builder()
    ///     .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?
    ///     .signing_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")?;
    /// assert!(hookpool::Dispatcher::builder().signing_secret("whsec_!!!").is_err());
    /// # Ok::<(), hookpool::SecretError>(())
    /// ```
    pub fn signing_secret(mut self, secret: &str) -> Result<Self, SecretError> {
        self.secrets.push(SigningSecret::new(secret)?);
        Ok(self)
    }

    /// Where dead letters go. Defaults to none: they are kept in memory and
    /// handed back in the [`DispatchReport`].
    ///
    /// # Examples
    ///
    /// ```
    /// let letters = hookpool::MemoryDeadLetters::new();
    /// let hooks = hookpool::Dispatcher::builder().dead_letters(letters.clone()).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn dead_letters(mut self, sink: impl DeadLetterSink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Connect timeout (TCP and TLS). Defaults to 5 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().connect_timeout(std::time::Duration::from_secs(2)).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout for a whole attempt, from resolving the host to reading the
    /// response. Defaults to 15 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How much of a response body is read before the connection is
    /// dropped. Defaults to 64 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().max_response_body(4096).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn max_response_body(mut self, bytes: u64) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// Refuses to connect to loopback, private, link-local (cloud metadata
    /// included), CGNAT, unique-local, multicast and unspecified addresses.
    /// The host is resolved, checked, and the connection goes to the checked
    /// address only. A refusal is a permanent failure, dead-lettered with
    /// reason `blocked`. With the guard on, proxies from the environment
    /// (`HTTP_PROXY`, `ALL_PROXY`) are not used: a proxy would resolve the
    /// host out of the guard's sight. Defaults to `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().deny_private_networks(true).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn deny_private_networks(mut self, deny: bool) -> Self {
        self.deny_private_networks = deny;
        self
    }

    /// How long dropping a [`Dispatcher`] without calling `shutdown` waits
    /// before dead-lettering what is left. Defaults to 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().drop_timeout(std::time::Duration::from_secs(5)).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// The least time between two saturation warnings of the same kind:
    /// queue at 80% of capacity, every worker busy while webhooks wait, and
    /// (per endpoint) a circuit breaker opening. Defaults to 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().warn_interval(std::time::Duration::from_secs(300)).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn warn_interval(mut self, interval: Duration) -> Self {
        self.warn_interval = interval;
        self.pool = self.pool.warn_interval(interval);
        self
    }

    /// Called after each delivery, on the worker thread, outside every lock.
    /// A panic in it is caught, logged and counted in
    /// [`DispatchStats::hook_panics`]; the delivery still counts. Defaults to
    /// none.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// let delivered = Arc::new(AtomicU64::new(0));
    /// let count = Arc::clone(&delivered);
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .on_delivered(move |_| { count.fetch_add(1, Ordering::Relaxed); })
    ///     .build()?;
    /// assert_eq!(delivered.load(Ordering::Relaxed), 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn on_delivered<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&Delivered<'a>) + Send + Sync + 'static,
    {
        self.hooks.delivered = Some(Arc::new(hook));
        self
    }

    /// Called after each dead letter is stored, outside every lock. A panic
    /// in it is contained as for [`on_delivered`](Self::on_delivered).
    /// Defaults to none.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .on_dead_letter(|letter| eprintln!("gave up on {} ({})", letter.id, letter.reason))
    ///     .build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn on_dead_letter<F>(mut self, hook: F) -> Self
    where
        F: Fn(&DeadLetter) + Send + Sync + 'static,
    {
        self.hooks.dead_letter = Some(Arc::new(hook));
        self
    }

    /// Called when an endpoint's circuit breaker changes state, after the
    /// breaker's lock is released. A panic in it is contained as for
    /// [`on_delivered`](Self::on_delivered). Defaults to none.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .on_breaker_change(|c| eprintln!("{}: {} -> {}", c.endpoint, c.from, c.to))
    ///     .build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn on_breaker_change<F>(mut self, hook: F) -> Self
    where
        F: for<'a> Fn(&BreakerChange<'a>) + Send + Sync + 'static,
    {
        self.hooks.breaker = Some(Arc::new(hook));
        self
    }

    /// The source of time for retries, breakers and timestamps. Defaults to
    /// [`SystemClock`]. Tests can pass a [`ManualClock`](crate::ManualClock).
    ///
    /// # Examples
    ///
    /// ```
    /// let clock = hookpool::ManualClock::new();
    /// let hooks = hookpool::Dispatcher::builder().clock(clock.clone()).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Starts the workers and the retry thread.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for zero workers, zero capacity, a zero timeout, or a
    /// thread that could not be started.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = hookpool::Dispatcher::builder().timeout(std::time::Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.to_string(), "timeout must be greater than zero");
    /// ```
    pub fn build(self) -> Result<Dispatcher, BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::Invalid(
                "timeout must be greater than zero".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(BuildError::Invalid(
                "connect timeout must be greater than zero".into(),
            ));
        }
        let name = self.pool.name_ref().to_owned();
        let sender = HttpSender::new(SendConfig {
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            max_response_body: self.max_response_body,
            secrets: self.secrets,
            resolver: self.deny_private_networks.then(GuardedResolver::default),
            workers: self.pool.workers_ref(),
        });

        // The retry thread needs the pool's handle, and the pool's workers
        // need the retry thread: the handle is filled in once the pool exists.
        let resubmit: Arc<OnceLock<Submitter<Delivery>>> = Arc::new(OnceLock::new());
        let slot = Arc::clone(&resubmit);
        let delay = DelayQueue::start(
            format!("{name}-retry"),
            Arc::clone(&self.clock),
            move |d: Delivery| match slot.get() {
                Some(submitter) => submitter.try_submit(d).map_err(SubmitError::into_inner),
                None => Err(d),
            },
        )
        .map_err(BuildError::Spawn)?;

        let engine = Arc::new(Engine {
            name,
            sender,
            retry: self.retry,
            breakers: Breakers::new(self.breaker),
            epoch: self.clock.now(),
            clock: self.clock,
            hooks: self.hooks,
            breaker_warnings: Mutex::new(HashMap::new()),
            warn_interval: self.warn_interval,
            sink: self.sink,
            unsaved: MemoryDeadLetters::new(),
            gone: Mutex::new(HashSet::new()),
            counters: Counters::default(),
            delay,
        });
        let worker_engine = Arc::clone(&engine);
        let pool = self.pool.build(move |d: Delivery| {
            worker_engine.run(d);
            Ok::<(), std::convert::Infallible>(())
        })?;
        let _ = resubmit.set(pool.internal_submitter());
        Ok(Dispatcher {
            handle: DispatchHandle {
                submitter: pool.submitter(),
                engine,
            },
            pool: Some(pool),
            drop_timeout: self.drop_timeout,
            request_timeout: self.timeout,
        })
    }
}

/// Delivers webhooks in the background: signed POSTs with retries,
/// per-endpoint circuit breakers and dead letters.
///
/// [`try_send`](Dispatcher::try_send) never blocks: a full queue hands the
/// webhook back. Every accepted webhook ends exactly once, delivered or
/// dead-lettered.
///
/// # Shutdown and `Drop`
///
/// [`shutdown`](Dispatcher::shutdown) stops intake and waits until every
/// accepted webhook is delivered or dead-lettered, retries included.
/// [`shutdown_timeout`](Dispatcher::shutdown_timeout) stops waiting at the
/// deadline and dead-letters what is left with reason `shutdown`. Dropping a
/// dispatcher does `shutdown_timeout` with the builder's
/// [`drop_timeout`](DispatcherBuilder::drop_timeout); dead letters that have
/// no sink are then logged at error level, since nobody can receive them.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use hookpool::{Dispatcher, JsonlDeadLetters, RetryPolicy, Webhook};
///
/// let hooks = Dispatcher::builder()
///     .retry(RetryPolicy::exponential(Duration::from_millis(500)).max_attempts(3))
///     .signing_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?
///     .dead_letters(JsonlDeadLetters::open("dead-letters.jsonl")?)
///     .build()?;
/// let payload = serde_json::json!({"event": "entry_created", "entry_id": 42});
/// if let Err(refused) = hooks.try_send(Webhook::new("https://example.com/hooks", &payload)?) {
///     eprintln!("not queued: {refused}"); // answer 429, or dead-letter it
/// }
/// let report = hooks.shutdown_timeout(Duration::from_secs(30));
/// println!("delivered {}, dead-lettered {}", report.stats.delivered, report.stats.dead_lettered);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher {
    handle: DispatchHandle,
    pool: Option<Pool<Delivery>>,
    drop_timeout: Duration,
    request_timeout: Duration,
}

impl Dispatcher {
    /// Starts configuring a dispatcher.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert_eq!(hooks.stats().pool.workers, 8);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
    }

    /// Queues a webhook without blocking. See [`DispatchHandle::try_send`].
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the webhook.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// hooks.try_send(hookpool::Webhook::new("http://127.0.0.1:9/", &0)?)?;
    /// # let _ = hooks.shutdown_timeout(std::time::Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(&self, webhook: Webhook) -> Result<(), SubmitError<Webhook>> {
        self.handle.try_send(webhook)
    }

    /// Queues a webhook, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] or [`SubmitError::Closed`], with the webhook.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// hooks.send_timeout(hookpool::Webhook::new("http://127.0.0.1:9/", &0)?, Duration::from_secs(1))?;
    /// # let _ = hooks.shutdown_timeout(Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(
        &self,
        webhook: Webhook,
        timeout: Duration,
    ) -> Result<(), SubmitError<Webhook>> {
        self.handle.send_timeout(webhook, timeout)
    }

    /// A cheap, cloneable handle for queueing webhooks from other threads,
    /// such as HTTP request handlers.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let handle = hooks.handle();
    /// std::thread::spawn(move || handle.try_send(hookpool::Webhook::new("http://127.0.0.1:9/", &0).unwrap()).unwrap())
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(hooks.stats().accepted, 1);
    /// # let _ = hooks.shutdown_timeout(std::time::Duration::ZERO);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn handle(&self) -> DispatchHandle {
        self.handle.clone()
    }

    /// Queues dead letters again, keeping their ids. Each waits at most
    /// `wait` for room in the queue.
    ///
    /// Returns the letters that could not be queued (queue full, or shutting
    /// down), unchanged, so nothing is lost. A letter whose stored URL or id
    /// is invalid is returned too.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use hookpool::{DeadLetter, DeadLetterReason, Dispatcher, Webhook};
    ///
    /// let hooks = Dispatcher::builder().build()?;
    /// let hook = Webhook::new("http://127.0.0.1:9/", &0)?;
    /// let letter = DeadLetter::from_webhook(&hook, DeadLetterReason::QueueFull, "queue is full");
    /// let refused = hooks.replay(vec![letter], Duration::from_secs(1));
    /// assert!(refused.is_empty());
    /// assert_eq!(hooks.stats().accepted, 1);
    /// # let _ = hooks.shutdown_timeout(Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay(
        &self,
        letters: impl IntoIterator<Item = DeadLetter>,
        wait: Duration,
    ) -> Vec<DeadLetter> {
        let mut refused = Vec::new();
        for letter in letters {
            let webhook = match letter.clone().into_webhook() {
                Ok(webhook) => webhook,
                Err(e) => {
                    log::warn!(target: "hookpool", "cannot replay dead letter {}: {e}", letter.id);
                    refused.push(letter);
                    continue;
                }
            };
            if self.send_timeout(webhook, wait).is_err() {
                refused.push(letter);
            }
        }
        refused
    }

    /// The metrics in Prometheus text format 0.0.4, labelled with this
    /// dispatcher's name. Serve them with
    /// [`prometheus::CONTENT_TYPE`](crate::prometheus::CONTENT_TYPE).
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().name("hooks").build()?;
    /// let text = hooks.render_prometheus();
    /// assert!(text.contains("# TYPE hookpool_webhooks_delivered_total counter"));
    /// assert!(text.contains("hookpool_queue_capacity{pool=\"hooks\"} 1024"));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn render_prometheus(&self) -> String {
        crate::prometheus::Exposition::new()
            .dispatcher(self.name(), &self.stats())
            .render()
    }

    /// A snapshot of the counters, gauges and breaker states.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let stats = hooks.stats();
    /// assert_eq!((stats.accepted, stats.delivered, stats.dead_lettered), (0, 0, 0));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stats(&self) -> DispatchStats {
        self.handle.stats()
    }

    /// The name given to the builder.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Dispatcher::builder().build()?.name(), "hookpool");
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.handle.engine.name
    }

    /// Stops intake and waits until every accepted webhook is delivered or
    /// dead-lettered, retries included, then joins every thread.
    ///
    /// This can take as long as the retry policy allows. Use
    /// [`shutdown_timeout`](Dispatcher::shutdown_timeout) to bound it.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let report = hooks.shutdown();
    /// assert_eq!(report.stats.accepted, 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn shutdown(mut self) -> DispatchReport {
        self.stop(None)
    }

    /// Like [`shutdown`](Dispatcher::shutdown), but at the deadline every
    /// webhook not yet delivered, whether queued or waiting for a retry, is
    /// dead-lettered with reason `shutdown`. Requests in flight at the
    /// deadline are counted in [`DispatchReport::still_running`]; each ends
    /// within the request timeout, delivered or dead-lettered.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use hookpool::{DeadLetterReason, Dispatcher, Webhook};
    ///
    /// // A retry policy that waits long before the second attempt.
    /// let hooks = Dispatcher::builder()
    ///     .retry(hookpool::RetryPolicy::exponential(Duration::from_secs(3600)))
    ///     .connect_timeout(Duration::from_millis(200))
    ///     .build()?;
    /// // Port 9 (discard) on loopback is normally closed: the attempt fails fast.
    /// hooks.try_send(Webhook::new("http://127.0.0.1:9/", &0)?)?;
    /// let report = hooks.shutdown_timeout(Duration::from_millis(500));
    /// assert_eq!(report.stats.accepted, report.stats.delivered + report.stats.dead_lettered);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> DispatchReport {
        let deadline = Instant::now().checked_add(timeout);
        self.stop(Some(deadline.unwrap_or_else(|| {
            Instant::now() + Duration::from_secs(3_153_600_000)
        })))
    }

    fn stop(&mut self, deadline: Option<Instant>) -> DispatchReport {
        let started = Instant::now();
        let Some(pool) = self.pool.take() else {
            return DispatchReport::default();
        };
        let engine = Arc::clone(&self.handle.engine);
        pool.close_intake();
        wait_for_outstanding(&engine.counters, deadline);

        // Nothing may be re-queued once the workers start to stop. The
        // waiting deliveries are dead-lettered only after the workers stop:
        // writing letters takes time, and idle workers must not start new
        // requests after the deadline meanwhile.
        let waiting = engine.delay.close();
        let mut pool_report = match deadline {
            None => pool.shutdown(),
            Some(deadline) => {
                pool.shutdown_timeout(deadline.saturating_duration_since(Instant::now()))
            }
        };
        let unstarted = std::mem::take(&mut pool_report.unstarted);
        for d in waiting.into_iter().chain(unstarted) {
            let error = shutdown_error(&d);
            engine.dead_letter(d, DeadLetterReason::Shutdown, &error);
        }
        let still_running = pool_report.still_running;
        let mut report = DispatchReport {
            dead_letters: engine.unsaved.take(),
            still_running,
            stats: self.handle.stats_with(pool_report.stats),
            elapsed: started.elapsed(),
            pool: Some(pool_report),
            engine: Some(engine),
        };
        report.stats.pool.queued = 0;
        log::info!(
            target: "hookpool",
            "{}: shut down in {:?}: {} accepted, {} delivered, {} dead-lettered, {} still running",
            self.name(),
            report.elapsed,
            report.stats.accepted,
            report.stats.delivered,
            report.stats.dead_lettered,
            report.still_running
        );
        report
    }
}

/// The error to record for a delivery stopped by shutdown: its last error,
/// if it had one.
fn shutdown_error(d: &Delivery) -> DeliveryError {
    d.last_error
        .clone()
        .unwrap_or_else(|| DeliveryError::Transport("not delivered before shutdown".into()))
}

/// Waits until every accepted webhook is final, or the deadline passes.
fn wait_for_outstanding(counters: &Counters, deadline: Option<Instant>) {
    let mut pause = Duration::from_micros(100);
    while counters.outstanding() > 0 {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return;
        }
        let nap = deadline.map_or(pause, |d| pause.min(d - now));
        std::thread::sleep(nap);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

impl Drop for Dispatcher {
    /// Shuts down with the builder's `drop_timeout`. Dead letters with no
    /// sink are logged at error level (ids and redacted URLs only).
    fn drop(&mut self) {
        if self.pool.is_none() {
            return;
        }
        let deadline = crate::clock::deadline_after(Instant::now(), self.drop_timeout);
        let mut report = self.stop(Some(deadline));
        // Requests in flight end within their timeout; wait for them rather
        // than detach their threads.
        report.wait_running(self.request_timeout + Duration::from_secs(1));
        for letter in &report.dead_letters {
            log::error!(
                target: "hookpool",
                "{}: dispatcher dropped with an undelivered webhook {} to {} ({}); no dead-letter sink to keep it",
                self.name(),
                letter.id,
                crate::webhook::redact_url(&letter.url),
                letter.reason
            );
        }
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("name", &self.name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A cheap, cloneable handle to a [`Dispatcher`], for other threads.
///
/// Like a pool [`Submitter`](crate::Submitter), a live handle does not keep
/// the dispatcher open: once shutdown begins it gets
/// [`SubmitError::Closed`] with the webhook.
///
/// # Examples
///
/// ```no_run
/// let hooks = hookpool::Dispatcher::builder().build()?;
/// let handle = hooks.handle();
/// let _ = hooks.shutdown();
/// let back = handle.try_send(hookpool::Webhook::new("http://127.0.0.1:9/", &0)?).unwrap_err();
/// assert!(back.is_closed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DispatchHandle {
    submitter: Submitter<Delivery>,
    engine: Arc<Engine>,
}

impl DispatchHandle {
    /// Queues a webhook without blocking.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the webhook when the queue is full (answer
    /// 429, or dead-letter it with reason `queue_full`);
    /// [`SubmitError::Closed`] with the webhook once shutdown has begun.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let handle = hooks.handle();
    /// assert!(handle.try_send(hookpool::Webhook::new("http://127.0.0.1:9/", &0)?).is_ok());
    /// # let _ = hooks.shutdown_timeout(std::time::Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send(&self, webhook: Webhook) -> Result<(), SubmitError<Webhook>> {
        let delivery = Delivery::new(webhook, self.engine.clock.now());
        self.counted(|| self.submitter.try_submit(delivery))
    }

    /// Queues a webhook, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`try_send`](DispatchHandle::try_send).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let handle = hooks.handle();
    /// assert!(handle.send_timeout(hookpool::Webhook::new("http://127.0.0.1:9/", &0)?, std::time::Duration::from_millis(10)).is_ok());
    /// # let _ = hooks.shutdown_timeout(std::time::Duration::ZERO);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(
        &self,
        webhook: Webhook,
        timeout: Duration,
    ) -> Result<(), SubmitError<Webhook>> {
        let delivery = Delivery::new(webhook, self.engine.clock.now());
        self.counted(|| self.submitter.submit_timeout(delivery, timeout))
    }

    /// Runs a send between the `submitting` and `accepted` counts (see
    /// `Counters::outstanding` for why in this order).
    fn counted(
        &self,
        send: impl FnOnce() -> Result<(), SubmitError<Delivery>>,
    ) -> Result<(), SubmitError<Webhook>> {
        let counters = &self.engine.counters;
        counters.submitting.fetch_add(1, Ordering::SeqCst);
        let sent = send();
        if sent.is_ok() {
            counters.accepted.fetch_add(1, Ordering::SeqCst);
        }
        counters.submitting.fetch_sub(1, Ordering::SeqCst);
        sent.map_err(|e| e.map(|d| d.webhook))
    }

    /// A snapshot of the dispatcher's counters. Same as
    /// [`Dispatcher::stats`].
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert_eq!(hooks.handle().stats().waiting_retries, 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stats(&self) -> DispatchStats {
        self.stats_with(self.submitter.stats())
    }

    fn stats_with(&self, pool: Stats) -> DispatchStats {
        snapshot(&self.engine, pool)
    }
}

/// The dispatcher's counters around a pool snapshot.
fn snapshot(engine: &Engine, pool: Stats) -> DispatchStats {
    let c = &engine.counters;
    // Finals first, then accepted, so `accepted >= delivered + dead_lettered`.
    let delivered = c.delivered.load(Ordering::SeqCst);
    let dead_lettered = c.dead_lettered.load(Ordering::SeqCst);
    let accepted = c.accepted.load(Ordering::SeqCst);
    let mut delivery_latency = Histogram::default();
    c.latency.add_to(&mut delivery_latency);
    DispatchStats {
        pool,
        accepted,
        delivered,
        dead_lettered,
        dead_lettered_by_reason: c
            .by_reason
            .iter()
            .zip(crate::dead_letter::DeadLetterReason::ALL)
            .map(|(n, reason)| (reason, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        hook_panics: c.hook_panics.load(Ordering::Relaxed),
        delivery_latency,
        retried: c.retried.load(Ordering::Relaxed),
        deferred_by_breaker: c.deferred_by_breaker.load(Ordering::Relaxed),
        waiting_retries: engine.delay.len(),
        gone_endpoints: engine.gone.lock().len(),
        endpoints: engine
            .breakers
            .snapshot()
            .into_iter()
            .map(|(endpoint, breaker)| EndpointStats {
                endpoint: endpoint.to_string(),
                breaker,
            })
            .collect(),
    }
}

impl fmt::Debug for DispatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchHandle")
            .field("name", &self.engine.name)
            .finish_non_exhaustive()
    }
}

/// A snapshot of a dispatcher's counters, gauges and breaker states.
///
/// `accepted = delivered + dead_lettered + (webhooks still on their way)`.
///
/// # Examples
///
/// ```
/// let hooks = hookpool::Dispatcher::builder().build()?;
/// let stats = hooks.stats();
/// assert_eq!(stats.in_progress(), 0);
/// assert!(stats.endpoints.is_empty());
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DispatchStats {
    /// The worker pool's own counters (its jobs include retries).
    pub pool: Stats,
    /// Webhooks accepted by `try_send`, `send_timeout` and `replay`.
    pub accepted: u64,
    /// Webhooks delivered (a 2xx answer).
    pub delivered: u64,
    /// Webhooks given up on and dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters by reason (reasons with none are left out).
    pub dead_lettered_by_reason: BTreeMap<crate::dead_letter::DeadLetterReason, u64>,
    /// Panics caught in event hooks.
    pub hook_panics: u64,
    /// Time from acceptance to delivery, retries included, for delivered
    /// webhooks.
    pub delivery_latency: Histogram,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Times a webhook was held back because its endpoint's breaker was open.
    pub deferred_by_breaker: u64,
    /// Webhooks waiting in the delay queue for a retry or a breaker.
    pub waiting_retries: usize,
    /// URLs that answered 410 Gone; webhooks to them are dead-lettered.
    pub gone_endpoints: usize,
    /// Each endpoint seen so far and its breaker's state.
    pub endpoints: Vec<EndpointStats>,
}

impl DispatchStats {
    /// Webhooks accepted but not yet delivered or dead-lettered.
    ///
    /// # Examples
    ///
    /// See [`DispatchStats`].
    ///
    /// ```
    /// let stats = hookpool::Dispatcher::builder().build()?.stats();
    /// assert_eq!(stats.in_progress(), stats.accepted - stats.delivered - stats.dead_lettered);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn in_progress(&self) -> u64 {
        self.accepted
            .saturating_sub(self.delivered + self.dead_lettered)
    }

    /// The breaker state of one endpoint (`"https://host:443"`), if seen.
    ///
    /// # Examples
    ///
    /// ```
    /// let stats = hookpool::Dispatcher::builder().build()?.stats();
    /// assert_eq!(stats.breaker("http://127.0.0.1:9"), None);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn breaker(&self, endpoint: &str) -> Option<BreakerState> {
        self.endpoints
            .iter()
            .find(|e| e.endpoint == endpoint)
            .map(|e| e.breaker)
    }
}

/// One endpoint's breaker state, in [`DispatchStats::endpoints`].
///
/// # Examples
///
/// ```
/// let stats = hookpool::Dispatcher::builder().build()?.stats();
/// for e in &stats.endpoints {
///     println!("{} is {}", e.endpoint, e.breaker);
/// }
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EndpointStats {
    /// `scheme://host:port`.
    pub endpoint: String,
    /// The breaker's state.
    pub breaker: BreakerState,
}

/// What a dispatcher's shutdown did.
///
/// # Examples
///
/// ```
/// let hooks = hookpool::Dispatcher::builder().build()?;
/// let report = hooks.shutdown();
/// assert!(report.dead_letters.is_empty());
/// assert_eq!(report.still_running, 0);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[must_use = "the report may hold dead letters that have no sink"]
#[non_exhaustive]
#[derive(Default)]
pub struct DispatchReport {
    /// Dead letters that no sink holds: all of them when no sink was
    /// configured, or those the sink failed to store.
    pub dead_letters: Vec<DeadLetter>,
    /// Requests still in flight at the deadline. Each ends within the
    /// request timeout; [`wait_running`](DispatchReport::wait_running)
    /// waits for them.
    pub still_running: usize,
    /// The counters when shutdown returned.
    pub stats: DispatchStats,
    /// How long shutdown took.
    pub elapsed: Duration,
    pool: Option<crate::pool::ShutdownReport<Delivery>>,
    engine: Option<Arc<Engine>>,
}

impl DispatchReport {
    /// Waits up to `timeout` for the requests still in flight at the
    /// deadline, then refreshes `stats` and moves any new unsaved dead
    /// letters into `dead_letters`. Returns how many are still running.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// let mut report = hooks.shutdown_timeout(std::time::Duration::ZERO);
    /// assert_eq!(report.wait_running(std::time::Duration::from_secs(1)), 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn wait_running(&mut self, timeout: Duration) -> usize {
        if let Some(pool) = &mut self.pool {
            self.still_running = pool.wait_running(timeout);
            if let Some(engine) = &self.engine {
                self.dead_letters.extend(engine.unsaved.take());
                let mut pool_stats = pool.stats;
                pool_stats.queued = 0;
                self.stats = snapshot(engine, pool_stats);
            }
        }
        self.still_running
    }
}

impl fmt::Debug for DispatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchReport")
            .field("dead_letters", &self.dead_letters.len())
            .field("still_running", &self.still_running)
            .field("stats", &self.stats)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let b = DispatcherBuilder::default();
        assert_eq!(b.connect_timeout, Duration::from_secs(5));
        assert_eq!(b.timeout, Duration::from_secs(15));
        assert_eq!(b.max_response_body, 64 * 1024);
        assert_eq!(b.pool.workers_ref(), 8);
        assert!(!b.deny_private_networks);
        assert!(b.secrets.is_empty() && b.sink.is_none());
        assert_eq!(b.drop_timeout, Duration::from_secs(30));
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let err = Dispatcher::builder()
            .connect_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(err, BuildError::Invalid(ref m) if m.contains("connect timeout")));
        assert!(matches!(
            Dispatcher::builder().workers(0).build(),
            Err(BuildError::ZeroWorkers)
        ));
        assert!(matches!(
            Dispatcher::builder().queue_capacity(0).build(),
            Err(BuildError::ZeroCapacity)
        ));
    }
}
