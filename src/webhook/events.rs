//! Event hooks: optional callbacks for deliveries, dead letters and breaker
//! changes. They run on the worker (or shutdown) thread, outside every lock,
//! and a panicking hook is caught, counted and logged like a panicking job.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{BreakerState, Endpoint};
use crate::dead_letter::DeadLetter;
use crate::pool::panic_message;
use crate::webhook::Webhook;

/// A webhook was delivered. Passed to
/// [`on_delivered`](crate::DispatcherBuilder::on_delivered).
///
/// # Examples
///
/// ```
/// let builder = hookpool::Dispatcher::builder().on_delivered(|e| {
///     assert!((200..300).contains(&e.status));
///     println!("{} delivered after {} attempt(s) in {:?}", e.webhook.id(), e.attempts, e.latency);
/// });
/// # drop(builder);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Delivered<'a> {
    /// The webhook.
    pub webhook: &'a Webhook,
    /// The 2xx status the endpoint answered.
    pub status: u16,
    /// Attempts it took, the successful one included.
    pub attempts: u32,
    /// Time from acceptance to delivery.
    pub latency: Duration,
}

/// An endpoint's circuit breaker changed state. Passed to
/// [`on_breaker_change`](crate::DispatcherBuilder::on_breaker_change).
///
/// # Examples
///
/// ```
/// use hookpool::BreakerState;
/// let builder = hookpool::Dispatcher::builder().on_breaker_change(|c| {
///     if c.to == BreakerState::Open {
///         eprintln!("{} is failing", c.endpoint);
///     }
/// });
/// # drop(builder);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct BreakerChange<'a> {
    /// The endpoint (scheme, host, port).
    pub endpoint: &'a Endpoint,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

pub(crate) type DeliveredHook = Arc<dyn for<'a> Fn(&Delivered<'a>) + Send + Sync>;
pub(crate) type DeadLetterHook = Arc<dyn Fn(&DeadLetter) + Send + Sync>;
pub(crate) type BreakerHook = Arc<dyn for<'a> Fn(&BreakerChange<'a>) + Send + Sync>;

/// The configured hooks.
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    pub(crate) delivered: Option<DeliveredHook>,
    pub(crate) dead_letter: Option<DeadLetterHook>,
    pub(crate) breaker: Option<BreakerHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("delivered", &self.delivered.is_some())
            .field("dead_letter", &self.dead_letter.is_some())
            .field("breaker", &self.breaker.is_some())
            .finish()
    }
}

/// Calls a hook, containing a panic: it is logged at error level and
/// counted, and the worker goes on.
pub(crate) fn call<F: FnOnce()>(pool: &str, which: &str, panics: &AtomicU64, f: F) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        panics.fetch_add(1, Ordering::Relaxed);
        log::error!(
            target: "hookpool",
            "{pool}: {which} hook panicked: {}",
            panic_message(&*payload)
        );
    }
}
