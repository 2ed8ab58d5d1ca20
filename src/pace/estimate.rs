//! What a receiver that pushes back allows a second, estimated from what it
//! accepted.
//!
//! The model is a token bucket, which is what rate limiters are (nginx
//! `limit_req`, API gateways) and what a bounded work queue behaves like: it
//! refills at `R` a second, holds at most `B`, a request takes a token, and
//! one that finds none is pushed back. So at a push-back the bucket is
//! empty, and over any span `w` before it the receiver accepted at most what
//! the bucket held at the start plus `R·w`.
//!
//! - **The burst** comes from a *run* (sending from the start of traffic or
//!   from the end of a pause, when the bucket is full) that went at one pace
//!   and ended in a push-back: it accepted `A₀` in `T₀` (from its first
//!   answer to the push-back), so `B = A₀ − R·T₀`. The shortest such run is
//!   kept, unless an estimate from it proves too high (see
//!   [`Estimator::pushed_back`]).
//! - **At a later push-back**, a span `w` of the current run that accepted
//!   `A` gives `A ≤ B + R·w = A₀ + R·(w − T₀)`, so `R ≥ (A − A₀) / (w − T₀)`;
//!   the estimate is the greatest of these over spans ending at the
//!   push-back, so a run that began below the receiver's rate is measured
//!   from where it began to drain the bucket. An unpaced burst says little
//!   about `R`; measured this way, it is subtracted instead.
//! - **Between two push-backs** the bucket went from empty to empty, so what
//!   was accepted in between, pause included, over that time is also a
//!   lower bound.
//!
//! Counting is by the time a request was sent (when it took its token), so
//! answers that arrive late still count for the span they were sent in.

use std::time::{Duration, Instant};

/// Accepted requests are counted in slots of this length...
const SLOT: Duration = Duration::from_millis(10);
/// ...this many of them (2.56 s).
const SLOTS: usize = 256;
/// Push-backs closer together than this count as one empty bucket.
const MIN_SPAN: Duration = Duration::from_millis(50);
/// The fewest accepted requests, beyond the burst, an estimate must rest on
/// to be trusted: requests in flight are counted late, so fewer say little.
pub(crate) const MIN_EVIDENCE: f64 = 8.0;

/// How many earlier push-backs spans are measured from.
const EMPTIES: usize = 8;

/// What a push-back says about the receiver's rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// Requests a second; a lower bound if the model holds.
    pub(crate) rate: f64,
    /// Accepted requests it rests on, beyond the burst.
    pub(crate) evidence: f64,
}

impl Estimate {
    /// Whether it rests on enough requests to hold the rate at.
    pub(crate) fn trusted(&self) -> bool {
        self.evidence >= MIN_EVIDENCE
    }
}

/// Sending from the start of traffic, or from the end of a pause.
#[derive(Debug, Clone)]
struct Run {
    /// Requests sent at or after this belong to the run.
    start: Instant,
    /// Whether it was sent at one pace from its start (unpaced, or at a
    /// rate that did not grow): a run that began below the receiver's rate
    /// and rose did not drain the bucket from its start, and is no burst.
    steady: bool,
    /// Its first request: spans are measured from it, not from the end
    /// of the pause (the first send comes a little later).
    first_sent: Option<Instant>,
    first_answer: Option<Instant>,
    /// Requests sent in the run and accepted, whenever their answer came.
    accepted: u64,
    /// Its first push-back: when that request was sent, and answered.
    pushed: Option<(Instant, Instant)>,
}

impl Run {
    fn new(start: Instant, steady: bool) -> Self {
        Run {
            start,
            steady,
            first_sent: None,
            first_answer: None,
            accepted: 0,
            pushed: None,
        }
    }

