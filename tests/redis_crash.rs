//! Crash tests for the shared queue in Redis (issue 16), with real
//! processes: worker processes (this binary's ignored `worker` test, each
//! run as a child process that signs with a secret of its own) deliver from
//! one queue in a real redis-server to a loopback receiver that logs every
//! request and which process sent it. The tests SIGKILL and SIGSTOP
//! workers, let a poison webhook kill three of them, and SIGKILL
//! redis-server itself; then nothing acknowledged is missing, and a webhook
//! arrives twice only if a process died (or stopped) holding it, or if its
//! enqueue failed and was tried again.
//!
//! The worker ttl is short ([`TTL`]) so that dead workers are noticed
//! quickly; each request timeout is half of it, as `build()` requires.
#![cfg(feature = "redis")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::child::{self, Running};
use common::redis::{QueueView, RedisServer};
use common::server::{Recorded, Reply, TestServer};
use common::wait_until;
use hookpool::{DeadLetterReason, DispatchHandle, Dispatcher, RedisQueue, RetryPolicy, Webhook};

/// One secret per worker process, by index: the receiver tells by the
/// signature which process sent a request.
const SECRETS: [&str; 8] = [
    "whsec_iJh9H5WE42aGcQyQzIXVedCQ8BqHri0R",
    "whsec_OFADScwikxEj0PHxVB8TzjeeXw9JTk9W",
    "whsec_7SO5EkDSbbtgnENK3cyFk3/xwD+oryRM",
    "whsec_OLNwCo+QeklkDEUp/QVNn3Dztejg+Rdl",
    "whsec_5+F02luz/MvyEvMnHtzckC3olMepie/N",
    "whsec_g1Sok9ZfjovWjudzvLQnASBup785h0si",
    "whsec_I8oFvX65Q8RMQNcsiXLYChW2uzr54gsT",
    "whsec_ViSGyMNGkkfUszP8Vq4JcVLPUJ89hfwm",
];

/// The worker process's settings, in its environment.
const REDIS: &str = "HOOKPOOL_REDIS_CRASH_URL";
const QUEUE: &str = "HOOKPOOL_REDIS_CRASH_QUEUE";
const SECRET: &str = "HOOKPOOL_REDIS_CRASH_SECRET";
const TTL_MS: &str = "HOOKPOOL_REDIS_CRASH_TTL_MS";
const RETRY_MS: &str = "HOOKPOOL_REDIS_CRASH_RETRY_MS";

/// Every process's worker ttl. With 1 s, on a 2-core machine at a load
/// average of 30 to 45, a live worker's heartbeat sometimes came too late:
/// it was declared dead, and delivered again what was taken back from it.
const TTL: Duration = Duration::from_secs(2);

/// The longest any one wait in these tests may take.
const BOUND: Duration = Duration::from_secs(30);

/// A worker process: delivers from the queue until its stdin ends, then
/// shuts down and prints its stats. Not a test on its own.
#[test]
#[ignore = "a worker process, run by the tests of this file as a child"]
fn worker() {
    let Ok(url) = std::env::var(REDIS) else {
        eprintln!("not a test on its own: the tests of this file run it as a child process");
        return;
    };
    let var = |name| std::env::var(name).expect(name);
    let ms = |name| Duration::from_millis(var(name).parse().expect(name));
    let ttl = ms(TTL_MS);
    // Warnings on stderr, where the test can read them.
    let _ = env_logger::Builder::new()
        .filter_module("hookpool", log::LevelFilter::Warn)
        .try_init();
    let hooks = Dispatcher::builder()
        .name("worker")
        .workers(4)
        .queue_capacity(64)
        .timeout(ttl / 2)
        .retry(
            RetryPolicy::exponential(ms(RETRY_MS))
                .jitter(false)
                .max_attempts(10),
        )
        .signing_secret(&var(SECRET))
        .unwrap()
        .redis(RedisQueue::new(&url, &var(QUEUE)).worker_ttl(ttl))
        .build()
        .unwrap();
    say("READY");
    for line in std::io::stdin().lines().map_while(Result::ok) {
        if line == "stats" {
            say(&format!(
                "STATS {}",
                serde_json::to_string(&hooks.stats()).unwrap()
            ));
        }
    }
    let report = hooks.shutdown_timeout(Duration::from_secs(5));
    say(&format!(
        "DONE {}",
        serde_json::to_string(&report.stats).unwrap()
    ));
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// A worker process; killed and reaped when dropped, after showing what
/// it logged if the test is failing.
struct Worker {
    run: Option<Running>,
    /// The index of its secret.
    signer: usize,
    /// Its identity in the queue.
    identity: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let (Some(run), true) = (&self.run, std::thread::panicking()) {
            eprintln!("worker {} logged:\n{}", self.signer, run.stderr_so_far());
        }
    }
}

