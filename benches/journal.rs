//! Journal benchmark (issue 15): the dispatcher with its SQLite journal off
//! and on, side by side in one run.
//!
//! ```sh
//! cargo bench --bench journal
//! ```
//!
//! Each variant runs in a process of its own (this binary re-executed with
//! `--child`), on a fresh journal file in one directory of the local disk
//! (`$TMPDIR`, or `HOOKPOOL_BENCH_DIR`), and prints one `RESULT {json}`
//! line. Two phases, each a turn per variant per round, in an order rotated
//! from round to round:
//!
//! - **accept:** N webhooks from S threads at once (16), as a server's
//!   request handlers would send them, into a queue that holds them all,
//!   while the workers are held: each worker's first delivery blocks in
//!   `on_delivered` until the phase is over, so no delivery competes with
//!   acceptance. Webhooks/s, and the time each call took (for
//!   `send_durable`, the time to commit). Variants: `off` (no journal,
//!   `send_timeout`), `full` and `normal` (`send_durable`, synchronous
//!   FULL and NORMAL), `full-try` (`try_send`, which returns before the
//!   commit: the window until the commit is the journal's commit latency),
//!   `full-64` (`full` from 64 threads: a commit can only take as many
//!   rows as there are callers waiting).
//!   Then the journal's size holding N, the workers let go, the time to
//!   deliver the N from the backlog, and the size again after they are
//!   delivered, and after shutdown (a checkpoint).
//! - **deliver:** N webhooks (after 500 to warm up) from the same S threads
//!   to nginx (`return 204;`), W workers (16) and a queue of W, no retries:
//!   webhooks/s, submission to delivery p50/p99, CPU per webhook, file
//!   sizes. Variants: `off` (`send_timeout`), `full` and `normal`
//!   (`send_durable`), `full-async` (`send_timeout` with a FULL journal:
//!   the row is written behind the caller's back), `full-64` (`full`
//!   from 64 threads). `send_timeout` with a
//!   journal answers `Full` at once while the journal's writer has a
//!   queue's worth (at least 1,024) of rows waiting, timeout or not; the
//!   benchmark counts that (`refused_full_retried`) and sends again after
//!   100 µs.
//!
//! Each round also measures, in this process and on the same disk, what the
//! engine itself does: one thread inserting journal-like rows into a WAL
//! file with synchronous FULL, committing every 1, 16 and 100 rows, and the
//! latency of a 4 KiB overwrite plus `fdatasync`. Medians of the rounds
//! and the per-round ratios to `off` are printed and written to
//! `target/bench-results/journal.json`, with the load average.
//!
//! Knobs: `HOOKPOOL_BENCH_N` (100000), `HOOKPOOL_BENCH_ROUNDS` (5),
//! `HOOKPOOL_BENCH_SUBMITTERS` (16), `HOOKPOOL_BENCH_WORKERS` (16),
//! `HOOKPOOL_BENCH_DIR`, `HOOKPOOL_BENCH_PHASES` (`accept,deliver,engine`),
//! `HOOKPOOL_BENCH_VARIANTS` (a subset of the variants' names),
//! `HOOKPOOL_BENCH_RECEIVER=fallback`.
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hookpool::{Dispatcher, Journal, Synchronous, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use loopback::Receiver;
use loopback::drive::{self, Scale, WAIT};
use loopback::harness::{self, CHILD_LIMIT, Col};
use loopback::measure::{self, Tracker};

/// (variant, journal, how it submits, submitting threads if not S) of the
/// accept phase.
const ACCEPT: [(&str, &str, &str, usize); 5] = [
    ("off", "off", "timeout", 0),
    ("full", "full", "durable", 0),
    ("normal", "normal", "durable", 0),
    ("full-try", "full", "try", 0),
    ("full-64", "full", "durable", 64),
];

/// The same for the deliver phase.
const DELIVER: [(&str, &str, &str, usize); 5] = [
    ("off", "off", "timeout", 0),
    ("full", "full", "durable", 0),
    ("normal", "normal", "durable", 0),
    ("full-async", "full", "timeout", 0),
    ("full-64", "full", "durable", 64),
];

/// Rows per commit in the engine's own measurement.
const ENGINE_BATCHES: [usize; 3] = [1, 16, 100];

/// What a child is told to do (JSON after `--child`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    /// `accept` or `deliver`.
    phase: String,
    /// `off`, `full` or `normal`.
    journal: String,
    /// `durable` (`send_durable`), `timeout` (`send_timeout`) or `try`
    /// (`try_send`, again on `Full`).
    submit: String,
    warmup: usize,
    url: String,
    path: PathBuf,
    scale: Scale,
}

