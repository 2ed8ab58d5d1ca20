//! Issue 5, point 4: a 10.x target is refused with `deny_private_networks`
//! and reached without it.
//!
//! The 10.x host is our own: a network namespace this test creates, joined
//! to the host by a veth pair (10.213.N.1 here, 10.213.N.2 inside), running a
//! tiny HTTP receiver. Everything is removed when the test ends, even on a
//! panic. Creating namespaces needs root and iproute2; where that is not
//! possible the test says so and skips, unless `HOOKPOOL_REQUIRE_NETNS` is
//! set (CI sets it).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::wait_until;
use hookpool::{
    BreakerConfig, DeadLetterReason, Dispatcher, MemoryDeadLetters, RetryPolicy, Webhook,
};

const RECEIVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204)
        self.end_headers()
        print("POST", flush=True)
    def log_message(self, *args):
        pass
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace with a receiver in it; removed on drop.
struct TestHost {
    namespace: String,
    receiver: Option<Child>,
    addr: SocketAddr,
    posts: Arc<AtomicUsize>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl TestHost {
    fn start() -> Result<TestHost, String> {
        let id = std::process::id();
        let namespace = format!("hookpool-{id}");
        let subnet = id % 250;
        let (outside, inside) = (
            format!("hp{}a", id % 100_000),
            format!("hp{}b", id % 100_000),
        );
        let (outside_ip, inside_ip) = (format!("10.213.{subnet}.1"), format!("10.213.{subnet}.2"));
        ip(&["netns", "add", &namespace])?;
        // From here on, dropping the host removes the namespace (and the veth with it).
        let mut host = TestHost {
            namespace: namespace.clone(),
            receiver: None,
            addr: format!("{inside_ip}:8080").parse().unwrap(),
            posts: Arc::default(),
            reader: None,
        };
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &namespace])?;
        ip(&["addr", "add", &format!("{outside_ip}/30"), "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&[
            "netns",
            "exec",
            &namespace,
            "ip",
            "addr",
            "add",
            &format!("{inside_ip}/30"),
            "dev",
            &inside,
        ])?;
        ip(&[
            "netns", "exec", &namespace, "ip", "link", "set", &inside, "up",
        ])?;
        ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"])?;
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &namespace, "python3", "-c", RECEIVER, &inside_ip, "8080",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("receiver: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        host.receiver = Some(child);
        let posts = Arc::clone(&host.posts);
        host.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "POST" {
                    posts.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
        let addr = host.addr;
        if !wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }) {
            return Err("the receiver in the namespace did not start".into());
        }
        Ok(host)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.receiver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = ip(&["netns", "del", &self.namespace]);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[test]
fn a_ten_dot_target_is_reached_without_the_guard_and_refused_with_it() {
    let host = match TestHost::start() {
        Ok(host) => host,
        Err(why) => {
            assert!(
                std::env::var_os("HOOKPOOL_REQUIRE_NETNS").is_none(),
                "network namespaces are required: {why}"
            );
            eprintln!("skipped: cannot create a network namespace here ({why}); CI runs this test");
            return;
        }
    };
    let url = format!("http://{}/hooks", host.addr);
    let dispatcher = |deny: bool, letters: &MemoryDeadLetters| {
        Dispatcher::builder()
            .workers(1)
            .deny_private_networks(deny)
            .breaker(BreakerConfig::disabled())
            .retry(RetryPolicy::none())
            .timeout(Duration::from_secs(5))
            .dead_letters(letters.clone())
            .build()
            .unwrap()
    };

    let letters = MemoryDeadLetters::new();
    let open = dispatcher(false, &letters);
    open.try_send(Webhook::new(&url, &1).unwrap()).unwrap();
    let report = open.shutdown();
    assert_eq!(report.stats.delivered, 1, "{:?}", letters.letters());
    assert!(wait_until(Duration::from_secs(5), || host
        .posts
        .load(Ordering::SeqCst)
        == 1));

    let guarded = dispatcher(true, &letters);
    guarded.try_send(Webhook::new(&url, &2).unwrap()).unwrap();
    let report = guarded.shutdown();
    assert_eq!((report.stats.delivered, report.stats.dead_lettered), (0, 1));
    let letter = &letters.letters()[0];
    assert_eq!(letter.reason, DeadLetterReason::Blocked);
    assert!(
        letter.error.contains(&host.addr.ip().to_string()),
        "{}",
        letter.error
    );
    // Give a stray request every chance to arrive: none may.
    assert!(!wait_until(Duration::from_millis(300), || host
        .posts
        .load(Ordering::SeqCst)
        > 1));
    drop(host);
}
