//! `hookpool send --redis URL --queue NAME`: each line's webhook goes into
//! the shared queue, for `hookpool worker`s to deliver; this process
//! delivers nothing.
//!
//! Lines are enqueued one after the other, each acknowledged by Redis
//! before the next is read, so what is in the queue is always the input's
//! first lines: the summary's `lines` says where to go on after a stop.
//! (After a Redis failure, the line it stopped at may be there too: Redis
//! may have written it before it failed to answer.)

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use hookpool::{Dispatcher, DurableError, RedisQueue, Webhook};
use serde::Serialize;

use crate::input::{self, Input, Source};
use crate::run::{DeliveryArgs, TICK};
use crate::send::webhook;
use crate::shared_queue::{producer, store_error};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// How long one line's enqueue is tried again while Redis fails, before
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
    /// Why Redis did not take line `lines + 1`; the send stopped there.
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
    let (lines_rx, reader) = input::spawn_reader(source.into_start())?;
    let mut run = Run {
        hooks: &hooks,
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
        match lines_rx.recv_timeout(TICK) {
            Ok(Input::Line(n, bytes, _)) => {
                if !run.line(n, bytes) {
                    break;
                }
            }
            Ok(Input::Failed(n, e)) => {
                eprintln!("hookpool: cannot read line {n}: {e}");
                read_error = Some(e.to_string());
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                reached_end = true;
                break;
            }
        }
    }
    drop(lines_rx);
    // Lines read ahead (at most the reader's 64 KiB buffer): enqueued also
    // after Ctrl-C when the input cannot give them again.
    let read_ahead = input::reclaim(reader);
    if !rereadable && run.redis_error.is_none() {
        for (n, bytes) in read_ahead {
            if !run.line(n, bytes) {
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
    hooks: &'a Dispatcher,
    interrupt: &'a Interrupt,
    target: &'a Target<'a>,
    lines: u64,
    invalid: u64,
    enqueued: u64,
    redis_error: Option<String>,
}

impl Run<'_> {
    /// Handles line `n`; returns false if Redis did not take it (the send
    /// stops there, and `n` is not counted).
    fn line(&mut self, n: u64, bytes: Vec<u8>) -> bool {
        match webhook(self.target.url, self.target.event_type, bytes) {
            Ok(None) => {}
            Ok(Some(webhook)) => match self.enqueue(webhook) {
                Ok(()) => self.enqueued += 1,
                Err(e) => {
                    eprintln!("hookpool: line {n}: {e}; stopping");
                    self.redis_error = Some(e.to_string());
                    return false;
                }
            },
            Err(why) => {
                self.invalid += 1;
                eprintln!("hookpool: line {n}: {why}");
            }
        }
        self.lines = n;
        true
    }

    /// Enqueues `webhook` once Redis acknowledged it. While Redis fails, it
    /// is tried again with backoff for up to [`RETRY_FOR`], or until
    /// Ctrl-C. (A try that failed after Redis took it leaves it there: it
    /// is then in the queue twice, with the same id.)
    fn enqueue(&self, webhook: Webhook) -> Result<(), UsageError> {
        let first = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut said = false;
        let mut webhook = webhook;
        loop {
            let error = match self.hooks.send_durable(webhook, Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(DurableError::Store { webhook: w, error }) => {
                    webhook = w;
                    error
                }
                // A producer's queue is never full, and closes only at the end.
                Err(other) => return Err(UsageError(format!("cannot enqueue: {other}"))),
            };
            if self.interrupt.is_set() || first.elapsed() + backoff > RETRY_FOR {
                return Err(store_error(&error));
            }
            if !said {
                said = true;
                eprintln!(
                    "hookpool: {}; trying again for up to {RETRY_FOR:?}",
                    store_error(&error)
                );
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
