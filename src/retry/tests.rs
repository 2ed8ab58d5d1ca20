use super::*;
use Retryability::{Permanent, Retry, RetryAfter};
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(7)
}

/// Parses against a fixed `now`, 2023-11-14T22:13:20Z.
fn parse(value: &str) -> Option<Duration> {
    parse_retry_after(value, SystemTime::UNIX_EPOCH + secs(1_700_000_000))
}

#[test]
fn seed_schedule_is_exact() {
    let policy = RetryPolicy::exponential(ms(500)).jitter(false);
    let mut backoff = policy.max_attempts(4).backoff(rng());
    assert_eq!(backoff.len(), 3);
    assert_eq!(
        backoff.by_ref().collect::<Vec<_>>(),
        [ms(500), ms(1000), ms(2000)]
    );
    assert_eq!((backoff.next(), backoff.len()), (None, 0));
}

#[test]
fn defaults_match_the_documentation() {
    let p = RetryPolicy::exponential(ms(100));
    assert_eq!((p.factor, p.max_delay, p.jitter), (2.0, secs(60), true));
    assert_eq!((p.attempts_limit(), p.elapsed_limit()), (5, None));
    assert_eq!(p.retry_after_limit(), secs(300));
    assert_eq!(RetryPolicy::none().backoff(rng()).count(), 0);
}

#[test]
fn jittered_schedule_is_exact_per_seed_and_bounded() {
    let policy = RetryPolicy::exponential(ms(500)).max_attempts(6);
    let a: Vec<_> = policy.backoff(rng()).collect();
    // Pins fastrand 2's generator; a change here means seeded schedules moved.
    let nanos: [u64; 5] = [
        386_690_902,
        718_290_409,
        232_961_182,
        3_166_518_085,
        1_109_752_335,
    ];
    assert_eq!(a, nanos.map(Duration::from_nanos));
    for (n, d) in (1..).zip(&a) {
        assert!(
            *d <= policy.unjittered(n),
            "delay after {n} attempts: {d:?}"
        );
    }
    assert_eq!(a, policy.backoff(rng()).collect::<Vec<_>>());
    assert_ne!(
        a,
        policy
            .backoff(fastrand::Rng::with_seed(8))
            .collect::<Vec<_>>()
    );
    // next_delay draws exactly what the iterator draws.
    let mut r = rng();
    let calls = (1..).map_while(|n| policy.next_delay(n, Retry, Duration::ZERO, &mut r));
    assert_eq!(a, calls.collect::<Vec<_>>());
}

#[test]
fn huge_attempt_counts_saturate_at_the_cap() {
    let policy = RetryPolicy::exponential(ms(500))
        .jitter(false)
        .max_attempts(u32::MAX);
    assert_eq!(policy.unjittered(u32::MAX - 1), secs(60));
    let last = policy.next_delay(u32::MAX - 1, Retry, Duration::ZERO, &mut rng());
    assert_eq!(last, Some(secs(60)));
    let uncapped = policy.clone().max_delay(Duration::MAX);
    assert_eq!(uncapped.unjittered(u32::MAX), Duration::MAX);
    let zero = RetryPolicy::exponential(Duration::ZERO).jitter(false);
    assert_eq!(zero.unjittered(u32::MAX), Duration::ZERO);
}

#[test]
fn bad_factors_and_zero_attempts_are_normalised() {
    for f in [0.0, 0.99, -2.0, f64::NAN, f64::INFINITY] {
        assert_eq!(RetryPolicy::default().factor(f).factor, 1.0, "{f}");
    }
    assert_eq!(RetryPolicy::default().factor(1.5).factor, 1.5);
    let once = RetryPolicy::default().max_attempts(0);
    assert_eq!(once.next_delay(0, Retry, Duration::ZERO, &mut rng()), None);
}

