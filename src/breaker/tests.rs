use super::*;
use BreakerState::{Closed, HalfOpen, Open};
use Health::{Failure, Neutral, Success};
use proptest::prelude::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn tr(from: BreakerState, to: BreakerState) -> Option<Transition> {
    Some(Transition { from, to })
}

fn rejected(a: Admission) -> bool {
    matches!(a, Admission::Rejected { .. })
}

/// Threshold 2 and cooldown 10s, opened at `t0`.
fn opened(probes: u32, t0: Instant) -> Breaker {
    let cfg = BreakerConfig::default().failure_threshold(2);
    let mut b = Breaker::new(&cfg.cooldown(secs(10)).half_open_probes(probes));
    assert_eq!(b.record(Failure, false, t0), None);
    assert_eq!(b.record(Failure, false, t0), tr(Closed, Open));
    b
}

#[test]
fn closed_opens_on_consecutive_failures_only() {
    let t0 = Instant::now();
    let mut b = Breaker::new(&BreakerConfig::default().failure_threshold(3));
    for h in [
        Failure, Failure, Neutral, Success, Failure, Neutral, Failure,
    ] {
        assert_eq!(b.record(h, false, t0), None);
        assert_eq!(b.admit(t0), (Admission::Allowed, None));
    }
    assert_eq!(b.record(Failure, false, t0), tr(Closed, Open));
}

#[test]
fn open_rejects_until_cooldown_then_probe_decides() {
    let t0 = Instant::now();
    let mut b = opened(1, t0);
    let retry_at = t0 + secs(10);
    for t in [t0, retry_at - Duration::from_nanos(1)] {
        assert_eq!(b.admit(t), (Admission::Rejected { retry_at }, None));
    }
    assert_eq!(b.admit(retry_at), (Admission::Probe, tr(Open, HalfOpen)));
    let t1 = t0 + secs(25);
    assert_eq!(b.record(Failure, true, t1), tr(HalfOpen, Open));
    let retry_at = t1 + secs(10);
    assert_eq!(
        b.admit(t1 + secs(9)),
        (Admission::Rejected { retry_at }, None)
    );
    assert_eq!(b.admit(retry_at), (Admission::Probe, tr(Open, HalfOpen)));
    assert_eq!(b.record(Success, true, retry_at), tr(HalfOpen, Closed));
    // Closing reset the failure count.
    assert_eq!(b.record(Failure, false, retry_at), None);
    assert_eq!(b.state(), Closed);
}

#[test]
fn busy_half_open_rechecks_after_min_of_cooldown_and_one_second() {
    let t0 = Instant::now();
    let mut b = opened(1, t0);
    let t1 = t0 + secs(10);
    assert_eq!(b.admit(t1).0, Admission::Probe);
    let retry_at = t1 + secs(1);
    assert_eq!(b.admit(t1), (Admission::Rejected { retry_at }, None));
    let ms200 = Duration::from_millis(200);
    let mut b = Breaker::new(
        &BreakerConfig::default()
            .failure_threshold(1)
            .cooldown(ms200),
    );
    b.record(Failure, false, t0);
    assert_eq!(b.admit(t1).0, Admission::Probe);
    assert_eq!(
        b.admit(t1).0,
        Admission::Rejected {
            retry_at: t1 + ms200
        }
    );
}

#[test]
fn several_probes_and_neutral_results() {
    let t0 = Instant::now();
    let mut b = opened(3, t0);
    let t1 = t0 + secs(10);
    assert_eq!(b.admit(t1), (Admission::Probe, tr(Open, HalfOpen)));
    assert_eq!(b.admit(t1), (Admission::Probe, None));
    assert_eq!(b.admit(t1), (Admission::Probe, None));
    assert!(rejected(b.admit(t1).0));
    // A neutral probe frees its slot without deciding anything.
    assert_eq!(b.record(Neutral, true, t1), None);
    assert_eq!(b.admit(t1).0, Admission::Probe);
    assert_eq!(b.record(Success, true, t1), tr(HalfOpen, Closed));
    // The other probes' results land on a closed breaker like any result.
    assert_eq!(b.record(Success, true, t1), None);
    assert_eq!(b.record(Failure, true, t1), None);
    assert_eq!(b.state(), Closed);
}