impl Worker {
    fn run(&self) -> &Running {
        self.run.as_ref().expect("a running worker")
    }

    /// SIGKILL, and reaped.
    fn kill(mut self) {
        self.run.take().expect("a running worker").kill();
    }

    /// Closes its stdin: it shuts down gracefully; its final stats.
    fn finish(mut self) -> serde_json::Value {
        let run = self.run.take().expect("a running worker");
        let (code, lines, stderr) = run.finish(BOUND);
        assert_eq!(code, 0, "worker {} failed:\n{stderr}", self.signer);
        let done = lines
            .iter()
            .find_map(|l| l.split_once("DONE ").map(|(_, json)| json.to_owned()))
            .unwrap_or_else(|| panic!("worker {} said no DONE: {lines:?}", self.signer));
        serde_json::from_str(&done).unwrap()
    }
}

/// A queue in its own redis-server, and how its processes are set up.
struct Queue {
    name: String,
    url: String,
    view: QueueView,
    ttl: Duration,
    /// The first retry's delay.
    retry: Duration,
}

impl Queue {
    fn new(redis: &RedisServer, name: &str) -> Queue {
        Queue {
            name: name.to_owned(),
            url: redis.url(),
            view: QueueView::new(redis, name),
            ttl: TTL,
            retry: Duration::from_millis(50),
        }
    }

    /// Starts a worker process signing with `SECRETS[signer]`, once it has
    /// registered in the queue.
    fn worker(&self, signer: usize) -> Worker {
        let mut cmd = child::ignored_test("worker");
        cmd.env(REDIS, &self.url)
            .env(QUEUE, &self.name)
            .env(SECRET, SECRETS[signer])
            .env(TTL_MS, self.ttl.as_millis().to_string())
            .env(RETRY_MS, self.retry.as_millis().to_string());
        let run = Running::spawn(cmd);
        if run.line_with("READY", BOUND).is_none() {
            panic!("worker {signer} did not start:\n{}", run.stderr_so_far());
        }
        let identity = self
            .view
            .worker_of(run.id())
            .expect("a started worker is registered");
        Worker {
            run: Some(run),
            signer,
            identity,
        }
    }

    /// This process, as a web process: enqueues only (and takes back dead
    /// workers' webhooks, with the same ttl as the workers).
    fn producer(&self) -> Dispatcher {
        Dispatcher::builder()
            .name(format!("{}-producer", self.name))
            .redis(
                RedisQueue::new(&self.url, &self.name)
                    .producer_only()
                    .worker_ttl(self.ttl),
            )
            .build()
            .unwrap()
    }
}

/// One request as the receiver logged it: a copy of a webhook.
#[derive(Debug, Clone)]
struct Arrival {
    /// The index of the secret that signed it.
    by: Option<usize>,
    body: Vec<u8>,
    /// The answer's status; 0 for none.
    status: u16,
    at: Instant,
}

type Log = BTreeMap<String, Vec<Arrival>>;

/// The loopback receiver: logs every request by webhook id, with which
/// process sent it.
struct Receiver {
    server: TestServer,
    log: Arc<Mutex<Log>>,
}

impl Receiver {
    /// Answers each request as `policy(id, signer, copies before it)` says.
    fn start(policy: impl Fn(&str, Option<usize>, usize) -> Reply + Send + Sync + 'static) -> Self {
        let log: Arc<Mutex<Log>> = Arc::default();
        let l = Arc::clone(&log);
        let server = TestServer::start(move |r: &Recorded| {
            let id = r.header("webhook-id").unwrap_or("").to_owned();
            let by = common::signer(r, &SECRETS);
            let mut log = l.lock().unwrap();
            let copies = log.entry(id.clone()).or_default();
            let reply = policy(&id, by, copies.len());
            copies.push(Arrival {
                by,
                body: r.body.clone(),
                status: status(&reply),
                at: Instant::now(),
            });
            reply
        });
        Receiver { server, log }
    }

    fn url(&self) -> String {
        self.server.url("/hooks")
    }

    fn log(&self) -> Log {
        self.log.lock().unwrap().clone()
    }

