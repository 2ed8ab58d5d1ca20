//! A real `redis-server` for one test: its own port and directory, AOF on
//! with `appendfsync always`, killed and reaped on drop. Tests skip (with a
//! message saying how to install it) where there is no redis-server, unless
//! `HOOKPOOL_REQUIRE_REDIS` is set (CI sets it).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tempdir::TempDir;
use super::wait_until;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    password: Option<String>,
    /// Serves TLS only, with these files in `dir`.
    tls: bool,
}

impl RedisServer {
    /// Starts one, or `None` (the test then returns) where redis-server is
    /// not installed and not required.
    pub fn start(name: &str) -> Option<RedisServer> {
        Self::start_with(name, None, None)
    }

    /// One that requires AUTH with `password` (`requirepass`); its
    /// [`url`](Self::url) carries it.
    pub fn start_with_password(name: &str, password: &str) -> Option<RedisServer> {
        Self::start_with(name, Some(password), None)
    }

    /// One that serves TLS only (no plain port), with the certificate
    /// `cert_pem` and its key, and `ca_pem` as the CA; its
    /// [`url`](Self::url) is `rediss://127.0.0.1:PORT/`.
    pub fn start_tls(
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        ca_pem: &str,
    ) -> Option<RedisServer> {
        Self::start_with(name, None, Some([cert_pem, key_pem, ca_pem]))
    }

    fn start_with(
        name: &str,
        password: Option<&str>,
        tls: Option<[&str; 3]>,
    ) -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("HOOKPOOL_REQUIRE_REDIS").is_none(),
                "redis-server is required (HOOKPOOL_REQUIRE_REDIS) but not installed"
            );
            eprintln!(
                "redis-server is not installed: skipped (install it with `apt-get install redis-server`; CI runs it)"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut server = RedisServer {
            child: None,
            port,
            dir: TempDir::new(&format!("redis-{name}")),
            password: password.map(str::to_owned),
            tls: tls.is_some(),
        };
        if let Some(files) = tls {
            for (file, pem) in ["tls.crt", "tls.key", "ca.crt"].iter().zip(files) {
                std::fs::write(server.dir.path(file), pem).expect("write a TLS file");
            }
        }
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.path("tls.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.path("tls.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.path("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(self.dir.dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && self.ping()
            }),
            "redis-server did not come up"
        );
    }

    /// redis-cli for this server, authenticated if it needs it.
    fn redis_cli(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        if self.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.path("ca.crt"));
        }
        cmd
    }

    fn ping(&self) -> bool {
        self.redis_cli()
            .arg("PING")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    }

    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://127.0.0.1:{}/", self.port);
        }
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs a redis-cli command; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.redis_cli().args(args).output().expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (its AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.dir().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
