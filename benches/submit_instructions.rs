//! A deterministic companion to `benches/submit.rs`: the submit path under
//! `valgrind --tool=callgrind`, which counts instructions instead of timing.
//!
//! Each `*_loop` function makes `SENDS` accepted sends into an empty queue
//! that no consumer is reading (hookpool's one worker is held inside its
//! first job), the `isolated` case of `submit.rs` with nothing else running.
//! Every variant carries the same `u64` payload.
//!
//! ```sh
//! cargo bench --bench submit_instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/deps/submit_instructions-*
//! callgrind_annotate --inclusive=yes cg.out | grep _loop
//! ```
//!
//! Divide each loop's inclusive count by `SENDS` for instructions per send.
//!
//! Run by `cargo bench --bench submit_instructions` it times instead: rounds
//! of one 4096-send batch per variant in turn (`ROUNDS`, default 2000), and
//! prints the minimum and median per variant. The minimum shrugs off the
//! other processes of a shared machine far better than a mean does. A second
//! hookpool variant with `queue_wait_sampling(0)` shows what measuring the
//! queue wait adds to a submission (issue 4, point 5).

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use hookpool::{Pool, Submitter};

/// Accepted sends per loop.
const SENDS: u64 = 100_000;
/// Room for every send, plus the job that holds the worker.
const CAPACITY: usize = 1 << 17;

#[inline(never)]
fn hookpool_loop(s: &Submitter<u64>) -> u64 {
    let mut accepted = 0;
    for value in 0..SENDS {
        accepted += u64::from(s.try_submit(black_box(value)).is_ok());
    }
    accepted
}

#[inline(never)]
fn crossbeam_loop(tx: &crossbeam_channel::Sender<u64>) -> u64 {
    let mut accepted = 0;
    for value in 0..SENDS {
        accepted += u64::from(tx.try_send(black_box(value)).is_ok());
    }
    accepted
}

#[inline(never)]
fn sync_channel_loop(tx: &mpsc::SyncSender<u64>) -> u64 {
    let mut accepted = 0;
    for value in 0..SENDS {
        accepted += u64::from(tx.try_send(black_box(value)).is_ok());
    }
    accepted
}

/// Sends per timed batch in timing mode.
const BATCH: u64 = 4096;
/// Queue capacity in timing mode, as in `benches/submit.rs`.
const TIMED_CAPACITY: usize = 8192;

/// Times one batch of `BATCH` sends with `send`, in ns per send.
fn time_batch(mut send: impl FnMut(u64) -> bool) -> f64 {
    let start = Instant::now();
    let mut accepted = 0;
    for value in 0..BATCH {
        accepted += u64::from(send(black_box(value)));
    }
    let elapsed = start.elapsed();
    assert_eq!(accepted, BATCH);
    elapsed.as_nanos() as f64 / BATCH as f64
}

/// A hookpool under test in timing mode: one worker, held inside a job
/// while a batch is timed, so nothing reads the queue meanwhile.
struct Held {
    pool: Pool<u64>,
    submitter: Submitter<u64>,
    hold: crossbeam_channel::Sender<()>,
    started: crossbeam_channel::Receiver<()>,
    ran: Arc<AtomicU64>,
    expected: u64,
}

impl Held {
    fn new(queue_wait_sampling: Option<u32>) -> Self {
        let (hold, hold_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
        let ran = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&ran);
        let mut builder = Pool::builder().workers(1).queue_capacity(TIMED_CAPACITY);
        if let Some(one_in) = queue_wait_sampling {
            builder = builder.queue_wait_sampling(one_in);
        }
        let pool = builder
            .build(move |value: u64| {
                if value == u64::MAX {
                    started_tx.send(()).ok();
                    hold_rx.recv().ok();
                }
                counted.fetch_add(1, Ordering::Release);
                Ok::<(), Infallible>(())
            })
            .expect("pool builds");
        let submitter = pool.submitter();
        Held {
            pool,
            submitter,
            hold,
            started,
            ran,
            expected: 0,
        }
    }

