//! Lanes and pacers against receivers that push back, in virtual time: they
//! converge on each receiver's pace.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::super::*;
use super::{OK, ep, waits};

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
/// 429 with `Retry-After: 1` at once, and so does any request, the queue
/// answers `rtt` after it arrives.
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

/// Sends `n` webhooks, all accepted at once, through a lane with `workers`
/// worker slots to `receiver`, in virtual time.
fn simulate(n: u32, workers: usize, receiver: &mut dyn Receiver) -> Run {
    let lanes = Lanes::new(workers, None, usize::MAX, RateLimits::default());
    let a = ep("receiver");
    let t0 = Instant::now();
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
    for i in 0..n {
        match lanes.enter(&a, u64::from(i), i, t0) {
            Enter::Go(item) => push(&mut events, t0, Event::Start { item }),
            Enter::Wait(grants) => schedule(&mut events, &mut push, grants),
            Enter::Closed(_) => unreachable!(),
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
        if std::env::var_os("SIM_TRACE").is_some() && (t - t0).as_secs() > (last - t0).as_secs() {
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

/// Sends through `p` to `receiver`, one request at a time, each as soon as
/// the pace allows, from `from` until `until`: the rate in force after each
/// answer, and whether that answer was a push-back.
fn drive(
    p: &mut Pacer,
    receiver: &mut dyn Receiver,
    from: Instant,
    until: Instant,
) -> Vec<(Instant, f64, bool)> {
    let mut now = from;
    let mut seen = Vec::new();
    while now < until {
        let at = p.reserve(now);
        let (back, answer) = receiver.request(at);
        let outcome = answer.map_or_else(|pause| Outcome::PushBack { pause }, |()| OK);
        p.record(outcome, at, back, 1, 8);
        seen.push((back, p.rate().unwrap_or(f64::INFINITY), answer.is_err()));
        now = back;
    }
    seen
}

/// After the burst's push-back and one more, the rate is what the receiver
/// allows (2,000 a second, less the estimate's margin), and since probing
/// past it costs a whole `Retry-After`, it is held there for
/// `HOLD_PAUSES` pauses before it grows again.
#[test]
fn a_later_push_back_sets_the_receiver_s_rate_and_holds_it() {
    let (t0, sec) = (Instant::now(), Duration::from_secs(1));
    let mut receiver = token_bucket(2000.0, 1000.0, sec);
    receiver.rtt = Duration::from_micros(250);
    let mut p = Pacer::new(None);
    let seen = drive(&mut p, &mut receiver, t0, t0 + 30 * sec);
    let pushed: Vec<_> = seen.iter().filter(|s| s.2).collect();
    assert!(pushed.len() >= 2, "{pushed:?}");
    let (cut_at, settled, _) = *pushed[1];
    assert!((1900.0..2000.0).contains(&settled), "{settled}");
    let hold = sec * pacer::HOLD_PAUSES;
    let held = seen
        .iter()
        .filter(|s| s.0 > cut_at && s.0 < cut_at + hold)
        .all(|s| s.1 == settled && !s.2);
    assert!(held, "held at {settled} for {hold:?}");
    let later = seen.iter().find(|s| s.0 > cut_at + hold + 2 * sec).unwrap();
    assert!(later.1 > settled, "grows after the hold: {later:?}");
}

/// A receiver that falters once (its queue stalls for a moment) pushes
/// back a rate held at its estimate: that says the estimate may be too
/// high, or nothing; the rate goes a little below, not down by the pause.
#[test]
fn a_receiver_that_falters_once_costs_a_small_cut() {
    /// A queue that serves nothing from `stall` for `for_`.
    struct Faltering {
        queue: Queue,
        stall: Instant,
        for_: Duration,
    }
    impl Receiver for Faltering {
        fn request(&mut self, t: Instant) -> (Instant, Result<(), Duration>) {
            if t >= self.stall && t < self.stall + self.for_ {
                self.queue.start = t;
            }
            self.queue.request(t)
        }
    }
    let (t0, sec) = (Instant::now(), Duration::from_secs(1));
    let queue = Queue {
        cap: 64.0,
        rate: 1820.0,
        queued: 0.0,
        start: t0,
        rtt: Duration::from_micros(250),
    };
    let mut receiver = Faltering {
        queue,
        stall: t0 + 6 * sec,
        for_: Duration::from_millis(100),
    };
    let mut p = Pacer::new(None);
    let seen = drive(&mut p, &mut receiver, t0, t0 + 9 * sec);
    let pushed: Vec<_> = seen.iter().filter(|s| s.2).collect();
    let held = pushed[1].1;
    let faltered = pushed.iter().find(|s| s.0 > t0 + 6 * sec).unwrap();
    assert!(faltered.1 >= 0.94 * held, "{held} -> {faltered:?}");
}

/// Push-back without a pause costs little: the rate it sets is not held.
#[test]
fn a_rate_set_without_a_pause_grows_at_once() {
    let (t0, sec) = (Instant::now(), Duration::from_secs(1));
    let mut receiver = token_bucket(2000.0, 1000.0, Duration::ZERO);
    receiver.rtt = Duration::from_micros(250);
    let mut p = Pacer::new(None);
    let seen = drive(&mut p, &mut receiver, t0, t0 + 20 * sec);
    // The first push-back that set the rate below the receiver's.
    let (cut_at, settled, _) = *seen.iter().find(|s| s.2 && s.1 < 2000.0).unwrap();
    let grown = seen
        .iter()
        .find(|s| s.0 > cut_at + sec)
        .is_some_and(|s| s.1 > settled);
    assert!(grown, "{settled} after the push-back at {cut_at:?}");
}

/// A limiter that someone else had all but drained when sending began shows
/// a burst smaller than its own, and the first estimate from it is too
/// high. The push-back of the rate held at that estimate gives it away: the
/// burst is forgotten, that push-back cuts without an estimate, and the run
/// it ended (at the held rate, from a full bucket) is the burst from then
/// on. Every rate cut cuts, whatever the estimate says.
#[test]
fn an_estimate_that_proves_too_high_is_corrected_at_once() {
    let (t0, sec) = (Instant::now(), Duration::from_secs(1));
    let mut receiver = token_bucket(2000.0, 1000.0, sec);
    receiver.rtt = Duration::from_micros(250);
    receiver.tokens = 50.0;
    let mut p = Pacer::new(None);
    let seen = drive(&mut p, &mut receiver, t0, t0 + 20 * sec);
    // Each push-back: when, how fast requests went over the 100 ms before
    // it (one at a time, so answers count them), the rate it set.
    let mut cuts = Vec::new();
    for (i, s) in seen.iter().enumerate().filter(|(_, s)| s.2) {
        let from = s.0 - Duration::from_millis(100);
        let went = seen[..i].iter().rev().take_while(|e| e.0 > from && !e.2);
        cuts.push((s.0 - t0, went.count() as f64 * 10.0, s.1));
    }
    println!("{cuts:?}");
    assert!(cuts.len() <= 4, "{cuts:?}");
    for &(_, went, set) in &cuts[1..] {
        // Counted over 100 ms: to within a request.
        assert!(
            set <= (went + 10.0) * pacer::MOST_OF_PUSHED_BACK,
            "{cuts:?}"
        );
    }
    let settled = cuts.last().unwrap().2;
    assert!((1800.0..=2000.0).contains(&settled), "{cuts:?}");
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
        let most = if pause.is_zero() { 0.05 } else { 0.02 };
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
        let most = if pause.is_zero() { 0.05 } else { 0.02 };
        assert!(share <= most, "cap {cap}: {share:.3} pushed back");
    }
}

/// A sender as fast as `hookpool send` on loopback: an answer takes a
/// quarter of a millisecond, so eight workers send 32,000 a second.
const FAST: Duration = Duration::from_micros(250);

/// Issue 14's benchmark in virtual time: 20,000 webhooks from a fast sender
/// to a limiter of 2,000 a second with a burst of 1,000 (nginx `limit_req`)
/// and `Retry-After: 1`. Each pause costs half a second (the other half
/// refills the burst). The unpaced burst's push-back and one more, from
/// the rate probing upwards after it, find the rate: nothing pushes back
/// after that.
#[test]
fn a_burst_and_one_probe_find_a_rate_limiter() {
    let mut receiver = token_bucket(2000.0, 1000.0, Duration::from_secs(1));
    receiver.rtt = FAST;
    let run = simulate(20_000, 8, &mut receiver);
    let ratio = run.elapsed.as_secs_f64() / 9.5;
    println!(
        "{:?} ({ratio:.2}x), {} pauses, {} push-backs",
        run.elapsed, run.pauses, run.push_backs
    );
    assert_eq!(run.pauses, 2);
    assert!(ratio <= 1.2, "{ratio:.2}x");
}

/// `hookpool listen --process-ms 1`: a queue of 64 served at 1,820 a second,
/// answering 429 with `Retry-After: 1` when full. Its queue saves up next
/// to nothing during a pause, so each costs a whole second: two find its
/// rate, and nothing pushes back after.
#[test]
fn a_burst_and_one_probe_find_a_full_queue_s_rate() {
    let mut receiver = Queue {
        cap: 64.0,
        rate: 1820.0,
        queued: 0.0,
        start: Instant::now(),
        rtt: FAST,
    };
    let run = simulate(20_000, 8, &mut receiver);
    let ratio = run.elapsed.as_secs_f64() / (20_000.0 / 1820.0);
    println!(
        "{:?} ({ratio:.2}x), {} pauses, {} push-backs",
        run.elapsed, run.pauses, run.push_backs
    );
    assert_eq!(run.pauses, 2);
    assert!(ratio <= 1.25, "{ratio:.2}x");
}

/// `hookpool listen` that takes 40,000 a second but whose queue filled in
/// the first 5 ms, before its workers ran: one push-back, and a pause of a
/// second. The rate that push-back set probes upwards and is out of the
/// way within half a second, rather than cap the rest of the run.
#[test]
fn a_fast_receiver_full_for_a_moment_is_not_held_back() {
    let queue = |start| Queue {
        cap: 64.0,
        rate: 40_000.0,
        queued: 0.0,
        start,
        rtt: FAST,
    };
    let alone = simulate(20_000, 8, &mut queue(Instant::now())).elapsed;
    let late = queue(Instant::now() + Duration::from_millis(5));
    let run = simulate(20_000, 8, &mut { late });
    println!(
        "{:?} against {alone:?} without push-back, {} pauses",
        run.elapsed, run.pauses
    );
    assert_eq!(run.pauses, 1);
    assert!(
        run.elapsed <= Duration::from_secs(1) + alone * 3,
        "{:?}",
        run.elapsed
    );
}
