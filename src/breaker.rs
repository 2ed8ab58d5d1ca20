//! Circuit breaker: a pure state machine with time passed in, and the per-endpoint map.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a rejected caller waits before asking a half-open breaker again, at most.
/// Probes usually finish within a request timeout, so re-checking every second is prompt
/// without spinning; a shorter cooldown lowers it further.
const HALF_OPEN_RECHECK: Duration = Duration::from_secs(1);

/// Longest cooldown kept, so `opened_at + cooldown` always fits in an `Instant`.
const MAX_COOLDOWN: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Circuit breaker settings, shared by every endpoint's breaker.
///
/// # Examples
///
/// ```
/// use hookpool::BreakerConfig;
/// use std::time::Duration;
/// let cfg = BreakerConfig::default().failure_threshold(3).cooldown(Duration::from_secs(10));
/// assert_eq!(cfg.failure_limit(), 3);
/// assert_eq!(cfg.cooldown_period(), Duration::from_secs(10));
/// assert_eq!(cfg.probe_limit(), 1);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a breaker config does nothing until it is used"]
pub struct BreakerConfig {
    failure_threshold: u32,
    cooldown: Duration,
    half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, cools down for 30s, then lets 1 probe through.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    /// A config whose breakers always admit and never change state.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::disabled().failure_limit(), 0);
    /// ```
    pub fn disabled() -> Self {
        Self::default().failure_threshold(0)
    }

    /// Consecutive failures that open the breaker. `0` disables the breaker entirely.
    ///
    /// Defaults to 5.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::default().failure_threshold(2).failure_limit(), 2);
    /// ```
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n;
        self
    }

    /// How long an open breaker rejects before letting probes through. Values above one
    /// year are clamped to one year.
    ///
    /// Defaults to 30s.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// use std::time::Duration;
    /// let cfg = BreakerConfig::default().cooldown(Duration::from_secs(5));
    /// assert_eq!(cfg.cooldown_period(), Duration::from_secs(5));
    /// ```
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cooldown = d.min(MAX_COOLDOWN);
        self
    }

    /// Probes allowed in flight at once while half-open. `0` is treated as `1`.
    ///
    /// Defaults to 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::default().half_open_probes(3).probe_limit(), 3);
    /// assert_eq!(BreakerConfig::default().half_open_probes(0).probe_limit(), 1);
    /// ```
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n.max(1);
        self
    }

    /// Consecutive failures that open the breaker; `0` means disabled.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::default().failure_limit(), 5);
    /// ```
    pub fn failure_limit(&self) -> u32 {
        self.failure_threshold
    }

    /// How long an open breaker rejects.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// use std::time::Duration;
    /// assert_eq!(BreakerConfig::default().cooldown_period(), Duration::from_secs(30));
    /// ```
    pub fn cooldown_period(&self) -> Duration {
        self.cooldown
    }

    /// Probes allowed in flight at once while half-open (at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::default().probe_limit(), 1);
    /// ```
    pub fn probe_limit(&self) -> u32 {
        self.half_open_probes
    }

    fn is_disabled(&self) -> bool {
        self.failure_threshold == 0
    }
}

/// Where a breaker is in its cycle. Serializes and displays as `closed`, `open`, `half_open`.
///
/// # Examples
///
/// ```
/// use hookpool::BreakerState;
/// assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Healthy: every request is admitted.
    Closed,
    /// Failing: requests are rejected until the cooldown ends.
    Open,
    /// Cooldown over: a limited number of probes test the endpoint.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        })
    }
}

/// A change of [`BreakerState`], returned so the caller can log it outside any lock.
///
/// # Examples
///
/// ```
/// use hookpool::{Breaker, BreakerConfig, BreakerState, Health, Transition};
/// let mut breaker = Breaker::new(&BreakerConfig::default().failure_threshold(1));
/// let t = breaker.record(Health::Failure, false, std::time::Instant::now());
/// assert_eq!(t, Some(Transition { from: BreakerState::Closed, to: BreakerState::Open }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
}

/// The answer to [`Breaker::admit`].
///
/// # Examples
///
/// ```
/// use hookpool::{Admission, Breaker, BreakerConfig};
/// use std::time::Instant;
/// let mut breaker = Breaker::new(&BreakerConfig::default());
/// assert_eq!(breaker.admit(Instant::now()), (Admission::Allowed, None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it; the breaker is closed.
    Allowed,
    /// Send it as a half-open probe; pass `was_probe = true` to [`Breaker::record`].
    Probe,
    /// Do not send it now; ask again at `retry_at`.
    Rejected {
        /// When asking again may succeed.
        retry_at: Instant,
    },
}

