//! The `hookpool` binary on a shared queue in Redis (issue 16, point 11):
//! `send --redis` enqueues, `worker` processes deliver and stop gracefully
//! on SIGTERM, `replay --redis` puts dead letters back, and `status` shows
//! the counts without changing anything. Each test starts its own
//! `redis-server` (skipped where it is not installed, unless
//! `HOOKPOOL_REQUIRE_REDIS` is set) and a receiver on 127.0.0.1. Every
//! child is killed and reaped, even when a test fails, and every wait is
//! bounded.
#![cfg(all(feature = "cli", feature = "redis"))]

mod common;
#[path = "tls/pki.rs"]
mod pki;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::Running;
use common::cli::{Mode, RUN, Receiver, SECRET, hookpool, lines, output, run, signer};
use common::redis::RedisServer;
use common::server::{Recorded, Reply, TestServer};
use common::shared_queue::{
    WAIT, check_stopped, counts, ns, number, on_queue, queued_numbers, says, sending, snapshot,
    status, stop, wait_for_counts, with, worker,
};
use common::tempdir::TempDir;
use common::wait_until;
use serde_json::Value;

#[test]
fn send_enqueues_and_two_workers_deliver_each_line_once() {
    let Some(redis) = RedisServer::start("cli-deliver") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-deliver"));
    let receiver = Receiver::start(Mode::Slow);
    std::fs::write(dir.path("in.jsonl"), lines(0..40)).unwrap();

    let mut send = on_queue(&dir, &["send", "--url", &receiver.url()], &url, "q");
    // Secrets in the environment are the workers' business: send says so.
    send.arg("in.jsonl").env("HOOKPOOL_SECRETS", SECRET);
    let out = run(send, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["lines", "enqueued", "invalid"]),
        [40, 40, 0],
        "{}",
        out.summary
    );
    assert_eq!(out.summary["queue"], "q");
    says(&out, "does not sign");
    // Enqueued only: nothing was delivered by send.
    assert!(receiver.seen().is_empty());
    let line = status(&dir, &url, "q");
    assert_eq!(line["queue"], "q");
    assert_eq!(counts(&line), [40, 0, 0, 0, 0], "{line}");

    let few = ["--workers", "1", "--prefetch", "2"];
    let workers = [worker(&dir, &url, "q", &few), worker(&dir, &url, "q", &few)];
    let delivered = || receiver.seen().iter().filter(|s| s.delivered).count();
    assert!(wait_until(WAIT, || delivered() == 40), "{}", delivered());
    // Acknowledged and heart-beating: nothing ready or claimed, two alive.
    wait_for_counts(&dir, &url, "q", [0, 0, 0, 0, 2]);

    let outs = workers.map(stop);
    let total = |field: &str| outs.iter().map(|o| o.n(field)).sum::<u64>();
    for out in &outs {
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.summary["queue"], "q");
        assert_eq!(
            ns(out, &["dead_lettered", "released", "in_flight_at_exit"]),
            [0, 0, 0],
            "{}",
            out.summary
        );
        assert!(out.summary["elapsed_ms"].is_u64());
    }
    assert_eq!((total("claimed"), total("delivered")), (40, 40));
    // Deregistered: no worker alive, and nothing left anywhere.
    assert_eq!(counts(&status(&dir, &url, "q")), [0; 5]);

    // Each line once, under an id of its own, signed by the workers.
    let seen = receiver.seen();
    assert_eq!(seen.len(), 40);
    let numbers: BTreeSet<u64> = seen.iter().map(|s| number(&s.body)).collect();
    assert_eq!(numbers, (0..40).collect());
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 40);
    assert!(
        seen.iter().all(|s| s.run == 0),
        "not all signed with SECRET"
    );
}

