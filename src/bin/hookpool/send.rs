//! `hookpool send`: each line of a JSON Lines input becomes one webhook.
//!
//! With the journal (the default), each line's webhook is committed to it
//! before it is queued. Lines are committed in batches, one transaction
//! each: the lines the input has already given, up to [`BATCH`] and the
//! room left for outstanding webhooks (`--queue` plus `--workers`; a batch
//! waits until half of that is free), with the input's position after the
//! batch's last line. A rerun of a send that was killed or interrupted delivers
//! what the journal holds, then goes on after the last line journaled; an
//! input that changed since is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use hookpool::{
    DeadLetter, DeadLetterReason, DeadLetterSink, Journal, JsonlDeadLetters, Synchronous, Webhook,
    WebhookError,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::input::{BATCH, Mark, Next, Reader, Source, line_range};
use crate::resume::{Plan, remove_journal};
use crate::run::{
    DeliveryArgs, IN_FLIGHT, Keep, NOT_QUEUED, Refused, Session, TICK, shutdown_letter,
};
use crate::send_redis::{self, Target};
use crate::shared_queue::MaybeShared;
use crate::{Interrupt, UsageError, exit_code, print_line};

/// Where dead letters go without `--dead-letters`.
const DEFAULT_DEAD_LETTERS: &str = "hookpool-dead-letters.jsonl";
/// The journal without `--journal`.
const DEFAULT_JOURNAL: &str = "hookpool-journal.db";
/// Why a line the journal could not take is dead-lettered (standard input
/// only: a file's line is read again by the next run).
const NOT_JOURNALED: &str = "the journal could not commit it, so it was not queued";

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
    #[arg(long, value_name = "FILE", conflicts_with = "redis")]
    dead_letters: Option<PathBuf>,
    /// Commit each line's webhook to the journal FILE (SQLite) before queueing it, with the
    /// input's position (lines read together share one commit), so that running the same
    /// command again after a kill or Ctrl-C delivers what was left and goes on after the last
    /// line journaled (default: ./hookpool-journal.db, removed at the end once everything
    /// finished)
    #[arg(long, value_name = "FILE", conflicts_with = "redis")]
    journal: Option<PathBuf>,
    /// No journal: webhooks live in memory only, a kill loses them, and a rerun starts
    /// again from the first line
    #[arg(long, conflicts_with_all = ["journal", "journal_sync"])]
    no_journal: bool,
    /// How each journal commit reaches the disk: `full` waits for it (survives a power
    /// cut); `normal` hands it to the operating system, faster on a slow disk, and
    /// survives the process being killed but not the machine crashing
    #[arg(long, value_name = "MODE", value_enum, default_value_t = JournalSync::Full, conflicts_with = "redis")]
    journal_sync: JournalSync,
    #[command(flatten)]
    shared: MaybeShared,
    #[command(flatten)]
    delivery: DeliveryArgs,
    /// JSON Lines input, one payload per line; `-` or nothing reads standard input
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
}