fn main() {
    harness::bench_main(
        "journal",
        "cargo bench --bench journal",
        |args| {
            let run: Run = harness::child_args(args);
            match run.phase.as_str() {
                "accept" => accept(&run),
                "deliver" => deliver(&run),
                other => panic!("unknown phase {other}"),
            }
        },
        orchestrate,
    );
}

// ---------------------------------------------------------------- children

fn build(run: &Run, builder: hookpool::DispatcherBuilder) -> Dispatcher {
    let builder = match run.journal.as_str() {
        "off" => builder,
        mode => {
            let sync = if mode == "normal" {
                Synchronous::Normal
            } else {
                Synchronous::Full
            };
            builder.journal(Journal::new(&run.path).synchronous(sync))
        }
    };
    builder.build().expect("dispatcher")
}

/// How often `send_timeout` answered `Full` before its timeout.
static REFUSED_FULL: AtomicUsize = AtomicUsize::new(0);

/// Hands webhook `w` over as `run.submit` says; whether it was taken.
fn submit(hooks: &Dispatcher, run: &Run, w: Webhook) -> bool {
    match run.submit.as_str() {
        "durable" => hooks.send_durable(w, WAIT).is_ok(),
        "timeout" => {
            // With a journal, `send_timeout` answers `Full` at once, without
            // waiting, while the journal's writer holds its fill of rows
            // not yet committed (`DispatchHandle::journaled`): count it, and
            // try again shortly, as a caller that must not drop it would.
            let deadline = Instant::now() + WAIT;
            let mut w = w;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match hooks.send_timeout(w, left) {
                    Ok(()) => return true,
                    Err(e) if e.is_full() && !left.is_zero() => {
                        REFUSED_FULL.fetch_add(1, Ordering::Relaxed);
                        w = e.into_inner();
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(_) => return false,
                }
            }
        }
        "try" => drive::try_until_taken(hooks, w, WAIT),
        other => panic!("unknown submit {other}"),
    }
}

/// The journal file and its WAL, in bytes.
fn sizes(path: &Path) -> Value {
    let len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let (db, wal) = (len(path), len(Path::new(&wal)));
    json!({ "db": db, "wal": wal, "total": db + wal })
}

/// Holds every worker that reaches it until opened (bounded by [`WAIT`]).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let deadline = Instant::now() + WAIT;
        let mut open = self.open.lock().unwrap();
        while !*open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            open = self.cv.wait_timeout(open, left).unwrap().0;
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn store_numbers(hooks: &Dispatcher, n: usize) -> Value {
    let Some(store) = hooks.stats().store else {
        return json!({});
    };
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    json!({
        "commits": store.commits,
        "rows_per_commit": n as f64 / store.commits.max(1) as f64,
        "commit_latency_p50_ms": ms(store.commit_latency.p50()),
        "commit_latency_p99_ms": ms(store.commit_latency.p99()),
        "store_errors": store.errors,
    })
}

fn accept(run: &Run) -> Value {
    let tracker = Arc::new(Tracker::new(run.scale.n));
    let gate = Arc::new(Gate::default());
    let held = Arc::clone(&gate);
    let builder = drive::builder(run.scale.workers).queue_capacity(run.scale.n + run.scale.workers);
    let hooks = build(
        run,
        drive::tracked_with(builder, &tracker, move || held.wait()),
    );
    let cpu0 = measure::cpu_time_ms();
    let t0 = Instant::now();
    let taken = drive::parallel(0..run.scale.n, run.scale.submitters, |i| {
        submit(&hooks, run, drive::webhook(&run.url, i))
    });
    let cpu_ms = measure::cpu_time_ms() - cpu0;
    // With try_send the last rows are still on their way to the disk.
    drive::wait_written(&hooks, WAIT);
    let committed_secs = t0.elapsed().as_secs_f64();
    let store = store_numbers(&hooks, run.scale.n);
    let holding = sizes(&run.path);

    gate.open();
    let t1 = Instant::now();
    let all = drive::wait_finished(&tracker, run.scale.n - taken.refused, WAIT);
    let drain_secs = t1.elapsed().as_secs_f64();
    drive::wait_written(&hooks, WAIT);
    let delivered = sizes(&run.path);
    let report = hooks.shutdown();
    let closed = sizes(&run.path);
    json!({
        "per_sec": run.scale.n as f64 / taken.secs,
        "secs": taken.secs,
        "p50_ms": measure::quantile(&taken.call_ms, 0.50),
        "p99_ms": measure::quantile(&taken.call_ms, 0.99),
        "p999_ms": measure::quantile(&taken.call_ms, 0.999),
        "max_ms": taken.call_ms.last().copied(),
        "refused": taken.refused,
        "refused_full_retried": REFUSED_FULL.load(Ordering::Relaxed),
        "committed_per_sec": run.scale.n as f64 / committed_secs,
        "cpu_us_per_webhook": cpu_ms * 1000.0 / run.scale.n as f64,
        "store": store,
        "drain_per_sec": if all { run.scale.n as f64 / drain_secs } else { f64::NAN },
        "delivered": report.stats.delivered,
        "failed": tracker.failed_count(),
        "kept": report.kept,
        "size_holding": holding,
        "size_delivered": delivered,
        "size_closed": closed,
    })
}

