//! Isolation benchmark: does one hanging endpoint slow delivery to a healthy
//! one?
//!
//! ```sh
//! cargo bench --bench isolation
//! ```
//!
//! Two runs take turns for several rounds, each with a fresh `Dispatcher`
//! (16 workers, default retry policy and breaker, 1 s request timeout):
//!
//! - **healthy only:** N webhooks to the receiver (nginx `return 204;`, or
//!   the in-process fallback);
//! - **mix:** the same N webhooks, each followed by one to an endpoint that
//!   accepts the connection and never answers. Those go in with `try_send`,
//!   as a request handler would send them: once the hanging endpoint has a
//!   queue's capacity parked, they come back `Full` at once (counted as
//!   `hanging_refused`) instead of blocking the sender.
//!
//! Healthy throughput is N divided by the time from the first submission to
//! the last healthy delivery. The target is mix / healthy-only >= 0.9. The
//! medians, the ratio, and for the mix the longest gap between two healthy
//! deliveries and when the hanging endpoint's breaker opened are printed and
//! written to `target/bench-results/isolation.json`.
//!
//! Knobs: `HOOKPOOL_BENCH_N` (20000), `HOOKPOOL_BENCH_ROUNDS` (5),
//! `HOOKPOOL_BENCH_TIMEOUT_MS` (1000), `HOOKPOOL_BENCH_WORKERS` (16),
//! `HOOKPOOL_BENCH_RECEIVER=fallback`.
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hookpool::{BreakerState, Dispatcher, Webhook};
use serde_json::{Value, json};

use loopback::{BODY, Hanging, Receiver, env_or};

/// Healthy deliveries: how many, when the last one landed, and the longest
/// gap between two of them (nanoseconds since the run's start).
#[derive(Default)]
struct Progress {
    delivered: AtomicUsize,
    last_ns: AtomicU64,
    max_gap_ns: AtomicU64,
    breaker_opened_ns: AtomicU64,
}

