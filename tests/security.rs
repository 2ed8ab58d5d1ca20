//! Reliability and security (issue 5): bad input gets a clear typed error,
//! the private-network guard, and secret hygiene in Debug output, logs and
//! dead letters.

mod common;

use std::time::Duration;

use common::server::{Recorded, Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{
    BreakerConfig, BuildError, DeadLetterReason, DeliveryError, Dispatcher, DispatcherBuilder,
    MemoryDeadLetters, Pool, RetryPolicy, SecretError, SigningSecret, Webhook, WebhookError,
};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_KEY_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A payload value no port number or id can contain by chance.
const PAYLOAD_MARK: &str = "card-4242-4242-4242";

fn builder(name: &str) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .workers(2)
        .breaker(BreakerConfig::disabled())
        .timeout(Duration::from_secs(2))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(5))
                .jitter(false)
                .max_attempts(2),
        )
}

// ---------------------------------------------------------------------------
// 3. Bad input.
// ---------------------------------------------------------------------------

#[test]
fn zero_workers_and_zero_capacity_are_refused() {
    let pool = Pool::builder()
        .workers(0)
        .build(|_: ()| Ok::<(), String>(()));
    assert!(matches!(pool, Err(BuildError::ZeroWorkers)));
    let pool = Pool::builder()
        .queue_capacity(0)
        .build(|_: ()| Ok::<(), String>(()));
    assert!(matches!(pool, Err(BuildError::ZeroCapacity)));
    assert!(matches!(
        Dispatcher::builder().workers(0).build(),
        Err(BuildError::ZeroWorkers)
    ));
    assert!(matches!(
        Dispatcher::builder().queue_capacity(0).build(),
        Err(BuildError::ZeroCapacity)
    ));
}

#[test]
fn bad_urls_are_refused_with_typed_errors() {
    for url in [
        "",
        "not a url",
        "http://",
        "//example.com/x",
        "example.com/hooks",
        "http://exa mple.com/",
    ] {
        assert!(
            matches!(Webhook::new(url, &1), Err(WebhookError::InvalidUrl(_))),
            "{url:?}"
        );
    }
    for (url, scheme) in [
        ("ftp://example.com/", "ftp"),
        ("file:///etc/passwd", "file"),
        ("gopher://x/", "gopher"),
    ] {
        match Webhook::new(url, &1) {
            Err(WebhookError::UnsupportedScheme(s)) => assert_eq!(s, scheme),
            other => panic!("{url}: {other:?}"),
        }
    }
    for url in [
        "https://user:pass@example.com/",
        "http://token@example.com/hooks",
    ] {
        let err = Webhook::new(url, &1).unwrap_err();
        assert!(matches!(err, WebhookError::CredentialsInUrl), "{url}");
        assert!(!err.to_string().contains("pass") && !err.to_string().contains("token"));
    }
    // An invalid URL's error names it without its query string.
    let err = Webhook::new("http://exa mple.com/?key=hunter2", &1).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn unserializable_payloads_and_invalid_json_are_refused() {
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this type refuses to serialize"))
        }
    }
    let err = Webhook::new("https://example.com/", &Unserializable).unwrap_err();
    assert!(matches!(err, WebhookError::Serialize(_)));
    assert_eq!(err.to_string(), "payload cannot be serialized to json");
    assert!(std::error::Error::source(&err).is_some());
    assert!(matches!(
        Webhook::from_json("https://example.com/", "{\"a\":"),
        Err(WebhookError::InvalidJson(_))
    ));
    assert!(matches!(
        Webhook::from_json("https://example.com/", "1 2"),
        Err(WebhookError::InvalidJson(_))
    ));
}

#[test]
fn secrets_that_are_not_base64_are_refused_without_echoing_them() {
    for bad in ["whsec_not*base64!", "whsec_", "", "whsec_%%%%"] {
        let err = Dispatcher::builder().signing_secret(bad).unwrap_err();
        assert!(
            matches!(err, SecretError::InvalidBase64 | SecretError::Empty),
            "{bad:?}: {err:?}"
        );
        if bad.len() > 6 {
            assert!(!err.to_string().contains(&bad[6..]), "{err}");
        }
    }
}

