//! Receivers that push back, for the pacing tests: a token bucket (a rate
//! limit) and a concurrency cap, each answering like real ones do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server::{Recorded, Reply};

/// What a pacing receiver saw.
#[derive(Default)]
pub struct Tally {
    pub accepted: AtomicU64,
    pub pushed_back: AtomicU64,
    /// The most requests it served at once.
    pub peak: AtomicUsize,
}

impl Tally {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn pushed_back(&self) -> u64 {
        self.pushed_back.load(Ordering::SeqCst)
    }
}

fn push_back(status: u16, retry_after: &str) -> Reply {
    Reply::WithHeaders(
        status,
        vec![("Retry-After".into(), retry_after.into())],
        String::new(),
    )
}

/// Allows `rate` requests a second, with a bucket of `burst`; beyond that
/// it answers 429 with `Retry-After: 1`, and every other time 503 with
/// `Retry-After: 1` (as a proxy in front of it would).
pub fn token_bucket(
    rate: f64,
    burst: f64,
) -> (
    Arc<Tally>,
    impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) {
    let tally = Arc::new(Tally::default());
    let seen = Arc::clone(&tally);
    let bucket = Mutex::new((burst, Instant::now()));
    let handler = move |_: &Recorded| {
        let allowed = {
            let mut b = bucket.lock().unwrap();
            let now = Instant::now();
            b.0 = (b.0 + (now - b.1).as_secs_f64() * rate).min(burst);
            b.1 = now;
            if b.0 >= 1.0 {
                b.0 -= 1.0;
                true
            } else {
                false
            }
        };
        if allowed {
            seen.accepted.fetch_add(1, Ordering::SeqCst);
            Reply::Status(204)
        } else {
            let n = seen.pushed_back.fetch_add(1, Ordering::SeqCst);
            push_back(if n % 2 == 0 { 429 } else { 503 }, "1")
        }
    };
    (tally, handler)
}

/// Serves `cap` requests at once, each for `service`; beyond that it
/// answers 503 with `Retry-After: 1`.
pub fn concurrency_cap(
    cap: usize,
    service: Duration,
) -> (
    Arc<Tally>,
    impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
) {
    let tally = Arc::new(Tally::default());
    let seen = Arc::clone(&tally);
    let busy = AtomicUsize::new(0);
    let handler = move |_: &Recorded| {
        let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
        if now > cap {
            busy.fetch_sub(1, Ordering::SeqCst);
            seen.pushed_back.fetch_add(1, Ordering::SeqCst);
            return push_back(503, "1");
        }
        seen.peak.fetch_max(now, Ordering::SeqCst);
        // The work the receiver does for one request.
        std::thread::sleep(service);
        busy.fetch_sub(1, Ordering::SeqCst);
        seen.accepted.fetch_add(1, Ordering::SeqCst);
        Reply::Status(204)
    };
    (tally, handler)
}
