//! The supervisor thread with scripted pools: decisions are applied and
//! logged, a panic restarts the thread, and the heartbeat resumes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidepool_supervisor::{
    PoolAutoscale, Signals, SupervisedPool, Supervisor, SupervisorConfig, Target,
};

/// A pool whose callers always wait 20 ms for a connection.
struct Starved {
    max_open: Arc<AtomicUsize>,
}

impl SupervisedPool for Starved {
    fn name(&self) -> &str {
        "starved"
    }
    fn signals(&mut self, tick: Duration) -> Signals {
        let m = self.max_open.load(Ordering::Relaxed);
        Signals {
            max_open: m,
            open: m,
            in_use: m,
            idle: 0,
            waiting: 5,
            acquire_wait_p99: Duration::from_millis(20),
            query_p99: Duration::from_millis(2),
            completed: 1000,
            tick,
            ..Signals::default()
        }
    }
    fn max_open(&self) -> usize {
        self.max_open.load(Ordering::Relaxed)
    }
    fn set_max_open(&self, n: usize) {
        self.max_open.store(n, Ordering::Relaxed);
    }
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not reached within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn fast() -> SupervisorConfig {
    SupervisorConfig {
        tick: Duration::from_millis(10),
        stale_after: Duration::from_millis(200),
        restart_min: Duration::from_millis(10),
        restart_max: Duration::from_millis(50),
    }
}

fn autoscale() -> PoolAutoscale {
    PoolAutoscale {
        enabled: true,
        min: 2,
        max: 6,
        target: Target::AcquireWaitP99(Duration::from_millis(5)),
        window: Duration::from_millis(50),
        step: 1,
        cooldown: Duration::from_millis(30),
    }
}

#[test]
fn grows_within_rails_and_logs_each_change() {
    let size = Arc::new(AtomicUsize::new(2));
    let sup = Supervisor::start(
        fast(),
        vec![(
            Box::new(Starved {
                max_open: size.clone(),
            }),
            autoscale(),
            0,
        )],
    )
    .unwrap();
    let state = sup.state();
    wait_for(Duration::from_secs(10), || {
        size.load(Ordering::Relaxed) == 6
    });
    // Let it try to go further: the rail holds.
    let ticks = state.ticks();
    wait_for(Duration::from_secs(10), || state.ticks() > ticks + 20);
    assert_eq!(size.load(Ordering::Relaxed), 6);
    let log = state.decisions();
    assert_eq!(log.len(), 4, "2->3->4->5->6");
    let view = &state.pools()[0];
    assert_eq!((view.grows, view.shrinks), (4, 0));
    sup.stop();
}

#[test]
fn a_panicking_supervisor_restarts_and_its_heartbeat_resumes() {
    let size = Arc::new(AtomicUsize::new(2));
    let sup = Supervisor::start(
        fast(),
        vec![(
            Box::new(Starved {
                max_open: size.clone(),
            }),
            autoscale(),
            0,
        )],
    )
    .unwrap();
    let state = sup.state();
    wait_for(Duration::from_secs(10), || state.ticks() > 3);
    state.inject_panic();
    wait_for(Duration::from_secs(10), || state.restarts() == 1);
    let beat = state.last_tick_timestamp();
    wait_for(Duration::from_secs(10), || {
        state.last_tick_timestamp() > beat
    });
    // It keeps steering after the restart.
    wait_for(Duration::from_secs(10), || {
        size.load(Ordering::Relaxed) == 6
    });
    sup.stop();
}

#[test]
fn invalid_rails_are_refused_at_start() {
    let mut a = autoscale();
    a.min = 9;
    let err = Supervisor::start(
        fast(),
        vec![(
            Box::new(Starved {
                max_open: Arc::new(AtomicUsize::new(2)),
            }),
            a,
            0,
        )],
    )
    .err()
    .unwrap();
    assert!(err.contains("starved"), "{err}");
}

/// A pool whose probe panics on every tick.
struct Panicking;

impl SupervisedPool for Panicking {
    fn name(&self) -> &str {
        "panicking"
    }
    fn signals(&mut self, _: Duration) -> Signals {
        panic!("probe fails every tick")
    }
    fn max_open(&self) -> usize {
        2
    }
    fn set_max_open(&self, _: usize) {}
}

/// A pool that panics every tick is counted each time and leaves the
/// heartbeat unstamped (it must look stale, not healthy), while the other
/// pools go on being steered.
#[test]
fn a_pool_that_panics_every_tick_is_counted_and_stales_the_heartbeat() {
    let size = Arc::new(AtomicUsize::new(2));
    let sup = Supervisor::start(
        fast(),
        vec![
            (Box::new(Panicking), PoolAutoscale::default(), 0),
            (
                Box::new(Starved {
                    max_open: size.clone(),
                }),
                autoscale(),
                0,
            ),
        ],
    )
    .unwrap();
    let state = sup.state();
    wait_for(Duration::from_secs(10), || {
        size.load(Ordering::Relaxed) == 6
    });
    // Stopped first, so every tick counted has run to its end.
    sup.stop();
    assert!(state.ticks() >= 4);
    assert_eq!(state.panics(), state.ticks(), "one panic per tick");
    assert_eq!(
        state.last_tick_timestamp(),
        0.0,
        "no tick counted as a heartbeat"
    );
    assert_eq!(state.restarts(), 0, "caught per pool, not by restarting");
}
