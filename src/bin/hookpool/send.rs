//! `hookpool send`: each line of a JSON Lines input becomes one webhook.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hookpool::{
    DeadLetter, DeadLetterReason, DeadLetterSink, JsonlDeadLetters, Webhook, WebhookError,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::run::{DeliveryArgs, IN_FLIGHT, NOT_QUEUED, Session, TICK, shutdown_letter};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// Where dead letters go without `--dead-letters`.
const DEFAULT_DEAD_LETTERS: &str = "hookpool-dead-letters.jsonl";

/// The flags of `hookpool send` (its help text is on `Command::Send`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to POST each webhook (http or https)
    #[arg(long, value_name = "URL")]
    url: String,
    /// Wrap each line in a Standard Webhooks envelope
    /// {"type": T, "timestamp": <RFC 3339, when read>, "data": <line>};
    /// without it, each line is sent as is
    #[arg(long, value_name = "T")]
    event_type: Option<String>,
    /// Append dead letters to FILE, JSON Lines that `hookpool replay FILE` sends again
    /// (default: ./hookpool-dead-letters.jsonl, left behind only if something was
    /// dead-lettered)
    #[arg(long, value_name = "FILE")]
    dead_letters: Option<PathBuf>,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// JSON Lines input, one payload per line; `-` or nothing reads standard input
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    /// Lines read, blank ones included.
    lines: u64,
    invalid: u64,
    accepted: u64,
    delivered: u64,
    dead_lettered: u64,
    dead_lettered_by_reason: BTreeMap<DeadLetterReason, u64>,
    retried: u64,
    /// Answers that asked for a slower pace (429, 503 with Retry-After).
    push_backs: u64,
    interrupted: bool,
    read_error: Option<String>,
    dead_letter_file: Option<String>,
    elapsed_ms: u64,
}

pub(crate) fn run(args: Args, interrupt: &Interrupt) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    Webhook::from_json(&args.url, "null").map_err(|e| UsageError(format!("--url: {e}")))?;
    if args
        .event_type
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(UsageError("--event-type must not be empty".into()));
    }
    let input = open_input(args.input.as_deref())?;
    let (path, default_file) = match &args.dead_letters {
        Some(path) => (path.clone(), false),
        None => (PathBuf::from(DEFAULT_DEAD_LETTERS), true),
    };
    let existed = path.exists();
    let sink = Arc::new(JsonlDeadLetters::open(&path).map_err(|e| {
        UsageError(format!(
            "cannot open dead-letter file {}: {e}",
            path.display()
        ))
    })?);
    let mut created = Created {
        path: path.clone(),
        armed: default_file && !existed,
    };
    let session = Session::start(&args.delivery, "send", Arc::clone(&sink), "line", interrupt)?;

    let (lines_rx, reader) = spawn_reader(input)?;
    let mut lines = 0;
    let mut not_queued: Vec<Webhook> = Vec::new();
    let mut read_error = None;
    let mut reached_end = false;
    let make = |bytes| webhook(&args.url, args.event_type.as_deref(), bytes);
    while !interrupt.is_set() {
        match lines_rx.recv_timeout(TICK) {
            Ok(Input::Line(n, bytes)) => {
                lines = n;
                match make(bytes) {
                    Ok(None) => {}
                    Ok(Some(webhook)) => {
                        if let Err(webhook) = session.send(n, webhook) {
                            not_queued.push(webhook);
                            break;
                        }
                    }
                    Err(why) => session.invalid(n, &why),
                }
            }
            Ok(Input::Failed(n, e)) => {
                session.note(&format!("cannot read line {n}: {e}"));
                read_error = Some(e.to_string());
                break;
            }
            Err(RecvTimeoutError::Timeout) => session.refresh(),
            Err(RecvTimeoutError::Disconnected) => {
                reached_end = true;
                break;
            }
        }
    }
    drop(lines_rx);
    // Lines the reader took from the input but could not hand over.
    for (n, bytes) in reclaim(reader) {
        lines = lines.max(n);
        match make(bytes) {
            Ok(None) => {}
            Ok(Some(webhook)) => not_queued.push(webhook),
            Err(why) => session.invalid(n, &why),
        }
    }

    let finished = session.finish();
    let mut stats = finished.stats;
    let ours: Vec<DeadLetter> = not_queued
        .iter()
        .map(|w| shutdown_letter(w, NOT_QUEUED))
        .chain(
            finished
                .in_flight
                .iter()
                .map(|(_, w)| shutdown_letter(w, IN_FLIGHT)),
        )
        .collect();
    let mut unsaved = finished.unsaved;
    for letter in ours {
        stats.dead_lettered += 1;
        *stats
            .dead_lettered_by_reason
            .entry(letter.reason)
            .or_default() += 1;
        if let Err(e) = sink.store(&letter) {
            log::error!(target: "hookpool", "cannot store dead letter {}: {e}", letter.id);
            unsaved.push(letter);
        }
    }
    dump_unsaved(&unsaved, &path);
    drop(sink);
    let kept = !created.remove_if_empty();

    let summary = Summary {
        lines,
        invalid: finished.invalid,
        accepted: stats.accepted,
        delivered: stats.delivered,
        dead_lettered: stats.dead_lettered,
        dead_lettered_by_reason: stats.dead_lettered_by_reason,
        retried: stats.retried,
        push_backs: stats.push_backs,
        interrupted: finished.interrupted,
        read_error,
        dead_letter_file: kept.then(|| path.display().to_string()),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let ok = reached_end
        && !finished.interrupted
        && summary.read_error.is_none()
        && summary.invalid == 0
        && summary.dead_lettered == 0
        && summary.delivered == summary.accepted;
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(ok))
}

