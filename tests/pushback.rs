//! Receivers that push back are paced, not dead-lettered (issue 14): 429,
//! and 503 with `Retry-After`, slow the endpoint down; they are not
//! failures. Real receivers on 127.0.0.1.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pacing::{concurrency_cap, token_bucket};
use common::server::{Recorded, Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{
    BreakerConfig, BreakerState, Clock, DeadLetterReason, Dispatcher, DispatcherBuilder,
    ManualClock, MemoryDeadLetters, RetryPolicy, Webhook,
};

const BOUND: Duration = Duration::from_secs(30);

/// The tests that compare elapsed time with a receiver's capacity run one
/// at a time: on a 2-core machine, two of them side by side measure each
/// other.
static TIMED: Mutex<()> = Mutex::new(());

fn timed() -> std::sync::MutexGuard<'static, ()> {
    TIMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn builder(name: &str) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .workers(8)
        .queue_capacity(4096)
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy::exponential(Duration::from_millis(50)).max_attempts(2))
}

fn hook(server: &TestServer, n: usize) -> Webhook {
    Webhook::new(&server.url("/in"), &serde_json::json!({ "n": n })).unwrap()
}

/// Moves `clock` on by `step` at a time until `cond` holds (at most 30 s of
/// real time): paced sends wait for manual time to pass.
fn advance_until(clock: &ManualClock, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_until(BOUND, || {
        if cond() {
            return true;
        }
        clock.advance(step);
        false
    })
}

/// The body's `n`.
fn n_of(r: &Recorded) -> usize {
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    body["n"].as_u64().unwrap() as usize
}

/// Sends `n` webhooks through `hooks` and waits for all of them; returns
/// how long that took.
fn deliver_all(hooks: &Dispatcher, server: &TestServer, n: usize) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        hooks.try_send(hook(server, i)).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || hooks.stats().in_progress() == 0),
        "{:?}",
        hooks.stats()
    );
    started.elapsed()
}

/// A receiver that allows 400 requests a second (a bucket of one second's
/// worth) and answers 429 or 503 with `Retry-After: 1` beyond that: every
/// webhook is delivered, none dead-lettered, near the receiver's own pace,
/// with few push-backs.
#[test]
fn a_rate_limited_receiver_gets_everything_at_its_pace() {
    let _timed = timed();
    let (rate, burst, n) = (400.0, 400.0, 2000);
    let (tally, handler) = token_bucket(rate, burst);
    let server = TestServer::start(handler);
    let letters = MemoryDeadLetters::new();
    let hooks = builder("bucket")
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let took = deliver_all(&hooks, &server, n);
    let stats = hooks.stats();
    let capacity = Duration::from_secs_f64((n as f64 - burst) / rate);
    let requests = server.request_count() as f64;
    println!(
        "{n} webhooks in {took:?} against a capacity time of {capacity:?}; {} push-backs of {requests} requests",
        tally.pushed_back()
    );
    assert_eq!((stats.delivered, stats.dead_lettered), (n as u64, 0));
    assert!(letters.letters().is_empty());
    assert_eq!(stats.push_backs, tally.pushed_back());
    assert!(
        took.as_secs_f64() <= 1.5 * capacity.as_secs_f64(),
        "{took:?} for a capacity time of {capacity:?}"
    );
    assert!(
        tally.pushed_back() as f64 <= 0.05 * requests,
        "{} push-backs of {requests} requests",
        tally.pushed_back()
    );
    // The pace shows per endpoint.
    let endpoint = &stats.endpoints[0];
    assert!(endpoint.rate_limit.is_some(), "{endpoint:?}");
    assert_eq!(endpoint.push_backs, tally.pushed_back());
    assert!(endpoint.paused >= Duration::from_secs(1), "{endpoint:?}");
    assert_eq!(endpoint.breaker, BreakerState::Closed);
    let _ = hooks.shutdown();
}

