//! Crash tests for the journal (issue 15): a child process delivers through
//! a dispatcher with a journal and is killed with SIGKILL at a random point:
//! during a burst of submissions, during retries, while an endpoint's
//! breaker is open, or during a shutdown. A second child on the same journal
//! then delivers what was left. Every webhook the first one acknowledged
//! (`send_durable` returned `Ok`) must reach the receiver at least once,
//! with its id, and duplicates can only be webhooks in flight at the kill.
//!
//! `HOOKPOOL_CRASH_ROUNDS` sets the rounds (20 by default);
//! `HOOKPOOL_CRASH_SEED` replays one run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::child::{self, Running};
use common::server::{Recorded, Reply, TestServer};
use common::tempdir::TempDir;
use hookpool::{BreakerConfig, Dispatcher, Journal, RetryPolicy, SqliteDeadLetters, Webhook};

/// The child's settings, passed in the environment.
const JOURNAL: &str = "HOOKPOOL_CRASH_JOURNAL";
const URL: &str = "HOOKPOOL_CRASH_URL";
const MODE: &str = "HOOKPOOL_CRASH_MODE";
const COUNT: &str = "HOOKPOOL_CRASH_COUNT";
const SECRET: &str = "HOOKPOOL_CRASH_SECRET";
/// Each child signs with its own secret, so the receiver knows which one
/// sent a request.
const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
];
const WORKERS: usize = 4;
const LINE: Duration = Duration::from_secs(30);

/// The child: not a test on its own (ignored), run by the rounds below in
/// a process of its own.
#[test]
#[ignore = "run by the crash rounds in a child process"]
fn child() {
    let var = |name| std::env::var(name).expect(name);
    let journal = var(JOURNAL);
    let url = var(URL);
    let mode = var(MODE);
    let count: usize = var(COUNT).parse().unwrap();
    let hooks = Dispatcher::builder()
        .name("crash")
        .workers(WORKERS)
        .queue_capacity(64)
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy::exponential(Duration::from_millis(20)).max_attempts(1000))
        .breaker(
            BreakerConfig::default()
                .failure_threshold(3)
                .cooldown(Duration::from_millis(200)),
        )
        .journal(Journal::new(&journal))
        .signing_secret(&var(SECRET))
        .unwrap()
        .build()
        .unwrap();
    let say = |line: String| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    say(format!("READY {}", hooks.stats().store.unwrap().recovered));
    if mode != "drain" {
        for i in 0..count {
            let id = format!("w{i}");
            let webhook = Webhook::new(&url, &serde_json::json!({ "i": i }))
                .unwrap()
                .with_id(&id)
                .unwrap();
            match hooks.send_durable(webhook, Duration::from_secs(10)) {
                Ok(()) => say(format!("ACK {id}")),
                Err(e) => say(format!("NACK {id} {e}")),
            }
        }
    }
    if mode == "shutdown" {
        say("SHUTDOWN".into());
        let report = hooks.shutdown_timeout(Duration::from_secs(5));
        say(format!("DONE {}", report.kept));
        return;
    }
    let drained = common::wait_until(Duration::from_secs(60), || hooks.stats().in_progress() == 0);
    let report = hooks.shutdown_timeout(Duration::from_secs(5));
    say(format!("DONE {} {drained}", report.kept));
}

fn child_process(dir: &TempDir, url: &str, mode: &str, count: usize, secret: &str) -> Running {
    let mut cmd = child::ignored_test("child");
    cmd.env(JOURNAL, dir.path("journal.db"))
        .env(URL, url)
        .env(MODE, mode)
        .env(COUNT, count.to_string())
        .env(SECRET, secret)
        .env("RUST_LOG", "off");
    Running::spawn(cmd)
}

/// Lines until one starting with `prefix` (returned), or `None` if stdout
/// ends or a line takes longer than [`LINE`].
fn read_until(child: &Running, prefix: &str, acked: &mut BTreeSet<String>) -> Option<String> {
    loop {
        let line = child.try_next_line(LINE)?;
        // The test harness writes its own "test child ... " before the first.
        let line = line.trim_start_matches("test child ... ");
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.insert(id.to_owned());
        }
        if line.starts_with(prefix) {
            return Some(line.to_owned());
        }
    }
}

/// How the receiver behaves during a round's first child.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    /// Fast and healthy: the kill lands among submissions.
    Burst,
    /// The first attempt of each webhook fails: the kill lands among
    /// retries.
    Retries,
    /// Down (500) until the kill: the breaker opens.
    BreakerOpen,
    /// Healthy but slow; the child starts a shutdown, and is killed in it.
    Shutdown,
}

