//! Running the `hookpool` binary on a shared queue in Redis
//! (tests/cli_redis.rs): commands with `--redis URL --queue NAME`, the
//! `status` counts, workers, and what the queue holds, read with redis-cli.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::child::Running;
use super::cli::{Output, RUN, SECRET, hookpool, output, run};
use super::redis::RedisServer;
use super::tempdir::TempDir;
use super::wait_until;

/// The longest any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(30);

/// `hookpool ARGS` in `dir`, with `--redis URL --queue NAME` after them.
pub fn on_queue(dir: &TempDir, args: &[&str], redis: &str, queue: &str) -> Command {
    let mut cmd = hookpool(dir.dir());
    cmd.args(args).args(["--redis", redis, "--queue", queue]);
    cmd
}

/// `cmd` with `extra` arguments after its own.
pub fn with(mut cmd: Command, extra: &[&str]) -> Command {
    cmd.args(extra);
    cmd
}

/// The summary's numbers `fields`, in order.
pub fn ns(out: &Output, fields: &[&str]) -> Vec<u64> {
    fields.iter().map(|f| out.n(f)).collect()
}

/// Checks that stderr says `text`.
pub fn says(out: &Output, text: &str) {
    assert!(out.stderr.contains(text), "{text:?} not in: {}", out.stderr);
}

/// `hookpool status`'s line, which must exit 0.
pub fn status(dir: &TempDir, redis: &str, queue: &str) -> Value {
    let out = run(on_queue(dir, &["status"], redis, queue), b"");
    assert_eq!(out.code, 0, "status: {}", out.stderr);
    out.summary
}

/// The five counts of a status line, in order.
pub fn counts(status: &Value) -> [u64; 5] {
    ["ready", "delayed", "processing", "dead", "workers_alive"].map(|k| {
        status[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {status}"))
    })
}

/// Waits until `status` shows `want` (ready, delayed, processing, dead,
/// workers alive); the last line seen if it never does.
pub fn wait_for_counts(dir: &TempDir, redis: &str, queue: &str, want: [u64; 5]) {
    let mut last = Value::Null;
    let seen = wait_until(WAIT, || {
        last = status(dir, redis, queue);
        counts(&last) == want
    });
    assert!(seen, "status never showed {want:?}; last: {last}");
}

/// A `hookpool worker` on the queue, once it said it started.
pub fn worker(dir: &TempDir, redis: &str, queue: &str, extra: &[&str]) -> Running {
    let mut cmd = on_queue(dir, &["worker"], redis, queue);
    cmd.args(["--secret", SECRET]).args(extra);
    let child = Running::spawn(cmd);
    child.wait_for_stderr("worker on queue", WAIT);
    child
}

/// SIGTERM, then the exit code and summary.
pub fn stop(child: Running) -> Output {
    child.signal("TERM");
    output(child.finish(RUN))
}

/// The `n` of a `{"n":i}` body.
pub fn number(body: &str) -> u64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["n"].as_u64().unwrap()
}

/// The `n` of every webhook the queue holds (ready, delayed or claimed),
/// sorted, read with redis-cli.
pub fn queued_numbers(redis: &RedisServer, queue: &str) -> Vec<u64> {
    let jobs = redis.cli(&["HVALS", &format!("hookpool:{{{queue}}}:jobs")]);
    let mut numbers: Vec<u64> = jobs
        .lines()
        .filter(|l| !l.is_empty())
        .map(|job| {
            let job: Value = serde_json::from_str(job).unwrap_or_else(|e| panic!("{e}: {job}"));
            number(job["body"].as_str().unwrap())
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Every key of the queue with its value (`DUMP`), to check that nothing
/// changed.
pub fn snapshot(redis: &RedisServer, queue: &str) -> BTreeMap<String, String> {
    let pattern = format!("hookpool:{{{queue}}}:*");
    redis
        .cli(&["--scan", "--pattern", &pattern])
        .lines()
        .map(|key| (key.to_owned(), redis.cli(&["DUMP", key])))
        .collect()
}

/// `send --redis` of `input` (`-` for standard input, given `stdin`) to
/// the queue `queue`, once Redis holds 50 of its webhooks.
pub fn sending(dir: &TempDir, url: &str, queue: &str, input: &str, stdin: &str) -> Running {
    let send = on_queue(dir, &["send", "--url", "http://127.0.0.1:9/in"], url, queue);
    let mut child = Running::spawn(with(send, &[input]));
    // At most about 64 KiB: a pipe's buffer, so that this does not block.
    child.write_stdin(stdin.as_bytes());
    let ready = || status(dir, url, queue)["ready"].as_u64().unwrap_or(0);
    assert!(wait_until(WAIT, || ready() >= 50), "{}", ready());
    child
}

/// A stopped send's summary: exit 1, interrupted, every line handled
/// enqueued, and those lines in the queue, each once.
pub fn check_stopped(out: &Output, redis: &RedisServer, dir: &TempDir, queue: &str) -> u64 {
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.summary["interrupted"], true, "{}", out.summary);
    let lines = out.n("lines");
    assert_eq!(out.n("enqueued"), lines, "{}", out.summary);
    let next = format!("stopped before line {}", lines + 1);
    says(out, &next);
    assert_eq!(queued_numbers(redis, queue), (0..lines).collect::<Vec<_>>());
    assert_eq!(
        counts(&status(dir, &redis.url(), queue)),
        [lines, 0, 0, 0, 0]
    );
    lines
}
