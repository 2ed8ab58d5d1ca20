//! How a benchmark binary runs: its `main`, the children it starts (this
//! binary again, told what to do in JSON), and what it reports: medians of
//! rounds, tables, the load average, and the JSON it writes.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{RESULT_PREFIX, median, results_dir};

/// The longest one child may take before it is killed.
pub const CHILD_LIMIT: Duration = Duration::from_secs(900);

/// The `main` of a benchmark that runs its variants in children, this
/// binary re-executed with `--child` and their arguments. A child runs
/// `child` on those arguments and prints its result after
/// [`RESULT_PREFIX`]. Without a `--bench` argument nothing runs: `cargo
/// test --benches` (or `--all-targets`) runs bench targets so, and a
/// minutes-long run in a debug build helps nobody there. Else
/// `orchestrate` runs, and a failure exits 1. `how` is the command that
/// runs the benchmark.
pub fn bench_main(
    name: &str,
    how: &str,
    child: impl FnOnce(&[String]) -> Value,
    orchestrate: impl FnOnce() -> Result<(), String>,
) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--child") {
        println!("{RESULT_PREFIX}{}", child(&args[1..]));
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("{name}: skipped; run it with `{how}`");
        return;
    }
    if let Err(e) = orchestrate() {
        eprintln!("{name} benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// This benchmark's binary as a child told `what` (as JSON).
pub fn child_command(what: &impl Serialize) -> Result<Command, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(me);
    cmd.arg("--child")
        .arg(serde_json::to_string(what).map_err(|e| e.to_string())?);
    Ok(cmd)
}

/// What [`child_command`] told the child.
pub fn child_args<T: DeserializeOwned>(args: &[String]) -> T {
    let json = args.first().expect("--child takes its arguments as JSON");
    serde_json::from_str(json).expect("--child JSON")
}

/// One sitting of a benchmark: the load average around each round, and
/// the report written at the end.
#[derive(Default)]
pub struct Sitting {
    load: Vec<Value>,
}

impl Sitting {
    /// Round `round` (from 1) begins.
    pub fn round_begins(&mut self, round: usize) {
        self.load.push(json!({
            "round": round,
            "before": load_average(),
            "cpu_pressure_before": pressure("cpu"),
        }));
    }

    /// The round begun last has ended.
    pub fn round_ends(&mut self) {
        if let Some(last) = self.load.last_mut() {
            last["after"] = json!(load_average());
            last["cpu_pressure_after"] = json!(pressure("cpu"));
            last["io_pressure_after"] = json!(pressure("io"));
        }
    }

    /// Writes `fields` (an object), with the benchmark's name, the machine
    /// and the load averages, to `<results_dir>/<name>.json`, and says
    /// where.
    pub fn write(self, name: &str, mut fields: Value) -> Result<(), String> {
        fields["benchmark"] = json!(name);
        fields["machine"] = super::machine();
        fields["load_average"] = json!(self.load);
        let path = write_results(name, &fields)?;
        println!("\nwritten: {}", path.display());
        Ok(())
    }
}

/// Writes `out` to `<results_dir>/<name>.json`; the path.
pub fn write_results(name: &str, out: &Value) -> Result<PathBuf, String> {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(out).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The load averages over 1, 5 and 15 minutes (`/proc/loadavg`): how busy
/// the machine was beside the benchmark.
pub fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            l.split_whitespace()
                .take(3)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The share of the last 10 and 60 seconds in which some runnable task
/// waited for `resource` (`cpu` or `io`), in percent (`/proc/pressure`,
/// "some"): how much the machine's other work held this benchmark back.
pub fn pressure(resource: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(format!("/proc/pressure/{resource}")).unwrap_or_default();
    let Some(some) = text.lines().find(|l| l.starts_with("some ")) else {
        return Vec::new();
    };
    ["avg10=", "avg60="]
        .iter()
        .filter_map(|k| {
            some.split_whitespace()
                .find_map(|f| f.strip_prefix(k))?
                .parse()
                .ok()
        })
        .collect()
}

/// The median over rounds of every number in the rounds' results, with
/// the numbers of nested objects lifted to the top (`store.commits`
/// becomes `store_commits`, at any depth); other fields are left out. Also how many
/// rounds there were.
pub fn medians(rounds: &[Value]) -> Value {
    let flat: Vec<Map<String, Value>> = rounds.iter().map(flatten).collect();
    let mut keys: Vec<&String> = flat
        .iter()
        .flat_map(|o| o.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let vals: Vec<f64> = flat.iter().filter_map(|r| r.get(k)?.as_f64()).collect();
        out.insert(k.clone(), json!(median(&vals)));
    }
    out.insert("rounds".into(), json!(rounds.len()));
    Value::Object(out)
}

/// Keeps round `round`'s result for `variant` in `runs` and prints it
/// (`brief`), with `label` before the variant's name; or prints why there
/// is none.
pub fn record(
    runs: &mut BTreeMap<String, Vec<Value>>,
    label: &str,
    variant: &str,
    round: usize,
    result: Result<Value, String>,
    brief: impl Fn(&Value) -> String,
) {
    match result {
        Ok(mut r) => {
            r["round"] = json!(round);
            eprintln!("  round {round} {label}{variant}: {}", brief(&r));
            runs.entry(variant.to_owned()).or_default().push(r);
        }
        Err(e) => eprintln!("  round {round} {label}{variant}: {e}"),
    }
}

/// Each round's `per_sec` (NaN for a round without one).
pub fn rates(rounds: &[Value]) -> Vec<f64> {
    rounds
        .iter()
        .map(|r| r["per_sec"].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Sets `row[key]` to the median of the per-round ratios of `rates` to
/// `base` (variants that ran in the same round ran under the same load),
/// and `row["<key>_per_round"]` to the ratios.
pub fn add_ratio(row: &mut Value, key: &str, rates: &[f64], base: &[f64]) {
    let per_round: Vec<f64> = rates.iter().zip(base).map(|(r, b)| r / b).collect();
    row[key] = json!(median(&per_round));
    row[format!("{key}_per_round")] = json!(per_round);
}

fn flatten(r: &Value) -> Map<String, Value> {
    let mut flat = Map::new();
    for (k, v) in r.as_object().into_iter().flatten() {
        match v.as_object() {
            Some(_) => {
                for (ik, iv) in flatten(v) {
                    flat.insert(format!("{k}_{ik}"), iv);
                }
            }
            None => {
                flat.insert(k.clone(), v.clone());
            }
        }
    }
    flat
}

/// A column of a printed table: its header, the key of the number in each
/// row, a factor it is multiplied by, and the digits after the point.
pub struct Col(pub &'static str, pub &'static str, pub f64, pub usize);

/// Prints rows of numbers under `cols`, right-aligned, after the rows'
/// names; a missing number prints as `-`.
pub fn print_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a Value)>, cols: &[Col]) {
    let width = |c: &Col| c.0.len().max(9);
    let mut head = format!("{:<16}", "variant");
    for c in cols {
        head += &format!(" {:>w$}", c.0, w = width(c));
    }
    println!("{head}");
    for (name, row) in rows {
        let mut line = format!("{name:<16}");
        for c in cols {
            let cell = row[c.1]
                .as_f64()
                .filter(|x| !x.is_nan())
                .map_or("-".to_owned(), |x| format!("{:.*}", c.3, x * c.2));
            line += &format!(" {cell:>w$}", w = width(c));
        }
        println!("{line}");
    }
}

/// The filesystem type of `dir` (`stat -f`), for the report.
pub fn filesystem(dir: &Path) -> String {
    Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Measures the disk under `dir` for half a second ([`fsync_latency`]) and
/// records it in `runs` as the variant `fdatasync` of `round`.
pub fn record_fsync(
    runs: &mut BTreeMap<String, Vec<Value>>,
    label: &str,
    dir: &Path,
    round: usize,
) {
    let result = fsync_latency(dir, 0.5).map_err(|e| e.to_string());
    record(runs, label, "fdatasync", round, result, |r| {
        format!(
            "4 KiB, p50 {:.3} ms, p99 {:.3} ms",
            r["p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["p99_ms"].as_f64().unwrap_or(f64::NAN)
        )
    });
}

/// A 4 KiB overwrite in a 4 MiB file plus `fdatasync`, as a WAL frame
/// write is, repeated for `secs`: p50 and p99.
pub fn fsync_latency(dir: &Path, secs: f64) -> std::io::Result<Value> {
    let path = dir.join("fsync.bin");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(&vec![0u8; 4 << 20])?;
    f.sync_all()?;
    let page = [7u8; 4096];
    let mut samples = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        let offset = (samples.len() % 1024) as u64 * 4096;
        let s0 = Instant::now();
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&page)?;
        f.sync_data()?;
        samples.push(s0.elapsed().as_secs_f64() * 1e3);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    samples.sort_by(f64::total_cmp);
    Ok(json!({
        "p50_ms": super::measure::quantile(&samples, 0.50),
        "p99_ms": super::measure::quantile(&samples, 0.99),
        "per_sec": samples.len() as f64 / t0.elapsed().as_secs_f64(),
    }))
}
