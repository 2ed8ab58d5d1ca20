//! The shared queue in Redis (issue 16), against a real redis-server: one
//! queue for many dispatchers, retries waiting in Redis, dead letters and
//! replay, an outage, and a restart of Redis. The multi-process SIGKILL and
//! SIGSTOP tests are in tests/redis_crash.rs.
#![cfg(feature = "redis")]

mod common;
#[path = "tls/pki.rs"]
mod pki;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::server::{Recorded, Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{
    DeadLetterReason, Dispatcher, DispatcherBuilder, DurableError, RedisQueue, RetryPolicy,
    StoreError, Webhook,
};

const BOUND: Duration = Duration::from_secs(30);

fn builder(name: &str, queue: RedisQueue) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .workers(4)
        .timeout(Duration::from_secs(2))
        .retry(RetryPolicy::exponential(Duration::from_millis(50)).max_attempts(5))
        .redis(queue)
}

fn hook(server: &TestServer, n: u32) -> Webhook {
    Webhook::new(&server.url("/in"), &serde_json::json!({ "n": n })).unwrap()
}

fn ids(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect()
}

/// A producer-only dispatcher enqueues, one by one and in a batch; another
/// one delivers; each webhook once, with its id and body.
#[test]
fn a_producer_and_a_worker_share_one_queue() {
    let Some(redis) = RedisServer::start("share") else {
        return;
    };
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let web = builder(
        "web",
        RedisQueue::new(&redis.url(), "share").producer_only(),
    )
    .build()
    .unwrap();
    let mut sent = BTreeSet::new();
    for n in 0..200 {
        let webhook = hook(&server, n);
        sent.insert(webhook.id().to_owned());
        web.send_durable(webhook, BOUND).unwrap();
    }
    // And a batch, enqueued in one script.
    let batch: Vec<Webhook> = (200..300).map(|n| hook(&server, n)).collect();
    sent.extend(batch.iter().map(|w| w.id().to_owned()));
    web.handle().send_durable_batch(batch, None, BOUND).unwrap();
    // Nothing delivered by the producer: it is all in Redis.
    let stats = web.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.in_progress()),
        (300, 0, 0)
    );
    assert!(wait_until(BOUND, || {
        web.stats().store.unwrap().shared.unwrap().ready == 300
    }));
    assert_eq!(server.request_count(), 0);

    let worker = builder("worker", RedisQueue::new(&redis.url(), "share"))
        .build()
        .unwrap();
    assert!(wait_until(BOUND, || worker.stats().delivered == 300));
    let received: BTreeSet<String> = ids(&server).into_iter().collect();
    assert_eq!(received, sent);
    assert_eq!(server.request_count(), 300, "each once");
    assert!(wait_until(BOUND, || {
        let q = worker.stats().store.unwrap().shared.unwrap();
        (q.ready, q.delayed, q.processing, q.workers_alive) == (0, 0, 0, 1)
    }));
    let report = worker.shutdown();
    assert_eq!(report.stats.delivered, 300);
    let _ = web.shutdown();
}

/// A retry waits in Redis, not in the process that scheduled it: when that
/// one stops, another delivers it when it is due.
#[test]
fn a_retry_waits_in_redis_for_any_worker() {
    let Some(redis) = RedisServer::start("retry") else {
        return;
    };
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let server = TestServer::start(move |_: &Recorded| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    });
    let first = builder("first", RedisQueue::new(&redis.url(), "retry"))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(1500))
                .jitter(false)
                .max_attempts(5),
        )
        .build()
        .unwrap();
    let webhook = hook(&server, 0);
    let id = webhook.id().to_owned();
    first.send_durable(webhook, BOUND).unwrap();
    assert!(wait_until(BOUND, || first.stats().retried == 1));
    let report = first.shutdown();
    assert_eq!(report.stats.delivered, 0);
    assert!(wait_until(BOUND, || redis
        .cli(&["ZCARD", "hookpool:{retry}:delayed"])
        == "1"));

    let second = builder("second", RedisQueue::new(&redis.url(), "retry"))
        .build()
        .unwrap();
    assert!(wait_until(BOUND, || second.stats().delivered == 1));
    assert_eq!(ids(&server), [id.clone(), id]);
    let _ = second.shutdown();
}

