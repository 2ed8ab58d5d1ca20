//! Delivery benchmark: N webhooks to a receiver on 127.0.0.1, by hookpool's
//! `Dispatcher`, by tokio + reqwest at the same concurrency, and by a thread
//! per webhook; the receiver's ceiling is measured with `wrk`. With nginx,
//! everything runs twice: over HTTP, then over HTTPS (a certificate from a
//! CA made for the run, which every client is told to trust; rustls with
//! ring in every Rust client).
//!
//! ```sh
//! cargo bench --bench delivery
//! ```
//!
//! The receiver is nginx (`return 204;`, one worker process) when `nginx` is
//! on PATH, else an in-process std server. Each variant runs in its own
//! process (this binary re-executed with `--child`, or the tokio crate in
//! `benches/async-variant/`, built here with `cargo build --release`), which
//! prints one `RESULT {json}` line: throughput, latency percentiles from raw
//! samples, CPU time and peak RSS (`VmHWM`). Variants and `wrk` take turns for
//! several rounds, so drift on the machine hits them alike; the medians and
//! their ratios are printed and written to
//! `target/bench-results/delivery.json` for `docs/plot_benchmarks.py`.
//!
//! Knobs (environment): `HOOKPOOL_BENCH_N` (20000), `HOOKPOOL_BENCH_CONCURRENCY`
//! (`16,64`), `HOOKPOOL_BENCH_ROUNDS` (5), `HOOKPOOL_BENCH_RATE` (paced
//! latency phase, webhooks/s, 4000), `HOOKPOOL_BENCH_PACED` (webhooks in that
//! phase, 4000), `HOOKPOOL_BENCH_WRK_SECS` (3), `HOOKPOOL_BENCH_VARIANTS`
//! (comma-separated subset), `HOOKPOOL_BENCH_SCHEMES` (`http,https`),
//! `HOOKPOOL_BENCH_RECEIVER=fallback` (HTTP only),
//! `HOOKPOOL_BENCH_BASELINE` (see [`BASELINE`]).
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hookpool::TlsConfig;
use serde_json::{Value, json};

use loopback::measure::{self, ChildArgs, Tracker};
use loopback::wrk::Wrk;
use loopback::{BODY, Receiver, env_or};
use loopback::{drive, harness};

const VARIANTS: [&str; 4] = [
    "hookpool",
    "tokio-mpsc",
    "tokio-semaphore",
    "thread-per-job",
];

/// Another build of this benchmark (`HOOKPOOL_BENCH_BASELINE=<its binary>`),
/// run as one more variant: the library before a change, side by side.
const BASELINE: &str = "hookpool-baseline";

fn main() {
    harness::bench_main(
        "delivery",
        "cargo bench --bench delivery",
        |args| {
            let child = ChildArgs::parse(args);
            match child.variant.as_str() {
                "hookpool" => run_hookpool(&child),
                "thread-per-job" => run_thread_per_job(&child),
                other => panic!("unknown variant {other}"),
            }
        },
        orchestrate,
    );
}

// ---------------------------------------------------------------- children

/// Waits (bounded) until `count` webhooks have finished.
fn wait_for(t: &Tracker, count: usize) {
    assert!(
        drive::wait_finished(t, count, Duration::from_secs(120)),
        "webhooks did not finish within 120 s"
    );
}

