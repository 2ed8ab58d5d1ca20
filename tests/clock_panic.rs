//! Regressions for an injected clock that panics: while a delivery holds a
//! bulkhead slot and another one is parked, and in the wall-clock read of an
//! attempt, which the dead letter for that panic must not need.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::server::{Reply, TestServer};
use hookpool::{BreakerConfig, Clock, Dispatcher, RetryPolicy, Webhook};

/// A clock whose `now()` glitches (panics) on two reads in a row, the
/// `from`-th and the next; the dispatcher already expects an injected clock
/// to panic (see `Admitted::drop`).
#[derive(Debug, Clone)]
struct GlitchyClock {
    calls: Arc<AtomicUsize>,
    armed: Arc<AtomicBool>,
}

impl Clock for GlitchyClock {
    fn now(&self) -> Instant {
        let worker = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("hookpool-") && !n.ends_with("-retry"));
        if worker && self.armed.load(Ordering::SeqCst) {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
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
    let clock = GlitchyClock {
        calls: Arc::default(),
        armed: Arc::default(),
    };
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
