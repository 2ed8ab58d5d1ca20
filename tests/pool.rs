//! The core pool's contract (issue 2), one section per numbered point.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::{Gate, Rendezvous, logger, wait_until};
use hookpool::{BuildError, Pool, SubmitError};

const BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// 1. Conservation: every accepted job runs exactly once or is handed back.
// ---------------------------------------------------------------------------

/// One stress round: `producers` threads submit ids through their own
/// `Submitter` clones (or, with `one_handle`, all through one shared
/// handle, so that most of them go through its shared gate word) while the
/// main thread shuts down at a random point.
fn conservation_round(seed: u64, with_deadline: bool, one_handle: bool) -> bool {
    const PER_PRODUCER: usize = 2_000;
    const PRODUCERS: usize = 4;
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = PER_PRODUCER * PRODUCERS;
    let runs: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(0)).collect());
    let work = rng.u32(0..2_000);

    let counted = Arc::clone(&runs);
    let pool = Pool::builder()
        .workers(rng.usize(1..=4))
        .queue_capacity(rng.usize(1..=64))
        .name(format!("conserve-{seed}"))
        .build(move |id: usize| {
            // A little work, so the queue is often non-empty at shutdown.
            let mut x = id as u64;
            for _ in 0..work {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            counted[id].fetch_add(1, Ordering::SeqCst);
            if id % 97 == 0 {
                Err("every 97th job fails")
            } else {
                Ok(())
            }
        })
        .unwrap();

    let accepted: Arc<Vec<AtomicBool>> =
        Arc::new((0..total).map(|_| AtomicBool::new(false)).collect());
    let start = Arc::new(Barrier::new(PRODUCERS + 1));
    let shared_handle = Arc::new(pool.submitter());
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let submitter = if one_handle {
                Arc::clone(&shared_handle)
            } else {
                Arc::new(pool.submitter())
            };
            let accepted = Arc::clone(&accepted);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let mut refused_closed = 0;
                for i in 0..PER_PRODUCER {
                    let id = p * PER_PRODUCER + i;
                    // Backpressure: on Full, wait for room (bounded), as a caller would.
                    let mut job = id;
                    for attempt in 0..10_000 {
                        let result = if attempt % 2 == 0 {
                            submitter.try_submit(job)
                        } else {
                            submitter.submit_timeout(job, Duration::from_millis(2))
                        };
                        match result {
                            Ok(()) => {
                                accepted[id].store(true, Ordering::SeqCst);
                                break;
                            }
                            Err(SubmitError::Full(back)) => job = back,
                            Err(SubmitError::Closed(back)) => {
                                assert_eq!(back, id);
                                refused_closed += 1;
                                break;
                            }
                        }
                    }
                }
                refused_closed
            })
        })
        .collect();

    start.wait();
    // Shut down at a random point: after a random number of accepted jobs.
    let after = rng.usize(0..total / 2);
    wait_until(BOUND, || pool.stats().submitted as usize >= after);
    let report = if with_deadline {
        pool.shutdown_timeout(Duration::from_micros(rng.u64(0..2_000)))
    } else {
        pool.shutdown()
    };
    let refused_closed: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();

    let mut report = report;
    // Workers still inside a job at the deadline finish it; wait so their runs are counted.
    assert_eq!(report.wait_running(BOUND), 0);

    let mut handed_back = vec![0u8; total];
    for &id in &report.unstarted {
        handed_back[id] += 1;
    }
    let mut accepted_count = 0;
    for id in 0..total {
        let ran = runs[id].load(Ordering::SeqCst);
        let back = handed_back[id];
        if accepted[id].load(Ordering::SeqCst) {
            accepted_count += 1;
            assert_eq!(
                ran + back,
                1,
                "seed {seed}: accepted job {id} ran {ran}x, handed back {back}x"
            );
        } else {
            assert_eq!(
                (ran, back),
                (0, 0),
                "seed {seed}: refused job {id} ran or came back"
            );
        }
    }
    let stats = report.stats;
    assert_eq!(stats.submitted as usize, accepted_count, "seed {seed}");
    assert_eq!(
        stats.completed() as usize + report.unstarted.len(),
        accepted_count,
        "seed {seed}"
    );
    if !with_deadline {
        assert!(report.unstarted.is_empty());
    }
    refused_closed > 0
}

