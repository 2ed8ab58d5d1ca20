//! Webhook delivery: the [`Webhook`] value, signing (Standard Webhooks),
//! sending over HTTP, and the [`Dispatcher`](crate::Dispatcher) that ties
//! them to the pool.

pub(crate) mod builder;
pub(crate) mod deliver;
pub(crate) mod delivery;
pub(crate) mod dispatcher;
pub(crate) mod events;
pub(crate) mod fetch;
pub(crate) mod handle;
pub(crate) mod report;
pub(crate) mod resolve;
pub(crate) mod send;
pub(crate) mod sign;
pub(crate) mod tls;
pub(crate) mod transport;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use ureq::http::Uri;

use crate::breaker::Endpoint;

/// One webhook to deliver: a URL, a JSON body, and a Standard Webhooks
/// message id that stays the same on every attempt.
///
/// Cloning is cheap: the body is shared.
///
/// # Examples
///
/// ```
/// use hookpool::Webhook;
///
/// let hook = Webhook::new("https://example.com/hooks?token=abc", &serde_json::json!({"event": "entry_created"}))?;
/// assert_eq!(hook.url(), "https://example.com/hooks?token=abc");
/// assert_eq!(hook.body(), br#"{"event":"entry_created"}"#);
/// assert!(hook.id().starts_with("msg_"));
/// // Logs and errors show the URL without its query string.
/// assert_eq!(hook.redacted_url(), "https://example.com/hooks?REDACTED");
/// # Ok::<(), hookpool::WebhookError>(())
/// ```
#[derive(Clone)]
pub struct Webhook(Arc<Inner>);

/// One allocation per webhook keeps `Webhook` pointer-sized: it travels
/// through the queue and comes back inside errors.
#[derive(Clone)]
struct Inner {
    id: Box<str>,
    url: Box<str>,
    uri: Uri,
    endpoint: Endpoint,
    body: Box<RawValue>,
}

impl Webhook {
    /// A webhook whose body is `payload` serialized as JSON, with a fresh
    /// message id.
    ///
    /// # Errors
    ///
    /// [`WebhookError::InvalidUrl`], [`WebhookError::UnsupportedScheme`] or
    /// [`WebhookError::CredentialsInUrl`] for a URL that cannot be used, and
    /// [`WebhookError::Serialize`] if the payload cannot be serialized.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Webhook, WebhookError};
    ///
    /// let err = Webhook::new("ftp://example.com/", &1).unwrap_err();
    /// assert!(matches!(err, WebhookError::UnsupportedScheme(ref s) if s == "ftp"));
    /// ```
    pub fn new<T: Serialize + ?Sized>(url: &str, payload: &T) -> Result<Self, WebhookError> {
        let json = serde_json::to_string(payload).map_err(WebhookError::Serialize)?;
        let body = RawValue::from_string(json).map_err(WebhookError::Serialize)?;
        Self::with_body(url, body, sign::new_message_id().into())
    }

    /// A webhook whose body is already-encoded JSON, sent byte for byte.
    ///
    /// # Errors
    ///
    /// As [`Webhook::new`], and [`WebhookError::InvalidJson`] if `json` is
    /// not one valid JSON value.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{Webhook, WebhookError};
    ///
    /// let hook = Webhook::from_json("http://127.0.0.1:9/in", r#"{"a": 1}"#)?;
    /// assert_eq!(hook.body(), br#"{"a": 1}"#);
    /// assert!(matches!(Webhook::from_json("http://127.0.0.1:9/in", "{nope"), Err(WebhookError::InvalidJson(_))));
    /// # Ok::<(), WebhookError>(())
    /// ```
    pub fn from_json(url: &str, json: impl Into<String>) -> Result<Self, WebhookError> {
        let body = RawValue::from_string(json.into()).map_err(WebhookError::InvalidJson)?;
        Self::with_body(url, body, sign::new_message_id().into())
    }

    fn with_body(url: &str, body: Box<RawValue>, id: Box<str>) -> Result<Self, WebhookError> {
        let (uri, endpoint) = parse_url(url)?;
        Ok(Webhook(Arc::new(Inner {
            id,
            url: url.into(),
            uri,
            endpoint,
            body,
        })))
    }

