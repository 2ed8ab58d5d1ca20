//! `examples/entries_server/` run as a real process: the HTTP API, the
//! webhooks it sends to a receiver on 127.0.0.1, the dead-letter file when
//! the queue is full, and a SIGTERM while webhooks are still queued.
//!
//! The first test asks cargo to build the example with this test's profile,
//! features and target directory: a no-op after `cargo test`, which builds
//! examples, and a (bounded) build when only this target is run, so a stale
//! binary is never tested. Signals are sent with `kill`, hence unix only.

#![cfg(unix)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use common::server::{Recorded, Reply, TestServer};
use common::{Gate, promtool_check, wait_until};
use hookpool::{DeadLetter, DeadLetterReason, JsonlDeadLetters, SigningSecret, verify};
use serde_json::{Value, json};

const BOUND: Duration = Duration::from_secs(10);
const BUILD_BOUND: Duration = Duration::from_secs(600);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Every variable the server reads, cleared so the caller's environment
/// cannot change a test.
const SERVER_VARS: [&str; 9] = [
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WORKERS",
    "QUEUE_CAPACITY",
    "LISTEN",
    "DEAD_LETTERS",
    "SHUTDOWN_TIMEOUT",
    "WEBHOOK_TIMEOUT",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------
// Finding (or building) the example, and running it.
// ---------------------------------------------------------------------------

/// The example's binary, built once per test run.
fn binary() -> &'static Path {
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
fn build_example(profile_dir: &Path) {
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
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Waits at most `bound` for the child to exit; kills it and returns `None`
/// if it does not.
fn wait_for_exit(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
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

/// A running entries server. Dropping it kills the process if it is still
/// running, waits for it, and removes its dead-letter file.
struct Service {
    child: Child,
    addr: String,
    dead_letters: PathBuf,
    stdout: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

/// How the process ended.
struct Exit {
    status: ExitStatus,
    /// The last line on stdout, parsed.
    summary: Value,
    stderr: String,
    /// The dead-letter file's letters, read after the exit.
    letters: Vec<DeadLetter>,
}

impl Service {
    /// Starts the server on a free port with these variables (and a fresh
    /// dead-letter file), and waits for its `listening on` line.
    fn start(name: &str, vars: &[(&str, &str)]) -> Service {
        let dead_letters = std::env::temp_dir().join(format!(
            "hookpool-entries-{}-{name}.jsonl",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&dead_letters);
        let mut cmd = Command::new(binary());
        for var in SERVER_VARS {
            cmd.env_remove(var);
        }
        cmd.env("LISTEN", "127.0.0.1:0")
            .env("DEAD_LETTERS", &dead_letters)
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

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a signal, waits (bounded) for the process to exit, and returns
    /// its status, summary line and stderr.
    fn stop(self, signal: &str) -> Exit {
        self.signal(signal);
        self.exit()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Waits (bounded) until stderr has shown `needle`.
    fn wait_for_stderr(&self, needle: &str, bound: Duration) {
        assert!(
            wait_until(bound, || self.stderr.lock().unwrap().contains(needle)),
            "{needle:?} not on stderr within {bound:?}:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    /// Waits (bounded) for the exit after a signal, and returns the status,
    /// summary line and stderr.
    fn exit(mut self) -> Exit {
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

    fn dead_letters(&self) -> Vec<DeadLetter> {
        match JsonlDeadLetters::read(&self.dead_letters) {
            Ok(letters) => letters,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {}: {e}", self.dead_letters.display()),
        }
    }
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
        let _ = std::fs::remove_file(&self.dead_letters);
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers.
// ---------------------------------------------------------------------------

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

struct Answer {
    status: u16,
    body: Value,
    headers: ureq::http::HeaderMap,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
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

fn post(service: &Service, body: &str) -> Answer {
    answer(
        agent()
            .post(service.url("/entries"))
            .header("Content-Type", "application/json")
            .send(body),
    )
}

fn post_entry(service: &Service, n: u64) -> u64 {
    let a = post(
        service,
        &json!({"text": format!("entry {n}"), "mood": 1 + n % 10, "category": "test"}).to_string(),
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_u64().expect("an entry id")
}

fn metrics(service: &Service) -> String {
    let mut resp = agent()
        .get(service.url("/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.body_mut().read_to_string().expect("the metrics text")
}

/// The value of the sample whose line starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn payload(req: &Recorded) -> Value {
    serde_json::from_slice(&req.body).expect("a JSON webhook body")
}

/// Entry ids in the webhooks the receiver saw, with their events.
fn received(receiver: &TestServer) -> HashSet<(String, u64)> {
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
fn assert_each_promise_kept(
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
// The tests.
// ---------------------------------------------------------------------------

#[test]
fn a_new_entry_is_answered_201_and_sent_as_a_signed_webhook() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start(
        "created",
        &[("WEBHOOK_URL", url.as_str()), ("WEBHOOK_SECRET", SECRET)],
    );

    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let a = answer(
        agent()
            .post(service.url("/entries"))
            .header("X-User-Id", "ada")
            .send(r#"{"text": "a good day", "mood": 8, "category": "work"}"#),
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let id = a.body["id"].as_u64().unwrap();
    assert_eq!(
        a.header("location"),
        Some(format!("/entries/{id}").as_str())
    );
    assert_eq!(a.body["user_id"], "ada");
    assert_eq!(a.body["text"], "a good day");
    assert_eq!(a.body["mood"], 8);
    assert_eq!(a.body["category"], "work");
    assert!(a.body["created_at"].as_u64().unwrap() >= before);

    assert!(receiver.wait_for_requests(1, BOUND));
    let req = &receiver.requests()[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hooks"));
    let p = payload(req);
    let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "event",
            "entry_id",
            "user_id",
            "text",
            "mood",
            "category",
            "timestamp"
        ])
    );
    assert_eq!(p["event"], "entry_created");
    assert_eq!(p["entry_id"], id);
    assert_eq!(p["user_id"], "ada");
    assert_eq!(p["text"], "a good day");
    assert_eq!(p["mood"], 8);
    assert_eq!(p["category"], "work");
    assert_eq!(p["timestamp"], a.body["created_at"]);
    let header = |name| req.header(name).unwrap_or_default();
    assert_eq!(
        verify(
            &[SigningSecret::new(SECRET).unwrap()],
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &req.body,
            SystemTime::now(),
            Duration::from_secs(300),
        ),
        Ok(())
    );

    // SIGINT shuts down like SIGTERM.
    let exit = service.stop("-INT");
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    assert_eq!(exit.summary["delivered"], 1, "{}", exit.summary);
    assert_eq!(exit.summary["dead_lettered"], 0);
}

#[test]
fn invalid_requests_get_400_naming_the_field() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("invalid", &[("WEBHOOK_URL", url.as_str())]);

    let long_text = "x".repeat(10_001);
    let too_long = json!({"text": long_text, "mood": 5, "category": "c"}).to_string();
    let cases: [(&str, Value); 12] = [
        ("{not json", Value::Null),
        ("", Value::Null),
        ("[1, 2]", Value::Null),
        (r#"{"mood": 5, "category": "c"}"#, json!("text")),
        (
            r#"{"text": "  ", "mood": 5, "category": "c"}"#,
            json!("text"),
        ),
        (r#"{"text": 7, "mood": 5, "category": "c"}"#, json!("text")),
        (&too_long, json!("text")),
        (
            r#"{"text": "t", "mood": 11, "category": "c"}"#,
            json!("mood"),
        ),
        (
            r#"{"text": "t", "mood": 0, "category": "c"}"#,
            json!("mood"),
        ),
        (
            r#"{"text": "t", "mood": 5.5, "category": "c"}"#,
            json!("mood"),
        ),
        (r#"{"text": "t", "mood": 5}"#, json!("category")),
        (
            r#"{"text": "t", "mood": 5, "category": "c", "colour": "red"}"#,
            json!("colour"),
        ),
    ];
    for (body, field) in cases {
        let a = post(&service, body);
        assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        assert_eq!(a.body["field"], field, "{body}: {:?}", a.body);
        let error = a.body["error"].as_str().expect("an error message");
        if let Value::String(f) = &field {
            assert!(error.contains(f.as_str()), "{body}: {error}");
        }
    }
    let a = post(&service, r#"{"text": "t", "mood": 11, "category": "c"}"#);
    assert_eq!(a.body["error"], "mood must be an integer from 1 to 10");

    let a = answer(
        agent()
            .post(service.url("/entries"))
            .header("X-User-Id", "")
            .send(r#"{"text": "t", "mood": 5, "category": "c"}"#),
    );
    assert_eq!((a.status, &a.body["field"]), (400, &json!("user_id")));

    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(70_000));
    assert_eq!(post(&service, &big).status, 413);
    assert_eq!(answer(agent().get(service.url("/nope")).call()).status, 404);
    let a = answer(agent().get(service.url("/entries")).call());
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));

    // No webhook for any of them: nothing was accepted, nothing was received.
    let text = metrics(&service);
    assert_eq!(
        sample(
            &text,
            "hookpool_webhooks_accepted_total{pool=\"entries-hooks\"}"
        ),
        Some(0.0)
    );
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.summary["accepted"], 0);
    assert_eq!(receiver.request_count(), 0);
}

#[test]
fn deleting_an_entry_sends_entry_deleted_and_unknown_ids_are_404() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("deleted", &[("WEBHOOK_URL", url.as_str())]);

    let id = post_entry(&service, 3);
    let a = answer(
        agent()
            .delete(service.url(&format!("/entries/{id}")))
            .call(),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["id"], id);
    assert_eq!(a.body["text"], "entry 3");

    assert!(receiver.wait_for_requests(2, BOUND));
    let deleted = receiver
        .requests()
        .iter()
        .map(payload)
        .find(|p| p["event"] == "entry_deleted")
        .expect("an entry_deleted webhook");
    assert_eq!(deleted["entry_id"], id);
    assert_eq!(deleted["user_id"], "anonymous");
    assert_eq!(deleted["text"], "entry 3");
    assert_eq!(deleted["mood"], 4);
    assert_eq!(deleted["category"], "test");
    assert!(deleted["timestamp"].is_u64());

    for path in [
        format!("/entries/{id}"),
        "/entries/999".into(),
        "/entries/abc".into(),
    ] {
        let a = answer(agent().delete(service.url(&path)).call());
        assert_eq!(a.status, 404, "{path}");
        assert!(
            a.body["error"].as_str().unwrap().contains("no entry"),
            "{:?}",
            a.body
        );
    }
    let a = answer(agent().put(service.url("/entries/1")).send("{}"));
    assert_eq!((a.status, a.header("allow")), (405, Some("DELETE")));

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.summary["delivered"], 2, "{}", exit.summary);
    assert_eq!(receiver.request_count(), 2);
}

#[test]
fn metrics_are_prometheus_text() {
    let receiver = TestServer::start(|_| Reply::Status(204));
    let url = receiver.url("/hooks");
    let service = Service::start("metrics", &[("WEBHOOK_URL", url.as_str())]);
    post_entry(&service, 1);

    let resp = agent()
        .get(service.url("/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some(hookpool::prometheus::CONTENT_TYPE)
    );
    // The webhook is queued just after the answer: wait for it to count.
    let mut text = String::new();
    assert!(wait_until(BOUND, || {
        text = metrics(&service);
        sample(
            &text,
            "hookpool_webhooks_delivered_total{pool=\"entries-hooks\"}",
        ) == Some(1.0)
    }));
    assert!(text.contains("# TYPE hookpool_webhooks_accepted_total counter"));
    assert_eq!(
        sample(
            &text,
            "hookpool_webhooks_accepted_total{pool=\"entries-hooks\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "entries_server_entries"), Some(1.0));
    assert_eq!(
        sample(&text, "entries_server_webhooks_queue_full_total"),
        Some(0.0)
    );
    promtool_check(&text);

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
}

#[test]
fn a_full_queue_never_fails_the_api_and_dead_letters_the_webhooks() {
    // The receiver holds every answer until the gate opens, so the one
    // worker stays busy and the one-slot queue stays full.
    let gate = Gate::default();
    let hold = gate.clone();
    let receiver = TestServer::start(move |_| {
        hold.wait_for(BOUND);
        Reply::Status(204)
    });
    let url = receiver.url("/hooks");
    let service = Service::start(
        "queue-full",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("QUEUE_CAPACITY", "1"),
        ],
    );

    let started = Instant::now();
    let ids: Vec<u64> = (0..12).map(|n| post_entry(&service, n)).collect();
    // Every answer came while no delivery could finish.
    assert!(started.elapsed() < BOUND);
    assert!(receiver.request_count() <= 1);

    // One webhook in flight, one queued, the rest (at least 10) dead-lettered.
    let mut text = String::new();
    assert!(
        wait_until(BOUND, || {
            text = metrics(&service);
            sample(&text, "entries_server_webhooks_queue_full_total").is_some_and(|n| n >= 10.0)
        }),
        "{text}"
    );
    let letters = service.dead_letters();
    assert!(letters.len() >= 10, "{} letters", letters.len());
    for letter in &letters {
        assert_eq!(letter.reason, DeadLetterReason::QueueFull);
        assert_eq!(letter.error, "queue is full");
        assert_eq!(letter.attempts, 0);
        assert_eq!(letter.url, url);
        // Ready for `hookpool replay`: the letter turns back into the webhook.
        assert!(letter.clone().into_webhook().is_ok());
    }

    gate.open();
    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}", exit.stderr);
    let s = &exit.summary;
    assert_eq!(s["queue_full"], exit.letters.len(), "{s}");
    assert_eq!(
        s["accepted"].as_u64().unwrap() + s["queue_full"].as_u64().unwrap(),
        12,
        "{s}"
    );
    assert_eq!(s["delivered"], s["accepted"], "{s}");
    let promised: Vec<_> = ids.iter().map(|id| ("entry_created", *id)).collect();
    assert_each_promise_kept(
        &promised,
        &receiver,
        &exit.letters,
        &[DeadLetterReason::QueueFull],
    );
}

#[test]
fn sigterm_with_webhooks_queued_delivers_or_dead_letters_each_one() {
    // 300 ms per delivery and one worker: most webhooks are still queued at
    // the 0.5 s shutdown deadline.
    let receiver = TestServer::start(|_| {
        Reply::Delay(Duration::from_millis(300), Box::new(Reply::Status(204)))
    });
    let url = receiver.url("/hooks");
    let service = Service::start(
        "sigterm",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("QUEUE_CAPACITY", "64"),
            ("SHUTDOWN_TIMEOUT", "0.5"),
            ("WEBHOOK_TIMEOUT", "5"),
        ],
    );

    let mut promised: Vec<(&str, u64)> = (0..10)
        .map(|n| ("entry_created", post_entry(&service, n)))
        .collect();
    let deleted = promised[0].1;
    let a = answer(
        agent()
            .delete(service.url(&format!("/entries/{deleted}")))
            .call(),
    );
    assert_eq!(a.status, 200);
    promised.push(("entry_deleted", deleted));

    // One delivery in flight and the rest waiting in the queue.
    assert!(receiver.wait_for_requests(1, BOUND));
    let mut text = String::new();
    assert!(
        wait_until(BOUND, || {
            text = metrics(&service);
            sample(&text, "hookpool_queue_depth{pool=\"entries-hooks\"}").is_some_and(|n| n >= 1.0)
        }),
        "{text}"
    );

    let exit = service.stop("-TERM");
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let s = &exit.summary;
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(n("accepted") + n("queue_full"), 11, "{s}");
    assert_eq!(n("accepted"), n("delivered") + n("dead_lettered"), "{s}");
    assert_eq!(n("still_running"), 0, "{s}");
    assert_eq!(n("unsaved"), 0, "{s}");
    assert!(
        n("dead_lettered") >= 1,
        "the deadline should have cut the queue: {s}"
    );

    let letters = &exit.letters;
    assert!(
        letters
            .iter()
            .any(|l| l.reason == DeadLetterReason::Shutdown),
        "{letters:?}"
    );
    assert_each_promise_kept(
        &promised,
        &receiver,
        letters,
        &[DeadLetterReason::Shutdown, DeadLetterReason::QueueFull],
    );
    assert!(
        exit.stderr.contains("stopping HTTP intake"),
        "{}",
        exit.stderr
    );
}

/// Reads from `stream` up to the end of a response head (bounded by the
/// stream's read timeout) and returns it.
fn read_head(stream: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the head ended early ({other:?}): {head:?}"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// README: after SIGTERM, requests get 503 (or no answer), never a 201
/// that promises a webhook. A slow client holds an HTTP thread inside its
/// body (the server answered its `Expect: 100-continue`, so the handler is
/// reading it); the server waits its 5 s grace for it, then stops promises.
/// A request sent after the signal, and the slow one finished after the
/// grace, are both answered 503. The receiver holds the one promised
/// webhook meanwhile, so the process is still there to answer them.
#[test]
fn requests_after_sigterm_get_503() {
    use std::io::Write;
    let release = Gate::default();
    let held = release.clone();
    let receiver = TestServer::start(move |_| {
        held.wait();
        Reply::Status(204)
    });
    let url = receiver.url("/hooks");
    let service = Service::start(
        "late",
        &[
            ("WEBHOOK_URL", url.as_str()),
            ("WORKERS", "1"),
            ("SHUTDOWN_TIMEOUT", "30"),
        ],
    );
    let promised = post_entry(&service, 1);
    assert!(receiver.wait_for_requests(1, BOUND));

    let body = json!({"text": "slow", "mood": 5, "category": "test"}).to_string();
    let mut slow = std::net::TcpStream::connect(&service.addr).unwrap();
    slow.set_read_timeout(Some(BOUND)).unwrap();
    write!(
        slow,
        "POST /entries HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        service.addr,
        body.len()
    )
    .unwrap();
    let cont = read_head(&mut slow);
    assert!(cont.starts_with("HTTP/1.1 100 "), "{cont:?}");

    service.signal("-TERM");
    service.wait_for_stderr("stopping HTTP intake", BOUND);
    let late_service = service.url("/entries");
    let late = thread::spawn(move || {
        answer(
            agent()
                .post(late_service)
                .header("Content-Type", "application/json")
                .send(json!({"text": "late", "mood": 5, "category": "test"}).to_string()),
        )
    });
    service.wait_for_stderr("HTTP requests still unfinished after", BOUND);
    slow.write_all(body.as_bytes()).unwrap();
    let slow_answer = read_head(&mut slow);
    assert!(slow_answer.starts_with("HTTP/1.1 503 "), "{slow_answer:?}");
    let late = late.join().expect("the late request's thread");
    assert_eq!(late.status, 503, "{:?}", late.body);
    assert_eq!(late.header("Retry-After"), Some("5"));

    release.open();
    let exit = service.exit();
    assert!(exit.status.success(), "{}\n{}", exit.status, exit.stderr);
    let s = &exit.summary;
    assert_eq!(
        (
            s["entries"].as_u64(),
            s["accepted"].as_u64(),
            s["delivered"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{s}"
    );
    // Only the promised entry's webhook was ever sent.
    assert_eq!(
        received(&receiver),
        HashSet::from([("entry_created".to_owned(), promised)])
    );
}

#[test]
fn bad_configuration_exits_2_with_a_clear_message() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "WEBHOOK_URL is required"),
        (&[("WEBHOOK_URL", "ftp://example.com/")], "WEBHOOK_URL"),
        (
            &[("WEBHOOK_URL", "http://127.0.0.1:9/"), ("WORKERS", "zero")],
            "WORKERS must be a positive integer",
        ),
        (
            &[
                ("WEBHOOK_URL", "http://127.0.0.1:9/"),
                ("QUEUE_CAPACITY", "0"),
            ],
            "QUEUE_CAPACITY must be a positive integer",
        ),
        (
            &[
                ("WEBHOOK_URL", "http://127.0.0.1:9/"),
                ("WEBHOOK_SECRET", "whsec_!!not-base64!!"),
            ],
            "WEBHOOK_SECRET",
        ),
    ];
    for (vars, message) in cases {
        let mut cmd = Command::new(binary());
        for var in SERVER_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("LISTEN", "127.0.0.1:0")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the entries server");
        let stderr = drain(child.stderr.take().unwrap());
        let status = wait_for_exit(&mut child, BOUND);
        let stderr = stderr.join().unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains(message), "{vars:?}: {stderr}");
        assert!(
            !stderr.contains("not-base64"),
            "a secret was printed: {stderr}"
        );
    }
}
