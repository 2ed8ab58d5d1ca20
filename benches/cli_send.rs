//! CLI send benchmark: `hookpool send`, the real binary, of N JSON lines
//! from a file, with each way it can hold them, and the same with an older
//! binary side by side.
//!
//! ```sh
//! cargo bench --bench cli_send --features cli
//! HOOKPOOL_BENCH_BASELINE=/path/to/old/hookpool cargo bench --bench cli_send --features cli
//! ```
//!
//! Variants, each one `hookpool send --url URL --event-type entry.created
//! FILE`, in an order rotated from round to round:
//!
//! - `full`: with its journal (the default), `--journal-sync full`: each
//!   commit waits for the disk.
//! - `normal`: `--journal-sync normal`: each commit is handed to the
//!   operating system.
//! - `no-journal`: `--no-journal`, webhooks in memory only.
//! - `redis`: `--redis URL --queue NAME`: only enqueues, into a private
//!   `redis-server` (AOF, `appendfsync always`); a fresh queue name each
//!   run, and `FLUSHALL` after it. Skipped, with a message, without
//!   `redis-server`.
//!
//! The receiver is nginx `return 204;` on 127.0.0.1 (or the in-process
//! server). Each run has a fresh directory of its own, for the journal and
//! the dead-letter file, under `target/tmp` (`CARGO_TARGET_TMPDIR`, on the
//! same disk as `target/`), or `HOOKPOOL_BENCH_DIR`; its filesystem is
//! reported. Lines/s: N over the summary's `elapsed_ms` (from the start of
//! the command to its summary; for `redis`, until the last batch is
//! acknowledged). A run counts only if it exits 0 and delivered (for
//! `redis`: enqueued, and `LLEN` of the queue says so) every line; the
//! benchmark fails otherwise, after writing what it measured.
//!
//! `HOOKPOOL_BENCH_BASELINE=/path/to/hookpool` adds every variant again
//! with that binary (`full-before` and so on), right after or before its
//! counterpart in each round, so that both see the same load; the ratio
//! after/before is the median of the per-round ratios. A binary whose
//! summary has no `journal_commits` (before batching) reports none.
//!
//! Each round also measures the disk: a 4 KiB overwrite plus `fdatasync`
//! for half a second. Medians, every round, the load average and pressure
//! are printed and written to `target/bench-results/cli_send.json`.
//!
//! Knobs: `HOOKPOOL_BENCH_N` (20000), `HOOKPOOL_BENCH_ROUNDS` (3),
//! `HOOKPOOL_BENCH_BASELINE`, `HOOKPOOL_BENCH_VARIANTS` (a subset of the
//! names, `-before` ones included), `HOOKPOOL_BENCH_DIR`,
//! `HOOKPOOL_BENCH_RECEIVER=fallback`.
//!
//! Under `cargo test --benches` (no `--bench` argument) it does nothing.

mod loopback;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use loopback::harness::{self, Col};
use loopback::redis_server::RedisServer;
use loopback::{Receiver, env_or};

/// The binary under test, built by cargo for this benchmark.
const HOOKPOOL: &str = env!("CARGO_BIN_EXE_hookpool");

/// The longest one send may take before it is killed: 20,000 lines at one
/// commit or one script each took up to 25 s on the machine in
/// docs/BENCHMARKS.md.
const SEND_LIMIT: Duration = Duration::from_secs(600);

/// The variants, in the order of the first round.
const VARIANTS: [&str; 4] = ["full", "normal", "no-journal", "redis"];

