//! Webhook delivery (issue 3) against a real HTTP server on 127.0.0.1,
//! one section per numbered point. Time-dependent behaviour runs on a
//! `ManualClock`, so no test waits for a backoff to pass.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::server::{Recorded, Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{
    BreakerConfig, BreakerState, DeadLetterReason, Dispatcher, DispatcherBuilder, JsonlDeadLetters,
    ManualClock, MemoryDeadLetters, RetryPolicy, Webhook, verify,
};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(20);
const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// A dispatcher for tests: short timeouts, no jitter, quick retries, and no
/// breaker unless a test turns one on (many tests fail one endpoint on purpose).
fn builder(name: &str) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .breaker(BreakerConfig::disabled())
        .workers(2)
        .queue_capacity(256)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(10))
                .jitter(false)
                .max_attempts(3),
        )
}

fn hook(server: &TestServer, path: &str, n: u64) -> Webhook {
    Webhook::new(
        &server.url(path),
        &json!({"event": "entry_created", "n": n}),
    )
    .unwrap()
}

fn endpoint(server: &TestServer) -> String {
    format!("http://127.0.0.1:{}", server.addr().port())
}

// ---------------------------------------------------------------------------
// 1. Sender: one shared agent, timeouts, no redirects, capped body, headers.
// ---------------------------------------------------------------------------

#[test]
fn keep_alive_connections_are_reused_across_workers() {
    let server = TestServer::start(|_| Reply::Status(204));
    let hooks = builder("keepalive").workers(4).build().unwrap();
    for n in 0..200 {
        hooks.send_timeout(hook(&server, "/in", n), BOUND).unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 200);
    assert_eq!(server.request_count(), 200);
    // One shared agent: at most one connection per concurrent worker.
    assert!(
        server.connections_accepted() <= 4,
        "{} connections for 200 requests",
        server.connections_accepted()
    );
}

/// A keep-alive connection that the server closes while it sits in the
/// pool (a FIN, no `Connection: close`) is not used again: the next webhook
/// goes out on a new connection and is delivered at the first attempt.
/// (The sender skips one of ureq's two liveness probes; this is the one it
/// must keep.)
#[test]
fn a_pooled_connection_the_server_closed_is_not_reused() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    let (closed_tx, closed) = crossbeam_channel::unbounded();
    let server = std::thread::spawn(move || {
        // Each connection: one request, a keep-alive answer, then close.
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(BOUND)).unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            let complete = |r: &[u8]| {
                let Some(end) = r.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                r.len() >= end + 4 + length
            };
            while !complete(&request) {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before its request was complete");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            drop(conn);
            closed_tx.send(()).unwrap();
        }
    });
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let hooks = builder("pooled-closed")
        .workers(1)
        .on_delivered(move |d| seen.lock().unwrap().push(d.attempts))
        .build()
        .unwrap();
    let send = |n| {
        let webhook = Webhook::new(&url, &json!({ "n": n })).unwrap();
        hooks.send_timeout(webhook, BOUND).unwrap();
        assert!(wait_until(BOUND, || attempts.lock().unwrap().len() == n));
    };
    send(1);
    // The first connection is in the pool, and the server has closed it.
    closed.recv_timeout(BOUND).unwrap();
    send(2);
    closed.recv_timeout(BOUND).unwrap();
    let report = hooks.shutdown();
    server.join().unwrap();
    assert_eq!(report.stats.delivered, 2);
    assert_eq!(*attempts.lock().unwrap(), [1, 1]);
}

