//! The `hookpool` binary end to end: `send`, `replay` and `listen` against
//! receivers on 127.0.0.1. Every child is killed and waited for, even when a
//! test fails, and every wait is bounded.
#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::child::Running;
use common::cli::{OTHER_SECRET, RUN, SECRET, bodies, hookpool, lines, ok_server, run};
use common::server::{Recorded, Reply, TestServer};
use common::tempdir::TempDir;
use hookpool::{
    DeadLetterReason, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    JsonlDeadLetters, SigningSecret, new_message_id, signature_header, verify,
};
use serde_json::Value;

#[test]
fn send_delivers_every_good_line_and_reports_bad_ones() {
    let dir = TempDir::new("good-bad");
    let server = ok_server();
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &server.url("/in"), "--workers", "2"]);
    let out = run(cmd, b"{\"n\":1}\nnot json\n\n{\"n\": 2}\r\n[1,2,3]\n");

    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        (
            out.n("lines"),
            out.n("invalid"),
            out.n("accepted"),
            out.n("delivered"),
            out.n("dead_lettered")
        ),
        (5, 1, 3, 3, 0),
        "{}",
        out.summary
    );
    assert!(out.summary["elapsed_ms"].is_u64());
    assert!(
        out.stderr.contains("line 2: invalid JSON"),
        "{}",
        out.stderr
    );
    // Each line is the body byte for byte.
    let expected: BTreeSet<String> = ["{\"n\":1}", "{\"n\": 2}", "[1,2,3]"]
        .map(String::from)
        .into();
    assert_eq!(bodies(&server), expected);
    // Nothing was dead-lettered, so the default file is not left behind.
    assert!(!dir.path("hookpool-dead-letters.jsonl").exists());

    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &server.url("/in")]);
    let out = run(cmd, lines(0..20).as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.n("delivered"), out.n("invalid")), (20, 0));
}

#[test]
fn send_signs_and_wraps_lines_in_an_envelope() {
    let dir = TempDir::new("envelope");
    let server = ok_server();
    let mut cmd = hookpool(dir.dir());
    cmd.args([
        "send",
        "--url",
        &server.url("/in"),
        "--event-type",
        "entry.created",
    ])
    // Two secrets, as during a rotation, from the environment.
    .env("HOOKPOOL_SECRETS", format!("{SECRET} {OTHER_SECRET}"));
    let out = run(cmd, b"{\"entry\": 42}\n");
    assert_eq!(out.code, 0, "{}", out.stderr);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "entry.created");
    assert_eq!(body["data"], serde_json::json!({"entry": 42}));
    let timestamp: jiff::Timestamp = body["timestamp"].as_str().unwrap().parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(timestamp);
    assert!(age.as_secs() >= 0 && age.as_secs() < 60, "{timestamp}");
    for secret in [SECRET, OTHER_SECRET] {
        let verified = verify(
            &[SigningSecret::new(secret).unwrap()],
            r.header(HEADER_WEBHOOK_ID).unwrap(),
            r.header(HEADER_WEBHOOK_TIMESTAMP).unwrap(),
            r.header(HEADER_WEBHOOK_SIGNATURE).unwrap(),
            &r.body,
            SystemTime::now(),
            Duration::from_secs(300),
        );
        assert_eq!(verified, Ok(()));
    }
}

