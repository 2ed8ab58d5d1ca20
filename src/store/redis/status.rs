//! The queue's counts, read in one script: for the heartbeat thread's
//! stats, and for [`RedisQueue::status`], a look that changes nothing.

use std::time::Duration;

use redis::{Connection, Script};

use super::{Keys, RedisQueue, scripts};
use crate::store::{SharedQueueStats, StoreError};

impl RedisQueue {
    /// The queue's counts as Redis holds them now: webhooks ready, delayed
    /// (retries, breaker deferrals, pauses), processing (claimed by worker
    /// processes), dead letters, and the worker processes that heart-beat
    /// within this queue's [`worker_ttl`](RedisQueue::worker_ttl).
    ///
    /// Read-only, for tools and health checks: it opens one connection,
    /// registers no worker, takes back nothing and changes no key. (A
    /// dispatcher on the queue, even a
    /// [`producer_only`](RedisQueue::producer_only) one, takes back dead
    /// workers' webhooks; its counts are in
    /// [`StoreStats::shared`](crate::StoreStats::shared).) The per-process
    /// counters `enqueued`, `stale` and `reclaimed` are 0 here.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is not a Redis URL, or Redis
    /// cannot be reached or does not answer within
    /// [`timeout`](RedisQueue::timeout). The message never shows the URL's
    /// password.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let queue = hookpool::RedisQueue::new("redis://127.0.0.1:6379/", "hooks");
    /// let status = queue.status()?;
    /// assert_eq!(status.queue, "hooks");
    /// println!("{} ready, {} worker processes alive", status.ready, status.workers_alive);
    /// # Ok::<(), hookpool::StoreError>(())
    /// ```
    pub fn status(&self) -> Result<SharedQueueStats, StoreError> {
        let unavailable = |e: redis::RedisError| StoreError::Unavailable {
            target: self.target(),
            detail: e.to_string(),
        };
        let client = self.client()?;
        let mut conn = super::connect(&client, self.timeout).map_err(unavailable)?;
        let script = Script::new(&scripts::status());
        let counts =
            counts(&mut conn, &script, &Keys::new(&self.name), self.ttl).map_err(unavailable)?;
        let mut status = counts.ok_or_else(|| StoreError::Unavailable {
            target: self.target(),
            detail: "the status script answered something else than five counts".into(),
        })?;
        status.queue.clone_from(&self.name);
        Ok(status)
    }
}

/// Runs the status script (`script`, compiled from
/// [`scripts::status`]): the five counts, or `None` if it answered
/// something else. Only the counts are filled in.
pub(crate) fn counts(
    conn: &mut Connection,
    script: &Script,
    keys: &Keys,
    ttl: Duration,
) -> redis::RedisResult<Option<SharedQueueStats>> {
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let c: Vec<u64> = script
        .key(&keys.ready)
        .key(&keys.delayed)
        .key(&keys.dead)
        .key(&keys.workers)
        .arg(ttl)
        .arg(&keys.claims_prefix)
        .invoke(conn)?;
    let [ready, delayed, processing, dead, workers_alive] = c[..] else {
        return Ok(None);
    };
    Ok(Some(SharedQueueStats {
        ready,
        delayed,
        processing,
        dead,
        workers_alive,
        ..SharedQueueStats::default()
    }))
}
