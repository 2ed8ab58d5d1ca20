//! Dead letters: webhooks that could not be delivered, kept for review and
//! replay.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::webhook::{Webhook, WebhookError};

/// Why a webhook was dead-lettered.
///
/// Serialized in snake case (`"retries_exhausted"`, `"shutdown"`, ...).
///
/// # Examples
///
/// ```
/// use hookpool::DeadLetterReason;
///
/// assert_eq!(DeadLetterReason::QueueFull.to_string(), "queue_full");
/// assert_eq!(serde_json::to_string(&DeadLetterReason::Shutdown)?, "\"shutdown\"");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Every attempt allowed by the retry policy failed.
    RetriesExhausted,
    /// The endpoint gave an answer that retrying cannot fix (a 4xx other than
    /// 408, 425 and 429, or a redirect).
    PermanentFailure,
    /// The endpoint answered 410 Gone, now or earlier.
    EndpointGone,
    /// The webhook passed the retry policy's maximum elapsed time, for
    /// example while its endpoint's circuit breaker was open.
    MaxElapsed,
    /// Shutdown's deadline passed before the webhook was delivered.
    Shutdown,
    /// The caller dead-lettered it because the queue was full.
    QueueFull,
    /// Delivery panicked (a bug).
    Panicked,
    /// The target address is refused by the private-network guard.
    Blocked,
    /// The worker process holding it, in a queue shared by processes, died
    /// (or stayed silent past its ttl) too many times: it may be what kills
    /// them.
    WorkerLost,
}

impl DeadLetterReason {
    /// Every reason, in declaration order.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(hookpool::DeadLetterReason::ALL.contains(&hookpool::DeadLetterReason::Shutdown));
    /// ```
    pub const ALL: [DeadLetterReason; 9] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::EndpointGone,
        DeadLetterReason::MaxElapsed,
        DeadLetterReason::Shutdown,
        DeadLetterReason::QueueFull,
        DeadLetterReason::Panicked,
        DeadLetterReason::Blocked,
        DeadLetterReason::WorkerLost,
    ];

    /// Position in [`ALL`](DeadLetterReason::ALL).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The reason whose [`as_str`](Self::as_str) is `s`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The snake-case name used in JSON and logs.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::DeadLetterReason::EndpointGone.as_str(), "endpoint_gone");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::PermanentFailure => "permanent_failure",
            DeadLetterReason::EndpointGone => "endpoint_gone",
            DeadLetterReason::MaxElapsed => "max_elapsed",
            DeadLetterReason::Shutdown => "shutdown",
            DeadLetterReason::QueueFull => "queue_full",
            DeadLetterReason::Panicked => "panicked",
            DeadLetterReason::Blocked => "blocked",
            DeadLetterReason::WorkerLost => "worker_lost",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook that was not delivered, with what is known about why.
///
/// Times are Unix milliseconds. `url` is the full URL, needed to replay;
/// `error` never contains the URL's query string.
///
/// # Examples
///
/// ```
/// use hookpool::{DeadLetter, DeadLetterReason, Webhook};
///
/// let hook = Webhook::new("https://example.com/in", &serde_json::json!({"n": 1}))?;
/// let letter = DeadLetter::from_webhook(&hook, DeadLetterReason::QueueFull, "queue is full");
/// assert_eq!(letter.attempts, 0);
/// let line = serde_json::to_string(&letter)?;
/// let back: DeadLetter = serde_json::from_str(&line)?;
/// assert_eq!(back.into_webhook()?.body(), hook.body());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The Standard Webhooks message id, kept on replay.
    pub id: String,
    /// The target URL.
    pub url: String,
    /// The JSON body, byte for byte.
    pub payload: Box<RawValue>,
    /// HTTP attempts made (0 if none was).
    pub attempts: u32,
    /// The last error, in words.
    pub error: String,
    /// The last HTTP status, if the endpoint answered.
    pub last_status: Option<u16>,
    /// When the first attempt was made (Unix ms).
    pub first_attempt_at: Option<u64>,
    /// When the last attempt was made (Unix ms).
    pub last_attempt_at: Option<u64>,
    /// When the letter was written (Unix ms).
    pub dead_lettered_at: u64,
    /// Why the webhook was given up on.
    pub reason: DeadLetterReason,
}

impl DeadLetter {
    /// A letter for a webhook that was never attempted, for example one
    /// refused with [`SubmitError::Full`](crate::SubmitError::Full).
    ///
    /// # Examples
    ///
    /// See [`DeadLetter`].
    ///
    /// ```
    /// # use hookpool::{DeadLetter, DeadLetterReason, Webhook};
    /// let hook = Webhook::new("https://example.com/", &0)?;
    /// let letter = DeadLetter::from_webhook(&hook, DeadLetterReason::Shutdown, "not sent");
    /// assert_eq!(letter.id, hook.id());
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn from_webhook(
        webhook: &Webhook,
        reason: DeadLetterReason,
        error: impl Into<String>,
    ) -> Self {
        DeadLetter {
            id: webhook.id().to_owned(),
            url: webhook.url().to_owned(),
            payload: webhook.raw_body().to_owned(),
            attempts: 0,
            error: error.into(),
            last_status: None,
            first_attempt_at: None,
            last_attempt_at: None,
            dead_lettered_at: unix_ms(SystemTime::now()),
            reason,
        }
    }

