//! A webhook on its way ([`Delivery`]) and the dispatcher-wide counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::dead_letter::{DeadLetterReason, unix_ms};
use crate::stats::Recorder;
use crate::store::{Row, RowState};
use crate::webhook::send::DeliveryError;
use crate::webhook::{Webhook, WebhookError};

/// A webhook on its way, with its delivery history. This is the pool's job
/// type, and what waits in the delay queue between attempts.
pub(crate) struct Delivery {
    pub(crate) webhook: Webhook,
    pub(crate) accepted_at: Instant,
    /// Acceptance order: webhooks waiting for their endpoint go in this
    /// order.
    pub(crate) seq: u64,
    /// Requests made, push-backs included.
    pub(crate) attempts: u32,
    /// Requests the endpoint pushed back (429, or 503 with `Retry-After`).
    /// They do not count against the retry policy's `max_attempts`.
    pub(crate) push_backs: u32,
    /// Time spent waiting for the endpoint's pace (its in-flight limit, its
    /// rate, a `Retry-After` pause). It does not count against the retry
    /// policy's `max_elapsed`: a receiver that only asks for a slower pace
    /// never makes a webhook expire.
    pub(crate) paced: Duration,
    pub(crate) first_attempt_at: Option<SystemTime>,
    pub(crate) last_attempt_at: Option<SystemTime>,
    /// Boxed: errors are rare, and every delivery travels through the queue
    /// by value.
    pub(crate) last_error: Option<Box<DeliveryError>>,
    /// Granted by its endpoint's lane: it already holds a slot.
    pub(crate) holds_slot: bool,
    /// When it was accepted, in Unix milliseconds, if known (it came from
    /// a store); else the time its row is first written.
    pub(crate) accepted_ms: Option<u64>,
}

impl Delivery {
    pub(crate) fn new(webhook: Webhook, now: Instant, seq: u64) -> Self {
        Delivery {
            webhook,
            accepted_at: now,
            seq,
            attempts: 0,
            push_backs: 0,
            paced: Duration::ZERO,
            first_attempt_at: None,
            last_attempt_at: None,
            last_error: None,
            holds_slot: false,
            accepted_ms: None,
        }
    }

    /// Attempts that count against `max_attempts`: push-backs do not.
    pub(crate) fn failures(&self) -> u32 {
        self.attempts.saturating_sub(self.push_backs)
    }

