//! Point 2: client certificates. A receiver that requires one from its
//! client CA gets the right one; without one, or with one from another CA,
//! the webhook is dead-lettered with a clear error, at once.

use hookpool::DeadLetterReason;

use crate::pki::{Ca, server_config};
use crate::receiver::TlsReceiver;
use crate::{deliver, trusting};

/// A receiver requiring client certificates from `clients`.
fn strict_receiver(server_ca: &Ca, clients: &Ca) -> TlsReceiver {
    TlsReceiver::start(server_config(
        &server_ca.issue(&["localhost"]),
        Some(clients),
    ))
}

#[test]
fn the_right_client_certificate_is_accepted() {
    let (server_ca, clients) = (Ca::new("server ca"), Ca::new("client ca"));
    let receiver = strict_receiver(&server_ca, &clients);
    let me = clients.issue(&["hookpool.test"]);
    let tls = trusting(&server_ca)
        .client_certificate_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes())
        .unwrap();
    let outcome = deliver("mtls-ok", tls, &receiver.url("localhost", "/h"), 3);
    assert_eq!(outcome.delivered, 3, "{:?}", outcome.letters);
    assert!(receiver.requests().iter().all(|r| r.client_certificate));
}

#[test]
fn no_client_certificate_is_refused_as_required() {
    let (server_ca, clients) = (Ca::new("server ca"), Ca::new("client ca"));
    let receiver = strict_receiver(&server_ca, &clients);
    let outcome = deliver(
        "mtls-none",
        trusting(&server_ca),
        &receiver.url("localhost", "/h"),
        1,
    );
    let letter = outcome.letter();
    assert_eq!(
        letter.error,
        "tls: client certificate required (received fatal alert: CertificateRequired)"
    );
    assert_eq!(letter.reason, DeadLetterReason::PermanentFailure);
    assert_eq!(letter.attempts, 1);
    assert!(receiver.requests().is_empty());
}

#[test]
fn a_client_certificate_from_another_ca_is_refused_as_rejected() {
    let (server_ca, clients, stranger) = (
        Ca::new("server ca"),
        Ca::new("client ca"),
        Ca::new("stranger ca"),
    );
    let receiver = strict_receiver(&server_ca, &clients);
    let me = stranger.issue(&["hookpool.test"]);
    let tls = trusting(&server_ca)
        .client_certificate_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes())
        .unwrap();
    let outcome = deliver("mtls-stranger", tls, &receiver.url("localhost", "/h"), 1);
    let letter = outcome.letter();
    assert_eq!(
        letter.error,
        "tls: client certificate rejected (received fatal alert: UnknownCA)"
    );
    assert_eq!(letter.reason, DeadLetterReason::PermanentFailure);
    assert_eq!(letter.attempts, 1);
    assert!(receiver.requests().is_empty());
    assert!(
        receiver.refused()[0].contains("UnknownIssuer"),
        "{:?}",
        receiver.refused()
    );
}
