//! `hookpool send` with its journal (issue 15): a send killed with SIGKILL
//! at random points, or interrupted, and run again delivers every line of
//! its input, and sends none twice but those in flight at the kill, with
//! the same id; an input that changed is refused; standard input is not
//! resumed. `replay` of a journal is in tests/cli_replay.rs.
//!
//! `HOOKPOOL_CRASH_ROUNDS` sets the kill rounds (10 by default);
//! `HOOKPOOL_CRASH_SEED` replays one run.
#![cfg(feature = "cli")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::child::Running;
use common::cli::{
    Mode, OTHER_SECRET, Output, RUN, Receiver, SECRET, Seen, hookpool, lines, output, run,
};
use common::tempdir::TempDir;
use common::tmpfs::Tmpfs;
use hookpool::{DeadLetterReason, Journal, JsonlDeadLetters};
use serde_json::Value;

const JOURNAL: &str = "hookpool-journal.db";

/// `hookpool send` of `input` in `dir`, signed with `secret`.
fn send(dir: &TempDir, url: &str, secret: &str, input: &str, extra: &[&str]) -> Command {
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", url, "--secret", secret])
        .args(["--workers", "4", "--queue", "16", "--base-delay-ms", "5"])
        // Failures open the breaker often, and briefly: kills land while it is open.
        .args(["--breaker-failures", "3", "--breaker-cooldown-ms", "20"])
        .args(extra)
        .arg(input);
    cmd
}

/// The input of the kill rounds: `n` JSON lines, a blank line now and then,
/// and some CRLF endings, so that offsets are not simply line counts.
fn crash_input(n: u32) -> String {
    let mut text = String::new();
    for i in 1..=n {
        if i % 37 == 0 {
            text.push('\n');
        }
        let end = if i % 5 == 0 { "\r\n" } else { "\n" };
        text.push_str(&format!("{{\"n\":{i}}}{end}"));
    }
    text
}

/// The line number a body stands at in [`crash_input`]'s order: its `n`.
fn number(body: &str) -> u32 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["n"].as_u64().unwrap() as u32
}

/// Checks what reached the receiver over a killed run (0) and its rerun
/// (1): every line delivered; each line under one id; a line delivered
/// twice only once by each run (in flight at the kill); and the killed run
/// sent nothing beyond the journal's cursor. Returns how many lines were
/// delivered twice.
fn check_every_line_once(
    seen: &[Seen],
    n: u32,
    resumed_after: Option<u32>,
    context: &str,
) -> usize {
    let mut twice = 0;
    let mut by_line: BTreeMap<u32, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        by_line.entry(number(&s.body)).or_default().push(s);
    }
    for line in 1..=n {
        let requests = by_line.get(&line).map_or(&[][..], Vec::as_slice);
        assert!(
            requests.iter().any(|s| s.delivered),
            "{context}: line {line} was never delivered: {requests:?}"
        );
        let ids: BTreeSet<&str> = requests.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids.len(),
            1,
            "{context}: line {line} sent under several ids"
        );
        let by: Vec<usize> = requests
            .iter()
            .filter(|s| s.delivered)
            .map(|s| s.run)
            .collect();
        assert!(
            matches!(by.as_slice(), [_] | [0, 1]),
            "{context}: line {line} delivered by runs {by:?}"
        );
        twice += usize::from(by.len() == 2);
        if requests.iter().any(|s| s.run == 0) {
            assert!(
                resumed_after.is_some_and(|after| line <= after),
                "{context}: the killed run sent line {line}, beyond the journal's cursor {resumed_after:?}"
            );
        }
    }
    assert_eq!(
        by_line.len(),
        n as usize,
        "{context}: requests for other lines"
    );
    twice
}

