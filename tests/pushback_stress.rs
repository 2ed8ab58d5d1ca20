//! Issue 14: conservation under push-back, stressed.
//!
//! Rounds of webhooks to a dozen endpoints on 127.0.0.1 whose receivers
//! push back in every way (token buckets answering 429 or 503 with
//! `Retry-After`, concurrency caps, nothing but 429, a chaos mix of 200,
//! 429, 503 with `Retry-After` 0 or 1, 500, hangs and resets), through a
//! dispatcher configured at random (1 to 8 workers, a fixed in-flight
//! ceiling or none, configured rates or none, a breaker that push-back
//! opens or never does, the real clock or a manual one moved by a ticker
//! thread), shut down at a random point by a random means (a deadline, a
//! zero deadline, or `Drop`). After each round:
//!
//! - every accepted webhook ended exactly once, delivered or dead-lettered,
//!   and the counters agree;
//! - nothing is left parked or waiting for a retry;
//! - with the real clock, an endpoint that answers nothing but 429 with
//!   `Retry-After: 1` got about one request a second after its first
//!   round, not more: nothing is sent to a paused endpoint;
//! - the process's thread count is back where it started.
//!
//! `HOOKPOOL_STRESS_SEED` replays a run; `HOOKPOOL_STRESS_ROUNDS` (default
//! 4) makes it longer.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::pacing::{concurrency_cap, token_bucket};
use common::server::{Recorded, Reply, TestServer};
use common::wait_until;
use hookpool::{
    BreakerConfig, Dispatcher, ManualClock, MemoryDeadLetters, RetryPolicy, SubmitError, Webhook,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_millis(200);

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

fn push_back(status: u16, after: &str) -> Reply {
    Reply::WithHeaders(
        status,
        vec![("Retry-After".into(), after.into())],
        String::new(),
    )
}

/// How one receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bucket,
    Capped,
    OnlyPushBack,
    Chaos,
    Healthy,
}

fn receiver(kind: Kind, rng: &mut fastrand::Rng) -> TestServer {
    match kind {
        Kind::Bucket => {
            let (_, handler) = token_bucket(rng.f64() * 300.0 + 20.0, rng.f64() * 30.0 + 1.0);
            TestServer::start(handler)
        }
        Kind::Capped => {
            let service = Duration::from_millis(rng.u64(2..20));
            let (_, handler) = concurrency_cap(rng.usize(1..4), service);
            TestServer::start(handler)
        }
        Kind::OnlyPushBack => TestServer::start(|_: &Recorded| push_back(429, "1")),
        Kind::Chaos => {
            let chaos = Mutex::new(fastrand::Rng::with_seed(rng.u64(..)));
            TestServer::start(move |_: &Recorded| {
                let mut rng = chaos.lock().unwrap();
                match rng.u32(0..100) {
                    0..=49 => Reply::Status(200),
                    50..=59 => Reply::Status(429),
                    60..=69 => push_back(503, if rng.bool() { "0" } else { "1" }),
                    70..=79 => Reply::Status(500),
                    80..=84 => Reply::Hang,
                    85..=89 => Reply::Reset,
                    _ => Reply::Delay(Duration::from_millis(30), Box::new(Reply::Status(204))),
                }
            })
        }
        Kind::Healthy => TestServer::start(|_: &Recorded| {
            Reply::Delay(Duration::from_millis(1), Box::new(Reply::Status(204)))
        }),
    }
}

/// How a round ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Deadline(Duration),
    Drop(Duration),
}