#[test]
fn sigterm_hands_back_what_was_never_started_and_another_worker_takes_over() {
    let Some(redis) = RedisServer::start("cli-handback") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-handback"));
    // The first request hangs: the worker is stopped with it in flight.
    let receiver = Receiver::start(Mode::Hang);
    std::fs::write(dir.path("in.jsonl"), lines(0..6)).unwrap();
    let send = on_queue(&dir, &["send", "--url", &receiver.url()], &url, "q");
    assert_eq!(run(with(send, &["in.jsonl"]), b"").code, 0);

    // A short ttl, so that the next worker takes the hung one back soon.
    let ttl = ["--worker-ttl-ms", "6000", "--timeout-ms", "3000"];
    let mut first = [
        "--workers",
        "1",
        "--prefetch",
        "6",
        "--drain-timeout-ms",
        "200",
    ]
    .to_vec();
    first.extend(ttl);
    let a = worker(&dir, &url, "q", &first);
    assert!(receiver.server.wait_for_requests(1, WAIT));
    // One in flight, five waiting in the worker: all six claimed.
    wait_for_counts(&dir, &url, "q", [0, 0, 6, 0, 1]);
    let out = stop(a);
    assert_eq!(out.code, 1, "in flight at the deadline: {}", out.stderr);
    assert_eq!(
        ns(
            &out,
            &[
                "claimed",
                "delivered",
                "released",
                "handed_back",
                "in_flight_at_exit"
            ]
        ),
        [6, 0, 5, 5, 1],
        "{}",
        out.summary
    );
    says(&out, "still in flight");

    // Five back in the queue; the one in flight is still the stopped
    // worker's until another takes it back. Status changes none of it.
    let before = snapshot(&redis, "q");
    assert_eq!(counts(&status(&dir, &url, "q")), [5, 0, 1, 0, 0]);
    assert_eq!(counts(&status(&dir, &url, "q")), [5, 0, 1, 0, 0]);
    let after = snapshot(&redis, "q");
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "status changed {changed:?}");

    receiver.set(Mode::Ok);
    let b = worker(&dir, &url, "q", &ttl);
    let delivered = || {
        let seen = receiver.seen();
        seen.iter()
            .filter(|s| s.delivered)
            .map(|s| number(&s.body))
            .collect::<BTreeSet<_>>()
    };
    assert!(
        wait_until(WAIT, || delivered().len() == 6),
        "{:?}",
        delivered()
    );
    let out = stop(b);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["claimed", "delivered", "reclaimed"]),
        [6, 6, 1],
        "{}",
        out.summary
    );
    assert_eq!(counts(&status(&dir, &url, "q")), [0; 5]);
    // The hung one came again with the same id; the others once each.
    let seen = receiver.seen();
    assert_eq!(seen.len(), 7, "{seen:?}");
    let hung = &seen[0];
    assert!(!hung.delivered);
    assert!(seen[1..].iter().any(|s| s.id == hung.id && s.delivered));
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), 6);
}

/// A receiver that answers 400 to odd `n` in phase 0, and in phase 1 503
/// to the first request of each webhook, then 204. Logs (id, n, status).
struct Phased {
    server: TestServer,
    phase: Arc<AtomicU8>,
    log: Arc<Mutex<Vec<(String, u64, u16)>>>,
}

impl Phased {
    fn start() -> Phased {
        let phase = Arc::new(AtomicU8::new(0));
        let log: Arc<Mutex<Vec<(String, u64, u16)>>> = Arc::default();
        let (p, l) = (Arc::clone(&phase), Arc::clone(&log));
        let server = TestServer::start(move |r: &Recorded| {
            let id = r.header("webhook-id").unwrap_or("").to_owned();
            let n = number(&r.body_text());
            let mut log = l.lock().unwrap();
            let status = match p.load(Ordering::SeqCst) {
                0 if n % 2 == 1 => 400,
                0 => 204,
                _ if log.iter().any(|(i, _, s)| *i == id && *s == 503) => 204,
                _ => 503,
            };
            log.push((id, n, status));
            Reply::Status(status)
        });
        Phased { server, phase, log }
    }

    /// Ids answered `status`, by `n`.
    fn ids(&self, status: u16) -> BTreeMap<u64, String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(_, _, s)| *s == status)
            .map(|(id, n, _)| (*n, id.clone()))
            .collect()
    }
}

