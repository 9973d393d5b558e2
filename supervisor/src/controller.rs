//! The default PoolAutoscale controller: threshold hysteresis over a window of
//! samples, with a saturation guard, an error guard and an oscillation lock.
//!
//! It is a pure state machine: [`Controller::step`] takes the time and one
//! [`Signals`] sample and returns a [`Decision`]; it never reads a clock,
//! sleeps or touches a pool. The supervisor thread applies the decision.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::{PoolAutoscale, Pressure, Target};
use crate::Signals;

/// Which way a change went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `max_open` went up.
    Grow,
    /// `max_open` went down.
    Shrink,
}

/// What the supervisor should do with the pool after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave `max_open` as it is.
    Hold,
    /// Set `max_open` from `from` to `to`.
    Resize { from: usize, to: usize },
}

/// The outcome of one [`Controller::step`]: what to do and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Why, as a one-line explanation with numbers (see [`Reason`]'s `Display`).
    pub reason: Reason,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Hold => write!(f, "hold: {}", self.reason),
            Action::Resize { from, to } => write!(f, "resize {from}->{to}: {}", self.reason),
        }
    }
}

/// Why the controller decided what it did. `Display` gives one line with the
/// numbers behind it, meant for logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Autoscaling is off. `"disabled"`
    Disabled,
    /// Not yet a full window of samples since start or since the last change.
    /// `"window filling 12s/30s"`
    Warmup { covered: Duration, window: Duration },
    /// Neither grow nor shrink conditions hold.
    /// `"within band (acquire_wait_p99 1.2ms, idle_ratio 0.31)"`
    WithinBand {
        acquire_wait_p99: Duration,
        idle_ratio: f64,
    },
    /// Grow: acquire waits above target for the window.
    /// `"acquire_wait_p99 12.3ms>5ms for 30s"`
    AcquireWaitHigh {
        sustained: Duration,
        target: Duration,
        window: Duration,
    },
    /// Shrink: too many idle connections for the window.
    /// `"idle_ratio 0.82>0.50 for 30s"`
    IdleHigh {
        idle_ratio: f64,
        mark: f64,
        window: Duration,
    },
    /// Grow (IdleRatio target): no idle connection and requests waiting.
    /// `"idle_ratio 0.00 with 7 waiting for 30s"`
    Starved { waiting: usize, window: Duration },
    /// A custom target said grow (or shrink) for the window.
    /// `"custom signal: grow for 30s"`
    Custom {
        direction: Direction,
        window: Duration,
    },
    /// A change is due but the last one was too recent. `"cooldown 3.2s left"`
    Cooldown { left: Duration },
    /// Shrinking is locked after too many reversals (growth is not).
    /// `"oscillation_lock: 3 direction changes in 5m, 4m12s left"`
    OscillationLock {
        changes: usize,
        period: Duration,
        left: Duration,
    },
    /// Growth is wanted but `max_open` is on the upper rail. `"at max (32)"`
    AtMax { max: usize },
    /// Growth is wanted but `max_open` is at the ceiling a fleet's lease
    /// sets. `"at the fleet lease (4)"`
    AtLease { lease: usize },
    /// Shrinking is wanted but `max_open` is on the lower rail. `"at min (1)"`
    AtMin { min: usize },
    /// Growth is wanted but queries just got much slower: the database, not
    /// the pool, changed. `"latency_guard: query_p99 241ms is 3.2x the window's 76ms"`
    LatencyGuard {
        recent: Duration,
        baseline: Duration,
    },
    /// Growth is wanted but the database is failing. `"error_guard: error rate 12%>5%"`
    ErrorGuard { rate: f64, limit: f64 },
    /// The last growth did not pay: the database is the bottleneck, so the
    /// controller steps back.
    /// `"saturation_guard: +2 conns gave -1% throughput while query_p99 +40%"`
    SaturationGuard {
        added: usize,
        throughput_change: f64,
        query_p99_change: f64,
    },
    /// After a revert, the guard steps back further: the last step back cost
    /// no throughput and made queries faster, and the pool is still short.
    /// `"saturation_guard: -1 conns kept throughput (+0%) and query_p99 -12%, stepping back"`
    SaturationStepBack {
        removed: usize,
        throughput_change: f64,
        query_p99_change: f64,
    },
    /// Growth is wanted but paused after the saturation guard fired.
    /// `"saturation_guard: growth paused, 4m10s left"`
    SaturationBackoff { left: Duration },
}

