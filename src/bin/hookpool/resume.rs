//! How `hookpool send` resumes from its journal: the journal's cursor is
//! read before anything is delivered, and the input checked against it
//! (the same file, with the same bytes before the cursor); what is said on
//! stderr about it; and the default journal's removal.

use std::io;
use std::path::{Path, PathBuf};

use hookpool::Journal;

use crate::UsageError;
use crate::input::{self, Cursor, Mismatch, Source, Start};
use crate::run::Session;

/// How this run reads its input, given the journal's cursor.
pub(crate) struct Plan {
    /// The line reading goes on after, when resuming.
    pub(crate) resumed_after: Option<u64>,
    /// A line not queued is read again by the next run: a file with a journal.
    pub(crate) rereadable: bool,
    /// The journal holds a position in another input, which this run
    /// (from standard input) leaves alone: the journal is never removed.
    pub(crate) other_position: bool,
    /// The cursor the journal held, as it held it.
    pub(crate) saved: Option<String>,
    /// The input, for messages.
    name: String,
}

impl Plan {
    /// Reads the journal's cursor, before anything is delivered, and checks
    /// the input against it: the same file, with the same bytes up to the
    /// cursor. An input that changed is refused.
    pub(crate) fn new(source: Source, journal: Option<&Path>) -> Result<(Plan, Start), UsageError> {
        let name = source.name();
        let saved = match journal {
            Some(file) => Journal::new(file).read_cursor().map_err(|e| {
                UsageError::with_causes(&format!("cannot open journal {}", file.display()), &e)
            })?,
            None => None,
        };
        let cursor = match (&saved, journal) {
            (Some(raw), Some(file)) => Some(serde_json::from_str::<Cursor>(raw).map_err(|_| {
                UsageError(format!(
                    "journal {} holds a position that hookpool send did not write ({raw}); \
                     give this send another --journal FILE, or --no-journal",
                    file.display()
                ))
            })?),
            _ => None,
        };
        let mut plan = Plan {
            resumed_after: None,
            rereadable: false,
            other_position: cursor.is_some(),
            saved,
            name,
        };
        let start = match (source, journal) {
            (
                Source::File {
                    path,
                    canonical,
                    mut file,
                },
                Some(journal),
            ) => {
                let digest = match &cursor {
                    None => ring::digest::Context::new(&ring::digest::SHA256),
                    Some(cursor) => {
                        let checked =
                            input::check_prefix(&mut file, &canonical, cursor).map_err(|e| {
                                UsageError(format!("cannot read {}: {e}", path.display()))
                            })?;
                        checked.map_err(|why| refusal(journal, &path, cursor, &why))?
                    }
                };
                let (after_line, offset) = cursor.as_ref().map_or((0, 0), |c| (c.line, c.offset));
                plan.resumed_after = cursor.map(|c| c.line);
                plan.rereadable = true;
                plan.other_position = false;
                Start {
                    source: Box::new(file),
                    after_line,
                    cursors: Some((canonical, offset, digest)),
                    regular: true,
                }
            }
            (source, _) => source.into_start(),
        };
        Ok((plan, start))
    }

    /// Says on stderr what the run does with what the journal holds.
    pub(crate) fn say_how(&self, session: &Session, journal: &Path) {
        let recovered = session.recovered();
        if recovered > 0 {
            session.note(&format!(
                "delivering {recovered} webhooks an earlier run left unfinished in the journal {}",
                journal.display()
            ));
        }
        if let Some(line) = self.resumed_after {
            session.note(&format!(
                "resuming {} after line {line}, the last one journaled",
                self.name
            ));
        }
        if !self.rereadable {
            session.note(&format!(
                "{} cannot be resumed: if this send stops early, the next one with the journal {} \
                 delivers what it holds, then reads its own input from the start",
                self.name,
                journal.display()
            ));
        }
        if let Some(raw) = self.saved.as_deref().filter(|_| self.other_position) {
            let at = serde_json::from_str::<Cursor>(raw)
                .map(|c| format!("{} after line {}", c.input, c.line))
                .unwrap_or_default();
            session.note(&format!(
                "the journal {} keeps its position in {at} for a send of that file; this one does not move it",
                journal.display()
            ));
        }
    }

    /// Says on stderr, after a run that did not finish, what the journal
    /// holds and what to run next.
    pub(crate) fn say_what_is_left(&self, journal: &Path, kept: u64, journaled: Option<u64>) {
        let j = journal.display();
        let held = format!("{kept} unfinished webhooks are kept in the journal {j}");
        let text = match (self.rereadable, kept, journaled) {
            (true, 0, Some(line)) => {
                format!(
                    "the journal {j} is kept: run the same command again to go on after line {line}"
                )
            }
            (true, 0, None) | (false, 0, _) => return,
            (true, _, Some(line)) => format!(
                "{held}: run the same command again to deliver them and go on after line {line}"
            ),
            (true, _, None) => {
                format!(
                    "{held}: run the same command again to deliver them and read {} from the start",
                    self.name
                )
            }
            (false, _, _) => format!(
                "{held}: the next send with it delivers them ({} is not resumed: that send reads its own input from the start)",
                self.name
            ),
        };
        eprintln!("hookpool: {text}");
    }
}

/// Why an input cannot be resumed from the journal, and what to do.
fn refusal(journal: &Path, input: &Path, cursor: &Cursor, why: &Mismatch) -> UsageError {
    let (j, i, line) = (journal.display(), input.display(), cursor.line);
    let what = match why {
        Mismatch::OtherFile => {
            return UsageError(format!(
                "journal {j} belongs to a send of {} (journaled up to line {line}), not of {i}: \
                 run that send again to finish it, or give this one another --journal FILE \
                 (or --no-journal). {j} still holds the webhooks that send left unfinished; \
                 removing it gives them up",
                cursor.input
            ));
        }
        Mismatch::Shorter(len) => format!(
            "it has {len} bytes, fewer than the {} journaled (lines 1 to {line})",
            cursor.offset
        ),
        Mismatch::Changed => format!(
            "its first {} bytes (lines 1 to {line}) are not the ones journaled",
            cursor.offset
        ),
    };
    UsageError(format!(
        "{i} has changed since journal {j} was written: {what}. Restore it and run again to go \
         on after line {line}, or start afresh with another --journal FILE (or --no-journal). \
         {j} still holds the webhooks that send left unfinished, which any send with it \
         delivers; removing it gives them up"
    ))
}

/// Removes a journal file that holds nothing any more, with its WAL;
/// returns whether it is gone.
pub(crate) fn remove_journal(file: &Path) -> bool {
    let gone = match std::fs::remove_file(file) {
        Ok(()) => true,
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    for suffix in ["-wal", "-shm"] {
        let mut side = file.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    gone
}
