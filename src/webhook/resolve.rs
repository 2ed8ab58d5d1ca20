//! Resolvers in front of ureq's: the private-network guard, and a
//! short-lived cache of resolved addresses.
//!
//! ureq 3 resolves the host on every request, even when a pooled keep-alive
//! connection is then used, and with a timeout set its default resolver runs
//! each lookup on a new thread. Without the cache every delivery attempt
//! started and joined an OS thread (about 100 µs of CPU on loopback, most of
//! the attempt's cost; see docs/BENCHMARKS.md). The cache sits in front of
//! the guard, so only addresses the guard allowed are ever kept.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

/// Resolves like ureq's default resolver, then drops every address in a
/// private, loopback, link-local, CGNAT, unique-local, multicast or
/// unspecified range. ureq connects only to the addresses returned here, so
/// the address checked is the address used: DNS rebinding has no window.
#[derive(Debug)]
pub(crate) struct GuardedResolver {
    inner: Box<dyn Resolver>,
    forbidden: fn(IpAddr) -> bool,
}

impl Default for GuardedResolver {
    fn default() -> Self {
        GuardedResolver {
            inner: Box::new(DefaultResolver::default()),
            forbidden: is_forbidden,
        }
    }
}

impl GuardedResolver {
    /// A guard over another resolver and rule, so tests can pin a made-up
    /// host name to a loopback receiver and still go through the guard.
    #[cfg(test)]
    pub(crate) fn with(inner: impl Resolver, forbidden: fn(IpAddr) -> bool) -> Self {
        GuardedResolver {
            inner: Box::new(inner),
            forbidden,
        }
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.inner.resolve(uri, config, timeout)?;
        let mut allowed = self.empty();
        let mut refused = None;
        for addr in resolved.iter() {
            if (self.forbidden)(addr.ip()) {
                refused = Some(addr.ip());
            } else {
                allowed.push(*addr);
            }
        }
        match refused {
            Some(ip) if allowed.is_empty() => Err(ureq::Error::Other(Box::new(BlockedAddress(ip)))),
            _ => Ok(allowed),
        }
    }
}

/// The error a [`GuardedResolver`] returns through ureq.
#[derive(Debug)]
pub(crate) struct BlockedAddress(IpAddr);

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is in a private or reserved range", self.0)
    }
}

impl std::error::Error for BlockedAddress {}

/// Whether `ip` is an address a webhook must never reach when the
/// private-network guard is on.
pub(crate) fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden_v4(v4);
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) embeds an IPv4 address in the last 32 bits.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = seg[6].to_be_bytes();
                let [c, d] = seg[7].to_be_bytes();
                return is_forbidden_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        }
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata included
        || ip.is_multicast()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || a == 0 // "this network" 0/8
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || a >= 240 // reserved 240/4
}

/// How long resolved addresses are reused. Short, so DNS changes are seen
/// within seconds; a failed connection forgets them at once.
pub(crate) const DNS_CACHE_TTL: Duration = Duration::from_secs(10);

/// Hosts remembered at once; past it, expired entries go, then all of them.
const MAX_HOSTS: usize = 1024;

struct Entry {
    expires: Instant,
    addrs: ResolvedSocketAddrs,
}

/// The cache itself, shared by the resolver (which fills it) and the sender
/// (which forgets a host whose connection failed).
#[derive(Clone)]
pub(crate) struct DnsCache {
    ttl: Duration,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl DnsCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        DnsCache {
            ttl,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn get(&self, key: &str, now: Instant) -> Option<ResolvedSocketAddrs> {
        let entries = self.entries.lock();
        let entry = entries.get(key)?;
        (now < entry.expires).then(|| entry.addrs.clone())
    }

    fn put(&self, key: String, addrs: ResolvedSocketAddrs, now: Instant) {
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_HOSTS && !entries.contains_key(&key) {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= MAX_HOSTS {
                entries.clear();
            }
        }
        entries.insert(key, Entry { expires, addrs });
    }

    /// Drops the host's addresses, so the next request resolves it again.
    pub(crate) fn forget(&self, uri: &Uri) {
        if let Some(key) = cache_key(uri) {
            self.entries.lock().remove(&key);
        }
    }
}

impl fmt::Debug for DnsCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsCache")
            .field("ttl", &self.ttl)
            .field("hosts", &self.entries.lock().len())
            .finish()
    }
}