    /// The webhook again, with the same id, URL and body, ready to replay.
    ///
    /// # Errors
    ///
    /// A [`WebhookError`] if the stored URL or id is no longer valid (for
    /// example, a file edited by hand).
    ///
    /// # Examples
    ///
    /// See [`DeadLetter`].
    ///
    /// ```
    /// # use hookpool::{DeadLetter, DeadLetterReason, Webhook};
    /// let hook = Webhook::new("https://example.com/", &0)?;
    /// let again = DeadLetter::from_webhook(&hook, DeadLetterReason::Shutdown, "").into_webhook()?;
    /// assert_eq!(again.id(), hook.id());
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn into_webhook(self) -> Result<Webhook, WebhookError> {
        Webhook::from_json(&self.url, String::from(self.payload.get()))?.with_id(&self.id)
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where dead letters go.
///
/// Called from worker threads, outside every lock of the dispatcher. If
/// `store` fails, the dispatcher logs the error and keeps the letter in
/// memory; it is handed back in the shutdown report, so it is never lost.
///
/// # Examples
///
/// ```
/// use std::io;
/// use hookpool::{DeadLetter, DeadLetterSink};
///
/// /// Counts letters instead of storing them.
/// #[derive(Default)]
/// struct Counter(std::sync::atomic::AtomicUsize);
///
/// impl DeadLetterSink for Counter {
///     fn store(&self, _letter: &DeadLetter) -> io::Result<()> {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// let sink = Counter::default();
/// # let hook = hookpool::Webhook::new("https://example.com/", &0).unwrap();
/// sink.store(&DeadLetter::from_webhook(&hook, hookpool::DeadLetterReason::Shutdown, ""))?;
/// assert_eq!(sink.0.into_inner(), 1);
/// # Ok::<(), io::Error>(())
/// ```
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores one letter durably.
    ///
    /// # Errors
    ///
    /// Any I/O error; the dispatcher then keeps the letter in memory.
    fn store(&self, letter: &DeadLetter) -> io::Result<()>;
}

impl<S: DeadLetterSink + ?Sized> DeadLetterSink for Arc<S> {
    fn store(&self, letter: &DeadLetter) -> io::Result<()> {
        (**self).store(letter)
    }
}

/// Appends dead letters to a JSON Lines file, one object per line, flushed
/// and fsynced per letter.
///
/// The lock guards only the file handle; each line is serialized before it
/// is taken.
///
/// # Examples
///
/// ```
/// use hookpool::{DeadLetter, DeadLetterReason, DeadLetterSink, JsonlDeadLetters, Webhook};
///
/// let path = std::env::temp_dir().join(format!("hookpool-doc-{}.jsonl", std::process::id()));
/// let sink = JsonlDeadLetters::open(&path)?;
/// let hook = Webhook::new("https://example.com/", &serde_json::json!({"a": 1}))?;
/// sink.store(&DeadLetter::from_webhook(&hook, DeadLetterReason::QueueFull, "queue is full"))?;
/// let letters = JsonlDeadLetters::read(&path)?;
/// assert_eq!(letters.len(), 1);
/// assert_eq!(letters[0].reason, DeadLetterReason::QueueFull);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct JsonlDeadLetters {
    path: PathBuf,
    file: Mutex<Appender>,
}

/// The file, and whether a failed write may have left a partial line that
/// the next letter must not be glued to.
#[derive(Debug)]
struct Appender {
    file: File,
    after_failure: bool,
}

