//! A lane against receivers that push back, in virtual time: it converges
//! on each receiver's pace, fed as fast as the whole backlog allows or as
//! `hookpool send` feeds it (a line at a time, at most a queue's worth
//! unfinished).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::super::*;
use super::{ep, waits};

/// A receiver as the simulation sees it.
trait Receiver {
    /// A request arrives at `t`: when its answer is back, and whether it
    /// was accepted (else pushed back with this pause).
    fn request(&mut self, t: Instant) -> (Instant, Result<(), Duration>);
}

/// Allows `rate` a second with a bucket of `burst`; past that, 429 with
/// `Retry-After: pause`. Answers take `rtt`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    pause: Duration,
    rtt: Duration,
}

impl Receiver for TokenBucket {
    fn request(&mut self, t: Instant) -> (Instant, Result<(), Duration>) {
        let dt = t.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(t);
        let answer = if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.pause)
        };
        (t + self.rtt, answer)
    }
}

/// Serves `cap` requests at once, each for `service`; past that, 429 at
/// once (with `Retry-After: pause`, which may be zero).
struct Capped {
    cap: usize,
    busy_until: Vec<Instant>,
    service: Duration,
    pause: Duration,
}

impl Receiver for Capped {
    fn request(&mut self, t: Instant) -> (Instant, Result<(), Duration>) {
        self.busy_until.retain(|&end| end > t);
        if self.busy_until.len() < self.cap {
            self.busy_until.push(t + self.service);
            (t + self.service, Ok(()))
        } else {
            (t + Duration::from_micros(200), Err(self.pause))
        }
    }
}

/// A worker pool behind a bounded queue (`hookpool listen`): `cap` may
/// wait, served at `rate` a second from `start` on; a full queue answers
/// 429 with `Retry-After: 1`. Every answer comes `rtt` after the request.
struct Queue {
    cap: f64,
    rate: f64,
    queued: f64,
    start: Instant,
    rtt: Duration,
}

