//! A small journaling service that sends webhooks: the sending side of the
//! seeds, as a blocking HTTP server (tiny_http) with a hookpool `Dispatcher`
//! and its on-disk journal.
//!
//! - `POST /entries` with `{"text": "...", "mood": 1-10, "category": "..."}`
//!   saves the entry in memory and answers 201 with it once its
//!   `entry_created` webhook is committed to the journal. The user comes
//!   from the `X-User-Id` header (default `anonymous`).
//! - `DELETE /entries/{id}` removes the entry and answers 200 with it once
//!   its `entry_deleted` webhook is committed; an unknown id is a 404.
//! - `GET /metrics` serves the dispatcher's metrics in Prometheus text format.
//!
//! Webhook bodies carry exactly `{event, entry_id, user_id, text, mood,
//! category, timestamp}` (Unix seconds). A 201 or 200 means the webhook is
//! committed (`send_durable`, `Synchronous::Full`): it survives `kill -9`
//! and a power cut, and is delivered at least once, with its id, by this
//! process or the next one started on the same journal, which delivers what
//! the journal holds before it listens. A request waits for that commit,
//! never for the dispatcher's queue: when the queue is full the webhook is
//! written to the dead-letter file with reason `queue_full` (replay it with
//! `hookpool replay`), and the entry is still saved and answered 201. When
//! the journal cannot commit (a full disk), or the dead-letter file refuses
//! a letter, the change is not made and is answered 503: a 2xx is never
//! given for a webhook that is not kept. `JOURNAL=""` runs without a
//! journal: a 2xx then means queued in memory.
//!
//! SIGINT or SIGTERM stops the HTTP intake (requests already received are
//! answered, within 5 s; later ones get 503), then drains the dispatcher for
//! at most `SHUTDOWN_TIMEOUT`. What is left then stays in the journal for the
//! next start (`kept` in the summary; without a journal it is dead-lettered
//! with reason `shutdown`). It waits for deliveries still in flight (at most
//! `WEBHOOK_TIMEOUT`), prints a JSON summary and exits 0.
//!
//! tiny_http suits a demo and a loopback or proxied deployment, not the open
//! internet: it has no read timeouts, and tiny_http 0.12 allocates a
//! request's declared `Content-Length` when it discards an unread body, so
//! one request declaring a huge body can abort the process. Put a reverse
//! proxy in front that caps bodies and times out slow clients.
//!
//! Configuration (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WEBHOOK_URL` | required | where every webhook goes |
//! | `WEBHOOK_SECRET` | unsigned | Standard Webhooks secret, `whsec_...` |
//! | `WORKERS` | 4 | delivery threads |
//! | `QUEUE_CAPACITY` | 1024 | webhooks waiting for a worker |
//! | `LISTEN` | `127.0.0.1:8080` | address to serve on (port 0: any free port) |
//! | `DEAD_LETTERS` | `dead-letters.jsonl` | the dead-letter file |
//! | `JOURNAL` | `entries-journal.db` | the journal; empty: none |
//! | `SHUTDOWN_TIMEOUT` | 10 | seconds to drain the queue at shutdown |
//! | `WEBHOOK_TIMEOUT` | 10 | seconds for one delivery attempt |
//! | `RUST_LOG` | `info` | log filter (env_logger), logs go to stderr |
//!
//! The first line on stdout is `listening on ADDR`; the last is the shutdown
//! summary. Exit codes: 0 after a clean shutdown, 2 for a configuration
//! error or a journal that cannot be opened, 1 if the server could not start
//! or a promised webhook could not be kept.
//!
//! ```sh
//! WEBHOOK_URL=http://127.0.0.1:9000/hooks cargo run --example entries_server
//! ```

mod app;
mod config;
mod entries;
mod http;
mod shutdown;
mod webhook;

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use hookpool::{BuildError, Dispatcher, Journal, JsonlDeadLetters, RetryPolicy, Synchronous};
use tiny_http::Server;

