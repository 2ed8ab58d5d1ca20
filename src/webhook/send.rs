//! One HTTP attempt with ureq, and the classification of its result.

use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime};

use ureq::Agent;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::Connector;

use crate::breaker::Health;
use crate::retry::{Retryability, parse_retry_after};
use crate::webhook::Webhook;
use crate::webhook::resolve::{CachingResolver, DNS_CACHE_TTL, DnsCache, GuardedResolver};
use crate::webhook::sign::{self, SigningSecret};
use crate::webhook::tls::{self, TlsConnector, TlsErrorKind};
use crate::webhook::transport::Coalesce;

/// How much of a response body is kept in errors and dead letters.
const EXCERPT_BYTES: usize = 256;

/// Why one delivery attempt failed.
///
/// # Examples
///
/// ```
/// use hookpool::DeliveryError;
///
/// let err = DeliveryError::Status { status: 503, body: "try later".into() };
/// assert_eq!(err.to_string(), "endpoint answered 503");
/// assert_eq!(err.status(), Some(503));
/// assert_eq!(DeliveryError::Timeout.status(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The endpoint answered with a non-2xx, non-3xx status. `body` holds the
    /// first bytes of the response body, lossily decoded.
    Status {
        /// The HTTP status code.
        status: u16,
        /// An excerpt of the response body.
        body: String,
    },
    /// The endpoint answered with a redirect. Redirects are never followed:
    /// a webhook URL that moved must be updated by its owner.
    Redirect {
        /// The HTTP status code (3xx).
        status: u16,
    },
    /// The connect or the whole request took longer than its timeout.
    Timeout,
    /// The connection failed or broke: DNS, refused, reset, protocol. TLS
    /// failures are [`Tls`](Self::Tls).
    Transport(String),
    /// The address is refused by [`deny_private_networks`](crate::DispatcherBuilder::deny_private_networks).
    Blocked(String),
    /// The TLS handshake failed, or the receiver refused our client
    /// certificate. Retried or not by `kind` (see [`TlsErrorKind`]).
    Tls {
        /// What went wrong.
        kind: TlsErrorKind,
        /// rustls's own description.
        detail: String,
    },
    /// The delivery code panicked. This is a bug; the webhook is dead-lettered.
    Panicked(String),
    /// The last error of a webhook recovered from a journal, as the process
    /// that recorded it described it.
    Recorded {
        /// The error's text.
        message: String,
        /// The HTTP status, if the endpoint answered.
        status: Option<u16>,
    },
}

impl DeliveryError {
    /// The HTTP status code, if the endpoint answered.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::DeliveryError;
    /// assert_eq!(DeliveryError::Redirect { status: 301 }.status(), Some(301));
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status, .. } | DeliveryError::Redirect { status } => {
                Some(*status)
            }
            DeliveryError::Recorded { status, .. } => *status,
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Status { status, .. } => write!(f, "endpoint answered {status}"),
            DeliveryError::Redirect { status } => {
                write!(f, "endpoint answered a redirect ({status}), not followed")
            }
            DeliveryError::Timeout => f.write_str("request timed out"),
            DeliveryError::Transport(why) => write!(f, "transport error: {why}"),
            DeliveryError::Blocked(why) => write!(f, "address refused: {why}"),
            DeliveryError::Tls { kind, detail } => write!(f, "tls: {kind} ({detail})"),
            DeliveryError::Panicked(why) => write!(f, "delivery panicked: {why}"),
            DeliveryError::Recorded { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// The result of one attempt, classified.
#[derive(Debug)]
pub(crate) enum Attempt {
    Delivered { status: u16 },
    Failed(Failure),
}

/// A failed attempt: what went wrong, whether to retry, and what it says
/// about the endpoint's health.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: DeliveryError,
    pub(crate) retry: Retryability,
    pub(crate) health: Health,
    /// 410 Gone: the receiver says this URL will never work again.
    pub(crate) gone: bool,
    /// 429, or 503 with `Retry-After`: the receiver is alive and asks for a
    /// slower pace. Not a failure: see `Engine::pushed_back`.
    pub(crate) push_back: bool,
}

