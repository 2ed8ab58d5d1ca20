//! The HTTP API, its webhooks, a full queue, and shutdown.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hookpool::{DeadLetterReason, SigningSecret, verify};
use serde_json::{Value, json};

use crate::common::server::{Reply, TestServer};
use crate::common::tempdir::TempDir;
use crate::common::{Gate, promtool_check, wait_until};
use crate::service::*;

#[test]
fn a_new_entry_is_answered_201_and_sent_as_a_signed_webhook() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start(
        "created",
        &[("WEBHOOK_URL", url.as_str()), ("WEBHOOK_SECRET", SECRET)],
    );

    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let a = answer(
        agent()
            .post(service.url("/entries"))
            .header("X-User-Id", "ada")
            .send(r#"{"text": "a good day", "mood": 8, "category": "work"}"#),
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let id = a.body["id"].as_u64().unwrap();
    assert_eq!(
        a.header("location"),
        Some(format!("/entries/{id}").as_str())
    );
    assert_eq!(a.body["user_id"], "ada");
    assert_eq!(a.body["text"], "a good day");
    assert_eq!(a.body["mood"], 8);
    assert_eq!(a.body["category"], "work");
    assert!(a.body["created_at"].as_u64().unwrap() >= before);

    assert!(receiver.wait_for_requests(1, BOUND));
    let req = &receiver.requests()[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hooks"));
    let p = payload(req);
    let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "event",
            "entry_id",
            "user_id",
            "text",
            "mood",
            "category",
            "timestamp"
        ])
    );
    assert_eq!(p["event"], "entry_created");
    assert_eq!(p["entry_id"], id);
    assert_eq!(p["user_id"], "ada");
    assert_eq!(p["text"], "a good day");
    assert_eq!(p["mood"], 8);
    assert_eq!(p["category"], "work");
    assert_eq!(p["timestamp"], a.body["created_at"]);
    let header = |name| req.header(name).unwrap_or_default();
    assert_eq!(
        verify(
            &[SigningSecret::new(SECRET).unwrap()],
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &req.body,
            SystemTime::now(),
            Duration::from_secs(300),
        ),
        Ok(())
    );

    // SIGINT shuts down like SIGTERM.
    let exit = service.stop("-INT");
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    assert_eq!(exit.summary["delivered"], 1, "{}", exit.summary);
    assert_eq!(exit.summary["dead_lettered"], 0);
}

