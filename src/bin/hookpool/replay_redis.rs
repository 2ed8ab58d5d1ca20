//! `hookpool replay --redis URL --queue NAME`: the shared queue's dead
//! letters go back into it, with their ids, for any worker to deliver.
//! Nothing is delivered here.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hookpool::RedisQueue;
use serde::Serialize;

use crate::replay::{replayable, unreplayable};
use crate::run::DeliveryArgs;
use crate::shared_queue::{producer, store_error};
use crate::{Interrupt, UsageError, exit_code, print_line};

/// Letters put back per round: Ctrl-C is noticed between two.
const CHUNK: usize = 256;

/// The summary line on stdout.
#[derive(Serialize)]
struct Summary {
    queue: String,
    /// Dead letters in the queue when the replay started.
    letters: usize,
    /// Of those, put back into the queue.
    replayed: usize,
    /// Letters that cannot be turned into a webhook (bad URL or id); they
    /// stay among the dead letters.
    invalid: usize,
    interrupted: bool,
    elapsed_ms: u64,
}

pub(crate) fn run(
    queue: RedisQueue,
    delivery: &DeliveryArgs,
    interrupt: &Interrupt,
) -> Result<ExitCode, UsageError> {
    let started = Instant::now();
    let name = queue.queue_name().to_owned();
    let hooks = producer("replay", delivery, queue)?;
    let letters = hooks
        .stored_dead_letters(usize::MAX)
        .map_err(|e| store_error(&e))?;
    let invalid = unreplayable(&letters, |seq, why| {
        eprintln!("hookpool: letter {seq}: {why}");
    });
    // Only these: a replayed letter that fails again comes back under the
    // same number, behind the others, and waits for the next replay.
    let mut pending: HashSet<u64> = letters
        .iter()
        .filter(|l| replayable(&l.letter))
        .map(|l| l.seq)
        .collect();
    let mut replayed = 0;
    while !interrupt.is_set() && !pending.is_empty() {
        // The oldest letters: those that cannot be replayed stay in front.
        let front = hooks
            .stored_dead_letters(CHUNK + invalid)
            .map_err(|e| store_error(&e))?;
        let chunk = front
            .iter()
            .take_while(|l| pending.contains(&l.seq) || !replayable(&l.letter))
            .count();
        if !front[..chunk].iter().any(|l| pending.contains(&l.seq)) {
            // Another replay took them meanwhile.
            break;
        }
        replayed += hooks
            .replay_stored(chunk, Duration::ZERO)
            .map_err(|e| store_error(&e))?;
        for letter in &front[..chunk] {
            pending.remove(&letter.seq);
        }
    }
    // A producer has nothing to deliver: this only joins its threads.
    let _ = hooks.shutdown();
    let summary = Summary {
        queue: name,
        letters: letters.len(),
        replayed,
        invalid,
        interrupted: interrupt.is_set(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let ok = summary.replayed == summary.letters;
    print_line(&serde_json::to_string(&summary).unwrap_or_default());
    Ok(exit_code(ok))
}
