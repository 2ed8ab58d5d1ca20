//! Job throughput micro benchmark: the time to submit `JOBS` jobs and have
//! every one of them run, for no-op jobs and for tiny jobs (about 1 µs of
//! spinning each).
//!
//! Variants, each with 2 workers (the machine has 2 cores):
//!
//! - `hookpool`: a `Pool` with `QUEUE` slots, fed with `submit_timeout`.
//! - `threadpool`: the `threadpool` crate (unbounded std channel behind a
//!   mutex), fed with `execute`; its queue never fills, so it never blocks.
//! - `crossbeam_workers`: hand-written workers, a crossbeam `bounded(QUEUE)`
//!   channel of the same job type as hookpool's, fed with `send_timeout`.
//! - `rayon_spawn`: a 2-thread rayon `ThreadPool`, fed with `spawn`
//!   (unbounded, never blocks).
//! - `thread_per_job`: one `std::thread::spawn` per job, at most
//!   `THREAD_CAP` alive at once (a counting semaphore of `Mutex` + `Condvar`).
//!
//! Pools are built once per benchmark and reused, so a measurement is steady
//! state: from the first submit to the moment the last job has run.
//!
//! Completion is counted the same way for every pooled variant: each job
//! bumps a counter owned by the worker thread running it (single writer,
//! cache-padded, so no contention between workers), and the harness polls
//! the sum every `POLL`. `thread_per_job` knows it is done when the semaphore
//! is back to zero.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use hookpool::Pool;

/// Jobs per measured iteration.
const JOBS: u64 = 100_000;
/// Worker threads for every pooled variant.
const WORKERS: usize = 2;
/// Queue bound for the bounded variants (hookpool's default capacity).
const QUEUE: usize = 1024;
/// Most threads alive at once in `thread_per_job`.
const THREAD_CAP: usize = 16;
/// How often the harness checks whether every job has run.
const POLL: Duration = Duration::from_micros(50);
/// Long enough never to expire: a blocked submit waits for room.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// One completion counter per worker thread, each on its own cache lines.
#[repr(align(128))]
struct Slot(AtomicU64);

const SLOTS: usize = 64;
static DONE: [Slot; SLOTS] = [const { Slot(AtomicU64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: usize = {
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        assert!(slot < SLOTS, "more pooled worker threads than completion slots");
        slot
    };
}

/// Records one finished job on the calling worker thread's counter.
#[inline]
fn job_done() {
    MY_SLOT.with(|&slot| {
        let counter = &DONE[slot].0;
        // Only this thread writes this slot, so a load and a store suffice.
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
    });
}

fn done_total() -> u64 {
    let used = NEXT_SLOT.load(Ordering::Relaxed).min(SLOTS);
    DONE[..used]
        .iter()
        .map(|s| s.0.load(Ordering::Acquire))
        .sum()
}

/// Waits until `target` jobs have finished in total.
fn wait_done(target: u64) {
    while done_total() < target {
        thread::sleep(POLL);
    }
}

/// Loop iterations that take about 1 µs on this machine, measured once.
fn spin_iters_per_us() -> u64 {
    static ITERS: OnceLock<u64> = OnceLock::new();
    *ITERS.get_or_init(|| {
        let probe = 1_000_000;
        spin(probe); // warm up
        // The fastest of several probes: a probe that was preempted only
        // looks slower.
        let fastest = (0..9)
            .map(|_| {
                let started = Instant::now();
                spin(probe);
                started.elapsed()
            })
            .min()
            .expect("nine probes");
        let per_us = probe as f64 / (fastest.as_nanos() as f64 / 1_000.0);
        let iters = per_us.round().max(1.0) as u64;
        eprintln!("tiny job: {iters} spin iterations ≈ 1 µs");
        iters
    })
}

/// The job body: `iters` rounds of work the optimiser cannot remove.
#[inline]
fn spin(iters: u64) {
    let mut acc = 0u64;
    for i in 0..iters {
        acc = acc.wrapping_add(black_box(i));
    }
    black_box(acc);
}

/// A job: how much to spin. Every variant runs exactly this.
#[inline]
fn run_job(iters: u64) {
    spin(iters);
}

fn bench_hookpool(
    group: &mut BenchmarkGroup<'_, WallTime>,
    kind: &str,
    iters: u64,
    id: &str,
    capacity: usize,
) {
    let pool = Pool::builder()
        .workers(WORKERS)
        .queue_capacity(capacity)
        .name("bench")
        .build(move |job: u64| {
            run_job(job);
            job_done();
            Ok::<(), Infallible>(())
        })
        .expect("pool builds");
    group.bench_function(BenchmarkId::new(id, kind), |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            for _ in 0..n {
                let target = done_total() + JOBS;
                for _ in 0..JOBS {
                    pool.submit_timeout(iters, SUBMIT_TIMEOUT)
                        .expect("the workers free room");
                }
                wait_done(target);
            }
            started.elapsed()
        });
    });
    assert!(pool.shutdown().is_complete());
}

