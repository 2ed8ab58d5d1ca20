//! Prometheus text exposition (format 0.0.4) of [`Stats`] and
//! [`DispatchStats`].
//!
//! ```
//! let pool = hookpool::Pool::builder().name("jobs").build(|_: u8| Ok::<(), String>(()))?;
//! let body = pool.render_prometheus();
//! assert!(body.contains("hookpool_workers{pool=\"jobs\"}"));
//! assert!(hookpool::prometheus::CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
//! # Ok::<(), hookpool::BuildError>(())
//! ```

use std::fmt::Write as _;

use crate::breaker::BreakerState;
use crate::dead_letter::DeadLetterReason;
use crate::stats::{FINITE_BUCKETS, Histogram, Stats};
use crate::webhook::report::{DispatchStats, EndpointStats};

/// The content type to serve the text with.
///
/// # Examples
///
/// ```
/// assert_eq!(hookpool::prometheus::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
/// ```
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds one Prometheus exposition from any number of pools and
/// dispatchers. Each metric family is written once (HELP and TYPE, then
/// every series), with a `pool` label naming its source.
///
/// For a single pool or dispatcher, [`Pool::render_prometheus`] and
/// [`Dispatcher::render_prometheus`] are shorter.
///
/// [`Pool::render_prometheus`]: crate::Pool::render_prometheus
/// [`Dispatcher::render_prometheus`]: crate::Dispatcher::render_prometheus
///
/// # Examples
///
/// ```
/// use hookpool::{Exposition, Pool};
///
/// let emails = Pool::builder().name("emails").build(|_: u8| Ok::<(), String>(()))?;
/// let thumbs = Pool::builder().name("thumbnails").build(|_: u8| Ok::<(), String>(()))?;
/// emails.try_submit(1).unwrap();
/// let emails_stats = emails.shutdown().stats;
/// let text = Exposition::new()
///     .pool("emails", &emails_stats)
///     .pool("thumbnails", &thumbs.stats())
///     .render();
/// assert_eq!(text.matches("# TYPE hookpool_jobs_submitted_total counter").count(), 1);
/// assert!(text.contains("hookpool_jobs_submitted_total{pool=\"emails\"} 1\n"));
/// assert!(text.contains("hookpool_jobs_submitted_total{pool=\"thumbnails\"} 0\n"));
/// # Ok::<(), hookpool::BuildError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    families: Vec<Family>,
}

#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: String,
}

impl Exposition {
    /// An empty exposition.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::Exposition::new().render(), "");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pool's metrics under `pool="<name>"`.
    ///
    /// # Examples
    ///
    /// See [`Exposition`].
    ///
    /// ```
    /// let text = hookpool::Exposition::new().pool("p", &hookpool::Stats::default()).render();
    /// assert!(text.contains("hookpool_queue_capacity{pool=\"p\"} 0"));
    /// ```
    pub fn pool(&mut self, name: &str, stats: &Stats) -> &mut Self {
        let l = [("pool", name)];
        self.counter(
            "hookpool_jobs_submitted_total",
            "Jobs accepted into the queue.",
            &l,
            stats.submitted,
        );
        self.counter(
            "hookpool_jobs_rejected_total",
            "Submissions refused because the queue was full or the pool was shut down.",
            &l,
            stats.rejected,
        );
        self.counter(
            "hookpool_jobs_succeeded_total",
            "Jobs whose handler returned Ok.",
            &l,
            stats.succeeded,
        );
        self.counter(
            "hookpool_jobs_failed_total",
            "Jobs whose handler returned Err.",
            &l,
            stats.failed,
        );
        self.counter(
            "hookpool_jobs_panicked_total",
            "Jobs whose handler panicked.",
            &l,
            stats.panicked,
        );
        self.gauge(
            "hookpool_queue_depth",
            "Jobs waiting in the queue.",
            &l,
            stats.queued as u64,
        );
        self.gauge(
            "hookpool_queue_capacity",
            "Capacity of the bounded queue.",
            &l,
            stats.queue_capacity as u64,
        );
        self.gauge(
            "hookpool_queue_high_water",
            "The deepest the queue has been since the pool started (read by workers every eighth job, and whenever a submission finds the queue full).",
            &l,
            stats.queue_high_water as u64,
        );
        self.gauge(
            "hookpool_workers",
            "Worker threads alive.",
            &l,
            stats.workers as u64,
        );
        self.gauge(
            "hookpool_workers_active",
            "Workers running a job right now.",
            &l,
            stats.active as u64,
        );
        self.histogram(
            "hookpool_job_queue_wait_seconds",
            "Time jobs waited in the queue before a worker took them (sampled: the first submission per handle, then one in queue_wait_sampling, default 256).",
            &l,
            &stats.queue_wait,
        );
        self.histogram(
            "hookpool_job_run_seconds",
            "Time jobs spent in the handler.",
            &l,
            &stats.run_time,
        );
        self
    }

