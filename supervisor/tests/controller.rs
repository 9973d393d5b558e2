//! The controller driven by hand-built sample sequences on a fake clock: one
//! test per rule, guard and reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_supervisor::sim::Rng;
use tidepool_supervisor::{
    Action, ConfigError, Controller, Decision, Direction, PoolAutoscale, Pressure, Reason, Signals,
    Target, Tuning,
};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Rails [2, 10], window 10 s, cooldown 5 s, step 1, target 5 ms.
fn cfg() -> PoolAutoscale {
    PoolAutoscale {
        enabled: true,
        min: 2,
        max: 10,
        window: 10 * S,
        ..PoolAutoscale::default()
    }
}

/// A fake clock and a controller, fed one sample per second.
struct Rig {
    c: Controller,
    t0: Instant,
    now: Duration,
}

impl Rig {
    fn new(cfg: PoolAutoscale, start: usize) -> Self {
        Rig {
            c: Controller::new(cfg, start),
            t0: Instant::now(),
            now: Duration::ZERO,
        }
    }

    fn with_tuning(cfg: PoolAutoscale, start: usize, tuning: Tuning) -> Self {
        Rig {
            c: Controller::with_tuning(cfg, start, tuning),
            ..Rig::new(PoolAutoscale::default(), 1)
        }
    }

    /// Feeds `n` one-second ticks of `s` (with `max_open` kept current) and
    /// returns every decision.
    fn feed(&mut self, s: &Signals, n: usize) -> Vec<Decision> {
        (0..n)
            .map(|_| {
                self.now += S;
                let mut s = s.clone();
                s.max_open = self.c.max_open();
                s.tick = S;
                self.c.step(self.t0 + self.now, &s)
            })
            .collect()
    }

    /// Feeds until the first resize (at most `n` ticks); returns it with the
    /// number of ticks it took.
    fn until_resize(&mut self, s: &Signals, n: usize) -> Option<(usize, Decision)> {
        for i in 1..=n {
            let d = self.feed(s, 1).remove(0);
            if d.action != Action::Hold {
                return Some((i, d));
            }
        }
        None
    }
}

/// A pool of `open` connections, all busy, with `waiting` queued and the
/// given acquire-wait p99.
fn starved(open: usize, waiting: usize, wait: Duration) -> Signals {
    Signals {
        open,
        in_use: open,
        idle: 0,
        waiting,
        acquire_wait_p99: wait,
        query_p99: 4 * MS,
        completed: 1000,
        ..Signals::default()
    }
}

/// A pool of `open` connections of which `idle` are idle, nobody waiting.
fn idle(open: usize, idle: usize) -> Signals {
    Signals {
        open,
        in_use: open - idle,
        idle,
        waiting: 0,
        acquire_wait_p99: Duration::ZERO,
        query_p99: 4 * MS,
        completed: 500,
        ..Signals::default()
    }
}

fn resize(d: &Decision) -> Option<(usize, usize)> {
    match d.action {
        Action::Resize { from, to } => Some((from, to)),
        Action::Hold => None,
    }
}

// ---------------------------------------------------------------- validate

#[test]
fn defaults_are_documented_values_and_valid() {
    let d = PoolAutoscale::default();
    assert!(!d.enabled);
    assert_eq!((d.min, d.max, d.step), (1, 32, 1));
    assert_eq!((d.window, d.cooldown), (30 * S, 5 * S));
    assert!(matches!(d.target, Target::AcquireWaitP99(t) if t == 5 * MS));
    assert_eq!(d.validate(10, 0), Ok(()));
    assert_eq!(d.validate(10, 1), Ok(()));
}

