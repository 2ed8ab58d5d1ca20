//! The shared queue's connections and threads: a writer that sends state
//! changes in batches (one pipelined round trip per batch), a heartbeat
//! thread that also takes back dead workers' webhooks and reads the queue's
//! counts, and the connection `claim` uses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use redis::{Connection, Script, Value};

use super::scripts;
use super::{Job, Keys, Letter, RedisQueue, identity};
use crate::dead_letter::DeadLetter;
use crate::saturation::RateLimit;
use crate::stats::{Histogram, Recorder};
use crate::store::{
    Commit, Row, SharedQueueStats, Store, StoreError, StoreStats, StoredDeadLetter,
};

/// At most so many state changes go into one round trip.
const MAX_BATCH: usize = 1024;
/// The longest wait between two tries after Redis failed.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the queue's counts are read for stats.
const STATUS_EVERY: Duration = Duration::from_secs(1);

type Reply<T> = Sender<Result<T, StoreError>>;

enum Op {
    /// One webhook, or a batch enqueued together (one script: all or none).
    Enqueue {
        jobs: Vec<String>,
        done: Option<Reply<()>>,
        /// A waiter gives up at this time; past it the op is dropped.
        deadline: Instant,
        at: Instant,
    },
    Ack {
        key: u64,
        at: Instant,
    },
    Schedule {
        key: u64,
        job: String,
        due_ms: u64,
        at: Instant,
    },
    Bury {
        key: u64,
        letter: String,
        at: Instant,
    },
    Release {
        key: u64,
        at: Instant,
    },
    Letters {
        limit: usize,
        reply: Reply<Vec<StoredDeadLetter>>,
    },
    Revive {
        key: u64,
        /// When the replay accepted it, in Unix milliseconds.
        accepted_ms: u64,
        reply: Reply<bool>,
    },
    DeleteLetters {
        keys: Vec<u64>,
        reply: Reply<usize>,
    },
}

/// The scripts, compiled once (their SHA-1s).
struct Scripts {
    enqueue: Script,
    claim: Script,
    ack: Script,
    schedule: Script,
    bury: Script,
    release: Script,
    heartbeat: Script,
    reclaim: Script,
    status: Script,
    revive: Script,
    delete_letters: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            enqueue: Script::new(scripts::ENQUEUE),
            claim: Script::new(&scripts::claim()),
            ack: Script::new(scripts::ACK),
            schedule: Script::new(&scripts::schedule()),
            bury: Script::new(&scripts::bury()),
            release: Script::new(scripts::RELEASE),
            heartbeat: Script::new(&scripts::heartbeat()),
            reclaim: Script::new(&scripts::reclaim()),
            status: Script::new(&scripts::status()),
            revive: Script::new(scripts::REVIVE),
            delete_letters: Script::new(scripts::DELETE_LETTERS),
        }
    }

    fn all(&self) -> [&Script; 11] {
        [
            &self.enqueue,
            &self.claim,
            &self.ack,
            &self.schedule,
            &self.bury,
            &self.release,
            &self.heartbeat,
            &self.reclaim,
            &self.status,
            &self.revive,
            &self.delete_letters,
        ]
    }
}

#[derive(Debug, Default)]
struct Counters {
    pending: AtomicU64,
    pending_enqueues: AtomicU64,
    enqueued: AtomicU64,
    commits: AtomicU64,
    errors: AtomicU64,
    /// Late results of a process whose webhooks were taken back.
    stale: AtomicU64,
    reclaimed: AtomicU64,
    latency: Recorder,
}

/// Everything the threads and the callers share.
struct Shared {
    queue: RedisQueue,
    keys: Keys,
    worker: String,
    client: redis::Client,
    scripts: Scripts,
    counters: Counters,
    status: Mutex<SharedQueueStats>,
    /// Set when the store closes; the heartbeat thread waits on `wake`.
    closing: AtomicBool,
    wake: Condvar,
    wake_lock: Mutex<()>,
    warned: RateLimit,
    /// Late results are warned about at most every 10 s too.
    stale_warned: RateLimit,
    epoch: Instant,
    name: String,
    /// The keys this process took and has not yet settled (a count: a key
    /// may be taken again before the change that let it go is settled).
    /// Redis may hold more in this process's claims: what a claim took
    /// whose answer never came back (a timeout, an interrupted read).
    held: Mutex<HashMap<u64, u32>>,
}