impl JsonlDeadLetters {
    /// Opens (creating if needed) a file to append to.
    ///
    /// # Errors
    ///
    /// The I/O error from opening the file.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("no-such-dir-for-hookpool").join("x");
    /// assert!(hookpool::JsonlDeadLetters::open(dir.join("letters.jsonl")).is_err());
    /// ```
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(JsonlDeadLetters {
            path,
            file: Mutex::new(Appender {
                file,
                after_failure: false,
            }),
        })
    }

    /// The file's path.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("hookpool-path-{}.jsonl", std::process::id()));
    /// let sink = hookpool::JsonlDeadLetters::open(&path)?;
    /// assert_eq!(sink.path(), path);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every letter in a JSON Lines file, skipping lines that are not
    /// dead letters (for example, half a line left by a full disk) and
    /// returning their 1-based numbers. Blank lines are skipped silently.
    ///
    /// # Errors
    ///
    /// An I/O error reading the file.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{DeadLetter, DeadLetterReason, JsonlDeadLetters, Webhook};
    ///
    /// let hook = Webhook::new("https://example.com/", &1)?;
    /// let line = serde_json::to_string(&DeadLetter::from_webhook(&hook, DeadLetterReason::Shutdown, ""))?;
    /// let path = std::env::temp_dir().join(format!("hookpool-lossy-{}.jsonl", std::process::id()));
    /// std::fs::write(&path, format!("{line}\n{{\"id\": \"trunc\n{line}\n"))?;
    /// let (letters, bad) = JsonlDeadLetters::read_lossy(&path)?;
    /// assert_eq!((letters.len(), bad), (2, vec![2]));
    /// assert!(JsonlDeadLetters::read(&path).is_err());
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_lossy(path: impl AsRef<Path>) -> io::Result<(Vec<DeadLetter>, Vec<usize>)> {
        let reader = BufReader::new(File::open(path)?);
        let mut letters = Vec::new();
        let mut bad = Vec::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(letter) => letters.push(letter),
                Err(_) => bad.push(n + 1),
            }
        }
        Ok((letters, bad))
    }

    /// Reads every letter in a JSON Lines file. Blank lines are skipped.
    ///
    /// # Errors
    ///
    /// An I/O error, or [`io::ErrorKind::InvalidData`] naming the first line
    /// that is not a dead letter.
    ///
    /// # Examples
    ///
    /// See [`JsonlDeadLetters`].
    ///
    /// ```
    /// assert!(hookpool::JsonlDeadLetters::read("/no/such/file.jsonl").is_err());
    /// ```
    pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<DeadLetter>> {
        let reader = BufReader::new(File::open(path)?);
        let mut letters = Vec::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let letter = serde_json::from_str(&line).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("line {}: {e}", n + 1))
            })?;
            letters.push(letter);
        }
        Ok(letters)
    }
}

impl DeadLetterSink for JsonlDeadLetters {
    /// Appends one line, flushes and fsyncs. The lock serializes appends and
    /// guards nothing else; the line is built before it is taken.
    fn store(&self, letter: &DeadLetter) -> io::Result<()> {
        let mut line = serde_json::to_vec(letter).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut out = self.file.lock();
        if out.after_failure {
            // A failed write may have left half a line: start a fresh one so
            // that only that half line is unreadable.
            line.insert(0, b'\n');
        }
        let written = out
            .file
            .write_all(&line)
            .and_then(|()| out.file.flush())
            .and_then(|()| out.file.sync_data());
        out.after_failure = written.is_err();
        written
    }
}

/// Keeps dead letters in memory: for tests, and for programs that handle
/// them themselves. Clones share the same letters.
///
/// # Examples
///
/// ```
/// use hookpool::{DeadLetter, DeadLetterReason, DeadLetterSink, MemoryDeadLetters, Webhook};
///
/// let sink = MemoryDeadLetters::new();
/// let view = sink.clone();
/// let hook = Webhook::new("https://example.com/", &0)?;
/// sink.store(&DeadLetter::from_webhook(&hook, DeadLetterReason::Shutdown, "stopped"))?;
/// assert_eq!(view.len(), 1);
/// assert_eq!(view.take()[0].id, hook.id());
/// assert!(view.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryDeadLetters {
    letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryDeadLetters {
    /// An empty store.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(hookpool::MemoryDeadLetters::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every letter stored so far.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(hookpool::MemoryDeadLetters::new().letters().is_empty());
    /// ```
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().clone()
    }

    /// Removes and returns every letter stored so far.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(hookpool::MemoryDeadLetters::new().take().is_empty());
    /// ```
    pub fn take(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.letters.lock())
    }

    /// How many letters are stored.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::MemoryDeadLetters::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.letters.lock().len()
    }

    /// Whether no letter is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(hookpool::MemoryDeadLetters::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&self, letter: DeadLetter) {
        self.letters.lock().push(letter);
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    fn store(&self, letter: &DeadLetter) -> io::Result<()> {
        self.push(letter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips_and_names_bad_lines() {
        let path = std::env::temp_dir().join(format!(
            "hookpool-dl-{}-{:?}.jsonl",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        let sink = JsonlDeadLetters::open(&path).unwrap();
        let hook = Webhook::from_json("https://example.com/x?t=1", r#"{"b": 2, "a": 1}"#).unwrap();
        let mut letter = DeadLetter::from_webhook(
            &hook,
            DeadLetterReason::RetriesExhausted,
            "endpoint answered 500",
        );
        letter.attempts = 3;
        letter.last_status = Some(500);
        sink.store(&letter).unwrap();
        sink.store(&letter).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for field in [
            "\"id\"",
            "\"url\"",
            "\"payload\"",
            "\"attempts\":3",
            "\"error\"",
            "\"last_status\":500",
            "\"first_attempt_at\"",
            "\"last_attempt_at\"",
            "\"reason\":\"retries_exhausted\"",
        ] {
            assert!(text.contains(field), "{field} missing from {text}");
        }
        // The payload is kept byte for byte (key order and spacing included).
        assert!(text.contains(r#""payload":{"b": 2, "a": 1}"#), "{text}");
        let back = JsonlDeadLetters::read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].clone().into_webhook().unwrap().body(), hook.body());

        std::fs::write(
            &path,
            format!("{}\n\nnot json\n", text.lines().next().unwrap()),
        )
        .unwrap();
        let err = JsonlDeadLetters::read(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with("line 3:"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
