//! Issue 2, point 6: `try_submit` allocates nothing beyond the job itself.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; it lives in
//! this test binary only (the library forbids unsafe code). It counts only
//! allocations made by the thread that sets `COUNTING`, so the workers and
//! the test harness do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookpool::Pool;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn try_submit_does_not_allocate() {
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(4096)
        .build(|n: u64| {
            std::hint::black_box(n);
            Ok::<(), String>(())
        })
        .unwrap();
    let submitter = pool.submitter();
    // Warm up: first sends may touch lazily initialised state.
    for n in 0..100 {
        submitter
            .submit_timeout(n, Duration::from_secs(10))
            .unwrap();
    }

    COUNTING.with(|c| c.set(true));
    let mut accepted = 0;
    let mut full = 0;
    for n in 0..10_000 {
        match submitter.try_submit(n) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.is_full());
                full += 1;
            }
        }
        match pool.try_submit(n) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(e.is_full());
                full += 1;
            }
        }
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(accepted + full, 20_000);
    assert!(accepted > 0);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "try_submit allocated"
    );
    let report = pool.shutdown();
    assert_eq!(report.stats.submitted, 100 + accepted);
}