impl Shared {
    /// A connection with the queue's timeouts.
    fn connect(&self) -> Result<Connection, redis::RedisError> {
        super::connect(&self.client, self.queue.timeout)
    }

    fn target(&self) -> String {
        self.queue.target()
    }

    fn unavailable(&self, e: &redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            target: self.target(),
            detail: e.to_string(),
        }
    }

    /// Logs a failure to reach Redis at warn level, at most every 10 s.
    fn warn(&self, what: &str, e: &redis::RedisError) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if self.warned.allow(now, Duration::from_secs(10)) {
            log::warn!(
                target: "hookpool",
                "{}: redis {}: {what} failed ({e}); trying again with backoff",
                self.name,
                self.target()
            );
        }
    }

    /// Runs `script`; reloads the scripts once if Redis lost them (it
    /// restarted).
    fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut Connection,
        script: &Script,
        keys: &[&str],
        args: &[String],
    ) -> redis::RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke(conn)
    }

    fn load_scripts(&self, conn: &mut Connection) -> redis::RedisResult<()> {
        for script in self.scripts.all() {
            script.load(conn)?;
        }
        Ok(())
    }
}

/// The fetcher's side of the store: its connection, and when to look for
/// strays in this process's claims.
struct Claimer {
    conn: Option<Connection>,
    strays_due: Instant,
}

/// The shared queue as a [`Store`].
pub(crate) struct RedisStore {
    shared: Arc<Shared>,
    ops: Mutex<Option<Sender<Op>>>,
    claim_conn: Mutex<Claimer>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
    max_pending: u64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.shared.target())
            .field("worker", &self.shared.worker)
            .finish_non_exhaustive()
    }
}

use std::fmt;

impl RedisStore {
    /// `rows` into the queue in one script (all or none); with
    /// [`Commit::Wait`], once Redis has them.
    fn enqueue(&self, rows: &[Row], commit: Commit) -> Result<(), StoreError> {
        let c = &self.shared.counters;
        let n = rows.len() as u64;
        // Room first: a sender that waits for room asks again and again,
        // and should not encode its webhook each time.
        let before = c.pending_enqueues.fetch_add(n, Ordering::Relaxed);
        if commit == Commit::NoWait && before >= self.max_pending {
            c.pending_enqueues.fetch_sub(n, Ordering::Relaxed);
            return Err(StoreError::Busy {
                path: std::path::PathBuf::from(self.shared.target()),
            });
        }
        let jobs = rows
            .iter()
            .map(|row| serde_json::to_string(&Job::from_row(row)))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| {
                c.pending_enqueues.fetch_sub(n, Ordering::Relaxed);
                StoreError::Other {
                    path: std::path::PathBuf::new(),
                    source: Box::new(e),
                }
            })?;
        let now = Instant::now();
        let deadline = now + self.shared.queue.timeout;
        match commit {
            Commit::NoWait => {
                let op = Op::Enqueue {
                    jobs,
                    done: None,
                    deadline: now + Duration::from_secs(365 * 24 * 3600),
                    at: now,
                };
                if self.send(op) {
                    Ok(())
                } else {
                    c.pending_enqueues.fetch_sub(n, Ordering::Relaxed);
                    Err(StoreError::Closed)
                }
            }
            Commit::Wait => {
                let (done, committed) = crossbeam_channel::bounded(1);
                let op = Op::Enqueue {
                    jobs,
                    done: Some(done),
                    deadline,
                    at: now,
                };
                if !self.send(op) {
                    c.pending_enqueues.fetch_sub(n, Ordering::Relaxed);
                    return Err(StoreError::Closed);
                }
                // Never past the timeout: the writer drops an enqueue whose
                // waiter gave up.
                let wait =
                    deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100);
                committed.recv_timeout(wait).unwrap_or_else(|_| {
                    Err(StoreError::Unavailable {
                        target: self.shared.target(),
                        detail: "no answer in time".into(),
                    })
                })
            }
        }
    }

    pub(crate) fn start(queue: RedisQueue, name: &str) -> Result<Arc<Self>, StoreError> {
        let target = queue.target();
        let client = queue.client()?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&queue.name),
            worker: identity(),
            client,
            scripts: Scripts::new(),
            counters: Counters::default(),
            status: Mutex::new(SharedQueueStats::default()),
            closing: AtomicBool::new(false),
            wake: Condvar::new(),
            wake_lock: Mutex::new(()),
            warned: RateLimit::new(),
            stale_warned: RateLimit::new(),
            epoch: Instant::now(),
            name: name.to_owned(),
            held: Mutex::new(HashMap::new()),
            queue,
        });
        // At build: reachable, scripts loaded, eviction checked, registered.
        let mut conn = shared.connect().map_err(|e| shared.unavailable(&e))?;
        shared
            .load_scripts(&mut conn)
            .map_err(|e| shared.unavailable(&e))?;
        check_eviction(&shared, &mut conn);
        if !shared.queue.producer_only {
            let k = &shared.keys;
            let _: i64 = shared
                .run(
                    &mut conn,
                    &shared.scripts.heartbeat,
                    &[&k.workers],
                    std::slice::from_ref(&shared.worker),
                )
                .map_err(|e| shared.unavailable(&e))?;
        }
        refresh_status(&shared, &mut conn);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut threads = Vec::new();
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            conn: Some(conn),
            retry: VecDeque::new(),
        };
        let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("{name}-{what}"))
                .spawn(f)
                .map_err(|e| StoreError::Unavailable {
                    target: target.clone(),
                    detail: format!("cannot start a thread: {e}"),
                })
        };
        threads.push(spawn("redis", Box::new(move || writer.run()))?);
        let beat = Arc::clone(&shared);
        threads.push(spawn("heartbeat", Box::new(move || heartbeat(&beat)))?);
        let strays_due = Instant::now() + shared.queue.ttl;
        Ok(Arc::new(RedisStore {
            shared,
            ops: Mutex::new(Some(tx)),
            claim_conn: Mutex::new(Claimer {
                conn: None,
                strays_due,
            }),
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
            max_pending: 64 * 1024,
        }))
    }

    fn send(&self, op: Op) -> bool {
        let ops = self.ops.lock();
        let Some(tx) = ops.as_ref() else {
            return false;
        };
        self.shared.counters.pending.fetch_add(1, Ordering::Relaxed);
        if tx.send(op).is_err() {
            self.shared.counters.pending.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if !self.send(make(reply)) {
            return Err(StoreError::Closed);
        }
        // The writer answers within its timeouts, or reports Redis as down.
        match answer.recv_timeout(self.shared.queue.timeout * 4) {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable {
                target: self.shared.target(),
                detail: "no answer in time".into(),
            }),
        }
    }

    fn lost(&self, what: &str, key: u64) {
        log::debug!(
            target: "hookpool",
            "{}: the shared queue is closed; {what} of webhook {key} not sent (the others take it back when this process's ttl runs out)",
            self.shared.name
        );
    }
}

