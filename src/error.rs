//! Errors returned by the pool: refused submissions and invalid configuration.
//!
//! Delivery errors live next to the sender in [`crate::webhook`].

use std::fmt;

use crate::webhook::Webhook;

/// A job that the pool refused, handed back to the caller.
///
/// Modelled on crossbeam-channel's `TrySendError`: the job is never lost
/// inside the error. Get it back with [`SubmitError::into_inner`], then decide
/// what to do: answer 429, spill it to a dead-letter store, or wait.
///
/// `Debug` prints `Full(..)` / `Closed(..)` and does not require `J: Debug`.
///
/// # Examples
///
/// ```
/// use hookpool::{Pool, SubmitError};
///
/// let pool = Pool::builder().workers(1).queue_capacity(1).build(|_: u32| Ok::<(), String>(()))?;
/// let report = pool.shutdown();
/// assert!(report.unstarted.is_empty());
///
/// let err: SubmitError<u32> = SubmitError::Closed(7);
/// assert!(err.is_closed());
/// assert_eq!(err.to_string(), "pool is shut down");
/// assert_eq!(format!("{err:?}"), "Closed(..)");
/// assert_eq!(err.into_inner(), 7);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(PartialEq, Eq, Clone, Copy)]
pub enum SubmitError<J> {
    /// The queue is at capacity. Backpressure: try later, or shed the job.
    Full(J),
    /// The pool is shutting down or has shut down; it accepts no more work.
    Closed(J),
}

impl<J> SubmitError<J> {
    /// Returns the refused job.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SubmitError;
    ///
    /// assert_eq!(SubmitError::Full("job").into_inner(), "job");
    /// ```
    pub fn into_inner(self) -> J {
        match self {
            SubmitError::Full(job) | SubmitError::Closed(job) => job,
        }
    }

    /// Returns `true` if the job was refused because the queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SubmitError;
    ///
    /// assert!(SubmitError::Full(1).is_full());
    /// assert!(!SubmitError::Closed(1).is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }

    /// Returns `true` if the job was refused because the pool is shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SubmitError;
    ///
    /// assert!(SubmitError::Closed(1).is_closed());
    /// assert!(!SubmitError::Full(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }

    /// Maps the carried job, keeping the kind of refusal.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SubmitError;
    ///
    /// let err = SubmitError::Full(2).map(|n| n * 10);
    /// assert_eq!(err, SubmitError::Full(20));
    /// ```
    pub fn map<K>(self, f: impl FnOnce(J) -> K) -> SubmitError<K> {
        match self {
            SubmitError::Full(job) => SubmitError::Full(f(job)),
            SubmitError::Closed(job) => SubmitError::Closed(f(job)),
        }
    }
}

impl<J> fmt::Debug for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<J> fmt::Display for SubmitError<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("queue is full"),
            SubmitError::Closed(_) => f.write_str("pool is shut down"),
        }
    }
}

impl<J> std::error::Error for SubmitError<J> {}

/// Why [`send_durable`](crate::DispatchHandle::send_durable) did not
/// queue a webhook. Every variant hands the webhook back.
///
/// # Examples
///
/// ```
/// use hookpool::{DurableError, Webhook};
///
/// // A dispatcher without a journal cannot promise durability.
/// let hooks = hookpool::Dispatcher::builder().build()?;
/// let hook = Webhook::new("http://127.0.0.1:9/", &0)?;
/// let err = hooks.send_durable(hook.clone(), std::time::Duration::ZERO).unwrap_err();
/// assert!(matches!(err, DurableError::NoStore(_)));
/// assert_eq!(err.into_inner().id(), hook.id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum DurableError {
    /// The queue (or the endpoint's parking) stayed full. Nothing was kept.
    Full(Webhook),
    /// The dispatcher is shutting down. Nothing was kept.
    Closed(Webhook),
    /// The journal could not commit the webhook (a full disk, a read-only
    /// file): nothing was queued.
    Store {
        /// The webhook.
        webhook: Webhook,
        /// Why.
        error: crate::StoreError,
    },
    /// The dispatcher has no durable store
    /// ([`journal`](crate::DispatcherBuilder::journal)).
    NoStore(Webhook),
}

impl DurableError {
    /// The webhook, back.
    ///
    /// # Examples
    ///
    /// See [`DurableError`].
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("http://127.0.0.1:9/", &0)?;
    /// let err = hookpool::DurableError::Full(hook.clone());
    /// assert_eq!(err.into_inner().id(), hook.id());
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn into_inner(self) -> Webhook {
        match self {
            DurableError::Full(w) | DurableError::Closed(w) | DurableError::NoStore(w) => w,
            DurableError::Store { webhook, .. } => webhook,
        }
    }
}

impl From<SubmitError<Webhook>> for DurableError {
    fn from(e: SubmitError<Webhook>) -> Self {
        match e {
            SubmitError::Full(w) => DurableError::Full(w),
            SubmitError::Closed(w) => DurableError::Closed(w),
        }
    }
}

impl fmt::Debug for DurableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurableError::Full(_) => f.write_str("Full(..)"),
            DurableError::Closed(_) => f.write_str("Closed(..)"),
            DurableError::Store { error, .. } => f
                .debug_struct("Store")
                .field("error", error)
                .finish_non_exhaustive(),
            DurableError::NoStore(_) => f.write_str("NoStore(..)"),
        }
    }
}

