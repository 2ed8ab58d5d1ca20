//! A child process with its stdout as lines and its stderr collected;
//! killed and reaped on drop if it is still running.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child, killed and reaped on drop if it is still running.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    /// Everything on stderr so far; complete once the reader has joined.
    stderr_text: Arc<Mutex<String>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

/// This test binary, set to run only its ignored test `name`: a child
/// process that is a test of its own (not run on its own), configured by
/// the environment the caller adds.
pub fn ignored_test(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    cmd
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the child");
        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        // Ends at EOF, when the child exits or is killed.
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = BufReader::new(child.stderr.take().unwrap());
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let text = Arc::clone(&stderr_text);
        let stderr = std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let mut text = text.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Running {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr_text,
            stderr: Some(stderr),
        }
    }

    /// Waits (bounded) until stderr has shown `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        let seen = super::wait_until(timeout, || {
            self.stderr_text.lock().unwrap().contains(needle)
        });
        assert!(
            seen,
            "{needle:?} not on stderr within {timeout:?}:\n{}",
            self.stderr_text.lock().unwrap()
        );
    }

    pub fn write_stdin(&mut self, bytes: &[u8]) {
        // A child that already exited (a usage error) does not read.
        let _ = self.stdin.as_mut().unwrap().write_all(bytes);
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn next_line(&self, timeout: Duration) -> String {
        self.stdout
            .recv_timeout(timeout)
            .expect("a line on the child's stdout in time")
    }

    /// Ctrl-C: SIGINT.
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    /// Waits for the exit; then the rest of stdout and all of stderr.
    pub fn finish(mut self, timeout: Duration) -> (i32, Vec<String>, String) {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        self.stderr.take().unwrap().join().unwrap();
        let stderr = self.stderr_text.lock().unwrap().clone();
        (
            status.code().expect("an exit code, not a signal"),
            lines,
            stderr,
        )
    }
}

impl Running {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line on stdout, or `None` if none came within `timeout`
    /// (or stdout is closed).
    pub fn try_next_line(&self, timeout: Duration) -> Option<String> {
        self.stdout.recv_timeout(timeout).ok()
    }

    /// The next line on stdout that contains `needle`, from the needle on
    /// (the test harness writes `test NAME ... ` before a child test's
    /// first line); `None` if stdout ends or no line comes within
    /// `timeout` of the previous one.
    pub fn line_with(&self, needle: &str, timeout: Duration) -> Option<String> {
        loop {
            let line = self.try_next_line(timeout)?;
            if let Some(at) = line.find(needle) {
                return Some(line[at..].to_owned());
            }
        }
    }

    /// Sends `signal` (a name for kill(1): `STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Kills the child with SIGKILL (no chance to clean up) and reaps it.
    /// Returns whether it was still running, rather than already exited.
    pub fn kill(mut self) -> bool {
        let running = matches!(self.child.try_wait(), Ok(None));
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }

    /// Everything on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_text.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