impl Store for RedisStore {
    fn accept(&self, row: Row, _cursor: Option<String>, commit: Commit) -> Result<(), StoreError> {
        self.enqueue(&[row], commit)
    }

    fn accept_batch(&self, rows: Vec<Row>, _cursor: Option<String>) -> Result<(), StoreError> {
        self.enqueue(&rows, Commit::Wait)
    }

    fn forget(&self, _key: u64) {
        // A shared queue never puts an accepted webhook in this process's
        // queue, so there is never one to take back.
    }

    fn delivered(&self, key: u64) {
        if !self.send(Op::Ack {
            key,
            at: Instant::now(),
        }) {
            self.lost("the delivery", key);
        }
    }

    fn scheduled(&self, row: Row) {
        let due_ms = row.state.due_ms.unwrap_or(0);
        let Ok(job) = serde_json::to_string(&Job::from_row(&row)) else {
            return;
        };
        if !self.send(Op::Schedule {
            key: row.key,
            job,
            due_ms,
            at: Instant::now(),
        }) {
            self.lost("the retry", row.key);
        }
    }

    fn dead_lettered(&self, key: u64, letter: Option<DeadLetter>) {
        let Some(letter) = letter else {
            // The letter went to another sink: only the job goes.
            if !self.send(Op::Ack {
                key,
                at: Instant::now(),
            }) {
                self.lost("the dead letter", key);
            }
            return;
        };
        let Ok(letter) = serde_json::to_string(&Letter::from_dead_letter(&letter)) else {
            return;
        };
        if !self.send(Op::Bury {
            key,
            letter,
            at: Instant::now(),
        }) {
            self.lost("the dead letter", key);
        }
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.ask(|reply| Op::Letters { limit, reply })
    }

    fn revive(&self, seq: u64, row: Row) -> Result<bool, StoreError> {
        self.ask(|reply| Op::Revive {
            key: seq,
            accepted_ms: row.accepted_ms,
            reply,
        })
    }

