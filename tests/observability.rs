//! Observability (issue 4): exact counters after scripted runs, histogram
//! placement, Prometheus output checked by promtool, rate-limited
//! saturation warnings, and event hooks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::exposition::{families, rich_exposition};
use common::server::{Recorded, Reply, TestServer};
use common::{Gate, Rendezvous, logger, wait_until};
use hookpool::{
    BreakerConfig, BreakerState, DeadLetterReason, Dispatcher, Histogram, ManualClock, Pool,
    Webhook,
};
use serde_json::json;

const BOUND: Duration = Duration::from_secs(20);

fn spin_for(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// 1. Stats snapshots: exact counters, gauges, histograms, serde.
// ---------------------------------------------------------------------------

#[test]
fn pool_counters_are_exact_after_a_scripted_run() {
    let gate = Gate::default();
    let hold = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(8)
        .name("scripted")
        .build(move |n: u32| -> Result<(), String> {
            match n {
                0 => {
                    hold.wait();
                    Ok(())
                }
                1..=3 => Err(format!("job {n} failed")),
                4 | 5 => panic!("job {n} panicked"),
                _ => {
                    spin_for(Duration::from_millis(3));
                    Ok(())
                }
            }
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    // Job 1 goes through a fresh handle: a handle's first send is always
    // stamped, so its time in the queue (behind the held job 0) is measured.
    pool.submitter().try_submit(1).unwrap();
    for n in 2..=8 {
        pool.try_submit(n).unwrap(); // 8 queued: the queue is full
    }
    assert!(pool.try_submit(99).unwrap_err().is_full());
    let busy = pool.stats();
    assert_eq!(
        (
            busy.queued,
            busy.active,
            busy.workers,
            busy.queue_high_water
        ),
        (8, 1, 1, 8)
    );
    gate.open();
    let s = pool.shutdown().stats;
    assert_eq!(
        (s.submitted, s.rejected, s.succeeded, s.failed, s.panicked),
        (9, 1, 4, 3, 2),
        "{s:?}"
    );
    assert_eq!(
        (s.queued, s.active, s.workers, s.queue_capacity),
        (0, 0, 0, 8)
    );
    assert_eq!(s.queue_high_water, 8);
    // Every run is timed; queue waits are sampled: the first send through
    // each of the two handles (jobs 0 and 1), then one in 256.
    assert_eq!((s.queue_wait.count, s.run_time.count), (2, 9));
    // The three spinning jobs ran at least 3 ms: bucket (2.048 ms, 4.096 ms] or above.
    let slow_bucket = Histogram::bucket_of(Duration::from_millis(3));
    let at_least_3ms: u64 = s.run_time.buckets[slow_bucket..].iter().sum();
    assert!(at_least_3ms >= 3, "{:?}", s.run_time.buckets);
    // Job 1 waited in the queue while job 0 held the worker.
    assert!(s.queue_wait.percentile(1.0).unwrap() > Duration::from_micros(1));

    let v = serde_json::to_value(s).unwrap();
    for field in [
        "workers",
        "queue_capacity",
        "queued",
        "active",
        "submitted",
        "rejected",
        "succeeded",
        "failed",
        "panicked",
        "queue_high_water",
        "queue_wait",
        "run_time",
    ] {
        assert!(v.get(field).is_some(), "{field} missing from {v}");
    }
    assert_eq!(v["run_time"]["count"], 9);
}

#[test]
fn dispatcher_counters_are_exact_after_a_scripted_run() {
    let flaky = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&flaky);
    let server = TestServer::start(move |r: &Recorded| match r.path.as_str() {
        "/ok" => Reply::Status(200),
        "/bad" => Reply::Status(400),
        "/gone" => Reply::Status(410),
        "/flaky" if calls.fetch_add(1, Ordering::SeqCst) < 2 => Reply::Status(503),
        _ => Reply::Status(204),
    });
    let hooks = Dispatcher::builder()
        .name("scripted-hooks")
        .workers(1)
        .breaker(BreakerConfig::disabled())
        .retry(common::quick_retry(5))
        .build()
        .unwrap();
    for path in ["/ok", "/ok", "/ok", "/bad", "/bad", "/gone", "/flaky"] {
        hooks
            .try_send(Webhook::new(&server.url(path), &json!({"p": path})).unwrap())
            .unwrap();
    }
    let report = hooks.shutdown();
    let s = &report.stats;
    assert_eq!(
        (s.accepted, s.delivered, s.dead_lettered, s.retried),
        (7, 4, 3, 2)
    );
    assert_eq!(
        s.dead_lettered_by_reason
            .get(&DeadLetterReason::PermanentFailure),
        Some(&2)
    );
    assert_eq!(
        s.dead_lettered_by_reason
            .get(&DeadLetterReason::EndpointGone),
        Some(&1)
    );
    assert_eq!(
        (
            s.deferred_by_breaker,
            s.waiting_retries,
            s.gone_endpoints,
            s.hook_panics
        ),
        (0, 0, 1, 0)
    );
    assert_eq!(s.delivery_latency.count, 4);
    // Every attempt is one pool job: 7 first attempts + 2 retries.
    assert_eq!((s.pool.submitted, s.pool.run_time.count), (9, 9));
    let v = serde_json::to_value(s).unwrap();
    assert_eq!(v["dead_lettered_by_reason"]["permanent_failure"], 2);
    assert_eq!(v["pool"]["submitted"], 9);
}

/// A one-worker pool named `name`, its worker held inside job 0 (until the
/// returned gate opens) while jobs 1 to `queued` wait in the queue.
fn held_pool(name: &str, capacity: usize, queued: u32) -> (Pool<u32>, Gate) {
    let gate = Gate::default();
    let hold = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(capacity)
        .name(name)
        .build(move |n: u32| {
            if n == 0 {
                hold.wait();
            }
            Ok::<(), String>(())
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    for n in 1..=queued {
        pool.try_submit(n).unwrap();
    }
    (pool, gate)
}

#[test]
fn the_high_water_mark_is_within_eight_jobs_per_worker_and_exact_when_full() {
    // Workers read the depth on every eighth job: 40 waiting jobs are seen
    // as at least 40 - 8 (the worker's next reading comes within 8 jobs).
    let (pool, gate) = held_pool("hw-sampled", 64, 40);
    gate.open();
    let seen = pool.shutdown().stats.queue_high_water;
    assert!((32..=40).contains(&seen), "{seen}");
    // A refusal for a full queue records the capacity itself.
    let (pool, gate) = held_pool("hw-refused", 16, 16);
    assert!(pool.try_submit(u32::MAX).unwrap_err().is_full());
    gate.open();
    assert_eq!(pool.shutdown().stats.queue_high_water, 16);
}

#[test]
fn a_submit_timeout_that_waited_for_a_full_queue_records_the_capacity() {
    // The queue fills, and a `submit_timeout` waits for room and then gets
    // in: the queue was full, so the mark is the capacity, as for a refusal.
    logger::install();
    let (pool, gate) = held_pool("hw-waited", 16, 16);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Room frees only once the submission below has found the
            // queue full and said so.
            let waiting = || !logger::lines_containing("hw-waited: queue full").is_empty();
            assert!(wait_until(BOUND, waiting));
            gate.open();
        });
        pool.submit_timeout(17, BOUND).unwrap();
    });
    let stats = pool.shutdown().stats;
    assert_eq!(stats.succeeded, 18);
    assert_eq!(stats.queue_high_water, 16);
}

