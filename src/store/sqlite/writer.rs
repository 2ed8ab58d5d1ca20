//! The journal's writer: one thread owns the connection and applies state
//! changes in batches, one transaction each (group commit). Callers that
//! must know a row is on disk wait for their batch's commit; everyone else
//! goes on at once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};

use super::classify;
use super::letters::{StoredDeadLetter, read_letters, write_letter};
use crate::dead_letter::DeadLetter;
use crate::saturation::RateLimit;
use crate::stats::{Histogram, Recorder};
use crate::store::{Commit, Row, RowState, Store, StoreError, StoreStats};

/// At most so many state changes go into one transaction.
const MAX_BATCH: usize = 4096;
/// After a failed commit, the first wait before trying again; it doubles up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At close, a failing disk is tried for this long before the writer gives
/// up on what it still holds.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

type Reply<T> = Sender<Result<T, StoreError>>;

/// One state change, or a question, for the writer.
enum Op {
    /// One row, or a batch of rows accepted together (all or none).
    Insert {
        rows: Vec<Row>,
        cursor: Option<String>,
        done: Option<Reply<()>>,
        at: Instant,
    },
    Delete {
        key: u64,
        at: Instant,
    },
    /// A row accepted but not queued after all: removed, and if its insert
    /// saved the cursor, the cursor it replaced is put back.
    Forget {
        key: u64,
        at: Instant,
    },
    Update {
        key: u64,
        state: RowState,
        at: Instant,
    },
    Bury {
        key: u64,
        letter: Option<DeadLetter>,
        at: Instant,
    },
    Letters {
        limit: usize,
        reply: Reply<Vec<StoredDeadLetter>>,
    },
    Revive {
        seq: u64,
        row: Row,
        reply: Reply<bool>,
    },
    DeleteLetters {
        seqs: Vec<u64>,
        reply: Reply<usize>,
    },
}

impl Op {
    /// Whether someone waits for this op's outcome: such an op is answered,
    /// not tried again, when its batch fails.
    fn is_awaited(&self) -> bool {
        matches!(
            self,
            Op::Insert { done: Some(_), .. }
                | Op::Letters { .. }
                | Op::Revive { .. }
                | Op::DeleteLetters { .. }
        )
    }

