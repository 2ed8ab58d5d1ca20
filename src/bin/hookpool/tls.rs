//! `--cacert`, `--tls-roots`, `--cert` and `--key`: HTTPS settings for
//! `send` and `replay`.

use std::path::PathBuf;

use hookpool::{TlsConfig, TlsRoots};

use crate::UsageError;

/// HTTPS flags shared by `send` and `replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// Also trust the CA certificates in FILE (PEM) for https URLs; repeat it for more files
    #[arg(long = "cacert", value_name = "FILE")]
    cacerts: Vec<PathBuf>,
    /// Which CAs https receivers may chain to: bundled (Mozilla's, built in) or platform (the
    /// system's verifier and trust store; on Linux SSL_CERT_FILE and SSL_CERT_DIR apply)
    #[arg(long, value_name = "ROOTS", value_enum, default_value_t = Roots::Bundled)]
    tls_roots: Roots,
    /// Client certificate for receivers that require one (mutual TLS): PEM, the certificate
    /// first, then any intermediates; needs --key
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM: PKCS#8, PKCS#1 or SEC1); may be the same file
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Roots {
    Bundled,
    Platform,
}

impl TlsArgs {
    /// The settings, with every file read and checked. Errors name the file.
    pub(crate) fn config(&self) -> Result<TlsConfig, UsageError> {
        let roots = match self.tls_roots {
            Roots::Bundled => TlsRoots::Bundled,
            Roots::Platform => TlsRoots::Platform,
        };
        let mut tls = TlsConfig::new().roots(roots);
        for file in &self.cacerts {
            tls = tls
                .add_root_certificates_file(file)
                .map_err(|e| UsageError::with_causes("--cacert", &e))?;
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls
                .client_certificate_files(cert, key)
                .map_err(|e| UsageError::with_causes("--cert/--key", &e))?;
        }
        Ok(tls)
    }
}
