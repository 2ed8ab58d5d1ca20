//! The TLS settings, the error mapping, and (issue 19, point 4) the
//! private-network guard pinning a connection while TLS still checks the
//! URL's host name. The receiver and the certificates are the integration
//! tests' own, included by path.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use rustls::{AlertDescription, CertificateError};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};

use super::*;
use crate::webhook::Webhook;
use crate::webhook::resolve::GuardedResolver;
use crate::webhook::send::{Attempt, HttpSender, SendConfig};
use crate::{DeliveryError, Retryability};

#[path = "../../../tests/tls/pki.rs"]
mod pki;
#[path = "../../../tests/tls/receiver.rs"]
mod receiver;

use pki::{Ca, server_config};
use receiver::TlsReceiver;

#[test]
fn rustls_errors_map_to_kinds() {
    use rustls::Error as E;
    let cases = [
        (
            E::InvalidCertificate(CertificateError::UnknownIssuer),
            TlsErrorKind::UnknownIssuer,
        ),
        (
            E::InvalidCertificate(CertificateError::Expired),
            TlsErrorKind::Expired,
        ),
        (
            E::InvalidCertificate(CertificateError::NotValidYet),
            TlsErrorKind::Expired,
        ),
        (
            E::InvalidCertificate(CertificateError::NotValidForName),
            TlsErrorKind::NameMismatch,
        ),
        (
            E::InvalidCertificate(CertificateError::Revoked),
            TlsErrorKind::InvalidCertificate,
        ),
        (
            E::AlertReceived(AlertDescription::CertificateRequired),
            TlsErrorKind::ClientCertificateRequired,
        ),
        (
            E::AlertReceived(AlertDescription::UnknownCA),
            TlsErrorKind::ClientCertificateRejected,
        ),
        (
            E::AlertReceived(AlertDescription::BadCertificate),
            TlsErrorKind::ClientCertificateRejected,
        ),
        (
            E::AlertReceived(AlertDescription::ProtocolVersion),
            TlsErrorKind::Handshake,
        ),
        (E::DecryptError, TlsErrorKind::Handshake),
    ];
    for (error, kind) in cases {
        assert_eq!(TlsErrorKind::of(&error), kind, "{error}");
    }
}

#[test]
fn tls_errors_are_found_inside_ureq_errors() {
    let wrapped = ureq::Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    ));
    let (kind, detail) = failure(&wrapped).unwrap();
    assert_eq!(kind, TlsErrorKind::UnknownIssuer);
    assert!(detail.contains("UnknownIssuer"), "{detail}");
    let direct = ureq::Error::Rustls(rustls::Error::AlertReceived(
        AlertDescription::CertificateRequired,
    ));
    assert_eq!(
        failure(&direct).unwrap().0,
        TlsErrorKind::ClientCertificateRequired
    );
    let plain = ureq::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    assert!(failure(&plain).is_none());
    assert!(failure(&ureq::Error::ConnectionFailed).is_none());
}

#[test]
fn only_expired_and_handshake_failures_are_retried() {
    for kind in [
        TlsErrorKind::UnknownIssuer,
        TlsErrorKind::Expired,
        TlsErrorKind::NameMismatch,
        TlsErrorKind::InvalidCertificate,
        TlsErrorKind::ClientCertificateRequired,
        TlsErrorKind::ClientCertificateRejected,
        TlsErrorKind::Handshake,
    ] {
        let retried = matches!(kind, TlsErrorKind::Expired | TlsErrorKind::Handshake);
        assert_eq!(kind.is_retried(), retried, "{kind}");
    }
}

#[test]
fn debug_and_errors_never_show_the_key() {
    let ca = Ca::new("debug ca");
    let leaf = ca.issue(&["client.test"]);
    let tls = TlsConfig::new()
        .add_root_certificates_pem(ca.pem.as_bytes())
        .unwrap()
        .client_certificate_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes())
        .unwrap();
    let debug = format!("{tls:?}");
    assert_eq!(
        debug,
        "TlsConfig { roots: Bundled, extra_roots: 1, client_certificates: 1, .. }"
    );
    let builder = crate::Dispatcher::builder().tls(tls);
    let key_body = leaf.key_pem.lines().nth(1).unwrap();
    assert!(!format!("{builder:?}").contains(key_body));

    // A key file that is a certificate, and a key that is not base64.
    let err = TlsConfig::new()
        .client_certificate_pem(leaf.cert_pem.as_bytes(), leaf.cert_pem.as_bytes())
        .unwrap_err();
    assert_eq!(err.to_string(), "client key pem: no usable private key");
    let garbled = leaf.key_pem.replace(key_body, &key_body.replace('A', "!"));
    let err = TlsConfig::new()
        .client_certificate_pem(leaf.cert_pem.as_bytes(), garbled.as_bytes())
        .unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| format!("{e} {e:?}"))
        .collect::<String>();
    assert!(!chain.contains(key_body), "{chain}");
}