    /// `(accepted, span)` if it can serve as the burst: it was steady and
    /// ended in push-back. Answers still outstanding would only add to it,
    /// which keeps the estimates it gives lower bounds.
    fn burst(&self) -> Option<(f64, Duration)> {
        let (_, answered) = self.pushed?;
        let first = self.first_answer?;
        let span = answered.saturating_duration_since(first);
        self.steady.then_some((self.accepted as f64, span))
    }
}

/// Accepted requests per slot by send time, over the last `SLOTS` slots.
#[derive(Debug, Clone)]
struct History {
    origin: Instant,
    /// The newest slot counted into; older ones up to `SLOTS` back hold.
    newest: u64,
    counts: [u32; SLOTS],
}

impl History {
    fn new(origin: Instant) -> Box<Self> {
        Box::new(History {
            origin,
            newest: 0,
            counts: [0; SLOTS],
        })
    }

    fn slot_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / SLOT.as_nanos()) as u64
    }

    fn add(&mut self, at: Instant) {
        let n = self.slot_of(at);
        if n > self.newest {
            // Slots skipped since the newest held nothing.
            for m in (self.newest + 1..=n).take(SLOTS) {
                self.counts[(m % SLOTS as u64) as usize] = 0;
            }
            self.newest = n;
        }
        if n + SLOTS as u64 > self.newest {
            self.counts[(n % SLOTS as u64) as usize] += 1;
        }
    }

    /// `(span, accepted)` for each span that starts at a slot boundary at or
    /// after `from` and ends at `end`, longest last.
    fn spans(&self, from: Instant, end: Instant) -> impl Iterator<Item = (Duration, u64)> + '_ {
        let last = self.slot_of(end);
        let oldest = self.newest.saturating_sub(SLOTS as u64 - 1);
        let first = self.slot_of(from).max(oldest);
        let mut count = 0u64;
        (first..=last).rev().map(move |n| {
            if n <= self.newest {
                count += u64::from(self.counts[(n % SLOTS as u64) as usize]);
            }
            let start = (self.origin + SLOT * n as u32).max(from);
            (end.saturating_duration_since(start), count)
        })
    }
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estimator {
    run: Option<Run>,
    /// The run a pause ended, while answers to it may still come.
    ended: Option<Run>,
    burst: Option<(f64, Duration)>,
    /// Earlier push-backs (send times, oldest first, spread out), each with
    /// what was accepted since.
    empties: Vec<(Instant, u64)>,
    /// From the first push-back on (endpoints that never push back need none).
    history: Option<Box<History>>,
}

impl Estimator {
    /// A request is sent at `at`.
    pub(crate) fn sent(&mut self, at: Instant) {
        let run = self.run.get_or_insert_with(|| Run::new(at, true));
        if at >= run.start {
            run.first_sent.get_or_insert(at);
        }
    }

    /// A request sent at `sent_at` was accepted, answered at `now`.
    pub(crate) fn accepted(&mut self, sent_at: Instant, now: Instant) {
        self.answered(sent_at, now);
        if let Some(run) = self.run_of(sent_at) {
            run.accepted += 1;
        }
        for (since, count) in &mut self.empties {
            if sent_at >= *since {
                *count += 1;
            }
        }
        if let Some(history) = &mut self.history {
            history.add(sent_at);
        }
    }

    fn answered(&mut self, sent_at: Instant, now: Instant) {
        if let Some(run) = self.run_of(sent_at) {
            run.first_answer.get_or_insert(now);
        }
    }

    fn run_of(&mut self, sent_at: Instant) -> Option<&mut Run> {
        self.sent(sent_at);
        match (&mut self.run, &mut self.ended) {
            (Some(run), _) if sent_at >= run.start => Some(run),
            (_, Some(ended)) if sent_at >= ended.start => Some(ended),
            _ => None,
        }
    }