/// Warm-up, the throughput phase (as fast as the bounded intake allows), and
/// the paced latency phase; `submit(i)` hands webhook `i` over and stamps
/// its submission time right before the handover.
fn run_phases(a: &ChildArgs, t: &Tracker, mut submit: impl FnMut(usize)) -> Value {
    for i in 0..a.warmup {
        submit(i);
    }
    wait_for(t, a.warmup);

    let cpu0 = measure::cpu_time_ms();
    let t0 = Instant::now();
    for i in a.warmup..a.warmup + a.n {
        submit(i);
    }
    wait_for(t, a.warmup + a.n);
    let secs = t0.elapsed().as_secs_f64();
    let cpu_ms = measure::cpu_time_ms() - cpu0;
    let lat = t.latencies_ms(a.warmup..a.warmup + a.n);

    // Paced phase: every millisecond, submit what is due by then (the tokio
    // variant does the same; its timer has millisecond resolution).
    let start = a.warmup + a.n;
    let p0 = Instant::now();
    let limit = Duration::from_secs_f64(a.paced as f64 / a.rate) + Duration::from_secs(120);
    let mut next = 0;
    while next < a.paced {
        assert!(p0.elapsed() < limit, "the paced phase overran {limit:?}");
        let due = (p0.elapsed().as_secs_f64() * a.rate) as usize + 1;
        while next < a.paced.min(due) {
            submit(start + next);
            next += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    wait_for(t, start + a.paced);
    let paced = t.latencies_ms(start..start + a.paced);

    json!({
        "variant": a.variant,
        "concurrency": a.concurrency,
        "n": a.n,
        "failed": t.failed_count(),
        "secs": secs,
        "per_sec": a.n as f64 / secs,
        "p50_ms": measure::quantile(&lat, 0.50),
        "p99_ms": measure::quantile(&lat, 0.99),
        "cpu_ms": cpu_ms,
        "cpu_us_per_webhook": cpu_ms * 1000.0 / a.n as f64,
        "paced_rate": a.rate,
        "paced_n": a.paced,
        "paced_p50_ms": measure::quantile(&paced, 0.50),
        "paced_p99_ms": measure::quantile(&paced, 0.99),
    })
}

fn finish(mut result: Value) -> Value {
    result["peak_rss_kib"] = json!(measure::peak_rss_kib());
    result
}

fn run_hookpool(a: &ChildArgs) -> Value {
    let total = a.warmup + a.n + a.paced;
    let tracker = Arc::new(Tracker::new(total));
    let mut tls = TlsConfig::new();
    if let Some(ca) = &a.cacert {
        tls = tls.add_root_certificates_file(ca).expect("--cacert");
    }
    let hooks = drive::tracked(drive::builder(a.concurrency).tls(tls), &tracker)
        .build()
        .expect("dispatcher");
    let result = run_phases(a, &tracker, |i| {
        let hook = drive::webhook(&a.url, i);
        tracker.submitted(i);
        if hooks.send_timeout(hook, Duration::from_secs(60)).is_err() {
            tracker.finished(i, false);
        }
    });
    let _ = hooks.shutdown();
    finish(result)
}

/// A counting semaphore: at most `n` webhooks in flight.
struct Permits {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Permits {
    /// Waits for a permit; every holder ends within the request timeout, so
    /// 120 s without one is a bug.
    fn acquire(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut free = self.free.lock().unwrap();
        while *free == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no permit came back within 120 s");
            free = self.cv.wait_timeout(free, left).unwrap().0;
        }
        *free -= 1;
    }

    fn release(&self) {
        *self.free.lock().unwrap() += 1;
        self.cv.notify_one();
    }
}

fn run_thread_per_job(a: &ChildArgs) -> Value {
    let total = a.warmup + a.n + a.paced;
    let tracker = Arc::new(Tracker::new(total));
    // The same agent settings as the dispatcher's sender.
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &a.cacert {
        let pem = std::fs::read(ca).expect("--cacert");
        let cert = ureq::tls::Certificate::from_pem(&pem).expect("ca pem");
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(Duration::from_secs(15)))
        .max_redirects(0)
        .http_status_as_error(false)
        .max_idle_connections_per_host(a.concurrency.max(3))
        .max_idle_connections(a.concurrency.max(100))
        .build()
        .into();
    let permits = Arc::new(Permits {
        free: Mutex::new(a.concurrency),
        cv: Condvar::new(),
    });
    let mut threads: Vec<thread::JoinHandle<()>> = Vec::with_capacity(2 * a.concurrency);
    let result = run_phases(a, &tracker, |i| {
        let (agent, permits, tracker, url) = (
            agent.clone(),
            Arc::clone(&permits),
            Arc::clone(&tracker),
            a.url.clone(),
        );
        tracker.submitted(i);
        permits.acquire();
        // Join the threads that have ended as we go; at most about
        // `concurrency` handles are held.
        loopback::join_finished(&mut threads);
        let spawned = thread::Builder::new().spawn(move || {
            let ok = post(&agent, &url, i);
            tracker.finished(i, ok);
            permits.release();
        });
        match spawned {
            Ok(h) => threads.push(h),
            Err(e) => panic!("cannot spawn: {e}"),
        }
    });
    // Every thread has reported; each is at most a few instructions from
    // its end.
    for h in threads {
        let _ = h.join();
    }
    finish(result)
}

/// One POST with the headers the dispatcher sends (unsigned), body read to
/// the end so the connection goes back to the pool.
fn post(agent: &ureq::Agent, url: &str, i: usize) -> bool {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sent = agent
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "thread-per-job")
        .header("webhook-id", format!("b{i}"))
        .header("webhook-timestamp", timestamp.to_string())
        .send(BODY);
    match sent {
        Ok(mut response) => {
            let _ = response.body_mut().read_to_vec();
            response.status().is_success()
        }
        Err(_) => false,
    }
}

// ------------------------------------------------------------ orchestrator

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The longest the tokio crate's build may take (the first one downloads
/// and compiles about 60 crates).
const ASYNC_BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The longest one child (a variant's whole run) may take before it is
/// killed: warm-up, N webhooks and the paced phase each wait at most 120 s.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

/// Builds the tokio + reqwest variant; `None` (with a note) if it cannot be
/// built, e.g. offline without its crates in the cache.
fn build_async_variant() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/async-variant/Cargo.toml");
    let target = target_dir().join("bench-async");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "building the tokio + reqwest variant ({})",
        manifest.display()
    );
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--quiet",
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(&target);
    match loopback::run_bounded(cmd, ASYNC_BUILD_LIMIT) {
        Ok((s, _)) if s.success() => Some(target.join("release/hookpool-bench-async")),
        Ok((s, _)) => {
            eprintln!("the tokio variant did not build ({s}); it is reported as unavailable");
            None
        }
        Err(e) => {
            eprintln!("cannot build the tokio variant ({e}); it is reported as unavailable");
            None
        }
    }
}

