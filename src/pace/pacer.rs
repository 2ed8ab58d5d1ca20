//! One endpoint's pace: an in-flight limit and a send rate that adapt to
//! push-back (AIMD), a pause set by `Retry-After`, slow start after a pause
//! or an outage, and an optional configured rate. A pure state machine:
//! time is passed in, nothing here sleeps or locks.
//!
//! - **Push-back** (429, or 503 with `Retry-After`) cuts both limits
//!   multiplicatively, once per round: answers to requests sent before the
//!   last cut describe the old pace and cut nothing. The rate is cut from
//!   what the receiver actually accepted over the last second, so the first
//!   cut after an unpaced burst lands near the receiver's real rate.
//! - **Timeouts** cut the in-flight limit the same way.
//! - **Success** raises the in-flight limit by about one per round
//!   (`+1/limit` per success), and the rate by [`RATE_GROWTH`] of itself per
//!   second of sending at that rate.
//! - **A pause** (`Retry-After`) holds every send until it ends, then the
//!   in-flight limit restarts from one and doubles per round of successes
//!   (slow start), so the backlog is not released at one instant.
//! - **A first push-back within [`EARLY`]** of the first send (an unpaced
//!   burst emptied a limiter's bucket, or a fast receiver's queue was full
//!   while it started) says little about the rate: the rate it sets is a
//!   probe that doubles every [`PROBE_DOUBLING`] while it binds, and is
//!   dropped once past what the receiver took before that push-back. The
//!   next push-back sets the rate from [`estimate`](super::estimate), a lower
//!   bound on the receiver's rate from what it accepted beyond that burst,
//!   and the rate grows by [`SETTLED_GROWTH`] up to it, a tenth of that
//!   past it.

use std::time::{Duration, Instant};

use super::estimate::Estimator;
use super::window::Window;

/// Multiplicative cut of the in-flight limit on push-back or timeout.
pub(crate) const LIMIT_CUT: f64 = 0.7;
/// Multiplicative cut of the send rate on push-back, applied to what the
/// receiver accepted over the last second.
pub(crate) const RATE_CUT: f64 = 0.85;
/// Growth of the send rate per second of sending at that rate, as a share
/// of the rate: slow, because each overshoot can cost a whole `Retry-After`.
pub(crate) const RATE_GROWTH: f64 = 0.03;
/// The least time between two rate cuts.
const RATE_SETTLE: Duration = Duration::from_millis(100);
/// Below [`RATE_CUT`] of the rate at the last cut, the rate closes this
/// share of the gap per second.
const APPROACH: f64 = 0.5;
/// Sends at this share of the rate or more, and the rate binds.
const BINDING: f64 = 0.8;
/// The first cut, from an unpaced burst, halves what was measured.
pub(crate) const FIRST_RATE_CUT: f64 = 0.5;
/// In-flight limit growth per second once probing costs a pause.
pub(crate) const SLOW_LIMIT_GROWTH: f64 = 0.1;
/// A first push-back this soon after traffic began came from a burst or a
/// receiver still starting up, and says little about its rate: the rate it
/// sets is a probe, which doubles every [`PROBE_DOUBLING`] until the next
/// push-back.
pub(crate) const EARLY: Duration = super::estimate::BURST_RUN;
/// See [`EARLY`].
pub(crate) const PROBE_DOUBLING: Duration = Duration::from_millis(100);
/// A rate set from an estimate of the receiver's rate is this share of it...
pub(crate) const ESTIMATE_MARGIN: f64 = 0.97;
/// ...and at most this share of the rate that was pushed back.
pub(crate) const MOST_OF_PUSHED_BACK: f64 = 0.95;
/// Growth of a rate set from an estimate, per second of sending at it:
/// slower than [`RATE_GROWTH`], since the estimate is already close and
/// each overshoot costs a whole `Retry-After`.
pub(crate) const SETTLED_GROWTH: f64 = 0.005;

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

