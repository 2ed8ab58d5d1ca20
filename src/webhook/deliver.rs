//! What a worker does with one delivery: wait for its endpoint's lane, ask
//! the endpoint's breaker, send, classify, then deliver, slow down, retry
//! later, defer, or dead-letter.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::bounded::{PrunedMap, RecentSet};
use crate::breaker::{Admission, BreakerState, Breakers, Endpoint, Health, Transition};
use crate::clock::Clock;
use crate::dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, MemoryDeadLetters, unix_ms,
};
use crate::pace::{Enter, Grant, Lanes, Outcome};
use crate::pool::panic_message;
use crate::retry::{RetryPolicy, Retryability};
use crate::saturation::RateLimit;
use crate::schedule::DelayQueue;
use crate::store::{Row, Store};
use crate::webhook::delivery::{Counters, Delivery, shutdown_error};
use crate::webhook::events::{self, BreakerChange, Delivered, Hooks};
use crate::webhook::send::{Attempt, DeliveryError, Failure, HttpSender};
use crate::webhook::{Webhook, WebhookError, redact_url};
use serde_json::value::RawValue;

/// Everything the workers share.
pub(crate) struct Engine {
    pub(crate) name: String,
    pub(crate) sender: HttpSender,
    pub(crate) retry: RetryPolicy,
    pub(crate) breakers: Breakers,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sink: Option<Arc<dyn DeadLetterSink>>,
    /// Letters with nowhere else to go: no sink, or the sink failed.
    pub(crate) unsaved: MemoryDeadLetters,
    /// URLs that answered 410 Gone, the most recent `MAX_GONE_URLS`.
    pub(crate) gone: Mutex<RecentSet>,
    pub(crate) counters: Counters,
    pub(crate) delay: DelayQueue<Delivery>,
    /// Each endpoint's lane: its in-flight limit, its pace, and the
    /// deliveries waiting for it.
    pub(crate) lanes: Lanes<Delivery>,
    pub(crate) hooks: Hooks,
    /// Where accepted webhooks live until they are final, if anywhere but
    /// memory.
    pub(crate) store: Option<Arc<dyn Store>>,
    /// Dead letters go into the store's own, in the same step that removes
    /// the webhook.
    pub(crate) keep_letters: bool,
    /// When each endpoint's "breaker opened" warning may be logged again.
    pub(crate) breaker_warnings: Mutex<PrunedMap<Endpoint, RateLimit>>,
    /// When each endpoint's "paused" warning may be logged again.
    pub(crate) pause_warnings: Mutex<PrunedMap<Endpoint, RateLimit>>,
    pub(crate) warn_interval: Duration,
    pub(crate) epoch: Instant,
}

impl Engine {
    /// A delivery for a webhook accepted now.
    pub(crate) fn delivery(&self, webhook: Webhook) -> Delivery {
        Delivery::new(webhook, self.clock.now(), self.counters.seq())
    }

