//! What the HTTP threads share: the entries, the dispatcher's handle, and
//! the promise that every answered change gets its webhook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookpool::{
    DeadLetter, DeadLetterReason, DeadLetterSink, DispatchHandle, DurableError, Exposition,
    JsonlDeadLetters, SubmitError, Webhook,
};

use crate::entries::Entries;
use crate::webhook::Event;

pub(crate) const DISPATCHER_NAME: &str = "entries-hooks";
/// At most one "queue is full" warning per this interval; each letter is
/// logged at debug.
const SPILL_WARN_INTERVAL_MS: u64 = 10_000;

/// What the HTTP threads share.
pub(crate) struct App {
    pub(crate) hooks: DispatchHandle,
    /// Whether the dispatcher has a journal: then a webhook is kept once
    /// committed to it, else once queued.
    pub(crate) journaled: bool,
    pub(crate) webhook_url: String,
    /// The same file the dispatcher writes its own dead letters to.
    pub(crate) dead_letters: Arc<JsonlDeadLetters>,
    pub(crate) entries: Mutex<Entries>,
    /// Webhooks written to the dead-letter file because the queue was full.
    pub(crate) queue_full: AtomicU64,
    /// Changes refused with 503 because their webhook could not be kept.
    pub(crate) refused: AtomicU64,
    pub(crate) last_spill_warning_ms: AtomicU64,
    /// Whether answers may still promise webhooks; see [`App::promise`].
    pub(crate) promising: RwLock<bool>,
}

/// Held from saving a change until its webhook is kept or refused.
pub(crate) type Promise<'a> = RwLockReadGuard<'a, bool>;

/// A webhook that could not be kept: its change must not be answered 2xx.
pub(crate) struct Unkept;

impl App {
    /// Permission to save a change and promise its webhook, or `None` once
    /// shutdown has stopped promises.
    pub(crate) fn promise(&self) -> Option<Promise<'_>> {
        let open = self
            .promising
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (*open).then_some(open)
    }

    /// Waits until every promise made is kept or refused, then refuses new
    /// ones. A promise is held only for a commit to the journal (or a
    /// `try_send`) and at worst one dead-letter write.
    pub(crate) fn stop_promises(&self) {
        *self
            .promising
            .write()
            .unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Keeps the webhook before its change is answered: committed to the
    /// journal (or queued, without one), or, when the queue is full,
    /// written to the dead-letter file. Never waits for room in the queue.
    /// `Err` when neither worked (the journal could not commit, or the
    /// dead-letter file refused the letter): nothing was kept, and the
    /// change must be undone.
    pub(crate) fn keep(&self, event: Event) -> Result<(), Unkept> {
        let Event {
            webhook,
            name,
            entry_id,
        } = event;
        let (webhook, reason, error) = match self.send(webhook) {
            Ok(()) => return Ok(()),
            Err(Refused::Full(w)) => (w, DeadLetterReason::QueueFull, "queue is full"),
            // Not expected: promises stop before the dispatcher shuts down.
            Err(Refused::Closed(w)) => (
                w,
                DeadLetterReason::Shutdown,
                "the dispatcher is shutting down",
            ),
            Err(Refused::Journal(e)) => {
                self.refuse(
                    name,
                    entry_id,
                    &format!("the journal could not commit it: {e}"),
                );
                return Err(Unkept);
            }
        };
        let letter = DeadLetter::from_webhook(&webhook, reason, error);
        if let Err(e) = self.dead_letters.store(&letter) {
            self.refuse(
                name,
                entry_id,
                &format!(
                    "{reason}, and the dead-letter file {} refused it: {e}",
                    self.dead_letters.path().display()
                ),
            );
            return Err(Unkept);
        }
        log::debug!(
            "entry {entry_id}: {name} webhook {} dead-lettered ({reason})",
            letter.id
        );
        if reason == DeadLetterReason::QueueFull {
            let total = self.queue_full.fetch_add(1, Ordering::SeqCst) + 1;
            self.warn_spill(total);
        }
        Ok(())
    }

    /// Commits and queues with a journal (waiting for the commit, not for
    /// room), queues without one.
    fn send(&self, webhook: Webhook) -> Result<(), Refused> {
        if !self.journaled {
            return self.hooks.try_send(webhook).map_err(|e| match e {
                SubmitError::Full(w) => Refused::Full(w),
                SubmitError::Closed(w) => Refused::Closed(w),
            });
        }
        self.hooks
            .send_durable(webhook, Duration::ZERO)
            .map_err(|e| match e {
                DurableError::Full(w) => Refused::Full(w),
                DurableError::Closed(w) => Refused::Closed(w),
                DurableError::Store { error, .. } => Refused::Journal(error.to_string()),
                // `NoStore` cannot happen: the dispatcher was built with the
                // journal.
                other => Refused::Journal(other.to_string()),
            })
    }

    fn refuse(&self, name: &str, entry_id: u64, why: &str) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        log::error!(
            "entry {entry_id}: {name} webhook not kept ({why}); the change is undone and answered 503"
        );
    }

    fn warn_spill(&self, total: u64) {
        let now = unix_ms();
        let last = self.last_spill_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SPILL_WARN_INTERVAL_MS
            && self
                .last_spill_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "the webhook queue is full: {total} webhooks dead-lettered with reason queue_full so far, in {}; replay them with `hookpool replay`",
                self.dead_letters.path().display()
            );
        }
    }

    /// The dispatcher's metrics, and this server's own.
    pub(crate) fn metrics(&self) -> String {
        let mut text = Exposition::new()
            .dispatcher(DISPATCHER_NAME, &self.hooks.stats())
            .render();
        let entries = lock(&self.entries).by_id.len();
        text.push_str(&format!(
            "# HELP entries_server_entries Entries stored.\n\
             # TYPE entries_server_entries gauge\n\
             entries_server_entries {entries}\n\
             # HELP entries_server_webhooks_queue_full_total Webhooks written to the dead-letter file because the queue was full.\n\
             # TYPE entries_server_webhooks_queue_full_total counter\n\
             entries_server_webhooks_queue_full_total {}\n\
             # HELP entries_server_changes_refused_total Changes undone and answered 503 because their webhook could not be kept.\n\
             # TYPE entries_server_changes_refused_total counter\n\
             entries_server_changes_refused_total {}\n",
            self.queue_full.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst)
        ));
        text
    }
}

/// Why a webhook was not queued.
enum Refused {
    Full(Webhook),
    Closed(Webhook),
    /// The journal could not commit it (the webhook is dropped: the change
    /// is undone, so nothing was promised).
    Journal(String),
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic
    // elsewhere does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