/// A send killed with SIGKILL at a random point (before its first request,
/// among submissions, among retries, while draining) and run again: every
/// line reaches the receiver, under one id, and the rerun's summary says
/// what it recovered and where it resumed. Lines are committed in batches
/// (with `--queue 16` and 4 workers, of 10 to 20 lines: a batch waits for
/// room for half the 20 webhooks that may be outstanding), so kills land
/// between and during batches; the cursor is a batch's last line.
#[test]
fn a_killed_send_run_again_delivers_every_line_once() {
    let (rounds, mut rng, seed) = common::crash_rounds("send kill rounds", 10);
    let n = 300;
    let (mut resumed_rounds, mut recovered_rounds) = (0, 0);
    for round in 0..rounds {
        let mode = [Mode::Slow, Mode::FailFirst, Mode::Ok][round % 3];
        let dir = TempDir::new(&format!("send-kill-{round}"));
        std::fs::write(dir.path("in.jsonl"), crash_input(n)).unwrap();
        let receiver = Receiver::start(mode);
        // Well short of the end, so that the first run is still going.
        let kill_after = rng.usize(0..(n as usize - 60));
        // Every other round commits without waiting for the disk, which a
        // process kill does not undo either.
        let sync: &[&str] = if round % 2 == 1 {
            &["--journal-sync", "normal"]
        } else {
            &[]
        };
        let first = Running::spawn(send(&dir, &receiver.url(), SECRET, "in.jsonl", sync));
        assert!(
            receiver.server.wait_for_requests(kill_after, RUN),
            "round {round}: {kill_after} requests never came"
        );
        let killed = first.kill();
        let context = format!(
            "round {round} ({mode:?} {sync:?}, killed after {kill_after} requests, seed {seed})"
        );
        assert!(killed, "{context}: the first run had already exited");

        receiver.set(Mode::Ok);
        let out = run(
            send(&dir, &receiver.url(), OTHER_SECRET, "in.jsonl", sync),
            b"",
        );
        assert_eq!(out.code, 0, "{context}: {}", out.stderr);
        let resumed = out.summary["resumed_after_line"].as_u64().map(|l| l as u32);
        let recovered = out.n("recovered");
        let blank = |upto: u32| (upto / 37) as u64;
        let after = resumed.unwrap_or(0);
        // Line numbers in the file count the blank lines too.
        assert_eq!(
            out.n("lines"),
            (n as u64 + blank(n)) - resumed.map_or(0, |r| r as u64),
            "{context}: {}",
            out.summary
        );
        let seen = receiver.seen();
        // The cursor is a file line; the bodies' numbers skip blank lines.
        let last_sent = resumed.map(|line| line - (line / 38));
        let twice = check_every_line_once(&seen, n, last_sent, &context);
        // The rerun sent again exactly the lines the journal still held.
        let again: BTreeSet<u32> = seen
            .iter()
            .filter(|s| s.run == 1 && last_sent.is_some_and(|l| number(&s.body) <= l))
            .map(|s| number(&s.body))
            .collect();
        assert_eq!(again.len() as u64, recovered, "{context}: {}", out.summary);
        assert_eq!(
            out.n("accepted"),
            recovered + u64::from(n - last_sent.unwrap_or(0))
        );
        assert_eq!((out.n("kept"), out.n("dead_lettered")), (0, 0));
        // The rerun read the rest of the file in batches of at least 10.
        let commits = out.n("journal_commits");
        assert!(
            commits <= out.n("lines").div_ceil(10),
            "{context}: {commits} commits for {} lines: {}",
            out.n("lines"),
            out.summary
        );
        // Finished: the default journal is gone, WAL and all.
        assert_eq!(out.summary["journal_file"], Value::Null, "{context}");
        for file in [
            JOURNAL,
            "hookpool-journal.db-wal",
            "hookpool-journal.db-shm",
        ] {
            assert!(!dir.path(file).exists(), "{context}: {file} left behind");
        }
        resumed_rounds += usize::from(resumed.is_some());
        recovered_rounds += usize::from(recovered > 0);
        println!(
            "{context}: resumed after line {after}, {recovered} recovered, {twice} delivered twice"
        );
    }
    assert!(
        rounds < 3 || (resumed_rounds > 0 && recovered_rounds > 0),
        "no round resumed ({resumed_rounds}) or recovered ({recovered_rounds}); seed {seed}"
    );
}

/// The send run again, signed with [`OTHER_SECRET`], to a clean end.
fn rerun(dir: &TempDir, receiver: &Receiver, args: &[&str]) -> Output {
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "--secret", OTHER_SECRET])
        .args(args);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    out
}

/// What a rerun says about its resume: recovered, resumed_after_line,
/// lines, delivered, kept.
fn resumed(out: &Output) -> (u64, u64, u64, u64, u64) {
    let n = |field| out.n(field);
    (
        n("recovered"),
        n("resumed_after_line"),
        n("lines"),
        n("delivered"),
        n("kept"),
    )
}