    /// Replaces the message id, for example to keep the id of an earlier
    /// delivery when replaying it. Receivers use the id to drop duplicates.
    ///
    /// # Errors
    ///
    /// [`WebhookError::InvalidId`] if `id` is empty, longer than 255 bytes,
    /// or contains anything but ASCII letters, digits, `_` and `-` (the id is
    /// signed as `id.timestamp.body`, so a `.` would make it ambiguous).
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::Webhook;
    ///
    /// let hook = Webhook::new("https://example.com/", &true)?.with_id("msg_42")?;
    /// assert_eq!(hook.id(), "msg_42");
    /// assert!(Webhook::new("https://example.com/", &true)?.with_id("a.b").is_err());
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn with_id(mut self, id: &str) -> Result<Self, WebhookError> {
        let valid = !id.is_empty()
            && id.len() <= 255
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(WebhookError::InvalidId);
        }
        Arc::make_mut(&mut self.0).id = id.into();
        Ok(self)
    }

    /// The Standard Webhooks message id (`webhook-id` header).
    ///
    /// # Examples
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("https://example.com/", &0)?;
    /// assert!(!hook.id().contains('.'));
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The target URL, exactly as given.
    ///
    /// # Examples
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("http://localhost:8080/in", &0)?;
    /// assert_eq!(hook.url(), "http://localhost:8080/in");
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn url(&self) -> &str {
        &self.0.url
    }

    /// The URL for logs and error messages: the query string, which often
    /// carries tokens, is replaced by `REDACTED`.
    ///
    /// # Examples
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("https://example.com/in?key=s3cret", &0)?;
    /// assert!(!hook.redacted_url().contains("s3cret"));
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn redacted_url(&self) -> String {
        redact_url(&self.0.url)
    }

    /// The JSON body, byte for byte as it is sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("https://example.com/", &[1, 2])?;
    /// assert_eq!(hook.body(), b"[1,2]");
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn body(&self) -> &[u8] {
        self.0.body.get().as_bytes()
    }

    /// The endpoint (scheme, host, port) whose circuit breaker this webhook
    /// goes through.
    ///
    /// # Examples
    ///
    /// ```
    /// let hook = hookpool::Webhook::new("https://Example.com/a", &0)?;
    /// assert_eq!(hook.endpoint().to_string(), "https://example.com:443");
    /// # Ok::<(), hookpool::WebhookError>(())
    /// ```
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.0.uri
    }

    pub(crate) fn raw_body(&self) -> &RawValue {
        &self.0.body
    }
}

impl fmt::Debug for Webhook {
    /// Shows the id, the redacted URL and the body's length, never the body
    /// (payloads appear only at trace level).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id())
            .field("url", &self.redacted_url())
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Parses and checks a webhook URL.
fn parse_url(url: &str) -> Result<(Uri, Endpoint), WebhookError> {
    let invalid = |why: &str| WebhookError::InvalidUrl(format!("{}: {why}", redact_url(url)));
    // Name a wrong scheme as such even when the rest would not parse as http.
    if let Some((scheme, _)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let well_formed = scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if well_formed && !scheme.is_empty() && scheme != "http" && scheme != "https" {
            return Err(WebhookError::UnsupportedScheme(scheme));
        }
    }
    let uri: Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| invalid("no scheme"))?
        .to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(WebhookError::UnsupportedScheme(scheme)),
    };
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        return Err(WebhookError::CredentialsInUrl);
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let endpoint = Endpoint::new(&scheme, host, authority.port_u16().unwrap_or(default_port));
    Ok((uri, endpoint))
}

/// Replaces a URL's query string and any userinfo with `REDACTED`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(q) = out.find('?') {
        out.truncate(q);
        out.push_str("?REDACTED");
    }
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out.replace_range(scheme_end + 3..scheme_end + 3 + at, "REDACTED");
        }
    }
    out
}

