//! What `send` and `replay` share: the delivery flags, a dispatcher with the
//! bookkeeping that makes Ctrl-C lossless, backpressure, the progress bar,
//! and the drain at the end. With a journal, the dispatcher recovers what a
//! previous run left unfinished, and a shutdown keeps what is unfinished
//! there instead of dead-lettering it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookpool::{
    BreakerConfig, DeadLetter, DeadLetterReason, DeadLetterSink, DispatchHandle, DispatchStats,
    Dispatcher, DurableError, Journal, RetryPolicy, StoreError, Webhook,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::{Condvar, Mutex};

use crate::{Interrupt, Secrets, UsageError};

/// The longest any wait lasts before the interrupt flag is checked again.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// How often the progress bar is redrawn with fresh counts.
const REFRESH: Duration = Duration::from_millis(100);

/// Delivery flags shared by `send` and `replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeliveryArgs {
    #[command(flatten)]
    secrets: Secrets,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// Delivery worker threads
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
    /// Webhooks that may wait at once, for a worker or for a retry; reading pauses while they do
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queue: u32,
    /// Attempts per webhook, the first one included
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Delay before the first retry; it doubles for each later one (with full jitter, at most 60 s)
    #[arg(long, value_name = "N", default_value_t = 500)]
    base_delay_ms: u64,
    /// Timeout for one attempt, from connecting to reading the answer
    #[arg(long, value_name = "N", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Give up on a webhook this long after it was queued, even with attempts left, for
    /// example while its endpoint's breaker stays open (0: no limit)
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    max_elapsed_ms: u64,
    /// Consecutive retryable failures that open an endpoint's circuit breaker (0: no breaker)
    #[arg(long, value_name = "N", default_value_t = 5)]
    breaker_failures: u32,
    /// How long an open breaker waits before letting one probe through
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    breaker_cooldown_ms: u64,
    /// After Ctrl-C, how long to go on delivering what was queued before dead-lettering
    /// the rest (reason "shutdown"), or with a journal, leaving it there for the next run
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    drain_timeout_ms: u64,
    /// At most N requests a second to each endpoint (scheme, host, port); without it the
    /// pace adapts to the receiver's push-back (429, 503 with Retry-After) alone
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

/// One delivery run: a dispatcher, the webhooks it has not finished, and the
/// progress bar. Used from one thread; the dispatcher's hooks only touch
/// [`Outstanding`].
pub(crate) struct Session {
    hooks: Dispatcher,
    handle: DispatchHandle,
    open: Arc<Outstanding>,
    /// The journal file, if there is one: webhooks are committed to it
    /// before they are queued, and a shutdown keeps what is unfinished.
    journal: Option<PathBuf>,
    /// Most webhooks unfinished at once: queued, in flight or waiting for a retry.
    limit: usize,
    drain: Duration,
    interrupt: Interrupt,
    progress: Progress,
    invalid: Cell<u64>,
    /// What a tag counts, for messages: "line" or "letter".
    unit: &'static str,
}

/// What a run left behind, for the command to store and summarize.
pub(crate) struct Finished {
    pub(crate) stats: DispatchStats,
    /// Dead letters the sink failed to store.
    pub(crate) unsaved: Vec<DeadLetter>,
    /// Webhooks still in flight at the drain deadline, with their tags. They
    /// may yet be delivered, but the process is about to exit.
    pub(crate) in_flight: Vec<(u64, Webhook)>,
    pub(crate) interrupted: bool,
    pub(crate) invalid: u64,
    /// Webhooks left unfinished in the journal (0 without one): queued,
    /// waiting or in flight at the drain deadline.
    pub(crate) kept: u64,
}

/// Why [`Session::send`] gave a webhook back, unqueued.
pub(crate) enum Refused {
    /// Ctrl-C came first.
    Interrupted(Webhook),
    /// The journal could not commit it.
    Journal(Webhook, StoreError),
}

impl Refused {
    fn webhook(&self) -> &Webhook {
        match self {
            Refused::Interrupted(w) | Refused::Journal(w, _) => w,
        }
    }
}