    /// Time since acceptance that counts against `max_elapsed`.
    pub(crate) fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.accepted_at)
            .saturating_sub(self.paced)
    }

    /// Its row for a durable store, accepted at wall-clock time `wall`.
    pub(crate) fn row(&self, wall: SystemTime) -> Row {
        Row {
            key: self.seq,
            id: self.webhook.id().to_owned(),
            url: self.webhook.url().to_owned(),
            body: self.webhook.raw_body().get().to_owned(),
            accepted_ms: self.accepted_ms.unwrap_or_else(|| unix_ms(wall)),
            state: RowState::default(),
        }
    }

    /// Its whole row as it stands, due again at `due` (`None`: at once).
    pub(crate) fn row_now(&self, due: Option<Instant>, now: Instant, wall: SystemTime) -> Row {
        Row {
            state: self.row_state(due, now, wall),
            ..self.row(wall)
        }
    }

    /// Its state for a durable store, due again at `due` (`None`: at
    /// once); `now` and `wall` are the same moment on both clocks.
    pub(crate) fn row_state(
        &self,
        due: Option<Instant>,
        now: Instant,
        wall: SystemTime,
    ) -> RowState {
        let due_ms = due.map(|due| unix_ms(wall + due.saturating_duration_since(now)));
        RowState {
            attempts: self.attempts,
            push_backs: self.push_backs,
            paced_ms: u64::try_from(self.paced.as_millis()).unwrap_or(u64::MAX),
            due_ms,
            first_attempt_ms: self.first_attempt_at.map(unix_ms),
            last_attempt_ms: self.last_attempt_at.map(unix_ms),
            last_error: self.last_error.as_ref().map(|e| e.to_string()),
            last_status: self.last_error.as_ref().and_then(|e| e.status()),
        }
    }

    /// A delivery recovered from a durable store, with when it is due, at
    /// `now` and `wall` (the same moment on both clocks).
    pub(crate) fn recovered(
        row: Row,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(Self, Option<Instant>), Box<InvalidRow>> {
        let webhook =
            match Webhook::from_json(&row.url, row.body.clone()).and_then(|w| w.with_id(&row.id)) {
                Ok(webhook) => webhook,
                Err(e) => return Err(Box::new((row, e))),
            };
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        // How long ago, on this machine's wall clock (never negative).
        let ago = |ms: u64| wall.duration_since(at(ms)).unwrap_or_default();
        let s = row.state;
        let due = s.due_ms.and_then(|ms| {
            let wait = at(ms).duration_since(wall).ok()?;
            Some(crate::clock::deadline_after(now, wait))
        });
        let d = Delivery {
            webhook,
            accepted_at: now.checked_sub(ago(row.accepted_ms)).unwrap_or(now),
            seq: row.key,
            attempts: s.attempts,
            push_backs: s.push_backs,
            paced: Duration::from_millis(s.paced_ms),
            first_attempt_at: s.first_attempt_ms.map(at),
            last_attempt_at: s.last_attempt_ms.map(at),
            last_error: s.last_error.map(|message| {
                Box::new(DeliveryError::Recorded {
                    message,
                    status: s.last_status,
                })
            }),
            holds_slot: false,
            accepted_ms: Some(row.accepted_ms),
        };
        Ok((d, due))
    }

    /// When `max_elapsed` runs out for it, if that fits in an `Instant`.
    pub(crate) fn expires(&self, limit: Duration) -> Option<Instant> {
        self.accepted_at
            .checked_add(self.paced)
            .and_then(|t| t.checked_add(limit))
    }
}

/// A journal row that is no longer a valid webhook, and why.
pub(crate) type InvalidRow = (Row, WebhookError);

/// The error to record for a delivery stopped by shutdown: its last error,
/// if it had one.
pub(crate) fn shutdown_error(d: &Delivery) -> DeliveryError {
    d.last_error
        .as_deref()
        .cloned()
        .unwrap_or_else(|| DeliveryError::Transport("not delivered before shutdown".into()))
}

/// Dispatcher-wide counters. `accepted - delivered - dead_lettered` is the
/// number of webhooks not yet final.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Webhooks accepted: only ever grows (it is a Prometheus counter).
    pub(crate) accepted: AtomicU64,
    /// Hands out acceptance sequence numbers.
    pub(crate) next_seq: AtomicU64,
    /// Sends in progress, counted before the send so that shutdown never
    /// sees a webhook finish before it was accepted.
    pub(crate) submitting: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) deferred_by_breaker: AtomicU64,
    /// Answers that asked to slow down (429, or 503 with `Retry-After`).
    pub(crate) push_backs: AtomicU64,
    /// `Retry-After` pause time set on endpoints, in nanoseconds.
    pub(crate) paused_nanos: AtomicU64,
    /// Refused at submission: the endpoint's parking was full.
    pub(crate) rejected_endpoint_full: AtomicU64,
    /// Left in the durable store at a shutdown deadline, for the next start.
    pub(crate) kept: AtomicU64,
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
        let finished = self.delivered.load(Ordering::SeqCst)
            + self.dead_lettered.load(Ordering::SeqCst)
            + self.kept.load(Ordering::SeqCst);
        let submitting = self.submitting.load(Ordering::SeqCst);
        let accepted = self.accepted.load(Ordering::SeqCst);
        (accepted + submitting).saturating_sub(finished)
    }

    /// The next acceptance sequence number.
    pub(crate) fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }
}
