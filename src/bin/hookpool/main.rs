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
//!
//! Exit codes: 0 when everything was delivered, 1 when something was invalid
//! or not delivered, 2 on bad usage (clap's parse errors exit 2 as well).

#![forbid(unsafe_code)]
#![warn(rust_2018_idioms)]

mod http;
mod input;
mod listen;
mod replay;
mod resume;
mod run;
mod send;
mod tls;

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
                        2 bad usage.\nLogging: RUST_LOG=hookpool=debug (default: errors only)."
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
    #[command(
        after_help = "Exit codes: 0 every line delivered; 1 a line was invalid or \
                            dead-lettered, or Ctrl-C stopped the reading; 2 bad usage, or an \
                            input that changed since the journal was written."
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
    #[command(
        after_help = "Exit codes: 0 every letter delivered (FILE holds none); \
                            1 some letters (or unfinished webhooks) remain in FILE; 2 bad usage \
                            or FILE unreadable."
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
}

/// The command ran, but something was invalid or not delivered.
const EXIT_UNDELIVERED: u8 = 1;
/// Bad usage: a flag, URL, secret or file that cannot be used.
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
