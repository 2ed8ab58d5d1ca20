//! The embedded journal: one SQLite file (WAL mode), owned by one process,
//! written by one thread in batches (group commit).
//!
//! Schema (`PRAGMA user_version` 1):
//!
//! - `webhooks`: one row per unfinished webhook, keyed by its acceptance
//!   sequence number;
//! - `dead_letters`: the dead letters, with the fields of
//!   [`DeadLetter`](crate::DeadLetter);
//! - `meta`: the cursor saved with the last accepted webhook (`cursor`),
//!   and, until that webhook is delivered or given back to its sender, the
//!   key of its row and the cursor it replaced (`cursor_key`,
//!   `cursor_before`), so that giving it back puts the old cursor back.
//!
//! Inspect one with the `sqlite3` shell while no process has it open:
//! `sqlite3 journal.db 'SELECT key, id, url, attempts FROM webhooks'`.

mod letters;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{Recovered, Row, RowState, StoreError};
pub use letters::{SqliteDeadLetters, StoredDeadLetter};
pub(crate) use writer::SqliteStore;

/// The schema version this code writes and reads.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    accepted_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    push_backs INTEGER NOT NULL DEFAULT 0,
    paced_ms INTEGER NOT NULL DEFAULT 0,
    due_ms INTEGER,
    first_attempt_ms INTEGER,
    last_attempt_ms INTEGER,
    last_error TEXT,
    last_status INTEGER
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    last_status INTEGER,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    dead_lettered_at INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// How hard each commit presses the data to disk (SQLite's `synchronous`).
///
/// # Examples
///
/// ```
/// use hookpool::{Journal, Synchronous};
/// let journal = Journal::new("hooks.db").synchronous(Synchronous::Normal);
/// assert_eq!(journal.synchronous_mode(), Synchronous::Normal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on the disk before it returns (`synchronous=FULL`):
    /// survives a process crash, an OS crash and a power cut.
    Full,
    /// Commits reach the operating system, and the disk at each checkpoint
    /// (`synchronous=NORMAL` in WAL mode): survives a process crash
    /// (`kill -9`, an OOM kill), but an OS crash or a power cut may lose the
    /// last commits. Faster.
    Normal,
}

/// The embedded on-disk journal: accepted webhooks survive `kill -9`, OOM
/// kills and restarts. Give it to
/// [`DispatcherBuilder::journal`](crate::DispatcherBuilder::journal).
///
/// One SQLite file in WAL mode, owned by one process: a second process that
/// opens it gets [`StoreError::Locked`]. At `build()`, whatever a previous
/// process left unfinished is delivered again, with the same webhook ids,
/// the attempts already spent, and a retry that was due later waiting for
/// its time. Delivery is at least once: a webhook in flight at a crash is
/// sent again, with the same id, so receivers drop duplicates by
/// `webhook-id`.
///
/// # Examples
///
/// ```
/// use hookpool::{Dispatcher, Journal, Synchronous};
///
/// let dir = std::env::temp_dir().join(format!("hookpool-doc-journal-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let hooks = Dispatcher::builder()
///     .journal(Journal::new(dir.join("hooks.db")).synchronous(Synchronous::Full))
///     .build()?;
/// assert_eq!(hooks.stats().store.unwrap().backlog, 0);
/// let report = hooks.shutdown();
/// assert_eq!(report.kept, 0);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a journal does nothing until it is given to a dispatcher builder"]
pub struct Journal {
    path: PathBuf,
    synchronous: Synchronous,
    keep_dead_letters: bool,
    max_size: Option<u64>,
}

