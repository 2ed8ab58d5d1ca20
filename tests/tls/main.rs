//! HTTPS (issue 19) against a real TLS receiver on 127.0.0.1, with
//! certificates made by the tests (rcgen): trust roots, client certificates,
//! the errors and whether they are retried, keep-alive, and the CLI flags.
//! Point 4 (the private-network guard still checks the host name) needs the
//! guard to allow loopback, so it is a unit test in `src/webhook/tls/tests.rs`.

#[path = "../common/mod.rs"]
mod common;
mod pki;
mod receiver;

mod cli;
mod connections;
mod failures;
mod mtls;
mod trust;

use std::time::Duration;

use hookpool::{
    BreakerConfig, DeadLetter, Dispatcher, DispatcherBuilder, MemoryDeadLetters, RetryPolicy,
    TlsConfig, Webhook,
};

/// The longest any wait in these tests lasts.
const BOUND: Duration = Duration::from_secs(20);

/// A dispatcher for tests: short timeouts, three quick attempts, no breaker.
fn builder(name: &str, tls: TlsConfig) -> DispatcherBuilder {
    Dispatcher::builder()
        .name(name)
        .workers(2)
        .breaker(BreakerConfig::disabled())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(5))
                .jitter(false)
                .max_attempts(3),
        )
        .tls(tls)
}

/// What became of the webhooks sent by [`deliver`].
struct Outcome {
    delivered: u64,
    letters: Vec<DeadLetter>,
}

impl Outcome {
    /// The only dead letter.
    fn letter(&self) -> &DeadLetter {
        assert_eq!(self.letters.len(), 1, "{:?}", self.letters);
        &self.letters[0]
    }
}

/// Sends `n` webhooks to `url` and shuts down, which waits for each to be
/// delivered or dead-lettered.
fn deliver(name: &str, tls: TlsConfig, url: &str, n: u64) -> Outcome {
    let letters = MemoryDeadLetters::new();
    let hooks = builder(name, tls)
        .dead_letters(letters.clone())
        .build()
        .expect("dispatcher");
    for i in 0..n {
        let hook = Webhook::new(url, &serde_json::json!({ "n": i })).unwrap();
        hooks.send_timeout(hook, BOUND).expect("queued");
    }
    let report = hooks.shutdown();
    assert_eq!(report.stats.accepted, n);
    Outcome {
        delivered: report.stats.delivered,
        letters: letters.take(),
    }
}

/// A TLS configuration trusting `ca` as well as the bundled roots.
fn trusting(ca: &pki::Ca) -> TlsConfig {
    TlsConfig::new()
        .add_root_certificates_pem(ca.pem.as_bytes())
        .expect("ca pem")
}

/// A fresh directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hookpool-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `file` in the directory; returns its path.
    fn write(&self, file: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
