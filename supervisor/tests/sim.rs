//! The default controller in the simulator: properties that must hold on
//! every load pattern. Each run is a few simulated minutes and takes well
//! under a second unoptimised.

use std::time::Duration;

use tidepool_supervisor::sim::{self, Fault, Load, Policy, Scenario, SimConfig, SimResult};
use tidepool_supervisor::{PoolAutoscale, Target};

const MIN: u64 = 60;

/// The full-scale model (`SimConfig::default()`, what the characterisation
/// runs) slowed 5x: queries, think time, connects, timeouts and the wait
/// target all take 5x longer, so a fifth of the request rate gives the pool
/// the same occupancy with a fifth of the events, and the unoptimised test
/// build simulates minutes in a fraction of a second. The database knee is
/// still ~16 connections; 200 requests/s here is 1000/s at full scale (~8
/// busy connections).
fn light() -> SimConfig {
    SimConfig::default().slowed(5.0)
}

/// Defaults but for the rails and the wait target, which is scaled with the
/// model (5 ms at full scale).
fn adaptive(min: usize, max: usize) -> PoolAutoscale {
    PoolAutoscale {
        enabled: true,
        min,
        max,
        target: Target::AcquireWaitP99(Duration::from_millis(25)),
        ..PoolAutoscale::default()
    }
}

fn direction_changes_within(r: &SimResult, from: f64, to: f64) -> usize {
    let ds: Vec<_> = r
        .decisions
        .iter()
        .filter(|d| d.t >= from && d.t < to)
        .collect();
    ds.windows(2)
        .filter(|w| (w[0].to > w[0].from) != (w[1].to > w[1].from))
        .count()
}

fn assert_rails_and_cooldown(r: &SimResult, cfg: &PoolAutoscale) {
    let rails = cfg.min..=cfg.max;
    for row in &r.series {
        assert!(
            rails.contains(&row.max_open),
            "{}: max_open {} at {}s",
            r.scenario,
            row.max_open,
            row.t
        );
        // Connections above max_open only linger while in use after a shrink.
        assert!(
            row.open <= cfg.max,
            "{}: open {} at {}s",
            r.scenario,
            row.open,
            row.t
        );
    }
    for d in &r.decisions {
        assert!(rails.contains(&d.to), "{}: {d:?}", r.scenario);
    }
    for w in r.decisions.windows(2) {
        let gap = w[1].t - w[0].t;
        assert!(
            gap + 1e-9 >= cfg.cooldown.as_secs_f64(),
            "{}: changes {gap}s apart: {:?} then {:?}",
            r.scenario,
            w[0],
            w[1]
        );
    }
}

#[test]
fn rails_and_cooldown_hold_on_every_pattern() {
    let light = light();
    let patterns = [
        Scenario::new(
            "steady",
            Load::Steady { rate: 150.0 },
            Duration::from_secs(4 * MIN),
        ),
        Scenario::new(
            "diurnal",
            Load::Diurnal {
                low: 20.0,
                high: 220.0,
                period: Duration::from_secs(4 * MIN),
            },
            Duration::from_secs(4 * MIN),
        ),
        Scenario::new(
            "burst",
            Load::Square {
                low: 30.0,
                high: 250.0,
                period: Duration::from_secs(2 * MIN),
                high_for: Duration::from_secs(MIN),
            },
            Duration::from_secs(4 * MIN),
        ),
        Scenario::new(
            "drift",
            Load::Drift {
                from: 20.0,
                to: 300.0,
                over: Duration::from_secs(4 * MIN),
            },
            Duration::from_secs(4 * MIN),
        ),
    ];
    // Cooldown both shorter than the window (it paces follow-up growth) and
    // longer (it spaces every change); rails tight enough to be hit.
    let configs = [
        PoolAutoscale {
            window: Duration::from_secs(5),
            cooldown: Duration::from_secs(2),
            step: 2,
            ..adaptive(3, 9)
        },
        PoolAutoscale {
            window: Duration::from_secs(3),
            cooldown: Duration::from_secs(7),
            ..adaptive(4, 12)
        },
    ];
    for cfg in &configs {
        let mut acted = 0;
        for sc in &patterns {
            let r = sim::run(sc, &light, &Policy::adaptive(cfg.clone(), 20));
            assert_rails_and_cooldown(&r, cfg);
            acted += r.decisions.len();
        }
        assert!(
            acted >= 10,
            "the controller hardly acted ({acted} changes): nothing was tested"
        );
    }
}

