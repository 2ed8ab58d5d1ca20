//! The worker loop: take a job, run it inside `catch_unwind`, record.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use crossbeam_utils::Backoff;
use parking_lot::Mutex;

use super::builder::PanicEvent;
use super::room::{self, Wake};
use super::{Envelope, Never, Shared};
use crate::stats::{WorkerSlot, bump_owned, state};

/// Workers read the queue's depth for the high-water mark on one job in
/// this many.
const DEPTH_EVERY: u32 = 8;

/// One worker thread's view of the pool.
pub(super) struct Worker<J, F> {
    pub(super) index: usize,
    pub(super) rx: Receiver<Envelope<J>>,
    pub(super) stop: Receiver<Never>,
    pub(super) shared: Arc<Shared>,
    pub(super) returned: Arc<Mutex<Vec<J>>>,
    pub(super) handler: Arc<F>,
}

impl<J, F, E> Worker<J, F>
where
    F: Fn(J) -> Result<(), E>,
    E: fmt::Display,
{
    pub(super) fn run(self) {
        let slot = &self.shared.workers[self.index];
        // Marks the worker EXITED on every way out of this loop.
        let _exit = ExitGuard(slot);
        let mut stopping = false;
        // The end of the previous job, if the next one was taken without
        // waiting: it doubles as that job's start, saving a clock read.
        let mut last_end: Option<Instant> = None;
        // Jobs taken, for sampling the queue's depth.
        let mut taken: u32 = 0;
        // Jobs to take before looking again whether a waiting producer has
        // room (see `room`).
        let mut room_check: usize = 0;
        loop {
            let backoff = Backoff::new();
            let mut woke = false;
            let env = loop {
                match self.rx.try_recv() {
                    Ok(env) => break env,
                    Err(TryRecvError::Disconnected) => return,
                    // `stop` is only disconnected once intake is closed, so
                    // an empty queue now stays empty.
                    Err(TryRecvError::Empty) if stopping => return,
                    // An empty queue is room for anyone waiting to send:
                    // wake them once, then look again.
                    Err(TryRecvError::Empty) if !woke && self.shared.room.waiters() != 0 => {
                        woke = true;
                        room_check = 0;
                        last_end = None;
                        self.shared.room.notify();
                    }
                    // Jobs often arrive within microseconds: spin and yield
                    // a little before parking on the channel.
                    Err(TryRecvError::Empty) if !backoff.is_completed() => {
                        // Reuse the last end time only for a job that was
                        // already waiting.
                        last_end = None;
                        backoff.snooze();
                    }
                    Err(TryRecvError::Empty) => {
                        last_end = None;
                        crossbeam_channel::select! {
                            recv(self.rx) -> msg => match msg {
                                Ok(env) => break env,
                                Err(_) => return,
                            },
                            recv(self.stop) -> _ => stopping = true,
                        }
                    }
                }
            };
            if slot
                .state
                .compare_exchange(
                    state::IDLE,
                    state::RUNNING,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                self.returned.lock().push(env.job);
                return;
            }
            // Reading the depth means reading both ends of the queue, lines
            // the producers and the other workers keep writing: on no-op jobs
            // it cost a sixth of a worker's time. Every eighth job keeps the
            // high-water mark within eight jobs per worker of the peak.
            if taken % DEPTH_EVERY == 0 {
                // The queue was at least this deep just before this job left it.
                let depth = self.rx.len() + 1;
                if depth > slot.high_water.load(Ordering::Relaxed) {
                    slot.high_water.store(depth, Ordering::Relaxed);
                }
            }
            taken = taken.wrapping_add(1);
            let shared = &self.shared;
            match room::wake(
                shared.room.waiters(),
                room_check,
                || self.rx.len(),
                shared.low_water,
                shared.workers.len(),
            ) {
                Wake::After(jobs) => room_check = jobs,
                Wake::Now => {
                    room_check = 0;
                    shared.room.notify();
                }
            }
            let started = last_end.take().unwrap_or_else(Instant::now);
            last_end = Some(self.run_job(slot, env, started));
            if slot
                .state
                .compare_exchange(
                    state::RUNNING,
                    state::IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                return;
            }
        }
    }

    /// Runs one job; returns when it ended.
    #[inline]
    pub(super) fn run_job(&self, slot: &WorkerSlot, env: Envelope<J>, started: Instant) -> Instant {
        let shared = &self.shared;
        let started_nanos = shared.monitor.nanos(started);
        if let Some(enqueued) = env.enqueued {
            let waited = started_nanos.saturating_sub(enqueued.get());
            slot.queue_wait.record_owned(Duration::from_nanos(waited));
        }
        shared
            .monitor
            .tick_nanos(&shared.name, started_nanos, || shared.load(self.rx.len()));
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.handler)(env.job)));
        let ended = Instant::now();
        slot.run_time
            .record_owned(ended.saturating_duration_since(started));
        match outcome {
            Ok(Ok(())) => bump_owned(&slot.succeeded, 1),
            // Failures and panics are counted after they are logged (and
            // passed to the panic handler), so that a job the counters show
            // has been fully reported.
            Ok(Err(e)) => {
                // The error is user code too: its `Display` or `Drop` may
                // panic, and outside `catch_unwind` that would kill the
                // worker and strand the jobs still queued.
                let name = &self.shared.name;
                let logged = catch_unwind(AssertUnwindSafe(move || {
                    log::warn!(target: "hookpool", "{name}: job failed: {e}");
                    drop(e);
                }));
                if let Err(payload) = logged {
                    log::error!(
                        target: "hookpool",
                        "{name}: a job's error panicked while logged or dropped: {}",
                        panic_message(&*payload)
                    );
                    forget_payload(payload);
                }
                bump_owned(&slot.failed, 1);
            }
            Err(payload) => {
                self.report_panic(payload);
                bump_owned(&slot.panicked, 1);
            }
        }
        ended
    }

    #[cold]
    pub(super) fn report_panic(&self, payload: Box<dyn Any + Send>) {
        let message = panic_message(&*payload);
        let thread_name = format!("{}-{}", self.shared.name, self.index);
        log::error!(target: "hookpool", "{thread_name}: job panicked: {message}");
        if let Some(handler) = &self.shared.panic_handler {
            let event = PanicEvent {
                worker: self.index,
                thread_name: &thread_name,
                message,
                payload: &*payload,
            };
            if let Err(nested) = catch_unwind(AssertUnwindSafe(|| handler(&event))) {
                log::error!(target: "hookpool", "{thread_name}: panic handler panicked");
                forget_payload(nested);
            }
        }
        forget_payload(payload);
    }
}

/// Drops a panic payload, whose own `Drop` is user code and may panic too;
/// a payload that does is leaked rather than let unwind the worker.
fn forget_payload(payload: Box<dyn Any + Send>) {
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
    }
}

/// Marks a worker `EXITED` however its thread ends, a panic outside a job
/// included, so that `stats()` never counts a dead thread as a live worker.
struct ExitGuard<'a>(&'a WorkerSlot);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.state.store(state::EXITED, Ordering::Release);
    }
}

/// The text of a panic payload, for logs.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