impl Receiver for Queue {
    fn request(&mut self, t: Instant) -> (Instant, Result<(), Duration>) {
        if t > self.start {
            self.queued = (self.queued - (t - self.start).as_secs_f64() * self.rate).max(0.0);
            self.start = t;
        }
        if self.queued + 1.0 <= self.cap {
            self.queued += 1.0;
            (t + self.rtt, Ok(()))
        } else {
            (t + self.rtt, Err(Duration::from_secs(1)))
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The sender reads the next line and submits its webhook.
    Read,
    Start {
        item: u32,
    },
    Done {
        item: u32,
        sent_at: Instant,
        pause: Option<Duration>,
    },
}

struct Run {
    elapsed: Duration,
    requests: u64,
    push_backs: u64,
    /// Push-backs that started a pause.
    pauses: u64,
    peak_in_flight: usize,
}

/// How webhooks reach the lane.
#[derive(Debug, Clone, Copy)]
struct Feed {
    /// Submissions a second (`None`: the whole backlog at once).
    reads: Option<f64>,
    /// Webhooks submitted and not yet delivered, at most.
    queue: usize,
}

/// The whole backlog at once.
const AT_ONCE: Feed = Feed {
    reads: None,
    queue: usize::MAX,
};

/// Sends `n` webhooks, all accepted at once, through a lane with `workers`
/// worker slots to `receiver`, in virtual time.
fn simulate(n: u32, workers: usize, receiver: &mut dyn Receiver) -> Run {
    simulate_fed(n, workers, AT_ONCE, receiver, Instant::now())
}

/// Sends `n` webhooks, submitted as `feed` says from `t0` on, through a
/// lane with `workers` worker slots to `receiver`, in virtual time.
fn simulate_fed(
    n: u32,
    workers: usize,
    feed: Feed,
    receiver: &mut dyn Receiver,
    t0: Instant,
) -> Run {
    let lanes = Lanes::new(workers, None, usize::MAX, RateLimits::default());
    let a = ep("receiver");
    let mut events: BinaryHeap<Reverse<(Instant, u64, Event)>> = BinaryHeap::new();
    let mut tie = 0;
    let mut push = |events: &mut BinaryHeap<_>, at: Instant, e: Event| {
        tie += 1;
        events.push(Reverse((at, tie, e)));
    };
    let schedule = |events: &mut BinaryHeap<_>,
                    push: &mut dyn FnMut(&mut BinaryHeap<_>, Instant, Event),
                    grants: Vec<Grant<u32>>| {
        for g in grants {
            push(events, g.at, Event::Start { item: g.item });
        }
    };
    let read_every = feed.reads.map(|r| Duration::from_secs_f64(1.0 / r));
    // Submitted so far; reading waits while the queue is full.
    let (mut read, mut blocked) = (0u32, false);
    if read_every.is_some() {
        push(&mut events, t0, Event::Read);
    } else {
        for i in 0..n {
            match lanes.enter(&a, u64::from(i), i, t0) {
                Enter::Go(item) => push(&mut events, t0, Event::Start { item }),
                Enter::Wait(grants) => schedule(&mut events, &mut push, grants),
                Enter::Closed(_) => unreachable!(),
            }
        }
    }
    let (mut delivered, mut requests, mut push_backs, mut pauses) = (0, 0, 0, 0);
    let mut in_flight = 0usize;
    let mut peak_in_flight = 0;
    let mut last = t0;
    let mut steps = 0;
    while let Some(Reverse((t, _, event))) = events.pop() {
        steps += 1;
        assert!(steps < 10_000_000, "the simulation did not end");
        if std::env::var_os("SIM_TRACE").is_some()
            && (t - t0).as_millis() / 100 > (last - t0).as_millis() / 100
        {
            let snap = lanes.snapshot(t);
            println!(
                "  {:>8.3}s delivered {delivered}: in flight {} limit {} rate {:?} paused {:?}",
                (t - t0).as_secs_f64(),
                snap[0].1.in_flight,
                snap[0].1.in_flight_limit,
                snap[0].1.rate,
                snap[0].1.paused_for
            );
        }
        last = t;
        match event {
            Event::Read => {
                if (read - delivered) as usize >= feed.queue {
                    blocked = true;
                    continue;
                }
                let i = read;
                read += 1;
                match lanes.enter(&a, u64::from(i), i, t) {
                    Enter::Go(item) => push(&mut events, t, Event::Start { item }),
                    Enter::Wait(grants) => schedule(&mut events, &mut push, grants),
                    Enter::Closed(_) => unreachable!(),
                }
                if let (true, Some(every)) = (read < n, read_every) {
                    push(&mut events, t + every, Event::Read);
                }
            }
            Event::Start { item } => {
                let grants = match lanes.start(&a, u64::from(item), item, t) {
                    Ok((_, grants)) => grants,
                    Err(entry) => {
                        schedule(&mut events, &mut push, waits(entry));
                        continue;
                    }
                };
                schedule(&mut events, &mut push, grants);
                requests += 1;
                in_flight += 1;
                peak_in_flight = peak_in_flight.max(in_flight);
                let (back, answer) = receiver.request(t);
                let pause = answer.err();
                push(
                    &mut events,
                    back,
                    Event::Done {
                        item,
                        sent_at: t,
                        pause,
                    },
                );
            }
            Event::Done {
                item,
                sent_at,
                pause,
            } => {
                in_flight -= 1;
                let grants = match pause {
                    None => {
                        delivered += 1;
                        if blocked {
                            blocked = false;
                            push(&mut events, t, Event::Read);
                        }
                        lanes.finish(&a, sent_at, t, Outcome::Success)
                    }
                    Some(pause) => {
                        push_backs += 1;
                        if std::env::var_os("SIM_TRACE").is_some() {
                            let snap = lanes.snapshot(t);
                            println!(
                                "  {:>8.3}s push-back: in flight {} limit {} rate {:?}",
                                (t - t0).as_secs_f64(),
                                snap[0].1.in_flight,
                                snap[0].1.in_flight_limit,
                                snap[0].1.rate
                            );
                        }
                        let (effect, grants) = lanes
                            .push_back(&a, u64::from(item), item, sent_at, t, pause)
                            .unwrap();
                        pauses += u64::from(effect.new_pause);
                        grants
                    }
                };
                schedule(&mut events, &mut push, grants);
            }
        }
    }
    assert_eq!(delivered, n, "every webhook delivered");
    Run {
        elapsed: last - t0,
        requests,
        push_backs,
        pauses,
        peak_in_flight,
    }
}

fn token_bucket(rate: f64, burst: f64, pause: Duration) -> TokenBucket {
    TokenBucket {
        rate,
        burst,
        tokens: burst,
        last: Instant::now(),
        pause,
        rtt: Duration::from_millis(2),
    }
}

/// The receiver: R requests a second, 429 with `Retry-After: 1`
/// beyond that. The lane learns R and stays near it.
#[test]
fn converges_on_a_receiver_that_allows_r_requests_a_second() {
    let sec = Duration::from_secs(1);
    for (rate, burst, pause) in [
        (2000.0, 2000.0, sec),
        (2000.0, 200.0, sec),
        (400.0, 40.0, sec),
        (50.0, 5.0, sec),
        (400.0, 40.0, Duration::ZERO),
        (400.0, 400.0, 2 * sec),
    ] {
        let n = (rate * 20.0) as u32;
        let run = simulate(n, 8, &mut token_bucket(rate, burst, pause));
        let capacity = Duration::from_secs_f64((f64::from(n) - burst) / rate);
        let ratio = run.elapsed.as_secs_f64() / capacity.as_secs_f64();
        let share = run.push_backs as f64 / run.requests as f64;
        println!(
            "rate {rate} burst {burst} pause {pause:?}: {:?} for {capacity:?} ({ratio:.2}x), {} push-backs of {} requests",
            run.elapsed, run.push_backs, run.requests
        );
        // A bucket of a second's requests refills during each pause, so
        // pauses cost little; a small one makes each overshoot cost a
        // second, and the first few (finding the rate) show.
        let bound = if burst >= rate * pause.as_secs_f64() {
            1.1
        } else {
            1.5
        };
        assert!(ratio <= bound, "rate {rate} burst {burst}: {ratio:.2}x");
        // Push-back without a pause costs little, and the rate is found by
        // more of it.
        let most = if pause.is_zero() { 0.4 } else { 0.02 };
        assert!(
            share <= most,
            "rate {rate} burst {burst}: {share:.3} pushed back"
        );
    }
}

/// A receiver that serves C at a time and answers 429 beyond: the in-flight
/// limit settles near C.
#[test]
fn converges_on_a_receiver_that_allows_c_at_a_time() {
    for (cap, pause) in [
        (2, Duration::ZERO),
        (4, Duration::ZERO),
        (4, Duration::from_secs(1)),
    ] {
        let service = Duration::from_millis(20);
        let n = 2000;
        let mut receiver = Capped {
            cap,
            busy_until: Vec::new(),
            service,
            pause,
        };
        let run = simulate(n, 16, &mut receiver);
        let capacity = service * n / cap as u32;
        let ratio = run.elapsed.as_secs_f64() / capacity.as_secs_f64();
        let share = run.push_backs as f64 / run.requests as f64;
        println!(
            "cap {cap} pause {pause:?}: {:?} for {capacity:?} ({ratio:.2}x), {} push-backs of {} requests, peak {}",
            run.elapsed, run.push_backs, run.requests, run.peak_in_flight
        );
        assert!(ratio <= 1.5, "cap {cap}: {ratio:.2}x");
        // Push-back without a pause costs little, and is probed for often.
        let most = if pause.is_zero() { 0.2 } else { 0.02 };
        assert!(share <= most, "cap {cap}: {share:.3} pushed back");
    }
}

/// An answer on loopback: a quarter of a millisecond.
const FAST: Duration = Duration::from_micros(250);

/// `hookpool send` with its journal: it commits each line before queueing
/// it, about 3,000 a second on the benchmark's disk, and holds at most its
/// queue (1,024) and workers (8) unfinished.
const JOURNALED: Feed = Feed {
    reads: Some(3000.0),
    queue: 1032,
};

/// The push-back benchmark's receivers (`benches/pushback.rs`), as the
/// simulation models them, for a send from `t0`: name, receiver, capacity
/// time for 20,000.
fn benchmark_receivers(t0: Instant) -> Vec<(&'static str, Box<dyn Receiver>, f64)> {
    let mut limit = token_bucket(2000.0, 1000.0, Duration::from_secs(1));
    limit.last = t0;
    limit.rtt = FAST;
    let queue = |rate, start| Queue {
        cap: 64.0,
        rate,
        queued: 0.0,
        start,
        rtt: FAST,
    };
    vec![
        ("limit", Box::new(limit), 9.5),
        // Full for its first 5 ms, while its workers start.
        (
            "listen",
            Box::new(queue(40_000.0, t0 + Duration::from_millis(5))),
            0.5,
        ),
        ("listen-1ms", Box::new(queue(1820.0, t0)), 20_000.0 / 1820.0),
    ]
}

/// Runs the benchmark's receiver `name` for 20,000 webhooks fed as `feed`:
/// the run, and its elapsed time over the capacity time.
fn benchmark_run(name: &str, feed: Feed) -> (Run, f64) {
    let t0 = Instant::now();
    let (_, mut receiver, capacity) = benchmark_receivers(t0)
        .into_iter()
        .find(|r| r.0 == name)
        .unwrap();
    let run = simulate_fed(20_000, 8, feed, receiver.as_mut(), t0);
    let floor = feed.reads.map_or(0.0, |r| 20_000.0 / r);
    let ratio = run.elapsed.as_secs_f64() / capacity.max(floor);
    println!(
        "{name}: {:?} ({ratio:.2}x), {} pauses, {} push-backs",
        run.elapsed, run.pauses, run.push_backs
    );
    (run, ratio)
}

/// Issue 14's limiter (2,000/s, burst 1,000, `Retry-After: 1`) and a fast
/// sender: the burst's push-back sets a probe, and the next push-back the
/// rate, from what the bucket took beyond its burst. Nothing pushes back
/// after that.
#[test]
fn a_burst_and_one_probe_find_a_rate_limiter() {
    let (run, ratio) = benchmark_run("limit", AT_ONCE);
    assert_eq!(run.pauses, 2);
    assert!(ratio <= 1.2, "{ratio:.2}x");
}

/// `hookpool listen --process-ms 1`: a queue of 64 served at 1,820 a
/// second. Its queue saves up next to nothing during a pause, so each
/// costs a whole second: two find its rate, fed at once or as the
/// journaled CLI feeds it, and nothing pushes back after.
#[test]
fn a_burst_and_one_probe_find_a_full_queue_s_rate() {
    for feed in [AT_ONCE, JOURNALED] {
        let (run, ratio) = benchmark_run("listen-1ms", feed);
        assert_eq!(run.pauses, 2, "{feed:?}");
        assert!(ratio <= 1.22, "{feed:?}: {ratio:.2}x");
    }
}

/// `hookpool listen` that takes 40,000 a second but whose queue was full
/// for its first 5 ms: one push-back and a pause of a second, and the rate
/// that push-back set is out of the way soon after, rather than cap the
/// rest of the run.
#[test]
fn a_fast_receiver_full_for_a_moment_is_not_held_back() {
    let t0 = Instant::now();
    let mut alone = benchmark_receivers(t0 - Duration::from_secs(1)).swap_remove(1);
    let alone = simulate_fed(20_000, 8, AT_ONCE, alone.1.as_mut(), t0).elapsed;
    let (run, _) = benchmark_run("listen", AT_ONCE);
    assert_eq!(run.pauses, 1);
    assert!(
        run.elapsed <= Duration::from_secs(1) + alone * 2,
        "{:?} against {alone:?}",
        run.elapsed
    );
}
