//! Durable stores: where accepted webhooks live until they are delivered or
//! dead-lettered, so that a crash loses none of them.
//!
//! The engine talks to a store through [`Store`] and never names a backend.
//! A store keeps one [`Row`] per unfinished webhook and is told of every
//! state change: accepted, retry scheduled or deferred, delivered, and
//! dead-lettered (a move into its dead letters, in one step). What a crashed
//! process left unfinished comes back at the next start.
//!
//! - [`sqlite`]: the embedded journal, one file per process.
//! - `redis` (feature `redis`): the shared queue, for many processes.

#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod sqlite;

use std::fmt;
use std::path::PathBuf;

use crate::dead_letter::DeadLetter;

#[cfg(feature = "redis")]
pub use self::redis::RedisQueue;
pub use sqlite::{Journal, SqliteDeadLetters, StoredDeadLetter, Synchronous};

/// What a store keeps for one unfinished webhook.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    /// The acceptance sequence number: unique in the store, and the order
    /// webhooks waiting for one endpoint go in.
    pub(crate) key: u64,
    pub(crate) id: String,
    pub(crate) url: String,
    /// The JSON body, byte for byte.
    pub(crate) body: String,
    /// When it was accepted, in Unix milliseconds.
    pub(crate) accepted_ms: u64,
    pub(crate) state: RowState,
}

/// The part of a [`Row`] that changes as attempts are made.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RowState {
    pub(crate) attempts: u32,
    pub(crate) push_backs: u32,
    /// Time spent waiting for the endpoint's pace (not counted against
    /// `max_elapsed`).
    pub(crate) paced_ms: u64,
    /// Not to be attempted before this (Unix milliseconds); `None`: at once.
    pub(crate) due_ms: Option<u64>,
    pub(crate) first_attempt_ms: Option<u64>,
    pub(crate) last_attempt_ms: Option<u64>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_status: Option<u16>,
}

/// What a store found unfinished when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) rows: Vec<Row>,
    /// The cursor saved with the last accepted webhook, if any.
    pub(crate) cursor: Option<String>,
    /// The first key never used.
    pub(crate) next_key: u64,
}

/// How [`Store::accept`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Once the row is committed (or could not be).
    Wait,
    /// At once; refused if the store already has its fill of rows waiting
    /// to be written.
    NoWait,
}

/// A durable store of unfinished webhooks. Every method but `accept` with
/// [`Commit::Wait`] returns without waiting for the disk; a store writes
/// in batches, and a write that fails is tried again until it succeeds.
pub(crate) trait Store: Send + Sync + fmt::Debug {
    /// Makes `row` durable, with `cursor` saved beside it.
    fn accept(&self, row: Row, cursor: Option<String>, commit: Commit) -> Result<(), StoreError>;
    /// Makes every row of `rows` durable in one step, all or none, with
    /// `cursor` saved beside the last; returns once they are.
    fn accept_batch(&self, rows: Vec<Row>, cursor: Option<String>) -> Result<(), StoreError>;
    /// The row accepted under `key` was not queued after all: remove it.
    fn forget(&self, key: u64);
    /// Delivered: remove the row.
    fn delivered(&self, key: u64);
    /// A retry or a wait was scheduled: record the row's new state (its
    /// `due_ms` says when). A [`shared`](Store::shared) store takes the
    /// webhook over: it waits there, and any process may deliver it.
    fn scheduled(&self, row: Row);
    /// Dead-lettered: with `letter`, move the row into the store's dead
    /// letters in one step; without, remove it (the letter went elsewhere).
    fn dead_lettered(&self, key: u64, letter: Option<DeadLetter>);
    /// The dead letters the store holds, oldest first, at most `limit`.
    fn dead_letters(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError>;
    /// Moves stored dead letter `seq` back among the unfinished, as `row`,
    /// in one step. `Ok(false)`: there is no such letter.
    fn revive(&self, seq: u64, row: Row) -> Result<bool, StoreError>;
    /// Deletes stored dead letters; returns how many there were.
    fn delete_dead_letters(&self, seqs: &[u64]) -> Result<usize, StoreError>;
    fn stats(&self) -> StoreStats;
    /// Writes everything pending and closes; returns the rows left
    /// unfinished, which the next start recovers.
    fn close(&self) -> u64;
    /// Whether the store is the queue, shared by processes: accepted
    /// webhooks go to it, not to this process's queue; workers
    /// [`claim`](Store::claim) from it; waits are handed to it; and a
    /// shutdown [`release`](Store::release)s what never started.
    fn shared(&self) -> bool {
        false
    }
    /// Takes up to `max` webhooks to deliver from a shared store.
    fn claim(&self, max: usize) -> Result<Vec<Row>, StoreError> {
        let _ = max;
        Ok(Vec::new())
    }
    /// A claimed webhook that never started goes back to a shared store.
    fn release(&self, key: u64) {
        let _ = key;
    }
}

/// The counts of a queue shared by processes, in
/// [`StoreStats::shared`].
///
/// # Examples
///
/// ```
/// let q = hookpool::SharedQueueStats::default();
/// assert_eq!((q.ready, q.delayed, q.processing, q.dead, q.workers_alive), (0, 0, 0, 0, 0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SharedQueueStats {
    /// The queue's name ([`RedisQueue::new`](crate::RedisQueue)'s second
    /// argument): processes on one queue report the same counts under it.
    pub queue: String,
    /// Webhooks waiting for a worker.
    pub ready: u64,
    /// Webhooks waiting for a retry, a breaker or a pause, by due time.
    pub delayed: u64,
    /// Webhooks claimed by worker processes.
    pub processing: u64,
    /// Dead letters in the queue.
    pub dead: u64,
    /// Worker processes that heart-beat within their ttl.
    pub workers_alive: u64,
    /// Webhooks this process enqueued.
    pub enqueued: u64,
    /// Late results of this process for webhooks the queue had taken back
    /// from it (it was silent past its ttl): not counted by the queue.
    pub stale: u64,
    /// Webhooks of dead workers this process took back.
    pub reclaimed: u64,
}