/// The outcome of an attempt, as far as endpoint health goes.
///
/// # Examples
///
/// ```
/// use hookpool::{Breaker, BreakerConfig, BreakerState, Health};
/// use std::time::Instant;
/// let mut breaker = Breaker::new(&BreakerConfig::default().failure_threshold(1));
/// assert_eq!(breaker.record(Health::Neutral, false, Instant::now()), None);
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The endpoint answered well.
    Success,
    /// A retryable failure: timeout, 5xx, 429, transport error.
    Failure,
    /// Says nothing about health, such as a permanent 4xx.
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed { failures: u32 },
    Open { opened_at: Instant },
    HalfOpen { in_flight: u32 },
}

/// One endpoint's circuit breaker: a pure state machine, with time passed in.
///
/// Results of requests admitted before the breaker opened (`was_probe = false` while open
/// or half-open) are ignored: they describe the endpoint before the breaker's last
/// decision. An open breaker ignores every result, and a closed one counts every result,
/// probe or not. A probe result is credited to the current half-open period, even if
/// that probe was admitted in an earlier one.
///
/// # Examples
///
/// ```
/// use hookpool::{Admission, Breaker, BreakerConfig, BreakerState, Health};
/// use std::time::{Duration, Instant};
/// let cfg = BreakerConfig::default().failure_threshold(1).cooldown(Duration::from_secs(10));
/// let mut breaker = Breaker::new(&cfg);
/// let t0 = Instant::now();
/// let opened = breaker.record(Health::Failure, false, t0).unwrap();
/// assert_eq!(opened.to, BreakerState::Open);
/// let retry_at = t0 + Duration::from_secs(10);
/// assert_eq!(breaker.admit(t0).0, Admission::Rejected { retry_at });
/// assert_eq!(breaker.admit(retry_at).0, Admission::Probe);
/// breaker.record(Health::Success, true, retry_at);
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    phase: Phase,
}

