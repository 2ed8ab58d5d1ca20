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
            shutdown_timeout: seconds("SHUTDOWN_TIMEOUT", 10.0)?,
            webhook_timeout: seconds("WEBHOOK_TIMEOUT", 10.0)?,
        })
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
