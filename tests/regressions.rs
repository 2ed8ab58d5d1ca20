//! Regression tests for defects a review found, one per finding. Each failed
//! before its fix.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::server::{Reply, TestServer};
use common::{logger, wait_until};
use hookpool::{
    BreakerConfig, BreakerState, BuildError, Clock, DeadLetter, DeadLetterReason, DeadLetterSink,
    Dispatcher, JsonlDeadLetters, MemoryDeadLetters, Pool, RetryPolicy, Webhook,
};

const BOUND: Duration = Duration::from_secs(10);

/// A clock whose wall time panics on exactly one call, the `panic_on`-th.
#[derive(Debug, Clone)]
struct PanickyClock {
    calls: Arc<AtomicUsize>,
    panic_on: usize,
}

impl Clock for PanickyClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.panic_on {
            panic!("clock glitch");
        }
        SystemTime::now()
    }
}

/// A panic between a half-open probe's admission and its outcome used to
/// leak the probe slot: the breaker stayed half-open and refused forever.
#[test]
fn a_panic_during_a_probe_releases_the_probe_slot() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    // The first attempt fails and opens the breaker; everything after succeeds.
    let server = TestServer::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Status(503)
        } else {
            Reply::Status(204)
        }
    });
    // Wall-clock read 1 is the first attempt's, read 2 the half-open probe's.
    let clock = PanickyClock {
        calls: Arc::default(),
        panic_on: 2,
    };
    let hooks = Dispatcher::builder()
        .workers(1)
        .clock(clock)
        .breaker(common::breaker(1, Duration::from_millis(50)))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(10))
                .jitter(false)
                .max_attempts(1000),
        )
        .build()
        .unwrap();
    let url = server.url("/h");
    hooks.try_send(Webhook::new(&url, &1).unwrap()).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().pool.panicked == 1));
    assert_eq!(
        server.request_count(),
        1,
        "the probe panicked before sending"
    );
    hooks.try_send(Webhook::new(&url, &2).unwrap()).unwrap();
    assert!(
        wait_until(BOUND, || hooks.stats().delivered == 1),
        "{:?}",
        hooks.stats().endpoints
    );
    let report = hooks.shutdown();
    assert_eq!(
        report
            .stats
            .dead_lettered_by_reason
            .get(&DeadLetterReason::Panicked),
        Some(&1)
    );
    assert_eq!(report.stats.endpoints[0].breaker, BreakerState::Closed);
}

#[derive(Debug)]
struct PanickingSink;

impl DeadLetterSink for PanickingSink {
    fn store(&self, _: &DeadLetter) -> std::io::Result<()> {
        panic!("sink bug")
    }
}

/// A panicking sink used to make the webhook vanish from the accounting, so
/// `shutdown()` waited forever.
#[test]
fn a_panicking_sink_keeps_the_letter_and_the_count() {
    let server = TestServer::start(|_| Reply::Status(400));
    let hooks = Dispatcher::builder()
        .workers(1)
        .dead_letters(PanickingSink)
        .build()
        .unwrap();
    hooks
        .try_send(Webhook::new(&server.url("/x"), &1).unwrap())
        .unwrap();
    let report = hooks.shutdown(); // returns: the webhook is accounted for
    assert_eq!((report.stats.accepted, report.stats.dead_lettered), (1, 1));
    assert_eq!(
        report.dead_letters.len(),
        1,
        "the letter comes back in the report"
    );
    assert_eq!(report.stats.pool.panicked, 0);
}

/// A sink whose writes fail (a full disk) keeps letters in memory for the
/// report.
#[test]
fn a_failing_sink_hands_letters_back() {
    let server = TestServer::start(|_| Reply::Status(404));
    let sink = JsonlDeadLetters::open("/dev/full").unwrap();
    let hooks = Dispatcher::builder()
        .workers(1)
        .dead_letters(sink)
        .build()
        .unwrap();
    for n in 0..3 {
        hooks
            .try_send(Webhook::new(&server.url("/x"), &n).unwrap())
            .unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(
        (report.stats.dead_lettered, report.dead_letters.len()),
        (3, 3)
    );
}

/// A dispatcher whose only worker hangs on a request (until `timeout`) and
/// whose one-slot queue is full: the next send is refused or blocks.
fn hung_worker_and_full_queue(name: &str, timeout: Duration) -> (TestServer, Dispatcher, String) {
    let server = TestServer::start(|_| Reply::Hang);
    let hooks = Dispatcher::builder()
        .name(name)
        .workers(1)
        .queue_capacity(1)
        .timeout(timeout)
        .build()
        .unwrap();
    let url = server.url("/x");
    hooks.try_send(Webhook::new(&url, &0).unwrap()).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().pool.active == 1));
    hooks.try_send(Webhook::new(&url, &1).unwrap()).unwrap();
    (server, hooks, url)
}

