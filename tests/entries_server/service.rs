//! Running the example: finding (or building) it, starting it in a
//! directory of its own, talking to it, and reading what it left.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hookpool::{DeadLetter, DeadLetterReason, JsonlDeadLetters};
use serde_json::{Value, json};

use crate::common::server::{Recorded, Reply, TestServer};
use crate::common::tempdir::TempDir;
use crate::common::{Gate, wait_until};

pub(crate) const BOUND: Duration = Duration::from_secs(10);
pub(crate) const BUILD_BOUND: Duration = Duration::from_secs(600);
pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A second secret: a restarted server signs with it, so the receiver can
/// tell which process sent a request.
pub(crate) const SECRET_2: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The journal file when `JOURNAL` is unset, in the server's working
/// directory (the test's own directory).
pub(crate) const DEFAULT_JOURNAL: &str = "entries-journal.db";
/// Not in the README: caps the journal's size, so it fails as on a full disk.
pub(crate) const JOURNAL_MAX_BYTES: &str = "ENTRIES_TEST_JOURNAL_MAX_BYTES";
/// Every variable the server reads, cleared so the caller's environment
/// cannot change a test.
pub(crate) const SERVER_VARS: [&str; 11] = [
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WORKERS",
    "QUEUE_CAPACITY",
    "LISTEN",
    "DEAD_LETTERS",
    "JOURNAL",
    JOURNAL_MAX_BYTES,
    "SHUTDOWN_TIMEOUT",
    "WEBHOOK_TIMEOUT",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------
// Finding (or building) the example, and running it.
// ---------------------------------------------------------------------------

/// The example's binary, built once per test run.
pub(crate) fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // <target>[/<triple>]/<profile>/deps/<this test>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps");
        let binary = profile_dir
            .join("examples")
            .join(format!("entries_server{}", std::env::consts::EXE_SUFFIX));
        // Always ask cargo: it is a no-op when `cargo test` built the example
        // already, and it rebuilds one left stale by `cargo test --test ...`.
        build_example(profile_dir);
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// `cargo build --example entries_server` with this test's profile,
/// features, target directory and target triple.
pub(crate) fn build_example(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "entries_server"])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    // Cargo sets these for the test process. Passed on, they would look like
    // changes to build scripts that watch them (ring watches
    // CARGO_MANIFEST_DIR) and rebuild half the dependency tree.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory name");
    cmd.args([
        "--profile",
        if profile == "debug" { "dev" } else { profile },
    ]);
    // Cargo marks the root of a target directory with CACHEDIR.TAG.
    let is_target_root = |dir: &Path| dir.join("CACHEDIR.TAG").is_file();
    if let Some(parent) = profile_dir.parent() {
        if is_target_root(parent) {
            cmd.arg("--target-dir").arg(parent);
        } else if let Some(root) = parent.parent().filter(|d| is_target_root(d)) {
            cmd.arg("--target-dir")
                .arg(root)
                .arg("--target")
                .arg(parent.file_name().expect("a target triple directory name"));
        }
    }
    if cfg!(feature = "cli") {
        cmd.args(["--features", "cli"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo to build the example");
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_for_exit(&mut child, BUILD_BOUND);
    let stderr = stderr.join().expect("the stderr reader");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("building the example failed ({s}):\n{stderr}"),
        None => panic!("building the example took longer than {BUILD_BOUND:?}:\n{stderr}"),
    }
}

/// Reads a pipe to its end on a thread.
pub(crate) fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits at most `bound` for the child to exit; kills it and returns `None`
/// if it does not.
pub(crate) fn wait_for_exit(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(bound, || {
        status = child.try_wait().expect("poll the child");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// A running entries server, in a directory of its own (its working
/// directory, holding its dead-letter file and journal). Dropping it kills
/// the process if it is still running and waits for it; the directory goes
/// with the last holder.
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) dir: Arc<TempDir>,
    pub(crate) dead_letters: PathBuf,
    pub(crate) stdout: mpsc::Receiver<String>,
    pub(crate) readers: Vec<JoinHandle<()>>,
    pub(crate) stderr: Arc<Mutex<String>>,
}

/// How the process ended.
pub(crate) struct Exit {
    pub(crate) status: ExitStatus,
    /// The last line on stdout, parsed.
    pub(crate) summary: Value,
    pub(crate) stderr: String,
    /// The dead-letter file's letters, read after the exit.
    pub(crate) letters: Vec<DeadLetter>,
}

impl Service {
    /// Starts the server on a free port with these variables, in a fresh
    /// directory, and waits for its `listening on` line.
    pub(crate) fn start(name: &str, vars: &[(&str, &str)]) -> Service {
        Service::start_in(Arc::new(TempDir::new(&format!("entries-{name}"))), vars)
    }

    /// Starts the server in `dir`, where a previous one may have left its
    /// journal and dead letters.
    pub(crate) fn start_in(dir: Arc<TempDir>, vars: &[(&str, &str)]) -> Service {
        let dead_letters = dir.path("dead-letters.jsonl");
        let mut cmd = server_command(&dir);
        cmd.env("DEAD_LETTERS", &dead_letters)
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the entries server");

        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_text) = (
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        );
        let readers = vec![
            thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            }),
            thread::spawn(move || {
                for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                    let mut text = err_text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            }),
        ];
        let mut service = Service {
            child,
            addr: String::new(),
            dir,
            dead_letters,
            stdout,
            readers,
            stderr,
        };
        match service.stdout.recv_timeout(BOUND) {
            Ok(line) => match line.strip_prefix("listening on ") {
                Some(addr) => service.addr = addr.to_owned(),
                None => panic!("unexpected first line {line:?}"),
            },
            Err(e) => {
                let _ = service.child.kill();
                let _ = service.child.wait();
                for r in service.readers.drain(..) {
                    let _ = r.join();
                }
                panic!(
                    "the server did not start ({e}):\n{}",
                    service.stderr.lock().unwrap()
                );
            }
        }
        service
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a signal, waits (bounded) for the process to exit, and returns
    /// its status, summary line and stderr.
    pub(crate) fn stop(self, signal: &str) -> Exit {
        self.signal(signal);
        self.exit()
    }

    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Waits (bounded) until stderr has shown `needle`.
    pub(crate) fn wait_for_stderr(&self, needle: &str, bound: Duration) {
        assert!(
            wait_until(bound, || self.stderr.lock().unwrap().contains(needle)),
            "{needle:?} not on stderr within {bound:?}:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    /// Waits (bounded) for the exit after a signal, and returns the status,
    /// summary line and stderr.
    pub(crate) fn exit(mut self) -> Exit {
        let status = wait_for_exit(&mut self.child, BOUND);
        for r in self.readers.drain(..) {
            r.join().expect("a pipe reader");
        }
        let stderr = self.stderr.lock().unwrap().clone();
        let Some(status) = status else {
            panic!("the server did not exit within {BOUND:?} of its signal:\n{stderr}");
        };
        let lines: Vec<String> = self.stdout.try_iter().collect();
        let summary = lines
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no summary line in {lines:?}:\n{stderr}"));
        Exit {
            status,
            summary,
            stderr,
            letters: self.dead_letters(),
        }
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        read_letters(&self.dead_letters)
    }

    /// SIGKILL: no chance to clean up. Waits for the process and its pipes;
    /// returns its stderr.
    pub(crate) fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL the server");
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            r.join().expect("a pipe reader");
        }
        self.stderr.lock().unwrap().clone()
    }
}

