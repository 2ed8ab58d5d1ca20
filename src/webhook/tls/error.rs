//! What can be wrong with TLS settings, and what a failed handshake means.

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError, InconsistentKeys};

/// A boxed cause, as carried by [`TlsConfigError`].
type Cause = Box<dyn StdError + Send + Sync>;

/// Why TLS settings cannot be used. Every message names the file (or the
/// kind of PEM) at fault, and none shows key material.
///
/// # Examples
///
/// ```
/// use hookpool::{TlsConfig, TlsConfigError};
///
/// let err = TlsConfig::new().add_root_certificates_file("/no/such/ca.pem").unwrap_err();
/// assert!(matches!(err, TlsConfigError::Read { .. }));
/// assert_eq!(err.to_string(), "cannot read /no/such/ca.pem");
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM holds no certificate, is not valid PEM, or holds a
    /// certificate that cannot be used.
    Certificate {
        /// The file, or which PEM argument.
        origin: String,
        /// What the parser said, if anything.
        source: Option<Cause>,
    },
    /// The PEM holds no private key, is not valid PEM, or holds a key of a
    /// kind that cannot sign.
    PrivateKey {
        /// The file, or which PEM argument.
        origin: String,
        /// What the parser said, if anything.
        source: Option<Cause>,
    },
    /// The private key is not the one the client certificate was issued for.
    KeyMismatch {
        /// Where the certificate came from.
        certificate: String,
        /// Where the key came from.
        key: String,
    },
    /// [`TlsRoots::Platform`](crate::TlsRoots::Platform) was chosen in a build
    /// without the `platform-verifier` feature.
    PlatformUnavailable,
    /// Certificate verification could not be set up: the platform's trust
    /// store could not be loaded (it may be empty), or the crypto provider
    /// does not support the TLS versions hookpool uses.
    Verifier {
        /// Why.
        source: Option<Cause>,
    },
}