#[test]
fn validate_rejects_each_bad_field_by_name() {
    let base = cfg();
    let cases: Vec<(PoolAutoscale, usize, ConfigError, &str)> = vec![
        (
            PoolAutoscale {
                min: 8,
                max: 4,
                ..base.clone()
            },
            0,
            ConfigError::MinAboveMax { min: 8, max: 4 },
            "autoscale.min (8) is above autoscale.max (4)",
        ),
        (
            PoolAutoscale {
                min: 0,
                max: 0,
                ..base.clone()
            },
            0,
            ConfigError::MaxZero,
            "autoscale.max",
        ),
        (
            PoolAutoscale {
                min: 0,
                ..base.clone()
            },
            2,
            ConfigError::MinZeroWithMinIdle { min_idle: 2 },
            "autoscale.min is 0 but the pool keeps min_idle = 2",
        ),
        (
            PoolAutoscale {
                window: Duration::ZERO,
                ..base.clone()
            },
            0,
            ConfigError::ZeroWindow,
            "autoscale.window",
        ),
        (
            PoolAutoscale {
                step: 0,
                ..base.clone()
            },
            0,
            ConfigError::ZeroStep,
            "autoscale.step",
        ),
        (
            PoolAutoscale {
                target: Target::AcquireWaitP99(Duration::ZERO),
                ..base.clone()
            },
            0,
            ConfigError::ZeroAcquireWaitTarget,
            "AcquireWaitP99",
        ),
    ];
    for (c, min_idle, err, text) in cases {
        let got = c.validate(5, min_idle).unwrap_err();
        assert_eq!(got, err);
        assert!(got.to_string().contains(text), "{got}");
    }
}

#[test]
fn validate_rejects_nan_and_out_of_range_idle_ratios() {
    for r in [f64::NAN, -0.1, 0.0, 1.0, 1.5, f64::INFINITY] {
        let c = PoolAutoscale {
            target: Target::IdleRatio(r),
            ..cfg()
        };
        let err = c.validate(5, 0).unwrap_err();
        assert!(
            matches!(err, ConfigError::IdleRatioOutOfRange { .. }),
            "{r}: {err:?}"
        );
        assert!(
            err.to_string().contains("autoscale.target IdleRatio"),
            "{err}"
        );
    }
    let ok = PoolAutoscale {
        target: Target::IdleRatio(0.3),
        ..cfg()
    };
    assert_eq!(ok.validate(5, 0), Ok(()));
}

#[test]
fn min_zero_is_fine_without_min_idle_and_start_outside_rails_is_clamped() {
    let c = PoolAutoscale { min: 0, ..cfg() };
    assert_eq!(c.validate(5, 0), Ok(()));
    // Not an error: clamped onto the rails.
    assert_eq!(cfg().validate(100, 0), Ok(()));
    assert_eq!(cfg().validate(0, 0), Ok(()));
    assert_eq!(Controller::new(cfg(), 100).max_open(), 10);
    assert_eq!(Controller::new(cfg(), 0).max_open(), 2);
    assert_eq!(Controller::new(cfg(), 7).max_open(), 7);
}

#[test]
fn custom_target_debug_prints_custom() {
    let t = Target::Custom(Arc::new(|_: &Signals| Pressure::Hold));
    assert_eq!(format!("{t:?}"), "Custom");
    assert_eq!(format!("{:?}", Target::IdleRatio(0.5)), "IdleRatio(0.5)");
}

// ---------------------------------------------------------------- rules

#[test]
fn disabled_never_resizes() {
    let mut r = Rig::new(
        PoolAutoscale {
            enabled: false,
            ..cfg()
        },
        4,
    );
    for d in r.feed(&starved(4, 10, 50 * MS), 60) {
        assert_eq!(d.action, Action::Hold);
        assert_eq!(d.reason, Reason::Disabled);
        assert_eq!(d.reason.to_string(), "disabled");
    }
    assert_eq!(r.c.max_open(), 4);
}

#[test]
fn grows_after_a_full_window_of_high_acquire_wait() {
    let mut r = Rig::new(cfg(), 4);
    let ds = r.feed(&starved(4, 6, 20 * MS), 10);
    for d in &ds[..9] {
        assert_eq!(d.action, Action::Hold);
        assert!(matches!(d.reason, Reason::Warmup { .. }), "{}", d.reason);
    }
    assert_eq!(ds[4].reason.to_string(), "window filling 5s/10s");
    assert_eq!(resize(&ds[9]), Some((4, 5)));
    assert_eq!(
        ds[9].reason.to_string(),
        "acquire_wait_p99 20ms>5ms for 10s"
    );
    assert_eq!(r.c.max_open(), 5);
}