#[test]
fn a_bad_root_is_refused_when_added() {
    let err = TlsConfig::new()
        .add_root_certificates_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
    assert!(
        matches!(err, TlsConfigError::Certificate { ref origin, source: Some(_) } if origin == "root certificate pem"),
        "{err:?}"
    );
    let err = TlsConfig::new().add_root_certificates_pem(b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "root certificate pem: no usable certificate"
    );
}

#[cfg(not(feature = "platform-verifier"))]
#[test]
fn platform_roots_need_the_feature() {
    let err = TlsConfig::new()
        .roots(TlsRoots::Platform)
        .client_config()
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::PlatformUnavailable));
}

/// Resolves every host to the same addresses, like a DNS answer.
#[derive(Debug)]
struct Fixed(Vec<SocketAddr>);

impl Resolver for Fixed {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        for a in &self.0 {
            addrs.push(*a);
        }
        Ok(addrs)
    }
}

/// 10/8 stands for the private ranges; loopback is allowed only here, so a
/// receiver on 127.0.0.1 can stand for a public one.
fn ten_is_private(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 10)
}

fn guarded_sender(addrs: Vec<SocketAddr>, tls: &TlsConfig) -> HttpSender {
    HttpSender::new(SendConfig {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        max_response_body: 1024,
        secrets: Vec::new(),
        resolver: Some(GuardedResolver::with(Fixed(addrs), ten_is_private)),
        workers: 1,
        tls: tls.client_config().unwrap(),
    })
}

#[test]
fn the_guard_pins_the_address_and_tls_still_checks_the_host_name() {
    let ca = Ca::new("pinning ca");
    let tls = TlsConfig::new()
        .add_root_certificates_pem(ca.pem.as_bytes())
        .unwrap();
    let right = TlsReceiver::start(server_config(&ca.issue(&["webhook.test"]), None));
    // "webhook.test" resolves to a private address (dropped by the guard)
    // and to the receiver; only the receiver is connected to.
    let addrs = |port| {
        vec![
            SocketAddr::from(([10, 1, 2, 3], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ]
    };
    let sender = guarded_sender(addrs(right.port()), &tls);
    let hook = Webhook::new(&right.url("webhook.test", "/h"), &1).unwrap();
    match sender.send(&hook, SystemTime::now()) {
        Attempt::Delivered { status } => assert_eq!(status, 204),
        Attempt::Failed(f) => panic!("not delivered: {}", f.error),
    }
    let seen = right.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some("webhook.test"));

    // The same pinned address serving a certificate for another name.
    let wrong = TlsReceiver::start(server_config(&ca.issue(&["other.test"]), None));
    let sender = guarded_sender(addrs(wrong.port()), &tls);
    let hook = Webhook::new(&wrong.url("webhook.test", "/h"), &1).unwrap();
    match sender.send(&hook, SystemTime::now()) {
        Attempt::Failed(f) => {
            assert!(
                matches!(
                    f.error,
                    DeliveryError::Tls {
                        kind: TlsErrorKind::NameMismatch,
                        ..
                    }
                ),
                "{}",
                f.error
            );
            assert!(f.error.to_string().contains("webhook.test"), "{}", f.error);
            assert_eq!(f.retry, Retryability::Permanent);
        }
        Attempt::Delivered { .. } => panic!("delivered to a certificate for another name"),
    }
    assert!(wrong.requests().is_empty());

    // And the guard is still the guard: only private addresses, refused.
    let sender = guarded_sender(vec![SocketAddr::from(([10, 1, 2, 3], 443))], &tls);
    let hook = Webhook::new("https://webhook.test/h", &1).unwrap();
    match sender.send(&hook, SystemTime::now()) {
        Attempt::Failed(f) => assert!(matches!(f.error, DeliveryError::Blocked(_)), "{}", f.error),
        Attempt::Delivered { .. } => panic!("a private address was reached"),
    }
}

#[test]
fn a_key_from_another_certificate_is_refused_naming_both() {
    let ca = Ca::new("identity ca");
    let (mine, other) = (ca.issue(&["client.test"]), ca.issue(&["client.test"]));
    let err = TlsConfig::new()
        .client_certificate_pem(mine.cert_pem.as_bytes(), other.key_pem.as_bytes())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the private key in client key pem does not match the certificate in client certificate pem"
    );
    let config = TlsConfig::new()
        .client_certificate_pem(mine.cert_pem.as_bytes(), mine.key_pem.as_bytes())
        .unwrap()
        .client_config()
        .unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    let none = TlsConfig::new().client_config().unwrap();
    assert!(!none.client_auth_cert_resolver.has_certs());
}