impl Failure {
    fn transport(error: DeliveryError) -> Self {
        let retry = match error {
            DeliveryError::Blocked(_) => Retryability::Permanent,
            DeliveryError::Tls { kind, .. } if !kind.is_retried() => Retryability::Permanent,
            _ => Retryability::Retry,
        };
        let health = match retry {
            Retryability::Permanent => Health::Neutral,
            _ => Health::Failure,
        };
        Failure {
            error,
            retry,
            health,
            gone: false,
            push_back: false,
        }
    }
}

/// Classifies an HTTP answer. `retry_after` is the parsed `Retry-After`
/// header, honoured on 429 and 503 only. 429, and 503 with a `Retry-After`,
/// are push-back: the receiver asks for a slower pace, which is neither a
/// failure of the webhook nor of the endpoint.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: String) -> Attempt {
    let push_back = status == 429 || (status == 503 && retry_after.is_some());
    let (error, retry) = match status {
        200..=299 => return Attempt::Delivered { status },
        300..=399 => (DeliveryError::Redirect { status }, Retryability::Permanent),
        429 | 503 => (
            DeliveryError::Status { status, body },
            retry_after.map_or(Retryability::Retry, Retryability::RetryAfter),
        ),
        408 | 425 | 500..=599 => (DeliveryError::Status { status, body }, Retryability::Retry),
        _ => (
            DeliveryError::Status { status, body },
            Retryability::Permanent,
        ),
    };
    // Only retryable failures say something about the endpoint's health.
    let health = match retry {
        _ if push_back => Health::PushBack,
        Retryability::Permanent => Health::Neutral,
        _ => Health::Failure,
    };
    Attempt::Failed(Failure {
        error,
        retry,
        health,
        gone: status == 410,
        push_back,
    })
}

/// Sends webhooks over one shared ureq agent (so keep-alive connections are
/// reused by every worker).
pub(crate) struct HttpSender {
    agent: Agent,
    secrets: Vec<SigningSecret>,
    max_body: u64,
    dns: DnsCache,
}

/// Settings for [`HttpSender::new`].
pub(crate) struct SendConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_response_body: u64,
    pub(crate) secrets: Vec<SigningSecret>,
    pub(crate) resolver: Option<GuardedResolver>,
    /// Worker count: every worker may hold one idle keep-alive connection
    /// to the same host.
    pub(crate) workers: usize,
    /// Trust roots and client certificate for https.
    pub(crate) tls: std::sync::Arc<rustls::ClientConfig>,
}

