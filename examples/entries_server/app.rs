//! What the HTTP threads share: the entries, the dispatcher's handle, and
//! the promise that every answered change gets its webhook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hookpool::{
    DeadLetter, DeadLetterReason, DeadLetterSink, DispatchHandle, Exposition, JsonlDeadLetters,
    SubmitError,
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
    pub(crate) webhook_url: String,
    /// The same file the dispatcher writes its own dead letters to.
    pub(crate) dead_letters: Arc<JsonlDeadLetters>,
    pub(crate) entries: Mutex<Entries>,
    /// Webhooks written to the dead-letter file because the queue was full.
    pub(crate) queue_full: AtomicU64,
    pub(crate) last_spill_warning_ms: AtomicU64,
    /// Letters the file refused; tried again at shutdown.
    pub(crate) unsaved: Mutex<Vec<DeadLetter>>,
    /// Whether answers may still promise webhooks; see [`App::promise`].
    pub(crate) promising: RwLock<bool>,
}

/// Held from saving a change until its webhook is queued or dead-lettered.
pub(crate) type Promise<'a> = RwLockReadGuard<'a, bool>;

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

    /// Waits until every promise made is kept (its webhook queued or
    /// dead-lettered), then refuses new ones. A promise is held only for an
    /// answer, a `try_send` and at worst one dead-letter write.
    pub(crate) fn stop_promises(&self) {
        *self
            .promising
            .write()
            .unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Queues the webhook, or dead-letters it: never blocks on the queue,
    /// never drops it.
    pub(crate) fn enqueue(&self, event: Event) {
        let (webhook, reason, error) = match self.hooks.try_send(event.webhook) {
            Ok(()) => return,
            Err(SubmitError::Full(w)) => (w, DeadLetterReason::QueueFull, "queue is full"),
            // Not expected: promises stop before the dispatcher shuts down.
            Err(SubmitError::Closed(w)) => (
                w,
                DeadLetterReason::Shutdown,
                "the dispatcher is shutting down",
            ),
        };
        let letter = DeadLetter::from_webhook(&webhook, reason, error);
        match self.dead_letters.store(&letter) {
            Ok(()) => {
                log::debug!(
                    "entry {}: {} webhook {} dead-lettered ({reason})",
                    event.entry_id,
                    event.name,
                    letter.id
                );
                if reason == DeadLetterReason::QueueFull {
                    let total = self.queue_full.fetch_add(1, Ordering::SeqCst) + 1;
                    self.warn_spill(total);
                }
            }
            Err(e) => {
                log::error!(
                    "entry {}: {} webhook {} could not be dead-lettered ({e}); kept in memory",
                    event.entry_id,
                    event.name,
                    letter.id
                );
                lock(&self.unsaved).push(letter);
            }
        }
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
             entries_server_webhooks_queue_full_total {}\n",
            self.queue_full.load(Ordering::SeqCst)
        ));
        text
    }
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