#[test]
fn requests_carry_json_headers_and_user_agent() {
    let server = TestServer::start(|_| Reply::Status(200));
    let hooks = builder("headers").build().unwrap();
    let webhook = Webhook::from_json(&server.url("/in"), r#"{"exact":  "bytes"}"#).unwrap();
    let id = webhook.id().to_owned();
    hooks.try_send(webhook).unwrap();
    let _ = hooks.shutdown();
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.header("user-agent"),
        Some(concat!("hookpool/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(req.header("webhook-id"), Some(id.as_str()));
    assert_eq!(req.body, br#"{"exact":  "bytes"}"#);
}

#[test]
fn a_hanging_endpoint_times_out_and_is_retried() {
    let server = TestServer::start(|_| Reply::Hang);
    let letters = MemoryDeadLetters::new();
    let hooks = builder("hang")
        .timeout(Duration::from_millis(300))
        .retry(common::quick_retry(2))
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/slow", 1)).unwrap();
    let report = hooks.shutdown();
    assert_eq!(report.stats.dead_lettered, 1);
    let letter = &letters.letters()[0];
    assert_eq!(
        (letter.reason, letter.attempts),
        (DeadLetterReason::RetriesExhausted, 2)
    );
    assert_eq!(letter.error, "request timed out");
    assert_eq!(server.request_count(), 2);
}

#[test]
fn redirects_are_failures_and_not_followed() {
    let server = TestServer::start(|r: &Recorded| {
        if r.path == "/moved" {
            Reply::WithHeaders(
                301,
                vec![("location".into(), "/elsewhere".into())],
                String::new(),
            )
        } else {
            Reply::Status(200)
        }
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("redirect")
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/moved", 1)).unwrap();
    let _ = hooks.shutdown();
    let letter = &letters.letters()[0];
    assert_eq!(letter.reason, DeadLetterReason::PermanentFailure);
    assert_eq!((letter.last_status, letter.attempts), (Some(301), 1));
    assert!(
        server.requests().iter().all(|r| r.path == "/moved"),
        "the redirect was followed"
    );
}

#[test]
fn response_bodies_are_read_only_up_to_the_cap() {
    let server = TestServer::start(|r: &Recorded| match r.path.as_str() {
        "/huge" => Reply::Huge(500, 8 * 1024 * 1024),
        "/endless" => Reply::Endless(200),
        _ => Reply::StatusBody(400, "x".repeat(10_000)),
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("bodies")
        .max_response_body(16 * 1024)
        .retry(RetryPolicy::none())
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/huge", 1)).unwrap();
    hooks.try_send(hook(&server, "/endless", 2)).unwrap();
    hooks.try_send(hook(&server, "/bad", 3)).unwrap();
    let report = hooks.shutdown_timeout(BOUND);
    assert_eq!((report.stats.delivered, report.stats.dead_lettered), (1, 2));
    for letter in letters.letters() {
        // Only a short excerpt of the body is kept.
        assert!(letter.error.len() < 200, "{}", letter.error);
    }
    // The client stopped reading at the cap and closed the connection, so
    // the server could write only what the sockets' buffers took (about
    // 4 MiB on Linux loopback), never the whole 8 MiB.
    for path in ["/huge", "/endless"] {
        assert!(
            wait_until(BOUND, || server.bytes_answered(path).len() == 1),
            "the answer to {path} never ended"
        );
        let written = server.bytes_answered(path)[0];
        assert!(
            written < 8 * 1024 * 1024,
            "{path}: the server wrote {written} bytes"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Classification.
// ---------------------------------------------------------------------------

#[test]
fn statuses_are_classified() {
    let server = TestServer::start(|r: &Recorded| {
        let status: u16 = r.path.trim_start_matches('/').parse().unwrap();
        Reply::Status(status)
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("classify")
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    // 429 is push-back, not a failure: see tests/pushback.rs.
    let retryable = [408u16, 425, 500, 502, 503, 504];
    let permanent = [400u16, 401, 403, 404, 409, 422];
    for status in retryable.iter().chain(&permanent).chain(&[200, 201, 204]) {
        hooks
            .try_send(hook(&server, &format!("/{status}"), u64::from(*status)))
            .unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 3);
    let count = |status: u16| {
        server
            .requests()
            .iter()
            .filter(|r| r.path == format!("/{status}"))
            .count()
    };
    for status in retryable {
        assert_eq!(count(status), 3, "{status} should be tried 3 times");
    }
    for status in permanent {
        assert_eq!(count(status), 1, "{status} should never be retried");
    }
    // One letter per failing status, with the reason its class gives.
    let mut reasons: Vec<_> = letters
        .letters()
        .iter()
        .map(|l| (l.last_status.unwrap(), l.reason))
        .collect();
    reasons.sort();
    let mut want: Vec<_> = retryable
        .map(|s| (s, DeadLetterReason::RetriesExhausted))
        .into_iter()
        .chain(permanent.map(|s| (s, DeadLetterReason::PermanentFailure)))
        .collect();
    want.sort();
    assert_eq!(reasons, want);
    assert_eq!(report.stats.dead_lettered, 12);
}

#[test]
fn connection_resets_are_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let server = TestServer::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Reset
        } else {
            Reply::Status(200)
        }
    });
    let hooks = builder("reset").build().unwrap();
    hooks.try_send(hook(&server, "/in", 1)).unwrap();
    let report = hooks.shutdown();
    assert_eq!((report.stats.delivered, report.stats.retried), (1, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn gone_endpoints_are_remembered() {
    let server = TestServer::start(|r: &Recorded| {
        if r.path == "/gone" {
            Reply::Status(410)
        } else {
            Reply::Status(200)
        }
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("gone")
        .workers(1)
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/gone", 1)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 1));
    hooks.try_send(hook(&server, "/gone", 2)).unwrap();
    hooks.try_send(hook(&server, "/ok", 3)).unwrap();
    let report = hooks.shutdown();
    assert_eq!(
        (
            report.stats.delivered,
            report.stats.dead_lettered,
            report.stats.gone_endpoints
        ),
        (1, 2, 1)
    );
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/gone")
            .count(),
        1,
        "a gone URL was called again"
    );
    let letters = letters.letters();
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::EndpointGone && l.last_status == Some(410))
    );
    assert_eq!(letters[1].attempts, 0);
}

// ---------------------------------------------------------------------------
// 3. Retry: backoff, Retry-After, delay queue without a worker.
// ---------------------------------------------------------------------------

#[test]
fn retry_after_is_honoured_in_both_forms_and_clamped() {
    let clock = ManualClock::new();
    let now = clock_wall(&clock);
    let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
    // Push-back to the first request, 200 to the next.
    let answer = |status: u16, value: String| {
        let first = std::sync::atomic::AtomicBool::new(true);
        move |_: &Recorded| {
            if first.swap(false, Ordering::SeqCst) {
                Reply::WithHeaders(
                    status,
                    vec![("retry-after".into(), value.clone())],
                    String::new(),
                )
            } else {
                Reply::Status(200)
            }
        }
    };
    // Each on an endpoint of its own: a Retry-After pauses its whole endpoint.
    let seconds = TestServer::start(answer(429, "60".into()));
    let dated = TestServer::start(answer(503, date));
    let huge = TestServer::start(answer(503, "999999".into()));
    let hooks = builder("retry-after")
        .clock(clock.clone())
        .retry(common::quick_retry(2).max_retry_after(Duration::from_secs(300)))
        .build()
        .unwrap();
    for server in [&seconds, &dated, &huge] {
        hooks.try_send(hook(server, "/in", 0)).unwrap();
    }
    // Pushed back: each waits for its endpoint, holding no worker and
    // spending no attempt.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        (s.parked, s.waiting_retries, s.push_backs) == (3, 0, 3)
    }));
    let count = |s: &TestServer| s.requests().len();

    clock.advance(Duration::from_secs(59));
    assert!(
        !seconds.wait_for_requests(2, Duration::from_millis(200)),
        "retried before Retry-After"
    );
    clock.advance(Duration::from_secs(1));
    assert!(seconds.wait_for_requests(2, BOUND));

    clock.advance(Duration::from_secs(59)); // 119 s
    assert!(
        !dated.wait_for_requests(2, Duration::from_millis(200)),
        "HTTP-date retried early"
    );
    clock.advance(Duration::from_secs(1));
    assert!(dated.wait_for_requests(2, BOUND));

    // 999999 s is clamped to the policy's 300 s maximum.
    assert_eq!(count(&huge), 1);
    clock.advance(Duration::from_secs(180));
    assert!(huge.wait_for_requests(2, BOUND));
    let report = hooks.shutdown();
    assert_eq!((count(&seconds), count(&dated), count(&huge)), (2, 2, 2));
    assert_eq!(
        (
            report.stats.delivered,
            report.stats.push_backs,
            report.stats.retried
        ),
        (3, 3, 0),
        "a push-back is neither a failure nor a retry"
    );
}

fn clock_wall(clock: &ManualClock) -> SystemTime {
    use hookpool::Clock;
    clock.system_now()
}

#[test]
fn a_waiting_retry_holds_no_worker() {
    let clock = ManualClock::new();
    let server = TestServer::start(|r: &Recorded| {
        if r.path == "/flaky" {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let hooks = builder("no-worker-held")
        .workers(1)
        .clock(clock.clone())
        .retry(
            RetryPolicy::exponential(Duration::from_secs(3600))
                .jitter(false)
                .max_attempts(2),
        )
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/flaky", 1)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 1));
    // The only worker is free: other webhooks go through while the retry waits an hour.
    for n in 0..20 {
        hooks.try_send(hook(&server, "/ok", n)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered == 20));
    assert_eq!(hooks.stats().waiting_retries, 1);
    clock.advance(Duration::from_secs(3600));
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 1));
    let report = hooks.shutdown();
    assert_eq!(report.stats.retried, 1);
}

// ---------------------------------------------------------------------------
// 4. Circuit breaker per endpoint.
// ---------------------------------------------------------------------------

#[test]
fn breaker_opens_defers_probes_and_closes() {
    logger::install();
    let clock = ManualClock::new();
    let healthy = Arc::new(AtomicUsize::new(0));
    let state = Arc::clone(&healthy);
    let server = TestServer::start(move |_| {
        if state.load(Ordering::SeqCst) == 1 {
            Reply::Status(200)
        } else {
            Reply::Status(503)
        }
    });
    let hooks = builder("breaker-cycle")
        .workers(1)
        .clock(clock.clone())
        .breaker(common::breaker(2, Duration::from_secs(30)))
        .retry(common::quick_retry(100))
        .build()
        .unwrap();
    for n in 0..5 {
        hooks.try_send(hook(&server, "/in", n)).unwrap();
    }
    let ep = endpoint(&server);
    assert!(wait_until(BOUND, || hooks.stats().breaker(&ep)
        == Some(BreakerState::Open)));
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 5));
    let calls_when_open = server.request_count();
    assert_eq!(
        calls_when_open, 2,
        "the breaker let more than its threshold through"
    );
    assert!(hooks.stats().deferred_by_breaker >= 3);
    assert!(
        !server.wait_for_requests(3, Duration::from_millis(100)),
        "an open breaker let a request through"
    );

    // After the cooldown one probe goes out; it fails, so the breaker opens again.
    clock.advance(Duration::from_secs(30));
    assert!(server.wait_for_requests(3, BOUND));
    assert!(wait_until(BOUND, || hooks.stats().breaker(&ep)
        == Some(BreakerState::Open)));
    // The failed probe is back in the delay queue before the clock moves on.
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 5));
    assert_eq!(server.request_count(), 3);

    // The endpoint recovers: the next probe closes the breaker and everything drains.
    healthy.store(1, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    assert!(wait_until(BOUND, || hooks.stats().delivered == 5));
    assert_eq!(hooks.stats().breaker(&ep), Some(BreakerState::Closed));
    let report = hooks.shutdown();
    assert_eq!(report.stats.dead_lettered, 0);
    let transitions: Vec<_> = logger::lines_containing("breaker-cycle: circuit breaker")
        .into_iter()
        .filter(|l| l.level == log::Level::Info)
        .map(|l| l.message.rsplit(": ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        transitions,
        [
            "closed -> open",
            "open -> half_open",
            "half_open -> open",
            "open -> half_open",
            "half_open -> closed"
        ]
    );
}

#[test]
fn permanent_failures_do_not_open_the_breaker() {
    let server = TestServer::start(|_| Reply::Status(400));
    let hooks = builder("breaker-400")
        .breaker(BreakerConfig::default().failure_threshold(2))
        .build()
        .unwrap();
    for n in 0..10 {
        hooks.try_send(hook(&server, "/in", n)).unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(server.request_count(), 10);
    assert_eq!(report.stats.deferred_by_breaker, 0);
    assert_eq!(
        report.stats.breaker(&endpoint(&server)),
        Some(BreakerState::Closed)
    );
}

#[test]
fn breaker_deferral_past_max_elapsed_is_dead_lettered() {
    let clock = ManualClock::new();
    let server = TestServer::start(|_| Reply::Status(500));
    let letters = MemoryDeadLetters::new();
    let hooks = builder("breaker-elapsed")
        .workers(1)
        .clock(clock.clone())
        .dead_letters(letters.clone())
        .breaker(common::breaker(1, Duration::from_secs(600)))
        .retry(common::quick_retry(10).max_elapsed(Some(Duration::from_secs(60))))
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/in", 1)).unwrap();
    hooks.try_send(hook(&server, "/in", 2)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 2));
    clock.advance(Duration::from_secs(61));
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 2));
    let letters = letters.letters();
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::MaxElapsed),
        "{letters:?}"
    );
    // The second webhook never reached the server: deferrals are not attempts.
    assert_eq!(server.request_count(), 1);
    assert!(letters.iter().any(|l| l.attempts == 0));
    let _ = hooks.shutdown();
}

#[test]
fn a_hanging_endpoint_does_not_starve_a_healthy_one() {
    let slow = TestServer::start(|_| Reply::Hang);
    let fast = TestServer::start(|_| Reply::Status(204));
    let clock = ManualClock::new();
    let hooks = builder("isolation")
        .workers(2)
        .clock(clock)
        .timeout(Duration::from_millis(200))
        .breaker(common::breaker(2, Duration::from_secs(30)))
        .retry(common::quick_retry(5))
        .build()
        .unwrap();
    for n in 0..20 {
        hooks.try_send(hook(&slow, "/hang", n)).unwrap();
        hooks.try_send(hook(&fast, "/ok", n)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered == 20));
    // The bulkhead leaves the hanging endpoint one of the two workers, so the
    // healthy webhooks need not wait for its breaker; it opens later.
    assert!(wait_until(BOUND, || {
        hooks.stats().breaker(&endpoint(&slow)) == Some(BreakerState::Open)
    }));
    // Once its breaker opened, the hanging endpoint got no more requests: at
    // most the threshold, plus what other workers had already started.
    assert!(
        slow.request_count() <= 2 + 1,
        "{} requests to a hanging endpoint",
        slow.request_count()
    );
    let mut report = hooks.shutdown_timeout(Duration::ZERO);
    // A request still hanging at the deadline ends within its timeout.
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(report.stats.dead_lettered, 20);
    assert_eq!(report.dead_letters.len(), 20);
}

#[test]
fn a_hanging_endpoint_holds_at_most_half_the_workers() {
    let slow = TestServer::start(|_| Reply::Hang);
    let fast = TestServer::start(|_| Reply::Status(204));
    // A timeout far past BOUND: the healthy webhooks cannot be waiting for it.
    let hooks = builder("bulkhead")
        .workers(4)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    for n in 0..10 {
        hooks.try_send(hook(&slow, "/hang", n)).unwrap();
        hooks.try_send(hook(&fast, "/ok", n)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered == 10));
    assert!(slow.wait_for_requests(2, BOUND));
    // The other 8 wait for a slot, holding no worker: they are counted, and
    // the exposition shows them. A worker that has taken the last of them
    // may not have parked it yet.
    assert!(
        wait_until(BOUND, || hooks.stats().parked == 8),
        "{} parked",
        hooks.stats().parked
    );
    assert_eq!(slow.request_count(), 2, "half of 4 workers, no more");
    assert!(
        hooks
            .render_prometheus()
            .contains("hookpool_webhooks_parked{pool=\"bulkhead\"} 8")
    );
    let mut report = hooks.shutdown_timeout(Duration::ZERO);
    // Parked and queued ones are dead-lettered at once; the two in flight
    // end when the server goes away.
    drop(slow);
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(report.stats.delivered, 10);
    assert_eq!(report.stats.dead_lettered, 10);
    assert_eq!(report.stats.parked, 0);
    assert_eq!(report.dead_letters.len(), 10);
    assert!(
        report
            .dead_letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown)
    );
}

#[test]
fn one_endpoint_alone_gets_every_worker() {
    let server = TestServer::start(|_| Reply::Hang);
    let hooks = builder("bulkhead-one")
        .workers(3)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    for n in 0..5 {
        hooks.try_send(hook(&server, "/hang", n)).unwrap();
    }
    assert!(server.wait_for_requests(3, BOUND));
    assert_eq!(hooks.stats().parked, 0);
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.still_running, 3);
    drop(server);
    let mut report = report;
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(report.stats.dead_lettered, 5);
}

/// A receiver that holds every request until the returned gate opens, and
/// a dispatcher with `workers` workers and one request at a time per
/// endpoint that has sent it `n` webhooks: one in flight, the rest parked.
fn one_in_flight_rest_parked(
    name: &str,
    workers: usize,
    n: u64,
) -> (TestServer, common::Gate, Dispatcher) {
    let gate = common::Gate::default();
    let held = gate.clone();
    let server = TestServer::start(move |_| {
        held.wait();
        Reply::Status(204)
    });
    let hooks = builder(name)
        .workers(workers)
        .max_in_flight_per_endpoint(1)
        .build()
        .unwrap();
    for i in 0..n {
        hooks.try_send(hook(&server, "/one-at-a-time", i)).unwrap();
    }
    assert!(server.wait_for_requests(1, BOUND));
    let parked = usize::try_from(n - 1).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().parked == parked));
    (server, gate, hooks)
}