#[test]
fn send_waits_for_room_and_never_drops_a_line() {
    let dir = TempDir::new("backpressure");
    let server = TestServer::start(|_: &Recorded| {
        Reply::Delay(Duration::from_millis(1), Box::new(Reply::Status(200)))
    });
    let mut cmd = hookpool(dir.dir());
    cmd.args([
        "send",
        "--url",
        &server.url("/in"),
        "--workers",
        "2",
        "--queue",
        "1",
    ]);
    let input = lines(0..300);
    let out = run(cmd, input.as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.n("accepted"), out.n("delivered")), (300, 300));
    let expected: BTreeSet<String> = input.lines().map(String::from).collect();
    assert_eq!(bodies(&server), expected);
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    let dir = TempDir::new("usage");
    let url = "http://127.0.0.1:9/in";
    let cases: &[(&[&str], &str)] = &[
        (&["send"], "--url"),
        (
            &["send", "--url", "ftp://example.com/"],
            "unsupported url scheme",
        ),
        (&["send", "--url", "not a url"], "--url"),
        (
            &["send", "--url", url, "--secret", "whsec_!!!"],
            "not valid base64",
        ),
        (&["send", "--url", url, "--workers", "0"], "--workers"),
        (&["send", "--url", url, "--event-type", ""], "--event-type"),
        (
            &[
                "send",
                "--url",
                url,
                "--dead-letters",
                "no/such/dir/x.jsonl",
            ],
            "dead-letter file",
        ),
        (
            &["send", "--url", url, "no-such-input.jsonl"],
            "no-such-input.jsonl",
        ),
        (
            &["send", "--url", url, "--journal", "j.db", "--no-journal"],
            "--no-journal",
        ),
        (
            &["send", "--url", url, "--journal", "no/such/dir/j.db"],
            "journal no/such/dir/j.db",
        ),
        (
            &["replay", "no-such-letters.jsonl"],
            "no-such-letters.jsonl",
        ),
        (&["replay", "x", "--url", "http://"], "--url"),
        (&["listen", "--fail-rate", "1.5"], "--fail-rate"),
        (&["listen", "--addr", "not-an-address"], "cannot listen"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, message) in cases {
        let mut cmd = hookpool(dir.dir());
        cmd.args(*args);
        let out = run(cmd, b"");
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("!!!"),
            "a secret was printed: {}",
            out.stderr
        );
    }
    assert!(!dir.path("hookpool-dead-letters.jsonl").exists());
    assert!(!dir.path("hookpool-journal.db").exists());
    let mut cmd = hookpool(dir.dir());
    cmd.arg("--help");
    assert_eq!(run(cmd, b"").code, 0);
}

#[test]
fn replay_delivers_again_once_the_endpoint_recovers_and_keeps_what_fails() {
    let dir = TempDir::new("replay");
    let letters = dir.path("dead.jsonl");
    let up = Arc::new(AtomicBool::new(false));
    let state = Arc::clone(&up);
    let server = TestServer::start(move |r: &Recorded| {
        if !state.load(Ordering::SeqCst) {
            Reply::Status(503)
        } else if r.body_text().contains("poison") {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    });
    let quick = [
        "--max-attempts",
        "2",
        "--base-delay-ms",
        "1",
        "--breaker-failures",
        "0",
    ];

    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &server.url("/in"), "--dead-letters"])
        .arg(&letters)
        .args(quick);
    let out = run(cmd, b"{\"n\":1}\n{\"poison\":true}\n{\"n\":2}\n");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!((out.n("delivered"), out.n("dead_lettered")), (0, 3));
    let first = JsonlDeadLetters::read(&letters).unwrap();
    assert_eq!(first.len(), 3);
    assert!(
        first
            .iter()
            .all(|l| l.reason == DeadLetterReason::RetriesExhausted)
    );

    up.store(true, Ordering::SeqCst);
    let before = server.request_count();
    let mut cmd = hookpool(dir.dir());
    cmd.arg("replay").arg(&letters).args(quick);
    let out = run(cmd, b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        (
            out.n("letters"),
            out.n("delivered"),
            out.n("dead_lettered"),
            out.n("remaining")
        ),
        (3, 2, 1, 1)
    );
    // The file keeps only the letter that failed again, with its id.
    let left = JsonlDeadLetters::read(&letters).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload.get(), "{\"poison\":true}");
    let poison = first
        .iter()
        .find(|l| l.payload.get().contains("poison"))
        .unwrap();
    assert_eq!(left[0].id, poison.id);
    assert!(!dir.path("dead.jsonl.tmp").exists());
    // Replayed with the ids they had.
    let replayed: BTreeSet<String> = server.requests()[before..]
        .iter()
        .map(|r| r.header(HEADER_WEBHOOK_ID).unwrap().to_owned())
        .collect();
    let ids: BTreeSet<String> = first.iter().map(|l| l.id.clone()).collect();
    assert_eq!(replayed, ids);

    // Somewhere else, that letter goes through too, and the file is left empty.
    let elsewhere = ok_server();
    let mut cmd = hookpool(dir.dir());
    cmd.arg("replay")
        .arg(&letters)
        .args(["--url", &elsewhere.url("/other")]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.n("remaining"), 0);
    assert!(JsonlDeadLetters::read(&letters).unwrap().is_empty());
    assert_eq!(
        elsewhere.requests()[0].header(HEADER_WEBHOOK_ID),
        Some(poison.id.as_str())
    );
}

