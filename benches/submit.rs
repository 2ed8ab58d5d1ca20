//! Submit-path micro benchmark: `hookpool` `try_submit` against a raw
//! crossbeam bounded `try_send` and a std `sync_channel` `try_send`, with 1
//! and 2 producer threads.
//!
//! Every variant runs under the same conditions:
//!
//! - a bounded queue of `CAPACITY` slots;
//! - `CONSUMERS` threads that receive in a loop and count what they took
//!   (hookpool's own workers; for the raw channels, plain threads calling
//!   `recv`, with std's single-consumer `Receiver` shared behind a `Mutex`,
//!   which is how std's channel is shared, e.g. by `threadpool`);
//! - producer threads that live for the whole benchmark, one handle each.
//!
//! Sends are timed in batches of at most `BATCH` (well under `CAPACITY`).
//! Before each batch the queue is empty (the harness waits, untimed, until
//! the consumers have taken everything), so `Full` can never happen: every
//! timed send is an accepted send. Any refusal is counted and fails the
//! benchmark.
//!
//! Two modes:
//!
//! - `isolated`: before each batch every consumer takes a pause token and
//!   waits on a barrier until the batch is over, so the producers run alone:
//!   no receiver is parked on the channel (a send never has to wake one), no
//!   consumer competes for the 2 cores or for the queue's cache lines. This
//!   is the submit path itself.
//! - `live`: the consumers drain while the producers send, as in service.
//!   Consumer cost shows up here too, because 2 consumers and the producers
//!   share 2 cores.
//!
//! With 2 producers both threads start a batch together (a spin barrier) and
//! the batch time is wall time, from the earlier start to the later finish.
//! The reported time is per accepted send, over all producers.

use std::convert::Infallible;
use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use hookpool::{Pool, Submitter};

/// Queue capacity for every variant.
const CAPACITY: usize = 8192;
/// Sends per timed batch, over all producers. With the pause tokens it stays
/// below `CAPACITY`, so an empty queue never fills within a batch.
const BATCH: u64 = 4096;
/// Consumer threads for every variant (the machine has 2 cores).
const CONSUMERS: usize = 2;
/// The value that tells a consumer to wait out the batch; producers send
/// `0..BATCH` and never this.
const PAUSE: u64 = u64::MAX;

/// One producer's handle on the queue under test.
trait Producer: Send + 'static {
    /// Sends without blocking; `false` if the value was refused.
    fn send(&self, value: u64) -> bool;
}

impl Producer for Submitter<u64> {
    #[inline]
    fn send(&self, value: u64) -> bool {
        self.try_submit(value).is_ok()
    }
}

impl Producer for crossbeam_channel::Sender<u64> {
    #[inline]
    fn send(&self, value: u64) -> bool {
        self.try_send(value).is_ok()
    }
}

impl Producer for mpsc::SyncSender<u64> {
    #[inline]
    fn send(&self, value: u64) -> bool {
        self.try_send(value).is_ok()
    }
}

/// What every consumer does with a value, in every variant.
struct Consumers {
    consumed: AtomicU64,
    /// Consumers plus the harness: every consumer holds a pause token.
    paused: Barrier,
    resume: Barrier,
}

impl Consumers {
    fn new() -> Arc<Consumers> {
        Arc::new(Consumers {
            consumed: AtomicU64::new(0),
            paused: Barrier::new(CONSUMERS + 1),
            resume: Barrier::new(CONSUMERS + 1),
        })
    }

    #[inline]
    fn take(&self, value: u64) {
        if value == PAUSE {
            // Holding this thread here makes the other consumer take the
            // other token.
            self.paused.wait();
            self.resume.wait();
        } else {
            black_box(value);
            self.consumed.fetch_add(1, Ordering::Release);
        }
    }
}

