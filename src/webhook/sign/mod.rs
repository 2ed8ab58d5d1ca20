//! [Standard Webhooks](https://www.standardwebhooks.com/) signing and verification.
//!
//! A delivery carries three headers: [`HEADER_WEBHOOK_ID`], [`HEADER_WEBHOOK_TIMESTAMP`]
//! (seconds since the Unix epoch) and [`HEADER_WEBHOOK_SIGNATURE`]. The signature is
//! `v1,` followed by the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with
//! the decoded bytes of a `whsec_…` secret. During key rotation the sender signs with every
//! secret and lists the signatures separated by single spaces.
//!
//! The HMAC and the constant-time comparison come from `ring`; nothing here is hand-written
//! cryptography.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The name of the header that carries the message id.
///
/// # Examples
///
/// ```
/// assert_eq!(hookpool::HEADER_WEBHOOK_ID, "webhook-id");
/// ```
pub const HEADER_WEBHOOK_ID: &str = "webhook-id";

/// The name of the header that carries the Unix timestamp, in whole seconds.
///
/// # Examples
///
/// ```
/// assert_eq!(hookpool::HEADER_WEBHOOK_TIMESTAMP, "webhook-timestamp");
/// ```
pub const HEADER_WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";

/// The name of the header that carries the signatures (see [`signature_header`]).
///
/// # Examples
///
/// ```
/// assert_eq!(hookpool::HEADER_WEBHOOK_SIGNATURE, "webhook-signature");
/// ```
pub const HEADER_WEBHOOK_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";
/// 24 bytes is what the reference implementations generate and the spec's lower bound.
const GENERATED_KEY_LEN: usize = 24;
/// 27 alphanumerics carry about 160 bits, the same length as the KSUIDs in the spec's examples.
const MESSAGE_ID_RANDOM_LEN: usize = 27;

/// A Standard Webhooks signing secret.
///
/// The key is never printed: `Debug` shows `SigningSecret(..)`, there is no `Display`, and the
/// only way to get the text back is the deliberately named [`to_whsec_string`]. The library
/// never logs a secret at any level.
///
/// [`to_whsec_string`]: SigningSecret::to_whsec_string
///
/// # Examples
///
/// ```
/// use hookpool::SigningSecret;
///
/// let secret: SigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// assert_eq!(format!("{secret:?}"), "SigningSecret(..)");
/// # Ok::<(), hookpool::SecretError>(())
/// ```
#[derive(Clone)]
pub struct SigningSecret {
    key: Vec<u8>,
    // Built once so that signing a delivery does not redo the key schedule.
    hmac_key: hmac::Key,
}

