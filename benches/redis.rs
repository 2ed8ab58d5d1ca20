//! Redis benchmark (issue 16): webhooks through one shared Redis queue,
//! against the in-memory dispatcher and against `redis-benchmark`, in one
//! run.
//!
//! ```sh
//! cargo bench --bench redis --features redis
//! ```
//!
//! The benchmark starts its own `redis-server` (a free port on 127.0.0.1, a
//! temporary directory, `appendonly yes`, `appendfsync always`, no
//! snapshots, `noeviction`) and the receiver (nginx `return 204;`, one
//! worker process), and stops and reaps both at the end. There is no no-op
//! delivery in the library: every webhook is a real POST, to nginx, the
//! fastest receiver at hand. Each variant's processes are this binary
//! re-executed with `--child`; several start together through a barrier in
//! Redis. Variants, in an order rotated from round to round:
//!
//! - `memory`: one process, the in-memory dispatcher: N webhooks from S
//!   threads (16) with `send_timeout`, W workers (16), a queue of W.
//! - `redis-1`, `redis-2`: one or two processes on one Redis queue, each
//!   with the same dispatcher and a `RedisQueue`, each enqueueing its share
//!   of N from S threads with `send_durable` (`Ok`: Redis has it) and
//!   delivering whatever it claims. Webhooks/s: N over the time from the
//!   start to when the queue holds no job (every one enqueued, claimed,
//!   delivered and acknowledged).
//! - `try-1`, `try-2`: the same with `try_send` (`Ok` once handed to the
//!   writer thread, which sends up to 1,024 in one round trip).
//! - `split-1`, `split-2`: the same N in two steps: one or two
//!   producer-only processes enqueue with `send_durable`, then as many
//!   worker processes drain the full queue.
//! - `redis-benchmark`: `LPUSH` from 50 clients, unpipelined and with
//!   `-P 100`, against the same server: the ceiling.
//!
//! The fetcher claims at most what the local queue has room for, so the
//! local queue is the claim's batch (`split-1` against `split-1-q256`
//! shows what that does to draining): the variants named `-q256` have a
//! local queue of 256 (the most one claim takes); `memory-q256` is the
//! in-memory dispatcher with the same queue, to compare with.
//!
//! Also measured: the CPU of the processes and of `redis-server` per
//! webhook, and for one process the time from submission to delivery.
//! Medians, per-round ratios to `memory` (or `memory-q256`), the goals and
//! the load average are printed and written to
//! `target/bench-results/redis.json`.
//!
//! Knobs: `HOOKPOOL_BENCH_N` (50000), `HOOKPOOL_BENCH_ROUNDS` (5),
//! `HOOKPOOL_BENCH_SUBMITTERS` (16), `HOOKPOOL_BENCH_WORKERS` (16),
//! `HOOKPOOL_BENCH_VARIANTS` (a subset of the names),
//! `HOOKPOOL_BENCH_RECEIVER=fallback`.
//!
//! Without `redis-server` it says how to install it and exits. Under
//! `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hookpool::{RedisQueue, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use loopback::Receiver;
use loopback::drive::{self, Scale, WAIT};
use loopback::harness::{self, CHILD_LIMIT, Col};
use loopback::measure::{self, Tracker};
use loopback::redis_server::RedisServer;

/// One way of running N webhooks.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    /// `memory`, `e2e`, `split` or `ceiling`.
    kind: &'static str,
    procs: usize,
    /// `try_send` instead of `send_durable` (Redis only).
    try_send: bool,
    /// The local queue's capacity; 0: as many as the workers.
    queue: usize,
}

const fn v(
    name: &'static str,
    kind: &'static str,
    procs: usize,
    try_send: bool,
    queue: usize,
) -> Variant {
    Variant {
        name,
        kind,
        procs,
        try_send,
        queue,
    }
}

/// The most the fetcher claims at once (`MAX_CLAIM` in `src/webhook/fetch.rs`).
const BIG_QUEUE: usize = 256;

const VARIANTS: [Variant; 11] = [
    v("memory", "memory", 1, false, 0),
    v("memory-q256", "memory", 1, false, BIG_QUEUE),
    v("redis-1", "e2e", 1, false, 0),
    v("redis-1-q256", "e2e", 1, false, BIG_QUEUE),
    v("redis-2-q256", "e2e", 2, false, BIG_QUEUE),
    v("try-1-q256", "e2e", 1, true, BIG_QUEUE),
    v("try-2-q256", "e2e", 2, true, BIG_QUEUE),
    v("split-1", "split", 1, false, 0),
    v("split-1-q256", "split", 1, false, BIG_QUEUE),
    v("split-2-q256", "split", 2, false, BIG_QUEUE),
    v("redis-benchmark", "ceiling", 1, false, 0),
];

