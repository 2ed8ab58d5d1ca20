//! `hookpool replay FILE`: delivers dead letters again. A JSON Lines FILE
//! is then rewritten atomically with only the letters that failed again; a
//! SQLite FILE (a journal, or a `SqliteDeadLetters` file) has its letters
//! moved back among its unfinished webhooks, one transaction each, and
//! those that fail again moved back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookpool::{
    DeadLetter, DeadLetterSink, Journal, JsonlDeadLetters, MemoryDeadLetters, StoredDeadLetter,
    Webhook,
};
use serde::Serialize;

use crate::run::{DeliveryArgs, Keep, Session};
use crate::shared_queue::MaybeShared;
use crate::{Interrupt, UsageError, exit_code, print_line};

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// How long a letter moved back from a SQLite file may wait for room in
/// the queue; one that finds none goes back among the letters.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// The flags of `hookpool replay` (its help text is on `Command::Replay`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dead letters: JSON Lines, as `hookpool send` writes them, or a SQLite file (a
    /// journal, or a SqliteDeadLetters file), told apart by its header; not with --redis
    #[arg(
        value_name = "FILE",
        required_unless_present = "redis",
        conflicts_with = "redis"
    )]
    file: Option<PathBuf>,
    /// Send every letter to URL instead of its stored one (the file keeps the stored URL
    /// for letters never attempted); JSON Lines files only
    #[arg(long, value_name = "URL", conflicts_with = "redis")]
    url: Option<String>,
    #[command(flatten)]
    shared: MaybeShared,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    /// Letters read from the file.
    letters: usize,
    /// SQLite files: webhooks the file held unfinished (a killed send's), taken up and
    /// delivered as well.
    recovered: u64,
    /// Letters that cannot be turned into a webhook (bad URL or id); kept.
    invalid: u64,
    accepted: u64,
    delivered: u64,
    /// Letters that failed again; kept with their new error.
    dead_lettered: u64,
    /// After Ctrl-C: letters never queued or still in flight; kept as they were. In a
    /// SQLite file: webhooks left unfinished in it, which the next run on it delivers.
    unfinished: usize,
    /// Letters now in the file (a SQLite file's `dead_letters` table).
    remaining: usize,
    interrupted: bool,
    /// The error if the file could not be rewritten (it is then unchanged).
    rewrite_error: Option<String>,
    file: String,
    elapsed_ms: u64,
}

