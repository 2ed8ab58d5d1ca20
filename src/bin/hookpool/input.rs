//! The input of `hookpool send`: lines read on a thread of their own, and,
//! for a file, the position after each line (a [`Cursor`]) that the journal
//! saves with the line's webhook, so that a rerun resumes after it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::UsageError;

/// Where a file input stands after one of its lines. Saved in the journal
/// with that line's webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The input file's canonical path.
    pub(crate) input: String,
    /// The line's number, from 1.
    pub(crate) line: u64,
    /// The byte offset after the line and its line ending.
    pub(crate) offset: u64,
    /// SHA-256 of the input's bytes before `offset`, in lowercase hex.
    pub(crate) sha256: String,
}

/// Where the lines come from.
pub(crate) enum Source {
    /// Standard input: read once, never resumed.
    Stdin,
    /// A file that is not a regular file (a FIFO, a device): read like
    /// standard input.
    Stream(PathBuf, File),
    /// A regular file, which can be resumed.
    File {
        path: PathBuf,
        /// Its canonical path, as cursors name it.
        canonical: String,
        file: File,
    },
}

impl Source {
    /// Standard input for `None` or `-`, else the file.
    pub(crate) fn open(path: Option<&Path>) -> Result<Source, UsageError> {
        let path = match path {
            Some(p) if p != Path::new("-") => p,
            _ => return Ok(Source::Stdin),
        };
        let cannot =
            |e: &dyn std::fmt::Display| UsageError(format!("cannot read {}: {e}", path.display()));
        if path.is_dir() {
            return Err(cannot(&"it is a directory"));
        }
        let file = File::open(path).map_err(|e| cannot(&e))?;
        if !file.metadata().map_err(|e| cannot(&e))?.is_file() {
            return Ok(Source::Stream(path.to_owned(), file));
        }
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| cannot(&e))?
            .to_string_lossy()
            .into_owned();
        Ok(Source::File {
            path: path.to_owned(),
            canonical,
            file,
        })
    }

    /// Reading from the first line, without cursors. Says on stderr how to
    /// end standard input when it is a terminal.
    pub(crate) fn into_start(self) -> Start {
        let source: Box<dyn Read + Send> = match self {
            Source::Stdin => {
                if io::stdin().is_terminal() {
                    eprintln!(
                        "hookpool: reading JSON Lines from the terminal; Ctrl-D ends the input"
                    );
                }
                Box::new(io::stdin())
            }
            Source::Stream(_, file) | Source::File { file, .. } => Box::new(file),
        };
        Start {
            source,
            after_line: 0,
            cursors: None,
        }
    }

    /// How messages name it.
    pub(crate) fn name(&self) -> String {
        match self {
            Source::Stdin => "standard input".to_owned(),
            Source::Stream(path, _) | Source::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Why a file cannot be resumed from a journal's cursor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The cursor names another file.
    OtherFile,
    /// The file is shorter than the cursor's offset; it has this many bytes.
    Shorter(u64),
    /// The bytes before the cursor's offset are not the ones journaled.
    Changed,
}

/// Reads the first `cursor.offset` bytes of the file, which must be the
/// ones the cursor's digest was taken of. On success the file stands at
/// the offset, and the digest goes on from there.
pub(crate) fn check_prefix(
    file: &mut File,
    canonical: &str,
    cursor: &Cursor,
) -> io::Result<Result<Context, Mismatch>> {
    if cursor.input != canonical {
        return Ok(Err(Mismatch::OtherFile));
    }
    let mut digest = Context::new(&SHA256);
    let mut buf = vec![0; 64 * 1024];
    let mut read = 0;
    while read < cursor.offset {
        let want = usize::try_from(cursor.offset - read)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Ok(Err(Mismatch::Shorter(read))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        digest.update(&buf[..n]);
        read += n as u64;
    }
    if hex(digest.clone().finish().as_ref()) != cursor.sha256 {
        return Ok(Err(Mismatch::Changed));
    }
    Ok(Ok(digest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the reader starts from.
pub(crate) struct Start {
    pub(crate) source: Box<dyn Read + Send>,
    /// The number of the line before the first one read (0 from the start).
    pub(crate) after_line: u64,
    /// For a file whose lines get cursors: its canonical path, the offset
    /// reading starts at, and the digest of the bytes before it.
    pub(crate) cursors: Option<(String, u64, Context)>,
}

/// A line's number (from 1) and bytes, without the line ending.
pub(crate) type NumberedLine = (u64, Vec<u8>);

/// What the reader thread hands over.
pub(crate) enum Input {
    /// A line's number (from 1), its bytes without the line ending, and
    /// the cursor after it (JSON), if the input has cursors.
    Line(u64, Vec<u8>, Option<String>),
    /// Reading failed at this line.
    Failed(u64, io::Error),
}

/// Reads lines on a thread of its own, so that Ctrl-C is noticed even while
/// a read blocks. The channel holds nothing (a rendezvous), so the reader
/// holds at most one line that it has not handed over; when the receiver is
/// gone it returns that line and the complete lines still in its buffer.
pub(crate) fn spawn_reader(
    start: Start,
) -> Result<(Receiver<Input>, JoinHandle<Vec<NumberedLine>>), UsageError> {
    let (tx, rx) = mpsc::sync_channel(0);
    let reader = std::thread::Builder::new()
        .name("send-reader".into())
        .spawn(move || read_lines(start, &tx))
        .map_err(|e| UsageError(format!("cannot start the reader thread: {e}")))?;
    Ok((rx, reader))
}

fn read_lines(start: Start, tx: &SyncSender<Input>) -> Vec<NumberedLine> {
    let mut reader = BufReader::with_capacity(64 * 1024, start.source);
    let mut n = start.after_line;
    let mut cursors = start.cursors;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return Vec::new(),
            Ok(_) => {
                n += 1;
                let cursor = cursors.as_mut().map(|(input, offset, digest)| {
                    digest.update(&line);
                    *offset += line.len() as u64;
                    let cursor = Cursor {
                        input: input.clone(),
                        line: n,
                        offset: *offset,
                        sha256: hex(digest.clone().finish().as_ref()),
                    };
                    serde_json::to_string(&cursor).unwrap_or_default()
                });
                trim_line_end(&mut line);
                if let Err(mpsc::SendError(Input::Line(n, line, _))) =
                    tx.send(Input::Line(n, line, cursor))
                {
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
pub(crate) fn reclaim(reader: JoinHandle<Vec<NumberedLine>>) -> Vec<NumberedLine> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn start(input: &'static str, cursors: bool) -> Start {
        Start {
            source: Box::new(input.as_bytes()),
            after_line: 0,
            cursors: cursors.then(|| ("/in.jsonl".to_owned(), 0, Context::new(&SHA256))),
        }
    }

    /// What the reader hands back when nobody takes its first line.
    fn leftovers(input: &'static str) -> Vec<(u64, String)> {
        let (tx, rx) = mpsc::sync_channel(0);
        drop(rx);
        read_lines(start(input, false), &tx)
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

    fn sha256(bytes: &[u8]) -> String {
        hex(ring::digest::digest(&SHA256, bytes).as_ref())
    }

    #[test]
    fn each_line_carries_the_position_after_it_and_the_digest_before_it() {
        let input = "{\"a\":1}\r\n\n{\"b\":2}";
        let (tx, rx) = mpsc::sync_channel(0);
        let reader = std::thread::spawn(move || read_lines(start(input, true), &tx));
        let cursors: Vec<Cursor> = rx
            .iter()
            .map(|i| match i {
                Input::Line(_, _, Some(c)) => serde_json::from_str(&c).unwrap(),
                _ => panic!("a line with a cursor"),
            })
            .collect();
        assert!(reader.join().unwrap().is_empty());
        let ends = [9, 10, input.len() as u64];
        assert_eq!(cursors.len(), 3);
        for (i, c) in cursors.iter().enumerate() {
            assert_eq!((c.line, c.offset), (i as u64 + 1, ends[i]));
            assert_eq!(c.sha256, sha256(&input.as_bytes()[..ends[i] as usize]));
            assert_eq!(c.input, "/in.jsonl");
        }
    }

    #[test]
    fn a_prefix_is_checked_and_reading_goes_on_after_it() {
        let dir = std::env::temp_dir().join(format!("hookpool-prefix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.jsonl");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let cursor = |input: &str, offset: u64, bytes: &[u8]| Cursor {
            input: input.to_owned(),
            line: 2,
            offset,
            sha256: sha256(bytes),
        };
        let good = cursor("/x", 8, b"one\ntwo\n");
        let mut file = File::open(&path).unwrap();
        let digest = check_prefix(&mut file, "/x", &good).unwrap().unwrap();
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "three\n");
        let mut whole = digest;
        whole.update(b"three\n");
        assert_eq!(
            hex(whole.finish().as_ref()),
            sha256(b"one\ntwo\nthree\n"),
            "the digest goes on"
        );

        let check = |c: &Cursor| check_prefix(&mut File::open(&path).unwrap(), "/x", c).unwrap();
        assert_eq!(
            check(&cursor("/y", 8, b"one\ntwo\n")).err(),
            Some(Mismatch::OtherFile)
        );
        assert_eq!(
            check(&cursor("/x", 8, b"one\ntwx\n")).err(),
            Some(Mismatch::Changed)
        );
        assert_eq!(
            check(&cursor("/x", 99, b"one\ntwo\n")).err(),
            Some(Mismatch::Shorter(14))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