/// A durable store's counters, in
/// [`DispatchStats::store`](crate::DispatchStats::store).
///
/// # Examples
///
/// ```
/// let dir = std::env::temp_dir().join(format!("hookpool-doc-stats-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let hooks = hookpool::Dispatcher::builder()
///     .journal(hookpool::Journal::new(dir.join("journal.db")))
///     .build()?;
/// let store = hooks.stats().store.expect("a journal");
/// assert_eq!((store.backlog, store.recovered), (0, 0));
/// let _ = hooks.shutdown();
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// Unfinished webhooks in the store, written or about to be.
    pub backlog: u64,
    /// Webhooks found unfinished when the store was opened.
    pub recovered: u64,
    /// State changes waiting to be written.
    pub pending: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions that failed (each is tried again).
    pub errors: u64,
    /// Dead letters the store holds.
    pub dead_letters: u64,
    /// Time from a state change's arrival to its commit.
    pub commit_latency: crate::Histogram,
    /// The shared queue's counts, for a queue shared by processes (Redis).
    pub shared: Option<SharedQueueStats>,
}

/// Why a durable store could not be opened or written.
///
/// Each message names the store and says what to do.
///
/// # Examples
///
/// ```
/// use hookpool::{Journal, StoreError};
///
/// let dir = std::env::temp_dir().join(format!("hookpool-doc-err-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("not-a-journal.db");
/// std::fs::write(&path, b"this is not SQLite, and it is long enough to look like a header ....")?;
/// let err = hookpool::Dispatcher::builder().journal(Journal::new(&path)).build().unwrap_err();
/// assert!(matches!(err, hookpool::BuildError::Store(StoreError::Corrupt { .. })), "{err}");
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the journal open.
    Locked {
        /// The journal file.
        path: PathBuf,
    },
    /// The file is not a journal, or is damaged.
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The journal was written by a newer hookpool.
    Version {
        /// The journal file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// The disk is full.
    DiskFull {
        /// The journal file.
        path: PathBuf,
    },
    /// The file or its directory cannot be written.
    ReadOnly {
        /// The journal file.
        path: PathBuf,
    },
    /// The operating system refused a read or write: a read-only or failing
    /// filesystem.
    Io {
        /// The journal file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// A setting SQLite did not take: it answered `got`.
    Setting {
        /// The journal file.
        path: PathBuf,
        /// The pragma, such as `journal_mode=WAL`.
        pragma: &'static str,
        /// What SQLite answered.
        got: String,
    },
    /// Any other failure of the store.
    Other {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Too many webhooks wait to be written: the disk is behind. Try again
    /// shortly (a non-blocking send gets this as a full queue).
    Busy {
        /// The journal file.
        path: PathBuf,
    },
    /// The shared queue's server cannot be reached, or did not answer in
    /// time.
    Unavailable {
        /// The server, its password redacted.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// The store is closed: the dispatcher is shutting down.
    Closed,
    /// The dispatcher has no durable store.
    NoStore,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Locked { path } => write!(
                f,
                "journal {} is in use by another process; stop that process, or give this one another file",
                path.display()
            ),
            StoreError::Corrupt { path, detail } => write!(
                f,
                "journal {} is not a journal or is damaged ({detail}); move it aside to start afresh, or try the sqlite3 shell's .recover on it",
                path.display()
            ),
            StoreError::Version { path, found } => write!(
                f,
                "journal {} has schema version {found}, written by a newer hookpool; use that version, or another file",
                path.display()
            ),
            StoreError::DiskFull { path } => write!(
                f,
                "journal {}: the disk is full; free some space",
                path.display()
            ),
            StoreError::ReadOnly { path } => write!(
                f,
                "journal {} cannot be written; check the permissions of the file and its directory",
                path.display()
            ),
            StoreError::Io { path, detail } => write!(
                f,
                "journal {}: the filesystem refused a read or write ({detail}); check that it is mounted read-write and healthy",
                path.display()
            ),
            StoreError::Setting { path, pragma, got } => write!(
                f,
                "journal {}: SQLite did not apply {pragma} (it answered {got:?})",
                path.display()
            ),
            StoreError::Other { path, .. } => write!(f, "journal {} failed", path.display()),
            StoreError::Busy { path } => write!(
                f,
                "journal {} is behind: too many webhooks wait to be written; try again shortly",
                path.display()
            ),
            StoreError::Unavailable { target, detail } => write!(
                f,
                "redis {target} is unavailable ({detail}); nothing was queued: try again, or check that Redis is up"
            ),
            StoreError::Closed => {
                f.write_str("the journal is closed: the dispatcher is shutting down")
            }
            StoreError::NoStore => {
                f.write_str("the dispatcher has no durable store: configure a journal")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Other { source, .. } => Some(&**source),
            _ => None,
        }
    }
}
