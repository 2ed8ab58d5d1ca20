//! What a worker does with one delivery: ask the endpoint's breaker, send,
//! classify, then deliver, retry later, defer, or dead-letter.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::bounded::{PrunedMap, RecentSet};
use crate::breaker::{Admission, BreakerState, Breakers, Endpoint, Health, Transition};
use crate::bulkhead::{self, Bulkheads};
use crate::clock::Clock;
use crate::dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, MemoryDeadLetters, unix_ms,
};
use crate::pool::panic_message;
use crate::retry::{RetryPolicy, Retryability};
use crate::saturation::RateLimit;
use crate::schedule::DelayQueue;
use crate::stats::Recorder;
use crate::webhook::events::{self, BreakerChange, Delivered, Hooks};
use crate::webhook::send::{Attempt, DeliveryError, Failure, HttpSender};
use crate::webhook::{Webhook, redact_url};

/// A webhook on its way, with its delivery history. This is the pool's job
/// type, and what waits in the delay queue between attempts.
pub(crate) struct Delivery {
    pub(crate) webhook: Webhook,
    pub(crate) accepted_at: Instant,
    pub(crate) attempts: u32,
    pub(crate) first_attempt_at: Option<SystemTime>,
    pub(crate) last_attempt_at: Option<SystemTime>,
    pub(crate) last_error: Option<DeliveryError>,
    /// Released from its endpoint's bulkhead: it already holds a slot.
    pub(crate) holds_slot: bool,
}

impl Delivery {
    pub(crate) fn new(webhook: Webhook, now: Instant) -> Self {
        Delivery {
            webhook,
            accepted_at: now,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            last_error: None,
            holds_slot: false,
        }
    }
}

/// The error to record for a delivery stopped by shutdown: its last error,
/// if it had one.
pub(crate) fn shutdown_error(d: &Delivery) -> DeliveryError {
    d.last_error
        .clone()
        .unwrap_or_else(|| DeliveryError::Transport("not delivered before shutdown".into()))
}

/// Dispatcher-wide counters. `accepted - delivered - dead_lettered` is the
/// number of webhooks not yet final.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Webhooks accepted: only ever grows (it is a Prometheus counter).
    pub(crate) accepted: AtomicU64,
    /// Sends in progress, counted before the send so that shutdown never
    /// sees a webhook finish before it was accepted.
    pub(crate) submitting: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) deferred_by_breaker: AtomicU64,
    /// Refused at submission: the endpoint's parking was full.
    pub(crate) rejected_endpoint_full: AtomicU64,
    pub(crate) hook_panics: AtomicU64,
    pub(crate) by_reason: [AtomicU64; DeadLetterReason::ALL.len()],
    /// Acceptance to delivery.
    pub(crate) latency: Recorder,
}

impl Counters {
    /// Webhooks not yet final, never underestimated: a send increments
    /// `submitting`, then `accepted`, then decrements `submitting`; reading
    /// the finals first, then `submitting`, then `accepted` can count a
    /// webhook twice but never miss one.
    pub(crate) fn outstanding(&self) -> u64 {
        let finished =
            self.delivered.load(Ordering::SeqCst) + self.dead_lettered.load(Ordering::SeqCst);
        let submitting = self.submitting.load(Ordering::SeqCst);
        let accepted = self.accepted.load(Ordering::SeqCst);
        (accepted + submitting).saturating_sub(finished)
    }
}

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
    /// At most so many deliveries per endpoint hold a worker at once.
    pub(crate) bulkheads: Bulkheads<Delivery>,
    pub(crate) hooks: Hooks,
    /// When each endpoint's "breaker opened" warning may be logged again.
    pub(crate) breaker_warnings: Mutex<PrunedMap<Endpoint, RateLimit>>,
    pub(crate) warn_interval: std::time::Duration,
    pub(crate) epoch: Instant,
}