#[test]
fn garbage_huge_and_negative_retry_after_values_are_handled() {
    let answer = |value: &'static str| {
        move |_: &Recorded| {
            Reply::WithHeaders(
                503,
                vec![("retry-after".into(), value.into())],
                String::new(),
            )
        }
    };
    // Each on an endpoint of its own: a valid Retry-After pauses its whole
    // endpoint.
    let garbage = TestServer::start(answer("soon, maybe"));
    let negative = TestServer::start(answer("-30"));
    let huge = TestServer::start(answer("99999999999999999999999999"));
    let clock = hookpool::ManualClock::new();
    let hooks = builder("retry-after-bad")
        .clock(clock.clone())
        .retry(common::quick_retry(2).max_retry_after(Duration::from_secs(60)))
        .build()
        .unwrap();
    for server in [&garbage, &negative, &huge] {
        hooks
            .try_send(Webhook::new(&server.url("/in"), &1).unwrap())
            .unwrap();
    }
    let requests = || garbage.requests().len() + negative.requests().len() + huge.requests().len();
    assert!(wait_until(BOUND, || requests() == 3));
    // Garbage and negative values are no Retry-After: a 503 without one is a
    // failure, retried after the policy's backoff (1 ms). A huge value is a
    // pause, clamped to the policy's 60 s maximum.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        (s.waiting_retries, s.parked, s.push_backs) == (2, 1, 1)
    }));
    clock.advance(Duration::from_millis(1));
    assert!(garbage.wait_for_requests(2, BOUND));
    assert!(negative.wait_for_requests(2, BOUND));
    assert!(
        !huge.wait_for_requests(2, Duration::from_millis(100)),
        "a huge Retry-After was not clamped"
    );
    // The huge value is clamped to the policy's 60 s maximum, not ignored.
    clock.advance(Duration::from_secs(60));
    assert!(huge.wait_for_requests(2, BOUND));
    // The two failures end after their 2 attempts; the pushed back webhook
    // spends none, and is dead-lettered by the shutdown. The server records
    // a request before it answers: wait for the answer too, or the webhook
    // is still in flight at the zero deadline and its letter comes after the
    // report.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        (s.dead_lettered, s.push_backs, s.parked) == (2, 2, 1)
    }));
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.stats.dead_lettered, 3);
    let mut reasons: Vec<_> = report.dead_letters.iter().map(|l| l.reason).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            hookpool::DeadLetterReason::RetriesExhausted,
            hookpool::DeadLetterReason::RetriesExhausted,
            hookpool::DeadLetterReason::Shutdown,
        ]
    );
}