impl Reason {
    /// A stable snake_case name for the reason, for metric labels and for
    /// counting which rules fired.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Disabled => "disabled",
            Reason::Warmup { .. } => "warmup",
            Reason::WithinBand { .. } => "within_band",
            Reason::AcquireWaitHigh { .. } => "acquire_wait_high",
            Reason::IdleHigh { .. } => "idle_high",
            Reason::Starved { .. } => "starved",
            Reason::Custom { .. } => "custom",
            Reason::Cooldown { .. } => "cooldown",
            Reason::OscillationLock { .. } => "oscillation_lock",
            Reason::AtMax { .. } => "at_max",
            Reason::AtLease { .. } => "at_lease",
            Reason::AtMin { .. } => "at_min",
            Reason::LatencyGuard { .. } => "latency_guard",
            Reason::ErrorGuard { .. } => "error_guard",
            Reason::SaturationGuard { .. } => "saturation_guard",
            Reason::SaturationStepBack { .. } => "saturation_guard",
            Reason::SaturationBackoff { .. } => "saturation_backoff",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Disabled => f.write_str("disabled"),
            Reason::Warmup { covered, window } => {
                write!(f, "window filling {}/{}", Dur(*covered), Dur(*window))
            }
            Reason::WithinBand { acquire_wait_p99, idle_ratio } => write!(
                f,
                "within band (acquire_wait_p99 {}, idle_ratio {idle_ratio:.2})",
                Dur(*acquire_wait_p99)
            ),
            Reason::AcquireWaitHigh { sustained, target, window } => write!(
                f,
                "acquire_wait_p99 {}>{} for {}",
                Dur(*sustained),
                Dur(*target),
                Dur(*window)
            ),
            Reason::IdleHigh { idle_ratio, mark, window } => {
                write!(f, "idle_ratio {idle_ratio:.2}>{mark:.2} for {}", Dur(*window))
            }
            Reason::Starved { waiting, window } => {
                write!(f, "idle_ratio 0.00 with {waiting} waiting for {}", Dur(*window))
            }
            Reason::Custom { direction, window } => {
                let d = match direction {
                    Direction::Grow => "grow",
                    Direction::Shrink => "shrink",
                };
                write!(f, "custom signal: {d} for {}", Dur(*window))
            }
            Reason::Cooldown { left } => write!(f, "cooldown {} left", Dur(*left)),
            Reason::OscillationLock { changes, period, left } => write!(
                f,
                "oscillation_lock: {changes} direction changes in {}, {} left",
                Dur(*period),
                Dur(*left)
            ),
            Reason::AtMax { max } => write!(f, "at max ({max})"),
            Reason::AtLease { lease } => write!(f, "at the fleet lease ({lease})"),
            Reason::AtMin { min } => write!(f, "at min ({min})"),
            Reason::LatencyGuard { recent, baseline } => write!(
                f,
                "latency_guard: query_p99 {} is {:.1}x the window's {}",
                Dur(*recent),
                recent.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
                Dur(*baseline)
            ),
            Reason::ErrorGuard { rate, limit } => {
                write!(f, "error_guard: error rate {}>{}", Pct(*rate), Pct(*limit))
            }
            Reason::SaturationGuard { added, throughput_change, query_p99_change } => write!(
                f,
                "saturation_guard: +{added} conns gave {} throughput while query_p99 {}",
                SignedPct(*throughput_change),
                SignedPct(*query_p99_change)
            ),
            Reason::SaturationStepBack { removed, throughput_change, query_p99_change } => write!(
                f,
                "saturation_guard: -{removed} conns kept throughput ({}) and query_p99 {}, stepping back",
                SignedPct(*throughput_change),
                SignedPct(*query_p99_change)
            ),
            Reason::SaturationBackoff { left } => {
                write!(f, "saturation_guard: growth paused, {} left", Dur(*left))
            }
        }
    }
}

/// Compact human durations for log lines: `850us`, `12.3ms`, `3.2s`, `4m12s`.
struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns < 1_000_000 {
            write!(f, "{}us", ns / 1_000)
        } else if ns < 1_000_000_000 {
            write!(f, "{}ms", Trim(ns as f64 / 1e6))
        } else if ns < 60_000_000_000 {
            write!(f, "{}s", Trim(ns as f64 / 1e9))
        } else {
            let s = self.0.as_secs();
            if s % 60 == 0 {
                write!(f, "{}m", s / 60)
            } else {
                write!(f, "{}m{}s", s / 60, s % 60)
            }
        }
    }
}

/// One decimal, without a trailing `.0`.
struct Trim(f64);

impl fmt::Display for Trim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = (self.0 * 10.0).round() / 10.0;
        if r.fract() == 0.0 {
            write!(f, "{r:.0}")
        } else {
            write!(f, "{r:.1}")
        }
    }
}

struct Pct(f64);

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", Trim(self.0 * 100.0))
    }
}

struct SignedPct(f64);

impl fmt::Display for SignedPct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = (self.0 * 100.0).round();
        if p >= 0.0 {
            write!(f, "+{p:.0}%")
        } else {
            write!(f, "{p:.0}%")
        }
    }
}

