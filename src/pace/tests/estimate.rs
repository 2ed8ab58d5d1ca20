//! The estimate of a receiver's rate from what it accepted after its
//! first push-back, against a token bucket in virtual time.

use std::time::{Duration, Instant};

use super::super::estimate::{BURST_RUN, Estimator};

const RTT: Duration = Duration::from_micros(250);

/// A token bucket: `rate` a second, `burst` at most, full at `t0`.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, t0: Instant) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: t0,
        }
    }

    fn take(&mut self, t: Instant) -> bool {
        let dt = t.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(t);
        let ok = self.tokens >= 1.0;
        if ok {
            self.tokens -= 1.0;
        }
        ok
    }
}

/// Sends from `from` at `rate(elapsed)` a second until the bucket pushes
/// back: when that request was sent, and the estimate its push-back gave.
fn until_pushed_back(
    est: &mut Estimator,
    bucket: &mut Bucket,
    from: Instant,
    rate: impl Fn(Duration) -> f64,
) -> (Instant, Option<f64>) {
    let mut t = from;
    for _ in 0..1_000_000 {
        est.sent(t);
        if !bucket.take(t) {
            return (t, est.pushed_back(t));
        }
        est.accepted(t);
        t += Duration::from_secs_f64(1.0 / rate(t - from));
    }
    panic!("never pushed back");
}

/// Issue 14's limiter (2,000/s, a burst of 1,000, `Retry-After: 1`): the
/// unpaced burst's push-back says nothing; the next run, drained slower,
/// gives the rate the bucket refills at.
#[test]
fn a_burst_then_a_slower_run_give_the_bucket_s_rate() {
    let t0 = Instant::now();
    let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
    let (t1, first) = until_pushed_back(&mut est, &mut bucket, t0, |_| 40_000.0);
    assert_eq!(first, None, "one push-back after a burst: no evidence");
    let resume = t1 + RTT + Duration::from_secs(1);
    est.pause_until(resume);
    let (_, second) = until_pushed_back(&mut est, &mut bucket, resume, |_| 6_000.0);
    let rate = second.unwrap();
    assert!((1950.0..=2000.0).contains(&rate), "{rate}");
}

/// A run that began below the receiver's rate (the bucket stayed full,
/// tokens overflowed) and rose above it is measured from where it began to
/// drain the bucket, not from its start.
#[test]
fn a_run_that_began_slow_is_measured_from_where_it_drained() {
    let t0 = Instant::now();
    let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 1000.0, t0));
    let (t1, _) = until_pushed_back(&mut est, &mut bucket, t0, |_| 40_000.0);
    let resume = t1 + RTT + Duration::from_secs(1);
    est.pause_until(resume);
    let secs = Duration::from_secs;
    let slow_then_fast = |t: Duration| if t < secs(1) { 1_000.0 } else { 4_000.0 };
    let (_, second) = until_pushed_back(&mut est, &mut bucket, resume, slow_then_fast);
    let rate = second.unwrap();
    // From the start of the run, 1,000 of its first second's 2,000 tokens
    // overflowed: (4,000 - 1,000) / 2 s says 1,500.
    assert!((1900.0..=2000.0).contains(&rate), "{rate}");
}

/// A first run longer than `BURST_RUN` accepted mostly what the receiver
/// refilled meanwhile, not its burst: no estimate rests on it.
#[test]
fn a_long_first_run_is_no_burst() {
    let t0 = Instant::now();
    let (mut est, mut bucket) = (Estimator::default(), Bucket::new(2000.0, 200.0, t0));
    let (t1, _) = until_pushed_back(&mut est, &mut bucket, t0, |_| 2_500.0);
    assert!(t1 - t0 > BURST_RUN, "{:?}", t1 - t0);
    let resume = t1 + RTT + Duration::from_secs(1);
    est.pause_until(resume);
    let (_, second) = until_pushed_back(&mut est, &mut bucket, resume, |_| 6_000.0);
    assert_eq!(second, None);
}