#[test]
fn a_fleet_lease_stops_growth_and_says_so() {
    let mut r = Rig::new(cfg(), 4);
    let leased = Signals {
        ceiling: Some(5),
        ..starved(4, 6, 20 * MS)
    };
    let ds = r.feed(&leased, 10);
    assert_eq!(resize(&ds[9]), Some((4, 5)), "up to the lease");
    let ds = r.feed(
        &Signals {
            ceiling: Some(5),
            ..starved(5, 6, 20 * MS)
        },
        20,
    );
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    let last = &ds[19];
    assert!(
        matches!(last.reason, Reason::AtLease { lease: 5 }),
        "{}",
        last.reason
    );
    assert_eq!(last.reason.to_string(), "at the fleet lease (5)");
    assert_eq!(r.c.max_open(), 5);
}

#[test]
fn most_of_the_window_is_enough_but_a_spike_is_not() {
    // Three quiet ticks in ten still count as sustained (two thirds) ...
    let mut r = Rig::new(cfg(), 4);
    r.feed(&starved(4, 6, 20 * MS), 5);
    r.feed(&starved(4, 0, Duration::ZERO), 3);
    let ds = r.feed(&starved(4, 6, 20 * MS), 2);
    assert_eq!(resize(&ds[1]), Some((4, 5)));

    // ... four are not, and neither is a two-tick spike.
    let mut r = Rig::new(cfg(), 4);
    r.feed(&starved(4, 6, 20 * MS), 6);
    let ds = r.feed(&starved(4, 0, Duration::ZERO), 4);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    let mut r = Rig::new(cfg(), 4);
    r.feed(&idle(4, 1), 20);
    let ds = r.feed(&starved(4, 3, 40 * MS), 2);
    let ds2 = r.feed(&idle(4, 1), 20);
    assert!(ds.iter().chain(&ds2).all(|d| d.action == Action::Hold));
}

#[test]
fn keeps_growing_at_cooldown_pace_while_still_short() {
    let mut r = Rig::new(cfg(), 4);
    let (ticks, _) = r.until_resize(&starved(4, 20, 50 * MS), 20).unwrap();
    assert_eq!(ticks, 10, "the first step needs a full window");
    let (ticks, d) = r.until_resize(&starved(5, 20, 50 * MS), 20).unwrap();
    assert_eq!(ticks, 5, "the next needs only the cooldown");
    assert_eq!(resize(&d), Some((5, 6)));
    assert_eq!(d.reason.to_string(), "acquire_wait_p99 50ms>5ms for 5s");
}

#[test]
fn shrinks_when_idle_for_the_window_and_nobody_waits() {
    let mut r = Rig::new(cfg(), 8);
    let (ticks, d) = r.until_resize(&idle(8, 6), 30).unwrap();
    assert_eq!(ticks, 10);
    assert_eq!(resize(&d), Some((8, 7)));
    assert_eq!(d.reason.to_string(), "idle_ratio 0.75>0.50 for 10s");
    // A shrink always waits for a full window again.
    let (ticks, _) = r.until_resize(&idle(7, 6), 30).unwrap();
    assert_eq!(ticks, 10);
}

#[test]
fn a_single_waiter_or_a_moderate_wait_blocks_shrinking() {
    let mut r = Rig::new(cfg(), 8);
    r.feed(&idle(8, 6), 9);
    let mut one = idle(8, 6);
    one.waiting = 1;
    r.feed(&one, 1);
    let ds = r.feed(&idle(8, 6), 9);
    assert!(ds.iter().all(|d| d.action == Action::Hold));

    // 3 ms is under the 5 ms target but above the 2.5 ms no-pressure band.
    let mut r = Rig::new(cfg(), 8);
    let mut s = idle(8, 6);
    s.acquire_wait_p99 = 3 * MS;
    let ds = r.feed(&s, 30);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    assert!(matches!(ds[29].reason, Reason::WithinBand { .. }));
    assert_eq!(
        ds[29].reason.to_string(),
        "within band (acquire_wait_p99 3ms, idle_ratio 0.75)"
    );
}