/// A receiver that serves 4 requests at once, 20 ms each, and answers 503
/// with `Retry-After: 1` to a fifth: the in-flight limit settles near 4.
#[test]
fn a_concurrency_capped_receiver_gets_everything_at_its_pace() {
    let _timed = timed();
    let (cap, service, n) = (4, Duration::from_millis(20), 1600);
    let (tally, handler) = concurrency_cap(cap, service);
    let server = TestServer::start(handler);
    let hooks = builder("capped").build().unwrap();
    let took = deliver_all(&hooks, &server, n);
    let stats = hooks.stats();
    let capacity = service * n as u32 / cap as u32;
    let requests = server.request_count() as f64;
    println!(
        "{n} webhooks in {took:?} against a capacity time of {capacity:?}; {} push-backs of {requests} requests",
        tally.pushed_back()
    );
    assert_eq!((stats.delivered, stats.dead_lettered), (n as u64, 0));
    assert!(
        took.as_secs_f64() <= 1.5 * capacity.as_secs_f64(),
        "{took:?} for a capacity time of {capacity:?}; the endpoint at the end: {:?}",
        stats.endpoints[0]
    );
    assert!(
        tally.pushed_back() as f64 <= 0.05 * requests,
        "{} push-backs of {requests} requests",
        tally.pushed_back()
    );
    let limit = stats.endpoints[0].in_flight_limit.unwrap();
    assert!((1..=6).contains(&limit), "in-flight limit {limit}");
    let _ = hooks.shutdown();
}

/// A `Retry-After` pauses the whole endpoint: nothing is sent to it until
/// then, the pushed-back webhook spends no attempt and goes first when the
/// pause ends, and the others keep their order.
#[test]
fn retry_after_pauses_the_endpoint_and_order_is_kept() {
    let clock = ManualClock::new();
    let first = AtomicBool::new(true);
    let server = TestServer::start(move |_: &Recorded| {
        if first.swap(false, Ordering::SeqCst) {
            Reply::WithHeaders(
                429,
                vec![("Retry-After".into(), "30".into())],
                String::new(),
            )
        } else {
            Reply::Status(200)
        }
    });
    let hooks = builder("pause")
        .workers(1)
        .clock(clock.clone())
        // One attempt only: a push-back must not spend it.
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    for i in 0..20 {
        hooks.try_send(hook(&server, i)).unwrap();
    }
    // The first is pushed back; everything waits for the endpoint, holding
    // no worker.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        s.push_backs == 1 && s.parked == 20 && s.pool.active == 0 && s.pool.queued == 0
    }));
    let endpoint = &hooks.stats().endpoints[0];
    assert_eq!(endpoint.paused_for, Duration::from_secs(30));
    assert!(
        !server.wait_for_requests(2, Duration::from_millis(300)),
        "a request went to a paused endpoint"
    );
    clock.advance(Duration::from_secs(29));
    assert!(
        !server.wait_for_requests(2, Duration::from_millis(300)),
        "a request went to a paused endpoint"
    );
    clock.advance(Duration::from_secs(1));
    assert!(server.wait_for_requests(2, BOUND));
    // The endpoint is paced since its push-back: its sends wait for time.
    assert!(advance_until(&clock, Duration::from_millis(50), || {
        server.request_count() == 21
    }));
    let report = hooks.shutdown();
    assert_eq!(
        (report.stats.delivered, report.stats.dead_lettered),
        (20, 0)
    );
    let order: Vec<usize> = server.requests().iter().map(n_of).collect();
    assert_eq!(order, [0].into_iter().chain(0..20).collect::<Vec<_>>());
}