#[test]
fn next_delay_rules() {
    let p = RetryPolicy::exponential(ms(500))
        .jitter(false)
        .max_attempts(3);
    let next = |n, why| p.next_delay(n, why, Duration::ZERO, &mut rng());
    assert_eq!(next(0, Retry), Some(ms(500)));
    assert_eq!(next(1, Permanent), None);
    assert_eq!(next(3, RetryAfter(ms(1))), None);
    assert_eq!(next(1, RetryAfter(ms(7))), Some(ms(7)));
    assert_eq!(next(1, RetryAfter(Duration::ZERO)), Some(Duration::ZERO));
    assert_eq!(next(1, RetryAfter(Duration::MAX)), Some(secs(300)));
    // A Retry-After is exempt from jitter but not from the budget.
    let budget = p.clone().jitter(true).max_elapsed(Some(secs(10)));
    let next = |elapsed| budget.next_delay(1, RetryAfter(secs(4)), elapsed, &mut rng());
    assert_eq!(next(secs(6)), Some(secs(4)));
    assert_eq!(next(ms(6001)), None);
    assert_eq!(next(Duration::MAX), None);
}

#[test]
fn retry_after_delta_seconds() {
    assert_eq!(parse("120"), Some(secs(120)));
    assert_eq!(parse(" 3 "), Some(secs(3)));
    assert_eq!(parse("\t007\t"), Some(secs(7)));
    assert_eq!(parse("99999999999999999999999"), Some(secs(u64::MAX)));
}

#[test]
fn retry_after_rejects_garbage() {
    let bad = [
        "",
        "  ",
        "-5",
        "+5",
        "abc",
        "1.5",
        "12 s",
        "\u{663}",
        "Tue, 14 Nov 2023",
    ];
    for value in bad {
        assert_eq!(parse(value), None, "{value:?}");
    }
}

#[test]
fn retry_after_http_dates() {
    // IMF-fixdate, RFC 850 and asctime, two minutes after `now`.
    for date in [
        "Tue, 14 Nov 2023 22:15:20 GMT",
        "Tuesday, 14-Nov-23 22:15:20 GMT",
        "Tue Nov 14 22:15:20 2023",
    ] {
        assert_eq!(parse(date), Some(secs(120)), "{date}");
    }
    for past in [
        "Tue, 14 Nov 2023 22:13:20 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(parse(past), Some(Duration::ZERO), "{past}");
    }
}

proptest! {
    #[test]
    fn parse_retry_after_never_panics(s in any::<String>(), at in any::<u64>()) {
        let _ = parse(&s);
        let _ = parse_retry_after(&s, SystemTime::UNIX_EPOCH + secs(at >> 20));
    }

    #[test]
    fn digit_strings_round_trip(n in any::<u64>(), pad in "[ \t]{0,3}") {
        prop_assert_eq!(parse(&format!("{pad}{n}{pad}")), Some(secs(n)));
    }

    #[test]
    fn formatted_dates_round_trip(ahead in 0u64..10_000_000) {
        let date = SystemTime::UNIX_EPOCH + secs(1_700_000_000 + ahead);
        prop_assert_eq!(parse(&httpdate::fmt_http_date(date)), Some(secs(ahead)));
    }

    #[test]
    fn backoff_never_exceeds_the_cap(
        (base, factor, cap) in (1u64..10_000, 1.0f64..4.0, 1u64..120_000),
        (attempts, jitter, seed) in (0u32..=50, any::<bool>(), any::<u64>()),
    ) {
        let policy = RetryPolicy::exponential(ms(base)).factor(factor).max_delay(ms(cap));
        let policy = policy.max_attempts(attempts).jitter(jitter);
        let delays: Vec<_> = policy.backoff(fastrand::Rng::with_seed(seed)).collect();
        prop_assert_eq!(delays.len() as u32, attempts.max(1) - 1);
        prop_assert!(delays.iter().all(|d| *d <= ms(cap)), "{:?} > {}ms", delays, cap);
    }
}