#[test]
fn never_shrinks_into_the_grow_band() {
    // 6 open, 1 in use: shrinking by 3 would leave 2 spare connections for
    // a load of ~1 (its upper bound over ten samples is ~1.6), fewer than
    // the 2·sqrt(load) square-root staffing asks for; by 1 is fine.
    let mut r = Rig::new(
        PoolAutoscale {
            step: 3,
            min: 1,
            ..cfg()
        },
        6,
    );
    let ds = r.feed(&idle(6, 5), 40);
    assert!(
        ds.iter().all(|d| d.action == Action::Hold),
        "{:?}",
        ds.last()
    );
    let mut r = Rig::new(PoolAutoscale { min: 1, ..cfg() }, 6);
    assert!(r.until_resize(&idle(6, 5), 20).is_some());
    // Never below what was in use at any sample of the window.
    let mut r = Rig::new(PoolAutoscale { min: 1, ..cfg() }, 8);
    r.feed(&idle(8, 7), 9);
    let ds = r.feed(&idle(8, 0), 1);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
}

#[test]
fn idle_connections_never_count_as_demand() {
    // IdleRatio target: waiters while connections sit idle (a slow hand-off,
    // a burst between samples) are not starvation.
    let c = PoolAutoscale {
        target: Target::IdleRatio(0.5),
        ..cfg()
    };
    let mut r = Rig::new(c, 4);
    let mut s = idle(4, 1);
    s.waiting = 5;
    s.acquire_wait_p99 = 50 * MS;
    let ds = r.feed(&s, 60);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    // And a mostly idle pool never grows whatever its open count.
    let mut r = Rig::new(cfg(), 4);
    let ds = r.feed(&idle(4, 4), 60);
    assert!(ds.iter().all(|d| resize(d).is_none_or(|(f, t)| t < f)));
}

#[test]
fn idle_ratio_target_grows_when_starved_and_shrinks_above_its_mark() {
    let c = PoolAutoscale {
        target: Target::IdleRatio(0.3),
        ..cfg()
    };
    let mut r = Rig::new(c.clone(), 4);
    let (_, d) = r.until_resize(&starved(4, 7, Duration::ZERO), 20).unwrap();
    assert_eq!(resize(&d), Some((4, 5)));
    assert_eq!(
        d.reason.to_string(),
        "idle_ratio 0.00 with 7 waiting for 10s"
    );

    let mut r = Rig::new(c, 10);
    let (_, d) = r.until_resize(&idle(10, 7), 20).unwrap();
    assert_eq!(resize(&d), Some((10, 9)));
    assert_eq!(d.reason.to_string(), "idle_ratio 0.70>0.30 for 10s");
}

#[test]
fn custom_target_is_obeyed_with_the_same_timing_and_rails() {
    let c = PoolAutoscale {
        target: Target::Custom(Arc::new(|s: &Signals| {
            if s.waiting > 2 {
                Pressure::Grow
            } else if s.idle > 4 {
                Pressure::Shrink
            } else {
                Pressure::Hold
            }
        })),
        ..cfg()
    };
    let mut r = Rig::new(c.clone(), 4);
    let (ticks, d) = r.until_resize(&starved(4, 3, Duration::ZERO), 20).unwrap();
    assert_eq!((ticks, resize(&d)), (10, Some((4, 5))));
    assert_eq!(d.reason.to_string(), "custom signal: grow for 10s");
    let mut r = Rig::new(c, 9);
    let (_, d) = r.until_resize(&idle(9, 6), 20).unwrap();
    assert_eq!(resize(&d), Some((9, 8)));
    assert_eq!(d.reason.to_string(), "custom signal: shrink for 10s");
}