fn orchestrate() -> Result<(), String> {
    let n: usize = env_or("HOOKPOOL_BENCH_N", 20_000);
    let rounds: usize = env_or("HOOKPOOL_BENCH_ROUNDS", 5);
    let rate: f64 = env_or("HOOKPOOL_BENCH_RATE", 4000.0);
    let paced: usize = env_or("HOOKPOOL_BENCH_PACED", 4000);
    let wrk_secs: u64 = env_or("HOOKPOOL_BENCH_WRK_SECS", 3);
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("HOOKPOOL_BENCH_RATE must be above 0, not {rate}"));
    }
    let concurrencies: Vec<usize> = std::env::var("HOOKPOOL_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let wanted: Vec<String> = std::env::var("HOOKPOOL_BENCH_VARIANTS")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_else(|_| VARIANTS.iter().map(|s| s.to_string()).collect());
    let wants = |v: &str| wanted.iter().any(|w| w == v);

    let async_bin = if wants("tokio-mpsc") || wants("tokio-semaphore") {
        build_async_variant()
    } else {
        None
    };
    let receiver = Receiver::start().map_err(|e| format!("cannot start a receiver: {e}"))?;
    let wanted_schemes =
        std::env::var("HOOKPOOL_BENCH_SCHEMES").unwrap_or_else(|_| "http,https".into());
    let mut schemes: Vec<(&str, String, Option<String>)> = Vec::new();
    if wanted_schemes.split(',').any(|s| s.trim() == "http") {
        schemes.push(("http", receiver.url(), None));
    }
    if wanted_schemes.split(',').any(|s| s.trim() == "https") {
        match (receiver.https_url(), &receiver.https) {
            (Some(url), Some(https)) => {
                schemes.push(("https", url, Some(https.ca_file.display().to_string())))
            }
            _ => eprintln!("https: needs nginx; not measured"),
        }
    }
    let wrk = Wrk::find();
    let scratch = std::env::temp_dir().join(format!("hookpool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let baseline = std::env::var_os("HOOKPOOL_BENCH_BASELINE").map(PathBuf::from);
    let urls: Vec<&str> = schemes.iter().map(|(_, url, _)| url.as_str()).collect();
    eprintln!(
        "receiver: {} ({}) at {urls:?}; wrk: {}; N = {n}, concurrency {concurrencies:?}, {rounds} rounds",
        receiver.kind,
        receiver.version,
        wrk.as_ref().map_or("not installed", |w| w.version.as_str())
    );

    // runs[scheme][concurrency][variant] = one result per round
    let mut all_runs: BTreeMap<&str, BTreeMap<usize, BTreeMap<String, Vec<Value>>>> =
        BTreeMap::new();
    let mut unavailable: Vec<String> = Vec::new();
    for (scheme, url, cacert) in &schemes {
        let runs = all_runs.entry(scheme).or_default();
        for &w in &concurrencies {
            for round in 0..rounds {
                // Rotate the order, so no variant always runs first or last.
                let mut order: Vec<&str> = VARIANTS.to_vec();
                if baseline.is_some() {
                    order.push(BASELINE);
                }
                order.push("wrk");
                let turn = round % order.len();
                order.rotate_left(turn);
                for variant in order {
                    if variant != "wrk" && variant != BASELINE && !wants(variant) {
                        continue;
                    }
                    let result = if variant == "wrk" {
                        match &wrk {
                            Some(wrk) => wrk.run(url, w, wrk_secs, &scratch),
                            None => None,
                        }
                    } else {
                        let args = ChildArgs {
                            variant: variant.to_owned(),
                            url: url.to_string(),
                            n,
                            concurrency: w,
                            warmup: 500,
                            paced,
                            rate,
                            cacert: cacert.clone(),
                        };
                        let cmd = if variant.starts_with("tokio") {
                            let Some(bin) = &async_bin else {
                                if !unavailable.iter().any(|u| u == variant) {
                                    unavailable.push(variant.to_owned());
                                }
                                continue;
                            };
                            let mut cmd = Command::new(bin);
                            cmd.args(args.to_flags());
                            cmd
                        } else if variant == BASELINE {
                            let mut args = args;
                            args.variant = "hookpool".into();
                            let mut cmd = Command::new(baseline.as_ref().expect("set"));
                            cmd.arg("--child").args(args.to_flags());
                            cmd
                        } else {
                            let mut cmd = Command::new(&me);
                            cmd.arg("--child").args(args.to_flags());
                            cmd
                        };
                        match loopback::run_child(cmd, CHILD_LIMIT) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                eprintln!("{variant}: {e}");
                                None
                            }
                        }
                    };
                    if let Some(mut r) = result {
                        r["variant"] = json!(variant);
                        eprintln!(
                            "  {scheme} W={w} round {} {variant}: {}",
                            round + 1,
                            brief(&r)
                        );
                        runs.entry(w)
                            .or_default()
                            .entry(variant.to_owned())
                            .or_default()
                            .push(r);
                    }
                }
            }
        }
    }
    let receiver_info = json!({ "kind": receiver.kind, "version": receiver.version });
    drop(receiver);
    let _ = std::fs::remove_dir_all(&scratch);

    let runs = all_runs.remove("http").unwrap_or_default();
    let summary = summarize(&runs);
    print_table("http", &summary);
    // HTTPS beside HTTP, under its own key: the plot reads `summary`.
    let https = all_runs.remove("https").map(|runs| {
        let summary = summarize(&runs);
        print_table("https", &summary);
        json!({ "summary": summary, "runs": runs })
    });
    for u in &unavailable {
        println!("{u}: unavailable (its crate did not build)");
    }
    let out = json!({
        "benchmark": "delivery",
        "machine": loopback::machine(),
        "receiver": receiver_info,
        "wrk": wrk.as_ref().map(|w| w.version.clone()),
        "n": n,
        "rounds": rounds,
        "paced_rate": rate,
        "paced_n": paced,
        "unavailable": unavailable,
        "summary": summary,
        "runs": runs,
        "https": https,
    });
    let path = harness::write_results("delivery", &out)?;
    println!("\nwritten: {}", path.display());
    Ok(())
}

