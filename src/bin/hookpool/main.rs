//! The `hookpool` command-line tool.
//!
//! - `hookpool send` delivers each line of a JSON Lines input as a webhook,
//!   through a journal by default, so that running it again after a kill
//!   resumes it.
//! - `hookpool replay` delivers a dead-letter file (JSON Lines, or SQLite: a
//!   journal) again and keeps only the letters that fail again.
//! - `hookpool listen` is a receiver for trying things out: it verifies
//!   signatures, queues webhooks in a [`hookpool::Pool`], and answers 202, 429,
//!   401 or an injected 500.
//! - On a queue shared in Redis: `hookpool worker` delivers from it until
//!   SIGTERM, `send --redis` only enqueues into it, `replay --redis` puts its
//!   dead letters back, and `hookpool status` shows its counts.
//!
//! Exit codes: 0 when everything was delivered, 1 when something was invalid
//! or not delivered, 2 on bad usage or an unreachable Redis (clap's parse
//! errors exit 2 as well).

#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

mod http;
mod input;
mod listen;
mod progress;
mod replay;
mod replay_redis;
mod resume;
mod run;
mod send;
mod send_redis;
mod shared_queue;
mod status;
mod tls;
mod worker;

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use hookpool::SigningSecret;

/// Bounded, lossless webhook delivery from the command line.
#[derive(Debug, Parser)]
#[command(name = "hookpool", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 everything delivered, 1 something invalid or not delivered, \
                        2 bad usage or Redis unreachable.\nLogging: RUST_LOG=hookpool=debug \
                        (default: errors only)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deliver each line of a JSON Lines input as a webhook
    ///
    /// Blank lines are skipped; a line that is not JSON is reported on stderr with its
    /// number and counted as invalid, and the other lines are still sent. Reading waits
    /// for room (--queue), so no line is ever dropped. At the end, one JSON summary line
    /// goes to stdout.
    ///
    /// Each line's webhook is committed to a journal (--journal, default
    /// ./hookpool-journal.db) before it is queued, with the input's position after the
    /// line. If a send is killed or interrupted, running the same command again first
    /// delivers what the journal holds, then goes on after the last line journaled; an
    /// input file that changed since is refused. Standard input cannot be resumed.
    ///
    /// Ctrl-C (or SIGTERM) stops reading, goes on delivering what is queued for up to
    /// --drain-timeout-ms, and leaves the rest in the journal for the next run. With
    /// --no-journal it writes every line not delivered to the dead-letter file with
    /// reason "shutdown" instead.
    ///
    /// With --redis URL --queue NAME it only enqueues each line's webhook into that shared
    /// queue, for `hookpool worker`s to deliver, one line after the other, each acknowledged
    /// by Redis (no journal, no dead-letter file, no delivery flags). If it stops early, the
    /// summary's `lines` says where to go on: the queue holds those lines (after a Redis
    /// failure, perhaps the next one too).
    #[command(
        after_help = "Exit codes: 0 every line delivered (with --redis: enqueued); 1 a line \
                            was invalid or dead-lettered, Ctrl-C stopped the reading, or Redis \
                            failed midway; 2 bad usage, an input that changed since the journal \
                            was written, or Redis unreachable at start."
    )]
    Send(send::Args),
    /// Deliver the dead letters in FILE again; FILE keeps only those that fail again
    ///
    /// Letters keep their ids, so receivers can drop duplicates. A JSON Lines FILE is then
    /// replaced atomically (FILE.tmp, fsync, rename) by the letters that failed again, those
    /// that cannot be sent (bad URL or id), and, after Ctrl-C, those not delivered yet. Do
    /// not replay a file that a running `send` still appends to.
    ///
    /// A SQLite FILE (a journal, or a SqliteDeadLetters file) is opened as the journal:
    /// its letters move back among its unfinished webhooks in chunks that fit the queue,
    /// one transaction each, and those that fail again move back to its letters. What the
    /// journal held unfinished is delivered as well.
    ///
    /// With --redis URL --queue NAME (no FILE) it puts the shared queue's dead letters back
    /// into it, with their ids, for any worker to deliver, and delivers nothing itself.
    #[command(
        after_help = "Exit codes: 0 every letter delivered (FILE holds none; with --redis: \
                            every dead letter put back); 1 some letters (or unfinished webhooks) \
                            remain; 2 bad usage, FILE unreadable, or Redis unreachable."
    )]
    Replay(replay::Args),
    /// Receive webhooks: verify signatures, queue them, answer 202 (or 429 when full)
    ///
    /// Answers 202 when the webhook is queued in a worker pool, 429 with Retry-After: 1
    /// when the pool's queue is full, 401 when the signature does not verify (timestamps
    /// may be 5 minutes off), and 500 for a --fail-rate share of them. Without --secret,
    /// signatures are not checked. The first line on stdout is `listening on ADDR`, then
    /// one line per webhook: status, id, size, outcome. Ctrl-C prints the counts as one
    /// JSON line and exits; webhooks not processed yet are counted as unprocessed.
    Listen(listen::Args),
    /// Deliver from a shared queue in Redis until SIGTERM or Ctrl-C
    ///
    /// Claims webhooks from the queue NAME (at most --prefetch ahead) and delivers them
    /// with the delivery flags of `send`; retries, breaker deferrals and pauses wait in
    /// Redis, for any worker. Heart-beats every third of --worker-ttl-ms: a worker silent
    /// longer than that (killed, stopped) has its webhooks taken back by the others. Dead
    /// letters go to the queue's dead letters (`hookpool replay --redis`).
    ///
    /// SIGTERM or Ctrl-C stops claiming, goes on delivering what was claimed for up to
    /// --drain-timeout-ms, hands what never started back to the queue, deregisters, and
    /// prints one JSON summary line. Requests still in flight then are taken back by the
    /// other workers and delivered again, with the same id.
    #[command(
        after_help = "Exit codes: 0 stopped by SIGTERM or Ctrl-C, everything claimed \
                            delivered, dead-lettered or handed back; 1 stopped, but requests \
                            were still in flight at the drain deadline (the other workers take \
                            them back); 2 bad usage (a --timeout-ms over half --worker-ttl-ms) \
                            or Redis unreachable at start."
    )]
    Worker(worker::Args),
    /// Print a shared queue's counts as one JSON line
    ///
    /// `ready`, `delayed` (retries, deferrals, pauses), `processing` (claimed by workers),
    /// `dead` and `workers_alive` (heart-beat within --worker-ttl-ms), read from Redis in
    /// one script. Read-only: it registers no worker and changes nothing.
    #[command(after_help = "Exit codes: 0 printed; 2 bad usage or Redis unreachable.")]
    Status(status::Args),
}

