//! Lanes and pacers: unit tests, and (in `simulation`) a lane against
//! receivers that push back, in virtual time.

mod estimate;
mod simulation;

use std::time::{Duration, Instant};

use super::*;

fn ep(host: &str) -> Endpoint {
    Endpoint::new("http", host, 80)
}

fn lanes(workers: usize, fixed: Option<usize>, max_parked: usize) -> Lanes<u32> {
    Lanes::new(workers, fixed, max_parked, RateLimits::default())
}

fn go<T: std::fmt::Debug>(e: Enter<T>) -> T {
    match e {
        Enter::Go(t) => t,
        other => panic!("expected Go, got {other:?}"),
    }
}

fn waits<T: std::fmt::Debug>(e: Enter<T>) -> Vec<Grant<T>> {
    match e {
        Enter::Wait(grants) => grants,
        other => panic!("expected Wait, got {other:?}"),
    }
}

fn items<T>(grants: Vec<Grant<T>>) -> Vec<T> {
    grants.into_iter().map(|g| g.item).collect()
}

const OK: Outcome = Outcome::Success;

/// Item `seq` (the item is its own seq) starts; the grants that gives.
fn started(b: &Lanes<u32>, ep: &Endpoint, seq: u64, now: Instant) -> Vec<Grant<u32>> {
    match b.start(ep, seq, seq as u32, now) {
        Ok((_, grants)) => grants,
        Err(entry) => panic!("{seq} did not start: {entry:?}"),
    }
}

// ---------------------------------------------------------------------------
// The bulkhead: in-flight ceilings and parking.
// ---------------------------------------------------------------------------

#[test]
fn one_endpoint_alone_may_use_every_worker() {
    let (b, t) = (lanes(4, None, 100), Instant::now());
    for i in 0..4 {
        go(b.enter(&ep("a"), i.into(), i, t));
    }
    assert!(waits(b.enter(&ep("a"), 4, 4, t)).is_empty());
    assert_eq!(b.parked(), 1);
}

#[test]
fn with_two_endpoints_each_gets_half_and_the_rest_wait_in_acceptance_order() {
    let (b, t) = (lanes(4, None, 100), Instant::now());
    go(b.enter(&ep("a"), 0, 0, t));
    go(b.enter(&ep("hang"), 1, 1, t));
    go(b.enter(&ep("hang"), 2, 2, t));
    assert!(waits(b.enter(&ep("hang"), 4, 4, t)).is_empty());
    // Accepted earlier, arrived later (a retry): it goes first.
    assert!(waits(b.enter(&ep("hang"), 3, 3, t)).is_empty());
    // The other endpoint is not held up.
    go(b.enter(&ep("a"), 5, 5, t));
    assert_eq!(b.parked(), 2);
    assert_eq!(items(b.finish(&ep("hang"), t, t, OK)), [3]);
    assert_eq!(items(b.finish(&ep("hang"), t, t, OK)), [4]);
    assert!(b.finish(&ep("hang"), t, t, OK).is_empty());
    assert_eq!(b.parked(), 0);
}

#[test]
fn a_fixed_ceiling_applies_from_the_start() {
    let (b, t) = (lanes(8, Some(1), 100), Instant::now());
    go(b.enter(&ep("a"), 0, 0, t));
    assert!(waits(b.enter(&ep("a"), 1, 1, t)).is_empty());
    assert_eq!(items(b.finish(&ep("a"), t, t, OK)), [1]);
    assert_eq!(lanes(8, Some(0), 100).cap(false), 1);
    assert_eq!(lanes(1, None, 100).cap(true), 1);
}

#[test]
fn each_endpoint_parks_at_most_max_parked_new_webhooks() {
    let (b, t) = (lanes(2, Some(1), 2), Instant::now());
    go(b.enter(&ep("hang"), 0, 0, t));
    assert!(b.has_room(&ep("hang")));
    waits(b.enter(&ep("hang"), 1, 1, t));
    waits(b.enter(&ep("hang"), 2, 2, t));
    assert!(!b.has_room(&ep("hang")), "two parked: full");
    assert!(b.has_room(&ep("ok")), "other endpoints are not refused");
    assert_eq!(items(b.finish(&ep("hang"), t, t, OK)), [1]);
    assert!(b.has_room(&ep("hang")));
}