    fn delete_dead_letters(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let keys = seqs.to_vec();
        self.ask(|reply| Op::DeleteLetters { keys, reply })
    }

    fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        let mut commit_latency = Histogram::default();
        c.latency.add_to(&mut commit_latency);
        let mut shared = self.shared.status.lock().clone();
        shared.queue.clone_from(&self.shared.queue.name);
        shared.enqueued = c.enqueued.load(Ordering::Relaxed);
        shared.stale = c.stale.load(Ordering::Relaxed);
        shared.reclaimed = c.reclaimed.load(Ordering::Relaxed);
        StoreStats {
            backlog: shared.ready + shared.delayed + shared.processing,
            recovered: 0,
            pending: c.pending.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            dead_letters: shared.dead,
            commit_latency,
            shared: Some(shared),
        }
    }

    fn close(&self) -> u64 {
        if self.closed.swap(true, Ordering::SeqCst) {
            return 0;
        }
        drop(self.ops.lock().take());
        self.shared.closing.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.wake_lock.lock();
            self.shared.wake.notify_all();
        }
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
        0
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim(&self, max: usize) -> Result<Vec<Row>, StoreError> {
        if self.shared.queue.producer_only || max == 0 {
            return Ok(Vec::new());
        }
        let s = &self.shared;
        let mut claimer = self.claim_conn.lock();
        let claimer = &mut *claimer;
        if claimer.conn.is_none() {
            claimer.conn = Some(s.connect().map_err(|e| {
                s.warn("connecting", &e);
                s.unavailable(&e)
            })?);
        }
        let Some(conn) = claimer.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let k = &s.keys;
        let claims = k.claims(&s.worker);
        let now = Instant::now();
        let mut result = Ok(());
        if now >= claimer.strays_due {
            result = release_strays(s, conn);
            claimer.strays_due = now + s.queue.ttl;
        }
        let result: redis::RedisResult<Vec<Value>> = result.and_then(|()| {
            s.run(
                conn,
                &s.scripts.claim,
                &[&k.ready, &k.delayed, &k.jobs, &claims, &k.workers],
                &[s.worker.clone(), max.to_string()],
            )
        });
        let values = match result {
            Ok(values) => values,
            Err(e) => {
                s.warn("claiming", &e);
                claimer.conn = None;
                // Redis may have run the claim all the same: look for what
                // it took at the next claim that gets through.
                claimer.strays_due = now;
                return Err(s.unavailable(&e));
            }
        };
        if matches!(values.first(), Some(Value::Int(-1))) {
            // Declared dead (silent past the ttl): what it held was taken
            // back; register again and claim afresh.
            log::warn!(
                target: "hookpool",
                "{}: this process was declared dead by the shared queue (silent for longer than its ttl); what it held was taken back, and its late results are not counted",
                s.name
            );
            let _: redis::RedisResult<i64> = s.run(
                conn,
                &s.scripts.heartbeat,
                &[&k.workers],
                std::slice::from_ref(&s.worker),
            );
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(values.len() / 2);
        let mut held = s.held.lock();
        for pair in values.chunks(2) {
            let (Some(key), Some(job)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let key: Option<u64> = redis::from_redis_value_ref(key).ok();
            if let Some(key) = key {
                *held.entry(key).or_default() += 1;
            }
            let job: Option<String> = redis::from_redis_value_ref(job).ok();
            match (key, job.and_then(|j| serde_json::from_str::<Job>(&j).ok())) {
                (Some(key), Some(job)) => rows.push(job.into_row(key)),
                _ => {
                    log::error!(target: "hookpool", "{}: a job in the shared queue cannot be read; left claimed (it is taken back, then dead-lettered, when this process stops)", s.name)
                }
            }
        }
        Ok(rows)
    }

    fn release(&self, key: u64) {
        if !self.send(Op::Release {
            key,
            at: Instant::now(),
        }) {
            self.lost("the release", key);
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Puts back in the queue what this process's claims hold in Redis but the
/// process does not: what a claim took whose answer never came back.
/// Called from the fetcher, between its claims.
fn release_strays(shared: &Shared, conn: &mut Connection) -> redis::RedisResult<()> {
    let k = &shared.keys;
    let claims = k.claims(&shared.worker);
    // Read before the claims: a key settled meanwhile is gone from both.
    let known: HashSet<u64> = shared.held.lock().keys().copied().collect();
    let claimed: Vec<u64> = redis::cmd("SMEMBERS").arg(&claims).query(conn)?;
    let strays: Vec<String> = claimed
        .into_iter()
        .filter(|key| !known.contains(key))
        .map(|key| key.to_string())
        .collect();
    if strays.is_empty() {
        return Ok(());
    }
    let n: u64 = shared.run(conn, &shared.scripts.release, &[&claims, &k.ready], &strays)?;
    log::warn!(
        target: "hookpool",
        "{}: {n} webhooks claimed from the shared queue without this process hearing back (a lost answer) are back in the queue",
        shared.name
    );
    Ok(())
}

/// Warns when Redis may evict keys: a webhook evicted is a webhook lost.
fn check_eviction(shared: &Shared, conn: &mut Connection) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(conn);
    // Managed services may refuse CONFIG: nothing to check then.
    if let Ok(pair) = policy {
        if let Some(policy) = pair.get(1).filter(|p| p.as_str() != "noeviction") {
            log::warn!(
                target: "hookpool",
                "{}: redis {} has maxmemory-policy {policy}: it may evict queued webhooks when memory runs out; set it to noeviction",
                shared.name,
                shared.target()
            );
        }
    }
}

/// Reads the queue's counts for stats.
fn refresh_status(shared: &Shared, conn: &mut Connection) -> bool {
    let counts =
        super::status::counts(conn, &shared.scripts.status, &shared.keys, shared.queue.ttl);
    match counts {
        Ok(Some(counts)) => {
            *shared.status.lock() = counts;
            true
        }
        Ok(None) => false,
        Err(e) => {
            shared.warn("reading the queue's counts", &e);
            false
        }
    }
}

/// The heartbeat thread: beats every third of the ttl, takes back dead
/// workers' webhooks, and reads the counts every second, until closed.
fn heartbeat(shared: &Shared) {
    let beat_every = (shared.queue.ttl / 3).max(Duration::from_millis(10));
    let mut last_beat = Instant::now();
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        {
            let mut guard = shared.wake_lock.lock();
            if shared.closing.load(Ordering::SeqCst) {
                break;
            }
            let wait = STATUS_EVERY.min(beat_every);
            shared.wake.wait_for(&mut guard, wait);
            if shared.closing.load(Ordering::SeqCst) {
                break;
            }
        }
        if conn.is_none() {
            match shared.connect() {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    shared.warn("connecting", &e);
                    // Woken by a close: a store closing while Redis is
                    // gone does not wait out the backoff.
                    let mut guard = shared.wake_lock.lock();
                    if !shared.closing.load(Ordering::SeqCst) {
                        shared.wake.wait_for(&mut guard, backoff);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let k = &shared.keys;
        if last_beat.elapsed() >= beat_every {
            last_beat = Instant::now();
            if !shared.queue.producer_only {
                let beat: redis::RedisResult<i64> = shared.run(
                    c,
                    &shared.scripts.heartbeat,
                    &[&k.workers],
                    std::slice::from_ref(&shared.worker),
                );
                match beat {
                    Ok(0) => log::warn!(
                        target: "hookpool",
                        "{}: this process was declared dead by the shared queue (silent for longer than its ttl); registered again",
                        shared.name
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        shared.warn("the heartbeat", &e);
                        conn = None;
                        continue;
                    }
                }
            }
            let ttl = u64::try_from(shared.queue.ttl.as_millis()).unwrap_or(u64::MAX);
            let reclaimed: redis::RedisResult<Vec<u64>> = shared.run(
                c,
                &shared.scripts.reclaim,
                &[
                    &k.workers, &k.ready, &k.jobs, &k.letters, &k.dead, &k.deaths,
                ],
                &[
                    ttl.to_string(),
                    shared.queue.max_deaths.to_string(),
                    k.claims_prefix.clone(),
                ],
            );
            match reclaimed {
                Ok(r) if r.first().is_some_and(|n| *n > 0) => {
                    let (workers, returned, buried) = (
                        r[0],
                        r.get(1).copied().unwrap_or(0),
                        r.get(2).copied().unwrap_or(0),
                    );
                    shared
                        .counters
                        .reclaimed
                        .fetch_add(returned + buried, Ordering::Relaxed);
                    log::warn!(
                        target: "hookpool",
                        "{}: {workers} worker process(es) of the shared queue stopped heart-beating: {returned} webhooks back in the queue, {buried} dead-lettered (worker_lost)",
                        shared.name
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    shared.warn("taking back dead workers' webhooks", &e);
                    conn = None;
                    continue;
                }
            }
        }
        if !refresh_status(shared, c) {
            conn = None;
        }
    }
    // Deregistered at once: what this process still holds (in flight at a
    // shutdown deadline) goes back to the others within a ttl, not later.
    // Also when the loop never connected: a worker stopped within its first
    // second must not look alive for a ttl.
    if shared.queue.producer_only {
        return;
    }
    if conn.is_none() {
        conn = shared.connect().ok();
    }
    if let Some(c) = conn.as_mut() {
        let _: redis::RedisResult<i64> = redis::cmd("ZADD")
            .arg(&shared.keys.workers)
            .arg(0)
            .arg(&shared.worker)
            .query(c);
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Op>,
    conn: Option<Connection>,
    /// Ops that failed and nobody waits for: first into the next batch.
    retry: VecDeque<Op>,
}

impl Writer {
    fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut batch: Vec<Op> = self.retry.drain(..).collect();
            let wait = if batch.is_empty() {
                Duration::from_secs(3600)
            } else {
                Duration::ZERO
            };
            match self.rx.recv_timeout(wait) {
                Ok(op) => batch.push(op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if batch.is_empty() => break,
                Err(RecvTimeoutError::Disconnected) => {}
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let closing = self.rx.is_empty() && self.shared.closing.load(Ordering::SeqCst);
            match self.write(batch) {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    self.shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.shared.warn("writing", &e);
                    self.conn = None;
                    if closing && backoff >= MAX_BACKOFF {
                        log::error!(
                            target: "hookpool",
                            "{}: redis {}: {} state changes could not be sent before closing; the queue takes back what this process held when its ttl runs out",
                            self.shared.name,
                            self.shared.target(),
                            self.retry.len()
                        );
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends a batch in one round trip. On failure, what nobody waits for
    /// is kept for the next try, and waiters are answered.
    fn write(&mut self, batch: Vec<Op>) -> Result<(), redis::RedisError> {
        let now = Instant::now();
        // Waiters that gave up: their enqueues are dropped.
        let (batch, expired): (Vec<Op>, Vec<Op>) = batch.into_iter().partition(
            |op| !matches!(op, Op::Enqueue { done: Some(_), deadline, .. } if *deadline <= now),
        );
        for op in expired {
            self.answer(
                op,
                Err(StoreError::Unavailable {
                    target: self.shared.target(),
                    detail: "no answer in time".into(),
                }),
            );
        }
        if batch.is_empty() {
            return Ok(());
        }
        if self.conn.is_none() {
            match self.shared.connect().and_then(|mut c| {
                self.shared.load_scripts(&mut c)?;
                Ok(c)
            }) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.fail(batch, &e);
                    return Err(e);
                }
            }
        }
        let result = self.apply(&batch);
        match result {
            Ok(answers) => {
                self.settle(batch, answers);
                Ok(())
            }
            Err(e) => {
                self.fail(batch, &e);
                Err(e)
            }
        }
    }

    /// The batch as one pipeline: one script call per kind of change
    /// present (enqueue, ack, schedule, bury, release, in that order), then
    /// each question; the answers in the same order.
    fn apply(&mut self, batch: &[Op]) -> Result<Vec<Value>, redis::RedisError> {
        let s = Arc::clone(&self.shared);
        let k = &s.keys;
        let claims = k.claims(&s.worker);
        let mut args: [Vec<String>; 5] = Default::default();
        for op in batch {
            match op {
                Op::Enqueue { jobs, .. } => args[0].extend(jobs.iter().cloned()),
                Op::Ack { key, .. } => args[1].push(key.to_string()),
                Op::Schedule {
                    key, job, due_ms, ..
                } => {
                    args[2].extend([key.to_string(), job.clone(), due_ms.to_string()]);
                }
                Op::Bury { key, letter, .. } => {
                    args[3].extend([key.to_string(), letter.clone()]);
                }
                Op::Release { key, .. } => args[4].push(key.to_string()),
                _ => {}
            }
        }
        let calls: [(&Script, Vec<&str>); 5] = [
            (&s.scripts.enqueue, vec![&k.seq, &k.jobs, &k.ready]),
            (&s.scripts.ack, vec![&claims, &k.jobs, &k.deaths]),
            (&s.scripts.schedule, vec![&claims, &k.jobs, &k.delayed]),
            (
                &s.scripts.bury,
                vec![&claims, &k.jobs, &k.letters, &k.dead, &k.deaths],
            ),
            (&s.scripts.release, vec![&claims, &k.ready]),
        ];
        let mut pipe = redis::pipe();
        for ((script, keys), args) in calls.iter().zip(&args) {
            if !args.is_empty() {
                pipe.cmd("EVALSHA")
                    .arg(script.get_hash())
                    .arg(keys.len())
                    .arg(keys)
                    .arg(args);
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let mut values: Vec<Value> = if pipe.is_empty() {
            Vec::new()
        } else {
            match pipe.query(conn) {
                Ok(values) => values,
                // Redis restarted and lost the scripts: load them, once.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    s.load_scripts(conn)?;
                    pipe.query(conn)?
                }
                Err(e) => return Err(e),
            }
        };
        for op in batch {
            let answer = match op {
                Op::Letters { limit, .. } => letters(&s, conn, *limit)?,
                Op::Revive {
                    key, accepted_ms, ..
                } => s.run(
                    conn,
                    &s.scripts.revive,
                    &[&k.dead, &k.letters, &k.jobs, &k.ready],
                    &[key.to_string(), accepted_ms.to_string()],
                )?,
                Op::DeleteLetters { keys, .. } => {
                    let mut invocation = s.scripts.delete_letters.prepare_invoke();
                    invocation.key(&k.dead).key(&k.letters);
                    for key in keys {
                        invocation.arg(key);
                    }
                    invocation.invoke(conn)?
                }
                _ => continue,
            };
            values.push(answer);
        }
        Ok(values)
    }

    fn settle(&mut self, batch: Vec<Op>, answers: Vec<Value>) {
        let c = &self.shared.counters;
        let mut unreadable = Vec::new();
        c.commits.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let kind = |op: &Op| match op {
            Op::Enqueue { .. } => Some(0),
            Op::Ack { .. } => Some(1),
            Op::Schedule { .. } => Some(2),
            Op::Bury { .. } => Some(3),
            Op::Release { .. } => Some(4),
            _ => None,
        };
        let mut sent = [0usize; 5];
        for op in &batch {
            if let Some(k) = kind(op) {
                sent[k] += match op {
                    Op::Enqueue { jobs, .. } => jobs.len(),
                    _ => 1,
                };
            }
        }
        let mut answers = answers.into_iter();
        // How many each script found the worker still holding.
        let mut held = [0usize; 5];
        for (k, n) in sent.iter().enumerate() {
            if *n > 0 {
                held[k] = match answers.next() {
                    Some(Value::Array(items)) => items.len(),
                    Some(v) => redis::from_redis_value_ref::<usize>(&v).unwrap_or(0),
                    None => 0,
                };
            }
        }
        let mut taken = self.shared.held.lock();
        for op in &batch {
            if let Op::Ack { key, .. }
            | Op::Schedule { key, .. }
            | Op::Bury { key, .. }
            | Op::Release { key, .. } = op
            {
                if let Some(n) = taken.get_mut(key) {
                    *n -= 1;
                    if *n == 0 {
                        taken.remove(key);
                    }
                }
            }
        }
        drop(taken);
        for op in batch {
            c.pending.fetch_sub(1, Ordering::Relaxed);
            match op {
                Op::Enqueue { jobs, done, at, .. } => {
                    let n = jobs.len() as u64;
                    c.pending_enqueues.fetch_sub(n, Ordering::Relaxed);
                    c.enqueued.fetch_add(n, Ordering::Relaxed);
                    c.latency.record_shared(now.saturating_duration_since(at));
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                }
                Op::Ack { at, .. }
                | Op::Schedule { at, .. }
                | Op::Bury { at, .. }
                | Op::Release { at, .. } => {
                    c.latency.record_shared(now.saturating_duration_since(at));
                }
                Op::Letters { reply, .. } => {
                    let (letters, bad) = answers.next().map(parse_letters).unwrap_or_default();
                    unreadable.extend(bad);
                    let _ = reply.send(Ok(letters));
                }
                Op::Revive { reply, .. } => {
                    let n: i64 = answers
                        .next()
                        .and_then(|v| redis::from_redis_value_ref(&v).ok())
                        .unwrap_or(0);
                    let _ = reply.send(Ok(n > 0));
                }
                Op::DeleteLetters { reply, .. } => {
                    let n: usize = answers
                        .next()
                        .and_then(|v| redis::from_redis_value_ref(&v).ok())
                        .unwrap_or(0);
                    let _ = reply.send(Ok(n));
                }
            }
        }
        let s = &self.shared;
        for (seq, why) in unreadable {
            log::warn!(
                target: "hookpool",
                "{}: dead letter {seq} in {} cannot be read ({why}): it stays there, and no replay lists it; look at it with `HGET {} {seq}`, then fix or `HDEL` it",
                s.name,
                s.keys.letters,
                s.keys.letters
            );
        }
        // A change the worker no longer held: its webhook was taken back
        // (this process was declared dead) and another has it now.
        let stale: usize = (1..5).map(|k| sent[k].saturating_sub(held[k])).sum();
        if stale > 0 {
            c.stale.fetch_add(stale as u64, Ordering::Relaxed);
            let at = u64::try_from(s.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if s.stale_warned.allow(at, Duration::from_secs(10)) {
                log::warn!(
                    target: "hookpool",
                    "{}: {stale} late results for webhooks the shared queue had taken back from this process; not counted there (at most one such line every 10 s; hookpool_shared_queue_stale_results_total counts them all)",
                    s.name
                );
            }
        }
    }

    /// After a failed round trip: waiters get the error, the rest is kept
    /// for the next try (at least once: a change that reached Redis before
    /// the connection broke may be sent again; each script is a no-op the
    /// second time but an enqueue, which may be delivered twice).
    fn fail(&mut self, batch: Vec<Op>, e: &redis::RedisError) {
        for op in batch {
            let awaited = matches!(
                op,
                Op::Enqueue { done: Some(_), .. }
                    | Op::Letters { .. }
                    | Op::Revive { .. }
                    | Op::DeleteLetters { .. }
            );
            if awaited {
                let error = self.shared.unavailable(e);
                self.answer(op, Err(error));
            } else {
                self.retry.push_back(op);
            }
        }
    }

    fn answer(&self, op: Op, result: Result<(), StoreError>) {
        let c = &self.shared.counters;
        c.pending.fetch_sub(1, Ordering::Relaxed);
        let error = || match &result {
            Ok(()) => StoreError::Closed,
            Err(e) => StoreError::Unavailable {
                target: self.shared.target(),
                detail: e.to_string(),
            },
        };
        match op {
            Op::Enqueue { jobs, done, .. } => {
                c.pending_enqueues
                    .fetch_sub(jobs.len() as u64, Ordering::Relaxed);
                if let Some(done) = done {
                    let _ = done.send(result);
                }
            }
            Op::Letters { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Op::Revive { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Op::DeleteLetters { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            _ => {}
        }
    }
}

/// The first `limit` dead letters, oldest first: `{key, letter, ...}`.
fn letters(
    shared: &Shared,
    conn: &mut Connection,
    limit: usize,
) -> Result<Value, redis::RedisError> {
    let k = &shared.keys;
    let stop = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
    let keys: Vec<u64> = redis::cmd("ZRANGE")
        .arg(&k.dead)
        .arg(0)
        .arg(stop)
        .query(conn)?;
    if keys.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    let letters: Vec<Option<String>> =
        redis::cmd("HMGET").arg(&k.letters).arg(&keys).query(conn)?;
    let mut out = Vec::with_capacity(keys.len() * 2);
    for (key, letter) in keys.into_iter().zip(letters) {
        if let Some(letter) = letter {
            out.push(Value::Int(key as i64));
            out.push(Value::BulkString(letter.into_bytes()));
        }
    }
    Ok(Value::Array(out))
}

/// The letters `letters` read, and those that could not be parsed, each
/// with its number and why (a letter written by something else, or by a
/// newer hookpool): those stay in Redis, and are reported, never dropped
/// quietly.
fn parse_letters(value: Value) -> (Vec<StoredDeadLetter>, Vec<(u64, String)>) {
    let Value::Array(items) = value else {
        return Default::default();
    };
    let (mut letters, mut unreadable) = (Vec::new(), Vec::new());
    for pair in items.chunks(2) {
        let (Some(seq), Some(json)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let Ok(seq) = redis::from_redis_value_ref::<u64>(seq) else {
            continue;
        };
        let parsed = redis::from_redis_value_ref::<String>(json)
            .map_err(|e| e.to_string())
            .and_then(|json| serde_json::from_str::<Letter>(&json).map_err(|e| e.to_string()))
            .and_then(|letter| {
                letter
                    .into_dead_letter()
                    .ok_or_else(|| "its payload is not JSON".to_owned())
            });
        match parsed {
            Ok(letter) => letters.push(StoredDeadLetter { seq, letter }),
            Err(why) => unreadable.push((seq, why)),
        }
    }
    (letters, unreadable)
}