    fn arrived(&self) -> Option<Instant> {
        match self {
            Op::Insert { at, .. }
            | Op::Delete { at, .. }
            | Op::Forget { at, .. }
            | Op::Update { at, .. } => Some(*at),
            Op::Bury { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// Answers an awaited op whose batch failed.
    fn fail(self, path: &Path, why: &rusqlite::Error) {
        let error = || copy_error(path, why);
        match self {
            Op::Insert {
                done: Some(done), ..
            } => {
                let _ = done.send(Err(error()));
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

/// A [`StoreError`] for each waiter of a failed batch.
fn copy_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(_) if !matches!(classify(path, clone_error(e)), StoreError::Other { .. }) => {
            classify(path, clone_error(e))
        }
        _ => StoreError::Other {
            path: path.to_path_buf(),
            source: e.to_string().into(),
        },
    }
}

/// A copy of a SQLite error with the same code and message.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

/// What the writer thread and the callers share.
#[derive(Debug, Default)]
struct Counters {
    backlog: AtomicU64,
    recovered: AtomicU64,
    pending: AtomicU64,
    /// Inserts not committed yet: `accept` without waiting refuses past a
    /// limit, so a slow disk pushes back on the callers.
    pending_inserts: AtomicU64,
    commits: AtomicU64,
    errors: AtomicU64,
    dead_letters: AtomicU64,
    latency: Recorder,
}

/// The SQLite journal as a [`Store`].
pub(crate) struct SqliteStore {
    path: PathBuf,
    ops: Mutex<Option<Sender<Op>>>,
    closed: AtomicBool,
    counters: Arc<Counters>,
    max_pending_inserts: u64,
    thread: Mutex<Option<JoinHandle<u64>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// `rows` into the journal in one op (all or none), with `cursor`
    /// saved beside the last; with [`Commit::Wait`], once committed.
    fn insert(
        &self,
        rows: Vec<Row>,
        cursor: Option<String>,
        commit: Commit,
    ) -> Result<(), StoreError> {
        let n = rows.len() as u64;
        let c = &self.counters;
        match commit {
            Commit::NoWait => {
                if c.pending_inserts.fetch_add(n, Ordering::Relaxed) >= self.max_pending_inserts {
                    c.pending_inserts.fetch_sub(n, Ordering::Relaxed);
                    return Err(StoreError::Busy {
                        path: self.path.clone(),
                    });
                }
                let op = Op::Insert {
                    rows,
                    cursor,
                    done: None,
                    at: Instant::now(),
                };
                if self.send(op) {
                    Ok(())
                } else {
                    c.pending_inserts.fetch_sub(n, Ordering::Relaxed);
                    Err(StoreError::Closed)
                }
            }
            Commit::Wait => {
                c.pending_inserts.fetch_add(n, Ordering::Relaxed);
                let (done, committed) = crossbeam_channel::bounded(1);
                let op = Op::Insert {
                    rows,
                    cursor,
                    done: Some(done),
                    at: Instant::now(),
                };
                if !self.send(op) {
                    c.pending_inserts.fetch_sub(n, Ordering::Relaxed);
                    return Err(StoreError::Closed);
                }
                committed.recv().unwrap_or(Err(StoreError::Closed))
            }
        }
    }

    /// Starts the writer thread on an open connection.
    pub(crate) fn start(
        conn: Connection,
        path: PathBuf,
        name: &str,
        max_pending_inserts: usize,
        recovered: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let counters = Arc::new(Counters::default());
        counters.backlog.store(recovered, Ordering::Relaxed);
        counters.recovered.store(recovered, Ordering::Relaxed);
        let letters: i64 = conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(|e| classify(&path, e))?;
        counters
            .dead_letters
            .store(letters.max(0) as u64, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            conn,
            path: path.clone(),
            name: name.to_owned(),
            rx,
            counters: Arc::clone(&counters),
            retry: VecDeque::new(),
            warned: RateLimit::new(),
            epoch: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("{name}-journal"))
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Other {
                path: path.clone(),
                source: Box::new(e),
            })?;
        Ok(Arc::new(SqliteStore {
            path,
            ops: Mutex::new(Some(tx)),
            closed: AtomicBool::new(false),
            counters,
            max_pending_inserts: max_pending_inserts as u64,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Sends an op to the writer; `false` once closed.
    fn send(&self, op: Op) -> bool {
        let ops = self.ops.lock();
        let Some(tx) = ops.as_ref() else {
            return false;
        };
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        if tx.send(op).is_err() {
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Sends a question and waits for its answer.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if !self.send(make(reply)) {
            return Err(StoreError::Closed);
        }
        answer.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn log_dropped(&self, what: &str, key: u64) {
        log::debug!(
            target: "hookpool",
            "journal {}: closed; {what} of webhook {key} not written (it is recovered, and sent again, at the next start)",
            self.path.display()
        );
    }
}

impl Store for SqliteStore {
    fn accept(&self, row: Row, cursor: Option<String>, commit: Commit) -> Result<(), StoreError> {
        self.insert(vec![row], cursor, commit)
    }

    fn accept_batch(&self, rows: Vec<Row>, cursor: Option<String>) -> Result<(), StoreError> {
        self.insert(rows, cursor, Commit::Wait)
    }

    fn forget(&self, key: u64) {
        if !self.send(Op::Forget {
            key,
            at: Instant::now(),
        }) {
            self.log_dropped("the removal", key);
        }
    }

    fn delivered(&self, key: u64) {
        if !self.send(Op::Delete {
            key,
            at: Instant::now(),
        }) {
            self.log_dropped("the delivery", key);
        }
    }

    fn scheduled(&self, row: Row) {
        let key = row.key;
        if !self.send(Op::Update {
            key,
            state: row.state,
            at: Instant::now(),
        }) {
            self.log_dropped("the retry", key);
        }
    }

    fn dead_lettered(&self, key: u64, letter: Option<DeadLetter>) {
        if !self.send(Op::Bury {
            key,
            letter,
            at: Instant::now(),
        }) {
            self.log_dropped("the dead letter", key);
        }
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        self.ask(|reply| Op::Letters { limit, reply })
    }

    fn revive(&self, seq: u64, row: Row) -> Result<bool, StoreError> {
        self.ask(|reply| Op::Revive { seq, row, reply })
    }

    fn delete_dead_letters(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let seqs = seqs.to_vec();
        self.ask(|reply| Op::DeleteLetters { seqs, reply })
    }

    fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let mut commit_latency = Histogram::default();
        c.latency.add_to(&mut commit_latency);
        StoreStats {
            backlog: c.backlog.load(Ordering::Relaxed),
            recovered: c.recovered.load(Ordering::Relaxed),
            pending: c.pending.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            dead_letters: c.dead_letters.load(Ordering::Relaxed),
            commit_latency,
            shared: None,
        }
    }

    fn close(&self) -> u64 {
        if self.closed.swap(true, Ordering::SeqCst) {
            return self.counters.backlog.load(Ordering::Relaxed);
        }
        // Dropping the sender ends the writer once it has written the rest.
        drop(self.ops.lock().take());
        let thread = self.thread.lock().take();
        match thread.map(JoinHandle::join) {
            Some(Ok(kept)) => kept,
            Some(Err(_)) => {
                log::error!(target: "hookpool", "journal {}: the writer thread panicked", self.path.display());
                self.counters.backlog.load(Ordering::Relaxed)
            }
            None => self.counters.backlog.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    name: String,
    rx: Receiver<Op>,
    counters: Arc<Counters>,
    /// Ops of failed batches that nobody waits for, oldest first: they go
    /// first into the next batch.
    retry: VecDeque<Op>,
    warned: RateLimit,
    epoch: Instant,
}

impl Writer {
    /// Runs until every sender is gone and everything is written (or the
    /// disk has failed for [`CLOSE_PATIENCE`]); returns the rows left.
    fn run(mut self) -> u64 {
        let mut backoff = FIRST_BACKOFF;
        let mut closing_since = None;
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
                Err(RecvTimeoutError::Disconnected) => {
                    if batch.is_empty() {
                        break;
                    }
                    let since = *closing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > CLOSE_PATIENCE {
                        log::error!(
                            target: "hookpool",
                            "{}: journal {}: {} state changes could not be written before closing; the webhooks they concern are recovered as they were, and sent again, at the next start",
                            self.name,
                            self.path.display(),
                            batch.len()
                        );
                        break;
                    }
                }
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            match self.commit(&batch) {
                Ok(answers) => {
                    backoff = FIRST_BACKOFF;
                    self.settle(batch, answers);
                }
                // One op that can never be written, or a disk that refuses
                // some writes (full): each op alone, so that those that can
                // be written are (a delete frees room for an insert), in
                // order.
                Err(_) if batch.len() > 1 => {
                    let mut progress = false;
                    for op in batch {
                        progress |= self.one_by_one(op);
                    }
                    if !progress && !self.retry.is_empty() {
                        self.checkpoint();
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                Err(e) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.warn(&e);
                    for op in batch {
                        self.give_up_or_keep(op, &e);
                    }
                    if !self.retry.is_empty() {
                        self.checkpoint();
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        self.checkpoint();
        self.conn
            .query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get::<_, i64>(0))
            .map_or_else(
                |_| self.counters.backlog.load(Ordering::Relaxed),
                |n| n.max(0) as u64,
            )
    }

    /// Writes one op alone; returns whether it was written. An op that can
    /// never be written is logged and dropped (a webhook's row then stays
    /// as it was: recovered, and sent again, at the next start); one the
    /// disk refused is answered if awaited, else kept for the next try.
    fn one_by_one(&mut self, op: Op) -> bool {
        let batch = vec![op];
        match self.commit(&batch) {
            Ok(answers) => {
                self.settle(batch, answers);
                true
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                for op in batch {
                    if is_op_error(&e) {
                        log::error!(
                            target: "hookpool",
                            "{}: journal {}: a state change cannot be written ({e}); dropped",
                            self.name,
                            self.path.display()
                        );
                        self.answer_failed(op, &e);
                    } else {
                        self.warn(&e);
                        self.give_up_or_keep(op, &e);
                    }
                }
                false
            }
        }
    }

    /// Copies the WAL into the database and cuts it to nothing: at close,
    /// and when the disk is full (in WAL mode even a delete needs room in
    /// the WAL; cutting it gives room back).
    fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
    }

    /// After a failed write: an awaited op is answered with the error,
    /// any other kept for the next try.
    fn give_up_or_keep(&mut self, op: Op, e: &rusqlite::Error) {
        if op.is_awaited() {
            self.answer_failed(op, e);
        } else {
            self.retry.push_back(op);
        }
    }

    fn answer_failed(&self, op: Op, e: &rusqlite::Error) {
        if let Op::Insert { rows, .. } = &op {
            self.counters
                .pending_inserts
                .fetch_sub(rows.len() as u64, Ordering::Relaxed);
        }
        self.counters.pending.fetch_sub(1, Ordering::Relaxed);
        op.fail(&self.path, e);
    }

    /// Applies `batch` in one transaction and commits it; the answers come
    /// back in the batch's order.
    fn commit(&mut self, batch: &[Op]) -> rusqlite::Result<Vec<Answer>> {
        let tx = self.conn.transaction()?;
        let answers = batch
            .iter()
            .map(|op| apply(&tx, op))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.commit()?;
        Ok(answers)
    }

    /// After a commit: counts, and answers whoever waits.
    fn settle(&mut self, batch: Vec<Op>, answers: Vec<Answer>) {
        let c = &self.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        for (op, answer) in batch.into_iter().zip(answers) {
            c.pending.fetch_sub(1, Ordering::Relaxed);
            if let Some(at) = op.arrived() {
                c.latency.record_shared(now.saturating_duration_since(at));
            }
            match (op, answer) {
                (Op::Insert { rows, done, .. }, _) => {
                    let n = rows.len() as u64;
                    c.pending_inserts.fetch_sub(n, Ordering::Relaxed);
                    c.backlog.fetch_add(n, Ordering::Relaxed);
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                }
                (
                    Op::Delete { .. } | Op::Forget { .. } | Op::Update { .. },
                    Answer::Rows(removed),
                ) => {
                    c.backlog.fetch_sub(
                        removed.min(c.backlog.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
                (Op::Bury { letter, .. }, Answer::Rows(removed)) => {
                    c.backlog.fetch_sub(
                        removed.min(c.backlog.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                    if letter.is_some() {
                        c.dead_letters.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (Op::Letters { reply, .. }, Answer::Letters(letters)) => {
                    let _ = reply.send(Ok(letters));
                }
                (Op::Revive { reply, .. }, Answer::Rows(revived)) => {
                    if revived > 0 {
                        c.backlog.fetch_add(1, Ordering::Relaxed);
                        c.dead_letters.fetch_sub(1, Ordering::Relaxed);
                    }
                    let _ = reply.send(Ok(revived > 0));
                }
                (Op::DeleteLetters { reply, .. }, Answer::Rows(deleted)) => {
                    c.dead_letters.fetch_sub(
                        deleted.min(c.dead_letters.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                    let _ = reply.send(Ok(deleted as usize));
                }
                _ => {}
            }
        }
    }

    /// Logs a failed commit at error level, at most once a minute.
    fn warn(&self, e: &rusqlite::Error) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if self.warned.allow(now, Duration::from_secs(60)) {
            log::error!(
                target: "hookpool",
                "{}: {} ({e}); the state changes are kept in memory and written as soon as it works again",
                self.name,
                copy_error(&self.path, e),
            );
        }
    }
}

/// What applying one op gave.
enum Answer {
    /// Rows changed (inserted, deleted, revived).
    Rows(u64),
    Letters(Vec<StoredDeadLetter>),
}

fn apply(tx: &Transaction<'_>, op: &Op) -> rusqlite::Result<Answer> {
    match op {
        Op::Insert { rows, cursor, .. } => {
            for row in rows {
                insert(tx, row)?;
            }
            if let (Some(cursor), Some(row)) = (cursor, rows.last()) {
                // What it replaces is kept until the row is delivered or
                // forgotten: a forgotten row's cursor must not survive it,
                // or a restart would resume after a webhook never queued.
                let before = meta(tx, "cursor")?;
                set_meta(tx, "cursor", Some(cursor))?;
                set_meta(tx, "cursor_key", Some(&row.key.to_string()))?;
                set_meta(tx, "cursor_before", before.as_deref())?;
            }
            Ok(Answer::Rows(rows.len() as u64))
        }
        Op::Delete { key, .. } => {
            let n = tx
                .prepare_cached("DELETE FROM webhooks WHERE key = ?1")?
                .execute([*key as i64])?;
            Ok(Answer::Rows(n as u64))
        }
        Op::Forget { key, .. } => {
            let n = tx
                .prepare_cached("DELETE FROM webhooks WHERE key = ?1")?
                .execute([*key as i64])?;
            if meta(tx, "cursor_key")? == Some(key.to_string()) {
                let before = meta(tx, "cursor_before")?;
                set_meta(tx, "cursor", before.as_deref())?;
                set_meta(tx, "cursor_key", None)?;
                set_meta(tx, "cursor_before", None)?;
            }
            Ok(Answer::Rows(n as u64))
        }
        Op::Update { key, state, .. } => {
            tx.prepare_cached(
                "UPDATE webhooks SET attempts = ?2, push_backs = ?3, paced_ms = ?4, due_ms = ?5,
                    first_attempt_ms = ?6, last_attempt_ms = ?7, last_error = ?8, last_status = ?9
                 WHERE key = ?1",
            )?
            .execute(params![
                *key as i64,
                state.attempts,
                state.push_backs,
                state.paced_ms as i64,
                state.due_ms.map(|v| v as i64),
                state.first_attempt_ms.map(|v| v as i64),
                state.last_attempt_ms.map(|v| v as i64),
                state.last_error,
                state.last_status,
            ])?;
            // An update removes nothing.
            Ok(Answer::Rows(0))
        }
        Op::Bury { key, letter, .. } => {
            let n = tx
                .prepare_cached("DELETE FROM webhooks WHERE key = ?1")?
                .execute([*key as i64])?;
            if let Some(letter) = letter {
                write_letter(tx, letter)?;
            }
            Ok(Answer::Rows(n as u64))
        }
        Op::Letters { limit, .. } => Ok(Answer::Letters(read_letters(tx, *limit)?)),
        Op::Revive { seq, row, .. } => {
            let n = tx
                .prepare_cached("DELETE FROM dead_letters WHERE seq = ?1")?
                .execute([*seq as i64])?;
            if n > 0 {
                insert(tx, row)?;
            }
            Ok(Answer::Rows(n as u64))
        }
        Op::DeleteLetters { seqs, .. } => {
            let mut stmt = tx.prepare_cached("DELETE FROM dead_letters WHERE seq = ?1")?;
            let mut n = 0;
            for seq in seqs {
                n += stmt.execute([*seq as i64])? as u64;
            }
            Ok(Answer::Rows(n))
        }
    }
}

/// A value in the `meta` table.
fn meta(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()
}

/// Sets a value in the `meta` table; `None` removes it.
fn set_meta(tx: &Transaction<'_>, name: &str, value: Option<&str>) -> rusqlite::Result<()> {
    match value {
        Some(value) => tx
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute([name, value])?,
        None => tx
            .prepare_cached("DELETE FROM meta WHERE name = ?1")?
            .execute([name])?,
    };
    Ok(())
}

fn insert(tx: &Transaction<'_>, row: &Row) -> rusqlite::Result<()> {
    let s = &row.state;
    tx.prepare_cached(
        "INSERT INTO webhooks (key, id, url, body, accepted_ms, attempts, push_backs, paced_ms,
             due_ms, first_attempt_ms, last_attempt_ms, last_error, last_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        row.key as i64,
        row.id,
        row.url,
        row.body,
        row.accepted_ms as i64,
        s.attempts,
        s.push_backs,
        s.paced_ms as i64,
        s.due_ms.map(|v| v as i64),
        s.first_attempt_ms.map(|v| v as i64),
        s.last_attempt_ms.map(|v| v as i64),
        s.last_error,
        s.last_status,
    ])?;
    Ok(())
}

/// Whether a failed commit failed because of one op (which will never
/// work) rather than the disk (which may work again).
pub(crate) fn is_op_error(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch)
    )
}