#[test]
fn invalid_requests_get_400_naming_the_field() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("invalid", &[("WEBHOOK_URL", url.as_str())]);

    let long_text = "x".repeat(10_001);
    let too_long = json!({"text": long_text, "mood": 5, "category": "c"}).to_string();
    let cases: [(&str, Value); 12] = [
        ("{not json", Value::Null),
        ("", Value::Null),
        ("[1, 2]", Value::Null),
        (r#"{"mood": 5, "category": "c"}"#, json!("text")),
        (
            r#"{"text": "  ", "mood": 5, "category": "c"}"#,
            json!("text"),
        ),
        (r#"{"text": 7, "mood": 5, "category": "c"}"#, json!("text")),
        (&too_long, json!("text")),
        (
            r#"{"text": "t", "mood": 11, "category": "c"}"#,
            json!("mood"),
        ),
        (
            r#"{"text": "t", "mood": 0, "category": "c"}"#,
            json!("mood"),
        ),
        (
            r#"{"text": "t", "mood": 5.5, "category": "c"}"#,
            json!("mood"),
        ),
        (r#"{"text": "t", "mood": 5}"#, json!("category")),
        (
            r#"{"text": "t", "mood": 5, "category": "c", "colour": "red"}"#,
            json!("colour"),
        ),
    ];
    for (body, field) in cases {
        let a = post(&service, body);
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert_eq!(a.body["field"], field, "{body}: {:?}", a.body);
        let error = a.body["error"].as_str().expect("an error message");
        if let Value::String(f) = &field {
            assert!(error.contains(f.as_str()), "{body}: {error}");
        }
    }
    let a = post(&service, r#"{"text": "t", "mood": 11, "category": "c"}"#);
    assert_eq!(a.body["error"], "mood must be an integer from 1 to 10");

    let a = answer(
        agent()
            .post(service.url("/entries"))
            .header("X-User-Id", "")
            .send(r#"{"text": "t", "mood": 5, "category": "c"}"#),
    );
    assert_eq!((a.status, &a.body["field"]), (400, &json!("user_id")));

    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(70_000));
    assert_eq!(post(&service, &big).status, 413);
    assert_eq!(answer(agent().get(service.url("/nope")).call()).status, 404);
    let a = answer(agent().get(service.url("/entries")).call());
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));

    // No webhook for any of them: nothing was accepted, nothing was received.
    let text = metrics(&service);
    assert_eq!(
        sample(
            &text,
            "hookpool_webhooks_accepted_total{pool=\"entries-hooks\"}"
        ),
        Some(0.0)
    );
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.summary["accepted"], 0);
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn deleting_an_entry_sends_entry_deleted_and_unknown_ids_are_404() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("deleted", &[("WEBHOOK_URL", url.as_str())]);

    let id = post_entry(&service, 3);
    let a = answer(
        agent()
            .delete(service.url(&format!("/entries/{id}")))
            .call(),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["id"], id);
    assert_eq!(a.body["text"], "entry 3");

    assert!(receiver.wait_for_requests(2, BOUND));
    let deleted = receiver
        .requests()
        .iter()
        .map(payload)
        .find(|p| p["event"] == "entry_deleted")
        .expect("an entry_deleted webhook");
    assert_eq!(deleted["entry_id"], id);
    assert_eq!(deleted["user_id"], "anonymous");
    assert_eq!(deleted["text"], "entry 3");
    assert_eq!(deleted["mood"], 4);
    assert_eq!(deleted["category"], "test");
    assert!(deleted["timestamp"].is_u64());

    for path in [
        format!("/entries/{id}"),
        "/entries/999".into(),
        "/entries/abc".into(),
    ] {
        let a = answer(agent().delete(service.url(&path)).call());
        assert_eq!(a.status, 404, "{path}");
        assert!(
            a.body["error"].as_str().unwrap().contains("no entry"),
            "{:?}",
            a.body
        );
    }
    let a = answer(agent().put(service.url("/entries/1")).send("{}"));
    assert_eq!((a.status, a.header("allow")), (405, Some("DELETE")));

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.summary["delivered"], 2, "{}", exit.summary);
    assert_eq!(receiver.request_count(), 2);
}