/// `accepted` is a Prometheus counter; refusals used to make it go down.
#[test]
fn accepted_never_goes_backwards() {
    let (_server, hooks, url) =
        hung_worker_and_full_queue("never-backwards", Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, stopping) = (hooks.handle(), Arc::clone(&stop));
    let producer = std::thread::spawn(move || {
        let webhook = Webhook::new(&url, &2).unwrap();
        let mut refused = 0u64;
        while !stopping.load(Ordering::Relaxed) && refused < 10_000_000 {
            if handle.try_send(webhook.clone()).is_err() {
                refused += 1;
            }
        }
        refused
    });
    let decreases = AtomicUsize::new(0);
    let last = AtomicU64::new(0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        let accepted = hooks.stats().accepted;
        if accepted < last.load(Ordering::Relaxed) {
            decreases.fetch_add(1, Ordering::Relaxed);
        }
        last.store(accepted, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        producer.join().unwrap() > 0,
        "the queue never refused anything"
    );
    let _ = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(decreases.load(Ordering::Relaxed), 0, "accepted went down");
}

/// `abort` used to mark already-exited workers as aborted, and stats
/// counted them as alive.
#[test]
fn exited_workers_are_not_counted_after_a_deadline() {
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let pool = Pool::builder()
        .workers(2)
        .build(move |n: u8| {
            if n == 0 {
                gate.lock().unwrap().recv().ok();
            }
            Ok::<(), String>(())
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    let mut report = pool.shutdown_timeout(Duration::from_millis(50));
    assert_eq!(report.still_running, 1);
    drop(release);
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(report.stats.workers, 0);
}

/// Huge durations used to panic in `Instant` arithmetic.
#[test]
fn huge_durations_do_not_panic() {
    let pool = Pool::builder()
        .workers(1)
        .build(|_: u8| Ok::<(), String>(()))
        .unwrap();
    let mut report = pool.shutdown_timeout(Duration::MAX);
    assert_eq!(report.wait_running(Duration::MAX), 0);

    let hooks = Dispatcher::builder()
        .workers(1)
        .drop_timeout(Duration::MAX)
        .build()
        .unwrap();
    drop(hooks);

    let server = TestServer::start(|_| Reply::Status(503));
    let letters = MemoryDeadLetters::new();
    let hooks = Dispatcher::builder()
        .workers(1)
        .breaker(
            BreakerConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::MAX),
        )
        .retry(
            RetryPolicy::exponential(Duration::MAX)
                .jitter(false)
                .max_attempts(5)
                .max_delay(Duration::MAX)
                .max_elapsed(Some(Duration::MAX)),
        )
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let url = server.url("/x");
    hooks.try_send(Webhook::new(&url, &1).unwrap()).unwrap();
    assert!(wait_until(BOUND, || hooks
        .stats()
        .breaker(&format!("http://127.0.0.1:{}", server.addr().port()))
        == Some(BreakerState::Open)));
    hooks.try_send(Webhook::new(&url, &2).unwrap()).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 2));
    // An endless cooldown keeps the breaker open: the second webhook is deferred, not sent.
    assert_eq!(server.request_count(), 1);
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.stats.pool.panicked, 0);
    // Both waiting webhooks are dead-lettered at the deadline.
    let reasons: Vec<_> = letters.letters().iter().map(|l| l.reason).collect();
    assert_eq!(reasons, [DeadLetterReason::Shutdown; 2]);
}