/// A send killed once every line is journaled and in flight: the rerun
/// has nothing left to read, and still waits until everything it recovered
/// is delivered before it exits (they are not its own lines).
#[test]
fn a_rerun_with_nothing_left_to_read_delivers_what_it_recovered() {
    let dir = TempDir::new("journal-nothing-left");
    std::fs::write(dir.path("in.jsonl"), lines(1..11)).unwrap();
    let receiver = Receiver::start(Mode::Hang);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "--secret", SECRET])
        .args(["--workers", "10", "in.jsonl"]);
    let first = Running::spawn(cmd);
    // A request is only made once its line is committed.
    assert!(receiver.server.wait_for_requests(10, RUN));
    assert!(first.kill());

    receiver.set(Mode::Slow);
    // No drain at the end: only the run's own wait delivers them.
    let out = rerun(&dir, &receiver, &["--drain-timeout-ms", "0", "in.jsonl"]);
    assert_eq!(resumed(&out), (10, 10, 0, 10, 0), "{}", out.summary);
    check_every_line_once(&receiver.seen(), 10, Some(10), "nothing left to read");
    assert!(!dir.path(JOURNAL).exists());
}

/// A send of ten lines to a receiver that hangs, with two workers and room
/// for three more, interrupted with `signal` once two requests hang: two to
/// five webhooks are committed (the sixth would wait for room). Returns the
/// run's output.
fn interrupted(dir: &TempDir, receiver: &Receiver, signal: &str, stdin: Option<&str>) -> Output {
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "--secret", SECRET])
        .args([
            "--workers",
            "2",
            "--queue",
            "3",
            "--drain-timeout-ms",
            "200",
        ]);
    if stdin.is_none() {
        cmd.arg("in.jsonl");
    }
    let mut child = Running::spawn(cmd);
    // stdin stays open: the tool is still reading when it is interrupted.
    child.write_stdin(stdin.unwrap_or("").as_bytes());
    assert!(receiver.server.wait_for_requests(2, RUN));
    child.signal(signal);
    output(child.finish(RUN))
}

/// Ctrl-C with the journal: what is unfinished stays in the journal (not a
/// single `shutdown` letter), stderr says so, the summary counts it as
/// kept, and the same command run again delivers it and the rest.
#[test]
fn ctrl_c_keeps_what_is_unfinished_in_the_journal_and_a_rerun_delivers_it() {
    let dir = TempDir::new("journal-ctrl-c");
    std::fs::write(dir.path("in.jsonl"), lines(1..11)).unwrap();
    let receiver = Receiver::start(Mode::Hang);
    let out = interrupted(&dir, &receiver, "INT", None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.summary["interrupted"], true);
    // Every line committed is kept: nothing was delivered.
    let kept = out.n("kept");
    assert!((2..=5).contains(&kept), "{}", out.summary);
    assert_eq!(
        (out.n("dead_lettered"), out.n("delivered")),
        (0, 0),
        "{}",
        out.summary
    );
    assert!(
        out.stderr
            .contains("then keeping the rest in the journal hookpool-journal.db"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{kept} unfinished webhooks are kept in the journal hookpool-journal.db: run the \
             same command again to deliver them and go on after line {kept}"
        )),
        "{}",
        out.stderr
    );
    assert!(!dir.path("hookpool-dead-letters.jsonl").exists());
    assert_eq!(out.summary["journal_file"], JOURNAL);

    receiver.set(Mode::Ok);
    let out = rerun(
        &dir,
        &receiver,
        &["--workers", "2", "--queue", "3", "in.jsonl"],
    );
    assert_eq!(
        resumed(&out),
        (kept, kept, 10 - kept, 10, 0),
        "{}",
        out.summary
    );
    assert!(
        out.stderr
            .contains(&format!("resuming in.jsonl after line {kept}")),
        "{}",
        out.stderr
    );
    check_every_line_once(&receiver.seen(), 10, Some(kept as u32), "after Ctrl-C");
    assert!(!dir.path(JOURNAL).exists());
}