fn brief(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    if r["cpu_us_per_webhook"].is_null() {
        return format!(
            "{:.0}/s p50 {:.2} ms p99 {:.2} ms",
            f("per_sec"),
            f("p50_ms"),
            f("p99_ms")
        );
    }
    format!(
        "{:.0}/s p50 {:.2} ms p99 {:.2} ms cpu {:.1} us/webhook rss {} KiB{}",
        f("per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        f("cpu_us_per_webhook"),
        r["peak_rss_kib"].as_u64().unwrap_or(0),
        match r["failed"].as_u64() {
            Some(n) if n > 0 => format!(" FAILED {n}"),
            _ => String::new(),
        }
    )
}

/// Medians per concurrency and variant, with ratios to hookpool, to the best
/// tokio variant and to wrk.
fn summarize(runs: &BTreeMap<usize, BTreeMap<String, Vec<Value>>>) -> Value {
    let keys = [
        "per_sec",
        "p50_ms",
        "p99_ms",
        "cpu_ms",
        "cpu_us_per_webhook",
        "peak_rss_kib",
        "paced_p50_ms",
        "paced_p99_ms",
    ];
    let mut out = serde_json::Map::new();
    for (w, variants) in runs {
        let mut rows = serde_json::Map::new();
        for (variant, results) in variants {
            let mut row = serde_json::Map::new();
            for k in keys {
                let vals: Vec<f64> = results.iter().filter_map(|r| r[k].as_f64()).collect();
                if !vals.is_empty() {
                    row.insert(k.into(), json!(loopback::median(&vals)));
                }
            }
            let per_sec: Vec<f64> = results
                .iter()
                .filter_map(|r| r["per_sec"].as_f64())
                .collect();
            row.insert(
                "per_sec_min".into(),
                json!(per_sec.iter().copied().fold(f64::INFINITY, f64::min)),
            );
            row.insert(
                "per_sec_max".into(),
                json!(per_sec.iter().copied().fold(0.0, f64::max)),
            );
            row.insert("rounds".into(), json!(results.len()));
            rows.insert(variant.clone(), Value::Object(row));
        }
        let rate = |v: &str| rows.get(v).and_then(|r| r["per_sec"].as_f64());
        let hookpool = rate("hookpool");
        let tokio_best = [rate("tokio-mpsc"), rate("tokio-semaphore")]
            .into_iter()
            .flatten()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let wrk = rate("wrk");
        for row in rows.values_mut() {
            let r = row["per_sec"].as_f64().unwrap_or(f64::NAN);
            if let Some(h) = hookpool {
                row["vs_hookpool"] = json!(r / h);
            }
            if let Some(c) = wrk {
                row["vs_wrk"] = json!(r / c);
            }
        }
        // Each round runs every variant once, back to back: the per-round
        // ratio cancels most of the drift between rounds.
        let round_rates = |v: &str| -> Vec<f64> {
            variants
                .get(v)
                .map(|rs| rs.iter().filter_map(|r| r["per_sec"].as_f64()).collect())
                .unwrap_or_default()
        };
        let (hp, tm, ts) = (
            round_rates("hookpool"),
            round_rates("tokio-mpsc"),
            round_rates("tokio-semaphore"),
        );
        let per_round: Vec<f64> = (0..hp.len())
            .filter_map(|i| {
                let best = tm
                    .get(i)
                    .copied()
                    .unwrap_or(0.0)
                    .max(ts.get(i).copied().unwrap_or(0.0));
                (best > 0.0).then(|| hp[i] / best)
            })
            .collect();
        let targets = json!({
            "hookpool_vs_best_tokio_per_round": per_round,
            "hookpool_vs_best_tokio_median_of_rounds": loopback::median(&per_round),
            "hookpool_vs_best_tokio": hookpool.zip(tokio_best).map(|(h, t)| h / t),
            "hookpool_vs_best_tokio_target": 1.0,
            "hookpool_vs_wrk": hookpool.zip(wrk).map(|(h, c)| h / c),
            "hookpool_vs_wrk_target": 0.7,
        });
        out.insert(
            w.to_string(),
            json!({ "variants": Value::Object(rows), "targets": targets }),
        );
    }
    Value::Object(out)
}

fn print_table(scheme: &str, summary: &Value) {
    let Some(levels) = summary.as_object() else {
        return;
    };
    for (w, level) in levels {
        println!("\n{scheme}, concurrency {w} (medians of rounds)");
        println!(
            "{:<16} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}",
            "variant",
            "webhooks/s",
            "vs hp",
            "vs wrk",
            "p50 ms",
            "p99 ms",
            "CPU us/wh",
            "RSS MiB",
            "paced p50",
            "paced p99"
        );
        let Some(rows) = level["variants"].as_object() else {
            continue;
        };
        let mut names: Vec<&String> = rows.keys().collect();
        names.sort_by_key(|n| {
            let rank = VARIANTS.iter().position(|v| v == n);
            (rank.unwrap_or(if *n == BASELINE { 1 } else { 9 }), *n)
        });
        for name in names {
            let r = &rows[name];
            let f = |k: &str| r[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
            println!(
                "{:<16} {:>10.0} {:>7} {:>7} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}",
                name,
                r["per_sec"].as_f64().unwrap_or(f64::NAN),
                f("vs_hookpool"),
                f("vs_wrk"),
                f("p50_ms"),
                f("p99_ms"),
                f("cpu_us_per_webhook"),
                r["peak_rss_kib"]
                    .as_f64()
                    .map_or("-".to_owned(), |k| format!("{:.1}", k / 1024.0)),
                f("paced_p50_ms"),
                f("paced_p99_ms"),
            );
        }
        let t = &level["targets"];
        let verdict = |k: &str, target: f64| match t[k].as_f64() {
            Some(x) => format!(
                "{x:.2} (target >= {target}: {})",
                if x >= target { "met" } else { "MISSED" }
            ),
            None => "not measured".into(),
        };
        println!(
            "hookpool / best tokio: {}",
            verdict("hookpool_vs_best_tokio", 1.0)
        );
        println!(
            "  per round: {}",
            loopback::two_decimals(&t["hookpool_vs_best_tokio_per_round"])
        );
        println!(
            "hookpool / wrk ceiling: {}",
            verdict("hookpool_vs_wrk", 0.7)
        );
    }
}