/// `send --no-journal` to an endpoint that hangs, interrupted while it is
/// still reading, and `interrupts - 1` times more once its drain has begun:
/// it drains for the whole drain timeout, exits 1, and every line read is
/// in the dead-letter file with reason `shutdown`, as before the journal.
fn interrupted_send(name: &str, interrupts: usize, drain: Duration) {
    let dir = TempDir::new(name);
    let letters = dir.path("dead.jsonl");
    let server = TestServer::start(|_: &Recorded| Reply::Hang);
    let mut cmd = hookpool(dir.dir());
    cmd.args([
        "send",
        "--url",
        &server.url("/in"),
        "--workers",
        "2",
        "--queue",
        "3",
        "--no-journal",
    ])
    .args(["--drain-timeout-ms", &drain.as_millis().to_string()])
    .arg("--dead-letters")
    .arg(&letters);
    let mut child = Running::spawn(cmd);
    // stdin stays open: the tool is still reading when it is interrupted.
    child.write_stdin(lines(1..11).as_bytes());
    assert!(server.wait_for_requests(2, Duration::from_secs(10)));
    let first = Instant::now();
    child.interrupt();
    for _ in 1..interrupts {
        child.wait_for_stderr(
            "interrupted: delivering what is queued",
            Duration::from_secs(10),
        );
        child.interrupt();
        assert!(
            first.elapsed() < drain,
            "interrupted again too late to test anything"
        );
    }
    let (code, stdout, stderr) = child.finish(Duration::from_secs(10) + drain);

    assert_eq!(code, 1, "{stderr}");
    // Nothing cut the drain short.
    assert!(first.elapsed() >= drain, "{:?}", first.elapsed());
    let summary: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["lines"], 10, "{summary}");
    assert_eq!(summary["delivered"], 0);
    assert_eq!(summary["dead_lettered"], 10);
    let stored = JsonlDeadLetters::read(&letters).unwrap();
    assert!(
        stored
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown)
    );
    let payloads: BTreeSet<String> = stored.iter().map(|l| l.payload.get().to_owned()).collect();
    let expected: BTreeSet<String> = lines(1..11).lines().map(String::from).collect();
    assert_eq!(payloads, expected);
    assert_eq!(stored.len(), 10);
    assert_eq!(summary["kept"], 0);
    assert_eq!(summary["journal_file"], Value::Null);
    assert!(!dir.path("hookpool-journal.db").exists());
}

#[test]
fn ctrl_c_stops_send_and_dead_letters_every_line_not_delivered() {
    interrupted_send("interrupt", 1, Duration::from_millis(200));
}

/// README: a second Ctrl-C during `send` changes nothing.
#[test]
fn a_second_ctrl_c_changes_nothing() {
    interrupted_send("interrupt-twice", 2, Duration::from_secs(2));
}

/// README: retries stopped by `--max-elapsed-ms` give reason `max_elapsed`.
#[test]
fn send_gives_up_at_max_elapsed() {
    let dir = TempDir::new("max-elapsed");
    let letters = dir.path("dead.jsonl");
    let server = TestServer::start(|_: &Recorded| Reply::Status(503));
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &server.url("/in")])
        .args(["--max-elapsed-ms", "300", "--max-attempts", "1000"])
        .args(["--base-delay-ms", "1", "--breaker-failures", "0"])
        .arg("--dead-letters")
        .arg(&letters);
    let out = run(cmd, b"{\"n\":1}\n");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        out.summary["dead_lettered_by_reason"],
        serde_json::json!({"max_elapsed": 1}),
        "{}",
        out.summary
    );
    let stored = JsonlDeadLetters::read(&letters).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reason, DeadLetterReason::MaxElapsed);
    assert!(stored[0].attempts >= 2 && stored[0].attempts < 1000);
}

/// README: a letter `send` cannot write is printed on stderr as JSON.
#[test]
fn send_prints_letters_it_cannot_write_on_stderr_as_json() {
    let dir = TempDir::new("dev-full");
    let server = TestServer::start(|_: &Recorded| Reply::Status(400));
    let mut cmd = hookpool(dir.dir());
    cmd.args([
        "send",
        "--url",
        &server.url("/in"),
        "--dead-letters",
        "/dev/full",
    ]);
    let out = run(cmd, lines(0..3).as_bytes());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.n("dead_lettered"), 3);
    let printed: Vec<hookpool::DeadLetter> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        printed
            .iter()
            .all(|l| l.reason == DeadLetterReason::PermanentFailure),
        "{}",
        out.stderr
    );
    let payloads: BTreeSet<String> = printed.iter().map(|l| l.payload.get().to_owned()).collect();
    let expected: BTreeSet<String> = lines(0..3).lines().map(String::from).collect();
    assert_eq!(payloads, expected, "{}", out.stderr);
    assert_eq!(printed.len(), 3);
}

