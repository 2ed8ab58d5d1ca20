//! What the commands on a shared queue in Redis have in common: the
//! `--redis URL --queue NAME` pair, the worker ttl, a dispatcher on the
//! queue, and error messages that say which Redis without its password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookpool::{BuildError, Dispatcher, RedisQueue, StoreError};

use crate::UsageError;
use crate::run::{DELIVERY_ONLY, DeliveryArgs, MAX_QUEUE};

/// The default of `--queue N` for `send` and `replay`.
const DEFAULT_QUEUE: u32 = 1024;
/// The default of `--worker-ttl-ms`, the library's.
const DEFAULT_TTL_MS: u64 = 30_000;

/// `--redis URL --queue NAME` and `--worker-ttl-ms`, for `worker` and
/// `status`, where both are required.
#[derive(Debug, clap::Args)]
pub(crate) struct QueueArgs {
    /// The Redis server: redis://[user:password@]host[:port][/db], or rediss:// for TLS
    /// (Mozilla's roots; rediss://host/#insecure skips verification, for tests only)
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The shared queue's name: every process that uses the same name shares it
    #[arg(long, value_name = "NAME")]
    queue: String,
    /// How long a worker process may stay silent (no heartbeat) before the others take its
    /// webhooks back; `status` counts a worker as alive within it. Give every process on a
    /// queue the same value
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TTL_MS, value_parser = clap::value_parser!(u64).range(30..))]
    worker_ttl_ms: u64,
    /// For a rediss:// URL: trust the CA certificates in FILE (PEM) instead of Mozilla's
    /// roots, for a Redis whose certificate comes from a private CA
    #[arg(long, value_name = "FILE")]
    redis_cacert: Option<PathBuf>,
}

impl QueueArgs {
    /// The queue, with the ttl and the CA.
    pub(crate) fn queue(&self) -> Result<RedisQueue, UsageError> {
        let queue = queue(&self.redis, &self.queue)?.worker_ttl(self.ttl());
        trusting(queue, self.redis_cacert.as_deref())
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.worker_ttl_ms)
    }

    pub(crate) fn name(&self) -> &str {
        &self.queue
    }
}

/// `--redis URL`, `--queue N|NAME` and `--worker-ttl-ms`, for `send` and
/// `replay`: with `--redis` they work on the shared queue, without it
/// `--queue` is a number (how many webhooks may wait at once), as before.
#[derive(Debug, clap::Args)]
pub(crate) struct MaybeShared {
    /// Work on the shared queue (--queue NAME) in Redis at URL instead: `send` only enqueues,
    /// for `hookpool worker`s to deliver; `replay` puts the queue's dead letters back into it.
    /// The delivery flags belong to the workers then, and are refused here
    #[arg(long, value_name = "URL", requires = "queue", conflicts_with_all = DELIVERY_ONLY)]
    redis: Option<String>,
    /// Without --redis: webhooks that may wait at once, for a worker or for a retry; reading
    /// pauses while they do (default 1024). With --redis: the shared queue's name
    #[arg(long, value_name = "N|NAME")]
    queue: Option<String>,
    /// With --redis: how long a worker process may stay silent before the others take its
    /// webhooks back; this process helps take them back, so give it the workers' value
    /// (default 30000)
    #[arg(long, value_name = "N", requires = "redis", value_parser = clap::value_parser!(u64).range(30..))]
    worker_ttl_ms: Option<u64>,
    /// With a rediss:// --redis: trust the CA certificates in FILE (PEM) instead of
    /// Mozilla's roots, for a Redis whose certificate comes from a private CA
    #[arg(long, value_name = "FILE", requires = "redis")]
    redis_cacert: Option<PathBuf>,
}

impl MaybeShared {
    /// The shared queue, with `--redis`.
    pub(crate) fn shared(&self) -> Result<Option<RedisQueue>, UsageError> {
        let Some(url) = &self.redis else {
            return Ok(None);
        };
        let name = self.queue.as_deref().unwrap_or_default();
        let ttl = self.worker_ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        let queue = queue(url, name)?.worker_ttl(Duration::from_millis(ttl));
        trusting(queue, self.redis_cacert.as_deref()).map(Some)
    }

    /// Without `--redis`: how many webhooks may wait at once (1024 if
    /// `--queue` is not given).
    pub(crate) fn queue_size(&self) -> Result<usize, UsageError> {
        let Some(text) = &self.queue else {
            return Ok(DEFAULT_QUEUE as usize);
        };
        match text.parse::<u32>() {
            Ok(n) if (1..=MAX_QUEUE).contains(&n) => Ok(n as usize),
            _ => Err(UsageError(format!(
                "--queue {text:?}: without --redis it is how many webhooks may wait at once, \
                 a number from 1 to {MAX_QUEUE} (with --redis, the shared queue's name)"
            ))),
        }
    }
}

/// The queue `name` at `url`; an empty name is refused.
pub(crate) fn queue(url: &str, name: &str) -> Result<RedisQueue, UsageError> {
    if name.trim().is_empty() {
        return Err(UsageError(
            "--queue: the shared queue's name must not be empty".into(),
        ));
    }
    Ok(RedisQueue::new(url, name))
}

/// `queue`, trusting the CA certificates in `cacert` (`--redis-cacert`) if
/// given. A file that cannot be read is a usage error that names it; one
/// that holds no certificate fails when the queue connects.
fn trusting(queue: RedisQueue, cacert: Option<&Path>) -> Result<RedisQueue, UsageError> {
    let Some(path) = cacert else {
        return Ok(queue);
    };
    let pem = std::fs::read(path).map_err(|e| {
        UsageError(format!(
            "--redis-cacert {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    Ok(queue.tls_root_certificates_pem(pem))
}

/// A producer-only dispatcher on `queue` for `command` (`send` or
/// `replay`): it enqueues, and delivers nothing. Secrets given to it are
/// not used, and it says so: the workers sign.
pub(crate) fn producer(
    command: &str,
    delivery: &DeliveryArgs,
    queue: RedisQueue,
) -> Result<Dispatcher, UsageError> {
    if delivery.has_secrets() {
        eprintln!(
            "hookpool: {command} --redis does not sign: each `hookpool worker` signs what it \
             delivers with its own --secret (HOOKPOOL_SECRETS)"
        );
    }
    Dispatcher::builder()
        .name(command)
        .redis(queue.producer_only())
        .build()
        .map_err(|e| build_error(&e))
}

/// Why a dispatcher on the shared queue did not start. The store's errors
/// name Redis with its password removed.
pub(crate) fn build_error(e: &BuildError) -> UsageError {
    match e {
        BuildError::Store(e) => store_error(e),
        other => UsageError::with_causes("cannot start the dispatcher", other),
    }
}

/// A failure of the shared queue in words: which Redis (without its
/// password) and what went wrong.
pub(crate) fn store_error(e: &StoreError) -> UsageError {
    match e {
        StoreError::Unavailable { target, detail } => {
            UsageError(format!("cannot use redis {target}: {detail}"))
        }
        other => UsageError::with_causes("the shared queue failed", other),
    }
}