/// A queue with its consumers running: one handle per producer plus one for
/// the harness, and how to stop the consumers (drop the last sender or shut
/// the pool down, then join).
struct Setup<P> {
    handles: Vec<P>,
    consumers: Arc<Consumers>,
    teardown: Box<dyn FnOnce()>,
}

fn hookpool_setup(handles: usize) -> Setup<Submitter<u64>> {
    let consumers = Consumers::new();
    let sink = Arc::clone(&consumers);
    let pool = Pool::builder()
        .workers(CONSUMERS)
        .queue_capacity(CAPACITY)
        .name("bench")
        .build(move |value: u64| {
            sink.take(value);
            Ok::<(), Infallible>(())
        })
        .expect("pool builds");
    Setup {
        handles: (0..handles).map(|_| pool.submitter()).collect(),
        consumers,
        teardown: Box::new(move || {
            let report = pool.shutdown();
            assert!(report.is_complete(), "every job ran");
        }),
    }
}

fn crossbeam_setup(handles: usize) -> Setup<crossbeam_channel::Sender<u64>> {
    let consumers = Consumers::new();
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAPACITY);
    let threads: Vec<JoinHandle<()>> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            let sink = Arc::clone(&consumers);
            thread::spawn(move || {
                while let Ok(value) = rx.recv() {
                    sink.take(value);
                }
            })
        })
        .collect();
    Setup {
        handles: (0..handles).map(|_| tx.clone()).collect(),
        consumers,
        teardown: Box::new(move || {
            drop(tx);
            for t in threads {
                t.join().expect("consumer thread");
            }
        }),
    }
}

