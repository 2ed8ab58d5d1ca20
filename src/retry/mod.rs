//! Retry policy: failure classification, exponential backoff as an iterator, and
//! `Retry-After` parsing.

use std::iter::FusedIterator;
use std::time::{Duration, SystemTime};

/// How a failed attempt should be treated.
///
/// # Examples
///
/// ```
/// use hookpool::{RetryPolicy, Retryability};
/// use std::time::Duration;
/// let policy = RetryPolicy::exponential(Duration::from_secs(1)).jitter(false);
/// let mut rng = fastrand::Rng::with_seed(7);
/// let delay = policy.next_delay(1, Retryability::Permanent, Duration::ZERO, &mut rng);
/// assert_eq!(delay, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retryability {
    /// A transient failure: retry after the policy's backoff delay.
    Retry,
    /// The server said when to come back (`Retry-After`): retry after this delay,
    /// clamped to the policy's [`retry_after_limit`](RetryPolicy::retry_after_limit).
    RetryAfter(Duration),
    /// Retrying cannot help: give up now.
    Permanent,
}

/// When and how often to retry a failed delivery.
///
/// The delay before attempt `n + 1`, after `n` attempts, is
/// `min(max_delay, base * factor^(n - 1))`; with jitter on, it is drawn uniformly from
/// `[0, that]` ("full jitter").
///
/// # Examples
///
/// ```
/// use hookpool::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::exponential(Duration::from_millis(500))
///     .jitter(false)
///     .max_attempts(4);
/// let delays: Vec<Duration> = policy.backoff(fastrand::Rng::with_seed(7)).collect();
/// assert_eq!(delays, [500, 1000, 2000].map(Duration::from_millis));
/// ```
#[derive(Debug, Clone)]
#[must_use = "a retry policy does nothing until it is used"]
pub struct RetryPolicy {
    base: Duration,
    factor: f64,
    max_delay: Duration,
    jitter: bool,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Exponential from 500ms, factor 2, full jitter, at most 60s per delay, 5 attempts,
    /// no total time budget, `Retry-After` clamped to 300s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: true,
            max_attempts: 5,
            max_elapsed: None,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff starting at `base`, with every other setting at its default.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_millis(100));
    /// assert_eq!(policy.attempts_limit(), 5);
    /// assert_eq!(policy.elapsed_limit(), None);
    /// assert_eq!(policy.retry_after_limit(), Duration::from_secs(300));
    /// ```
    pub fn exponential(base: Duration) -> Self {
        Self {
            base,
            ..Self::default()
        }
    }

    /// A single attempt, never retried.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// let policy = RetryPolicy::none();
    /// assert_eq!(policy.attempts_limit(), 1);
    /// assert_eq!(policy.backoff(fastrand::Rng::with_seed(7)).next(), None);
    /// ```
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Total attempts, including the first. `0` is treated as `1`.
    ///
    /// Defaults to 5.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_attempts(3).attempts_limit(), 3);
    /// assert_eq!(RetryPolicy::default().max_attempts(0).attempts_limit(), 1);
    /// ```
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Cap on any single computed backoff delay. Does not apply to `Retry-After`,
    /// which has its own cap, [`max_retry_after`](Self::max_retry_after).
    ///
    /// Defaults to 60s.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_secs(1))
    ///     .jitter(false)
    ///     .max_delay(Duration::from_secs(3));
    /// let delays: Vec<_> = policy.backoff(fastrand::Rng::with_seed(7)).collect();
    /// assert_eq!(delays, [1, 2, 3, 3].map(Duration::from_secs));
    /// ```
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.max_delay = cap;
        self
    }

    /// Growth factor between consecutive delays. Values below `1.0`, NaN and infinities
    /// are treated as `1.0` (constant backoff), so delays never shrink.
    ///
    /// Defaults to 2.0.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let constant = RetryPolicy::exponential(Duration::from_secs(1)).jitter(false).factor(0.5);
    /// let delays: Vec<_> = constant.max_attempts(3).backoff(fastrand::Rng::with_seed(7)).collect();
    /// assert_eq!(delays, [1, 1].map(Duration::from_secs));
    /// ```
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = if f.is_finite() && f >= 1.0 { f } else { 1.0 };
        self
    }

    /// Full jitter: when on, each backoff delay is uniform in `[0, computed]`, which spreads
    /// retries from many failed deliveries so they do not hit the endpoint in lockstep.
    ///
    /// Defaults to true.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_secs(1)).jitter(true);
    /// for d in policy.backoff(fastrand::Rng::with_seed(7)) {
    ///     assert!(d <= Duration::from_secs(60));
    /// }
    /// ```
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Total time budget, measured from the start of the first attempt. A retry whose
    /// delay would end past the budget is not made. `None` means no budget.
    ///
    /// Defaults to `None`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{RetryPolicy, Retryability};
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_secs(1))
    ///     .jitter(false)
    ///     .max_elapsed(Some(Duration::from_secs(10)));
    /// let next = |elapsed| {
    ///     policy.next_delay(1, Retryability::Retry, elapsed, &mut fastrand::Rng::with_seed(7))
    /// };
    /// assert_eq!(next(Duration::from_secs(9)), Some(Duration::from_secs(1)));
    /// assert_eq!(next(Duration::from_millis(9001)), None);
    /// ```
    pub fn max_elapsed(mut self, limit: Option<Duration>) -> Self {
        self.max_elapsed = limit;
        self
    }

    /// Cap on a server-provided `Retry-After` delay, so one bad header cannot park a
    /// delivery for days.
    ///
    /// Defaults to 300s.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{RetryPolicy, Retryability};
    /// use std::time::Duration;
    /// let policy = RetryPolicy::default().max_retry_after(Duration::from_secs(30));
    /// let why = Retryability::RetryAfter(Duration::from_secs(3600));
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// assert_eq!(policy.next_delay(1, why, Duration::ZERO, &mut rng), Some(Duration::from_secs(30)));
    /// ```
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// Total attempts allowed, including the first (always at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().attempts_limit(), 5);
    /// ```
    pub fn attempts_limit(&self) -> u32 {
        self.max_attempts
    }

    /// Total time budget measured from the first attempt, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::default().max_elapsed(Some(Duration::from_secs(60)));
    /// assert_eq!(policy.elapsed_limit(), Some(Duration::from_secs(60)));
    /// ```
    pub fn elapsed_limit(&self) -> Option<Duration> {
        self.max_elapsed
    }

    /// Cap applied to server-provided `Retry-After` delays.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// assert_eq!(RetryPolicy::default().retry_after_limit(), Duration::from_secs(300));
    /// ```
    pub fn retry_after_limit(&self) -> Duration {
        self.max_retry_after
    }

    /// The backoff schedule as an iterator: the delay before attempt 2, 3, ..., then `None`
    /// once [`attempts_limit`](Self::attempts_limit) is reached. It ignores
    /// [`elapsed_limit`](Self::elapsed_limit), which needs the real elapsed time; use
    /// [`next_delay`](Self::next_delay) for that.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_millis(500)).max_attempts(4);
    /// let a: Vec<_> = policy.backoff(fastrand::Rng::with_seed(7)).collect();
    /// let b: Vec<_> = policy.backoff(fastrand::Rng::with_seed(7)).collect();
    /// assert_eq!(a.len(), 3);
    /// assert_eq!(a, b);
    /// ```
    pub fn backoff(&self, rng: fastrand::Rng) -> Backoff {
        Backoff {
            policy: self.clone(),
            rng,
            attempts_made: 1,
        }
    }

    /// Decides the delay before the next attempt, or `None` to give up.
    ///
    /// `attempts_made` counts attempts so far, the first included (`0` is treated as `1`);
    /// `why` classifies the last failure; `elapsed` is the time since the first attempt
    /// started. Gives up on `Permanent`, when the attempts are used up, or when the delay
    /// would end past [`elapsed_limit`](Self::elapsed_limit). A `Retry-After` delay is
    /// clamped to [`retry_after_limit`](Self::retry_after_limit) and never jittered.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{RetryPolicy, Retryability};
    /// use std::time::Duration;
    /// let policy = RetryPolicy::exponential(Duration::from_millis(500)).jitter(false).max_attempts(3);
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// let mut next = |n| policy.next_delay(n, Retryability::Retry, Duration::ZERO, &mut rng);
    /// assert_eq!(next(1), Some(Duration::from_millis(500)));
    /// assert_eq!(next(2), Some(Duration::from_secs(1)));
    /// assert_eq!(next(3), None);
    /// ```
    pub fn next_delay(
        &self,
        attempts_made: u32,
        why: Retryability,
        elapsed: Duration,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        let attempts_made = attempts_made.max(1);
        if attempts_made >= self.max_attempts {
            return None;
        }
        let delay = match why {
            Retryability::Permanent => return None,
            Retryability::Retry => self.delay_after(attempts_made, rng),
            Retryability::RetryAfter(d) => d.min(self.max_retry_after),
        };
        match self.max_elapsed {
            Some(limit) if elapsed.saturating_add(delay) > limit => None,
            _ => Some(delay),
        }
    }

    /// The backoff delay after `attempts_made` (>= 1) attempts, jittered if enabled.
    fn delay_after(&self, attempts_made: u32, rng: &mut fastrand::Rng) -> Duration {
        let computed = self.unjittered(attempts_made);
        if self.jitter {
            nanos_to_duration(rng.u128(0..=computed.as_nanos()))
        } else {
            computed
        }
    }

    fn unjittered(&self, attempts_made: u32) -> Duration {
        let cap = self.max_delay;
        if self.base.is_zero() {
            // Avoids 0 * inf = NaN below for huge exponents.
            return Duration::ZERO;
        }
        let exponent = i32::try_from(attempts_made.saturating_sub(1)).unwrap_or(i32::MAX);
        // In nanoseconds so that integer bases times powers of two stay exact.
        let nanos = self.base.as_nanos() as f64 * self.factor.powi(exponent);
        if nanos < cap.as_nanos() as f64 {
            nanos_to_duration(nanos.round() as u128).min(cap)
        } else {
            cap
        }
    }
}