/// How the adaptive rate grows while it binds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Growth {
    /// Towards [`RATE_CUT`] of the rate at the last cut, quickly, and past
    /// it by [`RATE_GROWTH`] of itself a second.
    Approach,
    /// Set by an early first push-back: doubles every [`PROBE_DOUBLING`].
    Probe,
    /// Set from an estimate of the receiver's rate (a lower bound): grows
    /// by [`SETTLED_GROWTH`] of itself a second up to `ceiling` (the
    /// estimate, or less if that was pushed back), a tenth of that past it.
    Settled { ceiling: f64 },
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
    /// The configured rate, if any: the adaptive rate never exceeds it.
    configured: Option<f64>,
    /// When the next paced send may go (virtual scheduling).
    next_send: Option<Instant>,
    paused_until: Option<Instant>,
    /// Answers to requests sent before this cut nothing.
    last_cut: Option<Instant>,
    /// When the rate last grew, for time-based growth.
    grown_at: Option<Instant>,
    /// Successes of requests sent before this do not grow slow start.
    ramp_from: Option<Instant>,
    /// The last push-back paused the endpoint: overshooting costs a pause.
    costly: bool,
    /// The rate at the last rate cut: the rate grows back towards
    /// [`RATE_CUT`] of it quickly, and past that slowly.
    bad: Option<f64>,
    /// The in-flight count at the last cut: the limit grows back to just
    /// below it quickly, and past it slowly.
    bad_limit: Option<f64>,
    /// After an in-flight cut: requests in flight at the cut, how many of
    /// them were pushed back, and the limit the cut set.
    round: Option<(usize, usize, f64)>,
    limit_grown_at: Option<Instant>,
    /// Requests the receiver accepted, and requests sent.
    accepted: Window,
    sent: Window,
    /// What the receiver accepted, for a lower bound on its rate.
    estimator: Estimator,
    /// How the adaptive rate grows while it binds.
    growth: Growth,
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
            configured,
            next_send: None,
            paused_until: None,
            last_cut: None,
            grown_at: None,
            ramp_from: None,
            costly: false,
            bad: None,
            round: None,
            bad_limit: None,
            limit_grown_at: None,
            accepted: Window::default(),
            sent: Window::default(),
            estimator: Estimator::default(),
            growth: Growth::Approach,
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
        // Rates are positive and finite; a tiny one waits a year, not
        // forever, and not so long that the arithmetic below overflows.
        let interval = Duration::try_from_secs_f64(1.0 / rate)
            .map_or(LONGEST_INTERVAL, |i| i.min(LONGEST_INTERVAL));
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
        self.sent.add(at);
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
                self.accepted.add(now);
                self.estimator.accepted(sent_at);
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
                        // Probing costs a pause: grow by time, not by round.
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
                } else {
                    let early = self
                        .estimator
                        .run_age(sent_at)
                        .is_some_and(|age| age < EARLY);
                    let estimate = self.estimator.pushed_back(sent_at);
                    match self.rate {
                        // Unpaced again (a probe was dropped), and the
                        // burst gives the receiver's rate.
                        None if estimate.is_some() => {
                            self.cut(now, in_flight);
                            self.settle(now, estimate, f64::INFINITY);
                        }
                        // The first push-back: both limits, the rate from
                        // what the receiver took (before any success, from
                        // what was sent: it took less than that).
                        None => {
                            self.cut(now, in_flight);
                            let measured = self
                                .accepted
                                .rate(now)
                                .or_else(|| self.sent.rate(now))
                                .unwrap_or(MIN_RATE);
                            let factor = self.rate_cut(now, pause).min(FIRST_RATE_CUT);
                            self.bad = Some(measured);
                            self.set_rate(now, measured * factor);
                            // A burst drained in a moment, or a receiver
                            // full while it started: no cap, a probe.
                            if early {
                                self.growth = Growth::Probe;
                            }
                        }
                        // Later, the limit that held the request back; the
                        // rate too once one request at a time is too many.
                        Some(rate)
                            if self.growth == Growth::Probe
                                || self.rate_binding(now)
                                || self.limit < 2.0 =>
                        {
                            // A drained bucket takes a while to show that a
                            // new rate is below its own: one cut per settle.
                            if self.last_cut.is_some_and(|c| now < c + RATE_SETTLE) {
                                return Some(self.pause(now, pause));
                            }
                            // A probe grew as it went: what went lately.
                            let sent = match self.growth {
                                Growth::Probe => self.sent.recent(now, 2),
                                _ => self.sent.rate(now),
                            };
                            let base = rate.min(sent.unwrap_or(rate));
                            self.bad = Some(base);
                            if estimate.is_some() {
                                self.settle(now, estimate, base);
                            } else {
                                let factor = self.rate_cut(now, pause);
                                self.set_rate(now, base * factor);
                            }
                            self.last_cut = Some(now);
                            self.grown_at = None;
                        }
                        Some(_) => self.cut(now, in_flight),
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
                    let interval = Duration::try_from_secs_f64(1.0 / rate)
                        .unwrap_or(LONGEST_INTERVAL)
                        .min(LONGEST_INTERVAL);
                    self.next_send = Some(next.checked_sub(interval).unwrap_or(next).max(now));
                }
                None
            }
        }
    }

    /// Whether the rate is what holds sends back: sends go at nearly that
    /// rate since it was last set (rather than slower, held back by the
    /// in-flight limit or by fewer webhooks to send).
    fn rate_binding(&self, now: Instant) -> bool {
        let Some(rate) = self.rate() else {
            return false;
        };
        // A probe doubles as it goes: sends over the last slot or two, at
        // half the rate now, went as fast as the rate allowed then.
        let (sent, share) = match self.growth {
            Growth::Probe => (self.sent.recent(now, 2), BINDING / 2.0),
            _ => (self.sent.rate(now), BINDING),
        };
        sent.is_some_and(|sent| sent >= share * rate)
    }

    /// How much to cut the rate by, for a push-back at `now` that pauses
    /// for `pause`. Sending at `r` for `T`, since the last pause or rate
    /// change, drained a bucket that the pause `P` had refilled with at most
    /// `R·P` tokens: `r·T ≤ R·(T + P)`, so `R` lies between `r·T/(T + P)` and
    /// `r`. The cut goes to the middle of that range in proportion (their
    /// geometric mean), never less than a quarter, never more than
    /// [`RATE_CUT`]: a bucket drained at once is far from its rate, one
    /// drained slowly is close.
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
            // The answers before this one counted `bad_limit` down to 2;
            // a round pushed back whole says nothing about concurrency.
            self.bad_limit = Some(*in_flight as f64);
            *cut
        };
        self.ramp = self.ramp.map(|r| r.min(self.limit));
    }

    /// Sets the rate a little below `estimate`, the receiver's (a lower
    /// bound), and below `pushed`, the rate that was pushed back: an
    /// estimate above that was wrong (the receiver was not yet taking its
    /// full rate when its burst was measured), and the rate grows slowly
    /// from there.
    fn settle(&mut self, now: Instant, estimate: Option<f64>, pushed: f64) {
        let Some(estimate) = estimate else { return };
        let ceiling = estimate.min(pushed * MOST_OF_PUSHED_BACK);
        self.set_rate(now, (estimate * ESTIMATE_MARGIN).min(ceiling));
        self.growth = Growth::Settled { ceiling };
    }

    fn set_rate(&mut self, now: Instant, rate: f64) {
        let rate = rate.max(MIN_RATE);
        self.rate = Some(self.configured.map_or(rate, |c| rate.min(c)));
        self.growth = Growth::Approach;
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
            // A probe doubles every `PROBE_DOUBLING`, or every few sends
            // at a slow rate: each is evidence.
            Growth::Probe => {
                let doubling = PROBE_DOUBLING.max(Duration::from_secs_f64(4.0 / rate));
                let grown = rate * (dt / doubling.as_secs_f64()).exp2();
                // Past what the receiver took before it pushed back, and
                // not pushed back again: the push-back left no cap.
                if self.bad.is_some_and(|bad| grown >= bad) {
                    self.rate = None;
                    self.growth = Growth::Approach;
                    self.next_send = None;
                    return;
                }
                grown
            }
            Growth::Settled { ceiling } => {
                let share = if rate < ceiling {
                    SETTLED_GROWTH
                } else {
                    SETTLED_GROWTH / 10.0
                };
                rate + (share * rate).max(MIN_RATE_STEP) * dt
            }
            Growth::Approach => {
                let approach = self
                    .bad
                    .map_or(0.0, |bad| APPROACH * (bad * RATE_CUT - rate));
                rate + (RATE_GROWTH * rate).max(MIN_RATE_STEP).max(approach) * dt
            }
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
            self.accepted.restart(until);
            self.sent.restart(until);
            self.estimator.pause_until(until);
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