impl fmt::Display for DurableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurableError::Full(_) => f.write_str("queue is full"),
            DurableError::Closed(_) => f.write_str("dispatcher is shut down"),
            DurableError::Store { .. } => f.write_str("webhook could not be stored durably"),
            DurableError::NoStore(_) => {
                f.write_str("the dispatcher has no durable store: configure a journal")
            }
        }
    }
}

impl std::error::Error for DurableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DurableError::Store { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why [`send_durable_batch`](crate::DispatchHandle::send_durable_batch)
/// queued none of a batch. Every webhook comes back, in the order given.
///
/// # Examples
///
/// ```
/// use hookpool::{DurableError, Webhook};
///
/// let hooks = hookpool::Dispatcher::builder().build()?;
/// let batch = vec![
///     Webhook::new("http://127.0.0.1:9/", &1)?,
///     Webhook::new("http://127.0.0.1:9/", &2)?,
/// ];
/// let err = hooks.handle().send_durable_batch(batch, None, std::time::Duration::ZERO).unwrap_err();
/// assert!(matches!(err.error(), DurableError::NoStore(_)));
/// assert_eq!(err.into_inner().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BatchError {
    /// The reason, holding the batch's first webhook.
    error: DurableError,
    /// The batch's other webhooks, in order.
    rest: Vec<Webhook>,
}

impl BatchError {
    pub(crate) fn new(
        mut webhooks: Vec<Webhook>,
        error: impl FnOnce(Webhook) -> DurableError,
    ) -> Self {
        let first = webhooks.remove(0);
        BatchError {
            error: error(first),
            rest: webhooks,
        }
    }

    /// Why, as a single [`send_durable`](crate::DispatchHandle::send_durable)
    /// would have said it (the webhook in it is the batch's first).
    ///
    /// # Examples
    ///
    /// See [`BatchError`].
    ///
    /// ```
    /// # let hooks = hookpool::Dispatcher::builder().build()?;
    /// # let batch = vec![hookpool::Webhook::new("http://127.0.0.1:9/", &1)?];
    /// let err = hooks.handle().send_durable_batch(batch, None, std::time::Duration::ZERO).unwrap_err();
    /// assert!(err.error().to_string().contains("configure a journal"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error(&self) -> &DurableError {
        &self.error
    }

    /// Every webhook of the batch, back, in the order given.
    ///
    /// # Examples
    ///
    /// See [`BatchError`].
    ///
    /// ```
    /// # let hooks = hookpool::Dispatcher::builder().build()?;
    /// let hook = hookpool::Webhook::new("http://127.0.0.1:9/", &1)?;
    /// let err = hooks.handle().send_durable_batch(vec![hook.clone()], None, std::time::Duration::ZERO).unwrap_err();
    /// assert_eq!(err.into_inner()[0].id(), hook.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> Vec<Webhook> {
        let mut all = Vec::with_capacity(self.rest.len() + 1);
        all.push(self.error.into_inner());
        all.extend(self.rest);
        all
    }
}

impl fmt::Debug for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchError")
            .field("error", &self.error)
            .field("webhooks", &(self.rest.len() + 1))
            .finish()
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a batch of {} webhooks: {}",
            self.rest.len() + 1,
            self.error
        )
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Invalid pool configuration, or a worker thread that could not be started.
///
/// # Examples
///
/// ```
/// use hookpool::{BuildError, Pool};
///
/// let err = Pool::builder().workers(0).build(|_: ()| Ok::<(), String>(())).unwrap_err();
/// assert!(matches!(err, BuildError::ZeroWorkers));
/// assert_eq!(err.to_string(), "a pool needs at least one worker");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `workers(0)` was requested.
    ZeroWorkers,
    /// `queue_capacity(0)` was requested. A zero-capacity (rendezvous) queue
    /// would make every `try_submit` fail unless a worker is idle at that
    /// exact moment, so it is refused.
    ZeroCapacity,
    /// The operating system refused to start a worker thread. Threads started
    /// before the failure have been stopped and joined.
    Spawn(std::io::Error),
    /// Another part of the configuration is invalid; the message says which.
    Invalid(String),
    /// The TLS settings cannot be used.
    Tls(crate::TlsConfigError),
    /// The durable store could not be opened or recovered: the message says
    /// which file and what to do.
    Store(crate::StoreError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWorkers => f.write_str("a pool needs at least one worker"),
            BuildError::ZeroCapacity => f.write_str("queue capacity must be at least 1"),
            BuildError::Spawn(_) => f.write_str("failed to spawn a worker thread"),
            BuildError::Invalid(msg) => f.write_str(msg),
            BuildError::Tls(_) => f.write_str("invalid tls settings"),
            BuildError::Store(e) => write!(f, "cannot open the store: {e}"),
        }
    }
}

impl From<crate::TlsConfigError> for BuildError {
    fn from(e: crate::TlsConfigError) -> Self {
        BuildError::Tls(e)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            BuildError::Tls(e) => Some(e),
            BuildError::Store(e) => e.source(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn debug_does_not_need_job_debug() {
        struct Opaque;
        let err = SubmitError::Full(Opaque);
        assert_eq!(format!("{err:?}"), "Full(..)");
        assert_eq!(err.to_string(), "queue is full");
    }

    #[test]
    fn spawn_error_exposes_source_without_repeating_it() {
        let err = BuildError::Spawn(std::io::Error::other("no threads left"));
        assert_eq!(err.to_string(), "failed to spawn a worker thread");
        assert_eq!(err.source().unwrap().to_string(), "no threads left");
    }
}