/// Half-open to closed with a backlog of 1,000 webhooks: it comes back
/// gradually (slow start), each request finding at most one more in flight
/// at the receiver than have completed since the breaker closed, instead
/// of every worker's at once; and in acceptance order, give or take the
/// requests in flight.
#[test]
fn after_an_outage_the_backlog_is_released_gradually() {
    let _timed = timed();
    let clock = ManualClock::new();
    let down = Arc::new(AtomicBool::new(true));
    let busy = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // (requests in flight at the receiver, requests done, n) at each arrival.
    let seen: Arc<Mutex<Vec<(usize, usize, usize)>>> = Arc::default();
    let (dn, b, d, s) = (
        Arc::clone(&down),
        Arc::clone(&busy),
        Arc::clone(&done),
        Arc::clone(&seen),
    );
    let server = TestServer::start(move |r: &Recorded| {
        if dn.load(Ordering::SeqCst) {
            return Reply::Status(500);
        }
        let now = b.fetch_add(1, Ordering::SeqCst) + 1;
        s.lock()
            .unwrap()
            .push((now, d.load(Ordering::SeqCst), n_of(r)));
        std::thread::sleep(Duration::from_millis(5));
        d.fetch_add(1, Ordering::SeqCst);
        b.fetch_sub(1, Ordering::SeqCst);
        Reply::Status(200)
    });
    let hooks = builder("slow-start")
        .workers(16)
        .clock(clock.clone())
        .breaker(
            BreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(30)),
        )
        .retry(RetryPolicy::exponential(Duration::from_secs(1)).max_attempts(5))
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", server.addr().port());
    hooks.try_send(hook(&server, 0)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().breaker(&endpoint)
        == Some(BreakerState::Open)));
    for i in 1..1000 {
        hooks.try_send(hook(&server, i)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 1000));
    down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1000));
    let seen = seen.lock().unwrap().clone();
    let peak = seen.iter().map(|(busy, _, _)| *busy).max().unwrap();
    println!("peak concurrency {peak}; first arrivals {:?}", &seen[..12]);
    for (i, (busy, done, _)) in seen.iter().enumerate() {
        assert!(
            *busy <= done + 1,
            "request {i} found {busy} in flight with only {done} done: {:?}",
            &seen[..i + 1]
        );
    }
    assert!(peak > 4, "the limit never grew back: peak {peak}");
    assert!(peak <= 16);
    // Acceptance order: the lane releases them by sequence number, but
    // they reach it through the delay queue and 16 workers, and a worker
    // preempted on a busy machine lets later ones by. So the check is the
    // rank correlation of arrival and acceptance (Spearman's rho): 1 for the
    // same order, about 0 for a release in any unrelated order.
    let n = seen.len() as f64;
    let d2: f64 = seen
        .iter()
        .enumerate()
        .map(|(position, (_, _, accepted))| (position as f64 - *accepted as f64).powi(2))
        .sum();
    let rho = 1.0 - 6.0 * d2 / (n * (n * n - 1.0));
    println!("arrival against acceptance order: rho {rho:.4}");
    assert!(
        rho >= 0.99,
        "arrival order barely follows acceptance: rho {rho:.4}"
    );
    let _ = hooks.shutdown();
}

/// A receiver that is really down still opens the breaker after 5
/// failures, as before: connection refused, then 500s.
#[test]
fn a_receiver_that_is_down_still_opens_the_breaker() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let failing = TestServer::start(|_: &Recorded| Reply::Status(500));
    let hooks = builder("down")
        .workers(1)
        .breaker(BreakerConfig::default())
        .retry(RetryPolicy::exponential(Duration::from_millis(1)).max_attempts(100))
        .build()
        .unwrap();
    let refused_url = format!("http://{refused}/in");
    hooks
        .try_send(Webhook::new(&refused_url, &0).unwrap())
        .unwrap();
    hooks.try_send(hook(&failing, 0)).unwrap();
    let open = |ep: &str| hooks.stats().breaker(ep) == Some(BreakerState::Open);
    assert!(wait_until(BOUND, || open(&format!("http://{refused}"))));
    let failing_ep = format!("http://127.0.0.1:{}", failing.addr().port());
    assert!(wait_until(BOUND, || open(&failing_ep)));
    assert_eq!(
        failing.request_count(),
        5,
        "opened after exactly 5 failures"
    );
    let stats = hooks.stats();
    assert_eq!(stats.push_backs, 0);
    assert_eq!(stats.retried, 10, "5 failures each, all retried");
    let _ = hooks.shutdown_timeout(Duration::ZERO);
}

/// Push-back is not failure, but an endpoint that answers nothing else for
/// the breaker's `push_back_limit` opens it.
#[test]
fn nothing_but_push_back_for_long_opens_the_breaker() {
    let clock = ManualClock::new();
    let server = TestServer::start(|_: &Recorded| {
        Reply::WithHeaders(429, vec![("Retry-After".into(), "1".into())], String::new())
    });
    let hooks = builder("only-push-back")
        .workers(1)
        .clock(clock.clone())
        .breaker(
            BreakerConfig::default()
                .failure_threshold(1)
                .push_back_limit(Some(Duration::from_secs(10))),
        )
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", server.addr().port());
    hooks.try_send(hook(&server, 0)).unwrap();
    // Each push-back pauses the endpoint for a second; the breaker stays
    // closed, though one failure would open it, until 10 s of nothing else.
    // Time moves only while the endpoint waits for it (paused, or nothing
    // in flight): a worker slowed down by a busy machine must not see
    // seconds pass while its request is out.
    let started = clock.now();
    let idle = || {
        let stats = hooks.stats();
        let ep = stats.endpoints.iter().find(|e| e.endpoint == endpoint);
        ep.is_none_or(|e| e.in_flight == 0 || !e.paused_for.is_zero())
    };
    assert!(wait_until(BOUND, || {
        let open = hooks.stats().breaker(&endpoint) == Some(BreakerState::Open);
        assert!(
            open || clock.now() - started <= Duration::from_secs(11),
            "still closed"
        );
        if !open && idle() {
            clock.advance(Duration::from_millis(100));
        }
        open
    }));
    assert!(
        clock.now() - started >= Duration::from_secs(10),
        "opened before 10 s of push-back"
    );
    let stats = hooks.stats();
    assert_eq!((stats.dead_lettered, stats.retried), (0, 0));
    assert!(stats.push_backs >= 10, "{}", stats.push_backs);
    let _ = hooks.shutdown_timeout(Duration::ZERO);
}

