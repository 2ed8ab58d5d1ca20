//! Counters and the [`Stats`] snapshot.
//!
//! Every hot-path counter lives in a cache-padded slot owned by one worker or
//! one submitter handle, so recording is an uncontended atomic add. A snapshot
//! sums the slots; it is cheap but not instantaneous across slots.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A point-in-time view of a pool's counters and gauges.
///
/// Counters only grow. Gauges (`queued`, `active`, `workers`) are read at the
/// moment of the snapshot. Slots are summed one after another, so under load
/// two counters may be a few jobs apart from each other.
///
/// # Examples
///
/// ```
/// use hookpool::Pool;
///
/// let pool = Pool::builder().workers(2).queue_capacity(8).build(|n: u32| {
///     if n % 2 == 0 { Ok(()) } else { Err(format!("odd job {n}")) }
/// })?;
/// for n in 0..4 {
///     pool.try_submit(n).expect("queue has room");
/// }
/// let report = pool.shutdown();
/// let stats = report.stats;
/// assert_eq!(stats.submitted, 4);
/// assert_eq!(stats.succeeded, 2);
/// assert_eq!(stats.failed, 2);
/// assert_eq!(stats.queue_capacity, 8);
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Time jobs waited in the queue before a worker took them, measured on
    /// a sample: the first submission through each handle, then one in 256
    /// (set by [`PoolBuilder::queue_wait_sampling`](crate::PoolBuilder::queue_wait_sampling)).
    pub queue_wait: Histogram,
    /// Time jobs spent in the handler.
    pub run_time: Histogram,
    /// The deepest the queue has been, as seen by workers on every eighth
    /// job they take (so within eight jobs per worker of the peak), by every
    /// submission that found the queue full, refused or waiting in
    /// `submit_timeout` (the capacity), by sampled submissions, by a
    /// shutdown deadline taking jobs back, and by this snapshot.
    pub queue_high_water: usize,
    /// Worker threads currently alive (the configured count while running).
    pub workers: usize,
    /// The bounded queue's capacity.
    pub queue_capacity: usize,
    /// Jobs waiting in the queue.
    pub queued: usize,
    /// Jobs being run right now.
    pub active: usize,
    /// Jobs accepted by `try_submit` or `submit_timeout`.
    pub submitted: u64,
    /// Submissions refused, because the queue was full or the pool closed.
    pub rejected: u64,
    /// Jobs whose handler returned `Ok`.
    pub succeeded: u64,
    /// Jobs whose handler returned `Err`.
    pub failed: u64,
    /// Jobs whose handler panicked.
    pub panicked: u64,
}

impl Stats {
    /// Jobs that finished, whatever the outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut stats = hookpool::Stats::default();
    /// stats.succeeded = 3;
    /// stats.failed = 1;
    /// stats.panicked = 1;
    /// assert_eq!(stats.completed(), 5);
    /// ```
    pub fn completed(&self) -> u64 {
        self.succeeded + self.failed + self.panicked
    }
}

/// Worker lifecycle, stored in [`WorkerSlot::state`].
pub(crate) mod state {
    /// Waiting for or between jobs.
    pub(crate) const IDLE: u8 = 0;
    /// Inside the handler.
    pub(crate) const RUNNING: u8 = 1;
    /// Shutdown's deadline passed while idle: take no new job, hand back any
    /// in hand.
    pub(crate) const ABORTED: u8 = 2;
    /// The thread has left its loop.
    pub(crate) const EXITED: u8 = 3;
    /// Shutdown's deadline passed inside a job: finish it (it still counts
    /// as active), then exit.
    pub(crate) const ABORTED_RUNNING: u8 = 4;
}

/// One worker's own counters and state, written only by that worker (and by
/// shutdown's abort, which swaps `state`).
#[derive(Debug, Default)]
pub(crate) struct WorkerSlot {
    pub(crate) state: AtomicU8,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) high_water: AtomicUsize,
    pub(crate) queue_wait: Recorder,
    pub(crate) run_time: Recorder,
}