impl SigningSecret {
    /// Parses a secret in the `whsec_<base64>` form.
    ///
    /// The `whsec_` prefix is optional, so the bare base64 text is accepted too. Base64 padding
    /// is optional, as in the reference libraries. Surrounding whitespace is not trimmed: a
    /// secret read from a file or environment variable should be trimmed by the caller.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] if there is no key after the prefix, and
    /// [`SecretError::InvalidBase64`] if the text is not standard base64. The error never
    /// contains the secret text.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{SecretError, SigningSecret};
    ///
    /// let with_prefix = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let without = SigningSecret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// assert_eq!(with_prefix.to_whsec_string(), without.to_whsec_string());
    ///
    /// assert_eq!(SigningSecret::new("whsec_").unwrap_err(), SecretError::Empty);
    /// assert_eq!(SigningSecret::new("whsec_not base64!").unwrap_err(), SecretError::InvalidBase64);
    /// # Ok::<(), SecretError>(())
    /// ```
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = STANDARD_PAD_INDIFFERENT
            .decode(encoded)
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::from_bytes(key)
    }

    /// Wraps raw key bytes.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] if `key` is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{SecretError, SigningSecret};
    ///
    /// let secret = SigningSecret::from_bytes(b"0123456789abcdef01234567".to_vec())?;
    /// assert!(secret.to_whsec_string().starts_with("whsec_"));
    /// assert_eq!(SigningSecret::from_bytes(Vec::new()).unwrap_err(), SecretError::Empty);
    /// # Ok::<(), SecretError>(())
    /// ```
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let key = key.into();
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        Ok(Self { key, hmac_key })
    }

    /// Generates a new random 24-byte secret from the operating system's secure random
    /// number generator.
    ///
    /// # Panics
    ///
    /// Panics if the operating system's random number generator fails, which `ring` reports
    /// only when the system cannot supply randomness at all.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SigningSecret;
    ///
    /// let a = SigningSecret::generate();
    /// let b = SigningSecret::generate();
    /// assert_ne!(a.to_whsec_string(), b.to_whsec_string());
    /// // 24 bytes encode to 32 base64 characters after the prefix.
    /// assert_eq!(a.to_whsec_string().len(), "whsec_".len() + 32);
    /// ```
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the operating system's random number generator failed");
        Self::from_bytes(key).expect("a generated key is never empty")
    }

    /// Returns the secret as `whsec_<base64>`, the form [`SigningSecret::new`] parses.
    ///
    /// The long name is deliberate: printing a secret should never happen by accident.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SigningSecret;
    ///
    /// let text = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    /// assert_eq!(SigningSecret::new(text)?.to_whsec_string(), text);
    /// # Ok::<(), hookpool::SecretError>(())
    /// ```
    pub fn to_whsec_string(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// Signs one message and returns `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
    ///
    /// `timestamp` is in whole seconds since the Unix epoch, exactly as sent in the
    /// [`HEADER_WEBHOOK_TIMESTAMP`] header.
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::SigningSecret;
    ///
    /// // The first test vector published with the Standard Webhooks reference libraries.
    /// let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
    /// assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /// # Ok::<(), hookpool::SecretError>(())
    /// ```
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // Feeding the parts in turn avoids copying the body into one signed buffer.
        let mut ctx = hmac::Context::with_key(&self.hmac_key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!(
            "{SIGNATURE_VERSION},{}",
            STANDARD.encode(ctx.sign().as_ref())
        )
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl FromStr for SigningSecret {
    type Err = SecretError;

    /// Same as [`SigningSecret::new`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a signing secret was rejected.
///
/// Messages never contain the secret text.
///
/// # Examples
///
/// ```
/// use hookpool::{SecretError, SigningSecret};
///
/// let err = SigningSecret::new("whsec_%%%").unwrap_err();
/// assert_eq!(err, SecretError::InvalidBase64);
/// assert_eq!(err.to_string(), "signing secret is not valid base64");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret has no key bytes.
    Empty,
    /// The text after the optional `whsec_` prefix is not standard base64.
    InvalidBase64,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretError::Empty => "signing secret is empty",
            SecretError::InvalidBase64 => "signing secret is not valid base64",
        })
    }
}

impl std::error::Error for SecretError {}

