//! Sends signed webhooks to one URL and reports what happened. CI uses it
//! to have the official Standard Webhooks library verify our signatures.
//!
//! ```sh
//! cargo run --example send -- --url http://127.0.0.1:8080/hook --count 20 \
//!     --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw [--secret whsec_...]
//! ```
//!
//! Exits 0 when every webhook was delivered, 1 otherwise, 2 on bad usage.

use std::process::ExitCode;
use std::time::Duration;

use hookpool::{Dispatcher, RetryPolicy, Webhook};
use serde_json::json;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut url = None;
    let mut count = 10u32;
    let mut secrets = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match (flag.as_str(), value) {
            ("--url", Some(v)) => url = Some(v),
            ("--count", Some(v)) => match v.parse() {
                Ok(n) => count = n,
                Err(_) => return usage("--count takes a number"),
            },
            ("--secret", Some(v)) => secrets.push(v),
            _ => return usage(&format!("unexpected argument {flag:?}")),
        }
    }
    let Some(url) = url else {
        return usage("--url is required");
    };
    match run(&url, count, &secrets) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("send: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("send: {why}\nusage: send --url URL [--count N] [--secret whsec_...]...");
    ExitCode::from(2)
}

fn run(url: &str, count: u32, secrets: &[String]) -> Result<bool, Box<dyn std::error::Error>> {
    let mut builder = Dispatcher::builder()
        .name("send")
        .workers(4)
        .retry(RetryPolicy::exponential(Duration::from_millis(100)).max_attempts(3));
    for secret in secrets {
        builder = builder.signing_secret(secret)?;
    }
    let hooks = builder.build()?;
    for n in 0..count {
        // Varied bodies: nesting, unicode, escapes, numbers that are not i32.
        let payload = json!({
            "type": "entry.created",
            "n": n,
            "text": format!("entry {n}: héllo \"quoted\" \u{1F600} \\ back/slash"),
            "big": 2_432_232_314u64 + u64::from(n),
            "nested": {"list": [1, 2.5, null, true], "empty": {}},
        });
        hooks.send_timeout(Webhook::new(url, &payload)?, Duration::from_secs(30))?;
    }
    let report = hooks.shutdown_timeout(Duration::from_secs(60));
    let s = &report.stats;
    println!(
        "{}",
        json!({"accepted": s.accepted, "delivered": s.delivered, "dead_lettered": s.dead_lettered})
    );
    Ok(s.delivered == u64::from(count))
}