    /// Handles one delivery. Never loses it: a panic anywhere in here is
    /// caught, the webhook is dead-lettered, and the panic is passed on to the
    /// pool so that it is counted and logged there too.
    pub(crate) fn run(&self, delivery: Delivery) {
        let webhook = delivery.webhook.clone();
        let (attempts, seq) = (delivery.attempts, delivery.seq);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.attempt(delivery))) {
            // The injected clock may be what panicked: use the real one.
            let mut d = Delivery::new(webhook, Instant::now(), seq);
            d.attempts = attempts;
            let why = panic_message(&*payload).to_owned();
            self.dead_letter(d, DeadLetterReason::Panicked, &DeliveryError::Panicked(why));
            std::panic::resume_unwind(payload);
        }
    }

    fn attempt(&self, mut d: Delivery) {
        let endpoint = d.webhook.endpoint().clone();
        if std::mem::take(&mut d.holds_slot) {
            // Its slot goes back if this unwinds before it starts: the
            // injected clock may panic.
            let mut unstarted = Unstarted {
                engine: self,
                endpoint: &endpoint,
                seq: d.seq,
                now: None,
                armed: true,
            };
            let now = self.clock.now();
            unstarted.now = Some(now);
            let seq = d.seq;
            // Nothing goes to a paused endpoint: paused after it was
            // granted, it waits again, in order.
            unstarted.disarm();
            return match self.lanes.start(&endpoint, seq, d, now) {
                Ok((d, grants)) => self.attempt_with_slot(d, &endpoint, now, grants),
                Err(entry) => self.waiting(entry, now),
            };
        }
        let now = self.clock.now();
        let seq = d.seq;
        match self.lanes.enter(&endpoint, seq, d, now) {
            Enter::Go(d) => self.attempt_with_slot(d, &endpoint, now, Vec::new()),
            Enter::Wait(mut grants) => {
                // Its own grant, due now, runs here rather than take a trip
                // through the delay queue.
                let mine = grants
                    .iter()
                    .position(|g| g.item.seq == seq && g.at <= now)
                    .map(|i| grants.swap_remove(i));
                match mine {
                    Some(grant) => self.attempt_with_slot(granted(grant), &endpoint, now, grants),
                    None => self.dispatch(grants),
                }
            }
            closed @ Enter::Closed(_) => self.waiting(closed, now),
        }
    }

    /// Sends on what a lane answered for a delivery that did not go.
    fn waiting(&self, entry: Enter<Delivery>, now: Instant) {
        match entry {
            Enter::Go(d) => {
                let endpoint = d.webhook.endpoint().clone();
                self.attempt_with_slot(d, &endpoint, now, Vec::new());
            }
            Enter::Wait(grants) => self.dispatch(grants),
            Enter::Closed(d) => self.shut_out(d),
        }
    }

    /// One attempt by a delivery that holds its endpoint's slot; `grants`
    /// (others its lane let go meanwhile) are sent on first.
    fn attempt_with_slot(
        &self,
        mut d: Delivery,
        endpoint: &Endpoint,
        now: Instant,
        grants: Vec<Grant<Delivery>>,
    ) {
        // Gives the slot back however this attempt ends, unwinding included.
        let slot = SlotGuard {
            engine: self,
            endpoint,
            sent_at: now,
            armed: true,
        };
        self.dispatch(grants);
        if self.gone.lock().contains(d.webhook.url()) {
            let error = d.last_error.take().map_or(
                DeliveryError::Status {
                    status: 410,
                    body: String::new(),
                },
                |e| *e,
            );
            return self.dead_letter(d, DeadLetterReason::EndpointGone, &error);
        }
        let (admission, transition) = self.breakers.admit(endpoint, self.clock.now());
        let admitted = match admission {
            Admission::Allowed => Admitted::new(&self.breakers, endpoint, false),
            Admission::Probe => Admitted::new(&self.breakers, endpoint, true),
            Admission::Rejected { retry_at } => {
                self.on_transition(endpoint, transition);
                // Not sent: its send time goes back, so a backlog behind an
                // open breaker reaches it (and the delay queue) at once,
                // not at the endpoint's pace.
                slot.finish(Outcome::NotSent, now);
                return self.defer(d, retry_at);
            }
        };
        self.on_transition(endpoint, transition);

        let wall = self.clock.system_now();
        d.attempts += 1;
        d.first_attempt_at.get_or_insert(wall);
        d.last_attempt_at = Some(wall);
        let attempt = self.sender.send(&d.webhook, wall);

        let health = match &attempt {
            Attempt::Delivered { .. } => Health::Success,
            Attempt::Failed(f) => f.health,
        };
        let transition = admitted.record(health, self.clock.now());
        self.on_transition(endpoint, transition);

        match attempt {
            Attempt::Delivered { status } => {
                slot.finish(Outcome::Success, self.clock.now());
                self.delivered(d, status);
            }
            Attempt::Failed(failure) if failure.push_back => self.pushed_back(d, failure, slot),
            Attempt::Failed(failure) => {
                let outcome = match failure.error {
                    DeliveryError::Timeout => Outcome::Timeout,
                    _ => Outcome::Other,
                };
                slot.finish(outcome, self.clock.now());
                self.failed(d, failure);
            }
        }
    }

    fn delivered(&self, d: Delivery, status: u16) {
        let latency = self.clock.now().saturating_duration_since(d.accepted_at);
        self.counters.latency.record_shared(latency);
        log::debug!(
            target: "hookpool",
            "{}: webhook {} delivered to {} ({status}) on attempt {}",
            self.name,
            d.webhook.id(),
            d.webhook.redacted_url(),
            d.attempts
        );
        log::trace!(target: "hookpool", "{}: webhook {} body {}", self.name, d.webhook.id(), d.webhook.raw_body().get());
        if let Some(store) = &self.store {
            store.delivered(d.seq);
        }
        self.counters.delivered.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.hooks.delivered {
            let event = Delivered {
                webhook: &d.webhook,
                status,
                attempts: d.attempts,
                latency,
            };
            events::call(
                &self.name,
                "on_delivered",
                &self.counters.hook_panics,
                || hook(&event),
            );
        }
    }

    /// The endpoint asked to slow down (429, or 503 with `Retry-After`):
    /// not a failure. The webhook spends no attempt and goes back to the
    /// front of its endpoint's line; a `Retry-After` pauses the endpoint.
    fn pushed_back(&self, mut d: Delivery, failure: Failure, mut slot: SlotGuard<'_>) {
        // Read while the guard still holds the slot: the clock may panic.
        let now = self.clock.now();
        let (endpoint, sent_at) = (slot.endpoint, slot.sent_at);
        let pause = match failure.retry {
            Retryability::RetryAfter(after) => after.min(self.retry.retry_after_limit()),
            _ => Duration::ZERO,
        };
        let status = failure.error.status().unwrap_or_default();
        d.push_backs += 1;
        d.last_error = Some(Box::new(failure.error));
        self.counters.push_backs.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            target: "hookpool",
            "{}: webhook {} pushed back by {} ({status}, pause {pause:?}); it waits its turn again",
            self.name,
            d.webhook.id(),
            d.webhook.redacted_url(),
        );
        let due = (!pause.is_zero()).then(|| crate::clock::deadline_after(now, pause));
        // A pause in a shared queue is everyone's: the webhook waits there
        // (and any process may take it when the pause ends); this process's
        // lane still records the push-back, and pauses the endpoint too.
        let handed = due.is_some() && self.shared();
        // Reads the wall clock, which may panic: the guard still holds the
        // slot.
        if handed {
            self.hand_over(d, due);
            slot.armed = false;
            let (effect, grants) =
                self.lanes
                    .finish_with(endpoint, sent_at, now, Outcome::PushBack { pause });
            self.after_push_back(endpoint, effect, status, pause, now);
            return self.dispatch(grants);
        }
        self.remember(&d, due);
        // The lane takes the slot back.
        slot.armed = false;
        match self
            .lanes
            .push_back(endpoint, d.seq, d, sent_at, now, pause)
        {
            Ok((effect, grants)) => {
                self.after_push_back(endpoint, Some(effect), status, pause, now);
                self.dispatch(grants);
            }
            Err(d) => self.shut_out(d),
        }
    }

    /// Counts a push-back's pause, and warns when it starts one.
    fn after_push_back(
        &self,
        endpoint: &Endpoint,
        effect: Option<crate::pace::PushBackEffect>,
        status: u16,
        pause: Duration,
        now: Instant,
    ) {
        let Some(effect) = effect else { return };
        let added = u64::try_from(effect.added.as_nanos()).unwrap_or(u64::MAX);
        self.counters
            .paused_nanos
            .fetch_add(added, Ordering::Relaxed);
        if effect.new_pause && self.warning_due(&self.pause_warnings, endpoint, now) {
            log::warn!(
                target: "hookpool",
                "{}: {endpoint} asked to slow down ({status}, Retry-After {pause:?}): nothing is sent to it until then, and its pace is lowered",
                self.name,
            );
        }
    }

    fn failed(&self, mut d: Delivery, failure: Failure) {
        if failure.gone {
            self.gone.lock().insert(d.webhook.url());
        }
        let now = self.clock.now();
        let mut rng = fastrand::Rng::new();
        match self
            .retry
            .next_delay(d.failures(), failure.retry, d.elapsed(now), &mut rng)
        {
            Some(delay) => {
                log::debug!(
                    target: "hookpool",
                    "{}: webhook {} attempt {} to {} failed ({}); retrying in {delay:?}",
                    self.name,
                    d.webhook.id(),
                    d.attempts,
                    d.webhook.redacted_url(),
                    self.redact(&d.webhook, &failure.error.to_string()),
                );
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                d.last_error = Some(Box::new(failure.error));
                self.reschedule(d, crate::clock::deadline_after(now, delay));
            }
            None => {
                let reason = if failure.gone {
                    DeadLetterReason::EndpointGone
                } else if matches!(failure.error, DeliveryError::Blocked(_)) {
                    DeadLetterReason::Blocked
                } else if failure.retry == Retryability::Permanent {
                    DeadLetterReason::PermanentFailure
                } else if d.failures() >= self.retry.attempts_limit() {
                    DeadLetterReason::RetriesExhausted
                } else {
                    DeadLetterReason::MaxElapsed
                };
                self.dead_letter(d, reason, &failure.error);
            }
        }
    }

    /// The endpoint's breaker is open: wait in the delay queue, not on a
    /// worker, without spending an attempt. Time spent here counts against
    /// `max_elapsed`: the endpoint is down, not pacing.
    fn defer(&self, d: Delivery, retry_at: Instant) {
        let mut due = retry_at;
        // A limit too large to add never expires.
        if let Some(expires) = self.retry.elapsed_limit().and_then(|l| d.expires(l)) {
            if self.clock.now() >= expires {
                let error = DeliveryError::Transport(format!(
                    "circuit breaker open for {}",
                    d.webhook.endpoint()
                ));
                let error = d.last_error.as_deref().cloned().unwrap_or(error);
                return self.dead_letter(d, DeadLetterReason::MaxElapsed, &error);
            }
            due = due.min(expires);
        }
        self.counters
            .deferred_by_breaker
            .fetch_add(1, Ordering::Relaxed);
        log::trace!(target: "hookpool", "{}: webhook {} deferred: breaker open", self.name, d.webhook.id());
        self.reschedule(d, due);
    }

    /// Waits in the delay queue until `due`, recorded in the store first;
    /// with a shared store, waits there instead, and any process may take
    /// it when due.
    fn reschedule(&self, d: Delivery, due: Instant) {
        if self.shared() {
            return self.hand_over(d, Some(due));
        }
        self.remember(&d, Some(due));
        if let Err(d) = self.delay.schedule(due, d) {
            self.shut_out(d);
        }
    }

    /// Whether the store is a queue shared by processes.
    fn shared(&self) -> bool {
        self.store.as_ref().is_some_and(|s| s.shared())
    }

    /// Records `d`'s state in the durable store, if there is one: due again
    /// at `due` (`None`: at once).
    fn remember(&self, d: &Delivery, due: Option<Instant>) {
        if let Some(store) = &self.store {
            let (now, wall) = (self.clock.now(), self.clock.system_now());
            store.scheduled(d.row_now(due, now, wall));
        }
    }

    /// Hands a delivery that must wait to the shared queue: it leaves this
    /// process (counted as kept: not final here).
    fn hand_over(&self, d: Delivery, due: Option<Instant>) {
        self.remember(&d, due);
        self.counters.kept.fetch_add(1, Ordering::SeqCst);
    }

    /// Shutdown stopped a delivery: with a durable store it stays there for
    /// the next start (it is not final here, and counted as kept);
    /// without, it is dead-lettered with reason `shutdown`.
    pub(crate) fn shut_out(&self, d: Delivery) {
        if let Some(store) = self.store.as_ref().filter(|s| s.shared()) {
            // Back to the shared queue, for another process.
            store.release(d.seq);
            self.counters.kept.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if self.store.is_some() {
            log::debug!(
                target: "hookpool",
                "{}: webhook {} kept in the journal for the next start",
                self.name,
                d.webhook.id()
            );
            self.counters.kept.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let error = shutdown_error(&d);
        self.dead_letter(d, DeadLetterReason::Shutdown, &error);
    }

    /// Sends granted deliveries on towards a worker through the delay
    /// queue, each at its time (the queue keeps trying while the pool's
    /// queue is full). Each holds its endpoint's slot.
    ///
    /// Runs from `SlotGuard::drop` and `Unstarted::drop` too, also while
    /// unwinding: it must not read the injected clock, which may be what
    /// panicked (a second panic would abort the process); a letter written
    /// here is stamped by `letter_time`, which does not read it while
    /// unwinding.
    fn dispatch(&self, grants: Vec<Grant<Delivery>>) {
        for grant in grants {
            let at = grant.at;
            let mut d = granted(grant);
            d.holds_slot = true;
            if let Err(mut d) = self.delay.schedule(at, d) {
                // Shutting down: give up on it. Lanes are closed next, so
                // its slot no longer matters.
                d.holds_slot = false;
                self.shut_out(d);
            }
        }
    }

    /// The wall-clock time to put on a letter. A letter is often written
    /// because the injected clock panicked, so a clock that panics again, or
    /// a thread already unwinding (where a second panic would abort), gets
    /// the real clock's time instead of losing the letter.
    fn letter_time(&self) -> SystemTime {
        if std::thread::panicking() {
            return SystemTime::now();
        }
        catch_unwind(AssertUnwindSafe(|| self.clock.system_now()))
            .unwrap_or_else(|_| SystemTime::now())
    }

    /// Gives up on a delivery: stores the letter (or keeps it in memory),
    /// then counts it. The count comes last so that when `outstanding()`
    /// reaches zero every letter is already somewhere.
    pub(crate) fn dead_letter(&self, d: Delivery, reason: DeadLetterReason, error: &DeliveryError) {
        let error_text = self.redact(&d.webhook, &error.to_string());
        log::warn!(
            target: "hookpool",
            "{}: webhook {} to {} dead-lettered ({reason}) after {} attempt(s): {error_text}",
            self.name,
            d.webhook.id(),
            d.webhook.redacted_url(),
            d.attempts,
        );
        let letter = DeadLetter {
            id: d.webhook.id().to_owned(),
            url: d.webhook.url().to_owned(),
            payload: d.webhook.raw_body().to_owned(),
            attempts: d.attempts,
            error: error_text,
            last_status: error.status(),
            first_attempt_at: d.first_attempt_at.map(unix_ms),
            last_attempt_at: d.last_attempt_at.map(unix_ms),
            dead_lettered_at: unix_ms(self.letter_time()),
            reason,
        };
        self.bury(d.seq, letter);
    }

    /// Dead-letters a journal row that is no longer a valid webhook (a file
    /// edited by hand), as it is, with reason `permanent_failure`.
    pub(crate) fn dead_letter_row(&self, row: Row, why: &WebhookError) {
        log::error!(
            target: "hookpool",
            "{}: the journal's webhook {} is not valid ({why}); dead-lettered as it is",
            self.name,
            row.id
        );
        let payload = RawValue::from_string(row.body.clone())
            .or_else(|_| serde_json::value::to_raw_value(&row.body));
        let Ok(payload) = payload else { return };
        let letter = DeadLetter {
            id: row.id,
            url: row.url,
            payload,
            attempts: row.state.attempts,
            error: format!("the journal's row is not a valid webhook: {why}"),
            last_status: row.state.last_status,
            first_attempt_at: row.state.first_attempt_ms,
            last_attempt_at: row.state.last_attempt_ms,
            dead_lettered_at: unix_ms(self.letter_time()),
            reason: DeadLetterReason::PermanentFailure,
        };
        self.bury(row.key, letter);
    }

    /// Stores `letter` for the webhook stored under `key`, then counts it
    /// and calls the hook.
    fn bury(&self, key: u64, letter: DeadLetter) {
        let reason = letter.reason;
        let stored = match (&self.sink, &self.store) {
            // Moved into the journal's dead letters in one transaction.
            (_, Some(store)) if self.keep_letters => {
                store.dead_lettered(key, Some(letter.clone()));
                true
            }
            // A panicking sink is treated like a failing one: the letter is
            // kept, and counted below either way.
            (Some(sink), _) => match catch_unwind(AssertUnwindSafe(|| sink.store(&letter))) {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    log::error!(
                        target: "hookpool",
                        "{}: dead-letter store failed for webhook {}: {e}; kept in memory for the shutdown report",
                        self.name,
                        letter.id
                    );
                    false
                }
                Err(payload) => {
                    log::error!(
                        target: "hookpool",
                        "{}: dead-letter sink panicked for webhook {}: {}; kept in memory for the shutdown report",
                        self.name,
                        letter.id,
                        panic_message(&*payload)
                    );
                    false
                }
            },
            (None, _) => false,
        };
        if let (Some(store), false, true) = (&self.store, self.keep_letters, stored) {
            store.dead_lettered(key, None);
        }
        // Not stored with a journal: the webhook stays in it, and the next
        // start tries it again rather than lose it.
        if !stored {
            self.unsaved.push(letter.clone());
        }
        self.counters.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.hooks.dead_letter {
            events::call(
                &self.name,
                "on_dead_letter",
                &self.counters.hook_panics,
                || hook(&letter),
            );
        }
    }

    /// Removes the webhook's URL (and so its query string) from a message.
    fn redact(&self, webhook: &Webhook, text: &str) -> String {
        let url = webhook.url();
        let mut text = text.replace(url, &redact_url(url));
        if let Some(q) = url.find('?') {
            text = text.replace(&url[q + 1..], "REDACTED");
        }
        text
    }

    /// Whether a warning about `endpoint` whose limiters are `warnings`
    /// may be logged at `now`.
    fn warning_due(
        &self,
        warnings: &Mutex<PrunedMap<Endpoint, RateLimit>>,
        endpoint: &Endpoint,
        now: Instant,
    ) -> bool {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        warning_due_at(
            warnings,
            endpoint,
            u64::try_from(nanos).unwrap_or(u64::MAX),
            self.warn_interval,
        )
    }
}