#[test]
fn a_fixed_per_endpoint_limit_parks_the_rest_and_shutdown_delivers_them() {
    let (server, gate, hooks) = one_in_flight_rest_parked("bulkhead-fixed", 4, 6);
    // One request at a time, from the start, with one endpoint only.
    assert_eq!(server.request_count(), 1);
    gate.open();
    // `shutdown` (no deadline) waits for the parked webhooks too.
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 6);
    assert_eq!(report.stats.dead_lettered, 0);
    // Each webhook once. (The order in which they park is the order in
    // which workers reach the bulkhead: FIFO there, see src/bulkhead.rs.)
    let mut seen: Vec<u64> = server
        .requests()
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body_text()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_parked_webhook_on_its_way_to_a_worker_is_not_a_retry() {
    let (_server, gate, hooks) = one_in_flight_rest_parked("bulkhead-accounting", 2, 100);
    gate.open();
    // Each released webhook passes through the delay queue; it stays
    // counted as parked there, never as waiting for a retry (no retries
    // happen here). Polling catches a webhook in transit in most runs.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        assert_eq!(s.waiting_retries, 0, "{s:?}");
        assert!(s.parked <= 99, "{s:?}");
        s.delivered == 100
    }));
    let s = hooks.stats();
    assert_eq!((s.parked, s.waiting_retries), (0, 0));
    let report = hooks.shutdown();
    assert_eq!((report.stats.parked, report.stats.waiting_retries), (0, 0));
}

