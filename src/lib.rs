//! # hookpool
//!
//! Bounded, observable, lossless background work for programs without an
//! async runtime: a fixed set of OS threads fed by a bounded
//! [crossbeam-channel](https://docs.rs/crossbeam-channel) queue.
//!
//! Submitting never blocks ([`Pool::try_submit`]). When the queue is full the
//! job comes back in [`SubmitError::Full`], so the caller decides what to do.
//! Shutdown stops intake, drains the queue and joins every thread; with a
//! deadline, the jobs that never started are handed back.
//!
//! ```
//! use hookpool::{Pool, SubmitError};
//!
//! let pool = Pool::builder()
//!     .workers(2)
//!     .queue_capacity(128)
//!     .name("emails")
//!     .build(|to: String| -> Result<(), String> {
//!         // send the email...
//!         if to.contains('@') { Ok(()) } else { Err(format!("bad address {to:?}")) }
//!     })?;
//!
//! match pool.try_submit("ada@example.com".to_owned()) {
//!     Ok(()) => {}
//!     Err(SubmitError::Full(job)) => eprintln!("busy, try {job} later"),
//!     Err(SubmitError::Closed(job)) => eprintln!("shutting down, {job} not sent"),
//! }
//!
//! let report = pool.shutdown();
//! assert!(report.unstarted.is_empty());
//! assert_eq!(report.stats.succeeded, 1);
//! # Ok::<(), hookpool::BuildError>(())
//! ```
//!
//! # Logging
//!
//! hookpool logs through the [`log`](https://docs.rs/log) facade under the
//! target `hookpool`: job failures at warn, panics at error, lifecycle at
//! debug. Payloads appear only at trace level, and signing secrets and TLS
//! private keys never appear at any level.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.85 (edition 2024). CI compiles every target with 1.85 itself, so
//! a newer language feature or standard-library item cannot slip in.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod bounded;
mod breaker;
mod clock;
mod dead_letter;
mod error;
mod pace;
mod pool;
pub mod prometheus;
mod retry;
mod saturation;
mod schedule;
mod stats;
mod store;
mod webhook;

pub use breaker::{Admission, Breaker, BreakerConfig, BreakerState, Endpoint, Health, Transition};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, JsonlDeadLetters, MemoryDeadLetters,
};
pub use error::{BatchError, BuildError, DurableError, SubmitError};
pub use pool::{MAX_QUEUE_CAPACITY, PanicEvent, Pool, PoolBuilder, ShutdownReport, Submitter};
pub use prometheus::Exposition;
pub use retry::{Backoff, RetryPolicy, Retryability, parse_retry_after};
pub use stats::{FINITE_BUCKETS, Histogram, Stats};
#[cfg(feature = "redis")]
pub use store::RedisQueue;
pub use store::{
    Journal, SharedQueueStats, SqliteDeadLetters, StoreError, StoreStats, StoredDeadLetter,
    Synchronous,
};
pub use webhook::builder::DispatcherBuilder;
pub use webhook::dispatcher::Dispatcher;
pub use webhook::events::{BreakerChange, Delivered};
pub use webhook::handle::DispatchHandle;
pub use webhook::report::{DispatchReport, DispatchStats, EndpointStats};
pub use webhook::send::DeliveryError;
pub use webhook::sign::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, SecretError,
    SigningSecret, VerifyError, new_message_id, signature_header, verify,
};
pub use webhook::tls::{TlsConfig, TlsConfigError, TlsErrorKind, TlsRoots};
pub use webhook::{Webhook, WebhookError};

#[cfg(test)]
mod test_util {
    use std::time::{Duration, Instant};

    /// Polls every millisecond until `cond` holds, for at most 20 s.
    pub(crate) fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        cond()
    }
}