fn bench_threadpool(group: &mut BenchmarkGroup<'_, WallTime>, kind: &str, iters: u64) {
    let pool = threadpool::ThreadPool::new(WORKERS);
    group.bench_function(BenchmarkId::new("threadpool", kind), |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            for _ in 0..n {
                let target = done_total() + JOBS;
                for _ in 0..JOBS {
                    pool.execute(move || {
                        run_job(iters);
                        job_done();
                    });
                }
                wait_done(target);
            }
            started.elapsed()
        });
    });
    pool.join();
}

fn bench_crossbeam_workers(group: &mut BenchmarkGroup<'_, WallTime>, kind: &str, iters: u64) {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(QUEUE);
    let workers: Vec<JoinHandle<()>> = (0..WORKERS)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || {
                while let Ok(job) = rx.recv() {
                    run_job(job);
                    job_done();
                }
            })
        })
        .collect();
    group.bench_function(BenchmarkId::new("crossbeam_workers", kind), |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            for _ in 0..n {
                let target = done_total() + JOBS;
                for _ in 0..JOBS {
                    tx.send_timeout(iters, SUBMIT_TIMEOUT)
                        .expect("the workers free room");
                }
                wait_done(target);
            }
            started.elapsed()
        });
    });
    drop(tx);
    for w in workers {
        w.join().expect("worker thread");
    }
}

fn bench_rayon(group: &mut BenchmarkGroup<'_, WallTime>, kind: &str, iters: u64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .expect("rayon pool builds");
    group.bench_function(BenchmarkId::new("rayon_spawn", kind), |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            for _ in 0..n {
                let target = done_total() + JOBS;
                for _ in 0..JOBS {
                    pool.spawn(move || {
                        run_job(iters);
                        job_done();
                    });
                }
                wait_done(target);
            }
            started.elapsed()
        });
    });
}

/// Counts live job threads and lets the spawner wait for a free place.
#[derive(Default)]
struct Semaphore {
    alive: Mutex<usize>,
    changed: Condvar,
}

impl Semaphore {
    fn acquire(&self, cap: usize) {
        let mut alive = self.alive.lock().expect("not poisoned");
        while *alive >= cap {
            alive = self.changed.wait(alive).expect("not poisoned");
        }
        *alive += 1;
    }

    fn release(&self) {
        *self.alive.lock().expect("not poisoned") -= 1;
        // Only the spawning thread ever waits.
        self.changed.notify_one();
    }

    fn wait_zero(&self) {
        let mut alive = self.alive.lock().expect("not poisoned");
        while *alive > 0 {
            alive = self.changed.wait(alive).expect("not poisoned");
        }
    }
}

fn bench_thread_per_job(group: &mut BenchmarkGroup<'_, WallTime>, kind: &str, iters: u64) {
    let semaphore = Arc::new(Semaphore::default());
    group.bench_function(BenchmarkId::new("thread_per_job", kind), |b| {
        b.iter_custom(|n| {
            let started = Instant::now();
            // Every thread is joined: finished ones as the loop goes (so no
            // exited thread keeps its stack), the rest at the end.
            let mut running = std::collections::VecDeque::new();
            for _ in 0..n {
                for _ in 0..JOBS {
                    semaphore.acquire(THREAD_CAP);
                    let semaphore = Arc::clone(&semaphore);
                    let handle = thread::Builder::new()
                        .spawn(move || {
                            run_job(iters);
                            semaphore.release();
                        })
                        .expect("thread spawns");
                    running.push_back(handle);
                    while running.front().is_some_and(thread::JoinHandle::is_finished) {
                        if let Some(done) = running.pop_front() {
                            done.join().expect("job thread");
                        }
                    }
                }
                semaphore.wait_zero();
            }
            for handle in running {
                handle.join().expect("job thread");
            }
            started.elapsed()
        });
    });
}

fn throughput(c: &mut Criterion) {
    for (kind, iters) in [("noop", 0), ("tiny_1us", spin_iters_per_us())] {
        let mut group = c.benchmark_group(format!("throughput_100k/{kind}"));
        group
            .throughput(Throughput::Elements(JOBS))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        bench_hookpool(&mut group, kind, iters, "hookpool", QUEUE);
        // A queue that holds every job, as threadpool's and rayon's
        // unbounded ones do: the producer never waits for the workers.
        bench_hookpool(&mut group, kind, iters, "hookpool_queue_131072", 1 << 17);
        bench_threadpool(&mut group, kind, iters);
        bench_crossbeam_workers(&mut group, kind, iters);
        bench_rayon(&mut group, kind, iters);
        // Spawning costs tens of µs on the 2-core VM: an iteration takes
        // seconds, and criterion's minimum of 10 samples sets the run time.
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(15));
        bench_thread_per_job(&mut group, kind, iters);
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
