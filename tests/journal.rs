//! The durable journal through the dispatcher (issue 15): what a shutdown
//! keeps comes back at the next start, dead letters move into the journal
//! and back out on replay, a second owner is refused, and a full or
//! read-only filesystem gives typed errors without losing anything
//! acknowledged. The SIGKILL tests are in tests/crash.rs.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use common::frozen_disk::FrozenDisk;
use common::server::{Recorded, Reply, TestServer};
use common::tempdir::TempDir;
use common::tmpfs::Tmpfs;
use common::wait_until;
use hookpool::{
    BuildError, DeadLetterReason, Dispatcher, DispatcherBuilder, DurableError, Journal,
    ManualClock, RetryPolicy, StoreError, Webhook,
};

const BOUND: Duration = Duration::from_secs(20);

fn builder(name: &str, journal: &std::path::Path) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .workers(2)
        .timeout(Duration::from_secs(5))
        .journal(Journal::new(journal))
}

fn hook(server: &TestServer, n: u32) -> Webhook {
    Webhook::new(&server.url("/in"), &serde_json::json!({ "n": n })).unwrap()
}

/// A receiver that answers 503 until `up` is set.
fn switchable() -> (TestServer, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let u = Arc::clone(&up);
    let server = TestServer::start(move |_: &Recorded| {
        if u.load(Ordering::SeqCst) {
            Reply::Status(204)
        } else {
            Reply::Status(503)
        }
    });
    (server, up)
}

/// A shutdown deadline keeps what is unfinished in the journal; the next
/// dispatcher on it delivers each with its id, the attempts it spent, and a
/// retry due later waiting for its time.
#[test]
fn a_shutdown_keeps_what_is_unfinished_and_the_next_start_delivers_it() {
    let dir = TempDir::new("journal-keep");
    let path = dir.path("j.db");
    let (server, up) = switchable();
    let first = builder("keep-1", &path)
        .retry(
            RetryPolicy::exponential(Duration::from_secs(3600))
                .jitter(false)
                .max_attempts(5),
        )
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let webhook = hook(&server, n);
        ids.push(webhook.id().to_owned());
        first.send_durable(webhook, BOUND).unwrap();
    }
    // Each failed once and waits an hour for its retry.
    assert!(wait_until(BOUND, || first.stats().waiting_retries == 5));
    let report = first.shutdown_timeout(Duration::ZERO);
    assert_eq!((report.kept, report.stats.dead_lettered), (5, 0));
    assert!(
        report.dead_letters.is_empty(),
        "nothing dead-lettered: kept"
    );

    up.store(true, Ordering::SeqCst);
    // The next start: a manual clock at the real time, so that "an hour
    // from the failure" is in its future.
    let clock = ManualClock::starting_at(SystemTime::now());
    let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let second = builder("keep-2", &path)
        .clock(clock.clone())
        .on_delivered(move |d| {
            seen.lock()
                .unwrap()
                .push((d.webhook.id().to_owned(), d.attempts))
        })
        .build()
        .unwrap();
    let stats = second.stats();
    assert_eq!((stats.accepted, stats.store.unwrap().recovered), (5, 5));
    assert!(
        !server.wait_for_requests(6, Duration::from_millis(300)),
        "a retry due in an hour went early"
    );
    clock.advance(Duration::from_secs(3600));
    let report = second.shutdown();
    assert_eq!(report.stats.delivered, 5);
    let mut delivered = attempts.lock().unwrap().clone();
    delivered.sort();
    let mut want: Vec<(String, u32)> = ids.iter().map(|id| (id.clone(), 2)).collect();
    want.sort();
    assert_eq!(delivered, want, "same ids, the first attempt counted");
    assert_eq!(report.kept, 0);
}

