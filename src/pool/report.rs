//! [`ShutdownReport`]: what shutdown did.

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Shared, wait_finished};
use crate::stats::Stats;

/// What shutdown did: the jobs that never ran, and the workers that were
/// still busy when the deadline passed.
///
/// # Examples
///
/// ```
/// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
/// pool.try_submit(1).unwrap();
/// let report = pool.shutdown();
/// assert!(report.is_complete());
/// assert_eq!(report.stats.succeeded, 1);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[must_use = "the report holds jobs that never ran; dropping it drops them"]
#[non_exhaustive]
pub struct ShutdownReport<J> {
    /// Accepted jobs that never started, in no particular order. Empty after
    /// [`Pool::shutdown`](crate::Pool::shutdown), unless every worker thread
    /// died outside a job (a bug, logged at error level).
    pub unstarted: Vec<J>,
    /// Workers that were still inside a job at the deadline. Each finishes
    /// that job and then exits. Always 0 after [`Pool::shutdown`](crate::Pool::shutdown).
    pub still_running: usize,
    /// The counters when shutdown returned, refreshed by
    /// [`wait_running`](ShutdownReport::wait_running).
    pub stats: Stats,
    /// How long shutdown took.
    pub elapsed: Duration,
    pub(super) running: Vec<JoinHandle<()>>,
    pub(super) shared: Option<Arc<Shared>>,
}

impl<J> ShutdownReport<J> {
    pub(super) fn empty() -> Self {
        ShutdownReport {
            unstarted: Vec::new(),
            still_running: 0,
            stats: Stats::default(),
            elapsed: Duration::ZERO,
            running: Vec::new(),
            shared: None,
        }
    }

    /// Returns `true` if every accepted job ran and every worker was joined.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// assert!(pool.shutdown().is_complete());
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn is_complete(&self) -> bool {
        self.unstarted.is_empty() && self.running.is_empty()
    }

    /// Waits up to `timeout` for the workers that were still running at the
    /// deadline, joining those that finish. Returns how many are still
    /// running. If the report is dropped first, those threads finish their
    /// job and exit on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = hookpool::Pool::builder().workers(1).build(|_: u8| Ok::<(), String>(()))?;
    /// let mut report = pool.shutdown_timeout(Duration::from_secs(1));
    /// assert_eq!(report.wait_running(Duration::from_millis(10)), 0);
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn wait_running(&mut self, timeout: Duration) -> usize {
        let handles: Vec<_> = self.running.drain(..).map(Some).collect();
        wait_finished(
            &handles,
            crate::clock::deadline_after(Instant::now(), timeout),
        );
        for handle in handles.into_iter().flatten() {
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                self.running.push(handle);
            }
        }
        self.still_running = self.running.len();
        if let Some(shared) = &self.shared {
            self.stats = shared.stats(0);
        }
        self.still_running
    }
}

impl<J> fmt::Debug for ShutdownReport<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownReport")
            .field("unstarted", &self.unstarted.len())
            .field("still_running", &self.still_running)
            .field("stats", &self.stats)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}