/// The controller's internal thresholds. `Tuning::default()` is what
/// [`Controller::new`] uses and what `docs/autoscale.md` documents; the fields
/// are public so tests and experiments can move them, not because services
/// are expected to.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Fraction of the window's ticks that must show growth pressure (2/3).
    /// Not all of them: the per-tick p99 of a pool near saturation swings
    /// between zero and hundreds of milliseconds from one tick to the next,
    /// and with 80% the simulator's pools sat at the edge, blowing the target
    /// in a third of their seconds (p99 up to 1.56x a static pool's, against
    /// at most 1.12x with 2/3). Still a clear majority, so a transient shorter
    /// than a third of the window never triggers growth. The level reported
    /// is the one reached by this fraction of ticks.
    pub sustain_fraction: f64,
    /// `AcquireWaitP99(t)`: shrinking needs every tick's p99 at or below
    /// `t * no_pressure_fraction` (0.5). The gap between this and `t` is the
    /// hysteresis band where the controller holds.
    pub no_pressure_fraction: f64,
    /// `AcquireWaitP99`: shrinking needs the idle-ratio EWMA above this (0.5)
    /// for the whole window. (`IdleRatio(r)` uses `r`.)
    pub shrink_idle_ratio: f64,
    /// Time constant of the idle-ratio EWMA as a fraction of the window
    /// (0.25): after one window the pre-change level weighs e^-4 = 2%.
    pub idle_ewma_window_fraction: f64,
    /// No growth while (errors + timeouts) / operations is above this (0.05),
    /// over the window or over the last `cooldown`.
    pub error_rate_limit: f64,
    /// No growth while the query p99 of the last `cooldown` is more than
    /// this many times (2.0) the window's: a database that suddenly answers
    /// slower makes every pool look short, and more connections are the last
    /// thing it needs. A slowdown that lasts half a window becomes the
    /// window's own level, and growth is then judged by the saturation guard.
    pub latency_guard_ratio: f64,
    /// Saturation guard: a growth, judged one window later against the
    /// window before it, "paid" if throughput rose by at least this (0.05),
    /// or by half the proportional gain of the connections added when that
    /// is smaller (one connection on twenty cannot give 5%) ...
    pub saturation_min_gain: f64,
    /// ... and it fires if it did not pay, the pool is still short, and query
    /// p99 rose by more than this (0.20). The same rise stops growth from
    /// following up at cooldown pace before the growth is judged.
    pub saturation_latency_rise: f64,
    /// How long growth stays paused after the saturation guard fires (5 min).
    pub growth_backoff: Duration,
    /// Oscillation lock (it holds shrinking, not growth): this many direction
    /// changes (3) ...
    pub oscillation_changes: usize,
    /// ... within this period (5 min) ...
    pub oscillation_period: Duration,
    /// ... hold shrinking for this long (5 min).
    pub oscillation_lock: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            sustain_fraction: 2.0 / 3.0,
            no_pressure_fraction: 0.5,
            shrink_idle_ratio: 0.5,
            idle_ewma_window_fraction: 0.25,
            error_rate_limit: 0.05,
            latency_guard_ratio: 2.0,
            saturation_min_gain: 0.05,
            saturation_latency_rise: 0.20,
            growth_backoff: Duration::from_secs(300),
            oscillation_changes: 3,
            oscillation_period: Duration::from_secs(300),
            oscillation_lock: Duration::from_secs(300),
        }
    }
}

/// A snapshot of the controller for `/metrics` and logs, as of the last
/// [`Controller::step`]. Window figures cover the last `window` of samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerState {
    pub enabled: bool,
    pub max_open: usize,
    pub min: usize,
    pub max: usize,
    /// Samples held, as time covered (at most `window`).
    pub window_covered: Duration,
    /// Upper bound of the window's acquire-wait p99: the largest per-tick p99.
    /// (Per-tick p99s cannot be merged exactly; the max never understates.)
    pub acquire_wait_p99: Duration,
    /// The acquire-wait level reached in `sustain_fraction` of the window's
    /// ticks: the figure the grow rule compares with the target.
    pub acquire_wait_sustained: Duration,
    /// EWMA of idle / open.
    pub idle_ratio: f64,
    /// Completed operations per second over the window.
    pub throughput: f64,
    /// Median of the per-tick query p99s over the window.
    pub query_p99: Duration,
    /// (errors + timeouts) / operations over the window.
    pub error_rate: f64,
    pub cooldown_left: Duration,
    pub oscillation_lock_left: Duration,
    pub growth_backoff_left: Duration,
    pub grows: u64,
    pub shrinks: u64,
    pub direction_changes: u64,
    pub oscillation_locks: u64,
    pub saturation_trips: u64,
    pub last_change: Option<Direction>,
    pub last_reason: Option<Reason>,
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    tick: Duration,
    wait: Duration,
    query: Duration,
    ops: u64,
    completed: u64,
    failed: u64,
    waiting: usize,
    open: usize,
    in_use: usize,
    starved: bool,
    idle_ewma: f64,
    custom: Option<Pressure>,
}

/// Aggregates over a run of samples.
#[derive(Clone, Debug, Default)]
struct Stats {
    covered: Duration,
    ticks: usize,
    sustained_wait: Duration,
    max_wait: Duration,
    max_waiting: usize,
    /// Time-weighted mean of the in-use gauge.
    mean_in_use: f64,
    max_in_use: usize,
    min_idle_ewma: f64,
    throughput: f64,
    query_p99: Duration,
    error_rate: f64,
    starved_ticks: usize,
    custom_grow: usize,
    custom_shrink: usize,
}

/// A change the saturation guard judges one window after it: the size
/// before it and the window before it.
#[derive(Clone, Debug)]
struct Probe {
    at: Instant,
    from: usize,
    throughput: f64,
    query_p99: Duration,
}