#[test]
fn jobs_handed_back_at_a_shutdown_deadline_still_count_towards_the_high_water_mark() {
    // The only worker hangs in job 0 with 40 jobs waiting; at the deadline
    // they come back unstarted, never seen by a worker.
    let (pool, gate) = held_pool("hw-deadline", 64, 40);
    let mut report = pool.shutdown_timeout(Duration::from_millis(50));
    assert_eq!((report.unstarted.len(), report.still_running), (40, 1));
    assert_eq!(report.stats.queue_high_water, 40);
    gate.open();
    assert_eq!(report.wait_running(BOUND), 0);
}

/// Queue waits measured with each sampling setting: `n` sends through one
/// handle of a one-worker pool.
fn queue_waits_measured(sampling: Option<u32>, n: u32) -> u64 {
    let mut builder = Pool::builder().workers(1).queue_capacity(1024);
    if let Some(one_in) = sampling {
        builder = builder.queue_wait_sampling(one_in);
    }
    let pool = builder.build(|_: u32| Ok::<(), String>(())).unwrap();
    let submitter = pool.submitter();
    for i in 0..n {
        submitter.submit_timeout(i, BOUND).unwrap();
    }
    drop(submitter);
    let s = pool.shutdown().stats;
    assert_eq!(
        (s.submitted, s.run_time.count),
        (u64::from(n), u64::from(n))
    );
    s.queue_wait.count
}

