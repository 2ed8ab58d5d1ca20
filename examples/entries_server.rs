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

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hookpool::{
    DeadLetter, DeadLetterReason, DeadLetterSink, DispatchHandle, Dispatcher, Exposition,
    JsonlDeadLetters, RetryPolicy, SigningSecret, SubmitError, Webhook,
};
use serde::Serialize;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

/// Threads answering HTTP requests. Handlers never block on delivery, so a
/// few are plenty.
const HTTP_THREADS: usize = 4;
const MAX_BODY: usize = 64 * 1024;
const MAX_TEXT_CHARS: usize = 10_000;
const MAX_CATEGORY_CHARS: usize = 100;
const MAX_USER_ID_CHARS: usize = 128;
const DISPATCHER_NAME: &str = "entries-hooks";
/// How long shutdown waits for requests being handled to finish.
const REQUEST_GRACE: Duration = Duration::from_secs(5);
/// At most one "queue is full" warning per this interval; each letter is
/// logged at debug.
const SPILL_WARN_INTERVAL_MS: u64 = 10_000;

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

/// Settings read from the environment.
struct Config {
    webhook_url: String,
    /// For logs: the query string, which may hold a token, is hidden.
    redacted_url: String,
    secret: Option<String>,
    workers: usize,
    queue_capacity: usize,
    listen: String,
    dead_letters: PathBuf,
    shutdown_timeout: Duration,
    webhook_timeout: Duration,
}

impl Config {
    /// Reads and checks every variable; the error names the variable.
    fn from_env() -> Result<Config, String> {
        let webhook_url = var("WEBHOOK_URL").ok_or(
            "WEBHOOK_URL is required: the URL every webhook is sent to, such as http://127.0.0.1:9000/hooks",
        )?;
        let redacted_url = Webhook::new(&webhook_url, &())
            .map_err(|e| format!("WEBHOOK_URL: {e}"))?
            .redacted_url();
        let secret = var("WEBHOOK_SECRET");
        if let Some(s) = &secret {
            SigningSecret::new(s).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
        }
        Ok(Config {
            webhook_url,
            redacted_url,
            secret,
            workers: positive("WORKERS", 4)?,
            queue_capacity: positive("QUEUE_CAPACITY", 1024)?,
            listen: var("LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            dead_letters: var("DEAD_LETTERS")
                .unwrap_or_else(|| "dead-letters.jsonl".into())
                .into(),
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", 10.0)?,
            webhook_timeout: seconds("WEBHOOK_TIMEOUT", 10.0)?,
        })
    }
}

/// A variable's value; unset and empty are the same.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn positive(name: &str, default: usize) -> Result<usize, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive integer, got {v:?}")),
        },
    }
}