/// An input that changed since the journal was written is refused with
/// exit 2, before anything is delivered, with what to do; restored, it
/// resumes.
#[test]
fn a_changed_input_is_refused() {
    let dir = TempDir::new("journal-changed");
    let original = lines(1..11);
    std::fs::write(dir.path("in.jsonl"), &original).unwrap();
    let receiver = Receiver::start(Mode::Hang);
    let out = interrupted(&dir, &receiver, "INT", None);
    // Lines 1 to `kept` are journaled: 8 bytes each.
    let kept = out.n("kept");
    assert!((2..=5).contains(&kept), "{}", out.stderr);
    receiver.set(Mode::Ok);
    let before = receiver.server.request_count();

    let rerun = |input: &str| {
        let mut cmd = hookpool(dir.dir());
        cmd.args(["send", "--url", &receiver.url(), input]);
        run(cmd, b"")
    };
    let edited = original.replacen("{\"n\":1}", "{\"n\":0}", 1);
    std::fs::write(dir.path("in.jsonl"), edited).unwrap();
    let changed = rerun("in.jsonl");
    std::fs::write(dir.path("in.jsonl"), lines(1..2)).unwrap();
    let shorter = rerun("in.jsonl");
    std::fs::write(dir.path("other.jsonl"), &original).unwrap();
    let other = rerun("other.jsonl");
    let fewer = format!("it has 8 bytes, fewer than the {} journaled", 8 * kept);
    for (out, why) in [
        (&changed, "are not the ones journaled"),
        (&shorter, fewer.as_str()),
        (&other, "belongs to a send of"),
    ] {
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert!(
            out.stderr.contains("another --journal FILE"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr
                .contains("still holds the webhooks that send left unfinished"),
            "{}",
            out.stderr
        );
    }
    assert!(changed.stderr.contains(&format!(
        "Restore it and run again to go on after line {kept}"
    )));
    assert_eq!(
        receiver.server.request_count(),
        before,
        "a refused run delivered"
    );
    assert!(dir.path(JOURNAL).exists());

    std::fs::write(dir.path("in.jsonl"), &original).unwrap();
    let restored = rerun("in.jsonl");
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(
        (restored.n("recovered"), restored.n("resumed_after_line")),
        (kept, kept)
    );
    check_every_line_once(&receiver.seen(), 10, Some(kept as u32), "restored");
}

/// Standard input cannot be resumed, and says so. A journal that holds a
/// file's position keeps it through a send from standard input (which
/// delivers what the journal holds, then reads its own input); the file's
/// send resumes afterwards.
#[test]
fn standard_input_is_not_resumed_and_leaves_a_file_position_alone() {
    let dir = TempDir::new("journal-stdin");
    std::fs::write(dir.path("in.jsonl"), lines(1..11)).unwrap();
    let receiver = Receiver::start(Mode::Hang);
    let kept = interrupted(&dir, &receiver, "INT", None).n("kept");
    receiver.set(Mode::Ok);

    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url()]);
    let out = run(cmd, lines(100..110).as_bytes());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("standard input cannot be resumed"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("keeps its position in")
            && out.stderr.contains(&format!("in.jsonl after line {kept}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        (out.n("recovered"), out.n("delivered"), out.n("lines")),
        (kept, kept + 10, 10)
    );
    assert_eq!(out.summary["resumed_after_line"], Value::Null);
    assert_eq!(
        out.summary["journal_file"], JOURNAL,
        "kept: it holds a position"
    );

    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "in.jsonl"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (
            out.n("recovered"),
            out.n("resumed_after_line"),
            out.n("delivered")
        ),
        (0, kept, 10 - kept)
    );
    let delivered: BTreeSet<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.delivered)
        .map(|s| s.body.clone())
        .collect();
    let expected: BTreeSet<String> = lines(1..11)
        .lines()
        .chain(lines(100..110).lines())
        .map(String::from)
        .collect();
    assert_eq!(delivered, expected);
    assert!(!dir.path(JOURNAL).exists());
}