#[test]
fn metrics_are_prometheus_text() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("metrics", &[("WEBHOOK_URL", url.as_str())]);
    post_entry(&service, 1);

    let resp = agent()
        .get(service.url("/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(hookpool::prometheus::CONTENT_TYPE)
    );
    // The webhook is queued just after the answer: wait for it to count.
    let mut text = String::new();
    assert!(wait_until(BOUND, || {
        text = metrics(&service);
        sample(
            &text,
            "hookpool_webhooks_delivered_total{pool=\"entries-hooks\"}",
        ) == Some(1.0)
    }));
    assert!(text.contains("# TYPE hookpool_webhooks_accepted_total counter"));
    assert_eq!(
        sample(
            &text,
            "hookpool_webhooks_accepted_total{pool=\"entries-hooks\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "entries_server_entries"), Some(1.0));
    assert_eq!(
        sample(&text, "entries_server_webhooks_queue_full_total"),
        Some(0.0)
    );
    promtool_check(&text);

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
}

#[test]
fn a_full_queue_never_fails_the_api_and_dead_letters_the_webhooks() {
    // The receiver holds every answer until the gate opens, so the one
    // worker stays busy and the one-slot queue stays full.
    let (receiver, gate) = gated_receiver();
    let url = receiver.url("/hooks");
    let service = Service::start(
        "queue-full",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("QUEUE_CAPACITY", "1"),
        ],
    );

    let started = Instant::now();
    let ids: Vec<u64> = (0..12).map(|n| post_entry(&service, n)).collect();
    // Every answer came while no delivery could finish.
    assert!(started.elapsed() < BOUND);
    assert!(receiver.request_count() <= 1);

    // One webhook in flight, one queued, the rest (at least 10) dead-lettered.
    let mut text = String::new();
    assert!(
        wait_until(BOUND, || {
            text = metrics(&service);
            sample(&text, "entries_server_webhooks_queue_full_total").is_some_and(|n| n >= 10.0)
        }),
        "{text}"
    );
    let letters = service.dead_letters();
    assert!(letters.len() >= 10, "{} letters", letters.len());
    for letter in &letters {
        assert_eq!(letter.reason, DeadLetterReason::QueueFull);
        assert_eq!(letter.error, "queue is full");
        assert_eq!(letter.attempts, 0);
        assert_eq!(letter.url, url);
        // Ready for `hookpool replay`: the letter turns back into the webhook.
        assert!(letter.clone().into_webhook().is_ok());
    }

    gate.open();
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    let s = &exit.summary;
    assert_eq!(s["queue_full"], exit.letters.len(), "{s}");
    assert_eq!(
        s["accepted"].as_u64().unwrap() + s["queue_full"].as_u64().unwrap(),
        12,
        "{s}"
    );
    assert_eq!(s["delivered"], s["accepted"], "{s}");
    let promised: Vec<_> = ids.iter().map(|id| ("entry_created", *id)).collect();
    assert_each_promise_kept(
        &promised,
        &receiver,
        &exit.letters,
        &[DeadLetterReason::QueueFull],
    );
}

#[test]
fn without_a_journal_sigterm_delivers_or_dead_letters_each_one() {
    // 300 ms per delivery and one worker: most webhooks are still queued at
    // the 0.5 s shutdown deadline. `JOURNAL=""`: no journal to keep them in.
    let receiver = TestServer::start(|_| {
        Reply::Delay(Duration::from_millis(300), Box::new(Reply::Status(204)))
    });
    let url = receiver.url("/hooks");
    let service = Service::start(
        "sigterm",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("QUEUE_CAPACITY", "64"),
            ("SHUTDOWN_TIMEOUT", "0.5"),
            ("WEBHOOK_TIMEOUT", "5"),
            ("JOURNAL", ""),
        ],
    );
    let dir = Arc::clone(&service.dir);

    let mut promised: Vec<(&str, u64)> = (0..10)
        .map(|n| ("entry_created", post_entry(&service, n)))
        .collect();
    let deleted = promised[0].1;
    let a = answer(
        agent()
            .delete(service.url(&format!("/entries/{deleted}")))
            .call(),
    );
    assert_eq!(a.status, 200);
    promised.push(("entry_deleted", deleted));

    // One delivery in flight and the rest waiting in the queue.
    assert!(receiver.wait_for_requests(1, BOUND));
    let mut text = String::new();
    assert!(
        wait_until(BOUND, || {
            text = metrics(&service);
            sample(&text, "hookpool_queue_depth{pool=\"entries-hooks\"}").is_some_and(|n| n >= 1.0)
        }),
        "{text}"
    );

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let s = &exit.summary;
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(n("accepted") + n("queue_full"), 11, "{s}");
    assert_eq!(n("accepted"), n("delivered") + n("dead_lettered"), "{s}");
    assert_eq!(n("still_running"), 0, "{s}");
    assert_eq!(n("unsaved"), 0, "{s}");
    assert!(
        n("dead_lettered") >= 1,
        "the deadline should have cut the queue: {s}"
    );
    assert_eq!(n("kept"), 0, "{s}");
    assert!(
        !dir.path(DEFAULT_JOURNAL).exists(),
        "JOURNAL=\"\" made a journal"
    );
    assert!(
        exit.stderr.contains("no journal"),
        "no warning about running without a journal: {}",
        exit.stderr
    );

    let letters = &exit.letters;
    assert!(
        letters
            .iter()
            .any(|l| l.reason == DeadLetterReason::Shutdown),
        "{letters:?}"
    );
    assert_each_promise_kept(
        &promised,
        &receiver,
        letters,
        &[DeadLetterReason::Shutdown, DeadLetterReason::QueueFull],
    );
    assert!(
        exit.stderr.contains("stopping HTTP intake"),
        "{}",
        exit.stderr
    );
}