/// Defaults (window 30 s, cooldown 5 s, step 1) under constant load, from a
/// pool sized twice too large: it settles and then stays put.
#[test]
fn steady_state_changes_direction_at_most_twice_per_ten_minutes() {
    let sc = Scenario::new(
        "steady",
        Load::Steady { rate: 160.0 },
        Duration::from_secs(20 * MIN),
    );
    for seed in [1, 2] {
        let cfg = SimConfig { seed, ..light() };
        let r = sim::run(&sc, &cfg, &Policy::adaptive(adaptive(2, 32), 16));
        for start in (0..=10 * MIN).step_by(60) {
            let n = direction_changes_within(&r, start as f64, (start + 10 * MIN) as f64);
            assert!(
                n <= 2,
                "seed {seed}: {n} direction changes in [{start}s, +10m): {:?}",
                r.decisions
            );
        }
        // It did settle: few changes overall, no growth once settled.
        assert!(r.decisions.len() <= 8, "seed {seed}: {:?}", r.decisions);
        let late = (10 * MIN) as f64;
        assert!(
            r.decisions.iter().all(|d| d.t < late || d.to < d.from),
            "seed {seed}: {:?}",
            r.decisions
        );
        assert_eq!(r.summary.failed, 0);
    }
}

/// The burst-tuned configuration of the burst tests (full-scale model): the
/// supervisor samples every 250 ms, and a 1 s window is four samples, enough
/// to tell a burst from one slow tick at 1000 requests/s (250 waits per
/// sample).
fn burst_tuned(min: usize, max: usize) -> PoolAutoscale {
    PoolAutoscale {
        window: Duration::from_secs(1),
        cooldown: Duration::from_millis(500),
        step: 4,
        target: Target::AcquireWaitP99(Duration::from_millis(5)),
        ..adaptive(min, max)
    }
}

/// A 5x step in load must be absorbed within 5 s.
///
/// Why this is achievable: the step takes the load from ~1.6 busy
/// connections to ~8, and a pool of ~12 keeps waits under 5 ms, a deficit of
/// ~6 from the ~6 the pool keeps at low load. The first step lands after
/// the 1 s window, the next after the 0.5 s cooldown, and a step of 4 covers
/// the deficit in two, so the pool is large enough ~1.5 s after the edge; the
/// queue built up by then (~1.5 s x ~300 requests/s of excess) drains in
/// well under a second at the new size. Settling is counted the
/// usual way: the first second under target that starts ten seconds of which
/// at least eight are under target. Bursts are 6 minutes apart, longer than the
/// 5-minute oscillation period, so each is a fresh grow-then-shrink cycle.
#[test]
fn burst_is_absorbed_within_five_seconds() {
    let sc = Scenario::new(
        "burst",
        Load::Square {
            low: 200.0,
            high: 1000.0,
            period: Duration::from_secs(6 * MIN),
            high_for: Duration::from_secs(MIN),
        },
        Duration::from_secs(12 * MIN),
    );
    let cfg = SimConfig {
        tick: Duration::from_millis(250),
        ..SimConfig::default()
    };
    let auto = burst_tuned(2, 32);
    let r = sim::run(&sc, &cfg, &Policy::adaptive(auto.clone(), 6));
    let settle = r.summary.settling_max_s.expect("square wave has edges");
    assert!(
        settle <= 5.0,
        "settled after {settle}s; decisions {:?}",
        r.decisions
    );
    // It shrank back between bursts, or this would prove nothing.
    for (rise, _) in sc.load.high_phases(sc.duration) {
        let before = &r.series[rise as usize - 1];
        assert!(
            before.max_open <= 8,
            "pool {} before the edge at {rise}s: {:?}",
            before.max_open,
            r.decisions
        );
    }
    assert_eq!(r.controller.as_ref().map(|c| c.oscillation_locks), Some(0));
    assert_rails_and_cooldown(&r, &auto);
}