impl TlsConfigError {
    pub(crate) fn certificate(origin: &str, source: impl Into<Cause>) -> Self {
        TlsConfigError::Certificate {
            origin: origin.to_owned(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn private_key(origin: &str, source: impl Into<Cause>) -> Self {
        TlsConfigError::PrivateKey {
            origin: origin.to_owned(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn verifier(source: impl Into<Cause>) -> Self {
        TlsConfigError::Verifier {
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Read { path, .. } => write!(f, "cannot read {}", path.display()),
            TlsConfigError::Certificate { origin, .. } => {
                write!(f, "{origin}: no usable certificate")
            }
            TlsConfigError::PrivateKey { origin, .. } => {
                write!(f, "{origin}: no usable private key")
            }
            TlsConfigError::KeyMismatch { certificate, key } => write!(
                f,
                "the private key in {key} does not match the certificate in {certificate}"
            ),
            TlsConfigError::PlatformUnavailable => {
                f.write_str("platform trust roots need hookpool's `platform-verifier` feature")
            }
            TlsConfigError::Verifier { .. } => {
                f.write_str("cannot set up certificate verification")
            }
        }
    }
}

impl StdError for TlsConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TlsConfigError::Read { source, .. } => Some(source),
            TlsConfigError::Certificate { source, .. }
            | TlsConfigError::PrivateKey { source, .. }
            | TlsConfigError::Verifier { source } => {
                source.as_deref().map(|e| e as &(dyn StdError + 'static))
            }
            TlsConfigError::KeyMismatch { .. } | TlsConfigError::PlatformUnavailable => None,
        }
    }
}

/// What rustls said when a certificate and key were put together.
pub(crate) fn identity_error(e: rustls::Error, certificate: &str, key: &str) -> TlsConfigError {
    match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsConfigError::KeyMismatch {
                certificate: certificate.to_owned(),
                key: key.to_owned(),
            }
        }
        // The certificate could not be parsed to compare its key.
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsConfigError::certificate(certificate, e)
        }
        other => TlsConfigError::private_key(key, other),
    }
}

/// What went wrong in a TLS handshake, as [`DeliveryError::Tls`](crate::DeliveryError::Tls)
/// reports it, and whether the dispatcher retries it.
///
/// The rule: what the receiver fixes by deploying a certificate is retried
/// like a 5xx (an expired certificate renewed a minute later still gets the
/// webhook, within the [`RetryPolicy`](crate::RetryPolicy)); what only a
/// change of configuration fixes, ours (the URL, the trust roots, the client
/// certificate) or theirs, is permanent: dead-lettered at once with reason
/// `permanent_failure`, for [`Dispatcher::replay`](crate::Dispatcher::replay)
/// once it is fixed. Permanent ones do not count against the endpoint's
/// circuit breaker.
///
/// # Examples
///
/// ```
/// use hookpool::{DeliveryError, TlsErrorKind};
///
/// let err = DeliveryError::Tls {
///     kind: TlsErrorKind::UnknownIssuer,
///     detail: "invalid peer certificate: UnknownIssuer".into(),
/// };
/// assert_eq!(err.to_string(), "tls: unknown issuer (invalid peer certificate: UnknownIssuer)");
/// assert!(!TlsErrorKind::UnknownIssuer.is_retried());
/// assert!(TlsErrorKind::Expired.is_retried());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The receiver's certificate does not chain to a trusted root: a
    /// private CA that was not added, or a server that leaves out its
    /// intermediate certificate. Not retried.
    UnknownIssuer,
    /// The receiver's certificate has expired, or is not valid yet. Retried.
    Expired,
    /// The receiver's certificate is not valid for the URL's host. Not
    /// retried.
    NameMismatch,
    /// The receiver's certificate is unusable in another way: revoked,
    /// badly signed, malformed, or not meant for a server. Not retried.
    InvalidCertificate,
    /// The receiver requires a client certificate and none was configured.
    /// Not retried.
    ClientCertificateRequired,
    /// The receiver refused the client certificate: issued by a CA it does
    /// not trust, expired, or revoked. Not retried.
    ClientCertificateRejected,
    /// Any other failure of the TLS exchange: no common protocol version or
    /// cipher, a fatal alert, a malformed message. Retried.
    Handshake,
}

impl TlsErrorKind {
    /// Whether a delivery that failed this way is attempted again (see the
    /// rule above).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!hookpool::TlsErrorKind::NameMismatch.is_retried());
    /// assert!(hookpool::TlsErrorKind::Handshake.is_retried());
    /// ```
    pub fn is_retried(self) -> bool {
        matches!(self, TlsErrorKind::Expired | TlsErrorKind::Handshake)
    }

    /// The kind of a rustls error.
    pub(crate) fn of(e: &rustls::Error) -> TlsErrorKind {
        use CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::UnknownIssuer => TlsErrorKind::UnknownIssuer,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsErrorKind::Expired,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsErrorKind::NameMismatch,
                _ => TlsErrorKind::InvalidCertificate,
            },
            rustls::Error::NoCertificatesPresented => TlsErrorKind::InvalidCertificate,
            // TLS 1.3's alert for a missing client certificate.
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsErrorKind::ClientCertificateRequired
            }
            // The alerts a server sends about the certificate we presented.
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied,
            ) => TlsErrorKind::ClientCertificateRejected,
            _ => TlsErrorKind::Handshake,
        }
    }
}

impl fmt::Display for TlsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsErrorKind::UnknownIssuer => "unknown issuer",
            TlsErrorKind::Expired => "certificate expired or not yet valid",
            TlsErrorKind::NameMismatch => "certificate name mismatch",
            TlsErrorKind::InvalidCertificate => "invalid certificate",
            TlsErrorKind::ClientCertificateRequired => "client certificate required",
            TlsErrorKind::ClientCertificateRejected => "client certificate rejected",
            TlsErrorKind::Handshake => "handshake failure",
        })
    }
}

/// The TLS failure inside a ureq error, if it is one: its kind and rustls's
/// own words. rustls errors reach ureq wrapped in `io::Error` (from the
/// handshake and from reading, where TLS 1.3 delivers a server's verdict on
/// our certificate) or directly.
pub(crate) fn failure(e: &ureq::Error) -> Option<(TlsErrorKind, String)> {
    let tls = match e {
        ureq::Error::Rustls(tls) => tls,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    Some((TlsErrorKind::of(tls), tls.to_string()))
}
