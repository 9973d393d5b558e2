//! The supervisor thread: every tick it samples each pool, runs the pool's
//! controller, applies its decision and logs it as one line.
//!
//! It is watched: a second thread restarts the tick thread (with back-off)
//! when it panics, and logs when the published heartbeat goes stale. While
//! it is down the pools keep their last `max_open` and keep reaping their
//! own idle connections; nothing depends on this thread being alive.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Action, Controller, ControllerState, Decision, Direction, PoolAutoscale, Signals};

/// A pool as the supervisor sees it.
pub trait SupervisedPool: Send {
    fn name(&self) -> &str;
    /// The pool's numbers since the previous call (gauges now, counters and
    /// percentiles over the interval).
    fn signals(&mut self, tick: Duration) -> Signals;
    fn max_open(&self) -> usize;
    fn set_max_open(&self, n: usize);
}

/// Supervisor settings.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// Sampling period. Default 1 s.
    pub tick: Duration,
    /// The watchdog logs when no tick happened for this long. Default 5 s.
    pub stale_after: Duration,
    /// First restart delay after a panic; doubles up to `restart_max`.
    pub restart_min: Duration,
    pub restart_max: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            tick: Duration::from_secs(1),
            stale_after: Duration::from_secs(5),
            restart_min: Duration::from_millis(100),
            restart_max: Duration::from_secs(10),
        }
    }
}

/// A decision as logged and counted.
#[derive(Clone, Debug)]
pub struct LoggedDecision {
    pub pool: String,
    pub at_unix_ms: u64,
    pub decision: Decision,
}

/// What the supervisor publishes for /metrics and tests.
#[derive(Default, Debug)]
pub struct SupervisorState {
    last_tick_unix_ms: AtomicU64,
    ticks: AtomicU64,
    restarts: AtomicU64,
    panics: AtomicU64,
    stop: AtomicBool,
    inject_panic: AtomicBool,
    pools: Mutex<Vec<PoolView>>,
    log: Mutex<VecDeque<LoggedDecision>>,
}

/// One pool's supervisor view.
#[derive(Clone, Debug)]
pub struct PoolView {
    pub name: String,
    pub enabled: bool,
    pub grows: u64,
    pub shrinks: u64,
    pub state: Option<ControllerState>,
    pub last: Option<Decision>,
}

impl SupervisorState {
    /// Seconds since the epoch of the last completed tick (0 before the first).
    pub fn last_tick_timestamp(&self) -> f64 {
        self.last_tick_unix_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Times the tick thread was restarted after a panic.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Panics caught in the supervisor: a pool's probe or controller
    /// (caught per pool, the tick goes on without a heartbeat) and the tick
    /// thread itself (restarted).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    pub fn pools(&self) -> Vec<PoolView> {
        self.pools.lock().unwrap().clone()
    }

    /// Every resize decision so far, oldest first (bounded to the last 10,000).
    pub fn decisions(&self) -> Vec<LoggedDecision> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// Makes the next tick panic (fault-injection for tests and drills).
    pub fn inject_panic(&self) {
        self.inject_panic.store(true, Ordering::Relaxed);
    }
}

struct Entry {
    pool: Box<dyn SupervisedPool>,
    autoscale: PoolAutoscale,
    controller: Option<Controller>,
}

/// A running supervisor.
pub struct Supervisor {
    state: Arc<SupervisorState>,
    watchdog: Option<thread::JoinHandle<()>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("state", &self.state)
            .finish()
    }
}

impl Supervisor {
    /// Validates every pool's rails, then starts the tick thread and its
    /// watchdog. Pools with autoscaling disabled are sampled (for /metrics)
    /// but never resized.
    pub fn start(
        config: SupervisorConfig,
        pools: Vec<(Box<dyn SupervisedPool>, PoolAutoscale, usize)>,
    ) -> Result<Supervisor, String> {
        let mut entries = Vec::new();
        let mut views = Vec::new();
        for (pool, autoscale, min_idle) in pools {
            if autoscale.enabled {
                autoscale
                    .validate(pool.max_open(), min_idle)
                    .map_err(|e| format!("pool {}: {e}", pool.name()))?;
                // A starting size outside the rails is brought inside at once.
                let start = autoscale.clamp(pool.max_open());
                if start != pool.max_open() {
                    pool.set_max_open(start);
                }
            }
            views.push(PoolView {
                name: pool.name().to_string(),
                enabled: autoscale.enabled,
                grows: 0,
                shrinks: 0,
                state: None,
                last: None,
            });
            entries.push(Entry {
                pool,
                autoscale,
                controller: None,
            });
        }
        let state = Arc::new(SupervisorState {
            pools: Mutex::new(views),
            ..SupervisorState::default()
        });
        let entries = Arc::new(Mutex::new(entries));
        let st = state.clone();
        let watchdog = thread::Builder::new()
            .name("tidepool-supervisor-watchdog".into())
            .spawn(move || watchdog(config, st, entries))
            .map_err(|e| e.to_string())?;
        Ok(Supervisor {
            state,
            watchdog: Some(watchdog),
        })
    }

    pub fn state(&self) -> Arc<SupervisorState> {
        self.state.clone()
    }