#[test]
fn close_hands_back_the_parked_and_refuses_the_rest() {
    let (b, t) = (lanes(2, Some(1), 100), Instant::now());
    go(b.enter(&ep("a"), 0, 0, t));
    waits(b.enter(&ep("a"), 1, 1, t));
    go(b.enter(&ep("b"), 2, 2, t));
    waits(b.enter(&ep("b"), 3, 3, t));
    let mut back = b.close();
    back.sort_unstable();
    assert_eq!(back, vec![1, 3]);
    assert!(matches!(b.enter(&ep("a"), 4, 4, t), Enter::Closed(4)));
    assert!(
        b.finish(&ep("a"), t, t, OK).is_empty(),
        "nothing granted once closed"
    );
    assert!(matches!(
        b.push_back(&ep("a"), 5, 5, t, t, Duration::ZERO),
        Err(5)
    ));
}

// ---------------------------------------------------------------------------
// Push-back: pauses, cuts, slow start, pacing.
// ---------------------------------------------------------------------------

#[test]
fn a_pause_holds_the_whole_endpoint_and_keeps_acceptance_order() {
    let (b, t0) = (lanes(4, None, 100), Instant::now());
    let a = ep("a");
    for i in 0..4 {
        go(b.enter(&a, i, i as u32, t0));
    }
    // Request 2, sent at t0, is pushed back at t1 with Retry-After: 1 s.
    let (sec, t1) = (Duration::from_secs(1), t0 + Duration::from_millis(10));
    let (effect, grants) = b.push_back(&a, 2, 2, t0, t1, sec).unwrap();
    assert!(effect.new_pause && effect.added == sec);
    assert!(grants.is_empty(), "three still in flight: nothing granted");
    // New webhooks park, even with slots free.
    assert!(waits(b.enter(&a, 10, 10, t1)).is_empty());
    assert_eq!(b.paused_until(&a, t1), Some(t1 + sec));
    // The last in flight to finish hands the pause to the earliest accepted;
    // answers to requests sent before the pause do not grow slow start.
    assert!(b.finish(&a, t0, t1, OK).is_empty());
    assert!(b.finish(&a, t0, t1, OK).is_empty());
    let grants = b.finish(&a, t0, t1, OK);
    assert_eq!(grants.len(), 1, "one waits for the pause to end");
    assert_eq!((grants[0].item, grants[0].at), (2, t1 + sec));
    let t0 = t1;
    // When it starts, slow start allows only it in flight.
    assert!(started(&b, &a, 2, t0 + sec).is_empty());
    // Its success doubles the limit: the next one goes.
    assert_eq!(items(b.finish(&a, t0 + sec, t0 + sec, OK)), [10]);
    let snapshot = b.snapshot(t0 + sec);
    assert_eq!(snapshot[0].1.push_backs, 1);
    assert_eq!(snapshot[0].1.paused_total, sec);
}

/// At most one grant waits for a future time (see the module docs): a
/// grant due at once starting meanwhile reserves nothing ahead, so a rate
/// cut or a pause applies to everything not yet granted.
#[test]
fn only_the_pending_grant_starting_grants_the_next() {
    let rates = RateLimits {
        default: Some(10.0),
        ..RateLimits::default()
    };
    let (b, a, t0) = (Lanes::new(8, None, 100, rates), ep("a"), Instant::now());
    let ms = Duration::from_millis;
    let times = |grants: Vec<Grant<u32>>| -> Vec<(u32, Instant)> {
        grants.into_iter().map(|g| (g.item, g.at)).collect()
    };
    assert_eq!(times(waits(b.enter(&a, 0, 0, t0))), [(0, t0)]);
    assert_eq!(times(waits(b.enter(&a, 1, 1, t0))), [(1, t0 + ms(100))]);
    for i in 2..6 {
        assert!(waits(b.enter(&a, i.into(), i, t0)).is_empty());
    }
    // 1 starts late: the schedule starts again from now, so 2 may go at
    // once and 3 waits for its time.
    let t = t0 + ms(500);
    assert_eq!(times(started(&b, &a, 1, t)), [(2, t), (3, t + ms(100))]);
    assert!(
        started(&b, &a, 2, t).is_empty(),
        "a second grant would wait for a future time"
    );
    assert_eq!(times(started(&b, &a, 3, t + ms(100))), [(4, t + ms(200))]);
}

#[test]
fn a_granted_webhook_that_finds_a_new_pause_parks_again() {
    let (b, t0) = (lanes(1, None, 100), Instant::now());
    let a = ep("a");
    go(b.enter(&a, 0, 0, t0));
    let (_, grants) = b
        .push_back(&a, 0, 0, t0, t0, Duration::from_secs(1))
        .unwrap();
    assert_eq!(grants[0].at, t0 + Duration::from_secs(1));
    // Before its time, another push-back (a late answer) extends the pause.
    assert!(b.paused_until(&a, t0).is_some());
    let grants = match b.start(&a, 0, 0, t0) {
        Err(Enter::Wait(grants)) => grants,
        other => panic!("it started during a pause: {other:?}"),
    };
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].item, 0);
}