#[test]
fn a_stalled_endpoint_parks_at_most_the_queue_capacity_then_only_it_is_refused() {
    let slow = TestServer::start(|_| Reply::Hang);
    let fast = TestServer::start(|_| Reply::Status(204));
    let hooks = builder("bulkhead-full")
        .workers(2)
        .queue_capacity(4)
        .max_in_flight_per_endpoint(1)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    hooks.try_send(hook(&slow, "/hang", 0)).unwrap();
    assert!(slow.wait_for_requests(1, BOUND));
    for n in 1..=4 {
        hooks.try_send(hook(&slow, "/hang", n)).unwrap();
        assert!(wait_until(BOUND, || hooks.stats().parked == n as usize));
    }
    // Parking full: the next one for that endpoint comes back...
    let back = hooks.try_send(hook(&slow, "/hang", 5)).unwrap_err();
    assert!(back.is_full());
    assert_eq!(
        back.into_inner().body(),
        br#"{"event":"entry_created","n":5}"#
    );
    let back = hooks
        .send_timeout(hook(&slow, "/hang", 6), Duration::from_millis(30))
        .unwrap_err();
    assert!(back.is_full());
    // ...while another endpoint is still accepted and delivered.
    hooks.try_send(hook(&fast, "/ok", 7)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    let stats = hooks.stats();
    assert_eq!(stats.rejected_endpoint_full, 2);
    assert_eq!(stats.accepted, 6);
    assert!(
        hooks
            .render_prometheus()
            .contains("hookpool_webhooks_rejected_endpoint_full_total{pool=\"bulkhead-full\"} 2")
    );
    let mut report = hooks.shutdown_timeout(Duration::ZERO);
    drop(slow);
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(report.stats.dead_lettered, 5);
    assert_eq!(report.stats.delivered, 1);
}

#[test]
fn a_zero_per_endpoint_limit_is_refused() {
    let err = Dispatcher::builder()
        .max_in_flight_per_endpoint(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, hookpool::BuildError::Invalid(_)));
    assert_eq!(
        err.to_string(),
        "max_in_flight_per_endpoint must be at least 1"
    );
}