#[test]
fn oversized_and_endless_bodies_are_cut_off_and_redirect_loops_not_followed() {
    let server = TestServer::start(|r: &Recorded| match r.path.as_str() {
        "/huge-error" => Reply::Huge(500, 32 * 1024 * 1024),
        "/endless-error" => Reply::Endless(502),
        "/endless-ok" => Reply::Endless(200),
        _ => Reply::WithHeaders(
            302,
            vec![("location".into(), r.path.clone())],
            String::new(),
        ),
    });
    let letters = MemoryDeadLetters::new();
    let hooks = builder("bodies-and-loops")
        .retry(RetryPolicy::none())
        .max_response_body(64 * 1024)
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    for path in ["/huge-error", "/endless-error", "/endless-ok", "/loop"] {
        hooks
            .try_send(Webhook::new(&server.url(path), &1).unwrap())
            .unwrap();
    }
    let report = hooks.shutdown_timeout(BOUND);
    assert_eq!(
        (
            report.stats.delivered,
            report.stats.dead_lettered,
            report.still_running
        ),
        (1, 3, 0)
    );
    let mut by_path: Vec<_> = letters
        .letters()
        .into_iter()
        .map(|l| (l.url.rsplit('/').next().unwrap().to_owned(), l))
        .collect();
    by_path.sort_by(|a, b| a.0.cmp(&b.0));
    let errors: Vec<_> = by_path
        .iter()
        .map(|(p, l)| (p.as_str(), l.error.as_str(), l.last_status))
        .collect();
    assert_eq!(
        errors,
        [
            ("endless-error", "endpoint answered 502", Some(502)),
            ("huge-error", "endpoint answered 500", Some(500)),
            (
                "loop",
                "endpoint answered a redirect (302), not followed",
                Some(302)
            ),
        ]
    );
    assert_eq!(by_path[2].1.reason, DeadLetterReason::PermanentFailure);
    assert_eq!(
        server
            .requests()
            .iter()
            .filter(|r| r.path == "/loop")
            .count(),
        1,
        "a redirect was followed"
    );
    // The client stopped reading at the cap and closed the connection, so
    // the server could write only what the sockets' buffers took (about
    // 4 MiB on Linux loopback), never the whole 32 MiB.
    for path in ["/huge-error", "/endless-error", "/endless-ok"] {
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
// 4. The private-network guard.
// ---------------------------------------------------------------------------

#[test]
fn loopback_is_refused_with_the_guard_and_allowed_without_it() {
    let server = TestServer::start(|_| Reply::Status(200));
    let letters = MemoryDeadLetters::new();
    let guarded = builder("guard-on")
        .deny_private_networks(true)
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    guarded
        .try_send(Webhook::new(&server.url("/a"), &1).unwrap())
        .unwrap();
    let port = server.addr().port();
    guarded
        .try_send(Webhook::new(&format!("http://localhost:{port}/b"), &2).unwrap())
        .unwrap();
    let report = guarded.shutdown();
    assert_eq!((report.stats.delivered, report.stats.dead_lettered), (0, 2));
    assert_eq!(server.request_count(), 0, "the guard let a request through");
    for letter in letters.letters() {
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadLetterReason::Blocked, 1)
        );
        assert!(
            letter.error.starts_with("address refused: "),
            "{}",
            letter.error
        );
        assert!(
            letter.error.contains("private or reserved range"),
            "{}",
            letter.error
        );
    }

    let open = builder("guard-off").build().unwrap();
    open.try_send(Webhook::new(&server.url("/a"), &1).unwrap())
        .unwrap();
    assert_eq!(open.shutdown().stats.delivered, 1);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn private_and_metadata_addresses_are_refused_before_any_connection() {
    // With the guard on, these are refused by the resolver: no packet is sent.
    let letters = MemoryDeadLetters::new();
    let hooks = builder("guard-private")
        .deny_private_networks(true)
        .retry(RetryPolicy::exponential(Duration::from_secs(1)).max_attempts(5))
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let targets = [
        "http://10.0.0.1/x",
        "http://10.255.1.2:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ];
    for url in targets {
        hooks.try_send(Webhook::new(url, &1).unwrap()).unwrap();
    }
    let report = hooks.shutdown_timeout(BOUND);
    assert_eq!(report.stats.dead_lettered, targets.len() as u64);
    for letter in letters.letters() {
        // A refusal is permanent: one attempt, never retried.
        assert_eq!(
            (letter.reason, letter.attempts),
            (DeadLetterReason::Blocked, 1),
            "{}",
            letter.url
        );
    }
    assert_eq!(report.stats.retried, 0);
}

const PROXY_TEST: &str = "proxies_from_the_environment_are_ignored_with_the_guard";

/// In a child process whose environment names a proxy (a test server that
/// answers every CONNECT 502), a webhook to 10.0.0.1. With the guard, the
/// proxy sees nothing, and the guard refused the target itself (a proxy
/// would have been refused as 127.0.0.1). Without it, the proxy is asked:
/// the environment does reach ureq.
#[test]
fn proxies_from_the_environment_are_ignored_with_the_guard() {
    if common::in_child() {
        let guard = std::env::var("HOOKPOOL_TEST_GUARD").as_deref() == Ok("on");
        let letters = MemoryDeadLetters::new();
        let hooks = builder("proxy-env")
            .deny_private_networks(guard)
            .retry(RetryPolicy::none())
            .dead_letters(letters.clone())
            .build()
            .unwrap();
        hooks
            .try_send(Webhook::new("http://10.0.0.1/hook", &1).unwrap())
            .unwrap();
        assert_eq!(hooks.shutdown_timeout(BOUND).stats.dead_lettered, 1);
        let letter = &letters.letters()[0];
        if guard {
            assert_eq!(letter.reason, DeadLetterReason::Blocked, "{letter:?}");
            assert_eq!(
                letter.error,
                "address refused: 10.0.0.1 is in a private or reserved range"
            );
        }
        return;
    }
    let proxy = TestServer::start(|_| Reply::Status(502));
    let url = proxy.url("");
    let proxy_env = [
        ("HTTP_PROXY", url.as_str()),
        ("http_proxy", url.as_str()),
        ("ALL_PROXY", url.as_str()),
        ("all_proxy", url.as_str()),
    ];
    let no_proxy = ["NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"];
    let mut envs = proxy_env.to_vec();
    envs.push(("HOOKPOOL_TEST_GUARD", "on"));
    common::run_test_in_child(PROXY_TEST, &envs, &no_proxy);
    assert_eq!(proxy.request_count(), 0, "the guarded child used the proxy");
    envs.pop();
    envs.push(("HOOKPOOL_TEST_GUARD", "off"));
    common::run_test_in_child(PROXY_TEST, &envs, &no_proxy);
    let asked: Vec<_> = proxy
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(asked, ["CONNECT 10.0.0.1:80"]);
}

#[test]
fn blocked_is_a_permanent_error() {
    let err = DeliveryError::Blocked("10.0.0.1 is in a private or reserved range".into());
    assert_eq!(
        err.to_string(),
        "address refused: 10.0.0.1 is in a private or reserved range"
    );
    assert_eq!(err.status(), None);
}

// ---------------------------------------------------------------------------
// 5. Secret hygiene.
// ---------------------------------------------------------------------------

#[test]
fn secrets_never_appear_in_debug_output() {
    let secret = SigningSecret::new(SECRET).unwrap();
    let configured = builder("debug-hygiene").signing_secret(SECRET).unwrap();
    let configured_debug = format!("{configured:?}");
    let hooks = configured.build().unwrap();
    for text in [
        format!("{secret:?}"),
        configured_debug,
        format!("{hooks:?}"),
    ] {
        assert!(
            !text.contains(SECRET_KEY_B64) && !text.contains("whsec_"),
            "{text}"
        );
    }
    let _ = hooks.shutdown();
}

#[test]
fn logs_and_dead_letters_never_show_secrets_or_query_strings() {
    logger::install();
    let server = TestServer::start(|r: &Recorded| match r.path_only() {
        "/fail" => Reply::StatusBody(500, "boom".into()),
        "/bad" => Reply::Status(400),
        _ => Reply::Status(200),
    });
    // A port we owned and closed: connections to it are refused.
    let closed = TestServer::start(|_| Reply::Status(200));
    let closed_url = closed.url("/x?token=QUERYSECRET3");
    drop(closed);
    let letters = MemoryDeadLetters::new();
    let hooks = builder("log-hygiene")
        .signing_secret(SECRET)
        .unwrap()
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    for url in [
        server.url("/ok?token=QUERYSECRET1"),
        server.url("/fail?token=QUERYSECRET2"),
        server.url("/bad?api_key=QUERYSECRET4&x=1"),
        closed_url,
    ] {
        hooks
            .try_send(Webhook::new(&url, &json!({"card": PAYLOAD_MARK})).unwrap())
            .unwrap();
    }
    let report = hooks.shutdown_timeout(BOUND);
    assert_eq!(report.stats.accepted, 4);
    assert_eq!((report.stats.delivered, report.stats.dead_lettered), (1, 3));

    assert!(
        logger::lines_containing("log-hygiene").len() >= 4,
        "this dispatcher logged"
    );
    // Every captured line, whichever thread, test or crate logged it: no
    // secret may appear in any of them. hookpool's own lines (every test's)
    // show neither this test's query strings nor its payload (that at trace
    // level only); ureq's debug lines show the URL as sent, as the README says.
    let lines = logger::all_lines();
    for line in &lines {
        assert!(
            !line.message.contains(SECRET_KEY_B64) && !line.message.contains("whsec_"),
            "secret in log: {line:?}"
        );
        if !line.target.starts_with("hookpool") {
            continue;
        }
        assert!(
            !line.message.contains("QUERYSECRET"),
            "query string in log: {line:?}"
        );
        if line.level < log::Level::Trace {
            assert!(
                !line.message.contains(PAYLOAD_MARK),
                "payload above trace: {line:?}"
            );
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("log-hygiene") && l.message.contains("?REDACTED")),
        "redacted URLs are logged"
    );
    for letter in letters.letters() {
        assert!(!letter.error.contains("QUERYSECRET"), "{}", letter.error);
        // The url itself is kept whole: replay needs it.
        assert!(letter.url.contains("QUERYSECRET"));
    }
}