/// `HOOKPOOL_CONSERVATION_SEED=<seed>` replays the rounds of a failed run
/// (the seed is printed, and shown with a failure).
#[test]
fn conservation_under_concurrent_shutdown() {
    let base = std::env::var("HOOKPOOL_CONSERVATION_SEED")
        .map(|s| s.parse().expect("HOOKPOOL_CONSERVATION_SEED is a u64"))
        .unwrap_or_else(|_| fastrand::u64(..));
    eprintln!("conservation seed {base} (HOOKPOOL_CONSERVATION_SEED={base} replays it)");
    let mut raced = 0;
    for round in 0..12 {
        let seed = base.wrapping_add(round);
        raced += usize::from(conservation_round(seed, round % 2 == 1, round % 4 >= 2));
    }
    // Shutdown must actually have met live producers for this to prove anything.
    assert!(
        raced >= 6,
        "only {raced} of 12 rounds shut down while producers were submitting \
         (HOOKPOOL_CONSERVATION_SEED={base} replays it)"
    );
}

// ---------------------------------------------------------------------------
// 2. After shutdown begins, submitters get Closed(job); live Submitters do
//    not keep the pool open.
// ---------------------------------------------------------------------------

#[test]
fn live_submitters_do_not_keep_the_pool_open() {
    let pool = Pool::builder()
        .workers(2)
        .build(|_: u32| Ok::<(), String>(()))
        .unwrap();
    let submitters: Vec<_> = (0..3).map(|_| pool.submitter()).collect();
    submitters[0].try_submit(1).unwrap();
    let report = pool.shutdown(); // returns although three handles are alive
    assert!(report.is_complete());
    for (n, s) in submitters.iter().enumerate() {
        assert!(s.is_closed());
        assert_eq!(
            s.try_submit(n as u32 + 10),
            Err(SubmitError::Closed(n as u32 + 10))
        );
        assert_eq!(
            s.submit_timeout(7, Duration::from_secs(1)),
            Err(SubmitError::Closed(7))
        );
    }
    let clone = submitters[0].clone();
    assert!(clone.try_submit(3).unwrap_err().is_closed());
}

#[test]
fn blocked_submit_timeout_is_woken_by_shutdown_with_its_job() {
    logger::install();
    let gate = Gate::default();
    let hold = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .name("woken-by-shutdown")
        .build(move |_: u32| {
            hold.wait();
            Ok::<(), String>(())
        })
        .unwrap();
    let submitter = pool.submitter();
    pool.try_submit(1).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    pool.try_submit(2).unwrap(); // fills the queue
    assert!(pool.try_submit(3).unwrap_err().is_full());

    let (done_tx, done) = crossbeam_channel::bounded(1);
    let blocked = thread::Builder::new()
        .name("blocked-submit".into())
        .spawn(move || {
            let sent = submitter.submit_timeout(4, Duration::from_secs(600));
            done_tx.send(sent).unwrap();
        })
        .unwrap();
    common::wait_for_a_waiting_submission("woken-by-shutdown", "blocked-submit");
    let closer = thread::spawn(move || pool.shutdown());
    // The blocked caller gets its job back as Closed long before its 600 s.
    assert_eq!(done.recv_timeout(BOUND), Ok(Err(SubmitError::Closed(4))));
    blocked.join().unwrap();
    gate.open();
    let report = closer.join().unwrap();
    assert_eq!(report.stats.succeeded, 2);
    assert!(report.is_complete());
}

/// A submission waiting at a full queue sleeps for a batch of room (half
/// the queue), but not much past the first free slot: one job ending is
/// enough to let it in, however long it asked to wait.
#[test]
fn a_waiting_submission_takes_the_first_free_slot() {
    logger::install();
    let (tokens, token) = crossbeam_channel::unbounded::<()>();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(8)
        .name("first-free-slot")
        .build(move |_: u32| token.recv_timeout(BOUND).map_err(|e| e.to_string()))
        .unwrap();
    // Dropped before the pool if an assertion fails, so the jobs end.
    let tokens = tokens;
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    for n in 1..=8 {
        pool.try_submit(n).unwrap();
    }
    let submitter = pool.submitter();
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let waiting = thread::Builder::new()
        .name("first-free-slot".into())
        .spawn(move || {
            let sent = submitter.submit_timeout(9, Duration::from_secs(600));
            done_tx.send(sent).unwrap();
        })
        .unwrap();
    // Once it has waited past the batch wait (a millisecond), one job ends
    // and the worker takes the next: one slot is free.
    common::wait_for_a_waiting_submission("first-free-slot", "first-free-slot");
    tokens.send(()).unwrap();
    assert_eq!(done.recv_timeout(BOUND), Ok(Ok(())));
    waiting.join().unwrap();
    for _ in 0..9 {
        tokens.send(()).unwrap();
    }
    assert_eq!(pool.shutdown().stats.succeeded, 10);
}