impl Breaker {
    /// A closed breaker.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Breaker, BreakerConfig, BreakerState};
    /// assert_eq!(Breaker::new(&BreakerConfig::default()).state(), BreakerState::Closed);
    /// ```
    pub fn new(cfg: &BreakerConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            phase: Phase::Closed { failures: 0 },
        }
    }

    /// The current state. An open breaker whose cooldown has ended still reports
    /// [`BreakerState::Open`] until the next [`admit`](Self::admit).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Breaker, BreakerConfig, BreakerState, Health};
    /// use std::time::Instant;
    /// let mut breaker = Breaker::new(&BreakerConfig::default().failure_threshold(1));
    /// breaker.record(Health::Failure, false, Instant::now());
    /// assert_eq!(breaker.state(), BreakerState::Open);
    /// ```
    pub fn state(&self) -> BreakerState {
        match self.phase {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to send one request at `now`. An open breaker whose cooldown has ended turns
    /// half-open here, and that transition is returned. A half-open breaker with every
    /// probe slot taken rejects until `now + min(cooldown, 1s)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Admission, Breaker, BreakerConfig, BreakerState, Health, Transition};
    /// use std::time::{Duration, Instant};
    /// let cfg = BreakerConfig::default().failure_threshold(1).cooldown(Duration::from_secs(5));
    /// let mut breaker = Breaker::new(&cfg);
    /// let t0 = Instant::now();
    /// breaker.record(Health::Failure, false, t0);
    /// let later = t0 + Duration::from_secs(5);
    /// let half_open = Transition { from: BreakerState::Open, to: BreakerState::HalfOpen };
    /// assert_eq!(breaker.admit(later), (Admission::Probe, Some(half_open)));
    /// let recheck = later + Duration::from_secs(1);
    /// assert_eq!(breaker.admit(later), (Admission::Rejected { retry_at: recheck }, None));
    /// ```
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        if self.cfg.is_disabled() {
            return (Admission::Allowed, None);
        }
        let mut transition = None;
        if let Phase::Open { opened_at } = self.phase {
            let retry_at = later(opened_at, self.cfg.cooldown);
            if now < retry_at {
                return (Admission::Rejected { retry_at }, None);
            }
            transition = self.enter(Phase::HalfOpen { in_flight: 0 });
        }
        let admission = match &mut self.phase {
            Phase::HalfOpen { in_flight } if *in_flight < self.cfg.half_open_probes => {
                *in_flight += 1;
                Admission::Probe
            }
            Phase::HalfOpen { .. } => Admission::Rejected {
                retry_at: later(now, self.cfg.cooldown.min(HALF_OPEN_RECHECK)),
            },
            _ => Admission::Allowed,
        };
        (admission, transition)
    }

    /// Records the result of an admitted request; `was_probe` says whether
    /// [`admit`](Self::admit) returned [`Admission::Probe`] for it. Returns the transition
    /// this caused, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Breaker, BreakerConfig, BreakerState, Health};
    /// use std::time::Instant;
    /// let mut breaker = Breaker::new(&BreakerConfig::default().failure_threshold(2));
    /// let now = Instant::now();
    /// assert_eq!(breaker.record(Health::Failure, false, now), None);
    /// assert_eq!(breaker.record(Health::Success, false, now), None);
    /// assert_eq!(breaker.record(Health::Failure, false, now), None);
    /// assert_eq!(breaker.record(Health::Failure, false, now).unwrap().to, BreakerState::Open);
    /// ```
    pub fn record(&mut self, health: Health, was_probe: bool, now: Instant) -> Option<Transition> {
        if self.cfg.is_disabled() {
            return None;
        }
        let threshold = self.cfg.failure_threshold;
        match self.phase {
            Phase::Closed { failures } => match health {
                Health::Failure if failures.saturating_add(1) >= threshold => {
                    self.enter(Phase::Open { opened_at: now })
                }
                Health::Failure => self.stay(Phase::Closed {
                    failures: failures + 1,
                }),
                Health::Success => self.stay(Phase::Closed { failures: 0 }),
                Health::Neutral => None,
            },
            Phase::Open { .. } => None,
            Phase::HalfOpen { .. } if !was_probe => None,
            Phase::HalfOpen { in_flight } => match health {
                Health::Success => self.enter(Phase::Closed { failures: 0 }),
                Health::Failure => self.enter(Phase::Open { opened_at: now }),
                Health::Neutral => self.stay(Phase::HalfOpen {
                    in_flight: in_flight.saturating_sub(1),
                }),
            },
        }
    }

    /// Moves to `next`, a different state, and reports it.
    fn enter(&mut self, next: Phase) -> Option<Transition> {
        let from = self.state();
        self.phase = next;
        Some(Transition {
            from,
            to: self.state(),
        })
    }

    /// Updates the counters within the current state.
    fn stay(&mut self, next: Phase) -> Option<Transition> {
        self.phase = next;
        None
    }
}

/// `t + d`, saturating far in the future rather than overflowing: a breaker
/// with an enormous cooldown stays open, it never admits early.
fn later(t: Instant, d: Duration) -> Instant {
    crate::clock::deadline_after(t, d)
}

