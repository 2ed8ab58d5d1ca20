//! Keep-alive over TLS: connections are reused by every worker, and the
//! signatures verify exactly as over plain HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use hookpool::{MemoryDeadLetters, SigningSecret, Webhook, verify};

use crate::pki::{Ca, server_config};
use crate::receiver::TlsReceiver;
use crate::{BOUND, builder, trusting};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn connections_are_reused_and_signatures_verify() {
    let ca = Ca::new("keep-alive ca");
    let receiver = TlsReceiver::start(server_config(&ca.issue(&["localhost"]), None));
    let letters = MemoryDeadLetters::new();
    let hooks = builder("tls-keepalive", trusting(&ca))
        .signing_secret(SECRET)
        .unwrap()
        .dead_letters(letters.clone())
        .build()
        .unwrap();
    let url = receiver.url("localhost", "/h");
    for n in 0..60 {
        let hook = Webhook::new(&url, &serde_json::json!({ "n": n })).unwrap();
        hooks.send_timeout(hook, BOUND).unwrap();
    }
    let report = hooks.shutdown();
    assert_eq!(report.stats.delivered, 60, "{:?}", letters.letters());

    let requests = receiver.requests();
    assert_eq!(requests.len(), 60);
    // Two workers: at most two TLS connections, each carrying many webhooks.
    let conns: BTreeSet<u64> = requests.iter().map(|r| r.conn).collect();
    assert!(
        conns.len() <= 2,
        "{} connections for 60 webhooks",
        conns.len()
    );
    assert_eq!(receiver.connections(), conns.len() as u64);

    let secrets = [SigningSecret::new(SECRET).unwrap()];
    let mut bodies = BTreeSet::new();
    for r in &requests {
        let header = |name: &str| r.header(name).unwrap_or_default().to_owned();
        let verdict = verify(
            &secrets,
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &r.body,
            SystemTime::now(),
            Duration::from_secs(300),
        );
        assert_eq!(verdict, Ok(()), "{:?}", r.headers);
        bodies.insert(String::from_utf8(r.body.clone()).unwrap());
    }
    assert_eq!(bodies.len(), 60, "every body arrived whole, once");
}