/// An absurd capacity used to panic inside the channel instead of being a
/// build error.
#[test]
fn absurd_capacities_are_a_build_error() {
    let err = Pool::builder()
        .queue_capacity(usize::MAX / 2)
        .build(|_: u8| Ok::<(), String>(()))
        .unwrap_err();
    assert!(matches!(err, BuildError::Invalid(_)), "{err:?}");
}

/// A sink whose first letter lets the held request finish, then waits
/// until the worker has either taken its next job or exited.
struct ReleasingSink {
    release: common::Gate,
    worker_moved_on: Box<dyn Fn() -> bool + Send + Sync>,
}

impl DeadLetterSink for ReleasingSink {
    fn store(&self, _: &DeadLetter) -> std::io::Result<()> {
        self.release.open();
        // A panic here would be contained by the dispatcher: the count of
        // requests below decides.
        let _ = wait_until(BOUND, &self.worker_moved_on);
        Ok(())
    }
}

/// Shutdown used to write the waiting retries' letters before stopping the
/// workers, which meanwhile started queued requests after the deadline.
#[test]
fn no_request_starts_after_the_deadline() {
    // The first /slow request is held until shutdown writes its first
    // letter, so it is the one in flight at the deadline whatever the timing.
    let release = common::Gate::default();
    let held = release.clone();
    let server = Arc::new(TestServer::start(move |r| {
        if r.path_only() == "/fail" {
            Reply::Status(503)
        } else {
            held.wait();
            Reply::Status(204)
        }
    }));
    // Once the held request is answered, the worker either starts the
    // next /slow request (the bug) or exits (stopped at the deadline).
    let watched = Arc::clone(&server);
    let worker_moved_on = Box::new(move || {
        watched.request_count() > 6
            || common::server::os_threads_with_prefix("deadline-0") == Some(0)
    });
    let hooks = Dispatcher::builder()
        .name("deadline")
        .workers(1)
        .queue_capacity(16)
        .breaker(BreakerConfig::disabled())
        .retry(RetryPolicy::exponential(Duration::from_secs(3600)).max_attempts(5))
        .dead_letters(ReleasingSink {
            release: release.clone(),
            worker_moved_on,
        })
        .build()
        .unwrap();
    for n in 0..5 {
        hooks
            .try_send(Webhook::new(&server.url("/fail"), &n).unwrap())
            .unwrap();
    }
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 5));
    for n in 0..5 {
        hooks
            .try_send(Webhook::new(&server.url("/slow"), &n).unwrap())
            .unwrap();
    }
    assert!(server.wait_for_requests(6, BOUND));
    let mut report = hooks.shutdown_timeout(Duration::from_millis(20));
    release.open();
    assert_eq!(report.wait_running(BOUND), 0);
    assert_eq!(
        server.request_count(),
        6,
        "a request started after the deadline"
    );
    assert_eq!(
        report.stats.accepted,
        report.stats.delivered + report.stats.dead_lettered
    );
}

/// A caller blocked in `send_timeout` on a full queue used to wait out its
/// whole timeout after shutdown began.
#[test]
fn shutdown_wakes_a_blocked_send_timeout() {
    logger::install();
    let (_server, hooks, url) = hung_worker_and_full_queue("blocked-send", Duration::from_secs(3));
    let handle = hooks.handle();
    let blocked_url = url.clone();
    let (done_tx, done) = std::sync::mpsc::channel();
    let blocked = std::thread::Builder::new()
        .name("blocked-send".into())
        .spawn(move || {
            let result = handle.send_timeout(
                Webhook::new(&blocked_url, &2).unwrap(),
                Duration::from_secs(600),
            );
            done_tx.send(result.map_err(|e| e.is_closed())).unwrap();
        })
        .unwrap();
    // Shutdown must meet the caller asleep at the full queue, past the
    // batch wait, where only a free slot or shutdown can wake it.
    common::wait_for_a_waiting_submission("blocked-send", "blocked-send");
    let closer = std::thread::spawn(move || hooks.shutdown_timeout(Duration::from_millis(100)));
    // Woken long before its 600 s.
    assert_eq!(
        done.recv_timeout(BOUND),
        Ok(Err(true)),
        "the blocked caller gets Closed with its webhook"
    );
    blocked.join().unwrap();
    let _ = closer.join().unwrap();
}
