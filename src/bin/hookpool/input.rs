//! The input of `hookpool send`: lines read on a thread of their own and
//! handed over in batches, and, for a file, the position after each line (a
//! [`Cursor`]) that the journal saves with a batch of webhooks (the position
//! after the batch's last line), so that a rerun resumes after it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
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
        let regular = matches!(self, Source::File { .. });
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
            regular,
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

/// At most this many lines are read in one batch: one journal commit, or
/// one Redis script, for all of them.
pub(crate) const BATCH: usize = 256;

/// Lines `first` to `last`, for messages.
pub(crate) fn line_range(first: u64, last: u64) -> String {
    if first == last {
        format!("line {first}")
    } else {
        format!("lines {first} to {last}")
    }
}

/// What the reader starts from.
pub(crate) struct Start {
    pub(crate) source: Box<dyn Read + Send>,
    /// The number of the line before the first one read (0 from the start).
    pub(crate) after_line: u64,
    /// For a file whose lines get cursors: its canonical path, the offset
    /// reading starts at, and the digest of the bytes before it.
    pub(crate) cursors: Option<(String, u64, Context)>,
    /// The source is a regular file, whose reads never wait for more input
    /// to be written.
    pub(crate) regular: bool,
}

/// A line's number (from 1) and bytes, without the line ending.
pub(crate) type NumberedLine = (u64, Vec<u8>);

/// One line read.
pub(crate) struct Line {
    /// Its number, from 1.
    pub(crate) n: u64,
    /// Its bytes, without the line ending.
    pub(crate) bytes: Vec<u8>,
    /// Where the input stands after it, if the input has cursors.
    pub(crate) mark: Option<Mark>,
}

/// Where a file input stands after a line: what its [`Cursor`] is made of,
/// made into one only for the lines that save it.
pub(crate) struct Mark {
    input: Arc<str>,
    line: u64,
    offset: u64,
    /// The digest of the bytes before `offset`, not yet finished.
    digest: Context,
}

impl Mark {
    /// The cursor, as JSON.
    pub(crate) fn cursor(self) -> String {
        let cursor = Cursor {
            input: self.input.as_ref().to_owned(),
            line: self.line,
            offset: self.offset,
            sha256: hex(self.digest.finish().as_ref()),
        };
        serde_json::to_string(&cursor).unwrap_or_default()
    }
}

/// The lines the reader hands over at once.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) lines: Vec<Line>,
    /// Reading failed at this line, after the ones in `lines`.
    pub(crate) failed: Option<(u64, io::Error)>,
}

/// What [`Reader::next`] found.
pub(crate) enum Next {
    Batch(Batch),
    /// Nothing yet: the input has not given a complete line.
    Waiting,
    /// The input ended.
    End,
}

/// Lines read on a thread of their own, so that Ctrl-C is noticed even
/// while a read blocks, and handed over in batches, on demand: the thread
/// reads only when asked, so it holds at most a batch that it has not
/// handed over, and its buffer. A batch is the lines already in the buffer
/// (or, for a regular file, the next ones), up to the number asked for, or
/// the next line if the buffer holds no complete one: an input that
/// trickles is sent line by line, as each comes; a file in full batches.
pub(crate) struct Reader {
    ask: Sender<usize>,
    got: Receiver<Batch>,
    /// A batch was asked for and has not come yet.
    asked: bool,
    thread: JoinHandle<Vec<NumberedLine>>,
}

impl Reader {
    /// Starts the thread.
    pub(crate) fn spawn(start: Start) -> Result<Reader, UsageError> {
        let (ask, asks) = mpsc::channel();
        let (tx, got) = mpsc::sync_channel(0);
        let thread = std::thread::Builder::new()
            .name("send-reader".into())
            .spawn(move || read_lines(start, &asks, &tx))
            .map_err(|e| UsageError(format!("cannot start the reader thread: {e}")))?;
        Ok(Reader {
            ask,
            got,
            asked: false,
            thread,
        })
    }

    /// The next batch, of at most `most` lines (at least one), waiting up
    /// to `timeout` for it. A batch asked for and not come in time is the
    /// next call's, whatever its `most`.
    pub(crate) fn next(&mut self, most: usize, timeout: Duration) -> Next {
        if !self.asked {
            if self.ask.send(most.max(1)).is_err() {
                return Next::End;
            }
            self.asked = true;
        }
        match self.got.recv_timeout(timeout) {
            Ok(batch) => {
                self.asked = false;
                Next::Batch(batch)
            }
            Err(RecvTimeoutError::Timeout) => Next::Waiting,
            Err(RecvTimeoutError::Disconnected) => Next::End,
        }
    }