/// `scheme://authority`: what ureq resolves for a URI.
fn cache_key(uri: &Uri) -> Option<String> {
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// Answers from the cache, else asks `inner` (which keeps its timeout, and,
/// for the private-network guard, its checks: only checked addresses are
/// ever cached).
#[derive(Debug)]
pub(crate) struct CachingResolver<R> {
    inner: R,
    cache: DnsCache,
}

impl<R> CachingResolver<R> {
    pub(crate) fn new(inner: R, cache: DnsCache) -> Self {
        CachingResolver { inner, cache }
    }
}

impl<R: Resolver> Resolver for CachingResolver<R> {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let Some(key) = cache_key(uri) else {
            return self.inner.resolve(uri, config, timeout);
        };
        if let Some(addrs) = self.cache.get(&key, Instant::now()) {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache.put(key, addrs.clone(), Instant::now());
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn forbidden_ranges() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.1.1.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip} allowed");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip} refused");
        }
    }

    fn addrs(list: &[&str]) -> ResolvedSocketAddrs {
        let mut v = ureq::unversioned::resolver::DefaultResolver::default().empty();
        for a in list {
            v.push(a.parse::<SocketAddr>().unwrap());
        }
        v
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = DnsCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        cache.put("http://h:80".into(), addrs(&["10.0.0.1:80"]), t0);
        let hit = cache
            .get("http://h:80", t0 + Duration::from_secs(9))
            .unwrap();
        assert_eq!(&hit[..], &addrs(&["10.0.0.1:80"])[..]);
        assert!(
            cache
                .get("http://h:80", t0 + Duration::from_secs(10))
                .is_none()
        );
        assert!(cache.get("http://other:80", t0).is_none());
    }

    #[test]
    fn forget_drops_the_host() {
        let cache = DnsCache::new(Duration::from_secs(10));
        let uri: Uri = "http://h:8080/hook?x=1".parse().unwrap();
        let key = cache_key(&uri).unwrap();
        assert_eq!(key, "http://h:8080");
        cache.put(key.clone(), addrs(&["10.0.0.1:8080"]), Instant::now());
        cache.forget(&uri);
        assert!(cache.get(&key, Instant::now()).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = DnsCache::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_HOSTS + 10 {
            cache.put(format!("http://h{i}:80"), addrs(&["10.0.0.1:80"]), t0);
        }
        assert!(cache.entries.lock().len() <= MAX_HOSTS);
        assert!(
            cache
                .get(&format!("http://h{}:80", MAX_HOSTS + 9), t0)
                .is_some()
        );
    }

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl Resolver for Counting {
        fn resolve(
            &self,
            _uri: &Uri,
            _config: &ureq::config::Config,
            _timeout: ureq::unversioned::transport::NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(addrs(&["127.0.0.1:9"]))
        }
    }

    #[test]
    fn a_cached_host_is_resolved_once() {
        let cache = DnsCache::new(Duration::from_secs(60));
        let resolver = CachingResolver::new(Counting::default(), cache.clone());
        let config = ureq::config::Config::default();
        let uri: Uri = "http://127.0.0.1:9/a".parse().unwrap();
        let timeout = ureq::unversioned::transport::NextTimeout {
            after: ureq::unversioned::transport::time::Duration::from_secs(1),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        for _ in 0..3 {
            assert_eq!(resolver.resolve(&uri, &config, timeout).unwrap().len(), 1);
        }
        assert_eq!(resolver.inner.0.load(Ordering::SeqCst), 1);
        cache.forget(&uri);
        resolver.resolve(&uri, &config, timeout).unwrap();
        assert_eq!(resolver.inner.0.load(Ordering::SeqCst), 2);
    }
}