    /// One timed batch into the empty queue; the worker then drains it.
    fn batch(&mut self) -> f64 {
        self.submitter.try_submit(u64::MAX).expect("room");
        self.started
            .recv()
            .expect("the worker took the holding job");
        let s = &self.submitter;
        let ns = time_batch(|v| s.try_submit(v).is_ok());
        self.hold.send(()).expect("the worker is held");
        self.expected += BATCH + 1;
        while self.ran.load(Ordering::Acquire) < self.expected {
            std::thread::yield_now();
        }
        ns
    }

    fn finish(self) {
        drop(self.submitter);
        assert!(self.pool.shutdown().is_complete());
    }
}

/// Timing mode: `rounds` rounds, each one batch per variant in turn, into
/// an empty queue nobody is reading; prints the minimum and median ns per
/// send and each against crossbeam. `hookpool, no queue wait` is the same
/// pool with `queue_wait_sampling(0)`: the difference between the two is
/// what recording the queue wait costs a submission.
fn time(rounds: usize) {
    let mut sampled = Held::new(None);
    let mut unsampled = Held::new(Some(0));
    // The raw channels are drained by a thread of their own, as hookpool's
    // queue is by its worker, so that every variant finds the queue's
    // cache lines where another core left them.
    let (cb_tx, cb_rx) = crossbeam_channel::bounded::<u64>(TIMED_CAPACITY);
    let (std_tx, std_rx) = mpsc::sync_channel::<u64>(TIMED_CAPACITY);
    let (drain_tx, drain_rx) = crossbeam_channel::bounded::<u8>(0);
    let (drained_tx, drained) = crossbeam_channel::bounded::<()>(0);
    let drainer = std::thread::spawn(move || {
        while let Ok(which) = drain_rx.recv() {
            if which == 0 {
                cb_rx.try_iter().for_each(drop);
            } else {
                std_rx.try_iter().for_each(drop);
            }
            drained_tx.send(()).expect("harness waits");
        }
    });
    let drain = |which: u8| {
        drain_tx.send(which).expect("drainer runs");
        drained.recv().expect("drainer answers");
    };

    let mut times: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        times[0].push(sampled.batch());
        times[1].push(unsampled.batch());
        times[2].push(time_batch(|v| cb_tx.try_send(v).is_ok()));
        drain(0);
        times[3].push(time_batch(|v| std_tx.try_send(v).is_ok()));
        drain(1);
    }
    let stat = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        (t[0], t[t.len() / 2])
    };
    let [hp, bare, cb, sc] = times.each_mut().map(stat);
    println!("{rounds} rounds of {BATCH} sends, ns per send (min / median), ratio to crossbeam");
    for (name, (min, median)) in [
        ("hookpool", hp),
        ("hookpool, no queue wait", bare),
        ("crossbeam", cb),
        ("sync_channel", sc),
    ] {
        println!(
            "{name:<24} {min:6.2} / {median:6.2}   {:.2}x / {:.2}x",
            min / cb.0,
            median / cb.1
        );
    }
    println!(
        "recording the queue wait: {:+.2} / {:+.2} ns per send",
        hp.0 - bare.0,
        hp.1 - bare.1
    );
    sampled.finish();
    unsampled.finish();
    drop(drain_tx);
    drainer.join().expect("drainer");
}

fn main() {
    // `cargo bench` passes `--bench`; callgrind runs the binary bare.
    if std::env::args().any(|a| a == "--bench") {
        let rounds = std::env::var("ROUNDS").map_or(2000, |r| r.parse().expect("ROUNDS"));
        return time(rounds);
    }
    // hookpool: one worker, held inside the first job until the loop ends.
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(CAPACITY)
        .build(move |value: u64| {
            if value == u64::MAX {
                started_tx.send(()).ok();
                held.recv().ok();
            }
            Ok::<(), Infallible>(())
        })
        .expect("pool builds");
    let submitter = pool.submitter();
    submitter.try_submit(u64::MAX).expect("room");
    started.recv().expect("the worker took the holding job");
    assert_eq!(hookpool_loop(&submitter), SENDS);
    drop(release);
    drop(submitter);
    assert!(pool.shutdown().is_complete());

    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    assert_eq!(crossbeam_loop(&tx), SENDS);
    drop(rx);

    let (tx, rx) = mpsc::sync_channel::<u64>(CAPACITY);
    assert_eq!(sync_channel_loop(&tx), SENDS);
    drop(rx);
}