fn seconds(name: &str, default: f64) -> Result<Duration, String> {
    let Some(v) = var(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{name} must be a positive number of seconds, got {v:?}"))
}

/// Why the server stops.
enum Stop {
    Signal,
    ListenerFailed(String),
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
    stop_http(&server, http_threads, &stopping);
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
    let mut report = dispatcher.shutdown_timeout(config.shutdown_timeout);
    if report.still_running > 0 {
        // Each ends within the request timeout, delivered or dead-lettered.
        let wait = config.webhook_timeout + Duration::from_secs(1);
        log::info!(
            "waiting up to {wait:?} for {} deliveries in flight",
            report.still_running
        );
        report.wait_running(wait);
    }

    // 3. Anything the file refused gets one more try, then goes to stderr
    //    as a last resort so an operator can recover it.
    let mut unsaved = std::mem::take(&mut *lock(&app.unsaved));
    unsaved.append(&mut report.dead_letters);
    let mut lost = 0;
    for letter in unsaved {
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
        still_running: report.still_running,
        unsaved: lost,
        elapsed_ms: u64::try_from(stop_started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let summary = serde_json::to_string(&summary).map_err(|e| e.to_string())?;
    println!("{summary}");
    let _ = io::stdout().flush();
    log::info!("shut down: {summary}");
    if listener_failed || report.still_running > 0 || lost > 0 {
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
fn stop_http(server: &Server, threads: Vec<thread::JoinHandle<()>>, stopping: &AtomicBool) {
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

/// One HTTP thread: answers requests until unblocked at shutdown.
fn serve(app: &App, server: &Server, stopping: &AtomicBool, stop: &mpsc::Sender<Stop>) {
    loop {
        match server.recv() {
            Ok(request) => {
                // A bug in one request must not take an HTTP thread down.
                if catch_unwind(AssertUnwindSafe(|| handle(app, request))).is_err() {
                    log::error!("a request handler panicked; the request was answered 500");
                }
            }
            // The unblock marker, or the listener failing at shutdown.
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            // tiny_http's accept thread has stopped: nothing more will come.
            Err(e) => {
                let _ = stop.send(Stop::ListenerFailed(e.to_string()));
                return;
            }
        }
    }
}

/// Answers one request, then queues its webhook: the answer never waits for
/// the dispatcher or the dead-letter file.
fn handle(app: &App, mut request: Request) {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let outcome = route(app, &mut request, &method, &path);
    let status = outcome.response.status_code().0;
    if let Err(e) = request.respond(outcome.response) {
        log::debug!("{method} {path}: could not send the answer: {e}");
    }
    log::debug!("{method} {path} -> {status} in {:?}", started.elapsed());
    if let Some((event, _promise)) = outcome.webhook {
        app.enqueue(event);
    }
}

/// An answer, and the webhook it promises with the permission to promise it.
struct Outcome<'a> {
    response: Response<io::Cursor<Vec<u8>>>,
    webhook: Option<(Event, Promise<'a>)>,
}

impl Outcome<'_> {
    fn answer(response: Response<io::Cursor<Vec<u8>>>) -> Self {
        Outcome {
            response,
            webhook: None,
        }
    }
}

fn route<'a>(app: &'a App, request: &mut Request, method: &Method, path: &str) -> Outcome<'a> {
    let not_allowed = |allow: &str| {
        Outcome::answer(
            json_response(
                405,
                &json!({"error": format!("method {method} is not allowed on {path}")}),
            )
            .with_header(header("Allow", allow)),
        )
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::Post, ["entries"]) => create_entry(app, request),
        (_, ["entries"]) => not_allowed("POST"),
        (Method::Delete, ["entries", id]) => delete_entry(app, id),
        (_, ["entries", _]) => not_allowed("DELETE"),
        (Method::Get | Method::Head, ["metrics"]) => Outcome::answer(text_response(
            200,
            app.metrics(),
            hookpool::prometheus::CONTENT_TYPE,
        )),
        (_, ["metrics"]) => not_allowed("GET, HEAD"),
        _ => Outcome::answer(json_response(
            404,
            &json!({"error": format!("no route for {path}")}),
        )),
    }
}

fn create_entry<'a>(app: &'a App, request: &mut Request) -> Outcome<'a> {
    let user_id = match user_id(request) {
        Ok(user) => user,
        Err(e) => return Outcome::answer(e.response()),
    };
    let body = match read_body(request) {
        Ok(body) => body,
        Err(response) => return Outcome::answer(response),
    };
    let new = match NewEntry::parse(&body) {
        Ok(new) => new,
        Err(e) => return Outcome::answer(e.response()),
    };
    let Some(promise) = app.promise() else {
        return Outcome::answer(shutting_down());
    };
    let created = {
        let mut entries = lock(&app.entries);
        let entry = Entry {
            id: entries.next_id + 1,
            user_id,
            text: new.text,
            mood: new.mood,
            category: new.category,
            created_at: unix_seconds(),
        };
        // Built under the lock, before the entry is saved, so a 201 always
        // comes with a webhook. Serializing is all it does: no I/O.
        Event::new(app, "entry_created", &entry, entry.created_at).map(|event| {
            entries.next_id = entry.id;
            entries.by_id.insert(entry.id, entry.clone());
            (entry, event)
        })
    };
    match created {
        Ok((entry, event)) => Outcome {
            response: json_response(201, &entry)
                .with_header(header("Location", &format!("/entries/{}", entry.id))),
            webhook: Some((event, promise)),
        },
        Err(e) => webhook_error(&e),
    }
}

fn delete_entry<'a>(app: &'a App, id: &str) -> Outcome<'a> {
    let not_found = || {
        Outcome::answer(json_response(
            404,
            &json!({"error": format!("no entry with id {id}")}),
        ))
    };
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let Some(promise) = app.promise() else {
        return Outcome::answer(shutting_down());
    };
    let deleted = {
        let mut entries = lock(&app.entries);
        match entries.by_id.entry(id) {
            Slot::Vacant(_) => None,
            // Removed only once its webhook exists, as for a creation.
            Slot::Occupied(slot) => Some(
                Event::new(app, "entry_deleted", slot.get(), unix_seconds())
                    .map(|event| (slot.remove(), event)),
            ),
        }
    };
    match deleted {
        None => not_found(),
        Some(Ok((entry, event))) => Outcome {
            response: json_response(200, &entry),
            webhook: Some((event, promise)),
        },
        Some(Err(e)) => webhook_error(&e),
    }
}