    /// A request sent at `sent_at` was pushed back at `now`: the estimate of
    /// the receiver's rate, if there is any evidence for one. `surprised`:
    /// the rate pushed back was held at the last estimate, so that was too
    /// high (or the receiver faltered), and the burst it rested on may be
    /// wrong (the bucket was not full when that run began): it is
    /// forgotten, and only a burst from the run before this one, if that
    /// was steady, gives an estimate now.
    pub(crate) fn pushed_back(
        &mut self,
        sent_at: Instant,
        now: Instant,
        surprised: bool,
    ) -> Option<Estimate> {
        self.answered(sent_at, now);
        if surprised {
            self.burst = None;
        }
        self.fold_ended();
        let estimate = if surprised && self.burst.is_none() {
            None
        } else {
            self.estimate(sent_at)
        };
        if let Some(run) = &mut self.run
            && run.pushed.is_none()
            && sent_at >= run.start
        {
            run.pushed = Some((sent_at, now));
        }
        self.empty_at(sent_at);
        self.history.get_or_insert_with(|| History::new(sent_at));
        estimate
    }

    /// The first push-back's guess, pausing for `pause`: the run so far
    /// accepted `A` in `T`, so the receiver's rate lies between `A/(T + P)`
    /// (all it took, over the burst and the pause) and `A/T` (how fast the
    /// burst went); the guess is their geometric mean. `sent` (requests a
    /// second) stands in when nothing was accepted yet.
    pub(crate) fn first_guess(&self, now: Instant, pause: Duration, sent: Option<f64>) -> f64 {
        let run = self.run.as_ref();
        let span = run
            .and_then(|r| r.first_answer)
            .map_or(Duration::ZERO, |first| now.saturating_duration_since(first))
            .max(Duration::from_millis(1))
            .as_secs_f64();
        let accepted = run.map_or(0, |r| r.accepted) as f64;
        let fast = if accepted > 0.0 {
            accepted / span
        } else {
            sent.unwrap_or(0.0)
        };
        fast * (span / (span + pause.as_secs_f64())).sqrt()
    }

    /// The bucket was empty at `at`. Push-backs in quick succession say so
    /// over and over, and spans from the oldest ones hold the most
    /// evidence, so the list keeps them spread out: when full, it drops the
    /// one closest to the one before it.
    fn empty_at(&mut self, at: Instant) {
        let spaced = self
            .empties
            .last()
            .is_none_or(|(last, _)| at.saturating_duration_since(*last) >= MIN_SPAN);
        if !spaced {
            return;
        }
        if self.empties.len() == EMPTIES {
            let closest = (1..EMPTIES - 1)
                .min_by_key(|&i| self.empties[i].0 - self.empties[i - 1].0)
                .unwrap_or(1);
            self.empties.remove(closest);
        }
        self.empties.push((at, 0));
    }

    /// Sending stops until `until` (a pause): the current run ends, and the
    /// next begins then, with the bucket refilled; `steady` if it will be
    /// sent at one pace.
    pub(crate) fn pause_until(&mut self, now: Instant, until: Instant, steady: bool) {
        match &mut self.run {
            // Nothing sent since the last pause began: it only grows longer.
            Some(run) if run.start >= now => {
                run.start = until;
                run.steady = steady;
            }
            Some(_) => {
                self.fold_ended();
                self.ended = self.run.replace(Run::new(until, steady));
            }
            None => self.run = Some(Run::new(until, steady)),
        }
    }

    /// The run a pause ended is complete: it may be the burst.
    fn fold_ended(&mut self) {
        let Some(candidate) = self.ended.take().and_then(|r| r.burst()) else {
            return;
        };
        if self.burst.is_none_or(|(_, span)| candidate.1 < span) {
            self.burst = Some(candidate);
        }
    }

