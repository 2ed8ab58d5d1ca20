//! Push-back benchmark (issue 14): `hookpool send`, the real binary, of N
//! JSON lines to receivers that push back, against each receiver's own
//! capacity time.
//!
//! ```sh
//! cargo bench --bench pushback --features cli
//! ```
//!
//! Receivers, each on 127.0.0.1, taking turns for several rounds:
//!
//! - **limit:** nginx behind its own rate limiter (`limit_req ... rate=2000r/s
//!   burst=1000 nodelay`, 429 with `Retry-After: 1` beyond it), or without
//!   nginx a token bucket in the in-process server answering the same way.
//!   The burst is half a second of the rate: the bucket AWS API Gateway gives
//!   by default (10,000 requests/s, burst 5,000). Capacity time: (N - burst)
//!   / rate, 9.5 s for 20,000 lines.
//! - **listen:** `hookpool listen --workers 2 --queue 64`, the CLI's own
//!   receiver (429 with `Retry-After: 1` when its queue is full). It
//!   processes nothing, so its ceiling is measured with wrk (8 connections,
//!   as many as the sender's workers; only 2xx count).
//! - **listen-1ms:** the same with `--process-ms 1`: two workers of 1 ms
//!   each, a receiver that takes at most 2,000 a second and pushes back when
//!   64 wait. Its ceiling is measured with wrk too (sleeping 1 ms takes a
//!   little longer than 1 ms); without wrk, 2,000/s.
//! - **unlimited:** nginx `return 204;` (or the in-process server): the
//!   sender's own time for N lines, which no receiver can beat. Each
//!   receiver's capacity time is at least this round's.
//!
//! Each send runs with the CLI's defaults (8 workers, a queue of 1,024, up
//! to 5 attempts, `--max-elapsed-ms 60000`) and `--event-type entry.created`,
//! and with `RUST_LOG="hookpool=debug/pushed back"`: only the line logged
//! for each push-back reaches stderr, and the benchmark stamps each as it
//! reads it, so every run says when it was pushed back and how many
//! `Retry-After` pauses followed. Reported per receiver: elapsed (the
//! summary's `elapsed_ms`) against the capacity time, the share of requests
//! pushed back, dead letters (must be 0), pauses; medians and every round.
//! Target: at most 1.2x the capacity time. Written to
//! `target/bench-results/pushback.json`.
//!
//! `HOOKPOOL_BENCH_TRACE=limit,listen,listen-1ms` (any of them) adds, after
//! the rounds, one run per receiver named through the library with the
//! CLI's settings, sampling the endpoint's pace (`stats().endpoints`:
//! in-flight limit, rate, pause) every 5 ms, printed where it changes and
//! written to `target/bench-results/pushback-trace.json`.
//!
//! Knobs: `HOOKPOOL_BENCH_N` (20000), `HOOKPOOL_BENCH_ROUNDS` (3),
//! `HOOKPOOL_BENCH_RATE` (2000), `HOOKPOOL_BENCH_BURST` (1000),
//! `HOOKPOOL_BENCH_WRK_SECS` (2), `HOOKPOOL_BENCH_RECEIVERS` (a subset of
//! `unlimited,limit,listen,listen-1ms`), `HOOKPOOL_BENCH_RECEIVER=fallback`,
//! `HOOKPOOL_BENCH_BASELINE` (the path of another `hookpool` binary, say
//! one built from `main`: each receiver then also gets a send from it in
//! every round, right before or after this build's, taking turns, reported
//! as `<receiver> (baseline)`, so that a change is compared in one sitting),
//! `HOOKPOOL_BENCH_SEND_ARGS` (more arguments for every `hookpool send`,
//! say `--no-journal`: the journal commits each line to disk first, so on a
//! disk shared with other work the sender's own speed is the disk's).
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hookpool::{BreakerConfig, Dispatcher, RetryPolicy, Webhook};
use serde_json::{Value, json};

use loopback::wrk::Wrk;
use loopback::{Limit, Receiver, Service, env_or};

/// The binary under test, built by cargo for this benchmark.
const HOOKPOOL: &str = env!("CARGO_BIN_EXE_hookpool");

