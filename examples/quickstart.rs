//! A self-contained tour of hookpool.
//!
//! 1. A plain `Pool`: jobs, backpressure when the queue is full, stats.
//! 2. A `Dispatcher` delivering signed webhooks to a receiver started right
//!    here on 127.0.0.1, with one healthy, one flaky and one gone endpoint:
//!    deliveries, retries and a dead letter.
//!
//! Run with `cargo run --example quickstart`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use hookpool::{
    BreakerConfig, Dispatcher, MemoryDeadLetters, Pool, RetryPolicy, SigningSecret, SubmitError,
    Webhook, verify,
};
use serde_json::json;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    pool_tour()?;
    dispatcher_tour()?;
    Ok(())
}

fn pool_tour() -> Result<(), Box<dyn std::error::Error>> {
    println!("== 1. a bounded pool ==");
    // Two workers and a deliberately small queue, so backpressure shows.
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(8)
        .name("quickstart")
        .build(|order: u32| -> Result<(), String> {
            thread::sleep(Duration::from_millis(2)); // pretend to work
            if order % 10 == 9 {
                return Err(format!("order {order} failed validation"));
            }
            Ok(())
        })?;

    let mut refused = Vec::new();
    for order in 0..40 {
        match pool.try_submit(order) {
            Ok(()) => {}
            // The queue is full: the job comes back, nothing is lost.
            Err(SubmitError::Full(order)) => refused.push(order),
            Err(SubmitError::Closed(order)) => unreachable!("pool is open, got {order} back"),
        }
    }
    println!(
        "try_submit: {} accepted, {} refused because the queue was full",
        40 - refused.len(),
        refused.len()
    );
    for order in refused {
        pool.submit_timeout(order, Duration::from_secs(1))?; // wait for room instead
    }
    let report = pool.shutdown();
    let s = report.stats;
    println!(
        "shutdown: submitted {}, succeeded {}, failed {}, rejected {}, never started {}\n",
        s.submitted,
        s.succeeded,
        s.failed,
        s.rejected,
        report.unstarted.len()
    );
    Ok(())
}

fn dispatcher_tour() -> Result<(), Box<dyn std::error::Error>> {
    println!("== 2. webhook delivery to a local receiver ==");
    let receiver = Receiver::start()?;
    let letters = MemoryDeadLetters::new();
    let hooks = Dispatcher::builder()
        .name("quickstart-hooks")
        .workers(4)
        .queue_capacity(100)
        // First attempt, then 50 ms, 100 ms, 200 ms (the seeds' schedule, scaled down).
        .retry(
            RetryPolicy::exponential(Duration::from_millis(50))
                .jitter(false)
                .max_attempts(4),
        )
        .breaker(BreakerConfig::default())
        .signing_secret(SECRET)?
        .dead_letters(letters.clone())
        .timeout(Duration::from_secs(2))
        .build()?;

    for entry_id in 1..=6 {
        let path = match entry_id {
            3 | 4 => "/flaky", // fails twice per webhook, then accepts
            6 => "/gone",      // answers 410 Gone: dead-lettered at once
            _ => "/ok",
        };
        let payload = json!({"event": "entry_created", "entry_id": entry_id, "text": "hello"});
        hooks.try_send(Webhook::new(&receiver.url(path), &payload)?)?;
    }

    // What a /metrics endpoint would serve (a few of the lines).
    for _ in 0..500 {
        if hooks.stats().in_progress() == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!("GET /metrics (excerpt):");
    for line in hooks.render_prometheus().lines().filter(|l| {
        l.starts_with("hookpool_webhooks_delivered_total")
            || l.starts_with("hookpool_webhook_retries_total")
            || l.contains("reason=\"endpoint_gone\"")
            || l.starts_with("hookpool_queue_depth")
            || l.starts_with("hookpool_webhook_delivery_seconds_count")
    }) {
        println!("  {line}");
    }

    let report = hooks.shutdown_timeout(Duration::from_secs(10));
    let s = &report.stats;
    println!(
        "dispatcher: accepted {}, delivered {}, retried {}, dead-lettered {}",
        s.accepted, s.delivered, s.retried, s.dead_lettered
    );
    for letter in letters.letters() {
        println!(
            "dead letter: {} to {} after {} attempt(s): {} ({})",
            letter.id, letter.url, letter.attempts, letter.error, letter.reason
        );
    }
    let seen = receiver.stop();
    println!(
        "receiver: {} requests, {} with a valid signature",
        seen.requests, seen.verified
    );
    assert_eq!(s.accepted, s.delivered + s.dead_lettered);
    Ok(())
}

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    requests: usize,
    verified: usize,
    attempts_by_id: HashMap<String, usize>,
}

/// A tiny webhook receiver on 127.0.0.1 that checks signatures.
struct Receiver {
    server: Arc<tiny_http::Server>,
    port: u16,
    seen: Arc<Mutex<Seen>>,
    thread: thread::JoinHandle<()>,
}

impl Receiver {
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| e.to_string())?);
        let port = server
            .server_addr()
            .to_ip()
            .ok_or("not an ip listener")?
            .port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (srv, log) = (Arc::clone(&server), Arc::clone(&seen));
        let secret = SigningSecret::new(SECRET)?;
        let thread = thread::spawn(move || {
            // Ends when `stop` unblocks the server.
            for mut request in srv.incoming_requests() {
                let header = |name: &'static str| {
                    request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv(name))
                        .map(|h| h.value.as_str().to_owned())
                        .unwrap_or_default()
                };
                let (id, ts, sig) = (
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                );
                let mut body = Vec::new();
                let _ = request.as_reader().read_to_end(&mut body);
                let valid = verify(
                    std::slice::from_ref(&secret),
                    &id,
                    &ts,
                    &sig,
                    &body,
                    SystemTime::now(),
                    Duration::from_secs(300),
                )
                .is_ok();
                let attempt = {
                    let mut seen = log.lock().unwrap();
                    seen.requests += 1;
                    seen.verified += usize::from(valid);
                    let n = seen.attempts_by_id.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                let status = match request.url() {
                    _ if !valid => 401,
                    "/flaky" if attempt <= 2 => 503,
                    "/gone" => 410,
                    _ => 204,
                };
                println!(
                    "receiver: {} {id} attempt {attempt} -> {status}",
                    request.url()
                );
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        Ok(Receiver {
            server,
            port,
            seen,
            thread,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stop(self) -> Seen {
        self.server.unblock();
        let _ = self.thread.join();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}
