//! Driving a dispatcher as the delivery benchmarks do: the dispatcher they
//! share (W workers, a queue of W, no retries), webhooks numbered by their
//! id so that hooks can find them in a [`Tracker`], and many submitting
//! threads at once, as the request handlers of a server would be.

use std::ops::Range;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hookpool::{BreakerConfig, Dispatcher, DispatcherBuilder, RetryPolicy, Webhook};
use serde::{Deserialize, Serialize};

use super::measure::Tracker;

/// Every wait of a benchmark's child gives up after this.
pub const WAIT: Duration = Duration::from_secs(300);

/// How much a benchmark sends, and from how many threads to how many
/// workers.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Scale {
    /// Webhooks per run.
    pub n: usize,
    pub rounds: usize,
    /// Threads submitting at once.
    pub submitters: usize,
    /// The dispatcher's workers.
    pub workers: usize,
}

impl Scale {
    /// `HOOKPOOL_BENCH_N` (`n`), `HOOKPOOL_BENCH_ROUNDS` (5),
    /// `HOOKPOOL_BENCH_SUBMITTERS` (16), `HOOKPOOL_BENCH_WORKERS` (16).
    pub fn from_env(n: usize) -> Scale {
        Scale {
            n: super::env_or("HOOKPOOL_BENCH_N", n),
            rounds: super::env_or("HOOKPOOL_BENCH_ROUNDS", 5),
            submitters: super::env_or("HOOKPOOL_BENCH_SUBMITTERS", 16),
            workers: super::env_or("HOOKPOOL_BENCH_WORKERS", 16),
        }
    }
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Scale {
            n,
            rounds,
            submitters,
            workers,
        } = self;
        write!(
            f,
            "N = {n}, {submitters} submitters, {workers} workers, {rounds} rounds"
        )
    }
}

/// Webhook `i` to `url`: the benchmark body, with id `b{i}`.
pub fn webhook(url: &str, i: usize) -> Webhook {
    Webhook::from_json(url, super::BODY)
        .and_then(|w| w.with_id(&format!("b{i}")))
        .expect("webhook")
}

/// The `i` of a webhook id made by [`webhook`].
pub fn index(id: &str) -> Option<usize> {
    id.strip_prefix('b').and_then(|i| i.parse().ok())
}

/// The dispatcher every delivery variant uses: `workers` workers, as many
/// waiting as working (the tokio mpsc variant gets the same bound), no
/// retries, the default breaker, a 15 s request timeout.
pub fn builder(workers: usize) -> DispatcherBuilder {
    Dispatcher::builder()
        .workers(workers)
        .queue_capacity(workers)
        .retry(RetryPolicy::none())
        .breaker(BreakerConfig::default())
        .timeout(Duration::from_secs(15))
}

/// `builder` with hooks that mark each webhook finished in `tracker`: a
/// delivery as a success, a dead letter as a failure.
pub fn tracked(builder: DispatcherBuilder, tracker: &Arc<Tracker>) -> DispatcherBuilder {
    tracked_with(builder, tracker, || {})
}

/// [`tracked`], with `first` called on the worker's thread at each
/// delivery before it is marked (a gate that holds the workers, say).
pub fn tracked_with(
    builder: DispatcherBuilder,
    tracker: &Arc<Tracker>,
    first: impl Fn() + Send + Sync + 'static,
) -> DispatcherBuilder {
    let (delivered, dead) = (Arc::clone(tracker), Arc::clone(tracker));
    builder
        .on_delivered(move |e| {
            first();
            if let Some(i) = index(e.webhook.id()) {
                delivered.finished(i, true);
            }
        })
        .on_dead_letter(move |l| {
            if let Some(i) = index(&l.id) {
                dead.finished(i, false);
            }
        })
}

/// What [`parallel`] measured.
pub struct Submitted {
    /// From the first call to the return of the last.
    pub secs: f64,
    /// How long each call took, in milliseconds, sorted.
    pub call_ms: Vec<f64>,
    /// Calls that returned `false`.
    pub refused: usize,
}

/// Calls `submit(i)` for every `i` in `range` from `threads` threads at
/// once (thread `t` takes every `threads`-th, starting at the `t`-th), and
/// times each call. `submit` returns whether the webhook was taken.
pub fn parallel(
    range: Range<usize>,
    threads: usize,
    submit: impl Fn(usize) -> bool + Sync,
) -> Submitted {
    let threads = threads.max(1);
    let started = Instant::now();
    let per_thread: Vec<(Vec<f64>, usize)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (submit, range) = (&submit, range.clone());
                s.spawn(move || {
                    let mut calls = Vec::with_capacity(range.len() / threads + 1);
                    let mut refused = 0;
                    for i in range.skip(t).step_by(threads) {
                        let call = Instant::now();
                        if !submit(i) {
                            refused += 1;
                        }
                        calls.push(call.elapsed().as_secs_f64() * 1e3);
                    }
                    (calls, refused)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a submitting thread panicked"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let refused = per_thread.iter().map(|(_, r)| r).sum();
    let mut call_ms: Vec<f64> = per_thread.into_iter().flat_map(|(c, _)| c).collect();
    call_ms.sort_by(f64::total_cmp);
    Submitted {
        secs,
        call_ms,
        refused,
    }
}

/// `try_send`, again while it answers `Full`, for at most `limit`;
/// whether the webhook was taken.
pub fn try_until_taken(hooks: &Dispatcher, mut w: Webhook, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match hooks.try_send(w) {
            Ok(()) => return true,
            Err(e) if e.is_full() && Instant::now() < deadline => {
                w = e.into_inner();
                thread::yield_now();
            }
            Err(_) => return false,
        }
    }
}

/// Waits (at most `limit`) until the dispatcher's durable store has
/// written every state change it was given.
pub fn wait_written(hooks: &Dispatcher, limit: Duration) {
    let deadline = Instant::now() + limit;
    while hooks.stats().store.is_some_and(|s| s.pending > 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
    }
}

/// Waits (at most `limit`) until `tracker` has `count` webhooks finished;
/// returns whether it got there.
pub fn wait_finished(tracker: &Tracker, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while tracker.finished_count() < count {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
    true
}

/// Nanoseconds since the Unix epoch: a time that processes on one machine
/// can compare.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