/// Whether the warning for `endpoint` may be logged at `now_nanos` (since
/// the engine's epoch). The limiter is asked while the map's lock is held:
/// asked after the lock is released, a limiter could be pruned as idle by
/// another thread's insert in between, and the interval it then starts
/// would be lost, letting a second warning through early.
fn warning_due_at(
    warnings: &Mutex<PrunedMap<Endpoint, RateLimit>>,
    endpoint: &Endpoint,
    now_nanos: u64,
    interval: Duration,
) -> bool {
    // A limiter whose interval is over equals a new one.
    warnings
        .lock()
        .get_or_insert_with(endpoint.clone(), RateLimit::new, |limit| {
            limit.is_idle(now_nanos)
        })
        .allow(now_nanos, interval)
}

impl Engine {
    /// Logs a breaker transition (info), warns when one opens (rate-limited
    /// per endpoint), restarts the endpoint's lane from one request in
    /// flight when it opens (so that what it holds back comes back
    /// gradually), and calls the hook. The breaker's lock is already
    /// released.
    fn on_transition(&self, endpoint: &Endpoint, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        log::info!(
            target: "hookpool",
            "{}: circuit breaker for {endpoint}: {} -> {}",
            self.name,
            t.from,
            t.to
        );
        if t.to == BreakerState::Open {
            self.lanes.restart(endpoint, self.clock.now());
            if self.warning_due(&self.breaker_warnings, endpoint, self.clock.now()) {
                log::warn!(
                    target: "hookpool",
                    "{}: circuit breaker opened for {endpoint}; its webhooks wait until it recovers",
                    self.name
                );
            }
        }
        if let Some(hook) = &self.hooks.breaker {
            let change = BreakerChange {
                endpoint,
                from: t.from,
                to: t.to,
            };
            events::call(
                &self.name,
                "on_breaker_change",
                &self.counters.hook_panics,
                || hook(&change),
            );
        }
    }
}

