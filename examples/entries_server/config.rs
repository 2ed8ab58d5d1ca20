//! The settings, read from the environment.

use std::path::PathBuf;
use std::time::Duration;

use hookpool::{SigningSecret, Webhook};

/// Settings read from the environment.
pub(crate) struct Config {
    pub(crate) webhook_url: String,
    /// For logs: the query string, which may hold a token, is hidden.
    pub(crate) redacted_url: String,
    pub(crate) secret: Option<String>,
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) listen: String,
    pub(crate) dead_letters: PathBuf,
    /// `None`: no journal (`JOURNAL=""`), webhooks live in memory only.
    pub(crate) journal: Option<PathBuf>,
    /// A cap on the journal's size, for tests: it makes the journal fail as
    /// on a full disk without filling one.
    pub(crate) journal_max_bytes: Option<u64>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) webhook_timeout: Duration,
}

impl Config {
    /// Reads and checks every variable; the error names the variable.
    pub(crate) fn from_env() -> Result<Config, String> {
        let webhook_url = var("WEBHOOK_URL").ok_or(
            "WEBHOOK_URL is required: the URL every webhook is sent to, such as http://127.0.0.1:9000/hooks",
        )?;
        let redacted_url = Webhook::new(&webhook_url, &())
            .map_err(|e| format!("WEBHOOK_URL: {e}"))?
            .redacted_url();
        let secret = var("WEBHOOK_SECRET");
        if let Some(s) = &secret {
            SigningSecret::new(s).map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
        }
        Ok(Config {
            webhook_url,
            redacted_url,
            secret,
            workers: positive("WORKERS", 4)?,
            queue_capacity: positive("QUEUE_CAPACITY", 1024)?,
            listen: var("LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            dead_letters: var("DEAD_LETTERS")
                .unwrap_or_else(|| "dead-letters.jsonl".into())
                .into(),
            journal: journal(),
            journal_max_bytes: match var(JOURNAL_MAX_BYTES) {
                None => None,
                Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                    format!("{JOURNAL_MAX_BYTES} must be a number of bytes, got {v:?}")
                })?),
            },
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", 10.0)?,
            webhook_timeout: seconds("WEBHOOK_TIMEOUT", 10.0)?,
        })
    }
}

/// Not in the README: tests use it to make the journal full.
const JOURNAL_MAX_BYTES: &str = "ENTRIES_TEST_JOURNAL_MAX_BYTES";

/// `JOURNAL`: unset is the default file, set but empty turns the journal
/// off (unlike the other variables, where empty means unset).
fn journal() -> Option<PathBuf> {
    match std::env::var_os("JOURNAL") {
        None => Some("entries-journal.db".into()),
        Some(v) if v.to_string_lossy().trim().is_empty() => None,
        Some(v) => Some(v.into()),
    }
}

/// A variable's value; unset and empty are the same.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn positive(name: &str, default: usize) -> Result<usize, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive integer, got {v:?}")),
        },
    }
}

fn seconds(name: &str, default: f64) -> Result<Duration, String> {
    let Some(v) = var(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    v.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{name} must be a positive number of seconds, got {v:?}"))
}