/// The URL was checked at startup and the payload is plain data, so this
/// is not expected; the entry was left unchanged.
fn webhook_error(e: &hookpool::WebhookError) -> Outcome<'static> {
    log::error!("cannot build a webhook: {e}");
    Outcome::answer(json_response(
        500,
        &json!({"error": "internal error: the webhook could not be built"}),
    ))
}

fn shutting_down() -> Response<io::Cursor<Vec<u8>>> {
    json_response(503, &json!({"error": "the server is shutting down"}))
        .with_header(header("Retry-After", "5"))
}

/// A 400 that names the field at fault (`null` for the body as a whole).
struct Invalid {
    field: Option<String>,
    error: String,
}

impl Invalid {
    fn field(field: &str, error: impl Into<String>) -> Self {
        Invalid {
            field: Some(field.to_owned()),
            error: error.into(),
        }
    }

    fn response(&self) -> Response<io::Cursor<Vec<u8>>> {
        json_response(400, &json!({"error": self.error, "field": self.field}))
    }
}

/// The user from `X-User-Id`, or `anonymous`.
fn user_id(request: &Request) -> Result<String, Invalid> {
    let Some(h) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-User-Id"))
    else {
        return Ok("anonymous".into());
    };
    let user = h.value.as_str().trim();
    let chars = user.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS || user.chars().any(char::is_control) {
        return Err(Invalid::field(
            "user_id",
            format!("X-User-Id must be 1 to {MAX_USER_ID_CHARS} printable characters"),
        ));
    }
    Ok(user.to_owned())
}