/// The command ran, but something was invalid or not delivered.
const EXIT_UNDELIVERED: u8 = 1;
/// Bad usage: a flag, URL, secret or file that cannot be used, or a Redis
/// that cannot be reached at start.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let cli = Cli::parse();
    let interrupt = match Interrupt::install() {
        Ok(interrupt) => interrupt,
        Err(e) => {
            eprintln!("hookpool: cannot handle Ctrl-C: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command {
        Command::Send(args) => send::run(args, &interrupt),
        Command::Replay(args) => replay::run(args, &interrupt),
        Command::Listen(args) => listen::run(args, &interrupt),
        Command::Worker(args) => worker::run(args, &interrupt),
        Command::Status(args) => status::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookpool: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Exit code 0 when `ok`, 1 otherwise.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNDELIVERED)
    }
}

/// A problem found before any work started. Exits 2.
#[derive(Debug)]
struct UsageError(String);

impl UsageError {
    /// `context: error: cause: cause...`, since errors do not repeat their
    /// causes in their own message.
    fn with_causes(context: &str, e: &dyn std::error::Error) -> Self {
        let mut text = format!("{context}: {e}");
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        UsageError(text)
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Set by Ctrl-C (SIGINT), SIGTERM or SIGHUP. Every wait in the tool is
/// bounded by [`run::TICK`] so that it is noticed promptly.
#[derive(Debug, Clone)]
struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    fn install() -> Result<Self, ctrlc::Error> {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        ctrlc::set_handler(move || set.store(true, Ordering::SeqCst))?;
        Ok(Interrupt(flag))
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `--secret`, shared by every command.
#[derive(Debug, clap::Args)]
struct Secrets {
    /// Standard Webhooks signing secret (whsec_...); repeat it during a key rotation.
    /// HOOKPOOL_SECRETS (space-separated) keeps secrets out of the process list
    #[arg(
        long = "secret",
        value_name = "S",
        env = "HOOKPOOL_SECRETS",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    secrets: Vec<String>,
}

impl Secrets {
    /// The secrets as given, blanks left out.
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }

    /// Parses every secret. The error never contains a secret.
    fn parse(&self) -> Result<Vec<SigningSecret>, UsageError> {
        self.texts()
            .enumerate()
            .map(|(i, s)| {
                SigningSecret::new(s).map_err(|e| UsageError(format!("--secret #{}: {e}", i + 1)))
            })
            .collect()
    }
}

/// Prints one line on stdout and flushes it; a closed pipe is ignored.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_flags_fit_together() {
        // Every id named in conflicts_with and requires exists, and no
        // two flags of a command share a name.
        super::Cli::command().debug_assert();
    }
}
