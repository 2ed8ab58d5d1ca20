//! wrk, the HTTP load generator, for a receiver's ceiling: it POSTs
//! [`BODY`](super::BODY) over keep-alive connections as fast as the receiver
//! answers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

pub struct Wrk {
    pub version: String,
}

impl Wrk {
    /// `None` if wrk is not on PATH.
    pub fn find() -> Option<Wrk> {
        let out = Command::new("wrk").arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version = text
            .lines()
            .next()
            .unwrap_or("wrk")
            .split(" [")
            .next()?
            .to_owned();
        Some(Wrk { version })
    }

    /// `wrk -t1 -c<concurrency>` POSTing [`BODY`](super::BODY) for `secs`:
    /// requests/s, p50 and p99 in ms, and how many answers were not 2xx
    /// (`ok_per_sec` counts only the 2xx). One thread: nginx has one worker,
    /// so wrk and nginx each get one of the two cores (two wrk threads
    /// measured lower).
    pub fn run(&self, url: &str, concurrency: usize, secs: u64, dir: &Path) -> Option<Value> {
        let script = dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
                super::BODY
            ),
        )
        .ok()?;
        let mut cmd = Command::new("wrk");
        cmd.args([
            "-t1",
            &format!("-c{concurrency}"),
            &format!("-d{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url);
        let (_, text) = match super::run_bounded(cmd, Duration::from_secs(secs + 30)) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("wrk: {e}");
                return None;
            }
        };
        let per_sec: f64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
            .trim()
            .parse()
            .ok()?;
        let pct = |p: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(p))
                .and_then(|v| parse_duration_ms(v.trim()))
        };
        // "  136117 requests in 3.00s, 12.03MB read"
        let (requests, took_ms) = text
            .lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(" requests in ")?;
                let took = rest.split(',').next()?;
                Some((n.parse::<u64>().ok()?, parse_duration_ms(took.trim())?))
            })
            .unzip();
        let non_2xx: u64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let ok_per_sec = requests
            .zip(took_ms)
            .map(|(n, ms)| n.saturating_sub(non_2xx) as f64 / (ms / 1e3));
        let errors = non_2xx > 0 || text.lines().any(|l| l.contains("Socket errors"));
        Some(json!({
            "variant": "wrk",
            "concurrency": concurrency,
            "per_sec": per_sec,
            "p50_ms": pct("50%"),
            "p99_ms": pct("99%"),
            "errors": errors,
            "requests": requests,
            "non_2xx": non_2xx,
            "ok_per_sec": ok_per_sec,
        }))
    }
}

/// wrk prints `123.45us`, `1.23ms`, `1.02s` or `2.00m`; in milliseconds.
fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}
