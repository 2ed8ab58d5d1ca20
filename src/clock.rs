//! Injectable time sources, so policies and the delay queue can be tested without sleeping.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// A source of time. Injected so policies and the delay queue can be tested without sleeping.
///
/// [`now`](Clock::now) is monotonic and drives every deadline; [`system_now`](Clock::system_now)
/// is wall-clock time, used only where a protocol needs it (an HTTP-date `Retry-After`,
/// a signature timestamp).
///
/// # Examples
///
/// ```
/// use hookpool::{Clock, ManualClock, SystemClock};
/// use std::time::Duration;
/// fn deadline(clock: &dyn Clock, after: Duration) -> std::time::Instant {
///     clock.now() + after
/// }
///
/// let manual = ManualClock::new();
/// let start = manual.now();
/// assert_eq!(deadline(&manual, Duration::from_secs(5)), start + Duration::from_secs(5));
/// assert!(deadline(&SystemClock, Duration::ZERO) <= SystemClock.now());
/// ```
pub trait Clock: Send + Sync + Debug {
    /// The current monotonic time.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, SystemClock};
    /// let a = SystemClock.now();
    /// assert!(SystemClock.now() >= a);
    /// ```
    fn now(&self) -> Instant;

    /// The current wall-clock time.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, SystemClock};
    /// use std::time::SystemTime;
    /// assert!(SystemClock.system_now() > SystemTime::UNIX_EPOCH);
    /// ```
    fn system_now(&self) -> SystemTime;
}

/// The real clock: [`Instant::now`] and [`SystemTime::now`].
///
/// # Examples
///
/// ```
/// use hookpool::{Clock, SystemClock};
/// let clock = SystemClock;
/// let before = clock.now();
/// assert!(clock.now() >= before);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
///
/// Clones share the same time, so a test can keep one handle and give another to the code
/// under test. Both readings start at a fixed point: the monotonic reading at the
/// [`Instant::now`] of construction, the wall-clock reading at
/// `UNIX_EPOCH + 1_700_000_000s` (2023-11-14T22:13:20Z) unless built with
/// [`ManualClock::starting_at`].
///
/// # Examples
///
/// ```
/// use hookpool::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// let handle = clock.clone();
/// let start = clock.now();
/// handle.advance(Duration::from_secs(3));
/// assert_eq!(clock.now() - start, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<Readings>>,
}

#[derive(Debug)]
struct Readings {
    now: Instant,
    system: SystemTime,
}

/// 2023-11-14T22:13:20Z: a fixed, recent, whole-second wall-clock start for reproducible tests.
const DEFAULT_SYSTEM_START: Duration = Duration::from_secs(1_700_000_000);

impl ManualClock {
    /// A clock whose wall-clock reading starts at `UNIX_EPOCH + 1_700_000_000s`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, ManualClock};
    /// use std::time::{Duration, SystemTime};
    /// let clock = ManualClock::new();
    /// let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// assert_eq!(clock.system_now(), expected);
    /// ```
    pub fn new() -> Self {
        Self::starting_at(SystemTime::UNIX_EPOCH + DEFAULT_SYSTEM_START)
    }

    /// A clock whose wall-clock reading starts at `system`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, ManualClock};
    /// use std::time::SystemTime;
    /// let clock = ManualClock::starting_at(SystemTime::UNIX_EPOCH);
    /// assert_eq!(clock.system_now(), SystemTime::UNIX_EPOCH);
    /// ```
    pub fn starting_at(system: SystemTime) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Readings {
                now: Instant::now(),
                system,
            })),
        }
    }

    /// Moves both readings forward by `by`, for every clone of this clock.
    ///
    /// # Panics
    ///
    /// Panics if either reading would overflow, as `Instant + Duration` does. Only absurd
    /// durations such as [`Duration::MAX`] get there.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, ManualClock};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let (t0, w0) = (clock.now(), clock.system_now());
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now() - t0, Duration::from_millis(1500));
    /// assert_eq!(clock.system_now().duration_since(w0).unwrap(), Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, by: Duration) {
        let mut r = self.inner.lock();
        // Compute both before writing either, so a panic leaves the readings consistent.
        let now = r
            .now
            .checked_add(by)
            .expect("manual clock instant overflow");
        let system = r
            .system
            .checked_add(by)
            .expect("manual clock system time overflow");
        r.now = now;
        r.system = system;
    }

    /// Sets the wall-clock reading, leaving the monotonic reading alone, as an NTP step
    /// would. Use it to test code that must not confuse the two.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Clock, ManualClock};
    /// use std::time::SystemTime;
    /// let clock = ManualClock::new();
    /// let t0 = clock.now();
    /// clock.set_system(SystemTime::UNIX_EPOCH);
    /// assert_eq!(clock.system_now(), SystemTime::UNIX_EPOCH);
    /// assert_eq!(clock.now(), t0);
    /// ```
    pub fn set_system(&self, to: SystemTime) {
        self.inner.lock().system = to;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.lock().now
    }

    fn system_now(&self) -> SystemTime {
        self.inner.lock().system
    }
}

/// `start + wait`, or a point a century away if that overflows: a deadline
/// that effectively never comes, instead of a panic.
pub(crate) fn deadline_after(start: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start
        .checked_add(wait.min(CENTURY))
        .or_else(|| start.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn clocks_are_send_sync_and_object_safe() {
        assert_send_sync::<SystemClock>();
        assert_send_sync::<ManualClock>();
        let clocks: Vec<Arc<dyn Clock>> = vec![Arc::new(SystemClock), Arc::new(ManualClock::new())];
        assert_eq!(clocks.len(), 2);
    }

    #[test]
    fn manual_clock_stands_still_until_advanced() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::ZERO);
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_nanos(1));
        assert_eq!(clock.now() - t0, Duration::from_nanos(1));
    }

    #[test]
    fn clones_share_time_but_new_clocks_do_not() {
        let a = ManualClock::new();
        let b = a.clone();
        let other = ManualClock::new();
        let (a0, other0) = (a.now(), other.now());
        b.advance(Duration::from_secs(10));
        b.set_system(SystemTime::UNIX_EPOCH);
        assert_eq!(a.now() - a0, Duration::from_secs(10));
        assert_eq!(a.system_now(), SystemTime::UNIX_EPOCH);
        assert_eq!(other.now(), other0);
        assert_eq!(other.system_now(), ManualClock::default().system_now());
    }

    #[test]
    fn advance_after_set_system_moves_from_the_new_wall_time() {
        let clock = ManualClock::starting_at(SystemTime::UNIX_EPOCH);
        clock.set_system(SystemTime::UNIX_EPOCH + Duration::from_secs(100));
        clock.advance(Duration::from_secs(5));
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(105);
        assert_eq!(clock.system_now(), expected);
    }
}