/// The PoolAutoscale controller for one pool.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tidepool_supervisor::{Action, Controller, PoolAutoscale, Signals};
///
/// let cfg = PoolAutoscale { enabled: true, min: 2, max: 16, window: Duration::from_secs(5),
///                           ..PoolAutoscale::default() };
/// let mut c = Controller::new(cfg, 4);
/// let t0 = Instant::now();
/// let starved = Signals { max_open: 4, open: 4, in_use: 4, waiting: 6, completed: 800,
///                         acquire_wait_p99: Duration::from_millis(20),
///                         query_p99: Duration::from_millis(3), tick: Duration::from_secs(1),
///                         ..Signals::default() };
/// let mut last = None;
/// for i in 1..=5 {
///     last = Some(c.step(t0 + Duration::from_secs(i), &starved));
/// }
/// let d = last.unwrap();
/// assert_eq!(d.action, Action::Resize { from: 4, to: 5 });
/// assert_eq!(d.reason.to_string(), "acquire_wait_p99 20ms>5ms for 5s");
/// assert_eq!(c.max_open(), 5);
/// ```
#[derive(Debug)]
pub struct Controller {
    cfg: PoolAutoscale,
    tuning: Tuning,
    /// The last tick's ceiling (a fleet lease), if any.
    ceiling: Option<usize>,
    max_open: usize,
    samples: VecDeque<Sample>,
    idle_ewma: Option<f64>,
    last_at: Option<Instant>,
    changed_at: Option<Instant>,
    last_change: Option<Direction>,
    reversals: VecDeque<Instant>,
    lock_until: Option<Instant>,
    backoff_until: Option<Instant>,
    /// Growths not yet judged by the saturation guard, oldest first.
    probes: VecDeque<Probe>,
    /// The last step back of the saturation guard, to be judged.
    descent: Option<Probe>,
    /// A step back the guard decided on that the lock or the cooldown held up.
    pending: Option<(usize, Reason)>,
    last_reason: Option<Reason>,
    grows: u64,
    shrinks: u64,
    direction_changes: u64,
    oscillation_locks: u64,
    saturation_trips: u64,
}

impl Controller {
    /// A controller for a pool whose `max_open` is `start_max_open` now.
    /// A start outside `[min, max]` is clamped onto the nearest rail; the
    /// supervisor should apply [`Controller::max_open`] right away.
    pub fn new(cfg: PoolAutoscale, start_max_open: usize) -> Self {
        Self::with_tuning(cfg, start_max_open, Tuning::default())
    }

    /// [`Controller::new`] with non-default internal thresholds.
    pub fn with_tuning(cfg: PoolAutoscale, start_max_open: usize, tuning: Tuning) -> Self {
        let max_open = cfg.clamp(start_max_open);
        Controller {
            cfg,
            tuning,
            ceiling: None,
            max_open,
            samples: VecDeque::new(),
            idle_ewma: None,
            last_at: None,
            changed_at: None,
            last_change: None,
            reversals: VecDeque::new(),
            lock_until: None,
            backoff_until: None,
            probes: VecDeque::new(),
            descent: None,
            pending: None,
            last_reason: None,
            grows: 0,
            shrinks: 0,
            direction_changes: 0,
            oscillation_locks: 0,
            saturation_trips: 0,
        }
    }

    /// The `max_open` the pool should have now.
    pub fn max_open(&self) -> usize {
        self.max_open
    }

    /// The configuration this controller runs.
    pub fn config(&self) -> &PoolAutoscale {
        &self.cfg
    }

    /// Feeds one sample taken at `now` and returns what to do. `now` must not
    /// go backwards; a sample that does is ignored (Hold with the previous
    /// reason) rather than allowed to corrupt the window.
    pub fn step(&mut self, now: Instant, s: &Signals) -> Decision {
        if self.last_at.is_some_and(|last| now < last) {
            return Decision {
                action: Action::Hold,
                reason: self.last_reason.clone().unwrap_or(Reason::Disabled),
            };
        }
        self.observe(now, s);
        let decision = self.decide(now);
        if let Action::Resize { from, to } = decision.action {
            self.apply(now, from, to, &decision.reason);
        }
        self.last_reason = Some(decision.reason.clone());
        decision
    }

    /// A snapshot for `/metrics` and logs.
    pub fn state(&self) -> ControllerState {
        let now = self.last_at;
        let all = self.stats(None);
        let left = |until: Option<Instant>| match (until, now) {
            (Some(u), Some(n)) => u.saturating_duration_since(n),
            _ => Duration::ZERO,
        };
        ControllerState {
            enabled: self.cfg.enabled,
            max_open: self.max_open,
            min: self.cfg.min,
            max: self.cfg.max,
            window_covered: all.covered,
            acquire_wait_p99: all.max_wait,
            acquire_wait_sustained: all.sustained_wait,
            idle_ratio: self.idle_ewma.unwrap_or(0.0),
            throughput: all.throughput,
            query_p99: all.query_p99,
            error_rate: all.error_rate,
            cooldown_left: left(self.changed_at.map(|c| c + self.cfg.cooldown)),
            oscillation_lock_left: left(self.lock_until),
            growth_backoff_left: left(self.backoff_until),
            grows: self.grows,
            shrinks: self.shrinks,
            direction_changes: self.direction_changes,
            oscillation_locks: self.oscillation_locks,
            saturation_trips: self.saturation_trips,
            last_change: self.last_change,
            last_reason: self.last_reason.clone(),
        }
    }