/// Why a [`Webhook`] could not be built.
///
/// # Examples
///
/// ```
/// use hookpool::{Webhook, WebhookError};
///
/// let err = Webhook::new("https://user:pw@example.com/", &0).unwrap_err();
/// assert!(matches!(err, WebhookError::CredentialsInUrl));
/// assert_eq!(err.to_string(), "webhook url must not contain credentials");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum WebhookError {
    /// The URL does not parse, or has no host. The message names the URL with
    /// its query string redacted.
    InvalidUrl(String),
    /// The URL's scheme is neither `http` nor `https`.
    UnsupportedScheme(String),
    /// The URL carries `user:password@`. Credentials belong in a header or in
    /// the signature, not in a URL that ends up in logs.
    CredentialsInUrl,
    /// The payload could not be serialized to JSON.
    Serialize(serde_json::Error),
    /// The body given to [`Webhook::from_json`] is not valid JSON.
    InvalidJson(serde_json::Error),
    /// The message id is empty, too long, or has characters other than ASCII
    /// letters, digits, `_` and `-`.
    InvalidId,
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::InvalidUrl(why) => write!(f, "invalid webhook url {why}"),
            WebhookError::UnsupportedScheme(s) => {
                write!(
                    f,
                    "unsupported url scheme {s:?}: only http and https are allowed"
                )
            }
            WebhookError::CredentialsInUrl => {
                f.write_str("webhook url must not contain credentials")
            }
            WebhookError::Serialize(_) => f.write_str("payload cannot be serialized to json"),
            WebhookError::InvalidJson(_) => f.write_str("body is not valid json"),
            WebhookError::InvalidId => {
                f.write_str("webhook id must be 1 to 255 ascii letters, digits, '_' or '-'")
            }
        }
    }
}

impl std::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebhookError::Serialize(e) | WebhookError::InvalidJson(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Webhook::new("https://example.com/a", &0).is_ok());
        assert!(Webhook::new("http://127.0.0.1:8080/a?b=c", &0).is_ok());
        assert!(Webhook::new("http://[::1]:8080/", &0).is_ok());
        for bad in [
            "",
            "example.com/a",
            "http://",
            "http:///path",
            "not a url",
            "http://exa mple.com/",
        ] {
            assert!(
                matches!(
                    Webhook::new(bad, &0),
                    Err(WebhookError::InvalidUrl(_) | WebhookError::UnsupportedScheme(_))
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(
            Webhook::new("file:///etc/passwd", &0),
            Err(WebhookError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            Webhook::new("https://u@example.com/", &0),
            Err(WebhookError::CredentialsInUrl)
        ));
    }

    #[test]
    fn endpoints_use_default_ports() {
        let h = Webhook::new("http://Example.COM/x", &0).unwrap();
        assert_eq!(h.endpoint(), &Endpoint::new("http", "example.com", 80));
        let h = Webhook::new("https://example.com:8443/x", &0).unwrap();
        assert_eq!(h.endpoint().port(), 8443);
        let h = Webhook::new("http://[::1]:9/x", &0).unwrap();
        assert_eq!(h.endpoint().host(), "::1");
    }

    #[test]
    fn unserializable_payloads_are_refused() {
        use std::collections::HashMap;
        // JSON object keys must be strings.
        let mut map = HashMap::new();
        map.insert((1, 2), "x");
        assert!(matches!(
            Webhook::new("https://example.com/", &map),
            Err(WebhookError::Serialize(_))
        ));
        // serde_json writes a NaN as `null` rather than failing.
        assert!(Webhook::new("https://example.com/", &f64::NAN).is_ok());
    }

    #[test]
    fn redaction_hides_query_and_userinfo() {
        assert_eq!(
            redact_url("https://a.com/p?t=1"),
            "https://a.com/p?REDACTED"
        );
        assert_eq!(
            redact_url("https://u:p@a.com/p"),
            "https://REDACTED@a.com/p"
        );
        assert_eq!(redact_url("https://a.com/p"), "https://a.com/p");
        assert_eq!(
            redact_url("https://u:p@a.com/p?x=@y"),
            "https://REDACTED@a.com/p?REDACTED"
        );
    }

    #[test]
    fn debug_never_shows_the_body() {
        let h = Webhook::new("https://a.com/?k=secret", &"payload-text").unwrap();
        let d = format!("{h:?}");
        assert!(!d.contains("payload-text") && !d.contains("secret"), "{d}");
    }
}
