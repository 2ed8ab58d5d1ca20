//! `hookpool status`: a shared queue's counts, read from Redis without
//! changing anything.

use std::process::ExitCode;

use serde::Serialize;

use crate::shared_queue::{QueueArgs, store_error};
use crate::{UsageError, print_line};

/// The flags of `hookpool status` (its help text is on `Command::Status`).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    queue: QueueArgs,
}

/// The line on stdout.
#[derive(Serialize)]
struct Status {
    queue: String,
    ready: u64,
    delayed: u64,
    processing: u64,
    dead: u64,
    workers_alive: u64,
}

pub(crate) fn run(args: Args) -> Result<ExitCode, UsageError> {
    let counts = args.queue.queue()?.status().map_err(|e| store_error(&e))?;
    let status = Status {
        queue: counts.queue,
        ready: counts.ready,
        delayed: counts.delayed,
        processing: counts.processing,
        dead: counts.dead,
        workers_alive: counts.workers_alive,
    };
    print_line(&serde_json::to_string(&status).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