impl Journal {
    /// A journal in the file at `path`, created if missing.
    ///
    /// # Examples
    ///
    /// ```
    /// let journal = hookpool::Journal::new("hooks.db");
    /// assert_eq!(journal.path(), std::path::Path::new("hooks.db"));
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal {
            path: path.into(),
            synchronous: Synchronous::Full,
            keep_dead_letters: true,
            max_size: None,
        }
    }

    /// How hard each commit presses data to disk. Defaults to
    /// [`Synchronous::Full`], which survives a power cut.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Journal, Synchronous};
    /// assert_eq!(Journal::new("a.db").synchronous_mode(), Synchronous::Full);
    /// ```
    pub fn synchronous(mut self, mode: Synchronous) -> Self {
        self.synchronous = mode;
        self
    }

    /// Whether dead letters go into the journal's own `dead_letters` table,
    /// moved there in the same transaction that removes the webhook, when
    /// the dispatcher has no other [`dead_letters`](crate::DispatcherBuilder::dead_letters)
    /// sink. Defaults to `true`. With another sink, the letter is stored
    /// there first, then the webhook is removed from the journal.
    ///
    /// # Examples
    ///
    /// ```
    /// let journal = hookpool::Journal::new("a.db").keep_dead_letters(false);
    /// # drop(journal);
    /// ```
    pub fn keep_dead_letters(mut self, keep: bool) -> Self {
        self.keep_dead_letters = keep;
        self
    }

    /// The most the journal file may hold, in bytes (SQLite's
    /// `max_page_count`, rounded down to whole pages). Past it, a commit
    /// fails as on a full disk: durable sends get [`StoreError::DiskFull`]
    /// with their webhook, and state changes wait in memory until delivered
    /// webhooks free room. Defaults to none: the disk is the limit.
    ///
    /// # Examples
    ///
    /// ```
    /// let journal = hookpool::Journal::new("a.db").max_size(64 * 1024 * 1024);
    /// # drop(journal);
    /// ```
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// The journal file.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Journal::new("a.db").path().to_str(), Some("a.db"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The synchronous mode.
    ///
    /// # Examples
    ///
    /// See [`Journal::synchronous`].
    ///
    /// ```
    /// assert_eq!(hookpool::Journal::new("a.db").synchronous_mode(), hookpool::Synchronous::Full);
    /// ```
    pub fn synchronous_mode(&self) -> Synchronous {
        self.synchronous
    }

    /// The cursor the journal file holds (see
    /// [`DispatchHandle::send_durable_with_cursor`](crate::DispatchHandle::send_durable_with_cursor)),
    /// read without recovering or starting anything: `None` when the file
    /// does not exist or holds no cursor. A program that resumes an input
    /// checks it here, before it builds a dispatcher on the journal, which
    /// starts delivering what the journal holds at once.
    ///
    /// # Errors
    ///
    /// [`StoreError`], as [`build`](crate::DispatcherBuilder::build) would
    /// give it: another process has the file open, it is not a journal, or
    /// it cannot be written.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use hookpool::{Dispatcher, Journal, Webhook};
    ///
    /// let dir = std::env::temp_dir().join(format!("hookpool-doc-cursor-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let journal = Journal::new(dir.join("hooks.db"));
    /// assert_eq!(journal.read_cursor()?, None);
    /// let hooks = Dispatcher::builder().journal(journal.clone()).build()?;
    /// let webhook = Webhook::new("http://127.0.0.1:9/", &1)?;
    /// hooks.handle().send_durable_with_cursor(webhook, "line 1".into(), Duration::from_secs(1))?;
    /// let _ = hooks.shutdown_timeout(Duration::ZERO);
    /// assert_eq!(journal.read_cursor()?.as_deref(), Some("line 1"));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_cursor(&self) -> Result<Option<String>, StoreError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let conn = open(&self.path, self.synchronous)?;
        read_cursor(&conn, &self.path)
    }

    pub(crate) fn keeps_dead_letters(&self) -> bool {
        self.keep_dead_letters
    }

    /// Opens the file, recovers it, and starts its writer thread.
    pub(crate) fn open(
        &self,
        name: &str,
        max_pending_inserts: usize,
    ) -> Result<(Arc<SqliteStore>, Recovered), StoreError> {
        let conn = open(&self.path, self.synchronous)?;
        if let Some(bytes) = self.max_size {
            let page: i64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .map_err(|e| classify(&self.path, e))?;
            let pages = (bytes / page.max(512) as u64).max(1);
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )
            .map_err(|e| classify(&self.path, e))?;
        }
        let recovered = recover(&conn, &self.path)?;
        // Keys start again in this process: a previous one's cursor owner
        // must not match a new row.
        conn.execute(
            "DELETE FROM meta WHERE name IN ('cursor_key', 'cursor_before')",
            [],
        )
        .map_err(|e| classify(&self.path, e))?;
        let store = SqliteStore::start(
            conn,
            self.path.clone(),
            name,
            max_pending_inserts,
            recovered.rows.len() as u64,
        )?;
        Ok((store, recovered))
    }
}