/// Reads from `stream` up to the end of a response head (bounded by the
/// stream's read timeout) and returns it.
fn read_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the head ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// README: after SIGTERM, requests get 503 (or no answer), never a 201
/// that promises a webhook. A slow client holds an HTTP thread inside its
/// body (the server answered its `Expect: 100-continue`, so the handler is
/// reading it); the server waits its 5 s grace for it, then stops promises.
/// A request sent after the signal, and the slow one finished after the
/// grace, are both answered 503. The receiver holds the one promised
/// webhook meanwhile, so the process is still there to answer them.
#[test]
fn requests_after_sigterm_get_503() {
    use std::io::Write;
    let release = Gate::default();
    let held = release.clone();
    let receiver = TestServer::start(move |_| {
        held.wait();
        Reply::Status(204)
    });
    let url = receiver.url("/hooks");
    let service = Service::start(
        "late",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("SHUTDOWN_TIMEOUT", "30"),
        ],
    );
    let promised = post_entry(&service, 1);
    assert!(receiver.wait_for_requests(1, BOUND));

    let body = json!({"text": "slow", "mood": 5, "category": "test"}).to_string();
    let mut slow = std::net::TcpStream::connect(&service.addr).unwrap();
    slow.set_read_timeout(Some(BOUND)).unwrap();
    write!(
        slow,
        "POST /entries HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        service.addr,
        body.len()
    )
    .unwrap();
    let cont = read_head(&mut slow);
    assert!(cont.starts_with("HTTP/1.1 100 "), "{cont:?}");

    service.signal("-TERM");
    service.wait_for_stderr("stopping HTTP intake", BOUND);
    let late_service = service.url("/entries");
    let late = thread::spawn(move || {
        answer(
            agent()
                .post(late_service)
                .header("Content-Type", "application/json")
                .send(json!({"text": "late", "mood": 5, "category": "test"}).to_string()),
        )
    });
    service.wait_for_stderr("HTTP requests still unfinished after", BOUND);
    slow.write_all(body.as_bytes()).unwrap();
    let slow_answer = read_head(&mut slow);
    assert!(slow_answer.starts_with("HTTP/1.1 503 "), "{slow_answer:?}");
    let late = late.join().expect("the late request's thread");
    assert_eq!(late.status, 503, "{:?}", late.body);
    assert_eq!(late.header("Retry-After"), Some("5"));

    release.open();
    let exit = service.exit();
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let s = &exit.summary;
    assert_eq!(
        (
            s["entries"].as_u64(),
            s["accepted"].as_u64(),
            s["delivered"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{s}"
    );
    // Only the promised entry's webhook was ever sent.
    assert_eq!(
        received(&receiver),
        HashSet::from([("entry_created".to_owned(), promised)])
    );
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "WEBHOOK_URL is required"),
        (&[("WEBHOOK_URL", "ftp://example.com/")], "WEBHOOK_URL"),
        (
            &[("WEBHOOK_URL", "http://127.0.0.1:9/"), ("WORKERS", "zero")],
            "WORKERS must be a positive integer",
        ),
        (
            &[
                ("WEBHOOK_URL", "http://127.0.0.1:9/"),
                ("QUEUE_CAPACITY", "0"),
            ],
            "QUEUE_CAPACITY must be a positive integer",
        ),
        (
            &[
                ("WEBHOOK_URL", "http://127.0.0.1:9/"),
                ("WEBHOOK_SECRET", "whsec_!!not-base64!!"),
            ],
            "WEBHOOK_SECRET",
        ),
    ];
    let dir = TempDir::new("entries-bad-config");
    for (vars, message) in cases {
        let (status, stderr) = start_failing(&dir, vars);
        assert_eq!(status, Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains(message), "{vars:?}: {stderr}");
        assert!(
            !stderr.contains("not-base64"),
            "a secret was printed: {stderr}"
        );
    }
}
