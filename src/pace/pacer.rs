//! One endpoint's pace: an in-flight limit and a send rate that adapt to
//! push-back, a pause set by `Retry-After`, slow start after a pause or an
//! outage, and an optional configured rate. A pure state machine: time is
//! passed in, nothing here sleeps or locks.
//!
//! - **Push-back** (429, or 503 with `Retry-After`) cuts the in-flight limit
//!   multiplicatively, once per round: answers to requests sent before the
//!   last cut describe the old pace and cut nothing. **Timeouts** cut it the
//!   same way, and **success** raises it by about one per round (`+1/limit`
//!   per success).
//! - **The rate.** The first push-back sets a rough one, from how fast the
//!   receiver took the burst before it and how long it asked to wait, and
//!   the rate then *probes*: it doubles every [`PROBE_DOUBLING`] while it
//!   is what holds sends back. A push-back from a receiver that only needed
//!   fewer requests at once therefore leaves no lasting cap. A later
//!   push-back sets the rate to an estimate of the receiver's own (see
//!   [`estimate`](super::estimate): the least rate at which a token bucket
//!   of the burst it showed would have accepted what it accepted), and the
//!   rate *settles* there: it is held for [`HOLD_PAUSES`] times the pause,
//!   since probing past it costs a whole `Retry-After`, and then grows by
//!   [`RATE_GROWTH`] of itself per second of sending at it. After push-back
//!   without a pause it grows at once.
//! - **A pause** (`Retry-After`) holds every send until it ends, then the
//!   in-flight limit restarts from one and doubles per round of successes
//!   (slow start), so the backlog is not released at one instant.

use std::time::{Duration, Instant};

use super::estimate::{Estimate, Estimator};
use super::window::Window;

/// Multiplicative cut of the in-flight limit on push-back or timeout.
pub(crate) const LIMIT_CUT: f64 = 0.7;
/// Multiplicative cut of the send rate on push-back when there is no
/// estimate of the receiver's rate to go by.
pub(crate) const RATE_CUT: f64 = 0.85;
/// An estimate never sets the rate above this share of the rate that was
/// pushed back: every push-back that cuts the rate cuts it.
pub(crate) const MOST_OF_PUSHED_BACK: f64 = 0.95;
/// The rate is set this far below the estimate: estimates count requests
/// in flight late, but the clock's readings are not exact either.
pub(crate) const ESTIMATE_MARGIN: f64 = 0.98;
/// While probing, the rate doubles this often, as long as it binds.
pub(crate) const PROBE_DOUBLING: Duration = Duration::from_millis(100);
/// ...or every this many sends, if that takes longer.
const PROBE_SENDS: u32 = 4;
/// A rate settled after a push-back that paused is held for this many
/// times that pause before it grows: probing past it costs a pause, and
/// this keeps that cost to about a tenth of the time.
pub(crate) const HOLD_PAUSES: u32 = 10;
/// Growth of a settled rate per second of sending at that rate, as a share
/// of the rate.
pub(crate) const RATE_GROWTH: f64 = 0.03;
/// The least time between two rate cuts.
const RATE_SETTLE: Duration = Duration::from_millis(100);
/// In-flight limit growth per second once probing costs a pause.
pub(crate) const SLOW_LIMIT_GROWTH: f64 = 0.1;

/// The rate never grows by less than this per second, so that a rate cut to
/// the floor recovers in minutes, not hours.
const MIN_RATE_STEP: f64 = 1.0;
/// The slowest adaptive pace: one request a second.
pub(crate) const MIN_RATE: f64 = 1.0;
/// How late a paced send may be made up for: sends may bunch by this much
/// (at most two intervals) so that a wake-up that came late does not lower
/// the rate.
const CATCH_UP: Duration = Duration::from_millis(10);
/// The longest wait between two paced sends, whatever the rate.
const LONGEST_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Sends at this share of the rate or more, and the rate binds.
const BINDING: f64 = 0.8;
/// Learned pace is forgotten after this long without traffic.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// How a request ended, as far as its endpoint's pace goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    /// 2xx.
    Success,
    /// 429, or 503 with `Retry-After`, which is `pause` (zero: none).
    PushBack { pause: Duration },
    /// The request timed out.
    Timeout,
    /// Anything else: says nothing about pace.
    Other,
    /// Not sent after all (its breaker refused it): the send time it was
    /// given goes back, so the next may take it at once.
    NotSent,
}

