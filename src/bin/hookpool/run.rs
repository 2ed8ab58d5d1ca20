//! What `send` and `replay` share: the delivery flags (`worker` takes them
//! too), a dispatcher with the bookkeeping that makes Ctrl-C lossless,
//! backpressure, the progress bar, and the drain at the end. With a journal, the dispatcher recovers what a
//! previous run left unfinished, and a shutdown keeps what is unfinished
//! there instead of dead-lettering it.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hookpool::{
    BreakerChange, BreakerConfig, DeadLetter, DeadLetterReason, DeadLetterSink, DispatchHandle,
    DispatchStats, Dispatcher, DispatcherBuilder, DurableError, Journal, RetryPolicy, StoreError,
    Webhook,
};
use parking_lot::{Condvar, Mutex};

use crate::progress::{Progress, note};
use crate::{Interrupt, Secrets, UsageError};

/// The longest any wait lasts before the interrupt flag is checked again.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Delivery flags shared by `send`, `replay` and `worker`. (`--queue` is
/// each command's own: a number for `send` and `replay`, a name with
/// `--redis`.)
#[derive(Debug, clap::Args)]
pub(crate) struct DeliveryArgs {
    #[command(flatten)]
    secrets: Secrets,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// Delivery worker threads
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
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
    /// (a worker hands it back to the shared queue)
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    drain_timeout_ms: u64,
    /// At most N requests a second to each endpoint (scheme, host, port); without it the
    /// pace adapts to the receiver's push-back (429, 503 with Retry-After) alone
    #[arg(long, value_name = "N", value_parser = parse_rate)]
    rate: Option<f64>,
}

/// The ids of the [`DeliveryArgs`] that only matter to a process that
/// delivers: `send --redis` and `replay --redis` refuse them. `--secret`
/// is not among them, since `HOOKPOOL_SECRETS` may set it for every
/// command (and clap counts a value from the environment as given): those
/// two say on stderr that they do not use it.
pub(crate) const DELIVERY_ONLY: &[&str] = &[
    "cacerts",
    "tls_roots",
    "cert",
    "key",
    "workers",
    "max_attempts",
    "base_delay_ms",
    "timeout_ms",
    "max_elapsed_ms",
    "breaker_failures",
    "breaker_cooldown_ms",
    "drain_timeout_ms",
    "rate",
];

/// The largest `--queue N` (or `--prefetch N`).
pub(crate) const MAX_QUEUE: u32 = 1_000_000;

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

impl DeliveryArgs {
    /// A dispatcher builder with these flags: `workers` threads, at most
    /// `queue` webhooks waiting, the retry policy, breaker, timeouts, HTTPS
    /// settings, rate and secrets. Bad secrets or TLS files are usage errors.
    pub(crate) fn builder(
        &self,
        name: &str,
        queue: usize,
    ) -> Result<DispatcherBuilder, UsageError> {
        self.secrets.parse()?;
        let tls = self.tls.config()?;
        let max_elapsed = (self.max_elapsed_ms > 0).then(|| ms(self.max_elapsed_ms));
        let retry = RetryPolicy::exponential(ms(self.base_delay_ms))
            .max_attempts(self.max_attempts)
            .max_elapsed(max_elapsed);
        let breaker = match self.breaker_failures {
            0 => BreakerConfig::disabled(),
            n => BreakerConfig::default()
                .failure_threshold(n)
                .cooldown(ms(self.breaker_cooldown_ms)),
        };
        let timeout = self.timeout();
        let mut builder = Dispatcher::builder()
            .name(name)
            .workers(self.workers as usize)
            .queue_capacity(queue)
            .retry(retry)
            .breaker(breaker)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tls(tls);
        if let Some(rate) = self.rate {
            builder = builder.rate_limit(rate);
        }
        for secret in self.secrets.texts() {
            // Already checked above, so this cannot fail.
            builder = builder
                .signing_secret(secret)
                .map_err(|e| UsageError(format!("--secret: {e}")))?;
        }
        Ok(builder)
    }

    /// `--timeout-ms`: one attempt's timeout.
    pub(crate) fn timeout(&self) -> Duration {
        ms(self.timeout_ms)
    }

    /// `--drain-timeout-ms`.
    pub(crate) fn drain(&self) -> Duration {
        ms(self.drain_timeout_ms)
    }

    /// `--workers`.
    pub(crate) fn workers(&self) -> u32 {
        self.workers
    }

    /// Whether `--secret` (or `HOOKPOOL_SECRETS`) gave any secret.
    pub(crate) fn has_secrets(&self) -> bool {
        self.secrets.texts().next().is_some()
    }
}

/// The line on stderr for a breaker's change: the reason a run seems to stall.
pub(crate) fn breaker_change(c: &BreakerChange<'_>) -> String {
    format!("circuit breaker for {}: {} -> {}", c.endpoint, c.from, c.to)
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
    /// there is one. At most `queue` webhooks wait at once; `unit` names
    /// what tags count in messages.
    pub(crate) fn start(
        args: &DeliveryArgs,
        queue: usize,
        name: &str,
        keep: Keep,
        unit: &'static str,
        interrupt: &Interrupt,
    ) -> Result<Session, UsageError> {
        let builder = args.builder(name, queue)?;
        let open = Arc::new(Outstanding::default());
        let (done, dead) = (Arc::clone(&open), Arc::clone(&open));
        let progress = Progress::new();
        let bar = progress.bar.clone();
        let mut builder = builder
            // Called for every final outcome, also when the sink failed.
            .on_delivered(move |d| done.remove(d.webhook.id()))
            .on_dead_letter(move |letter| dead.remove(&letter.id))
            .on_breaker_change(move |c| note(bar.as_ref(), &breaker_change(c)));
        if let Some(sink) = keep.sink {
            builder = builder.dead_letters(sink);
        }
        let journal = keep.journal.as_ref().map(|j| j.path().to_owned());
        if let Some(j) = keep.journal {
            builder = builder.journal(j);
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
            limit: queue + args.workers as usize,
            drain: args.drain(),
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