fn run(healthy: &str, hanging: Option<&str>, n: usize, workers: usize, timeout: Duration) -> Value {
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let (on_delivered, on_breaker) = (Arc::clone(&progress), Arc::clone(&progress));
    let healthy_url = healthy.to_owned();
    let hooks = Dispatcher::builder()
        .workers(workers)
        .timeout(timeout)
        .on_delivered(move |e| {
            if e.webhook.url() != healthy_url {
                return;
            }
            let now = start.elapsed().as_nanos() as u64;
            let prev = on_delivered.last_ns.swap(now, Ordering::AcqRel);
            on_delivered
                .max_gap_ns
                .fetch_max(now.saturating_sub(prev), Ordering::AcqRel);
            on_delivered.delivered.fetch_add(1, Ordering::Release);
        })
        .on_breaker_change(move |c| {
            if c.to == BreakerState::Open {
                let now = start.elapsed().as_nanos() as u64;
                let _ = on_breaker.breaker_opened_ns.compare_exchange(
                    0,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        })
        .build()
        .expect("dispatcher");

    let mut refused = 0u64;
    for _ in 0..n {
        let hook = Webhook::from_json(healthy, BODY).expect("webhook");
        hooks
            .send_timeout(hook, Duration::from_secs(60))
            .expect("accepted");
        if let Some(url) = hanging {
            // As a request handler would: never wait on a stalled endpoint.
            // Once its parking is full (a queue's capacity), its webhooks
            // come back at once; a real caller would dead-letter them.
            let hook = Webhook::from_json(url, BODY).expect("webhook");
            if let Err(e) = hooks.try_send(hook) {
                assert!(e.is_full(), "{e}");
                refused += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.delivered.load(Ordering::Acquire) < n {
        assert!(
            Instant::now() < deadline,
            "healthy webhooks did not finish within 120 s"
        );
        thread::sleep(Duration::from_micros(200));
    }
    let secs = progress.last_ns.load(Ordering::Acquire) as f64 / 1e9;
    let stats = hooks.stats();
    // The hanging endpoint's webhooks wait for its breaker; give them up.
    let mut report = hooks.shutdown_timeout(Duration::ZERO);
    // Each request in flight ends within the request timeout: wait for it
    // rather than leave its worker thread behind.
    let left = report.wait_running(timeout + Duration::from_secs(5));
    assert_eq!(left, 0, "requests still running after shutdown");
    let opened = progress.breaker_opened_ns.load(Ordering::Acquire);
    json!({
        "run": if hanging.is_some() { "mix" } else { "healthy-only" },
        "n": n,
        "secs": secs,
        "healthy_per_sec": n as f64 / secs,
        "max_gap_ms": progress.max_gap_ns.load(Ordering::Acquire) as f64 / 1e6,
        "breaker_opened_ms": (opened > 0).then(|| opened as f64 / 1e6),
        "deferred_by_breaker": stats.deferred_by_breaker,
        "retried": stats.retried,
        "dead_lettered_at_shutdown": report.dead_letters.len(),
        "hanging_refused": refused,
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` / `--all-targets` runs bench targets without
        // `--bench`: a long run in a debug build helps nobody there.
        eprintln!("isolation: skipped; run it with `cargo bench --bench isolation`");
        return;
    }
    let n: usize = env_or("HOOKPOOL_BENCH_N", 20_000);
    let rounds: usize = env_or("HOOKPOOL_BENCH_ROUNDS", 5);
    let workers: usize = env_or("HOOKPOOL_BENCH_WORKERS", 16);
    let timeout = Duration::from_millis(env_or("HOOKPOOL_BENCH_TIMEOUT_MS", 1000));
    let receiver = match Receiver::start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a receiver: {e}");
            std::process::exit(1);
        }
    };
    let hanging = Hanging::start().expect("hanging endpoint");
    let (healthy_url, hanging_url) = (receiver.url(), hanging.url());
    eprintln!(
        "receiver: {} ({}); hanging endpoint {hanging_url}; N = {n}, {workers} workers, timeout {timeout:?}, {rounds} rounds",
        receiver.kind, receiver.version
    );
    // Warm-up: connections, page faults, the CPU's frequency.
    let _ = run(&healthy_url, None, 2000, workers, timeout);

    let (mut alone, mut mixed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which run goes first.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_hanging in order {
            let hang = with_hanging.then_some(hanging_url.as_str());
            let r = run(&healthy_url, hang, n, workers, timeout);
            eprintln!(
                "  round {} {}: {:.0} healthy/s, longest gap {:.1} ms, breaker opened at {} ms",
                round + 1,
                r["run"].as_str().unwrap_or("?"),
                r["healthy_per_sec"].as_f64().unwrap_or(f64::NAN),
                r["max_gap_ms"].as_f64().unwrap_or(f64::NAN),
                r["breaker_opened_ms"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.0}")),
            );
            if with_hanging {
                mixed.push(r)
            } else {
                alone.push(r)
            }
        }
    }
    let med = |runs: &[Value], k: &str| {
        loopback::median(
            &runs
                .iter()
                .filter_map(|r| r[k].as_f64())
                .collect::<Vec<_>>(),
        )
    };
    let (a, m) = (
        med(&alone, "healthy_per_sec"),
        med(&mixed, "healthy_per_sec"),
    );
    let ratio = m / a;
    println!("\nisolation (medians of {rounds} rounds, {workers} workers, timeout {timeout:?})");
    println!("{:<14} {:>12} {:>14}", "run", "healthy/s", "longest gap ms");
    println!(
        "{:<14} {:>12.0} {:>14.1}",
        "healthy only",
        a,
        med(&alone, "max_gap_ms")
    );
    println!(
        "{:<14} {:>12.0} {:>14.1}",
        "mix",
        m,
        med(&mixed, "max_gap_ms")
    );
    println!(
        "mix / healthy only: {ratio:.2} (target >= 0.9: {})",
        if ratio >= 0.9 { "met" } else { "MISSED" }
    );
    let out = json!({
        "benchmark": "isolation",
        "machine": loopback::machine(),
        "receiver": { "kind": receiver.kind, "version": receiver.version },
        "n": n,
        "workers": workers,
        "timeout_ms": timeout.as_millis() as u64,
        "rounds": rounds,
        "summary": {
            "healthy_only_per_sec": a,
            "mix_per_sec": m,
            "ratio": ratio,
            "target": 0.9,
            "mix_max_gap_ms": med(&mixed, "max_gap_ms"),
            "mix_breaker_opened_ms": med(&mixed, "breaker_opened_ms"),
        },
        "runs": { "healthy-only": alone, "mix": mixed },
    });
    drop(hanging);
    drop(receiver);
    let dir = loopback::results_dir();
    std::fs::create_dir_all(&dir).expect("results dir");
    let path = dir.join("isolation.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write");
    println!("written: {}", path.display());
}