    /// Adds a dispatcher's metrics, its worker pool's included, under
    /// `pool="<name>"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let hooks = hookpool::Dispatcher::builder().name("hooks").build()?;
    /// let text = hookpool::Exposition::new().dispatcher("hooks", &hooks.stats()).render();
    /// assert!(text.contains("hookpool_webhooks_delivered_total{pool=\"hooks\"} 0"));
    /// assert!(text.contains("hookpool_jobs_submitted_total{pool=\"hooks\"} 0"));
    /// # Ok::<(), hookpool::BuildError>(())
    /// ```
    pub fn dispatcher(&mut self, name: &str, stats: &DispatchStats) -> &mut Self {
        self.pool(name, &stats.pool);
        let l = [("pool", name)];
        self.counter(
            "hookpool_webhooks_accepted_total",
            "Webhooks accepted by try_send, send_timeout and replay.",
            &l,
            stats.accepted,
        );
        self.counter(
            "hookpool_webhooks_delivered_total",
            "Webhooks delivered (2xx).",
            &l,
            stats.delivered,
        );
        for reason in DeadLetterReason::ALL {
            let count = stats
                .dead_lettered_by_reason
                .get(&reason)
                .copied()
                .unwrap_or(0);
            self.counter(
                "hookpool_webhooks_dead_lettered_total",
                "Webhooks given up on and dead-lettered, by reason.",
                &[("pool", name), ("reason", reason.as_str())],
                count,
            );
        }
        self.counter(
            "hookpool_webhook_retries_total",
            "Failed attempts scheduled to be tried again.",
            &l,
            stats.retried,
        );
        self.counter(
            "hookpool_webhooks_deferred_by_breaker_total",
            "Times a webhook was held back because its endpoint's circuit breaker was open.",
            &l,
            stats.deferred_by_breaker,
        );
        self.counter(
            "hookpool_webhook_push_backs_total",
            "Answers that asked for a slower pace: 429, or 503 with Retry-After. Not failures: they spend no attempt.",
            &l,
            stats.push_backs,
        );
        self.float(
            "hookpool_pause_seconds_total",
            "counter",
            "Retry-After pause time set on endpoints, over all of them (counted when each pause is set).",
            &l,
            stats.paused.as_secs_f64(),
        );
        self.counter(
            "hookpool_webhooks_rejected_endpoint_full_total",
            "Webhooks refused because their endpoint already had a queue's capacity of webhooks waiting for a slot.",
            &l,
            stats.rejected_endpoint_full,
        );
        self.counter(
            "hookpool_event_hook_panics_total",
            "Panics caught in event hooks (on_delivered, on_dead_letter, on_breaker_change).",
            &l,
            stats.hook_panics,
        );
        self.gauge(
            "hookpool_webhooks_waiting_retries",
            "Webhooks waiting in the delay queue for a retry, or for their endpoint's breaker to admit them.",
            &l,
            stats.waiting_retries as u64,
        );
        self.gauge(
            "hookpool_webhooks_parked",
            "Webhooks waiting for a free slot at their endpoint (max_in_flight_per_endpoint), holding no worker.",
            &l,
            stats.parked as u64,
        );
        self.gauge(
            "hookpool_webhooks_in_progress",
            "Webhooks accepted and not yet delivered or dead-lettered.",
            &l,
            stats.in_progress(),
        );
        self.gauge(
            "hookpool_endpoints_gone",
            "URLs that answered 410 Gone; webhooks to them are dead-lettered.",
            &l,
            stats.gone_endpoints as u64,
        );
        for e in &stats.endpoints {
            self.endpoint_pace(name, e);
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                self.gauge(
                    "hookpool_endpoint_breaker_state",
                    "Circuit breaker state per endpoint: 1 for the current state, 0 otherwise.",
                    &[
                        ("pool", name),
                        ("endpoint", &e.endpoint),
                        ("state", state_name(state)),
                    ],
                    u64::from(e.breaker == state),
                );
            }
        }
        self.histogram(
            "hookpool_webhook_delivery_seconds",
            "Time from acceptance to successful delivery, retries included.",
            &l,
            &stats.delivery_latency,
        );
        if let Some(store) = &stats.store {
            self.store(name, stats.kept, store);
        }
        self
    }

    /// A dispatcher's durable store: its journal, or the shared queue.
    fn store(&mut self, pool: &str, kept: u64, s: &crate::StoreStats) {
        let l = [("pool", pool)];
        if let Some(q) = &s.shared {
            return self.shared_queue(pool, kept, s, q);
        }
        self.gauge(
            "hookpool_journal_backlog",
            "Unfinished webhooks in the journal, written or about to be: what a restart would deliver.",
            &l,
            s.backlog,
        );
        self.gauge(
            "hookpool_journal_pending",
            "State changes waiting to be written to the journal.",
            &l,
            s.pending,
        );
        self.gauge(
            "hookpool_journal_dead_letters",
            "Dead letters the journal holds.",
            &l,
            s.dead_letters,
        );
        self.counter(
            "hookpool_journal_commits_total",
            "Journal transactions committed (each holds a batch of state changes).",
            &l,
            s.commits,
        );
        self.counter(
            "hookpool_journal_errors_total",
            "Journal transactions that failed (a full disk, a read-only file); each is tried again.",
            &l,
            s.errors,
        );
        self.counter(
            "hookpool_webhooks_recovered_total",
            "Unfinished webhooks found in the journal at start, and delivered again.",
            &l,
            s.recovered,
        );
        self.counter(
            "hookpool_webhooks_kept_total",
            "Webhooks left in the journal at a shutdown deadline for the next start.",
            &l,
            kept,
        );
        self.histogram(
            "hookpool_journal_commit_seconds",
            "Time from a state change's arrival at the journal to its commit: the window in which a crash loses a webhook that try_send accepted.",
            &l,
            &s.commit_latency,
        );
    }

    /// One endpoint's pace: push-backs, pauses, limits.
    fn endpoint_pace(&mut self, pool: &str, e: &EndpointStats) {
        let l = [("pool", pool), ("endpoint", e.endpoint.as_str())];
        self.counter(
            "hookpool_endpoint_push_backs_total",
            "Push-back answers (429, or 503 with Retry-After) per endpoint.",
            &l,
            e.push_backs,
        );
        self.float(
            "hookpool_endpoint_paused_seconds_total",
            "counter",
            "Retry-After pause time set on the endpoint (counted when each pause is set).",
            &l,
            e.paused.as_secs_f64(),
        );
        self.gauge(
            "hookpool_endpoint_paused",
            "1 while a Retry-After pause holds every request to the endpoint, else 0.",
            &l,
            u64::from(!e.paused_for.is_zero()),
        );
        self.gauge(
            "hookpool_endpoint_in_flight",
            "Requests to the endpoint holding a slot: sending, or about to.",
            &l,
            e.in_flight as u64,
        );
        if let Some(limit) = e.in_flight_limit {
            self.gauge(
                "hookpool_endpoint_in_flight_limit",
                "Requests allowed in flight to the endpoint now (adaptive, at most its bulkhead).",
                &l,
                limit as u64,
            );
        }
        if let Some(rate) = e.rate_limit {
            self.float(
                "hookpool_endpoint_rate_limit",
                "gauge",
                "Requests per second allowed to the endpoint now (adaptive, at most the configured rate); absent while it is not paced.",
                &l,
                rate,
            );
        }
    }

    /// A queue shared by processes (Redis): its counts as this process
    /// last read them (every second), and this process's part.
    fn shared_queue(
        &mut self,
        pool: &str,
        kept: u64,
        s: &crate::StoreStats,
        q: &crate::SharedQueueStats,
    ) {
        let l = [("pool", pool), ("queue", q.queue.as_str())];
        for (name, help, value) in [
            (
                "hookpool_shared_queue_ready",
                "Webhooks in the shared queue waiting for a worker.",
                q.ready,
            ),
            (
                "hookpool_shared_queue_delayed",
                "Webhooks in the shared queue waiting for a retry, a breaker or a pause.",
                q.delayed,
            ),
            (
                "hookpool_shared_queue_processing",
                "Webhooks claimed by worker processes.",
                q.processing,
            ),
            (
                "hookpool_shared_queue_dead_letters",
                "Dead letters in the shared queue.",
                q.dead,
            ),
            (
                "hookpool_shared_queue_workers_alive",
                "Worker processes heart-beating within their ttl.",
                q.workers_alive,
            ),
        ] {
            self.gauge(name, help, &l, value);
        }
        for (name, help, value) in [
            (
                "hookpool_shared_queue_enqueued_total",
                "Webhooks this process put into the shared queue.",
                q.enqueued,
            ),
            (
                "hookpool_shared_queue_handed_back_total",
                "Webhooks this process handed back to the shared queue: accepted into it, retries and pauses waiting there, and those released at shutdown.",
                kept,
            ),
            (
                "hookpool_shared_queue_stale_results_total",
                "Late results of this process for webhooks the queue had taken back from it (it was silent past its ttl); not counted by the queue.",
                q.stale,
            ),
            (
                "hookpool_shared_queue_reclaimed_total",
                "Webhooks of dead worker processes this process took back.",
                q.reclaimed,
            ),
            (
                "hookpool_shared_queue_errors_total",
                "Round trips to the shared queue that failed; each is tried again.",
                s.errors,
            ),
        ] {
            self.counter(name, help, &l, value);
        }
        self.histogram(
            "hookpool_shared_queue_write_seconds",
            "Time from a state change's arrival at the shared queue's writer to its being written.",
            &l,
            &s.commit_latency,
        );
    }

    /// The text, ready to serve with [`CONTENT_TYPE`].
    ///
    /// # Examples
    ///
    /// ```
    /// let text = hookpool::Exposition::new().pool("p", &hookpool::Stats::default()).render();
    /// assert!(text.starts_with("# HELP "));
    /// assert!(text.ends_with('\n'));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            out.push_str(&f.samples);
        }
        out
    }

    fn family(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) -> &mut String {
        let i = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i].samples
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let out = self.family(name, help, "counter");
        sample(out, name, "", labels, None, &value.to_string());
    }

    fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let out = self.family(name, help, "gauge");
        sample(out, name, "", labels, None, &value.to_string());
    }

    /// A sample whose value is not a whole number.
    fn float(
        &mut self,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let out = self.family(name, help, kind);
        sample(out, name, "", labels, None, &format_seconds(value));
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        h: &Histogram,
    ) {
        let out = self.family(name, help, "histogram");
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = match Histogram::upper_bound(i) {
                Some(bound) => format_seconds(bound.as_secs_f64()),
                None => "+Inf".to_owned(),
            };
            debug_assert!(i <= FINITE_BUCKETS);
            sample(
                out,
                name,
                "_bucket",
                labels,
                Some(&le),
                &cumulative.to_string(),
            );
        }
        sample(
            out,
            name,
            "_sum",
            labels,
            None,
            &format_seconds(h.sum_nanos as f64 / 1e9),
        );
        sample(out, name, "_count", labels, None, &h.count.to_string());
    }
}

fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// Writes one sample line.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    out.push('{');
    let mut first = true;
    let le = le.map(|v| ("le", v));
    for (k, v) in labels.iter().copied().chain(le) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_label(out, v);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(value);
    out.push('\n');
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Seconds as Prometheus expects them: plain decimal, no exponent.
fn format_seconds(s: f64) -> String {
    let text = format!("{s:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", "", &[("pool", "a\"b\\c\nd")], None, "1");
        assert_eq!(out, "m{pool=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn seconds_are_plain_decimals() {
        assert_eq!(format_seconds(0.000001), "0.000001");
        assert_eq!(format_seconds(134.217728), "134.217728");
        assert_eq!(format_seconds(0.0), "0");
        assert_eq!(format_seconds(2.0), "2");
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(1));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(1000));
        let text = Exposition::new()
            .pool(
                "p",
                &Stats {
                    run_time: h,
                    ..Stats::default()
                },
            )
            .render();
        assert!(text.contains("hookpool_job_run_seconds_bucket{pool=\"p\",le=\"0.000001\"} 1\n"));
        assert!(text.contains("hookpool_job_run_seconds_bucket{pool=\"p\",le=\"0.000002\"} 1\n"));
        assert!(text.contains("hookpool_job_run_seconds_bucket{pool=\"p\",le=\"0.000004\"} 2\n"));
        assert!(text.contains("hookpool_job_run_seconds_bucket{pool=\"p\",le=\"134.217728\"} 2\n"));
        assert!(text.contains("hookpool_job_run_seconds_bucket{pool=\"p\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("hookpool_job_run_seconds_sum{pool=\"p\"} 1000.000004\n"));
        assert!(text.contains("hookpool_job_run_seconds_count{pool=\"p\"} 3\n"));
    }
}
