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

/// A view of one shared queue's keys in Redis (see
/// `src/store/redis/scripts.rs` for what each holds), read over a fresh
/// connection each time, so it works across a restart of the server.
#[cfg(feature = "redis")]
pub struct QueueView {
    client: ::redis::Client,
    prefix: String,
}

/// The queue's counts, as `hookpool status` shows them.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ready: u64,
    pub delayed: u64,
    /// Claimed by any registered worker.
    pub processing: u64,
    pub dead: u64,
    /// Registered workers, alive or not yet declared dead.
    pub workers: u64,
}

#[cfg(feature = "redis")]
impl Counts {
    /// Nothing waiting, delayed or claimed.
    pub fn drained(&self) -> bool {
        (self.ready, self.delayed, self.processing) == (0, 0, 0)
    }
}

#[cfg(feature = "redis")]
impl QueueView {
    pub fn new(server: &RedisServer, queue: &str) -> QueueView {
        QueueView {
            client: ::redis::Client::open(server.url()).expect("a redis url"),
            prefix: format!("hookpool:{{{queue}}}:"),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn conn(&self) -> ::redis::RedisResult<::redis::Connection> {
        self.client
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    /// The registered workers' identities.
    fn workers(&self, conn: &mut ::redis::Connection) -> ::redis::RedisResult<Vec<String>> {
        ::redis::cmd("ZRANGE")
            .arg(self.key("workers"))
            .arg(0)
            .arg(-1)
            .query(conn)
    }

    /// When `worker` last heart-beat (ms, server clock), if registered.
    fn beat(
        &self,
        conn: &mut ::redis::Connection,
        worker: &str,
    ) -> ::redis::RedisResult<Option<u64>> {
        ::redis::cmd("ZSCORE")
            .arg(self.key("workers"))
            .arg(worker)
            .query(conn)
    }

    /// The counts, or `None` while Redis cannot be reached.
    pub fn try_counts(&self) -> Option<Counts> {
        let mut conn = self.conn().ok()?;
        let workers = self.workers(&mut conn).ok()?;
        let mut processing = 0;
        for worker in &workers {
            let n: u64 = ::redis::cmd("SCARD")
                .arg(self.key(&format!("claims:{worker}")))
                .query(&mut conn)
                .ok()?;
            processing += n;
        }
        let count = |cmd: &str, suffix: &str, conn: &mut ::redis::Connection| {
            ::redis::cmd(cmd)
                .arg(self.key(suffix))
                .query::<u64>(conn)
                .ok()
        };
        Some(Counts {
            ready: count("LLEN", "ready", &mut conn)?,
            delayed: count("ZCARD", "delayed", &mut conn)?,
            processing,
            dead: count("ZCARD", "dead", &mut conn)?,
            workers: workers.len() as u64,
        })
    }

    pub fn counts(&self) -> Counts {
        self.try_counts().expect("read the queue's counts")
    }

    /// The registered worker with process id `pid`: identities are
    /// `host-pid-random`.
    pub fn worker_of(&self, pid: u32) -> Option<String> {
        let mut conn = self.conn().ok()?;
        self.workers(&mut conn)
            .ok()?
            .into_iter()
            .find(|w| w.rsplit('-').nth(1) == Some(pid.to_string().as_str()))
    }

    /// Whether `worker` is registered (not declared dead).
    pub fn registered(&self, worker: &str) -> bool {
        let mut conn = self.conn().expect("connect to redis");
        self.beat(&mut conn, worker).expect("ZSCORE").is_some()
    }

    /// How long ago `worker` last heart-beat, by the server's clock; `None`
    /// if it is not registered.
    pub fn silent_for(&self, worker: &str) -> Option<Duration> {
        let mut conn = self.conn().ok()?;
        let score = self.beat(&mut conn, worker).ok()?;
        let (secs, micros): (u64, u64) = ::redis::cmd("TIME").query(&mut conn).ok()?;
        let now = secs * 1000 + micros / 1000;
        Some(Duration::from_millis(now.saturating_sub(score?)))
    }

    /// The ids of the webhooks `worker` holds, by key (read in one go).
    pub fn claimed(&self, worker: &str) -> std::collections::BTreeMap<u64, String> {
        let mut conn = self.conn().expect("connect to redis");
        // One script: the claims and their jobs as they were together.
        let pairs: Vec<(u64, String)> = ::redis::Script::new(
            "local out = {}
            for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
              out[#out + 1] = {k, redis.call('HGET', KEYS[2], k)}
            end
            return out",
        )
        .key(self.key(&format!("claims:{worker}")))
        .key(self.key("jobs"))
        .invoke(&mut conn)
        .expect("read the claims");
        pairs
            .into_iter()
            .map(|(key, job)| {
                let job: serde_json::Value = serde_json::from_str(&job).expect("a job is JSON");
                (key, job["id"].as_str().expect("a job has an id").to_owned())
            })
            .collect()
    }

    /// The keys in the delayed set, with their due times (ms, server clock).
    pub fn delayed(&self) -> Vec<(u64, u64)> {
        let mut conn = self.conn().expect("connect to redis");
        ::redis::cmd("ZRANGE")
            .arg(self.key("delayed"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut conn)
            .expect("ZRANGE delayed")
    }

    /// Once `worker` has died (been killed or stopped), what it held when
    /// the others take it back: read once it has been silent for half of
    /// `ttl` (so whatever it sent before it died has been applied) and
    /// before `ttl` runs out (no one can have taken it back yet).
    pub fn claimed_at_death(
        &self,
        worker: &str,
        ttl: Duration,
    ) -> std::collections::BTreeMap<u64, String> {
        assert!(
            wait_until(ttl, || self
                .silent_for(worker)
                .is_some_and(|d| d >= ttl / 2)),
            "{worker} still heart-beats, or was already taken back"
        );
        let claimed = self.claimed(worker);
        // Taking back is one script: still registered, not yet taken back.
        assert!(
            self.silent_for(worker).is_some(),
            "{worker} was taken back before its claims were read: the test machine is too slow for this ttl"
        );
        claimed
    }
}