/// A granted delivery, charged with the time it waited for its endpoint.
fn granted(grant: Grant<Delivery>) -> Delivery {
    let mut d = grant.item;
    d.paced += grant.at.saturating_duration_since(grant.parked_at);
    d
}

/// A delivery's slot in its endpoint's lane, given back on drop.
/// Without an outcome (not sent, or unwinding), the slot goes back as
/// [`Outcome::Other`] at the time the attempt began: the injected clock may
/// be what panicked.
struct SlotGuard<'a> {
    engine: &'a Engine,
    endpoint: &'a Endpoint,
    sent_at: Instant,
    armed: bool,
}

impl SlotGuard<'_> {
    fn finish(mut self, outcome: Outcome, now: Instant) {
        self.armed = false;
        let grants = self
            .engine
            .lanes
            .finish(self.endpoint, self.sent_at, now, outcome);
        self.engine.dispatch(grants);
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let grants =
                self.engine
                    .lanes
                    .finish(self.endpoint, self.sent_at, self.sent_at, Outcome::Other);
            self.engine.dispatch(grants);
        }
    }
}

/// A granted delivery's slot before it starts. Should its worker unwind
/// first, the slot goes back to the lane, which may grant the next: at the
/// time read before that, or the real clock's if reading the injected one is
/// what panicked.
struct Unstarted<'a> {
    engine: &'a Engine,
    endpoint: &'a Endpoint,
    seq: u64,
    now: Option<Instant>,
    armed: bool,
}