/// Writes a dead letter for `url` per payload to `path`, gives it `mode`,
/// and returns its contents.
fn letters_file(path: &Path, url: &str, payloads: &[&str], mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let sink = JsonlDeadLetters::open(path).unwrap();
    for payload in payloads {
        let webhook = hookpool::Webhook::from_json(url, *payload).unwrap();
        let letter =
            hookpool::DeadLetter::from_webhook(&webhook, DeadLetterReason::Shutdown, "stopped");
        hookpool::DeadLetterSink::store(&sink, &letter).unwrap();
    }
    drop(sink);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::read_to_string(path).unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// README: replay gives the rewritten FILE its permissions (0600 here,
/// while a new file would get 0644 under the usual umask).
#[test]
fn replay_keeps_the_file_permissions() {
    let dir = TempDir::new("replay-mode");
    let file = dir.path("dead.jsonl");
    let server = TestServer::start(|r: &Recorded| {
        if r.body_text().contains("poison") {
            Reply::Status(400)
        } else {
            Reply::Status(204)
        }
    });
    letters_file(
        &file,
        &server.url("/in"),
        &["{\"n\":1}", "{\"poison\":1}"],
        0o600,
    );
    let mut cmd = hookpool(dir.dir());
    cmd.arg("replay").arg(&file);
    let out = run(cmd, b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!((out.n("delivered"), out.n("remaining")), (1, 1));
    assert_eq!(JsonlDeadLetters::read(&file).unwrap().len(), 1);
    assert_eq!(mode(&file), 0o600);
}

/// README: when FILE cannot be rewritten, replay exits 1 and FILE is
/// unchanged. The rewrite is made to fail after the up-front check, and as
/// root too (who may write anywhere): the receiver puts a directory where
/// FILE.tmp goes when the first webhook arrives.
#[test]
fn replay_exits_1_and_leaves_the_file_unchanged_when_the_rewrite_fails() {
    let dir = TempDir::new("replay-fails");
    let file = dir.path("dead.jsonl");
    let tmp = dir.path("dead.jsonl.tmp");
    let blocker = tmp.clone();
    let server = TestServer::start(move |_: &Recorded| {
        let _ = std::fs::create_dir(&blocker);
        Reply::Status(204)
    });
    let before = letters_file(
        &file,
        &server.url("/in"),
        &["{\"n\":1}", "{\"n\":2}"],
        0o600,
    );
    let mut cmd = hookpool(dir.dir());
    cmd.arg("replay").arg(&file);
    let out = run(cmd, b"");
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Both were delivered, but the file could not say so: it keeps both.
    assert_eq!((out.n("delivered"), out.n("remaining")), (2, 2));
    assert!(out.summary["rewrite_error"].is_string(), "{}", out.summary);
    assert!(out.stderr.contains("it is unchanged"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert_eq!(mode(&file), 0o600);
    assert!(tmp.is_dir(), "replay removed what it did not create");
}

/// A signed request to `hookpool listen`: (status, Retry-After).
fn post(agent: &ureq::Agent, url: &str, secret: Option<&str>, body: &str) -> (u16, Option<String>) {
    let mut request = agent.post(url).header("Content-Type", "application/json");
    if let Some(secret) = secret {
        let id = new_message_id();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = signature_header(
            &[SigningSecret::new(secret).unwrap()],
            &id,
            ts,
            body.as_bytes(),
        );
        request = request
            .header(HEADER_WEBHOOK_ID, &id)
            .header(HEADER_WEBHOOK_TIMESTAMP, &ts.to_string())
            .header(HEADER_WEBHOOK_SIGNATURE, &sig);
    }
    let response = request.send(body).expect("an answer from hookpool listen");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (response.status().as_u16(), retry_after)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Starts `hookpool listen` on a free port; returns it and its URL.
fn listen(dir: &Path, args: &[&str]) -> (Running, String) {
    let mut cmd = hookpool(dir);
    cmd.args(["listen", "--addr", "127.0.0.1:0"]).args(args);
    let child = Running::spawn(cmd);
    let first = child.next_line(Duration::from_secs(10));
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first}"));
    let url = format!("http://{addr}/webhook");
    (child, url)
}

#[test]
fn listen_answers_202_then_429_when_full_and_401_on_a_bad_signature() {
    let dir = TempDir::new("listen");
    let (child, url) = listen(
        dir.dir(),
        &[
            "--workers",
            "1",
            "--queue",
            "1",
            "--process-ms",
            "2000",
            "--secret",
            SECRET,
        ],
    );
    let agent = agent();

    assert_eq!(post(&agent, &url, Some(SECRET), "{\"n\":1}"), (202, None));
    // One webhook is processed, one waits; then the queue is full.
    let mut statuses = Vec::new();
    for n in 2..8 {
        let (status, retry_after) = post(&agent, &url, Some(SECRET), &format!("{{\"n\":{n}}}"));
        statuses.push(status);
        if status == 429 {
            assert_eq!(retry_after.as_deref(), Some("1"));
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(post(&agent, &url, Some(OTHER_SECRET), "{}").0, 401);
    assert_eq!(post(&agent, &url, None, "{}").0, 401);

    child.interrupt();
    let (code, stdout, stderr) = child.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    let counts: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    let accepted = statuses.iter().filter(|s| **s == 202).count() as u64 + 1;
    assert_eq!(counts["accepted"], accepted, "{counts}");
    assert_eq!(counts["rejected_full"], 1);
    assert_eq!(counts["bad_signature"], 2);
    assert_eq!(counts["received"], accepted + 3);
    // One line per webhook, then the counts.
    assert_eq!(stdout.len() as u64, accepted + 3 + 1, "{stdout:?}");
    assert!(
        stdout.iter().any(|l| l.starts_with("429 msg_")),
        "{stdout:?}"
    );
    assert!(stdout.iter().any(|l| l.starts_with("401 ")), "{stdout:?}");
}

#[test]
fn listen_injects_failures_and_without_secrets_accepts_unsigned_webhooks() {
    let dir = TempDir::new("listen-fail");
    let agent = agent();
    let (failing, url) = listen(dir.dir(), &["--fail-rate", "1.0"]);
    assert_eq!(post(&agent, &url, None, "{}").0, 500);
    failing.interrupt();
    let (code, stdout, _) = failing.finish(Duration::from_secs(10));
    assert_eq!(code, 0);
    let counts: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    assert_eq!(counts["failed_injected"], 1);

    let (open, url) = listen(dir.dir(), &[]);
    assert_eq!(post(&agent, &url, None, "{}").0, 202);
    let status = agent.get(&url).call().unwrap().status().as_u16();
    assert_eq!(status, 405);
    drop(open);
}

#[test]
fn send_and_listen_agree_on_signatures() {
    let dir = TempDir::new("roundtrip");
    let (receiver, url) = listen(dir.dir(), &["--secret", SECRET, "--queue", "1000"]);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &url, "--secret", SECRET]);
    let out = run(cmd, lines(0..50).as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.n("delivered"), 50);
    // Each webhook was counted before it was answered.
    receiver.interrupt();
    let (_, stdout, _) = receiver.finish(Duration::from_secs(10));
    let counts: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    assert_eq!(
        (
            counts["accepted"].as_u64(),
            counts["bad_signature"].as_u64()
        ),
        (Some(50), Some(0))
    );
}

/// On a terminal, `send` shows a progress line with the rate, delivered,
/// retrying and dead-lettered; without one (a pipe), it does not. `script`
/// (util-linux) gives the child a real pseudo-terminal.
#[test]
fn send_shows_progress_only_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) is needed in CI"
        );
        eprintln!("skipped: script(1) is not installed");
        return;
    }
    let dir = TempDir::new("progress");
    let server = TestServer::start(|_: &Recorded| {
        Reply::Delay(Duration::from_millis(40), Box::new(Reply::Status(204)))
    });
    let input = dir.path("in.jsonl");
    std::fs::write(&input, lines(0..20)).unwrap();
    let command = format!(
        "{} send --url {} --workers 2 {}",
        env!("CARGO_BIN_EXE_hookpool"),
        server.url("/hooks"),
        input.display()
    );
    let mut tty = Command::new("script");
    tty.args(["-qec", &command, "/dev/null"])
        .current_dir(dir.dir())
        .env("RUST_LOG", "off");
    // Under `script`, everything the child writes to the terminal arrives on
    // script's stdout.
    let (code, transcript, _) = Running::spawn(tty).finish(RUN);
    let transcript = transcript.join("\n");
    assert_eq!(code, 0, "{transcript}");
    for part in ["/s, delivered ", "retrying ", "dead-lettered "] {
        assert!(
            transcript.contains(part),
            "no {part:?} on the terminal:\n{transcript}"
        );
    }

    let mut piped = hookpool(dir.dir());
    piped.args([
        "send",
        "--url",
        &server.url("/hooks"),
        input.to_str().unwrap(),
    ]);
    let piped = run(piped, b"");
    assert_eq!(piped.code, 0);
    assert_eq!(piped.n("delivered"), 20);
    assert!(
        !piped.stderr.contains("retrying "),
        "a progress line without a terminal:\n{}",
        piped.stderr
    );
}

