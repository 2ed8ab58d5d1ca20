//! Point 3: each failure gives its documented error and is retried or not
//! as documented: an expired certificate is retried (and a certificate
//! renewed between attempts gets the webhook), a wrong host name is not,
//! and a bad key file is refused before anything starts, naming the file.

use std::time::Duration;

use hookpool::{
    DeadLetterReason, ManualClock, MemoryDeadLetters, RetryPolicy, TlsConfig, TlsConfigError,
    Webhook,
};

use crate::common::wait_until;
use crate::pki::{Ca, server_config};
use crate::receiver::TlsReceiver;
use crate::{BOUND, TempDir, builder, deliver, trusting};

#[test]
fn an_expired_certificate_is_retried_until_the_attempts_run_out() {
    let ca = Ca::new("expired ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue_expired(&["localhost"]), None));
    let outcome = deliver(
        "expired",
        trusting(&ca),
        &receiver.url("localhost", "/h"),
        1,
    );
    let letter = outcome.letter();
    assert!(
        letter.error.starts_with(
            "tls: certificate expired or not yet valid (invalid peer certificate: certificate expired"
        ),
        "{}",
        letter.error
    );
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.attempts, 3);
    assert_eq!(receiver.refused().len(), 3);
}

#[test]
fn a_certificate_renewed_between_attempts_gets_the_webhook() {
    let ca = Ca::new("renewal ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue_expired(&["localhost"]), None));
    let clock = ManualClock::new();
    let letters = MemoryDeadLetters::new();
    let hooks = builder("renewed", trusting(&ca))
        .clock(clock.clone())
        .retry(
            RetryPolicy::exponential(Duration::from_secs(60))
                .jitter(false)
                .max_attempts(2),
        )
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let hook = Webhook::new(&receiver.url("localhost", "/h"), &1).unwrap();
    hooks.send_timeout(hook, BOUND).unwrap();
    assert!(wait_until(BOUND, || hooks.stats().waiting_retries == 1));
    assert_eq!(receiver.refused().len(), 1);

    // The receiver renews its certificate; a minute later the retry is due.
    receiver.set_config(server_config(&ca.issue(&["localhost"]), None));
    clock.advance(Duration::from_secs(61));
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 1, "{:?}", letters.letters());
    assert_eq!(receiver.requests().len(), 1);
}

#[test]
fn a_wrong_host_name_is_a_name_mismatch_and_not_retried() {
    let ca = Ca::new("name ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["other.test"]), None));
    let outcome = deliver(
        "wrong-name",
        trusting(&ca),
        &receiver.url("localhost", "/h"),
        1,
    );
    let letter = outcome.letter();
    assert!(
        letter.error.starts_with(
            "tls: certificate name mismatch (invalid peer certificate: certificate not valid for name \"localhost\""
        ),
        "{}",
        letter.error
    );
    assert!(letter.error.contains("other.test"), "{}", letter.error);
    assert_eq!(letter.reason, DeadLetterReason::PermanentFailure);
    assert_eq!(letter.attempts, 1);
}

#[test]
fn bad_key_files_are_refused_naming_the_file() {
    let ca = Ca::new("key ca");
    let (mine, other) = (ca.issue(&["client.test"]), ca.issue(&["client.test"]));
    let dir = TempDir::new("bad-keys");
    let cert = dir.write("client.pem", &mine.cert_pem);
    let other_key = dir.write("other.key", &other.key_pem);
    let not_a_key = dir.write("not-a.key", "hello\n");
    let missing = dir.path("missing.key");

    let err = TlsConfig::new()
        .client_certificate_files(&cert, &other_key)
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::KeyMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the private key in {} does not match the certificate in {}",
            other_key.display(),
            cert.display()
        )
    );

    let err = TlsConfig::new()
        .client_certificate_files(&cert, &not_a_key)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: no usable private key", not_a_key.display())
    );

    let err = TlsConfig::new()
        .client_certificate_files(&cert, &missing)
        .unwrap_err();
    assert!(matches!(err, TlsConfigError::Read { ref path, .. } if *path == missing));
    assert_eq!(
        err.to_string(),
        format!("cannot read {}", missing.display())
    );

    // The same errors reach `build` callers through `?`.
    let build = || -> Result<hookpool::Dispatcher, hookpool::BuildError> {
        let tls = TlsConfig::new().client_certificate_files(&cert, &other_key)?;
        builder("never", tls).build()
    };
    assert!(matches!(
        build(),
        Err(hookpool::BuildError::Tls(
            TlsConfigError::KeyMismatch { .. }
        ))
    ));
}

#[test]
fn no_key_material_is_logged_at_any_level() {
    crate::common::logger::install();
    let (server_ca, clients) = (Ca::new("log server ca"), Ca::new("log client ca"));
    let receiver = TlsReceiver::start(server_config(
        &server_ca.issue(&["localhost"]),
        Some(&clients),
    ));
    let me = clients.issue(&["hookpool.test"]);
    let tls = trusting(&server_ca)
        .client_certificate_pem(me.cert_pem.as_bytes(), me.key_pem.as_bytes())
        .unwrap();
    let outcome = deliver("tls-logs", tls, &receiver.url("localhost", "/h"), 2);
    assert_eq!(outcome.delivered, 2);
    let logged = crate::common::logger::all_lines();
    assert!(
        logged.iter().any(|l| l.message.contains("tls-logs")),
        "the capture works"
    );
    for line in me.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            logged.iter().all(|l| !l.message.contains(line)),
            "a line of the key was logged"
        );
    }
}
