//! The shared queue: many processes, on many machines, enqueue into and
//! deliver from one Redis queue, at least once, and a crashed process's
//! webhooks are taken back by the others.
//!
//! Each process has an identity and a heartbeat. Workers claim webhooks
//! into a set of their own; a worker silent for longer than the ttl is
//! declared dead by any live process, and what it held goes back to the
//! queue (or, after `max_deaths`, to the dead letters as `worker_lost`).
//! Every state change is one Lua script ([`scripts`]). Breaker and pacing
//! state stay per process.

mod scripts;
mod status;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Row, RowState, StoreError};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
pub(crate) use writer::RedisStore;

/// The shared queue in Redis: give it to
/// [`DispatcherBuilder::redis`](crate::DispatcherBuilder::redis).
///
/// Any number of processes with a dispatcher on the same URL and queue
/// name share the queue: `send_durable` and `try_send` enqueue into it
/// (whichever process delivers), and each worker process claims webhooks
/// from it into its own bounded queue. Delivery is at least once: a
/// webhook whose worker died is delivered again by another, with the same
/// id, so receivers drop duplicates by `webhook-id`.
///
/// Redis must not evict keys (`maxmemory-policy noeviction`; a warning is
/// logged at connect otherwise), and keeps what it acknowledged across its
/// own restart only with AOF: `appendonly yes` with `appendfsync always`
/// loses nothing acknowledged; `everysec` may lose the last second of
/// writes if the machine crashes. AUTH and TLS come through the URL
/// (`redis://user:password@host:6379/0`, `rediss://...`); the password never
/// appears in logs or errors.
///
/// # Examples
///
/// ```no_run
/// use hookpool::{Dispatcher, RedisQueue};
///
/// // A web process: enqueues, delivers nothing.
/// let web = Dispatcher::builder()
///     .redis(RedisQueue::new("redis://127.0.0.1:6379/", "hooks").producer_only())
///     .build()?;
/// // A worker process: enqueues and delivers.
/// let worker = Dispatcher::builder()
///     .redis(RedisQueue::new("redis://127.0.0.1:6379/", "hooks"))
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[must_use = "a redis queue does nothing until it is given to a dispatcher builder"]
pub struct RedisQueue {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) producer_only: bool,
    pub(crate) ttl: Duration,
    pub(crate) max_deaths: u32,
    pub(crate) timeout: Duration,
    /// CA certificates (PEM) to trust instead of the bundled roots.
    pub(crate) tls_roots: Option<Vec<u8>>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &crate::webhook::redact_url(&self.url))
            .field("name", &self.name)
            .field("producer_only", &self.producer_only)
            .field("ttl", &self.ttl)
            .field("max_deaths", &self.max_deaths)
            .field("timeout", &self.timeout)
            .field("tls_roots", &self.tls_roots.as_ref().map(|_| ".."))
            .finish()
    }
}

impl RedisQueue {
    /// The queue `name` on the Redis server at `url`.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = hookpool::RedisQueue::new("redis://:s3cret@127.0.0.1:6379/", "hooks");
    /// assert_eq!(queue.queue_name(), "hooks");
    /// assert!(!format!("{queue:?}").contains("s3cret"));
    /// ```
    pub fn new(url: &str, name: &str) -> Self {
        RedisQueue {
            url: url.to_owned(),
            name: name.to_owned(),
            producer_only: false,
            ttl: Duration::from_secs(30),
            max_deaths: 3,
            timeout: Duration::from_secs(5),
            tls_roots: None,
        }
    }