/// An HTTP origin, the unit a breaker guards. Scheme and host are ASCII-lowercased.
///
/// # Examples
///
/// ```
/// use hookpool::Endpoint;
/// let ep = Endpoint::new("HTTPS", "Example.COM", 443);
/// assert_eq!(ep.to_string(), "https://example.com:443");
/// assert_eq!((ep.scheme(), ep.host(), ep.port()), ("https", "example.com", 443));
/// assert_eq!(Endpoint::new("http", "::1", 80).to_string(), "http://[::1]:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    scheme: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// An endpoint; `scheme` and `host` are ASCII-lowercased.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("HTTP", "A.b", 80), Endpoint::new("http", "a.B", 80));
    /// ```
    pub fn new(scheme: &str, host: &str, port: u16) -> Self {
        Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    /// The scheme, lowercase.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("HTTPS", "a", 443).scheme(), "https");
    /// ```
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lowercase, as given (IPv6 addresses with or without brackets).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("https", "API.example", 443).host(), "api.example");
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("https", "a", 8443).port(), 8443);
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bare IPv6 host needs brackets, or its colons run into the port's.
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Every endpoint's breaker behind one lock. Nothing but the state change happens under
/// the lock; transitions are returned so the caller logs them after it is released.
/// Entries are created on first use and never removed.
// Until pool.rs uses it, only the tests do.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct Breakers {
    cfg: BreakerConfig,
    map: Mutex<HashMap<Endpoint, Breaker>>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl Breakers {
    /// An empty map whose breakers all use `cfg`.
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// [`Breaker::admit`] for `ep`, creating its breaker if needed.
    pub(crate) fn admit(&self, ep: &Endpoint, now: Instant) -> (Admission, Option<Transition>) {
        if self.cfg.is_disabled() {
            return (Admission::Allowed, None);
        }
        let mut map = self.map.lock();
        if let Some(breaker) = map.get_mut(ep) {
            return breaker.admit(now);
        }
        let mut breaker = Breaker::new(&self.cfg);
        let answer = breaker.admit(now);
        map.insert(ep.clone(), breaker);
        answer
    }

    /// [`Breaker::record`] for `ep`. Only a failure creates a missing breaker, since
    /// success or neutral on a fresh breaker would leave it unchanged.
    pub(crate) fn record(
        &self,
        ep: &Endpoint,
        health: Health,
        was_probe: bool,
        now: Instant,
    ) -> Option<Transition> {
        if self.cfg.is_disabled() {
            return None;
        }
        let mut map = self.map.lock();
        if let Some(breaker) = map.get_mut(ep) {
            return breaker.record(health, was_probe, now);
        }
        if health != Health::Failure {
            return None;
        }
        let mut breaker = Breaker::new(&self.cfg);
        let transition = breaker.record(health, was_probe, now);
        map.insert(ep.clone(), breaker);
        transition
    }

    /// Every known endpoint and its state, sorted by endpoint.
    pub(crate) fn snapshot(&self) -> Vec<(Endpoint, BreakerState)> {
        let mut all: Vec<_> = {
            let map = self.map.lock();
            map.iter().map(|(ep, b)| (ep.clone(), b.state())).collect()
        };
        // Sorted after the guard drops, to keep the critical section short.
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many endpoints' breakers are in state `s`.
    pub(crate) fn count_in(&self, s: BreakerState) -> usize {
        self.map.lock().values().filter(|b| b.state() == s).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::{Closed, HalfOpen, Open};
    use Health::{Failure, Neutral, Success};
    use proptest::prelude::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn tr(from: BreakerState, to: BreakerState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    fn rejected(a: Admission) -> bool {
        matches!(a, Admission::Rejected { .. })
    }

    /// Threshold 2 and cooldown 10s, opened at `t0`.
    fn opened(probes: u32, t0: Instant) -> Breaker {
        let cfg = BreakerConfig::default().failure_threshold(2);
        let mut b = Breaker::new(&cfg.cooldown(secs(10)).half_open_probes(probes));
        assert_eq!(b.record(Failure, false, t0), None);
        assert_eq!(b.record(Failure, false, t0), tr(Closed, Open));
        b
    }

    #[test]
    fn closed_opens_on_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&BreakerConfig::default().failure_threshold(3));
        for h in [
            Failure, Failure, Neutral, Success, Failure, Neutral, Failure,
        ] {
            assert_eq!(b.record(h, false, t0), None);
            assert_eq!(b.admit(t0), (Admission::Allowed, None));
        }
        assert_eq!(b.record(Failure, false, t0), tr(Closed, Open));
    }

    #[test]
    fn open_rejects_until_cooldown_then_probe_decides() {
        let t0 = Instant::now();
        let mut b = opened(1, t0);
        let retry_at = t0 + secs(10);
        for t in [t0, retry_at - Duration::from_nanos(1)] {
            assert_eq!(b.admit(t), (Admission::Rejected { retry_at }, None));
        }
        assert_eq!(b.admit(retry_at), (Admission::Probe, tr(Open, HalfOpen)));
        let t1 = t0 + secs(25);
        assert_eq!(b.record(Failure, true, t1), tr(HalfOpen, Open));
        let retry_at = t1 + secs(10);
        assert_eq!(
            b.admit(t1 + secs(9)),
            (Admission::Rejected { retry_at }, None)
        );
        assert_eq!(b.admit(retry_at), (Admission::Probe, tr(Open, HalfOpen)));
        assert_eq!(b.record(Success, true, retry_at), tr(HalfOpen, Closed));
        // Closing reset the failure count.
        assert_eq!(b.record(Failure, false, retry_at), None);
        assert_eq!(b.state(), Closed);
    }

    #[test]
    fn busy_half_open_rechecks_after_min_of_cooldown_and_one_second() {
        let t0 = Instant::now();
        let mut b = opened(1, t0);
        let t1 = t0 + secs(10);
        assert_eq!(b.admit(t1).0, Admission::Probe);
        let retry_at = t1 + secs(1);
        assert_eq!(b.admit(t1), (Admission::Rejected { retry_at }, None));
        let ms200 = Duration::from_millis(200);
        let mut b = Breaker::new(
            &BreakerConfig::default()
                .failure_threshold(1)
                .cooldown(ms200),
        );
        b.record(Failure, false, t0);
        assert_eq!(b.admit(t1).0, Admission::Probe);
        assert_eq!(
            b.admit(t1).0,
            Admission::Rejected {
                retry_at: t1 + ms200
            }
        );
    }

    #[test]
    fn several_probes_and_neutral_results() {
        let t0 = Instant::now();
        let mut b = opened(3, t0);
        let t1 = t0 + secs(10);
        assert_eq!(b.admit(t1), (Admission::Probe, tr(Open, HalfOpen)));
        assert_eq!(b.admit(t1), (Admission::Probe, None));
        assert_eq!(b.admit(t1), (Admission::Probe, None));
        assert!(rejected(b.admit(t1).0));
        // A neutral probe frees its slot without deciding anything.
        assert_eq!(b.record(Neutral, true, t1), None);
        assert_eq!(b.admit(t1).0, Admission::Probe);
        assert_eq!(b.record(Success, true, t1), tr(HalfOpen, Closed));
        // The other probes' results land on a closed breaker like any result.
        assert_eq!(b.record(Success, true, t1), None);
        assert_eq!(b.record(Failure, true, t1), None);
        assert_eq!(b.state(), Closed);
    }

    #[test]
    fn late_results_change_nothing() {
        let t0 = Instant::now();
        let mut b = opened(1, t0);
        for h in [Failure, Success, Neutral] {
            assert_eq!(b.record(h, false, t0 + secs(5)), None);
            assert_eq!(b.record(h, true, t0 + secs(5)), None);
        }
        // Still opened at t0: a late failure did not push the cooldown out.
        assert_eq!(
            b.admit(t0 + secs(10)),
            (Admission::Probe, tr(Open, HalfOpen))
        );
        for h in [Failure, Success, Neutral] {
            assert_eq!(b.record(h, false, t0 + secs(10)), None);
        }
        // Nor did a late neutral free the probe slot.
        assert!(rejected(b.admit(t0 + secs(10)).0));
        assert_eq!(b.state(), HalfOpen);
    }

    #[test]
    fn threshold_zero_disables_and_config_is_normalised() {
        let t0 = Instant::now();
        let mut b = Breaker::new(&BreakerConfig::disabled());
        for i in 0..100 {
            assert_eq!(b.record(Failure, i % 2 == 0, t0), None);
            assert_eq!(b.admit(t0), (Admission::Allowed, None));
        }
        assert_eq!(b.state(), Closed);
        let cfg = BreakerConfig::default()
            .half_open_probes(0)
            .cooldown(Duration::MAX);
        assert_eq!(
            (cfg.probe_limit(), cfg.cooldown_period()),
            (1, MAX_COOLDOWN)
        );
        assert_eq!([Closed, Open].map(|s| s.to_string()), ["closed", "open"]);
    }

    #[test]
    fn breakers_are_per_endpoint_and_snapshot_sorted() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Breakers>();
        let t0 = Instant::now();
        let map = Breakers::new(BreakerConfig::default().failure_threshold(1));
        let a = Endpoint::new("https", "b.example", 443);
        let b = Endpoint::new("HTTPS", "A.example", 443);
        assert_eq!(map.record(&a, Success, false, t0), None);
        assert!(map.snapshot().is_empty(), "a success must not insert");
        assert_eq!(map.admit(&b, t0), (Admission::Allowed, None));
        assert_eq!(map.record(&a, Failure, false, t0), tr(Closed, Open));
        assert!(rejected(map.admit(&a, t0).0));
        assert_eq!(map.admit(&b, t0).0, Admission::Allowed);
        assert_eq!(map.snapshot(), [(b, Closed), (a.clone(), Open)]);
        let counts = [Closed, Open, HalfOpen].map(|s| map.count_in(s));
        assert_eq!(counts, [1, 1, 0]);
        let off = Breakers::new(BreakerConfig::disabled());
        assert_eq!(off.record(&a, Failure, false, t0), None);
        assert_eq!(off.admit(&a, t0), (Admission::Allowed, None));
        assert!(off.snapshot().is_empty());
    }

    /// The specification restated as plainly as possible, time in ms after a base.
    #[derive(Debug, Default)]
    struct Model {
        threshold: u32,
        cooldown: u64,
        probes: u32,
        open: bool,
        half_open: bool,
        failures: u32,
        opened_at: u64,
        in_flight: u32,
    }

    impl Model {
        fn state(&self) -> BreakerState {
            match (self.open, self.half_open) {
                (true, _) => Open,
                (_, true) => HalfOpen,
                _ => Closed,
            }
        }

        /// `Ok(is_probe)` or `Err(retry_at)`, and the transition.
        fn admit(&mut self, t: u64) -> (Result<bool, u64>, Option<Transition>) {
            let mut change = None;
            if self.threshold > 0 && self.open {
                if t < self.opened_at + self.cooldown {
                    return (Err(self.opened_at + self.cooldown), None);
                }
                (self.open, self.half_open, self.in_flight) = (false, true, 0);
                change = tr(Open, HalfOpen);
            }
            if !self.half_open {
                (Ok(false), change)
            } else if self.in_flight < self.probes.max(1) {
                self.in_flight += 1;
                (Ok(true), change)
            } else {
                (Err(t + self.cooldown.min(1000)), change)
            }
        }

        fn record(&mut self, h: Health, probe: bool, t: u64) -> Option<Transition> {
            let from = self.state();
            match (from, h) {
                _ if self.threshold == 0 => {}
                (Closed, Success) => self.failures = 0,
                (Closed, Failure) => {
                    self.failures += 1;
                    if self.failures >= self.threshold {
                        (self.open, self.opened_at) = (true, t);
                    }
                }
                (HalfOpen, Neutral) if probe => self.in_flight = self.in_flight.saturating_sub(1),
                (HalfOpen, Success) if probe => (self.half_open, self.failures) = (false, 0),
                (HalfOpen, Failure) if probe => {
                    (self.half_open, self.open, self.opened_at) = (false, true, t)
                }
                _ => {}
            }
            let to = self.state();
            (from != to).then_some(Transition { from, to })
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit,
        Record(Health),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let health = prop_oneof![Just(Success), Just(Failure), Just(Neutral)];
        // Whole tenths of a second, so deadlines are often hit exactly.
        let advance = (0u64..30).prop_map(|n| Op::Advance(n * 100));
        prop_oneof![Just(Op::Admit), health.prop_map(Op::Record), advance]
    }

    proptest! {
        #[test]
        fn breaker_matches_the_model(
            (threshold, cooldown, probes) in (0u32..4, (0u64..25).prop_map(|n| n * 100), 0u32..4),
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let cfg = BreakerConfig::default().failure_threshold(threshold).half_open_probes(probes);
            let mut real = Breaker::new(&cfg.cooldown(Duration::from_millis(cooldown)));
            let mut model = Model { threshold, cooldown, probes, ..Model::default() };
            let base = Instant::now();
            let at = |ms| base + Duration::from_millis(ms);
            // Admitted requests not yet recorded; `true` marks a probe. Recording with
            // none pending stands for a stale result from before the breaker opened.
            let (mut t, mut pending) = (0u64, Vec::new());
            for op in ops {
                match op {
                    Op::Advance(ms) => t += ms,
                    Op::Admit => {
                        let (got, change) = real.admit(at(t));
                        let (want, want_change) = model.admit(t);
                        let want = match want {
                            Ok(true) => Admission::Probe,
                            Ok(false) => Admission::Allowed,
                            Err(retry) => Admission::Rejected { retry_at: at(retry) },
                        };
                        prop_assert_eq!((got, change), (want, want_change));
                        if !rejected(got) {
                            pending.push(got == Admission::Probe);
                        }
                    }
                    Op::Record(h) => {
                        let probe = pending.pop().unwrap_or(false);
                        prop_assert_eq!(real.record(h, probe, at(t)), model.record(h, probe, t));
                    }
                }
                prop_assert_eq!(real.state(), model.state());
            }
        }
    }
}
