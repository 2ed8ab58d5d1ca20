//! Issue 2, point 4: no thread outlives the pool. Kept alone in its own test
//! binary so that no other test's threads change the process's count.

mod common;

use std::time::Duration;

use common::wait_until;
use hookpool::Pool;

fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("linux /proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: line")
}

#[test]
fn shutdown_drop_and_deadline_leave_no_thread_behind() {
    let before = os_threads();

    let pool = Pool::builder()
        .workers(6)
        .build(|_: u32| Ok::<(), String>(()))
        .unwrap();
    assert_eq!(os_threads(), before + 6);
    for n in 0..100 {
        pool.try_submit(n).unwrap();
    }
    let _ = pool.shutdown();
    // join() has returned; the kernel may take a moment to reap the task.
    assert!(wait_until(Duration::from_secs(5), || os_threads() == before));

    let pool = Pool::builder()
        .workers(3)
        .build(|_: u32| Ok::<(), String>(()))
        .unwrap();
    let _submitter = pool.submitter();
    drop(pool);
    assert!(wait_until(Duration::from_secs(5), || os_threads() == before));

    // A job that outlives the deadline: its thread is reported, not leaked.
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let pool = Pool::builder()
        .workers(2)
        .build(move |_: u32| {
            let _ = gate.recv_timeout(Duration::from_secs(20));
            Ok::<(), String>(())
        })
        .unwrap();
    pool.try_submit(1).unwrap();
    assert!(wait_until(Duration::from_secs(20), || pool.stats().active == 1));
    let mut report = pool.shutdown_timeout(Duration::from_millis(10));
    assert_eq!(report.still_running, 1);
    assert!(wait_until(Duration::from_secs(5), || os_threads() == before + 1));
    drop(release);
    assert_eq!(report.wait_running(Duration::from_secs(20)), 0);
    assert!(wait_until(Duration::from_secs(5), || os_threads() == before));
}