    /// For a `rediss://` URL: trusts the CA certificates in `pem` instead of
    /// the bundled Mozilla roots, for a Redis whose certificate comes from a
    /// private CA. Without it, a `rediss://` URL trusts the bundled roots
    /// (`rediss://host/#insecure` turns verification off: for tests only).
    ///
    /// # Examples
    ///
    /// ```
    /// let pem = b"-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n";
    /// let queue = hookpool::RedisQueue::new("rediss://redis.internal:6380/", "hooks")
    ///     .tls_root_certificates_pem(pem.to_vec());
    /// # drop(queue);
    /// ```
    pub fn tls_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots = Some(pem.into());
        self
    }

    /// Enqueues only: this process delivers nothing (a web process, say).
    /// It still helps take back the webhooks of dead workers. Defaults to
    /// off: the process enqueues and delivers.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = hookpool::RedisQueue::new("redis://127.0.0.1/", "hooks").producer_only();
    /// # drop(queue);
    /// ```
    pub fn producer_only(mut self) -> Self {
        self.producer_only = true;
        self
    }

    /// How long a worker may stay silent (no heartbeat) before the others
    /// take its webhooks back. Heartbeats go every third of it, from a
    /// thread of their own, so a slow delivery never makes a live worker
    /// look dead; the dispatcher's request timeout must be at most half of
    /// it ([`build`](crate::DispatcherBuilder::build) checks). Defaults to
    /// 30 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = hookpool::RedisQueue::new("redis://127.0.0.1/", "hooks")
    ///     .worker_ttl(std::time::Duration::from_secs(10));
    /// # drop(queue);
    /// ```
    pub fn worker_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How many times a webhook's worker may die holding it before it is
    /// dead-lettered with reason `worker_lost` (a webhook that crashes
    /// whoever delivers it must not kill every worker). Defaults to 3; `0`
    /// is treated as 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = hookpool::RedisQueue::new("redis://127.0.0.1/", "hooks").max_worker_deaths(5);
    /// # drop(queue);
    /// ```
    pub fn max_worker_deaths(mut self, n: u32) -> Self {
        self.max_deaths = n.max(1);
        self
    }

    /// How long one call to Redis may take (connect, read, write): a
    /// durable send to an unreachable Redis fails after it, with the
    /// webhook. Defaults to 5 s.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = hookpool::RedisQueue::new("redis://127.0.0.1/", "hooks")
    ///     .timeout(std::time::Duration::from_secs(2));
    /// # drop(queue);
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The queue's name.
    ///
    /// # Examples
    ///
    /// See [`RedisQueue::new`].
    ///
    /// ```
    /// assert_eq!(hookpool::RedisQueue::new("redis://127.0.0.1/", "q").queue_name(), "q");
    /// ```
    pub fn queue_name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_producer_only(&self) -> bool {
        self.producer_only
    }

    /// Connects, checks the server, registers this process, and starts the
    /// writer and heartbeat threads.
    pub(crate) fn open(&self, name: &str) -> Result<Arc<RedisStore>, StoreError> {
        RedisStore::start(self.clone(), name)
    }

    /// The URL without its credentials, for messages.
    pub(crate) fn target(&self) -> String {
        crate::webhook::redact_url(&self.url)
    }

    /// A client for the URL (and the CA certificates, if given); connects
    /// to nothing yet.
    pub(crate) fn client(&self) -> Result<redis::Client, StoreError> {
        match &self.tls_roots {
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(self.url.as_str()),
        }
        .map_err(|e| StoreError::Unavailable {
            target: self.target(),
            detail: format!("not a redis url, or bad CA certificates ({:?})", e.kind()),
        })
    }
}

/// A connection whose connect, reads and writes each time out after
/// `timeout`.
pub(crate) fn connect(
    client: &redis::Client,
    timeout: Duration,
) -> Result<redis::Connection, redis::RedisError> {
    let conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// The queue's keys, all under the hash tag `{name}`.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) seq: String,
    pub(crate) jobs: String,
    pub(crate) ready: String,
    pub(crate) delayed: String,
    pub(crate) workers: String,
    pub(crate) deaths: String,
    pub(crate) letters: String,
    pub(crate) dead: String,
    /// `claims:` followed by a worker's identity.
    pub(crate) claims_prefix: String,
}

impl Keys {
    pub(crate) fn new(queue: &str) -> Self {
        let k = |suffix: &str| format!("hookpool:{{{queue}}}:{suffix}");
        Keys {
            seq: k("seq"),
            jobs: k("jobs"),
            ready: k("ready"),
            delayed: k("delayed"),
            workers: k("workers"),
            deaths: k("deaths"),
            letters: k("letters"),
            dead: k("dead"),
            claims_prefix: k("claims:"),
        }
    }

    pub(crate) fn claims(&self, worker: &str) -> String {
        format!("{}{worker}", self.claims_prefix)
    }
}

/// A webhook as the shared queue holds it (JSON in `jobs`). The body is a
/// JSON string, so the scripts can decode and re-encode a job without
/// touching the body's bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) body: String,
    pub(crate) accepted_ms: u64,
    #[serde(default)]
    pub(crate) attempts: u32,
    #[serde(default)]
    pub(crate) push_backs: u32,
    #[serde(default)]
    pub(crate) paced_ms: u64,
    #[serde(default)]
    pub(crate) first_attempt_ms: Option<u64>,
    #[serde(default)]
    pub(crate) last_attempt_ms: Option<u64>,
    #[serde(default)]
    pub(crate) last_error: Option<String>,
    #[serde(default)]
    pub(crate) last_status: Option<u16>,
}