    /// Whether each of `ids` has arrived.
    fn has_all(&self, ids: &[String]) -> bool {
        let log = self.log.lock().unwrap();
        ids.iter().all(|id| log.contains_key(id))
    }

    /// How many requests `signer` sent.
    fn sent_by(&self, signer: usize) -> usize {
        let log = self.log.lock().unwrap();
        log.values()
            .flatten()
            .filter(|c| c.by == Some(signer))
            .count()
    }
}

fn status(reply: &Reply) -> u16 {
    match reply {
        Reply::Status(s) | Reply::StatusBody(s, _) | Reply::WithHeaders(s, _, _) => *s,
        Reply::Delay(_, inner) => status(inner),
        _ => 0,
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn webhook(url: &str, id: &str) -> Webhook {
    Webhook::new(url, &serde_json::json!({ "hook": id }))
        .unwrap()
        .with_id(id)
        .unwrap()
}

/// Enqueues `ids` with `send_durable` from 4 threads, each webhook until
/// Redis has acknowledged it (for at most [`BOUND`]); returns how many
/// tries failed.
fn enqueue(producer: &DispatchHandle, url: &str, ids: &[String]) -> usize {
    let failures = AtomicUsize::new(0);
    let deadline = Instant::now() + BOUND;
    std::thread::scope(|s| {
        for part in ids.chunks(ids.len().div_ceil(16).max(1)) {
            let failures = &failures;
            s.spawn(move || {
                for id in part {
                    let mut hook = webhook(url, id);
                    while let Err(e) = producer.send_durable(hook, Duration::ZERO) {
                        failures.fetch_add(1, Ordering::SeqCst);
                        assert!(Instant::now() < deadline, "{id} never acknowledged: {e}");
                        hook = e.into_inner();
                        // Redis is down: a pause between tries, not a wait
                        // for anything.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
        }
    });
    failures.load(Ordering::SeqCst)
}

/// What every test checks of the log: every copy of a webhook is the same
/// request, and, with `once_each`, no process sent one webhook twice (a
/// second copy comes only from another process, after the first one died
/// or stopped holding it).
fn check_copies(log: &Log, once_each: bool) {
    for (id, copies) in log {
        assert!(
            copies.iter().all(|c| c.body == copies[0].body),
            "{id}: copies differ"
        );
        if once_each {
            let by: BTreeSet<_> = copies.iter().map(|c| c.by).collect();
            assert_eq!(
                by.len(),
                copies.len(),
                "{id}: sent twice by one process: {copies:?}"
            );
        }
    }
}

/// Waits until each of `ids` has arrived and nothing is left waiting,
/// delayed or claimed in the queue.
fn wait_drained(receiver: &Receiver, queue: &Queue, ids: &[String]) {
    let drained = wait_until(BOUND, || {
        receiver.has_all(ids) && queue.view.try_counts().is_some_and(|c| c.drained())
    });
    if !drained {
        let log = receiver.log();
        let missing: Vec<_> = ids.iter().filter(|id| !log.contains_key(*id)).collect();
        panic!(
            "not drained: {} of {} missing (first: {:?}); queue {:?}",
            missing.len(),
            ids.len(),
            missing.first(),
            queue.view.try_counts()
        );
    }
}

/// 3 workers deliver 10,000 webhooks; one is SIGKILLed mid-run and another
/// started. Every webhook arrives, and only those the killed worker held
/// arrive twice: first from it, then from another.
#[test]
fn a_killed_worker_duplicates_only_what_it_held() {
    let Some(redis) = RedisServer::start("crash-kill") else {
        return;
    };
    let started = Instant::now();
    let queue = Queue::new(&redis, "kill");
    let receiver = Receiver::start(|_, _, _| Reply::Status(204));
    let producer = queue.producer();
    let handle = producer.handle();
    let ids = ids("kill", 10_000);
    // A backlog, so that each worker holds a full queue when one is killed.
    let (backlog, rest) = ids.split_at(6_000);
    assert_eq!(enqueue(&handle, &receiver.url(), backlog), 0);
    let mut workers: Vec<Worker> = (0..3).map(|i| queue.worker(i)).collect();

    let (victim, held) = std::thread::scope(|s| {
        let enqueued = s.spawn(|| enqueue(&handle, &receiver.url(), rest));
        assert!(
            wait_until(BOUND, || receiver.log.lock().unwrap().len() >= 3_000),
            "3,000 never arrived"
        );
        let victim = workers.remove(1);
        let (signer, identity) = (victim.signer, victim.identity.clone());
        victim.kill();
        let held = queue.view.claimed_at_death(&identity, queue.ttl);
        workers.push(queue.worker(3));
        assert_eq!(enqueued.join().unwrap(), 0, "enqueue failures");
        ((signer, identity), held)
    });
    wait_drained(&receiver, &queue, &ids);
    let (killed, identity) = victim;
    assert!(!held.is_empty(), "the killed worker held nothing");
    assert!(!queue.view.registered(&identity), "never declared dead");

    let log = receiver.log();
    check_copies(&log, true);
    let held: BTreeSet<&String> = held.values().collect();
    let mut twice = 0;
    for (id, copies) in &log {
        if copies.len() > 1 {
            twice += 1;
            assert!(
                held.contains(id),
                "{id} arrived twice but the killed worker did not hold it: {copies:?}"
            );
            assert_eq!(copies.len(), 2, "{id}: {copies:?}");
            assert_eq!(
                copies[0].by,
                Some(killed),
                "{id}: first from the killed worker"
            );
        }
    }
    assert_eq!(queue.view.counts().dead, 0);
    for worker in workers {
        let stats = worker.finish();
        assert_eq!(
            stats["store"]["shared"]["stale"], 0,
            "a live worker was robbed"
        );
    }
    println!(
        "10,000 webhooks; the killed worker held {}, {twice} arrived twice; {:?}",
        held.len(),
        started.elapsed()
    );
}

/// A worker SIGSTOPped past its ttl is declared dead: what it held is taken
/// back and delivered by the other while it is stopped. SIGCONTed, it
/// finishes what it had, but the queue counts none of those late results
/// (the worker counts them as stale), it registers again, and it goes on
/// delivering.
#[test]
fn a_stopped_worker_is_robbed_and_its_late_results_do_not_count() {
    let Some(redis) = RedisServer::start("crash-stop") else {
        return;
    };
    let queue = Queue::new(&redis, "stop");
    // A little slow, so that each worker always holds some.
    let receiver = Receiver::start(|_, _, _| {
        Reply::Delay(Duration::from_millis(5), Box::new(Reply::Status(204)))
    });
    let producer = queue.producer();
    let handle = producer.handle();
    let first = ids("stop", 1_000);
    assert_eq!(enqueue(&handle, &receiver.url(), &first), 0);
    let stopped = queue.worker(0);
    let other = queue.worker(1);
    assert!(wait_until(BOUND, || receiver.sent_by(0) >= 50));

    stopped.run().signal("STOP");
    let held = queue.view.claimed_at_death(&stopped.identity, queue.ttl);
    assert!(!held.is_empty(), "the stopped worker held nothing");
    assert!(
        wait_until(BOUND, || !queue.view.registered(&stopped.identity)),
        "the stopped worker was never declared dead"
    );
    // All delivered while it is stopped: what it held, by the other.
    wait_drained(&receiver, &queue, &first);
    let log = receiver.log();
    for id in held.values() {
        assert!(
            log[id].iter().any(|c| c.by == Some(1)),
            "{id}, held by the stopped worker, was not delivered by the other: {:?}",
            log[id]
        );
    }

    let resumed = Instant::now();
    stopped.run().signal("CONT");
    assert!(
        wait_until(BOUND, || queue.view.registered(&stopped.identity)),
        "the resumed worker did not register again"
    );
    stopped
        .run()
        .wait_for_stderr("declared dead by the shared queue", BOUND);
    // Alone now, it delivers the next ones.
    let other_stats = other.finish();
    assert_eq!(other_stats["store"]["shared"]["stale"], 0);
    let second = ids("stop-again", 200);
    assert_eq!(enqueue(&handle, &receiver.url(), &second), 0);
    wait_drained(&receiver, &queue, &second);
    let log = receiver.log();
    for id in &second {
        assert_eq!(log[id].len(), 1, "{id}: {:?}", log[id]);
        assert_eq!(
            log[id][0].by,
            Some(0),
            "{id} not delivered by the resumed worker"
        );
    }
    // Its late results, such as each delivery of what it held, are not
    // counted by the queue.
    let held: BTreeSet<&String> = held.values().collect();
    let late = held
        .iter()
        .filter(|id| log[**id].iter().any(|c| c.by == Some(0) && c.at > resumed))
        .count();
    assert!(
        late > 0,
        "the resumed worker delivered none of what it held"
    );
    let stale = stopped.finish()["store"]["shared"]["stale"]
        .as_u64()
        .unwrap();
    assert!(
        stale >= late as u64,
        "{stale} late results counted stale, {late} late deliveries"
    );
    check_copies(&log, true);
    for (id, copies) in &log {
        assert!(
            copies.len() == 1 || held.contains(id),
            "{id} arrived twice but the stopped worker did not hold it: {copies:?}"
        );
    }
    assert!(
        wait_until(BOUND, || {
            let shared = producer.stats().store.unwrap().shared.unwrap();
            (shared.ready, shared.delayed, shared.processing, shared.dead) == (0, 0, 0, 0)
        }),
        "{:?}",
        producer.stats().store
    );
}

/// redis-server is SIGKILLed mid-run and restarted on its AOF (appendfsync
/// always): every webhook whose `send_durable` returned `Ok` arrives, and
/// both workers reconnect and deliver after the restart.
#[test]
fn a_redis_restart_mid_run_loses_nothing_acknowledged() {
    let Some(mut redis) = RedisServer::start("crash-restart") else {
        return;
    };
    let queue = Queue::new(&redis, "restart");
    let receiver = Receiver::start(|_, _, _| Reply::Status(204));
    let producer = queue.producer();
    let handle = producer.handle();
    let workers: Vec<Worker> = (0..2).map(|i| queue.worker(i)).collect();
    let ids = ids("restart", 3_000);
    // The last is sent by the test while Redis is down (and refused), and
    // by the producer threads.
    let failures = AtomicUsize::new(0);
    let restarted = std::thread::scope(|s| {
        let enqueued = s.spawn(|| {
            let n = enqueue(&handle, &receiver.url(), &ids);
            failures.store(n, Ordering::SeqCst);
        });
        assert!(wait_until(BOUND, || receiver.log.lock().unwrap().len() >= 500));
        redis.kill();
        let probe = webhook(&receiver.url(), &ids[ids.len() - 1]);
        let refused = handle.send_durable(probe, Duration::ZERO);
        assert!(refused.is_err(), "acknowledged with Redis down");
        redis.restart();
        let restarted = Instant::now();
        enqueued.join().unwrap();
        restarted
    });
    // Every webhook was acknowledged in the end (each failed try was tried
    // again): all must arrive.
    wait_drained(&receiver, &queue, &ids);
    let log = receiver.log();
    check_copies(&log, false);
    for worker in &workers {
        let after = log
            .values()
            .flatten()
            .filter(|c| c.by == Some(worker.signer) && c.at > restarted)
            .count();
        assert!(
            after > 0,
            "worker {} delivered nothing after the restart",
            worker.signer
        );
        assert!(
            queue.view.registered(&worker.identity) || {
                // Declared dead while Redis was down: it registers again.
                wait_until(BOUND, || queue.view.registered(&worker.identity))
            }
        );
    }
    assert_eq!(queue.view.counts().dead, 0);
    for worker in workers {
        worker.finish();
    }
    println!(
        "{} sends failed while Redis was down, each tried again",
        failures.load(Ordering::SeqCst)
    );
}

/// A webhook whose worker dies holding it 3 times is dead-lettered as
/// `worker_lost` instead of killing a fourth; the others are delivered.
/// The receiver hangs on the poison webhook, and the test SIGKILLs
/// whichever worker sent it (told by its signature) and starts another.
#[test]
fn a_webhook_that_kills_three_workers_is_dead_lettered_worker_lost() {
    let Some(redis) = RedisServer::start("crash-poison") else {
        return;
    };
    const POISON: &str = "poison";
    let queue = Queue::new(&redis, "poison");
    let receiver = Receiver::start(|id, _, _| {
        if id == POISON {
            Reply::Hang
        } else {
            Reply::Status(204)
        }
    });
    let producer = queue.producer();
    let handle = producer.handle();
    let mut live: Vec<Worker> = (0..2).map(|i| queue.worker(i)).collect();
    let before = ids("before", 200);
    assert_eq!(enqueue(&handle, &receiver.url(), &before), 0);
    wait_drained(&receiver, &queue, &before);

    // Alone in the queue: each worker that takes it holds nothing else.
    assert_eq!(enqueue(&handle, &receiver.url(), &[POISON.to_owned()]), 0);
    // Each worker that took it, and those killed holding it (one that timed
    // out on it first had let it go).
    let (mut killed, mut deaths) = (BTreeSet::new(), 0);
    let letters = loop {
        let mut sender = None;
        let mut letters = Vec::new();
        let seen = wait_until(BOUND, || {
            letters = producer.stored_dead_letters(10).unwrap();
            let log = receiver.log.lock().unwrap();
            sender = log
                .get(POISON)
                .into_iter()
                .flatten()
                .filter_map(|c| c.by)
                .find(|by| !killed.contains(by));
            sender.is_some() || !letters.is_empty()
        });
        assert!(
            seen,
            "the poison webhook neither came again nor was dead-lettered"
        );
        if !letters.is_empty() {
            break letters;
        }
        let by = sender.unwrap();
        assert!(
            deaths < 3,
            "a worker took the poison webhook after 3 died holding it"
        );
        assert!(killed.len() < 5, "{} workers killed", killed.len());
        let at = live
            .iter()
            .position(|w| w.signer == by)
            .expect("a live worker sent it");
        let victim = live.remove(at);
        let identity = victim.identity.clone();
        victim.kill();
        let held = queue.view.claimed_at_death(&identity, queue.ttl);
        if held.values().any(|id| id == POISON) {
            deaths += 1;
        }
        killed.insert(by);
        live.push(queue.worker(1 + killed.len()));
    };
    assert_eq!(deaths, 3, "workers that died holding it");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0].letter;
    assert_eq!(letter.id, POISON);
    assert_eq!(letter.reason, DeadLetterReason::WorkerLost);
    assert_eq!(letter.payload.get(), r#"{"hook":"poison"}"#);
    assert!(letter.error.contains("3 times"), "{}", letter.error);

    // The workers left go on with the rest.
    let after = ids("after", 200);
    assert_eq!(enqueue(&handle, &receiver.url(), &after), 0);
    wait_drained(&receiver, &queue, &after);
    let log = receiver.log();
    check_copies(&log, true);
    assert_eq!(log[POISON].len(), killed.len(), "{:?}", log[POISON]);
    for id in before.iter().chain(&after) {
        assert_eq!(log[id].len(), 1, "{id}: {:?}", log[id]);
    }
    assert_eq!(queue.view.counts().dead, 1);
    assert!(wait_until(BOUND, || {
        producer.stats().store.unwrap().shared.unwrap().dead == 1
    }));
    for worker in live {
        worker.finish();
    }
}

/// Worker A gets a 503 (no Retry-After) for a webhook and schedules its
/// retry in Redis; A is SIGKILLed; worker B, started after, delivers it
/// when it is due (not before).
#[test]
fn a_retry_due_while_its_worker_is_dead_is_delivered_by_another() {
    let Some(redis) = RedisServer::start("crash-retry") else {
        return;
    };
    const HOOK: &str = "retried";
    let mut queue = Queue::new(&redis, "retry");
    queue.retry = Duration::from_millis(1500);
    let receiver =
        Receiver::start(|_, _, before| Reply::Status(if before == 0 { 503 } else { 204 }));
    let producer = queue.producer();
    let a = queue.worker(0);
    assert_eq!(
        enqueue(&producer.handle(), &receiver.url(), &[HOOK.to_owned()]),
        0
    );
    // The retry is in Redis, and A holds nothing.
    assert!(
        wait_until(BOUND, || {
            queue.view.delayed().len() == 1 && queue.view.claimed(&a.identity).is_empty()
        }),
        "the retry was not scheduled in redis: {:?}",
        queue.view.counts()
    );
    a.kill();
    let killed = Instant::now();
    let b = queue.worker(1);
    assert!(wait_until(BOUND, || receiver.log.lock().unwrap()[HOOK]
        .len()
        == 2));
    let log = receiver.log();
    let copies = &log[HOOK];
    assert_eq!(
        copies.iter().map(|c| (c.by, c.status)).collect::<Vec<_>>(),
        [(Some(0), 503), (Some(1), 204)]
    );
    assert!(
        killed < copies[0].at + queue.retry,
        "A was killed after its retry was due"
    );
    let waited = copies[1].at - copies[0].at;
    assert!(
        waited >= Duration::from_millis(1400),
        "delivered before it was due: {waited:?}"
    );
    assert!(wait_until(BOUND, || queue.view.counts().drained()));
    assert_eq!(queue.view.counts().dead, 0);
    let stats = b.finish();
    assert_eq!(
        (&stats["delivered"], &stats["retried"]),
        (&1.into(), &0.into())
    );
}
