//! Running the `hookpool` binary in tests: a command in a directory of its
//! own, a run to completion with its summary line, and inputs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::child::Running;
use super::server::{Recorded, Reply, Script, TestServer};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// The longest any one run of the binary may take.
pub const RUN: Duration = Duration::from_secs(30);

/// The binary, run in `dir`, with no secrets from the environment and no logging.
pub fn hookpool(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookpool"));
    cmd.current_dir(dir)
        .env_remove("HOOKPOOL_SECRETS")
        .env("RUST_LOG", "off");
    cmd
}

/// Runs to completion with `input` on stdin.
pub fn run(cmd: Command, input: &[u8]) -> Output {
    let mut child = Running::spawn(cmd);
    child.write_stdin(input);
    output(child.finish(RUN))
}

/// The exit code, summary line and stderr of a finished run.
pub fn output((code, lines, stderr): (i32, Vec<String>, String)) -> Output {
    Output {
        code,
        summary: lines
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null),
        stderr,
    }
}

pub struct Output {
    pub code: i32,
    pub summary: Value,
    pub stderr: String,
}

impl Output {
    pub fn n(&self, field: &str) -> u64 {
        self.summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {}; stderr: {}", self.summary, self.stderr))
    }
}

pub fn ok_server() -> TestServer {
    TestServer::start(Script::new(vec![Reply::Status(204)]).handler())
}

pub fn bodies(server: &TestServer) -> BTreeSet<String> {
    server.requests().iter().map(Recorded::body_text).collect()
}

/// `{"n":i}` a line for each `i`.
pub fn lines(n: std::ops::Range<u32>) -> String {
    n.map(|i| format!("{{\"n\":{i}}}\n")).collect()
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(u8)]
pub enum Mode {
    /// 204 at once.
    Ok,
    /// 204 after a few milliseconds, so that kills land among requests in
    /// flight.
    Slow,
    /// 500 to the first attempt of each webhook, then 204: kills land among
    /// retries and while the breaker is open.
    FailFirst,
    /// Never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub id: String,
    pub body: String,
    /// Which run signed it: 0 with [`SECRET`], 1 with [`OTHER_SECRET`].
    pub run: usize,
    /// Answered 2xx.
    pub delivered: bool,
}

/// A receiver on 127.0.0.1 that logs every request.
pub struct Receiver {
    pub server: TestServer,
    mode: Arc<AtomicU8>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    pub fn start(mode: Mode) -> Receiver {
        let state = Arc::new(AtomicU8::new(mode as u8));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (m, log) = (Arc::clone(&state), Arc::clone(&seen));
        let server = TestServer::start(move |r: &Recorded| {
            let id = r.header("webhook-id").unwrap_or("").to_owned();
            let mut log = log.lock().unwrap();
            let first = !log.iter().any(|s| s.id == id);
            let mode = m.load(Ordering::SeqCst);
            let reply = match mode {
                m if m == Mode::Hang as u8 => Reply::Hang,
                m if m == Mode::FailFirst as u8 && first => Reply::Status(500),
                m if m == Mode::Slow as u8 => {
                    Reply::Delay(Duration::from_millis(3), Box::new(Reply::Status(204)))
                }
                _ => Reply::Status(204),
            };
            log.push(Seen {
                id,
                body: r.body_text(),
                run: signer(r),
                delivered: matches!(reply, Reply::Status(204) | Reply::Delay(..)),
            });
            reply
        });
        Receiver {
            server,
            mode: state,
            seen,
        }
    }

    pub fn url(&self) -> String {
        self.server.url("/in")
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Which secret signed a request: 0 for [`SECRET`], 1 for [`OTHER_SECRET`]
/// (or neither).
pub fn signer(r: &Recorded) -> usize {
    super::signer(r, &[SECRET]).map_or(1, |_| 0)
}
