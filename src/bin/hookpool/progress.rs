//! The progress line on stderr (only when stderr is a terminal), and
//! notes printed above it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use hookpool::DispatchStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the progress bar is redrawn with fresh counts.
const REFRESH: Duration = Duration::from_millis(100);

/// A spinner on stderr with the rate, delivered, retrying and dead-lettered
/// counts, shown only when stderr is a terminal.
pub(crate) struct Progress {
    pub(crate) bar: Option<ProgressBar>,
    last: Cell<Instant>,
    /// Recent (time, delivered) samples, oldest first, for the rate.
    samples: RefCell<VecDeque<(Instant, u64)>>,
}

/// The delivery rate is measured over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// The progress line. Parked only shows when there is any: replayed letters
/// may go to several endpoints, each limited to part of the workers.
fn progress_message(rate: f64, s: &DispatchStats, invalid: u64) -> String {
    let parked = if s.parked > 0 {
        format!(", parked {}", s.parked)
    } else {
        String::new()
    };
    format!(
        "{rate:.1}/s, delivered {}, retrying {}{parked}, dead-lettered {}, accepted {}, invalid {invalid}",
        s.delivered, s.waiting_retries, s.dead_lettered, s.accepted
    )
}

impl Progress {
    pub(crate) fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Progress {
            bar,
            last: Cell::new(Instant::now()),
            samples: RefCell::new(VecDeque::new()),
        }
    }

    pub(crate) fn refresh(&self, counts: impl FnOnce() -> (DispatchStats, u64)) {
        let Some(bar) = &self.bar else { return };
        if self.last.get().elapsed() < REFRESH {
            return;
        }
        self.last.set(Instant::now());
        let (s, invalid) = counts();
        let now = Instant::now();
        let mut samples = self.samples.borrow_mut();
        samples.push_back((now, s.delivered));
        while samples.len() > 2 && now - samples[0].0 > RATE_WINDOW {
            samples.pop_front();
        }
        let (since, before) = samples[0];
        let seconds = (now - since).as_secs_f64();
        let rate = if seconds > 0.0 {
            (s.delivered - before) as f64 / seconds
        } else {
            0.0
        };
        bar.set_message(progress_message(rate, &s, invalid));
    }

    pub(crate) fn note(&self, text: &str) {
        note(self.bar.as_ref(), text);
    }

    pub(crate) fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints a line on stderr, above the progress bar if there is one.
pub(crate) fn note(bar: Option<&ProgressBar>, text: &str) {
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("hookpool: {text}")),
        None => eprintln!("hookpool: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_shows_parked_webhooks_only_when_there_are_some() {
        let mut s = DispatchStats::default();
        (s.delivered, s.waiting_retries, s.dead_lettered, s.accepted) = (7, 2, 1, 12);
        assert_eq!(
            progress_message(3.25, &s, 4),
            "3.2/s, delivered 7, retrying 2, dead-lettered 1, accepted 12, invalid 4"
        );
        s.parked = 2;
        assert_eq!(
            progress_message(3.25, &s, 4),
            "3.2/s, delivered 7, retrying 2, parked 2, dead-lettered 1, accepted 12, invalid 4"
        );
    }
}
