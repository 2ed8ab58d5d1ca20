//! How every delivery variant is run and measured, in one place: the flags
//! each child is given, the body sent, submission and completion times per
//! webhook, and the readings from `/proc`. Plain std, so that both `benches/delivery.rs` (through
//! `loopback`) and the tokio crate in `benches/async-variant` (by path)
//! compile this same file: the variants cannot drift apart in what they
//! count.

use std::fs;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// The JSON body of every webhook, and of wrk's requests (about 100 bytes).
pub const BODY: &str = r#"{"type":"entry.created","timestamp":"2025-01-01T00:00:00Z","data":{"entry_id":42,"title":"hello"}}"#;

/// Submission and completion times of every webhook, by index, in
/// nanoseconds since `epoch`.
pub struct Tracker {
    epoch: Instant,
    submitted: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
    finished: AtomicUsize,
    failed: AtomicUsize,
}

impl Tracker {
    pub fn new(n: usize) -> Tracker {
        Tracker {
            epoch: Instant::now(),
            submitted: (0..n).map(|_| AtomicU64::new(0)).collect(),
            done: (0..n).map(|_| AtomicU64::new(0)).collect(),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Webhook `i` is being handed over now.
    pub fn submitted(&self, i: usize) {
        self.submitted[i].store(self.now_ns(), Ordering::Relaxed);
    }

    /// Webhook `i` has its answer (`ok`: a 2xx).
    pub fn finished(&self, i: usize, ok: bool) {
        self.done[i].store(self.now_ns(), Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// Webhooks finished so far.
    pub fn finished_count(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    /// Webhooks that did not get a 2xx.
    pub fn failed_count(&self) -> usize {
        self.failed.load(Ordering::Relaxed)
    }

    /// Sorted latencies in milliseconds of the webhooks in `range`.
    pub fn latencies_ms(&self, range: std::ops::Range<usize>) -> Vec<f64> {
        let mut v: Vec<f64> = range
            .map(|i| {
                let s = self.submitted[i].load(Ordering::Relaxed);
                let d = self.done[i].load(Ordering::Relaxed);
                d.saturating_sub(s) as f64 / 1e6
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// This process's CPU time (user + system, every thread) from
/// `/proc/self/stat`, in milliseconds (10 ms resolution).
pub fn cpu_time_ms() -> f64 {
    stat_cpu_ms("/proc/self/stat")
}

/// The CPU time (user + system, every thread) of the process whose
/// `/proc/<pid>/stat` is at `path`, in milliseconds (10 ms resolution).
pub fn stat_cpu_ms(path: &str) -> f64 {
    let Ok(stat) = fs::read_to_string(path) else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, so the 12th and 13th after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // USER_HZ is 100 on every Linux ABI Rust targets.
    (ticks(11) + ticks(12)) * 10.0
}

/// This process's peak resident set (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a child variant is told, as command-line flags: written by
/// `benches/delivery.rs`, parsed by each child, hookpool's and the tokio
/// crate's alike.
pub struct ChildArgs {
    pub variant: String,
    pub url: String,
    pub n: usize,
    pub concurrency: usize,
    pub warmup: usize,
    pub paced: usize,
    pub rate: f64,
    /// A CA certificate (PEM file) to trust, for https URLs.
    pub cacert: Option<String>,
}

impl ChildArgs {
    /// Parses the flags after the program name.
    pub fn parse(args: &[String]) -> ChildArgs {
        let mut c = ChildArgs {
            variant: args.first().cloned().unwrap_or_default(),
            url: String::new(),
            n: 20_000,
            concurrency: 16,
            warmup: 500,
            paced: 0,
            rate: 4000.0,
            cacert: None,
        };
        let mut it = args.iter().skip(1);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match k.as_str() {
                "--url" => c.url = v.clone(),
                "--n" => c.n = v.parse().expect("--n"),
                "--concurrency" => c.concurrency = v.parse().expect("--concurrency"),
                "--warmup" => c.warmup = v.parse().expect("--warmup"),
                "--paced" => c.paced = v.parse().expect("--paced"),
                "--rate" => c.rate = v.parse().expect("--rate"),
                "--cacert" => c.cacert = Some(v.clone()),
                other => panic!("unknown flag {other}"),
            }
        }
        assert!(
            c.rate.is_finite() && c.rate > 0.0,
            "--rate must be above 0, not {}",
            c.rate
        );
        c
    }

    /// The flags that `parse` reads back. Only the orchestrator writes them.
    #[allow(dead_code)]
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = vec![
            self.variant.clone(),
            "--url".into(),
            self.url.clone(),
            "--n".into(),
            self.n.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--paced".into(),
            self.paced.to_string(),
            "--rate".into(),
            self.rate.to_string(),
        ];
        if let Some(ca) = &self.cacert {
            flags.extend(["--cacert".into(), ca.clone()]);
        }
        flags
    }
}