/// Which in-memory variant each Redis variant is compared with.
fn baseline(variant: &Variant) -> &'static str {
    if variant.queue == BIG_QUEUE {
        "memory-q256"
    } else {
        "memory"
    }
}

/// What a child is told to do (JSON after `--child`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    /// `memory`, `e2e` (enqueue and deliver), `enqueue` (producer only) or
    /// `drain` (deliver only).
    mode: String,
    redis: String,
    queue: String,
    url: String,
    /// This process enqueues webhooks `from..to`.
    from: usize,
    to: usize,
    /// Processes that start together.
    procs: usize,
    /// `try_send` (again on `Full`) instead of `send_durable`.
    try_send: bool,
    queue_capacity: usize,
    /// `n`: the webhooks in the queue, all processes together.
    scale: Scale,
}

fn main() {
    harness::bench_main(
        "redis",
        "cargo bench --bench redis --features redis",
        |args| child(&harness::child_args(args)),
        orchestrate,
    );
}

// ---------------------------------------------------------------- children

/// The benchmark's own keys beside the queue's.
fn bench_key(queue: &str, what: &str) -> String {
    format!("bench:{{{queue}}}:{what}")
}

/// Waits until all `run.procs` processes have arrived.
fn barrier(conn: &mut redis::Connection, run: &Run) {
    let key = bench_key(&run.queue, &format!("arrived-{}", run.mode));
    let _: i64 = redis::cmd("INCR").arg(&key).query(conn).expect("INCR");
    let deadline = Instant::now() + WAIT;
    loop {
        let n: i64 = redis::cmd("GET").arg(&key).query(conn).expect("GET");
        if n as usize >= run.procs {
            return;
        }
        assert!(Instant::now() < deadline, "the other processes never came");
        thread::sleep(Duration::from_micros(200));
    }
}

/// Waits until every process has enqueued its share and the queue holds
/// no job: each was claimed, delivered and acknowledged. The queue's
/// `jobs` hash is where the library keeps each webhook until its
/// acknowledgement (`src/store/redis/scripts.rs`).
fn wait_empty(conn: &mut redis::Connection, run: &Run) {
    let enqueued = bench_key(&run.queue, "enqueued");
    let jobs = format!("hookpool:{{{}}}:jobs", run.queue);
    let deadline = Instant::now() + WAIT;
    loop {
        let (n, left): (Option<i64>, i64) = redis::pipe()
            .cmd("GET")
            .arg(&enqueued)
            .cmd("HLEN")
            .arg(&jobs)
            .query(conn)
            .expect("GET, HLEN");
        if n.unwrap_or(0) as usize >= run.scale.n && left == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not empty");
        thread::sleep(Duration::from_millis(2));
    }
}