#[test]
fn replay_redis_puts_dead_letters_back_for_the_workers() {
    let Some(redis) = RedisServer::start("cli-replay") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-replay"));
    let receiver = Phased::start();
    std::fs::write(dir.path("in.jsonl"), lines(0..10)).unwrap();
    let send = on_queue(
        &dir,
        &["send", "--url", &receiver.server.url("/in")],
        &url,
        "q",
    );
    assert_eq!(run(with(send, &["in.jsonl"]), b"").code, 0);
    let sent = Instant::now();

    // Dead letters need no retries; replayed webhooks get one (and no
    // breaker holds them back meanwhile).
    let flags = [
        "--max-attempts",
        "3",
        "--base-delay-ms",
        "10",
        "--max-elapsed-ms",
        "1000",
        "--breaker-failures",
        "0",
    ];
    let w = worker(&dir, &url, "q", &flags);
    wait_for_counts(&dir, &url, "q", [0, 0, 0, 5, 1]);
    let failed = receiver.ids(400);
    assert_eq!(failed.keys().copied().collect::<Vec<_>>(), [1, 3, 5, 7, 9]);

    // Replayed letters count --max-elapsed-ms afresh: one accepted more
    // than that ago still gets its retry. (A condition on the clock, not a
    // wait for another process.)
    assert!(wait_until(WAIT, || sent.elapsed() > Duration::from_millis(1500)));
    receiver.phase.store(1, Ordering::SeqCst);
    let out = run(on_queue(&dir, &["replay"], &url, "q"), b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["letters", "replayed", "invalid"]),
        [5, 5, 0],
        "{}",
        out.summary
    );
    assert_eq!(out.summary["queue"], "q");
    assert!(
        wait_until(WAIT, || receiver.ids(204).len() == 10),
        "{:?}",
        receiver.ids(204)
    );
    wait_for_counts(&dir, &url, "q", [0, 0, 0, 0, 1]);
    // With the ids they had.
    let delivered = receiver.ids(204);
    for (n, id) in &failed {
        assert_eq!(&delivered[n], id);
    }
    let out = stop(w);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["delivered", "dead_lettered", "retried"]),
        [10, 5, 5],
        "{}",
        out.summary
    );
    assert_eq!(
        out.summary["dead_lettered_by_reason"]["permanent_failure"],
        5
    );

    // A letter that cannot become a webhook stays, reported: exit 1.
    let letter = r#"{"id":"msg_bad","url":"not a url","body":"{}","accepted_ms":1,"reason":"permanent_failure","error":"x","dead_lettered_at":1}"#;
    redis.cli(&["HSET", "hookpool:{q}:letters", "999", letter]);
    redis.cli(&["ZADD", "hookpool:{q}:dead", "1", "999"]);
    let out = run(on_queue(&dir, &["replay"], &url, "q"), b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["letters", "replayed", "invalid"]),
        [1, 0, 1],
        "{}",
        out.summary
    );
    says(&out, "msg_bad cannot be replayed");
    assert_eq!(counts(&status(&dir, &url, "q"))[3], 1);
    // An empty dead-letter list replays nothing, successfully.
    redis.cli(&["DEL", "hookpool:{q}:letters", "hookpool:{q}:dead"]);
    let out = run(on_queue(&dir, &["replay"], &url, "q"), b"");
    assert_eq!((out.code, out.n("letters")), (0, 0), "{}", out.stderr);
}

#[test]
fn an_unreachable_redis_exits_2_and_never_shows_the_password() {
    let dir = TempDir::new("cli-redis-unreachable");
    std::fs::write(dir.path("in.jsonl"), lines(0..3)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://:hunter2pw@127.0.0.1:{port}/");
    let commands: [&[&str]; 4] = [
        &["status"],
        &["worker"],
        &["send", "--url", "http://127.0.0.1:9/in", "in.jsonl"],
        &["replay"],
    ];
    for args in commands {
        let out = run(on_queue(&dir, args, &url, "q"), b"");
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("hunter2pw"),
            "{args:?}: {}",
            out.stderr
        );
        says(
            &out,
            &format!("cannot use redis redis://REDACTED@127.0.0.1:{port}/"),
        );
    }
    let out = run(on_queue(&dir, &["status"], "http://127.0.0.1/", "q"), b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "not a redis url");

    // A wrong password is refused, and not shown either.
    let Some(redis) = RedisServer::start_with_password("cli-auth", "rightpw") else {
        return;
    };
    let wrong = redis.url().replace("rightpw", "wrongpw");
    let out = run(on_queue(&dir, &["status"], &wrong, "q"), b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!out.stderr.contains("wrongpw"), "{}", out.stderr);
    let out = run(on_queue(&dir, &["status"], &redis.url(), "q"), b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!format!("{}{}", out.summary, out.stderr).contains("rightpw"));
}

