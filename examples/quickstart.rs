//! A self-contained tour of hookpool: a pool processing jobs, backpressure
//! when the queue is full, and the stats at the end.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use hookpool::{Pool, SubmitError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();

    // Two workers and a deliberately small queue, so backpressure shows.
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(8)
        .name("quickstart")
        .build(|order: u32| -> Result<(), String> {
            std::thread::sleep(Duration::from_millis(5)); // pretend to work
            if order % 10 == 9 {
                return Err(format!("order {order} failed validation"));
            }
            Ok(())
        })?;

    println!("1. submitting 40 orders without blocking");
    let mut refused = Vec::new();
    for order in 0..40 {
        match pool.try_submit(order) {
            Ok(()) => {}
            // The queue is full: the job comes back, nothing is lost.
            Err(SubmitError::Full(order)) => refused.push(order),
            Err(SubmitError::Closed(order)) => unreachable!("pool is open, got {order} back"),
        }
    }
    println!(
        "   accepted {}, refused {} (queue full)",
        40 - refused.len(),
        refused.len()
    );

    println!("2. retrying the refused orders, waiting up to 1 s for room each");
    for order in refused {
        pool.submit_timeout(order, Duration::from_secs(1))?;
    }

    let stats = pool.stats();
    println!("   now: {} queued, {} running", stats.queued, stats.active);

    println!("3. shutting down: intake stops, the queue drains, threads are joined");
    let report = pool.shutdown();
    let s = report.stats;
    println!(
        "   submitted {}, succeeded {}, failed {}, panicked {}, rejected {}, unstarted {}",
        s.submitted,
        s.succeeded,
        s.failed,
        s.panicked,
        s.rejected,
        report.unstarted.len()
    );
    assert_eq!(s.succeeded + s.failed, 40);
    Ok(())
}