fn deliver(run: &Run) -> Value {
    let total = run.warmup + run.scale.n;
    let tracker = Arc::new(Tracker::new(total));
    let hooks = build(
        run,
        drive::tracked(drive::builder(run.scale.workers), &tracker),
    );
    let send = |i: usize| {
        let w = drive::webhook(&run.url, i);
        tracker.submitted(i);
        let ok = submit(&hooks, run, w);
        if !ok {
            tracker.finished(i, false);
        }
        ok
    };
    drive::parallel(0..run.warmup, run.scale.submitters, send);
    assert!(drive::wait_finished(&tracker, run.warmup, WAIT), "warm-up");

    let cpu0 = measure::cpu_time_ms();
    let t0 = Instant::now();
    let taken = drive::parallel(run.warmup..total, run.scale.submitters, send);
    assert!(
        drive::wait_finished(&tracker, total, WAIT),
        "webhooks did not finish within {WAIT:?}"
    );
    let secs = t0.elapsed().as_secs_f64();
    let cpu_ms = measure::cpu_time_ms() - cpu0;
    let lat = tracker.latencies_ms(run.warmup..total);
    let store = store_numbers(&hooks, total);
    drive::wait_written(&hooks, WAIT);
    let delivered = sizes(&run.path);
    let report = hooks.shutdown();
    let closed = sizes(&run.path);
    json!({
        "per_sec": run.scale.n as f64 / secs,
        "secs": secs,
        "p50_ms": measure::quantile(&lat, 0.50),
        "p99_ms": measure::quantile(&lat, 0.99),
        "call_p50_ms": measure::quantile(&taken.call_ms, 0.50),
        "call_p99_ms": measure::quantile(&taken.call_ms, 0.99),
        "cpu_us_per_webhook": cpu_ms * 1000.0 / run.scale.n as f64,
        "failed": tracker.failed_count(),
        "refused": taken.refused,
        "refused_full_retried": REFUSED_FULL.load(Ordering::Relaxed),
        "delivered": report.stats.delivered,
        "kept": report.kept,
        "store": store,
        "size_delivered": delivered,
        "size_closed": closed,
        "peak_rss_kib": measure::peak_rss_kib(),
    })
}

// ---------------------------------------------------------- the engine

/// One thread inserting journal-like rows (the benchmark body, an id, a
/// URL) into a fresh WAL file with synchronous FULL, committing every
/// `batch` rows, for `secs`: rows/s and the commit's latency.
fn engine_inserts(dir: &Path, batch: usize, secs: f64) -> rusqlite::Result<Value> {
    let path = dir.join(format!("engine-{batch}.db"));
    remove_journal(&path);
    let mut conn = rusqlite::Connection::open(&path)?;
    let _: String = conn.query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE webhooks (key INTEGER PRIMARY KEY, id TEXT NOT NULL, url TEXT NOT NULL,
             body TEXT NOT NULL, accepted_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);",
    )?;
    let url = "http://127.0.0.1:8080/hook";
    let (mut rows, mut commits) = (0usize, Vec::new());
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        let c0 = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO webhooks (key, id, url, body, accepted_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for _ in 0..batch {
                let id = format!("b{rows}");
                stmt.execute(rusqlite::params![rows as i64, id, url, loopback::BODY, 0])?;
                rows += 1;
            }
        }
        tx.commit()?;
        commits.push(c0.elapsed().as_secs_f64() * 1e3);
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(conn);
    remove_journal(&path);
    commits.sort_by(f64::total_cmp);
    Ok(json!({
        "batch": batch,
        "rows_per_sec": rows as f64 / secs,
        "commits_per_sec": commits.len() as f64 / secs,
        "commit_p50_ms": measure::quantile(&commits, 0.50),
        "commit_p99_ms": measure::quantile(&commits, 0.99),
    }))
}