#[test]
fn rails_hold_with_at_max_and_at_min() {
    let mut r = Rig::new(cfg(), 10);
    let ds = r.feed(&starved(10, 9, 30 * MS), 15);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    assert_eq!(ds[14].reason, Reason::AtMax { max: 10 });
    assert_eq!(ds[14].reason.to_string(), "at max (10)");

    let mut r = Rig::new(cfg(), 2);
    let ds = r.feed(&idle(2, 2), 15);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    assert_eq!(ds[14].reason.to_string(), "at min (2)");

    // A big step stops at the rail.
    let mut r = Rig::new(PoolAutoscale { step: 4, ..cfg() }, 8);
    let (_, d) = r.until_resize(&starved(8, 9, 30 * MS), 20).unwrap();
    assert_eq!(resize(&d), Some((8, 10)));
}

#[test]
fn cooldown_spaces_changes_in_both_directions() {
    let c = PoolAutoscale {
        cooldown: 25 * S,
        ..cfg()
    };
    let mut r = Rig::new(c, 4);
    let (_, d) = r.until_resize(&starved(4, 9, 30 * MS), 20).unwrap();
    assert_eq!(resize(&d), Some((4, 5)));
    let ds = r.feed(&starved(5, 9, 30 * MS), 12);
    assert_eq!(ds[11].reason, Reason::Cooldown { left: 13 * S });
    assert_eq!(ds[11].reason.to_string(), "cooldown 13s left");
    // The opposite direction waits too.
    let mut r = Rig::new(
        PoolAutoscale {
            cooldown: 25 * S,
            ..cfg()
        },
        4,
    );
    r.until_resize(&starved(4, 9, 30 * MS), 20).unwrap();
    let (ticks, d) = r.until_resize(&idle(5, 5), 40).unwrap();
    assert_eq!(resize(&d), Some((5, 4)));
    assert_eq!(ticks, 25);
}

#[test]
fn error_guard_blocks_growth_while_the_database_fails() {
    let mut r = Rig::new(cfg(), 4);
    let mut s = starved(4, 9, 50 * MS);
    s.completed = 900;
    s.errors = 60;
    s.timeouts = 40;
    let ds = r.feed(&s, 30);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    assert!(matches!(ds[29].reason, Reason::ErrorGuard { .. }));
    assert_eq!(ds[29].reason.to_string(), "error_guard: error rate 10%>5%");
    // Under the limit, it grows.
    let mut r = Rig::new(cfg(), 4);
    s.errors = 20;
    s.timeouts = 0;
    assert!(r.until_resize(&s, 20).is_some());
}

#[test]
fn error_guard_sees_a_database_that_just_started_failing() {
    // 4.8% over the window, but 9% over the last cooldown (5 s).
    let mut r = Rig::new(cfg(), 4);
    r.feed(&starved(4, 9, 50 * MS), 8);
    let mut failing = starved(4, 9, 50 * MS);
    failing.errors = 250;
    let ds = r.feed(&failing, 2);
    assert_eq!(ds[1].action, Action::Hold);
    assert_eq!(ds[1].reason.to_string(), "error_guard: error rate 9.1%>5%");
}

#[test]
fn latency_guard_holds_growth_when_queries_suddenly_slow_down() {
    let mut r = Rig::new(cfg(), 4);
    r.feed(&starved(4, 9, 50 * MS), 7);
    let mut slow = starved(4, 9, 50 * MS);
    slow.query_p99 = 20 * MS;
    let ds = r.feed(&slow, 3);
    assert_eq!(ds[2].action, Action::Hold);
    assert_eq!(
        ds[2].reason.to_string(),
        "latency_guard: query_p99 20ms is 5.0x the window's 4ms"
    );
    assert_eq!(ds[2].reason.kind(), "latency_guard");
    // Once the slowdown is the window's own level, growth is judged again
    // (and, if it does not pay, the saturation guard takes it back).
    let (_, d) = r.until_resize(&slow, 20).unwrap();
    assert_eq!(resize(&d), Some((4, 5)));
}