/// Saturating conversion; `u128` nanoseconds can exceed [`Duration::MAX`].
fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// A [`RetryPolicy`]'s backoff schedule: the delay before attempt 2, 3, ..., `None` when
/// the attempts are used up. Created by [`RetryPolicy::backoff`].
///
/// # Examples
///
/// ```
/// use hookpool::RetryPolicy;
/// use std::time::Duration;
/// let mut backoff = RetryPolicy::exponential(Duration::from_secs(1))
///     .jitter(false)
///     .max_attempts(3)
///     .backoff(fastrand::Rng::with_seed(7));
/// assert_eq!(backoff.len(), 2);
/// assert_eq!(backoff.next(), Some(Duration::from_secs(1)));
/// assert_eq!(backoff.next(), Some(Duration::from_secs(2)));
/// assert_eq!(backoff.next(), None);
/// ```
#[derive(Debug, Clone)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Backoff {
    policy: RetryPolicy,
    rng: fastrand::Rng,
    attempts_made: u32,
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempts_made >= self.policy.max_attempts {
            return None;
        }
        let delay = self.policy.delay_after(self.attempts_made, &mut self.rng);
        self.attempts_made += 1;
        Some(delay)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.policy.max_attempts.saturating_sub(self.attempts_made);
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Backoff {}
impl FusedIterator for Backoff {}

/// Parses an HTTP `Retry-After` header value (RFC 9110 §10.2.3): delta-seconds or an
/// HTTP-date (IMF-fixdate, RFC 850 or asctime).
///
/// Returns `None` for an empty or malformed value. A date at or before `now` gives
/// [`Duration::ZERO`]. Huge delta-seconds saturate rather than fail; clamp the result
/// with [`RetryPolicy::max_retry_after`]. Never panics.
///
/// # Examples
///
/// ```
/// use hookpool::parse_retry_after;
/// use std::time::{Duration, SystemTime};
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
/// let date = "Tue, 14 Nov 2023 22:15:20 GMT";
/// assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("-5", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, so the only possible parse error is overflow.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests;