/// SIGTERM during a send from standard input: what was queued or in flight
/// stays in the journal; the lines read but not queued cannot be read
/// again, so they are dead-lettered (reason `shutdown`). Nothing is lost.
#[test]
fn sigterm_on_standard_input_keeps_the_queued_and_dead_letters_the_unread_again() {
    let dir = TempDir::new("journal-stdin-term");
    let receiver = Receiver::start(Mode::Hang);
    let out = interrupted(&dir, &receiver, "TERM", Some(&lines(1..11)));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let kept = out.n("kept");
    assert!((2..=5).contains(&kept), "{}", out.summary);
    assert_eq!(out.n("dead_lettered"), 10 - kept, "{}", out.summary);
    let letters = JsonlDeadLetters::read(dir.path("hookpool-dead-letters.jsonl")).unwrap();
    assert!(
        letters
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown)
    );
    let lettered: BTreeSet<String> = letters.iter().map(|l| l.payload.get().to_owned()).collect();
    assert!(
        out.stderr.contains("the next send with it delivers them"),
        "{}",
        out.stderr
    );

    receiver.set(Mode::Ok);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url()]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.n("recovered"), out.n("delivered")), (kept, kept));
    let mut all: BTreeSet<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.delivered)
        .map(|s| s.body.clone())
        .collect();
    assert!(all.is_disjoint(&lettered));
    all.extend(lettered);
    let expected: BTreeSet<String> = lines(1..11).lines().map(String::from).collect();
    assert_eq!(all, expected);
}

/// The default journal is removed after a run that finished everything;
/// a named one stays, and the same command run again has nothing to read.
#[test]
fn the_default_journal_is_removed_after_a_clean_run_and_a_named_one_stays() {
    let dir = TempDir::new("journal-clean");
    std::fs::write(dir.path("in.jsonl"), lines(1..21)).unwrap();
    let receiver = Receiver::start(Mode::Ok);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "in.jsonl"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((out.n("delivered"), out.n("recovered")), (20, 0));
    assert_eq!(out.summary["journal_file"], Value::Null);
    let left: Vec<_> = std::fs::read_dir(dir.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["in.jsonl"], "only the input is left");

    let named = || {
        let mut cmd = hookpool(dir.dir());
        cmd.args([
            "send",
            "--url",
            &receiver.url(),
            "--journal",
            "j.db",
            "in.jsonl",
        ]);
        run(cmd, b"")
    };
    let out = named();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.summary["journal_file"], "j.db");
    assert_eq!(
        Journal::new(dir.path("j.db"))
            .read_cursor()
            .unwrap()
            .map(|c| serde_json::from_str::<Value>(&c).unwrap()["line"].clone()),
        Some(Value::from(20))
    );
    let out = named();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (
            out.n("resumed_after_line"),
            out.n("lines"),
            out.n("accepted")
        ),
        (20, 0, 0)
    );
    assert_eq!(receiver.server.request_count(), 40);
}

/// The cursor saved with a batch is where the input stands after the
/// batch's last line, blank and invalid ones included: a rerun goes on
/// after them, and does not report an invalid line a second time. (With
/// the cursor at the last webhook, the rerun read and reported line 22
/// again.)
#[test]
fn the_cursor_covers_blank_and_invalid_lines_at_a_batch_s_end() {
    let dir = TempDir::new("journal-tail");
    let input = format!("{}\n{{\"broken\": \n", lines(1..21));
    std::fs::write(dir.path("in.jsonl"), input).unwrap();
    let receiver = Receiver::start(Mode::Ok);
    let named = || {
        let mut cmd = hookpool(dir.dir());
        cmd.args(["send", "--url", &receiver.url(), "--journal", "j.db"])
            .arg("in.jsonl");
        run(cmd, b"")
    };
    let out = named();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        (out.n("delivered"), out.n("invalid"), out.n("lines")),
        (20, 1, 22),
        "{}",
        out.summary
    );
    let cursor = Journal::new(dir.path("j.db")).read_cursor().unwrap();
    let line = cursor.map(|c| serde_json::from_str::<Value>(&c).unwrap()["line"].clone());
    assert_eq!(line, Some(Value::from(22)));
    let out = named();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (
            out.n("resumed_after_line"),
            out.n("lines"),
            out.n("invalid")
        ),
        (22, 0, 0),
        "{}",
        out.summary
    );
    assert_eq!(receiver.server.request_count(), 20);
}

