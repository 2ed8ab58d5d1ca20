//! A lower bound on a receiver's rate, from what it accepted after its
//! first push-back.
//!
//! A receiver that pushes back is modelled as a token bucket (what rate
//! limiters are, and what a bounded work queue behaves like): it refills at
//! `R` a second and holds at most `B`; a request takes a token, and one that
//! finds none is pushed back. The first traffic to an endpoint finds the
//! bucket full, so its first *run* (from its first send to its first
//! push-back, sent `T₁` apart) accepted `A₁ = B + R·T₁`. Any later span of
//! `s` seconds that ends in a push-back accepted at most `B + R·s`, so
//! `R ≥ (A − A₁) / (s − T₁)`. The estimate is the greatest of these over
//! spans ending at the push-back, so a span that began while the bucket was
//! still full (the rate below `R`, tokens overflowing) does not drag it
//! down. A single push-back says nothing like this: an unpaced burst drains
//! `B` at whatever speed it was sent.
//!
//! Only a first run shorter than [`BURST_RUN`] serves: then `A₁` is mostly
//! `B`. In a longer one it is mostly `R·T₁`, and a receiver that is no token
//! bucket (a fast one whose queue filled for a moment) would make the
//! difference from a later span meaningless.
//!
//! Accepted requests are counted by the time they were sent (when they took
//! their token). Answers still outstanding at a push-back are not counted
//! yet, which keeps the estimate a lower bound.

use std::time::{Duration, Instant};

/// Accepted requests are counted in slots of this length...
const SLOT: Duration = Duration::from_millis(10);
/// ...this many of them (3 s).
const SLOTS: usize = 300;
/// Spans shorter than the first run by less than this are not measured:
/// the difference would be mostly noise.
const MIN_SPAN_OVER_BURST: Duration = Duration::from_millis(20);
/// The fewest accepted requests beyond the burst an estimate must rest on.
pub(crate) const MIN_EVIDENCE: f64 = 20.0;
/// The longest first run that counts as the burst.
pub(crate) const BURST_RUN: Duration = Duration::from_millis(250);

/// Accepted requests per slot by send time, over the last `SLOTS` slots.
#[derive(Debug, Clone)]
struct History {
    origin: Instant,
    /// The newest slot counted into; older ones up to `SLOTS` back hold.
    newest: u64,
    counts: [u32; SLOTS],
}

impl History {
    fn slot_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / SLOT.as_nanos()) as u64
    }

    fn add(&mut self, at: Instant) {
        let n = self.slot_of(at);
        if n > self.newest {
            // The slots skipped since the newest held nothing.
            for m in (self.newest + 1..=n).take(SLOTS) {
                self.counts[(m % SLOTS as u64) as usize] = 0;
            }
            self.newest = n;
        }
        if n + SLOTS as u64 > self.newest {
            self.counts[(n % SLOTS as u64) as usize] += 1;
        }
    }

    /// `(span, accepted)` for each span from a slot boundary at or after
    /// `from` to `end`, shortest first.
    fn spans(&self, from: Instant, end: Instant) -> impl Iterator<Item = (Duration, u64)> + '_ {
        let last = self.slot_of(end).min(self.newest);
        let oldest = self.newest.saturating_sub(SLOTS as u64 - 1);
        let first = self.slot_of(from).max(oldest);
        let mut count = 0u64;
        (first..=last).rev().map(move |n| {
            count += u64::from(self.counts[(n % SLOTS as u64) as usize]);
            let start = (self.origin + SLOT * n as u32).max(from);
            (end.saturating_duration_since(start), count)
        })
    }
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estimator {
    /// The current run began here: the first send, or the end of a pause.
    run_start: Option<Instant>,
    /// Requests sent in the current run and accepted.
    run_accepted: u64,
    /// The first run: `(accepted, span)`, once it ended in a push-back
    /// within [`BURST_RUN`].
    burst: Option<(f64, Duration)>,
    /// The first run ended in a push-back.
    first_ended: bool,
    /// From the first push-back on: endpoints that never push back need none.
    history: Option<Box<History>>,
}

impl Estimator {
    /// A request is sent at `at`.
    pub(crate) fn sent(&mut self, at: Instant) {
        self.run_start.get_or_insert(at);
    }

    /// A request sent at `sent_at` was accepted.
    pub(crate) fn accepted(&mut self, sent_at: Instant) {
        if self.run_start.is_some_and(|start| sent_at >= start) {
            self.run_accepted += 1;
        }
        if let Some(history) = &mut self.history {
            history.add(sent_at);
        }
    }

    /// How long the current run had been going when `sent_at` was sent;
    /// `None` before anything was sent.
    pub(crate) fn run_age(&self, sent_at: Instant) -> Option<Duration> {
        self.run_start
            .map(|start| sent_at.saturating_duration_since(start))
    }

    /// A request sent at `sent_at` was pushed back: the lower bound on the
    /// receiver's rate it gives, requests a second, if it rests on at least
    /// [`MIN_EVIDENCE`] requests. The first push-back gives none; it ends
    /// the first run, which becomes the burst.
    pub(crate) fn pushed_back(&mut self, sent_at: Instant) -> Option<f64> {
        let start = self.run_start?;
        if !self.first_ended {
            self.first_ended = true;
            let span = sent_at.saturating_duration_since(start);
            if span < BURST_RUN {
                self.burst = Some((self.run_accepted as f64, span));
                self.history = Some(Box::new(History {
                    origin: sent_at,
                    newest: 0,
                    counts: [0; SLOTS],
                }));
            }
            return None;
        }
        let (burst, burst_span) = self.burst?;
        let mut best: Option<f64> = None;
        let mut consider = |span: Duration, accepted: u64| {
            let excess = accepted as f64 - burst;
            if span >= burst_span + MIN_SPAN_OVER_BURST && excess >= MIN_EVIDENCE {
                let rate = excess / (span - burst_span).as_secs_f64();
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            }
        };
        consider(sent_at.saturating_duration_since(start), self.run_accepted);
        if let Some(history) = &self.history {
            for (span, accepted) in history.spans(start, sent_at) {
                consider(span, accepted);
            }
        }
        best
    }

    /// Sending stops until `until` (a pause): the next run begins then.
    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.run_start = Some(until);
        self.run_accepted = 0;
    }
}