    fn observe(&mut self, now: Instant, s: &Signals) {
        self.ceiling = s.ceiling;
        // A supervisor that forgot to fill `tick` still gets sensible
        // weighting from the spacing of its calls.
        let tick = if !s.tick.is_zero() {
            s.tick
        } else {
            self.last_at.map_or(Duration::from_secs(1), |l| now - l)
        };
        self.last_at = Some(now);

        let tau = self.cfg.window.as_secs_f64() * self.tuning.idle_ewma_window_fraction;
        let alpha = if tau > 0.0 {
            1.0 - (-tick.as_secs_f64() / tau).exp()
        } else {
            1.0
        };
        let inst = s.idle_ratio();
        let ewma = match self.idle_ewma {
            None => inst,
            Some(prev) => prev + alpha * (inst - prev),
        };
        self.idle_ewma = Some(ewma);

        let custom = match &self.cfg.target {
            Target::Custom(f) if self.cfg.enabled => Some(f(s)),
            _ => None,
        };
        let failed = s.errors + s.timeouts;
        self.samples.push_back(Sample {
            at: now,
            tick,
            wait: s.acquire_wait_p99,
            query: s.query_p99,
            ops: s.completed + failed,
            completed: s.completed,
            failed,
            waiting: s.waiting,
            open: s.open,
            in_use: s.in_use,
            starved: s.waiting > 0 && s.idle == 0,
            idle_ewma: ewma,
            custom,
        });
        let window = self.cfg.window;
        while self
            .samples
            .front()
            .is_some_and(|f| now.saturating_duration_since(f.at) >= window)
        {
            self.samples.pop_front();
        }
    }