/// A batch is committed in one step with its cursor: kept at a shutdown,
/// recovered whole at the next start, with its ids, and the cursor comes
/// back; a batch larger than the queue is accepted whole (what does not fit
/// waits in the delay queue) and delivered.
#[test]
fn a_batch_commits_whole_with_its_cursor() {
    let dir = TempDir::new("journal-batch");
    let path = dir.path("j.db");
    let (server, up) = switchable();
    let first = builder("batch-1", &path)
        .queue_capacity(8)
        .retry(RetryPolicy::exponential(Duration::from_secs(3600)).max_attempts(5))
        .build()
        .unwrap();
    let batch: Vec<Webhook> = (0..50).map(|n| hook(&server, n)).collect();
    let mut ids: Vec<String> = batch.iter().map(|w| w.id().to_owned()).collect();
    first
        .handle()
        .send_durable_batch(batch, Some("line 50".into()), BOUND)
        .unwrap();
    assert_eq!(first.stats().accepted, 50);
    let report = first.shutdown_timeout(Duration::ZERO);
    assert_eq!((report.kept, report.stats.dead_lettered), (50, 0));

    up.store(true, Ordering::SeqCst);
    let second = builder("batch-2", &path).build().unwrap();
    assert_eq!(second.journal_cursor(), Some("line 50"));
    assert_eq!(second.stats().store.unwrap().recovered, 50);
    let report = second.shutdown();
    assert_eq!((report.stats.delivered, report.kept), (50, 0));
    // Every id the receiver saw (failed first attempts included) is one of
    // the batch's, and each of the batch's came.
    let seen: std::collections::BTreeSet<String> = server
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ids);

    // Larger than the queue, to a receiver that is up: all delivered.
    let third = builder("batch-3", &path).queue_capacity(4).build().unwrap();
    let batch: Vec<Webhook> = (100..150).map(|n| hook(&server, n)).collect();
    third
        .handle()
        .send_durable_batch(batch, None, BOUND)
        .unwrap();
    let report = third.shutdown();
    assert_eq!(
        (report.stats.accepted, report.stats.delivered, report.kept),
        (50, 50, 0)
    );
}

