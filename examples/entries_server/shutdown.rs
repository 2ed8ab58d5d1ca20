//! Stopping in order: HTTP intake and promises, then the dispatcher's drain,
//! then the letters the file refused, then the summary line.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hookpool::{DeadLetterSink, Dispatcher};
use serde::Serialize;
use tiny_http::Server;

use crate::app::{App, lock};
use crate::config::Config;
use crate::http::shutting_down;

/// How long shutdown waits for requests being handled to finish.
const REQUEST_GRACE: Duration = Duration::from_secs(5);

/// Why the server stops.
pub(crate) enum Stop {
    Signal,
    ListenerFailed(String),
}

/// Waits for a reason to stop, then stops; the exit code says whether every
/// promised webhook was kept: delivered, dead-lettered, or (with a journal)
/// left in the journal for the next start.
pub(crate) fn wait_and_shut_down(
    stop_rx: &mpsc::Receiver<Stop>,
    config: &Config,
    app: &App,
    server: Arc<Server>,
    http_threads: Vec<thread::JoinHandle<()>>,
    stopping: &AtomicBool,
    dispatcher: Dispatcher,
) -> Result<ExitCode, String> {
    // Every sender lives in the signal handler or an HTTP thread, so this
    // only errs if all of them are gone, which is a reason to stop too.
    let why = stop_rx.recv().unwrap_or(Stop::Signal);
    let stop_started = Instant::now();
    let listener_failed = match why {
        Stop::Signal => {
            log::info!("signal received: stopping HTTP intake");
            false
        }
        Stop::ListenerFailed(e) => {
            log::error!("the HTTP listener failed ({e}): shutting down");
            true
        }
    };

    // 1. Stop intake and promises, answer late requests 503, close the
    //    listener.
    stop_http(&server, http_threads, stopping);
    app.stop_promises();
    let mut refused = 0;
    while let Ok(Some(request)) = server.try_recv() {
        refused += 1;
        let _ = request.respond(shutting_down());
    }
    drop(server);
    log::info!(
        "HTTP intake stopped ({refused} late requests refused); draining webhooks for up to {:?}",
        config.shutdown_timeout
    );

    // 2. Drain. Every promised webhook is in the queue or the file by now.
    //    At the deadline, with a journal, what is unfinished stays in it
    //    (`kept`); without, it is dead-lettered with reason `shutdown`.
    let mut report = dispatcher.shutdown_timeout(config.shutdown_timeout);
    if report.still_running > 0 {
        // Each ends within the request timeout, delivered or dead-lettered
        // (with a journal, its row stays there whatever the outcome: the
        // journal closed at the deadline).
        let wait = config.webhook_timeout + Duration::from_secs(1);
        log::info!(
            "waiting up to {wait:?} for {} deliveries in flight",
            report.still_running
        );
        report.wait_running(wait);
    }

    // 3. The dispatcher's letters the file refused get one more try, then go
    //    to stderr as a last resort so an operator can recover them.
    let mut lost = 0;
    for letter in std::mem::take(&mut report.dead_letters) {
        if let Err(e) = app.dead_letters.store(&letter) {
            lost += 1;
            log::error!("dead letter {} could not be stored: {e}", letter.id);
            match serde_json::to_string(&letter) {
                Ok(line) => eprintln!("UNSAVED DEAD LETTER {line}"),
                Err(e) => log::error!("dead letter {} cannot be printed: {e}", letter.id),
            }
        }
    }

    let summary = Summary {
        event: "shutdown",
        entries: lock(&app.entries).by_id.len(),
        accepted: report.stats.accepted,
        delivered: report.stats.delivered,
        dead_lettered: report.stats.dead_lettered,
        queue_full: app.queue_full.load(Ordering::SeqCst),
        refused: app.refused.load(Ordering::SeqCst),
        recovered: report.stats.store.as_ref().map_or(0, |s| s.recovered),
        kept: report.kept,
        still_running: report.still_running,
        unsaved: lost,
        elapsed_ms: u64::try_from(stop_started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let summary = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
    println!("{summary}");
    let _ = io::stdout().flush();
    log::info!("shut down: {summary}");
    // A delivery still running is not lost with a journal: its row is there.
    let unfinished = report.still_running > 0 && !app.journaled;
    if listener_failed || unfinished || lost > 0 {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The last line on stdout.
#[derive(Serialize)]
struct Summary {
    event: &'static str,
    /// Entries still stored.
    entries: usize,
    /// Webhooks the dispatcher accepted.
    accepted: u64,
    delivered: u64,
    /// By the dispatcher: retries exhausted, permanent failures, shutdown...
    dead_lettered: u64,
    /// By the server, because the queue was full.
    queue_full: u64,
    /// Changes answered 503 because their webhook could not be kept.
    refused: u64,
    /// Webhooks found in the journal at start (a previous run's).
    recovered: u64,
    /// Webhooks left in the journal for the next start.
    kept: u64,
    /// Deliveries still in flight when the process exits (0 unless a
    /// request outlived its timeout).
    still_running: usize,
    /// Dead letters the file refused, printed to stderr instead.
    unsaved: usize,
    /// From the signal to this line.
    elapsed_ms: u64,
}

/// Stops the HTTP threads. Requests already queued in tiny_http come
/// before the unblock markers, so they are answered, and their webhooks
/// queued, before a thread exits. A thread still reading a slow client's
/// body after `REQUEST_GRACE` is left behind: it can no longer promise a
/// webhook once [`App::stop_promises`] has run.
pub(crate) fn stop_http(
    server: &Server,
    threads: Vec<thread::JoinHandle<()>>,
    stopping: &AtomicBool,
) {
    stopping.store(true, Ordering::SeqCst);
    // One marker per thread: each thread exits at the first one it takes.
    for _ in 0..threads.len() {
        server.unblock();
    }
    let deadline = Instant::now() + REQUEST_GRACE;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let mut left_behind = 0;
    for t in threads {
        if !t.is_finished() {
            left_behind += 1;
        } else if t.join().is_err() {
            log::error!("an HTTP thread panicked");
        }
    }
    if left_behind > 0 {
        log::warn!(
            "{left_behind} HTTP requests still unfinished after {REQUEST_GRACE:?}; they will be answered 503 if they finish"
        );
    }
}