    /// Aggregates the window's samples taken after `since` (all of them for
    /// `None`).
    fn stats(&self, since: Option<Instant>) -> Stats {
        let picked: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| since.is_none_or(|c| s.at > c))
            .collect();
        let mut st = Stats {
            min_idle_ewma: f64::INFINITY,
            ..Stats::default()
        };
        if picked.is_empty() {
            st.min_idle_ewma = 0.0;
            return st;
        }
        let mut waits: Vec<Duration> = Vec::with_capacity(picked.len());
        let mut queries: Vec<Duration> = Vec::new();
        let (mut completed, mut failed, mut ops) = (0u64, 0u64, 0u64);
        for s in &picked {
            st.covered += s.tick;
            st.mean_in_use += s.in_use as f64 * s.tick.as_secs_f64();
            st.max_in_use = st.max_in_use.max(s.in_use);
            waits.push(s.wait);
            if s.ops > 0 {
                queries.push(s.query);
            }
            completed += s.completed;
            failed += s.failed;
            ops += s.ops;
            st.max_waiting = st.max_waiting.max(s.waiting);
            st.min_idle_ewma = st.min_idle_ewma.min(s.idle_ewma);
            st.starved_ticks += usize::from(s.starved);
            st.custom_grow += usize::from(s.custom == Some(Pressure::Grow));
            st.custom_shrink += usize::from(s.custom == Some(Pressure::Shrink));
        }
        st.ticks = picked.len();
        waits.sort_unstable();
        st.max_wait = waits[st.ticks - 1];
        // The k-th largest per-tick p99, k = ceil(fraction * n): exactly the
        // level that `sustain_fraction` of the ticks reached.
        st.sustained_wait = waits[st.ticks - self.sustain_count(st.ticks)];
        if !queries.is_empty() {
            // The median tick, not the max: one slow tick (a vacuum, a
            // checkpoint) must not read as the database slowing down.
            queries.sort_unstable();
            st.query_p99 = queries[queries.len() / 2];
        }
        let secs = st.covered.as_secs_f64();
        if secs > 0.0 {
            st.mean_in_use /= secs;
        }
        st.throughput = if secs > 0.0 {
            completed as f64 / secs
        } else {
            0.0
        };
        st.error_rate = if ops > 0 {
            failed as f64 / ops as f64
        } else {
            0.0
        };
        st
    }

    fn sustain_count(&self, ticks: usize) -> usize {
        let k = (self.tuning.sustain_fraction * ticks as f64 - 1e-9).ceil() as usize;
        k.clamp(1, ticks.max(1))
    }

    /// Whether `st` covers `need`, with half a tick of slack so that a
    /// supervisor whose ticks run a little short does not need an extra one.
    fn covers(&self, st: &Stats, need: Duration) -> bool {
        let last_tick = self.samples.back().map_or(Duration::ZERO, |s| s.tick);
        st.ticks > 0 && st.covered + last_tick / 2 >= need
    }

    fn decide(&mut self, now: Instant) -> Decision {
        if !self.cfg.enabled {
            return hold(Reason::Disabled);
        }
        if let Some((to, reason)) = self.pending.clone() {
            if to < self.max_open {
                return self.gated(now, to, reason);
            }
            self.pending = None;
        }
        if let Some((to, reason)) = self.judge_growths(now).or_else(|| self.judge_descent(now)) {
            if to < self.max_open {
                self.pending = Some((to, reason.clone()));
                return self.gated(now, to, reason);
            }
            return hold(reason);
        }

        let window = self.cfg.window;
        // Every decision is about the current size, so it looks only at
        // samples taken since the last change.
        let st = self.stats(self.changed_at);
        let (want, reason) = self.pressure(&st);
        match want {
            Some(Direction::Grow) => {
                let need = if self.fast_follow(&st) {
                    self.cfg.cooldown
                } else {
                    window
                };
                if !self.covers(&st, need) {
                    return hold(Reason::Warmup {
                        covered: st.covered,
                        window: need,
                    });
                }
                // Errors are judged over the whole window, not only since
                // the change (a failing database is not fixed by a resize),
                // and over the last cooldown on their own: a database that
                // has just started failing slows replies at once but fails
                // them only as they come back, so errors lag the waits they
                // cause and would be diluted by the healthy start of the
                // window.
                let rate = self.stats(None).error_rate.max(self.recent_error_rate(now));
                if rate > self.tuning.error_rate_limit {
                    return hold(Reason::ErrorGuard {
                        rate,
                        limit: self.tuning.error_rate_limit,
                    });
                }
                let baseline = self.stats(None).query_p99;
                let recent = self.recent_query_p99(now);
                if !baseline.is_zero()
                    && recent.as_secs_f64()
                        > self.tuning.latency_guard_ratio * baseline.as_secs_f64()
                {
                    return hold(Reason::LatencyGuard { recent, baseline });
                }
                if let Some(left) = remaining(self.backoff_until, now) {
                    return hold(Reason::SaturationBackoff { left });
                }
                if self.max_open >= self.cfg.max {
                    return hold(Reason::AtMax { max: self.cfg.max });
                }
                let upper = match self.ceiling {
                    Some(lease) if lease < self.cfg.max => {
                        if self.max_open >= lease {
                            return hold(Reason::AtLease { lease });
                        }
                        lease
                    }
                    _ => self.cfg.max,
                };
                let to = (self.max_open + self.cfg.step).min(upper);
                self.gated(now, to, reason)
            }
            Some(Direction::Shrink) => {
                if !self.covers(&st, window) {
                    return hold(Reason::Warmup {
                        covered: st.covered,
                        window,
                    });
                }
                if self.max_open <= self.cfg.min {
                    return hold(Reason::AtMin { min: self.cfg.min });
                }
                let to = self
                    .max_open
                    .saturating_sub(self.cfg.step)
                    .max(self.cfg.min);
                self.gated(now, to, reason)
            }
            None if !self.covers(&st, window) => hold(Reason::Warmup {
                covered: st.covered,
                window,
            }),
            None => hold(reason),
        }
    }

    /// (errors + timeouts) / operations over the last `cooldown` (at least
    /// the last sample).
    fn recent_error_rate(&self, now: Instant) -> f64 {
        let since = now.checked_sub(self.cfg.cooldown);
        let (mut failed, mut ops) = (0, 0);
        for (i, s) in self.samples.iter().rev().enumerate() {
            if i > 0 && since.is_none_or(|c| s.at <= c) {
                break;
            }
            failed += s.failed;
            ops += s.ops;
        }
        if ops > 0 {
            failed as f64 / ops as f64
        } else {
            0.0
        }
    }

    /// Median per-tick query p99 over the last `cooldown` (at least the last
    /// sample with operations).
    fn recent_query_p99(&self, now: Instant) -> Duration {
        let since = now.checked_sub(self.cfg.cooldown);
        let mut qs: Vec<Duration> = Vec::new();
        for s in self.samples.iter().rev() {
            if !qs.is_empty() && since.is_none_or(|c| s.at <= c) {
                break;
            }
            if s.ops > 0 {
                qs.push(s.query);
            }
        }
        qs.sort_unstable();
        qs.get(qs.len() / 2).copied().unwrap_or_default()
    }

    /// What the target says about `st`, before guards, rails and timing.
    fn pressure(&self, st: &Stats) -> (Option<Direction>, Reason) {
        let window = st.covered;
        let ewma = self.idle_ewma.unwrap_or(0.0);
        let band = Reason::WithinBand {
            acquire_wait_p99: st.sustained_wait,
            idle_ratio: ewma,
        };
        if st.ticks == 0 {
            return (None, band);
        }
        match &self.cfg.target {
            Target::AcquireWaitP99(t) => {
                let low = t.mul_f64(self.tuning.no_pressure_fraction);
                let mark = self.tuning.shrink_idle_ratio;
                if st.sustained_wait > *t {
                    let r = Reason::AcquireWaitHigh {
                        sustained: st.sustained_wait,
                        target: *t,
                        window,
                    };
                    (Some(Direction::Grow), r)
                } else if st.max_wait <= low && self.idle_excess(st, mark) {
                    (
                        Some(Direction::Shrink),
                        Reason::IdleHigh {
                            idle_ratio: ewma,
                            mark,
                            window,
                        },
                    )
                } else {
                    (None, band)
                }
            }
            Target::IdleRatio(r) => {
                if st.starved_ticks >= self.sustain_count(st.ticks) {
                    let waiting = self.samples.back().map_or(0, |s| s.waiting);
                    (Some(Direction::Grow), Reason::Starved { waiting, window })
                } else if self.idle_excess(st, *r) {
                    (
                        Some(Direction::Shrink),
                        Reason::IdleHigh {
                            idle_ratio: ewma,
                            mark: *r,
                            window,
                        },
                    )
                } else {
                    (None, band)
                }
            }
            Target::Custom(_) => {
                if st.custom_grow >= self.sustain_count(st.ticks) {
                    (
                        Some(Direction::Grow),
                        Reason::Custom {
                            direction: Direction::Grow,
                            window,
                        },
                    )
                } else if st.custom_shrink == st.ticks {
                    (
                        Some(Direction::Shrink),
                        Reason::Custom {
                            direction: Direction::Shrink,
                            window,
                        },
                    )
                } else {
                    (None, band)
                }
            }
        }
    }

    /// The shrink side shared by the built-in targets: idle above `mark` for
    /// the whole window, nobody waiting at any sample, and a shrink that
    /// lands with enough spare connections for the window's mean use (see
    /// below), so it does not land in the grow band.
    fn idle_excess(&self, st: &Stats, mark: f64) -> bool {
        if st.max_waiting > 0 || st.min_idle_ewma <= mark {
            return false;
        }
        let Some(last) = self.samples.back() else {
            return false;
        };
        // Only connections above the new cap close, and only as many as the
        // pool has open (it may never have opened up to `max_open`).
        let open = last.open.min(self.max_open);
        let new_max = self
            .max_open
            .saturating_sub(self.cfg.step)
            .max(self.cfg.min);
        if new_max >= open {
            return true;
        }
        // The load is the mean in-use gauge over the window, taken at its
        // upper confidence bound (the gauge is roughly Poisson, so its mean
        // over n samples is good to about sqrt(mean / n)): a window of a few
        // samples must not read as an idle pool. The spare connections left
        // must then be at least 2·sqrt(load) (square-root staffing: the
        // headroom that keeps waits rare grows with the square root of the
        // load, which matters most for small pools), at least half the idle
        // mark, and no fewer than what was in use at any sample.
        let n = st.ticks.max(1) as f64;
        let m = st.mean_in_use + 2.0 * (st.mean_in_use.max(1.0) / n).sqrt();
        let spare = new_max as f64 - m;
        new_max >= st.max_in_use && spare >= 2.0 * m.sqrt() && spare / new_max as f64 >= mark / 2.0
    }

    /// Growth may continue after `cooldown` of evidence, instead of a whole
    /// window, while the previous growth is recent (not yet judged) and has
    /// not made queries slower: a pool that is still short after one step is
    /// most likely short by several, and waiting a full window per step is
    /// what made bursts slow. Anything that looks like the database slowing
    /// down falls back to a full window, by which time the guard has judged.
    fn fast_follow(&self, st: &Stats) -> bool {
        let Some(first) = self.probes.front() else {
            return false;
        };
        if self.last_change != Some(Direction::Grow) {
            return false;
        }
        first.query_p99.is_zero()
            || st.query_p99.as_secs_f64()
                <= first.query_p99.as_secs_f64() * (1.0 + self.tuning.saturation_latency_rise)
    }

    /// Threshold for a relative change of `changed` connections on `base`:
    /// the configured limit, or half the proportional effect when that is
    /// smaller, so that one connection on a large pool can still be judged.
    fn scaled(&self, limit: f64, changed: usize, base: usize) -> f64 {
        let expected = changed as f64 / base.max(1) as f64;
        limit.min(expected / 2.0)
    }

    /// The saturation guard: each growth is judged once a full window has
    /// passed since it, against the window before it. A growth that did not
    /// raise throughput while queries got slower means the database, not the
    /// pool, is the bottleneck: revert it and pause growth.
    fn judge_growths(&mut self, now: Instant) -> Option<(usize, Reason)> {
        while let Some(p) = self.probes.front().cloned() {
            let after = self.stats(Some(p.at));
            if !self.covers(&after, self.cfg.window) {
                return None;
            }
            self.probes.pop_front();
            if self.max_open <= p.from || p.throughput <= 0.0 || p.query_p99.is_zero() {
                continue;
            }
            let added = self.max_open - p.from;
            let gain = after.throughput / p.throughput - 1.0;
            let rise = after.query_p99.as_secs_f64() / p.query_p99.as_secs_f64() - 1.0;
            // Expecting +5% from one connection on twenty is expecting more
            // than it can give, so the bar is at most half of the
            // proportional gain. The latency bar is not scaled: queries
            // also slow down as the load that caused the growth rises, and
            // only a clear rise says the database is queueing. And the pool
            // must still be short: if it no longer is, the growth worked.
            let min_gain = self.scaled(self.tuning.saturation_min_gain, added, p.from);
            let still_short = self.pressure(&after).0 == Some(Direction::Grow);
            if still_short && gain < min_gain && rise > self.tuning.saturation_latency_rise {
                self.probes.clear();
                self.saturation_trips += 1;
                self.backoff_until = Some(now + self.tuning.growth_backoff);
                let to = p.from.max(self.cfg.min);
                let reason = Reason::SaturationGuard {
                    added,
                    throughput_change: gain,
                    query_p99_change: rise,
                };
                return Some((to, reason));
            }
        }
        None
    }

    /// After reverting, the guard keeps stepping back, one step per window,
    /// while the pool is still short, the step back cost no throughput and
    /// made queries faster: past the knee, fewer connections get as much done
    /// with less queueing in the database, and a database that has tipped
    /// into contention only recovers below the knee.
    fn judge_descent(&mut self, now: Instant) -> Option<(usize, Reason)> {
        let d = self.descent.clone()?;
        let after = self.stats(Some(d.at));
        if !self.covers(&after, self.cfg.window) {
            return None;
        }
        self.descent = None;
        if self.max_open <= self.cfg.min || d.from <= self.max_open || d.throughput <= 0.0 {
            return None;
        }
        if d.query_p99.is_zero() || remaining(self.backoff_until, now).is_none() {
            return None;
        }
        let removed = d.from - self.max_open;
        let change = after.throughput / d.throughput - 1.0;
        let q_change = after.query_p99.as_secs_f64() / d.query_p99.as_secs_f64() - 1.0;
        let still_short = self.pressure(&after).0 == Some(Direction::Grow);
        let kept = change >= -self.scaled(self.tuning.saturation_min_gain, removed, self.max_open);
        let faster =
            q_change < -self.scaled(self.tuning.saturation_latency_rise, removed, self.max_open);
        if still_short && kept && faster {
            let to = self
                .max_open
                .saturating_sub(self.cfg.step)
                .max(self.cfg.min);
            return Some((
                to,
                Reason::SaturationStepBack {
                    removed,
                    throughput_change: change,
                    query_p99_change: q_change,
                },
            ));
        }
        None
    }

    /// Applies the rails, the oscillation lock and the cooldown to a change
    /// the rules want.
    ///
    /// The lock holds shrinking only. A pool locked short fails requests
    /// while one locked large only costs connections, and the Go anchor found
    /// that capacity given up just before a surge is what hurts; with
    /// shrinking held, the pool cannot reverse again anyway. A guard's step
    /// back is never held: there the smaller size is the safe one.
    fn gated(&mut self, now: Instant, to: usize, reason: Reason) -> Decision {
        let to = to.clamp(self.cfg.min, self.cfg.max);
        if to == self.max_open {
            return hold(reason);
        }
        let guard = matches!(
            reason,
            Reason::SaturationGuard { .. } | Reason::SaturationStepBack { .. }
        );
        let lockable = to < self.max_open && !guard;
        if lockable {
            if let Some(left) = remaining(self.lock_until, now) {
                return hold(self.lock_reason(left));
            }
        }
        if let Some(c) = self.changed_at {
            if let Some(left) = remaining(Some(c + self.cfg.cooldown), now) {
                return hold(Reason::Cooldown { left });
            }
        }
        // The shrink that would be the reversal tripping the lock starts the
        // lock instead, so it starts at the larger size.
        if lockable && self.would_lock(now, Direction::Shrink) {
            self.lock(now);
            return hold(self.lock_reason(self.tuning.oscillation_lock));
        }
        Decision {
            action: Action::Resize {
                from: self.max_open,
                to,
            },
            reason,
        }
    }

    fn lock_reason(&self, left: Duration) -> Reason {
        Reason::OscillationLock {
            changes: self.tuning.oscillation_changes,
            period: self.tuning.oscillation_period,
            left,
        }
    }

    /// Reversals within the oscillation period as of `now`.
    fn recent_reversals(&mut self, now: Instant) -> usize {
        let period = self.tuning.oscillation_period;
        while self
            .reversals
            .front()
            .is_some_and(|&r| now.saturating_duration_since(r) >= period)
        {
            self.reversals.pop_front();
        }
        self.reversals.len()
    }

    /// Whether a change in `dir` now would trip the oscillation lock.
    fn would_lock(&mut self, now: Instant, dir: Direction) -> bool {
        self.last_change.is_some_and(|d| d != dir)
            && self.recent_reversals(now) + 1 >= self.tuning.oscillation_changes
    }

    fn lock(&mut self, now: Instant) {
        self.lock_until = Some(now + self.tuning.oscillation_lock);
        self.oscillation_locks += 1;
        self.reversals.clear();
    }

    fn apply(&mut self, now: Instant, from: usize, to: usize, reason: &Reason) {
        let dir = if to > from {
            Direction::Grow
        } else {
            Direction::Shrink
        };
        if self.last_change.is_some_and(|d| d != dir) {
            self.direction_changes += 1;
            self.reversals.push_back(now);
            if self.recent_reversals(now) >= self.tuning.oscillation_changes {
                self.lock(now);
            }
        }
        // The window before this change is the reference for judging it.
        let before = self.stats(None);
        let probe = Probe {
            at: now,
            from,
            throughput: before.throughput,
            query_p99: before.query_p99,
        };
        self.pending = None;
        match dir {
            Direction::Grow => {
                self.grows += 1;
                self.descent = None;
                self.probes.push_back(probe);
            }
            Direction::Shrink => {
                self.shrinks += 1;
                self.probes.clear();
                self.descent = match reason {
                    Reason::SaturationGuard { .. } | Reason::SaturationStepBack { .. } => {
                        Some(probe)
                    }
                    _ => None,
                };
            }
        }
        self.last_change = Some(dir);
        self.changed_at = Some(now);
        self.max_open = to;
    }
}

fn hold(reason: Reason) -> Decision {
    Decision {
        action: Action::Hold,
        reason,
    }
}

fn remaining(until: Option<Instant>, now: Instant) -> Option<Duration> {
    until.filter(|u| *u > now).map(|u| u - now)
}
