//! The tokio + reqwest variant of hookpool's delivery benchmark. Run by
//! `benches/delivery.rs`, which passes the same flags as to its own children
//! and reads the `RESULT {json}` line this prints.
//!
//! Two ways to bound concurrency at `W`, both idiomatic:
//! - `tokio-mpsc`: a bounded `mpsc` channel of capacity `W` feeding `W`
//!   worker tasks, the same shape as hookpool's dispatcher (W workers, a
//!   queue of W).
//! - `tokio-semaphore`: a `Semaphore` with `W` permits and a task spawned per
//!   webhook.
//!
//! Both share one `reqwest::Client` keeping up to `W` idle keep-alive
//! connections, like the dispatcher's ureq agent. For https URLs it trusts
//! the `--cacert` file, through a rustls configuration on ring like
//! hookpool's.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::{Mutex, Semaphore, mpsc};

// The same measurement code as the other variants: one file, compiled here by path.
#[path = "../../loopback/measure.rs"]
mod measure;
use measure::{BODY, ChildArgs, Tracker, cpu_time_ms, peak_rss_kib, quantile};

/// Waits (bounded) until `count` webhooks have finished.
async fn wait_for(t: &Tracker, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while t.finished_count() < count {
        assert!(
            Instant::now() < deadline,
            "webhooks did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

enum Intake {
    Mpsc(mpsc::Sender<usize>),
    Semaphore(Arc<Semaphore>),
}

struct Bench {
    client: reqwest::Client,
    url: Arc<str>,
    tracker: Arc<Tracker>,
    intake: Intake,
}

impl Bench {
    async fn submit(&self, i: usize) {
        self.tracker.submitted(i);
        match &self.intake {
            Intake::Mpsc(tx) => tx.send(i).await.expect("workers alive"),
            Intake::Semaphore(sem) => {
                let permit = Arc::clone(sem).acquire_owned().await.expect("open");
                let (client, url, tracker) = (
                    self.client.clone(),
                    Arc::clone(&self.url),
                    Arc::clone(&self.tracker),
                );
                tokio::spawn(async move {
                    let ok = post(&client, &url, i).await;
                    tracker.finished(i, ok);
                    drop(permit);
                });
            }
        }
    }
}

/// One POST with the headers the dispatcher sends (unsigned); the body is
/// read so the connection goes back to the pool.
async fn post(client: &reqwest::Client, url: &str, i: usize) -> bool {
    let timestamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", format!("b{i}"))
        .header("webhook-timestamp", timestamp.to_string())
        .body(BODY)
        .send()
        .await;
    match sent {
        Ok(response) => {
            let ok = response.status().is_success();
            let _ = response.bytes().await;
            ok
        }
        Err(_) => false,
    }
}

/// Trusts the CA certificates in the PEM file `ca`, and nothing else.
fn tls_config(ca: &str) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("--cacert") {
        roots.add(cert.expect("ca pem")).expect("ca certificate");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = ChildArgs::parse(&args);
    let total = a.warmup + a.n + a.paced;
    let tracker = Arc::new(Tracker::new(total));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = &a.cacert {
        builder = builder.tls_backend_preconfigured(tls_config(ca));
    }
    let client = builder
        .pool_max_idle_per_host(a.concurrency)
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent("tokio-reqwest")
        .build()
        .expect("client");
    let url: Arc<str> = a.url.as_str().into();
    let mut workers = Vec::new();
    let intake = match a.variant.as_str() {
        "tokio-mpsc" => {
            let (tx, rx) = mpsc::channel::<usize>(a.concurrency);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..a.concurrency {
                let (rx, client, url, tracker) = (
                    Arc::clone(&rx),
                    client.clone(),
                    Arc::clone(&url),
                    Arc::clone(&tracker),
                );
                workers.push(tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(i) = next else { break };
                        let ok = post(&client, &url, i).await;
                        tracker.finished(i, ok);
                    }
                }));
            }
            Intake::Mpsc(tx)
        }
        "tokio-semaphore" => Intake::Semaphore(Arc::new(Semaphore::new(a.concurrency))),
        other => panic!("unknown variant {other}"),
    };
    let bench = Bench {
        client,
        url,
        tracker: Arc::clone(&tracker),
        intake,
    };

    for i in 0..a.warmup {
        bench.submit(i).await;
    }
    wait_for(&tracker, a.warmup).await;

    let cpu0 = cpu_time_ms();
    let t0 = Instant::now();
    for i in a.warmup..a.warmup + a.n {
        bench.submit(i).await;
    }
    wait_for(&tracker, a.warmup + a.n).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_ms = cpu_time_ms() - cpu0;
    let lat = tracker.latencies_ms(a.warmup..a.warmup + a.n);

    // Paced phase: every millisecond, submit what is due by then.
    let start = a.warmup + a.n;
    let p0 = Instant::now();
    let limit = Duration::from_secs_f64(a.paced as f64 / a.rate) + Duration::from_secs(120);
    let mut next = 0;
    while next < a.paced {
        assert!(p0.elapsed() < limit, "the paced phase overran {limit:?}");
        let due = (p0.elapsed().as_secs_f64() * a.rate) as usize + 1;
        while next < a.paced.min(due) {
            bench.submit(start + next).await;
            next += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_for(&tracker, start + a.paced).await;
    let paced = tracker.latencies_ms(start..start + a.paced);

    drop(bench);
    for w in workers {
        let _ = w.await;
    }
    let result = json!({
        "variant": a.variant,
        "concurrency": a.concurrency,
        "n": a.n,
        "failed": tracker.failed_count(),
        "secs": secs,
        "per_sec": a.n as f64 / secs,
        "p50_ms": quantile(&lat, 0.50),
        "p99_ms": quantile(&lat, 0.99),
        "cpu_ms": cpu_ms,
        "cpu_us_per_webhook": cpu_ms * 1000.0 / a.n as f64,
        "paced_rate": a.rate,
        "paced_n": a.paced,
        "paced_p50_ms": quantile(&paced, 0.50),
        "paced_p99_ms": quantile(&paced, 0.99),
        "peak_rss_kib": peak_rss_kib(),
        "runtime_workers": tokio::runtime::Handle::current().metrics().num_workers(),
    });
    println!("RESULT {result}");
}