/// All or none: a batch the journal cannot hold comes back whole, with a
/// typed error, and none of it is queued, kept or delivered; the cursor
/// stays where the last committed batch left it.
#[test]
fn a_batch_the_journal_cannot_hold_comes_back_whole() {
    let dir = TempDir::new("journal-batch-full");
    let path = dir.path("j.db");
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = Dispatcher::builder()
        .name("batch-full")
        .journal(Journal::new(&path).max_size(256 * 1024))
        .build()
        .unwrap();
    let small: Vec<Webhook> = (0..3).map(|n| hook(&server, n)).collect();
    hooks
        .handle()
        .send_durable_batch(small, Some("3".into()), BOUND)
        .unwrap();
    let pad = "z".repeat(2000);
    let big: Vec<Webhook> = (0..500)
        .map(|n| {
            Webhook::new(
                &server.url("/in"),
                &serde_json::json!({ "n": n, "pad": pad }),
            )
            .unwrap()
        })
        .collect();
    let ids: Vec<String> = big.iter().map(|w| w.id().to_owned()).collect();
    let err = hooks
        .handle()
        .send_durable_batch(big, Some("503".into()), BOUND)
        .unwrap_err();
    assert!(
        matches!(
            err.error(),
            DurableError::Store {
                error: StoreError::DiskFull { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let back: Vec<String> = err.into_inner().iter().map(|w| w.id().to_owned()).collect();
    assert_eq!(back, ids, "every webhook comes back, in order");
    let report = hooks.shutdown();
    assert_eq!(
        (report.stats.accepted, report.stats.delivered, report.kept),
        (3, 3, 0)
    );
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| ids.iter().any(|id| r.header("webhook-id") == Some(id)))
    );
    let reopened = builder("batch-full-2", &path).build().unwrap();
    assert_eq!(reopened.journal_cursor(), Some("3"));
    assert_eq!(reopened.stats().store.unwrap().recovered, 0);
    let _ = reopened.shutdown();
}

/// Without a sink, dead letters move into the journal in one step;
/// `replay_stored` moves them back and delivers them with their ids.
#[test]
fn dead_letters_live_in_the_journal_and_replay_moves_them_back() {
    let dir = TempDir::new("journal-letters");
    let path = dir.path("j.db");
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    // 400 (permanent) to the first three requests, then 204.
    let server = TestServer::start(move |_: &Recorded| {
        if c.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::Status(400)
        } else {
            Reply::Status(204)
        }
    });
    let hooks = builder("letters", &path).build().unwrap();
    let ids: Vec<String> = (0..3)
        .map(|n| {
            let webhook = hook(&server, n);
            let id = webhook.id().to_owned();
            hooks.send_durable(webhook, BOUND).unwrap();
            id
        })
        .collect();
    assert!(wait_until(BOUND, || hooks.stats().dead_lettered == 3));
    assert!(wait_until(BOUND, || hooks
        .stats()
        .store
        .unwrap()
        .dead_letters
        == 3));
    let stored = hooks.stored_dead_letters(10).unwrap();
    let mut stored_ids: Vec<_> = stored.iter().map(|l| l.letter.id.clone()).collect();
    stored_ids.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(stored_ids, want);
    assert!(
        stored
            .iter()
            .all(|l| l.letter.reason == DeadLetterReason::PermanentFailure)
    );
    assert_eq!(hooks.replay_stored(10, BOUND).unwrap(), 3);
    assert!(wait_until(BOUND, || hooks.stats().delivered == 3));
    assert!(hooks.stored_dead_letters(10).unwrap().is_empty());
    let redelivered: Vec<String> = server.requests()[3..]
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    let mut redelivered_sorted = redelivered.clone();
    redelivered_sorted.sort();
    assert_eq!(redelivered_sorted, want, "replayed with their ids");
    let report = hooks.shutdown();
    assert_eq!(report.kept, 0);
}

/// A durable send with a cursor that finds no room once committed comes
/// back `Full`, and takes its cursor with it: the journal still says the
/// previous webhook is the last one in, so a program that resumes from the
/// cursor sends this one again rather than skipping it. (The cursor used to
/// stay, while the row was removed.)
#[test]
fn a_durable_send_that_comes_back_takes_its_cursor_back() {
    let dir = TempDir::new("journal-cursor-back");
    let path = dir.path("j.db");
    let server = TestServer::start(|_: &Recorded| Reply::Hang);
    let hooks = builder("cursor-back", &path)
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let handle = hooks.handle();
    let send = |n: u32, wait: Duration| {
        handle.send_durable_with_cursor(hook(&server, n), format!("line {n}"), wait)
    };
    // One in flight (never answered), then two queued behind it.
    send(1, BOUND).unwrap();
    assert!(server.wait_for_requests(1, BOUND));
    send(2, BOUND).unwrap();
    send(3, BOUND).unwrap();
    let back = send(4, Duration::from_millis(100)).unwrap_err();
    assert!(matches!(back, DurableError::Full(_)), "{back}");
    let mut report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.kept, 3);
    drop(server);
    report.wait_running(BOUND);
    assert_eq!(
        Journal::new(&path).read_cursor().unwrap().as_deref(),
        Some("line 3")
    );
}