/// The longest one `hookpool send` may take before it is killed: its
/// `--max-elapsed-ms` is 60 s, so a run that works ends well before.
const SEND_LIMIT: Duration = Duration::from_secs(300);

/// The CLI's defaults that matter here (`hookpool send --help`).
const CLI_WORKERS: usize = 8;
const CLI_QUEUE: usize = 1024;

const RECEIVERS: [&str; 4] = ["unlimited", "limit", "listen", "listen-1ms"];

/// The target: elapsed at most this many times the capacity time.
const GOAL: f64 = 1.2;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` / `--all-targets` runs bench targets without
        // `--bench`: minutes of sending help nobody there.
        eprintln!("pushback: skipped; run it with `cargo bench --bench pushback --features cli`");
        return;
    }
    if let Err(e) = orchestrate() {
        eprintln!("pushback benchmark failed: {e}");
        std::process::exit(1);
    }
}

struct Setup {
    n: usize,
    wrk: Option<Wrk>,
    wrk_secs: u64,
    /// The working directory of every child: the input, wrk's script.
    scratch: PathBuf,
    input: PathBuf,
    /// `HOOKPOOL_BENCH_BASELINE`: another sender, run beside this one.
    baseline: Option<PathBuf>,
    /// `HOOKPOOL_BENCH_SEND_ARGS`: more arguments for every `hookpool send`.
    send_args: Vec<String>,
}

fn orchestrate() -> Result<(), String> {
    let n: usize = env_or("HOOKPOOL_BENCH_N", 20_000);
    let rounds: usize = env_or("HOOKPOOL_BENCH_ROUNDS", 3);
    let limit = Limit {
        rate: env_or("HOOKPOOL_BENCH_RATE", 2000),
        burst: env_or("HOOKPOOL_BENCH_BURST", 1000),
    };
    if limit.rate == 0 {
        return Err("HOOKPOOL_BENCH_RATE must be above 0".into());
    }
    let wanted: Vec<String> = std::env::var("HOOKPOOL_BENCH_RECEIVERS")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|_| RECEIVERS.iter().map(|s| s.to_string()).collect());
    let scratch =
        std::env::temp_dir().join(format!("hookpool-bench-pushback-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let input = scratch.join("entries.jsonl");
    let lines: String = (1..=n)
        .map(|i| format!("{{\"entry_id\": {i}}}\n"))
        .collect();
    std::fs::write(&input, lines).map_err(|e| e.to_string())?;
    let setup = Setup {
        n,
        wrk: Wrk::find(),
        wrk_secs: env_or("HOOKPOOL_BENCH_WRK_SECS", 2),
        scratch,
        input,
        baseline: std::env::var_os("HOOKPOOL_BENCH_BASELINE").map(PathBuf::from),
        send_args: std::env::var("HOOKPOOL_BENCH_SEND_ARGS")
            .map(|a| a.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };

    let plain = Receiver::start().map_err(|e| format!("cannot start a receiver: {e}"))?;
    let limited = Receiver::start_limited(limit)
        .map_err(|e| format!("cannot start the rate-limited receiver: {e}"))?;
    eprintln!(
        "receivers: {} ({}), the limited one {} r/s, burst {}; wrk: {}; N = {n}, {rounds} rounds; load average {}",
        limited.kind,
        limited.version,
        limit.rate,
        limit.burst,
        setup
            .wrk
            .as_ref()
            .map_or("not installed", |w| w.version.as_str()),
        load_average()
    );

    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for round in 0..rounds {
        // The sender's own time first: each receiver's capacity time in this
        // round is at least that. Then the others, in a rotating order.
        let floor = if wanted.iter().any(|w| w == "unlimited") {
            let r = send_to(&setup, Path::new(HOOKPOOL), &plain.url(), round)?;
            eprintln!("  round {} unlimited: {}", round + 1, brief(&r));
            let floor = r["elapsed_s"].as_f64();
            runs.entry("unlimited".into()).or_default().push(r);
            floor
        } else {
            None
        };
        let mut order: Vec<&str> = RECEIVERS[1..].to_vec();
        let turn = round % order.len();
        order.rotate_left(turn);
        // This build and the baseline take turns at going first.
        let mut senders = vec![(String::new(), Path::new(HOOKPOOL))];
        if let Some(baseline) = &setup.baseline {
            senders.push((" (baseline)".to_owned(), baseline.as_path()));
            senders.rotate_left(round % 2);
        }
        for name in order {
            if !wanted.iter().any(|w| w == name) {
                continue;
            }
            for (label, sender) in &senders {
                let mut r = match name {
                    "limit" => {
                        let mut r = send_to(&setup, sender, &limited.url(), round)?;
                        let rate = f64::from(limit.rate);
                        r["receiver_capacity_s"] =
                            json!((n as f64 - f64::from(limit.burst)).max(0.0) / rate);
                        r
                    }
                    "listen" => listen_run(&setup, sender, 0, round)?,
                    _ => listen_run(&setup, sender, 1, round)?,
                };
                judge(&mut r, floor);
                eprintln!("  round {} {name}{label}: {}", round + 1, brief(&r));
                runs.entry(format!("{name}{label}")).or_default().push(r);
            }
        }
    }

    let mut traces = serde_json::Map::new();
    let traced = std::env::var("HOOKPOOL_BENCH_TRACE").unwrap_or_default();
    for name in traced.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        thread::sleep(Duration::from_secs(2));
        let trace = match name {
            "limit" => trace_pace(name, &limited.url(), n),
            "listen" | "listen-1ms" => {
                let (service, url) = listen(if name == "listen" { 0 } else { 1 })?;
                let trace = trace_pace(name, &url, n);
                drop(service.stop());
                trace
            }
            other => return Err(format!("HOOKPOOL_BENCH_TRACE: no receiver {other:?}")),
        };
        traces.insert(name.to_owned(), trace);
    }
    let receivers = json!({
        "unlimited": { "kind": plain.kind, "version": plain.version },
        "limit": { "kind": limited.kind, "version": limited.version, "rate": limit.rate, "burst": limit.burst },
        "listen": "hookpool listen --workers 2 --queue 64",
        "listen-1ms": "hookpool listen --workers 2 --queue 64 --process-ms 1",
    });
    drop(plain);
    drop(limited);
    let _ = std::fs::remove_dir_all(&setup.scratch);

    let summary = summarize(&runs);
    print_table(&summary);
    let dir = loopback::results_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if !traces.is_empty() {
        let trace = Value::Object(traces);
        let path = dir.join("pushback-trace.json");
        std::fs::write(&path, serde_json::to_string_pretty(&trace).unwrap())
            .map_err(|e| e.to_string())?;
        println!("written: {}", path.display());
    }
    let out = json!({
        "benchmark": "pushback",
        "machine": loopback::machine(),
        "receivers": receivers,
        "wrk": setup.wrk.as_ref().map(|w| w.version.clone()),
        "n": n,
        "rounds": rounds,
        "baseline": setup.baseline.as_ref().map(|b| b.display().to_string()),
        "send_args": setup.send_args,
        "goal": GOAL,
        "summary": summary,
        "runs": runs,
    });
    let path = dir.join("pushback.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap())
        .map_err(|e| e.to_string())?;
    println!("written: {}", path.display());
    Ok(())
}

/// The 1-minute load average, from `/proc/loadavg`.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------- one send

/// `hookpool send` of the input to `url`: its summary, its push-backs and
/// the pauses they started.
fn send_to(setup: &Setup, sender: &Path, url: &str, round: usize) -> Result<Value, String> {
    // A rate limiter's bucket refills, and the machine settles, between runs.
    thread::sleep(Duration::from_secs(1));
    let load = load_average();
    let mut cmd = Command::new(sender);
    cmd.current_dir(&setup.scratch)
        .env_remove("HOOKPOOL_SECRETS")
        .env("RUST_LOG", "hookpool=debug/pushed back")
        .args(["send", "--url", url, "--event-type", "entry.created"])
        .args(&setup.send_args)
        .arg(&setup.input);
    let run = loopback::run_traced(cmd, SEND_LIMIT)?;
    let summary: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back()
        .ok_or_else(|| format!("hookpool send printed no summary ({})", run.status))?;
    let push_backs = push_backs(&run.stderr);
    let pauses = pauses(&push_backs);
    let count = |k: &str| summary[k].as_u64().unwrap_or(0);
    let requests = count("delivered") + count("push_backs") + count("retried");
    let elapsed_s = count("elapsed_ms") as f64 / 1e3;
    Ok(json!({
        "round": round + 1,
        "load_average": load,
        "exit_code": run.status.code(),
        "elapsed_s": elapsed_s,
        "lines_per_s": setup.n as f64 / elapsed_s,
        "delivered": count("delivered"),
        "dead_lettered": count("dead_lettered"),
        "retried": count("retried"),
        "push_backs": count("push_backs"),
        "requests": requests,
        "push_back_share": count("push_backs") as f64 / requests.max(1) as f64,
        "push_backs_logged": push_backs.len(),
        "first_push_back_s": push_backs.first().map(|p| p.0),
        "pauses": pauses.len(),
        "paused_s": pauses.iter().fold(0.0, |sum, (from, to)| sum + to - from),
        "pause_starts_s": pauses.iter().map(|p| round_ms(p.0)).collect::<Vec<_>>(),
        "summary": summary,
    }))
}

fn round_ms(s: f64) -> f64 {
    (s * 1e3).round() / 1e3
}

/// `(seconds since the start, status, pause in seconds)` of each push-back
/// line the CLI logged: `... pushed back by URL (429, pause 1s); ...`.
fn push_backs(stderr: &[(Duration, String)]) -> Vec<(f64, u16, f64)> {
    stderr
        .iter()
        .filter_map(|(t, line)| {
            let (_, rest) = line.split_once(" pushed back by ")?;
            let (_, inside) = rest.split_once(" (")?;
            let (status, rest) = inside.split_once(", pause ")?;
            let (pause, _) = rest.split_once(')')?;
            Some((t.as_secs_f64(), status.parse().ok()?, debug_secs(pause)?))
        })
        .collect()
}

/// A `Duration` as `{:?}` prints it (`1s`, `500ms`, `1.5µs`, `0ns`), in
/// seconds.
fn debug_secs(text: &str) -> Option<f64> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        let n = text.strip_suffix(unit)?.parse::<f64>().ok()?;
        Some(n * scale)
    })
}

/// The `Retry-After` pauses the push-backs set, as `(from, to)` in seconds:
/// one that arrives during a pause extends it rather than start another,
/// as the pacer does.
fn pauses(push_backs: &[(f64, u16, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &(t, _, pause) in push_backs.iter().filter(|p| p.2 > 0.0) {
        match out.last_mut() {
            Some(last) if t < last.1 => last.1 = last.1.max(t + pause),
            _ => out.push((t, t + pause)),
        }
    }
    out
}

// -------------------------------------------------------- hookpool listen

/// A `hookpool listen --workers 2 --queue 64` on a free port.
fn listen(process_ms: u64) -> Result<(Service, String), String> {
    let mut cmd = Command::new(HOOKPOOL);
    cmd.env_remove("HOOKPOOL_SECRETS")
        .env("RUST_LOG", "off")
        .args([
            "listen",
            "--addr",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--queue",
            "64",
        ])
        .args(["--process-ms", &process_ms.to_string()]);
    let service = Service::start(cmd, Duration::from_secs(10))
        .map_err(|e| format!("hookpool listen: {e}"))?;
    let addr = service
        .first_line
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("hookpool listen said {:?}", service.first_line))?
        .to_owned();
    Ok((service, format!("http://{addr}/hooks")))
}

/// The listen receiver's ceiling with wrk (a fresh one), then a send to a
/// fresh one, with what the receiver counted.
fn listen_run(
    setup: &Setup,
    sender: &Path,
    process_ms: u64,
    round: usize,
) -> Result<Value, String> {
    let nominal = (process_ms > 0).then(|| 2.0 * 1000.0 / process_ms as f64);
    let ceiling = match &setup.wrk {
        Some(wrk) => {
            let (service, url) = listen(process_ms)?;
            let result = wrk.run(&url, CLI_WORKERS, setup.wrk_secs, &setup.scratch);
            drop(service.stop());
            result.and_then(|r| r["ok_per_sec"].as_f64())
        }
        None => None,
    };
    let (service, url) = listen(process_ms)?;
    let mut r = send_to(setup, sender, &url, round)?;
    let seen = service.stop();
    let totals: Value = seen
        .last_line
        .as_deref()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    r["receiver_ceiling_per_s"] = json!(ceiling);
    r["receiver_nominal_per_s"] = json!(nominal);
    r["receiver_capacity_s"] = json!(ceiling.or(nominal).map(|c| setup.n as f64 / c));
    r["receiver_totals"] = totals;
    Ok(r)
}

// ------------------------------------------------------------ the verdict

/// Capacity time: the receiver's own, or the sender's time with no
/// push-back (`floor`, this round's unlimited run) if that is longer.
fn judge(r: &mut Value, floor: Option<f64>) {
    let receiver = r["receiver_capacity_s"].as_f64();
    let capacity = match (receiver, floor) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    r["sender_floor_s"] = json!(floor);
    r["capacity_s"] = json!(capacity);
    if let (Some(c), Some(e)) = (capacity, r["elapsed_s"].as_f64()) {
        r["vs_capacity"] = json!(e / c);
    }
}

fn brief(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let capacity = match r["capacity_s"].as_f64() {
        Some(c) => format!(" (capacity {c:.2} s, {:.2}x)", f("vs_capacity")),
        None => String::new(),
    };
    format!(
        "{:.2} s{capacity}, {} push-backs of {} requests ({:.2}%), {} pauses ({:.2} s), {} dead letters, exit {}, load {:.1}",
        f("elapsed_s"),
        r["push_backs"],
        r["requests"],
        100.0 * f("push_back_share"),
        r["pauses"],
        f("paused_s"),
        r["dead_lettered"],
        r["exit_code"],
        f("load_average"),
    )
}

fn summarize(runs: &BTreeMap<String, Vec<Value>>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, results) in runs {
        let col = |k: &str| -> Vec<f64> { results.iter().filter_map(|r| r[k].as_f64()).collect() };
        let med = |k: &str| json!(loopback::median(&col(k)));
        let ratios = col("vs_capacity");
        let ratio = loopback::median(&ratios);
        let dead: u64 = results
            .iter()
            .filter_map(|r| r["dead_lettered"].as_u64())
            .sum();
        let mut row = json!({
            "rounds": results.len(),
            "elapsed_s": med("elapsed_s"),
            "elapsed_s_per_round": col("elapsed_s"),
            "capacity_s": med("capacity_s"),
            "receiver_ceiling_per_s": med("receiver_ceiling_per_s"),
            "push_back_share": med("push_back_share"),
            "push_backs": med("push_backs"),
            "pauses": med("pauses"),
            "paused_s": med("paused_s"),
            "dead_lettered_total": dead,
            "load_average": col("load_average"),
        });
        if !ratios.is_empty() {
            row["vs_capacity"] = json!(ratio);
            row["vs_capacity_per_round"] = json!(ratios);
            row["goal_met"] = json!(ratio <= GOAL && dead == 0);
        }
        out.insert(name.clone(), row);
    }
    Value::Object(out)
}

fn print_table(summary: &Value) {
    println!(
        "\n{:<21} {:>9} {:>10} {:>10} {:>11} {:>8} {:>7} {:>9} {:>5}  per round (x capacity)",
        "receiver",
        "elapsed s",
        "capacity s",
        "x capacity",
        "push-backs",
        "share %",
        "pauses",
        "paused s",
        "dead"
    );
    let Some(rows) = summary.as_object() else {
        return;
    };
    let names = RECEIVERS
        .iter()
        .flat_map(|name| [name.to_string(), format!("{name} (baseline)")]);
    for name in names {
        let Some(r) = rows.get(&name) else { continue };
        let f = |k: &str, p: usize| r[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.p$}"));
        println!(
            "{:<21} {:>9} {:>10} {:>10} {:>11} {:>8} {:>7} {:>9} {:>5}  {}",
            name,
            f("elapsed_s", 2),
            f("capacity_s", 2),
            f("vs_capacity", 2),
            f("push_backs", 0),
            r["push_back_share"]
                .as_f64()
                .map_or("-".into(), |s| format!("{:.2}", 100.0 * s)),
            f("pauses", 0),
            f("paused_s", 2),
            r["dead_lettered_total"],
            loopback::two_decimals(&r["vs_capacity_per_round"]),
        );
        if let Some(met) = r["goal_met"].as_bool() {
            println!(
                "{:<21} target <= {GOAL}x the capacity time, 0 dead letters: {}",
                "",
                if met { "met" } else { "MISSED" }
            );
        }
    }
}

// ------------------------------------------------------------------ trace

/// One run through the library with the CLI's settings (at most queue +
/// workers webhooks unfinished, as `hookpool send` reads), sampling the
/// endpoint's pace every 5 ms. Keeps a sample where the in-flight limit,
/// the rate (to 100/s), a pause or the push-back count changed, and one
/// every 250 ms besides.
fn trace_pace(name: &str, url: &str, n: usize) -> Value {
    let hooks = Dispatcher::builder()
        .name("send")
        .workers(CLI_WORKERS)
        .queue_capacity(CLI_QUEUE)
        .retry(
            RetryPolicy::exponential(Duration::from_millis(500))
                .max_attempts(5)
                .max_elapsed(Some(Duration::from_secs(60))),
        )
        .breaker(BreakerConfig::default())
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("dispatcher");
    let done = Arc::new(AtomicBool::new(false));
    let (handle, stop) = (hooks.handle(), Arc::clone(&done));
    let started = Instant::now();
    let sampler = thread::Builder::new()
        .name("pace-sampler".into())
        .spawn(move || {
            let mut samples = Vec::new();
            let (mut last, mut last_at) = (Value::Null, Duration::ZERO);
            while !stop.load(Ordering::Acquire) {
                let s = handle.stats();
                let t = started.elapsed();
                let e = s.endpoints.first();
                // What changes the pace; in-flight counts and the rate's
                // slow growth would make a sample every 5 ms.
                let key = json!({
                    "limit": e.and_then(|e| e.in_flight_limit),
                    "rate": e.and_then(|e| e.rate_limit).map(|r| (r / 100.0).round()),
                    "paused": e.is_some_and(|e| !e.paused_for.is_zero()),
                    "push_backs": e.map(|e| e.push_backs),
                });
                if key != last || t - last_at >= Duration::from_millis(250) {
                    samples.push(json!({
                        "t_s": round_ms(t.as_secs_f64()),
                        "delivered": s.delivered,
                        "parked": s.parked,
                        "in_flight": e.map(|e| e.in_flight),
                        "in_flight_limit": e.and_then(|e| e.in_flight_limit),
                        "rate": e.and_then(|e| e.rate_limit).map(f64::round),
                        "paused_for_ms": e.map(|e| e.paused_for.as_millis() as u64),
                        "push_backs": e.map(|e| e.push_backs),
                    }));
                    (last, last_at) = (key, t);
                }
                thread::sleep(Duration::from_millis(5));
            }
            samples
        })
        .expect("sampler thread");
    let mut sent = 0;
    let deadline = Instant::now() + SEND_LIMIT;
    while sent < n && Instant::now() < deadline {
        if hooks.stats().in_progress() >= (CLI_QUEUE + CLI_WORKERS) as u64 {
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        let body = format!(r#"{{"type":"entry.created","data":{{"entry_id":{sent}}}}}"#);
        let hook = Webhook::from_json(url, &body).expect("webhook");
        if hooks.send_timeout(hook, Duration::from_millis(50)).is_ok() {
            sent += 1;
        }
    }
    while hooks.stats().in_progress() > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Release);
    let samples = sampler.join().unwrap_or_default();
    let report = hooks.shutdown_timeout(Duration::from_secs(5));
    for s in &samples {
        println!("trace {name} {s}");
    }
    println!(
        "trace {name}: {} delivered, {} dead-lettered, {} push-backs in {elapsed:.2} s",
        report.stats.delivered, report.stats.dead_lettered, report.stats.push_backs
    );
    json!({
        "receiver": name,
        "n": n,
        "elapsed_s": elapsed,
        "delivered": report.stats.delivered,
        "dead_lettered": report.stats.dead_lettered,
        "push_backs": report.stats.push_backs,
        "samples": samples,
    })
}