fn child(run: &Run) -> Value {
    let mut conn = (run.mode != "memory").then(|| {
        redis::Client::open(run.redis.as_str())
            .and_then(|c| c.get_connection())
            .expect("redis")
    });
    if let Some(conn) = conn.as_mut() {
        barrier(conn, run);
    }
    let start_ns = drive::unix_ns();
    let cpu0 = measure::cpu_time_ms();
    let tracker = Arc::new(Tracker::new(run.scale.n));
    let builder = drive::tracked(
        drive::builder(run.scale.workers).queue_capacity(run.queue_capacity),
        &tracker,
    );
    let hooks = match run.mode.as_str() {
        "memory" => builder,
        "enqueue" => builder.redis(RedisQueue::new(&run.redis, &run.queue).producer_only()),
        _ => builder.redis(RedisQueue::new(&run.redis, &run.queue)),
    }
    .build()
    .expect("dispatcher");
    let taken = drive::parallel(run.from..run.to, run.scale.submitters, |i| {
        let w: Webhook = drive::webhook(&run.url, i);
        tracker.submitted(i);
        match run.mode.as_str() {
            "memory" => hooks.send_timeout(w, WAIT).is_ok(),
            _ if run.try_send => drive::try_until_taken(&hooks, w, WAIT),
            _ => hooks.send_durable(w, WAIT).is_ok(),
        }
    });
    // try_send's webhooks may still wait in the writer: only once they are
    // in Redis may the others count them there.
    drive::wait_written(&hooks, WAIT);
    let enqueued_ns = drive::unix_ns();
    let mine = run.to - run.from;
    match (run.mode.as_str(), conn.as_mut()) {
        ("memory", _) => {
            assert!(drive::wait_finished(&tracker, mine, WAIT), "not delivered");
        }
        ("enqueue", Some(conn)) => {
            let _: i64 = redis::cmd("INCRBY")
                .arg(bench_key(&run.queue, "enqueued"))
                .arg(mine)
                .query(conn)
                .expect("INCRBY");
        }
        (_, Some(conn)) => {
            let _: i64 = redis::cmd("INCRBY")
                .arg(bench_key(&run.queue, "enqueued"))
                .arg(mine)
                .query(conn)
                .expect("INCRBY");
            wait_empty(conn, run);
        }
        _ => unreachable!("every redis mode has a connection"),
    }
    let done_ns = drive::unix_ns();
    let cpu_ms = measure::cpu_time_ms() - cpu0;
    // Submission to delivery, where this process delivered what it sent.
    let lat = if run.procs == 1 && matches!(run.mode.as_str(), "memory" | "e2e") {
        tracker.latencies_ms(run.from..run.to)
    } else {
        Vec::new()
    };
    let report = hooks.shutdown();
    json!({
        "mode": run.mode,
        "start_ns": start_ns,
        "enqueued_ns": enqueued_ns,
        "done_ns": done_ns,
        "enqueued": mine - taken.refused,
        "refused": taken.refused,
        "delivered": report.stats.delivered,
        "failed": tracker.failed_count(),
        "call_p50_ms": measure::quantile(&taken.call_ms, 0.50),
        "call_p99_ms": measure::quantile(&taken.call_ms, 0.99),
        "p50_ms": measure::quantile(&lat, 0.50),
        "p99_ms": measure::quantile(&lat, 0.99),
        "cpu_ms": cpu_ms,
    })
}

// ------------------------------------------------------------ orchestrator

struct Ctx {
    server: RedisServer,
    url: String,
    scale: Scale,
}

impl Ctx {
    /// Runs `variant.procs` children in `mode` on `queue` at once, the
    /// webhooks split between them; their results.
    fn children(&self, mode: &str, queue: &str, variant: &Variant) -> Result<Vec<Value>, String> {
        let procs = variant.procs;
        let share = self.scale.n.div_ceil(procs);
        let runs: Vec<Run> = (0..procs)
            .map(|p| Run {
                mode: mode.into(),
                redis: self.server.url(),
                queue: queue.into(),
                url: self.url.clone(),
                from: if mode == "drain" { 0 } else { p * share },
                to: if mode == "drain" {
                    0
                } else {
                    ((p + 1) * share).min(self.scale.n)
                },
                procs,
                try_send: variant.try_send,
                queue_capacity: if variant.queue == 0 {
                    self.scale.workers
                } else {
                    variant.queue
                },
                scale: self.scale,
            })
            .collect();
        thread::scope(|s| {
            let handles: Vec<_> = runs
                .iter()
                .map(|run| {
                    s.spawn(move || loopback::run_child(harness::child_command(run)?, CHILD_LIMIT))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "a child runner panicked".to_owned())?)
                .collect()
        })
    }

    /// One step of a variant: its children, and what they did together.
    fn step(&self, mode: &str, queue: &str, variant: &Variant) -> Result<Value, String> {
        let procs = variant.procs;
        let (cpu0, calls0) = (self.server.cpu_ms(), self.server.command_stats());
        let results = self.children(mode, queue, variant)?;
        let redis_cpu_ms = self.server.cpu_ms() - cpu0;
        let n = self.scale.n as f64;
        // What Redis ran for these webhooks: calls per webhook, and the
        // microseconds each call took, by command.
        let mut commands = serde_json::Map::new();
        for (cmd, (calls, usec)) in self.server.command_stats() {
            let (c0, u0) = calls0.get(&cmd).copied().unwrap_or((0, 0));
            let (calls, usec) = (calls.saturating_sub(c0), usec.saturating_sub(u0));
            if calls > 0 {
                commands.insert(
                    cmd,
                    json!({
                        "per_webhook": calls as f64 / n,
                        "us_per_call": usec as f64 / calls as f64,
                    }),
                );
            }
        }
        let ns = |k: &'static str| results.iter().filter_map(move |r| r[k].as_u64());
        let start = ns("start_ns").min().unwrap_or(0);
        // The first process to see the queue empty saw it as early as any.
        let end = if mode == "enqueue" {
            ns("enqueued_ns").max()
        } else {
            ns("done_ns").min()
        }
        .unwrap_or(0);
        let secs = end.saturating_sub(start) as f64 / 1e9;
        let sum = |k: &str| results.iter().filter_map(|r| r[k].as_f64()).sum::<f64>();
        let mut out = json!({
            "procs": procs,
            "secs": secs,
            "per_sec": n / secs,
            "enqueued": sum("enqueued"),
            "delivered": sum("delivered"),
            "failed": sum("failed"),
            "cpu_us_per_webhook": sum("cpu_ms") * 1000.0 / n,
            "redis_cpu_us_per_webhook": redis_cpu_ms * 1000.0 / n,
            "redis_commands": commands,
            "processes": results,
        });
        if procs == 1 {
            let r = &out["processes"][0].clone();
            for k in ["call_p50_ms", "call_p99_ms", "p50_ms", "p99_ms"] {
                out[k] = r[k].clone();
            }
        }
        Ok(out)
    }