/// `--journal-sync`: SQLite's `synchronous` setting for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JournalSync {
    Full,
    Normal,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    /// Lines read by this run, blank ones included.
    lines: u64,
    invalid: u64,
    accepted: u64,
    delivered: u64,
    dead_lettered: u64,
    dead_lettered_by_reason: BTreeMap<DeadLetterReason, u64>,
    retried: u64,
    /// Answers that asked for a slower pace (429, 503 with Retry-After).
    push_backs: u64,
    /// Webhooks an earlier run left unfinished in the journal, taken up at start.
    recovered: u64,
    /// The line reading went on after, when this run resumed its input.
    resumed_after_line: Option<u64>,
    /// Webhooks left unfinished in the journal at exit, for the next run.
    kept: u64,
    /// Journal transactions that committed this run's lines: one for each
    /// batch of lines read together (0 without a journal).
    journal_commits: u64,
    interrupted: bool,
    read_error: Option<String>,
    /// Why the journal could not commit a batch of lines, if it could not.
    journal_error: Option<String>,
    dead_letter_file: Option<String>,
    /// The journal, when one is left behind.
    journal_file: Option<String>,
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
    if let Some(queue) = args.shared.shared()? {
        let target = Target {
            url: &args.url,
            event_type: args.event_type.as_deref(),
            input: args.input.as_deref(),
        };
        return send_redis::run(&target, queue, &args.delivery, interrupt);
    }
    let queue_size = args.shared.queue_size()?;
    let source = Source::open(args.input.as_deref())?;
    let journal = (!args.no_journal).then(|| {
        args.journal
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_JOURNAL))
    });
    let (plan, start) = Plan::new(source, journal.as_deref())?;
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
    let synchronous = match args.journal_sync {
        JournalSync::Full => Synchronous::Full,
        JournalSync::Normal => Synchronous::Normal,
    };
    let keep = Keep {
        sink: Some(Arc::clone(&sink) as Arc<dyn DeadLetterSink>),
        journal: journal
            .as_ref()
            .map(|j| Journal::new(j).synchronous(synchronous)),
    };
    let session = Session::start(&args.delivery, queue_size, "send", keep, "line", interrupt)?;
    if let Some(journal) = &journal {
        if session.journal_cursor() != plan.saved.as_deref() {
            return Err(UsageError(format!(
                "journal {} changed while this send started: another process is using it",
                journal.display()
            )));
        }
        plan.say_how(&session, journal);
    }

    let after_line = start.after_line;
    let mut reader = Reader::spawn(start)?;
    let mut last_line = after_line;
    // The last line committed to the journal with its cursor.
    let mut journaled = plan.resumed_after;
    let mut commits = 0;
    let mut not_queued: Vec<(Webhook, &str)> = Vec::new();
    let mut read_error = None;
    let mut journal_error = None;
    let mut reached_end = false;
    let make = |bytes| webhook(&args.url, args.event_type.as_deref(), bytes);
    while !interrupt.is_set() {
        let room = session.batch_room(BATCH);
        if room == 0 {
            continue;
        }
        let read = match reader.next(room, TICK) {
            Next::Batch(read) => read,
            Next::Waiting => {
                session.refresh();
                continue;
            }
            Next::End => {
                reached_end = true;
                break;
            }
        };
        // A read error ends the input after this batch, whatever becomes
        // of the batch: noted first, so that a refused batch cannot hide it.
        let failed = read.failed.is_some();
        if let Some((n, e)) = read.failed {
            session.note(&format!("cannot read line {n}: {e}"));
            read_error = Some(e.to_string());
        }
        let mut batch = Vec::with_capacity(read.lines.len());
        // The position after the batch's last line, saved with its
        // webhooks: blank and invalid lines at its end are handled too,
        // and a rerun does not report them again.
        let mut mark = None;
        for line in read.lines {
            last_line = line.n;
            mark = line.mark;
            match make(line.bytes) {
                Ok(None) => {}
                Ok(Some(webhook)) => batch.push((line.n, webhook)),
                Err(why) => session.invalid(line.n, &why),
            }
        }
        if let (Some(&(first, _)), Some(&(last, _))) = (batch.first(), batch.last()) {
            let last = if mark.is_some() { last_line } else { last };
            let cursor = mark.map(Mark::cursor);
            let saves_cursor = cursor.is_some();
            match session.send_batch(batch, cursor) {
                Ok(()) => {
                    if journal.is_some() {
                        commits += 1;
                    }
                    if saves_cursor {
                        journaled = Some(last);
                    }
                }
                Err(Refused::Interrupted(webhooks)) => {
                    not_queued.extend(webhooks.into_iter().map(|w| (w, NOT_QUEUED)));
                    break;
                }
                Err(Refused::Journal(webhooks, e)) => {
                    session.note(&format!("{}: {e}; stopping", line_range(first, last)));
                    journal_error = Some(e.to_string());
                    not_queued.extend(webhooks.into_iter().map(|w| (w, NOT_JOURNALED)));
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    // Lines the reader took from the input but could not hand over. A
    // journaled file's are read again by the next run.
    for (n, bytes) in reader.reclaim() {
        last_line = last_line.max(n);
        if plan.rereadable {
            continue;
        }
        match make(bytes) {
            Ok(None) => {}
            Ok(Some(webhook)) => not_queued.push((webhook, NOT_QUEUED)),
            Err(why) => session.invalid(n, &why),
        }
    }
    if plan.rereadable {
        not_queued.clear();
    }

    let journal_name = journal.as_ref().map(|j| j.display().to_string());
    let recovered = session.recovered();
    let finished = session.finish();
    let mut stats = finished.stats;
    // With a journal, what was in flight stays in it for the next run.
    let in_flight = if journal.is_some() {
        Vec::new()
    } else {
        finished.in_flight
    };
    let ours: Vec<DeadLetter> = not_queued
        .iter()
        .map(|(w, why)| shutdown_letter(w, why))
        .chain(in_flight.iter().map(|(_, w)| shutdown_letter(w, IN_FLIGHT)))
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

    let everything_finished = reached_end
        && !finished.interrupted
        && read_error.is_none()
        && journal_error.is_none()
        && finished.kept == 0;
    let journal_left = match &journal {
        None => false,
        Some(file) => {
            let letters = stats.store.as_ref().map_or(0, |s| s.dead_letters);
            let removable = args.journal.is_none() && !plan.other_position && letters == 0;
            if everything_finished && removable {
                !remove_journal(file)
            } else {
                if !everything_finished {
                    plan.say_what_is_left(file, finished.kept, journaled);
                }
                true
            }
        }
    };

    let summary = Summary {
        lines: last_line - after_line,
        invalid: finished.invalid,
        accepted: stats.accepted,
        delivered: stats.delivered,
        dead_lettered: stats.dead_lettered,
        dead_lettered_by_reason: stats.dead_lettered_by_reason,
        retried: stats.retried,
        push_backs: stats.push_backs,
        recovered,
        resumed_after_line: plan.resumed_after,
        kept: finished.kept,
        journal_commits: commits,
        interrupted: finished.interrupted,
        read_error,
        journal_error,
        dead_letter_file: kept.then(|| path.display().to_string()),
        journal_file: journal_name.filter(|_| journal_left),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let ok = reached_end
        && !finished.interrupted
        && summary.read_error.is_none()
        && summary.journal_error.is_none()
        && summary.invalid == 0
        && summary.dead_lettered == 0
        && summary.delivered == summary.accepted;
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(ok))
}

/// The webhook for one line: `None` for a blank line, an error in words for
/// a line that is not JSON.
pub(crate) fn webhook(
    url: &str,
    event_type: Option<&str>,
    bytes: Vec<u8>,
) -> Result<Option<Webhook>, String> {
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
