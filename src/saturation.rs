//! Saturation warnings: a queue nearly full, every worker busy with work
//! waiting. Checked at most every [`CHECK_EVERY`], using timestamps the hot
//! paths already take, and logged at most once per `warn_interval` each.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the hot paths look at the queue's depth and the workers.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(10);

/// The queue is "nearly full" from this fraction of its capacity.
const QUEUE_WARN_PERCENT: usize = 80;

/// What a check saw.
pub(crate) struct Load {
    pub(crate) queued: usize,
    pub(crate) capacity: usize,
    pub(crate) busy: usize,
    pub(crate) workers: usize,
}

/// Lets one message through per interval, across threads, without a lock.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Nanoseconds since the epoch when it may fire again; 0 = now.
    next: AtomicU64,
}

impl RateLimit {
    pub(crate) fn new() -> Self {
        RateLimit {
            next: AtomicU64::new(0),
        }
    }

    /// Whether it would let the next caller log at `now_nanos`, as a new
    /// one would.
    pub(crate) fn is_idle(&self, now_nanos: u64) -> bool {
        now_nanos >= self.next.load(Ordering::Relaxed)
    }

    /// Returns `true` for the one caller allowed to log now.
    pub(crate) fn allow(&self, now_nanos: u64, interval: Duration) -> bool {
        let next = self.next.load(Ordering::Relaxed);
        if now_nanos < next {
            return false;
        }
        let until = now_nanos
            .saturating_add(u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX))
            .max(1);
        self.next
            .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// One pool's saturation state.
#[derive(Debug)]
pub(crate) struct Monitor {
    epoch: Instant,
    interval: Duration,
    next_check: AtomicU64,
    queue: RateLimit,
    busy: RateLimit,
}

impl Monitor {
    pub(crate) fn new(interval: Duration) -> Self {
        Monitor {
            epoch: Instant::now(),
            interval,
            next_check: AtomicU64::new(0),
            queue: RateLimit::new(),
            busy: RateLimit::new(),
        }
    }

    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A timestamp for a queue-wait stamp: [`nanos`](Monitor::nanos), made
    /// non-zero (the epoch itself reads as 1 ns after it).
    pub(crate) fn stamp(&self, now: Instant) -> NonZeroU64 {
        NonZeroU64::new(self.nanos(now)).unwrap_or(NonZeroU64::MIN)
    }

    /// Called on hot paths with a timestamp they already have, in
    /// [`nanos`](Monitor::nanos): a load of a read-mostly word, and a real
    /// check once per [`CHECK_EVERY`].
    #[inline]
    pub(crate) fn tick_nanos(&self, name: &str, now_nanos: u64, load: impl FnOnce() -> Load) {
        let next = self.next_check.load(Ordering::Relaxed);
        if now_nanos < next {
            return;
        }
        let until = now_nanos + CHECK_EVERY.as_nanos() as u64;
        if self
            .next_check
            .compare_exchange(next, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.check(name, now_nanos, load());
        }
    }

    /// Checks now (cold paths, such as a refused submission).
    pub(crate) fn check_now(&self, name: &str, load: Load) {
        self.check(name, self.nanos(Instant::now()), load);
    }

    fn check(&self, name: &str, now_nanos: u64, load: Load) {
        let Load {
            queued,
            capacity,
            busy,
            workers,
        } = load;
        if queued * 100 >= capacity * QUEUE_WARN_PERCENT
            && self.queue.allow(now_nanos, self.interval)
        {
            log::warn!(
                target: "hookpool",
                "{name}: queue at {queued} of {capacity} ({}%); submissions are refused when it is full",
                queued * 100 / capacity.max(1)
            );
        }
        // A busy worker is only saturation when work is waiting for it.
        if busy >= workers && queued > 0 && self.busy.allow(now_nanos, self.interval) {
            log::warn!(target: "hookpool", "{name}: all {workers} workers are busy and {queued} job(s) are waiting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_through_per_interval() {
        let limit = RateLimit::new();
        let second = Duration::from_secs(1);
        assert!(limit.allow(0, second));
        assert!(!limit.allow(1, second));
        assert!(!limit.allow(999_999_999, second));
        assert!(limit.allow(1_000_000_000, second));
        assert!(!limit.allow(1_000_000_001, second));
    }

    #[test]
    fn a_limiter_is_idle_exactly_when_it_would_let_the_next_one_through() {
        let limit = RateLimit::new();
        let second = Duration::from_secs(1);
        assert!(limit.is_idle(0));
        assert!(limit.allow(5, second));
        assert!(!limit.is_idle(6));
        assert!(!limit.is_idle(1_000_000_004));
        assert!(limit.is_idle(1_000_000_005));
        assert!(limit.allow(1_000_000_005, second));
    }

    #[test]
    fn zero_interval_always_allows() {
        let limit = RateLimit::new();
        for t in 0..5 {
            assert!(limit.allow(t, Duration::ZERO));
        }
    }
}