/// Against a static pool sized for peak (16 = 2 x the database's cores,
/// HikariCP's rule, and twice the ~8 busy connections at peak): at most 60%
/// of its connection-seconds, at most 1.2x its p99 request latency. The
/// diurnal ramp is slow enough for the defaults; the square wave's 5x step
/// is not (with a 30 s window the pool is short for the first 30 s of every
/// burst, far more than 1% of requests), so it runs the burst-tuned
/// configuration, as docs/autoscale.md advises for such loads.
#[test]
fn cheaper_than_a_static_pool_sized_for_peak_at_similar_latency() {
    let light = light();
    let diurnal = Scenario::new(
        "diurnal",
        Load::Diurnal {
            low: 30.0,
            high: 200.0,
            period: Duration::from_secs(12 * MIN),
        },
        Duration::from_secs(12 * MIN),
    );
    let burst = Scenario::new(
        "burst",
        Load::Square {
            low: 40.0,
            high: 200.0,
            period: Duration::from_secs(10 * MIN),
            high_for: Duration::from_secs(3 * MIN),
        },
        Duration::from_secs(10 * MIN),
    );
    let burst_cfg = SimConfig {
        tick: Duration::from_millis(250),
        ..light.clone()
    };
    // A floor of 6 so that the first second of a burst meets a pool that is
    // short but not starved: what `min` is for.
    let burst_auto = PoolAutoscale {
        target: Target::AcquireWaitP99(Duration::from_millis(25)),
        ..burst_tuned(6, 16)
    };
    let runs = [
        (&diurnal, &light, adaptive(2, 16)),
        (&burst, &burst_cfg, burst_auto),
    ];
    for (sc, cfg, auto) in runs {
        let fixed = sim::run(sc, cfg, &Policy::Static(16));
        let auto = sim::run(sc, cfg, &Policy::adaptive(auto, 8));
        let (a, f) = (&auto.summary, &fixed.summary);
        assert!(
            a.connection_seconds <= 0.6 * f.connection_seconds,
            "{}: {:.0} vs {:.0} connection-seconds",
            sc.name,
            a.connection_seconds,
            f.connection_seconds
        );
        assert!(
            a.latency_p99_ms <= 1.2 * f.latency_p99_ms,
            "{}: p99 {:.1} ms vs {:.1} ms: {:?}",
            sc.name,
            a.latency_p99_ms,
            f.latency_p99_ms,
            auto.decisions
        );
    }
}

/// A database that is slow and failing 15% of queries makes the pool look
/// starved; growing would only pile more load on it.
#[test]
fn no_growth_while_the_database_is_degraded() {
    let fault = Fault {
        start: Duration::from_secs(4 * MIN),
        end: Duration::from_secs(9 * MIN),
        error_rate: 0.15,
        slow_factor: 4.0,
    };
    let sc = Scenario::new(
        "degraded",
        Load::Steady { rate: 150.0 },
        Duration::from_secs(12 * MIN),
    )
    .with_fault(fault.clone());
    for target in [
        Target::AcquireWaitP99(Duration::from_millis(25)),
        Target::IdleRatio(0.5),
    ] {
        let cfg = PoolAutoscale {
            window: Duration::from_secs(10),
            target,
            ..adaptive(2, 32)
        };
        let r = sim::run(&sc, &light(), &Policy::adaptive(cfg, 8));
        let (start, end) = (fault.start.as_secs_f64(), fault.end.as_secs_f64());
        let grew: Vec<_> = r
            .decisions
            .iter()
            .filter(|d| d.t >= start && d.t <= end && d.to > d.from)
            .collect();
        assert!(grew.is_empty(), "grew during the fault: {grew:?}");
        assert!(
            r.holds("error_guard") > 0,
            "the error guard never fired: {:?}",
            r.hold_reasons
        );
        // The fault did starve the pool, or the test shows nothing.
        let fault_rows = &r.series[start as usize..end as usize];
        assert!(fault_rows.iter().filter(|x| x.waiting > 0).count() > 30);
    }
}

