//! `hookpool send --redis URL --queue NAME`: each line's webhook goes into
//! the shared queue, for `hookpool worker`s to deliver; this process
//! delivers nothing.
//!
//! Lines are enqueued in batches, one Redis script each, all of a batch or
//! none of it: the lines the input has already given, up to [`BATCH`]. A
//! batch is acknowledged by Redis before the next one is read, so what is
//! in the queue is always the input's first lines: the summary's `lines`
//! says where to go on after a stop. (After a Redis failure, the batch it
//! stopped at may be there too, whole: Redis may have run the script
//! before it failed to answer.)

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hookpool::{DispatchHandle, DurableError, RedisQueue, Webhook};
use serde::Serialize;

use crate::input::{BATCH, Next, NumberedLine, Reader, Source, line_range};
use crate::run::{DeliveryArgs, TICK};
use crate::send::webhook;
use crate::shared_queue::{producer, store_error};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// How long one batch's enqueue is tried again while Redis fails, before
/// the send stops there.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// What each line becomes.
pub(crate) struct Target<'a> {
    pub(crate) url: &'a str,
    pub(crate) event_type: Option<&'a str>,
    pub(crate) input: Option<&'a Path>,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    queue: String,
    /// Lines handled, from the first: each one enqueued, blank or invalid.
    /// The next line to send is `lines + 1`.
    lines: u64,
    invalid: u64,
    /// Webhooks Redis acknowledged.
    enqueued: u64,
    interrupted: bool,
    read_error: Option<String>,
    /// Why Redis did not take the batch from line `lines + 1` on; the send
    /// stopped there.
    redis_error: Option<String>,
    elapsed_ms: u64,
}

pub(crate) fn run(
    target: &Target<'_>,
    queue: RedisQueue,
    delivery: &DeliveryArgs,
    interrupt: &Interrupt,
) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    let name = queue.queue_name().to_owned();
    let source = Source::open(target.input)?;
    // A file's lines can be read again: after Ctrl-C, `lines` says from where.
    let rereadable = matches!(source, Source::File { .. });
    let hooks = producer("send", delivery, queue)?;
    let mut reader = Reader::spawn(source.into_start())?;
    let mut run = Run {
        handle: hooks.handle(),
        interrupt,
        target,
        lines: 0,
        invalid: 0,
        enqueued: 0,
        redis_error: None,
    };
    let mut read_error = None;
    let mut reached_end = false;
    while !interrupt.is_set() {
        let read = match reader.next(BATCH, TICK) {
            Next::Batch(read) => read,
            Next::Waiting => continue,
            Next::End => {
                reached_end = true;
                break;
            }
        };
        // A read error ends the input after this batch, whatever becomes
        // of the batch: noted first, so that a refused batch cannot hide it.
        let failed = read.failed.is_some();
        if let Some((n, e)) = read.failed {
            eprintln!("hookpool: cannot read line {n}: {e}");
            read_error = Some(e.to_string());
        }
        let lines = read.lines.into_iter().map(|l| (l.n, l.bytes)).collect();
        if !run.batch(lines) || failed {
            break;
        }
    }
    // Lines read ahead (at most the reader's 64 KiB buffer): enqueued also
    // after Ctrl-C when the input cannot give them again.
    let read_ahead = reader.reclaim();
    if !rereadable && run.redis_error.is_none() {
        let mut read_ahead = read_ahead.into_iter().peekable();
        while read_ahead.peek().is_some() {
            if !run.batch(read_ahead.by_ref().take(BATCH).collect()) {
                break;
            }
        }
    }
    let interrupted = interrupt.is_set();
    let Run {
        lines,
        invalid,
        enqueued,
        redis_error,
        ..
    } = run;
    // A producer has nothing to deliver: this only joins its threads.
    let _ = hooks.shutdown();
    if redis_error.is_some() || interrupted {
        let next = lines + 1;
        eprintln!(
            "hookpool: stopped before line {next}: {enqueued} webhooks are in queue {name}; \
             lines from {next} on are not (for a file: tail -n +{next} FILE | hookpool send ...)"
        );
    }
    let summary = Summary {
        queue: name,
        lines,
        invalid,
        enqueued,
        interrupted,
        read_error,
        redis_error,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let ok = reached_end
        && !summary.interrupted
        && summary.read_error.is_none()
        && summary.redis_error.is_none()
        && summary.invalid == 0;
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(ok))
}

/// The send so far.
struct Run<'a> {
    handle: DispatchHandle,
    interrupt: &'a Interrupt,
    target: &'a Target<'a>,
    lines: u64,
    invalid: u64,
    enqueued: u64,
    redis_error: Option<String>,
}

impl Run<'_> {
    /// Handles a batch of lines, in one Redis script; returns false if
    /// Redis did not take it (the send stops there, and none of its lines
    /// is counted).
    fn batch(&mut self, lines: Vec<NumberedLine>) -> bool {
        let (Some(&(first, _)), Some(&(last, _))) = (lines.first(), lines.last()) else {
            return true;
        };
        let mut webhooks = Vec::with_capacity(lines.len());
        let mut invalid = Vec::new();
        for (n, bytes) in lines {
            match webhook(self.target.url, self.target.event_type, bytes) {
                Ok(None) => {}
                Ok(Some(webhook)) => webhooks.push(webhook),
                Err(why) => invalid.push((n, why)),
            }
        }
        let count = webhooks.len() as u64;
        if let Err(e) = self.enqueue(webhooks) {
            eprintln!("hookpool: {}: {e}; stopping", line_range(first, last));
            self.redis_error = Some(e.to_string());
            return false;
        }
        self.enqueued += count;
        for (n, why) in invalid {
            self.invalid += 1;
            eprintln!("hookpool: line {n}: {why}");
        }
        self.lines = last;
        true
    }

    /// Enqueues `webhooks`, in one script, once Redis acknowledged it.
    /// While Redis fails, it is tried again with backoff for up to
    /// [`RETRY_FOR`], or until Ctrl-C. (A try that failed after Redis ran
    /// the script leaves the batch there: it is then in the queue twice,
    /// with the same ids.)
    fn enqueue(&self, webhooks: Vec<Webhook>) -> Result<(), UsageError> {
        let first = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut said = false;
        let mut webhooks = webhooks;
        loop {
            let refused = match self
                .handle
                .send_durable_batch(webhooks, None, Duration::ZERO)
            {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
            let error = match refused.error() {
                DurableError::Store { error, .. } => store_error(error),
                // A producer's queue is never full, and closes only at the end.
                other => return Err(UsageError(format!("cannot enqueue: {other}"))),
            };
            webhooks = refused.into_inner();
            if self.interrupt.is_set() || first.elapsed() + backoff > RETRY_FOR {
                return Err(error);
            }
            if !said {
                said = true;
                eprintln!("hookpool: {error}; trying again for up to {RETRY_FOR:?}");
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