/// Standard input for `None` or `-`, else the file.
fn open_input(path: Option<&Path>) -> Result<Box<dyn Read + Send>, UsageError> {
    match path {
        None => Ok(stdin()),
        Some(p) if p == Path::new("-") => Ok(stdin()),
        Some(p) => {
            let cannot =
                |e: &dyn std::fmt::Display| UsageError(format!("cannot read {}: {e}", p.display()));
            if p.is_dir() {
                return Err(cannot(&"it is a directory"));
            }
            Ok(Box::new(File::open(p).map_err(|e| cannot(&e))?))
        }
    }
}

fn stdin() -> Box<dyn Read + Send> {
    if io::stdin().is_terminal() {
        eprintln!("hookpool: reading JSON Lines from the terminal; Ctrl-D ends the input");
    }
    Box::new(io::stdin())
}

/// The webhook for one line: `None` for a blank line, an error in words for
/// a line that is not JSON.
fn webhook(url: &str, event_type: Option<&str>, bytes: Vec<u8>) -> Result<Option<Webhook>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = String::from_utf8(bytes).map_err(|_| "not valid UTF-8".to_owned())?;
    let webhook = match event_type {
        None => Webhook::from_json(url, text),
        Some(kind) => {
            let data: &RawValue =
                serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
            let envelope = Envelope {
                kind,
                // The event's time: when its line was read.
                timestamp: format!("{:.3}", jiff::Timestamp::now()),
                data,
            };
            Webhook::new(url, &envelope)
        }
    };
    webhook.map(Some).map_err(|e| match e {
        WebhookError::InvalidJson(e) => format!("invalid JSON: {e}"),
        other => other.to_string(),
    })
}

/// The Standard Webhooks payload structure.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: &'a RawValue,
}

/// A line's number (from 1) and bytes, without the line ending.
type NumberedLine = (u64, Vec<u8>);

/// What the reader thread hands over.
enum Input {
    /// A line's number (from 1) and bytes, without the line ending.
    Line(u64, Vec<u8>),
    /// Reading failed at this line.
    Failed(u64, io::Error),
}

/// Reads lines on a thread of its own, so that Ctrl-C is noticed even while
/// a read blocks. The channel holds nothing (a rendezvous), so the reader
/// holds at most one line that it has not handed over; when the receiver is
/// gone it returns that line and the complete lines still in its buffer.
fn spawn_reader(
    source: Box<dyn Read + Send>,
) -> Result<(Receiver<Input>, JoinHandle<Vec<NumberedLine>>), UsageError> {
    let (tx, rx) = mpsc::sync_channel(0);
    let reader = std::thread::Builder::new()
        .name("send-reader".into())
        .spawn(move || read_lines(source, &tx))
        .map_err(|e| UsageError(format!("cannot start the reader thread: {e}")))?;
    Ok((rx, reader))
}