    fn variant(&self, variant: &Variant, round: usize) -> Result<Value, String> {
        let queue = format!("bench-{round}-{}", variant.name);
        match variant.kind {
            "memory" => self.step("memory", &queue, variant),
            "e2e" => self.step("e2e", &queue, variant),
            "split" => {
                let enqueue = self.step("enqueue", &queue, variant)?;
                let drain = self.step("drain", &queue, variant)?;
                let secs = enqueue["secs"].as_f64().unwrap_or(f64::NAN)
                    + drain["secs"].as_f64().unwrap_or(f64::NAN);
                let both =
                    |k: &str| enqueue[k].as_f64().unwrap_or(0.0) + drain[k].as_f64().unwrap_or(0.0);
                Ok(json!({
                    "procs": variant.procs,
                    "per_sec": self.scale.n as f64 / secs,
                    "enqueue_per_sec": enqueue["per_sec"],
                    "enqueue_call_p50_ms": enqueue["call_p50_ms"],
                    "enqueue_call_p99_ms": enqueue["call_p99_ms"],
                    "drain_per_sec": drain["per_sec"],
                    "delivered": drain["delivered"],
                    "cpu_us_per_webhook": both("cpu_us_per_webhook"),
                    "redis_cpu_us_per_webhook": both("redis_cpu_us_per_webhook"),
                    "enqueue": enqueue,
                    "drain": drain,
                }))
            }
            "ceiling" => {
                let plain = self.server.benchmark_lpush(100_000, 1);
                let piped = self.server.benchmark_lpush(1_000_000, 100);
                Ok(json!({ "lpush_per_sec": plain, "lpush_p100_per_sec": piped }))
            }
            other => Err(format!("unknown kind {other}")),
        }
    }
}

fn orchestrate() -> Result<(), String> {
    let scale = Scale::from_env(50_000);
    let wanted: Vec<String> = std::env::var("HOOKPOOL_BENCH_VARIANTS")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|_| VARIANTS.iter().map(|v| v.name.to_owned()).collect());
    let server = match RedisServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "redis: no redis-server ({e}); install it (`apt-get install redis-server`) to run this benchmark"
            );
            return Ok(());
        }
    };
    let receiver = Receiver::start().map_err(|e| format!("cannot start a receiver: {e}"))?;
    let ctx = Ctx {
        url: receiver.url(),
        server,
        scale,
    };
    eprintln!(
        "{} on port {} (AOF always); receiver: {} ({}); {scale}",
        ctx.server.version, ctx.server.port, receiver.kind, receiver.version
    );

    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut sitting = harness::Sitting::default();
    for round in 0..scale.rounds {
        sitting.round_begins(round + 1);
        let mut order: Vec<Variant> = VARIANTS.to_vec();
        order.rotate_left(round % VARIANTS.len());
        for variant in order {
            let name = variant.name;
            if !wanted.iter().any(|w| w == name) {
                continue;
            }
            let result = ctx.variant(&variant, round);
            harness::record(&mut runs, "", name, round + 1, result, brief);
        }
        sitting.round_ends();
    }
    let aof_bytes = ctx.server.disk_bytes();
    let server_version = ctx.server.version.clone();
    let receiver_info = json!({ "kind": receiver.kind, "version": receiver.version });
    drop(ctx);
    drop(receiver);

    let summary = summarize(&runs);
    print_table(&summary);
    let out = json!({
        "redis_server": server_version,
        "redis_settings": "appendonly yes, appendfsync always, save \"\", maxmemory-policy noeviction",
        "aof_bytes_at_end": aof_bytes,
        "receiver": receiver_info,
        "scale": scale,
        "summary": summary,
        "runs": runs,
    });
    sitting.write("redis", out)
}