fn round(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let kinds = [
        Kind::Bucket,
        Kind::Bucket,
        Kind::Bucket,
        Kind::Capped,
        Kind::Capped,
        Kind::OnlyPushBack,
        Kind::Chaos,
        Kind::Chaos,
        Kind::Chaos,
        Kind::Healthy,
        Kind::Healthy,
        Kind::Healthy,
    ];
    let servers: Vec<(Kind, TestServer)> = kinds
        .iter()
        .map(|&kind| (kind, receiver(kind, &mut rng)))
        .collect();

    let workers = rng.usize(1..=8);
    let fixed = rng.bool().then(|| rng.usize(1..=4));
    let rate = rng.bool().then(|| rng.f64() * 400.0 + 5.0);
    let push_back_limit = rng
        .bool()
        .then(|| Duration::from_millis(rng.u64(200..3_000)));
    let manual = rng.u8(0..4) == 0;
    let end = match rng.u8(0..4) {
        0 => End::Deadline(Duration::ZERO),
        1 => End::Drop(Duration::from_millis(rng.u64(0..1_000))),
        _ => End::Deadline(Duration::from_millis(rng.u64(0..1_500))),
    };
    let run_for = Duration::from_millis(rng.u64(300..3_000));
    let total = 3_000;
    eprintln!(
        "round {seed}: {workers} workers, ceiling {fixed:?}, rate {rate:?}, push_back_limit {push_back_limit:?}, manual clock {manual}, {end:?} after {run_for:?}"
    );

    let letters = MemoryDeadLetters::new();
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let on_delivered = Arc::clone(&delivered);
    let clock = ManualClock::new();
    let mut builder = Dispatcher::builder()
        .name("stress")
        .workers(workers)
        .queue_capacity(rng.usize(16..512))
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_millis(500))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(10))
                .max_attempts(3)
                .max_retry_after(Duration::from_secs(1))
                .max_elapsed(Some(Duration::from_secs(3))),
        )
        .breaker(
            BreakerConfig::default()
                .failure_threshold(5)
                .cooldown(Duration::from_millis(200))
                .push_back_limit(push_back_limit),
        )
        .dead_letters(letters.clone())
        .on_delivered(move |e| on_delivered.lock().unwrap().push(e.webhook.id().to_owned()));
    if let End::Drop(timeout) = end {
        builder = builder.drop_timeout(timeout);
    }
    if let Some(n) = fixed {
        builder = builder.max_in_flight_per_endpoint(n);
    }
    if let Some(r) = rate {
        builder = builder.rate_limit(r);
    }
    if rng.bool() {
        let (_, server) = &servers[rng.usize(..servers.len())];
        builder = builder.endpoint_rate_limit(&server.url("/"), rng.f64() * 50.0 + 1.0);
    }
    if manual {
        builder = builder.clock(clock.clone());
    }
    let hooks = builder.build().unwrap();

    // A manual clock moves on in random steps, faster than real time.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = manual.then(|| {
        let (clock, stop) = (clock.clone(), Arc::clone(&stop));
        let mut rng = fastrand::Rng::with_seed(rng.u64(..));
        thread::spawn(move || {
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                clock.advance(Duration::from_millis(rng.u64(0..50)));
                thread::sleep(Duration::from_millis(rng.u64(1..5)));
            }
        })
    });

    let urls: Vec<String> = servers.iter().map(|(_, s)| s.url("/in")).collect();
    let handle = hooks.handle();
    let producer_seed = rng.u64(..);
    let producer = thread::spawn(move || {
        let mut rng = fastrand::Rng::with_seed(producer_seed);
        let mut accepted = HashMap::new();
        'all: for seq in 0..total {
            let url = &urls[rng.usize(..urls.len())];
            let mut webhook = Webhook::new(url, &json!({ "seq": seq })).unwrap();
            let id = webhook.id().to_owned();
            for _ in 0..200 {
                match handle.send_timeout(webhook, Duration::from_millis(50)) {
                    Ok(()) => {
                        accepted.insert(id, ());
                        continue 'all;
                    }
                    Err(SubmitError::Full(back)) => webhook = back,
                    Err(SubmitError::Closed(_)) => break 'all,
                }
            }
            // Refused for 10 s: the endpoint's parking stays full; skip it.
        }
        accepted
    });

    // The shutdown point is random; this is not a wait for anything.
    thread::sleep(run_for);
    let started = Instant::now();
    let stats = match end {
        End::Deadline(deadline) => {
            let mut report = hooks.shutdown_timeout(deadline);
            assert_eq!(
                report.wait_running(Duration::from_secs(10)),
                0,
                "requests outlived their timeout"
            );
            assert!(report.dead_letters.is_empty(), "the sink took every letter");
            Some(report.stats.clone())
        }
        End::Drop(_) => {
            drop(hooks);
            None
        }
    };
    let took = started.elapsed();
    let accepted = producer.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    if let Some(ticker) = ticker {
        ticker.join().unwrap();
    }

    // Every accepted webhook ended exactly once.
    let delivered = delivered.lock().unwrap().clone();
    let letters = letters.letters();
    let mut ended: HashMap<&str, usize> = HashMap::new();
    for id in delivered
        .iter()
        .map(String::as_str)
        .chain(letters.iter().map(|l| l.id.as_str()))
    {
        assert!(accepted.contains_key(id), "{id} ended, never accepted");
        *ended.entry(id).or_default() += 1;
    }
    for id in accepted.keys() {
        assert_eq!(
            ended.get(id.as_str()),
            Some(&1),
            "round {seed}: {id} ended {:?} times",
            ended.get(id.as_str())
        );
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for l in &letters {
        *reasons.entry(l.reason.to_string()).or_default() += 1;
    }
    eprintln!(
        "round {seed}: {} accepted, {} delivered, {} dead-lettered {reasons:?}; shutdown took {took:?}",
        accepted.len(),
        delivered.len(),
        letters.len()
    );
    if let Some(s) = stats {
        assert_eq!(s.accepted as usize, accepted.len());
        assert_eq!(s.delivered as usize, delivered.len());
        assert_eq!(s.dead_lettered as usize, letters.len());
        assert_eq!(s.accepted, s.delivered + s.dead_lettered);
        assert_eq!(
            s.dead_lettered_by_reason.values().sum::<u64>(),
            s.dead_lettered
        );
        assert_eq!((s.parked, s.waiting_retries), (0, 0), "{s:?}");
    }

    // Nothing went to a paused endpoint: one answering nothing but 429
    // with `Retry-After: 1` gets its first round (at most a worker each,
    // some of them late), then one request a second at most.
    if !manual {
        for (kind, server) in &servers {
            if *kind != Kind::OnlyPushBack {
                continue;
            }
            let times: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
            let Some(first) = times.first() else { continue };
            let later = times
                .iter()
                .filter(|t| **t > *first + Duration::from_millis(100))
                .count();
            let span = times.last().unwrap().duration_since(*first);
            assert!(
                later as f64 <= span.as_secs_f64() + 1.0 + workers as f64,
                "round {seed}: {later} requests after the first round in {span:?} to an endpoint paused for 1 s by each"
            );
        }
    }
    drop(servers);
}

#[test]
fn push_back_under_stress_loses_nothing() {
    let seed: u64 = env_or("HOOKPOOL_STRESS_SEED", fastrand::u64(..));
    let rounds: u64 = env_or("HOOKPOOL_STRESS_ROUNDS", 4);
    eprintln!("stress seed {seed} (HOOKPOOL_STRESS_SEED={seed} replays it)");
    let threads_before = os_threads();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..rounds {
        round(rng.u64(..));
    }
    assert!(
        wait_until(Duration::from_secs(10), || os_threads() == threads_before),
        "threads: {} before, {} after",
        threads_before,
        os_threads()
    );
}