    fn estimate(&self, at: Instant) -> Option<Estimate> {
        let mut best: Option<Estimate> = None;
        let mut consider = |excess: f64, span: Duration| {
            if excess >= 1.0 && !span.is_zero() {
                let rate = excess / span.as_secs_f64();
                if best.is_none_or(|b| rate > b.rate) {
                    best = Some(Estimate {
                        rate,
                        evidence: excess,
                    });
                }
            }
        };
        for &(since, count) in &self.empties {
            consider(count as f64, at.saturating_duration_since(since));
        }
        if let (Some(run), Some((burst, burst_span))) = (&self.run, self.burst) {
            // The burst drained the bucket, so the receiver took more than
            // its rate a second then: a rate above that implies a burst of
            // nothing, from a run that did not drain the bucket after all.
            let drained = burst / burst_span.as_secs_f64();
            let mut span_rate = |span: Duration, accepted: u64| {
                if span > burst_span {
                    let (excess, over) = (accepted as f64 - burst, span - burst_span);
                    if excess < drained * over.as_secs_f64() {
                        consider(excess, over);
                    }
                }
            };
            let from = run.first_sent.unwrap_or(run.start);
            span_rate(at.saturating_duration_since(from), run.accepted);
            if let Some(history) = &self.history {
                for (span, accepted) in history.spans(from, at) {
                    span_rate(span, accepted);
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_micros(250);
    const SEC: Duration = Duration::from_secs(1);

    /// A token bucket: `rate` a second, `burst` at most, full at the start.
    struct Bucket {
        rate: f64,
        burst: f64,
        tokens: f64,
        last: Instant,
    }

    impl Bucket {
        fn new(rate: f64, burst: f64, t0: Instant) -> Self {
            Bucket {
                rate,
                burst,
                tokens: burst,
                last: t0,
            }
        }

        fn take(&mut self, t: Instant) -> bool {
            let dt = t.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.last = self.last.max(t);
            let ok = self.tokens >= 1.0;
            if ok {
                self.tokens -= 1.0;
            }
            ok
        }
    }

    /// Sends from `from` at `rate(elapsed)` a second until the bucket pushes
    /// back (answers `RTT` later): when, and the estimate it gave.
    fn until_pushed_back(
        est: &mut Estimator,
        bucket: &mut Bucket,
        from: Instant,
        rate: impl Fn(Duration) -> f64,
    ) -> (Instant, Option<Estimate>) {
        let mut t = from;
        for _ in 0..1_000_000 {
            est.sent(t);
            if !bucket.take(t) {
                return (t, est.pushed_back(t, t + RTT, false));
            }
            est.accepted(t, t + RTT);
            t += Duration::from_secs_f64(1.0 / rate(t - from));
        }
        panic!("never pushed back");
    }

    /// The benchmark's limiter (2,000/s, a burst of 1,000, `Retry-After: 1`):
    /// an unpaced burst says nothing about the rate; the run after the
    /// pause, drained faster than the bucket refills, gives it.
    #[test]
    fn a_burst_then_a_drained_run_give_the_bucket_rate() {
        let t0 = Instant::now();
        let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
        let (t1, first) = until_pushed_back(&mut est, &mut bucket, t0, |_| 40_000.0);
        assert_eq!(first, None, "one push-back after a burst: no evidence");
        let resume = t1 + RTT + SEC;
        est.pause_until(t1 + RTT, resume, false);
        let (_, second) = until_pushed_back(&mut est, &mut bucket, resume, |_| 6_000.0);
        let e = second.unwrap();
        assert!(e.trusted(), "{e:?}");
        assert!((e.rate - 2000.0).abs() < 0.02 * 2000.0, "{e:?}");
    }

    /// A run longer than the history is measured whole, from its first
    /// request, which may come well after the pause ended.
    #[test]
    fn a_long_run_is_measured_from_its_first_request() {
        let t0 = Instant::now();
        let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
        let (t1, _) = until_pushed_back(&mut est, &mut bucket, t0, |_| 40_000.0);
        let resume = t1 + RTT + SEC;
        est.pause_until(t1 + RTT, resume, false);
        let late = resume + Duration::from_millis(100);
        let (t2, second) = until_pushed_back(&mut est, &mut bucket, late, |_| 2_300.0);
        assert!(t2 - late > SLOT * SLOTS as u32, "{:?}", t2 - late);
        let e = second.unwrap();
        assert!((e.rate - 2000.0).abs() < 0.015 * 2000.0, "{e:?}");
    }

    /// A run that began below the receiver's rate (so the bucket stayed
    /// full) and rose above it is measured from where it began to drain.
    #[test]
    fn a_run_that_began_slow_is_measured_from_where_it_drained() {
        let t0 = Instant::now();
        let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
        let (t1, _) = until_pushed_back(&mut est, &mut bucket, t0, |_| 40_000.0);
        let resume = t1 + RTT + SEC;
        est.pause_until(t1 + RTT, resume, false);
        let slow_then_fast = |t: Duration| if t < 2 * SEC { 1_000.0 } else { 4_000.0 };
        let (_, second) = until_pushed_back(&mut est, &mut bucket, resume, slow_then_fast);
        let e = second.unwrap();
        assert!((e.rate - 2000.0).abs() < 0.03 * 2000.0, "{e:?}");
    }

    /// A run whose rate rose from below the receiver's did not drain the
    /// bucket from its start (it overflowed first), so it is no burst, even
    /// when it is the shortest: estimates from it would be too high.
    #[test]
    fn a_run_that_rose_from_below_is_no_burst() {
        let t0 = Instant::now();
        let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
        let pause = |est: &mut Estimator, t: Instant, steady| {
            est.pause_until(t + RTT, t + RTT + SEC, steady);
            t + RTT + SEC
        };
        // Steady and slow: drains the bucket in two seconds.
        let (t1, _) = until_pushed_back(&mut est, &mut bucket, t0, |_| 2_500.0);
        let resume = pause(&mut est, t1, false);
        // Probing: from half the rate, doubling every 100 ms.
        let probe = |t: Duration| 1_000.0 * (t.as_secs_f64() * 10.0).exp2();
        let (t2, _) = until_pushed_back(&mut est, &mut bucket, resume, probe);
        let resume = pause(&mut est, t2, true);
        let (_, third) = until_pushed_back(&mut est, &mut bucket, resume, |_| 3_000.0);
        let e = third.unwrap();
        assert!(e.rate <= 2000.0 * 1.01, "{e:?}");
    }

    /// A steady run pushed back though it went slower than the receiver's
    /// rate (the receiver faltered) looks like a burst, but implies a
    /// bucket of nothing: no estimate may rest on it.
    #[test]
    fn a_run_slower_than_the_receiver_is_no_burst() {
        let t0 = Instant::now();
        let mut est = Estimator::default();
        let mut t = t0;
        for _ in 0..500 {
            est.sent(t);
            est.accepted(t, t + RTT);
            t += Duration::from_millis(1);
        }
        est.sent(t);
        assert_eq!(est.pushed_back(t, t + RTT, false), None);
        let resume = t + RTT + SEC;
        est.pause_until(t + RTT, resume, true);
        let mut bucket = Bucket::new(2000.0, 1000.0, resume);
        let (_, next) = until_pushed_back(&mut est, &mut bucket, resume, |_| 3_000.0);
        let e = next.unwrap();
        assert!(e.rate <= 2000.0, "{e:?}");
    }

    /// Push-backs in quick succession (no pause) each say the bucket is
    /// empty; the estimate comes from the oldest of them, over which the
    /// receiver's 100 a second add up to evidence.
    #[test]
    fn push_backs_in_quick_succession_add_up_to_evidence() {
        let t0 = Instant::now();
        let mut est = Estimator::default();
        let mut last = None;
        for i in 0..100u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 2);
            est.sent(t);
            if i % 5 == 0 {
                est.accepted(t, t + RTT);
            } else {
                last = est.pushed_back(t, t + RTT, false);
            }
        }
        let e = last.unwrap();
        assert!(e.trusted(), "{e:?}");
        assert!((e.rate - 100.0).abs() < 10.0, "{e:?}");
    }
}