/// Time spent waiting for the receiver's pace does not count against
/// `max_elapsed`: a receiver that only paces never makes a webhook expire.
#[test]
fn pacing_does_not_count_against_max_elapsed() {
    let (_tally, handler) = token_bucket(40.0, 5.0);
    let server = TestServer::start(handler);
    let letters = MemoryDeadLetters::new();
    let hooks = builder("elapsed")
        .retry(RetryPolicy::default().max_elapsed(Some(Duration::from_millis(500))))
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    // About 3 s at the receiver's pace, six times the budget.
    let took = deliver_all(&hooks, &server, 120);
    assert!(took > Duration::from_secs(1), "{took:?}");
    let stats = hooks.stats();
    assert_eq!((stats.delivered, stats.dead_lettered), (120, 0));
    assert!(stats.push_backs > 0);
    let _ = hooks.shutdown();
}

/// The time a webhook waits out a pause is not spent from `max_elapsed`:
/// after a 1 s `Retry-After` against a 500 ms budget, a failure is still
/// retried, not dead-lettered.
#[test]
fn a_failure_after_a_long_pause_is_still_retried() {
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    let server =
        TestServer::start(
            move |_: &Recorded| match count.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    Reply::WithHeaders(429, vec![("Retry-After".into(), "1".into())], String::new())
                }
                1 => Reply::Status(500),
                _ => Reply::Status(204),
            },
        );
    let letters = MemoryDeadLetters::new();
    let hooks = builder("paused-budget")
        .retry(
            RetryPolicy::exponential(Duration::from_millis(10))
                .jitter(false)
                .max_elapsed(Some(Duration::from_millis(500))),
        )
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, 0)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().in_progress() == 0));
    let stats = hooks.stats();
    assert_eq!(
        (stats.delivered, stats.dead_lettered, stats.push_backs),
        (1, 0, 1),
        "{:?}",
        letters.take()
    );
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    let _ = hooks.shutdown();
}

/// A configured rate is never exceeded: no second holds more than the rate
/// plus the bucket's few, for the endpoint it names, while another
/// endpoint is not held to it.
#[test]
fn a_configured_rate_is_never_exceeded() {
    let _timed = timed();
    let limited = TestServer::start(|_: &Recorded| Reply::Status(204));
    let free = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = builder("configured")
        .endpoint_rate_limit(&limited.url("/anything"), 50.0)
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..100 {
        hooks.try_send(hook(&limited, i)).unwrap();
        hooks.try_send(hook(&free, i)).unwrap();
    }
    assert!(free.wait_for_requests(100, BOUND));
    let free_took = started.elapsed();
    assert!(wait_until(BOUND, || hooks.stats().in_progress() == 0));
    let times: Vec<Instant> = limited.requests().iter().map(|r| r.at).collect();
    // Sends are spaced 20 ms apart, and may bunch by two intervals to make
    // up for a late wake-up; arrival times add the loopback's jitter on top
    // (a request that left late lands next to the one after it). 10% over
    // the rate allows both, and still fails a limiter that lets bursts by.
    for (i, t) in times.iter().enumerate() {
        let in_second = times[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_second <= 55,
            "{in_second} requests within a second of request {i}"
        );
    }
    assert!(
        times[99] - times[0] >= Duration::from_millis(1900),
        "100 requests at 50/s took {:?}",
        times[99] - times[0]
    );
    assert!(
        free_took < times[99] - times[0],
        "the other endpoint was held too"
    );
    let stats = hooks.stats();
    assert_eq!(stats.push_backs, 0);
    let limited_ep = format!("http://127.0.0.1:{}", limited.addr().port());
    let e = stats
        .endpoints
        .iter()
        .find(|e| e.endpoint == limited_ep)
        .unwrap();
    assert_eq!(e.rate_limit, Some(50.0));
    let _ = hooks.shutdown();
}

