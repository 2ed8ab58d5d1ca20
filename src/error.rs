//! Errors returned by the pool: refused submissions and invalid configuration.
//!
//! Delivery errors live next to the sender in [`crate::webhook`].

use std::fmt;

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
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroWorkers => f.write_str("a pool needs at least one worker"),
            BuildError::ZeroCapacity => f.write_str("queue capacity must be at least 1"),
            BuildError::Spawn(_) => f.write_str("failed to spawn a worker thread"),
            BuildError::Invalid(msg) => f.write_str(msg),
            BuildError::Tls(_) => f.write_str("invalid tls settings"),
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
