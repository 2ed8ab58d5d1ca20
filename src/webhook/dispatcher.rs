//! The [`Dispatcher`]: a [`Pool`] of delivery workers, a delay queue for
//! retries, per-endpoint circuit breakers and a dead-letter sink.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::DispatcherBuilder;
use super::handle::DispatchHandle;
use super::report::{DispatchReport, DispatchStats};
use crate::dead_letter::DeadLetter;
use crate::error::{DurableError, SubmitError};
use crate::pool::Pool;
use crate::store::{Store, StoreError, StoredDeadLetter};
use crate::webhook::Webhook;
use crate::webhook::delivery::{Counters, Delivery};
use crate::webhook::fetch::Fetcher;

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
    pub(super) handle: DispatchHandle,
    pub(super) pool: Option<Pool<Delivery>>,
    pub(super) drop_timeout: Duration,
    pub(super) request_timeout: Duration,
    /// The cursor the journal held when the dispatcher started.
    pub(super) cursor: Option<String>,
    /// With a queue shared by processes: claims webhooks into the pool.
    pub(super) fetcher: Option<Fetcher>,
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

    /// Queues a webhook, waiting at most `timeout` for room. See
    /// [`DispatchHandle::send_timeout`].
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

    /// Queues a webhook once it is committed to the journal. See
    /// [`DispatchHandle::send_durable`].
    ///
    /// # Errors
    ///
    /// [`DurableError`], with the webhook.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder().journal(hookpool::Journal::new("hooks.db")).build()?;
    /// hooks.send_durable(hookpool::Webhook::new("https://example.com/", &0)?, std::time::Duration::ZERO)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_durable(&self, webhook: Webhook, wait: Duration) -> Result<(), DurableError> {
        self.handle.send_durable(webhook, wait)
    }

    /// The cursor saved with the last webhook committed before this
    /// dispatcher started (see
    /// [`DispatchHandle::send_durable_with_cursor`]), if its journal held
    /// one.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert_eq!(hooks.journal_cursor(), None);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn journal_cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// The first `limit` dead letters the journal holds, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NoStore`] without a journal.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert!(matches!(hooks.stored_dead_letters(10), Err(hookpool::StoreError::NoStore)));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn stored_dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.store()?.dead_letters(limit)
    }

    /// Deletes dead letters from the journal by their sequence numbers;
    /// returns how many there were.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NoStore`] without a journal.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert!(hooks.delete_stored_dead_letters(&[1]).is_err());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn delete_stored_dead_letters(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        self.store()?.delete_dead_letters(seqs)
    }

    /// Delivers again up to `limit` of the dead letters the journal holds,
    /// oldest first, with their ids: each moves from the dead letters back
    /// among the unfinished webhooks in one transaction, then into the
    /// queue, waiting at most `wait` for room. One that finds no room moves
    /// back to the dead letters. Returns how many were queued.
    ///
    /// # Errors
    ///
    /// [`StoreError`]; [`StoreError::NoStore`] without a journal.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().build()?;
    /// assert!(hooks.replay_stored(100, std::time::Duration::from_secs(1)).is_err());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn replay_stored(&self, limit: usize, wait: Duration) -> Result<usize, StoreError> {
        let store = self.store()?;
        let engine = &self.handle.engine;
        let mut queued = 0;
        for stored in store.dead_letters(limit)? {
            let webhook = match stored.letter.clone().into_webhook() {
                Ok(webhook) => webhook,
                Err(e) => {
                    log::warn!(target: "hookpool", "cannot replay dead letter {}: {e}", stored.letter.id);
                    continue;
                }
            };
            let delivery = engine.delivery(webhook);
            let (key, row) = (delivery.seq, delivery.row(engine.clock.system_now()));
            if !store.revive(stored.seq, row)? {
                continue;
            }
            // A shared queue put it back in itself, for any worker.
            if store.shared() {
                queued += 1;
                continue;
            }
            let sent = self
                .handle
                .counted(|| self.handle.submitter.submit_timeout(delivery, wait));
            match sent {
                Ok(()) => queued += 1,
                // Back where it was, in one step.
                Err(_) => store.dead_lettered(key, Some(stored.letter)),
            }
        }
        Ok(queued)
    }

    fn store(&self) -> Result<&Arc<dyn Store>, StoreError> {
        self.handle.engine.store.as_ref().ok_or(StoreError::NoStore)
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
    /// webhook not yet delivered, whether queued, parked behind its
    /// endpoint's limit or waiting for a retry, is dead-lettered with reason
    /// `shutdown`. Requests in flight at the
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

    pub(super) fn stop(&mut self, deadline: Option<Instant>) -> DispatchReport {
        let started = Instant::now();
        let Some(pool) = self.pool.take() else {
            return DispatchReport::default();
        };
        let engine = Arc::clone(&self.handle.engine);
        // Nothing more is claimed from a shared queue.
        if let Some(mut fetcher) = self.fetcher.take() {
            fetcher.stop();
        }
        pool.close_intake();
        wait_for_outstanding(&engine.counters, deadline);

        // Nothing may be re-queued once the workers start to stop. The
        // waiting deliveries are dead-lettered only after the workers stop:
        // writing letters takes time, and idle workers must not start new
        // requests after the deadline meanwhile.
        let mut waiting = engine.delay.close();
        waiting.extend(engine.lanes.close());
        let mut pool_report = match deadline {
            None => pool.shutdown(),
            Some(deadline) => {
                pool.shutdown_timeout(deadline.saturating_duration_since(Instant::now()))
            }
        };
        let unstarted = std::mem::take(&mut pool_report.unstarted);
        for d in waiting.into_iter().chain(unstarted) {
            engine.shut_out(d);
        }
        // Everything pending is written; what is left unfinished stays for
        // the next start.
        let kept = engine.store.as_ref().map_or(0, |store| store.close());
        let still_running = pool_report.still_running;
        let mut report = DispatchReport {
            kept,
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

/// Waits until every accepted webhook is final, or the deadline passes.
pub(super) fn wait_for_outstanding(counters: &Counters, deadline: Option<Instant>) {
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
