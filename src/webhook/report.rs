//! [`DispatchStats`] and [`DispatchReport`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::handle::snapshot;
use crate::breaker::BreakerState;
use crate::dead_letter::DeadLetter;
use crate::stats::Histogram;
use crate::stats::Stats;
use crate::webhook::deliver::Engine;
use crate::webhook::delivery::Delivery;

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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// Answers that asked for a slower pace: 429, or 503 with
    /// `Retry-After`. They do not count as failed attempts.
    pub push_backs: u64,
    /// `Retry-After` pause time set on endpoints, over all of them (counted
    /// when each pause is set).
    pub paused: Duration,
    /// Webhooks waiting in the delay queue for a retry or a breaker.
    pub waiting_retries: usize,
    /// Webhooks waiting for their endpoint, holding no worker: for a free
    /// in-flight slot
    /// ([`max_in_flight_per_endpoint`](crate::DispatcherBuilder::max_in_flight_per_endpoint),
    /// or the adaptive limit), for its send rate, or for a `Retry-After`
    /// pause to end, including those given a slot and on their way to a
    /// worker.
    pub parked: usize,
    /// Webhooks refused with [`SubmitError::Full`](crate::SubmitError::Full)
    /// because their endpoint already had a queue's capacity of webhooks
    /// parked. (Refusals because the queue itself was full are in
    /// `pool.rejected`.)
    pub rejected_endpoint_full: u64,
    /// URLs remembered as having answered 410 Gone (the most recent 4,096);
    /// webhooks to them are dead-lettered without a request.
    pub gone_endpoints: usize,
    /// Webhooks given up at a shutdown deadline and left in the journal for
    /// the next start (not final here).
    pub kept: u64,
    /// The durable store's counters, with a journal.
    pub store: Option<crate::StoreStats>,
    /// Each endpoint seen so far, its breaker's state and its pace, sorted
    /// by endpoint. Once about a thousand endpoints are known, those that
    /// remember nothing (breaker closed with no failures, nothing waiting,
    /// no pace learned in the last 10 minutes) may be left out; failing and
    /// paused ones never are.
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
            .saturating_sub(self.delivered + self.dead_lettered + self.kept)
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

/// One endpoint's breaker state and pace, in [`DispatchStats::endpoints`].
///
/// # Examples
///
/// ```
/// let stats = hookpool::Dispatcher::builder().build()?.stats();
/// for e in &stats.endpoints {
///     println!("{} is {}, {} in flight, rate {:?}/s", e.endpoint, e.breaker, e.in_flight, e.rate_limit);
/// }
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EndpointStats {
    /// `scheme://host:port`.
    pub endpoint: String,
    /// The breaker's state.
    pub breaker: BreakerState,
    /// Requests holding a slot now: sending, or granted and about to.
    pub in_flight: usize,
    /// Requests allowed in flight at once now: the adaptive limit (cut by
    /// push-back and timeouts, restarted from 1 after a pause or an outage),
    /// never above the endpoint's bulkhead. `None` before the endpoint's
    /// first webhook.
    pub in_flight_limit: Option<usize>,
    /// Requests per second allowed now: the adaptive rate (set by the first
    /// push-back), capped by the configured one. `None`: not paced.
    pub rate_limit: Option<f64>,
    /// How much longer a `Retry-After` pause holds the endpoint (zero: not
    /// paused).
    pub paused_for: Duration,
    /// Push-back answers from this endpoint.
    pub push_backs: u64,
    /// `Retry-After` pause time set on this endpoint in all.
    pub paused: Duration,
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
    /// Dead letters that no sink holds: all of them when no sink (and no
    /// journal) was configured, or those the sink failed to store.
    pub dead_letters: Vec<DeadLetter>,
    /// Webhooks left unfinished in the journal for the next start: those
    /// still queued, parked or waiting for a retry at a shutdown deadline,
    /// which a journal keeps instead of dead-lettering (and any still in
    /// flight, whose end is written if it comes in time). 0 without one.
    pub kept: u64,
    /// Requests still in flight at the deadline. Each ends within the
    /// request timeout; [`wait_running`](DispatchReport::wait_running)
    /// waits for them.
    pub still_running: usize,
    /// The counters when shutdown returned.
    pub stats: DispatchStats,
    /// How long shutdown took.
    pub elapsed: Duration,
    pub(super) pool: Option<crate::pool::ShutdownReport<Delivery>>,
    pub(super) engine: Option<Arc<Engine>>,
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