#[test]
fn the_first_push_back_cuts_both_limits_once_per_round() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    for i in 0..100 {
        p.record(OK, t0, t0 + Duration::from_millis(i * 10), 8, 8);
    }
    let t1 = t0 + Duration::from_secs(1);
    let push_back = Outcome::PushBack {
        pause: Duration::ZERO,
    };
    p.record(push_back, t0, t1, 8, 8);
    let (limit, rate) = (p.in_flight_limit(8), p.rate().unwrap());
    assert_eq!(limit, 5, "8 in flight, cut by 0.7");
    // 90 accepted in the last second (the first 10 fell out of the window),
    // halved: the first cut comes after an unpaced burst.
    assert!((rate - 90.0 * pacer::FIRST_RATE_CUT).abs() < 1e-9, "{rate}");
    // Three more of the same round are pushed back: it accepted 4 of the 8,
    // so the limit goes to 4, and the rate stays.
    for _ in 0..3 {
        p.record(push_back, t0, t1, 8, 8);
    }
    assert_eq!((p.in_flight_limit(8), p.rate()), (4, Some(rate)));
    assert_eq!(p.push_backs, 4);
    // A timeout of a request sent after the cut cuts again.
    let t2 = t1 + Duration::from_millis(1);
    p.record(Outcome::Timeout, t2, t2, 4, 8);
    assert_eq!(p.in_flight_limit(8), 2);
}

#[test]
fn a_round_pushed_back_whole_is_not_a_concurrency_limit() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    let push_back = Outcome::PushBack {
        pause: Duration::ZERO,
    };
    for _ in 0..8 {
        p.record(push_back, t0, t0, 8, 8);
    }
    assert_eq!(p.in_flight_limit(8), 5, "only the cut by 0.7");
}

/// A round pushed back whole, with a pause: the limit grows back to just
/// below the 8 that were in flight by round, not at the slow pace past it
/// (answers of the round counted down to 1 on the way).
#[test]
fn after_a_round_pushed_back_whole_the_limit_grows_back_quickly() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    let push_back = Outcome::PushBack {
        pause: Duration::from_secs(1),
    };
    for _ in 0..8 {
        p.record(push_back, t0, t0, 8, 8);
    }
    let mut now = t0 + Duration::from_secs(1);
    for _ in 0..40 {
        now += Duration::from_micros(250);
        p.record(OK, now, now, 5, 8);
    }
    assert_eq!(p.in_flight_limit(8), 7, "within a second");
}

/// A first push-back within `EARLY` of the first send (a burst, or a
/// receiver whose queue was full while it started) sets a rate that only
/// probes: it doubles while it binds and, past what the receiver took
/// before the push-back, is dropped, so a fast receiver is not held back.
#[test]
fn an_early_first_push_back_leaves_no_cap() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    let step = Duration::from_micros(50);
    let mut now = t0;
    // 64 accepted in 3.2 ms (20,000/s), then a push-back.
    for _ in 0..64 {
        p.went(now);
        p.record(OK, now, now, 1, 8);
        now += step;
    }
    p.went(now);
    p.record(
        Outcome::PushBack {
            pause: Duration::from_secs(1),
        },
        now,
        now,
        1,
        8,
    );
    let set = p.rate().unwrap();
    assert!(set < 20_000.0, "{set}");
    let resume = now + Duration::from_secs(1);
    now = resume;
    while p.rate().is_some() && now < resume + Duration::from_secs(5) {
        now = p.reserve(now);
        p.record(OK, now, now, 1, 8);
    }
    assert_eq!(p.rate(), None, "no cap after {:?}", now - resume);
    assert!(
        now - resume < pacer::PROBE_DOUBLING * 8,
        "{:?}",
        now - resume
    );
}

