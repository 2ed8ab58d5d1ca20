//! [`DispatcherBuilder`]: configuration, and starting the dispatcher.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use super::dispatcher::Dispatcher;
use super::handle::DispatchHandle;
use crate::bounded::{MAX_GONE_URLS, PrunedMap, RecentSet};
use crate::breaker::{BreakerConfig, Breakers};
use crate::clock::{Clock, SystemClock};
use crate::dead_letter::{DeadLetter, DeadLetterSink, MemoryDeadLetters};
use crate::error::{BuildError, SubmitError};
use crate::pace::{Lanes, RateLimits};
use crate::pool::{PoolBuilder, Submitter};
use crate::retry::RetryPolicy;
use crate::schedule::DelayQueue;
use crate::store::{Journal, Recovered, Store};
use crate::webhook::deliver::Engine;
use crate::webhook::delivery::{Counters, Delivery};
use crate::webhook::events::{BreakerChange, Delivered, Hooks};
use crate::webhook::fetch::Fetcher;
use crate::webhook::resolve::GuardedResolver;
use crate::webhook::send::{HttpSender, SendConfig};
use crate::webhook::sign::{SecretError, SigningSecret};
use crate::webhook::tls::TlsConfig;

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
    pub(super) pool: PoolBuilder,
    pub(super) retry: RetryPolicy,
    pub(super) breaker: BreakerConfig,
    pub(super) secrets: Vec<SigningSecret>,
    pub(super) sink: Option<Arc<dyn DeadLetterSink>>,
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
    pub(super) max_response_body: u64,
    pub(super) deny_private_networks: bool,
    pub(super) max_in_flight_per_endpoint: Option<usize>,
    pub(super) rate_limit: Option<f64>,
    pub(super) endpoint_rate_limits: Vec<(String, f64)>,
    pub(super) drop_timeout: Duration,
    pub(super) warn_interval: Duration,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) hooks: Hooks,
    pub(super) tls: TlsConfig,
    pub(super) journal: Option<Journal>,
    #[cfg(feature = "redis")]
    pub(super) redis: Option<crate::RedisQueue>,
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
            max_in_flight_per_endpoint: None,
            rate_limit: None,
            endpoint_rate_limits: Vec::new(),
            drop_timeout: Duration::from_secs(30),
            warn_interval: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
            hooks: Hooks::default(),
            tls: TlsConfig::default(),
            journal: None,
            #[cfg(feature = "redis")]
            redis: None,
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
            .field(
                "max_in_flight_per_endpoint",
                &self.max_in_flight_per_endpoint,
            )
            .field("rate_limit", &self.rate_limit)
            .field("endpoint_rate_limits", &self.endpoint_rate_limits.len())
            .field("drop_timeout", &self.drop_timeout)
            .field("warn_interval", &self.warn_interval)
            .field("hooks", &self.hooks)
            .field("tls", &self.tls)
            .field("journal", &self.journal)
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
    /// handed back in the [`DispatchReport`](crate::DispatchReport).
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

    /// At most this many requests to one endpoint (scheme, host, port) at a
    /// time; its other webhooks wait, in order and holding no worker, until
    /// one of them finishes (`stats().parked` counts them).
    ///
    /// By default an endpoint may use every worker while it is the only one
    /// seen, and half the workers (at least one) once a second endpoint has
    /// been seen: an endpoint that accepts connections and never answers can
    /// then hold at most half the workers until its breaker opens, and the
    /// others keep delivering. `0` is refused by [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().workers(8).max_in_flight_per_endpoint(2).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn max_in_flight_per_endpoint(mut self, n: usize) -> Self {
        self.max_in_flight_per_endpoint = Some(n);
        self
    }

    /// At most `per_second` requests a second to each endpoint (scheme,
    /// host, port), as a token bucket that holds about 10 ms of requests,
    /// so sends are evenly spaced. Webhooks over the rate wait in order,
    /// holding no worker, like those over the in-flight limit. The adaptive
    /// pace (see "How hookpool treats push-back" in `docs/DELIVERY.md`)
    /// never exceeds it. [`endpoint_rate_limit`](Self::endpoint_rate_limit)
    /// overrides it for one endpoint. A rate that is not a positive finite
    /// number is refused by [`build`](Self::build). Defaults to none: an
    /// endpoint is paced only once it pushes back.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().rate_limit(50.0).build()?;
    /// assert!(hookpool::Dispatcher::builder().rate_limit(0.0).build().is_err());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn rate_limit(mut self, per_second: f64) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// At most `per_second` requests a second to the endpoint of `url`
    /// (its scheme, host and port; the path does not matter), overriding
    /// [`rate_limit`](Self::rate_limit) for it. A URL that does not parse,
    /// or a rate that is not a positive finite number, is refused by
    /// [`build`](Self::build). Defaults to none.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .endpoint_rate_limit("https://api.example.com/hooks", 10.0)
    ///     .build()?;
    /// let err = hookpool::Dispatcher::builder().endpoint_rate_limit("nope", 1.0).build().unwrap_err();
    /// assert!(err.to_string().contains("endpoint_rate_limit"));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn endpoint_rate_limit(mut self, url: &str, per_second: f64) -> Self {
        self.endpoint_rate_limits.push((url.to_owned(), per_second));
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

    /// How often the time a webhook waits in the queue is measured: the
    /// first through each handle, then one in `one_in` (`1`: every webhook,
    /// `0`: none). Defaults to 256. Same as
    /// [`PoolBuilder::queue_wait_sampling`](crate::PoolBuilder::queue_wait_sampling).
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().queue_wait_sampling(1).build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn queue_wait_sampling(mut self, one_in: u32) -> Self {
        self.pool = self.pool.queue_wait_sampling(one_in);
        self
    }

    /// Called after each delivery, on the worker thread, outside every lock.
    /// A panic in it is caught, logged and counted in
    /// [`DispatchStats::hook_panics`](crate::DispatchStats::hook_panics); the delivery still counts. Defaults to
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

    /// HTTPS settings: trust roots, extra CA certificates, and a client
    /// certificate for mutual TLS. Defaults to [`TlsConfig::default`]:
    /// Mozilla's bundled roots, no client certificate. Plain `http` URLs
    /// ignore it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use hookpool::{Dispatcher, TlsConfig, TlsRoots};
    ///
    /// let tls = TlsConfig::new()
    ///     .roots(TlsRoots::Platform)
    ///     .add_root_certificates_file("internal-ca.pem")?;
    /// let hooks = Dispatcher::builder().tls(tls).build()?;
    /// assert_eq!(hooks.stats().pool.workers, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = config;
        self
    }

    /// Keeps every accepted webhook in an on-disk journal until it is
    /// delivered or dead-lettered, so that a crash, `kill -9`, an OOM kill
    /// or a restart loses none of them. [`build`](Self::build) opens (or
    /// creates) the file and recovers what a previous process left
    /// unfinished: each is delivered again with the same webhook id and the
    /// attempts already spent, and a retry that was due later waits for its
    /// time. See [`Journal`](crate::Journal). Defaults to none: webhooks
    /// live in memory only.
    ///
    /// With a journal, [`send_durable`](crate::Dispatcher::send_durable)
    /// returns once the webhook is committed;
    /// [`try_send`](crate::Dispatcher::try_send) still never blocks, and
    /// returns before the commit (the window is
    /// [`StoreStats::commit_latency`](crate::StoreStats::commit_latency),
    /// milliseconds). A shutdown deadline keeps unfinished webhooks in the
    /// journal instead of dead-lettering them
    /// ([`DispatchReport::kept`](crate::DispatchReport::kept)).
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("hookpool-doc-builder-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .journal(hookpool::Journal::new(dir.join("hooks.db")))
    ///     .build()?;
    /// assert!(hooks.stats().store.is_some());
    /// let _ = hooks.shutdown();
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Puts the queue in Redis, shared by every process whose dispatcher
    /// names the same server and queue: `try_send` and `send_durable`
    /// enqueue there (`Ok` from `send_durable` means Redis has it), and
    /// each worker process claims webhooks from it into its own bounded
    /// queue. Retries, breaker deferrals and `Retry-After` pauses wait in
    /// Redis too, so another process takes them over if this one dies; a
    /// process silent past its ttl has its webhooks taken back. Breaker
    /// and pacing state stay per process. See
    /// [`RedisQueue`](crate::RedisQueue). Feature `redis`. Defaults to
    /// none.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .redis(hookpool::RedisQueue::new("redis://127.0.0.1:6379/", "hooks"))
    ///     .build()?;
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(mut self, queue: crate::RedisQueue) -> Self {
        self.redis = Some(queue);
        self
    }

    /// Starts the workers and the retry thread.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for zero workers, zero capacity, a zero timeout, a
    /// rate limit that is not a positive number or names an invalid URL, TLS
    /// settings that cannot be used ([`BuildError::Tls`]: the platform's
    /// trust store cannot be loaded), or a thread that could not be started.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = hookpool::Dispatcher::builder().timeout(std::time::Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.to_string(), "timeout must be greater than zero");
    /// ```
    // `mut` only serves the `redis` feature.
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    pub fn build(mut self) -> Result<Dispatcher, BuildError> {
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
        if self.max_in_flight_per_endpoint == Some(0) {
            return Err(BuildError::Invalid(
                "max_in_flight_per_endpoint must be at least 1".into(),
            ));
        }
        #[cfg(feature = "redis")]
        if let Some(queue) = &self.redis {
            if self.journal.is_some() {
                return Err(BuildError::Invalid(
                    "a dispatcher has a journal or a redis queue, not both".into(),
                ));
            }
            // A live worker is never robbed: its request ends well within
            // the time after which the others take its webhooks back.
            if !queue.is_producer_only() && self.timeout > queue.ttl / 2 {
                return Err(BuildError::Invalid(format!(
                    "the request timeout ({:?}) must be at most half the redis worker ttl ({:?}): lower the timeout or raise worker_ttl",
                    self.timeout, queue.ttl
                )));
            }
            // A producer delivers nothing: one idle worker is enough.
            if queue.is_producer_only() {
                self.pool = self.pool.workers(1);
            }
        }
        let tls = self.tls.client_config().map_err(BuildError::Tls)?;
        let rates = rate_limits(self.rate_limit, &self.endpoint_rate_limits)?;
        let name = self.pool.name_ref().to_owned();
        let lanes = Lanes::new(
            self.pool.workers_ref(),
            self.max_in_flight_per_endpoint,
            self.pool.queue_capacity_ref(),
            rates,
        );
        let sender = HttpSender::new(SendConfig {
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            max_response_body: self.max_response_body,
            secrets: self.secrets,
            resolver: self.deny_private_networks.then(GuardedResolver::default),
            workers: self.pool.workers_ref(),
            tls,
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

        // Opened last, once nothing else can fail: a journal found unfinished
        // is resumed only by a dispatcher that runs.
        let queue_capacity = self.pool.queue_capacity_ref();
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let (mut store, mut recovered, mut keep_letters) = match &self.journal {
            Some(journal) => {
                let (store, recovered) = journal
                    .open(&name, queue_capacity.saturating_mul(4).max(1024))
                    .map_err(BuildError::Store)?;
                let store: Arc<dyn Store> = store;
                let keep = journal.keeps_dead_letters() && self.sink.is_none();
                (Some(store), Some(recovered), keep)
            }
            None => (None, None, false),
        };
        #[cfg(feature = "redis")]
        let fetch = match &self.redis {
            Some(queue) => {
                let opened: Arc<dyn Store> = queue.open(&name).map_err(BuildError::Store)?;
                store = Some(opened);
                keep_letters = self.sink.is_none();
                !queue.is_producer_only()
            }
            None => false,
        };
        #[cfg(not(feature = "redis"))]
        let fetch = false;
        let counters = Counters::default();
        if let Some(recovered) = &recovered {
            counters
                .next_seq
                .store(recovered.next_key, std::sync::atomic::Ordering::Relaxed);
        }
        let engine = Arc::new(Engine {
            store,
            keep_letters,
            name,
            sender,
            retry: self.retry,
            breakers: Breakers::new(self.breaker),
            epoch: self.clock.now(),
            clock: self.clock,
            hooks: self.hooks,
            breaker_warnings: Mutex::new(PrunedMap::new()),
            pause_warnings: Mutex::new(PrunedMap::new()),
            warn_interval: self.warn_interval,
            sink: self.sink,
            unsaved: MemoryDeadLetters::new(),
            gone: Mutex::new(RecentSet::new(MAX_GONE_URLS)),
            counters,
            delay,
            lanes,
        });
        let worker_engine = Arc::clone(&engine);
        let pool = self.pool.build(move |d: Delivery| {
            worker_engine.run(d);
            Ok::<(), std::convert::Infallible>(())
        })?;
        let _ = resubmit.set(pool.internal_submitter());
        let fetcher = if fetch {
            let fetcher = Fetcher::start(
                Arc::clone(&engine),
                pool.submitter(),
                queue_capacity,
                &engine.name,
            )
            .map_err(BuildError::Spawn)?;
            Some(fetcher)
        } else {
            None
        };
        let cursor = recovered.as_mut().and_then(|r| r.cursor.take());
        if let Some(recovered) = recovered {
            resume(&engine, recovered);
        }
        Ok(Dispatcher {
            handle: DispatchHandle {
                submitter: pool.submitter(),
                engine,
            },
            pool: Some(pool),
            drop_timeout: self.drop_timeout,
            request_timeout: self.timeout,
            cursor,
            fetcher,
        })
    }
}

/// Takes up what a journal found unfinished: each webhook waits in the
/// delay queue until it is due (at once, or when its retry was due), which
/// sends it on to the workers as the queue has room. A row that is no
/// longer a valid webhook (a hand-edited file) is dead-lettered.
fn resume(engine: &Engine, recovered: Recovered) {
    use std::sync::atomic::Ordering;
    let (now, wall) = (engine.clock.now(), engine.clock.system_now());
    let n = recovered.rows.len() as u64;
    engine.counters.accepted.fetch_add(n, Ordering::SeqCst);
    if n > 0 {
        log::info!(target: "hookpool", "{}: {n} unfinished webhooks recovered from the journal", engine.name);
    }
    for row in recovered.rows {
        match Delivery::recovered(row, now, wall) {
            Ok((d, due)) => {
                if let Err(d) = engine.delay.schedule(due.unwrap_or(now), d) {
                    engine.shut_out(d);
                }
            }
            Err(bad) => {
                let (row, e) = *bad;
                engine.dead_letter_row(row, &e);
            }
        }
    }
}

/// Checks the configured rates and keys them by endpoint.
fn rate_limits(default: Option<f64>, per_url: &[(String, f64)]) -> Result<RateLimits, BuildError> {
    let valid = |what: &str, rate: f64| {
        if rate.is_finite() && rate > 0.0 {
            Ok(rate)
        } else {
            Err(BuildError::Invalid(format!(
                "{what} must be a positive number of requests per second, not {rate}"
            )))
        }
    };
    let mut limits = RateLimits {
        default: default.map(|r| valid("rate_limit", r)).transpose()?,
        ..RateLimits::default()
    };
    for (url, rate) in per_url {
        let rate = valid("endpoint_rate_limit", *rate)?;
        let hook = crate::Webhook::from_json(url, "null")
            .map_err(|e| BuildError::Invalid(format!("endpoint_rate_limit: {e}")))?;
        limits.per_endpoint.insert(hook.endpoint().clone(), rate);
    }
    Ok(limits)
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