fn brief(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    if r["lpush_per_sec"].is_number() || r["lpush_p100_per_sec"].is_number() {
        return format!(
            "LPUSH {:.0}/s, -P 100 {:.0}/s",
            f("lpush_per_sec"),
            f("lpush_p100_per_sec")
        );
    }
    let mut s = format!(
        "{:.0}/s, CPU {:.1} us/webhook, redis-server {:.1} us/webhook",
        f("per_sec"),
        f("cpu_us_per_webhook"),
        f("redis_cpu_us_per_webhook")
    );
    if r["enqueue_per_sec"].is_number() {
        s += &format!(
            " (enqueue {:.0}/s, drain {:.0}/s)",
            f("enqueue_per_sec"),
            f("drain_per_sec")
        );
    }
    if f("failed") > 0.0 {
        s += &format!(" FAILED {}", f("failed"));
    }
    s
}

/// Medians of the rounds, the per-round ratios to the in-memory variant
/// with the same local queue, the goals.
fn summarize(runs: &BTreeMap<String, Vec<Value>>) -> Value {
    let rates = |v: &str| runs.get(v).map(|rs| harness::rates(rs)).unwrap_or_default();
    let mut rows = serde_json::Map::new();
    for variant in VARIANTS {
        let Some(results) = runs.get(variant.name) else {
            continue;
        };
        let mut row = harness::medians(results);
        let memory = rates(baseline(&variant));
        if matches!(variant.kind, "e2e" | "split") && !memory.is_empty() {
            harness::add_ratio(&mut row, "vs_memory", &rates(variant.name), &memory);
            row["compared_with"] = json!(baseline(&variant));
        }
        rows.insert(variant.name.into(), row);
    }
    let get = |v: &str, k: &str| rows.get(v).and_then(|r| r[k].as_f64());
    let goals = json!({
        "noop_per_sec_goal": 40_000,
        "noop_per_sec": {
            "redis-1": get("redis-1", "per_sec"),
            "redis-1-q256": get("redis-1-q256", "per_sec"),
            "redis-2-q256": get("redis-2-q256", "per_sec"),
            "try-1-q256": get("try-1-q256", "per_sec"),
            "try-2-q256": get("try-2-q256", "per_sec"),
        },
        "vs_memory_goal": 0.7,
        "vs_memory": {
            "redis-1": get("redis-1", "vs_memory"),
            "redis-1-q256": get("redis-1-q256", "vs_memory"),
            "try-1-q256": get("try-1-q256", "vs_memory"),
        },
    });
    json!({ "variants": rows, "goals": goals })
}

fn print_table(summary: &Value) {
    let Some(rows) = summary["variants"].as_object() else {
        return;
    };
    println!("\nmedians of rounds");
    let table: Vec<(&str, &Value)> = VARIANTS
        .iter()
        .filter(|v| v.kind != "ceiling")
        .filter_map(|v| Some((v.name, rows.get(v.name)?)))
        .collect();
    harness::print_rows(
        table,
        &[
            Col("webhooks/s", "per_sec", 1.0, 0),
            Col("vs memory", "vs_memory", 1.0, 2),
            Col("enqueue/s", "enqueue_per_sec", 1.0, 0),
            Col("drain/s", "drain_per_sec", 1.0, 0),
            Col("p50 ms", "p50_ms", 1.0, 2),
            Col("p99 ms", "p99_ms", 1.0, 2),
            Col("CPU us/wh", "cpu_us_per_webhook", 1.0, 1),
            Col("redis us/wh", "redis_cpu_us_per_webhook", 1.0, 1),
        ],
    );
    if let Some(r) = rows.get("redis-benchmark") {
        let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "redis-benchmark: LPUSH {:.0}/s unpipelined, {:.0}/s with -P 100 (50 clients)",
            num("lpush_per_sec"),
            num("lpush_p100_per_sec")
        );
    }
    let g = &summary["goals"];
    let verdict = |x: Option<f64>, goal: f64| match x {
        Some(x) if x >= goal => "met",
        Some(_) => "MISSED",
        None => "not measured",
    };
    for (goal_key, goal, what) in [
        ("noop_per_sec", 40_000.0, "webhooks/s"),
        ("vs_memory", 0.7, "x memory"),
    ] {
        if let Some(by_variant) = g[goal_key].as_object() {
            for (name, x) in by_variant {
                let x = x.as_f64();
                println!(
                    "{name}: {:.2} {what} (goal >= {goal}: {})",
                    x.unwrap_or(f64::NAN),
                    verdict(x, goal)
                );
            }
        }
    }
}
