use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::store::{Commit, Store};

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hookpool-sqlite-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row(key: u64) -> Row {
    Row {
        key,
        id: format!("msg_{key}"),
        url: "https://example.com/hooks".into(),
        body: format!(r#"{{"n": {key}}}"#),
        accepted_ms: 1_700_000_000_000 + key,
        state: RowState::default(),
    }
}

fn letter(id: &str) -> DeadLetter {
    let hook = crate::Webhook::from_json("https://example.com/hooks", r#"{"a": 1}"#)
        .unwrap()
        .with_id(id)
        .unwrap();
    DeadLetter::from_webhook(
        &hook,
        DeadLetterReason::RetriesExhausted,
        "endpoint answered 500",
    )
}

/// Accepts without waiting for the commit, waiting for the writer when it
/// is behind, as a full queue would.
fn accept(store: &SqliteStore, r: Row) {
    let mut tries = 0;
    while let Err(e) = store.accept(r.clone(), None, Commit::NoWait) {
        assert!(matches!(e, StoreError::Busy { .. }), "{e}");
        tries += 1;
        assert!(tries < 10_000, "the writer never caught up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn open_store(path: &Path) -> (std::sync::Arc<SqliteStore>, Recovered) {
    Journal::new(path).open("test", 1024).unwrap()
}

#[test]
fn the_settings_are_checked_not_assumed() {
    let dir = TempDir::new("pragmas");
    let conn = open(&dir.path("j.db"), Synchronous::Full).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), sync, version), ("wal", 2, SCHEMA_VERSION));
    drop(conn);
    let conn = open(&dir.path("n.db"), Synchronous::Normal).unwrap();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1);
    // A pragma SQLite ignores is reported, not assumed.
    assert!(matches!(
        check(Path::new("x.db"), "journal_mode=WAL", "delete", "wal"),
        Err(StoreError::Setting { got, .. }) if got == "delete"
    ));
}

#[test]
fn a_second_opener_is_refused() {
    let dir = TempDir::new("lock");
    let path = dir.path("j.db");
    let first = open(&path, Synchronous::Full).unwrap();
    let err = open(&path, Synchronous::Full).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    drop(first);
    open(&path, Synchronous::Full).unwrap();
}

