//! The CLI's HTTPS flags on `send` and `replay`: `--cacert` (repeatable),
//! `--tls-roots bundled|platform`, `--cert` and `--key`. The platform's
//! store is the child's own, set through `SSL_CERT_FILE`.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hookpool::{DeadLetterReason, JsonlDeadLetters};
use serde_json::Value;

use crate::TempDir;
use crate::pki::{Ca, server_config};
use crate::receiver::TlsReceiver;

/// The longest one run of the binary may take.
const RUN: Duration = Duration::from_secs(30);

struct Output {
    code: i32,
    summary: Value,
    stderr: String,
}

/// Runs `hookpool ARGS` in `dir` with one JSON line on stdin; `env` is
/// added to a clean `SSL_CERT_*` environment. Killed if it overruns [`RUN`].
fn hookpool(dir: &TempDir, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let input = dir.write("input.jsonl", "{\"n\":1}\n");
    let (out, err) = (dir.path("stdout"), dir.path("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookpool"));
    cmd.current_dir(&dir.0)
        .args(args)
        .env_remove("HOOKPOOL_SECRETS")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "off")
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start hookpool");
    let deadline = Instant::now() + RUN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookpool {args:?} did not exit within {RUN:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    Output {
        code: status.code().expect("an exit code"),
        summary: stdout
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

/// `send --url URL --dead-letters dead.jsonl --max-attempts 1`, then `extra`.
fn send(dir: &TempDir, url: &str, extra: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut args = vec![
        "send",
        "--url",
        url,
        "--dead-letters",
        "dead.jsonl",
        "--max-attempts",
        "1",
    ];
    args.extend_from_slice(extra);
    hookpool(dir, &args, env)
}

fn delivered(o: &Output) -> u64 {
    o.summary["delivered"]
        .as_u64()
        .unwrap_or_else(|| panic!("no summary: {}", o.stderr))
}

/// The error of the only letter in the dead-letter file.
fn only_error(dir: &TempDir) -> String {
    let letters = JsonlDeadLetters::read(dir.path("dead.jsonl")).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::PermanentFailure);
    letters[0].error.clone()
}

#[test]
fn cacert_trusts_a_private_ca_and_can_be_repeated() {
    let (ca, other) = (Ca::new("cli ca"), Ca::new("cli other ca"));
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let url = receiver.url("localhost", "/h");
    let dir = TempDir::new("cacert");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let other_file = dir.write("other.pem", &other.pem);

    let without = send(&dir, &url, &[], &[]);
    assert_eq!(without.code, 1, "{}", without.stderr);
    assert!(
        only_error(&dir).starts_with("tls: unknown issuer"),
        "{}",
        only_error(&dir)
    );
    std::fs::remove_file(dir.path("dead.jsonl")).unwrap();

    let other_only = ["--cacert", other_file.to_str().unwrap()];
    assert_eq!(delivered(&send(&dir, &url, &other_only, &[])), 0);
    std::fs::remove_file(dir.path("dead.jsonl")).unwrap();

    let both = [
        "--cacert",
        other_file.to_str().unwrap(),
        "--cacert",
        ca_file.to_str().unwrap(),
    ];
    let with = send(&dir, &url, &both, &[]);
    assert_eq!((with.code, delivered(&with)), (0, 1), "{}", with.stderr);
}

#[test]
fn tls_roots_platform_uses_the_system_store() {
    let (ca, unrelated) = (Ca::new("store ca"), Ca::new("unrelated ca"));
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let url = receiver.url("localhost", "/h");
    let dir = TempDir::new("platform");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let unrelated_file = dir.write("unrelated.pem", &unrelated.pem);
    let platform = ["--tls-roots", "platform"];

    // A store without the CA: refused.
    let refused = send(&dir, &url, &platform, &[("SSL_CERT_FILE", &unrelated_file)]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(only_error(&dir).starts_with("tls: unknown issuer"));
    std::fs::remove_file(dir.path("dead.jsonl")).unwrap();

    // An administrator adds the CA to the store: delivered, no flag needed.
    let added = send(&dir, &url, &platform, &[("SSL_CERT_FILE", &ca_file)]);
    assert_eq!((added.code, delivered(&added)), (0, 1), "{}", added.stderr);

    // Bundled roots ignore the store.
    let bundled = send(&dir, &url, &[], &[("SSL_CERT_FILE", &ca_file)]);
    assert_eq!(delivered(&bundled), 0);
    std::fs::remove_file(dir.path("dead.jsonl")).unwrap();

    // --cacert joins the platform's roots.
    let extra = [
        "--tls-roots",
        "platform",
        "--cacert",
        ca_file.to_str().unwrap(),
    ];
    let joined = send(&dir, &url, &extra, &[("SSL_CERT_FILE", &unrelated_file)]);
    assert_eq!(
        (joined.code, delivered(&joined)),
        (0, 1),
        "{}",
        joined.stderr
    );
}

#[test]
fn cert_and_key_on_send_and_replay() {
    let (server_ca, clients) = (Ca::new("cli server ca"), Ca::new("cli client ca"));
    let receiver = TlsReceiver::start(server_config(
        &server_ca.issue(&["localhost"]),
        Some(&clients),
    ));
    let url = receiver.url("localhost", "/h");
    let me = clients.issue(&["hookpool.test"]);
    let dir = TempDir::new("mtls");
    let ca_file = dir.write("ca.pem", &server_ca.pem);
    let cert = dir.write("client.pem", &me.cert_pem);
    let key = dir.write("client.key", &me.key_pem);
    let cacert = ["--cacert", ca_file.to_str().unwrap()];

    let without = send(&dir, &url, &cacert, &[]);
    assert_eq!(without.code, 1, "{}", without.stderr);
    assert!(only_error(&dir).starts_with("tls: client certificate required"));

    let identity = [
        "--cacert",
        ca_file.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let mut replay = vec!["replay", "dead.jsonl"];
    replay.extend_from_slice(&identity);
    let replayed = hookpool(&dir, &replay, &[]);
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    assert_eq!(replayed.summary["delivered"], 1);

    let sent = send(&dir, &url, &identity, &[]);
    assert_eq!((sent.code, delivered(&sent)), (0, 1), "{}", sent.stderr);
    assert_eq!(receiver.requests().len(), 2);
    assert!(receiver.requests().iter().all(|r| r.client_certificate));
}

#[test]
fn unusable_tls_files_are_usage_errors_naming_the_file() {
    let ca = Ca::new("usage ca");
    let (mine, other) = (ca.issue(&["client.test"]), ca.issue(&["client.test"]));
    let dir = TempDir::new("usage");
    let cert = dir.write("client.pem", &mine.cert_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let missing = dir.path("missing.pem");
    let url = "https://localhost:9/h";
    let (cert, other_key, missing) = (
        cert.to_str().unwrap(),
        other_key.to_str().unwrap(),
        missing.to_str().unwrap(),
    );

    let mismatch = send(&dir, url, &["--cert", cert, "--key", other_key], &[]);
    assert_eq!(mismatch.code, 2);
    assert_eq!(
        mismatch.stderr.trim(),
        format!(
            "hookpool: --cert/--key: the private key in {other_key} does not match the certificate in {cert}"
        )
    );
    let unreadable = send(&dir, url, &["--cert", cert, "--key", missing], &[]);
    assert_eq!(unreadable.code, 2);
    assert!(
        unreadable
            .stderr
            .starts_with(&format!("hookpool: --cert/--key: cannot read {missing}: ")),
        "{}",
        unreadable.stderr
    );
    let no_ca = send(&dir, url, &["--cacert", missing], &[]);
    assert_eq!(no_ca.code, 2);
    assert!(
        no_ca
            .stderr
            .contains(&format!("--cacert: cannot read {missing}"))
    );
    let alone = send(&dir, url, &["--cert", cert], &[]);
    assert_eq!(alone.code, 2, "--cert needs --key: {}", alone.stderr);
    assert!(alone.stderr.contains("--key"), "{}", alone.stderr);
    let bad_roots = send(&dir, url, &["--tls-roots", "system"], &[]);
    assert_eq!(bad_roots.code, 2);
    // Nothing was sent, so no dead-letter file was left behind.
    assert!(
        !dir.path("dead.jsonl").exists()
            || JsonlDeadLetters::read(dir.path("dead.jsonl"))
                .unwrap()
                .is_empty()
    );
}