/// README: `hookpool listen` answers 413 to a body over 4 MiB, and takes
/// one of exactly 4 MiB.
#[test]
fn listen_answers_413_to_a_body_over_4_mib() {
    use std::io::Read;
    let dir = TempDir::new("listen-413");
    let (child, url) = listen(dir.dir(), &[]);
    let limit = 4 * 1024 * 1024;
    let agent = agent();
    assert_eq!(post(&agent, &url, None, &"x".repeat(limit)).0, 202);
    // One byte more: the head alone is enough to refuse it, and the answer
    // comes before any of the body is sent.
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        limit + 1
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
    child.interrupt();
    let (code, stdout, stderr) = child.finish(Duration::from_secs(10));
    assert_eq!(code, 0, "{stderr}");
    let counts: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    assert_eq!(counts["accepted"], 1, "{counts}");
}

/// Issue 14's session, as a test: `hookpool send` with its default flags
/// (and the issue's `--max-attempts 2`) into `hookpool listen --workers 2
/// --queue 64 --process-ms 1`, which answers 429 with `Retry-After: 1`
/// whenever its queue is full, and takes about 2,000 a second. Every line
/// is delivered and none dead-lettered: the sender is paced, and pacing
/// does not count against the default `--max-elapsed-ms`. (Before pacing,
/// 818 of these 2,000 were dead-lettered with reason `max_elapsed`.)
#[test]
fn send_with_its_defaults_drains_into_a_receiver_that_pushes_back() {
    let dir = TempDir::new("send-pushback");
    let (receiver, url) = listen(
        dir.dir(),
        &["--workers", "2", "--queue", "64", "--process-ms", "1"],
    );
    std::fs::write(dir.path("in.jsonl"), lines(0..2000)).unwrap();
    let mut cmd = hookpool(dir.dir());
    cmd.args([
        "send",
        "--url",
        &url,
        "--event-type",
        "entry.created",
        "--max-attempts",
        "2",
        "in.jsonl",
    ]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.n("delivered"), out.n("dead_lettered")),
        (2000, 0),
        "{}",
        out.summary
    );
    assert!(
        out.n("push_backs") > 0,
        "never pushed back: {}",
        out.summary
    );
    receiver.interrupt();
    let (_, stdout, _) = receiver.finish(Duration::from_secs(10));
    let counts: Value = serde_json::from_str(stdout.last().unwrap()).unwrap();
    assert_eq!(counts["accepted"].as_u64(), Some(2000), "{counts}");
}