/// The server's command, cleared of the caller's settings, run in `dir`.
pub(crate) fn server_command(dir: &TempDir) -> Command {
    let mut cmd = Command::new(binary());
    for var in SERVER_VARS {
        cmd.env_remove(var);
    }
    cmd.env("LISTEN", "127.0.0.1:0").current_dir(dir.dir());
    cmd
}

pub(crate) fn read_letters(path: &Path) -> Vec<DeadLetter> {
    match JsonlDeadLetters::read(path) {
        Ok(letters) => letters,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    }
}

/// A server that should stop at start: its exit code and stderr.
pub(crate) fn start_failing(dir: &TempDir, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = server_command(dir)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the entries server");
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_for_exit(&mut child, BOUND);
    (status.and_then(|s| s.code()), stderr.join().unwrap())
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers.
// ---------------------------------------------------------------------------

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) headers: ureq::http::HeaderMap,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut resp = result.expect("an HTTP answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.body_mut().read_to_string().expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

pub(crate) fn post(service: &Service, body: &str) -> Answer {
    answer(
        agent()
            .post(service.url("/entries"))
            .header("Content-Type", "application/json")
            .send(body),
    )
}

/// Creates entries 0 to `n - 1`; returns the webhooks their 201s promised.
pub(crate) fn create_entries(service: &Service, n: u64) -> Vec<(&'static str, u64)> {
    (0..n)
        .map(|n| ("entry_created", post_entry(service, n)))
        .collect()
}

pub(crate) fn post_entry(service: &Service, n: u64) -> u64 {
    let a = post(
        service,
        &json!({"text": format!("entry {n}"), "mood": 1 + n % 10, "category": "test"}).to_string(),
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_u64().expect("an entry id")
}

pub(crate) fn metrics(service: &Service) -> String {
    let mut resp = agent()
        .get(service.url("/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut().read_to_string().expect("the metrics text")
}

/// The value of the sample whose line starts with `series`.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) fn payload(req: &Recorded) -> Value {
    serde_json::from_slice(&req.body).expect("a JSON webhook body")
}

/// Entry ids in the webhooks the receiver saw, with their events.
pub(crate) fn received(receiver: &TestServer) -> HashSet<(String, u64)> {
    receiver
        .requests()
        .iter()
        .map(payload)
        .map(|p| {
            (
                p["event"].as_str().unwrap().to_owned(),
                p["entry_id"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Checks that every webhook a 2xx answer promised was received or is in the
/// dead-letter file with an allowed reason.
pub(crate) fn assert_each_promise_kept(
    promised: &[(&str, u64)],
    receiver: &TestServer,
    letters: &[DeadLetter],
    allowed: &[DeadLetterReason],
) {
    let got = received(receiver);
    let mut lettered = HashSet::new();
    for letter in letters {
        assert!(allowed.contains(&letter.reason), "{letter:?}");
        let p: Value = serde_json::from_str(letter.payload.get()).unwrap();
        lettered.insert((
            p["event"].as_str().unwrap().to_owned(),
            p["entry_id"].as_u64().unwrap(),
        ));
    }
    for (event, id) in promised {
        let key = ((*event).to_owned(), *id);
        assert!(
            got.contains(&key) || lettered.contains(&key),
            "{event} for entry {id} was neither received nor dead-lettered"
        );
    }
}

// ---------------------------------------------------------------------------
// The journal.
// ---------------------------------------------------------------------------

/// A receiver that answers 204 while `healthy`, after `delay`, and otherwise
/// never answers (down: each delivery hangs, in flight).
pub(crate) fn switchable_receiver(delay: Duration) -> (TestServer, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&healthy);
    let server = TestServer::start(move |_| {
        if h.load(Ordering::SeqCst) {
            Reply::Delay(delay, Box::new(Reply::Status(204)))
        } else {
            Reply::Hang
        }
    });
    (server, healthy)
}

/// A receiver that holds every answer until the gate opens (at most
/// [`BOUND`]).
pub(crate) fn gated_receiver() -> (TestServer, Gate) {
    let gate = Gate::default();
    let hold = gate.clone();
    let server = TestServer::start(move |_| {
        hold.wait_for(BOUND);
        Reply::Status(204)
    });
    (server, gate)
}

/// Starts the server again in `dir` with `vars`, waits until the receiver
/// has every webhook in `promised` (at most 3 [`BOUND`]s), then stops it
/// with SIGTERM and returns how it ended. `context` goes in the failure
/// message.
pub(crate) fn restart_until_received(
    dir: &Arc<TempDir>,
    vars: &[(&str, &str)],
    receiver: &TestServer,
    promised: &[(&str, u64)],
    context: &str,
) -> Exit {
    let service = Service::start_in(Arc::clone(dir), vars);
    wait_until(3 * BOUND, || missing(receiver, promised).is_empty());
    let exit = service.stop("-TERM");
    let lost = missing(receiver, promised);
    assert!(
        lost.is_empty(),
        "{context}: promised webhooks lost: {lost:?}"
    );
    assert!(exit.status.success(), "{context}: {}", exit.stderr);
    exit
}

/// The journal's `webhooks` rows, after `PRAGMA integrity_check` says ok.
/// Only while no server has the file open.
pub(crate) fn journal_rows(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open the journal");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", path.display());
    conn.query_row("SELECT COUNT(*) FROM webhooks", [], |r| r.get(0))
        .unwrap()
}

/// One delivery of a webhook, as the receiver saw it.
pub(crate) struct Seen {
    pub(crate) webhook_id: String,
    /// 0: signed with `SECRET` (the first process), 1: with `SECRET_2`.
    pub(crate) signer: usize,
    pub(crate) body: Vec<u8>,
}

/// Every delivery the receiver saw, by event and entry id.
pub(crate) fn seen(receiver: &TestServer) -> BTreeMap<(String, u64), Vec<Seen>> {
    let mut all: BTreeMap<(String, u64), Vec<Seen>> = BTreeMap::new();
    for r in receiver.requests() {
        let p = payload(&r);
        let key = (
            p["event"].as_str().unwrap().to_owned(),
            p["entry_id"].as_u64().unwrap(),
        );
        all.entry(key).or_default().push(Seen {
            webhook_id: r.header("webhook-id").unwrap_or_default().to_owned(),
            signer: signer(&r),
            body: r.body.clone(),
        });
    }
    all
}

/// Which secret signed a request: 0 for `SECRET`, 1 for `SECRET_2`, 2 for
/// neither (an unsigned server).
pub(crate) fn signer(r: &Recorded) -> usize {
    crate::common::signer(r, &[SECRET, SECRET_2]).unwrap_or(2)
}

/// The changes whose webhook the receiver has not seen.
pub(crate) fn missing(receiver: &TestServer, promised: &[(&str, u64)]) -> Vec<(String, u64)> {
    let got = received(receiver);
    promised
        .iter()
        .map(|(event, id)| ((*event).to_owned(), *id))
        .filter(|key| !got.contains(key))
        .collect()
}
