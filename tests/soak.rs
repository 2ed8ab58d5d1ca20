//! Issue 5, point 1: a chaos soak.
//!
//! 10,000 webhooks go to four endpoints on 127.0.0.1 that answer at random
//! with 200, slow 200s, 500, 503 with Retry-After, 429, 400, 410, hangs past
//! the timeout, late 200s past the timeout, and connection resets. Mid-run,
//! the dispatcher is shut down with a deadline at a random point. Then:
//!
//! - every accepted webhook ended exactly once, delivered or dead-lettered;
//! - a receiver accepted a webhook again only after the client's attempt
//!   had timed out (as the client itself logged it), and every request for
//!   one webhook carries the same `webhook-id` and, byte for byte, the body
//!   that was sent;
//! - the dispatcher's counters agree with the ground truth;
//! - the process's thread count is back where it started.
//!
//! Bounded to about 30 s. `HOOKPOOL_SOAK_WEBHOOKS` and `HOOKPOOL_SOAK_SECS`
//! (seconds before shutdown begins) make it longer; `HOOKPOOL_SOAK_SEED`
//! replays one run.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::server::{Recorded, Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{BreakerConfig, Dispatcher, MemoryDeadLetters, RetryPolicy, SubmitError, Webhook};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_millis(250);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn os_threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// What one endpoint did with one request.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    body: Vec<u8>,
    /// The receiver decided to accept it (answer 2xx).
    accepted: bool,
}

fn chaos_reply(rng: &mut fastrand::Rng, path: &str) -> (Reply, bool) {
    // A path that answered 410 once keeps answering 410: that is what Gone means.
    if path.ends_with("/gone") {
        return (Reply::Status(410), false);
    }
    // Push-back (429, 503 with Retry-After) is rare: a receiver that pushes
    // back at random, whatever the load, drives the endpoint's pace to its
    // floor, and then the soak would mostly test parked webhooks.
    match rng.u32(0..100) {
        0..=62 => (Reply::Status(200), true),
        63..=67 => (
            Reply::Delay(Duration::from_millis(30), Box::new(Reply::Status(204))),
            true,
        ),
        68..=77 => (Reply::Status(500), false),
        78..=79 => {
            let after = rng.u8(0..2).to_string();
            (
                Reply::WithHeaders(503, vec![("retry-after".into(), after)], String::new()),
                false,
            )
        }
        80..=81 => (Reply::Status(429), false),
        82..=84 => (Reply::Status(400), false),
        85..=86 => (Reply::Hang, false),
        // Accepted, but answered after the client's timeout: it retries.
        87..=88 => (
            Reply::Delay(TIMEOUT * 2, Box::new(Reply::Status(200))),
            true,
        ),
        _ => (Reply::Reset, false),
    }
}

/// How many attempts of each webhook the client itself saw time out: its
/// debug line for each retried attempt, and the letter for a last one.
fn client_timeouts(letters: &[hookpool::DeadLetter]) -> HashMap<String, usize> {
    let mut timeouts: HashMap<String, usize> = HashMap::new();
    for line in logger::lines_containing("soak: webhook ") {
        if line.target == "hookpool" && line.message.contains(" failed (request timed out);") {
            let id = line.message.split(' ').nth(2).expect("the webhook's id");
            *timeouts.entry(id.to_owned()).or_default() += 1;
        }
    }
    for letter in letters {
        if letter.error == "request timed out" {
            *timeouts.entry(letter.id.clone()).or_default() += 1;
        }
    }
    timeouts
}