/// Where a session keeps what it does not deliver now.
pub(crate) struct Keep {
    /// The dead-letter sink; without one, dead letters go to the journal's
    /// own table.
    pub(crate) sink: Option<Arc<dyn DeadLetterSink>>,
    pub(crate) journal: Option<Journal>,
}

impl Session {
    /// Builds the dispatcher, which recovers what the journal holds, if
    /// there is one. `unit` names what tags count in messages.
    pub(crate) fn start(
        args: &DeliveryArgs,
        name: &str,
        keep: Keep,
        unit: &'static str,
        interrupt: &Interrupt,
    ) -> Result<Session, UsageError> {
        args.secrets.parse()?;
        let tls = args.tls.config()?;
        let max_elapsed = (args.max_elapsed_ms > 0).then(|| ms(args.max_elapsed_ms));
        let retry = RetryPolicy::exponential(ms(args.base_delay_ms))
            .max_attempts(args.max_attempts)
            .max_elapsed(max_elapsed);
        let breaker = match args.breaker_failures {
            0 => BreakerConfig::disabled(),
            n => BreakerConfig::default()
                .failure_threshold(n)
                .cooldown(ms(args.breaker_cooldown_ms)),
        };
        let timeout = ms(args.timeout_ms);
        let open = Arc::new(Outstanding::default());
        let (done, dead) = (Arc::clone(&open), Arc::clone(&open));
        let progress = Progress::new();
        let bar = progress.bar.clone();
        let mut builder = Dispatcher::builder()
            .name(name)
            .workers(args.workers as usize)
            .queue_capacity(args.queue as usize)
            .retry(retry)
            .breaker(breaker)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tls(tls)
            // Called for every final outcome, also when the sink failed.
            .on_delivered(move |d| done.remove(d.webhook.id()))
            .on_dead_letter(move |letter| dead.remove(&letter.id))
            // The reason a run seems to stall: say it.
            .on_breaker_change(move |c| {
                let text = format!("circuit breaker for {}: {} -> {}", c.endpoint, c.from, c.to);
                note(bar.as_ref(), &text);
            });
        if let Some(rate) = args.rate {
            builder = builder.rate_limit(rate);
        }
        if let Some(sink) = keep.sink {
            builder = builder.dead_letters(sink);
        }
        let journal = keep.journal.as_ref().map(|j| j.path().to_owned());
        if let Some(j) = keep.journal {
            builder = builder.journal(j);
        }
        for secret in args.secrets.texts() {
            // Already checked above, so this cannot fail.
            builder = builder
                .signing_secret(secret)
                .map_err(|e| UsageError(format!("--secret: {e}")))?;
        }
        let hooks = builder
            .build()
            .map_err(|e| UsageError::with_causes("cannot start the dispatcher", &e))?;
        let recovered = hooks.stats().store.map_or(0, |s| s.recovered);
        open.set_recovered(usize::try_from(recovered).unwrap_or(usize::MAX));
        Ok(Session {
            handle: hooks.handle(),
            hooks,
            open,
            journal,
            limit: args.queue as usize + args.workers as usize,
            drain: ms(args.drain_timeout_ms),
            interrupt: interrupt.clone(),
            progress,
            invalid: Cell::new(0),
            unit,
        })
    }

    /// Queues a webhook, waiting as long as it takes for room (webhooks
    /// recovered from the journal take room too). With a journal, it is
    /// committed first, with `cursor` if given; `Ok` means committed. Gives
    /// it back, unqueued, if Ctrl-C comes first or the journal fails; a
    /// cursor sent with it is then undone.
    pub(crate) fn send(
        &self,
        tag: u64,
        webhook: Webhook,
        cursor: Option<String>,
    ) -> Result<(), Refused> {
        while !self.open.wait_below(self.limit, TICK) {
            if self.interrupt.is_set() {
                return Err(Refused::Interrupted(webhook));
            }
            self.refresh();
        }
        // Tracked before it is queued: it may be delivered before send returns.
        self.open.insert(tag, webhook.clone());
        if self.journal.is_some() {
            return self.send_durable(webhook, cursor);
        }
        let mut webhook = webhook;
        loop {
            match self.handle.send_timeout(webhook, TICK) {
                Ok(()) => {
                    self.refresh();
                    return Ok(());
                }
                Err(refused) => {
                    let closed = refused.is_closed();
                    webhook = refused.into_inner();
                    if closed || self.interrupt.is_set() {
                        self.open.remove(webhook.id());
                        return Err(Refused::Interrupted(webhook));
                    }
                    self.refresh();
                }
            }
        }
    }