/// One submitter handle's counters and its in-flight marker (see
/// `pool/mod.rs`).
///
/// The in-flight count and the submitted count share one word, so a
/// successful send costs two locked operations: `enter` (+1 in flight) and
/// `leave_sent` (one add that moves 1 from in-flight to submitted).
#[derive(Debug)]
pub(crate) struct GateSlot {
    /// Low `INFLIGHT_BITS`: sends between the "is the pool open" check and
    /// the end of the send. High bits: accepted sends.
    word: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Sends left before the next one whose enqueue time is measured.
    stamp_countdown: AtomicU64,
    /// One send in this many is measured; 0 for none.
    stamp_every: u64,
}

const INFLIGHT_BITS: u32 = 20;
const INFLIGHT_MASK: u64 = (1 << INFLIGHT_BITS) - 1;
const ONE_SUBMITTED: u64 = 1 << INFLIGHT_BITS;

/// By default one submission in this many has its queue wait measured (the
/// first through each handle always does). A clock read costs several times
/// a channel send; at one in 256 it adds nothing measurable to `try_submit`
/// (see docs/BENCHMARKS.md).
pub(crate) const DEFAULT_SAMPLE_EVERY: u32 = 256;

impl GateSlot {
    /// Marks a send in flight. `SeqCst`: see the shutdown argument.
    #[inline]
    pub(crate) fn enter(&self) {
        self.word.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends an accepted send: in flight -1, submitted +1, in one add
    /// (in flight is at least 1, so no borrow crosses into the high bits).
    #[inline]
    pub(crate) fn leave_sent(&self) {
        self.word.fetch_add(ONE_SUBMITTED - 1, Ordering::Release);
    }

    /// Ends a refused send.
    #[inline]
    pub(crate) fn leave_refused(&self) {
        self.word.fetch_sub(1, Ordering::Release);
    }

    /// Whether a send is between `enter` and `leave_*`.
    pub(crate) fn busy(&self) -> bool {
        self.word.load(Ordering::SeqCst) & INFLIGHT_MASK != 0
    }

    /// Sends accepted through this handle.
    pub(crate) fn submitted(&self) -> u64 {
        self.word.load(Ordering::Relaxed) >> INFLIGHT_BITS
    }

    /// A gate measuring one send in `every` (none if `every` is 0),
    /// starting with the first.
    pub(crate) fn new(every: u32) -> Self {
        GateSlot {
            word: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stamp_countdown: AtomicU64::new(if every == 0 { u64::MAX } else { 0 }),
            stamp_every: u64::from(every),
        }
    }

    /// Whether this send should be stamped. A plain load and store: when a
    /// handle is shared between threads the sampling is approximate, which
    /// is all it needs to be.
    #[inline]
    pub(crate) fn stamp_this_one(&self) -> bool {
        let left = self.stamp_countdown.load(Ordering::Relaxed);
        if left != 0 {
            self.stamp_countdown.store(left - 1, Ordering::Relaxed);
            return false;
        }
        // With sampling off (`stamp_every` 0) the countdown starts again
        // from `u64::MAX`, so 0 means never, however long the pool runs.
        self.stamp_countdown
            .store(self.stamp_every.wrapping_sub(1), Ordering::Relaxed);
        self.stamp_every != 0
    }
}

/// Adds one to a counter that may have several writers.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter that only its owner thread writes: a plain load and
/// store, no locked instruction. Readers may see a slightly stale value.
#[inline]
pub(crate) fn bump_owned(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Number of finite buckets: upper bounds 1 µs, 2 µs, 4 µs, ... 2^27 µs (about
/// 134 s). A last bucket counts everything slower.
///
/// # Examples
///
/// ```
/// use hookpool::{FINITE_BUCKETS, Histogram};
///
/// let h = Histogram::default();
/// assert_eq!(h.buckets.len(), FINITE_BUCKETS + 1);
/// assert_eq!(Histogram::upper_bound(FINITE_BUCKETS - 1), Some(std::time::Duration::from_micros(1 << 27)));
/// ```
pub const FINITE_BUCKETS: usize = 28;

/// A histogram's bucket counts, plus the +Inf bucket.
const SLOTS: usize = FINITE_BUCKETS + 1;

/// A latency histogram with fixed log-scale buckets, as a snapshot.
///
/// Bucket `i` counts durations `d` with `2^(i-1) µs < d <= 2^i µs` (bucket 0
/// holds everything up to 1 µs); the last bucket holds everything above
/// 2^27 µs. Counts are per bucket, not cumulative.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use hookpool::Histogram;
///
/// let mut h = Histogram::default();
/// for ms in [1, 2, 3, 50] {
///     h.record(Duration::from_millis(ms));
/// }
/// assert_eq!(h.count, 4);
/// // Percentiles are bucket upper bounds: 3 ms falls in the (2.048 ms, 4.096 ms] bucket.
/// assert_eq!(h.p50(), Some(Duration::from_micros(2048)));
/// assert_eq!(h.p99(), Some(Duration::from_micros(65536)));
/// assert_eq!(Histogram::default().p50(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Histogram {
    /// Count per bucket; see [`Histogram::upper_bound`].
    pub buckets: [u64; SLOTS],
    /// Number of recorded durations.
    pub count: u64,
    /// Sum of recorded durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl Histogram {
    /// The bucket a duration falls in.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookpool::Histogram;
    ///
    /// assert_eq!(Histogram::bucket_of(Duration::from_nanos(1)), 0);
    /// assert_eq!(Histogram::bucket_of(Duration::from_micros(1)), 0);
    /// assert_eq!(Histogram::bucket_of(Duration::from_nanos(1001)), 1);
    /// assert_eq!(Histogram::bucket_of(Duration::from_micros(1024)), 10);
    /// assert_eq!(Histogram::bucket_of(Duration::from_secs(3600)), hookpool::FINITE_BUCKETS);
    /// ```
    pub fn bucket_of(d: Duration) -> usize {
        // u64 nanoseconds cover 584 years; beyond that is the +Inf bucket anyway.
        let micros = nanos(d).div_ceil(1000);
        if micros <= 1 {
            return 0;
        }
        // ceil(log2(micros)) for micros >= 2.
        let index = (u64::BITS - (micros - 1).leading_zeros()) as usize;
        index.min(FINITE_BUCKETS)
    }

    /// Upper bound of bucket `i`, or `None` for the last (+Inf) bucket.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookpool::Histogram;
    ///
    /// assert_eq!(Histogram::upper_bound(0), Some(Duration::from_micros(1)));
    /// assert_eq!(Histogram::upper_bound(3), Some(Duration::from_micros(8)));
    /// assert_eq!(Histogram::upper_bound(hookpool::FINITE_BUCKETS), None);
    /// ```
    pub fn upper_bound(i: usize) -> Option<Duration> {
        (i < FINITE_BUCKETS).then(|| Duration::from_micros(1u64 << i))
    }

    /// Adds one duration (for building snapshots by hand; pools record into
    /// their own lock-free histograms).
    ///
    /// # Examples
    ///
    /// See [`Histogram`].
    ///
    /// ```
    /// let mut h = hookpool::Histogram::default();
    /// h.record(std::time::Duration::from_millis(5));
    /// assert_eq!(h.count, 1);
    /// ```
    pub fn record(&mut self, d: Duration) {
        self.buckets[Self::bucket_of(d)] += 1;
        self.count += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos(d));
    }

    /// The upper bound of the bucket holding the `q` quantile (`0.0..=1.0`),
    /// or `None` if nothing was recorded. The +Inf bucket reports the largest
    /// finite bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut h = hookpool::Histogram::default();
    /// for _ in 0..99 { h.record(Duration::from_micros(3)); }
    /// h.record(Duration::from_millis(100));
    /// assert_eq!(h.percentile(0.5), Some(Duration::from_micros(4)));
    /// assert_eq!(h.percentile(1.0), Some(Duration::from_micros(131072)));
    /// ```
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the sample at quantile q, at least the first sample.
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::upper_bound(i.min(FINITE_BUCKETS - 1)).unwrap_or_default());
            }
        }
        Self::upper_bound(FINITE_BUCKETS - 1)
    }

    /// The median, as [`percentile(0.5)`](Histogram::percentile).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Histogram::default().p50(), None);
    /// ```
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.5)
    }

    /// The 90th percentile.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Histogram::default().p90(), None);
    /// ```
    pub fn p90(&self) -> Option<Duration> {
        self.percentile(0.9)
    }

    /// The 99th percentile.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Histogram::default().p99(), None);
    /// ```
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }

    /// The mean of the recorded durations, or `None` if there are none.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut h = hookpool::Histogram::default();
    /// h.record(Duration::from_millis(1));
    /// h.record(Duration::from_millis(3));
    /// assert_eq!(h.mean(), Some(Duration::from_millis(2)));
    /// ```
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.sum_nanos / self.count))
    }

    /// Adds another snapshot's counts to this one.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut a = hookpool::Histogram::default();
    /// let mut b = hookpool::Histogram::default();
    /// b.record(std::time::Duration::from_millis(1));
    /// a.merge(&b);
    /// assert_eq!(a.count, 1);
    /// ```
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The live, lock-free side of a [`Histogram`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    buckets: [AtomicU64; SLOTS],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Recorder {
    /// Records from the one thread that owns this recorder.
    #[inline]
    pub(crate) fn record_owned(&self, d: Duration) {
        bump_owned(&self.buckets[Histogram::bucket_of(d)], 1);
        bump_owned(&self.sum_nanos, nanos(d));
        bump_owned(&self.count, 1);
    }

    /// Records from any thread.
    pub(crate) fn record_shared(&self, d: Duration) {
        self.buckets[Histogram::bucket_of(d)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos(d), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this recorder's counts into a snapshot.
    pub(crate) fn add_to(&self, h: &mut Histogram) {
        let mut total = 0;
        for (slot, bucket) in h.buckets.iter_mut().zip(&self.buckets) {
            let n = bucket.load(Ordering::Relaxed);
            *slot += n;
            total += n;
        }
        // `count` is derived from the buckets so the two always agree in a
        // snapshot taken while workers record.
        h.count += total;
        h.sum_nanos = h
            .sum_nanos
            .saturating_add(self.sum_nanos.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_countdown_measures_the_first_then_one_in_n_and_zero_never() {
        let picks = |gate: &GateSlot, sends: usize| -> Vec<usize> {
            (0..sends).filter(|_| gate.stamp_this_one()).collect()
        };
        let gate = GateSlot::new(3);
        assert_eq!(picks(&gate, 10), [0, 3, 6, 9]);
        assert_eq!(picks(&GateSlot::new(1), 4), [0, 1, 2, 3]);
        let off = GateSlot::new(0);
        assert!(picks(&off, 1000).is_empty());
        // Even when the countdown from u64::MAX runs out.
        off.stamp_countdown.store(1, Ordering::Relaxed);
        assert!(picks(&off, 1000).is_empty());
    }

    #[test]
    fn every_duration_lands_in_the_bucket_whose_bounds_hold_it() {
        for nanos in [
            0u64,
            1,
            999,
            1000,
            1001,
            1999,
            2000,
            2001,
            4096,
            1_000_000,
            1_048_576_000,
            u64::MAX,
        ] {
            let d = Duration::from_nanos(nanos);
            let i = Histogram::bucket_of(d);
            if let Some(upper) = Histogram::upper_bound(i) {
                assert!(d <= upper, "{d:?} above bucket {i}'s bound {upper:?}");
            }
            if i > 0 {
                let lower = Histogram::upper_bound(i - 1).unwrap();
                assert!(
                    d > lower,
                    "{d:?} not above bucket {}'s bound {lower:?}",
                    i - 1
                );
            }
        }
    }

    #[test]
    fn recorders_and_snapshots_agree() {
        let r = Recorder::default();
        let mut expected = Histogram::default();
        for micros in [0u64, 1, 2, 3, 500, 70_000, 10_000_000_000] {
            r.record_owned(Duration::from_micros(micros));
            expected.record(Duration::from_micros(micros));
        }
        r.record_shared(Duration::from_millis(7));
        expected.record(Duration::from_millis(7));
        let mut got = Histogram::default();
        r.add_to(&mut got);
        assert_eq!(got, expected);
        assert_eq!(got.buckets[FINITE_BUCKETS], 1);
    }
}