    /// Stops the reader and takes back what it read and did not hand over:
    /// a batch it was handing over, and the complete lines in its buffer. A
    /// reader still blocked in a read holds nothing, and is left to end
    /// with the process.
    pub(crate) fn reclaim(self) -> Vec<NumberedLine> {
        let Reader {
            ask, got, thread, ..
        } = self;
        drop((ask, got));
        let deadline = Instant::now() + Duration::from_millis(500);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            thread.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

/// The cursors' state: the input's canonical path, the offset after the
/// last line read, and the digest of the bytes before it.
struct Cursors {
    input: Arc<str>,
    offset: u64,
    digest: Context,
}

impl Cursors {
    /// Takes `line` (with its ending) into the digest; where the input stands after it.
    fn mark(&mut self, n: u64, line: &[u8]) -> Mark {
        self.digest.update(line);
        self.offset += line.len() as u64;
        Mark {
            input: Arc::clone(&self.input),
            line: n,
            offset: self.offset,
            digest: self.digest.clone(),
        }
    }
}

fn read_lines(start: Start, asks: &Receiver<usize>, tx: &SyncSender<Batch>) -> Vec<NumberedLine> {
    let mut reader = BufReader::with_capacity(64 * 1024, start.source);
    let regular = start.regular;
    let mut n = start.after_line;
    let mut cursors = start.cursors.map(|(input, offset, digest)| Cursors {
        input: input.into(),
        offset,
        digest,
    });
    while let Ok(most) = asks.recv() {
        let mut batch = Batch::default();
        let mut ended = false;
        while batch.lines.len() < most {
            // Past the first line, only lines that are there already: a
            // batch never waits for input to be written.
            if !batch.lines.is_empty() && !regular && !reader.buffer().contains(&b'\n') {
                break;
            }
            let mut bytes = Vec::new();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(_) => {
                    n += 1;
                    let mark = cursors.as_mut().map(|c| c.mark(n, &bytes));
                    trim_line_end(&mut bytes);
                    batch.lines.push(Line { n, bytes, mark });
                }
                Err(e) => {
                    batch.failed = Some((n + 1, e));
                    ended = true;
                    break;
                }
            }
        }
        if batch.lines.is_empty() && batch.failed.is_none() {
            // The end: the sender dropped says so.
            return Vec::new();
        }
        if let Err(mpsc::SendError(batch)) = tx.send(batch) {
            let taken = batch.lines.into_iter().map(|l| (l.n, l.bytes)).collect();
            return left_over(taken, n, reader.buffer());
        }
        if ended {
            return Vec::new();
        }
    }
    // Not asked any more.
    left_over(Vec::new(), n, reader.buffer())
}

/// `taken`, then the lines in `buffer`, numbered on from `n`: complete
/// ones, and a last one without its line ending.
fn left_over(mut taken: Vec<NumberedLine>, mut n: u64, buffer: &[u8]) -> Vec<NumberedLine> {
    if buffer.is_empty() {
        return taken;
    }
    // A buffer that ends with a newline does not end with an empty line.
    let buffer = buffer.strip_suffix(b"\n").unwrap_or(buffer);
    for piece in buffer.split(|b| *b == b'\n') {
        n += 1;
        let mut line = piece.to_vec();
        trim_line_end(&mut line);
        taken.push((n, line));
    }
    taken
}

fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
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
            regular: false,
        }
    }

    /// What the reader hands back when nobody takes the first line it was
    /// asked for.
    fn leftovers(input: &'static str) -> Vec<(u64, String)> {
        let (ask, asks) = mpsc::channel();
        let (tx, rx) = mpsc::sync_channel(0);
        ask.send(1).unwrap();
        drop(rx);
        read_lines(start(input, false), &asks, &tx)
            .into_iter()
            .map(|(n, l)| (n, String::from_utf8(l).unwrap()))
            .collect()
    }

    fn lines(v: &[(u64, &str)]) -> Vec<(u64, String)> {
        v.iter().map(|(n, l)| (*n, (*l).to_owned())).collect()
    }

    #[test]
    fn a_stopped_reader_hands_back_every_line_it_took() {
        assert_eq!(
            leftovers("a\r\nb\n\nc"),
            lines(&[(1, "a"), (2, "b"), (3, ""), (4, "c")])
        );
        assert_eq!(leftovers("a\nb\n"), lines(&[(1, "a"), (2, "b")]));
        assert_eq!(leftovers("a\nb\n\n"), lines(&[(1, "a"), (2, "b"), (3, "")]));
        assert_eq!(leftovers("a\n"), lines(&[(1, "a")]));
        assert!(leftovers("").is_empty());
    }

    /// A source that gives what the test writes, and waits for more like
    /// a pipe, until the writer is dropped.
    struct Pipe {
        chunks: mpsc::Receiver<&'static str>,
        rest: &'static [u8],
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.rest.is_empty() {
                match self.chunks.recv() {
                    Ok(chunk) => self.rest = chunk.as_bytes(),
                    Err(_) => return Ok(0),
                }
            }
            let n = self.rest.len().min(buf.len());
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    fn texts(next: Next) -> Vec<(u64, String)> {
        match next {
            Next::Batch(b) => b
                .lines
                .into_iter()
                .map(|l| (l.n, String::from_utf8(l.bytes).unwrap()))
                .collect(),
            Next::Waiting => panic!("no batch in time"),
            Next::End => panic!("the end"),
        }
    }

    /// A batch is what was written already, up to the number asked for: a
    /// stream that trickles gives each line as it comes, never waiting for
    /// a batch to fill; the rest of a buffer comes with the next batch.
    #[test]
    fn a_batch_never_waits_for_more_input() {
        let (write, chunks) = mpsc::channel();
        let mut reader = Reader::spawn(Start {
            source: Box::new(Pipe { chunks, rest: b"" }),
            after_line: 0,
            cursors: None,
            regular: false,
        })
        .unwrap();
        let wait = Duration::from_secs(10);
        write.send("a\nb\nc").unwrap();
        assert_eq!(
            texts(reader.next(BATCH, wait)),
            lines(&[(1, "a"), (2, "b")])
        );
        write.send("d\ne\nf\n").unwrap();
        assert_eq!(texts(reader.next(2, wait)), lines(&[(3, "cd"), (4, "e")]));
        assert_eq!(texts(reader.next(BATCH, wait)), lines(&[(5, "f")]));
        // Asked, and nothing written: no batch, and the question stands.
        assert!(matches!(
            reader.next(BATCH, Duration::from_millis(20)),
            Next::Waiting
        ));
        write.send("g\n").unwrap();
        assert_eq!(texts(reader.next(BATCH, wait)), lines(&[(6, "g")]));
        drop(write);
        assert!(matches!(reader.next(BATCH, wait), Next::End));
        assert!(reader.reclaim().is_empty());
    }

    /// A regular file's batches are full ones; from a pipe, a batch ends
    /// where the buffer's complete lines do.
    #[test]
    fn a_regular_file_gives_full_batches() {
        let sizes = |regular: bool| {
            // 201 bytes a line: 326 of them and a piece fit in 64 KiB.
            let text: String = (1..=600).map(|i| format!("{i:0>200}\n")).collect();
            let mut reader = Reader::spawn(Start {
                source: Box::new(io::Cursor::new(text.into_bytes())),
                after_line: 0,
                cursors: None,
                regular,
            })
            .unwrap();
            let mut sizes = Vec::new();
            while let Next::Batch(b) = reader.next(BATCH, Duration::from_secs(10)) {
                sizes.push(b.lines.len());
            }
            sizes
        };
        assert_eq!(sizes(true), [256, 256, 88]);
        assert_eq!(sizes(false), [256, 70, 256, 18]);
    }

    /// Stopped between batches, the reader hands back the rest of its buffer.
    #[test]
    fn a_reader_no_longer_asked_hands_back_its_buffer() {
        let mut reader = Reader::spawn(start("a\nb\nc\n", false)).unwrap();
        let wait = Duration::from_secs(10);
        assert_eq!(texts(reader.next(1, wait)), lines(&[(1, "a")]));
        assert_eq!(reader.reclaim(), [(2, b"b".to_vec()), (3, b"c".to_vec())]);
    }

    fn sha256(bytes: &[u8]) -> String {
        hex(ring::digest::digest(&SHA256, bytes).as_ref())
    }

    #[test]
    fn each_line_carries_the_position_after_it_and_the_digest_before_it() {
        let input = "{\"a\":1}\r\n\n{\"b\":2}";
        let mut reader = Reader::spawn(start(input, true)).unwrap();
        let mut cursors: Vec<Cursor> = Vec::new();
        while let Next::Batch(batch) = reader.next(BATCH, Duration::from_secs(10)) {
            cursors.extend(
                batch
                    .lines
                    .into_iter()
                    .map(|l| serde_json::from_str(&l.mark.expect("a mark").cursor()).unwrap()),
            );
        }
        assert!(reader.reclaim().is_empty());
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
