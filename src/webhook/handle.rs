//! [`DispatchHandle`]: queueing webhooks from any thread, and the stats snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::report::{DispatchStats, EndpointStats};
use crate::breaker::{BreakerState, Endpoint};
use crate::error::{BatchError, DurableError, SubmitError};
use crate::pool::Submitter;
use crate::stats::Histogram;
use crate::stats::Stats;
use crate::store::{Commit, Row, StoreError};
use crate::webhook::Webhook;
use crate::webhook::deliver::Engine;
use crate::webhook::delivery::Delivery;

/// A cheap, cloneable handle to a [`Dispatcher`](crate::Dispatcher), for other threads.
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
    pub(super) submitter: Submitter<Delivery>,
    pub(super) engine: Arc<Engine>,
}

impl DispatchHandle {
    /// Queues a webhook without blocking.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the webhook when the queue is full, or when
    /// its endpoint already has a queue's capacity of webhooks parked
    /// behind its in-flight limit (see
    /// [`max_in_flight_per_endpoint`](crate::DispatcherBuilder::max_in_flight_per_endpoint)):
    /// answer 429, or dead-letter it with reason `queue_full`. With a
    /// [journal](crate::DispatcherBuilder::journal) or a shared Redis
    /// queue, also when its writer is behind, because the disk or Redis
    /// is slower than the senders: four times the queue's capacity (at
    /// least 1,024) webhooks wait for the journal's commit, or 65,536 for
    /// Redis.
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
        if !self.engine.lanes.has_room(webhook.endpoint()) {
            return Err(self.endpoint_full(webhook));
        }
        let delivery = self.engine.delivery(webhook);
        if self.engine.store.is_some() {
            return self.journaled(delivery, Duration::ZERO, |d, _| {
                self.submitter.try_submit(d)
            });
        }
        self.counted(|| self.submitter.try_submit(delivery))
    }

    /// A send with a journal: the row goes to the journal's writer first
    /// (so that its removal, after delivery, comes after it), then into the
    /// queue; a refused webhook's row is removed again. Returns before the
    /// row is committed. While the writer's backlog is at its bound (the
    /// disk or Redis is slower than the senders), waits for it for at most
    /// `wait`; `send` gets what is left of `wait`.
    fn journaled(
        &self,
        delivery: Delivery,
        wait: Duration,
        send: impl FnOnce(Delivery, Duration) -> Result<(), SubmitError<Delivery>>,
    ) -> Result<(), SubmitError<Webhook>> {
        let started = Instant::now();
        let Some(store) = &self.engine.store else {
            return self.counted(|| send(delivery, wait));
        };
        let row = delivery.row(self.engine.clock.system_now());
        if store.shared() {
            // The shared queue is the queue: nothing goes to this process's.
            if self.submitter.is_closed() {
                return Err(SubmitError::Closed(delivery.webhook));
            }
            return match self.accept_waiting(store.as_ref(), row, wait) {
                Ok(()) => {
                    self.handed_over();
                    Ok(())
                }
                Err(StoreError::Closed) => Err(SubmitError::Closed(delivery.webhook)),
                Err(_) => Err(SubmitError::Full(delivery.webhook)),
            };
        }
        if let Err(e) = self.accept_waiting(store.as_ref(), row, wait) {
            let refused = match e {
                StoreError::Closed => SubmitError::Closed(delivery.webhook),
                _ => SubmitError::Full(delivery.webhook),
            };
            return Err(refused);
        }
        let key = delivery.seq;
        let left = wait.saturating_sub(started.elapsed());
        let sent = self.counted(|| send(delivery, left));
        if sent.is_err() {
            store.forget(key);
        }
        sent
    }

    /// Hands `row` to the store's writer without waiting for the commit;
    /// while the writer is [busy](StoreError::Busy) (as many rows wait for
    /// their commit as it holds), tries again in bounded naps for at most
    /// `wait`, and stops early if the dispatcher closes.
    fn accept_waiting(
        &self,
        store: &dyn crate::store::Store,
        row: Row,
        wait: Duration,
    ) -> Result<(), StoreError> {
        if wait.is_zero() {
            return store.accept(row, None, Commit::NoWait);
        }
        let started = Instant::now();
        let mut nap = Duration::from_micros(100);
        loop {
            let busy = match store.accept(row.clone(), None, Commit::NoWait) {
                Err(busy @ StoreError::Busy { .. }) => busy,
                other => return other,
            };
            if self.submitter.is_closed() {
                return Err(StoreError::Closed);
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(busy);
            }
            std::thread::sleep(nap.min(wait - waited));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }

    /// Queues a webhook once it is committed to the dispatcher's durable
    /// store (its [`journal`](crate::DispatcherBuilder::journal)): `Ok` means
    /// it survives a crash from now on, and will be delivered at least once.
    /// Waits for the commit (concurrent senders share one), then at most
    /// `wait` for room in the queue.
    ///
    /// If the queue stays full, or the dispatcher is shutting down, the
    /// webhook comes back and its row is removed again; a crash in between
    /// can leave the row, and the webhook is then delivered at the next
    /// start (at least once, same id).
    ///
    /// # Errors
    ///
    /// [`DurableError`], with the webhook: `Full` or `Closed` as for
    /// [`try_send`](Self::try_send); `Store` if the journal could not commit
    /// it (disk full, read-only file: nothing was queued); `NoStore` if the
    /// dispatcher has no journal.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .journal(hookpool::Journal::new("hooks.db"))
    ///     .build()?;
    /// let webhook = hookpool::Webhook::new("https://example.com/hooks", &1)?;
    /// hooks.handle().send_durable(webhook, std::time::Duration::ZERO)?;
    /// // Committed: answer the request now.
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_durable(&self, webhook: Webhook, wait: Duration) -> Result<(), DurableError> {
        self.durable(webhook, None, wait)
    }

    /// Queues a batch of webhooks once all of them are committed to the
    /// durable store, in one step: one commit for the whole batch, however
    /// many it holds. A single thread that reads webhooks from an input (a
    /// file, a table) gets this way what group commit gives many threads
    /// calling [`send_durable`](Self::send_durable) at once. With `cursor`,
    /// the cursor is saved in the same transaction, as
    /// [`send_durable_with_cursor`](Self::send_durable_with_cursor) does.
    ///
    /// All or none. First it waits, up to `wait`, until the queue has room
    /// for the whole batch (or is empty, for a batch larger than the queue)
    /// and every endpoint of the batch has parking room; then it commits.
    /// `Ok` means every webhook is committed and accepted: one that finds
    /// the queue full after the commit (another thread took the room) waits
    /// in the delay queue for room, holding no worker, in order.
    ///
    /// # Errors
    ///
    /// [`BatchError`], with every webhook, none of them kept: its
    /// [`error`](BatchError::error) is `Full` (no room in time), `Closed`
    /// (shutting down), `Store` (the commit failed: a full disk, Redis
    /// unreachable) or `NoStore`, as for [`send_durable`](Self::send_durable).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .journal(hookpool::Journal::new("hooks.db"))
    ///     .build()?;
    /// let lines: Vec<u64> = (0..1000).collect();
    /// for chunk in lines.chunks(256) {
    ///     let batch = chunk
    ///         .iter()
    ///         .map(|n| hookpool::Webhook::new("https://example.com/hooks", n))
    ///         .collect::<Result<Vec<_>, _>>()?;
    ///     let last = chunk.last().unwrap().to_string();
    ///     hooks.handle().send_durable_batch(batch, Some(last), Duration::from_secs(5))?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_durable_batch(
        &self,
        webhooks: Vec<Webhook>,
        cursor: Option<String>,
        wait: Duration,
    ) -> Result<(), BatchError> {
        if webhooks.is_empty() {
            return Ok(());
        }
        let Some(store) = &self.engine.store else {
            return Err(BatchError::new(webhooks, DurableError::NoStore));
        };
        if self.submitter.is_closed() {
            return Err(BatchError::new(webhooks, DurableError::Closed));
        }
        if !store.shared() && !self.wait_for_batch_room(&webhooks, wait) {
            let refusal = if self.submitter.is_closed() {
                DurableError::Closed
            } else {
                DurableError::Full
            };
            return Err(BatchError::new(webhooks, refusal));
        }
        let deliveries: Vec<Delivery> = webhooks
            .into_iter()
            .map(|w| self.engine.delivery(w))
            .collect();
        let wall = self.engine.clock.system_now();
        let rows = deliveries.iter().map(|d| d.row(wall)).collect();
        if let Err(error) = store.accept_batch(rows, cursor) {
            let webhooks = deliveries.into_iter().map(|d| d.webhook).collect();
            return Err(match error {
                StoreError::Closed => BatchError::new(webhooks, DurableError::Closed),
                error => {
                    BatchError::new(webhooks, |webhook| DurableError::Store { webhook, error })
                }
            });
        }
        if store.shared() {
            for _ in &deliveries {
                self.handed_over();
            }
            return Ok(());
        }
        let counters = &self.engine.counters;
        counters.submitting.fetch_add(1, Ordering::SeqCst);
        let now = self.engine.clock.now();
        for d in deliveries {
            counters.accepted.fetch_add(1, Ordering::SeqCst);
            match self.submitter.try_submit(d) {
                Ok(()) => {}
                // Committed, so accepted: the delay queue sends it on as
                // room frees.
                Err(SubmitError::Full(d)) => {
                    if let Err(d) = self.engine.delay.schedule(now, d) {
                        self.engine.shut_out(d);
                    }
                }
                Err(SubmitError::Closed(d)) => self.engine.shut_out(d),
            }
        }
        counters.submitting.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// Waits up to `wait` for queue room for the whole batch (or an empty
    /// queue) and parking room at each of its endpoints; whether it came.
    fn wait_for_batch_room(&self, webhooks: &[Webhook], wait: Duration) -> bool {
        let started = Instant::now();
        let mut nap = Duration::from_micros(100);
        loop {
            if self.submitter.is_closed() {
                return false;
            }
            let queue = self.submitter.room() >= webhooks.len() || self.submitter.queued() == 0;
            if queue
                && webhooks
                    .iter()
                    .all(|w| self.engine.lanes.has_room(w.endpoint()))
            {
                return true;
            }
            let waited = started.elapsed();
            if waited >= wait {
                return false;
            }
            std::thread::sleep(nap.min(wait - waited));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }

    /// Like [`send_durable`](Self::send_durable), and saves `cursor` in the
    /// journal in the same transaction: the journal keeps the cursor of the
    /// last webhook committed, and hands it back after a restart
    /// ([`Dispatcher::journal_cursor`](crate::Dispatcher::journal_cursor),
    /// or [`Journal::read_cursor`](crate::Journal::read_cursor) before a
    /// start). A program that reads its webhooks from an input saves its
    /// position there, and resumes after it: nothing is read twice or
    /// skipped. A webhook that comes back (`Full`, `Closed`) takes its
    /// cursor with it: the journal again holds the one it replaced, so
    /// the program may stop there and resume with that webhook. (With
    /// several threads sending with cursors at once, only the last one sent
    /// is put back this way.)
    ///
    /// # Errors
    ///
    /// As [`send_durable`](Self::send_durable).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let hooks = hookpool::Dispatcher::builder()
    ///     .journal(hookpool::Journal::new("hooks.db"))
    ///     .build()?;
    /// let start = hooks.journal_cursor().map_or(0, |c| c.parse::<u64>().unwrap() + 1);
    /// for line in start..10 {
    ///     let webhook = hookpool::Webhook::new("https://example.com/hooks", &line)?;
    ///     hooks.handle().send_durable_with_cursor(webhook, line.to_string(), std::time::Duration::from_secs(1))?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_durable_with_cursor(
        &self,
        webhook: Webhook,
        cursor: String,
        wait: Duration,
    ) -> Result<(), DurableError> {
        self.durable(webhook, Some(cursor), wait)
    }

    fn durable(
        &self,
        webhook: Webhook,
        cursor: Option<String>,
        wait: Duration,
    ) -> Result<(), DurableError> {
        let Some(store) = &self.engine.store else {
            return Err(DurableError::NoStore(webhook));
        };
        let started = Instant::now();
        if !self.wait_for_endpoint_room(webhook.endpoint(), wait) {
            return Err(self.endpoint_full(webhook).into());
        }
        let delivery = self.engine.delivery(webhook);
        if store.shared() && self.submitter.is_closed() {
            return Err(DurableError::Closed(delivery.webhook));
        }
        let row = delivery.row(self.engine.clock.system_now());
        if let Err(error) = store.accept(row, cursor, Commit::Wait) {
            return Err(match error {
                StoreError::Closed => DurableError::Closed(delivery.webhook),
                error => DurableError::Store {
                    webhook: delivery.webhook,
                    error,
                },
            });
        }
        if store.shared() {
            self.handed_over();
            return Ok(());
        }
        let key = delivery.seq;
        let left = wait.saturating_sub(started.elapsed());
        let sent = self.counted(|| self.submitter.submit_timeout(delivery, left));
        if sent.is_err() {
            store.forget(key);
        }
        sent.map_err(DurableError::from)
    }

    /// The refusal for a webhook whose endpoint has no parking room left.
    #[cold]
    fn endpoint_full(&self, webhook: Webhook) -> SubmitError<Webhook> {
        if self.submitter.is_closed() {
            return SubmitError::Closed(webhook);
        }
        self.engine
            .counters
            .rejected_endpoint_full
            .fetch_add(1, Ordering::Relaxed);
        SubmitError::Full(webhook)
    }

    /// Queues a webhook, waiting at most `timeout` for room: in the queue,
    /// at its endpoint, and, with a journal or a shared queue, in its
    /// writer's backlog.
    ///
    /// # Errors
    ///
    /// As [`try_send`](DispatchHandle::try_send), once `timeout` has passed.
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
        let started = Instant::now();
        if !self.wait_for_endpoint_room(webhook.endpoint(), timeout) {
            return Err(self.endpoint_full(webhook));
        }
        let left = timeout.saturating_sub(started.elapsed());
        let delivery = self.engine.delivery(webhook);
        if self.engine.store.is_some() {
            return self.journaled(delivery, left, |d, left| {
                self.submitter.submit_timeout(d, left)
            });
        }
        self.counted(|| self.submitter.submit_timeout(delivery, left))
    }

    /// Waits for parking room at the endpoint (rare: only while it is
    /// stalled), in bounded naps, for at most `timeout`; returns whether
    /// there is room.
    fn wait_for_endpoint_room(&self, endpoint: &crate::Endpoint, timeout: Duration) -> bool {
        let started = Instant::now();
        let mut nap = Duration::from_micros(100);
        while !self.engine.lanes.has_room(endpoint) {
            let waited = started.elapsed();
            if waited >= timeout || self.submitter.is_closed() {
                return false;
            }
            std::thread::sleep(nap.min(timeout - waited));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
        true
    }

    /// A webhook accepted into a shared queue: accepted here, and final
    /// here at once (counted as kept: whichever process claims it delivers
    /// it).
    fn handed_over(&self) {
        let counters = &self.engine.counters;
        counters.kept.fetch_add(1, Ordering::SeqCst);
        counters.accepted.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs a send between the `submitting` and `accepted` counts (see
    /// `Counters::outstanding` for why in this order).
    pub(super) fn counted(
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
    /// [`Dispatcher::stats`](crate::Dispatcher::stats).
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

    pub(super) fn stats_with(&self, pool: Stats) -> DispatchStats {
        snapshot(&self.engine, pool)
    }
}

/// The dispatcher's counters around a pool snapshot.
pub(super) fn snapshot(engine: &Engine, pool: Stats) -> DispatchStats {
    let c = &engine.counters;
    // A delivery granted by its lane passes through the delay queue on its
    // way to a worker: it is still parked, not waiting for a retry. Read
    // before the lanes, so one moving from there to here in between is
    // missed rather than counted twice.
    let (released, waiting_retries) = engine.delay.count_split(|d| d.holds_slot);
    let parked = engine.lanes.parked() + released;
    // Finals first, then accepted, so `accepted >= delivered + dead_lettered`.
    let delivered = c.delivered.load(Ordering::SeqCst);
    let dead_lettered = c.dead_lettered.load(Ordering::SeqCst);
    let kept = c.kept.load(Ordering::SeqCst);
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
        push_backs: c.push_backs.load(Ordering::Relaxed),
        paused: Duration::from_nanos(c.paused_nanos.load(Ordering::Relaxed)),
        waiting_retries,
        parked,
        rejected_endpoint_full: c.rejected_endpoint_full.load(Ordering::Relaxed),
        gone_endpoints: engine.gone.lock().len(),
        kept,
        store: engine.store.as_ref().map(|s| s.stats()),
        endpoints: endpoints(engine),
    }
}

/// Every endpoint with a breaker or a lane, its breaker state and its pace.
fn endpoints(engine: &Engine) -> Vec<EndpointStats> {
    let breakers = engine.breakers.snapshot();
    let lanes = engine.lanes.snapshot(engine.clock.now());
    let mut all: BTreeMap<Endpoint, EndpointStats> = BTreeMap::new();
    let fresh = |endpoint: &Endpoint| EndpointStats {
        endpoint: endpoint.to_string(),
        breaker: BreakerState::Closed,
        in_flight: 0,
        in_flight_limit: None,
        rate_limit: None,
        paused_for: Duration::ZERO,
        push_backs: 0,
        paused: Duration::ZERO,
    };
    for (endpoint, breaker) in breakers {
        all.entry(endpoint.clone())
            .or_insert_with(|| fresh(&endpoint))
            .breaker = breaker;
    }
    for (endpoint, lane) in lanes {
        let e = all
            .entry(endpoint.clone())
            .or_insert_with(|| fresh(&endpoint));
        e.in_flight = lane.in_flight;
        e.in_flight_limit = Some(lane.in_flight_limit);
        e.rate_limit = lane.rate;
        e.paused_for = lane.paused_for;
        e.push_backs = lane.push_backs;
        e.paused = lane.paused_total;
    }
    all.into_values().collect()
}

impl fmt::Debug for DispatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchHandle")
            .field("name", &self.engine.name)
            .finish_non_exhaustive()
    }
}
