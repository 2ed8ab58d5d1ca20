//! A real Prometheus exposition holding every metric family, and the names
//! it exports, for the tests that check docs and the operations kit against
//! it.

use std::collections::BTreeSet;
use std::time::Duration;

use hookpool::{
    BreakerConfig, DispatchStats, Dispatcher, Exposition, Journal, ManualClock, Pool, RetryPolicy,
    Webhook,
};

use super::server::{Recorded, Reply, TestServer};
use super::tempdir::TempDir;
use super::wait_until;

/// Metrics from a run that exercises every family: failures, dead letters,
/// an open breaker, retries, a paced endpoint, several pools, a journal and
/// a shared queue. The dispatcher's are taken while it runs.
pub fn rich_exposition() -> String {
    let clock = ManualClock::new();
    let server = TestServer::start(|r: &Recorded| match r.path.as_str() {
        "/down" => Reply::Status(503),
        "/bad" => Reply::Status(422),
        _ => Reply::Status(200),
    });
    let hooks = Dispatcher::builder()
        .name("web\"hooks\\")
        .workers(2)
        .clock(clock)
        .breaker(BreakerConfig::default().failure_threshold(1))
        .retry(RetryPolicy::exponential(Duration::from_secs(1)).max_attempts(3))
        .build()
        .unwrap();
    // An endpoint of its own that pushes back, so its pace shows.
    let pacing = TestServer::start(|_: &Recorded| Reply::Status(429));
    hooks
        .try_send(Webhook::new(&pacing.url("/slow"), &0).unwrap())
        .unwrap();
    hooks
        .try_send(Webhook::new(&server.url("/bad"), &1).unwrap())
        .unwrap();
    hooks
        .try_send(Webhook::new(&server.url("/down"), &2).unwrap())
        .unwrap();
    // A push-back is counted before its endpoint's pace is set: wait for
    // the pace too, or `hookpool_endpoint_rate_limit` may be missing.
    assert!(wait_until(Duration::from_secs(20), || {
        let s = hooks.stats();
        s.waiting_retries == 1
            && s.dead_lettered == 1
            && s.push_backs >= 1
            && s.endpoints.iter().any(|e| e.rate_limit.is_some())
    }));
    let live = hooks.stats();
    let pool = Pool::builder()
        .name("jobs")
        .build(|n: u8| if n == 0 { Err("zero") } else { Ok(()) })
        .unwrap();
    for n in 0..5 {
        pool.try_submit(n).unwrap();
    }
    let pool_stats = pool.shutdown().stats;
    let report = hooks.shutdown_timeout(Duration::ZERO);
    assert_eq!(report.stats.accepted, 3);
    Exposition::new()
        .dispatcher("web\"hooks\\", &live)
        .pool("jobs", &pool_stats)
        .dispatcher("durable", &journal_stats(&server))
        .dispatcher("shared", &shared_queue_stats(&server))
        .render()
}

/// A dispatcher with a journal, after one webhook went through it.
fn journal_stats(server: &TestServer) -> DispatchStats {
    let dir = TempDir::new("exposition-journal");
    let hooks = Dispatcher::builder()
        .name("durable")
        .journal(Journal::new(dir.path("journal.db")))
        .build()
        .unwrap();
    hooks
        .send_durable(
            Webhook::new(&server.url("/ok"), &0).unwrap(),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        let s = hooks.stats();
        s.delivered == 1 && s.store.as_ref().is_some_and(|j| j.backlog == 0)
    }));
    let stats = hooks.stats();
    assert_eq!(hooks.shutdown().stats.delivered, 1);
    stats
}

/// A dispatcher on a shared queue in a real redis-server, after one webhook
/// went through it. Without the `redis` feature, or where redis-server is
/// not installed (and not required), the journal's counts with the queue's
/// added stand in, so that the families are the same everywhere.
fn shared_queue_stats(server: &TestServer) -> DispatchStats {
    #[cfg(feature = "redis")]
    if let Some(redis) = super::redis::RedisServer::start("exposition") {
        let hooks = Dispatcher::builder()
            .name("shared")
            .timeout(Duration::from_secs(2))
            .redis(hookpool::RedisQueue::new(&redis.url(), "metrics"))
            .build()
            .unwrap();
        hooks
            .send_durable(
                Webhook::new(&server.url("/ok"), &0).unwrap(),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(wait_until(Duration::from_secs(20), || {
            let s = hooks.stats();
            let shared = s.store.as_ref().and_then(|q| q.shared.as_ref());
            s.delivered == 1 && shared.is_some_and(|q| q.workers_alive == 1)
        }));
        let stats = hooks.stats();
        assert_eq!(hooks.shutdown().stats.delivered, 1);
        return stats;
    }
    let mut stats = journal_stats(server);
    let mut queue = hookpool::SharedQueueStats::default();
    queue.queue = "metrics".to_owned();
    stats.store.as_mut().unwrap().shared = Some(queue);
    stats
}

/// The metric families in `text`, from its `# TYPE` lines.
pub fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Every name a query can use on `text`: each family, and for a histogram
/// its `_bucket`, `_sum` and `_count` series.
pub fn queryable_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}
