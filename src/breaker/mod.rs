//! Circuit breaker: a pure state machine with time passed in, and the per-endpoint map.

use std::fmt;
use std::time::{Duration, Instant};

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
/// assert_eq!(cfg.push_back_period(), Some(Duration::from_secs(300)));
/// ```
#[derive(Debug, Clone)]
#[must_use = "a breaker config does nothing until it is used"]
pub struct BreakerConfig {
    failure_threshold: u32,
    cooldown: Duration,
    half_open_probes: u32,
    push_back_limit: Option<Duration>,
}

impl Default for BreakerConfig {
    /// Opens after 5 consecutive failures, or after 5 minutes of nothing
    /// but push-back; cools down for 30s, then lets 1 probe through.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            half_open_probes: 1,
            push_back_limit: Some(Duration::from_secs(300)),
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

    /// How long an endpoint may answer nothing but push-back (429, or 503
    /// with `Retry-After`) before its breaker opens. Push-back is not a
    /// failure: it never counts toward [`failure_threshold`](Self::failure_threshold),
    /// and a success ends the period. `None`: push-back never opens the
    /// breaker; then an endpoint that answers nothing but 429 keeps its
    /// webhooks for ever (a push-back spends no attempt, and its wait does
    /// not count against `max_elapsed`), and only a shutdown deadline ends
    /// them.
    ///
    /// Defaults to 5 minutes.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// use std::time::Duration;
    /// let cfg = BreakerConfig::default().push_back_limit(Some(Duration::from_secs(60)));
    /// assert_eq!(cfg.push_back_period(), Some(Duration::from_secs(60)));
    /// ```
    pub fn push_back_limit(mut self, limit: Option<Duration>) -> Self {
        self.push_back_limit = limit.map(|d| d.min(MAX_COOLDOWN));
        self
    }

    /// How long nothing but push-back opens the breaker, if it does.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::BreakerConfig;
    /// assert_eq!(BreakerConfig::default().push_back_limit(None).push_back_period(), None);
    /// ```
    pub fn push_back_period(&self) -> Option<Duration> {
        self.push_back_limit
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
/// assert_eq!(breaker.record(Health::PushBack, false, Instant::now()), None);
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The endpoint answered well.
    Success,
    /// A retryable failure: timeout, 5xx without `Retry-After`, transport
    /// error.
    Failure,
    /// The endpoint is alive and asks for a slower pace: 429, or 503 with
    /// `Retry-After`. Not a failure; only a long run of nothing else opens
    /// the breaker ([`BreakerConfig::push_back_limit`]).
    PushBack,
    /// Says nothing about health, such as a permanent 4xx.
    Neutral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `push_back_since`: when the current run of nothing but push-back
    /// began.
    Closed {
        failures: u32,
        push_back_since: Option<Instant>,
    },
    Open {
        opened_at: Instant,
    },
    HalfOpen {
        in_flight: u32,
    },
}

/// One endpoint's circuit breaker: a pure state machine, with time passed in.
///
/// Push-back ([`Health::PushBack`]) neither counts as a failure nor resets
/// the count; a closed breaker opens after nothing but push-back for
/// [`BreakerConfig::push_back_limit`], and a half-open one treats a pushed
/// back probe as failed (the endpoint is not ready for its backlog).
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
            phase: Phase::Closed {
                failures: 0,
                push_back_since: None,
            },
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

    /// Whether this breaker is what [`Breaker::new`] makes: closed, no
    /// failures counted. Such a breaker can be forgotten and made again.
    pub(crate) fn is_fresh(&self) -> bool {
        self.phase
            == Phase::Closed {
                failures: 0,
                push_back_since: None,
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
        let closed = Phase::Closed {
            failures: 0,
            push_back_since: None,
        };
        match self.phase {
            Phase::Closed {
                failures,
                push_back_since,
            } => match health {
                Health::Failure if failures.saturating_add(1) >= threshold => {
                    self.enter(Phase::Open { opened_at: now })
                }
                Health::Failure => self.stay(Phase::Closed {
                    failures: failures + 1,
                    push_back_since,
                }),
                Health::PushBack => {
                    let since = push_back_since.unwrap_or(now);
                    let too_long = self
                        .cfg
                        .push_back_limit
                        .is_some_and(|limit| now.saturating_duration_since(since) >= limit);
                    if too_long {
                        self.enter(Phase::Open { opened_at: now })
                    } else {
                        self.stay(Phase::Closed {
                            failures,
                            push_back_since: Some(since),
                        })
                    }
                }
                Health::Success => self.stay(closed),
                Health::Neutral => None,
            },
            Phase::Open { .. } => None,
            Phase::HalfOpen { .. } if !was_probe => None,
            Phase::HalfOpen { in_flight } => match health {
                Health::Success => self.enter(closed),
                Health::Failure | Health::PushBack => self.enter(Phase::Open { opened_at: now }),
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

mod map;
#[cfg(test)]
mod tests;

pub(crate) use map::Breakers;
pub use map::Endpoint;