#[test]
fn saturation_guard_reverts_a_growth_that_only_made_queries_slower() {
    let mut r = Rig::new(cfg(), 6);
    let before = starved(6, 9, 40 * MS);
    let (_, d) = r.until_resize(&before, 20).unwrap();
    assert_eq!(resize(&d), Some((6, 7)));
    // One more connection: the same throughput, queries 40% slower.
    let mut after = starved(7, 9, 40 * MS);
    after.completed = 995;
    after.query_p99 = before.query_p99.mul_f64(1.4);
    let (ticks, d) = r.until_resize(&after, 20).unwrap();
    // Slower queries stop the cooldown-paced follow-up: the next decision
    // comes with the full window, and it is the guard's.
    assert_eq!(ticks, 10);
    assert_eq!(resize(&d), Some((7, 6)));
    assert!(matches!(d.reason, Reason::SaturationGuard { added: 1, .. }));
    assert_eq!(
        d.reason.to_string(),
        "saturation_guard: +1 conns gave -1% throughput while query_p99 +40%"
    );
    assert_eq!(r.c.state().saturation_trips, 1);
    // Growth is now paused, however short the pool looks.
    let ds = r.feed(&starved(6, 9, 40 * MS), 30);
    assert!(ds.iter().all(|d| resize(d).is_none_or(|(f, t)| t < f)));
    let last = ds.last().unwrap();
    assert!(
        matches!(last.reason, Reason::SaturationBackoff { .. }),
        "{}",
        last.reason
    );
    assert!(last
        .reason
        .to_string()
        .starts_with("saturation_guard: growth paused, 4m"));
    assert_eq!(last.reason.kind(), "saturation_backoff");
}

#[test]
fn saturation_guard_steps_back_further_while_that_costs_nothing() {
    let mut r = Rig::new(cfg(), 8);
    r.until_resize(&starved(8, 9, 40 * MS), 20).unwrap();
    let mut worse = starved(9, 9, 40 * MS);
    worse.query_p99 = 8 * MS;
    let (_, d) = r.until_resize(&worse, 20).unwrap();
    assert_eq!(resize(&d), Some((9, 8)));
    // Back at 8: as much done, queries much faster, still short.
    let mut better = starved(8, 9, 40 * MS);
    better.query_p99 = 5 * MS;
    let (ticks, d) = r.until_resize(&better, 20).unwrap();
    assert_eq!(ticks, 10);
    assert_eq!(resize(&d), Some((8, 7)));
    assert_eq!(
        d.reason.to_string(),
        "saturation_guard: -1 conns kept throughput (+0%) and query_p99 -38%, stepping back"
    );
    // At 7 throughput drops: the knee is found, no further step.
    let mut lower = starved(7, 9, 40 * MS);
    lower.completed = 880;
    lower.query_p99 = 4 * MS;
    let ds = r.feed(&lower, 30);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
}

#[test]
fn growth_that_pays_is_not_judged_saturated() {
    let mut r = Rig::new(cfg(), 6);
    r.until_resize(&starved(6, 9, 40 * MS), 20).unwrap();
    let mut after = starved(7, 9, 40 * MS);
    after.completed = 1160;
    after.query_p99 = 4 * MS + MS / 2;
    // Keeps growing at cooldown pace up to the rail, never reverts.
    let ds = r.feed(&after, 40);
    let sizes: Vec<_> = ds.iter().filter_map(resize).collect();
    assert_eq!(sizes, [(7, 8), (8, 9), (9, 10)]);
    assert_eq!(r.c.max_open(), 10);
    assert_eq!(r.c.state().saturation_trips, 0);
}

/// Alternates between a starved pool for one window (one growth at its
/// end) and an idle one long enough for the idle-ratio EWMA to pass the mark
/// and then hold above it for a window (one shrink).
fn flap(r: &mut Rig, rounds: usize) -> Vec<Decision> {
    let mut out = Vec::new();
    for i in 0..rounds {
        let open = r.c.max_open();
        let (s, n) = if i % 2 == 0 {
            (starved(open, 9, 30 * MS), 10)
        } else {
            (idle(open, open), 12)
        };
        out.extend(
            r.feed(&s, n)
                .into_iter()
                .filter(|d| d.action != Action::Hold),
        );
    }
    out
}