    /// Stops both threads and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the tick thread, restarts it after a panic with back-off, and
/// logs a stale heartbeat.
fn watchdog(
    config: SupervisorConfig,
    state: Arc<SupervisorState>,
    entries: Arc<Mutex<Vec<Entry>>>,
) {
    let mut backoff = config.restart_min;
    let mut warned_at = 0u64;
    loop {
        let (cfg, st, en) = (config.clone(), state.clone(), entries.clone());
        let started = Instant::now();
        let ticker = thread::Builder::new()
            .name("tidepool-supervisor".into())
            .spawn(move || tick_loop(cfg, st, en));
        let Ok(ticker) = ticker else {
            // Out of threads or memory for now: pools keep their size
            // meanwhile, and supervision comes back when a spawn succeeds.
            tracing::error!(
                "tidepool: supervisor: cannot start its thread; pools keep their size; \
                 retrying in {backoff:?}"
            );
            thread::sleep(backoff);
            backoff = (backoff * 2).min(config.restart_max);
            if state.stop.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
        while !ticker.is_finished() {
            thread::sleep(config.tick.min(Duration::from_millis(200)));
            let last = state.last_tick_unix_ms.load(Ordering::Relaxed);
            let now = unix_ms();
            if last != 0
                && now.saturating_sub(last) > config.stale_after.as_millis() as u64
                && warned_at != last
            {
                warned_at = last;
                tracing::warn!(
                    "tidepool: supervisor heartbeat stale: last tick {:.1}s ago",
                    (now - last) as f64 / 1000.0
                );
            }
        }
        let panicked = ticker.join().is_err();
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        if panicked {
            state.restarts.fetch_add(1, Ordering::Relaxed);
            state.panics.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > config.restart_max * 4 {
                // It ran fine for a while: start the back-off over.
                backoff = config.restart_min;
            }
            tracing::error!(
                "tidepool: supervisor panicked; restarting in {backoff:?} (pools keep their size)"
            );
            thread::sleep(backoff);
            backoff = (backoff * 2).min(config.restart_max);
        }
    }
}

fn tick_loop(
    config: SupervisorConfig,
    state: Arc<SupervisorState>,
    entries: Arc<Mutex<Vec<Entry>>>,
) {
    let mut last = Instant::now();
    let mut next = last + config.tick;
    while !state.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next += config.tick;
        if next < now {
            // Fell behind (suspended, overloaded): tick from now on.
            next = now + config.tick;
        }
        let tick = now - last;
        last = now;
        if state.inject_panic.swap(false, Ordering::Relaxed) {
            panic!("injected supervisor panic");
        }
        // A poisoned lock means a previous tick thread died mid-tick; the
        // controllers are rebuilt from the pools' current sizes.
        let mut entries = entries.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            for e in g.iter_mut() {
                e.controller = None;
            }
            g
        });
        // A tick in which some pool's probe or controller panicked is not
        // a heartbeat: one that panics every tick must look stale.
        let mut healthy = true;
        for (i, e) in entries.iter_mut().enumerate() {
            // Per pool, so one pool's panic leaves the others steered.
            let stepped = catch_unwind(AssertUnwindSafe(|| {
                let signals = e.pool.signals(tick);
                e.autoscale.enabled.then(|| {
                    e.controller
                        .get_or_insert_with(|| {
                            Controller::new(e.autoscale.clone(), e.pool.max_open())
                        })
                        .step(now, &signals)
                })
            }));
            let decision = match stepped {
                Ok(d) => d,
                Err(_) => {
                    healthy = false;
                    state.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        pool = e.pool.name(),
                        "tidepool: supervisor: pool {}'s probe or controller panicked; \
                         its controller is rebuilt",
                        e.pool.name()
                    );
                    e.controller = None;
                    None
                }
            };
            let mut views = state.pools.lock().unwrap();
            let view = &mut views[i];
            if let Some(d) = decision {
                if let Action::Resize { from, to } = d.action {
                    // Recorded before it is acted on.
                    if to > from {
                        view.grows += 1;
                    } else {
                        view.shrinks += 1;
                    }
                    let mut log = state.log.lock().unwrap();
                    if log.len() >= 10_000 {
                        log.pop_front();
                    }
                    log.push_back(LoggedDecision {
                        pool: e.pool.name().to_string(),
                        at_unix_ms: unix_ms(),
                        decision: d.clone(),
                    });
                    drop(log);
                    if let Action::Resize { from, to } = d.action {
                        tracing::info!(
                            pool = e.pool.name(),
                            direction = if to > from { "grow" } else { "shrink" },
                            from,
                            to,
                            reason = d.reason.kind(),
                            why = %d.reason,
                            "supervisor resized a pool"
                        );
                    }
                    e.pool.set_max_open(to);
                }
                if d.action == Action::Hold {
                    // "Why didn't it grow?": a guard or rail that starts
                    // holding the pool is logged once, when it starts.
                    let kind = d.reason.kind();
                    let was = view.last.as_ref().map(|l| l.reason.kind());
                    if was != Some(kind) && !matches!(kind, "within_band" | "warmup" | "disabled") {
                        tracing::info!(
                            pool = e.pool.name(),
                            direction = "hold",
                            reason = kind,
                            why = %d.reason,
                            "supervisor holds a pool"
                        );
                    }
                }
                view.state = e.controller.as_ref().map(|c| c.state());
                view.last = Some(d);
            }
        }
        state.ticks.fetch_add(1, Ordering::Relaxed);
        if healthy {
            state.last_tick_unix_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }
}

/// Counts of decisions by direction, for /metrics.
pub fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::Grow => "grow",
        Direction::Shrink => "shrink",
    }
}