fn sync_channel_setup(handles: usize) -> Setup<mpsc::SyncSender<u64>> {
    let consumers = Consumers::new();
    let (tx, rx) = mpsc::sync_channel::<u64>(CAPACITY);
    let rx = Arc::new(Mutex::new(rx));
    let threads: Vec<JoinHandle<()>> = (0..CONSUMERS)
        .map(|_| {
            let rx = Arc::clone(&rx);
            let sink = Arc::clone(&consumers);
            thread::spawn(move || {
                loop {
                    // The guard is a temporary of this statement, so the lock
                    // is released before the value is handled.
                    let next = rx.lock().expect("not poisoned").recv();
                    let Ok(value) = next else { break };
                    sink.take(value);
                }
            })
        })
        .collect();
    Setup {
        handles: (0..handles).map(|_| tx.clone()).collect(),
        consumers,
        teardown: Box::new(move || {
            drop(tx);
            for t in threads {
                t.join().expect("consumer thread");
            }
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Isolated,
    Live,
}

/// State the harness shares with its producer threads.
struct Control {
    /// Producers plus the harness thread.
    start: Barrier,
    finish: Barrier,
    /// Sends per producer in the next batch; 0 tells the producers to exit.
    per_producer: AtomicU64,
    /// Spin barrier so that producers start a batch together, not one
    /// futex wake-up apart.
    arrived: AtomicUsize,
    refused: AtomicU64,
    stamps: Mutex<Vec<(Instant, Instant)>>,
}

/// Producer threads that live for one benchmark and send batches on demand.
struct Rig<P> {
    control: Arc<Control>,
    producers: Vec<JoinHandle<()>>,
    /// The harness's handle, for pause tokens. Dropped before teardown so
    /// that the raw channels disconnect.
    own: Option<P>,
    consumers: Arc<Consumers>,
    expected: u64,
    teardown: Option<Box<dyn FnOnce()>>,
}

impl<P: Producer> Rig<P> {
    fn new(mut setup: Setup<P>) -> Rig<P> {
        let own = setup.handles.pop().expect("a handle for the harness");
        let count = setup.handles.len();
        let control = Arc::new(Control {
            start: Barrier::new(count + 1),
            finish: Barrier::new(count + 1),
            per_producer: AtomicU64::new(0),
            arrived: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            stamps: Mutex::new(Vec::with_capacity(count)),
        });
        let producers = setup
            .handles
            .into_iter()
            .map(|handle| {
                let control = Arc::clone(&control);
                thread::spawn(move || produce(&handle, &control, count))
            })
            .collect();
        Rig {
            control,
            producers,
            own: Some(own),
            consumers: setup.consumers,
            expected: 0,
            teardown: Some(setup.teardown),
        }
    }

    /// Times `iters` accepted sends spread over the producers.
    fn measure(&mut self, iters: u64, mode: Mode) -> Duration {
        let count = self.producers.len() as u64;
        let mut remaining = iters;
        let mut sent = 0u64;
        let mut timed = Duration::ZERO;
        while remaining > 0 {
            let batch = remaining.min(BATCH);
            let per = batch.div_ceil(count);
            if mode == Mode::Isolated {
                let own = self.own.as_ref().expect("live until drop");
                for _ in 0..CONSUMERS {
                    assert!(own.send(PAUSE), "the queue is empty");
                }
                self.consumers.paused.wait();
            }
            self.control.per_producer.store(per, Ordering::Release);
            self.control.start.wait();
            self.control.finish.wait();
            if mode == Mode::Isolated {
                self.consumers.resume.wait();
            }
            let stamps: Vec<_> = self
                .control
                .stamps
                .lock()
                .expect("not poisoned")
                .drain(..)
                .collect();
            let first = stamps.iter().map(|s| s.0).min().expect("a stamp");
            let last = stamps.iter().map(|s| s.1).max().expect("a stamp");
            timed += last - first;
            assert_eq!(
                self.control.refused.load(Ordering::Acquire),
                0,
                "a send was refused: the benchmark must never see a full queue"
            );
            sent += per * count;
            remaining -= batch;
            // Untimed: the next batch starts on an empty queue.
            self.expected += per * count;
            while self.consumers.consumed.load(Ordering::Acquire) < self.expected {
                thread::yield_now();
            }
        }
        timed.mul_f64(iters as f64 / sent as f64)
    }
}

impl<P> Drop for Rig<P> {
    fn drop(&mut self) {
        self.control.per_producer.store(0, Ordering::Release);
        self.control.start.wait();
        for p in self.producers.drain(..) {
            p.join().expect("producer thread");
        }
        self.own = None;
        if let Some(teardown) = self.teardown.take() {
            teardown();
        }
    }
}

fn produce<P: Producer>(handle: &P, control: &Control, count: usize) {
    let mut round = 0;
    loop {
        control.start.wait();
        let per = control.per_producer.load(Ordering::Acquire);
        if per == 0 {
            return;
        }
        round += 1;
        control.arrived.fetch_add(1, Ordering::AcqRel);
        while control.arrived.load(Ordering::Acquire) < round * count {
            spin_loop();
        }
        let mut refused = 0;
        let t0 = Instant::now();
        for value in 0..per {
            if !handle.send(value) {
                refused += 1;
            }
        }
        let t1 = Instant::now();
        control.refused.fetch_add(refused, Ordering::AcqRel);
        control.stamps.lock().expect("not poisoned").push((t0, t1));
        control.finish.wait();
    }
}

fn bench_variant<P: Producer>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mode: Mode,
    producers: usize,
    setup: fn(usize) -> Setup<P>,
) {
    let mut rig = Rig::new(setup(producers + 1));
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_custom(|iters| rig.measure(iters, mode));
    });
}

fn submit(c: &mut Criterion) {
    for (mode, label) in [(Mode::Isolated, "isolated"), (Mode::Live, "live")] {
        for producers in [1, 2] {
            let mut group = c.benchmark_group(format!("submit_{label}/{producers}p"));
            bench_variant(&mut group, "hookpool", mode, producers, hookpool_setup);
            bench_variant(&mut group, "crossbeam", mode, producers, crossbeam_setup);
            bench_variant(
                &mut group,
                "sync_channel",
                mode,
                producers,
                sync_channel_setup,
            );
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = submit
}
criterion_main!(benches);