/// Builds the value of the [`HEADER_WEBHOOK_SIGNATURE`] header: one `v1,…` entry per secret,
/// in the order given, separated by single spaces.
///
/// Signing with several secrets lets receivers rotate keys: each accepts the delivery if any
/// entry matches a secret it knows. An empty slice gives an empty string, which no receiver
/// accepts.
///
/// # Examples
///
/// ```
/// use hookpool::{SigningSecret, signature_header};
///
/// let old = SigningSecret::generate();
/// let new = SigningSecret::generate();
/// let header = signature_header(&[old.clone(), new], "msg_1", 1_700_000_000, b"{}");
/// let entries: Vec<&str> = header.split(' ').collect();
/// assert_eq!(entries.len(), 2);
/// assert_eq!(entries[0], old.sign("msg_1", 1_700_000_000, b"{}"));
/// ```
pub fn signature_header(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a received webhook, as a receiver would.
///
/// Checks, in this order, that no header value is empty, that the timestamp is an integer,
/// that it lies within `tolerance` of `now` in either direction, and that at least one `v1`
/// entry of `signature_header` matches at least one of `secrets`. Each comparison is constant
/// time (`ring::hmac::verify`). Entries of another version, without a comma, or whose
/// signature is not base64 are skipped rather than rejected, so that a future version next to
/// a `v1` entry still verifies.
///
/// # Errors
///
/// - [`VerifyError::MissingHeader`] if `msg_id`, `timestamp_header` or `signature_header`
///   is empty.
/// - [`VerifyError::InvalidTimestamp`] if the timestamp is not a decimal integer.
/// - [`VerifyError::TimestampOutOfTolerance`] if it is too old or too far in the future.
/// - [`VerifyError::NoMatchingSignature`] if no entry matches, including when `secrets` is
///   empty.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use hookpool::{SigningSecret, VerifyError, signature_header, verify};
///
/// let secrets = [SigningSecret::generate()];
/// let body = br#"{"event":"ping"}"#;
/// let sig = signature_header(&secrets, "msg_1", 1_700_000_000, body);
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
/// let tolerance = Duration::from_secs(300);
///
/// assert_eq!(verify(&secrets, "msg_1", "1700000000", &sig, body, now, tolerance), Ok(()));
/// assert_eq!(
///     verify(&secrets, "msg_1", "1700000000", &sig, b"{}", now, tolerance),
///     Err(VerifyError::NoMatchingSignature)
/// );
/// let much_later = now + Duration::from_secs(3600);
/// assert_eq!(
///     verify(&secrets, "msg_1", "1700000000", &sig, body, much_later, tolerance),
///     Err(VerifyError::TimestampOutOfTolerance)
/// );
/// ```
pub fn verify(
    secrets: &[SigningSecret],
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    for (value, name) in [
        (msg_id, HEADER_WEBHOOK_ID),
        (timestamp_header, HEADER_WEBHOOK_TIMESTAMP),
        (signature_header, HEADER_WEBHOOK_SIGNATURE),
    ] {
        if value.is_empty() {
            return Err(VerifyError::MissingHeader(name));
        }
    }

    let timestamp: i64 = timestamp_header
        .parse()
        .map_err(|_| VerifyError::InvalidTimestamp)?;
    if !within_tolerance(timestamp, now, tolerance) {
        return Err(VerifyError::TimestampOutOfTolerance);
    }

    // Sign the canonical integer, as the reference libraries do, so "+17…" and "17…" agree.
    let mut signed = Vec::with_capacity(msg_id.len() + 22 + body.len());
    signed.extend_from_slice(msg_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);

    let matched = signature_header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, sig)| STANDARD.decode(sig).ok())
        .any(|tag| {
            secrets
                .iter()
                .any(|s| hmac::verify(&s.hmac_key, &signed, &tag).is_ok())
        });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

fn within_tolerance(timestamp: i64, now: SystemTime, tolerance: Duration) -> bool {
    let offset = Duration::from_secs(timestamp.unsigned_abs());
    let sent = if timestamp >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // A timestamp that SystemTime cannot represent is nowhere near now.
    let Some(sent) = sent else { return false };
    let skew = match now.duration_since(sent) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    skew <= tolerance
}

/// Why [`verify`] rejected a webhook.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use hookpool::{VerifyError, verify};
///
/// let err = verify(&[], "msg_1", "yesterday", "v1,AAAA", b"", SystemTime::now(), Duration::from_secs(300))
///     .unwrap_err();
/// assert_eq!(err, VerifyError::InvalidTimestamp);
/// assert_eq!(err.to_string(), "webhook timestamp is not an integer");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header was empty or absent; carries its lowercase name, such as
    /// [`HEADER_WEBHOOK_SIGNATURE`].
    MissingHeader(&'static str),
    /// The timestamp header is not a decimal integer.
    InvalidTimestamp,
    /// The timestamp is further from `now` than the tolerance allows, in either direction.
    TimestampOutOfTolerance,
    /// No `v1` signature in the header matches any of the secrets.
    NoMatchingSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingHeader(name) => write!(f, "missing {name} header"),
            VerifyError::InvalidTimestamp => f.write_str("webhook timestamp is not an integer"),
            VerifyError::TimestampOutOfTolerance => {
                f.write_str("webhook timestamp is outside the tolerance")
            }
            VerifyError::NoMatchingSignature => f.write_str("no matching webhook signature"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Returns a fresh message id: `msg_` followed by 27 random ASCII letters and digits.
///
/// The id goes into the signed content `{id}.{timestamp}.{body}`, so it never contains a
/// `.`. It is meant to be unique, not secret, so it comes from `fastrand` rather than the
/// operating system's generator.
///
/// # Examples
///
/// ```
/// let id = hookpool::new_message_id();
/// assert!(id.starts_with("msg_"));
/// assert_eq!(id.len(), 4 + 27);
/// assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
/// assert_ne!(id, hookpool::new_message_id());
/// ```
pub fn new_message_id() -> String {
    let mut id = String::with_capacity(4 + MESSAGE_ID_RANDOM_LEN);
    id.push_str("msg_");
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(MESSAGE_ID_RANDOM_LEN));
    id
}

#[cfg(test)]
mod tests;
