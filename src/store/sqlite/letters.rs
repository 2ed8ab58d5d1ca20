//! Dead letters in SQLite: the journal's `dead_letters` table, and
//! [`SqliteDeadLetters`], a sink and a reader for a file of them.

use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{Connection, Transaction, params};
use serde_json::value::RawValue;

use super::{Synchronous, classify, open};
use crate::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink};
use crate::store::StoreError;

/// A dead letter as a SQLite file holds it: the letter and its sequence
/// number in the file, which [`SqliteDeadLetters::delete`] and replay use.
///
/// # Examples
///
/// ```
/// use hookpool::{DeadLetter, DeadLetterReason, DeadLetterSink, SqliteDeadLetters, Webhook};
///
/// let dir = std::env::temp_dir().join(format!("hookpool-doc-stored-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let letters = SqliteDeadLetters::open(dir.join("letters.db"))?;
/// let hook = Webhook::new("https://example.com/hooks", &1)?;
/// letters.store(&DeadLetter::from_webhook(&hook, DeadLetterReason::QueueFull, "queue is full"))?;
/// let stored = letters.list(10)?;
/// assert_eq!((stored[0].seq, stored[0].letter.id.as_str()), (1, hook.id()));
/// # drop(letters);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoredDeadLetter {
    /// Its number in the file, in the order letters were stored.
    pub seq: u64,
    /// The letter.
    pub letter: DeadLetter,
}

/// Dead letters in a SQLite file: the same fields as
/// [`JsonlDeadLetters`](crate::JsonlDeadLetters), in a `dead_letters` table
/// (the same table a [`Journal`](crate::Journal) keeps its dead letters in,
/// so a journal file can be opened with this too).
///
/// Like a journal, the file belongs to one process at a time: opening one
/// that another process holds gives [`StoreError::Locked`]. Each letter is
/// committed (`synchronous=FULL`) before [`store`](DeadLetterSink::store)
/// returns.
///
/// # Examples
///
/// ```
/// use hookpool::{Dispatcher, SqliteDeadLetters};
///
/// let dir = std::env::temp_dir().join(format!("hookpool-doc-letters-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let letters = std::sync::Arc::new(SqliteDeadLetters::open(dir.join("letters.db"))?);
/// let hooks = Dispatcher::builder().dead_letters(letters.clone()).build()?;
/// let _ = hooks.shutdown();
/// assert!(letters.list(100)?.is_empty());
/// # drop(letters);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SqliteDeadLetters {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteDeadLetters {
    /// Opens (or creates) the file at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError`]: another process holds it, it is not a SQLite file,
    /// or it cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("hookpool-doc-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let letters = hookpool::SqliteDeadLetters::open(dir.join("letters.db"))?;
    /// assert_eq!(letters.path(), dir.join("letters.db"));
    /// # drop(letters);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open(&path, Synchronous::Full)?;
        Ok(SqliteDeadLetters {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The file.
    ///
    /// # Examples
    ///
    /// See [`SqliteDeadLetters::open`].
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("hookpool-doc-path-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let letters = hookpool::SqliteDeadLetters::open(dir.join("x.db"))?;
    /// assert!(letters.path().ends_with("x.db"));
    /// # drop(letters);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first `limit` letters, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the file cannot be read.
    ///
    /// # Examples
    ///
    /// See [`StoredDeadLetter`].
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("hookpool-doc-list-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let letters = hookpool::SqliteDeadLetters::open(dir.join("x.db"))?;
    /// assert!(letters.list(10)?.is_empty());
    /// # drop(letters);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list(&self, limit: usize) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(|e| classify(&self.path, e))?;
        read_letters(&tx, limit).map_err(|e| classify(&self.path, e))
    }

    /// Deletes the letters with these sequence numbers (after a replay
    /// delivered them, say); returns how many there were.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the file cannot be written.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("hookpool-doc-del-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let letters = hookpool::SqliteDeadLetters::open(dir.join("x.db"))?;
    /// assert_eq!(letters.delete(&[1, 2])?, 0);
    /// # drop(letters);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let err = |e| classify(&self.path, e);
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(err)?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM dead_letters WHERE seq = ?1")
                .map_err(err)?;
            for seq in seqs {
                n += stmt.execute([*seq as i64]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }
}

impl DeadLetterSink for SqliteDeadLetters {
    fn store(&self, letter: &DeadLetter) -> io::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(io::Error::other)?;
        write_letter(&tx, letter).map_err(io::Error::other)?;
        tx.commit().map_err(io::Error::other)
    }
}

pub(super) fn write_letter(tx: &Transaction<'_>, letter: &DeadLetter) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO dead_letters (id, url, payload, attempts, error, last_status,
             first_attempt_at, last_attempt_at, dead_lettered_at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        letter.id,
        letter.url,
        letter.payload.get(),
        letter.attempts,
        letter.error,
        letter.last_status,
        letter.first_attempt_at.map(|v| v as i64),
        letter.last_attempt_at.map(|v| v as i64),
        letter.dead_lettered_at as i64,
        letter.reason.as_str(),
    ])?;
    Ok(())
}

pub(super) fn read_letters(
    tx: &Transaction<'_>,
    limit: usize,
) -> rusqlite::Result<Vec<StoredDeadLetter>> {
    let mut stmt = tx.prepare_cached(
        "SELECT seq, id, url, payload, attempts, error, last_status, first_attempt_at,
                last_attempt_at, dead_lettered_at, reason
         FROM dead_letters ORDER BY seq LIMIT ?1",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    stmt.query_map([limit], |r| {
        let payload: String = r.get(3)?;
        let reason: String = r.get(10)?;
        let bad = |column, e: Box<dyn std::error::Error + Send + Sync>| {
            rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e)
        };
        // Stored from a `RawValue`; a hand-edited payload that is not JSON
        // any more comes back as a JSON string of its text.
        let payload = RawValue::from_string(payload.clone())
            .or_else(|_| serde_json::value::to_raw_value(&payload))
            .map_err(|e| bad(3, Box::new(e)))?;
        let reason = DeadLetterReason::parse(&reason)
            .ok_or_else(|| bad(10, format!("unknown reason {reason:?}").into()))?;
        Ok(StoredDeadLetter {
            seq: r.get::<_, i64>(0)? as u64,
            letter: DeadLetter {
                id: r.get(1)?,
                url: r.get(2)?,
                payload,
                attempts: r.get(4)?,
                error: r.get(5)?,
                last_status: r.get(6)?,
                first_attempt_at: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                last_attempt_at: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
                dead_lettered_at: r.get::<_, i64>(9)? as u64,
                reason,
            },
        })
    })?
    .collect()
}