fn read_lines(source: Box<dyn Read + Send>, tx: &SyncSender<Input>) -> Vec<NumberedLine> {
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut n = 0;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Vec::new(),
            Ok(_) => {
                n += 1;
                trim_line_end(&mut line);
                if let Err(mpsc::SendError(Input::Line(n, line))) = tx.send(Input::Line(n, line)) {
                    let mut left = vec![(n, line)];
                    let mut next = n;
                    for rest in reader.buffer().split(|b| *b == b'\n') {
                        next += 1;
                        let mut rest = rest.to_vec();
                        trim_line_end(&mut rest);
                        left.push((next, rest));
                    }
                    // A buffer that ends with a newline splits into a last, empty piece.
                    if left.last().is_some_and(|(_, l)| l.is_empty()) && left.len() > 1 {
                        left.pop();
                    }
                    return left;
                }
            }
            Err(e) => {
                let _ = tx.send(Input::Failed(n + 1, e));
                return Vec::new();
            }
        }
    }
}

fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

/// Takes back what the reader could not hand over. A reader still blocked
/// in a read holds nothing, and is left to end with the process.
fn reclaim(reader: JoinHandle<Vec<NumberedLine>>) -> Vec<NumberedLine> {
    let deadline = Instant::now() + Duration::from_millis(500);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if reader.is_finished() {
        reader.join().unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// Last resort when the dead-letter file cannot take some letters: they go
/// to stderr, so that they are not lost.
fn dump_unsaved(unsaved: &[DeadLetter], path: &Path) {
    if unsaved.is_empty() {
        return;
    }
    eprintln!(
        "hookpool: {} dead letters could not be written to {}; here they are, one JSON object a line:",
        unsaved.len(),
        path.display()
    );
    for letter in unsaved {
        eprintln!("{}", serde_json::to_string(letter).unwrap_or_default());
    }
}

/// The default dead-letter file when this run created it: removed again,
/// on every way out, if nothing was written to it.
struct Created {
    path: PathBuf,
    armed: bool,
}

impl Created {
    /// Returns whether the file was removed.
    fn remove_if_empty(&mut self) -> bool {
        let empty = std::fs::metadata(&self.path).is_ok_and(|m| m.len() == 0);
        if self.armed && empty && std::fs::remove_file(&self.path).is_ok() {
            self.armed = false;
            return true;
        }
        false
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        self.remove_if_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reader hands back when nobody takes its first line.
    fn leftovers(input: &'static str) -> Vec<(u64, String)> {
        let (tx, rx) = mpsc::sync_channel(0);
        drop(rx);
        read_lines(Box::new(input.as_bytes()), &tx)
            .into_iter()
            .map(|(n, l)| (n, String::from_utf8(l).unwrap()))
            .collect()
    }

    #[test]
    fn a_stopped_reader_hands_back_every_line_it_took() {
        let lines = |v: &[(u64, &str)]| -> Vec<(u64, String)> {
            v.iter().map(|(n, l)| (*n, (*l).to_owned())).collect()
        };
        assert_eq!(
            leftovers("a\r\nb\n\nc"),
            lines(&[(1, "a"), (2, "b"), (3, ""), (4, "c")])
        );
        assert_eq!(leftovers("a\nb\n"), lines(&[(1, "a"), (2, "b")]));
        assert_eq!(leftovers("a\n"), lines(&[(1, "a")]));
        assert!(leftovers("").is_empty());
    }

    #[test]
    fn lines_become_webhooks_or_errors() {
        let url = "http://127.0.0.1:9/in";
        assert!(webhook(url, None, b"  \t".to_vec()).unwrap().is_none());
        let hook = webhook(url, None, br#" {"a": 1} "#.to_vec())
            .unwrap()
            .unwrap();
        assert_eq!(hook.body(), br#"{"a": 1}"#);
        let err = webhook(url, None, b"{nope".to_vec()).unwrap_err();
        assert!(err.starts_with("invalid JSON: "), "{err}");
        assert_eq!(
            webhook(url, None, vec![0xff]).unwrap_err(),
            "not valid UTF-8"
        );

        let hook = webhook(url, Some("t.x"), br#"{"a": 1}"#.to_vec())
            .unwrap()
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(hook.body()).unwrap();
        assert_eq!(body["type"], "t.x");
        assert_eq!(body["data"], serde_json::json!({"a": 1}));
        let ts = body["timestamp"].as_str().unwrap();
        // RFC 3339 in UTC with milliseconds: 2024-01-02T03:04:05.678Z
        assert_eq!(
            (ts.len(), &ts[10..11], &ts[19..20], &ts[23..]),
            (24, "T", ".", "Z")
        );
        assert!(webhook(url, Some("t.x"), b"{nope".to_vec()).is_err());
    }
}
