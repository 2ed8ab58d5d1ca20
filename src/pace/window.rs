//! Events (requests sent, or accepted) over the last second, for a rate.

use std::time::{Duration, Instant};

/// The window over which events are counted for a rate.
const WINDOW: Duration = Duration::from_secs(1);
const SLOTS: usize = 10;

/// Events per slot of `WINDOW / SLOTS` over the last `WINDOW`, for a rate.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    /// `(slot number, events)`; slot number = time since `origin` / slot.
    slots: [(u64, u32); SLOTS],
    origin: Option<Instant>,
    /// Counting began here: events before it are not counted, and the rate
    /// is over the time since (a pause is not time spent sending).
    pub(super) since: Option<Instant>,
}

impl Window {
    fn slot_of(origin: Instant, t: Instant) -> u64 {
        let slot = WINDOW / SLOTS as u32;
        (t.saturating_duration_since(origin).as_nanos() / slot.as_nanos()) as u64
    }

    pub(super) fn add(&mut self, now: Instant) {
        if self.since.is_some_and(|since| now < since) {
            return;
        }
        let origin = *self.origin.get_or_insert(now);
        self.since.get_or_insert(now);
        let n = Self::slot_of(origin, now);
        let cell = &mut self.slots[(n % SLOTS as u64) as usize];
        if cell.0 != n {
            *cell = (n, 0);
        }
        cell.1 += 1;
    }

    /// Forgets every event and counts again from `since`.
    pub(super) fn restart(&mut self, since: Instant) {
        self.slots = Default::default();
        self.since = Some(since);
    }

    /// Events per second over the last `WINDOW`, or since counting began if
    /// that is more recent; `None` without any.
    pub(super) fn rate(&self, now: Instant) -> Option<f64> {
        self.recent(now, SLOTS)
    }

    /// Events per second over the last `slots` slots (this one included),
    /// or since counting began if that is more recent; `None` without any.
    pub(super) fn recent(&self, now: Instant, slots: usize) -> Option<f64> {
        let (origin, since) = (self.origin?, self.since?);
        let n = Self::slot_of(origin, now);
        let recent = n.saturating_sub(slots.clamp(1, SLOTS) as u64 - 1);
        let count: u32 = self
            .slots
            .iter()
            .filter(|(slot, c)| *c > 0 && *slot >= recent && *slot <= n)
            .map(|(_, c)| c)
            .sum();
        if count == 0 {
            return None;
        }
        let from = if slots >= SLOTS {
            since
        } else {
            (origin + WINDOW / SLOTS as u32 * recent as u32).max(since)
        };
        let span = now
            .saturating_duration_since(from)
            .clamp(Duration::from_millis(10), WINDOW);
        Some(f64::from(count) / span.as_secs_f64())
    }
}
