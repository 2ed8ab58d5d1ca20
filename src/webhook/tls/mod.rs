//! HTTPS: which certificate authorities a receiver's certificate may chain
//! to, the client certificate for mutual TLS, and what a failed handshake
//! means.
//!
//! ureq's own TLS settings cannot add CAs to the platform's verifier, and its
//! connector panics at the first connection when a client key does not match
//! its certificate. So the rustls `ClientConfig` is built here, once, when the
//! dispatcher is built (every mistake is a build error), and
//! [`TlsConnector`] wraps connections in it.

mod connect;
mod error;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) use connect::TlsConnector;
pub(crate) use error::failure;
pub use error::{TlsConfigError, TlsErrorKind};

/// Where the certificate authorities that a receiver's certificate must
/// chain to come from. Extra CAs added with
/// [`TlsConfig::add_root_certificates_pem`] are trusted as well, with either.
///
/// # Examples
///
/// ```
/// use hookpool::{TlsConfig, TlsRoots};
///
/// assert_eq!(TlsRoots::default(), TlsRoots::Bundled);
/// let tls = TlsConfig::new().roots(TlsRoots::Platform);
/// assert_eq!(tls.selected_roots(), TlsRoots::Platform);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's root certificates, compiled into the program (the
    /// `webpki-roots` crate): the same on every machine, whatever the machine
    /// itself trusts.
    #[default]
    Bundled,
    /// The operating system's certificate verifier and trust store (the
    /// `rustls-platform-verifier` crate), so a CA that an administrator added
    /// to the system store is trusted. On Linux that is the store OpenSSL
    /// uses, and `SSL_CERT_FILE` and `SSL_CERT_DIR` apply. Needs the
    /// `platform-verifier` feature (the `cli` feature turns it on); without
    /// it, building the dispatcher fails with [`BuildError::Tls`](crate::BuildError::Tls)
    /// holding [`TlsConfigError::PlatformUnavailable`].
    Platform,
}

/// HTTPS settings for a [`Dispatcher`](crate::Dispatcher): the trust roots,
/// extra CA certificates, and a client certificate for mutual TLS. Given to
/// [`DispatcherBuilder::tls`](crate::DispatcherBuilder::tls).
///
/// PEM is parsed, and a client key checked against its certificate, as each
/// setting is added; the trust store itself is loaded when the dispatcher is
/// built. Neither `Debug` nor any error shows a key.
///
/// # Examples
///
/// ```no_run
/// use hookpool::{Dispatcher, TlsConfig, TlsRoots};
///
/// let tls = TlsConfig::new()
///     .roots(TlsRoots::Platform)                        // default: TlsRoots::Bundled
///     .add_root_certificates_file("internal-ca.pem")?   // also trusted
///     .client_certificate_files("client.pem", "client.key")?;
/// assert!(tls.has_client_certificate());
/// let hooks = Dispatcher::builder().tls(tls).build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    roots: TlsRoots,
    extra_roots: Vec<CertificateDer<'static>>,
    identity: Option<Identity>,
}