impl Unstarted<'_> {
    /// The lane has the slot again, or the attempt took it over.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unstarted<'_> {
    fn drop(&mut self) {
        if self.armed {
            let now = self.now.unwrap_or_else(Instant::now);
            let grants = self.engine.lanes.abandon(self.endpoint, self.seq, now);
            self.engine.dispatch(grants);
        }
    }
}

/// An admitted request's claim on its endpoint's breaker. Its outcome is
/// recorded exactly once: by `record`, or, if the attempt unwinds first, as
/// `Neutral` on drop, so that a half-open probe slot is never leaked.
struct Admitted<'a> {
    breakers: &'a Breakers,
    endpoint: &'a Endpoint,
    was_probe: bool,
    recorded: bool,
}

impl<'a> Admitted<'a> {
    fn new(breakers: &'a Breakers, endpoint: &'a Endpoint, was_probe: bool) -> Self {
        Admitted {
            breakers,
            endpoint,
            was_probe,
            recorded: false,
        }
    }

    fn record(mut self, health: Health, now: Instant) -> Option<Transition> {
        self.recorded = true;
        self.breakers
            .record(self.endpoint, health, self.was_probe, now)
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            // The injected clock may be what panicked: use the real one.
            let _ = self.breakers.record(
                self.endpoint,
                Health::Neutral,
                self.was_probe,
                Instant::now(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Dispatcher;
    use crate::breaker::Endpoint;

    const SEC: u64 = 1_000_000_000;

    /// A limiter inside its interval survives every prune; once idle it may
    /// go, and the map stays bounded.
    #[test]
    fn breaker_warnings_are_limited_across_prunes_and_stay_bounded() {
        let hooks = Dispatcher::builder()
            .workers(1)
            .warn_interval(Duration::from_secs(30))
            .build()
            .unwrap();
        let engine = &hooks.handle.engine;
        let due = |ep: &Endpoint, now: u64| {
            super::warning_due_at(&engine.breaker_warnings, ep, now, engine.warn_interval)
        };
        let ep = |i: u64| Endpoint::new("https", &format!("e{i}.example"), 443);
        assert!(due(&ep(0), SEC));
        // Two thousand other endpoints open within the interval: prunes at
        // 1024 entries, none of which may forget endpoint 0's limiter.
        for i in 1..2_000 {
            assert!(due(&ep(i), SEC + i));
        }
        assert!(!due(&ep(0), 2 * SEC));
        // After the interval every limiter is idle: the prune at 2048
        // entries drops them all, and endpoint 0 may warn again.
        let later = 40 * SEC;
        for i in 2_000..2_100 {
            assert!(due(&ep(i), later));
        }
        assert!(engine.breaker_warnings.lock().len() <= 100);
        assert!(due(&ep(0), later));
        let _ = hooks.shutdown_timeout(Duration::ZERO);
    }
}