#[test]
fn chaos_soak_loses_nothing_and_leaks_nothing() {
    let seed: u64 = env_or("HOOKPOOL_SOAK_SEED", fastrand::u64(..));
    let total: u64 = env_or("HOOKPOOL_SOAK_WEBHOOKS", 10_000);
    let soak_secs: f64 = env_or("HOOKPOOL_SOAK_SECS", 0.0);
    eprintln!("soak seed {seed} (HOOKPOOL_SOAK_SEED={seed} replays it)");
    logger::install();
    let mut rng = fastrand::Rng::with_seed(seed);
    let threads_before = os_threads();

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let servers: Vec<TestServer> = (0..4)
        .map(|n| {
            let seen = Arc::clone(&seen);
            let chaos = Mutex::new(fastrand::Rng::with_seed(seed ^ (n + 1)));
            TestServer::start(move |r: &Recorded| {
                let (reply, accepted) = chaos_reply(&mut chaos.lock().unwrap(), r.path_only());
                seen.lock().unwrap().push(Seen {
                    id: r.header("webhook-id").unwrap_or_default().to_owned(),
                    body: r.body.clone(),
                    accepted,
                });
                reply
            })
        })
        .collect();

    let letters = MemoryDeadLetters::new();
    let delivered: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let on_delivered = Arc::clone(&delivered);
    let hooks = Dispatcher::builder()
        .name("soak")
        .workers(16)
        .queue_capacity(2048)
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(20))
                .max_attempts(4)
                .max_retry_after(Duration::from_secs(1))
                .max_elapsed(Some(Duration::from_secs(10))),
        )
        .breaker(
            BreakerConfig::default()
                .failure_threshold(8)
                .cooldown(Duration::from_millis(300)),
        )
        .dead_letters(letters.clone())
        .on_delivered(move |e| {
            on_delivered
                .lock()
                .unwrap()
                .push((e.webhook.id().to_owned(), e.attempts))
        })
        .build()
        .unwrap();

    // Producer: send everything, waiting for room, until shutdown refuses.
    let urls: Vec<String> = servers
        .iter()
        .flat_map(|s| {
            (0..16)
                .map(move |p| s.url(&format!("/hooks/{p}")))
                .chain([s.url("/hooks/gone")])
        })
        .collect();
    let handle = hooks.handle();
    let producer_seed = rng.u64(..);
    let producer = thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(producer_seed);
        let mut accepted = HashMap::new();
        'all: for seq in 0..total {
            let url = &urls[rng.usize(0..urls.len())];
            let mut webhook = Webhook::new(url, &json!({"seq": seq, "note": "chaos"})).unwrap();
            let (id, body) = (webhook.id().to_owned(), webhook.body().to_vec());
            for _ in 0..2_000 {
                match handle.send_timeout(webhook, Duration::from_millis(50)) {
                    Ok(()) => {
                        accepted.insert(id, body);
                        continue 'all;
                    }
                    Err(SubmitError::Full(back)) => webhook = back,
                    Err(SubmitError::Closed(_)) => break 'all,
                }
            }
            panic!("webhook {seq} waited 100 s for room");
        }
        accepted
    });

    // Shut down at a random point, with a random deadline.
    let shutdown_at = Duration::from_secs_f64(if soak_secs > 0.0 {
        soak_secs
    } else {
        2.0 + rng.f64() * 8.0
    });
    let deadline = Duration::from_millis(rng.u64(200..2_000));
    thread::sleep(shutdown_at);
    let started = Instant::now();
    let mut report = hooks.shutdown_timeout(deadline);
    let accepted = producer.join().unwrap();
    assert_eq!(
        report.wait_running(Duration::from_secs(10)),
        0,
        "requests outlived their timeout"
    );
    eprintln!(
        "soak: {} accepted in {shutdown_at:?}, shutdown took {:?} (deadline {deadline:?}); {:?}",
        accepted.len(),
        started.elapsed(),
        report.stats
    );

    // Every accepted webhook ended exactly once.
    let delivered = delivered.lock().unwrap().clone();
    let letters = letters.letters();
    assert!(
        report.dead_letters.is_empty(),
        "the sink stored every letter"
    );
    let mut ended: HashMap<&str, usize> = HashMap::new();
    for id in delivered
        .iter()
        .map(|(id, _)| id.as_str())
        .chain(letters.iter().map(|l| l.id.as_str()))
    {
        assert!(
            accepted.contains_key(id),
            "{id} ended but was never accepted"
        );
        *ended.entry(id).or_default() += 1;
    }
    for id in accepted.keys() {
        assert_eq!(
            ended.get(id.as_str()),
            Some(&1),
            "{id} ended {:?} times",
            ended.get(id.as_str())
        );
    }

    // The counters agree with the ground truth.
    let s = &report.stats;
    assert_eq!(s.accepted as usize, accepted.len());
    assert_eq!(s.delivered as usize, delivered.len());
    assert_eq!(s.dead_lettered as usize, letters.len());
    assert_eq!(s.accepted, s.delivered + s.dead_lettered);
    assert_eq!(
        s.dead_lettered_by_reason.values().sum::<u64>(),
        s.dead_lettered
    );
    assert_eq!(s.delivery_latency.count, s.delivered);

    // What the receivers saw.
    let seen = seen.lock().unwrap().clone();
    let attempts: u64 = delivered.iter().map(|(_, a)| u64::from(*a)).sum::<u64>()
        + letters.iter().map(|l| u64::from(l.attempts)).sum::<u64>();
    assert!(
        seen.len() as u64 <= attempts,
        "{} requests but only {attempts} attempts",
        seen.len()
    );
    let mut per_id: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for r in &seen {
        per_id.entry(r.id.as_str()).or_default().push(r);
        // Ids are unique per body, so one body under two ids fails here.
        let sent = accepted.get(r.id.as_str());
        assert_eq!(
            sent.map(Vec::as_slice),
            Some(r.body.as_slice()),
            "a request under id {} carries another body: {}",
            r.id,
            String::from_utf8_lossy(&r.body)
        );
    }
    let delivered_ids: HashSet<&str> = delivered.iter().map(|(id, _)| id.as_str()).collect();
    let timeouts = client_timeouts(&letters);
    let mut duplicates = 0;
    for (id, requests) in &per_id {
        // Every acceptance the client did not take as its delivery is an
        // attempt it saw time out.
        let acceptances = requests.iter().filter(|r| r.accepted).count();
        let unseen = acceptances.saturating_sub(usize::from(delivered_ids.contains(id)));
        let timed_out = timeouts.get(*id).copied().unwrap_or(0);
        assert!(
            unseen <= timed_out,
            "{id} was accepted {acceptances} times, delivered {}, but only {timed_out} attempts timed out",
            delivered_ids.contains(id)
        );
        duplicates += usize::from(acceptances > 1);
    }
    for id in &delivered_ids {
        assert!(
            per_id.get(id).is_some_and(|r| r.iter().any(|r| r.accepted)),
            "{id} delivered without an acceptance"
        );
    }
    eprintln!(
        "soak: {} requests, {duplicates} duplicate deliveries (all after timeouts)",
        seen.len()
    );

    drop(report);
    drop(servers);
    assert!(
        wait_until(Duration::from_secs(10), || os_threads() == threads_before),
        "threads: {} before, {} after",
        threads_before,
        os_threads()
    );
}