/// Maps a SQLite error on `path` to what it means for the user.
pub(crate) fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked { path },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
        Some(ErrorCode::SystemIoFailure) => StoreError::Io {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::ReadOnly { path }
        }
        _ => StoreError::Other {
            path,
            source: Box::new(e),
        },
    }
}

/// Opens `path` for this process alone: WAL, the synchronous mode, an
/// exclusive lock taken at once, and the schema.
pub(crate) fn open(path: &Path, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let err = |e| classify(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    // SQLite opens a file it cannot write read-only, without a word.
    if conn.is_readonly(rusqlite::MAIN_DB).map_err(err)? {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    wal_writable(path)?;
    // Another process's lock must show as an error at once, not a wait.
    conn.busy_timeout(Duration::ZERO).map_err(err)?;
    // Exclusive before the first access: the lock, once taken, is kept, so
    // a second process cannot read or write the file (and WAL needs no
    // shared-memory file).
    let locking: String = conn
        .pragma_update_and_check(None, "locking_mode", "EXCLUSIVE", |r| r.get(0))
        .map_err(err)?;
    check(path, "locking_mode=EXCLUSIVE", &locking, "exclusive")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    check(path, "journal_mode=WAL", &mode, "wal")?;
    let (value, expect) = match synchronous {
        Synchronous::Full => ("FULL", 2),
        Synchronous::Normal => ("NORMAL", 1),
    };
    conn.pragma_update(None, "synchronous", value)
        .map_err(err)?;
    let got: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .map_err(err)?;
    check(path, "synchronous", &got.to_string(), &expect.to_string())?;
    // Deleted rows leave free pages that new rows reuse; the WAL is cut
    // back to this size after each checkpoint, so neither file grows for
    // ever.
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
        .map_err(err)?;
    // Takes the exclusive lock now (the first write), and creates the
    // schema if the file is new.
    let tx = conn.unchecked_transaction().map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    tx.execute_batch(SCHEMA).map_err(err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)?;
    let quick: String = conn
        .pragma_query_value(None, "quick_check", |r| r.get(0))
        .map_err(err)?;
    if quick != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: quick,
        });
    }
    Ok(conn)
}

/// A new journal's WAL goes beside it: say plainly when the directory
/// cannot take it, rather than let SQLite fail later with an I/O error.
/// Only the WAL file is touched: opening and closing the journal file
/// itself would drop the locks this process holds on it (POSIX locks
/// belong to the process, and any close releases them).
fn wal_writable(path: &Path) -> Result<(), StoreError> {
    use std::io::ErrorKind;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&wal)
    {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::NotFound
            ) =>
        {
            Err(StoreError::ReadOnly {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(StoreError::Other {
            path: path.to_path_buf(),
            source: Box::new(e),
        }),
    }
}

fn check(path: &Path, pragma: &'static str, got: &str, want: &str) -> Result<(), StoreError> {
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(StoreError::Setting {
            path: path.to_path_buf(),
            pragma,
            got: got.to_owned(),
        })
    }
}

/// Every unfinished row, in key order, and the saved cursor.
fn recover(conn: &Connection, path: &Path) -> Result<Recovered, StoreError> {
    let err = |e| classify(path, e);
    let mut stmt = conn
        .prepare(
            "SELECT key, id, url, body, accepted_ms, attempts, push_backs, paced_ms, due_ms,
                    first_attempt_ms, last_attempt_ms, last_error, last_status
             FROM webhooks ORDER BY key",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                key: r.get::<_, i64>(0)? as u64,
                id: r.get(1)?,
                url: r.get(2)?,
                body: r.get(3)?,
                accepted_ms: r.get::<_, i64>(4)? as u64,
                state: RowState {
                    attempts: r.get(5)?,
                    push_backs: r.get(6)?,
                    paced_ms: r.get::<_, i64>(7)? as u64,
                    due_ms: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                    first_attempt_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                    last_attempt_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                    last_error: r.get(11)?,
                    last_status: r.get(12)?,
                },
            })
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let cursor = read_cursor(conn, path)?;
    let next_key = rows.last().map_or(0, |r| r.key + 1);
    Ok(Recovered {
        rows,
        cursor,
        next_key,
    })
}

/// The cursor saved with the last accepted webhook, if any.
fn read_cursor(conn: &Connection, path: &Path) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name = 'cursor'", [], |r| {
        r.get(0)
    })
    .optional()
    .map_err(|e| classify(path, e))
}

#[cfg(test)]
mod tests;
