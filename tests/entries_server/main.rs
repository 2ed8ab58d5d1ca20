//! `examples/entries_server/` run as a real process: the HTTP API, the
//! webhooks it sends to a receiver on 127.0.0.1, the dead-letter file when
//! the queue is full, a SIGTERM while webhooks are still queued, and the
//! journal: SIGKILL at random points and a restart, a SIGTERM that keeps
//! webhooks for the next start, a journal that cannot commit or open.
//!
//! `HOOKPOOL_ENTRIES_CRASH_ROUNDS` sets the crash rounds (5 by default);
//! `HOOKPOOL_ENTRIES_CRASH_SEED` replays one run.
//!
//! The first test asks cargo to build the example with this test's profile,
//! features and target directory: a no-op after `cargo test`, which builds
//! examples, and a (bounded) build when only this target is run, so a stale
//! binary is never tested. Signals are sent with `kill`, hence unix only.

#![cfg(unix)]

#[path = "../common/mod.rs"]
mod common;
mod service;

mod api;
mod crash;
mod journal;