// ------------------------------------------------------------ orchestrator

fn remove_journal(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

type Runs = BTreeMap<String, BTreeMap<String, Vec<Value>>>;

fn orchestrate() -> Result<(), String> {
    let scale = Scale::from_env(100_000);
    let phases =
        std::env::var("HOOKPOOL_BENCH_PHASES").unwrap_or_else(|_| "accept,deliver,engine".into());
    let wants = |p: &str| phases.split(',').any(|x| x.trim() == p);
    let variants = std::env::var("HOOKPOOL_BENCH_VARIANTS").ok();
    let wants_variant = |v: &str| {
        variants
            .as_deref()
            .is_none_or(|vs| vs.split(',').any(|x| x.trim() == v))
    };
    let dir = std::env::var_os("HOOKPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("hookpool-bench-journal-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let receiver = Receiver::start().map_err(|e| format!("cannot start a receiver: {e}"))?;
    let fs_type = harness::filesystem(&dir);
    eprintln!(
        "journal files in {} ({fs_type}); receiver: {} ({}); {scale}",
        dir.display(),
        receiver.kind,
        receiver.version
    );

    let mut runs: Runs = BTreeMap::new();
    let mut sitting = harness::Sitting::default();
    for round in 0..scale.rounds {
        sitting.round_begins(round + 1);
        for (phase, variants) in [("accept", &ACCEPT[..]), ("deliver", &DELIVER[..])] {
            if !wants(phase) {
                continue;
            }
            let mut order = variants.to_vec();
            order.rotate_left(round % variants.len());
            for (variant, journal, how, threads) in order {
                if !wants_variant(variant) {
                    continue;
                }
                let path = dir.join(format!("{phase}-{variant}.db"));
                remove_journal(&path);
                let run = Run {
                    phase: phase.into(),
                    journal: journal.into(),
                    submit: how.into(),
                    warmup: if phase == "deliver" { 500 } else { 0 },
                    url: receiver.url(),
                    path: path.clone(),
                    scale: Scale {
                        submitters: if threads > 0 {
                            threads
                        } else {
                            scale.submitters
                        },
                        ..scale
                    },
                };
                let result = loopback::run_child(harness::child_command(&run)?, CHILD_LIMIT);
                remove_journal(&path);
                let runs = runs.entry(phase.into()).or_default();
                let label = format!("{phase} ");
                harness::record(runs, &label, variant, round + 1, result, brief);
            }
        }
        if wants("engine") {
            let runs = runs.entry("engine".into()).or_default();
            for batch in ENGINE_BATCHES {
                let result = engine_inserts(&dir, batch, 1.0).map_err(|e| e.to_string());
                let variant = format!("batch-{batch}");
                harness::record(runs, "engine ", &variant, round + 1, result, |r| {
                    format!(
                        "{:.0} rows/s, commit p50 {:.2} ms",
                        r["rows_per_sec"].as_f64().unwrap_or(f64::NAN),
                        r["commit_p50_ms"].as_f64().unwrap_or(f64::NAN)
                    )
                });
            }
            harness::record_fsync(runs, "engine ", &dir, round + 1);
        }
        sitting.round_ends();
    }
    let receiver_info = json!({ "kind": receiver.kind, "version": receiver.version });
    drop(receiver);
    let _ = fs::remove_dir_all(&dir);

    let summary = summarize(&runs);
    print_tables(&summary);
    let out = json!({
        "filesystem": fs_type,
        "receiver": receiver_info,
        "scale": scale,
        "summary": summary,
        "runs": runs,
    });
    sitting.write("journal", out)
}

fn brief(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{:.0}/s p50 {:.3} ms p99 {:.3} ms, {:.1} rows/commit, {:.2} MiB on disk when delivered{}",
        f("per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        r["store"]["rows_per_commit"].as_f64().unwrap_or(f64::NAN),
        r["size_delivered"]["total"].as_f64().unwrap_or(f64::NAN) / MIB,
        match r["failed"].as_u64() {
            Some(n) if n > 0 => format!(" FAILED {n}"),
            _ => String::new(),
        }
    )
}

/// The medians of the rounds, sizes and store numbers flattened; the
/// per-round ratio of each variant's webhooks/s to `off`'s; the goals.
fn summarize(runs: &Runs) -> Value {
    let mut out = serde_json::Map::new();
    for (phase, variants) in runs {
        let mut rows = serde_json::Map::new();
        let off = variants
            .get("off")
            .map(|rs| harness::rates(rs))
            .unwrap_or_default();
        for (variant, results) in variants {
            let mut row = harness::medians(results);
            let rates = harness::rates(results);
            if !off.is_empty() && phase != "engine" {
                harness::add_ratio(&mut row, "vs_off", &rates, &off);
            }
            row["per_sec_per_round"] = json!(rates);
            rows.insert(variant.clone(), row);
        }
        out.insert(phase.clone(), Value::Object(rows));
    }
    let get = |phase: &str, variant: &str, k: &str| out.get(phase)?.get(variant)?.get(k)?.as_f64();
    let goals = json!({
        "accept_full_per_sec": get("accept", "full", "per_sec"),
        "accept_full_per_sec_goal": 100_000,
        "accept_full_p99_ms": get("accept", "full", "p99_ms"),
        "accept_full_p99_ms_goal": 5.0,
        "deliver_full_vs_off": get("deliver", "full", "vs_off"),
        "deliver_full_vs_off_goal": 0.8,
    });
    out.insert("goals".into(), goals);
    Value::Object(out)
}

/// A factor that turns bytes into MiB.
const MIB: f64 = 1024.0 * 1024.0;

fn print_tables(summary: &Value) {
    let rows = |phase: &str| -> Vec<(&str, &Value)> {
        summary[phase]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default()
    };
    println!("\naccept (medians of rounds; sizes: journal file + WAL)");
    harness::print_rows(
        rows("accept"),
        &[
            Col("webhooks/s", "per_sec", 1.0, 0),
            Col("vs off", "vs_off", 1.0, 2),
            Col("p50 ms", "p50_ms", 1.0, 3),
            Col("p99 ms", "p99_ms", 1.0, 3),
            Col("rows/commit", "store_rows_per_commit", 1.0, 1),
            Col("commit p99 ms", "store_commit_latency_p99_ms", 1.0, 2),
            Col("drain/s", "drain_per_sec", 1.0, 0),
            Col("MiB holding", "size_holding_total", 1.0 / MIB, 1),
            Col("MiB delivered", "size_delivered_total", 1.0 / MIB, 1),
            Col("MiB closed", "size_closed_total", 1.0 / MIB, 1),
        ],
    );
    println!("\ndeliver to the receiver (medians of rounds)");
    harness::print_rows(
        rows("deliver"),
        &[
            Col("webhooks/s", "per_sec", 1.0, 0),
            Col("vs off", "vs_off", 1.0, 2),
            Col("p50 ms", "p50_ms", 1.0, 3),
            Col("p99 ms", "p99_ms", 1.0, 3),
            Col("call p99 ms", "call_p99_ms", 1.0, 3),
            Col("CPU us/wh", "cpu_us_per_webhook", 1.0, 1),
            Col("rows/commit", "store_rows_per_commit", 1.0, 1),
            Col("MiB delivered", "size_delivered_total", 1.0 / MIB, 2),
            Col("MiB closed", "size_closed_total", 1.0 / MIB, 2),
        ],
    );
    println!(
        "  full / off per round: {}",
        loopback::two_decimals(&summary["deliver"]["full"]["vs_off_per_round"])
    );
    println!("\nthe engine alone, one thread, WAL + synchronous FULL (medians of rounds)");
    harness::print_rows(
        rows("engine"),
        &[
            Col("rows/s", "rows_per_sec", 1.0, 0),
            Col("commits/s", "commits_per_sec", 1.0, 0),
            Col("commit p50 ms", "commit_p50_ms", 1.0, 3),
            Col("commit p99 ms", "commit_p99_ms", 1.0, 3),
            Col("fdatasync p50 ms", "p50_ms", 1.0, 3),
            Col("fdatasync p99 ms", "p99_ms", 1.0, 3),
        ],
    );
    let g = &summary["goals"];
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    let rate = g["accept_full_per_sec"].as_f64();
    let p99 = g["accept_full_p99_ms"].as_f64();
    println!(
        "\naccept, FULL: {:.0}/s (goal >= 100000: {}), p99 {:.2} ms (goal < 5: {})",
        rate.unwrap_or(f64::NAN),
        verdict(rate.map(|r| r >= 100_000.0)),
        p99.unwrap_or(f64::NAN),
        verdict(p99.map(|p| p < 5.0))
    );
    let ratio = g["deliver_full_vs_off"].as_f64();
    println!(
        "deliver, FULL / off: {:.2} (goal >= 0.8: {})",
        ratio.unwrap_or(f64::NAN),
        verdict(ratio.map(|r| r >= 0.8))
    );
}
