//! Point 1: trust roots. A receiver whose certificate comes from a private
//! CA is reached with that CA added, to the bundled roots or to the
//! platform's, and refused with a clear TLS error without it.

use hookpool::{DeadLetterReason, TlsConfig};

use crate::pki::{Ca, server_config};
use crate::receiver::TlsReceiver;
use crate::{deliver, trusting};

#[test]
fn a_private_ca_added_to_the_bundled_roots_is_trusted() {
    let ca = Ca::new("private ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let outcome = deliver(
        "bundled-ca",
        trusting(&ca),
        &receiver.url("localhost", "/h"),
        3,
    );
    assert_eq!(outcome.delivered, 3, "{:?}", outcome.letters);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.sni.as_deref() == Some("localhost"))
    );
}

#[test]
fn without_the_private_ca_it_is_an_unknown_issuer_and_not_retried() {
    let ca = Ca::new("unknown ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let outcome = deliver(
        "bundled-no-ca",
        TlsConfig::new(),
        &receiver.url("localhost", "/h"),
        1,
    );
    assert_eq!(outcome.delivered, 0);
    let letter = outcome.letter();
    assert!(
        letter
            .error
            .starts_with("tls: unknown issuer (invalid peer certificate: UnknownIssuer"),
        "{}",
        letter.error
    );
    assert_eq!(letter.reason, DeadLetterReason::PermanentFailure);
    assert_eq!(letter.attempts, 1);
    assert!(receiver.requests().is_empty());
    // The receiver saw our alert: the handshake, not the request, failed.
    assert_eq!(receiver.refused().len(), 1, "{:?}", receiver.refused());
}

#[test]
fn a_ca_from_another_root_does_not_help() {
    let (ca, other) = (Ca::new("real ca"), Ca::new("other ca"));
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let outcome = deliver(
        "other-ca",
        trusting(&other),
        &receiver.url("localhost", "/h"),
        1,
    );
    assert!(outcome.letter().error.starts_with("tls: unknown issuer"));
}

#[cfg(feature = "platform-verifier")]
#[test]
fn a_private_ca_added_to_the_platform_roots_is_trusted() {
    // With the CA added the platform's own store does not matter; without
    // it, see the CLI tests, which control the store through SSL_CERT_FILE.
    let ca = Ca::new("platform extra ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let tls = trusting(&ca).roots(hookpool::TlsRoots::Platform);
    let outcome = deliver("platform-ca", tls, &receiver.url("localhost", "/h"), 2);
    assert_eq!(outcome.delivered, 2, "{:?}", outcome.letters);
}

#[test]
fn ip_address_urls_are_checked_against_ip_names() {
    let ca = Ca::new("ip ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["127.0.0.1"]), None));
    let outcome = deliver("ip-url", trusting(&ca), &receiver.url("127.0.0.1", "/h"), 1);
    assert_eq!(outcome.delivered, 1, "{:?}", outcome.letters);
    // No SNI for an address.
    assert_eq!(receiver.requests()[0].sni, None);
}
