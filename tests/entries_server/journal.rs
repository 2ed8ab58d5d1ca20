//! The journal: recovery at start, a SIGTERM that keeps webhooks for the
//! next start, a full queue under SIGKILL, a journal that cannot commit,
//! and one that cannot be opened.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hookpool::DeadLetterReason;
use serde_json::{Value, json};

use crate::common::server::{Reply, TestServer};
use crate::common::tempdir::TempDir;
use crate::service::*;

#[test]
fn a_restart_delivers_what_the_journal_holds() {
    let (receiver, healthy) = switchable_receiver(Duration::ZERO);
    let url = receiver.url("/hooks");
    let vars = [
        ("WEBHOOK_URL", url.as_str()),
        ("WORKERS", "1"),
        ("WEBHOOK_TIMEOUT", "30"),
    ];
    let service = Service::start("recover", &vars);
    let dir = Arc::clone(&service.dir);
    let promised = create_entries(&service, 5);
    // One delivery hangs at the receiver; four wait in the queue.
    assert!(receiver.wait_for_requests(1, BOUND));
    let in_flight = receiver.requests()[0]
        .header("webhook-id")
        .map(str::to_owned);
    assert!(dir.path(DEFAULT_JOURNAL).is_file(), "no journal by default");
    service.kill();

    healthy.store(true, Ordering::SeqCst);
    let service = Service::start_in(Arc::clone(&dir), &vars);
    service.wait_for_stderr(
        "journal entries-journal.db: 5 unfinished webhooks recovered",
        BOUND,
    );
    assert!(receiver.wait_for_requests(6, BOUND));
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    let s = &exit.summary;
    assert_eq!(
        (&s["recovered"], &s["delivered"], &s["kept"]),
        (&json!(5), &json!(5), &json!(0)),
        "{s}"
    );
    assert!(missing(&receiver, &promised).is_empty());
    // The one in flight at the kill came again, with the same id.
    let ids: Vec<_> = receiver
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(
        ids.iter()
            .filter(|id| Some(*id) == in_flight.as_ref())
            .count(),
        2
    );
    assert_eq!(journal_rows(&dir.path(DEFAULT_JOURNAL)), 0);
}

#[test]
fn sigterm_keeps_unfinished_webhooks_in_the_journal_for_the_next_start() {
    let (receiver, healthy) = switchable_receiver(Duration::ZERO);
    let url = receiver.url("/hooks");
    let vars = [
        ("WEBHOOK_URL", url.as_str()),
        ("WORKERS", "1"),
        ("SHUTDOWN_TIMEOUT", "0.5"),
        ("WEBHOOK_TIMEOUT", "1"),
    ];
    let service = Service::start("keep", &vars);
    let dir = Arc::clone(&service.dir);
    let mut promised = create_entries(&service, 5);
    let deleted = promised[0].1;
    let a = answer(
        agent()
            .delete(service.url(&format!("/entries/{deleted}")))
            .call(),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    promised.push(("entry_deleted", deleted));
    assert!(receiver.wait_for_requests(1, BOUND));

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let s = &exit.summary;
    assert_eq!(s["kept"], 6, "{s}");
    assert_eq!(
        (&s["dead_lettered"], &s["still_running"]),
        (&json!(0), &json!(0)),
        "{s}"
    );
    assert!(exit.letters.is_empty(), "{:?}", exit.letters);
    assert_eq!(journal_rows(&dir.path(DEFAULT_JOURNAL)), 6);

    healthy.store(true, Ordering::SeqCst);
    let exit = restart_until_received(&dir, &vars, &receiver, &promised, "the restart");
    assert_eq!(
        (&exit.summary["recovered"], &exit.summary["kept"]),
        (&json!(6), &json!(0)),
        "{}",
        exit.summary
    );
    assert_eq!(journal_rows(&dir.path(DEFAULT_JOURNAL)), 0);
}

#[test]
fn a_full_queue_dead_letters_each_webhook_before_its_201() {
    // The receiver holds every answer until the gate opens: one webhook in
    // flight, one queued, the rest go to the dead-letter file.
    let (receiver, gate) = gated_receiver();
    let url = receiver.url("/hooks");
    let vars = [
        ("WEBHOOK_URL", url.as_str()),
        ("WORKERS", "1"),
        ("QUEUE_CAPACITY", "1"),
    ];
    let service = Service::start("full-kill", &vars);
    let dir = Arc::clone(&service.dir);
    let promised = create_entries(&service, 12);
    // At once: every 201 came after its letter was written.
    service.kill();
    let letters = read_letters(&dir.path("dead-letters.jsonl"));
    assert!(letters.len() >= 10, "{} letters", letters.len());
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::QueueFull),
        "{letters:?}"
    );

    gate.open();
    let lettered: HashSet<u64> = letters
        .iter()
        .map(|l| {
            let p: Value = serde_json::from_str(l.payload.get()).unwrap();
            p["entry_id"].as_u64().unwrap()
        })
        .collect();
    let unlettered: Vec<(&str, u64)> = promised
        .iter()
        .copied()
        .filter(|(_, id)| !lettered.contains(id))
        .collect();
    let exit = restart_until_received(&dir, &vars, &receiver, &unlettered, "the restart");
    assert!(
        exit.summary["recovered"].as_u64() >= Some(unlettered.len() as u64),
        "{}",
        exit.summary
    );
    assert_each_promise_kept(
        &promised,
        &receiver,
        &exit.letters,
        &[DeadLetterReason::QueueFull],
    );
}