// ---------------------------------------------------------------------------
// 5. Signing.
// ---------------------------------------------------------------------------

#[test]
fn signatures_verify_and_ids_survive_retries() {
    let clock = ManualClock::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let server = TestServer::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let hooks = builder("signing")
        .clock(clock.clone())
        .signing_secret(SECRET_A)
        .unwrap()
        .signing_secret(SECRET_B)
        .unwrap()
        .retry(
            RetryPolicy::exponential(Duration::from_secs(10))
                .jitter(false)
                .max_attempts(3),
        )
        .build()
        .unwrap();
    let webhook = hook(&server, "/signed", 7);
    let id = webhook.id().to_owned();
    hooks.try_send(webhook).unwrap();
    for attempt in 1..=2 {
        assert!(server.wait_for_requests(attempt, BOUND));
        assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 1));
        clock.advance(Duration::from_secs(30));
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    let _ = hooks.shutdown();

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let a = hookpool::SigningSecret::new(SECRET_A).unwrap();
    let b = hookpool::SigningSecret::new(SECRET_B).unwrap();
    let mut timestamps = Vec::new();
    for r in &requests {
        assert_eq!(
            r.header("webhook-id"),
            Some(id.as_str()),
            "the id changed between attempts"
        );
        let ts = r.header("webhook-timestamp").unwrap();
        let sig = r.header("webhook-signature").unwrap();
        assert_eq!(sig.split(' ').count(), 2, "one signature per secret");
        assert!(sig.split(' ').all(|s| s.starts_with("v1,")));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(ts.parse().unwrap());
        for secret in [&a, &b] {
            verify(
                std::slice::from_ref(secret),
                &id,
                ts,
                sig,
                &r.body,
                at,
                Duration::from_secs(1),
            )
            .unwrap();
        }
        timestamps.push(ts.parse::<u64>().unwrap());
    }
    // Each attempt is stamped with its own time.
    assert_eq!(timestamps[1] - timestamps[0], 30);
    assert_eq!(timestamps[2] - timestamps[1], 30);
}

