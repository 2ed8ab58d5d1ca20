//! What the delivery, isolation and push-back benchmarks share: the receiver
//! on 127.0.0.1 (nginx when installed, else a small std server), with or
//! without a rate limit, an endpoint that never answers, the child-process
//! protocol, wrk, and readings from `/proc`.
#![allow(dead_code)]

pub mod drive;
pub mod harness;
pub mod measure;
pub mod redis_server;
pub mod wrk;
pub use measure::BODY;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How a child process marks its result line on stdout.
pub const RESULT_PREFIX: &str = "RESULT ";

/// The value of the environment variable `name`, or `default` if it is
/// unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where results go: `$CARGO_TARGET_DIR/bench-results`, else `target/bench-results`.
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-results")
}

/// A receiver's rate limit: a token bucket that refills at `rate` requests
/// a second and lets `burst` more through at once; beyond that the answer is
/// `429 Too Many Requests` with `Retry-After: 1`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub rate: u32,
    pub burst: u32,
}

/// An HTTP receiver answering `204 No Content` to everything, or to what its
/// [`Limit`] allows.
pub struct Receiver {
    pub kind: &'static str,
    pub version: String,
    pub addr: SocketAddr,
    /// The same over HTTPS (nginx only).
    pub https: Option<Https>,
    inner: ReceiverInner,
}

/// nginx's HTTPS listener: a certificate for 127.0.0.1 and localhost from a
/// CA made for the run.
pub struct Https {
    pub addr: SocketAddr,
    /// The CA certificate (PEM) that clients must trust.
    pub ca_file: PathBuf,
}

enum ReceiverInner {
    Nginx { child: Child, dir: PathBuf },
    Fallback(FallbackServer),
}

impl Receiver {
    /// nginx (`return 204;`, one worker process) if it is on PATH, unless
    /// `HOOKPOOL_BENCH_RECEIVER=fallback`; else the in-process std server.
    pub fn start() -> io::Result<Receiver> {
        Receiver::start_with(None)
    }

    /// The same behind a rate limit: nginx's own (`limit_req ... nodelay`,
    /// 429 with `Retry-After: 1`), or a token bucket in the fallback server
    /// that answers the same way.
    pub fn start_limited(limit: Limit) -> io::Result<Receiver> {
        Receiver::start_with(Some(limit))
    }