impl Job {
    pub(crate) fn from_row(row: &Row) -> Self {
        let mut job = Job {
            id: row.id.clone(),
            url: row.url.clone(),
            body: row.body.clone(),
            accepted_ms: row.accepted_ms,
            attempts: 0,
            push_backs: 0,
            paced_ms: 0,
            first_attempt_ms: None,
            last_attempt_ms: None,
            last_error: None,
            last_status: None,
        };
        job.set_state(&row.state);
        job
    }

    pub(crate) fn set_state(&mut self, s: &RowState) {
        self.attempts = s.attempts;
        self.push_backs = s.push_backs;
        self.paced_ms = s.paced_ms;
        self.first_attempt_ms = s.first_attempt_ms;
        self.last_attempt_ms = s.last_attempt_ms;
        self.last_error.clone_from(&s.last_error);
        self.last_status = s.last_status;
    }

    pub(crate) fn into_row(self, key: u64) -> Row {
        Row {
            key,
            id: self.id,
            url: self.url,
            body: self.body,
            accepted_ms: self.accepted_ms,
            state: RowState {
                attempts: self.attempts,
                push_backs: self.push_backs,
                paced_ms: self.paced_ms,
                due_ms: None,
                first_attempt_ms: self.first_attempt_ms,
                last_attempt_ms: self.last_attempt_ms,
                last_error: self.last_error,
                last_status: self.last_status,
            },
        }
    }
}

/// A dead letter as the shared queue holds it (JSON in `letters`): the job,
/// so that replay can put it back, and why it died.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Letter {
    #[serde(flatten)]
    pub(crate) job: Job,
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: String,
    pub(crate) dead_lettered_at: u64,
}

impl Letter {
    pub(crate) fn from_dead_letter(letter: &DeadLetter) -> Self {
        Letter {
            job: Job {
                id: letter.id.clone(),
                url: letter.url.clone(),
                body: letter.payload.get().to_owned(),
                accepted_ms: letter.first_attempt_at.unwrap_or(letter.dead_lettered_at),
                attempts: letter.attempts,
                push_backs: 0,
                paced_ms: 0,
                first_attempt_ms: letter.first_attempt_at,
                last_attempt_ms: letter.last_attempt_at,
                last_error: Some(letter.error.clone()),
                last_status: letter.last_status,
            },
            reason: letter.reason,
            error: letter.error.clone(),
            dead_lettered_at: letter.dead_lettered_at,
        }
    }

    pub(crate) fn into_dead_letter(self) -> Option<DeadLetter> {
        let payload = serde_json::value::RawValue::from_string(self.job.body.clone())
            .or_else(|_| serde_json::value::to_raw_value(&self.job.body))
            .ok()?;
        Some(DeadLetter {
            id: self.job.id,
            url: self.job.url,
            payload,
            attempts: self.job.attempts,
            error: self.error,
            last_status: self.job.last_status,
            first_attempt_at: self.job.first_attempt_ms,
            last_attempt_at: self.job.last_attempt_ms,
            dead_lettered_at: self.dead_lettered_at,
            reason: self.reason,
        })
    }
}

/// This process's identity in the queue: host, process id and a random
/// part (a restarted process is a new worker).
pub(crate) fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_one_hash_tag() {
        let keys = Keys::new("hooks");
        for key in [
            &keys.seq,
            &keys.jobs,
            &keys.ready,
            &keys.delayed,
            &keys.workers,
            &keys.deaths,
            &keys.letters,
            &keys.dead,
            &keys.claims("w1"),
        ] {
            assert!(key.starts_with("hookpool:{hooks}:"), "{key}");
        }
    }

    #[test]
    fn a_letter_keeps_the_body_byte_for_byte() {
        let hook = crate::Webhook::from_json("https://example.com/", r#"{"b":  1.50}"#).unwrap();
        let letter = DeadLetter::from_webhook(&hook, DeadLetterReason::WorkerLost, "gone");
        let json = serde_json::to_string(&Letter::from_dead_letter(&letter)).unwrap();
        let back: Letter = serde_json::from_str(&json).unwrap();
        let back = back.into_dead_letter().unwrap();
        assert_eq!(back.payload.get(), r#"{"b":  1.50}"#);
        assert_eq!(back.reason, DeadLetterReason::WorkerLost);
    }
}