#[test]
fn oscillation_lock_after_three_reversals_in_five_minutes() {
    // Grow, shrink, grow, and the shrink that would be the third reversal is
    // refused: the lock starts at the larger size and holds shrinking.
    let mut r = Rig::new(cfg(), 5);
    let changes = flap(&mut r, 4);
    let sizes: Vec<_> = changes.iter().filter_map(resize).collect();
    assert_eq!(sizes, [(5, 6), (6, 5), (5, 6)], "{changes:#?}");
    let st = r.c.state();
    assert_eq!(
        (st.oscillation_locks, st.direction_changes),
        (1, 2),
        "{st:?}"
    );
    assert_eq!(r.c.max_open(), 6);
    let ds = r.feed(&idle(6, 6), 60);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    let last = ds.last().unwrap();
    assert!(matches!(last.reason, Reason::OscillationLock { .. }));
    assert!(
        last.reason
            .to_string()
            .starts_with("oscillation_lock: 3 direction changes in 5m, "),
        "{}",
        last.reason
    );
    // Growth is not locked: a pool held short would fail requests.
    let (_, d) = r.until_resize(&starved(6, 9, 30 * MS), 20).unwrap();
    assert_eq!(resize(&d), Some((6, 7)));
    // Shrinking resumes when the lock ends.
    let (ticks, d) = r.until_resize(&idle(7, 7), 400).unwrap();
    assert_eq!(resize(&d), Some((7, 6)));
    assert!(ticks > 200, "shrank {ticks} s after the growth");

    // Shrink, grow, shrink, grow: a growth that is the third reversal goes
    // ahead, and shrinking is locked after it.
    let mut r = Rig::new(cfg(), 6);
    r.feed(&idle(6, 6), 10);
    let sizes: Vec<_> = flap(&mut r, 3).iter().filter_map(resize).collect();
    assert_eq!(sizes, [(5, 6), (6, 5), (5, 6)]);
    assert_eq!(r.c.state().direction_changes, 3);
    assert_eq!(r.c.state().oscillation_locks, 1);
    let ds = r.feed(&idle(6, 6), 120);
    assert!(ds.iter().all(|d| d.action == Action::Hold));
    assert!(matches!(ds[119].reason, Reason::OscillationLock { .. }));
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut c = Controller::new(cfg(), 4);
    let t0 = Instant::now() + 100 * S;
    let s = starved(4, 9, 30 * MS);
    c.step(t0, &s);
    let d = c.step(t0 - 50 * S, &s);
    assert_eq!(d.action, Action::Hold);
    assert_eq!(c.state().window_covered, S);
}

#[test]
fn state_reports_window_figures() {
    let mut r = Rig::new(cfg(), 6);
    let mut s = idle(6, 3);
    s.errors = 25;
    s.acquire_wait_p99 = 2 * MS;
    r.feed(&s, 12);
    let st = r.c.state();
    assert_eq!(st.max_open, 6);
    assert_eq!((st.min, st.max), (2, 10));
    assert_eq!(st.window_covered, 10 * S);
    assert_eq!(st.acquire_wait_p99, 2 * MS);
    assert!((st.idle_ratio - 0.5).abs() < 1e-9);
    assert!((st.throughput - 500.0).abs() < 1e-9);
    assert!((st.error_rate - 25.0 / 525.0).abs() < 1e-9);
    assert_eq!(st.query_p99, 4 * MS);
    assert!(matches!(st.last_reason, Some(Reason::WithinBand { .. })));
    assert_eq!(st.last_change, None);
}