    fn start_with(limit: Option<Limit>) -> io::Result<Receiver> {
        let want_fallback = std::env::var("HOOKPOOL_BENCH_RECEIVER").is_ok_and(|v| v == "fallback");
        if !want_fallback {
            match start_nginx(limit) {
                Ok(r) => return Ok(r),
                Err(e) => eprintln!("nginx unavailable ({e}); using the in-process receiver"),
            }
        }
        let server = FallbackServer::start_with(limit)?;
        let version = match limit {
            Some(_) => "std TcpListener, thread per connection, token bucket",
            None => "std TcpListener, thread per connection",
        };
        Ok(Receiver {
            kind: "fallback",
            version: version.into(),
            addr: server.addr,
            https: None,
            inner: ReceiverInner::Fallback(server),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn https_url(&self) -> Option<String> {
        self.https
            .as_ref()
            .map(|h| format!("https://{}/hook", h.addr))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let ReceiverInner::Nginx { child, dir } = &mut self.inner {
            stop_group(child, Duration::from_secs(5));
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Stops a child started as the leader of its own process group (nginx's
/// master and the worker it forks): SIGTERM to the group, which makes the
/// master stop its worker first, then SIGKILL to the group if it has not
/// exited within `grace`. Always reaps the child. Does nothing to a child
/// already reaped, whose id may since have been reused.
fn stop_group(child: &mut Child, grace: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let group = format!("-{}", child.id());
    let signal = |sig: &str| {
        let _ = Command::new("kill")
            .args([sig, "--", &group])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    signal("-KILL");
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// nginx's configuration for a [`Limit`]: the zone (in `http`) and what
/// `location /` does. Over the limit, `limit_req` answers 429, which
/// `@limited` sends with `Retry-After: 1`. `return` runs before `limit_req`
/// (rewrite phase, before preaccess), so the 204 comes from a named location
/// reached through `try_files`, after the limit has been checked. Refusals
/// are logged at info, below the `warn` that reaches stderr.
fn nginx_limit(limit: Option<Limit>) -> (String, String) {
    let Some(Limit { rate, burst }) = limit else {
        return (String::new(), "location / { return 204; }".to_owned());
    };
    let zone = format!(
        "limit_req_zone $binary_remote_addr zone=hooks:1m rate={rate}r/s;\n\
         limit_req_status 429;\n\
         limit_req_log_level info;\n"
    );
    let location = format!(
        "location / {{\n\
           limit_req zone=hooks burst={burst} nodelay;\n\
           error_page 429 = @limited;\n\
           try_files /nonexistent @ok;\n\
         }}\n\
         location @ok {{ return 204; }}\n\
         location @limited {{ add_header Retry-After 1 always; return 429; }}"
    );
    (zone, location)
}

fn start_nginx(limit: Option<Limit>) -> io::Result<Receiver> {
    let version = Command::new("nginx").arg("-v").output()?;
    let version = String::from_utf8_lossy(&version.stderr)
        .trim()
        .trim_start_matches("nginx version: ")
        .to_owned();
    let port = free_port()?;
    let tls_port = free_port()?;
    // One directory per instance: a benchmark may run several at once.
    let dir = std::env::temp_dir().join(format!(
        "hookpool-bench-nginx-{}-{port}",
        std::process::id()
    ));
    fs::create_dir_all(&dir)?;
    let ca_file = write_test_certificates(&dir)?;
    let (zone, location) = nginx_limit(limit);
    let conf = format!(
        "daemon off;\n\
         worker_processes 1;\n\
         error_log stderr warn;\n\
         pid {dir}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {dir}/body;\n\
           keepalive_requests 1000000;\n\
           keepalive_timeout 120s;\n\
           {zone}\
           server {{ listen 127.0.0.1:{port}; {location} }}\n\
           server {{\n\
             listen 127.0.0.1:{tls_port} ssl;\n\
             # No ssl_protocols: nginx 1.22 then offers TLS 1.2 only (1.3 by\n\
             # default since 1.23.4), and the run in docs/BENCHMARKS.md used that.\n\
             ssl_certificate {dir}/server.pem;\n\
             ssl_certificate_key {dir}/server.key;\n\
             {location}\n\
           }}\n\
         }}\n",
        dir = dir.display()
    );
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let child = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Its own process group, so that stopping it reaches its worker too.
        .process_group(0)
        .spawn()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let https = Https {
        addr: ([127, 0, 0, 1], tls_port).into(),
        ca_file,
    };
    let mut receiver = Receiver {
        kind: "nginx",
        version,
        addr,
        https: Some(https),
        inner: ReceiverInner::Nginx { child, dir },
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(receiver);
        }
        if let ReceiverInner::Nginx { child, .. } = &mut receiver.inner {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!("nginx exited: {status}")));
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other("nginx did not listen within 5 s"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `server.pem` and `server.key` (ECDSA P-256, for 127.0.0.1 and
/// localhost) and the CA that issued them, `ca.pem`, into `dir`; returns the
/// CA's path.
fn write_test_certificates(dir: &Path) -> io::Result<PathBuf> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let err = |e: rcgen::Error| io::Error::other(e.to_string());
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(err)?;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    fs::write(dir.join("server.pem"), cert.pem())?;
    fs::write(dir.join("server.key"), key.serialize_pem())?;
    let ca_file = dir.join("ca.pem");
    fs::write(&ca_file, ca.pem())?;
    Ok(ca_file)
}

/// An accept loop on 127.0.0.1 in a thread of its own, stopped and joined on
/// drop. `State` is what the loop keeps between connections; `finish` gets
/// it back once the loop has stopped.
struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start<State: Default + 'static>(
        name: &str,
        mut on_stream: impl FnMut(&mut State, TcpStream, &Arc<AtomicBool>) + Send + 'static,
        finish: impl FnOnce(State) + Send + 'static,
    ) -> io::Result<Acceptor> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = thread::Builder::new().name(name.into()).spawn(move || {
            let mut state = State::default();
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    on_stream(&mut state, stream, &flag);
                }
            }
            finish(state);
        })?;
        Ok(Acceptor {
            addr,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Joins the threads in `threads` that have ended and drops their handles.
/// A finished thread that is not yet joined keeps its stack mapped, which
/// would show up as resident memory.
pub fn join_finished(threads: &mut Vec<JoinHandle<()>>) {
    let mut i = 0;
    while i < threads.len() {
        if threads[i].is_finished() {
            let _ = threads.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
}

/// A minimal HTTP/1.1 keep-alive server: one thread per connection, reads a
/// head and a `Content-Length` body, answers 204, or with a [`Limit`] 429
/// and `Retry-After: 1` to what its bucket refuses. Enough for the
/// benchmark's clients, which all send `Content-Length` bodies.
pub struct FallbackServer {
    pub addr: SocketAddr,
    _acceptor: Acceptor,
}

impl FallbackServer {
    pub fn start() -> io::Result<FallbackServer> {
        FallbackServer::start_with(None)
    }

    pub fn start_with(limit: Option<Limit>) -> io::Result<FallbackServer> {
        let bucket = Arc::new(limit.map(Bucket::new));
        let acceptor = Acceptor::start(
            "recv-accept",
            move |conns: &mut Vec<JoinHandle<()>>, stream, stop| {
                let (stop, bucket) = (Arc::clone(stop), Arc::clone(&bucket));
                if let Ok(h) = thread::Builder::new()
                    .name("recv-conn".into())
                    .spawn(move || serve(stream, &stop, bucket.as_ref().as_ref()))
                {
                    conns.push(h);
                }
                join_finished(conns);
            },
            |conns| {
                for h in conns {
                    let _ = h.join();
                }
            },
        )?;
        Ok(FallbackServer {
            addr: acceptor.addr,
            _acceptor: acceptor,
        })
    }
}

/// A token bucket as nginx's `limit_req ... nodelay` keeps one: `burst + 1`
/// requests at once, refilled at `rate` a second.
struct Bucket {
    limit: Limit,
    /// Tokens left, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(limit: Limit) -> Bucket {
        let full = f64::from(limit.burst) + 1.0;
        Bucket {
            limit,
            state: Mutex::new((full, Instant::now())),
        }
    }

    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = (now - state.1).as_secs_f64() * f64::from(self.limit.rate);
        state.0 = (state.0 + refill).min(f64::from(self.limit.burst) + 1.0);
        state.1 = now;
        let allowed = state.0 >= 1.0;
        if allowed {
            state.0 -= 1.0;
        }
        allowed
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool, bucket: Option<&Bucket>) {
    let _ = stream.set_nodelay(true);
    // Wake now and then to notice shutdown; never block on a client that
    // stopped reading.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = String::new();
    'conn: loop {
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            // A read that times out keeps what it read in `line`, so `line`
            // is cleared only after a whole line is handled.
            match reader.read_line(&mut line) {
                Ok(0) => break 'conn,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        break 'conn;
                    }
                    continue;
                }
                Err(_) => break 'conn,
            }
            if line == "\r\n" || line == "\n" {
                line.clear();
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                content_length = v.trim().parse().unwrap_or(0);
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
            line.clear();
        }
        let mut left = content_length;
        let mut sink = [0u8; 4096];
        while left > 0 {
            let want = left.min(sink.len());
            match reader.read(&mut sink[..want]) {
                Ok(0) => break 'conn,
                Ok(n) => left -= n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::SeqCst) {
                        break 'conn;
                    }
                }
                Err(_) => break 'conn,
            }
        }
        let reply: &[u8] = match (bucket.is_none_or(Bucket::take), close) {
            (true, true) => b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            (true, false) => b"HTTP/1.1 204 No Content\r\n\r\n",
            (false, true) => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            (false, false) => b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
        };
        if out.write_all(reply).is_err() || close {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

/// An endpoint that accepts connections and never answers, like a receiver
/// stuck in a deadlock. Holds every connection until dropped.
pub struct Hanging {
    pub addr: SocketAddr,
    _acceptor: Acceptor,
}

impl Hanging {
    pub fn start() -> io::Result<Hanging> {
        let acceptor = Acceptor::start(
            "hang-accept",
            |held: &mut Vec<TcpStream>, stream, _| held.push(stream),
            |held| {
                for s in held {
                    let _ = s.shutdown(Shutdown::Both);
                }
            },
        )?;
        Ok(Hanging {
            addr: acceptor.addr,
            _acceptor: acceptor,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

/// A child that serves until stopped (a receiver such as `hookpool
/// listen`), in its own process group. Its stdout is read to the end by a
/// thread, which counts the lines by their first word and keeps the last.
/// Stopped (SIGTERM, then SIGKILL after 5 s) and reaped on drop.
pub struct Service {
    child: Child,
    output: Option<JoinHandle<ServiceOutput>>,
    /// The first line it printed.
    pub first_line: String,
}

/// What a [`Service`] printed after its first line.
#[derive(Debug, Default)]
pub struct ServiceOutput {
    /// Lines by their first word.
    pub by_first_word: std::collections::BTreeMap<String, u64>,
    pub last_line: Option<String>,
}

impl Service {
    /// Starts `cmd` and waits up to `ready` for its first line on stdout.
    pub fn start(mut cmd: Command, ready: Duration) -> io::Result<Service> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let spawned = thread::Builder::new()
            .name("service-stdout".into())
            .spawn(move || {
                let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
                let _ = first_tx.send(lines.next().unwrap_or_default());
                let mut out = ServiceOutput::default();
                for line in lines {
                    let word = line.split_whitespace().next().unwrap_or("").to_owned();
                    *out.by_first_word.entry(word).or_default() += 1;
                    out.last_line = Some(line);
                }
                out
            });
        let mut service = Service {
            child,
            output: None,
            first_line: String::new(),
        };
        service.output = Some(spawned?);
        service.first_line = first_rx
            .recv_timeout(ready)
            .map_err(|_| io::Error::other(format!("no first line within {ready:?}")))?;
        Ok(service)
    }

    /// Stops it (SIGTERM first, so that it can print a summary) and returns
    /// what it printed.
    pub fn stop(mut self) -> ServiceOutput {
        stop_group(&mut self.child, Duration::from_secs(5));
        self.output
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        stop_group(&mut self.child, Duration::from_secs(5));
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
    }
}

/// The numbers in a JSON array with two decimals, space-separated (per
/// round figures in the printed tables).
pub fn two_decimals(values: &serde_json::Value) -> String {
    values
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(serde_json::Value::as_f64)
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The median of a few numbers (NaN ignored).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Runs `cmd` with stdout piped and stderr inherited, for at most `limit`:
/// past it the child is killed. Always waits for the child and joins the
/// thread reading its output. Returns the exit status and stdout.
pub fn run_bounded(cmd: Command, limit: Duration) -> Result<(ExitStatus, String), String> {
    run(cmd, limit, false).map(|r| (r.status, r.stdout))
}

/// What [`run_traced`] gives back.
pub struct Traced {
    pub status: ExitStatus,
    pub stdout: String,
    /// Each line of stderr, with when it was read (since the start).
    pub stderr: Vec<(Duration, String)>,
    /// From the start to the exit, seen within 20 ms.
    pub elapsed: Duration,
}

/// Like [`run_bounded`], with stderr piped too: each of its lines is
/// stamped with the time it was read, for a trace of what the child logged.
pub fn run_traced(cmd: Command, limit: Duration) -> Result<Traced, String> {
    run(cmd, limit, true)
}

fn run(mut cmd: Command, limit: Duration, trace: bool) -> Result<Traced, String> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if trace {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = thread::Builder::new()
        .name("child-stdout".into())
        .spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
        .map_err(|e| e.to_string());
    let stamper = child.stderr.take().map(|stderr| {
        thread::Builder::new()
            .name("child-stderr".into())
            .spawn(move || {
                BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .map(|line| (started.elapsed(), line))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    });
    let deadline = started + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().map_err(|e| e.to_string());
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(e.to_string());
            }
        }
    };
    let elapsed = started.elapsed();
    // The pipes close when the child has exited, so the readers end.
    let out = reader?.join().map_err(|_| "the stdout reader panicked")?;
    let stderr = match stamper {
        Some(h) => h?.join().map_err(|_| "the stderr reader panicked")?,
        None => Vec::new(),
    };
    let status = status?;
    if timed_out {
        return Err(format!("killed after {limit:?}: {cmd:?}"));
    }
    Ok(Traced {
        status,
        stdout: out,
        stderr,
        elapsed,
    })
}

/// Runs a child (for at most `limit`) and returns the JSON object it printed
/// after [`RESULT_PREFIX`].
pub fn run_child(cmd: Command, limit: Duration) -> Result<serde_json::Value, String> {
    let shown = format!("{cmd:?}");
    let (status, out) = run_bounded(cmd, limit)?;
    let result = out
        .lines()
        .filter_map(|l| l.strip_prefix(RESULT_PREFIX))
        .filter_map(|json| serde_json::from_str(json).ok())
        .next_back();
    match result {
        Some(v) if status.success() => Ok(v),
        _ => Err(format!("child failed ({status}): {shown}")),
    }
}

/// One line of `uname`-like facts for the report.
pub fn machine() -> serde_json::Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({ "cpu": cpu, "cores": cores, "kernel": kernel, "rustc": rustc })
}
