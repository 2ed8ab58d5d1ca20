//! Helpers shared by the integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod child;
#[cfg(feature = "cli")]
pub mod cli;
pub mod exposition;
pub mod frozen_disk;
pub mod logger;
pub mod pacing;
pub mod redis;
pub mod server;
#[cfg(all(feature = "cli", feature = "redis"))]
pub mod shared_queue;
pub mod tempdir;
pub mod tmpfs;

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
/// Every wait in the tests goes through a bounded loop like this one.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(100);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A crash test's rounds and random numbers: `HOOKPOOL_CRASH_ROUNDS` rounds
/// (else `default`), and `HOOKPOOL_CRASH_SEED` (else a random seed), which
/// is printed so that a failing run can be replayed. Returns the rounds,
/// the generator and the seed.
pub fn crash_rounds(what: &str, default: usize) -> (usize, fastrand::Rng, u64) {
    let rounds: usize = std::env::var("HOOKPOOL_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed: u64 = std::env::var("HOOKPOOL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("{what}: {rounds}, seed {seed} (HOOKPOOL_CRASH_SEED replays it)");
    (rounds, fastrand::Rng::with_seed(seed), seed)
}

/// Whether this process's thread named `name` (as the OS shows it: at most
/// 15 bytes) is asleep, blocked in the kernel as on a condition variable.
/// Linux only, like the other tests that read `/proc`.
pub fn thread_asleep(name: &str) -> bool {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks.filter_map(Result::ok).any(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // The state follows the parenthesised name, which may hold spaces.
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('S'));
        comm.trim_end() == name && state == Some(true)
    })
}

/// Waits until the thread named `thread` is asleep in a submission to the
/// pool (or dispatcher) named `pool`, past the batch wait: waiting for any
/// free slot, where only a worker freeing one or shutdown can wake it.
/// Needs [`logger::install`].
pub fn wait_for_a_waiting_submission(pool: &str, thread: &str) {
    let line = format!("{pool}: no batch of room, waiting for any free slot");
    assert!(
        wait_until(Duration::from_secs(20), || !logger::lines_containing(&line)
            .is_empty()),
        "{thread} never waited for any free slot"
    );
    // After that line, the only place it can sleep is that wait.
    assert!(
        wait_until(Duration::from_secs(20), || thread_asleep(thread)),
        "{thread} is not asleep"
    );
}

/// Which of `secrets` signed a request (its index), or `None`: tests whose
/// processes each sign with a secret of their own tell by this which
/// process sent a request.
pub fn signer(request: &server::Recorded, secrets: &[&str]) -> Option<usize> {
    let header = |name| request.header(name).unwrap_or("");
    secrets.iter().position(|secret| {
        hookpool::verify(
            &[hookpool::SigningSecret::new(secret).expect("a valid secret")],
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &request.body,
            std::time::SystemTime::now(),
            Duration::from_secs(300),
        )
        .is_ok()
    })
}

/// Set in a child process started by [`run_test_in_child`].
const CHILD_VAR: &str = "HOOKPOOL_TEST_CHILD";

/// Whether this process is a child started by [`run_test_in_child`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_VAR).is_some()
}