/// Dead letters go into Redis with every field; replay puts them back in
/// the queue with their ids.
#[test]
fn dead_letters_live_in_redis_and_replay_puts_them_back() {
    let Some(redis) = RedisServer::start("letters") else {
        return;
    };
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let server = TestServer::start(move |_: &Recorded| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Status(422)
        } else {
            Reply::Status(204)
        }
    });
    let hooks = builder("letters", RedisQueue::new(&redis.url(), "letters"))
        .build()
        .unwrap();
    for n in 0..2 {
        hooks.send_durable(hook(&server, n), BOUND).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 2));
    assert!(wait_until(BOUND, || hooks
        .stored_dead_letters(10)
        .unwrap()
        .len()
        == 2));
    let letters = hooks.stored_dead_letters(10).unwrap();
    for l in &letters {
        assert_eq!(l.letter.reason, DeadLetterReason::PermanentFailure);
        assert_eq!(l.letter.last_status, Some(422));
        assert_eq!(l.letter.attempts, 1);
        assert!(l.letter.payload.get().starts_with(r#"{"n":"#));
    }
    assert_eq!(hooks.replay_stored(10, BOUND).unwrap(), 2);
    assert!(wait_until(BOUND, || hooks.stats().delivered == 2));
    assert!(hooks.stored_dead_letters(10).unwrap().is_empty());
    let requests = ids(&server);
    assert_eq!(requests.len(), 4);
    let first: BTreeSet<_> = requests[..2].iter().collect();
    let again: BTreeSet<_> = requests[2..].iter().collect();
    assert_eq!(first, again, "replayed with their ids");
    let _ = hooks.shutdown();
}

/// A dead letter in Redis that cannot be read (written by something else):
/// listing and replay go on with the others, the unreadable one stays in
/// Redis untouched, and a warning names it and says how to look at it;
/// it is never dropped quietly.
#[test]
fn an_unreadable_dead_letter_is_reported_and_left_in_redis() {
    let Some(redis) = RedisServer::start("bad-letter") else {
        return;
    };
    logger::install();
    let server = TestServer::start(|_: &Recorded| Reply::Status(422));
    let hooks = builder("bad-letter", RedisQueue::new(&redis.url(), "bad-letter"))
        .build()
        .unwrap();
    for n in 0..2 {
        hooks.send_durable(hook(&server, n), BOUND).unwrap();
    }
    assert!(wait_until(BOUND, || hooks
        .stored_dead_letters(10)
        .unwrap()
        .len()
        == 2));
    let letters = hooks.stored_dead_letters(10).unwrap();
    let (bad, good) = (letters[0].seq, letters[1].seq);
    let key = "hookpool:{bad-letter}:letters";
    redis.cli(&["HSET", key, &bad.to_string(), "{not a letter"]);
    let listed: Vec<u64> = hooks
        .stored_dead_letters(10)
        .unwrap()
        .iter()
        .map(|l| l.seq)
        .collect();
    assert_eq!(listed, [good]);
    let warned = logger::lines_containing(&format!("dead letter {bad} in {key} cannot be read"));
    assert!(!warned.is_empty(), "no warning names the unreadable letter");
    assert_eq!(redis.cli(&["HGET", key, &bad.to_string()]), "{not a letter");
    let _ = hooks.shutdown();
}

/// Redis down: a durable send fails within the timeout with the webhook,
/// never hangs or panics; once Redis is back, it works again.
#[test]
fn an_outage_returns_the_webhook_in_time_and_recovers() {
    let Some(mut redis) = RedisServer::start("outage") else {
        return;
    };
    logger::install();
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = builder(
        "outage",
        RedisQueue::new(&redis.url(), "outage").timeout(Duration::from_millis(500)),
    )
    .build()
    .unwrap();
    hooks.send_durable(hook(&server, 0), BOUND).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    redis.kill();
    let webhook = hook(&server, 1);
    let id = webhook.id().to_owned();
    let started = Instant::now();
    let err = hooks.send_durable(webhook, BOUND).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            &err,
            DurableError::Store {
                error: StoreError::Unavailable { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("stored durably"), "{err}");
    assert_eq!(err.into_inner().id(), id);
    redis.restart();
    // It reconnects, with backoff.
    assert!(wait_until(BOUND, || hooks
        .send_durable(hook(&server, 2), Duration::ZERO)
        .is_ok()));
    assert!(wait_until(BOUND, || hooks.stats().delivered == 2));
    assert!(
        logger::lines_containing("outage: redis redis://127.0.0.1")
            .iter()
            .any(|l| l.level == log::Level::Warn),
        "the outage is logged at warn"
    );
    let _ = hooks.shutdown();
}

/// AUTH comes through the URL, and the password shows nowhere: not in a
/// build error, not in a send's error, not in `Debug`, not in a log line.
#[test]
fn the_password_in_the_url_authenticates_and_is_never_shown() {
    const PASSWORD: &str = "s3cret-pw-7f2a";
    let Some(mut redis) = RedisServer::start_with_password("auth", PASSWORD) else {
        return;
    };
    logger::install();
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let wrong = format!("redis://:{PASSWORD}-wrong@127.0.0.1:{}/", redis.port());
    let err = builder("auth-wrong", RedisQueue::new(&wrong, "auth"))
        .build()
        .unwrap_err();
    let said = format!("{err} {err:?}");
    assert!(said.contains("127.0.0.1"), "{said}");
    let queue = RedisQueue::new(&redis.url(), "auth");
    let shown = format!("{queue:?}");
    assert!(shown.contains("REDACTED"), "{shown}");
    let hooks = builder("auth", queue.timeout(Duration::from_millis(500)))
        .build()
        .unwrap();
    hooks.send_durable(hook(&server, 0), BOUND).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    redis.kill();
    let err = hooks.send_durable(hook(&server, 1), BOUND).unwrap_err();
    let said = format!("{said} {err} {err:?} {shown}");
    assert!(wait_until(BOUND, || !logger::lines_containing(
        "auth: redis"
    )
    .is_empty()));
    let _ = hooks.shutdown_timeout(Duration::ZERO);
    let lines: Vec<String> = logger::all_lines()
        .iter()
        .map(|l| l.message.clone())
        .collect();
    for text in lines.iter().chain([&said]) {
        assert!(!text.contains(PASSWORD), "the password shows: {text}");
    }
}

/// `rediss://` speaks TLS: a Redis with a certificate from a private CA is
/// refused until that CA is trusted, then works.
#[test]
fn a_rediss_url_speaks_tls_and_checks_the_certificate() {
    let ca = pki::Ca::new("hookpool redis test CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let Some(redis) = RedisServer::start_tls("tls", &leaf.cert_pem, &leaf.key_pem, &ca.pem) else {
        return;
    };
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    // The bundled roots do not know the private CA.
    let err = builder("tls-untrusted", RedisQueue::new(&redis.url(), "tls"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let queue = RedisQueue::new(&redis.url(), "tls").tls_root_certificates_pem(ca.pem.clone());
    let hooks = builder("tls", queue).build().unwrap();
    hooks.send_durable(hook(&server, 0), BOUND).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    assert_eq!(hooks.shutdown().stats.delivered, 1);
}

/// A restart of Redis (SIGKILL, then its AOF with appendfsync always) loses
/// nothing acknowledged.
#[test]
fn a_redis_restart_loses_nothing_acknowledged() {
    let Some(mut redis) = RedisServer::start("restart") else {
        return;
    };
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let web = builder(
        "restart-web",
        RedisQueue::new(&redis.url(), "restart").producer_only(),
    )
    .build()
    .unwrap();
    let mut acked = BTreeSet::new();
    for n in 0..200 {
        let webhook = hook(&server, n);
        acked.insert(webhook.id().to_owned());
        web.send_durable(webhook, BOUND).unwrap();
    }
    redis.restart();
    assert_eq!(redis.cli(&["LLEN", "hookpool:{restart}:ready"]), "200");
    let worker = builder("restart-worker", RedisQueue::new(&redis.url(), "restart"))
        .build()
        .unwrap();
    assert!(wait_until(BOUND, || worker.stats().delivered == 200));
    let received: BTreeSet<String> = ids(&server).into_iter().collect();
    assert_eq!(received, acked);
    let _ = (web.shutdown(), worker.shutdown());
}

/// Eviction would lose webhooks: a server that may evict is warned about.
#[test]
fn a_server_that_may_evict_is_warned_about() {
    let Some(redis) = RedisServer::start("evict") else {
        return;
    };
    logger::install();
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let hooks = builder("evict", RedisQueue::new(&redis.url(), "evict"))
        .build()
        .unwrap();
    let warned = logger::lines_containing("evict: redis redis://127.0.0.1");
    assert!(
        warned
            .iter()
            .any(|l| l.level == log::Level::Warn && l.message.contains("allkeys-lru")),
        "{warned:?}"
    );
    let _ = hooks.shutdown();
}

/// The request timeout must leave room within the worker ttl.
#[test]
fn a_timeout_longer_than_half_the_ttl_is_refused() {
    let err = Dispatcher::builder()
        .timeout(Duration::from_secs(20))
        .redis(RedisQueue::new("redis://127.0.0.1:1/", "q").worker_ttl(Duration::from_secs(30)))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("at most half the redis worker ttl"),
        "{err}"
    );
}

/// Redis answers a claim only after the worker gave up waiting (it was
/// busy past the worker's timeout): what that claim took is the worker's
/// in Redis, but the worker never saw it. The worker must not strand it
/// there while it lives: every webhook is still delivered.
#[test]
fn a_claim_whose_answer_was_lost_strands_nothing() {
    let Some(redis) = RedisServer::start("lost-claim") else {
        return;
    };
    logger::install();
    let server = TestServer::start(|_: &Recorded| {
        Reply::Delay(Duration::from_millis(20), Box::new(Reply::Status(204)))
    });
    let hooks = builder(
        "lost-claim",
        RedisQueue::new(&redis.url(), "lost-claim")
            .timeout(Duration::from_millis(200))
            .worker_ttl(Duration::from_secs(10)),
    )
    .queue_capacity(4)
    .build()
    .unwrap();
    for n in 0..100 {
        hooks.send_durable(hook(&server, n), BOUND).unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().delivered >= 10));
    // Redis busy for a second: the fetcher's claim times out meanwhile,
    // and Redis runs it after.
    redis.cli(&["EVAL", BUSY_SECOND, "0"]);
    assert!(
        wait_until(BOUND, || hooks.stats().delivered == 100),
        "delivered {} of 100; queue {:?}",
        hooks.stats().delivered,
        hooks.stats().store.unwrap().shared
    );
    assert_eq!(server.request_count(), 100, "each once");
    // The claim's answer was lost, and what it took was put back.
    assert!(
        logger::lines_containing("without this process hearing back")
            .iter()
            .any(|l| l.message.starts_with("lost-claim: ")),
        "no claim's answer was lost"
    );
    let _ = hooks.shutdown();
}

/// With a local queue of one, the fetcher claims one webhook, finds the
/// queue full, and waits for the worker to take it: every one of 300 still
/// flows. The worker's wake moves them; were it lost, the fetcher's
/// one-second safety net would take five minutes over them.
#[test]
fn a_queue_of_one_wakes_the_fetcher_for_each_webhook() {
    let Some(redis) = RedisServer::start("wake") else {
        return;
    };
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = builder("wake", RedisQueue::new(&redis.url(), "wake"))
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let batch: Vec<Webhook> = (0..300).map(|n| hook(&server, n)).collect();
    let sent: BTreeSet<String> = batch.iter().map(|w| w.id().to_owned()).collect();
    hooks
        .handle()
        .send_durable_batch(batch, None, BOUND)
        .unwrap();
    assert!(
        wait_until(BOUND, || hooks.stats().delivered == 300),
        "delivered {} of 300; queue {:?}",
        hooks.stats().delivered,
        hooks.stats().store.unwrap().shared
    );
    let received: BTreeSet<String> = ids(&server).into_iter().collect();
    assert_eq!(received, sent);
    assert_eq!(server.request_count(), 300, "each once");
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 300);
}

/// A script that keeps Redis busy for a second.
const BUSY_SECOND: &str = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
while true do
  t = redis.call('TIME')
  if t[1] * 1000000 + t[2] - start > 1000000 then return 1 end
end";