pub(crate) fn run(args: Args, interrupt: &Interrupt) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    if let Some(queue) = args.shared.shared()? {
        return crate::replay_redis::run(queue, &args.delivery, interrupt);
    }
    let Some(file) = args.file.as_deref() else {
        return Err(UsageError(
            "replay needs a FILE, or --redis URL --queue NAME".into(),
        ));
    };
    let queue = args.shared.queue_size()?;
    if let Some(url) = &args.url {
        Webhook::from_json(url, "null").map_err(|e| UsageError(format!("--url: {e}")))?;
    }
    if is_sqlite(file)? {
        return replay_sqlite(&args, file, queue, interrupt, started);
    }
    let letters = JsonlDeadLetters::read(file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
    // Checked now, so that a file that cannot be replaced fails before anything is sent.
    let tmp = temp_path(file);
    check_writable(&tmp)?;

    let failed = MemoryDeadLetters::new();
    let keep = Keep {
        sink: Some(Arc::new(failed.clone()) as Arc<dyn DeadLetterSink>),
        journal: None,
    };
    let session = Session::start(&args.delivery, queue, "replay", keep, "letter", interrupt)?;
    let mut keep: Vec<DeadLetter> = Vec::new();
    let mut unfinished = 0;
    for (i, letter) in letters.iter().enumerate() {
        let tag = i as u64 + 1;
        if interrupt.is_set() {
            keep.push(letter.clone());
            unfinished += 1;
            continue;
        }
        let url = args.url.as_deref().unwrap_or(&letter.url);
        let webhook =
            Webhook::from_json(url, letter.payload.get()).and_then(|w| w.with_id(&letter.id));
        match webhook {
            Ok(webhook) => {
                if session.send(tag, webhook).is_err() {
                    keep.push(letter.clone());
                    unfinished += 1;
                }
            }
            Err(e) => {
                session.invalid(tag, &format!("{} cannot be replayed: {e}", letter.id));
                keep.push(letter.clone());
            }
        }
    }

    let finished = session.finish();
    let stats = finished.stats;
    unfinished += finished.in_flight.len();
    keep.extend(
        finished
            .in_flight
            .iter()
            .map(|(tag, _)| letters[*tag as usize - 1].clone()),
    );
    keep.extend(failed.take());
    keep.extend(finished.unsaved);

    let rewrite_error = rewrite(file, &tmp, &keep).err().map(|e| {
        eprintln!(
            "hookpool: cannot rewrite {}: {e}; it is unchanged",
            file.display()
        );
        let _ = fs::remove_file(&tmp);
        e.to_string()
    });
    let summary = Summary {
        letters: letters.len(),
        recovered: 0,
        invalid: finished.invalid,
        accepted: stats.accepted,
        delivered: stats.delivered,
        dead_lettered: stats.dead_lettered,
        unfinished,
        remaining: if rewrite_error.is_some() {
            letters.len()
        } else {
            keep.len()
        },
        interrupted: finished.interrupted,
        rewrite_error,
        file: file.display().to_string(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(summary.remaining == 0))
}

/// Whether FILE is a SQLite database: it starts with SQLite's header.
fn is_sqlite(file: &Path) -> Result<bool, UsageError> {
    let mut head = [0; 16];
    let read = File::open(file).and_then(|mut f| {
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    });
    match read {
        Ok(n) => Ok(n == head.len() && &head == SQLITE_HEADER),
        Err(e) => Err(UsageError(format!("cannot read {}: {e}", file.display()))),
    }
}

/// Replays the dead letters of a SQLite file: a dispatcher on it as its
/// journal (no other sink, so letters that fail again go back to its
/// table) moves them back in chunks that fit the queue, waits until each
/// is delivered or a letter again, and shuts down. What the file held
/// unfinished is delivered as well; after Ctrl-C, what is unfinished stays
/// in the file.
fn replay_sqlite(
    args: &Args,
    file: &Path,
    queue: usize,
    interrupt: &Interrupt,
    started: Instant,
) -> Result<ExitCode, UsageError> {
    if args.url.is_some() {
        return Err(UsageError(format!(
            "--url cannot be used with a SQLite file ({}): its letters are moved back as \
             they are, to their stored URLs",
            file.display()
        )));
    }
    let keep = Keep {
        sink: None,
        journal: Some(Journal::new(file)),
    };
    let session = Session::start(&args.delivery, queue, "replay", keep, "letter", interrupt)?;
    let hooks = session.dispatcher();
    let cannot = |e: &hookpool::StoreError| {
        UsageError::with_causes(&format!("cannot read {}", file.display()), e)
    };
    let letters = hooks
        .stored_dead_letters(usize::MAX)
        .map_err(|e| cannot(&e))?;
    // Letters that fail again go back with new numbers: only these are replayed.
    let last = letters.iter().map(|l| l.seq).max().unwrap_or(0);
    let invalid = unreplayable(&letters, |seq, why| session.invalid(seq, why));
    while !interrupt.is_set() {
        let room = session.room();
        if room == 0 {
            continue;
        }
        // The oldest letters: those that cannot be replayed stay in front.
        let front = hooks
            .stored_dead_letters(room + invalid)
            .map_err(|e| cannot(&e))?;
        let chunk = front.iter().take_while(|l| l.seq <= last).count();
        if !front[..chunk].iter().any(|l| replayable(&l.letter)) {
            break;
        }
        let queued = hooks
            .replay_stored(chunk, ROOM_WAIT)
            .map_err(|e| cannot(&e))?;
        session.refresh();
        if queued == 0 {
            break;
        }
    }

    let recovered = session.recovered();
    let finished = session.finish();
    let stats = finished.stats;
    let remaining = stats.store.as_ref().map_or(0, |s| s.dead_letters);
    let summary = Summary {
        letters: letters.len(),
        recovered,
        invalid: finished.invalid,
        accepted: stats.accepted,
        delivered: stats.delivered,
        dead_lettered: stats.dead_lettered,
        unfinished: usize::try_from(finished.kept).unwrap_or(usize::MAX),
        remaining: usize::try_from(remaining).unwrap_or(usize::MAX),
        interrupted: finished.interrupted,
        rewrite_error: None,
        file: file.display().to_string(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if finished.kept > 0 {
        eprintln!(
            "hookpool: {} unfinished webhooks are kept in {}: the next replay of it delivers them",
            finished.kept,
            file.display()
        );
    }
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(summary.remaining == 0 && summary.unfinished == 0))
}

/// Whether a stored letter can be sent again: its URL and id are valid.
pub(crate) fn replayable(letter: &DeadLetter) -> bool {
    letter.clone().into_webhook().is_ok()
}

/// Reports each stored letter that cannot be sent again through `say`
/// (its number, and why in words); returns how many there are.
pub(crate) fn unreplayable(letters: &[StoredDeadLetter], mut say: impl FnMut(u64, &str)) -> usize {
    let mut invalid = 0;
    for stored in letters {
        if let Err(e) = stored.letter.clone().into_webhook() {
            invalid += 1;
            say(
                stored.seq,
                &format!("{} cannot be replayed: {e}", stored.letter.id),
            );
        }
    }
    invalid
}

/// `FILE.tmp`, next to FILE so that the rename stays on one file system.
fn temp_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn check_writable(tmp: &Path) -> Result<(), UsageError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .and_then(|_| fs::remove_file(tmp))
        .map_err(|e| UsageError(format!("cannot write {}: {e}", tmp.display())))
}

/// Writes `letters` to `tmp`, fsyncs it, gives it FILE's permissions (the
/// letters hold payloads), renames it over FILE and fsyncs the directory.
fn rewrite(file: &Path, tmp: &Path, letters: &[DeadLetter]) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(tmp)?);
    for letter in letters {
        serde_json::to_writer(&mut out, letter)?;
        out.write_all(b"\n")?;
    }
    let out = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    out.sync_all()?;
    if let Ok(meta) = fs::metadata(file) {
        fs::set_permissions(tmp, meta.permissions())?;
    }
    fs::rename(tmp, file)?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Makes the rename itself durable; not every platform can open a directory.
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookpool::DeadLetterReason;

    #[test]
    fn rewrite_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("hookpool-rewrite-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dead.jsonl");
        fs::write(&file, "old contents\n").unwrap();
        let tmp = temp_path(&file);
        assert_eq!(tmp, dir.join("dead.jsonl.tmp"));
        let hook = Webhook::new("http://127.0.0.1:9/", &serde_json::json!({"n": 1})).unwrap();
        let letter = DeadLetter::from_webhook(&hook, DeadLetterReason::Shutdown, "stopped");
        rewrite(&file, &tmp, &[letter.clone(), letter]).unwrap();
        let back = JsonlDeadLetters::read(&file).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].id, hook.id());
        assert!(!tmp.exists());
        rewrite(&file, &tmp, &[]).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