impl Engine {
    /// Handles one delivery. Never loses it: a panic anywhere in here is
    /// caught, the webhook is dead-lettered, and the panic is passed on to the
    /// pool so that it is counted and logged there too.
    pub(crate) fn run(&self, delivery: Delivery) {
        let webhook = delivery.webhook.clone();
        let attempts = delivery.attempts;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.attempt(delivery))) {
            // The injected clock may be what panicked: use the real one.
            let mut d = Delivery::new(webhook, Instant::now());
            d.attempts = attempts;
            let why = panic_message(&*payload).to_owned();
            self.dead_letter(d, DeadLetterReason::Panicked, &DeliveryError::Panicked(why));
            std::panic::resume_unwind(payload);
        }
    }

    fn attempt(&self, mut d: Delivery) {
        let endpoint = d.webhook.endpoint().clone();
        if !d.holds_slot {
            d = match self.bulkheads.enter(&endpoint, d) {
                bulkhead::Entry::Go(d) => d,
                // Sent on by `release_slot` when a delivery to it finishes.
                bulkhead::Entry::Parked => return,
                bulkhead::Entry::Closed(d) => {
                    let error = shutdown_error(&d);
                    return self.dead_letter(d, DeadLetterReason::Shutdown, &error);
                }
            };
        }
        d.holds_slot = false;
        // Gives the slot back however this attempt ends, unwinding included.
        let _slot = SlotGuard {
            engine: self,
            endpoint: &endpoint,
        };
        if self.gone.lock().contains(d.webhook.url()) {
            let error = d.last_error.take().unwrap_or(DeliveryError::Status {
                status: 410,
                body: String::new(),
            });
            return self.dead_letter(d, DeadLetterReason::EndpointGone, &error);
        }
        let (admission, transition) = self.breakers.admit(&endpoint, self.clock.now());
        let admitted = match admission {
            Admission::Allowed => Admitted::new(&self.breakers, &endpoint, false),
            Admission::Probe => Admitted::new(&self.breakers, &endpoint, true),
            Admission::Rejected { retry_at } => {
                self.log_transition(&endpoint, transition);
                return self.defer(d, retry_at);
            }
        };
        self.log_transition(&endpoint, transition);

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
        self.log_transition(&endpoint, transition);

        match attempt {
            Attempt::Delivered { status } => {
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
            Attempt::Failed(failure) => self.failed(d, failure),
        }
    }

    fn failed(&self, mut d: Delivery, failure: Failure) {
        if failure.gone {
            self.gone.lock().insert(d.webhook.url());
        }
        let now = self.clock.now();
        let elapsed = now.saturating_duration_since(d.accepted_at);
        let mut rng = fastrand::Rng::new();
        match self
            .retry
            .next_delay(d.attempts, failure.retry, elapsed, &mut rng)
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
                d.last_error = Some(failure.error);
                self.reschedule(d, crate::clock::deadline_after(now, delay));
            }
            None => {
                let reason = if failure.gone {
                    DeadLetterReason::EndpointGone
                } else if matches!(failure.error, DeliveryError::Blocked(_)) {
                    DeadLetterReason::Blocked
                } else if failure.retry == Retryability::Permanent {
                    DeadLetterReason::PermanentFailure
                } else if d.attempts >= self.retry.attempts_limit() {
                    DeadLetterReason::RetriesExhausted
                } else {
                    DeadLetterReason::MaxElapsed
                };
                self.dead_letter(d, reason, &failure.error);
            }
        }
    }

    /// The endpoint's breaker is open: wait in the delay queue, not on a
    /// worker, without spending an attempt.
    fn defer(&self, d: Delivery, retry_at: Instant) {
        let mut due = retry_at;
        // A limit too large to add never expires.
        if let Some(expires) = self
            .retry
            .elapsed_limit()
            .and_then(|l| d.accepted_at.checked_add(l))
        {
            if self.clock.now() >= expires {
                let error = DeliveryError::Transport(format!(
                    "circuit breaker open for {}",
                    d.webhook.endpoint()
                ));
                let error = d.last_error.clone().unwrap_or(error);
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

    fn reschedule(&self, d: Delivery, due: Instant) {
        if let Err(d) = self.delay.schedule(due, d) {
            let error = shutdown_error(&d);
            self.dead_letter(d, DeadLetterReason::Shutdown, &error);
        }
    }

    /// Gives `endpoint`'s bulkhead slot back, and sends the next parked
    /// delivery, which inherits the slot, towards a worker through the delay
    /// queue (which keeps trying while the pool's queue is full).
    ///
    /// Runs from `SlotGuard::drop`, also while unwinding: it must not read
    /// the injected clock, which may be what panicked (a second panic would
    /// abort the process). `epoch` is never later than the clock's `now`, so
    /// the delivery is due at once; a letter written here is stamped by
    /// `letter_time`, which does not read the injected clock while
    /// unwinding.
    fn release_slot(&self, endpoint: &Endpoint) {
        while let Some(mut next) = self.bulkheads.leave(endpoint) {
            next.holds_slot = true;
            match self.delay.schedule(self.epoch, next) {
                Ok(()) => return,
                // Shutting down: give up on it, and so free its slot too.
                Err(mut next) => {
                    next.holds_slot = false;
                    let error = shutdown_error(&next);
                    self.dead_letter(next, DeadLetterReason::Shutdown, &error);
                }
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
        let stored = match &self.sink {
            // A panicking sink is treated like a failing one: the letter is
            // kept, and counted below either way.
            Some(sink) => match catch_unwind(AssertUnwindSafe(|| sink.store(&letter))) {
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
            None => false,
        };
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

    /// Whether the "breaker opened" warning for `endpoint` may be logged at
    /// `now_nanos` (since `epoch`). The limiter is asked while the map's lock
    /// is held: asked after the lock is released, a limiter could be pruned
    /// as idle by another thread's insert in between, and the interval it
    /// then starts would be lost, letting a second warning through early.
    fn breaker_warning_due(&self, endpoint: &Endpoint, now_nanos: u64) -> bool {
        // A limiter whose interval is over equals a new one.
        self.breaker_warnings
            .lock()
            .get_or_insert_with(endpoint.clone(), RateLimit::new, |limit| {
                limit.is_idle(now_nanos)
            })
            .allow(now_nanos, self.warn_interval)
    }

    /// Logs a breaker transition (info), warns when one opens (rate-limited
    /// per endpoint), and calls the hook. The breaker's lock is already
    /// released.
    fn log_transition(&self, endpoint: &Endpoint, transition: Option<Transition>) {
        let Some(t) = transition else { return };
        log::info!(
            target: "hookpool",
            "{}: circuit breaker for {endpoint}: {} -> {}",
            self.name,
            t.from,
            t.to
        );
        if t.to == BreakerState::Open {
            let now = u64::try_from(
                self.clock
                    .now()
                    .saturating_duration_since(self.epoch)
                    .as_nanos(),
            )
            .unwrap_or(u64::MAX);
            if self.breaker_warning_due(endpoint, now) {
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

/// A delivery's slot in its endpoint's bulkhead, given back on drop.
struct SlotGuard<'a> {
    engine: &'a Engine,
    endpoint: &'a Endpoint,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.engine.release_slot(self.endpoint);
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
        let ep = |i: u64| Endpoint::new("https", &format!("e{i}.example"), 443);
        assert!(engine.breaker_warning_due(&ep(0), SEC));
        // Two thousand other endpoints open within the interval: prunes at
        // 1024 entries, none of which may forget endpoint 0's limiter.
        for i in 1..2_000 {
            assert!(engine.breaker_warning_due(&ep(i), SEC + i));
        }
        assert!(!engine.breaker_warning_due(&ep(0), 2 * SEC));
        // After the interval every limiter is idle: the prune at 2048
        // entries drops them all, and endpoint 0 may warn again.
        let later = 40 * SEC;
        for i in 2_000..2_100 {
            assert!(engine.breaker_warning_due(&ep(i), later));
        }
        assert!(engine.breaker_warnings.lock().len() <= 100);
        assert!(engine.breaker_warning_due(&ep(0), later));
        let _ = hooks.shutdown_timeout(Duration::ZERO);
    }
}