/// Lines are committed in batches, one transaction each: a file in full
/// ones (256 lines, since 1024 + 8 webhooks may be outstanding), and
/// standard input that trickles line by line, each line as it comes, not
/// waiting for a batch to fill. One commit a line fails the first check,
/// a batch that waits for more input the second.
#[test]
fn a_file_is_committed_in_batches_and_a_trickle_line_by_line() {
    let dir = TempDir::new("journal-batches");
    std::fs::write(dir.path("in.jsonl"), lines(1..2001)).unwrap();
    let receiver = Receiver::start(Mode::Ok);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url(), "in.jsonl"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.n("delivered"), out.n("journal_commits")),
        (2000, 2000_u64.div_ceil(256)),
        "{}",
        out.summary
    );
    let bodies: BTreeSet<String> = receiver.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies.len(), 2000);

    let receiver = Receiver::start(Mode::Ok);
    let mut cmd = hookpool(dir.dir());
    cmd.args(["send", "--url", &receiver.url()]);
    let mut child = Running::spawn(cmd);
    for i in 1..4 {
        // Standard input stays open: the next line is not written yet.
        child.write_stdin(lines(i..i + 1).as_bytes());
        assert!(
            receiver.server.wait_for_requests(i as usize, RUN),
            "line {i} was not sent while the input stayed open"
        );
    }
    let out = output(child.finish(RUN));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.n("delivered"), out.n("journal_commits")),
        (3, 3),
        "{}",
        out.summary
    );
}

/// The disk under the journal fills up midway: the batch it cannot commit
/// stops the send there (`journal_error`), none of its lines sent, and the
/// same command run again, with room, goes on after the last batch
/// committed. Every line is delivered once: a failed batch is neither lost
/// nor journaled twice. (Skipped where a tmpfs cannot be mounted, unless
/// HOOKPOOL_REQUIRE_MOUNT is set.)
#[test]
fn a_full_disk_stops_the_send_at_a_batch_and_a_rerun_sends_each_line_once() {
    let dir = TempDir::new("journal-full-disk");
    let Some(fs) = Tmpfs::mount(dir.path("mnt"), "16m") else {
        return;
    };
    let n = 600;
    let pad = "p".repeat(2000);
    let input: String = (1..=n)
        .map(|i| format!("{{\"n\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect();
    std::fs::write(dir.path("in.jsonl"), input).unwrap();
    let journal = fs.0.join("j.db");
    let journal_arg = journal.to_str().unwrap();
    // Room for a few batches: the WAL fills it before its first checkpoint.
    // (16 MiB in all, for the rerun's WAL.)
    let filler = fs.fill_leaving(512 * 1024);
    let receiver = Receiver::start(Mode::Ok);
    let first = Running::spawn(send(
        &dir,
        &receiver.url(),
        SECRET,
        "in.jsonl",
        &["--journal", journal_arg],
    ));
    first.wait_for_stderr("; stopping", RUN);
    // Room again, for the deliveries' deletes and the rerun.
    std::fs::remove_file(&filler).unwrap();
    let out = output(first.finish(RUN));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.summary["journal_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cannot journal them"), "{}", out.summary);
    let committed = Journal::new(&journal)
        .read_cursor()
        .unwrap()
        .map_or(0, |c| {
            serde_json::from_str::<Value>(&c).unwrap()["line"]
                .as_u64()
                .unwrap()
        });
    assert!(committed < n, "the disk never filled: {}", out.summary);
    // It stopped at the batch after the last one committed, and delivered
    // what it had committed.
    let at = committed + 1;
    assert!(
        out.stderr
            .contains(&format!("hookpool: line {at}: cannot journal"))
            || out.stderr.contains(&format!("hookpool: lines {at} to ")),
        "{}",
        out.stderr
    );
    assert_eq!(out.n("delivered"), committed, "{}", out.summary);
    println!("the disk filled after line {committed}: {error}");

    let out = run(
        send(
            &dir,
            &receiver.url(),
            OTHER_SECRET,
            "in.jsonl",
            &["--journal", journal_arg],
        ),
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (
            out.n("recovered"),
            out.summary["resumed_after_line"].as_u64().unwrap_or(0),
            out.n("delivered")
        ),
        (0, committed, n - committed),
        "{}",
        out.summary
    );
    let twice = check_every_line_once(
        &receiver.seen(),
        n as u32,
        Some(committed as u32),
        "full disk",
    );
    assert_eq!(twice, 0, "nothing was in flight at a kill");
    drop(fs);
}