#[test]
fn flags_that_make_no_sense_on_a_shared_queue_are_refused() {
    let dir = TempDir::new("cli-redis-usage");
    std::fs::write(dir.path("in.jsonl"), lines(0..3)).unwrap();
    // Nothing listens there: each is refused before connecting.
    let url = "redis://127.0.0.1:9/";
    let send = ["send", "--url", "http://127.0.0.1:9/in", "in.jsonl"];
    let refused: [(&[&str], &str); 7] = [
        (&["--journal", "j.db"], "--journal"),
        (&["--journal-sync", "normal"], "--journal-sync"),
        (&["--dead-letters", "d.jsonl"], "--dead-letters"),
        (&["--workers", "2"], "--workers"),
        (&["--timeout-ms", "100"], "--timeout-ms"),
        (&["--rate", "5"], "--rate"),
        (&["--cacert", "ca.pem"], "--cacert"),
    ];
    for (extra, flag) in refused {
        let cmd = on_queue(&dir, &send, url, "q");
        let out = run(with(cmd, extra), b"");
        assert_eq!(out.code, 2, "{extra:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("cannot be used with") && out.stderr.contains(flag),
            "{extra:?}: {}",
            out.stderr
        );
    }
    let usage = |args: &[&str]| run(with(hookpool(dir.dir()), args), b"");
    // --redis needs --queue, and --worker-ttl-ms needs --redis.
    let out = usage(&[
        "send",
        "--url",
        "http://127.0.0.1:9/in",
        "--redis",
        url,
        "in.jsonl",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = usage(&[
        "send",
        "--url",
        "http://127.0.0.1:9/in",
        "--worker-ttl-ms",
        "9000",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Without --redis, --queue is a number, as before.
    let out = usage(&[
        "send",
        "--url",
        "http://127.0.0.1:9/in",
        "--queue",
        "q",
        "in.jsonl",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "without --redis");
    // replay takes a FILE or --redis, not both; status needs both flags.
    let out = usage(&["replay", "d.jsonl", "--redis", url, "--queue", "q"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = usage(&[
        "replay",
        "--redis",
        url,
        "--queue",
        "q",
        "--url",
        "http://x/",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = usage(&["status", "--redis", url]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = usage(&["status", "--redis", url, "--queue", ""]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "must not be empty");

    // A delivery slower than half the ttl would make a live worker look dead.
    let cmd = on_queue(&dir, &["worker"], url, "q");
    let out = run(with(cmd, &["--timeout-ms", "20000"]), b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(
        &out,
        "--timeout-ms 20000 is more than half of --worker-ttl-ms 30000",
    );
    let cmd = on_queue(&dir, &["worker"], url, "q");
    let out = run(
        with(cmd, &["--timeout-ms", "500", "--worker-ttl-ms", "900"]),
        b"",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "raise --worker-ttl-ms");
}

/// Lines go into the queue in batches (one script each, all or none, in
/// order), so a send stopped anywhere leaves a prefix of its input there.
/// Scripts Redis has run so far (`EVAL` and `EVALSHA`).
fn scripts_run(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split_once(":calls="))
        .filter(|(command, _)| matches!(*command, "eval" | "evalsha"))
        .map(|(_, rest)| rest.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Lines go into the queue in batches, one script each: a file of 2,000
/// lines in 8 (256 lines a batch), and lines that trickle in on standard
/// input each as it comes. A send that went back to a script a line fails
/// the first check, one whose batch waits to fill the second.
#[test]
fn send_enqueues_a_file_in_batches_and_a_trickle_line_by_line() {
    let Some(redis) = RedisServer::start("cli-batches") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-batches"));
    std::fs::write(dir.path("in.jsonl"), lines(0..2000)).unwrap();
    let before = scripts_run(&redis);
    let send = on_queue(&dir, &["send", "--url", "http://127.0.0.1:9/in"], &url, "q");
    let out = run(with(send, &["in.jsonl"]), b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ns(&out, &["lines", "enqueued"]),
        [2000, 2000],
        "{}",
        out.summary
    );
    assert_eq!(queued_numbers(&redis, "q"), (0..2000).collect::<Vec<_>>());
    // One script a batch, and perhaps one at start.
    let scripts = scripts_run(&redis) - before;
    assert!(
        scripts <= 2000_u64.div_ceil(256) + 1,
        "{scripts} scripts for 2000 lines"
    );

    let send = on_queue(&dir, &["send", "--url", "http://127.0.0.1:9/in"], &url, "t");
    let mut child = Running::spawn(with(send, &["-"]));
    for i in 0..3 {
        // Standard input stays open: the next line is not written yet.
        child.write_stdin(lines(i..i + 1).as_bytes());
        let ready = || status(&dir, &url, "t")["ready"].as_u64().unwrap_or(0);
        assert!(
            wait_until(WAIT, || ready() > u64::from(i)),
            "line {} was not enqueued while the input stayed open",
            i + 1
        );
    }
    let out = output(child.finish(RUN));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ns(&out, &["lines", "enqueued"]), [3, 3], "{}", out.summary);
}

#[test]
fn a_stopped_send_leaves_exactly_its_first_lines_in_the_queue() {
    let Some(redis) = RedisServer::start("cli-prefix") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-prefix"));
    // Far more than a send gets through while `sending` waits for 50 of
    // them (tens of thousands of lines a second, in batches of 256).
    let many = 1_000_000;
    std::fs::write(dir.path("in.jsonl"), lines(0..many)).unwrap();

    // SIGKILL: no summary, but the queue holds lines 1 to k, each once:
    // whole batches, which a file gives full (256 lines).
    let child = sending(&dir, &url, "killed", "in.jsonl", "");
    assert!(child.kill(), "send ended before the kill");
    let queued = queued_numbers(&redis, "killed");
    let k = queued.len() as u64;
    assert!((50..u64::from(many)).contains(&k), "{k}");
    assert_eq!(queued, (0..k).collect::<Vec<_>>());
    assert_eq!(k % 256, 0, "{k} lines: not whole batches");
    println!("killed with {k} lines in the queue");

    // SIGTERM, reading a file: it stops after the batch it is enqueueing,
    // and `lines` says where the next send goes on.
    let child = sending(&dir, &url, "file", "in.jsonl", "");
    child.signal("TERM");
    let lines_sent = check_stopped(&output(child.finish(RUN)), &redis, &dir, "file");
    assert!(lines_sent < u64::from(many), "{lines_sent}");
    assert_eq!(lines_sent % 256, 0, "{lines_sent} lines: not whole batches");

    // SIGTERM, reading standard input: what it had read is enqueued too,
    // since it cannot be read again (here all of it: it was written at once).
    let child = sending(&dir, &url, "stdin", "-", &lines(0..1000));
    child.signal("TERM");
    let lines_sent = check_stopped(&output(child.finish(RUN)), &redis, &dir, "stdin");
    assert_eq!(lines_sent, 1000);
}

/// Redis goes away in the middle of a send: the batch it was enqueueing
/// is tried again for 10 s, then the send stops there, and Redis holds
/// the lines the summary counts, and perhaps that batch, whole.
#[test]
fn a_send_whose_redis_goes_away_stops_where_redis_stopped_taking_lines() {
    let Some(mut redis) = RedisServer::start("cli-outage") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-outage"));
    let mut child = sending(&dir, &url, "q", "-", &lines(0..2000));
    redis.kill();
    // More input once Redis is gone: the send meets the outage with it, if
    // not before.
    child.write_stdin(lines(2000..4000).as_bytes());
    child.wait_for_stderr("trying again for up to 10s", WAIT);
    // Each batch is tried for 10 s, then the send gives up on it.
    let out = output(child.finish(RUN));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.summary["redis_error"].is_null(), "{}", out.summary);
    assert_eq!(out.summary["interrupted"], false);
    let lines = out.n("lines");
    assert_eq!(out.n("enqueued"), lines, "{}", out.summary);
    // "line N: cannot use redis" for a batch of one, else "lines N to M: ...".
    let failed = format!("line {}: cannot use redis", lines + 1);
    let last = if out.stderr.contains(&failed) {
        lines + 1
    } else {
        let from = format!("lines {} to ", lines + 1);
        let at = out.stderr.find(&from).unwrap_or_else(|| {
            panic!("{from:?} not in: {}", out.stderr);
        });
        let rest = &out.stderr[at + from.len()..];
        let (last, rest) = rest.split_once(':').unwrap();
        assert!(rest.starts_with(" cannot use redis"), "{}", out.stderr);
        last.parse().unwrap()
    };
    // What Redis acknowledged survived it (AOF, fsync always): the lines
    // the summary counts, and perhaps the whole batch it stopped at, which
    // Redis may have written before it died without answering.
    redis.restart();
    let queued = queued_numbers(&redis, "q");
    let k = queued.len() as u64;
    assert!(
        k == lines || k == last,
        "{k} queued, {lines} lines, batch to {last}"
    );
    assert_eq!(queued, (0..k).collect::<Vec<_>>());
}

#[test]
fn signatures_from_the_worker_verify() {
    let Some(redis) = RedisServer::start("cli-signed") else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-signed"));
    let receiver = Receiver::start(Mode::Ok);
    let send = on_queue(
        &dir,
        &["send", "--url", &receiver.url(), "--event-type", "t.x"],
        &url,
        "q",
    );
    let out = run(with(send, &["-"]), b"{\"n\":1}\n\nnot json\n");
    assert_eq!(out.code, 1, "an invalid line: {}", out.stderr);
    assert_eq!(
        ns(&out, &["lines", "enqueued", "invalid"]),
        [3, 1, 1],
        "{}",
        out.summary
    );
    says(&out, "line 3: invalid JSON");
    let w = worker(&dir, &url, "q", &[]);
    assert!(receiver.server.wait_for_requests(1, WAIT));
    assert_eq!(stop(w).code, 0);
    let requests = receiver.server.requests();
    assert_eq!(signer(&requests[0]), 0);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        (body["type"].as_str(), &body["data"]),
        (Some("t.x"), &serde_json::json!({"n": 1}))
    );
}

/// A `rediss://` Redis whose certificate comes from a private CA: refused
/// with the bundled roots (exit 2, the cause named), reached by `status`
/// and `send --redis` with `--redis-cacert` naming the CA's PEM; a file
/// that cannot be read is a usage error that names it.
#[test]
fn redis_cacert_trusts_a_private_ca() {
    let ca = pki::Ca::new("hookpool cli redis test CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let Some(redis) = RedisServer::start_tls("cli-tls", &leaf.cert_pem, &leaf.key_pem, &ca.pem)
    else {
        return;
    };
    let (url, dir) = (redis.url(), TempDir::new("cli-redis-tls"));
    assert!(url.starts_with("rediss://"), "{url}");
    std::fs::write(dir.path("ca.pem"), &ca.pem).unwrap();
    let ca_file = dir.path("ca.pem").to_str().unwrap().to_owned();

    let out = run(on_queue(&dir, &["status"], &url, "q"), b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "UnknownIssuer");

    let trusting = ["--redis-cacert", ca_file.as_str()];
    let out = run(with(on_queue(&dir, &["status"], &url, "q"), &trusting), b"");
    assert_eq!(out.code, 0, "{}", out.stderr);

    std::fs::write(dir.path("in.jsonl"), lines(0..3)).unwrap();
    let send = on_queue(&dir, &["send", "--url", "http://127.0.0.1:9/in"], &url, "q");
    let out = run(with(send, &[&trusting[..], &["in.jsonl"]].concat()), b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(ns(&out, &["enqueued"]), [3], "{}", out.summary);
    let out = run(with(on_queue(&dir, &["status"], &url, "q"), &trusting), b"");
    assert_eq!(out.summary["ready"], 3, "{}", out.summary);

    let missing = ["--redis-cacert", "no-such-ca.pem"];
    let out = run(with(on_queue(&dir, &["status"], &url, "q"), &missing), b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    says(&out, "--redis-cacert no-such-ca.pem: cannot read it");
}