/// Runs the test `name` of this test binary again in a child process, with
/// `envs` set and `removed` unset, and fails unless the child passed having
/// run exactly that one test (a renamed test would run none and pass).
/// Returns the child's stdout; kills it after 60 s.
pub fn run_test_in_child(name: &str, envs: &[(&str, &str)], removed: &[&str]) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(CHILD_VAR, "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in removed {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().expect("start the child");
    let pipes = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .flatten()
        .map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        })
        .collect();
    let mut status = None;
    wait_until(Duration::from_secs(60), || {
        status = child.try_wait().expect("poll the child");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        status = child.wait().ok();
    }
    let mut texts = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let (stdout, stderr) = (
        texts.next().unwrap_or_default(),
        texts.next().unwrap_or_default(),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the child running {name} failed ({status:?}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed;"),
        "the child did not run {name}:\n{stdout}"
    );
    stdout
}

/// `n` parties meet; each waits at most `timeout` for the others. Unlike
/// `std::sync::Barrier`, a missing party makes the test fail instead of hang.
#[derive(Clone)]
pub struct Rendezvous {
    n: usize,
    state: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

impl Rendezvous {
    pub fn new(n: usize) -> Self {
        Rendezvous {
            n,
            state: Default::default(),
        }
    }

    /// Arrives and waits for the others; returns whether all `n` arrived.
    pub fn arrive_and_wait(&self, timeout: Duration) -> bool {
        let (count, cv) = &*self.state;
        let mut c = count.lock().unwrap();
        *c += 1;
        cv.notify_all();
        let (c, _) = cv.wait_timeout_while(c, timeout, |c| *c < self.n).unwrap();
        *c >= self.n
    }

    /// Waits, without arriving, until all `n` have arrived.
    pub fn wait_all(&self, timeout: Duration) -> bool {
        let (count, cv) = &*self.state;
        let c = count.lock().unwrap();
        let (c, _) = cv.wait_timeout_while(c, timeout, |c| *c < self.n).unwrap();
        *c >= self.n
    }
}

/// A latch that jobs wait on, so tests can hold workers busy on purpose.
#[derive(Clone, Default)]
pub struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    /// Lets every waiter through, now and later.
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    /// Waits until opened. Panics after 20 s: a gate nobody opens fails the
    /// job (and so the test) instead of letting it through.
    pub fn wait(&self) {
        assert!(
            self.wait_for(Duration::from_secs(20)),
            "a Gate was not opened within 20 s"
        );
    }

    /// Waits for `open`; returns whether it came within `timeout`.
    pub fn wait_for(&self, timeout: Duration) -> bool {
        let guard = self.0.0.lock().unwrap();
        let (open, _) = self
            .0
            .1
            .wait_timeout_while(guard, timeout, |open| !*open)
            .unwrap();
        *open
    }
}

/// Runs `promtool check metrics` on a Prometheus exposition and fails the
/// test on any problem. Skipped when promtool is not installed, unless
/// `HOOKPOOL_REQUIRE_PROMTOOL` is set (CI sets it).
pub fn promtool_check(text: &str) {
    if let Some(said) = promtool(&["check", "metrics"], text) {
        assert!(
            said.trim().is_empty(),
            "promtool reported problems:\n{said}"
        );
    }
}

/// Runs promtool with `args`, writing `stdin` to it, fails the test unless
/// it succeeds, and returns what it printed (stdout, then stderr). `None`
/// when promtool is not installed, unless `HOOKPOOL_REQUIRE_PROMTOOL` is set
/// (CI sets it).
pub fn promtool(args: &[&str], stdin: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("HOOKPOOL_REQUIRE_PROMTOOL").is_none(),
                "promtool is required but not runnable: {e}"
            );
            eprintln!("promtool not installed ({e}); skipped (CI runs it)");
            return None;
        }
    };
    // promtool reads all of stdin before it writes, so this cannot deadlock.
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).unwrap();
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{said}\n{stdin}"
    );
    Some(said)
}

/// Retries 1 ms apart and doubling, without jitter, at most `max_attempts`
/// attempts: with a `ManualClock`, each retry is due as soon as the test
/// moves the clock on.
pub fn quick_retry(max_attempts: u32) -> hookpool::RetryPolicy {
    hookpool::RetryPolicy::exponential(Duration::from_millis(1))
        .jitter(false)
        .max_attempts(max_attempts)
}

/// A breaker that opens after `threshold` consecutive failures and stays
/// open for `cooldown`.
pub fn breaker(threshold: u32, cooldown: Duration) -> hookpool::BreakerConfig {
    hookpool::BreakerConfig::default()
        .failure_threshold(threshold)
        .cooldown(cooldown)
}
