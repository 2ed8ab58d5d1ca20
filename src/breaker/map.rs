//! The per-endpoint side of circuit breaking: [`Endpoint`], the unit a
//! breaker guards, and `Breakers`, every endpoint's breaker behind one lock.

use std::fmt;
use std::time::Instant;

use parking_lot::Mutex;

use crate::bounded::PrunedMap;

use super::{Admission, Breaker, BreakerConfig, BreakerState, Health, Transition};

/// An HTTP origin, the unit a breaker guards. Scheme and host are ASCII-lowercased.
///
/// # Examples
///
/// ```
/// use hookpool::Endpoint;
/// let ep = Endpoint::new("HTTPS", "Example.COM", 443);
/// assert_eq!(ep.to_string(), "https://example.com:443");
/// assert_eq!((ep.scheme(), ep.host(), ep.port()), ("https", "example.com", 443));
/// assert_eq!(Endpoint::new("http", "::1", 80).to_string(), "http://[::1]:80");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    scheme: String,
    host: String,
    port: u16,
}

impl Endpoint {
    /// An endpoint; `scheme` and `host` are ASCII-lowercased.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("HTTP", "A.b", 80), Endpoint::new("http", "a.B", 80));
    /// ```
    pub fn new(scheme: &str, host: &str, port: u16) -> Self {
        Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    /// The scheme, lowercase.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("HTTPS", "a", 443).scheme(), "https");
    /// ```
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lowercase, as given (IPv6 addresses with or without brackets).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("https", "API.example", 443).host(), "api.example");
    /// ```
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Endpoint;
    /// assert_eq!(Endpoint::new("https", "a", 8443).port(), 8443);
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bare IPv6 host needs brackets, or its colons run into the port's.
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// Every endpoint's breaker behind one lock. Nothing but the state change happens under
/// the lock; transitions are returned so the caller logs them after it is released.
/// Entries are created on first use. Once a thousand or so endpoints are known, breakers
/// that remember nothing (closed, no failures) are dropped before a new one is added: a
/// fresh breaker would behave the same, and the map stays bounded by the endpoints that
/// are failing (see `crate::bounded`).
#[derive(Debug)]
pub(crate) struct Breakers {
    cfg: BreakerConfig,
    map: Mutex<PrunedMap<Endpoint, Breaker>>,
}

impl Breakers {
    /// An empty map whose breakers all use `cfg`.
    pub(crate) fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            map: Mutex::new(PrunedMap::new()),
        }
    }

    /// [`Breaker::admit`] for `ep`, creating its breaker if needed.
    pub(crate) fn admit(&self, ep: &Endpoint, now: Instant) -> (Admission, Option<Transition>) {
        if self.cfg.is_disabled() {
            return (Admission::Allowed, None);
        }
        let mut map = self.map.lock();
        if let Some(breaker) = map.get_mut(ep) {
            return breaker.admit(now);
        }
        map.get_or_insert_with(ep.clone(), || Breaker::new(&self.cfg), Breaker::is_fresh)
            .admit(now)
    }

    /// [`Breaker::record`] for `ep`. Only a failure or a push-back creates a missing
    /// breaker, since success or neutral on a fresh breaker would leave it unchanged.
    pub(crate) fn record(
        &self,
        ep: &Endpoint,
        health: Health,
        was_probe: bool,
        now: Instant,
    ) -> Option<Transition> {
        if self.cfg.is_disabled() {
            return None;
        }
        let mut map = self.map.lock();
        if let Some(breaker) = map.get_mut(ep) {
            return breaker.record(health, was_probe, now);
        }
        if !matches!(health, Health::Failure | Health::PushBack) {
            return None;
        }
        map.get_or_insert_with(ep.clone(), || Breaker::new(&self.cfg), Breaker::is_fresh)
            .record(health, was_probe, now)
    }

    /// Every known endpoint and its state, sorted by endpoint.
    pub(crate) fn snapshot(&self) -> Vec<(Endpoint, BreakerState)> {
        let mut all: Vec<_> = {
            let map = self.map.lock();
            map.iter().map(|(ep, b)| (ep.clone(), b.state())).collect()
        };
        // Sorted after the guard drops, to keep the critical section short.
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[cfg(test)]
    /// How many endpoints' breakers are in state `s`.
    pub(crate) fn count_in(&self, s: BreakerState) -> usize {
        self.map
            .lock()
            .iter()
            .filter(|(_, b)| b.state() == s)
            .count()
    }

    #[cfg(test)]
    /// How many endpoints have a breaker.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}