/// The requests a receiver saw in any one second, at most.
fn busiest_second(server: &TestServer) -> usize {
    let times: Vec<Instant> = server.requests().iter().map(|r| r.at).collect();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `--rate N` holds `send` and `replay` to N requests a second per
/// endpoint (10% over it allows for a late wake-up and the loopback's
/// jitter, and still fails a limiter that lets a burst by).
#[test]
fn send_and_replay_keep_to_rate() {
    let dir = TempDir::new("send-rate");
    let server = ok_server();
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &server.url("/in"), "--rate", "20"]);
    let started = Instant::now();
    let out = run(cmd, lines(0..40).as_bytes());
    assert_eq!((out.code, out.n("delivered")), (0, 40), "{}", out.stderr);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    let most = busiest_second(&server);
    assert!(most <= 22, "{most} requests within one second at --rate 20");

    let server = ok_server();
    let file = dir.path("dead.jsonl");
    let payloads: Vec<String> = (0..40).map(|i| format!("{{\"n\":{i}}}")).collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    letters_file(&file, &server.url("/in"), &payloads, 0o600);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["replay", "--rate", "20"]).arg(&file);
    let out = run(cmd, b"");
    assert_eq!((out.code, out.n("delivered")), (0, 40), "{}", out.stderr);
    let most = busiest_second(&server);
    assert!(most <= 22, "{most} requests within one second at --rate 20");
}