    /// [`send`](Self::send) through the journal.
    fn send_durable(&self, webhook: Webhook, cursor: Option<String>) -> Result<(), Refused> {
        let mut webhook = webhook;
        loop {
            let sent = match &cursor {
                Some(cursor) => self
                    .handle
                    .send_durable_with_cursor(webhook, cursor.clone(), TICK),
                None => self.handle.send_durable(webhook, TICK),
            };
            let refused = match sent {
                Ok(()) => {
                    self.refresh();
                    return Ok(());
                }
                Err(DurableError::Store { webhook, error }) => Refused::Journal(webhook, error),
                Err(DurableError::Full(w)) if !self.interrupt.is_set() => {
                    webhook = w;
                    self.refresh();
                    continue;
                }
                Err(other) => Refused::Interrupted(other.into_inner()),
            };
            self.open.remove(refused.webhook().id());
            return Err(refused);
        }
    }

    /// The cursor the journal held when the session started.
    pub(crate) fn journal_cursor(&self) -> Option<&str> {
        self.hooks.journal_cursor()
    }

    /// Webhooks taken from the journal at start.
    pub(crate) fn recovered(&self) -> u64 {
        self.handle.stats().store.map_or(0, |s| s.recovered)
    }

    /// The dispatcher, for what only it does (the journal's dead letters).
    pub(crate) fn dispatcher(&self) -> &Dispatcher {
        &self.hooks
    }

    /// How many more webhooks may be queued now, waiting up to [`TICK`]
    /// for room if there is none (or until Ctrl-C).
    pub(crate) fn room(&self) -> usize {
        let free = || {
            let busy = self.handle.stats().in_progress();
            self.limit
                .saturating_sub(usize::try_from(busy).unwrap_or(usize::MAX))
        };
        let room = free();
        if room > 0 || self.interrupt.is_set() {
            return room;
        }
        // Every final outcome notifies; a missed one costs a tick.
        self.open.wait_for_change(TICK);
        self.refresh();
        free()
    }

    /// Reports an input that cannot be sent, and counts it.
    pub(crate) fn invalid(&self, tag: u64, why: &str) {
        self.invalid.set(self.invalid.get() + 1);
        self.note(&format!("{} {tag}: {why}", self.unit));
    }

    /// Prints a line on stderr, above the progress bar if there is one.
    pub(crate) fn note(&self, text: &str) {
        self.progress.note(text);
    }

    /// Redraws the progress bar, at most every [`REFRESH`].
    pub(crate) fn refresh(&self) {
        self.progress
            .refresh(|| (self.handle.stats(), self.invalid.get()));
    }

    /// Waits until every queued webhook, and every one recovered from the
    /// journal, is delivered or dead-lettered (or, after Ctrl-C, until the
    /// drain deadline), then shuts the dispatcher down.
    pub(crate) fn finish(self) -> Finished {
        while !self.interrupt.is_set() {
            self.open.wait_below(1, TICK);
            // The count of recovered webhooks is a hint; the dispatcher's
            // own count decides.
            if self.open.len() == 0 && self.handle.stats().in_progress() == 0 {
                break;
            }
            self.refresh();
        }
        let interrupted = self.interrupt.is_set();
        let in_progress = usize::try_from(self.handle.stats().in_progress()).unwrap_or(usize::MAX);
        let unfinished = in_progress.max(self.open.len());
        if interrupted && unfinished > 0 {
            let rest = match &self.journal {
                Some(path) => format!(
                    "then keeping the rest in the journal {} for the next run",
                    path.display()
                ),
                None => "then dead-lettering the rest".to_owned(),
            };
            self.note(&format!(
                "interrupted: delivering what is queued for up to {:?}, {rest}",
                self.drain
            ));
        }
        // Without Ctrl-C nothing is left, and this only joins the threads.
        let mut report = self.hooks.shutdown_timeout(self.drain);
        if report.still_running > 0 {
            // Workers that finished their request but not yet the hook.
            report.wait_running(Duration::from_millis(200));
        }
        self.progress.clear();
        Finished {
            stats: report.stats.clone(),
            unsaved: std::mem::take(&mut report.dead_letters),
            in_flight: self.open.take_all(),
            interrupted,
            invalid: self.invalid.get(),
            kept: report.kept,
        }
    }
}

