//! `hookpool listen`: a webhook receiver for trying things out. It verifies
//! signatures, hands each webhook to a [`Pool`], and answers at once.

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hookpool::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Pool, SigningSecret,
    SubmitError, verify,
};
use serde::Serialize;

use crate::http::{self, Request, Response};
use crate::{Interrupt, Secrets, UsageError, print_line};

/// How far a webhook's timestamp may be from now, as the Standard Webhooks
/// libraries allow.
const TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Bodies larger than this get 413.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// The flags of `hookpool listen` (its help text is on `Command::Listen`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free one (the first line on stdout names it)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Secrets to verify with; without any, unsigned webhooks are accepted
    #[command(flatten)]
    secrets: Secrets,
    /// Threads that process accepted webhooks
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
    /// Accepted webhooks that may wait for a worker; beyond that the answer is 429
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    queue: u32,
    /// Simulated processing time per webhook
    #[arg(long, value_name = "N", default_value_t = 0)]
    process_ms: u64,
    /// Fraction of verified webhooks (0.0 to 1.0) answered 500 instead of 202
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_fraction)]
    fail_rate: f64,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a number from 0.0 to 1.0")),
    }
}

/// What the receiver has seen, printed as JSON on exit.
#[derive(Default)]
struct Counts {
    received: AtomicU64,
    accepted: AtomicU64,
    processed: AtomicU64,
    rejected_full: AtomicU64,
    bad_signature: AtomicU64,
    failed_injected: AtomicU64,
    other: AtomicU64,
}

#[derive(Serialize)]
struct Totals {
    received: u64,
    accepted: u64,
    processed: u64,
    /// Accepted but not processed when the receiver stopped.
    unprocessed: usize,
    rejected_full: u64,
    bad_signature: u64,
    failed_injected: u64,
    /// Requests that are not POST.
    other: u64,
    elapsed_ms: u64,
}

/// One accepted webhook, as the pool's workers get it.
struct Job {
    id: String,
}

pub(crate) fn run(args: Args, interrupt: &Interrupt) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    let secrets = args.secrets.parse()?;
    let counts = Arc::new(Counts::default());
    let processed = Arc::clone(&counts);
    let process = Duration::from_millis(args.process_ms);
    let pool = Pool::builder()
        .name("listen")
        .workers(args.workers as usize)
        .queue_capacity(args.queue as usize)
        .build(move |job: Job| {
            std::thread::sleep(process);
            processed.processed.fetch_add(1, Ordering::Relaxed);
            log::debug!(target: "hookpool", "processed {}", job.id);
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| UsageError(format!("cannot start the pool: {e}")))?;
    let listener = TcpListener::bind(&args.addr)
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.addr)))?;
    let bound = listener
        .local_addr()
        .map_or_else(|_| args.addr.clone(), |a| a.to_string());
    print_line(&format!("listening on {bound}"));
    if secrets.is_empty() {
        eprintln!("hookpool: no --secret given: signatures are not checked");
    }

    let receiver = Receiver {
        secrets,
        fail_rate: args.fail_rate,
        pool: &pool,
        counts: &counts,
    };
    if let Err(e) = http::serve(&listener, interrupt, MAX_BODY, &|r| receiver.handle(r)) {
        eprintln!("hookpool: cannot serve on {bound}: {e}");
    }
    // A simulator: what is still queued is counted, not waited for.
    let report = pool.shutdown_timeout(Duration::ZERO);
    let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let totals = Totals {
        received: get(&counts.received),
        accepted: get(&counts.accepted),
        processed: get(&counts.processed),
        unprocessed: report.unstarted.len() + report.still_running,
        rejected_full: get(&counts.rejected_full),
        bad_signature: get(&counts.bad_signature),
        failed_injected: get(&counts.failed_injected),
        other: get(&counts.other),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    print_line(&serde_json::to_string(&totals).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

struct Receiver<'a> {
    secrets: Vec<SigningSecret>,
    fail_rate: f64,
    pool: &'a Pool<Job>,
    counts: &'a Counts,
}

impl Receiver<'_> {
    /// Answers one request and prints one line about it.
    fn handle(&self, request: Request) -> Response {
        let id = request.header(HEADER_WEBHOOK_ID);
        let shown_id = if id.is_empty() { "-" } else { id };
        let bytes = request.body.len();
        if request.method != "POST" {
            self.counts.other.fetch_add(1, Ordering::Relaxed);
            print_line(&format!(
                "405 {shown_id} {} {}: only POST",
                request.method, request.path
            ));
            return Response::new(405, "only POST is accepted\n").header("Allow", "POST");
        }
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        let (response, what) = if let Err(e) = self.check_signature(&request) {
            self.counts.bad_signature.fetch_add(1, Ordering::Relaxed);
            (
                Response::new(401, format!("{e}\n")),
                format!("bad signature: {e}"),
            )
        } else if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            self.counts.failed_injected.fetch_add(1, Ordering::Relaxed);
            (
                Response::new(500, "injected failure\n"),
                "injected failure".to_owned(),
            )
        } else {
            match self.pool.try_submit(Job { id: id.to_owned() }) {
                Ok(()) => {
                    self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                    (Response::new(202, ""), "accepted".to_owned())
                }
                Err(SubmitError::Full(_)) => {
                    self.counts.rejected_full.fetch_add(1, Ordering::Relaxed);
                    let busy = Response::new(429, "queue full\n").header("Retry-After", "1");
                    (busy, "queue full".to_owned())
                }
                Err(SubmitError::Closed(_)) => {
                    self.counts.other.fetch_add(1, Ordering::Relaxed);
                    (
                        Response::new(503, "shutting down\n"),
                        "shutting down".to_owned(),
                    )
                }
            }
        };
        print_line(&format!(
            "{} {shown_id} {bytes} bytes {what}",
            response.status
        ));
        response
    }

    fn check_signature(&self, request: &Request) -> Result<(), hookpool::VerifyError> {
        if self.secrets.is_empty() {
            return Ok(());
        }
        verify(
            &self.secrets,
            request.header(HEADER_WEBHOOK_ID),
            request.header(HEADER_WEBHOOK_TIMESTAMP),
            request.header(HEADER_WEBHOOK_SIGNATURE),
            &request.body,
            SystemTime::now(),
            TOLERANCE,
        )
    }
}
