//! `hookpool replay FILE`: delivers dead letters again, then rewrites FILE
//! atomically with only the letters that failed again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use hookpool::{DeadLetter, JsonlDeadLetters, MemoryDeadLetters, Webhook};
use serde::Serialize;

use crate::run::{DeliveryArgs, Session};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// The flags of `hookpool replay` (its help text is on `Command::Replay`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dead-letter file: JSON Lines, as `hookpool send` writes it
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Send every letter to URL instead of its stored one (the file keeps the stored URL
    /// for letters never attempted)
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[command(flatten)]
    delivery: DeliveryArgs,
}

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    /// Letters read from the file.
    letters: usize,
    /// Letters that cannot be turned into a webhook (bad URL or id); kept.
    invalid: u64,
    accepted: u64,
    delivered: u64,
    /// Letters that failed again; kept with their new error.
    dead_lettered: u64,
    /// After Ctrl-C: letters never queued or still in flight; kept as they were.
    unfinished: usize,
    /// Letters now in the file.
    remaining: usize,
    interrupted: bool,
    /// The error if the file could not be rewritten (it is then unchanged).
    rewrite_error: Option<String>,
    file: String,
    elapsed_ms: u64,
}

pub(crate) fn run(args: Args, interrupt: &Interrupt) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    if let Some(url) = &args.url {
        Webhook::from_json(url, "null").map_err(|e| UsageError(format!("--url: {e}")))?;
    }
    let letters = JsonlDeadLetters::read(&args.file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    // Checked now, so that a file that cannot be replaced fails before anything is sent.
    let tmp = temp_path(&args.file);
    check_writable(&tmp)?;

    let failed = MemoryDeadLetters::new();
    let session = Session::start(
        &args.delivery,
        "replay",
        failed.clone(),
        "letter",
        interrupt,
    )?;
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

    let rewrite_error = rewrite(&args.file, &tmp, &keep).err().map(|e| {
        eprintln!(
            "hookpool: cannot rewrite {}: {e}; it is unchanged",
            args.file.display()
        );
        let _ = fs::remove_file(&tmp);
        e.to_string()
    });
    let summary = Summary {
        letters: letters.len(),
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
        file: args.file.display().to_string(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(summary.remaining == 0))
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