#[test]
fn queue_wait_sampling_measures_the_first_then_one_in_n() {
    // The default: sends 0, 256 and 512.
    assert_eq!(queue_waits_measured(None, 600), 3);
    assert_eq!(queue_waits_measured(Some(1), 600), 600);
    assert_eq!(queue_waits_measured(Some(100), 600), 6);
    assert_eq!(queue_waits_measured(Some(0), 600), 0);
}

#[test]
fn dispatcher_passes_queue_wait_sampling_to_its_pool() {
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = Dispatcher::builder()
        .workers(1)
        .queue_wait_sampling(1)
        .build()
        .unwrap();
    for i in 0..20 {
        hooks
            .send_timeout(
                Webhook::new(&server.url("/q"), &json!({ "i": i })).unwrap(),
                BOUND,
            )
            .unwrap();
    }
    let s = hooks.shutdown().stats;
    assert_eq!((s.delivered, s.pool.queue_wait.count), (20, 20));
}

// ---------------------------------------------------------------------------
// 2. Prometheus exposition.
// ---------------------------------------------------------------------------

#[test]
fn exposition_follows_the_text_format() {
    let text = rich_exposition();
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice for {name}"
            );
        }
    }
    for (name, kind) in &types {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        match kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    assert!(
                        text.contains(&format!("{name}{suffix}{{")),
                        "{name}{suffix} missing"
                    );
                }
                assert!(text.lines().any(
                    |l| l.starts_with(&format!("{name}_bucket{{")) && l.contains("le=\"+Inf\"")
                ));
            }
            "gauge" => {}
            other => panic!("unexpected type {other}"),
        }
    }
    // Every sample carries the pool label, escaped.
    let pools = [
        "{pool=\"jobs\"",
        "{pool=\"web\\\"hooks\\\\\"",
        "{pool=\"durable\"",
        "{pool=\"shared\"",
    ];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(pools.iter().any(|p| line.contains(p)), "{line}");
    }
    // The shared queue's samples say which queue.
    assert!(text.contains("hookpool_shared_queue_ready{pool=\"shared\",queue=\"metrics\"} 0\n"));
    assert!(text.contains("hookpool_jobs_failed_total{pool=\"jobs\"} 1\n"));
    assert!(text.contains("hookpool_webhooks_dead_lettered_total{pool=\"web\\\"hooks\\\\\",reason=\"permanent_failure\"} 1\n"));
    assert!(
        text.contains(",state=\"open\"} 1\n"),
        "the open breaker is not shown"
    );
}

#[test]
fn promtool_accepts_the_exposition() {
    common::promtool_check(&rich_exposition());
}

// ---------------------------------------------------------------------------
// 3. Saturation warnings, rate-limited.
// ---------------------------------------------------------------------------

fn warnings(needle: &str) -> usize {
    logger::lines_containing(needle)
        .iter()
        .filter(|l| l.level == log::Level::Warn)
        .count()
}

