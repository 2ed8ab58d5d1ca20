//! `hookpool worker`: one worker process of a shared queue in Redis. It
//! claims webhooks into its own bounded queue and delivers them until
//! SIGTERM or Ctrl-C, then shuts down gracefully and prints a summary.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use hookpool::DeadLetterReason;
use serde::Serialize;

use crate::run::{DeliveryArgs, MAX_QUEUE, TICK, breaker_change};
use crate::shared_queue::{QueueArgs, build_error};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// The flags of `hookpool worker` (its help text is on `Command::Worker`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    queue: QueueArgs,
    /// Webhooks claimed ahead, waiting here for a worker thread: a worker process that dies
    /// holds at most this many plus --workers, which the others take back after its ttl
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_QUEUE)))]
    prefetch: u32,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    queue: String,
    /// Webhooks claimed from the shared queue.
    claimed: u64,
    delivered: u64,
    /// Dead letters, now in the shared queue's dead letters.
    dead_lettered: u64,
    dead_lettered_by_reason: BTreeMap<DeadLetterReason, u64>,
    retried: u64,
    push_backs: u64,
    /// Webhooks handed back to the shared queue: retries, breaker deferrals
    /// and pauses (they wait there, for any worker), and at the shutdown,
    /// claimed ones that never started.
    handed_back: u64,
    /// Of those, handed back during the shutdown.
    released: u64,
    /// Requests still in flight at the drain deadline: the other workers
    /// take them back and deliver them again, with the same id.
    in_flight_at_exit: usize,
    /// Late results for webhooks the queue had taken back from this worker
    /// (it was silent past its ttl); not counted there.
    stale: u64,
    /// Webhooks of dead worker processes this one took back.
    reclaimed: u64,
    elapsed_ms: u64,
}

pub(crate) fn run(args: Args, interrupt: &Interrupt) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    let (timeout, ttl) = (args.delivery.timeout(), args.queue.ttl());
    // The library refuses it too; the flags' names say what to change.
    if timeout > ttl / 2 {
        return Err(UsageError(format!(
            "--timeout-ms {} is more than half of --worker-ttl-ms {}: a delivery that slow \
             would make this worker look dead to the others, which would take its webhooks \
             back; lower --timeout-ms or raise --worker-ttl-ms",
            timeout.as_millis(),
            ttl.as_millis()
        )));
    }
    let queue = args.queue.queue()?;
    let hooks = args
        .delivery
        .builder("worker", args.prefetch as usize)?
        .on_breaker_change(|c| eprintln!("hookpool: {}", breaker_change(c)))
        .redis(queue)
        .build()
        .map_err(|e| build_error(&e))?;
    eprintln!(
        "hookpool: worker on queue {} with {} workers; SIGTERM or Ctrl-C stops it",
        args.queue.name(),
        args.delivery.workers()
    );
    while !interrupt.is_set() {
        std::thread::sleep(TICK);
    }
    let drain = args.delivery.drain();
    eprintln!(
        "hookpool: stopping: no more claims; delivering what was claimed for up to {drain:?}, \
         then handing the rest back to the queue"
    );
    let before = hooks.stats().kept;
    // Not waited for past the deadline: the queue is closed by then, so a
    // late result could not be acknowledged, and the others deliver it again.
    let report = hooks.shutdown_timeout(drain);
    let stats = &report.stats;
    let shared = stats
        .store
        .as_ref()
        .and_then(|s| s.shared.clone())
        .unwrap_or_default();
    if report.still_running > 0 {
        eprintln!(
            "hookpool: {} deliveries were still in flight at the deadline; the other workers \
             take them back (this worker is deregistered) and deliver them again, with the same id",
            report.still_running
        );
    }
    let summary = Summary {
        queue: args.queue.name().to_owned(),
        claimed: stats.accepted,
        delivered: stats.delivered,
        dead_lettered: stats.dead_lettered,
        dead_lettered_by_reason: stats.dead_lettered_by_reason.clone(),
        retried: stats.retried,
        push_backs: stats.push_backs,
        handed_back: stats.kept,
        released: stats.kept.saturating_sub(before),
        in_flight_at_exit: report.still_running,
        stale: shared.stale,
        reclaimed: shared.reclaimed,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(summary.in_flight_at_exit == 0))
}