#[test]
fn every_reason_has_a_one_line_explanation() {
    let cases = [
        (Reason::Disabled, "disabled"),
        (
            Reason::Warmup {
                covered: 12 * S,
                window: 30 * S,
            },
            "window filling 12s/30s",
        ),
        (
            Reason::WithinBand {
                acquire_wait_p99: MS * 6 / 5,
                idle_ratio: 0.31,
            },
            "within band (acquire_wait_p99 1.2ms, idle_ratio 0.31)",
        ),
        (
            Reason::AcquireWaitHigh {
                sustained: MS * 123 / 10,
                target: 5 * MS,
                window: 30 * S,
            },
            "acquire_wait_p99 12.3ms>5ms for 30s",
        ),
        (
            Reason::IdleHigh {
                idle_ratio: 0.82,
                mark: 0.5,
                window: 30 * S,
            },
            "idle_ratio 0.82>0.50 for 30s",
        ),
        (
            Reason::Starved {
                waiting: 7,
                window: 30 * S,
            },
            "idle_ratio 0.00 with 7 waiting for 30s",
        ),
        (
            Reason::Custom {
                direction: Direction::Shrink,
                window: 30 * S,
            },
            "custom signal: shrink for 30s",
        ),
        (Reason::Cooldown { left: MS * 3200 }, "cooldown 3.2s left"),
        (
            Reason::OscillationLock {
                changes: 3,
                period: 300 * S,
                left: 252 * S,
            },
            "oscillation_lock: 3 direction changes in 5m, 4m12s left",
        ),
        (Reason::AtMax { max: 32 }, "at max (32)"),
        (Reason::AtMin { min: 1 }, "at min (1)"),
        (
            Reason::ErrorGuard {
                rate: 0.12,
                limit: 0.05,
            },
            "error_guard: error rate 12%>5%",
        ),
        (
            Reason::LatencyGuard {
                recent: 241 * MS,
                baseline: 76 * MS,
            },
            "latency_guard: query_p99 241ms is 3.2x the window's 76ms",
        ),
        (
            Reason::SaturationGuard {
                added: 2,
                throughput_change: -0.01,
                query_p99_change: 0.4,
            },
            "saturation_guard: +2 conns gave -1% throughput while query_p99 +40%",
        ),
        (
            Reason::SaturationStepBack {
                removed: 1,
                throughput_change: 0.02,
                query_p99_change: -0.15,
            },
            "saturation_guard: -1 conns kept throughput (+2%) and query_p99 -15%, stepping back",
        ),
        (
            Reason::SaturationBackoff { left: 250 * S },
            "saturation_guard: growth paused, 4m10s left",
        ),
    ];
    for (r, text) in cases {
        assert_eq!(r.to_string(), text);
        assert!(!r.kind().is_empty());
    }
    let d = Decision {
        action: Action::Resize { from: 4, to: 5 },
        reason: Reason::AtMax { max: 5 },
    };
    assert_eq!(d.to_string(), "resize 4->5: at max (5)");
}

/// Random sample sequences: whatever the signals, the size stays on the
/// rails, moves by at most `step`, and changes are at least `cooldown`
/// apart.
#[test]
fn fuzzed_signals_never_break_rails_step_or_cooldown() {
    for seed in 0..20u64 {
        let mut rng = Rng::new(seed);
        let c = PoolAutoscale {
            min: 3,
            max: 12,
            step: 2,
            window: 4 * S,
            cooldown: 3 * S,
            ..cfg()
        };
        let mut r = Rig::with_tuning(
            c,
            7,
            Tuning {
                oscillation_changes: usize::MAX,
                ..Tuning::default()
            },
        );
        let mut last_change: Option<Duration> = None;
        for _ in 0..3000 {
            let open = r.c.max_open();
            let idle_n = (rng.next_u64() % (open as u64 + 1)) as usize;
            let s = Signals {
                open,
                idle: idle_n,
                in_use: open - idle_n,
                waiting: (rng.next_u64() % 4) as usize,
                acquire_wait_p99: MS * (rng.next_u64() % 30) as u32,
                query_p99: MS * (1 + rng.next_u64() % 10) as u32,
                completed: rng.next_u64() % 1000,
                errors: rng.next_u64() % 20,
                ..Signals::default()
            };
            let d = r.feed(&s, 1).remove(0);
            if let Some((from, to)) = resize(&d) {
                assert!((3..=12).contains(&to), "seed {seed}: {d}");
                assert!(
                    from.abs_diff(to) <= 2 || matches!(d.reason, Reason::SaturationGuard { .. })
                );
                if let Some(l) = last_change {
                    assert!(
                        r.now - l >= 3 * S,
                        "seed {seed}: changes {:?} apart",
                        r.now - l
                    );
                }
                last_change = Some(r.now);
            }
            assert!((3..=12).contains(&r.c.max_open()));
        }
    }
}
