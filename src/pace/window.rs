//! Requests sent to one endpoint lately, for its sending rate and whether
//! its rate binds.

use std::time::{Duration, Instant};

/// The window over which sends are counted.
pub(super) const WINDOW: Duration = Duration::from_secs(1);
const SLOTS: usize = 20;

/// Sends per slot of `WINDOW / SLOTS` over the last `WINDOW`, with the rate
/// in force when each slot began, for the sending rate and whether the rate
/// binds.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    /// `(slot number, sends, rate)`; slot number = time since `origin` / slot.
    slots: [(u64, u32, Option<f64>); SLOTS],
    origin: Option<Instant>,
    /// Counting began here: sends before it are not counted, and the rate
    /// is over the time since (a pause is not time spent sending).
    pub(super) since: Option<Instant>,
}

impl Window {
    const SLOT: Duration = Duration::from_millis(WINDOW.as_millis() as u64 / SLOTS as u64);

    fn slot_of(origin: Instant, t: Instant) -> u64 {
        (t.saturating_duration_since(origin).as_nanos() / Self::SLOT.as_nanos()) as u64
    }

    pub(super) fn add(&mut self, now: Instant, rate: Option<f64>) {
        if self.since.is_some_and(|since| now < since) {
            return;
        }
        let origin = *self.origin.get_or_insert(now);
        self.since.get_or_insert(now);
        let n = Self::slot_of(origin, now);
        let cell = &mut self.slots[(n % SLOTS as u64) as usize];
        if cell.0 != n {
            *cell = (n, 0, rate);
        }
        cell.1 += 1;
    }

    /// Forgets every send and counts again from `since`.
    pub(super) fn restart(&mut self, since: Instant) {
        self.slots = Default::default();
        self.since = Some(since);
    }

    /// Sends per second over the last `span` (whole slots, at most
    /// `WINDOW`), or since counting began if that is more recent, and the
    /// lowest rate in force over it; `None` without any send.
    pub(super) fn recent(&self, now: Instant, span: Duration) -> Option<(f64, Option<f64>)> {
        let (origin, since) = (self.origin?, self.since?);
        let n = Self::slot_of(origin, now);
        let back = (span.as_nanos().div_ceil(Self::SLOT.as_nanos()) as u64).clamp(1, SLOTS as u64);
        let oldest = n + 1 - back.min(n + 1);
        let (mut count, mut lowest) = (0u32, None::<f64>);
        for &(slot, c, rate) in &self.slots {
            if c > 0 && (oldest..=n).contains(&slot) {
                count += c;
                lowest = match (lowest, rate) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if count == 0 {
            return None;
        }
        let from = (origin + Self::SLOT * oldest as u32).max(since);
        let covered = now
            .saturating_duration_since(from)
            .clamp(Duration::from_millis(10), WINDOW);
        Some((f64::from(count) / covered.as_secs_f64(), lowest))
    }

    /// Sends per second over the last `WINDOW`, or since counting began.
    pub(super) fn rate(&self, now: Instant) -> Option<f64> {
        self.recent(now, WINDOW).map(|(rate, _)| rate)
    }
}