fn saturate(name: &str, interval: Duration) {
    let gate = Gate::default();
    let hold = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(5)
        .name(name)
        .warn_interval(interval)
        .build(move |_: u32| {
            hold.wait();
            Ok::<(), String>(())
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    for n in 1..=5 {
        pool.try_submit(n).unwrap();
    }
    for n in 0..20 {
        assert!(pool.try_submit(100 + n).unwrap_err().is_full());
        std::thread::sleep(Duration::from_millis(1)); // let the 0-interval limiter see time pass
    }
    gate.open();
    let _ = pool.shutdown();
}

#[test]
fn saturation_warnings_are_rate_limited() {
    logger::install();
    saturate("sat-hour", Duration::from_secs(3600));
    assert_eq!(warnings("sat-hour: queue at 5 of 5 (100%)"), 1);
    assert_eq!(
        warnings("sat-hour: all 1 workers are busy and 5 job(s) are waiting"),
        1
    );

    saturate("sat-zero", Duration::ZERO);
    assert!(
        warnings("sat-zero: queue at") >= 10,
        "{}",
        warnings("sat-zero: queue at")
    );
    assert!(warnings("sat-zero: all 1 workers are busy") >= 10);
}

#[test]
fn a_quiet_pool_does_not_warn() {
    logger::install();
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(100)
        .name("quiet")
        .build(|_: u32| Ok::<(), String>(()))
        .unwrap();
    // One job at a time: each is run and its worker idle again before the
    // next is sent. With a free-running trickle, a starved CPU can preempt
    // both workers inside jobs while the next one waits, and the pool then
    // warns truthfully that every worker is busy with work waiting.
    for n in 0..50 {
        pool.submit_timeout(n, BOUND).unwrap();
        assert!(wait_until(BOUND, || {
            let s = pool.stats();
            s.succeeded == u64::from(n) + 1 && s.active == 0 && s.queued == 0
        }));
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = pool.shutdown();
    assert_eq!(
        warnings("quiet:"),
        0,
        "{:?}",
        logger::lines_containing("quiet:")
    );
}

#[test]
fn breaker_open_warnings_are_rate_limited_per_endpoint() {
    logger::install();
    let clock = ManualClock::new();
    let a = TestServer::start(|_| Reply::Status(500));
    let b = TestServer::start(|_| Reply::Status(500));
    let hooks = Dispatcher::builder()
        .name("breaker-warn")
        .workers(1)
        .clock(clock.clone())
        .warn_interval(Duration::from_secs(3600))
        .breaker(common::breaker(1, Duration::from_secs(10)))
        .retry(common::quick_retry(50))
        .build()
        .unwrap();
    hooks
        .try_send(Webhook::new(&a.url("/x"), &1).unwrap())
        .unwrap();
    hooks
        .try_send(Webhook::new(&b.url("/x"), &1).unwrap())
        .unwrap();
    assert!(wait_until(BOUND, || hooks
        .stats()
        .endpoints
        .iter()
        .all(|e| e.breaker == BreakerState::Open)
        && hooks.stats().endpoints.len() == 2));
    // Probes fail and the breakers reopen three more times within the hour.
    // Each round waits until both failed probes are back in the delay queue,
    // so the next advance of the clock lands after both reopenings.
    let settled = |round: usize| {
        wait_until(BOUND, || {
            a.request_count() >= round
                && b.request_count() >= round
                && hooks.stats().waiting_retries == 2
        })
    };
    assert!(settled(1));
    for round in 2..=4 {
        clock.advance(Duration::from_secs(10));
        assert!(
            settled(round),
            "round {round}: a={} b={}",
            a.request_count(),
            b.request_count()
        );
    }
    let opened = |s: &TestServer| {
        warnings(&format!(
            "breaker-warn: circuit breaker opened for http://127.0.0.1:{}",
            s.addr().port()
        ))
    };
    assert!(wait_until(BOUND, || hooks
        .stats()
        .endpoints
        .iter()
        .all(|e| e.breaker == BreakerState::Open)));
    assert_eq!((opened(&a), opened(&b)), (1, 1));
    // An hour later the next opening is worth a warning again.
    clock.advance(Duration::from_secs(3600));
    assert!(wait_until(BOUND, || opened(&a) == 2 && opened(&b) == 2));
    let _ = hooks.shutdown_timeout(Duration::ZERO);
}

// ---------------------------------------------------------------------------
// 4. Event hooks.
// ---------------------------------------------------------------------------

#[test]
fn hooks_see_deliveries_dead_letters_and_breaker_changes() {
    let server = TestServer::start(|r: &Recorded| {
        if r.path == "/ok" {
            Reply::Status(202)
        } else {
            Reply::Status(500)
        }
    });
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let changes = Arc::new(Mutex::new(Vec::new()));
    let (d1, d2, d3) = (
        Arc::clone(&delivered),
        Arc::clone(&dead),
        Arc::clone(&changes),
    );
    let hooks = Dispatcher::builder()
        .name("hooked")
        .workers(1)
        .breaker(BreakerConfig::default().failure_threshold(2))
        .retry(common::quick_retry(2))
        .on_delivered(move |e| {
            d1.lock()
                .unwrap()
                .push((e.webhook.id().to_owned(), e.status, e.attempts))
        })
        .on_dead_letter(move |l| d2.lock().unwrap().push((l.id.clone(), l.reason)))
        .on_breaker_change(move |c| d3.lock().unwrap().push((c.from, c.to)))
        .build()
        .unwrap();
    let ok = Webhook::new(&server.url("/ok"), &1).unwrap();
    let bad = Webhook::new(&server.url("/down"), &2).unwrap();
    let (ok_id, bad_id) = (ok.id().to_owned(), bad.id().to_owned());
    hooks.try_send(ok).unwrap();
    hooks.try_send(bad).unwrap();
    let report = hooks.shutdown();
    assert_eq!(*delivered.lock().unwrap(), [(ok_id, 202, 1)]);
    assert_eq!(
        *dead.lock().unwrap(),
        [(bad_id, DeadLetterReason::RetriesExhausted)]
    );
    assert_eq!(
        *changes.lock().unwrap(),
        [(BreakerState::Closed, BreakerState::Open)]
    );
    assert_eq!(report.stats.hook_panics, 0);
}

#[test]
fn panicking_hooks_are_contained_and_counted() {
    logger::install();
    // Two requests to /meet are answered only once both are in flight at
    // once: proof that both workers are alive after the hooks panicked.
    let meet = Rendezvous::new(2);
    let met = meet.clone();
    let server = TestServer::start(move |r: &Recorded| match r.path.as_str() {
        "/ok" => Reply::Status(200),
        "/meet" if met.arrive_and_wait(BOUND) => Reply::Status(200),
        "/meet" => Reply::Status(500),
        _ => Reply::Status(400),
    });
    let hooks = Dispatcher::builder()
        .name("hook-panics")
        .workers(2)
        .retry(hookpool::RetryPolicy::none())
        .on_delivered(|_| panic!("delivered hook is broken"))
        .on_dead_letter(|_| panic!("dead-letter hook is broken"))
        .build()
        .unwrap();
    for n in 0..10 {
        hooks
            .try_send(Webhook::new(&server.url("/ok"), &n).unwrap())
            .unwrap();
        hooks
            .try_send(Webhook::new(&server.url("/bad"), &n).unwrap())
            .unwrap();
    }
    // A webhook counts as ended before its hook runs, so wait for the hooks
    // too: the last panic is counted only after `in_progress` reaches 0.
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        s.in_progress() == 0 && s.hook_panics == 20
    }));
    let s = hooks.stats();
    // Each webhook still ends exactly once, and no job panicked.
    assert_eq!(
        (s.accepted, s.delivered, s.dead_lettered, s.hook_panics),
        (20, 10, 10, 20)
    );
    assert_eq!((s.pool.panicked, s.pool.workers), (0, 2));
    // Both workers are alive: they hold one request each at the same time.
    for n in 0..2 {
        hooks
            .try_send(Webhook::new(&server.url("/meet"), &n).unwrap())
            .unwrap();
    }
    assert!(wait_until(BOUND, || {
        let s = hooks.stats();
        s.in_progress() == 0 && s.hook_panics == 22
    }));
    let report = hooks.shutdown();
    // Both /meet webhooks were delivered, at their only attempt: both met.
    assert_eq!(report.stats.delivered, 12, "the two workers never met");
    assert_eq!(report.dead_letters.len(), 10);
    let errors = logger::lines_containing("hook-panics: on_")
        .into_iter()
        .filter(|l| l.level == log::Level::Error)
        .count();
    assert_eq!(errors, 22);
}

#[test]
fn the_operations_guide_lists_every_metric_and_nothing_else() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .unwrap();
    let documented: std::collections::BTreeSet<_> = guide
        .lines()
        .filter_map(|l| l.strip_prefix("| `hookpool_"))
        .map(|l| format!("hookpool_{}", l.split('`').next().unwrap()))
        .collect();
    assert_eq!(families(&rich_exposition()), documented);
}