/// A dead letter for a webhook that the tool itself gives up on at exit.
pub(crate) fn shutdown_letter(webhook: &Webhook, error: &str) -> DeadLetter {
    DeadLetter::from_webhook(webhook, DeadLetterReason::Shutdown, error)
}

/// Why an in-flight webhook is dead-lettered by the tool.
pub(crate) const IN_FLIGHT: &str =
    "still in flight when hookpool stopped; it may have been delivered (same id on replay)";
/// Why a webhook that was never queued is dead-lettered by the tool.
pub(crate) const NOT_QUEUED: &str = "interrupted before it was queued";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Webhooks handed to the dispatcher and not yet delivered or dead-lettered,
/// by id, each with its tag. Ids can repeat (a dead-letter file may hold one
/// twice), so each id maps to a list. Webhooks recovered from a journal are
/// only counted: their ids are not known until they end.
#[derive(Default)]
struct Outstanding {
    state: Mutex<OpenState>,
    freed: Condvar,
}

#[derive(Default)]
struct OpenState {
    by_id: HashMap<String, Vec<(u64, Webhook)>>,
    len: usize,
    /// Webhooks recovered from the journal at start.
    recovered: usize,
    /// Final outcomes of webhooks not tracked here: recovered ones (some
    /// may end before `recovered` is set) and replayed journal letters.
    strays: usize,
}

impl OpenState {
    /// Tracked ones, and recovered ones not yet ended.
    fn busy(&self) -> usize {
        self.len + self.recovered.saturating_sub(self.strays)
    }
}

impl Outstanding {
    fn insert(&self, tag: u64, webhook: Webhook) {
        let mut state = self.state.lock();
        state
            .by_id
            .entry(webhook.id().to_owned())
            .or_default()
            .push((tag, webhook));
        state.len += 1;
    }

    fn remove(&self, id: &str) {
        let mut state = self.state.lock();
        match state.by_id.get_mut(id) {
            Some(list) => {
                list.pop();
                if list.is_empty() {
                    state.by_id.remove(id);
                }
                state.len -= 1;
            }
            None => state.strays += 1,
        }
        drop(state);
        self.freed.notify_all();
    }

    fn set_recovered(&self, n: usize) {
        self.state.lock().recovered = n;
    }

    fn len(&self) -> usize {
        self.state.lock().len
    }

    /// Waits up to `timeout` until fewer than `limit` are open, recovered
    /// ones included; returns whether they are.
    fn wait_below(&self, limit: usize, timeout: Duration) -> bool {
        let mut state = self.state.lock();
        if state.busy() >= limit {
            self.freed
                .wait_while_for(&mut state, |s| s.busy() >= limit, timeout);
        }
        state.busy() < limit
    }

    /// Waits up to `timeout` for any webhook to end.
    fn wait_for_change(&self, timeout: Duration) {
        let mut state = self.state.lock();
        self.freed.wait_for(&mut state, timeout);
    }

    fn take_all(&self) -> Vec<(u64, Webhook)> {
        let mut state = self.state.lock();
        state.len = 0;
        let mut all: Vec<_> = state.by_id.drain().flat_map(|(_, list)| list).collect();
        all.sort_by_key(|(tag, _)| *tag);
        all
    }
}

/// A spinner on stderr with the rate, delivered, retrying and dead-lettered
/// counts, shown only when stderr is a terminal.
struct Progress {
    bar: Option<ProgressBar>,
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
    fn new() -> Self {
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

    fn refresh(&self, counts: impl FnOnce() -> (DispatchStats, u64)) {
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

    fn note(&self, text: &str) {
        note(self.bar.as_ref(), text);
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints a line on stderr, above the progress bar if there is one.
fn note(bar: Option<&ProgressBar>, text: &str) {
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