impl HttpSender {
    pub(crate) fn new(config: SendConfig) -> Self {
        let guarded = config.resolver.is_some();
        let mut builder = Agent::config_builder();
        if guarded {
            // A proxy resolves the host itself, out of the guard's sight: the
            // private-network guard needs direct connections.
            builder = builder.proxy(None);
        }
        let agent_config = builder
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("hookpool/", env!("CARGO_PKG_VERSION")))
            // ureq keeps 3 idle connections per host by default; fewer than
            // workers would make busy workers reconnect.
            .max_idle_connections_per_host(config.workers.max(3))
            .max_idle_connections(config.workers.max(100))
            .build();
        // ureq resolves on every request (on a new thread, with a timeout):
        // the cache makes that once per host per TTL. `Coalesce` sends a
        // request's head and body in one write.
        let dns = DnsCache::new(DNS_CACHE_TTL);
        let connector = TlsConnector::chain(config.tls).chain(Coalesce);
        let agent = match config.resolver {
            Some(guarded) => Agent::with_parts(
                agent_config,
                connector,
                CachingResolver::new(guarded, dns.clone()),
            ),
            None => Agent::with_parts(
                agent_config,
                connector,
                CachingResolver::new(DefaultResolver::default(), dns.clone()),
            ),
        };
        HttpSender {
            agent,
            secrets: config.secrets,
            max_body: config.max_response_body,
            dns,
        }
    }

    /// One POST. `now` is the attempt's wall-clock time: it becomes the
    /// `webhook-timestamp` and the reference for an HTTP-date `Retry-After`.
    pub(crate) fn send(&self, webhook: &Webhook, now: SystemTime) -> Attempt {
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut request = self
            .agent
            .post(webhook.uri().clone())
            .header("content-type", "application/json")
            .header(sign::HEADER_WEBHOOK_ID, webhook.id())
            .header(sign::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string());
        if !self.secrets.is_empty() {
            let signature =
                sign::signature_header(&self.secrets, webhook.id(), timestamp, webhook.body());
            request = request.header(sign::HEADER_WEBHOOK_SIGNATURE, signature);
        }
        let response = match request.send(webhook.body()) {
            Ok(response) => response,
            Err(e) => {
                // The host may have moved: resolve it again next time.
                self.dns.forget(webhook.uri());
                return Attempt::Failed(Failure::transport(transport_error(e)));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        // Read at most `max_body` bytes, so an endless or huge body can
        // neither hang the worker beyond its timeout nor fill memory.
        let mut body = Vec::new();
        let mut reader = response.into_body().into_reader().take(self.max_body);
        let _ = reader.read_to_end(&mut body);
        body.truncate(EXCERPT_BYTES);
        classify(
            status,
            retry_after,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }
}

/// Maps a ureq error to a delivery error. Messages never include the URL's
/// query string: ureq's messages name hosts, not full URLs.
fn transport_error(e: ureq::Error) -> DeliveryError {
    if let Some((kind, detail)) = tls::failure(&e) {
        return DeliveryError::Tls { kind, detail };
    }
    match e {
        ureq::Error::Timeout(_) => DeliveryError::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => DeliveryError::Timeout,
        ureq::Error::HostNotFound => DeliveryError::Transport("host not found".into()),
        ureq::Error::ConnectionFailed => DeliveryError::Transport("connection failed".into()),
        ureq::Error::Other(inner) if inner.is::<crate::webhook::resolve::BlockedAddress>() => {
            DeliveryError::Blocked(inner.to_string())
        }
        other => DeliveryError::Transport(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(a: Attempt) -> Failure {
        match a {
            Attempt::Failed(f) => f,
            Attempt::Delivered { status } => panic!("{status} counted as delivered"),
        }
    }

    #[test]
    fn two_hundreds_are_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert!(matches!(
                classify(status, None, String::new()),
                Attempt::Delivered { .. }
            ));
        }
    }

    #[test]
    fn retryable_statuses() {
        for status in [408, 425, 500, 502, 503, 504, 599] {
            let f = failed(classify(status, None, String::new()));
            assert_eq!(f.retry, Retryability::Retry, "{status}");
            assert_eq!(f.health, Health::Failure, "{status}");
            assert!(!f.push_back, "{status}");
        }
    }

    #[test]
    fn push_back_is_429_or_503_with_retry_after() {
        let after = Some(Duration::from_secs(1));
        for (status, retry_after) in [(429, None), (429, after), (503, after)] {
            let f = failed(classify(status, retry_after, String::new()));
            assert!(f.push_back, "{status} {retry_after:?}");
            assert_eq!(f.health, Health::PushBack, "{status} {retry_after:?}");
        }
        let f = failed(classify(503, None, String::new()));
        assert!(!f.push_back);
        assert_eq!(f.health, Health::Failure);
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let d = Some(Duration::from_secs(7));
        assert_eq!(
            failed(classify(429, d, String::new())).retry,
            Retryability::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            failed(classify(503, d, String::new())).retry,
            Retryability::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            failed(classify(500, d, String::new())).retry,
            Retryability::Retry
        );
    }

    #[test]
    fn permanent_statuses_are_neutral_for_the_breaker() {
        for status in [300, 301, 302, 307, 400, 401, 403, 404, 409, 410, 413, 422] {
            let f = failed(classify(status, None, String::new()));
            assert_eq!(f.retry, Retryability::Permanent, "{status}");
            assert_eq!(f.health, Health::Neutral, "{status}");
            assert_eq!(f.gone, status == 410);
        }
        assert!(matches!(
            failed(classify(301, None, String::new())).error,
            DeliveryError::Redirect { status: 301 }
        ));
    }

    #[test]
    fn transport_failures_are_retryable() {
        let f = Failure::transport(DeliveryError::Timeout);
        assert_eq!((f.retry, f.health), (Retryability::Retry, Health::Failure));
        let f = Failure::transport(DeliveryError::Blocked("10.0.0.1".into()));
        assert_eq!(
            (f.retry, f.health),
            (Retryability::Permanent, Health::Neutral)
        );
    }
}