/// The body, at most `MAX_BODY` bytes.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Response<io::Cursor<Vec<u8>>>> {
    let too_large = || {
        json_response(
            413,
            &json!({"error": format!("the body must be at most {MAX_BODY} bytes")}),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1;
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return Err(json_response(
            400,
            &json!({"error": format!("could not read the body: {e}"), "field": null}),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// A checked `POST /entries` body.
struct NewEntry {
    text: String,
    mood: u8,
    category: String,
}

impl NewEntry {
    const FIELDS: [&'static str; 3] = ["text", "mood", "category"];

    /// Checks the body; the first problem found is reported. Unknown fields
    /// are refused, so a misspelt one is not silently dropped.
    fn parse(body: &[u8]) -> Result<NewEntry, Invalid> {
        let whole = |error: String| Invalid { field: None, error };
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| whole(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(whole("the body must be a JSON object".into()));
        };
        if let Some(unknown) = map.keys().find(|k| !Self::FIELDS.contains(&k.as_str())) {
            return Err(Invalid::field(
                unknown,
                format!("unknown field {unknown:?}: expected text, mood and category"),
            ));
        }
        let text = non_empty_string(&map, "text", MAX_TEXT_CHARS)?;
        let mood = match map.get("mood") {
            None | Some(Value::Null) => return Err(Invalid::field("mood", "mood is required")),
            Some(v) => v
                .as_u64()
                .filter(|m| (1..=10).contains(m))
                .and_then(|m| u8::try_from(m).ok())
                .ok_or_else(|| Invalid::field("mood", "mood must be an integer from 1 to 10"))?,
        };
        let category = non_empty_string(&map, "category", MAX_CATEGORY_CHARS)?;
        Ok(NewEntry {
            text,
            mood,
            category,
        })
    }
}

fn non_empty_string(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<String, Invalid> {
    match map.get(field) {
        None | Some(Value::Null) => Err(Invalid::field(field, format!("{field} is required"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(Invalid::field(field, format!("{field} must not be empty")))
        }
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(Invalid::field(
            field,
            format!("{field} must be at most {max_chars} characters"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Invalid::field(field, format!("{field} must be a string"))),
    }
}

/// A saved entry, as answered to the client.
#[derive(Debug, Clone, Serialize)]
struct Entry {
    id: u64,
    user_id: String,
    text: String,
    mood: u8,
    category: String,
    /// Unix seconds.
    created_at: u64,
}

#[derive(Default)]
struct Entries {
    /// The last id handed out; ids start at 1 and are never reused.
    next_id: u64,
    by_id: HashMap<u64, Entry>,
}

/// The webhook body: exactly these fields, nothing internal.
#[derive(Serialize)]
struct Payload<'a> {
    event: &'a str,
    entry_id: u64,
    user_id: &'a str,
    text: &'a str,
    mood: u8,
    category: &'a str,
    /// Unix seconds.
    timestamp: u64,
}

/// A webhook promised by an answer, with what the logs may show of it.
struct Event {
    webhook: Webhook,
    name: &'static str,
    entry_id: u64,
}

impl Event {
    fn new(
        app: &App,
        name: &'static str,
        entry: &Entry,
        timestamp: u64,
    ) -> Result<Event, hookpool::WebhookError> {
        let payload = Payload {
            event: name,
            entry_id: entry.id,
            user_id: &entry.user_id,
            text: &entry.text,
            mood: entry.mood,
            category: &entry.category,
            timestamp,
        };
        Ok(Event {
            webhook: Webhook::new(&app.webhook_url, &payload)?,
            name,
            entry_id: entry.id,
        })
    }
}

/// What the HTTP threads share.
struct App {
    hooks: DispatchHandle,
    webhook_url: String,
    /// The same file the dispatcher writes its own dead letters to.
    dead_letters: Arc<JsonlDeadLetters>,
    entries: Mutex<Entries>,
    /// Webhooks written to the dead-letter file because the queue was full.
    queue_full: AtomicU64,
    last_spill_warning_ms: AtomicU64,
    /// Letters the file refused; tried again at shutdown.
    unsaved: Mutex<Vec<DeadLetter>>,
    /// Whether answers may still promise webhooks; see [`App::promise`].
    promising: RwLock<bool>,
}

/// Held from saving a change until its webhook is queued or dead-lettered.
type Promise<'a> = RwLockReadGuard<'a, bool>;

impl App {
    /// Permission to save a change and promise its webhook, or `None` once
    /// shutdown has stopped promises.
    fn promise(&self) -> Option<Promise<'_>> {
        let open = self
            .promising
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (*open).then_some(open)
    }

    /// Waits until every promise made is kept (its webhook queued or
    /// dead-lettered), then refuses new ones. A promise is held only for an
    /// answer, a `try_send` and at worst one dead-letter write.
    fn stop_promises(&self) {
        *self
            .promising
            .write()
            .unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Queues the webhook, or dead-letters it: never blocks on the queue,
    /// never drops it.
    fn enqueue(&self, event: Event) {
        let (webhook, reason, error) = match self.hooks.try_send(event.webhook) {
            Ok(()) => return,
            Err(SubmitError::Full(w)) => (w, DeadLetterReason::QueueFull, "queue is full"),
            // Not expected: promises stop before the dispatcher shuts down.
            Err(SubmitError::Closed(w)) => (
                w,
                DeadLetterReason::Shutdown,
                "the dispatcher is shutting down",
            ),
        };
        let letter = DeadLetter::from_webhook(&webhook, reason, error);
        match self.dead_letters.store(&letter) {
            Ok(()) => {
                log::debug!(
                    "entry {}: {} webhook {} dead-lettered ({reason})",
                    event.entry_id,
                    event.name,
                    letter.id
                );
                if reason == DeadLetterReason::QueueFull {
                    let total = self.queue_full.fetch_add(1, Ordering::SeqCst) + 1;
                    self.warn_spill(total);
                }
            }
            Err(e) => {
                log::error!(
                    "entry {}: {} webhook {} could not be dead-lettered ({e}); kept in memory",
                    event.entry_id,
                    event.name,
                    letter.id
                );
                lock(&self.unsaved).push(letter);
            }
        }
    }

    fn warn_spill(&self, total: u64) {
        let now = unix_ms();
        let last = self.last_spill_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SPILL_WARN_INTERVAL_MS
            && self
                .last_spill_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "the webhook queue is full: {total} webhooks dead-lettered with reason queue_full so far, in {}; replay them with `hookpool replay`",
                self.dead_letters.path().display()
            );
        }
    }

    /// The dispatcher's metrics, and this server's own.
    fn metrics(&self) -> String {
        let mut text = Exposition::new()
            .dispatcher(DISPATCHER_NAME, &self.hooks.stats())
            .render();
        let entries = lock(&self.entries).by_id.len();
        text.push_str(&format!(
            "# HELP entries_server_entries Entries stored.\n\
             # TYPE entries_server_entries gauge\n\
             entries_server_entries {entries}\n\
             # HELP entries_server_webhooks_queue_full_total Webhooks written to the dead-letter file because the queue was full.\n\
             # TYPE entries_server_webhooks_queue_full_total counter\n\
             entries_server_webhooks_queue_full_total {}\n",
            self.queue_full.load(Ordering::SeqCst)
        ));
        text
    }
}

fn json_response<T: Serialize + ?Sized>(status: u16, body: &T) -> Response<io::Cursor<Vec<u8>>> {
    let text = serde_json::to_string(body).unwrap_or_else(|e| {
        log::error!("cannot serialize an answer: {e}");
        r#"{"error":"internal error"}"#.to_owned()
    });
    text_response(status, text, "application/json")
}

fn text_response(status: u16, body: String, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values built here are ASCII")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic
    // elsewhere does not make it unusable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