use app::{App, DISPATCHER_NAME};
use config::Config;
use entries::Entries;
use http::{HTTP_THREADS, serve};
use shutdown::{Stop, stop_http};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("entries_server: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        Ok(code) => code,
        Err(Failed::Config(msg)) => {
            eprintln!("entries_server: {msg}");
            ExitCode::from(2)
        }
        Err(Failed::Start(msg)) => {
            eprintln!("entries_server: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Why the server stopped before serving: exit 2 for what the operator must
/// change, 1 for the rest.
enum Failed {
    Config(String),
    Start(String),
}

impl From<String> for Failed {
    fn from(msg: String) -> Self {
        Failed::Start(msg)
    }
}

impl From<&str> for Failed {
    fn from(msg: &str) -> Self {
        Failed::Start(msg.to_owned())
    }
}

fn run(config: Config) -> Result<ExitCode, Failed> {
    let dead_letters = Arc::new(
        JsonlDeadLetters::open(&config.dead_letters)
            .map_err(|e| format!("cannot open {}: {e}", config.dead_letters.display()))?,
    );
    let mut builder = Dispatcher::builder()
        .name(DISPATCHER_NAME)
        .workers(config.workers)
        .queue_capacity(config.queue_capacity)
        // The seeds' schedule: the first attempt, then 500 ms, 1 s, 2 s (jittered).
        .retry(RetryPolicy::exponential(Duration::from_millis(500)).max_attempts(4))
        .timeout(config.webhook_timeout)
        .dead_letters(Arc::clone(&dead_letters));
    if let Some(secret) = &config.secret {
        builder = builder
            .signing_secret(secret)
            .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
    }
    if let Some(path) = &config.journal {
        // Synchronous::Full: a committed webhook survives a power cut.
        let mut journal = Journal::new(path).synchronous(Synchronous::Full);
        if let Some(bytes) = config.journal_max_bytes {
            journal = journal.max_size(bytes);
        }
        builder = builder.journal(journal);
    }
    // Opening the journal recovers it: what a previous run left unfinished
    // is on its way as soon as this returns.
    let dispatcher = builder.build().map_err(|e| match e {
        BuildError::Store(e) => Failed::Config(format!(
            "JOURNAL: {e} (or set JOURNAL=\"\" to run without a journal)"
        )),
        e => Failed::Start(format!("cannot start the dispatcher: {e}")),
    })?;
    match (&config.journal, dispatcher.stats().store) {
        (Some(path), Some(store)) => log::info!(
            "journal {}: {} unfinished webhooks recovered from the last run",
            path.display(),
            store.recovered
        ),
        _ => log::warn!(
            "no journal (JOURNAL is empty): webhooks live in memory only, and a crash loses those not yet delivered"
        ),
    }

    let server = Arc::new(
        Server::http(config.listen.as_str())
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?,
    );
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or("the listener has no IP address")?;

    let app = Arc::new(App {
        hooks: dispatcher.handle(),
        journaled: config.journal.is_some(),
        webhook_url: config.webhook_url.clone(),
        dead_letters,
        entries: Mutex::new(Entries::default()),
        queue_full: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        last_spill_warning_ms: AtomicU64::new(0),
        promising: RwLock::new(true),
    });

    let (stop_tx, stop_rx) = mpsc::channel::<Stop>();
    let signal_tx = stop_tx.clone();
    ctrlc::set_handler(move || {
        let _ = signal_tx.send(Stop::Signal);
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;

    let stopping = Arc::new(AtomicBool::new(false));
    let mut http_threads = Vec::with_capacity(HTTP_THREADS);
    for i in 0..HTTP_THREADS {
        let shared = (
            Arc::clone(&app),
            Arc::clone(&server),
            Arc::clone(&stopping),
            stop_tx.clone(),
        );
        let spawned = thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let (app, server, stopping, stop_tx) = shared;
                serve(&app, &server, &stopping, &stop_tx);
            });
        match spawned {
            Ok(handle) => http_threads.push(handle),
            Err(e) => {
                stop_http(&server, http_threads, &stopping);
                app.stop_promises();
                let _ = dispatcher.shutdown_timeout(config.shutdown_timeout);
                return Err(format!("cannot start an HTTP thread: {e}").into());
            }
        }
    }
    drop(stop_tx);

    log::info!(
        "listening on {addr}; webhooks to {} ({} workers, queue {}, {})",
        config.redacted_url,
        config.workers,
        config.queue_capacity,
        if config.secret.is_some() {
            "signed"
        } else {
            "unsigned"
        }
    );
    println!("listening on {addr}");
    let _ = io::stdout().flush();

    shutdown::wait_and_shut_down(
        &stop_rx,
        &config,
        &app,
        server,
        http_threads,
        &stopping,
        dispatcher,
    )
    .map_err(Failed::Start)
}
