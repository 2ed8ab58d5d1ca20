//! Regressions for an injected clock that panics: while a delivery holds a
//! bulkhead slot and another one is parked, and in the wall-clock read of an
//! attempt, which the dead letter for that panic must not need.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::server::{Reply, TestServer};
use hookpool::{BreakerConfig, Clock, Dispatcher, RetryPolicy, Webhook};

/// A clock whose `now()` glitches (panics) on the reads by the dispatcher's
/// workers numbered `glitches` once armed (two in a row, the first and the
/// next, unless told otherwise); the dispatcher already expects an injected
/// clock to panic (see `Admitted::drop`).
#[derive(Debug, Clone)]
struct GlitchyClock {
    calls: Arc<AtomicUsize>,
    armed: Arc<AtomicBool>,
    glitches: std::ops::Range<usize>,
}

impl GlitchyClock {
    fn new(glitches: std::ops::Range<usize>) -> Self {
        GlitchyClock {
            calls: Arc::default(),
            armed: Arc::default(),
            glitches,
        }
    }
}

impl Clock for GlitchyClock {
    fn now(&self) -> Instant {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("hookpool-") && !n.ends_with("-retry"));
        if worker && self.armed.load(Ordering::SeqCst) {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.glitches.contains(&n) {
                panic!("clock glitch {n}");
            }
        }
        Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The test below, by name: it runs itself again in a child process.
const PARKED_TEST: &str = "a_clock_panic_while_another_delivery_is_parked_does_not_abort";

/// A panic from the injected clock while a delivery holds a bulkhead slot
/// and another is parked: `SlotGuard::drop` calls the injected clock again
/// while unwinding. Runs in a child process, since a panic while unwinding
/// aborts.
#[test]
fn a_clock_panic_while_another_delivery_is_parked_does_not_abort() {
    if !common::in_child() {
        common::run_test_in_child(PARKED_TEST, &[], &[]);
        return;
    }
    let gate = common::Gate::default();
    let held = gate.clone();
    let server = TestServer::start(move |_| {
        held.wait();
        Reply::Status(204)
    });
    let clock = GlitchyClock::new(0..2);
    let hooks = Dispatcher::builder()
        .workers(2)
        .max_in_flight_per_endpoint(1)
        .breaker(BreakerConfig::disabled())
        .clock(clock.clone())
        .retry(RetryPolicy::exponential(Duration::from_millis(10)).max_attempts(3))
        .build()
        .unwrap();
    hooks
        .try_send(Webhook::new(&server.url("/a"), &1).unwrap())
        .unwrap();
    assert!(server.wait_for_requests(1, Duration::from_secs(10)));
    hooks
        .try_send(Webhook::new(&server.url("/a"), &2).unwrap())
        .unwrap();
    assert!(common::wait_until(Duration::from_secs(10), || hooks
        .stats()
        .parked
        == 1));
    // The next two reads of the injected clock panic: the first is the one
    // after the answer (breaker record), the second SlotGuard's.
    clock.armed.store(true, Ordering::SeqCst);
    gate.open();
    // Both end (the second is attempted after the slot passes to it, and may
    // meet the second glitch): nothing aborts, nothing is lost.
    assert!(common::wait_until(Duration::from_secs(10), || {
        hooks.stats().in_progress() == 0
    }));
    let report = hooks.shutdown();
    assert_eq!(report.stats.accepted, 2);
    assert_eq!(report.stats.delivered + report.stats.dead_lettered, 2);
    assert!(report.stats.pool.panicked >= 1);
}

/// The test below, by name: it runs itself again in a child process.
const GRANTED_TEST: &str = "a_clock_panic_before_a_granted_delivery_starts_gives_its_slot_back";

/// As above, and the second glitch is the first read by the delivery that
/// was granted the slot (before it has started): the slot must come back
/// to the lane, or with one slot per endpoint every later webhook for it
/// waits forever, and `shutdown` with them.
#[test]
fn a_clock_panic_before_a_granted_delivery_starts_gives_its_slot_back() {
    if !common::in_child() {
        common::run_test_in_child(GRANTED_TEST, &[], &[]);
        return;
    }
    let gate = common::Gate::default();
    let held = gate.clone();
    let server = TestServer::start(move |_| {
        held.wait();
        Reply::Status(204)
    });
    let clock = GlitchyClock::new(0..2);
    let hooks = Dispatcher::builder()
        .workers(2)
        .max_in_flight_per_endpoint(1)
        .breaker(BreakerConfig::disabled())
        .clock(clock.clone())
        .build()
        .unwrap();
    let send = |n: u32| {
        hooks
            .try_send(Webhook::new(&server.url("/a"), &n).unwrap())
            .unwrap();
    };
    send(1);
    assert!(server.wait_for_requests(1, Duration::from_secs(10)));
    send(2);
    assert!(common::wait_until(Duration::from_secs(10), || hooks
        .stats()
        .parked
        == 1));
    // The first glitch is the first webhook's read after its answer; the
    // second, the granted one's first read.
    clock.armed.store(true, Ordering::SeqCst);
    gate.open();
    assert!(common::wait_until(Duration::from_secs(10), || hooks
        .stats()
        .dead_lettered
        == 2));
    // The endpoint still takes webhooks.
    send(3);
    let delivered = common::wait_until(Duration::from_secs(10), || hooks.stats().delivered == 1);
    let stats = hooks.stats();
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert!(
        delivered,
        "a webhook after the glitch never went: {stats:?}"
    );
    assert_eq!(report.stats.accepted, 3);
    assert_eq!((report.stats.delivered, report.stats.dead_lettered), (1, 2));
}

/// The test below, by name: it runs itself again in a child process.
const PUSHED_BACK_TEST: &str = "a_clock_panic_after_a_push_back_gives_its_slot_back";

/// The injected clock panics on the read that follows a push-back (the
/// breaker's record is the read before it): the slot must come back to
/// the lane, or with one slot per endpoint nothing is sent to it again.
#[test]
fn a_clock_panic_after_a_push_back_gives_its_slot_back() {
    if !common::in_child() {
        common::run_test_in_child(PUSHED_BACK_TEST, &[], &[]);
        return;
    }
    let gate = common::Gate::default();
    let held = gate.clone();
    let first = AtomicBool::new(true);
    let server = TestServer::start(move |_| {
        if first.swap(false, Ordering::SeqCst) {
            held.wait();
            Reply::Status(429)
        } else {
            Reply::Status(204)
        }
    });
    let clock = GlitchyClock::new(1..2);
    let hooks = Dispatcher::builder()
        .workers(2)
        .max_in_flight_per_endpoint(1)
        .breaker(BreakerConfig::disabled())
        .clock(clock.clone())
        .build()
        .unwrap();
    let send = |n: u32| {
        hooks
            .try_send(Webhook::new(&server.url("/a"), &n).unwrap())
            .unwrap();
    };
    send(1);
    assert!(server.wait_for_requests(1, Duration::from_secs(10)));
    clock.armed.store(true, Ordering::SeqCst);
    gate.open();
    assert!(common::wait_until(Duration::from_secs(10), || hooks
        .stats()
        .dead_lettered
        == 1));
    send(2);
    let delivered = common::wait_until(Duration::from_secs(10), || hooks.stats().delivered == 1);
    let stats = hooks.stats();
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert!(
        delivered,
        "a webhook after the glitch never went: {stats:?}"
    );
    assert_eq!(
        (
            report.stats.accepted,
            report.stats.delivered,
            report.stats.dead_lettered
        ),
        (2, 1, 1)
    );
}

/// A clock whose wall-clock reads panic on the dispatcher's worker threads.
#[derive(Debug, Clone)]
struct BrokenWallClock;

impl Clock for BrokenWallClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("hookpool-"));
        assert!(!worker, "wall clock broken");
        SystemTime::now()
    }
}

/// The attempt reads the wall clock and panics; the letter for that panic
/// must not need the same clock, or the webhook is neither delivered nor
/// dead-lettered and shutdown waits for it forever.
#[test]
fn a_webhook_whose_attempt_panicked_in_the_clock_is_dead_lettered() {
    let server = TestServer::start(|_| Reply::Status(204));
    let hooks = Dispatcher::builder()
        .workers(1)
        .clock(BrokenWallClock)
        .build()
        .unwrap();
    hooks
        .try_send(Webhook::new(&server.url("/a"), &1).unwrap())
        .unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || hooks.stats().in_progress() == 0),
        "the webhook never ended: {:?}",
        hooks.stats()
    );
    let report = hooks.shutdown();
    assert_eq!((report.stats.accepted, report.stats.dead_lettered), (1, 1));
    let letters = report.dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, hookpool::DeadLetterReason::Panicked);
    assert!(letters[0].dead_lettered_at > 0);
}