/// The suffix of a variant run with the baseline binary.
const BEFORE: &str = "-before";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` / `--all-targets` runs bench targets without
        // `--bench`: a minute of sending helps nobody there.
        eprintln!("cli_send: skipped; run it with `cargo bench --bench cli_send --features cli`");
        return;
    }
    if let Err(e) = orchestrate() {
        eprintln!("cli_send benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// What every run shares.
struct Setup {
    n: usize,
    input: PathBuf,
    /// Where each run's directory is made.
    dir: PathBuf,
    url: String,
    redis: Option<RedisServer>,
}

/// One run: a variant and the binary it runs.
struct Turn<'a> {
    /// `full`, `normal`, `no-journal` or `redis`.
    variant: &'static str,
    /// The name it is reported under (`full-before` for the baseline).
    name: String,
    binary: &'a Path,
}

fn orchestrate() -> Result<(), String> {
    let n: usize = env_or("HOOKPOOL_BENCH_N", 20_000);
    let rounds: usize = env_or("HOOKPOOL_BENCH_ROUNDS", 3);
    let baseline = std::env::var_os("HOOKPOOL_BENCH_BASELINE").map(PathBuf::from);
    if let Some(b) = &baseline {
        if !b.is_file() {
            return Err(format!("HOOKPOOL_BENCH_BASELINE: no file {}", b.display()));
        }
    }
    let wanted = std::env::var("HOOKPOOL_BENCH_VARIANTS").ok();
    let wants = |name: &str| {
        wanted
            .as_deref()
            .is_none_or(|w| w.split(',').any(|x| x.trim() == name))
    };
    let dir = std::env::var_os("HOOKPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join(format!("hookpool-bench-cli-send-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let input = dir.join("entries.jsonl");
    let lines: String = (1..=n)
        .map(|i| format!("{{\"entry_id\": {i}, \"title\": \"hello\"}}\n"))
        .collect();
    fs::write(&input, lines).map_err(|e| e.to_string())?;
    let fs_type = harness::filesystem(&dir);

    let receiver = Receiver::start().map_err(|e| format!("cannot start a receiver: {e}"))?;
    let redis = if wants("redis") || wants(&format!("redis{BEFORE}")) {
        match RedisServer::start() {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!(
                    "redis-server unavailable ({e}); the redis variants are skipped \
                     (apt-get install redis-server)"
                );
                None
            }
        }
    } else {
        None
    };
    let redis_version = redis.as_ref().map(|r| r.version.clone());
    let setup = Setup {
        n,
        input,
        dir: dir.clone(),
        url: receiver.url(),
        redis,
    };

    let after = Path::new(HOOKPOOL);
    let mut turns: Vec<Turn> = Vec::new();
    for variant in VARIANTS {
        if variant == "redis" && setup.redis.is_none() {
            continue;
        }
        turns.push(Turn {
            variant,
            name: variant.to_owned(),
            binary: after,
        });
        if let Some(b) = &baseline {
            turns.push(Turn {
                variant,
                name: format!("{variant}{BEFORE}"),
                binary: b,
            });
        }
    }
    turns.retain(|t| wants(&t.name));
    eprintln!(
        "cli_send: N = {n}, {rounds} rounds; runs in {} ({fs_type}); receiver: {} ({}); redis: {}; \
         baseline: {}",
        dir.display(),
        receiver.kind,
        receiver.version,
        redis_version.as_deref().unwrap_or("none"),
        baseline
            .as_deref()
            .map_or("none".into(), |b| b.display().to_string()),
    );

    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut disk: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut sitting = harness::Sitting::default();
    let mut failed = Vec::new();
    for round in 0..rounds {
        sitting.round_begins(round + 1);
        let mut order: Vec<&Turn> = turns.iter().collect();
        if !order.is_empty() {
            let turn = round % order.len();
            order.rotate_left(turn);
        }
        for (i, turn) in order.into_iter().enumerate() {
            // The disk settles between runs; a journal's last fsyncs end first.
            thread::sleep(Duration::from_millis(500));
            let result = send(&setup, turn, round, i);
            if let Ok(r) = &result {
                if !r["ok"].as_bool().unwrap_or(false) {
                    failed.push(format!("round {} {}", round + 1, turn.name));
                }
            } else {
                failed.push(format!("round {} {}", round + 1, turn.name));
            }
            harness::record(&mut runs, "", &turn.name, round + 1, result, brief);
        }
        harness::record_fsync(&mut disk, "", &dir, round + 1);
        sitting.round_ends();
    }
    let receiver_info = json!({ "kind": receiver.kind, "version": receiver.version });
    drop(receiver);
    drop(setup);
    let _ = fs::remove_dir_all(&dir);

    let summary = summarize(&runs, &disk);
    print_table(&summary);
    let out = json!({
        "n": n,
        "rounds": rounds,
        "filesystem": fs_type,
        "receiver": receiver_info,
        "redis": redis_version,
        "binary": HOOKPOOL,
        "baseline": baseline.map(|b| b.display().to_string()),
        "summary": summary,
        "runs": runs,
        "disk": disk,
    });
    sitting.write("cli_send", out)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "runs that did not exit 0 with every line delivered: {}",
            failed.join(", ")
        ))
    }
}

// ---------------------------------------------------------------- one send

/// One `hookpool send` of the input, in a fresh directory (`i` tells the
/// runs of a round apart): its summary, and whether every line got
/// through.
fn send(setup: &Setup, turn: &Turn, round: usize, i: usize) -> Result<Value, String> {
    let dir = setup.dir.join(format!("run-{}-{i}", round + 1));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(turn.binary);
    cmd.current_dir(&dir)
        .env_remove("HOOKPOOL_SECRETS")
        .env("RUST_LOG", "error")
        .args(["send", "--url", &setup.url, "--event-type", "entry.created"]);
    let queue = format!("cli-send-{}-{i}", round + 1);
    // The journal and the dead-letter file are the defaults, in `dir`.
    match turn.variant {
        "full" | "normal" => {
            cmd.args(["--journal-sync", turn.variant]);
        }
        "no-journal" => {
            cmd.arg("--no-journal");
        }
        "redis" => {
            let redis = setup.redis.as_ref().ok_or("no redis-server")?;
            cmd.args(["--redis", &redis.url(), "--queue", &queue]);
        }
        other => return Err(format!("unknown variant {other}")),
    }
    cmd.arg(&setup.input);
    let started = Instant::now();
    let (status, stdout) = loopback::run_bounded(cmd, SEND_LIMIT)?;
    let wall_s = started.elapsed().as_secs_f64();
    // The summary is the last line that parses; older binaries print the
    // same fields less `journal_commits`.
    let summary: Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .next_back()
        .unwrap_or(Value::Null);
    let count = |k: &str| summary[k].as_u64();
    let n = setup.n as u64;
    let elapsed_s = count("elapsed_ms").map_or(f64::NAN, |ms| ms as f64 / 1e3);
    let mut r = json!({
        "binary": turn.binary.display().to_string(),
        "exit_code": status.code(),
        "elapsed_s": elapsed_s,
        "wall_s": wall_s,
        "per_sec": n as f64 / elapsed_s,
        "lines": count("lines"),
        "journal_commits": count("journal_commits"),
        "summary": summary,
    });
    let through = if turn.variant == "redis" {
        let redis = setup.redis.as_ref().ok_or("no redis-server")?;
        let key = format!("hookpool:{{{queue}}}:ready");
        let queued = redis
            .query(&["LLEN", &key])
            .and_then(|a| a.strip_prefix(':')?.parse::<u64>().ok());
        if redis.query(&["FLUSHALL"]).as_deref() != Some("+OK") {
            return Err("FLUSHALL failed".into());
        }
        r["enqueued"] = json!(count("enqueued"));
        r["in_queue"] = json!(queued);
        count("enqueued") == Some(n) && queued == Some(n)
    } else {
        r["delivered"] = json!(count("delivered"));
        r["dead_lettered"] = json!(count("dead_lettered"));
        count("delivered") == Some(n)
    };
    if let Some(commits) = count("journal_commits").filter(|&c| c > 0) {
        r["lines_per_commit"] = json!(n as f64 / commits as f64);
    }
    r["ok"] = json!(status.success() && through);
    let _ = fs::remove_dir_all(&dir);
    Ok(r)
}

fn brief(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let got = match r["enqueued"].as_u64() {
        Some(e) => format!("{e} enqueued ({} in the queue)", r["in_queue"]),
        None => format!("{} delivered", r["delivered"]),
    };
    let commits = match r["journal_commits"].as_u64() {
        Some(c) => format!(", {c} journal commits"),
        None => String::new(),
    };
    format!(
        "{:.0} lines/s ({:.2} s, wall {:.2} s), {got}{commits}, exit {}{}",
        f("per_sec"),
        f("elapsed_s"),
        f("wall_s"),
        r["exit_code"],
        if r["ok"].as_bool() == Some(true) {
            ""
        } else {
            ", FAILED"
        },
    )
}

// ------------------------------------------------------------ the summary

/// Per variant: the medians of the rounds, lines/s in every round, exit
/// codes, lines delivered (or enqueued), and, beside a baseline, the
/// median of the per-round ratios after/before; the disk's fsync latency.
fn summarize(runs: &BTreeMap<String, Vec<Value>>, disk: &BTreeMap<String, Vec<Value>>) -> Value {
    let mut out = serde_json::Map::new();
    for (name, results) in runs {
        let mut row = harness::medians(results);
        let rates = harness::rates(results);
        let col = |k: &str| -> Vec<Value> { results.iter().map(|r| r[k].clone()).collect() };
        row["per_sec_per_round"] = json!(rates);
        row["exit_codes"] = json!(col("exit_code"));
        row["through_per_round"] = json!(
            results
                .iter()
                .map(|r| r["delivered"].as_u64().or(r["enqueued"].as_u64()))
                .collect::<Vec<_>>()
        );
        row["all_ok"] = json!(results.iter().all(|r| r["ok"].as_bool() == Some(true)));
        if !name.ends_with(BEFORE) {
            if let Some(before) = runs.get(&format!("{name}{BEFORE}")) {
                harness::add_ratio(&mut row, "vs_before", &rates, &harness::rates(before));
            }
        }
        out.insert(name.clone(), row);
    }
    if let Some(rounds) = disk.get("fdatasync") {
        out.insert("fdatasync".into(), harness::medians(rounds));
    }
    Value::Object(out)
}

fn print_table(summary: &Value) {
    let rows: Vec<(&str, &Value)> = VARIANTS
        .iter()
        .flat_map(|v| [v.to_string(), format!("{v}{BEFORE}")])
        .filter_map(|name| {
            let (k, v) = summary.as_object()?.get_key_value(&name)?;
            Some((k.as_str(), v))
        })
        .collect();
    println!("\nhookpool send, medians of rounds");
    harness::print_rows(
        rows,
        &[
            Col("lines/s", "per_sec", 1.0, 0),
            Col("after/before", "vs_before", 1.0, 2),
            Col("elapsed s", "elapsed_s", 1.0, 2),
            Col("commits", "journal_commits", 1.0, 0),
            Col("lines/commit", "lines_per_commit", 1.0, 1),
        ],
    );
    for name in VARIANTS {
        let Some(row) = summary.get(name) else {
            continue;
        };
        let mut line = format!(
            "  {name}: lines/s per round {}",
            whole(&row["per_sec_per_round"])
        );
        if let Some(before) = summary.get(format!("{name}{BEFORE}")) {
            line += &format!(", before {}", whole(&before["per_sec_per_round"]));
        }
        if row.get("vs_before_per_round").is_some() {
            line += &format!(
                "; after/before per round {}",
                loopback::two_decimals(&row["vs_before_per_round"])
            );
        }
        println!("{line}");
    }
    if let Some(d) = summary.get("fdatasync") {
        println!(
            "  disk: 4 KiB overwrite + fdatasync p50 {:.3} ms, p99 {:.3} ms",
            d["p50_ms"].as_f64().unwrap_or(f64::NAN),
            d["p99_ms"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// The numbers in a JSON array rounded, space-separated.
fn whole(values: &Value) -> String {
    values
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_f64)
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