#[test]
fn a_file_that_is_not_a_journal_is_refused_clearly() {
    let dir = TempDir::new("corrupt");
    let path = dir.path("j.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = open(&path, Synchronous::Full).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn a_truncated_journal_is_refused_clearly() {
    let dir = TempDir::new("truncated");
    let path = dir.path("j.db");
    {
        let (store, _) = open_store(&path);
        for key in 0..2000 {
            accept(&store, row(key));
        }
        assert_eq!(store.close(), 2000);
    }
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let err = Journal::new(&path).open("test", 16).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("version");
    let path = dir.path("j.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let err = open(&path, Synchronous::Full).unwrap_err();
    assert!(matches!(err, StoreError::Version { found: 7, .. }), "{err}");
}

#[test]
fn rows_and_the_cursor_survive_a_reopen_in_key_order() {
    let dir = TempDir::new("recover");
    let path = dir.path("j.db");
    {
        let (store, recovered) = open_store(&path);
        assert_eq!((recovered.rows.len(), recovered.next_key), (0, 0));
        store
            .accept(row(3), Some("line 3".into()), Commit::Wait)
            .unwrap();
        store.accept(row(1), None, Commit::NoWait).unwrap();
        store.accept(row(2), None, Commit::NoWait).unwrap();
        let state = RowState {
            attempts: 2,
            due_ms: Some(1_800_000_000_000),
            last_error: Some("endpoint answered 503".into()),
            last_status: Some(503),
            ..RowState::default()
        };
        store.scheduled(Row {
            state: state.clone(),
            ..row(2)
        });
        store.delivered(1);
        assert_eq!(store.close(), 2);
    }
    let (store, recovered) = open_store(&path);
    let keys: Vec<u64> = recovered.rows.iter().map(|r| r.key).collect();
    assert_eq!(keys, [2, 3]);
    assert_eq!(recovered.rows[0].state.attempts, 2);
    assert_eq!(recovered.rows[0].state.last_status, Some(503));
    assert_eq!(recovered.rows[1], row(3));
    assert_eq!(recovered.cursor.as_deref(), Some("line 3"));
    assert_eq!(recovered.next_key, 4);
    assert_eq!(store.stats().recovered, 2);
    store.close();
}

/// A row given back to its sender (accepted, then not queued) takes its
/// cursor with it: a restart resumes before that webhook, not after it.
/// Before the fix the cursor stayed, and the webhook was skipped.
#[test]
fn a_forgotten_row_puts_the_cursor_it_replaced_back() {
    let dir = TempDir::new("forget-cursor");
    let path = dir.path("j.db");
    let journal = Journal::new(&path);
    {
        let (store, _) = open_store(&path);
        store
            .accept(row(0), Some("line 1".into()), Commit::Wait)
            .unwrap();
        store
            .accept(row(1), Some("line 2".into()), Commit::Wait)
            .unwrap();
        store.forget(1);
        // A forgotten row that did not save the cursor leaves it alone.
        store.accept(row(2), None, Commit::Wait).unwrap();
        store.forget(2);
        assert_eq!(store.close(), 1);
    }
    assert_eq!(journal.read_cursor().unwrap().as_deref(), Some("line 1"));
    {
        let (store, recovered) = open_store(&path);
        assert_eq!(recovered.cursor.as_deref(), Some("line 1"));
        // The owner is forgotten at reopen: a row with a previous
        // process's key does not roll the cursor back.
        store.forget(0);
        assert_eq!(store.close(), 0);
    }
    assert_eq!(journal.read_cursor().unwrap().as_deref(), Some("line 1"));
    // A journal's first cursor goes away with its row.
    let first = dir.path("first.db");
    {
        let (store, _) = open_store(&first);
        store
            .accept(row(0), Some("line 1".into()), Commit::Wait)
            .unwrap();
        store.forget(0);
        store.close();
    }
    assert_eq!(Journal::new(&first).read_cursor().unwrap(), None);
    assert_eq!(
        Journal::new(dir.path("missing.db")).read_cursor().unwrap(),
        None
    );
    assert!(!dir.path("missing.db").exists(), "reading does not create");
}

#[test]
fn a_dead_letter_moves_in_one_step_and_can_be_revived() {
    let dir = TempDir::new("letters");
    let path = dir.path("j.db");
    let (store, _) = open_store(&path);
    store.accept(row(0), None, Commit::Wait).unwrap();
    store.dead_lettered(0, Some(letter("msg_0")));
    let letters = store.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.id, "msg_0");
    assert_eq!(letters[0].letter.reason, DeadLetterReason::RetriesExhausted);
    let stats = store.stats();
    assert_eq!((stats.backlog, stats.dead_letters), (0, 1));
    // Revived: out of the dead letters, back among the unfinished.
    assert!(store.revive(letters[0].seq, row(9)).unwrap());
    assert!(!store.revive(letters[0].seq, row(10)).unwrap(), "only once");
    assert!(store.dead_letters(10).unwrap().is_empty());
    assert_eq!(store.stats().backlog, 1);
    store.dead_lettered(9, Some(letter("msg_9")));
    let seqs: Vec<u64> = store
        .dead_letters(10)
        .unwrap()
        .iter()
        .map(|l| l.seq)
        .collect();
    assert_eq!(store.delete_dead_letters(&seqs).unwrap(), 1);
    assert_eq!(store.close(), 0);
    // The same table, read as a dead-letter file.
    let file = SqliteDeadLetters::open(&path).unwrap();
    assert!(file.list(10).unwrap().is_empty());
}

#[test]
fn a_journal_at_its_size_limit_refuses_durably_and_keeps_the_rest() {
    let dir = TempDir::new("full");
    let path = dir.path("j.db");
    let (store, _) = Journal::new(&path)
        .max_size(64 * 1024)
        .open("test", 1 << 20)
        .unwrap();
    let big = |key| Row {
        body: format!(r#"{{"pad": "{}"}}"#, "x".repeat(4000)),
        ..row(key)
    };
    let mut accepted = 0;
    let mut refused = None;
    for key in 0..100 {
        match store.accept(big(key), None, Commit::Wait) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the limit was reached");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert!(accepted > 0);
    // Deliveries free room, and durable sends work again.
    for key in 0..accepted {
        store.delivered(key);
    }
    store.accept(big(1000), None, Commit::Wait).unwrap();
    assert!(store.stats().errors >= 1);
    assert_eq!(store.close(), 1);
}

#[test]
fn a_hundred_thousand_delivered_webhooks_leave_the_files_small() {
    let dir = TempDir::new("size");
    let path = dir.path("j.db");
    let (store, _) = open_store(&path);
    let body = format!(r#"{{"text": "{}"}}"#, "y".repeat(200));
    for key in 0..100_000 {
        let mut r = row(key);
        r.body.clone_from(&body);
        accept(&store, r);
        if key >= 100 {
            store.delivered(key - 100);
        }
    }
    for key in 99_900..100_000 {
        store.delivered(key);
    }
    assert_eq!(store.close(), 0);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let db = size(&path);
    let wal = size(&dir.path("j.db-wal"));
    println!("journal {db} bytes, wal {wal} bytes after 100,000 webhooks");
    assert!(db < 4 * 1024 * 1024, "journal file {db} bytes");
    assert!(wal < 8 * 1024 * 1024, "wal file {wal} bytes");
}
