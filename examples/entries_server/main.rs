//! A small journaling service that sends webhooks: the sending side of the
//! seeds, as a blocking HTTP server (tiny_http) with a hookpool `Dispatcher`.
//!
//! - `POST /entries` with `{"text": "...", "mood": 1-10, "category": "..."}`
//!   saves the entry in memory, answers 201 with it at once, then queues an
//!   `entry_created` webhook. The user comes from the `X-User-Id` header
//!   (default `anonymous`).
//! - `DELETE /entries/{id}` removes the entry, answers 200 with it, then
//!   queues an `entry_deleted` webhook; an unknown id is a 404.
//! - `GET /metrics` serves the dispatcher's metrics in Prometheus text format.
//!
//! Webhook bodies carry exactly `{event, entry_id, user_id, text, mood,
//! category, timestamp}` (Unix seconds). A request never waits for the
//! dispatcher: when its queue is full the webhook is written to the
//! dead-letter file with reason `queue_full` (replay it with `hookpool
//! replay`), and the entry is still saved and answered 201.
//!
//! SIGINT or SIGTERM stops the HTTP intake (requests already received are
//! answered, within 5 s; later ones get 503), then drains the dispatcher for
//! at most `SHUTDOWN_TIMEOUT`, dead-lettering what is left with reason
//! `shutdown`, waits for deliveries still in flight (at most
//! `WEBHOOK_TIMEOUT`), prints a JSON summary and exits 0. Every webhook an
//! answer promised is delivered or in the dead-letter file by then.
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
//! | `SHUTDOWN_TIMEOUT` | 10 | seconds to drain the queue at shutdown |
//! | `WEBHOOK_TIMEOUT` | 10 | seconds for one delivery attempt |
//! | `RUST_LOG` | `info` | log filter (env_logger), logs go to stderr |
//!
//! The first line on stdout is `listening on ADDR`; the last is the shutdown
//! summary. Exit codes: 0 after a clean shutdown, 2 for a configuration
//! error, 1 if the server could not start or a webhook could not be kept.
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

use hookpool::{Dispatcher, JsonlDeadLetters, RetryPolicy};
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
        Err(msg) => {
            eprintln!("entries_server: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<ExitCode, String> {
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
    let dispatcher = builder
        .build()
        .map_err(|e| format!("cannot start the dispatcher: {e}"))?;

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
        webhook_url: config.webhook_url.clone(),
        dead_letters,
        entries: Mutex::new(Entries::default()),
        queue_full: AtomicU64::new(0),
        last_spill_warning_ms: AtomicU64::new(0),
        unsaved: Mutex::new(Vec::new()),
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
                return Err(format!("cannot start an HTTP thread: {e}"));
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
}