/// A client certificate chain and its private key.
#[derive(Clone)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots)
            .field("extra_roots", &self.extra_roots.len())
            .field(
                "client_certificates",
                &self.identity.as_ref().map_or(0, |id| id.chain.len()),
            )
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The defaults: [`TlsRoots::Bundled`], no extra CA, no client
    /// certificate.
    ///
    /// # Examples
    ///
    /// ```
    /// let tls = hookpool::TlsConfig::new();
    /// assert_eq!(tls.selected_roots(), hookpool::TlsRoots::Bundled);
    /// assert_eq!(tls.extra_root_count(), 0);
    /// assert!(!tls.has_client_certificate());
    /// ```
    pub fn new() -> Self {
        TlsConfig::default()
    }

    /// Which trust roots verify a receiver's certificate. Defaults to
    /// [`TlsRoots::Bundled`].
    ///
    /// # Examples
    ///
    /// ```
    /// use hookpool::{TlsConfig, TlsRoots};
    /// assert_eq!(TlsConfig::new().roots(TlsRoots::Platform).selected_roots(), TlsRoots::Platform);
    /// ```
    pub fn roots(mut self, roots: TlsRoots) -> Self {
        self.roots = roots;
        self
    }

    /// The trust roots chosen with [`roots`](Self::roots).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::TlsConfig::new().selected_roots(), hookpool::TlsRoots::Bundled);
    /// ```
    pub fn selected_roots(&self) -> TlsRoots {
        self.roots
    }

    /// Trusts every CA certificate in `pem` (one or more `CERTIFICATE`
    /// blocks; other blocks are skipped) as well as the chosen roots. Call it
    /// again to add more. Defaults to none.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError::Certificate`] if `pem` holds no certificate, is not
    /// valid PEM, or holds a certificate that cannot be a trust root.
    ///
    /// # Examples
    ///
    /// ```
    /// # let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()])?;
    /// # let ca_pem = ca.cert.pem();
    /// // ca_pem: "-----BEGIN CERTIFICATE-----\n..."
    /// let tls = hookpool::TlsConfig::new().add_root_certificates_pem(ca_pem.as_bytes())?;
    /// assert_eq!(tls.extra_root_count(), 1);
    /// assert!(hookpool::TlsConfig::new().add_root_certificates_pem(b"not pem").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_root_certificates_pem(self, pem: &[u8]) -> Result<Self, TlsConfigError> {
        self.add_roots(pem, "root certificate pem")
    }

    /// Like [`add_root_certificates_pem`](Self::add_root_certificates_pem),
    /// reading the PEM from a file (`curl --cacert` takes the same files).
    ///
    /// # Errors
    ///
    /// [`TlsConfigError::Read`] if the file cannot be read, else as
    /// [`add_root_certificates_pem`](Self::add_root_certificates_pem); every
    /// message names the file.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let tls = hookpool::TlsConfig::new().add_root_certificates_file("/etc/internal/ca.pem")?;
    /// assert_eq!(tls.extra_root_count(), 1);
    /// # Ok::<(), hookpool::TlsConfigError>(())
    /// ```
    pub fn add_root_certificates_file(
        self,
        path: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let path = path.as_ref();
        let pem = read(path)?;
        self.add_roots(&pem, &path.display().to_string())
    }

    /// How many CA certificates were added to the trust roots.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(hookpool::TlsConfig::new().extra_root_count(), 0);
    /// ```
    pub fn extra_root_count(&self) -> usize {
        self.extra_roots.len()
    }

    /// The client certificate for receivers that require one (mutual TLS):
    /// `chain_pem` holds the certificate, then any intermediates; `key_pem`
    /// its private key (PKCS#8, PKCS#1 or SEC1). Both may be the same PEM.
    /// One identity serves every endpoint; setting it again replaces it.
    /// Defaults to none.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError::Certificate`] or [`TlsConfigError::PrivateKey`] if
    /// either is missing or unusable, and [`TlsConfigError::KeyMismatch`] if
    /// the key is not the certificate's. No message shows the key.
    ///
    /// # Examples
    ///
    /// ```
    /// # let me = rcgen::generate_simple_self_signed(vec!["client.test".into()])?;
    /// # let other = rcgen::generate_simple_self_signed(vec!["other.test".into()])?;
    /// # let (cert_pem, key_pem) = (me.cert.pem(), me.signing_key.serialize_pem());
    /// # let other_key_pem = other.signing_key.serialize_pem();
    /// let tls = hookpool::TlsConfig::new()
    ///     .client_certificate_pem(cert_pem.as_bytes(), key_pem.as_bytes())?;
    /// assert!(tls.has_client_certificate());
    ///
    /// let err = hookpool::TlsConfig::new()
    ///     .client_certificate_pem(cert_pem.as_bytes(), other_key_pem.as_bytes())
    ///     .unwrap_err();
    /// assert!(matches!(err, hookpool::TlsConfigError::KeyMismatch { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_certificate_pem(
        self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsConfigError> {
        self.identity(
            chain_pem,
            "client certificate pem",
            key_pem,
            "client key pem",
        )
    }

    /// Like [`client_certificate_pem`](Self::client_certificate_pem),
    /// reading the chain and the key from files (`curl --cert --key`
    /// takes the same files).
    ///
    /// # Errors
    ///
    /// [`TlsConfigError::Read`] if a file cannot be read, else as
    /// [`client_certificate_pem`](Self::client_certificate_pem); every
    /// message names the file.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let tls = hookpool::TlsConfig::new().client_certificate_files("client.pem", "client.key")?;
    /// assert!(tls.has_client_certificate());
    /// # Ok::<(), hookpool::TlsConfigError>(())
    /// ```
    pub fn client_certificate_files(
        self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        let (chain_pem, key_pem) = (read(chain)?, read(key)?);
        self.identity(
            &chain_pem,
            &chain.display().to_string(),
            &key_pem,
            &key.display().to_string(),
        )
    }

    /// Whether a client certificate is set.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!hookpool::TlsConfig::new().has_client_certificate());
    /// ```
    pub fn has_client_certificate(&self) -> bool {
        self.identity.is_some()
    }

    fn add_roots(mut self, pem: &[u8], origin: &str) -> Result<Self, TlsConfigError> {
        let certs = certificates(pem, origin)?;
        // Checked now, so a bad CA names its origin; the store is built later.
        let mut check = RootCertStore::empty();
        for cert in &certs {
            check
                .add(cert.clone())
                .map_err(|e| TlsConfigError::certificate(origin, e))?;
        }
        self.extra_roots.extend(certs);
        Ok(self)
    }

    fn identity(
        mut self,
        chain_pem: &[u8],
        chain_origin: &str,
        key_pem: &[u8],
        key_origin: &str,
    ) -> Result<Self, TlsConfigError> {
        let chain = certificates(chain_pem, chain_origin)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsConfigError::private_key(key_origin, e))?;
        // The same check rustls makes when the config is built, made now so
        // that it names the files.
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
            .map_err(|e| error::identity_error(e, chain_origin, key_origin))?;
        self.identity = Some(Identity {
            chain,
            key: Arc::new(key),
        });
        Ok(self)
    }

    /// The rustls configuration every connection of one dispatcher shares.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, TlsConfigError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::verifier)?;
        let builder = match self.roots {
            TlsRoots::Bundled => {
                let mut store = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                for cert in &self.extra_roots {
                    store
                        .add(cert.clone())
                        .map_err(|e| TlsConfigError::certificate("root certificate", e))?;
                }
                builder.with_root_certificates(store)
            }
            TlsRoots::Platform => {
                let verifier = platform_verifier(&self.extra_roots, provider)?;
                // "dangerous" only in name: this is rustls's one way to plug
                // in a verifier, and the platform's verifies fully.
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
            }
        };
        let config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| error::identity_error(e, "client certificate", "client key"))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// The process-wide rustls provider if the program installed one, else ring
/// (the one ureq's `rustls` feature compiles in).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block in `pem`; at least one.
fn certificates(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::certificate(origin, e))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Certificate {
            origin: origin.to_owned(),
            source: None,
        });
    }
    Ok(certs)
}

#[cfg(feature = "platform-verifier")]
fn platform_verifier(
    extra: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, TlsConfigError> {
    #[cfg(not(target_os = "android"))]
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra.iter().cloned(), provider);
    #[cfg(target_os = "android")]
    let verifier = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider)
    } else {
        return Err(TlsConfigError::Verifier {
            source: Some("extra roots cannot join the platform verifier on Android".into()),
        });
    };
    Ok(Arc::new(verifier.map_err(TlsConfigError::verifier)?))
}

#[cfg(not(feature = "platform-verifier"))]
fn platform_verifier(
    _extra: &[CertificateDer<'static>],
    _provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, TlsConfigError> {
    Err(TlsConfigError::PlatformUnavailable)
}

#[cfg(test)]
mod tests;