#[test]
fn full_queue_hands_the_job_back() {
    let gate = Gate::default();
    let hold = gate.clone();
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(2)
        .build(move |_: String| {
            hold.wait();
            Ok::<(), String>(())
        })
        .unwrap();
    pool.try_submit("a".into()).unwrap();
    assert!(wait_until(BOUND, || pool.stats().active == 1));
    pool.try_submit("b".into()).unwrap();
    pool.try_submit("c".into()).unwrap();
    let err = pool.try_submit("d".into()).unwrap_err();
    assert_eq!(err, SubmitError::Full("d".to_owned()));
    assert_eq!(err.into_inner(), "d");
    let stats = pool.stats();
    assert_eq!(
        (stats.queued, stats.active, stats.submitted, stats.rejected),
        (2, 1, 3, 1)
    );
    assert!(
        pool.submit_timeout("e".into(), Duration::from_millis(1))
            .unwrap_err()
            .is_full()
    );
    gate.open();
    let report = pool.shutdown();
    assert_eq!(report.stats.succeeded, 3);
    assert_eq!(report.stats.rejected, 2);
}

#[test]
fn shutdown_timeout_hands_back_what_never_started() {
    let gate = Gate::default();
    let hold = gate.clone();
    let started = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&started);
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(16)
        .build(move |n: u32| {
            log.lock().unwrap().push(n);
            hold.wait();
            Ok::<(), String>(())
        })
        .unwrap();
    for n in 0..10 {
        pool.try_submit(n).unwrap();
    }
    assert!(wait_until(BOUND, || pool.stats().active == 2));
    let mut report = pool.shutdown_timeout(Duration::from_millis(20));
    assert_eq!(report.still_running, 2);
    // Still inside their jobs, so still live and active.
    assert_eq!((report.stats.workers, report.stats.active), (2, 2));
    // The queue is first in, first out: the two workers took 0 and 1, and
    // every other job comes back, once.
    let mut running = started.lock().unwrap().clone();
    running.sort();
    assert_eq!(running, [0, 1]);
    let mut back = report.unstarted.clone();
    back.sort();
    assert_eq!(back, (2..10).collect::<Vec<u32>>());
    gate.open();
    assert_eq!(report.wait_running(BOUND), 0);
    // The two running jobs ended; none of those handed back ran.
    assert_eq!(report.stats.succeeded, 2);
    assert_eq!(started.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------
// 3. A panicking job neither kills nor leaks a worker.
// ---------------------------------------------------------------------------

#[test]
fn panics_are_counted_logged_handled_and_survived() {
    logger::install();
    const WORKERS: usize = 4;
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&handled);
    // Phase two: every worker must be able to hold a job at the same time.
    let rendezvous = Rendezvous::new(WORKERS);
    let meet = rendezvous.clone();
    let pool = Pool::builder()
        .workers(WORKERS)
        .queue_capacity(256)
        .name("panicky")
        .panic_handler(move |event| {
            assert!(event.thread_name().starts_with("panicky-"));
            assert!(event.message().starts_with("job "));
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build(move |n: u32| -> Result<(), String> {
            if n == u32::MAX {
                meet.arrive_and_wait(BOUND);
                return Ok(());
            }
            if n % 2 == 0 {
                panic!("job {n} exploded");
            }
            Ok(())
        })
        .unwrap();
    for n in 0..200 {
        pool.submit_timeout(n, BOUND).unwrap();
    }
    assert!(wait_until(BOUND, || pool.stats().completed() == 200));
    let stats = pool.stats();
    assert_eq!(
        (stats.panicked, stats.succeeded, stats.failed),
        (100, 100, 0)
    );
    assert_eq!(stats.workers, WORKERS);
    assert_eq!(handled.load(Ordering::SeqCst), 100);

    // All four workers are still alive: four jobs can meet at once.
    for _ in 0..WORKERS {
        pool.try_submit(u32::MAX).unwrap();
    }
    assert!(rendezvous.wait_all(BOUND), "a worker was lost to a panic");

    let report = pool.shutdown();
    assert_eq!(report.stats.succeeded, 104);
    let errors: Vec<_> = logger::lines_containing("panicky-")
        .into_iter()
        .filter(|l| l.level == log::Level::Error && l.message.contains("job panicked"))
        .collect();
    assert_eq!(errors.len(), 100);
    assert!(errors.iter().all(|l| l.target == "hookpool"));
}

/// A job counts as panicked or failed once it has been fully reported:
/// logged, and passed to the panic handler, however slow that is.
#[test]
fn a_job_is_counted_once_it_has_been_reported() {
    logger::install();
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&handled);
    let pool = Pool::builder()
        .workers(1)
        .name("reported")
        .panic_handler(move |_| {
            thread::sleep(Duration::from_millis(30));
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build(|n: u32| -> Result<(), String> {
            if n == 0 {
                panic!("job 0 exploded");
            }
            Err(format!("job {n} went wrong"))
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    assert!(wait_until(BOUND, || pool.stats().panicked == 1));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        logger::lines_containing("reported-0: job panicked").len(),
        1
    );
    pool.try_submit(1).unwrap();
    assert!(wait_until(BOUND, || pool.stats().failed == 1));
    assert_eq!(logger::lines_containing("reported: job failed").len(), 1);
    assert_eq!(pool.shutdown().stats.completed(), 2);
}

#[test]
fn a_panicking_panic_handler_is_contained() {
    let pool = Pool::builder()
        .workers(1)
        .panic_handler(|_| panic!("handler is broken too"))
        .build(|n: u8| -> Result<(), String> {
            if n == 0 {
                panic!("job broke");
            }
            Ok(())
        })
        .unwrap();
    pool.try_submit(0).unwrap();
    pool.try_submit(1).unwrap();
    let report = pool.shutdown();
    assert_eq!((report.stats.panicked, report.stats.succeeded), (1, 1));
}

// ---------------------------------------------------------------------------
// 4. Dropping a Pool drains and joins.
// ---------------------------------------------------------------------------

/// Sets its flag when dropped: the handler is dropped only after every
/// worker thread has released it.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn drop_drains_the_queue_and_joins_every_worker() {
    let gate = Gate::default();
    let hold = gate.clone();
    let ran = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&ran);
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(64)
        .build(move |_: u32| {
            let _keep = &flag;
            hold.wait();
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        })
        .unwrap();
    for n in 0..50 {
        pool.try_submit(n).unwrap();
    }
    let submitter = pool.submitter();
    let opener = thread::spawn(move || gate.open());
    drop(pool);
    opener.join().unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        50,
        "drop returned before the queue drained"
    );
    assert!(
        dropped.load(Ordering::SeqCst),
        "a worker still held the handler after drop"
    );
    assert!(submitter.try_submit(1).unwrap_err().is_closed());
}

// ---------------------------------------------------------------------------
// 5. Err counts as failed and is logged at warn; Ok counts as succeeded.
// ---------------------------------------------------------------------------

#[test]
fn handler_errors_are_counted_and_logged_at_warn() {
    logger::install();
    let pool = Pool::builder()
        .workers(2)
        .name("erring")
        .build(|n: u32| {
            if n < 3 {
                Err(format!("job {n} refused"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    for n in 0..10 {
        pool.try_submit(n).unwrap();
    }
    let report = pool.shutdown();
    assert_eq!((report.stats.failed, report.stats.succeeded), (3, 7));
    let warns: Vec<_> = logger::lines_containing("erring: job failed")
        .into_iter()
        .filter(|l| l.level == log::Level::Warn)
        .collect();
    assert_eq!(warns.len(), 3);
    assert!(warns.iter().any(|l| l.message.ends_with("job 1 refused")));
}

// ---------------------------------------------------------------------------
// Builder errors, thread names.
// ---------------------------------------------------------------------------

#[test]
fn invalid_configuration_is_a_typed_error() {
    let zero = Pool::builder()
        .workers(0)
        .build(|_: ()| Ok::<(), String>(()));
    assert!(matches!(zero, Err(BuildError::ZeroWorkers)));
    let zero = Pool::builder()
        .queue_capacity(0)
        .build(|_: ()| Ok::<(), String>(()));
    assert!(matches!(zero, Err(BuildError::ZeroCapacity)));
    // No OS can map a stack this large, so the spawn itself fails.
    let huge = Pool::builder()
        .workers(2)
        .stack_size(1 << 62)
        .build(|_: ()| Ok::<(), String>(()));
    match huge {
        Err(BuildError::Spawn(e)) => assert!(!e.to_string().is_empty()),
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn threads_are_named_after_the_pool() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&names);
    let meet = Rendezvous::new(3);
    let pool = Pool::builder()
        .workers(3)
        .name("webhooks")
        .build(move |_: u8| {
            sink.lock()
                .unwrap()
                .push(thread::current().name().unwrap().to_owned());
            assert!(meet.arrive_and_wait(BOUND)); // each worker takes exactly one job
            Ok::<(), String>(())
        })
        .unwrap();
    for n in 0..3 {
        pool.try_submit(n).unwrap();
    }
    let _ = pool.shutdown();
    let mut names = names.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, ["webhooks-0", "webhooks-1", "webhooks-2"]);
}
