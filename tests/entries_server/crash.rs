//! The crash test: SIGKILL at a random point while the receiver is slow or
//! down, a restart on the same journal, and every promise checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::tempdir::TempDir;
use crate::service::*;

/// How the receiver behaves until the kill, in a crash round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Receiving {
    /// Slow (10 ms an answer, 2 workers): a backlog builds in the queue.
    Slow,
    /// Down: every delivery hangs, so nothing finishes before the kill.
    Down,
}

/// Answers (each a promise) after which a crash round's server is killed:
/// a random number from 1 to this.
const MAX_ANSWERS: usize = 40;
const CLIENTS: usize = 3;

/// What the clients of a crash round share.
struct Clients {
    base: String,
    /// Every change answered 201 or 200: each promises its webhook.
    promised: Mutex<Vec<(&'static str, u64)>>,
    /// Told once `kill_after` changes are promised, so the kill follows the
    /// last answer closely.
    kill: Mutex<Option<mpsc::Sender<()>>>,
    kill_after: usize,
    stop: AtomicBool,
}

impl Clients {
    fn promise(&self, change: (&'static str, u64)) {
        let mut promised = self.promised.lock().unwrap();
        promised.push(change);
        if promised.len() >= self.kill_after {
            if let Some(kill) = self.kill.lock().unwrap().take() {
                let _ = kill.send(());
            }
        }
    }
}

/// Posts entries, deleting every third one it created, until `stop` or a
/// request fails (the server was killed). Returns any status other than
/// 201 or 200 it got.
fn crash_client(c: usize, shared: &Clients) -> Option<u16> {
    let (base, stop) = (&shared.base, &shared.stop);
    let agent = agent();
    for n in 0..1_000u64 {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        let body = json!({"text": format!("client {c}, entry {n}"), "mood": 1 + n % 10, "category": "crash"});
        let Ok(mut resp) = agent
            .post(base)
            .header("Content-Type", "application/json")
            .send(body.to_string())
        else {
            return None;
        };
        if resp.status().as_u16() != 201 {
            return Some(resp.status().as_u16());
        }
        // A 201 whose body was cut off by the kill names no entry: it is
        // not checked.
        let Ok(text) = resp.body_mut().read_to_string() else {
            return None;
        };
        let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
            .as_u64()
            .unwrap();
        shared.promise(("entry_created", id));
        if n % 3 == 2 {
            let Ok(resp) = agent.delete(format!("{base}/{id}")).call() else {
                return None;
            };
            if resp.status().as_u16() != 200 {
                return Some(resp.status().as_u16());
            }
            shared.promise(("entry_deleted", id));
        }
    }
    None
}

/// One round: clients change entries while the receiver is slow or down,
/// the server is SIGKILLed after a random number of answers, then started
/// again with the same settings and journal (signing with another secret,
/// so the receiver can tell the processes apart). Returns the promises
/// checked, the webhooks recovered, and those delivered twice.
fn crash_round(round: usize, receiving: Receiving, rng: &mut fastrand::Rng) -> (usize, u64, usize) {
    let (receiver, healthy) = switchable_receiver(Duration::from_millis(10));
    healthy.store(receiving == Receiving::Slow, Ordering::SeqCst);
    let url = receiver.url("/hooks");
    let dir = Arc::new(TempDir::new(&format!("entries-crash-{round}")));
    let settings = |secret| {
        [
            ("WEBHOOK_URL", url.as_str()),
            ("WEBHOOK_SECRET", secret),
            ("WORKERS", "2"),
            ("WEBHOOK_TIMEOUT", "30"),
            ("SHUTDOWN_TIMEOUT", "10"),
        ]
    };
    let first = Service::start_in(Arc::clone(&dir), &settings(SECRET));

    let (kill_tx, kill_rx) = mpsc::channel();
    let shared = Arc::new(Clients {
        base: first.url("/entries"),
        promised: Mutex::new(Vec::new()),
        kill: Mutex::new(Some(kill_tx)),
        kill_after: rng.usize(1..=MAX_ANSWERS),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || crash_client(c, &shared))
        })
        .collect();
    let reached = kill_rx.recv_timeout(BOUND).is_ok();
    let stderr = first.kill();
    shared.stop.store(true, Ordering::SeqCst);
    let odd: Vec<u16> = clients
        .into_iter()
        .filter_map(|c| c.join().expect("a client thread"))
        .collect();
    let kill_after = shared.kill_after;
    assert!(
        reached,
        "round {round}: {kill_after} answers not reached:\n{stderr}"
    );
    assert!(odd.is_empty(), "round {round}: answers {odd:?}:\n{stderr}");
    let promised = shared.promised.lock().unwrap().clone();

    healthy.store(true, Ordering::SeqCst);
    let exit = restart_until_received(
        &dir,
        &settings(SECRET_2),
        &receiver,
        &promised,
        &format!("round {round} ({receiving:?}, killed after {kill_after} answers)"),
    );
    let s = &exit.summary;
    assert_eq!(
        (&s["kept"], &s["dead_lettered"], &s["queue_full"]),
        (&json!(0), &json!(0), &json!(0)),
        "{s}"
    );
    let recovered = s["recovered"].as_u64().unwrap();
    if receiving == Receiving::Down {
        // Nothing was delivered before the kill: every promise was in the
        // journal (and perhaps changes committed but not yet answered).
        assert!(recovered >= promised.len() as u64, "{s}");
    }

    // Each change's webhook has one id and one body however often it came;
    // it came twice only if it was in flight at the kill: sent by the
    // killed process, which died before it wrote the delivery down, then by
    // the next.
    let mut twice = 0;
    for ((event, id), copies) in seen(&receiver) {
        let first = &copies[0];
        assert!(
            copies
                .iter()
                .all(|c| c.webhook_id == first.webhook_id && c.body == first.body),
            "round {round}: {event} for entry {id} was sent as different webhooks"
        );
        let mut signers: Vec<usize> = copies.iter().map(|c| c.signer).collect();
        signers.sort_unstable();
        match signers.as_slice() {
            [_] => {}
            [0, 1] => twice += 1,
            other => panic!("round {round}: {event} for entry {id} sent by {other:?}"),
        }
    }
    assert_eq!(journal_rows(&dir.path(DEFAULT_JOURNAL)), 0);
    (promised.len(), recovered, twice)
}

#[test]
fn promised_webhooks_survive_sigkill_and_restart() {
    let rounds: usize = std::env::var("HOOKPOOL_ENTRIES_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("HOOKPOOL_ENTRIES_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("crash rounds: {rounds}, seed {seed} (HOOKPOOL_ENTRIES_CRASH_SEED replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..rounds {
        let receiving = [Receiving::Down, Receiving::Slow][round % 2];
        let (promised, recovered, twice) = crash_round(round, receiving, &mut rng);
        println!(
            "round {round}: receiver {receiving:?}, {promised} promised, {recovered} recovered, {twice} delivered twice"
        );
    }
}
