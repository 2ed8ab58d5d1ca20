//! A private `redis-server` for a benchmark run: its own free port on
//! 127.0.0.1 and its own directory, AOF on with `appendfsync always`, in a
//! process group of its own, stopped and reaped on drop; and
//! `redis-benchmark` against it, the ceiling.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub version: String,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one and waits (at most 10 s) until it answers `PING`.
    pub fn start() -> io::Result<RedisServer> {
        let out = Command::new("redis-server").arg("--version").output()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let port = super::free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "hookpool-bench-redis-{}-{port}",
            std::process::id()
        ));
        fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let mut server = RedisServer {
            child,
            port,
            version,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.ping() {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("redis-server did not answer within 10 s"));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// `INFO commandstats`: calls and microseconds spent, by command.
    pub fn command_stats(&self) -> BTreeMap<String, (u64, u64)> {
        let mut stats = BTreeMap::new();
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return stats;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"INFO commandstats\r\nQUIT\r\n").is_err() {
            return stats;
        }
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        // "cmdstat_evalsha:calls=3,usec=90,usec_per_call=30.00,..."
        for line in text.lines() {
            let Some((cmd, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            stats.insert(cmd.to_owned(), (field("calls"), field("usec")));
        }
        stats
    }

    /// Sends one command (`["LLEN", key]`) and returns the first line of
    /// its answer without the line end (`:20000`, `+OK`), or `None` if
    /// Redis could not be reached.
    pub fn query(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut command = format!("*{}\r\n", args.len());
        for a in args {
            command += &format!("${}\r\n{a}\r\n", a.len());
        }
        s.write_all(command.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its CPU time so far (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        super::measure::stat_cpu_ms(&format!("/proc/{}/stat", self.child.id()))
    }

    /// The bytes in its directory: the AOF, since snapshots are off.
    pub fn disk_bytes(&self) -> u64 {
        fn size(p: &std::path::Path) -> u64 {
            match fs::metadata(p) {
                Ok(m) if m.is_dir() => fs::read_dir(p)
                    .map(|d| d.flatten().map(|e| size(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        size(&self.dir)
    }

    /// `redis-benchmark -t lpush -n <n> -P <pipeline> -q` (50 clients, its
    /// default) against this server: LPUSH requests/s.
    pub fn benchmark_lpush(&self, n: usize, pipeline: usize) -> Option<f64> {
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", "lpush", "-n", &n.to_string()])
            .args(["-P", &pipeline.to_string(), "-q"]);
        let (status, out) = match super::run_bounded(cmd, Duration::from_secs(300)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("redis-benchmark: {e}");
                return None;
            }
        };
        // "LPUSH: 81234.56 requests per second, p50=0.303 msec"; progress
        // lines before it end in '\r'.
        let rate = out
            .split(['\r', '\n'])
            .filter_map(|l| l.trim().strip_prefix("LPUSH: "))
            .filter_map(|l| l.split_once(" requests per second"))
            .filter_map(|(rate, _)| rate.trim().parse().ok())
            .next_back();
        if rate.is_none() {
            eprintln!("redis-benchmark ({status}) printed no LPUSH rate: {out:?}");
        }
        rate
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        super::stop_group(&mut self.child, Duration::from_secs(5));
        let _ = fs::remove_dir_all(&self.dir);
    }
}
