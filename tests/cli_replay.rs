//! `hookpool replay` of a SQLite file (issue 15): a journal's dead letters
//! are delivered with their ids, in chunks that fit the queue, and its
//! table is left empty; a letter that fails again goes back to it.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cli::{RUN, hookpool, run};
use common::server::{Recorded, Reply, TestServer};
use common::tempdir::TempDir;
use hookpool::{Dispatcher, HEADER_WEBHOOK_ID, Journal, RetryPolicy, SqliteDeadLetters, Webhook};

/// Dead letters in a dispatcher's journal, all to `url`: each webhook is
/// answered 400 once (permanent) and moves into the journal's table.
fn journal_with_letters(path: &Path, url: &str, n: u32) -> Vec<String> {
    let hooks = Dispatcher::builder()
        .journal(Journal::new(path))
        .retry(RetryPolicy::exponential(Duration::from_millis(1)).max_attempts(1))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let webhook = Webhook::new(url, &serde_json::json!({ "n": i })).unwrap();
            let id = webhook.id().to_owned();
            hooks.send_durable(webhook, RUN).unwrap();
            id
        })
        .collect();
    assert!(common::wait_until(RUN, || {
        hooks.stats().store.unwrap().dead_letters == u64::from(n)
    }));
    let report = hooks.shutdown();
    assert_eq!(report.kept, 0);
    ids
}

/// `hookpool replay journal.db`: the journal's dead letters are delivered
/// with their ids, in chunks that fit a small queue, and the table is left
/// empty; a letter that fails again goes back to it. `--url` is refused.
#[test]
fn replay_delivers_a_journals_dead_letters_and_empties_its_table() {
    let dir = TempDir::new("journal-replay");
    let path = dir.path("journal.db");
    let poison = Arc::new(Mutex::new(String::new()));
    let p = Arc::clone(&poison);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let server = TestServer::start(move |r: &Recorded| {
        // 400 to the first 30 (they become letters), then to the poison.
        let poisoned = *p.lock().unwrap() == r.header(HEADER_WEBHOOK_ID).unwrap_or("");
        if c.fetch_add(1, Ordering::SeqCst) < 30 || poisoned {
            Reply::Status(400)
        } else {
            Reply::Status(204)
        }
    });
    let ids = journal_with_letters(&path, &server.url("/in"), 30);
    *poison.lock().unwrap() = ids[7].clone();

    let replay = |extra: &[&str]| {
        let mut cmd = hookpool(dir.dir());
        cmd.args(["replay", "journal.db", "--workers", "1", "--queue", "2"])
            .args(extra);
        run(cmd, b"")
    };
    let out = replay(&["--url", "http://127.0.0.1:9/"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--url cannot be used with a SQLite file")
    );

    let out = replay(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        (
            out.n("letters"),
            out.n("delivered"),
            out.n("dead_lettered"),
            out.n("remaining"),
            out.n("unfinished")
        ),
        (30, 29, 1, 1, 0),
        "{}",
        out.summary
    );
    let left = SqliteDeadLetters::open(&path).unwrap().list(100).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].letter.id, ids[7]);

    *poison.lock().unwrap() = String::new();
    let out = replay(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.n("letters"), out.n("delivered"), out.n("remaining")),
        (1, 1, 0)
    );
    assert!(
        SqliteDeadLetters::open(&path)
            .unwrap()
            .list(100)
            .unwrap()
            .is_empty()
    );
    // Each replayed with its id; each delivered once.
    let delivered: Vec<String> = server.requests()[30..]
        .iter()
        .map(|r| r.header(HEADER_WEBHOOK_ID).unwrap().to_owned())
        .filter(|id| *id != ids[7])
        .collect();
    let mut sorted = delivered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), delivered.len(), "delivered twice");
    let mut want: Vec<String> = ids.iter().filter(|id| **id != ids[7]).cloned().collect();
    want.sort();
    assert_eq!(sorted, want);
}