struct Receiver {
    server: TestServer,
    healthy: Arc<AtomicBool>,
    /// Which child (0: the killed one, 1: the next) each webhook was
    /// delivered by, each time.
    delivered: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

fn receiver(scenario: Scenario) -> Receiver {
    let healthy = Arc::new(AtomicBool::new(scenario != Scenario::BreakerOpen));
    let delivered: Arc<Mutex<BTreeMap<String, Vec<usize>>>> = Arc::default();
    let first_attempts: Mutex<BTreeSet<String>> = Mutex::default();
    let (h, d) = (Arc::clone(&healthy), Arc::clone(&delivered));
    let server = TestServer::start(move |r: &Recorded| {
        if !h.load(Ordering::SeqCst) {
            return Reply::Status(500);
        }
        let id = r.header("webhook-id").unwrap_or("").to_owned();
        if scenario == Scenario::Retries && first_attempts.lock().unwrap().insert(id.clone()) {
            return Reply::Status(500);
        }
        d.lock().unwrap().entry(id).or_default().push(sender(r));
        if scenario == Scenario::Shutdown {
            Reply::Delay(Duration::from_millis(20), Box::new(Reply::Status(200)))
        } else {
            Reply::Status(204)
        }
    });
    Receiver {
        server,
        healthy,
        delivered,
    }
}

/// Which child signed a request: 0 or 1.
fn sender(r: &Recorded) -> usize {
    common::signer(r, &SECRETS[..1]).map_or(1, |_| 0)
}

/// One round: a child killed at a random point, then a child that drains
/// the journal; returns (acknowledged, duplicates).
fn round(scenario: Scenario, rng: &mut fastrand::Rng) -> (usize, usize) {
    let dir = TempDir::new(&format!("crash-{}", rng.u64(..)));
    let receiver = receiver(scenario);
    let url = receiver.server.url("/hooks");
    let count = 200;
    let mut acked = BTreeSet::new();

    let mode = if scenario == Scenario::Shutdown {
        "shutdown"
    } else {
        "submit"
    };
    let first = child_process(&dir, &url, mode, count, SECRETS[0]);
    read_until(&first, "READY", &mut acked).expect("the first child started");
    match scenario {
        Scenario::Shutdown => {
            read_until(&first, "SHUTDOWN", &mut acked).expect("the shutdown began");
            std::thread::sleep(Duration::from_millis(rng.u64(0..100)));
        }
        _ => {
            // Somewhere among the acknowledgements.
            let stop_after = rng.usize(1..count);
            while acked.len() < stop_after {
                if read_until(&first, "ACK", &mut acked).is_none() {
                    break;
                }
            }
        }
    }
    let pid = first.id();
    first.kill();

    receiver.healthy.store(true, Ordering::SeqCst);
    let second = child_process(&dir, &url, "drain", 0, SECRETS[1]);
    let mut none = BTreeSet::new();
    let ready = read_until(&second, "READY", &mut none).expect("the second child started");
    let done = read_until(&second, "DONE", &mut none).expect("the second child drained");
    assert!(done.ends_with(" true"), "not drained: {done}");
    drop(second);

    // Every acknowledged webhook arrived, delivered (or dead-lettered).
    let requests = receiver.server.requests();
    let mut received: BTreeMap<String, Vec<&Recorded>> = BTreeMap::new();
    for r in &requests {
        received
            .entry(r.header("webhook-id").unwrap_or("").to_owned())
            .or_default()
            .push(r);
    }
    let letters = SqliteDeadLetters::open(dir.path("journal.db")).unwrap();
    let dead: BTreeSet<String> = letters
        .list(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|l| l.letter.id)
        .collect();
    drop(letters);
    for id in &acked {
        assert!(
            received.contains_key(id) || dead.contains(id),
            "{scenario:?} (killed pid {pid}): acknowledged webhook {id} was lost; {ready}"
        );
    }
    // Every copy of a webhook is the same request: the same id and body.
    for copies in received.values() {
        assert!(copies.iter().all(|c| c.body == copies[0].body));
    }
    // A webhook delivered twice was delivered once by the killed child,
    // which died before it had written that down, and once by the next: a
    // lost acknowledgement, never a second delivery by one process.
    let delivered = receiver.delivered.lock().unwrap().clone();
    let mut delivered_twice = 0;
    for (id, by) in &delivered {
        if by.len() > 1 {
            delivered_twice += 1;
            assert!(
                by == &[0, 1],
                "{scenario:?}: {id} delivered by children {by:?} (0 was killed)"
            );
        }
    }
    let conn = rusqlite::Connection::open(dir.path("journal.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the drained journal still holds webhooks");
    (acked.len(), delivered_twice)
}

#[test]
fn acknowledged_webhooks_survive_sigkill() {
    let (rounds, mut rng, _) = common::crash_rounds("crash rounds", 20);
    let scenarios = [
        Scenario::Burst,
        Scenario::Retries,
        Scenario::BreakerOpen,
        Scenario::Shutdown,
    ];
    let acknowledged = AtomicU64::new(0);
    for n in 0..rounds {
        let scenario = scenarios[n % scenarios.len()];
        let (acked, twice) = round(scenario, &mut rng);
        acknowledged.fetch_add(acked as u64, Ordering::Relaxed);
        println!("round {n}: {scenario:?}, {acked} acknowledged, {twice} delivered twice");
    }
    assert!(acknowledged.load(Ordering::Relaxed) > 0);
}