#[test]
fn a_journal_that_cannot_commit_answers_503_and_changes_nothing() {
    let (receiver, healthy) = switchable_receiver(Duration::ZERO);
    let url = receiver.url("/hooks");
    let vars = [
        ("WEBHOOK_URL", url.as_str()),
        ("WORKERS", "1"),
        ("WEBHOOK_TIMEOUT", "30"),
    ];
    // The journal may not grow past the pages it has at open: it is full
    // once its first page of webhooks is.
    let mut capped = vars.to_vec();
    capped.push((JOURNAL_MAX_BYTES, "1"));
    let service = Service::start("journal-full", &capped);
    let dir = Arc::clone(&service.dir);

    let mut created = Vec::new();
    let refused = (0..500)
        .find_map(|n| {
            let a = post(
                &service,
                &json!({"text": format!("entry {n}"), "mood": 5, "category": "test"}).to_string(),
            );
            match a.status {
                201 => {
                    created.push(a.body["id"].as_u64().unwrap());
                    None
                }
                _ => Some(a),
            }
        })
        .expect("the journal never filled");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(!created.is_empty());
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(
        refused.body["error"].as_str().unwrap().contains("retry"),
        "{:?}",
        refused.body
    );
    let refused_id = created.last().unwrap() + 1;
    let text = metrics(&service);
    assert_eq!(
        sample(&text, "entries_server_entries"),
        Some(created.len() as f64)
    );
    assert_eq!(
        sample(&text, "entries_server_changes_refused_total"),
        Some(1.0)
    );

    // A deletion whose webhook cannot be kept is undone: the entry stays.
    let first = created[0];
    for _ in 0..2 {
        let a = answer(
            agent()
                .delete(service.url(&format!("/entries/{first}")))
                .call(),
        );
        assert_eq!(a.status, 503, "{:?}", a.body);
    }
    let text = metrics(&service);
    assert_eq!(
        sample(&text, "entries_server_entries"),
        Some(created.len() as f64)
    );
    assert_eq!(
        sample(&text, "entries_server_changes_refused_total"),
        Some(3.0)
    );
    service.wait_for_stderr("the disk is full", BOUND);
    service.kill();

    // Every 201 is kept; the refused changes send nothing.
    healthy.store(true, Ordering::SeqCst);
    let promised: Vec<(&str, u64)> = created.iter().map(|id| ("entry_created", *id)).collect();
    let exit = restart_until_received(&dir, &vars, &receiver, &promised, "the restart");
    assert_eq!(exit.summary["recovered"], created.len(), "{}", exit.summary);
    assert_eq!(exit.summary["kept"], 0, "{}", exit.summary);
    let got = received(&receiver);
    assert!(!got.contains(&("entry_created".to_owned(), refused_id)));
    assert!(
        got.iter().all(|(event, _)| event == "entry_created"),
        "{got:?}"
    );
}

#[test]
fn a_journal_that_cannot_be_opened_stops_the_server_with_exit_2() {
    let dir = TempDir::new("entries-bad-journal");
    let notes = "these are notes, not a journal\n".repeat(8);
    std::fs::write(dir.path("notes.db"), &notes).unwrap();
    let (code, stderr) = start_failing(
        &dir,
        &[
            ("WEBHOOK_URL", "http://127.0.0.1:9/"),
            ("JOURNAL", "notes.db"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("JOURNAL: journal notes.db is not a journal")
            && stderr.contains("move it aside"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path("notes.db")).unwrap(),
        notes
    );

    // A second server on a running one's journal is refused; the first
    // goes on.
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("journal-in-use", &[("WEBHOOK_URL", url.as_str())]);
    let (code, stderr) = start_failing(&service.dir, &[("WEBHOOK_URL", url.as_str())]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("JOURNAL: journal entries-journal.db is in use by another process"),
        "{stderr}"
    );
    post_entry(&service, 1);
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.summary["delivered"], 1, "{}", exit.summary);
}