/// What a push-back did, for the log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PushBackEffect {
    /// The pause just started (it was not already running).
    pub(crate) new_pause: bool,
    /// Pause time added by this push-back.
    pub(crate) added: Duration,
}

/// How the adaptive rate grows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Growth {
    /// Set without an estimate: doubles every [`PROBE_DOUBLING`].
    Probing,
    /// Set from an estimate: held until `hold_until`, then grows by
    /// [`RATE_GROWTH`] of itself a second.
    Settled { hold_until: Option<Instant> },
}

/// One endpoint's pace. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    /// Adaptive in-flight limit, at least 1 (infinite until first cut).
    limit: f64,
    /// Slow start: the in-flight limit while it lasts.
    ramp: Option<f64>,
    /// Adaptive send rate, requests per second; `None` until push-back.
    rate: Option<f64>,
    growth: Growth,
    /// The configured rate, if any: the adaptive rate never exceeds it.
    configured: Option<f64>,
    /// When the next paced send may go (virtual scheduling).
    next_send: Option<Instant>,
    paused_until: Option<Instant>,
    /// Answers to requests sent before this cut nothing.
    last_cut: Option<Instant>,
    /// When the rate was last cut: in-flight cuts do not delay the next.
    rate_cut_at: Option<Instant>,
    /// When the rate last grew, for time-based growth.
    grown_at: Option<Instant>,
    /// Successes of requests sent before this do not grow slow start.
    ramp_from: Option<Instant>,
    /// The last push-back paused the endpoint: overshooting costs a pause.
    costly: bool,
    /// The in-flight count at the last cut: the limit grows back to just
    /// below it quickly, and past it slowly.
    bad_limit: Option<f64>,
    /// After an in-flight cut: requests in flight at the cut, how many of
    /// them were pushed back, and the limit the cut set.
    round: Option<(usize, usize, f64)>,
    limit_grown_at: Option<Instant>,
    /// What the receiver accepted, for its rate.
    estimator: Estimator,
    /// Requests sent, for the sending rate.
    sent: Window,
    pub(crate) push_backs: u64,
    pub(crate) paused_total: Duration,
    pub(crate) last_active: Option<Instant>,
}

impl Pacer {
    pub(crate) fn new(configured: Option<f64>) -> Self {
        Pacer {
            limit: f64::INFINITY,
            ramp: None,
            rate: None,
            growth: Growth::Probing,
            configured,
            next_send: None,
            paused_until: None,
            last_cut: None,
            rate_cut_at: None,
            grown_at: None,
            ramp_from: None,
            costly: false,
            round: None,
            bad_limit: None,
            limit_grown_at: None,
            estimator: Estimator::default(),
            sent: Window::default(),
            push_backs: 0,
            paused_total: Duration::ZERO,
            last_active: None,
        }
    }

    /// Requests that may be in flight at once, at most `cap`.
    pub(crate) fn in_flight_limit(&self, cap: usize) -> usize {
        let limit = self.ramp.map_or(self.limit, |r| r.min(self.limit));
        if limit >= cap as f64 {
            cap.max(1)
        } else {
            (limit as usize).max(1)
        }
    }

    /// The send rate in force (adaptive, capped by the configured one).
    pub(crate) fn rate(&self) -> Option<f64> {
        match (self.rate, self.configured) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }

    /// Until when nothing may be sent, if that is after `now`.
    pub(crate) fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&p| p > now)
    }

    /// Whether this pacer remembers nothing worth keeping at `now`: no
    /// pause, and either nothing learned or no traffic for `FORGET_AFTER`.
    pub(crate) fn is_forgettable(&self, now: Instant) -> bool {
        if self.paused_until(now).is_some() {
            return false;
        }
        let learned = self.rate.is_some() || self.limit.is_finite() || self.ramp.is_some();
        !learned
            || self
                .last_active
                .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_AFTER)
    }

    /// Reserves a send for a request that may go at `now` or later: the
    /// time it may be sent.
    pub(crate) fn reserve(&mut self, now: Instant) -> Instant {
        let start = self.paused_until.map_or(now, |p| p.max(now));
        let Some(rate) = self.rate() else {
            self.went(start);
            return start;
        };
        let interval = interval(rate);
        let catch_up = CATCH_UP.min(interval * 2);
        // A send behind schedule by less than `catch_up` keeps the schedule
        // (the next may follow at once); further behind, the lane was idle
        // and the schedule starts again from now, without a burst.
        let due = match self.next_send {
            Some(t) if t.checked_add(catch_up).is_some_and(|late| late >= start) => t,
            _ => start,
        };
        let send = due.max(start);
        self.next_send = Some(due + interval);
        self.went(send);
        send
    }

    /// Counts a request sent at `at` without a reservation (unpaced).
    pub(crate) fn went(&mut self, at: Instant) {
        self.last_active = Some(at);
        self.sent.add(at, self.rate());
        self.estimator.sent(at);
    }

    /// Records how a request sent at `sent_at` ended, at `now`, with
    /// `in_flight` requests (this one included) outstanding when it ended;
    /// `cap` is the endpoint's in-flight ceiling.
    pub(crate) fn record(
        &mut self,
        outcome: Outcome,
        sent_at: Instant,
        now: Instant,
        in_flight: usize,
        cap: usize,
    ) -> Option<PushBackEffect> {
        self.last_active = Some(now);
        let fresh = self.last_cut.is_none_or(|cut| sent_at > cut);
        match outcome {
            Outcome::Success => {
                self.estimator.accepted(sent_at, now);
                let in_ramp = self.ramp_from.is_none_or(|from| sent_at >= from);
                if let (Some(ramp), true) = (&mut self.ramp, in_ramp) {
                    *ramp += 1.0;
                    if *ramp >= self.limit.min(cap as f64) {
                        self.ramp = None;
                    }
                }
                if fresh && self.limit.is_finite() {
                    // Back to just below where the last cut came from at
                    // once; past that, probing costs a pause when push-back
                    // pauses, so it grows by time, not by round.
                    let below_last = self.bad_limit.is_some_and(|bad| self.limit + 1.0 < bad);
                    if self.costly && !below_last {
                        let dt = self.limit_grown_at.replace(now).map_or(0.0, |t| {
                            now.saturating_duration_since(t)
                                .min(Duration::from_millis(100))
                                .as_secs_f64()
                        });
                        self.limit += SLOW_LIMIT_GROWTH * dt;
                    } else {
                        self.limit += 1.0 / self.limit;
                    }
                }
                if self.rate_binding(now) {
                    self.grow_rate(now);
                } else {
                    self.grown_at = None;
                }
                None
            }
            Outcome::PushBack { pause } => {
                self.push_backs += 1;
                self.costly = !pause.is_zero();
                self.limit_grown_at = None;
                if !fresh {
                    self.same_round_push_back();
                    return Some(self.pause(now, pause));
                }
                // Pushed back at a rate held where an estimate put it: the
                // estimate was too high.
                let surprised =
                    matches!(self.growth, Growth::Settled { hold_until: Some(h) } if now < h);
                let estimate = self.estimator.pushed_back(sent_at, now, surprised);
                match self.rate {
                    // The first push-back: both limits, the rate a guess
                    // that probes upwards from there.
                    None => {
                        self.cut(now, in_flight);
                        let sent = self.sent.rate(now);
                        let guess = self.estimator.first_guess(now, pause, sent);
                        self.set_rate(now, guess, Growth::Probing);
                        self.rate_cut_at = Some(now);
                    }
                    Some(rate) => {
                        let binding = self.rate_binding(now);
                        // What was pushed back: the rate, or what went if
                        // that was slower (and went long enough to tell).
                        let pushed = match self.sent.since {
                            Some(since) if !binding && now >= since + self.lately(rate) => {
                                self.sent.rate(now).unwrap_or(rate).min(rate)
                            }
                            _ => rate,
                        };
                        let trusted = estimate.filter(|e| e.trusted());
                        // The limit that held the request back; the rate
                        // too once one request at a time is too many, or
                        // once the receiver is known to take fewer a second
                        // than went (a rate limiter answers fast, so few
                        // were in flight, but more would not have helped).
                        let over = trusted.is_some_and(|e| e.rate < pushed * MOST_OF_PUSHED_BACK);
                        if binding || over || self.limit < 2.0 {
                            self.cut_rate(now, pause, pushed, estimate, surprised);
                        } else {
                            self.cut(now, in_flight);
                        }
                    }
                }
                Some(self.pause(now, pause))
            }
            Outcome::Timeout => {
                if fresh {
                    self.cut(now, in_flight);
                }
                None
            }
            Outcome::Other => None,
            Outcome::NotSent => {
                // Never earlier than now: the schedule only moves back by
                // the send that did not happen.
                if let (Some(next), Some(rate)) = (self.next_send, self.rate()) {
                    let interval = interval(rate);
                    self.next_send = Some(next.checked_sub(interval).unwrap_or(next).max(now));
                }
                None
            }
        }
    }

    /// Cuts the rate after a push-back that paused `pause`, sent at
    /// `pushed` requests a second: to the receiver's estimated rate if that
    /// rests on enough evidence, and holds it there; else by
    /// [`rate_cut`](Self::rate_cut), but no lower than a weak estimate.
    fn cut_rate(
        &mut self,
        now: Instant,
        pause: Duration,
        pushed: f64,
        estimate: Option<Estimate>,
        surprised: bool,
    ) {
        // A drained bucket takes a while to show that a new rate is below
        // its own: one cut per settle.
        if self.rate_cut_at.is_some_and(|c| now < c + RATE_SETTLE) {
            return;
        }
        let hold_until = (!pause.is_zero())
            .then(|| crate::clock::deadline_after(now, pause.saturating_mul(HOLD_PAUSES)));
        let (rate, hold_until) = match estimate {
            Some(e) if e.trusted() => (
                (e.rate * ESTIMATE_MARGIN).min(pushed * MOST_OF_PUSHED_BACK),
                hold_until,
            ),
            // Pushed back at a rate held at an estimate: a little below,
            // held again, so that the run at it shows the burst anew.
            None if surprised => (pushed * MOST_OF_PUSHED_BACK, hold_until),
            // Too little accepted between push-backs to go by: a cut, not
            // held.
            _ => (pushed * self.rate_cut(now, pause), None),
        };
        if std::env::var_os("HOOKPOOL_PACE_DEBUG").is_some() {
            eprintln!(
                "PACEDBG cut pushed {pushed:.0} estimate {estimate:?} -> {rate:.0} {:?}",
                self.estimator
            );
        }
        self.set_rate(now, rate, Growth::Settled { hold_until });
        self.last_cut = Some(now);
        self.rate_cut_at = Some(now);
        self.grown_at = None;
    }

    /// Whether the rate is what holds sends back: sends lately went at
    /// nearly the rate in force (rather than slower, held back by the
    /// in-flight limit or by fewer webhooks to send). Compared with the
    /// lowest rate over that time, so that a probing rate, which doubles
    /// as it goes, still binds.
    fn rate_binding(&self, now: Instant) -> bool {
        let Some(rate) = self.rate() else {
            return false;
        };
        self.sent
            .recent(now, self.lately(rate))
            .is_some_and(|(sent, lowest)| sent >= BINDING * lowest.unwrap_or(rate).min(rate))
    }

    /// The span over which sends are measured against `rate`: long enough
    /// to hold a few of them.
    fn lately(&self, rate: f64) -> Duration {
        (interval(rate) * 4).max(Duration::from_millis(250))
    }

    /// How much to cut the rate by without an estimate, for a push-back at
    /// `now` that pauses for `pause`. Sending at `r` for `T`, since the last
    /// pause or rate change, drained a bucket that the pause `P` had
    /// refilled with at most `R·P` tokens: `r·T ≤ R·(T + P)`, so `R` lies
    /// between `r·T/(T + P)` and `r`. The cut goes to the middle of that
    /// range in proportion (their geometric mean), never less than a
    /// quarter, never more than [`RATE_CUT`].
    fn rate_cut(&self, now: Instant, pause: Duration) -> f64 {
        let Some(resumed) = self.sent.since else {
            return RATE_CUT;
        };
        if pause.is_zero() {
            return RATE_CUT;
        }
        let t = now
            .saturating_duration_since(resumed)
            .max(Duration::from_millis(1))
            .as_secs_f64();
        (t / (t + pause.as_secs_f64())).sqrt().clamp(0.25, RATE_CUT)
    }

    /// Another answer from the round that caused the last in-flight cut was
    /// push-back too. A receiver that serves C at a time accepts C of the
    /// round and pushes back the rest, so the limit goes down to what it
    /// accepted; one that accepted none of it is not limiting concurrency,
    /// and the cut stands.
    fn same_round_push_back(&mut self) {
        let Some((in_flight, pushed, cut)) = &mut self.round else {
            return;
        };
        *pushed += 1;
        self.limit = if *pushed < *in_flight {
            // The receiver took `in_flight - pushed` at once, and no more.
            let accepted = (*in_flight - *pushed) as f64;
            self.bad_limit = Some(accepted + 1.0);
            self.limit.min(accepted)
        } else {
            *cut
        };
        self.ramp = self.ramp.map(|r| r.min(self.limit));
    }

    fn set_rate(&mut self, now: Instant, rate: f64, growth: Growth) {
        let rate = rate.max(MIN_RATE);
        self.rate = Some(self.configured.map_or(rate, |c| rate.min(c)));
        self.growth = growth;
        self.next_send = None;
        // Sends under the old rate say nothing about the new one.
        self.sent.restart(now);
    }

    fn cut(&mut self, now: Instant, in_flight: usize) {
        let base = self.limit.min(in_flight as f64);
        self.bad_limit = Some(base);
        self.limit = (base * LIMIT_CUT).max(1.0);
        self.round = Some((in_flight, 1, self.limit));
        self.ramp = self.ramp.map(|r| r.min(self.limit));
        self.last_cut = Some(now);
        self.grown_at = None;
    }

    fn grow_rate(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        let Some(since) = self.grown_at.replace(now) else {
            return;
        };
        // A gap longer than a few sends is not "sending at that rate".
        let gap = Duration::from_millis(100).max(Duration::from_secs_f64((2.0 / rate).min(60.0)));
        let dt = now.saturating_duration_since(since).min(gap).as_secs_f64();
        let grown = match self.growth {
            // At a slow rate, a few sends per doubling: each is evidence.
            Growth::Probing => {
                let doubling = PROBE_DOUBLING.max(interval(rate) * PROBE_SENDS);
                rate * (dt / doubling.as_secs_f64()).exp2()
            }
            Growth::Settled { hold_until } if hold_until.is_some_and(|h| now < h) => rate,
            Growth::Settled { .. } => rate + (RATE_GROWTH * rate).max(MIN_RATE_STEP) * dt,
        };
        // Never past the configured rate: it would bind, and the adaptive
        // rate would grow without end.
        self.rate = Some(self.configured.map_or(grown, |c| grown.min(c)));
    }

    /// Holds every send until `now + pause` and restarts slow start.
    fn pause(&mut self, now: Instant, pause: Duration) -> PushBackEffect {
        if pause.is_zero() {
            return PushBackEffect {
                new_pause: false,
                added: Duration::ZERO,
            };
        }
        let until = crate::clock::deadline_after(now, pause);
        let running = self.paused_until(now);
        let from = running.unwrap_or(now);
        let added = until.saturating_duration_since(from);
        if until > from {
            self.paused_until = Some(until);
            self.paused_total += added;
            // Time paused is not time spent sending.
            self.sent.restart(until);
            // The run after the pause drains a full bucket from its start
            // if its rate does not grow meanwhile.
            let steady = match (self.rate, self.growth) {
                (None, _) => true,
                (Some(_), Growth::Settled { hold_until }) => hold_until.is_some_and(|h| h > until),
                (Some(_), Growth::Probing) => false,
            };
            self.estimator.pause_until(now, until, steady);
        }
        self.restart_at(now);
        self.next_send = None;
        PushBackEffect {
            new_pause: running.is_none(),
            added,
        }
    }

    /// Slow start from one request in flight: after an outage, so that the
    /// webhooks held back meanwhile are not released at one instant.
    pub(crate) fn restart_at(&mut self, now: Instant) {
        self.ramp = Some(1.0);
        self.ramp_from = Some(now);
    }
}

/// The time between two sends at `rate`: a tiny rate waits a year, not
/// forever, and not so long that the arithmetic on it overflows.
fn interval(rate: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / rate).map_or(LONGEST_INTERVAL, |i| i.min(LONGEST_INTERVAL))
}