/// A rate set from an estimate grows slowly up to it, and ten times slower
/// past it: it is a lower bound on the receiver's rate, and each overshoot
/// costs a whole `Retry-After`.
#[test]
fn a_rate_set_from_an_estimate_grows_slowly() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    let pause = Outcome::PushBack {
        pause: Duration::from_secs(1),
    };
    // A burst of 1,000 in 25 ms, pushed back.
    let mut now = t0;
    for _ in 0..1000 {
        p.went(now);
        p.record(OK, now, now, 1, 8);
        now += Duration::from_micros(25);
    }
    p.went(now);
    p.record(pause, now, now, 1, 8);
    // After the pause, 1,300 accepted in 150 ms, then pushed back: 300
    // more than the burst in 125 ms more, 2,400 a second.
    now += Duration::from_secs(1);
    let step = Duration::from_millis(150) / 1300;
    for _ in 0..1300 {
        p.went(now);
        p.record(OK, now, now, 1, 8);
        now += step;
    }
    let pushed = p.rate().unwrap();
    p.went(now);
    p.record(pause, now, now, 1, 8);
    let set = p.rate().unwrap();
    assert!(
        set <= pushed * pacer::MOST_OF_PUSHED_BACK,
        "{pushed} -> {set}"
    );
    let estimate = 2400.0 * pacer::ESTIMATE_MARGIN;
    assert!((set - estimate).abs() < 0.01 * estimate, "{set}");
    // Ten seconds at it: a few percent more, not 30%.
    now += Duration::from_secs(1);
    let resume = now;
    while now < resume + Duration::from_secs(10) {
        now = p.reserve(now);
        p.record(OK, now, now, 1, 8);
    }
    let grown = p.rate().unwrap() / set;
    assert!(grown > 1.01 && grown < 1.06, "{grown}");
}

#[test]
fn a_configured_rate_spaces_sends_evenly() {
    let mut p = Pacer::new(Some(100.0));
    let t0 = Instant::now();
    let sends: Vec<_> = (0..5).map(|_| p.reserve(t0) - t0).collect();
    assert_eq!(sends, [0, 10, 20, 30, 40].map(Duration::from_millis));
    // A push-back never raises it above the configured rate.
    for i in 0..1000 {
        p.record(OK, t0, t0 + Duration::from_micros(i * 100), 1, 8);
    }
    p.record(
        Outcome::PushBack {
            pause: Duration::ZERO,
        },
        t0,
        t0 + Duration::from_millis(100),
        1,
        8,
    );
    assert_eq!(p.rate(), Some(100.0));
}

/// The builder takes any positive finite rate: one so small that twice its
/// interval overflows a `Duration` (or its send time an `Instant`) waits a
/// year instead of panicking under the lanes' lock with a webhook already
/// taken off its lane.
#[test]
fn a_tiny_configured_rate_waits_a_year_and_never_overflows() {
    let year = Duration::from_secs(365 * 24 * 3600);
    for rate in [1e-19, 2e-19, 1e-12] {
        let rates = RateLimits {
            default: Some(rate),
            ..RateLimits::default()
        };
        let (b, a, t) = (Lanes::new(4, None, 100, rates), ep("a"), Instant::now());
        let first = waits(b.enter(&a, 0, 0, t));
        assert_eq!((first.len(), first[0].at), (1, t), "{rate}");
        let second = waits(b.enter(&a, 1, 1, t));
        assert_eq!((second.len(), second[0].at), (1, t + year), "{rate}");
        assert!(waits(b.enter(&a, 2, 2, t)).is_empty());
        assert_eq!(items(started(&b, &a, 1, t + year)).len(), 1, "{rate}");
    }
}

#[test]
fn a_rate_cut_to_the_floor_recovers() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    p.record(
        Outcome::PushBack {
            pause: Duration::ZERO,
        },
        t0,
        t0,
        1,
        8,
    );
    assert_eq!(
        p.rate(),
        Some(pacer::MIN_RATE),
        "nothing sent or accepted yet"
    );
    // A minute of sending at the rate, every send accepted, raises it by at
    // least 1/s a second.
    let mut now = t0;
    while now < t0 + Duration::from_secs(60) {
        now = p.reserve(now);
        p.record(Outcome::Success, now, now + Duration::from_millis(1), 1, 8);
    }
    assert!(p.rate().unwrap() >= 50.0, "{:?}", p.rate());
}

#[test]
fn learned_pace_is_forgotten_after_quiet() {
    let mut p = Pacer::new(None);
    let t0 = Instant::now();
    assert!(p.is_forgettable(t0), "nothing learned");
    p.record(
        Outcome::PushBack {
            pause: Duration::from_secs(1),
        },
        t0,
        t0,
        1,
        8,
    );
    assert!(!p.is_forgettable(t0), "paused");
    assert!(!p.is_forgettable(t0 + Duration::from_secs(2)), "learned");
    assert!(p.is_forgettable(t0 + pacer::FORGET_AFTER));
}
