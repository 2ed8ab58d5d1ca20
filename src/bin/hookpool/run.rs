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
    DispatchStats, Dispatcher, DispatcherBuilder, DurableError, Journal, RetryPolicy, Webhook,
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

/// Why [`Session::send_batch`] gave webhooks back, unqueued: all of a
/// batch's that it did not queue, in order.
pub(crate) enum Refused {
    /// Ctrl-C came first.
    Interrupted(Vec<Webhook>),
    /// The journal could not commit them, for the reason given.
    Journal(Vec<Webhook>, UsageError),
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

    /// How many webhooks to read next, at most `most`: waits up to
    /// [`TICK`] until there is room for a batch worth a commit (half the
    /// limit, or `most`, whichever is fewer), and says 0 if it did not
    /// come. Waiting for that much, rather than taking each place as it
    /// frees, is what keeps batches from shrinking to a line each once the
    /// queue is full; the queue still holds at least half the limit.
    pub(crate) fn batch_room(&self, most: usize) -> usize {
        let enough = most.min(self.limit.div_ceil(2)).max(1);
        if !self.open.wait_below(self.limit - enough + 1, TICK) {
            self.refresh();
            return 0;
        }
        self.limit.saturating_sub(self.open.busy()).min(most)
    }

    /// Queues a webhook (tagged `tag`), as [`send_batch`](Self::send_batch)
    /// does a batch of one, without a cursor.
    pub(crate) fn send(&self, tag: u64, webhook: Webhook) -> Result<(), Refused> {
        self.send_batch(vec![(tag, webhook)], None)
    }

    /// Queues a batch of webhooks, each with its tag, waiting as long as it
    /// takes for room for all of them (webhooks recovered from the journal
    /// take room too). With a journal, the batch is committed first, in one
    /// transaction, with `cursor` if given; `Ok` means committed. Gives
    /// back what it did not queue if Ctrl-C comes first: with a journal the
    /// whole batch, uncommitted, its cursor not saved; without one, the
    /// webhooks from the one it was waiting to queue on. If the journal
    /// fails, the whole batch comes back, uncommitted.
    pub(crate) fn send_batch(
        &self,
        batch: Vec<(u64, Webhook)>,
        cursor: Option<String>,
    ) -> Result<(), Refused> {
        let room_for = self.limit.saturating_sub(batch.len()) + 1;
        while !self.open.wait_below(room_for, TICK) {
            if self.interrupt.is_set() {
                return Err(Refused::Interrupted(untagged(batch)));
            }
            self.refresh();
        }
        // Tracked before they are queued: they may be delivered before this returns.
        for (tag, webhook) in &batch {
            self.open.insert(*tag, webhook.clone());
        }
        let webhooks = untagged(batch);
        let sent = if self.journal.is_some() {
            self.send_durable(webhooks, cursor)
        } else {
            self.send_each(webhooks)
        };
        if let Err(refused) = &sent {
            let (Refused::Interrupted(back) | Refused::Journal(back, _)) = refused;
            for webhook in back {
                self.open.remove(webhook.id());
            }
        }
        self.refresh();
        sent
    }

    /// [`send_batch`](Self::send_batch) without a journal.
    fn send_each(&self, webhooks: Vec<Webhook>) -> Result<(), Refused> {
        let mut webhooks = webhooks.into_iter();
        while let Some(mut webhook) = webhooks.next() {
            loop {
                match self.handle.send_timeout(webhook, TICK) {
                    Ok(()) => break,
                    Err(refused) => {
                        let closed = refused.is_closed();
                        webhook = refused.into_inner();
                        if closed || self.interrupt.is_set() {
                            let back = std::iter::once(webhook).chain(webhooks).collect();
                            return Err(Refused::Interrupted(back));
                        }
                        self.refresh();
                    }
                }
            }
        }
        Ok(())
    }

    /// [`send_batch`](Self::send_batch) through the journal: one commit.
    fn send_durable(&self, webhooks: Vec<Webhook>, cursor: Option<String>) -> Result<(), Refused> {
        let mut webhooks = webhooks;
        loop {
            let refused = match self
                .handle
                .send_durable_batch(webhooks, cursor.clone(), TICK)
            {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
            let why = match refused.error() {
                DurableError::Store { error, .. } => {
                    Some(UsageError::with_causes("cannot journal them", error))
                }
                DurableError::Full(_) if !self.interrupt.is_set() => {
                    webhooks = refused.into_inner();
                    self.refresh();
                    continue;
                }
                _ => None,
            };
            let back = refused.into_inner();
            return Err(match why {
                Some(why) => Refused::Journal(back, why),
                None => Refused::Interrupted(back),
            });
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

/// The webhooks of a batch, without their tags.
fn untagged(batch: Vec<(u64, Webhook)>) -> Vec<Webhook> {
    batch.into_iter().map(|(_, webhook)| webhook).collect()
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

    /// Open now, recovered ones included.
    fn busy(&self) -> usize {
        self.state.lock().busy()
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