/// A second dispatcher on a journal that one holds is refused with a clear
/// error, in this process and from another.
#[test]
fn a_second_owner_is_refused() {
    let dir = TempDir::new("journal-owner");
    let path = dir.path("j.db");
    let first = builder("owner", &path).build().unwrap();
    let err = builder("intruder", &path).build().unwrap_err();
    assert!(
        matches!(err, BuildError::Store(StoreError::Locked { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    // Another process: the sqlite3 rules are the same, but check it.
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_process_opener",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env("HOOKPOOL_JOURNAL_PATH", &path)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    drop(first);
    // Once the owner is gone, the journal opens again.
    builder("next", &path).build().unwrap();
}

/// Run by `a_second_owner_is_refused` in another process.
#[test]
#[ignore = "run in a child process by a_second_owner_is_refused"]
fn second_process_opener() {
    let path = std::env::var("HOOKPOOL_JOURNAL_PATH").unwrap();
    let err = builder("other-process", std::path::Path::new(&path))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Store(StoreError::Locked { .. })),
        "{err}"
    );
}

/// A journal in a directory that cannot be created, or a file that is
/// not a journal, fails at build with an error that says what to do.
#[test]
fn unusable_files_fail_at_build_clearly() {
    let dir = TempDir::new("journal-unusable");
    let err = builder("nowhere", &dir.path("no/such/dir/j.db"))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Store(StoreError::ReadOnly { .. })),
        "{err}"
    );
    std::fs::write(dir.path("text.db"), "hello, not a database ".repeat(500)).unwrap();
    let err = builder("text", &dir.path("text.db")).build().unwrap_err();
    assert!(
        matches!(err, BuildError::Store(StoreError::Corrupt { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("move it aside"), "{err}");
}

/// A journal at its size limit refuses durable sends with a typed error
/// and the webhook; those it acknowledged are all delivered, and once
/// deliveries free room it accepts again.
#[test]
fn a_full_journal_refuses_with_the_webhook_and_loses_nothing() {
    let dir = TempDir::new("journal-full");
    let (server, up) = switchable();
    let hooks = Dispatcher::builder()
        .name("full")
        .workers(2)
        .retry(RetryPolicy::exponential(Duration::from_millis(20)).max_attempts(1000))
        .breaker(hookpool::BreakerConfig::disabled())
        .journal(Journal::new(dir.path("j.db")).max_size(96 * 1024))
        .build()
        .unwrap();
    let pad = "x".repeat(4000);
    let mut acked = Vec::new();
    let refused = (0..200).find_map(|n| {
        let webhook = Webhook::new(
            &server.url("/in"),
            &serde_json::json!({ "n": n, "pad": pad }),
        )
        .unwrap();
        let id = webhook.id().to_owned();
        match hooks.send_durable(webhook, BOUND) {
            Ok(()) => {
                acked.push(id);
                None
            }
            Err(e) => Some((id, e)),
        }
    });
    let (id, err) = refused.expect("the journal filled up");
    assert!(
        matches!(
            &err,
            DurableError::Store {
                error: StoreError::DiskFull { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.into_inner().id(), id, "the webhook comes back");
    assert!(!acked.is_empty());
    up.store(true, Ordering::SeqCst);
    assert!(wait_until(BOUND, || hooks.stats().delivered == acked.len() as u64));
    // Room again.
    let webhook = Webhook::new(&server.url("/in"), &serde_json::json!({ "after": true })).unwrap();
    hooks.send_durable(webhook, BOUND).unwrap();
    let report = hooks.shutdown();
    let delivered: std::collections::BTreeSet<String> = server
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(acked.iter().all(|id| delivered.contains(id)));
    assert_eq!(
        (report.stats.delivered, report.kept),
        (acked.len() as u64 + 1, 0)
    );
}

/// Sends webhooks numbered from `*n` on with `try_send` until the journal's
/// writer refuses one (it holds as many uncommitted rows as it may); counts
/// those accepted into `accepted`, and returns the refusal.
fn fill_the_writer(
    hooks: &Dispatcher,
    server: &TestServer,
    n: &mut u32,
    accepted: &mut u64,
) -> hookpool::SubmitError<Webhook> {
    let limit = *n + 20_000;
    let refused = loop {
        assert!(*n < limit, "the writer's backlog never filled");
        *n += 1;
        let Err(e) = hooks.try_send(hook(server, *n)) else {
            *accepted += 1;
            continue;
        };
        // The queue was full, or the writer: once the receiver has taken
        // everything queued, only the writer can refuse.
        assert!(wait_until(BOUND, || hooks.stats().delivered == *accepted));
        match hooks.try_send(e.into_inner()) {
            Ok(()) => *accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(refused.is_full(), "{refused:?}");
    let pending = hooks.stats().store.unwrap().pending;
    assert!(pending >= 1024, "{pending} waiting for the disk");
    refused
}

/// The journal's disk stalls (frozen with `fsfreeze`, so every write and
/// fsync blocks) while webhooks keep coming. Once its writer holds as many
/// uncommitted rows as it may (four times the queue, at least 1,024),
/// `try_send` is refused at once, with the webhook, though the queue is
/// empty; `send_timeout` waits for the disk for up to its timeout instead:
/// refused after it while the disk stays stalled, accepted once the disk
/// answers, and `Closed` as soon as a shutdown begins. Everything accepted
/// is delivered, and the journal ends empty. (Skipped where an ext4 image
/// cannot be loop-mounted, unless HOOKPOOL_REQUIRE_MOUNT is set.)
#[test]
fn send_timeout_waits_for_a_stalled_journal_and_try_send_does_not() {
    let dir = TempDir::new("journal-stalled");
    let Some(disk) = FrozenDisk::mount(dir.path("disk"), 64) else {
        return;
    };
    let server = TestServer::start(|_: &Recorded| Reply::Status(204));
    let hooks = builder("stalled", &disk.path("j.db"))
        .queue_capacity(64)
        .build()
        .unwrap();
    hooks.send_durable(hook(&server, 0), BOUND).unwrap();
    let (mut n, mut accepted) = (0, 1);
    let frozen = disk.freeze();
    let refused = fill_the_writer(&hooks, &server, &mut n, &mut accepted);

    // Still stalled: send_timeout waits its whole timeout, then refuses.
    let wait = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let back = hooks.send_timeout(refused.into_inner(), wait).unwrap_err();
    assert!(back.is_full() && started.elapsed() >= wait, "{back:?}");

    // Waiting when the disk answers again: accepted.
    std::thread::scope(|s| {
        let waiting = s.spawn(|| hooks.send_timeout(back.into_inner(), BOUND));
        // Not refused at once: it is still waiting a while later.
        let waited = wait_until(Duration::from_millis(300), || waiting.is_finished());
        assert!(!waited, "send_timeout returned while the disk was stalled");
        frozen.thaw();
        waiting.join().unwrap().unwrap();
    });
    accepted += 1;
    assert!(wait_until(BOUND, || hooks.stats().delivered == accepted));

    // Stalled again, and a shutdown begins while a sender waits: the
    // sender gets Closed at once, not Full when its timeout ends.
    let frozen = disk.freeze();
    let refused = fill_the_writer(&hooks, &server, &mut n, &mut accepted);
    let handle = hooks.handle();
    let report = std::thread::scope(|s| {
        let waiting = s.spawn(|| handle.send_timeout(refused.into_inner(), BOUND));
        let waited = wait_until(Duration::from_millis(300), || waiting.is_finished());
        assert!(!waited, "send_timeout returned while the disk was stalled");
        // The shutdown itself waits for the disk to write what it holds.
        let stopping = s.spawn(|| hooks.shutdown());
        assert!(
            wait_until(Duration::from_secs(5), || waiting.is_finished()),
            "a sender waiting for the stalled journal did not notice the shutdown"
        );
        let back = waiting.join().unwrap().unwrap_err();
        assert!(back.is_closed(), "{back:?}");
        frozen.thaw();
        stopping.join().unwrap()
    });
    assert_eq!((report.stats.delivered, report.kept), (accepted, 0));
    assert_eq!(report.stats.store.unwrap().backlog, 0);
}

/// A real full disk mid-run (another file takes the room): a typed error
/// with the webhook, nothing acknowledged lost, and writing resumes once
/// the room is back.
#[test]
fn a_full_filesystem_loses_nothing_acknowledged() {
    let dir = TempDir::new("journal-tmpfs");
    let Some(fs) = Tmpfs::mount(dir.path("mnt"), "2m") else {
        return;
    };
    let (server, up) = switchable();
    let hooks = Dispatcher::builder()
        .name("tmpfs")
        .workers(2)
        .retry(RetryPolicy::exponential(Duration::from_millis(20)).max_attempts(1000))
        .breaker(hookpool::BreakerConfig::disabled())
        .journal(Journal::new(fs.0.join("j.db")))
        .build()
        .unwrap();
    // Something else fills the disk, but for 96 KiB.
    let filler_path = fs.fill_leaving(96 * 1024);
    let pad = "y".repeat(4000);
    let send = |n: u32| {
        let webhook = Webhook::new(
            &server.url("/in"),
            &serde_json::json!({ "n": n, "pad": pad }),
        )
        .unwrap();
        let id = webhook.id().to_owned();
        hooks.send_durable(webhook, BOUND).map(|()| id)
    };
    let mut acked = Vec::new();
    let full = loop {
        assert!(acked.len() < 1000, "the disk never filled");
        match send(acked.len() as u32) {
            Ok(id) => acked.push(id),
            Err(e) => break e,
        }
    };
    println!("{} acknowledged, then: {full}", acked.len());
    assert!(
        matches!(
            &full,
            DurableError::Store {
                error: StoreError::DiskFull { .. } | StoreError::Io { .. },
                ..
            }
        ),
        "{full:?}: {full}"
    );
    // The room comes back.
    std::fs::remove_file(&filler_path).unwrap();
    up.store(true, Ordering::SeqCst);
    assert!(wait_until(BOUND, || hooks.stats().delivered == acked.len() as u64));
    acked.push(send(20_000).unwrap());
    let report = hooks.shutdown();
    let delivered: std::collections::BTreeSet<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(lost.is_empty(), "lost {lost:?}");
    assert_eq!(report.kept, 0);
    assert!(report.stats.store.unwrap().errors >= 1);
    drop(fs);
}

/// A disk that is already full at start: `build()` fails with a typed
/// error that names the file, for a new journal and for one that holds a
/// webhook; that webhook is delivered once there is room again.
#[test]
fn a_full_filesystem_at_open_fails_at_build_and_loses_nothing() {
    use std::io::Write;
    let dir = TempDir::new("journal-tmpfs-open");
    let Some(fs) = Tmpfs::mount(dir.path("mnt"), "1m") else {
        return;
    };
    let (server, up) = switchable();
    let open = |file: &str| builder("full-at-open", &fs.0.join(file)).build();
    // One journal holds a webhook the receiver has not taken yet.
    let hooks = open("kept.db").unwrap();
    hooks.send_durable(hook(&server, 1), BOUND).unwrap();
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.kept, 1);
    // Something else takes every byte.
    let filler_path = fs.0.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    while filler.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
        assert!(written < 64 << 20, "the tmpfs never filled");
    }
    let _ = filler.write_all(&[0u8; 1]);
    filler.sync_all().unwrap();
    for file in ["new.db", "kept.db"] {
        let err = open(file).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::Store(StoreError::DiskFull { .. } | StoreError::Io { .. })
            ),
            "{file}: {err:?}"
        );
        println!("{file}: {err}");
        assert!(err.to_string().contains(file), "{err}");
    }
    // Room again: the kept webhook goes out.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    up.store(true, Ordering::SeqCst);
    let hooks = open("kept.db").unwrap();
    assert_eq!(hooks.stats().store.unwrap().recovered, 1);
    assert!(wait_until(BOUND, || hooks.stats().delivered == 1));
    assert_eq!(hooks.shutdown().kept, 0);
    drop(fs);
}

/// A journal file that cannot be written (read-only to this user) fails at
/// build with a typed error. As root, permissions do not bind, so the check
/// runs in a child process as `nobody`.
#[test]
fn a_read_only_journal_fails_at_build() {
    let dir = TempDir::new("journal-ro");
    let path = dir.path("j.db");
    // A valid journal, then made read-only.
    drop(builder("ro-setup", &path).build().unwrap());
    let mode = |p: &std::path::Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(&path, 0o444);
    mode(dir.dir(), 0o755);
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        use std::os::unix::process::CommandExt;
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "read_only_opener",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env("HOOKPOOL_JOURNAL_PATH", &path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        read_only_opener_at(&path);
    }
}

#[test]
#[ignore = "run in a child process by a_read_only_journal_fails_at_build"]
fn read_only_opener() {
    let path = std::env::var("HOOKPOOL_JOURNAL_PATH").unwrap();
    read_only_opener_at(std::path::Path::new(&path));
}

fn read_only_opener_at(path: &std::path::Path) {
    let err = builder("ro", path).build().unwrap_err();
    assert!(
        matches!(err, BuildError::Store(StoreError::ReadOnly { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("cannot be written"), "{err}");
}