#[test]
fn late_results_change_nothing() {
    let t0 = Instant::now();
    let mut b = opened(1, t0);
    for h in [Failure, Success, Neutral] {
        assert_eq!(b.record(h, false, t0 + secs(5)), None);
        assert_eq!(b.record(h, true, t0 + secs(5)), None);
    }
    // Still opened at t0: a late failure did not push the cooldown out.
    assert_eq!(
        b.admit(t0 + secs(10)),
        (Admission::Probe, tr(Open, HalfOpen))
    );
    for h in [Failure, Success, Neutral] {
        assert_eq!(b.record(h, false, t0 + secs(10)), None);
    }
    // Nor did a late neutral free the probe slot.
    assert!(rejected(b.admit(t0 + secs(10)).0));
    assert_eq!(b.state(), HalfOpen);
}

#[test]
fn threshold_zero_disables_and_config_is_normalised() {
    let t0 = Instant::now();
    let mut b = Breaker::new(&BreakerConfig::disabled());
    for i in 0..100 {
        assert_eq!(b.record(Failure, i % 2 == 0, t0), None);
        assert_eq!(b.admit(t0), (Admission::Allowed, None));
    }
    assert_eq!(b.state(), Closed);
    let cfg = BreakerConfig::default()
        .half_open_probes(0)
        .cooldown(Duration::MAX);
    assert_eq!(
        (cfg.probe_limit(), cfg.cooldown_period()),
        (1, MAX_COOLDOWN)
    );
    assert_eq!([Closed, Open].map(|s| s.to_string()), ["closed", "open"]);
}

#[test]
fn breakers_are_per_endpoint_and_snapshot_sorted() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Breakers>();
    let t0 = Instant::now();
    let map = Breakers::new(BreakerConfig::default().failure_threshold(1));
    let a = Endpoint::new("https", "b.example", 443);
    let b = Endpoint::new("HTTPS", "A.example", 443);
    assert_eq!(map.record(&a, Success, false, t0), None);
    assert!(map.snapshot().is_empty(), "a success must not insert");
    assert_eq!(map.admit(&b, t0), (Admission::Allowed, None));
    assert_eq!(map.record(&a, Failure, false, t0), tr(Closed, Open));
    assert!(rejected(map.admit(&a, t0).0));
    assert_eq!(map.admit(&b, t0).0, Admission::Allowed);
    assert_eq!(map.snapshot(), [(b, Closed), (a.clone(), Open)]);
    let counts = [Closed, Open, HalfOpen].map(|s| map.count_in(s));
    assert_eq!(counts, [1, 1, 0]);
    let off = Breakers::new(BreakerConfig::disabled());
    assert_eq!(off.record(&a, Failure, false, t0), None);
    assert_eq!(off.admit(&a, t0), (Admission::Allowed, None));
    assert!(off.snapshot().is_empty());
}

#[test]
fn breakers_forget_healthy_endpoints_but_never_failing_ones() {
    let t0 = Instant::now();
    let map = Breakers::new(BreakerConfig::default().failure_threshold(2));
    let failing: Vec<_> = (0..10)
        .map(|i| Endpoint::new("https", &format!("down{i}.example"), 443))
        .collect();
    for ep in &failing {
        map.record(ep, Failure, false, t0);
    }
    map.record(&failing[0], Failure, false, t0); // opens one, the rest count 1 failure
    // Ten thousand distinct healthy endpoints, one webhook each.
    for i in 0..10_000 {
        let ep = Endpoint::new("https", &format!("tenant{i}.example"), 443);
        assert_eq!(map.admit(&ep, t0).0, Admission::Allowed);
        assert_eq!(map.record(&ep, Success, false, t0), None);
    }
    assert!(map.len() <= crate::bounded::PRUNE_FROM, "{}", map.len());
    // Every failing endpoint kept its state.
    assert!(rejected(map.admit(&failing[0], t0).0));
    for ep in &failing[1..] {
        assert_eq!(map.record(ep, Failure, false, t0), tr(Closed, Open), "{ep}");
    }
    assert_eq!(map.count_in(Open), 10);
}