// ---------------------------------------------------------------------------
// 6. Dead letters, replay, shutdown with a deadline, conservation.
// ---------------------------------------------------------------------------

#[test]
fn jsonl_dead_letters_have_every_field() {
    let path = std::env::temp_dir().join(format!("hookpool-dl-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = TestServer::start(|_| Reply::StatusBody(500, "database down".into()));
    let hooks = builder("jsonl")
        .dead_letters(JsonlDeadLetters::open(&path).unwrap())
        .build()
        .unwrap();
    let webhook = Webhook::new(&server.url("/in?token=s3cret"), &json!({"entry_id": 9})).unwrap();
    let id = webhook.id().to_owned();
    hooks.try_send(webhook).unwrap();
    let _ = hooks.shutdown();
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(value["id"], id);
    assert_eq!(value["url"], server.url("/in?token=s3cret"));
    assert_eq!(value["payload"], json!({"entry_id": 9}));
    assert_eq!(value["attempts"], 3);
    assert_eq!(value["error"], "endpoint answered 500");
    assert_eq!(value["last_status"], 500);
    assert_eq!(value["reason"], "retries_exhausted");
    assert!(
        value["first_attempt_at"].as_u64().unwrap() <= value["last_attempt_at"].as_u64().unwrap()
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn replay_delivers_dead_letters_with_their_ids() {
    let up = Arc::new(AtomicUsize::new(0));
    let state = Arc::clone(&up);
    let server = TestServer::start(move |_| {
        if state.load(Ordering::SeqCst) == 1 {
            Reply::Status(200)
        } else {
            Reply::Status(503)
        }
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("replay")
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    for n in 0..3 {
        hooks.try_send(hook(&server, "/in", n)).unwrap();
    }
    let _ = hooks.shutdown();
    let dead = letters.take();
    assert_eq!(dead.len(), 3);

    up.store(1, Ordering::SeqCst);
    let hooks = builder("replay-2")
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    assert!(hooks.replay(dead.clone(), BOUND).is_empty());
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 3);
    assert!(letters.is_empty());
    let delivered_ids: Vec<_> = server
        .requests()
        .iter()
        .rev()
        .take(3)
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    for letter in &dead {
        assert!(delivered_ids.contains(&letter.id));
    }
}

#[test]
fn shutdown_deadline_dead_letters_queued_and_waiting_webhooks() {
    let clock = ManualClock::new();
    let server = TestServer::start(|r: &Recorded| {
        if r.path == "/flaky" {
            Reply::Status(500)
        } else {
            Reply::Delay(Duration::from_millis(50), Box::new(Reply::Status(200)))
        }
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("deadline")
        .workers(1)
        .queue_capacity(100)
        .clock(clock)
        .dead_letters(letters.clone())
        .retry(RetryPolicy::exponential(Duration::from_secs(3600)).max_attempts(5))
        .build()
        .unwrap();
    for n in 0..3 {
        hooks.try_send(hook(&server, "/flaky", n)).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 3));
    for n in 0..50 {
        hooks.try_send(hook(&server, "/slow", n)).unwrap();
    }
    let mut report = hooks.shutdown_timeout(Duration::from_millis(120));
    assert_eq!(report.wait_running(BOUND), 0);
    let stats = &report.stats;
    assert_eq!(stats.accepted, 53);
    assert_eq!(
        stats.accepted,
        stats.delivered + stats.dead_lettered,
        "{stats:?}"
    );
    assert!(
        stats.delivered < 50,
        "the deadline did not cut anything short"
    );
    let letters = letters.letters();
    assert_eq!(letters.len() as u64, stats.dead_lettered);
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown)
    );
    let waiting: Vec<_> = letters
        .iter()
        .filter(|l| l.url.ends_with("/flaky"))
        .collect();
    assert_eq!(
        waiting.len(),
        3,
        "webhooks waiting for a retry were not dead-lettered"
    );
    assert!(
        waiting
            .iter()
            .all(|l| l.attempts == 1 && l.last_status == Some(500))
    );
}

#[test]
fn without_a_sink_dead_letters_come_back_in_the_report() {
    let server = TestServer::start(|_| Reply::Status(404));
    let hooks = builder("no-sink").build().unwrap();
    for n in 0..4 {
        hooks.try_send(hook(&server, "/missing", n)).unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(report.dead_letters.len(), 4);
    assert_eq!(
        report.stats.accepted,
        report.stats.delivered + report.dead_letters.len() as u64
    );
}

#[test]
fn full_queue_and_closed_dispatcher_hand_the_webhook_back() {
    let server = TestServer::start(|_| {
        Reply::Delay(Duration::from_millis(200), Box::new(Reply::Status(200)))
    });
    let hooks = builder("backpressure")
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let handle = hooks.handle();
    let mut full = None;
    for n in 0..50 {
        if let Err(e) = hooks.try_send(hook(&server, "/in", n)) {
            full = Some(e);
            break;
        }
    }
    let err = full.expect("a two-slot queue fills up");
    assert!(err.is_full());
    let back = err.into_inner();
    assert!(back.url().ends_with("/in"));
    let accepted = hooks.stats().accepted;
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, accepted);
    assert!(handle.try_send(back).unwrap_err().is_closed());
}

#[test]
fn the_connect_timeout_bounds_a_connect_that_never_completes() {
    use std::net::{TcpListener, TcpStream};
    // A listener that never accepts. Once its accept queue is full, the
    // kernel drops further SYNs and a connect hangs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4096 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    let letters = MemoryDeadLetters::new();
    let hooks = builder("connect-timeout")
        .connect_timeout(Duration::from_millis(200))
        .timeout(Duration::from_secs(600))
        .retry(RetryPolicy::none())
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    hooks
        .try_send(Webhook::new(&format!("http://{addr}/never"), &1).unwrap())
        .unwrap();
    let report = hooks.shutdown_timeout(BOUND);
    // Bounded by the 200 ms connect timeout, not by the 600 s total timeout
    // nor by the shutdown deadline; 3 s leaves room for a loaded machine.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(report.stats.dead_lettered, 1);
    assert_eq!(letters.letters()[0].error, "request timed out");
    drop(fillers);
}

// ---------------------------------------------------------------------------
// README promises: dropping, the DNS cache, max_elapsed.
// ---------------------------------------------------------------------------

/// Dropping a dispatcher whose endpoint hangs returns after `drop_timeout`
/// plus, at most, the request in flight's own timeout, instead of the retry
/// policy's hours; without a sink, each webhook it dead-letters is logged
/// at error level with its id.
#[test]
fn dropping_a_dispatcher_whose_endpoint_hangs_returns_and_logs_its_letters() {
    logger::install();
    let server = TestServer::start(|_| Reply::Hang);
    let hooks = builder("dropped-hanging")
        .workers(1)
        .timeout(Duration::from_secs(1))
        .drop_timeout(Duration::from_millis(200))
        .retry(
            RetryPolicy::exponential(Duration::from_secs(1))
                .jitter(false)
                .max_attempts(2),
        )
        .build()
        .unwrap();
    let ids: Vec<String> = (0..4)
        .map(|n| {
            let webhook = hook(&server, "/hang", n);
            let id = webhook.id().to_owned();
            hooks.try_send(webhook).unwrap();
            id
        })
        .collect();
    assert!(server.wait_for_requests(1, BOUND));
    let started = std::time::Instant::now();
    drop(hooks);
    // 200 ms, then the hanging request ends within its 1 s timeout (it
    // started before the drop); 2 s more for a loaded machine. Waiting for
    // the policy instead would take 4 x 2 attempts of 1 s each.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(3200),
        "{took:?}"
    );
    let logged: Vec<_> =
        logger::lines_containing("dropped-hanging: dispatcher dropped with an undelivered webhook")
            .into_iter()
            .filter(|l| l.level == log::Level::Error)
            .collect();
    assert_eq!(logged.len(), 4, "{logged:?}");
    for id in &ids {
        assert!(
            logged.iter().any(|l| l.message.contains(id.as_str())),
            "{id} was not logged: {logged:?}"
        );
    }
}

/// Resolved addresses are reused, and forgotten after a failed connection:
/// every retry after one resolves the host again. ureq logs each lookup it
/// makes (at trace, target `ureq::unversioned::resolver`), and it is asked
/// only when the cache has nothing.
#[test]
fn a_failed_connection_forgets_the_resolved_address() {
    logger::install();
    let server = TestServer::start(|_| Reply::Status(204));
    let port = server.addr().port();
    let lookup = format!(": localhost:{port}");
    let lookups = || {
        logger::all_lines()
            .iter()
            .filter(|l| l.target.starts_with("ureq") && l.message.starts_with("Resolve"))
            .filter(|l| l.message.trim_end().ends_with(&lookup))
            .count()
    };
    let letters = MemoryDeadLetters::new();
    let hooks = builder("dns-forget")
        .workers(1)
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let url = format!("http://localhost:{port}/in");
    for n in 0..2 {
        hooks.try_send(Webhook::new(&url, &n).unwrap()).unwrap();
        assert!(wait_until(BOUND, || hooks.stats().delivered == n + 1));
    }
    assert_eq!(lookups(), 1, "the second delivery resolved again");
    // Nothing listens there any more: every attempt's connection fails.
    drop(server);
    hooks.try_send(Webhook::new(&url, &2).unwrap()).unwrap();
    let report = hooks.shutdown();
    assert_eq!(report.stats.dead_lettered, 1);
    assert_eq!(letters.letters()[0].attempts, 3);
    // The first attempt used the cached address; each of the two retries
    // resolved again, because the failure before it forgot the address.
    assert_eq!(lookups(), 3);
}

/// A webhook whose retries outlast the policy's `max_elapsed` is
/// dead-lettered with reason `max_elapsed`, not `retries_exhausted`.
#[test]
fn retries_stopped_by_max_elapsed_give_reason_max_elapsed() {
    let clock = ManualClock::new();
    let server = TestServer::start(|_| Reply::Status(500));
    let letters = MemoryDeadLetters::new();
    let hooks = builder("max-elapsed")
        .workers(1)
        .clock(clock.clone())
        .dead_letters(letters.clone())
        .retry(common::quick_retry(10).max_elapsed(Some(Duration::from_secs(60))))
        .build()
        .unwrap();
    hooks.try_send(hook(&server, "/in", 1)).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 1));
    // Past the limit: the second attempt fails, and is the last.
    clock.advance(Duration::from_secs(61));
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 1));
    let letters = letters.letters();
    assert_eq!(
        (letters[0].reason, letters[0].attempts),
        (DeadLetterReason::MaxElapsed, 2)
    );
    assert_eq!(server.request_count(), 2);
    let report = hooks.shutdown();
    assert_eq!(
        report
            .stats
            .dead_lettered_by_reason
            .get(&DeadLetterReason::MaxElapsed),
        Some(&1)
    );
}