/// A pause is logged at warn, once per interval per endpoint, and shows in
/// the metrics, which promtool accepts.
#[test]
fn pauses_are_logged_counted_and_exposed() {
    logger::install();
    let first = AtomicUsize::new(0);
    let server = TestServer::start(move |_: &Recorded| {
        if first.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::WithHeaders(503, vec![("Retry-After".into(), "1".into())], String::new())
        } else {
            Reply::Status(204)
        }
    });
    let hooks = builder("pause-log")
        .workers(1)
        .warn_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..3 {
        hooks.try_send(hook(&server, i)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered == 3));
    let stats = hooks.stats();
    assert_eq!(stats.push_backs, 3);
    assert!(stats.paused >= Duration::from_secs(3), "{:?}", stats.paused);
    let warned = logger::lines_containing("pause-log: http://127.0.0.1");
    let warned: Vec<_> = warned
        .iter()
        .filter(|l| l.level == log::Level::Warn && l.message.contains("asked to slow down"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "rate-limited to one per interval: {warned:?}"
    );
    let text = hooks.render_prometheus();
    for needle in [
        "hookpool_webhook_push_backs_total{pool=\"pause-log\"} 3",
        "hookpool_endpoint_push_backs_total{pool=\"pause-log\",endpoint=\"http://127.0.0.1:",
        "hookpool_endpoint_paused_seconds_total{pool=\"pause-log\"",
        "hookpool_endpoint_in_flight_limit{pool=\"pause-log\"",
        "hookpool_endpoint_rate_limit{pool=\"pause-log\"",
        "hookpool_pause_seconds_total{pool=\"pause-log\"} 3",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    common::promtool_check(&text);
    let _ = hooks.shutdown();
}

/// A breaker opened by push-back, like one opened by failures, defers
/// webhooks, and those are dead-lettered once past `max_elapsed`.
#[test]
fn a_breaker_opened_by_push_back_still_honours_max_elapsed() {
    let clock = ManualClock::new();
    let server = TestServer::start(|_: &Recorded| Reply::Status(429));
    let letters = MemoryDeadLetters::new();
    let hooks = builder("push-back-expiry")
        .workers(1)
        .clock(clock.clone())
        .breaker(
            BreakerConfig::default()
                .cooldown(Duration::from_secs(3600))
                .push_back_limit(Some(Duration::ZERO)),
        )
        .retry(RetryPolicy::default().max_elapsed(Some(Duration::from_secs(60))))
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, 0)).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", server.addr().port());
    assert!(wait_until(BOUND, || hooks.stats().breaker(&endpoint)
        == Some(BreakerState::Open)));
    hooks.try_send(hook(&server, 1)).unwrap();
    // The pushed-back one is paced; manual time lets it go on to the breaker.
    assert!(advance_until(&clock, Duration::from_millis(100), || {
        hooks.stats().deferred_by_breaker >= 2
    }));
    clock.advance(Duration::from_secs(61));
    // Due again, they pass through the endpoint's pace to the breaker, which
    // finds them expired.
    assert!(advance_until(&clock, Duration::from_millis(100), || {
        hooks.stats().dead_lettered == 2
    }));
    assert!(
        letters
            .letters()
            .iter()
            .all(|l| l.reason == DeadLetterReason::MaxElapsed)
    );
    let _ = hooks.shutdown();
}

/// Behind an open breaker, a paced endpoint's backlog reaches the breaker
/// (and waits in the delay queue, where `max_elapsed` counts) at once: a
/// refused webhook gives its send time back instead of using up the pace.
#[test]
fn an_open_breaker_is_not_paced() {
    let server = TestServer::start(|_: &Recorded| Reply::Status(500));
    let hooks = builder("breaker-pace")
        .workers(1)
        .rate_limit(1.0)
        .breaker(
            BreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(3600)),
        )
        .retry(RetryPolicy::exponential(Duration::from_secs(3600)).max_attempts(5))
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{}", server.addr().port());
    hooks.try_send(hook(&server, 0)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().breaker(&endpoint)
        == Some(BreakerState::Open)));
    let started = Instant::now();
    for i in 1..=20 {
        hooks.try_send(hook(&server, i)).unwrap();
    }
    // At 1/s, twenty sends would take twenty seconds.
    assert!(wait_until(Duration::from_secs(5), || {
        hooks.stats().deferred_by_breaker >= 20
    }));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.request_count(), 1);
    let _ = hooks.shutdown_timeout(Duration::ZERO);
}
