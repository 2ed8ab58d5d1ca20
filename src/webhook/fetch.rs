//! The fetcher: with a queue shared by processes, one thread claims
//! webhooks from it into this process's bounded queue, as much as there is
//! room for. The workers take them from there as from any queue, so
//! backpressure and the worker code stay as they are.
//!
//! With the queue full, the fetcher sleeps until the workers have drained
//! it to half (the pool's low-water mark), and they wake it as they wake a
//! producer blocked in `submit_timeout` (see `pool::room`). Polling instead
//! (every 2 ms, as before) left a small queue's workers idle for most of
//! each poll: 16 no-op deliveries take well under 2 ms. Waiting for half
//! keeps each claim, a round trip to Redis, a batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::SubmitError;
use crate::pool::Submitter;
use crate::webhook::deliver::Engine;
use crate::webhook::delivery::Delivery;

/// The most claimed in one go.
const MAX_CLAIM: usize = 256;
/// An idle poll waits this long at first, doubling up to `MAX_IDLE`.
const FIRST_IDLE: Duration = Duration::from_millis(2);
const MAX_IDLE: Duration = Duration::from_millis(100);
/// After the shared queue failed, the first wait; doubles up to 2 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait for the workers to drain the queue to half before
/// looking again. The workers' wake is not lost (`pool::room`), so this
/// only bounds the cost of a bug; a test with a queue of one would take
/// minutes if it were what moved the webhooks.
const ROOM_SAFETY_NET: Duration = Duration::from_secs(1);

/// The fetcher's stop flag, and the condition variable of its other naps.
type Stop = (AtomicBool, Mutex<()>, Condvar);

/// A running fetcher; [`stop`](Fetcher::stop) ends it.
pub(crate) struct Fetcher {
    stop: Arc<Stop>,
    /// To wake the thread from a wait for room.
    room: Submitter<Delivery>,
    thread: Option<JoinHandle<()>>,
}

impl Fetcher {
    pub(crate) fn start(
        engine: Arc<Engine>,
        submitter: Submitter<Delivery>,
        capacity: usize,
        name: &str,
    ) -> std::io::Result<Fetcher> {
        let stop = Arc::new((AtomicBool::new(false), Mutex::new(()), Condvar::new()));
        let flag = Arc::clone(&stop);
        let room = submitter.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-fetch"))
            .spawn(move || run(&engine, &submitter, capacity, &flag))?;
        Ok(Fetcher {
            stop,
            room,
            thread: Some(thread),
        })
    }

    /// Stops claiming and joins the thread: what it claimed is in the queue.
    pub(crate) fn stop(&mut self) {
        let (flag, lock, wake) = &*self.stop;
        {
            let _guard = lock.lock();
            flag.store(true, Ordering::SeqCst);
            wake.notify_all();
        }
        // After the flag: the wait for room checks it under the room's lock.
        self.room.wake_room_waiters();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!(target: "hookpool", "the fetcher thread panicked");
            }
        }
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(engine: &Engine, submitter: &Submitter<Delivery>, capacity: usize, stop: &Stop) {
    let (flag, lock, wake) = stop;
    let Some(store) = engine.store.as_ref() else {
        return;
    };
    let stopping = || flag.load(Ordering::SeqCst);
    let low_water = submitter.low_water();
    // A claim this large waits for nothing: the room the queue has once
    // drained to the low-water mark.
    let batch = capacity.saturating_sub(low_water).clamp(1, MAX_CLAIM);
    let mut idle = FIRST_IDLE;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if stopping() {
            return;
        }
        // Room: what the queue can take, less what waits at endpoints.
        let queued = submitter.queued();
        let taken = queued + engine.lanes.parked();
        let room = capacity.saturating_sub(taken).min(MAX_CLAIM);
        if room < batch && queued > low_water {
            let deadline = crate::clock::deadline_after(Instant::now(), ROOM_SAFETY_NET);
            submitter.wait_for_batch_room(deadline, stopping);
            continue;
        }
        let nap = if room == 0 {
            // Deliveries parked at their endpoints hold the room, and
            // nothing wakes the fetcher when they leave: poll.
            FIRST_IDLE
        } else {
            match store.claim(room) {
                Ok(rows) if rows.is_empty() => {
                    backoff = FIRST_BACKOFF;
                    let nap = idle;
                    idle = (idle * 2).min(MAX_IDLE);
                    nap
                }
                Ok(rows) => {
                    backoff = FIRST_BACKOFF;
                    idle = FIRST_IDLE;
                    take(engine, submitter, rows);
                    continue;
                }
                Err(_) => {
                    // The store logged it, rate-limited.
                    let nap = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    nap
                }
            }
        };
        let mut guard = lock.lock();
        if !stopping() {
            wake.wait_for(&mut guard, nap);
        }
    }
}

/// Queues what was claimed; a row that is no longer a valid webhook is
/// dead-lettered.
fn take(engine: &Engine, submitter: &Submitter<Delivery>, rows: Vec<crate::store::Row>) {
    use std::sync::atomic::Ordering;
    let (now, wall) = (engine.clock.now(), engine.clock.system_now());
    engine
        .counters
        .accepted
        .fetch_add(rows.len() as u64, Ordering::SeqCst);
    for row in rows {
        match Delivery::recovered(row, now, wall) {
            Ok((d, _)) => match submitter.try_submit(d) {
                Ok(()) => {}
                // Claimed for room that another took meanwhile: the delay
                // queue sends it on as room frees.
                Err(SubmitError::Full(d)) => {
                    if let Err(d) = engine.delay.schedule(now, d) {
                        engine.shut_out(d);
                    }
                }
                Err(SubmitError::Closed(d)) => engine.shut_out(d),
            },
            Err(bad) => {
                let (row, e) = *bad;
                engine.dead_letter_row(row, &e);
            }
        }
    }
}