/// The specification restated as plainly as possible, time in ms after a base.
#[derive(Debug, Default)]
struct Model {
    threshold: u32,
    cooldown: u64,
    probes: u32,
    open: bool,
    half_open: bool,
    failures: u32,
    opened_at: u64,
    in_flight: u32,
}

impl Model {
    fn state(&self) -> BreakerState {
        match (self.open, self.half_open) {
            (true, _) => Open,
            (_, true) => HalfOpen,
            _ => Closed,
        }
    }

    /// `Ok(is_probe)` or `Err(retry_at)`, and the transition.
    fn admit(&mut self, t: u64) -> (Result<bool, u64>, Option<Transition>) {
        let mut change = None;
        if self.threshold > 0 && self.open {
            if t < self.opened_at + self.cooldown {
                return (Err(self.opened_at + self.cooldown), None);
            }
            (self.open, self.half_open, self.in_flight) = (false, true, 0);
            change = tr(Open, HalfOpen);
        }
        if !self.half_open {
            (Ok(false), change)
        } else if self.in_flight < self.probes.max(1) {
            self.in_flight += 1;
            (Ok(true), change)
        } else {
            (Err(t + self.cooldown.min(1000)), change)
        }
    }

    fn record(&mut self, h: Health, probe: bool, t: u64) -> Option<Transition> {
        let from = self.state();
        match (from, h) {
            _ if self.threshold == 0 => {}
            (Closed, Success) => self.failures = 0,
            (Closed, Failure) => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    (self.open, self.opened_at) = (true, t);
                }
            }
            (HalfOpen, Neutral) if probe => self.in_flight = self.in_flight.saturating_sub(1),
            (HalfOpen, Success) if probe => (self.half_open, self.failures) = (false, 0),
            (HalfOpen, Failure) if probe => {
                (self.half_open, self.open, self.opened_at) = (false, true, t)
            }
            _ => {}
        }
        let to = self.state();
        (from != to).then_some(Transition { from, to })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Admit,
    Record(Health),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let health = prop_oneof![Just(Success), Just(Failure), Just(Neutral)];
    // Whole tenths of a second, so deadlines are often hit exactly.
    let advance = (0u64..30).prop_map(|n| Op::Advance(n * 100));
    prop_oneof![Just(Op::Admit), health.prop_map(Op::Record), advance]
}

proptest! {
    #[test]
    fn breaker_matches_the_model(
        (threshold, cooldown, probes) in (0u32..4, (0u64..25).prop_map(|n| n * 100), 0u32..4),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let cfg = BreakerConfig::default().failure_threshold(threshold).half_open_probes(probes);
        let mut real = Breaker::new(&cfg.cooldown(Duration::from_millis(cooldown)));
        let mut model = Model { threshold, cooldown, probes, ..Model::default() };
        let base = Instant::now();
        let at = |ms| base + Duration::from_millis(ms);
        // Admitted requests not yet recorded; `true` marks a probe. Recording with
        // none pending stands for a stale result from before the breaker opened.
        let (mut t, mut pending) = (0u64, Vec::new());
        for op in ops {
            match op {
                Op::Advance(ms) => t += ms,
                Op::Admit => {
                    let (got, change) = real.admit(at(t));
                    let (want, want_change) = model.admit(t);
                    let want = match want {
                        Ok(true) => Admission::Probe,
                        Ok(false) => Admission::Allowed,
                        Err(retry) => Admission::Rejected { retry_at: at(retry) },
                    };
                    prop_assert_eq!((got, change), (want, want_change));
                    if !rejected(got) {
                        pending.push(got == Admission::Probe);
                    }
                }
                Op::Record(h) => {
                    let probe = pending.pop().unwrap_or(false);
                    prop_assert_eq!(real.record(h, probe, at(t)), model.record(h, probe, t));
                }
            }
            prop_assert_eq!(real.state(), model.state());
        }
    }
}