/// Offered load above what the database can serve (480 requests/s against
/// 8 servers x 20 ms = 400 queries/s): past the knee (~16 connections, each
/// request holding one ~40 ms) more connections only add contention. The
/// guard must notice and keep the pool near the knee rather than at the
/// rail, and the pool must do better than one pinned at the rail.
#[test]
fn saturation_guard_keeps_the_pool_near_the_knee() {
    let sc = Scenario::new(
        "overload",
        Load::Steady { rate: 480.0 },
        Duration::from_secs(4 * MIN),
    );
    let cfg = light();
    let auto = PoolAutoscale {
        window: Duration::from_secs(10),
        cooldown: Duration::from_secs(2),
        ..adaptive(2, 40)
    };
    let r = sim::run(&sc, &cfg, &Policy::adaptive(auto, 12));
    let at_rail = sim::run(&sc, &cfg, &Policy::Static(40));
    let st = r.controller.as_ref().expect("adaptive run");
    assert!(st.saturation_trips >= 1, "{:?}", r.decisions);
    assert!(
        r.summary.peak_max_open <= 28,
        "peak {}: {:?}",
        r.summary.peak_max_open,
        r.decisions
    );
    let late: Vec<usize> = r.series[120..].iter().map(|x| x.max_open).collect();
    let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
    assert!(
        mean <= 22.0,
        "mean size {mean} after 2 minutes: {:?}",
        r.decisions
    );
    assert!(r.summary.completed > at_rail.summary.completed);
    assert!(r
        .decisions
        .iter()
        .any(|d| d.reason.starts_with("saturation_guard")));
}

#[test]
fn runs_are_deterministic_per_seed() {
    let sc = Scenario::new(
        "diurnal",
        Load::Diurnal {
            low: 30.0,
            high: 200.0,
            period: Duration::from_secs(4 * MIN),
        },
        Duration::from_secs(4 * MIN),
    );
    let p = Policy::adaptive(
        PoolAutoscale {
            window: Duration::from_secs(5),
            ..adaptive(2, 16)
        },
        8,
    );
    let a = sim::run(&sc, &light(), &p);
    let b = sim::run(&sc, &light(), &p);
    assert_eq!(a.summary.requests, b.summary.requests);
    assert_eq!(a.summary.latency_p99_ms, b.summary.latency_p99_ms);
    assert_eq!(a.decisions.len(), b.decisions.len());
    let c = sim::run(
        &sc,
        &SimConfig {
            seed: 99,
            ..light()
        },
        &p,
    );
    assert_ne!(a.summary.requests, c.summary.requests);
}

#[test]
fn static_pools_behave_as_queueing_theory_says() {
    // 1000 requests/s holding ~8 ms each is 8 erlangs: 8 connections are
    // saturated, 16 hardly ever make anyone wait.
    let sc = Scenario::new(
        "steady",
        Load::Steady { rate: 1000.0 },
        Duration::from_secs(30),
    );
    let cfg = SimConfig::default();
    let small = sim::run(&sc, &cfg, &Policy::Static(6));
    let big = sim::run(&sc, &cfg, &Policy::Static(16));
    assert!(small.summary.failed > 1000, "{:?}", small.summary);
    assert_eq!(big.summary.failed, 0);
    assert!(big.summary.acquire_wait_p99_ms < 1.0, "{:?}", big.summary);
    assert!((big.summary.connection_seconds - 16.0 * 30.0).abs() < 1e-6);
    let q = big.series.iter().map(|r| r.query_p99_ms).sum::<f64>() / big.series.len() as f64;
    // Erlang-2 with a 4 ms mean has its p99 near 13 ms.
    assert!((10.0..16.0).contains(&q), "query p99 {q}");
}
